#!/bin/sh
# Line coverage of fuzz targets: rebuild each tests/fuzz/fuzz_NAME.c with
# clang source-based coverage and replay_main.c (no libFuzzer), replay its
# committed seeds and the work corpus a run of run_fuzzers.sh grew, and
# print llvm-cov's per-function report for the sources under test (the
# files a target names in a "fuzz-coverage:" comment line).
#
#   tests/fuzz/coverage.sh [-b BUILDDIR] NAME...
#
# BUILDDIR is the configured tree run_fuzzers.sh used (-b, or env
# TD_BUILDDIR; default: the source tree); the work corpus is read from
# BUILDDIR/fuzz-out/corpus/NAME when it exists. Output in
# BUILDDIR/fuzz-out/coverage/. Needs clang, llvm-profdata and llvm-cov
# (Debian: clang llvm). Exits 1 if a build or replay fails.
set -u

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${TD_BUILDDIR:-$srcdir}
cc=${CC:-clang}
if [ "${1:-}" = -b ]; then
    builddir=$2
    shift 2
fi
[ $# -gt 0 ] || { sed -n '2,/replay fails/p' "$0"; exit 2; }
[ -f "$builddir/config.h" ] || { echo "no config.h in $builddir" >&2; exit 2; }
out=$builddir/fuzz-out/coverage
mkdir -p "$out"

pkgs=
for p in ${FUZZ_PKGS:-jansson zlib openblas libpng libjpeg}; do
    pkg-config --exists "$p" && pkgs="$pkgs $p"
done
cflags="-std=c11 -g -O0 -fprofile-instr-generate -fcoverage-mapping \
-I$builddir -I$srcdir/core -I$srcdir/server $(pkg-config --cflags $pkgs)"

rc=0
for name in "$@"; do
    src=$srcdir/tests/fuzz/fuzz_$name.c
    bin=$out/cov_$name
    extra=
    for x in $(sed -n 's/^.*fuzz-sources:\([^*]*\).*$/\1/p' "$src"); do
        extra="$extra $srcdir/$x"
    done
    # core/ as sources (not the instrumented archive) so every file is
    # mapped; -ffunction-sections lets the linker drop what is unused.
    if ! $cc $cflags -DFUZZ_NAME="\"$name\"" "$src" $extra \
            "$srcdir/tests/fuzz/replay_main.c" "$srcdir"/core/*.c \
            $(pkg-config --libs $pkgs) -lm -o "$bin" 2>"$out/$name.build.log"; then
        echo "$name: build failed, see $out/$name.build.log"
        rc=1
        continue
    fi
    dirs=$srcdir/tests/fuzz/corpus/$name
    [ -d "$builddir/fuzz-out/corpus/$name" ] &&
        dirs="$dirs $builddir/fuzz-out/corpus/$name"
    rm -f "$out/$name".*.profraw
    if ! LLVM_PROFILE_FILE="$out/$name.%p.profraw" "$bin" $dirs \
            >"$out/$name.replay.log" 2>&1; then
        echo "$name: replay failed, see $out/$name.replay.log"
        rc=1
        continue
    fi
    llvm-profdata merge -o "$out/$name.profdata" "$out/$name".*.profraw
    inputs=$(grep -c '^ok' "$out/$name.replay.log")
    echo "== $name: $inputs inputs"
    # The files under test: what the target names after "coverage:".
    files=$(sed -n 's/^.*fuzz-coverage:\([^*]*\).*$/\1/p' "$src")
    llvm-cov report "$bin" -instr-profile="$out/$name.profdata" \
        -show-functions $(for f in $files; do echo "$srcdir/$f"; done) |
        sed "s|$srcdir/||"
done
exit $rc
