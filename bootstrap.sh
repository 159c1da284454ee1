#!/usr/bin/env bash
# bootstrap.sh: the two commands of tinyd.
#
#   ./bootstrap.sh run [ARGS...]   install what is missing, build, serve models/zoo on :8080
#   ./bootstrap.sh check           install what is missing, build, run every test
#
# Idempotent: only missing Debian packages are installed, autoreconf and
# configure run only when their inputs changed, make rebuilds what is stale.
set -euo pipefail

# Every Debian package the build, the tests and the benchmarks need. Later
# work adds to this one list.
DEBIAN_PACKAGES="build-essential autoconf automake libtool pkg-config
  libmicrohttpd-dev libjansson-dev libuv1-dev libopenblas-dev check zlib1g-dev
  libjpeg62-turbo-dev libpng-dev clang libclang-rt-14-dev python3 curl wrk
  systemd dataset-fashion-mnist nginx-light"

# Test steps run by `check` after `make check`, each only if its script
# exists. A step's last output line is `N passed, N failed[, N skipped]`;
# a step that prints no such line counts as one test, judged by exit status.
CHECK_STEPS="tests/fuzz/run_fuzzers.sh"

cd "$(dirname "$(readlink -f "$0")")"

usage() {
    cat <<'EOF'
Usage: ./bootstrap.sh run [TINYD-ARGS...]
       ./bootstrap.sh check
       ./bootstrap.sh --help

run    Install the missing Debian packages, build, and serve the bundled
       repository in the foreground:
         server/tinyd --listen 127.0.0.1:8080 --models models/zoo \
                      --state "${TINYD_STATE:-$PWD/state}" [TINYD-ARGS...]
check  Install the missing Debian packages, build, run `make check` and the
       other test steps; the last line is `N passed, N failed`, and the exit
       status is non-zero if any test failed.

Environment: TINYD_STATE (state directory for run), MAKEFLAGS.
EOF
}

log() { printf 'bootstrap: %s\n' "$*" >&2; }

missing_packages() {
    local p missing=""
    for p in $DEBIAN_PACKAGES; do
        # "install ok installed" is the only state that means usable.
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
            missing="$missing $p"
        fi
    done
    printf '%s' "${missing# }"
}

install_packages() {
    command -v dpkg-query >/dev/null 2>&1 || {
        log "dpkg-query not found: this script expects Debian 12; install by hand: $DEBIAN_PACKAGES"
        exit 1
    }
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo"
        else
            log "missing Debian packages: $missing"
            log "run as root or with sudo rights, or install them yourself:"
            log "  sudo apt-get install -y $missing"
            exit 1
        fi
    fi
    log "installing: $missing"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086 # the list is meant to split into words
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# true when $1 is missing or older than any of the following files
stale() {
    local target=$1 dep
    shift
    [ -e "$target" ] || return 0
    for dep in "$@"; do
        [ "$dep" -nt "$target" ] && return 0
    done
    return 1
}

build() {
    if stale configure configure.ac Makefile.am; then
        log "autoreconf -fi"
        autoreconf -fi
    fi
    # config.status records the configure run; rerun when configure changed.
    if stale config.status configure || [ ! -e Makefile ]; then
        log "./configure --enable-werror"
        ./configure --enable-werror
    fi
    log "make -j$(nproc)"
    make -j"$(nproc)"
}

# Prints "passed failed skipped" read from automake's test summary on stdin.
automake_counts() {
    awk '
        /^# PASS:/  { p += $3 } /^# XFAIL:/ { p += $3 }
        /^# FAIL:/  { f += $3 } /^# XPASS:/ { f += $3 } /^# ERROR:/ { f += $3 }
        /^# SKIP:/  { s += $3 }
        END { printf "%d %d %d\n", p, f, s }'
}

check() {
    local out passed=0 failed=0 skipped=0 p f s status=0
    out=$(mktemp)

    log "make check"
    if ! make -j"$(nproc)" check AM_COLOR_TESTS=no 2>&1 | tee "$out"; then
        status=1
        # Show what failed: the tail of each failing test's log.
        local trs log_file
        while IFS= read -r trs; do
            if grep -Eq '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
                log_file="${trs%.trs}.log"
                printf '\n==== %s ====\n' "$log_file"
                # The failing TAP cases with their diagnostics, else the tail.
                if grep -Eq '^(not ok|Bail out!)' "$log_file"; then
                    grep -E -A 30 '^(not ok|Bail out!)' "$log_file" | head -n 120
                else
                    tail -n 40 "$log_file"
                fi
            fi
        done < <(find tests -name '*.trs' 2>/dev/null)
    fi
    read -r p f s < <(automake_counts <"$out")
    # make check can fail before any test ran (a compile error): count it.
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))

    local step line
    for step in $CHECK_STEPS; do
        [ -e "$step" ] || continue
        log "$step"
        if bash "$step" 2>&1 | tee "$out"; then s=0; else s=1; status=1; fi
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1 || true)
        if [ -n "$line" ]; then
            p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
            f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
            [ "$s" -ne 0 ] && [ "$f" -eq 0 ] && f=1
            passed=$((passed + p)); failed=$((failed + f))
            if [[ $line =~ ([0-9]+)\ skipped ]]; then
                skipped=$((skipped + BASH_REMATCH[1]))
            fi
        elif [ "$s" -eq 0 ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done

    rm -f "$out"
    [ "$failed" -ne 0 ] && status=1
    summary_printed=1
    if [ "$skipped" -ne 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    return "$status"
}

cmd=${1:-}
case "$cmd" in
    run)
        shift
        install_packages
        build
        state=${TINYD_STATE:-$PWD/state}
        mkdir -p "$state"
        exec server/tinyd --listen 127.0.0.1:8080 --models models/zoo --state "$state" "$@"
        ;;
    check)
        shift
        [ $# -eq 0 ] || { usage >&2; exit 2; }
        # A failed install or build still ends with the one summary line.
        summary_printed=0
        trap '[ "$summary_printed" = 1 ] || echo "0 passed, 1 failed"' EXIT
        install_packages
        build
        check
        ;;
    -h|--help|help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
