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

For bench/tinynet_compare.py, which interleaves it with tinyd and ONNX
Runtime:
  --serve            one measurement per line of standard input, the protocol
                     of `tinynet_bench --serve` ("VARIANT BATCH THREADS
                     SECONDS MIN_ROUNDS" -> "ok WALL_MS CPU_MS ROUNDS"); CPU
                     is process CPU time (all threads). Here THREADS sets
                     torch.set_num_threads and OpenBLAS's thread count
                     (through openblas_set_num_threads), so PyTorch
                     parallelises inside each op.
  --export-onnx DIR  write DIR/tinynet_X.onnx for each variant (opset 13,
                     batch dimension dynamic) with the same random weights
                     the serve mode uses, for the ONNX Runtime reference.
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


def model_of(v):
    """The reference module of variant v with fixed random weights."""
    w, d, _, _ = PRESETS[v]
    torch.manual_seed(ord(v))
    return gen_fixtures.TinyNet(d, w, 1000).eval()


def set_threads(n):
    torch.set_num_threads(n)
    # Debian's torch calls OpenBLAS for 1x1 convolutions, and OpenBLAS
    # ignores torch.set_num_threads: set its own count as well.
    try:
        import ctypes
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def serve():
    models = {}
    for line in sys.stdin:
        try:
            v, n, threads, budget, min_rounds = line.split()
            n, threads, min_rounds = int(n), int(threads), int(min_rounds)
            budget = float(budget)
            if v not in PRESETS or n < 1 or threads < 1 or min_rounds < 1:
                raise ValueError
        except ValueError:
            print("error bad request (VARIANT BATCH THREADS SECONDS "
                  "MIN_ROUNDS)", flush=True)
            continue
        if v not in models:
            models[v] = model_of(v)
        set_threads(threads)
        x = torch.randn(n, 3, PRESETS[v][2], PRESETS[v][2])
        with torch.inference_mode():
            models[v](x)
            t0 = time.perf_counter()
            models[v](x)
            probe = time.perf_counter() - t0
            rounds = max(min_rounds, min(500, int(budget / max(probe, 1e-6))))
            wall, cpu = [], []
            for _ in range(rounds):
                c0, t0 = time.process_time(), time.perf_counter()
                models[v](x)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        print("ok %.4f %.4f %d" % (statistics.median(wall) * 1e3,
                                    statistics.median(cpu) * 1e3, rounds),
              flush=True)


def export_onnx(outdir, variants):
    os.makedirs(outdir, exist_ok=True)
    for v in variants:
        res = PRESETS[v][2]
        path = os.path.join(outdir, "tinynet_%s.onnx" % v)
        torch.onnx.export(model_of(v), torch.randn(1, 3, res, res), path,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"},
                                        "logits": {0: "batch"}},
                          opset_version=13)
        print(path)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve()
    if len(sys.argv) > 2 and sys.argv[1] == "--export-onnx":
        return export_onnx(sys.argv[2],
                           sys.argv[3] if len(sys.argv) > 3 else "abcde")
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
        model = model_of(v)
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
