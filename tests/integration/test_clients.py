#!/usr/bin/env python3
"""clients/tinyctl and clients/tinyd_client.py against a live daemon: every
operation and subcommand, and the exit codes a shell script relies on
(unknown model, bad token, daemon down, failed graph job, usage)."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json  # noqa: E402
import os  # noqa: E402
import pty  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
import tinyfix  # noqa: E402
from tdtest import check, eq  # noqa: E402

CLIENTS = os.path.join(tdtest.SRCDIR, "clients")
TINYCTL = os.path.join(CLIENTS, "tinyctl")
sys.path.insert(0, CLIENTS)
import tinyd_client  # noqa: E402
from tinyd_client import Client, TinydError, tensor  # noqa: E402

t = tdtest.TAP()
TOKEN = "tok-clients-0123456789"
LIN = tdtest.Linear.seeded(11, classes=3, features=4)
IMAGES = [os.path.join(tdtest.SRCDIR, "tests", "fixtures", "image", n)
          for n in ("photo_97x61.jpg", "small_13x9.png")]
TRIANGLE = b"0 1 5\n1 2 3\n2 0 4\n"
d = tdtest.Daemon()
st = {}


@t.cleanup
def _():
    d.close()


def url():
    return "http://127.0.0.1:%d" % d.port


def ctl(*args, stdin=None, env=None, token=True, timeout=60):
    """Run tinyctl -> CompletedProcess (text)."""
    e = dict(os.environ)
    e.pop("TINYD_URL", None)
    e.pop("TINYD_TOKEN", None)
    e.pop("TINYD_CACERT", None)
    e.update(env or {})
    pre = ["--url", url()] if "TINYD_URL" not in (env or {}) else []
    if token and "TINYD_TOKEN" not in (env or {}):
        pre += ["--token", TOKEN]
    return subprocess.run([sys.executable, TINYCTL] + pre + list(args),
                          input=stdin, capture_output=True, text=True,
                          env=e, timeout=timeout)


def ok(p, what):
    eq(p.returncode, 0, "%s exit status (stderr %r)" % (what, p.stderr[-400:]))
    return p.stdout


def client(**kw):
    kw.setdefault("token", TOKEN)
    return Client(url(), **kw)


@t.test("start a daemon with tokens, a linear model, a TinyNet and city")
def _():
    tok = os.path.join(d.tmp, "tokens")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    d.args = ["--tokens", tok]
    LIN.save(d.repo, "lin")
    tinyfix.install(d.repo, "net", tinyfix.OURS)
    shutil.copy(os.path.join(tdtest.SRCDIR, "models", "zoo",
                             "city.safetensors"), d.repo)
    d.start()


# ------------------------------------------------------------- the module

@t.test("client: health, metadata, models, readiness")
def _():
    c = client()
    eq(c.health(), {"live": True, "ready": True}, "health")
    meta = c.server_metadata()
    eq(meta["name"], "tinyd", "server name")
    names = {m["name"]: m["kind"] for m in c.models()}
    eq(names, {"lin": "linear", "net": "tinynet", "city": "oracle"}, "models")
    m = c.model("lin")
    eq([o["shape"] for o in m["outputs"]], [[-1, 3]], "lin outputs")
    check(c.model_ready("net"), "net ready")
    try:
        c.model_ready("nope")
    except TinydError as e:
        eq(e.status, 404, "unknown model status")
        check("nope" in e.message, e.message)
    else:
        raise AssertionError("an unknown model was ready")


@t.test("client: infer with JSON and with binary tensors gives the exact "
        "logits")
def _():
    c = client()
    rows = LIN.inputs(3)
    want = tdtest.flatten(LIN.expected(rows))
    for binary in (False, True):
        doc = c.infer("lin", [tensor("input", "FP32", rows)], binary=binary,
                      request_id="q%d" % binary)
        eq(doc.get("id"), "q%d" % binary, "request id echoed")
        out = doc["outputs"][0]
        eq(out["shape"], [3, 3], "logits shape")
        tdtest.close_enough(out["data"], want, "logits binary=%s" % binary)


@t.test("client: classify files and bytes, raw and base64, top_k")
def _():
    c = client()
    preds = c.classify("net", IMAGES, top_k=2)
    eq(len(preds), 2, "one list per image")
    for p in preds:
        eq(len(p), 2, "top_k entries")
        check(p[0]["probability"] >= p[1]["probability"], "sorted")
        eq(p[0]["label"], tinyfix.OURS.labels[p[0]["index"]], "label")
    with open(IMAGES[0], "rb") as f:
        raw = c.classify_raw("net", f.read(), top_k=2)
    eq([e["index"] for e in raw], [e["index"] for e in preds[0]],
       "raw body and base64 agree")


@t.test("client: distance (bound and exact) and a table matching it")
def _():
    c = client()
    dist, fac = c.distance("city", [1, 5], [1920, 6])
    ex, exf = c.distance("city", [1, 5], [1920, 6], exact=True)
    eq(exf, [1.0, 1.0], "exact factors")
    for a, f, e in zip(dist, fac, ex):
        check(e <= a + 1e-9 <= f * e + 1e-6, "bound %r factor %r exact %r"
              % (a, f, e))
    srcs, tgts = [1, 2, 3], [100, 1920]
    tab, tabf = c.table("city", srcs, tgts, chunk=4)   # two infer calls
    eq([len(r) for r in tab], [2, 2, 2], "table shape")
    for i, s in enumerate(srcs):
        dd, ff = c.distance("city", [s] * len(tgts), tgts)
        eq(tab[i], dd, "table row %d" % s)
        eq(tabf[i], ff, "factor row %d" % s)


@t.test("client: repository index, unload, load, metrics")
def _():
    c = client()
    eq(c.unload("lin")["state"], "UNLOADED", "unload")
    idx = {e["name"]: e["state"] for e in c.repository_index()}
    eq(idx["lin"], "UNLOADED", "index after unload")
    check("lin" not in [e["name"] for e in c.repository_index(ready=True)],
          "ready-only index")
    eq(c.load("lin")["state"], "READY", "load")
    check("tinyd_http_requests_total" in c.metrics(), "metrics text")


@t.test("client: submit a graph, follow it, query, list, delete")
def _():
    c = client()
    job = c.submit_graph(TRIANGLE, name="tri", format="edgelist", eps=0.1)
    check(job["state"] in ("queued", "building", "ready"), job)
    seen = []
    final = c.wait_job(job["id"], progress=seen.append, interval=0.05)
    eq(final["state"], "ready", "final state")
    check(seen and seen[-1]["state"] == "ready", "progress callback")
    tdtest.wait_for(lambda: "tri" in [m["name"] for m in c.models()], 10,
                    "tri served")
    dist, _ = c.distance("tri", [0], [2], exact=True)
    eq(dist, [4.0], "0 -> 2 in the triangle")
    check(job["id"] in [j["id"] for j in c.jobs()], "listed")
    eq(c.job(job["id"])["nodes"], 3, "nodes")
    eq(c.delete_job(job["id"])["deleted"], True, "deleted")
    try:
        c.job(job["id"])
    except TinydError as e:
        eq(e.status, 404, "deleted job")
    else:
        raise AssertionError("a deleted job answered")


@t.test("client: a failed job raises JobFailed with the server's reason")
def _():
    c = client()
    job = c.submit_graph(b"0 1 5\n1 2 -3\n", name="neg")
    try:
        c.wait_job(job["id"], interval=0.05, timeout=20)
    except tinyd_client.JobFailed as e:
        eq(e.job["state"], "failed", "state")
        check("line 2" in e.job.get("error", ""), e.job)
    else:
        raise AssertionError("a negative weight built")


@t.test("client: errors carry the status and message; no connection is "
        "TinydConnectionError")
def _():
    for tok, status in ((None, 401), ("wrong", 403)):
        try:
            Client(url(), token=tok).unload("lin")
        except TinydError as e:
            eq(e.status, status, "token %r" % tok)
            check(e.message, "message")
        else:
            raise AssertionError("unload without the right token")
    try:
        Client("http://127.0.0.1:%d" % tdtest.free_port(), timeout=5).models()
    except tinyd_client.TinydConnectionError:
        pass
    else:
        raise AssertionError("a closed port answered")


# ------------------------------------------------------------------ tinyctl

@t.test("tinyctl: health, server, models, model, index, metrics")
def _():
    eq(ok(ctl("health"), "health").split(), ["live", "true", "ready", "true"],
       "health output")
    eq(json.loads(ok(ctl("server"), "server"))["name"], "tinyd", "server")
    lines = ok(ctl("models"), "models").splitlines()
    eq(sorted(l.split("\t")[:3] for l in lines),
       [["city", "oracle", "READY"], ["lin", "linear", "READY"],
        ["net", "tinynet", "READY"]], "models table")
    eq(json.loads(ok(ctl("--json", "models"), "models --json"))[0]["name"],
       "city", "--json models")
    eq(json.loads(ok(ctl("model", "net"), "model"))["kind"], "tinynet",
       "model")
    check("lin\tREADY" in ok(ctl("index"), "index"), "index")
    check("tinyd_models" in ok(ctl("metrics"), "metrics"), "metrics")
    # The environment instead of flags.
    p = ctl("models", "--json", env={"TINYD_URL": url()}, token=False)
    eq(len(json.loads(ok(p, "TINYD_URL"))), 3, "models via TINYD_URL")


@t.test("tinyctl: classify, infer (file and stdin), distance, table")
def _():
    out = ok(ctl("classify", "net", *IMAGES, "--top-k", "2"), "classify")
    rows = [l.split("\t") for l in out.splitlines()]
    eq([r[0] for r in rows], [IMAGES[0]] * 2 + [IMAGES[1]] * 2, "files")
    want = [e["label"] for p in client().classify("net", IMAGES, 2)
            for e in p]
    eq([r[1] for r in rows], want, "labels as the module sees them")
    body = tdtest.infer_body(LIN.inputs(2))
    path = os.path.join(d.tmp, "req.json")
    with open(path, "w") as f:
        json.dump(body, f)
    for args, stdin in ((["--json", path], None),
                        (["--json", "-"], json.dumps(body))):
        doc = json.loads(ok(ctl("infer", "lin", *args, stdin=stdin), "infer"))
        tdtest.close_enough(doc["outputs"][0]["data"],
                            tdtest.flatten(LIN.expected(LIN.inputs(2))),
                            "infer logits")
    dist, fac = client().distance("city", [1], [1920])
    eq([float(v) for v in ok(ctl("distance", "city", "1", "1920"),
                             "distance").split()],
       [dist[0], fac[0]], "distance output")
    ex = client().distance("city", [1], [1920], exact=True)[0][0]
    eq(ok(ctl("distance", "city", "1", "1920", "--exact"),
          "--exact").split()[1], "1", "exact factor")
    check(float(ok(ctl("distance", "city", "1", "1920", "--exact"),
                   "--exact").split()[0]) == ex, "exact distance")
    out = ok(ctl("table", "city", "--sources", "1", "2", "--targets",
                 "100,1920"), "table").splitlines()
    eq(out[0].split("\t"), ["source", "100", "1920"], "table header")
    tab = client().table("city", [1, 2], [100, 1920])[0]
    for line, row in zip(out[1:], tab):
        eq([float(v) for v in line.split("\t")[1:]], row, "table row")


@t.test("tinyctl: load and unload")
def _():
    eq(ok(ctl("unload", "lin"), "unload").strip(), "lin UNLOADED", "unload")
    eq(ctl("infer", "lin", "--json", "-",
           stdin=json.dumps(tdtest.infer_body(LIN.inputs(1)))).returncode, 1,
       "infer on an unloaded model")
    eq(ok(ctl("load", "lin"), "load").strip(), "lin READY", "load")


@t.test("tinyctl: submit --wait (plain progress lines), jobs, delete")
def _():
    p = ctl("submit", "-", "--name", "tri2", "--format", "edgelist",
            "--eps", "0.2", "--wait", stdin=TRIANGLE.decode())
    out = ok(p, "submit --wait").split("\t")
    eq(out[1:], ["ready", "tri2\n"], "final line")
    job = out[0]
    check("100% ready" in p.stderr and "\r" not in p.stderr,
          "plain progress lines: %r" % p.stderr)
    check(job in ok(ctl("jobs"), "jobs"), "jobs lists it")
    eq(json.loads(ok(ctl("jobs", job), "jobs ID"))["eps"], 0.2, "eps")
    path = os.path.join(d.tmp, "g.json")
    with open(path, "w") as f:
        json.dump({"nodes": 2, "edges": [[0, 1, 1.5]]}, f)
    job2 = ok(ctl("submit", path, "--name", "pair"), "submit").strip()
    check(job2.startswith("g") and job2 != job, "a job id: %r" % job2)
    eq(ok(ctl("delete", job), "delete").strip(), "deleted " + job, "delete")
    eq(ctl("jobs", job).returncode, 1, "deleted job is 404 -> 1")


@t.test("tinyctl: submit --wait on a terminal draws a progress bar")
def _():
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, TINYCTL, "--url", url(),
                                  "--token", TOKEN, "submit", "--wait",
                                  "--name", "tty", os.path.join(
                                      tdtest.SRCDIR, "models", "zoo-src",
                                      "city.gr.gz")])
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    eq(os.waitstatus_to_exitcode(status), 0, "exit status (%r)" % out[-300:])
    text = out.decode("utf-8", "replace")
    check("\r" in text and "] 100%" in text and "#" * 30 in text,
          "no progress bar: %r" % text[-400:])


@t.test("tinyctl exit codes: 1 unknown model / bad token, 2 usage, "
        "3 daemon down, 4 failed job")
def _():
    p = ctl("model", "nope")
    eq(p.returncode, 1, "unknown model")
    check("404" in p.stderr and "nope" in p.stderr, p.stderr)
    p = ctl("distance", "nope", "1", "2")
    eq(p.returncode, 1, "distance on an unknown model")
    p = ctl("--token", "wrong", "unload", "lin", token=False)
    eq(p.returncode, 1, "bad token")
    check("403" in p.stderr, p.stderr)
    p = ctl("unload", "lin", token=False)
    eq(p.returncode, 1, "no token")
    check("401" in p.stderr, p.stderr)
    eq(ctl().returncode, 2, "no subcommand")
    eq(ctl("distance", "city", "1").returncode, 2, "missing argument")
    eq(ctl("distance", "city", "x", "2").returncode, 2, "bad vertex id")
    eq(ctl("classify", "net", "/nonexistent.jpg").returncode, 2,
       "unreadable file")
    p = subprocess.run([sys.executable, TINYCTL, "--url",
                        "http://127.0.0.1:%d" % tdtest.free_port(), "health"],
                       capture_output=True, text=True, timeout=30)
    eq(p.returncode, 3, "daemon down")
    check("cannot connect" in p.stderr, p.stderr)
    p = ctl("submit", "-", "--name", "bad", "--wait", stdin="0 1 5\n1 2 -3\n")
    eq(p.returncode, 4, "failed graph job (stderr %r)" % p.stderr)
    check("failed" in p.stderr and "line 2" in p.stderr, p.stderr)


@t.test("tinyctl over HTTPS with --cacert (exit 3 without it)")
def _():
    if not shutil.which("openssl"):
        t.skip("openssl is not installed")
    tls = tdtest.Daemon()
    try:
        cert = os.path.join(tls.tmp, "cert.pem")
        key = os.path.join(tls.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
        tls.args = ["--tls-cert", cert, "--tls-key", key]
        tls.wait = False
        tls.start()
        https = "https://127.0.0.1:%d" % tls.port

        def up():
            check(tls.proc.poll() is None, "tinyd exited: " + tls.log())
            try:
                return Client(https, cafile=cert, timeout=2).ready()
            except tinyd_client.TinydConnectionError:
                return False
        tdtest.wait_for(up, 20, "HTTPS to answer")
        p = subprocess.run([sys.executable, TINYCTL, "--url", https,
                            "--cacert", cert, "health"],
                           capture_output=True, text=True, timeout=30)
        eq(p.returncode, 0, "with --cacert (stderr %r)" % p.stderr)
        p = subprocess.run([sys.executable, TINYCTL, "--url", https,
                            "health"], capture_output=True, text=True,
                           timeout=30)
        eq(p.returncode, 3, "an unverified certificate")
    finally:
        tls.close()


@t.test("tinyctl finds tinyd_client.py in an installed layout")
def _():
    root = os.path.join(d.tmp, "prefix")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "share", "tinyd"))
    shutil.copy(TINYCTL, os.path.join(root, "bin", "tinyctl"))
    shutil.copy(os.path.join(CLIENTS, "tinyd_client.py"),
                os.path.join(root, "share", "tinyd"))
    p = subprocess.run([sys.executable, os.path.join(root, "bin", "tinyctl"),
                        "--url", url(), "health"],
                       capture_output=True, text=True, timeout=30)
    eq(p.returncode, 0, "installed tinyctl (stderr %r)" % p.stderr)
    os.remove(os.path.join(root, "share", "tinyd", "tinyd_client.py"))
    p = subprocess.run([sys.executable, os.path.join(root, "bin", "tinyctl"),
                        "health"], capture_output=True, text=True, timeout=30)
    eq(p.returncode, 2, "without the module")


t.run()
