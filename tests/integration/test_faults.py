#!/usr/bin/env python3
"""Faults: kill -9 during a reload and during a model file write, and a
write that fails under RLIMIT_FSIZE (in tinyd-oracle and in the daemon's
graph jobs). After each, the previous state serves, complete, and nothing
partial is ever loaded or listed. (kill -9 during an oracle build is in
test_graphs.py.)"""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import array
import glob
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
ORACLE_BIN = os.path.join(tdtest.BUILDDIR, "models", "tinyd-oracle")
CITY = os.path.join(tdtest.SRCDIR, "models", "zoo", "city.safetensors")
ROWS = [[0.5, -1.0, 2.0, 0.25]]


def need_oracle_bin():
    if not os.access(ORACLE_BIN, os.X_OK):
        t.skip("%s is not built" % ORACLE_BIN)


def grid_edges(w, h):
    """A w x h grid, 0-based, weights 1..9 in a fixed pattern."""
    out = []
    for y in range(h):
        for x in range(w):
            v = y * w + x
            if x + 1 < w:
                out.append("%d %d %d\n" % (v, v + 1, 1 + (v * 7) % 9))
            if y + 1 < h:
                out.append("%d %d %d\n" % (v, v + w, 1 + (v * 5) % 9))
    return "".join(out)


def path_graph(path, n):
    """A path of n vertices: cheap to build, yet its labels oracle is
    megabytes, so writing it takes a while."""
    with open(path, "w") as f:
        f.write("".join("%d %d %d\n" % (i, i + 1, 1 + i % 7)
                        for i in range(n - 1)))


def wait_job(d, job_id, timeout=40):
    last = {}

    def done():
        last["r"] = d.get("/v1/graphs/" + job_id)
        return last["r"].json()["state"] in ("ready", "failed", "cancelled")
    tdtest.wait_for(done, timeout, "job %s to finish" % job_id)
    return last["r"].json()


def distance(d, model, s, g, exact=True):
    body = {"inputs": [
        {"name": "source", "datatype": "INT64", "shape": [1], "data": [s]},
        {"name": "target", "datatype": "INT64", "shape": [1], "data": [g]}]}
    if exact:
        body["parameters"] = {"exact": True}
    r = d.infer(model, body)
    eq(r.status, 200, "%s distance status (%r)" % (model, r.body[:200]))
    return {o["name"]: o["data"] for o in r.json()["outputs"]}["distance"][0]


def snapshot(*dirs):
    """{path: (size, mtime_ns)} of every file under dirs."""
    out = {}
    for top in dirs:
        for root, _, files in os.walk(top):
            for n in files:
                p = os.path.join(root, n)
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def temps(d):
    """The atomic writer's leftovers: hidden .NAME.tmp.XXXXXX files."""
    return [os.path.basename(p) for p in glob.glob(os.path.join(d, ".*.tmp.*"))]


