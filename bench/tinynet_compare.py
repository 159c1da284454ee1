#!/usr/bin/python3
"""tinynet_compare: TinyNet-A..E forward speed, tinyd against PyTorch and
ONNX Runtime, interleaved in one run.

Three long-lived measuring processes answer one request at a time (the
protocol of `tinynet_bench --serve`):
  tinyd  bench/tinynet_bench --serve      (our kernels, random weights;
                                           THREADS workers split the batch)
  torch  bench/tinynet_torch_ref.py --serve   (Debian's python3-torch,
                                           intra-op threads, OpenBLAS threads)
  ort    bench/tinynet_ort_ref.js DIR     (npm onnxruntime-node, intra-op
                                           threads; the models exported with
                                           torch.onnx.export from the same
                                           PyTorch module)
For every round, variant and configuration (BATCHxTHREADS) each engine
measures in turn, the order rotating every round (A B C, B C A, C A B...),
so slow phases of the shared machine hit all of them alike. A cell is the
median over rounds of each engine's median; the ratio is tinyd/reference
(below 1: tinyd faster).

Two figures per cell:
  wall  milliseconds per batch (the issue's latency / throughput);
  cpu   process CPU milliseconds per batch (all threads). On a loaded machine
        wall time of anything longer than a scheduler slice is mostly time
        spent waiting for a core; CPU time is what the engine itself spent.
        With one thread it is the latency on an idle core; with two it
        also counts spinning thread pools.

Each reference is skipped with a message when absent (no torch: no PyTorch
and no ONNX export; no onnxruntime-node: no ONNX Runtime). Install the
latter outside git with: cd bench/ort && ONNXRUNTIME_NODE_INSTALL=skip npm install
(or point ORT_NODE_MODULES at any node_modules holding it).

Usage: /usr/bin/python3 bench/tinynet_compare.py [--variants abcde]
         [--rounds 5] [--seconds 0.3] [--min-reps 3] [--configs 1x1,16x1,32x2]
         [--onnx-dir DIR] [--engines tinyd,torch,ort]
Run from the build directory (or set TD_BUILDDIR).
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# conv + fc multiply-adds at 1000 classes (td_tn_arch_count; docs/TINYNET.md)
MACS = {"a": 336.87e6, "b": 200.71e6, "c": 99.54e6, "d": 51.58e6,
        "e": 24.36e6}
RES = {"a": 192, "b": 188, "c": 184, "d": 152, "e": 106}
TORCH_PY = "/usr/bin/python3"


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


class Engine:
    def __init__(self, name, argv, env=None):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=env, bufsize=1)

    def ask(self, v, n, threads, seconds, min_reps):
        self.proc.stdin.write("%s %d %d %g %d\n" % (v, n, threads, seconds,
                                                    min_reps))
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if not line:
            raise RuntimeError("%s exited" % self.name)
        if line[0] != "ok":
            raise RuntimeError("%s: %s" % (self.name, " ".join(line[1:])))
        return float(line[1]), float(line[2])

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def probe(argv, env=None):
    """(ok, first line of output) of a short command."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=env,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    out = (r.stdout.strip() or r.stderr.strip()).splitlines()
    return r.returncode == 0, out[0] if out else ""


def have_torch():
    if not os.path.exists(TORCH_PY):
        return False, "%s not found" % TORCH_PY
    ok, out = probe([TORCH_PY, "-c", "import torch; print(torch.__version__)"])
    return ok, out if ok else "torch not importable by %s " \
        "(apt-get install python3-torch)" % TORCH_PY


def ort_env():
    env = dict(os.environ)
    mods = os.environ.get("ORT_NODE_MODULES",
                          os.path.join(HERE, "ort", "node_modules"))
    env["NODE_PATH"] = mods
    return env


def have_ort():
    if not shutil.which("node"):
        return False, "node not found (apt-get install nodejs)"
    ok, out = probe(["node", "-e", "console.log(require('onnxruntime-node')"
                     ".env.versions.common)"], env=ort_env())
    return ok, out if ok else "onnxruntime-node not found under " \
        "$ORT_NODE_MODULES or bench/ort/node_modules (cd bench/ort && " \
        "ONNXRUNTIME_NODE_INSTALL=skip npm install)"


