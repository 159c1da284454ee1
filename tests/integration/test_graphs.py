#!/usr/bin/env python3
"""Graphs submitted over HTTP become distance oracles served over OIP:
the job lifecycle, every input format, the (1+eps) guarantee against an
exact Dijkstra computed here, bad input, deletion, and persistence."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import gzip
import heapq
import json
import os
import random
import signal
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

ROADS = os.environ.get("TD_ROADS_DIR")
if not ROADS:
    ROADS = os.path.normpath(os.path.join(
        os.environ.get("TD_SRCDIR", "."), "..", "shared", "data", "roads"))
    if not os.path.isdir(ROADS):
        ROADS = "/work/shared/data/roads"

t = tdtest.TAP()
d = tdtest.Daemon()
d.start()
t.cleanup(d.close)


def grid_graph(w, h, seed):
    """A w x h grid with random integer weights, 0-based ids."""
    rnd = random.Random(seed)
    edges = []
    for y in range(h):
        for x in range(w):
            v = y * w + x
            if x + 1 < w:
                edges.append((v, v + 1, rnd.randint(1, 20)))
            if y + 1 < h:
                edges.append((v, v + w, rnd.randint(1, 20)))
    return w * h, edges


def dijkstra(n, edges, src):
    adj = [[] for _ in range(n)]
    for u, v, wt in edges:
        adj[u].append((v, wt))
        adj[v].append((u, wt))
    dist = [float("inf")] * n
    dist[src] = 0
    pq = [(0, src)]
    while pq:
        du, u = heapq.heappop(pq)
        if du > dist[u]:
            continue
        for v, wt in adj[u]:
            if du + wt < dist[v]:
                dist[v] = du + wt
                heapq.heappush(pq, (dist[v], v))
    return dist


def submit(body, query="", headers=None):
    return d.post("/v1/graphs" + query, body, headers=headers)


def wait_job(job_id, timeout=60):
    last = {}

    def done():
        last["r"] = d.get("/v1/graphs/" + job_id)
        return last["r"].json()["state"] in ("ready", "failed", "cancelled")
    tdtest.wait_for(done, timeout, "job %s to finish" % job_id)
    return last["r"].json()


def query(model, pairs, exact=False):
    body = {"inputs": [
        {"name": "source", "shape": [len(pairs)], "datatype": "INT64",
         "data": [p[0] for p in pairs]},
        {"name": "target", "shape": [len(pairs)], "datatype": "INT64",
         "data": [p[1] for p in pairs]}]}
    if exact:
        body["parameters"] = {"exact": True}
    return d.infer(model, body)


def outputs(resp):
    return {o["name"]: o["data"] for o in resp.json()["outputs"]}


N, EDGES = grid_graph(12, 10, 7)
EDGELIST = "".join("%d %d %d\n" % e for e in EDGES)


@t.test("an edge list is accepted with 202, Location and Retry-After")
def _():
    r = submit(EDGELIST, "?name=grid&eps=0.25")
    eq(r.status, 202, "submit status (%r)" % r.body[:200])
    job = r.json()
    check(r.headers["Location"] == "/v1/graphs/" + job["id"],
          "Location header %r" % r.headers.get("Location"))
    check(r.headers.get("Retry-After"), "no Retry-After header")
    eq(job["name"], "grid", "job name")
    check(job["state"] in ("queued", "building", "ready"), "state %r" % job)
    t.grid_job = job["id"]


@t.test("the job becomes ready and the oracle is listed as a model")
def _():
    job = wait_job(t.grid_job)
    eq(job["state"], "ready", "job state (%r)" % job)
    eq(job["nodes"], N, "nodes")
    eq(job["edges"], len(EDGES), "edges")
    tdtest.wait_for(lambda: d.models().get("grid", {}).get("state")
                    == "READY", 10, "grid in /v2/models")
    meta = d.get("/v2/models/grid").json()
    eq(meta["kind"], "oracle", "kind")
    eq([i["name"] for i in meta["inputs"]], ["source", "target"], "inputs")
    eq(meta["parameters"]["eps"], 0.25, "eps")


@t.test("answers are upper bounds within 1+eps, exact answers are exact")
def _():
    rnd = random.Random(3)
    pairs = [(rnd.randrange(N), rnd.randrange(N)) for _ in range(40)]
    r = query("grid", pairs)
    eq(r.status, 200, "query status (%r)" % r.body[:200])
    out = outputs(r)
    rx = query("grid", pairs, exact=True)
    eq(rx.status, 200, "exact query status")
    outx = outputs(rx)
    for i, (s, g) in enumerate(pairs):
        true = dijkstra(N, EDGES, s)[g]
        approx = out["distance"][i]
        check(approx >= true - 1e-9,
              "pair %d: %r below the true distance %r" % (i, approx, true))
        check(approx <= out["factor"][i] * true + 1e-9,
              "pair %d: %r above %r x %r" % (i, approx, out["factor"][i],
                                             true))
        eq(outx["distance"][i], true, "exact distance of pair %d" % i)
        eq(outx["factor"][i], 1.0, "exact factor")
    check(all(f <= 1.25 + 1e-12 for f in out["factor"]),
          "factors %r above 1+eps" % out["factor"][:5])


@t.test("an id outside the graph is a 400 naming it")
def _():
    r = query("grid", [(0, N)])
    eq(r.status, 400, "status")
    check("is not a vertex" in r.error(), "error %r" % r.error())


@t.test("DIMACS input is numbered from 1, and gzip bodies are accepted")
def _():
    lines = ["c tiny", "p sp 4 4"] + [
        "a 1 2 5", "a 2 3 5", "a 3 4 5", "a 1 4 100"]
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    r = submit(body, "?name=tiny-gr&format=dimacs")
    eq(r.status, 202, "submit status (%r)" % r.body[:200])
    job = wait_job(r.json()["id"])
    eq(job["state"], "ready", "job (%r)" % job)
    tdtest.wait_for(lambda: "tiny-gr" in d.models(), 10, "tiny-gr listed")
    out = outputs(query("tiny-gr", [(1, 4)], exact=True))
    eq(out["distance"], [15.0], "1 -> 4 goes round (5+5+5 < 100)")
    eq(d.get("/v2/models/tiny-gr").json()["parameters"]["id_base"], 1,
       "id_base")


@t.test("JSON input, and a disconnected pair answers null")
def _():
    body = {"nodes": 5, "edges": [[0, 1, 2.5], [1, 2, 1], [3, 4, 7]]}
    r = submit(json.dumps(body), "?name=split&format=json")
    eq(r.status, 202, "submit status (%r)" % r.body[:200])
    eq(wait_job(r.json()["id"])["state"], "ready", "job state")
    tdtest.wait_for(lambda: "split" in d.models(), 10, "split listed")
    out = outputs(query("split", [(0, 2), (0, 4)]))
    check(3.5 <= out["distance"][0] <= 3.5 * out["factor"][0] + 1e-9,
          "0 -> 2: %r" % out["distance"][0])
    eq(out["distance"][1], None, "0 -> 4 across components")


@t.test("a malformed graph fails its job with the line at fault")
def _():
    r = submit("0 1 5\n1 2 -3\n", "?name=neg&format=edgelist")
    eq(r.status, 202, "submit status")
    job = wait_job(r.json()["id"])
    eq(job["state"], "failed", "job state")
    check("line 2" in job.get("error", ""), "error %r" % job.get("error"))
    check("neg" not in d.models(), "a failed job must not be served")
    eq(d.get("/v2/health/ready").status, 200, "daemon still ready")


@t.test("bad parameters are 4xx before anything is queued")
def _():
    for query_str, body, status, frag in [
            ("?eps=2", EDGELIST, 400, "eps"),
            ("?eps=abc", EDGELIST, 400, "eps"),
            ("?mode=fast", EDGELIST, 400, "mode"),
            ("?format=xml", EDGELIST, 400, "format"),
            ("?name=../x", EDGELIST, 400, "name"),
            ("?name=grid", EDGELIST, 409, "already in use"),
            ("", "", 400, "empty")]:
        r = submit(body, query_str)
        eq(r.status, status, "%s status (%r)" % (query_str, r.body[:200]))
        check(frag in r.error(), "%s: error %r lacks %r"
              % (query_str, r.error(), frag))
    eq(d.get("/v1/graphs/gnope").status, 404, "unknown job")


@t.test("graph limits: a huge vertex id and a gzip bomb fail their jobs")
def _():
    e = tdtest.Daemon(args=["--max-graph-nodes", "1000",
                            "--max-graph-bytes", "1M"])
    e.start()
    try:
        r = e.post("/v1/graphs?name=huge&format=edgelist", "0 999999999 1\n")
        eq(r.status, 202, "submit")
        jid = r.json()["id"]
        tdtest.wait_for(lambda: e.get("/v1/graphs/" + jid).json()["state"]
                        in ("failed", "ready"), 30, "the job to end")
        job = e.get("/v1/graphs/" + jid).json()
        eq(job["state"], "failed", "huge id (%r)" % job)
        bomb = gzip.compress(b"0 1 1\n" + b" " * (8 << 20))
        check(len(bomb) < 100000, "the bomb is small (%d)" % len(bomb))
        r = e.post("/v1/graphs?name=bomb&format=edgelist", bomb)
        eq(r.status, 202, "submit bomb")
        jid = r.json()["id"]
        tdtest.wait_for(lambda: e.get("/v1/graphs/" + jid).json()["state"]
                        in ("failed", "ready"), 30, "the bomb's job to end")
        job = e.get("/v1/graphs/" + jid).json()
        eq(job["state"], "failed", "gzip bomb (%r)" % job)
        eq(e.get("/v2/health/ready").status, 200, "still serving")
    finally:
        e.close()


@t.test("the job list shows every job with its state")
def _():
    r = d.get("/v1/graphs")
    eq(r.status, 200, "status")
    names = {g["name"]: g["state"] for g in r.json()["graphs"]}
    eq(names.get("grid"), "ready", "grid")
    eq(names.get("neg"), "failed", "neg")


@t.test("oracles persist across a restart from the state directory")
def _():
    d.stop()
    d.start()
    tdtest.wait_for(lambda: d.models().get("grid", {}).get("state")
                    == "READY", 10, "grid after restart")
    eq(d.get("/v1/graphs/" + t.grid_job).json()["state"], "ready",
       "job record after restart")


@t.test("DELETE removes the oracle and its job")
def _():
    r = d.request("DELETE", "/v1/graphs/" + t.grid_job)
    eq(r.status, 200, "delete status (%r)" % r.body[:200])
    # The answer comes once the oracle is no longer served: no waiting.
    check("grid" not in d.models(), "grid still listed after the 200")
    eq(d.infer("grid", {"inputs": []}).status, 404, "infer after delete")
    eq(d.get("/v1/graphs/" + t.grid_job).status, 404, "job gone")
    eq(d.request("DELETE", "/v1/graphs/" + t.grid_job).status, 404,
       "second delete")
    # ... and its name is free at once: submit, build, delete, twice over.
    for round_ in range(2):
        r = submit(EDGELIST, "?name=grid&eps=0.25")
        eq(r.status, 202, "resubmit %d (%r)" % (round_, r.body[:200]))
        job = wait_job(r.json()["id"])
        eq(job["state"], "ready", "rebuilt %d" % round_)
        eq(d.request("DELETE", "/v1/graphs/" + job["id"]).status, 200,
           "delete %d" % round_)
        check("grid" not in d.models(), "grid listed after delete %d"
              % round_)


@t.test("kill -9 during a build: after restart the job is built again")
def _():
    # A grid large enough that its build takes a while (seconds), so the
    # kill lands mid-build.
    n, edges = grid_graph(80, 80, 5)
    body = gzip.compress("".join("%d %d %d\n" % e for e in edges).encode())
    r = submit(body, "?name=big&eps=0.1&format=edgelist")
    eq(r.status, 202, "submit status")
    job_id = r.json()["id"]
    tdtest.wait_for(lambda: d.get("/v1/graphs/" + job_id).json()["state"]
                    == "building", 20, "the build to start")
    time.sleep(0.2)
    state = d.get("/v1/graphs/" + job_id).json()["state"]
    if state != "building":
        t.skip("the build finished before the kill (state %s)" % state)
    d.kill()
    oracles = os.path.join(d.state, "oracles")
    check(not any(f.startswith("big") for f in os.listdir(oracles)),
          "a partial oracle was left: %r" % os.listdir(oracles))
    d.start()
    job = wait_job(job_id, timeout=600)
    eq(job["state"], "ready", "job after restart (%r)" % job)
    tdtest.wait_for(lambda: "big" in d.models(), 10, "big listed")
    out = outputs(query("big", [(0, n - 1)], exact=True))
    eq(out["distance"], [dijkstra(n, edges, 0)[n - 1]], "exact distance")


@t.test("rome99: exact answers match Dijkstra here, bounds hold")
def _():
    path = os.path.join(ROADS, "rome99.gr")
    if not os.path.exists(path):
        t.skip("road graphs not found at %s" % ROADS)
    with open(path, "rb") as f:
        raw = f.read()
    n, best = 0, {}
    for line in raw.decode().splitlines():
        if line.startswith("p "):
            n = int(line.split()[2])
        elif line.startswith("a "):
            _, u, v, wt = line.split()
            u, v, wt = int(u) - 1, int(v) - 1, int(wt)
            if u == v:
                continue
            key = (min(u, v), max(u, v))
            best[key] = min(best.get(key, wt), wt)
    edges = [(u, v, wt) for (u, v), wt in best.items()]
    r = submit(raw, "?name=rome&eps=0.1")
    eq(r.status, 202, "submit status")
    eq(wait_job(r.json()["id"], timeout=300)["state"], "ready", "job")
    tdtest.wait_for(lambda: "rome" in d.models(), 10, "rome listed")
    rnd = random.Random(11)
    pairs = [(rnd.randrange(1, n + 1), rnd.randrange(1, n + 1))
             for _ in range(20)]
    out = outputs(query("rome", pairs))
    outx = outputs(query("rome", pairs, exact=True))
    for i, (s, g) in enumerate(pairs):
        true = dijkstra(n, edges, s - 1)[g - 1]
        eq(outx["distance"][i], true, "exact %d -> %d" % (s, g))
        check(true - 1e-9 <= out["distance"][i] <= 1.1 * true + 1e-9,
              "%d -> %d: %r vs %r" % (s, g, out["distance"][i], true))


t.run()