def write_big_linear(repo, name, classes, features):
    """A linear model whose class c has every weight (c % 7) / 8 and bias
    c / 4, so an input of ones has logits features*(c%7)/8 + c/4. Written
    with a temporary and a rename, as an operator would."""
    nw = classes * features
    header = {"__metadata__": {"kind": "linear"},
              "weight": {"dtype": "F32", "shape": [classes, features],
                         "data_offsets": [0, nw * 4]},
              "bias": {"dtype": "F32", "shape": [classes],
                       "data_offsets": [nw * 4, (nw + classes) * 4]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path = os.path.join(repo, name + ".safetensors")
    tmp = os.path.join(repo, ".incoming-" + name)
    rows = [(array.array("f", [k / 8.0]) * features).tobytes()
            for k in range(7)]
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for c in range(classes):
            f.write(rows[c % 7])
        f.write(array.array("f", [c / 4.0 for c in range(classes)])
                .tobytes())
    os.rename(tmp, path)
    return [features * (c % 7) / 8.0 + c / 4.0 for c in range(classes)]


def binary_ones(features):
    raw = (array.array("f", [1.0]) * features).tobytes()
    head = json.dumps({"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [1, features],
        "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


@t.test("kill -9 during a reload: after restart everything serves, complete")
def _():
    d = tdtest.Daemon()
    lin1 = tdtest.Linear.seeded(1, features=4)
    lin2 = tdtest.Linear.seeded(2, features=4)
    lin1.save(d.repo, "lin")
    d.start()
    try:
        # The state directory holds an oracle built from a submission.
        r = d.post("/v1/graphs?name=grid&eps=0.5", grid_edges(10, 8))
        eq(r.status, 202, "submit (%r)" % r.body[:200])
        job = r.json()["id"]
        eq(wait_job(d, job)["state"], "ready", "grid job")
        tdtest.wait_for(lambda: "grid" in d.models(), 10, "grid listed")
        want_grid = distance(d, "grid", 0, 79)
        # The operator changes the repository: lin gets a new version and
        # a big model arrives (200 MB to copy at load), then SIGHUP.
        classes, features = 500, 100000
        want_big = write_big_linear(d.repo, "big", classes, features)
        lin2.save(d.repo, "lin")
        before = snapshot(d.repo, d.state)
        d.send_signal(signal.SIGHUP)
        tdtest.wait_for(lambda: "SIGHUP: rescanning" in d.log(), 10,
                        "the reload to start")
        time.sleep(0.01)
        d.kill()
        check("model big:" not in d.log(),
              "the reload finished before the kill; the test needs a bigger "
              "model:\n" + d.log()[-1000:])
        # A reload reads and writes nothing on disk but the mapping, so a
        # kill in the middle cannot have left anything behind.
        eq(snapshot(d.repo, d.state), before, "files after the kill")
        d.start()
        models = d.models()
        eq(sorted(models), ["big", "grid", "lin"], "models after restart")
        for name, m in models.items():
            eq(m["state"], "READY", "%s state (%r)" % (name, m))
        tdtest.check_infer(d, "lin", lin2, ROWS, "lin (the file on disk)")
        eq(distance(d, "grid", 0, 79), want_grid, "grid oracle")
        eq(d.get("/v1/graphs/" + job).json()["state"], "ready", "job record")
        body, headers = binary_ones(features)
        r = d.infer("big", body, headers=headers, timeout=60)
        eq(r.status, 200, "big infer (%r)" % r.body[:200])
        shape, data = tdtest.logits_of(r)
        eq(shape, [1, classes], "big output shape")
        tdtest.close_enough(data, want_big, "big logits (every row loaded)")
    finally:
        d.close()


def kill_mid_write(cmd, out_dir, base, attempts=4):
    """Run cmd (which writes out_dir/base atomically) and SIGKILL it as
    soon as its temporary appears. Returns (caught, proc): caught is True
    when the kill landed before the rename (the temporary is still there).
    """
    pattern = os.path.join(out_dir, "." + base + ".tmp.*")
    for attempt in range(1, attempts + 1):
        for p in glob.glob(pattern):
            os.unlink(p)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 50
        while proc.poll() is None and time.monotonic() < deadline:
            if glob.glob(pattern):
                proc.kill()
                break
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
        if proc.returncode == -signal.SIGKILL and glob.glob(pattern):
            tdtest.diag("%s: killed mid-write at attempt %d" % (base, attempt))
            return True, proc
    return False, proc


def complete_oracle(path):
    """The file is a whole, valid oracle (what a finished writer renames)."""
    p = subprocess.run([ORACLE_BIN, "info", path], capture_output=True,
                       timeout=60)
    return p.returncode == 0


@t.test("kill -9 mid-write: the target is absent or the old file, never "
        "partial; the daemon lists no temporary")
def _():
    need_oracle_bin()
    d = tdtest.Daemon()
    lin = tdtest.Linear.seeded(3, features=4)
    lin.save(d.repo, "lin")
    shutil.copyfile(CITY, os.path.join(d.repo, "city.safetensors"))
    d.start()
    try:
        graph = os.path.join(d.tmp, "path.txt")
        path_graph(graph, 120000)
        want_city = distance(d, "city", 1, 1920)
        old = open(CITY, "rb").read()
        # 1. A new name: after the kill it must not exist at all.
        fresh = os.path.join(d.repo, "fresh.safetensors")
        caught, _ = kill_mid_write([ORACLE_BIN, "build", graph, "--out",
                                    fresh, "--eps", "1"], d.repo,
                                   "fresh.safetensors")
        check(caught, "never killed before the rename in 4 attempts")
        # An earlier attempt may have finished (the machine decides when a
        # kill lands): then the file is a complete one, never a partial.
        if os.path.exists(fresh):
            check(complete_oracle(fresh), "a partial fresh.safetensors")
            tdtest.diag("an earlier attempt finished: fresh.safetensors is "
                        "complete; removed for the checks below")
            os.unlink(fresh)
        # 2. Over an existing oracle: it must be the old bytes.
        city = os.path.join(d.repo, "city.safetensors")
        caught, _ = kill_mid_write([ORACLE_BIN, "build", graph, "--out",
                                    city, "--eps", "1"], d.repo,
                                   "city.safetensors")
        check(caught, "never killed before the rename in 4 attempts")
        with open(city, "rb") as f:
            same = f.read() == old
        if not same:
            check(complete_oracle(city), "city.safetensors is neither the "
                  "old file nor a complete new one")
            tdtest.diag("an earlier attempt finished: city.safetensors is a "
                        "complete new oracle; the old one is put back for "
                        "the checks below")
            tdtest.write_atomic(city, old)
        left = temps(d.repo)
        check(left, "the killed writers' temporaries should be left over")
        tdtest.diag("left over: %s" % " ".join(left))
        # The daemon rescans: the temporaries are neither loaded nor listed.
        d.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        tdtest.wait_for(lambda: d.get("/v2/health/ready").status == 200, 10,
                        "ready after the reload")
        models = d.models()
        eq(sorted(models), ["city", "lin"], "models listed")
        eq(models["city"]["state"], "READY", "city state")
        eq(distance(d, "city", 1, 1920), want_city, "city after the kill")
        tdtest.check_infer(d, "lin", lin, ROWS, "lin")
        # And a fresh start sees the same.
        d.stop()
        d.start()
        eq(sorted(d.models()), ["city", "lin"], "models after a restart")
        eq(distance(d, "city", 1, 1920), want_city, "city after a restart")
    finally:
        d.close()


def fsize_limit(nbytes):
    """preexec_fn: a file size limit. subprocess restores SIGXFSZ to its
    default action in the child (Python ignores it), as a shell would."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


@t.test("a write past RLIMIT_FSIZE: tinyd-oracle exits 1 saying so, the "
        "previous file is intact and no temporary is left")
def _():
    need_oracle_bin()
    tmp = tempfile.mkdtemp(prefix="tdfaults-")
    try:
        graph = os.path.join(tmp, "grid.txt")
        with open(graph, "w") as f:
            f.write(grid_edges(60, 50))
        out = os.path.join(tmp, "city.safetensors")
        shutil.copyfile(CITY, out)
        p = subprocess.run([ORACLE_BIN, "build", graph, "--out", out,
                            "--eps", "0.5"], capture_output=True, text=True,
                           timeout=60, preexec_fn=fsize_limit(64 * 1024),
                           restore_signals=True)
        eq(p.returncode, 1, "exit status (stderr %r)" % p.stderr[-300:])
        check("File too large" in p.stderr and out in p.stderr,
              "message %r" % p.stderr)
        with open(out, "rb") as f, open(CITY, "rb") as g:
            check(f.read() == g.read(), "the previous file changed")
        eq(temps(tmp), [], "temporaries left")
        # The same build without the limit succeeds: the limit was the
        # only thing wrong.
        p = subprocess.run([ORACLE_BIN, "build", graph, "--out", out,
                            "--eps", "0.5"], capture_output=True, text=True,
                           timeout=60)
        eq(p.returncode, 0, "unlimited build (%r)" % p.stderr[-300:])
        check(os.path.getsize(out) > 64 * 1024, "the oracle is larger than "
              "the limit, so the limited build had to fail")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@t.test("the daemon under RLIMIT_FSIZE: the job whose oracle does not fit "
        "fails with the reason, the previous state serves")
def _():
    limit = 256 * 1024
    d = tdtest.Daemon()
    lin = tdtest.Linear.seeded(4, features=4)
    lin.save(d.repo, "lin")
    cmd = d.command

    def limited():
        return ["prlimit", "--fsize=%d" % limit, "--"] + cmd()
    if not shutil.which("prlimit"):
        t.skip("prlimit (util-linux) not found")
    d.command = limited
    d.start()
    try:
        r = d.post("/v1/graphs?name=small&eps=0.5", grid_edges(10, 8))
        eq(r.status, 202, "submit small")
        eq(wait_job(d, r.json()["id"])["state"], "ready", "small job")
        tdtest.wait_for(lambda: "small" in d.models(), 10, "small listed")
        want_small = distance(d, "small", 0, 79)
        # A graph whose upload fits but whose oracle does not.
        body = grid_edges(60, 50)
        check(len(body) < limit, "the upload must fit")
        r = d.post("/v1/graphs?name=huge&eps=0.5", body)
        eq(r.status, 202, "submit huge")
        job = wait_job(d, r.json()["id"])
        eq(job["state"], "failed", "huge job (%r)" % job)
        check("File too large" in job.get("error", "") and
              "huge.safetensors" in job["error"], "error %r" % job)
        check(d.proc.poll() is None, "the daemon died")
        oracles = os.path.join(d.state, "oracles")
        eq(sorted(os.listdir(oracles)), ["small.safetensors"],
           "oracle files (no partial huge, no temporary)")
        eq(sorted(d.models()), ["lin", "small"], "models")
        eq(distance(d, "small", 0, 79), want_small, "small still serves")
        tdtest.check_infer(d, "lin", lin, ROWS, "lin still serves")
        eq(d.get("/v2/health/ready").status, 200, "ready")
        check("File too large" in d.log(), "the failure is logged")
        # After a restart (still limited) the failed job stays failed and
        # the previous state serves.
        d.stop()
        d.start()
        eq(d.get("/v1/graphs/" + job["id"]).json()["state"], "failed",
           "job record after a restart")
        eq(distance(d, "small", 0, 79), want_small, "small after a restart")
    finally:
        d.close()


@t.test("kill -9 of the daemon while a job writes its oracle: no partial "
        "oracle, the job is built again at restart, complete")
def _():
    d = tdtest.Daemon()
    lin = tdtest.Linear.seeded(5, features=4)
    lin.save(d.repo, "lin")
    d.start()
    try:
        n = 120000
        body = "".join("%d %d %d\n" % (i, i + 1, 1 + i % 7)
                       for i in range(n - 1))
        want = float(sum(1 + i % 7 for i in range(n - 1)))
        oracles = os.path.join(d.state, "oracles")
        pattern = os.path.join(oracles, ".long.safetensors.tmp.*")
        r = d.post("/v1/graphs?name=long&eps=1", body, timeout=60)
        eq(r.status, 202, "submit (%r)" % r.body[:200])
        job = r.json()["id"]
        final = os.path.join(oracles, "long.safetensors")
        deadline = time.monotonic() + 50
        while not glob.glob(pattern) and not os.path.exists(final):
            check(time.monotonic() < deadline and d.proc.poll() is None,
                  "the oracle's temporary never appeared")
        d.kill()
        # On a fast or busy machine the write may finish between our look
        # and the kill: then the oracle is the complete one, never partial.
        late = not glob.glob(pattern)
        if late:
            tdtest.diag("the kill landed after the rename; checking that "
                        "the published oracle is complete instead")
        else:
            check(not os.path.exists(final),
                  "a partial oracle under the real name")
        d.start()
        if not late:
            eq(sorted(d.models()), ["lin"], "models right after the "
               "restart (the temporary is not listed)")
        tdtest.check_infer(d, "lin", lin, ROWS, "lin after the restart")
        eq(wait_job(d, job, timeout=50)["state"], "ready", "rebuilt job")
        tdtest.wait_for(lambda: "long" in d.models(), 10, "long listed")
        eq(distance(d, "long", 0, n - 1), want, "end-to-end distance")
    finally:
        d.close()


t.run()
