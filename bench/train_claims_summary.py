#!/usr/bin/env python3
"""Tables for bench/train_claims.sh: read OUT/<arm>-s<seed>.report.json.

Accuracy is the test accuracy after the last epoch (mean +- sample std over
seeds). Seconds per epoch are the median over the epochs in which the
trajectory loss is active (epoch > E_start) of the training wall time
(train_seconds: no test evaluation, no sharpness measurement), and the same
for process CPU seconds; "x SGD" is the mean over seeds of the ratio to the
SGD run of the same seed (runs of one seed ran back to back). Sharpness is
SAM's R = L(theta + rho g/|g|) - L(theta) measured by tinyd-train after each
epoch (see docs/TRAINING.md). Standard library only.

    bench/train_claims_summary.py OUT
"""
import glob
import json
import os
import re
import statistics
import sys


def mean_std(xs):
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.report.json"))):
        m = re.match(r"(.+)-s(\d+)\.report\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            rep = json.load(f)
        if len(rep["epochs"]) < rep["config"]["epochs"]:
            continue  # still running or killed
        runs.setdefault(m.group(1), {})[int(m.group(2))] = rep
    return runs


def per_run(rep):
    cfg, eps = rep["config"], rep["epochs"]
    active = [e for e in eps if e["epoch"] > cfg["saf_start"]] or eps
    return {
        "acc": 100 * eps[-1]["test_accuracy"],
        "best": 100 * max(e["test_accuracy"] for e in eps),
        "sec": statistics.median(e["train_seconds"] for e in active),
        "cpu": statistics.median(e["train_cpu_seconds"] for e in active),
        "sec_all": statistics.median(e["seconds"] for e in eps),
        "sharp": eps[-1].get("sharpness", float("nan")),
        "sharp_active": statistics.mean(
            e.get("sharpness", float("nan")) for e in active),
        "gnorm": eps[-1].get("sharpness_grad_norm", float("nan")),
        "sloss": eps[-1].get("sharpness_loss", float("nan")),
        "rho": cfg.get("sharpness_rho", float("nan")),
        "curve": [e.get("sharpness", float("nan")) for e in eps],
        "acc_curve": [100 * e["test_accuracy"] for e in eps],
    }


def table_opt(runs, arms, base="sgd"):
    res = {a: {s: per_run(r) for s, r in runs[a].items()} for a in arms
           if a in runs}
    B = base.upper() if base == "sgd" else base
    print("| arm | seeds | test acc %% (mean ± std) | Δ vs %s | train s/epoch "
          "(median) | × %s | CPU-s/epoch | × %s | final sharpness R "
          "(mean ± std) |" % (B, B, B))
    print("|---|---|---|---|---|---|---|---|---|")
    b = res.get(base, {})
    bacc = mean_std([v["acc"] for v in b.values()])[0] if b else float("nan")
    for a in arms:
        if a not in res:
            continue
        v = res[a]
        acc = mean_std([x["acc"] for x in v.values()])
        sec = mean_std([x["sec"] for x in v.values()])
        cpu = mean_std([x["cpu"] for x in v.values()])
        sh = mean_std([x["sharp"] for x in v.values()])
        rs = [v[s]["sec"] / b[s]["sec"] for s in v if s in b]
        rc = [v[s]["cpu"] / b[s]["cpu"] for s in v if s in b]
        print("| %s | %d | %.2f ± %.2f | %+.2f | %.2f | %s | %.2f | %s | "
              "%.4f ± %.4f |" % (
                  a, len(v), acc[0], acc[1], acc[0] - bacc, sec[0],
                  "%.2f" % statistics.mean(rs) if rs else "-", cpu[0],
                  "%.2f" % statistics.mean(rc) if rc else "-", sh[0], sh[1]))
    return res


def table_sharp(res, arms):
    """The parts of the final R: L, |g| and R / (rho |g|) (1 to first
    order; above 1 means the loss curves upwards along g)."""
    print("| arm | mean R, epochs > E_start | final train loss L | final ‖g‖ "
          "| final R / (ρ‖g‖) |")
    print("|---|---|---|---|---|")
    for a in arms:
        if a not in res:
            continue
        v = res[a].values()
        ra = mean_std([x["sharp_active"] for x in v])
        sl = mean_std([x["sloss"] for x in v])
        gn = mean_std([x["gnorm"] for x in v])
        q = mean_std([x["sharp"] / (x["rho"] * x["gnorm"]) for x in v])
        print("| %s | %.4f ± %.4f | %.4f ± %.4f | %.3f ± %.3f | %.2f ± %.2f |"
              % (a, ra[0], ra[1], sl[0], sl[1], gn[0], gn[1], q[0], q[1]))


def table_curve(res, arms, key, fmt):
    n = max(len(next(iter(res[a].values()))[key]) for a in arms if a in res)
    print("| epoch | " + " | ".join(a for a in arms if a in res) + " |")
    print("|---" * (1 + sum(a in res for a in arms)) + "|")
    for i in range(n):
        cells = []
        for a in arms:
            if a not in res:
                continue
            xs = [v[key][i] for v in res[a].values() if i < len(v[key])]
            cells.append(fmt % statistics.mean(xs) if xs else "-")
        print("| %d | %s |" % (i + 1, " | ".join(cells)))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/claims"
    runs = load(out)
    if not runs:
        sys.exit("no finished reports in %s" % out)
    opts = ["sgd", "saf", "sam", "mesa"]
    print("## (a) optimisers\n")
    res = table_opt(runs, opts)
    print("\nWhat the final sharpness is made of (mean ± std over seeds):\n")
    table_sharp(res, opts)
    print("\nSharpness R after each epoch (mean over seeds):\n")
    table_curve(res, opts, "curve", "%.4f")
    print("\nTest accuracy % after each epoch (mean over seeds):\n")
    table_curve(res, opts, "acc_curve", "%.2f")
    scal = [a for a in ("tiny", "compound") if a in runs]
    if scal:
        print("\n## (b) scaling rules under one MAC budget\n")
        print("| rule | r | d | w | res | MACs | params |")
        print("|---|---|---|---|---|---|---|")
        for a in scal:
            c = next(iter(runs[a].values()))["config"]
            print("| %s | %g | %g | %g | %d | %.3fM | %.3fM |" % (
                a, c["r"], c["d"], c["w"], c["resolution"], c["macs"] / 1e6,
                c["params"] / 1e6))
        print()
        table_opt(runs, scal, base="tiny")
        res_b = {a: {s: per_run(r) for s, r in runs[a].items()} for a in scal}
        print("\nTest accuracy % after each epoch (mean over seeds):\n")
        table_curve(res_b, scal, "acc_curve", "%.2f")


if __name__ == "__main__":
    main()
