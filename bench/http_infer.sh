#!/bin/bash
# http_infer: TinyNet end to end over HTTP with wrk, on loopback.
#
# Starts server/tinyd on a free 127.0.0.1 port with one TinyNet model (random
# weights, written by `bench/tinynet_bench --save`) and measures with wrk
# (script bench/http_infer.lua) these workloads:
#   classify   POST /v1/models/M:classify, one 224x224 JPEG as image/jpeg
#   json1      POST /v2/models/M/infer, FP32 [1,3,r,r] as JSON "data"
#   json16     the same at batch 16
#   bin1       batch 1 through the binary tensor extension
#              (Inference-Header-Content-Length)
#   bin16      the same at batch 16
# requests/s, p50 and p99 latency at each concurrency; images/s = r/s x
# batch. Workloads and concurrencies are interleaved, the order rotating
# every repeat; each cell is the median of the repeats (the machine is
# shared: compare within one run).
#
# Usage: bench/http_infer.sh [-m a..e] [-d SECONDS] [-r REPEATS] [-c "1 4 16"]
#                            [-w "classify json1 json16 bin1 bin16"]
# Run from the build directory (or set TD_BUILDDIR); extra tinyd flags in
# TINYD_ARGS. The request bodies are generated at run time (the JPEG with
# python3-pil). Default: TinyNet-E, 5 s per run, 3 repeats.
set -u

variant=e
duration=5
repeats=3
conns="1 4 16"
workloads="classify json1 json16 bin1 bin16"
while getopts m:d:r:c:w:h opt; do
    case $opt in
    m) variant=$OPTARG ;;
    d) duration=$OPTARG ;;
    r) repeats=$OPTARG ;;
    c) conns=$OPTARG ;;
    w) workloads=$OPTARG ;;
    *) sed -n '2,23s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
builddir=${TD_BUILDDIR:-.}
tinyd_bin=$builddir/server/tinyd
bench_bin=$builddir/bench/tinynet_bench
lua=$here/http_infer.lua
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3   # Debian's, with python3-pil

die() { echo "http_infer: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
[ -x "$tinyd_bin" ] || die "$tinyd_bin not built (make)"
[ -x "$bench_bin" ] || die "$bench_bin not built (make bench/tinynet_bench)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
case $variant in a) res=192 ;; b) res=188 ;; c) res=184 ;; d) res=152 ;;
                 e) res=106 ;; *) die "variant must be one of a..e" ;; esac
model=tinynet_$variant

tmp=$(mktemp -d "${TMPDIR:-/tmp}/td_http_infer.XXXXXX") || exit 1
pid=
cleanup() {
    local i
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$tmp/models" "$tmp/state" "$tmp/bodies"
"$bench_bin" --save "$variant" "$tmp/models/$model.safetensors" ||
    die "could not write the model"

# Request bodies: what each workload sends. bodies/W holds the body,
# bodies/W.type its Content-Type, bodies/W.hlen the JSON header length of a
# binary request, bodies/W.n its batch size.
"$py" - "$tmp/bodies" "$res" <<'EOF' || die "could not write the request bodies"
import io, json, os, random, struct, sys
out, res = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)

def put(name, body, ctype, n, hlen=None):
    with open(os.path.join(out, name), "wb") as f:
        f.write(body)
    for ext, val in (("type", ctype), ("n", n), ("hlen", hlen)):
        if val is not None:
            with open(os.path.join(out, name + "." + ext), "w") as f:
                f.write(str(val))

try:
    from PIL import Image
    # a smooth colour field with some noise: a photo-like JPEG, not a flat one
    img = Image.new("RGB", (224, 224))
    img.putdata([(int(255 * x / 223), int(255 * y / 223),
                  (x * y + rnd.randrange(40)) % 256)
                 for y in range(224) for x in range(224)])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    put("classify", buf.getvalue(), "image/jpeg", 1)
except ImportError:
    print("http_infer: python3-pil missing; classify skipped", file=sys.stderr)

for n in (1, 16):
    count = n * 3 * res * res
    data = [round(rnd.uniform(-2, 2), 4) for _ in range(count)]
    shape = [n, 3, res, res]
    req = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                       "data": data}]}
    put("json%d" % n, json.dumps(req, separators=(",", ":")).encode(),
        "application/json", n)
    head = json.dumps({"inputs": [{"name": "input", "shape": shape,
                                   "datatype": "FP32", "parameters":
                                   {"binary_data_size": 4 * count}}]},
                      separators=(",", ":")).encode()
    put("bin%d" % n, head + struct.pack("<%df" % count, *data),
        "application/octet-stream", n, len(head))
EOF

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$tinyd_bin" --listen "127.0.0.1:$port" --models "$tmp/models" \
    --state "$tmp/state" --log-level warn ${TINYD_ARGS:-} > "$tmp/tinyd.log" 2>&1 &
pid=$!
base=http://127.0.0.1:$port
ready=0
for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || die "tinyd exited during start-up: $(cat "$tmp/tinyd.log")"
    if "$py" -c 'import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' \
        "$base/v2/models/$model/ready" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[ $ready = 1 ] || die "model $model not ready after 20 s: $(cat "$tmp/tinyd.log")"

