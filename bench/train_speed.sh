#!/bin/sh
# bench/train_speed.sh: training throughput of tinyd-train per optimiser.
#
# Runs SGD, SAF, SAM and MESA on the same model and data subset, interleaved
# and repeated (the machine is shared: compare ratios, not absolutes), with
# the trajectory loss switched on from the second epoch so SAF and MESA pay
# their full cost. Prints the median images/s of epoch 2 per optimiser (wall
# clock and per CPU second) and its ratio to SGD. Run from the build directory after `make`.
#
#   bench/train_speed.sh [-r REPEATS] [-n IMAGES] [-- extra tinyd-train flags]
set -eu
repeats=3
images=3840
while [ $# -gt 0 ]; do
    case "$1" in
    -r) repeats=$2; shift 2 ;;
    -n) images=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-r REPEATS] [-n IMAGES] [-- tinyd-train flags]" >&2; exit 2 ;;
    esac
done
train=${TINYD_TRAIN:-models/tinyd-train}
[ -x "$train" ] || { echo "$0: $train not built" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=${MODEL:-"--preset tinynet_e --res 32"}
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%FT%TZ)"
echo "# $train $model --epochs 2 --batch 128 --train-limit $images --saf-minus 1 --saf-start 1 $*"
for r in $(seq "$repeats"); do
    for opt in sgd saf sam mesa; do
        # shellcheck disable=SC2086
        "$train" $model --epochs 2 --batch 128 --train-limit "$images" \
            --test-limit 256 --saf-minus 1 --saf-start 1 --opt "$opt" \
            --quiet --out "$tmp/$opt.safetensors" "$@"
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=r["epochs"][1]; print(sys.argv[2], e["images_per_s"], e["images_per_cpu_s"])' \
            "$tmp/$opt.report.json" "$opt" >>"$tmp/results"
    done
done
python3 - "$tmp/results" <<'PY'
import statistics, sys
runs, cpu = {}, {}
for line in open(sys.argv[1]):
    opt, ips, ipc = line.split()
    runs.setdefault(opt, []).append(float(ips))
    cpu.setdefault(opt, []).append(float(ipc))
base = statistics.median(runs["sgd"])
cbase = statistics.median(cpu["sgd"])
print("%-5s %10s %7s %12s %7s  %s" % ("opt", "images/s", "x SGD",
      "img/CPU-s", "x SGD", "wall-clock runs"))
for opt in ("sgd", "saf", "sam", "mesa"):
    med, cmed = statistics.median(runs[opt]), statistics.median(cpu[opt])
    print("%-5s %10.0f %7.2f %12.0f %7.2f  %s" % (opt, med, med / base, cmed,
          cmed / cbase, " ".join("%.0f" % v for v in runs[opt])))
PY
