#!/usr/bin/python3
"""PyTorch reference timings for bench/tinynet_bench (same table layout).

TinyNet-A..E built by the fixture generator's independent PyTorch module
(tests/fixtures/tinynet/gen_fixtures.py, timm's architecture), random
weights, eval mode, torch.inference_mode. Batch 1 and 16 on one thread, and
batch 32 on two threads (torch.set_num_threads(2), one process: PyTorch
parallelises inside each op, unlike tinyd's two workers).

Debian's torch hands 1x1 convolutions to OpenBLAS, which ignores
torch.set_num_threads: run with OPENBLAS_NUM_THREADS=1 for honest one-thread
figures (this script sets it before importing torch).

Usage: /usr/bin/python3 bench/tinynet_torch_ref.py [variants] [seconds]
Prints a message and exits 0 when torch is not installed.
"""
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
try:
    import torch
except ImportError:
    print("tinynet_torch_ref: torch not installed (apt-get install "
          "python3-torch); skipped")
    sys.exit(0)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the fixtures directory
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures", "tinynet"))
import gen_fixtures  # noqa: E402  (the PyTorch TinyNet with timm's names)

PRESETS = {"a": (1.0, 1.2, 192, 336.87e6), "b": (0.75, 1.1, 188, 200.71e6),
           "c": (0.54, 0.85, 184, 99.54e6), "d": (0.54, 0.695, 152, 51.58e6),
           "e": (0.51, 0.6, 106, 24.36e6)}


def measure(model, x, budget):
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        model(x)
        probe = time.perf_counter() - t0
        rounds = max(5, min(200, int(budget / max(probe, 1e-6))))
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    variants = sys.argv[1] if len(sys.argv) > 1 else "abcde"
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    print("PyTorch %s reference, random weights, 1000 classes, OPENBLAS_NUM_"
          "THREADS=%s; medians" % (torch.__version__,
                                   os.environ["OPENBLAS_NUM_THREADS"]))
    print("%-9s %4s %8s | %9s %7s | %9s %7s | %9s %9s %7s" % (
        "variant", "res", "MMACs", "b1/1t ms", "GFLOP/s", "b16/1t ms",
        "GFLOP/s", "b32/2t ms", "img/s", "GFLOP/s"))
    for v in variants:
        w, d, res, macs = PRESETS[v]
        model = gen_fixtures.TinyNet(d, w, 1000).eval()
        gf = 2 * macs / 1e9
        torch.set_num_threads(1)
        t1 = measure(model, torch.randn(1, 3, res, res), budget)
        t16 = measure(model, torch.randn(16, 3, res, res), budget)
        torch.set_num_threads(2)
        t32 = measure(model, torch.randn(32, 3, res, res), budget)
        print("%-9s %4d %8.2f | %9.3f %7.1f | %9.2f %7.1f | %9.1f %9.1f %7.1f"
              % ("tinynet_" + v, res, macs / 1e6, t1 * 1e3, gf / t1,
                 t16 * 1e3, 16 * gf / t16, t32 * 1e3, 32 / t32, 32 * gf / t32))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
