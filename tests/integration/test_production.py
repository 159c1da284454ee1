#!/usr/bin/env python3
"""Production controls as an operator uses them: bearer tokens, Triton's
repository control, HTTPS, overload limits (queue, deadline, connections
per address) and systemd socket activation."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
TOKEN = "tok-0123456789abcdef"
ROWS = [[0.5, -1.0, 2.0, 0.25]]


def write_tokens(path, *tokens):
    with open(path, "w") as f:
        f.write("# operators\n\n" + "\n".join(tokens) + "\n")


def auth(token=TOKEN):
    return {"Authorization": "Bearer " + token}


@t.test("tokens: 401 without, 403 wrong, accepted right; reads stay open")
def _():
    d = tdtest.Daemon()
    tok = os.path.join(d.tmp, "tokens")
    write_tokens(tok, TOKEN)
    d.args = ["--tokens", tok]
    tdtest.Linear.seeded(1, features=4).save(d.repo, "lin")
    d.start()
    try:
        r = d.post("/v1/graphs", "0 1 2\n")
        eq(r.status, 401, "no token")
        check("bearer token" in r.error(), r.error())
        check(r.headers.get("WWW-Authenticate", "").startswith("Bearer"),
              "WWW-Authenticate header")
        eq(d.post("/v1/graphs", "0 1 2\n", headers=auth("wrong")).status,
           403, "wrong token")
        eq(d.post("/v1/graphs?name=g", "0 1 2\n", headers=auth()).status,
           202, "right token")
        eq(d.post("/v2/repository/models/lin/unload", "").status, 401,
           "unload without a token")
        eq(d.get("/v2/models").status, 200, "reads are open")
        eq(d.infer("lin", tdtest.infer_body(ROWS)).status, 200,
           "inference is open")
        # Tokens are reread on SIGHUP; the old one stops working.
        write_tokens(tok, "tok-new-fedcba9876543210")
        d.send_signal(signal.SIGHUP)
        tdtest.wait_for(lambda: d.post("/v1/graphs?name=h", "0 1 2\n",
                                       headers=auth()).status == 403,
                        10, "the old token to be refused")
        eq(d.post("/v1/graphs?name=h2", "0 1 2\n",
                  headers=auth("tok-new-fedcba9876543210")).status, 202,
           "the new token")
        check(TOKEN not in d.log() and "tok-new" not in d.log(),
              "a token appeared in the log")
    finally:
        d.close()


@t.test("--protect-reads closes reads too, but not health")
def _():
    d = tdtest.Daemon()
    tok = os.path.join(d.tmp, "tokens")
    write_tokens(tok, TOKEN)
    d.args = ["--tokens", tok, "--protect-reads", "yes"]
    d.start()
    try:
        eq(d.get("/v2/health/ready").status, 200, "health stays open")
        eq(d.get("/v2/models").status, 401, "models needs a token")
        eq(d.get("/metrics").status, 401, "metrics needs a token")
        eq(d.get("/v2/models", headers=auth()).status, 200, "with a token")
    finally:
        d.close()


@t.test("an empty token file is refused at start with a message")
def _():
    d = tdtest.Daemon()
    tok = os.path.join(d.tmp, "tokens")
    write_tokens(tok)
    p = subprocess.run([tdtest.TINYD, "--listen", "127.0.0.1:0", "--models",
                        d.repo, "--state", d.state, "--tokens", tok],
                       capture_output=True, text=True, timeout=20)
    d.close()
    check(p.returncode != 0, "started with no tokens")
    check("no token" in p.stderr, "message %r" % p.stderr)


@t.test("repository: index, unload (sticky across SIGHUP), synchronous load")
def _():
    d = tdtest.Daemon()
    lin = tdtest.Linear.seeded(2, features=4)
    lin.save(d.repo, "lin")
    d.start()
    try:
        r = d.post("/v2/repository/index", "")
        eq(r.status, 200, "index")
        eq(r.json(), [{"name": "lin", "version": "1", "state": "READY"}],
           "index body")
        eq(d.post("/v2/repository/models/lin/unload", "").status, 200,
           "unload")
        eq(d.get("/v2/models/lin/ready").status, 503, "unloaded: not ready")
        eq(d.infer("lin", tdtest.infer_body(ROWS)).status, 503,
           "infer on an unloaded model")
        d.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        eq(d.models()["lin"]["state"], "UNLOADED", "still unloaded after HUP")
        r = d.post("/v2/repository/models/lin/load", "")
        eq(r.status, 200, "load (%r)" % r.body)
        tdtest.check_infer(d, "lin", lin, ROWS, "after load")
        # A broken file: load answers 400 with the reason, the old version
        # keeps serving.
        with open(os.path.join(d.repo, "lin.safetensors"), "r+b") as f:
            f.truncate(40)
        r = d.post("/v2/repository/models/lin/load", "")
        eq(r.status, 400, "load of a broken file")
        check("failed to load" in r.error(), r.error())
        tdtest.check_infer(d, "lin", lin, ROWS, "old version after a bad load")
        eq(d.post("/v2/repository/models/nope/load", "").status, 404,
           "load of a missing file")
        eq(d.post("/v2/repository/models/nope/unload", "").status, 404,
           "unload of an unknown model")
    finally:
        d.close()


@t.test("HTTPS with --tls-cert/--tls-key, checked with curl")
def _():
    if not shutil.which("openssl") or not shutil.which("curl"):
        t.skip("openssl or curl is not installed")
    d = tdtest.Daemon()
    cert = os.path.join(d.tmp, "cert.pem")
    key = os.path.join(d.tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    d.args = ["--tls-cert", cert, "--tls-key", key]
    d.wait = False
    d.start()
    try:
        url = "https://127.0.0.1:%d/v2/health/ready" % d.port

        def up():
            p = subprocess.run(["curl", "-s", "--cacert", cert, url],
                               capture_output=True, text=True, timeout=10)
            return p.returncode == 0 and '"ready":true' in p.stdout
        tdtest.wait_for(up, 20, "HTTPS to answer")
        p = subprocess.run(["curl", "-s", "--max-time", "3",
                            "http://127.0.0.1:%d/v2/health/ready" % d.port],
                           capture_output=True, text=True, timeout=10)
        check('"ready"' not in p.stdout, "plain HTTP was answered")
        p = subprocess.run(["curl", "-s", url], capture_output=True,
                           text=True, timeout=10)
        check(p.returncode != 0, "an unverified certificate was accepted")
        p = subprocess.run([tdtest.TINYD, "--listen", "127.0.0.1:0",
                            "--models", d.repo, "--state", d.state,
                            "--tls-cert", key, "--tls-key", cert],
                           capture_output=True, text=True, timeout=20)
        check(p.returncode != 0 and "TLS" in p.stderr,
              "swapped PEM files: %r" % p.stderr[-300:])
    finally:
        d.close()


def slow_model(d):
    """A linear model big enough that a batch takes milliseconds."""
    import array
    import json
    import struct
    classes, features = 1500, 3000
    # Weights need not be random to be slow; building 4.5M floats in
    # Python should be fast.
    w = array.array("f", [0.001]) * (classes * features)
    b = array.array("f", [0.0]) * classes
    header = {"__metadata__": {"kind": "linear"},
              "weight": {"dtype": "F32", "shape": [classes, features],
                         "data_offsets": [0, len(w) * 4]},
              "bias": {"dtype": "F32", "shape": [classes],
                       "data_offsets": [len(w) * 4, len(w) * 4 + len(b) * 4]}}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tdtest.write_atomic(os.path.join(d.repo, "slow.safetensors"),
                        struct.pack("<Q", len(h)) + h + w.tobytes() +
                        b.tobytes())
    return features


def flood(d, features, n, rows=8):
    """n concurrent requests of `rows` rows, as binary tensors: parsing is
    a copy, so requests queue while the one worker computes."""
    import array
    import json
    raw = (array.array("f", [0.1]) * (rows * features)).tobytes()
    head = json.dumps({"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [rows, features],
        "parameters": {"binary_data_size": len(raw)}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"}
    results = []
    lock = threading.Lock()

    def one():
        r = d.infer("slow", head + raw, headers=headers, timeout=60)
        with lock:
            results.append(r)
    ts = [threading.Thread(target=one) for _ in range(n)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return results


@t.test("overload: past --max-queue rows, 503 with Retry-After")
def _():
    d = tdtest.Daemon(args=["--threads", "1", "--max-batch", "64",
                            "--max-queue", "64"])
    features = slow_model(d)
    d.start()
    try:
        results = flood(d, features, 16, rows=64)
        codes = sorted(r.status for r in results)
        check(set(codes) <= {200, 503}, "codes %r" % codes)
        check(200 in codes and 503 in codes, "codes %r" % codes)
        for r in results:
            if r.status == 503:
                check(r.headers.get("Retry-After"), "no Retry-After")
                check("--max-queue" in r.error(), r.error())
        eq(d.get("/v2/health/ready").status, 200, "still serving")
    finally:
        d.close()


@t.test("overload: a request queued past --request-timeout is 504")
def _():
    d = tdtest.Daemon(args=["--threads", "1", "--max-batch", "8",
                            "--request-timeout", "0.02"])
    features = slow_model(d)
    d.start()
    try:
        results = flood(d, features, 12)
        codes = sorted(r.status for r in results)
        check(set(codes) <= {200, 504}, "codes %r" % codes)
        check(504 in codes, "no request hit the deadline: %r" % codes)
        check(any("--request-timeout" in r.error() for r in results
                  if r.status == 504), "504 message")
    finally:
        d.close()


@t.test("overload: past --max-jobs graph builds, 503 with Retry-After")
def _():
    d = tdtest.Daemon(args=["--max-jobs", "1"])
    d.start()
    try:
        grid = "".join("%d %d 1\n%d %d 1\n" % (v, v + 1, v, v + 60)
                       for v in range(60 * 59) if (v + 1) % 60)
        first = d.post("/v1/graphs?name=g1&format=edgelist", grid)
        eq(first.status, 202, "first build")
        second = d.post("/v1/graphs?name=g2&format=edgelist", grid)
        if second.status == 202:
            t.skip("the first build finished before the second arrived")
        eq(second.status, 503, "second build (%r)" % second.body[:200])
        check(second.headers.get("Retry-After"), "no Retry-After")
        check("limit" in second.error(), second.error())
    finally:
        d.close()


@t.test("--max-connections-per-ip: the extra connection is refused")
def _():
    d = tdtest.Daemon(args=["--max-connections-per-ip", "2"])
    d.start()
    try:
        # Four connections kept open at once: at most two are served (a
        # connection of the harness's own may still count against the
        # limit, never for it).
        socks, served = [], 0
        for _ in range(4):
            s = d.raw()
            s.settimeout(3)
            socks.append(s)
            time.sleep(0.1)
        for s in socks:
            try:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    served += 1
            except OSError:
                pass
        check(1 <= served <= 2, "%d of 4 connections served" % served)
        for s in socks:
            s.close()
        time.sleep(0.2)
        eq(d.get("/v2/health/live").status, 200, "served once they close")
    finally:
        d.close()


@t.test("slow-loris: headers trickled past --header-timeout are dropped, "
        "others keep being served")
def _():
    d = tdtest.Daemon(args=["--header-timeout", "1"])
    d.start()
    try:
        slow = d.raw()
        slow.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        dropped_after = None
        t0 = time.monotonic()
        # One header byte every 0.2 s keeps the connection busy, never idle.
        for i in range(40):
            try:
                slow.sendall(b"X")
            except OSError:
                dropped_after = time.monotonic() - t0
                break
            eq(d.get("/v2/health/live", timeout=5).status, 200,
               "another client while the slow one trickles")
            slow.settimeout(0.2)
            try:
                if slow.recv(100) == b"":
                    dropped_after = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except OSError:
                dropped_after = time.monotonic() - t0
                break
        slow.close()
        check(dropped_after is not None, "the slow client was never dropped")
        check(dropped_after < 6, "dropped only after %.1f s" % dropped_after)
        eq(d.get("/v2/health/ready").status, 200, "still serving")
    finally:
        d.close()


@t.test("malformed Authorization headers are 401, never accepted")
def _():
    d = tdtest.Daemon()
    tok = os.path.join(d.tmp, "tokens")
    write_tokens(tok, TOKEN)
    d.args = ["--tokens", tok]
    d.start()
    try:
        for value in ("Basic " + TOKEN, "Bearer", "Bearer ", "bearer " + TOKEN,
                      TOKEN, "Bearer " + "x" * 5000):
            r = d.post("/v1/graphs", "0 1 2\n",
                       headers={"Authorization": value})
            check(r.status in (401, 403), "%r: status %d" % (value[:20],
                                                             r.status))
        eq(d.post("/v1/graphs?name=ok", "0 1 2\n", headers=auth()).status,
           202, "the right token still works")
    finally:
        d.close()


@t.test("10,000 connections opened at once: the daemon stays up and serves")
def _():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10600:
        t.skip("RLIMIT_NOFILE hard limit %d is below 10600" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 10600), hard))
    d = tdtest.Daemon(args=["--header-timeout", "1", "--max-connections",
                            "1024"])
    d.start()
    socks = []
    try:
        for _ in range(10000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            socks.append(s)

        def serves():
            try:
                return d.get("/v2/health/live", timeout=2).status == 200
            except OSError:
                return False
        # Idle connections past --header-timeout are shut down, so slots
        # free up and a real client gets through while the flood stands.
        tdtest.wait_for(serves, 60, "a request answered during the flood")
        check(d.proc.poll() is None, "the daemon died")
    finally:
        for s in socks:
            s.close()
    try:
        tdtest.wait_for(serves, 30, "a request answered after the flood")
        eq(d.get("/v2/health/ready").status, 200, "ready after the flood")
    finally:
        d.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@t.test("socket activation: LISTEN_FDS/LISTEN_PID are honoured")
def _():
    d = tdtest.Daemon()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    if lsock.fileno() != 3:
        os.dup2(lsock.fileno(), 3)
    os.set_inheritable(3, True)
    env = d.environ()
    # LISTEN_PID must be the daemon's own pid: set it in a shell that then
    # execs the daemon (same pid). --listen names a port that must NOT be
    # used.
    cmd = ['sh', '-c', 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"',
           tdtest.TINYD, "--listen", "127.0.0.1:1", "--models", d.repo,
           "--state", d.state]
    errf = open(os.path.join(d.tmp, "act.log"), "wb")
    p = subprocess.Popen(cmd, env=env, stderr=errf, pass_fds=(3,))
    try:
        d.port = port

        def up():
            try:
                return d.get("/v2/health/ready", timeout=2).status == 200
            except OSError:
                return False
        tdtest.wait_for(up, 20, "the activated daemon to answer")
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(20)
        errf.close()
        if lsock.fileno() != 3:
            os.close(3)
        lsock.close()
        d.close()
    eq(rc, 0, "exit status")


t.run()
