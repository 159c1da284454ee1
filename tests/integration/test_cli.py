#!/usr/bin/env python3
"""Command line and config file of tinyd, and its log lines on stderr."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import os
import re
import signal
import socket
import subprocess
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
LEVEL = re.compile(r"\b(debug|info|notice|warn|warning|error|crit|fatal)\b",
                   re.IGNORECASE)


def run(args, timeout=10):
    return subprocess.run([tdtest.TINYD] + args, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, text=True)


@t.test("--help exits 0 and lists the flags")
def _():
    p = run(["--help"])
    eq(p.returncode, 0, "--help exit status")
    out = p.stdout + p.stderr
    for flag in ("--listen", "--models", "--state", "--threads", "--max-body",
                 "--log-level", "--config", "--version"):
        check(flag in out, "--help does not mention %s:\n%s" % (flag, out))


@t.test("--version exits 0 and prints the version")
def _():
    p = run(["--version"])
    eq(p.returncode, 0, "--version exit status")
    check(re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr),
          "no version number in %r" % (p.stdout + p.stderr))


@t.test("an unknown flag exits non-zero naming it")
def _():
    p = run(["--no-such-flag"])
    check(p.returncode != 0, "exit status 0 for an unknown flag")
    check("no-such-flag" in p.stderr,
          "stderr does not name the flag: %r" % p.stderr)


@t.test("a flag without its value exits non-zero naming it")
def _():
    p = run(["--models"])
    check(p.returncode != 0, "exit status 0 for --models without a value")
    check("models" in p.stderr, "stderr does not name it: %r" % p.stderr)


@t.test("a bad --listen value exits non-zero naming it")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        p = run(["--listen", "not-an-address", "--models", tmp,
                 "--state", tmp])
    check(p.returncode != 0, "exit status 0 for --listen not-an-address")
    check("not-an-address" in p.stderr or "listen" in p.stderr,
          "stderr does not name it: %r" % p.stderr)


@t.test("--config FILE: listen, models, state, max-body come from the file")
def _():
    d = tdtest.Daemon(config=["max-body = 1000"])
    try:
        lin = tdtest.Linear.seeded(3)
        lin.save(d.repo, "cfg")
        d.start()
        tdtest.check_infer(d, "cfg", lin, lin.inputs(1))
        r = d.post("/v2/models/cfg/infer", b"x" * 2000,
                   headers={"Content-Type": "application/json"})
        eq(r.status, 413, "2000-byte body with max-body = 1000 in the file")
    finally:
        d.close()


@t.test("a flag on the command line wins over the same key in the file")
def _():
    d = tdtest.Daemon(config=["max-body = 1000"],
                      args=["--max-body", "100000"])
    try:
        lin = tdtest.Linear.seeded(3)
        lin.save(d.repo, "cfg")
        d.start()
        body = tdtest.infer_body(lin.inputs(1), id="x" * 2000)
        r = d.infer("cfg", body)
        eq(r.status, 200, "2 kB body with --max-body 100000 over the file's "
           "1000 (body %r)" % r.body[:200])
    finally:
        d.close()


@t.test("a bad config line is reported with its line number")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "tinyd.conf")
        with open(conf, "w") as f:
            f.write("# comment\nmodels = %s\nstate = %s\n"
                    "this line is nonsense\n" % (tmp, tmp))
        p = run(["--config", conf, "--listen", "127.0.0.1:%d"
                 % tdtest.free_port()])
    check(p.returncode != 0, "exit status 0 for a bad config line")
    check(re.search(r"(line |:)4\b", p.stderr),
          "stderr does not name line 4: %r" % p.stderr)


@t.test("an unknown key in the config file is reported with its line")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "tinyd.conf")
        with open(conf, "w") as f:
            f.write("models = %s\nstate = %s\nfrobnicate = 3\n" % (tmp, tmp))
        p = run(["--config", conf, "--listen", "127.0.0.1:%d"
                 % tdtest.free_port()])
    check(p.returncode != 0, "exit status 0 for an unknown key")
    check("frobnicate" in p.stderr and re.search(r"(line |:)3\b", p.stderr),
          "stderr does not name the key and line 3: %r" % p.stderr)


@t.test("a missing config file exits non-zero naming it")
def _():
    p = run(["--config", "/nonexistent/tinyd.conf"])
    check(p.returncode != 0, "exit status 0 for a missing config file")
    check("/nonexistent/tinyd.conf" in p.stderr,
          "stderr does not name the file: %r" % p.stderr)


@t.test("logs: one line per event on stderr, each with a level")
def _():
    d = tdtest.Daemon()
    try:
        tdtest.Linear.seeded(1).save(d.repo, "a")
        d.start()
        d.get("/v2/models/a")
        tdtest.Linear.seeded(2).save(d.repo, "b")
        d.hup_and_wait(lambda: "b" in d.models(), "b listed")
        eq(d.stop(), 0, "exit status after SIGTERM")
        lines = d.log().splitlines()
        check(len(lines) >= 3, "fewer than 3 log lines for start, reload "
              "and stop: %r" % lines)
        for line in lines:
            check(line.strip(), "an empty log line in %r" % lines)
            check(LEVEL.search(line), "log line without a level: %r" % line)
        text = "\n".join(lines).lower()
        check("reload" in text or "rescan" in text or "sighup" in text,
              "no log line about the reload:\n" + "\n".join(lines))
    finally:
        d.close()


@t.test("--log-level error keeps routine events out of stderr")
def _():
    d = tdtest.Daemon(args=["--log-level", "error"])
    try:
        tdtest.Linear.seeded(1).save(d.repo, "a")
        d.start()
        d.send_signal(signal.SIGHUP)
        d.get("/v2/models")
        eq(d.stop(), 0, "exit status after SIGTERM")
        noisy = [l for l in d.log().splitlines()
                 if re.search(r"\b(info|debug)\b", l, re.I)]
        check(not noisy, "info/debug lines at --log-level error: %r" % noisy)
    finally:
        d.close()


@t.test("--listen 127.0.0.1:0 takes a free port and the log names it")
def _():
    d = tdtest.Daemon(wait=False, port=0)
    try:
        d.start()
        check("127.0.0.1:0" in " ".join(d.command()), "not started on :0")
        port = tdtest.wait_for(
            lambda: next((int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)",
                                                     d.log()) if p != "0"),
                         None), 10, "a log line naming the port")
        d.port = port
        d.wait_ready()
        eq(d.get("/v2/health/live").status, 200, "live on the logged port")
    finally:
        d.close()


@t.test("--listen [::1]:PORT serves over IPv6")
def _():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        raise tdtest.Skip("no IPv6 loopback here (%s)" % e)
    port = tdtest.free_port()
    d = tdtest.Daemon(args=["--listen", "[::1]:%d" % port], wait=False)
    try:
        d.start()

        def answered():
            try:
                c = socket.create_connection(("::1", port), timeout=2)
            except OSError:
                return None
            with c:
                c.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                return tdtest.read_http_response(c, timeout=5)
        r = tdtest.wait_for(answered, 10, "an answer on [::1]:%d" % port)
        eq((r.status, r.json()), (200, {"live": True}), "live over IPv6")
    finally:
        d.close()


@t.test("stderr connected to journald (JOURNAL_STREAM): <N> priority "
        "prefixes, no timestamps")
def _():
    d = tdtest.Daemon()
    try:
        tdtest.Linear.seeded(1).save(d.repo, "a")
        with open(d.stderr_path, "wb"):
            pass
        st = os.stat(d.stderr_path)
        d.extra_env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        d.start()
        d.check_clean_exit()
        lines = d.log().splitlines()
        check(lines, "no log lines")
        for line in lines:
            check(re.match(r"^<[0-7]>\S", line),
                  "line without a <N> prefix: %r" % line)
            check(not re.search(r"\d{4}-\d\d-\d\dT\d\d:", line),
                  "timestamp in a journald line: %r" % line)
    finally:
        d.close()


@t.test("--log-level with a bad value exits non-zero naming it")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        p = run(["--log-level", "chatty", "--models", tmp, "--state", tmp])
    check(p.returncode != 0, "exit status 0 for --log-level chatty")
    check("chatty" in p.stderr or "log-level" in p.stderr,
          "stderr does not name it: %r" % p.stderr)


t.run()
