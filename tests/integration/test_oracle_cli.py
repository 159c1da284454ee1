#!/usr/bin/env python3
"""tinyd-oracle, the offline builder: build, info and query on real files,
and its errors and exit codes; the bundled oracle answers like Dijkstra."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import gzip
import heapq
import os
import subprocess
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

BUILD = os.environ.get("TD_BUILDDIR", ".")
SRC = os.environ.get("TD_SRCDIR", ".")
TOOL = os.path.join(BUILD, "models", "tinyd-oracle")
t = tdtest.TAP()
tmp = tempfile.mkdtemp(prefix="tdoracle-")


def run(*args):
    p = subprocess.run([TOOL] + list(args), capture_output=True, text=True,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def dijkstra(adj, src):
    dist = {src: 0}
    pq = [(0, src)]
    while pq:
        du, u = heapq.heappop(pq)
        if du > dist.get(u, float("inf")):
            continue
        for v, w in adj.get(u, ()):
            if du + w < dist.get(v, float("inf")):
                dist[v] = du + w
                heapq.heappush(pq, (dist[v], v))
    return dist


@t.test("build, info and query a small edge list")
def _():
    g = os.path.join(tmp, "g.txt")
    with open(g, "w") as f:
        f.write("# a path and a shortcut\n0 1 4\n1 2 4\n0 2 10\n3 4 1\n")
    out = os.path.join(tmp, "g.safetensors")
    rc, so, se = run("build", g, "--out", out, "--eps", "0.2")
    eq(rc, 0, "build exit (%s)" % se)
    check("5 nodes" in so, "build summary %r" % so)
    rc, so, se = run("info", out)
    eq(rc, 0, "info exit")
    check("numbered from 0" in so and "eps        0.2" in so, so)
    rc, so, se = run("query", out, "0", "2", "--exact")
    eq((rc, so.strip()), (0, "8 (within x1)"), "exact 0 -> 2")
    rc, so, se = run("query", out, "0", "4")
    eq((rc, so.strip()), (0, "no path"), "0 -> 4 across components")


@t.test("errors: usage is exit 2, bad input exit 1 with the reason")
def _():
    eq(run()[0], 2, "no arguments")
    eq(run("frobnicate")[0], 2, "unknown command")
    eq(run("build", "x", "--out", "y", "--eps", "7")[0], 2, "bad eps")
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "w") as f:
        f.write("0 1 3\n1 x 2\n")
    rc, so, se = run("build", bad, "--out", os.path.join(tmp, "b.st"))
    eq(rc, 1, "malformed graph exit")
    check("line 2" in se, "error %r names the line" % se)
    check(not os.path.exists(os.path.join(tmp, "b.st")),
          "no output file for a failed build")
    rc, so, se = run("info", bad)
    eq(rc, 1, "info on a non-oracle")
    rc, so, se = run("query", os.path.join(tmp, "g.safetensors"), "0", "99")
    eq(rc, 1, "query outside the graph")


@t.test("the bundled city oracle answers within 1.1 of Dijkstra")
def _():
    zoo = os.path.join(SRC, "models", "zoo", "city.safetensors")
    graph = os.path.join(SRC, "models", "zoo-src", "city.gr.gz")
    adj = {}
    for line in gzip.open(graph, "rt"):
        if line.startswith("a "):
            _, u, v, w = line.split()
            adj.setdefault(int(u), []).append((int(v), int(w)))
    dist = dijkstra(adj, 1)
    for target in (2, 500, 1000, 1920):
        rc, so, se = run("query", zoo, "1", str(target))
        eq(rc, 0, "query exit (%s)" % se)
        got = float(so.split()[0])
        true = dist[target]
        check(true <= got <= 1.1 * true + 1e-9,
              "1 -> %d: %r vs %r" % (target, got, true))
        rc, so, se = run("query", zoo, "1", str(target), "--exact")
        eq(float(so.split()[0]), true, "exact 1 -> %d" % target)


t.run()
