#!/usr/bin/python3
"""tinynet_profile: where a tinyd TinyNet forward pass spends its time.

Runs `bench/tinynet_bench --serve` for one variant and batch on one thread
under `perf record`, groups the samples by kernel and turns each group's
share of the forward pass into milliseconds (from the pass's median thread
CPU time) and GFLOP/s (from the multiply-adds that group computes):
  sgemm     OpenBLAS sgemm/sgemv and its packing and beta=0 zeroing (memset):
            the stem (after im2col), every 1x1 conv, the head, the classifier
  dwconv    td_k_dwconv_silu (depthwise k x k + bias + SiLU + channel sums)
  bias_act  td_k_bias_act (bias + SiLU after the expand and head sgemms,
            bias after the projections)
  se        td_k_se, td_k_dot, td_k_sigmoid (squeeze-excitation)
  im2col    td_k_im2col_nchw (the stem's patches, from NCHW input)
Set-up (random weights, first-touch page faults) and kernel symbols are left
out; they are reported as the excluded share.

Usage: /usr/bin/python3 bench/tinynet_profile.py [VARIANT] [BATCH] [PASSES]
       (default e 1 200). Needs perf; run from the build directory.
"""
import os
import re
import subprocess
import sys
import tempfile

# Multiply-adds per image at the preset resolution, by kernel group
# (stem conv, 1x1 convs incl. head, depthwise, SE, classifier); they add up
# to td_tn_arch_count's totals (docs/TINYNET.md).
MACS = {  # stem, pointwise+head, depthwise, se, fc   (millions)
    "a": (7.96, 297.38, 29.45, 0.80, 1.28),
    "b": (7.63, 169.76, 21.67, 0.37, 1.28),
    "c": (7.31, 76.33, 14.46, 0.16, 1.28),
    "d": (4.99, 38.96, 6.22, 0.13, 1.28),
    "e": (2.43, 17.65, 2.92, 0.09, 1.28),
}
GROUPS = [("sgemm", re.compile(r"sgemm|sgemv|memset")),
          ("dwconv", re.compile(r"td_k_dwconv")),
          ("bias_act", re.compile(r"td_k_bias_act|td_k_silu")),
          ("se", re.compile(r"td_k_se|td_k_dot|td_k_sigmoid")),
          ("im2col", re.compile(r"td_k_im2col")),
          ("other", re.compile(r"td_tinynet_forward|td_k_|td_arena"))]


def main():
    v = sys.argv[1] if len(sys.argv) > 1 else "e"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    bench = os.path.join(os.environ.get("TD_BUILDDIR", "."), "bench",
                         "tinynet_bench")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        r = subprocess.run(["perf", "record", "-q", "-o", data, bench,
                            "--serve"], input="%s %d 1 0.01 %d\n" % (
                                v, n, passes), capture_output=True, text=True)
        out = r.stdout.split()
        if r.returncode != 0 or not out or out[0] != "ok":
            sys.exit("tinynet_profile: %s %s" % (r.stdout, r.stderr))
        cpu_ms = float(out[2])
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio",
                              "--no-children", "--sort", "symbol"],
                             capture_output=True, text=True).stdout
    share = dict.fromkeys([g for g, _ in GROUPS], 0.0)
    excluded = 0.0
    for line in rep.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+\[(.)\]\s+(\S+)", line)
        if not m:
            continue
        pct, kind, sym = float(m.group(1)), m.group(2), m.group(3)
        for g, rx in GROUPS:
            if kind == "." and rx.search(sym):
                share[g] += pct
                break
        else:
            excluded += pct
    fwd = sum(share.values())
    stem, pw, dw, se, fc = MACS[v]
    flops = {"sgemm": 2e6 * n * (stem + pw + fc), "dwconv": 2e6 * n * dw,
             "se": 2e6 * n * se}
    print("# tinynet_%s batch %d, 1 thread, %d passes: median CPU %.2f ms "
          "per pass; %.1f%% of samples outside the forward pass (set-up, "
          "kernel) excluded" % (v, n, passes, cpu_ms, excluded))
    print("%-9s %7s %9s %9s" % ("kernel", "share", "ms/pass", "GFLOP/s"))
    for g, _ in GROUPS:
        ms = cpu_ms * share[g] / fwd if fwd else 0
        gf = "%9.1f" % (flops[g] / (ms * 1e6)) if g in flops and ms else \
            "%9s" % "-"
        print("%-9s %6.1f%% %9.3f %s" % (g, 100 * share[g] / fwd if fwd
                                          else 0, ms, gf))


if __name__ == "__main__":
    main()
