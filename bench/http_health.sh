#!/bin/bash
# http_health: requests/s and p99 latency of GET /v2/health/ready, tinyd
# against bench/mhd_ceiling (a bare libmicrohttpd server in the same
# single-threaded epoll mode), measured with wrk on loopback in one run.
#
# The machine is shared, so the two servers are interleaved (ABAB..., order
# flipped every repeat) and each cell is the median of the repeats; read the
# ratio tinyd/ceiling, not the absolute figures.
#
# Usage: bench/http_health.sh [-d SECONDS] [-r REPEATS] [-t WRK_THREADS]
#                             [-c "1 16 64"]
# Run from the build directory (or set TD_BUILDDIR). Extra tinyd flags may be
# given in TINYD_ARGS. Without server/tinyd only the ceiling is measured.
set -u

duration=10
repeats=3
wrk_threads=2
conns="1 16 64"
while getopts d:r:t:c:h opt; do
    case $opt in
    d) duration=$OPTARG ;;
    r) repeats=$OPTARG ;;
    t) wrk_threads=$OPTARG ;;
    c) conns=$OPTARG ;;
    *) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done

builddir=${TD_BUILDDIR:-.}
ceiling_bin=$builddir/bench/mhd_ceiling
tinyd_bin=$builddir/server/tinyd
path=/v2/health/ready

die() { echo "http_health: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
[ -x "$ceiling_bin" ] || die "$ceiling_bin not built (make bench/mhd_ceiling)"
have_tinyd=0
[ -x "$tinyd_bin" ] && have_tinyd=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/td_http_health.XXXXXX") || exit 1
pids=()
cleanup() {
    local p i
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for i in $(seq 1 30); do   # up to 3 s to stop, then no more waiting
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; done
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on right now (the kernel's pick).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# HTTP status of GET $path on 127.0.0.1:$1, or nothing.
status_of() {
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
    local line
    read -r -t 2 line <&3
    exec 3<&- 3>&-
    set -- $line
    echo "${2:-}"
}

wait_ready() { # port pid name
    local i
    for i in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || die "$3 exited during start-up (log: $(cat "$tmp/$3.log"))"
        [ "$(status_of "$1")" = 200 ] && return 0
        sleep 0.1
    done
    die "$3 not ready on 127.0.0.1:$1 after 10s"
}

ceiling_port=$(free_port)
"$ceiling_bin" "$ceiling_port" > "$tmp/ceiling.log" 2>&1 &
pids+=($!)
wait_ready "$ceiling_port" $! ceiling

if [ $have_tinyd = 1 ]; then
    tinyd_port=$(free_port)
    mkdir -p "$tmp/models" "$tmp/state"
    # shellcheck disable=SC2086
    "$tinyd_bin" --listen "127.0.0.1:$tinyd_port" --models "$tmp/models" \
        --state "$tmp/state" ${TINYD_ARGS:-} > "$tmp/tinyd.log" 2>&1 &
    pids+=($!)
    wait_ready "$tinyd_port" $! tinyd
fi

# wrk's latency in microseconds from "1.23ms" / "456.00us" / "1.01s".
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.1f", n * f }'
}

# One wrk run: appends "rps p99_us" to $tmp/<server>.c<conns>.
measure() { # server port conns seconds
    local t=$wrk_threads out rps p99 bad
    [ "$t" -gt "$3" ] && t=$3
    out=$(wrk -t"$t" -c"$3" -d"$4s" --latency "http://127.0.0.1:$2$path" 2>&1)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<< "$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<< "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }
               /Socket errors:/ { print "socket errors:" $0 }' <<< "$out")
    [ -n "$bad" ] && echo "# warning: $1 c=$3: $bad" >&2
    [ -n "$rps" ] && [ -n "$p99" ] || die "wrk output not understood: $out"
    echo "$rps $(to_us "$p99")" >> "$tmp/$1.c$3"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
servers=ceiling
[ $have_tinyd = 1 ] && servers="ceiling tinyd"
port_of() { if [ "$1" = ceiling ]; then echo "$ceiling_port"; else echo "$tinyd_port"; fi; }

for s in $servers; do   # warm caches and allocators, not recorded
    wrk -t1 -c4 -d1s "http://127.0.0.1:$(port_of $s)$path" > /dev/null 2>&1
done
for r in $(seq 1 "$repeats"); do
    order=$servers
    [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<< "$servers" | tac | tr '\n' ' ')
    for c in $conns; do
        for s in $order; do
            echo "# repeat $r/$repeats c=$c $s" >&2
            measure "$s" "$(port_of "$s")" "$c" "$duration"
        done
    done
done

median() { # file column
    [ -f "$1" ] || { echo "-"; return; }
    awk -v c="$2" '{ print $c }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "# GET $path, wrk -t$wrk_threads (at most -c) -c<conns> -d${duration}s --latency, loopback"
echo "# median of $repeats interleaved repeats; $(date -u '+%Y-%m-%d %H:%M UTC');" \
     "nproc $(nproc); $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "# load average (1/5/15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %12s %12s %7s %14s %14s %7s\n' conns "ceiling r/s" "tinyd r/s" ratio \
    "ceiling p99" "tinyd p99" ratio
for c in $conns; do
    cr=$(median "$tmp/ceiling.c$c" 1); tr_=$(median "$tmp/tinyd.c$c" 1)
    cp=$(median "$tmp/ceiling.c$c" 2); tp=$(median "$tmp/tinyd.c$c" 2)
    printf '%-6s %12s %12s %7s %12s%s %12s%s %7s\n' "$c" "$cr" "$tr_" "$(ratio "$tr_" "$cr")" \
        "$cp" us "$tp" "$([ "$tp" = - ] && echo '  ' || echo us)" "$(ratio "$tp" "$cp")"
done