def export_models(onnx_dir, variants):
    missing = [v for v in variants if not os.path.exists(
        os.path.join(onnx_dir, "tinynet_%s.onnx" % v))]
    if not missing:
        return True
    log("exporting %s to ONNX in %s" % ("".join(missing), onnx_dir))
    r = subprocess.run([TORCH_PY, os.path.join(HERE, "tinynet_torch_ref.py"),
                        "--export-onnx", onnx_dir, "".join(missing)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("ONNX export failed: %s" % r.stderr.strip()[-500:])
    return r.returncode == 0


def fmt(x, digits=2):
    return "-" if x is None else "%.*f" % (digits, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="abcde")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3,
                    help="time budget of one measurement (default 0.3)")
    ap.add_argument("--min-reps", type=int, default=3,
                    help="forward passes per measurement at least (3)")
    ap.add_argument("--configs", default="1x1,16x1,32x2",
                    help="BATCHxTHREADS list (default 1x1,16x1,32x2)")
    ap.add_argument("--onnx-dir", help="keep exported models here "
                    "(default: a temporary directory)")
    ap.add_argument("--engines", default="tinyd,torch,ort")
    args = ap.parse_args()
    configs = [tuple(int(x) for x in c.split("x"))
               for c in args.configs.split(",")]
    variants = [v for v in args.variants if v in MACS]
    wanted = args.engines.split(",")
    builddir = os.environ.get("TD_BUILDDIR", ".")
    bench_bin = os.path.join(builddir, "bench", "tinynet_bench")
    if not os.access(bench_bin, os.X_OK):
        sys.exit("tinynet_compare: %s not built (make bench/tinynet_bench), "
                 "or run from the build directory" % bench_bin)

    tmp = None
    engines, versions = [], {}
    load_before = open("/proc/loadavg").read().split()[:3]
    try:
        engines.append(Engine("tinyd", [bench_bin, "--serve"]))
        torch_ok, torch_ver = have_torch()
        if "torch" in wanted or "ort" in wanted:
            if not torch_ok:
                log("PyTorch skipped: %s" % torch_ver)
        if "torch" in wanted and torch_ok:
            versions["torch"] = torch_ver
            engines.append(Engine("torch", [TORCH_PY, os.path.join(
                HERE, "tinynet_torch_ref.py"), "--serve"]))
        if "ort" in wanted:
            ort_ok, ort_ver = have_ort()
            if not ort_ok:
                log("ONNX Runtime skipped: %s" % ort_ver)
            elif not torch_ok:
                log("ONNX Runtime skipped: the models are exported with "
                    "PyTorch, which is absent")
            else:
                onnx_dir = args.onnx_dir
                if not onnx_dir:
                    tmp = tempfile.mkdtemp(prefix="td_tinynet_onnx.")
                    onnx_dir = tmp
                if export_models(onnx_dir, variants):
                    versions["ort"] = ort_ver
                    engines.append(Engine("ort", [
                        "node", os.path.join(HERE, "tinynet_ort_ref.js"),
                        onnx_dir], env=ort_env()))
                else:
                    log("ONNX Runtime skipped: export failed")
        names = [e.name for e in engines]
        res = {}  # (engine, v, n, t) -> [(wall, cpu)]
        for r in range(args.rounds):
            for v in variants:
                for n, t in configs:
                    k = r % len(engines)
                    for e in engines[k:] + engines[:k]:
                        log("round %d/%d tinynet_%s b%d/%dt %s" % (
                            r + 1, args.rounds, v, n, t, e.name))
                        res.setdefault((e.name, v, n, t), []).append(
                            e.ask(v, n, t, args.seconds, args.min_reps))
    finally:
        for e in engines:
            e.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    def med(name, v, n, t, i):
        xs = res.get((name, v, n, t))
        return statistics.median(x[i] for x in xs) if xs else None

    def ratio(a, b):
        return None if a is None or b is None or b <= 0 else a / b

    cpu_model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    refs = [x for x in ("torch", "ort") if x in names]
    print("# TinyNet forward, random weights, 1000 classes; %s" % datetime.
          datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    print("# nproc %d; %s; load average before %s, after %s" % (
        os.cpu_count(), cpu_model, "/".join(load_before),
        "/".join(open("/proc/loadavg").read().split()[:3])))
    print("# engines: tinyd (OpenBLAS, 1 thread per worker)%s%s" % (
        "; PyTorch %s" % versions["torch"] if "torch" in versions else "",
        "; ONNX Runtime %s (onnxruntime-node, CPU EP)" % versions["ort"]
        if "ort" in versions else ""))
    print("# %d interleaved rounds, each measurement >= %d passes or %g s;"
          " medians over rounds; ratio = tinyd / reference" % (
              args.rounds, args.min_reps, args.seconds))
    for n, t in configs:
        for i, what in ((0, "wall ms per batch"), (1, "CPU ms per batch")):
            print()
            print("## batch %d, %d thread%s: %s" % (n, t, "s" * (t > 1), what))
            head = "%-9s %6s" % ("variant", "MMACs")
            for x in names:
                head += " %9s" % x
            for x in refs:
                head += " %9s" % ("/" + x)
            head += " %9s" % "tinyd GF/s"
            if i == 0 and n > 1:
                head += " %9s" % "tinyd i/s"
                for x in refs:
                    head += " %9s" % (x + " i/s")
            print(head)
            for v in variants:
                row = "%-9s %6.1f" % ("tinynet_" + v, MACS[v] / 1e6)
                for x in names:
                    row += " %9s" % fmt(med(x, v, n, t, i))
                for x in refs:
                    row += " %9s" % fmt(ratio(med("tinyd", v, n, t, i),
                                              med(x, v, n, t, i)))
                ours = med("tinyd", v, n, t, i)
                row += " %9s" % fmt(None if not ours else
                                    2 * MACS[v] * n / (ours * 1e6), 1)
                if i == 0 and n > 1:
                    for x in ["tinyd"] + refs:
                        m = med(x, v, n, t, 0)
                        row += " %9s" % fmt(None if not m else
                                            n * 1e3 / m, 1)
                print(row)
    if "ort" in refs:
        print()
        print("## targets (issue 3), ratio tinyd/ONNX Runtime, wall | cpu")

        def verdict(v, n, t, limit):
            w = ratio(med("tinyd", v, n, t, 0), med("ort", v, n, t, 0))
            c = ratio(med("tinyd", v, n, t, 1), med("ort", v, n, t, 1))
            ok = lambda x: "-" if x is None else (
                "met" if x <= limit else "MISSED")
            return "%s %s | %s %s" % (fmt(w), ok(w), fmt(c), ok(c))
        if "e" in variants and (1, 1) in configs:
            print("tinynet_e b1/1t <= 1.0: %s" % verdict("e", 1, 1, 1.0))
        for v in variants:
            for n, t in configs:
                if n in (1, 16) and t == 1:
                    print("tinynet_%s b%d/1t <= 1.5: %s" % (
                        v, n, verdict(v, n, t, 1.5)))


if __name__ == "__main__":
    main()