url_of() {
    if [ "$1" = classify ]; then echo "$base/v1/models/$model:classify"
    else echo "$base/v2/models/$model/infer"; fi
}

# Each workload must answer 200 once before it is measured.
avail=
for w in $workloads; do
    [ -f "$tmp/bodies/$w" ] || continue
    hdr=(-H "Content-Type: $(cat "$tmp/bodies/$w.type")")
    [ -f "$tmp/bodies/$w.hlen" ] &&
        hdr+=(-H "Inference-Header-Content-Length: $(cat "$tmp/bodies/$w.hlen")")
    code=$(curl -s -o "$tmp/check.out" -w '%{http_code}' -X POST "${hdr[@]}" \
        --data-binary "@$tmp/bodies/$w" "$(url_of "$w")")
    if [ "$code" = 200 ]; then avail="$avail $w"
    else echo "# $w skipped: HTTP $code $(head -c 300 "$tmp/check.out")" >&2; fi
done
[ -n "$avail" ] || die "no workload answered 200"

to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.1f", n * f }'
}

measure() { # workload conns
    local w=$1 c=$2 t=2 out rps p50 p99 bad
    [ "$c" -lt 2 ] && t=1
    # shellcheck disable=SC2046  # the header length is one word or none
    out=$(wrk -t"$t" -c"$c" -d"${duration}s" --timeout 10s --latency -s "$lua" "$(url_of "$w")" \
        -- "$tmp/bodies/$w" "$(cat "$tmp/bodies/$w.type")" \
        $( [ -f "$tmp/bodies/$w.hlen" ] && cat "$tmp/bodies/$w.hlen") 2>&1)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<< "$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<< "$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<< "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }
               /Socket errors:/ { print "socket errors:" $0 }' <<< "$out")
    [ -n "$bad" ] && echo "# warning: $w c=$c: $bad" >&2
    [ -n "$rps" ] && [ -n "$p99" ] || die "wrk output not understood: $out"
    echo "$rps $(to_us "$p50") $(to_us "$p99")" >> "$tmp/$w.c$c"
}

# Requests still in flight from the previous wrk run (a big JSON body takes
# long to parse) would weigh on the next one: wait until tinyd is idle.
wait_idle() {
    local i n
    for i in $(seq 1 300); do
        n=$(curl -s "$base/metrics" | awk '$1 == "tinyd_http_requests_in_flight" { print $2 }')
        # this very request counts itself
        [ -n "$n" ] && [ "${n%.*}" -le 1 ] && return 0
        sleep 0.1
    done
    echo "# warning: tinyd still busy after 30 s" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for w in $avail; do   # warm-up, not recorded
    wrk -t1 -c2 -d1s -s "$lua" "$(url_of "$w")" -- "$tmp/bodies/$w" \
        "$(cat "$tmp/bodies/$w.type")" \
        $( [ -f "$tmp/bodies/$w.hlen" ] && cat "$tmp/bodies/$w.hlen") > /dev/null 2>&1
done
set -- $avail
nw=$#
for r in $(seq 1 "$repeats"); do
    # rotate the workload order every repeat
    k=$(( (r - 1) % nw ))
    order="${*:k+1} ${*:1:k}"
    for c in $conns; do
        for w in $order; do
            echo "# repeat $r/$repeats c=$c $w" >&2
            wait_idle
            measure "$w" "$c"
        done
    done
done

median() { # file column
    [ -f "$1" ] || { echo "-"; return; }
    awk -v c="$2" '{ print $c }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "# tinyd $model (${res}x${res}, random weights), wrk --latency --timeout 10s -d${duration}s" \
     "-t2 (-t1 at 1 connection), loopback, tinyd ${TINYD_ARGS:-defaults}"
echo "# median of $repeats interleaved repeats; $(date -u '+%Y-%m-%d %H:%M UTC');" \
     "nproc $(nproc); $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "# load average (1/5/15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %5s %5s %9s %9s %10s %10s %8s\n' workload batch conns "req/s" "images/s" \
    "p50 ms" "p99 ms" "body KB"
for w in $avail; do
    n=$(cat "$tmp/bodies/$w.n")
    kb=$(( $(stat -c %s "$tmp/bodies/$w") / 1024 ))
    for c in $conns; do
        rps=$(median "$tmp/$w.c$c" 1)
        p50=$(median "$tmp/$w.c$c" 2)
        p99=$(median "$tmp/$w.c$c" 3)
        # no request finished within wrk's 10 s timeout: no latency to show
        awk -v w="$w" -v n="$n" -v c="$c" -v r="$rps" -v a="$p50" -v b="$p99" -v kb="$kb" \
            'BEGIN { if (r + 0 == 0) printf "%-9s %5d %5d %9s %9s %10s %10s %8d\n",
                         w, n, c, "0", "0", "timeout", "timeout", kb
                     else printf "%-9s %5d %5d %9.1f %9.1f %10.2f %10.2f %8d\n",
                         w, n, c, r, r * n, a / 1000, b / 1000, kb }'
    done
done
