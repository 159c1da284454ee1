#!/bin/sh
# bnn_table.sh: the table of docs/BNN.md "Trained binary networks": dense
# BNN against BNN + MST, without the regulariser and with three lambdas.
#
# Protocol (the cheapest sound one): train one base binary network (ReActNet
# step 1 then step 2), then fine-tune four copies of its final checkpoint for
# the same number of epochs, with --mst-lambda 0 (the fair control: the same
# extra training without the pull) and with each lambda. Each fine-tuned
# model is measured: test accuracy through the inference engine
# (`tinyd-train eval`, MST plan), its statistics (`tinyd-train info`), and
# one-thread latency of the dense binary layers, the MST plan and the fp32
# network of the same shape at batch 1 and 16 (`bench/bnn_bench --model`).
#
# Usage: bench/bnn_table.sh [OUTDIR]   (run from the build directory)
# Env: BASE_EPOCHS (10), STEP1 (3), FT_EPOCHS (2), LAMBDAS ("0.001 0.01 0.1"),
#      FT_LR (5e-4), THREADS (1), BENCH_SECS (1), PRESET (bnn_fmnist),
#      TRAIN_LIMIT (all). A base already in OUTDIR is reused.
set -eu
OUT=${1:-bnn_table}
BASE_EPOCHS=${BASE_EPOCHS:-10}
STEP1=${STEP1:-3}
FT_EPOCHS=${FT_EPOCHS:-2}
LAMBDAS=${LAMBDAS:-"0.001 0.01 0.1"}
FT_LR=${FT_LR:-5e-4}
THREADS=${THREADS:-1}
BENCH_SECS=${BENCH_SECS:-1}
PRESET=${PRESET:-bnn_fmnist}
LIMIT=""
[ -n "${TRAIN_LIMIT:-}" ] && LIMIT="--train-limit $TRAIN_LIMIT"
TRAIN=models/tinyd-train
BENCH=bench/bnn_bench
mkdir -p "$OUT"

if [ ! -f "$OUT/base.ckpt" ]; then
    echo "== base: $PRESET, $BASE_EPOCHS epochs ($STEP1 of step 1), SAF"
    nice -n 5 $TRAIN --preset "$PRESET" --epochs "$BASE_EPOCHS" \
        --bnn-step1 "$STEP1" --batch 128 --opt saf --seed 1 \
        --threads "$THREADS" $LIMIT --out "$OUT/base.safetensors"
fi

models=""
for l in 0 $LAMBDAS; do
    m="$OUT/ft_lambda$l.safetensors"
    if [ ! -f "$m" ]; then
        echo "== fine-tune: lambda $l, $FT_EPOCHS epochs from the base"
        nice -n 5 $TRAIN --preset "$PRESET" --init "$OUT/base.ckpt" \
            --epochs "$FT_EPOCHS" --mst-lambda "$l" --lr "$FT_LR" \
            --warmup 0 --batch 128 --opt saf --seed 1 --threads "$THREADS" \
            $LIMIT --quiet --out "$m"
    fi
    models="$models $m"
done

echo "== accuracy (tinyd-train eval: the inference engine, MST plan)"
for m in "$OUT/base.safetensors" $models; do
    $TRAIN eval "$m" --threads "$THREADS"
done
echo "== statistics (tinyd-train info)"
for m in "$OUT/base.safetensors" $models; do
    $TRAIN info "$m"
done
echo "== latency (bench/bnn_bench --model, one thread)"
nice -n 5 $BENCH "$BENCH_SECS" --model "$OUT/base.safetensors" $models
