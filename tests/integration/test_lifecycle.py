#!/usr/bin/env python3
"""Lifecycle as systemd and a client see it: READY/RELOADING/STOPPING/
WATCHDOG on $NOTIFY_SOCKET, and SIGTERM draining a request in flight."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import os
import signal
import socket
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq, flatten, infer_body  # noqa: E402

t = tdtest.TAP()
LIN = tdtest.Linear.seeded(21, classes=4, features=6)


def notified_daemon(abstract=False, env=None, args=()):
    ns = tdtest.NotifySocket(abstract=abstract)
    d = tdtest.Daemon(notify=ns.address, env=env, args=args)
    LIN.save(d.repo, "lin")
    return ns, d


@t.test("READY=1 on NOTIFY_SOCKET once serving, STOPPING=1 on SIGTERM")
def _():
    ns, d = notified_daemon()
    try:
        d.start()
        ns.wait_for("READY=1")
        # READY=1 means the repository is loaded: the model answers now.
        eq(d.get("/v2/models/lin/ready").status, 200, "model ready")
        d.send_signal(signal.SIGTERM)
        ns.wait_for("STOPPING=1")
        eq(d.wait_exit(), 0, "exit status")
        check(not any("READY=1" in m.split("\n")
                      for m in ns.messages[ns.cursor:]),
              "READY=1 after STOPPING=1: %r" % ns.messages)
    finally:
        d.close()
        ns.close()


@t.test("an abstract NOTIFY_SOCKET (@name) gets READY=1")
def _():
    ns, d = notified_daemon(abstract=True)
    try:
        d.start()
        ns.wait_for("READY=1")
    finally:
        d.close()
        ns.close()


@t.test("SIGHUP: RELOADING=1 then READY=1")
def _():
    ns, d = notified_daemon()
    try:
        d.start()
        ns.wait_for("READY=1")
        for _ in range(2):
            d.send_signal(signal.SIGHUP)
            ns.wait_for("RELOADING=1")
            ns.wait_for("READY=1")
        tdtest.check_infer(d, "lin", LIN, LIN.inputs(1))
    finally:
        d.close()
        ns.close()


@t.test("WATCHDOG=1 at least every WATCHDOG_USEC/2 from the loop")
def _():
    ns, d = notified_daemon(env={"WATCHDOG_USEC": "200000"})
    try:
        d.start()
        ns.wait_for("READY=1")
        ns.drain(1.0)
        n = sum(1 for m in ns.messages if "WATCHDOG=1" in m.split("\n"))
        # 1 s at a 100 ms period is ~10 pings; ask for 4 to allow a loaded
        # CI machine its jitter.
        check(n >= 4, "%d WATCHDOG=1 in 1s with WATCHDOG_USEC=200000" % n)
    finally:
        d.close()
        ns.close()


@t.test("no WATCHDOG=1 without WATCHDOG_USEC")
def _():
    ns, d = notified_daemon()
    try:
        d.start()
        ns.wait_for("READY=1")
        ns.drain(0.5)
        check(not any("WATCHDOG=1" in m for m in ns.messages),
              "WATCHDOG=1 sent without WATCHDOG_USEC: %r" % ns.messages)
    finally:
        d.close()
        ns.close()


@t.test("without NOTIFY_SOCKET the daemon runs and stops normally")
def _():
    d = tdtest.Daemon()
    LIN.save(d.repo, "lin")
    try:
        d.start()
        tdtest.check_infer(d, "lin", LIN, LIN.inputs(1))
        eq(d.stop(), 0, "exit status")
    finally:
        d.close()


def connect_refused(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
    except (ConnectionRefusedError, socket.timeout):
        return True
    except ConnectionResetError:
        # The listener closed while this SYN was in its backlog: it is
        # going away, but ask again until the port answers "refused".
        return False
    finally:
        s.close()
    return False


@t.test("SIGTERM during a slow request: it is answered, new connections "
        "are refused, exit 0")
def _():
    ns, d = notified_daemon()
    try:
        d.start()
        ns.wait_for("READY=1")
        rows = LIN.inputs(3)
        body = json.dumps(infer_body(rows, id="slow")).encode()
        half = len(body) // 2
        s = d.raw()
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:half])
        time.sleep(0.2)                 # the daemon has read the first half
        d.send_signal(signal.SIGTERM)
        ns.wait_for("STOPPING=1")
        tdtest.wait_for(lambda: connect_refused(d.port), 5,
                        "new connections refused after SIGTERM")
        check(d.proc.poll() is None, "tinyd exited with a request in flight")
        s.sendall(body[half:])
        r = tdtest.read_http_response(s, timeout=10)
        s.close()
        eq(r.status, 200, "status of the request in flight (%r)" % r.body)
        eq(r.json().get("id"), "slow", "id")
        tdtest.close_enough(tdtest.logits_of(r)[1],
                            flatten(LIN.expected(rows)), "logits")
        eq(d.wait_exit(10), 0, "exit status after draining")
    finally:
        d.close()
        ns.close()


@t.test("/v2/health/ready is never 200 before the repository is loaded")
def _():
    d = tdtest.Daemon(wait=False)
    n = 30
    for i in range(n):
        tdtest.Linear.seeded(60 + i, classes=10, features=2000).save(
            d.repo, "m%02d" % i)
    try:
        d.start()
        seen = []
        deadline = time.monotonic() + tdtest.START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                r = d.get("/v2/health/ready", timeout=2)
            except OSError:
                check(d.proc.poll() is None, "tinyd exited: " + d.log())
                time.sleep(0.002)
                continue
            seen.append(r.status)
            if r.status == 503:
                eq(r.json(), {"ready": False}, "503 body")
                continue
            eq(r.status, 200, "ready status")
            models = d.models()
            ready = [m for m in models.values() if m["state"] == "READY"]
            eq(len(ready), n, "models READY once health/ready said 200")
            break
        check(seen and seen[-1] == 200, "never ready: %r" % seen[-5:])
        tdtest.diag("503 answers before 200: %d" % seen.count(503))
    finally:
        d.close()


@t.test("SIGINT stops like SIGTERM: exit 0")
def _():
    d = tdtest.Daemon()
    LIN.save(d.repo, "lin")
    try:
        d.start()
        eq(d.stop(signal.SIGINT), 0, "exit status after SIGINT")
    finally:
        d.close()


@t.test("a request that never completes does not hold SIGTERM past "
        "--drain-timeout")
def _():
    d = tdtest.Daemon(args=["--drain-timeout", "1"])
    LIN.save(d.repo, "lin")
    try:
        d.start()
        s = d.raw()
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"inputs\"")
        time.sleep(0.1)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit(8)
        took = time.monotonic() - t0
        s.close()
        eq(rc, 0, "exit status")
        check(took < 5, "exit took %.1fs with --drain-timeout 1" % took)
    finally:
        d.close()


@t.test("an idle keep-alive connection does not delay SIGTERM")
def _():
    d = tdtest.Daemon()
    LIN.save(d.repo, "lin")
    try:
        d.start()
        c = d.conn()
        eq(d.get("/v2/health/live", conn=c).status, 200, "live")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        eq(d.wait_exit(10), 0, "exit status")
        took = time.monotonic() - t0
        c.close()
        check(took < 3, "exit took %.1fs with only an idle connection" % took)
    finally:
        d.close()


@t.test("while draining: health/ready is never 200 and new work is not "
        "accepted on kept-alive connections")
def _():
    d = tdtest.Daemon()
    LIN.save(d.repo, "lin")
    try:
        d.start()
        keep = d.conn()
        eq(d.get("/v2/health/ready", conn=keep).status, 200, "ready before")
        rows = LIN.inputs(1)
        body = json.dumps(infer_body(rows)).encode()
        s = d.raw()
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.2)
        d.send_signal(signal.SIGTERM)
        tdtest.wait_for(lambda: connect_refused(d.port), 5,
                        "listening socket closed")
        try:
            r = d.get("/v2/health/ready", conn=keep)
            eq((r.status, r.json()), (503, {"ready": False}),
               "health/ready while draining")
            r = d.infer("lin", infer_body(rows), conn=keep)
            eq(r.status, 503, "infer while draining (%r)" % r.body[:200])
            r.error()
        except (ConnectionError, tdtest.http.client.HTTPException):
            pass    # closing idle connections at drain is fine too
        keep.close()
        s.sendall(body[10:])
        r = tdtest.read_http_response(s)
        s.close()
        eq(r.status, 200, "request in flight")
        eq(d.wait_exit(10), 0, "exit status")
    finally:
        d.close()


@t.test("SIGTERM right after SIGHUP (reload in progress) still exits 0")
def _():
    d = tdtest.Daemon()
    for i in range(20):
        tdtest.Linear.seeded(50 + i, classes=10, features=256).save(
            d.repo, "m%02d" % i)
    try:
        d.start()
        d.send_signal(signal.SIGHUP)
        d.send_signal(signal.SIGTERM)
        eq(d.wait_exit(10), 0, "exit status")
    finally:
        d.close()


@t.test("a second SIGTERM while draining does not crash")
def _():
    d = tdtest.Daemon(args=["--drain-timeout", "2"])
    LIN.save(d.repo, "lin")
    try:
        d.start()
        s = d.raw()
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        time.sleep(0.1)
        d.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        d.send_signal(signal.SIGTERM)
        d.send_signal(signal.SIGHUP)
        rc = d.wait_exit(10)
        s.close()
        check(rc in (0, 1), "exit status %r (a crash is negative)" % rc)
    finally:
        d.close()


t.run()
