#!/bin/sh
# Build every libFuzzer target tests/fuzz/fuzz_NAME.c against the core
# sources and run each for a while on its corpus.
#
#   tests/fuzz/run_fuzzers.sh [-b BUILDDIR] [-s SECONDS] [NAME...]
#
# A target is tests/fuzz/fuzz_NAME.c defining LLVMFuzzerTestOneInput. Its
# seeds live in tests/fuzz/corpus/NAME/ (committed), an optional dictionary
# in tests/fuzz/NAME.dict. New targets need no change here: a target that
# needs sources outside core/ (which every target links) names them, relative
# to the source tree, in a comment line of its fuzz_NAME.c:
#     fuzz-sources: server/td_oip.c
# They are compiled into that target only, instrumented for coverage.
#
#   BUILDDIR  configured build tree holding config.h (-b, or env
#             TD_BUILDDIR; default: the source tree)
#   SECONDS   fuzzing time per target (-s, or env FUZZ_SECONDS; default
#             10, so nine targets fit in CI's two minutes). 0 only replays
#             the corpus.
#   NAME      targets to run (default: all)
#   CC        compiler (default clang); needs libFuzzer (Debian:
#             clang-14 libclang-rt-14-dev)
#   FUZZ_PKGS pkg-config packages core/ links against (default: jansson
#             zlib openblas libpng libjpeg, those present)
#
# Output goes to BUILDDIR/fuzz-out/: bin/, the growing corpus per target
# (corpus/NAME, kept between runs), crash artifacts (artifacts/NAME/) and
# logs. Prints TAP lines, then "N passed, N failed"; exits 1 if any target
# crashed or failed to build, 2 on usage errors.
set -u

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${TD_BUILDDIR:-$srcdir}
seconds=${FUZZ_SECONDS:-10}
cc=${CC:-clang}

names=
while [ $# -gt 0 ]; do
    case $1 in
    -b|-s)
        [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
        if [ "$1" = -b ]; then builddir=$2; else seconds=$2; fi
        shift 2 ;;
    -h|--help) sed -n '2,/usage errors/p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) names="$names $1"; shift ;;
    esac
done
case $seconds in
''|*[!0-9]*) echo "SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac
builddir=$(cd "$builddir" 2>/dev/null && pwd) || {
    echo "no build directory $builddir" >&2; exit 2; }
if [ ! -f "$builddir/config.h" ]; then
    echo "no config.h in $builddir: run ./configure first or pass -b" >&2
    exit 2
fi

if [ -z "$names" ]; then
    names=$(cd "$srcdir/tests/fuzz" && ls fuzz_*.c 2>/dev/null |
            sed 's/^fuzz_//; s/\.c$//')
fi
if [ -z "$names" ]; then
    echo "no fuzz targets in $srcdir/tests/fuzz" >&2
    exit 2
fi

out=$builddir/fuzz-out
mkdir -p "$out/bin" "$out/obj" "$out/logs"

pkgs=
for p in ${FUZZ_PKGS:-jansson zlib openblas libpng libjpeg}; do
    pkg-config --exists "$p" && pkgs="$pkgs $p"
done
pkg_cflags=$(pkg-config --cflags $pkgs)
pkg_libs=$(pkg-config --libs $pkgs)

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cflags="-std=c11 -g -O1 -fno-omit-frame-pointer $san -I$builddir -I$srcdir/core -I$srcdir/server $pkg_cflags"

# core/ once, as an archive, so each target links only what it uses.
lib=$out/obj/libtinyd_fuzz.a
rm -f "$lib"
build_ok=1
for c in "$srcdir"/core/*.c; do
    o=$out/obj/$(basename "$c" .c).o
    if ! $cc $cflags -fsanitize=fuzzer-no-link -c "$c" -o "$o" \
            2>"$out/logs/build-core.log"; then
        echo "cannot compile $c:" >&2
        cat "$out/logs/build-core.log" >&2
        build_ok=0
    fi
done
[ $build_ok = 1 ] || exit 1
ar cr "$lib" "$out"/obj/*.o

n=0
pass=0
fail=0
count=$(echo $names | wc -w)
echo "1..$count"
for name in $names; do
    n=$((n + 1))
    src=$srcdir/tests/fuzz/fuzz_$name.c
    bin=$out/bin/fuzz_$name
    log=$out/logs/$name.log
    if [ ! -f "$src" ]; then
        echo "not ok $n - $name: no $src"
        fail=$((fail + 1))
        continue
    fi
    extra=
    # The list ends at the line's end or at a comment closer.
    for x in $(sed -n 's/^.*fuzz-sources:\([^*]*\).*$/\1/p' "$src"); do
        extra="$extra $srcdir/$x"
    done
    if ! $cc $cflags -fsanitize=fuzzer "$src" $extra "$lib" $pkg_libs -lm \
            -o "$bin" >"$log" 2>&1; then
        echo "not ok $n - $name: build failed, see $log"
        fail=$((fail + 1))
        continue
    fi
    work=$out/corpus/$name
    arts=$out/artifacts/$name
    mkdir -p "$work" "$arts"
    seeds=
    [ -d "$srcdir/tests/fuzz/corpus/$name" ] &&
        seeds=$srcdir/tests/fuzz/corpus/$name
    dict=
    [ -f "$srcdir/tests/fuzz/$name.dict" ] &&
        dict=-dict=$srcdir/tests/fuzz/$name.dict
    if [ "$seconds" -gt 0 ]; then
        limit=-max_total_time=$seconds
    else
        limit=-runs=0
    fi
    # New inputs go to the first directory (the work corpus, outside the
    # source tree); the committed seeds are only read.
    marker=$out/logs/.$name.start
    touch "$marker"
    "$bin" $limit -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$arts/" $dict "$work" $seeds >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    size=$(ls "$work" | wc -l)
    if [ $rc -eq 0 ]; then
        echo "ok $n - $name: ${runs:-?} runs, ${cov:-cov: ?}, work corpus $size"
        pass=$((pass + 1))
    else
        echo "not ok $n - $name: exit $rc, see $log"
        grep -m1 -E 'ERROR: (AddressSanitizer|libFuzzer|UndefinedBehavior)|runtime error' \
            "$log" | sed 's/^/#   /'
        find "$arts" -type f -newer "$marker" | sed 's/^/#   artifact: /'
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
