#!/bin/bash
# load: throughput, p50 and p99 latency of tinyd's main routes under wrk,
# at several concurrencies, on loopback:
#
#   health    GET  /v2/health/ready
#   linear    POST /v2/models/lin/infer        one row, 64 features, 10 classes
#   tinynet   POST /v2/models/tiny/infer       one 3x33x33 image (the TinyNet
#                                              fixture tests/fixtures/tinynet)
#   classify  POST /v1/models/tiny:classify    a 97x61 JPEG, raw body
#   distance  POST /v2/models/city/infer       one random pair on the bundled
#                                              oracle models/zoo/city.safetensors
#
# Usage: bench/load.sh [-d SECONDS] [-c "1 8 64"] [-r "health linear ..."]
# Run from the build directory (or set TD_BUILDDIR; TD_SRCDIR for the
# fixtures). Extra tinyd flags in TINYD_ARGS. Prints one table row per
# route and concurrency: requests/s, p50, p99, and the count of non-2xx
# answers and socket errors (both should be 0).
set -u

duration=5
conns="1 8 64"
routes="health linear tinynet classify distance"
while getopts d:c:r:h opt; do
    case $opt in
    d) duration=$OPTARG ;;
    c) conns=$OPTARG ;;
    r) routes=$OPTARG ;;
    *) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
srcdir=${TD_SRCDIR:-$(dirname "$here")}
builddir=${TD_BUILDDIR:-.}
tinyd=${TD_TINYD:-$builddir/server/tinyd}

die() { echo "load: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v python3 >/dev/null || die "python3 not found"
[ -x "$tinyd" ] || die "$tinyd not built (make)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/td_load.XXXXXX") || exit 1
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The repository and the request bodies, made with the tests' own helpers.
mkdir -p "$tmp/models" "$tmp/state"
PYTHONPATH=$srcdir/tests/integration TD_SRCDIR=$srcdir python3 - "$tmp" <<'PY' || die "cannot prepare the repository"
import json, os, shutil, sys
sys.dont_write_bytecode = True
import tdtest, tinyfix
tmp = sys.argv[1]
repo = os.path.join(tmp, "models")
lin = tdtest.Linear.seeded(5, classes=10, features=64)
lin.save(repo, "lin")
tinyfix.install(repo, "tiny", tinyfix.OURS)
shutil.copyfile(os.path.join(tdtest.SRCDIR, "models", "zoo", "city.safetensors"),
                os.path.join(repo, "city.safetensors"))
with open(os.path.join(tmp, "linear.json"), "w") as f:
    json.dump(tdtest.infer_body(lin.inputs(1)), f)
with open(os.path.join(tmp, "tinynet.json"), "w") as f:
    json.dump(tinyfix.infer_body(tinyfix.OURS, [0]), f)
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$tinyd" --listen "127.0.0.1:$port" --models "$tmp/models" --state "$tmp/state" \
    ${TINYD_ARGS:-} > "$tmp/tinyd.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
ready=0
for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || die "tinyd exited: $(cat "$tmp/tinyd.log")"
    if python3 -c 'import sys,urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)' \
            "$url/v2/health/ready" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
[ $ready = 1 ] || die "tinyd not ready: $(cat "$tmp/tinyd.log")"

# Each route answers 200 before it is measured, so wrk measures successes.
probe() { # method path content-type body-file
    python3 - "$url" "$@" <<'PY'
import sys, urllib.request
url, method, path, ctype, body = sys.argv[1:6]
data = open(body, "rb").read() if body != "-" else None
req = urllib.request.Request(url + path, data=data, method=method,
                             headers={"Content-Type": ctype} if data else {})
with urllib.request.urlopen(req, timeout=10) as r:
    sys.exit(r.status != 200)
PY
}
printf '{"inputs":[{"name":"source","datatype":"INT64","shape":[1],"data":[1]},{"name":"target","datatype":"INT64","shape":[1],"data":[1920]}]}' > "$tmp/distance.json"
jpeg=$srcdir/tests/fixtures/image/photo_97x61.jpg
probe GET /v2/health/ready - - &&
probe POST /v2/models/lin/infer application/json "$tmp/linear.json" &&
probe POST /v2/models/tiny/infer application/json "$tmp/tinynet.json" &&
probe POST /v1/models/tiny:classify image/jpeg "$jpeg" &&
probe POST /v2/models/city/infer application/json "$tmp/distance.json" ||
    die "a route does not answer 200: $(tail -5 "$tmp/tinyd.log")"

wrk_args() { # route -> the URL and script arguments of wrk
    case $1 in
    health)   echo "$url/v2/health/ready" ;;
    linear)   echo "-s $here/wrk_post.lua $url -- /v2/models/lin/infer application/json $tmp/linear.json" ;;
    tinynet)  echo "-s $here/wrk_post.lua $url -- /v2/models/tiny/infer application/json $tmp/tinynet.json" ;;
    classify) echo "-s $here/wrk_post.lua $url -- /v1/models/tiny:classify image/jpeg $jpeg" ;;
    distance) echo "-s $here/wrk_distance.lua $url -- city 1920 1" ;;
    *) die "unknown route $1" ;;
    esac
}

# wrk prints latencies as 812.00us, 1.23ms or 1.02s; show them in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0;
        else if (v ~ /s$/) n *= 1000; else if (v ~ /m$/) n *= 60000
        printf "%.2f", n }'
}

echo "# tinyd load: wrk ${duration}s per cell, loopback; $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(date -u '+%Y-%m-%d %H:%M') UTC"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %6s %10s %10s %10s %8s\n' route conns 'req/s' 'p50 ms' 'p99 ms' errors
for route in $routes; do
    for c in $conns; do
        t=2; [ "$c" -lt 2 ] && t=1
        # shellcheck disable=SC2046
        wrk -t$t -c"$c" -d"${duration}s" --latency $(wrk_args "$route") \
            > "$tmp/wrk.out" 2>&1
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")
        p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.out")
        p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")
        bad=$(awk '/Non-2xx or 3xx responses:/ {n += $NF}
                   /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10}
                   END {print n + 0}' "$tmp/wrk.out")
        if [ -z "$rps" ] || [ -z "$p99" ]; then
            sed 's/^/# /' "$tmp/wrk.out"
            die "wrk failed on $route at $c connections"
        fi
        printf '%-9s %6s %10.0f %10s %10s %8s\n' "$route" "$c" "$rps" \
            "$(to_ms "$p50")" "$(to_ms "$p99")" "$bad"
    done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill -0 "$pid" 2>/dev/null || die "tinyd died during the run: $(tail -20 "$tmp/tinyd.log")"
