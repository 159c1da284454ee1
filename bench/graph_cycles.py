#!/usr/bin/env python3
"""graph_cycles: does the daemon's memory level off under graph churn?

    bench/graph_cycles.py [--cycles 1500] [--sample-every 250]

Starts tinyd (TD_BUILDDIR/server/tinyd, or TD_TINYD) on a loopback port and
repeats: submit a 120-vertex grid graph under one name, wait until its
oracle is ready, DELETE it (the 200 comes once the oracle is unloaded, so
the name is free again). Prints the daemon's VmRSS every --sample-every
cycles and the growth per cycle over the second half of the run.
Environment variables such as MALLOC_ARENA_MAX are passed to the daemon.
"""
import sys
sys.dont_write_bytecode = True
import argparse
import os
import random
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("TD_SRCDIR") or os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import tdtest  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def grid(w, h, seed):
    rnd = random.Random(seed)
    lines = []
    for y in range(h):
        for x in range(w):
            v = y * w + x
            if x + 1 < w:
                lines.append("%d %d %d\n" % (v, v + 1, rnd.randint(1, 20)))
            if y + 1 < h:
                lines.append("%d %d %d\n" % (v, v + w, rnd.randint(1, 20)))
    return "".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=1500)
    p.add_argument("--sample-every", type=int, default=250)
    a = p.parse_args()
    body = grid(12, 10, 1)
    d = tdtest.Daemon()
    d.start()
    samples = []
    t0 = time.time()
    try:
        for i in range(a.cycles + 1):
            if i % a.sample_every == 0 or i == a.cycles:
                samples.append((i, rss_kb(d.proc.pid)))
                print("cycle %6d  VmRSS %7d kB  %6.0f s" %
                      (i, samples[-1][1], time.time() - t0), flush=True)
            if i == a.cycles:
                break
            r = d.post("/v1/graphs?name=churn&eps=0.25", body)
            if r.status != 202:
                sys.exit("submit %d: %d %r" % (i, r.status, r.body[:200]))
            jid = r.json()["id"]
            tdtest.wait_for(lambda: d.get("/v1/graphs/" + jid).json()["state"]
                            in ("ready", "failed"), 60, "job " + jid)
            r = d.request("DELETE", "/v1/graphs/" + jid)
            if r.status != 200:
                sys.exit("delete %d: %d %r" % (i, r.status, r.body[:200]))
    finally:
        rc = d.stop()
        d.close()
    half = [s for s in samples if s[0] >= a.cycles // 2]
    if len(half) >= 2 and half[-1][0] > half[0][0]:
        print("second half: %+.3f kB per cycle (%d to %d kB)" %
              ((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]),
               half[0][1], half[-1][1]))
    print("daemon exit status", rc)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
