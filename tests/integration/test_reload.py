#!/usr/bin/env python3
"""SIGHUP rescans the repository: new, changed, removed and broken files,
while clients keep sending requests that must never fail."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import os
import signal
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
d = tdtest.Daemon()
A1 = tdtest.Linear.seeded(31, classes=3, features=5)
A2 = tdtest.Linear.seeded(32, classes=3, features=5)
STEADY = tdtest.Linear.seeded(33, classes=4, features=8)
A1.save(d.repo, "a")
STEADY.save(d.repo, "steady")
t.setup(d.start)
t.cleanup(d.close)


def state_of(name):
    return d.models().get(name, {}).get("state")


def settle(hammer):
    eq(hammer.failures[:5], [], "failed requests during the reloads")
    check(hammer.ok > 0, "the hammer made no request")
    tdtest.diag("%d requests answered during the reloads" % hammer.ok)


@t.test("a new file appears after SIGHUP while another model is hammered")
def _():
    with tdtest.Hammer(d, "steady", [STEADY]) as h:
        time.sleep(0.2)
        b = tdtest.Linear.seeded(34)
        b.save(d.repo, "b")
        d.hup_and_wait(lambda: state_of("b") == "READY", "b READY")
        tdtest.check_infer(d, "b", b, b.inputs(2))
        time.sleep(0.2)
    settle(h)


@t.test("a changed file is reloaded: the new weights answer, and requests "
        "to it during the swap all succeed")
def _():
    with tdtest.Hammer(d, "a", [A1, A2]) as h:
        time.sleep(0.2)
        A2.save(d.repo, "a")
        rows = A2.inputs(1)
        want = tdtest.flatten(A2.expected(rows))

        def answers_new():
            r = d.infer("a", tdtest.infer_body(rows))
            return r.status == 200 and all(
                abs(x - y) < 1e-4 for x, y in zip(tdtest.logits_of(r)[1],
                                                  want))
        d.hup_and_wait(answers_new, "a answering with the new weights")
        time.sleep(0.2)
    settle(h)
    tdtest.check_infer(d, "a", A2, A2.inputs(3))


@t.test("a request half-uploaded across a swap keeps the version it "
        "started with, even when the new file has another input width")
def _():
    old = tdtest.Linear.seeded(41, classes=3, features=5)
    new = tdtest.Linear.seeded(42, classes=2, features=9)
    old.save(d.repo, "swap")
    d.hup_and_wait(lambda: state_of("swap") == "READY", "swap READY")
    rows = old.inputs(2)
    body = json.dumps(tdtest.infer_body(rows)).encode()
    s = d.raw()
    try:
        s.sendall(b"POST /v2/models/swap/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:20])
        time.sleep(0.1)
        new.save(d.repo, "swap")

        def swapped():
            r = d.get("/v2/models/swap")
            return r.status == 200 and r.json()["inputs"][0]["shape"] == \
                [-1, 9]
        d.hup_and_wait(swapped, "the new swap.safetensors loaded")
        s.sendall(body[20:])
        r = tdtest.read_http_response(s)
    finally:
        s.close()
    eq(r.status, 200, "status of the request in flight (%r)" % r.body[:300])
    tdtest.close_enough(tdtest.logits_of(r)[1],
                        tdtest.flatten(old.expected(rows)), "old logits")
    tdtest.check_infer(d, "swap", new, new.inputs(1), "new version after")


@t.test("many SIGHUPs in a row under load: nothing fails")
def _():
    with tdtest.Hammer(d, "a", [A1, A2]) as h:
        for i in range(10):
            (A1 if i % 2 else A2).save(d.repo, "a")
            d.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        time.sleep(0.3)
    settle(h)
    eq(state_of("steady"), "READY", "steady state")


def broken_case(name, what, data, *reason_words):
    @t.test("a broken file (%s) is UNAVAILABLE with a reason; the rest "
            "keep serving" % what)
    def _():
        tdtest.write_atomic(os.path.join(d.repo, name + ".safetensors"), data)
        d.hup_and_wait(lambda: name in d.models(), name + " listed")
        m = d.models()[name]
        eq(m.get("state"), "UNAVAILABLE", name + " state")
        reason = m.get("reason")
        check(isinstance(reason, str) and reason,
              "no reason for %s: %r" % (name, m))
        if reason_words:
            check(any(w in reason.lower() for w in reason_words),
                  "reason %r names none of %r" % (reason, reason_words))
        r = d.get("/v2/models/%s/ready" % name)
        eq(r.status, 503, name + "/ready status")
        eq(r.json().get("ready"), False, name + "/ready body")
        r = d.infer(name, tdtest.infer_body([[1.0] * 5]))
        check(r.status >= 400, "infer on %s answered %d" % (name, r.status))
        r.error()
        tdtest.check_infer(d, "steady", STEADY, STEADY.inputs(2))
        eq(d.get("/v2/health/ready").status, 200, "server still ready")


GOOD = tdtest.Linear.seeded(35, classes=3, features=5).file_bytes()
broken_case("trunc", "truncated", GOOD[:len(GOOD) - 7])
broken_case("nobias", "missing tensor", tdtest.Linear.seeded(36).file_bytes(
    drop=("bias",)), "bias")
broken_case("misshaped", "bias shape not matching weight",
            tdtest.safetensors_bytes(
                [("weight", "F32", [3, 4], [0.5] * 12),
                 ("bias", "F32", [4], [0.0] * 4)], {"kind": "linear"}),
            "bias", "shape")
broken_case("wrongdtype", "weight stored as F64",
            tdtest.safetensors_bytes(
                [("weight", "F64", [3, 4], [0.5] * 12),
                 ("bias", "F32", [3], [0.0] * 3)], {"kind": "linear"}),
            "weight", "f64", "dtype")
broken_case("nokind", "no kind in metadata",
            tdtest.Linear.seeded(37).file_bytes(metadata={}), "kind")
broken_case("oddkind", "unknown kind",
            tdtest.Linear.seeded(37).file_bytes(metadata={"kind": "quantum"}),
            "quantum", "kind")
broken_case("garbage", "not safetensors at all", b"hello, world\n" * 10)
broken_case("empty", "empty file", b"")


@t.test("replacing a good model's file by a broken one keeps the old "
        "version serving")
def _():
    good = tdtest.Linear.seeded(38, classes=3, features=5)
    good.save(d.repo, "keep")
    d.hup_and_wait(lambda: state_of("keep") == "READY", "keep READY")
    data = good.file_bytes()
    with tdtest.Hammer(d, "keep", [good]) as h:
        tdtest.write_atomic(os.path.join(d.repo, "keep.safetensors"),
                            data[:len(data) // 2])
        reloads = reload_count()
        d.hup_and_wait(lambda: reload_count() > reloads, "the reload counted")
        time.sleep(0.2)
    settle(h)
    tdtest.check_infer(d, "keep", good, good.inputs(2))
    eq(d.get("/v2/models/keep/ready").status, 200, "keep/ready status")


def reload_count():
    n = 0
    for line in d.metrics().splitlines():
        if line.startswith("tinyd_reloads_total"):
            n += float(line.rsplit(" ", 1)[1])
    return n


@t.test("a broken file that is fixed becomes READY on the next SIGHUP")
def _():
    lin = tdtest.Linear.seeded(39, classes=3, features=5)
    lin.save(d.repo, "trunc")
    d.hup_and_wait(lambda: state_of("trunc") == "READY", "trunc READY")
    tdtest.check_infer(d, "trunc", lin, lin.inputs(2))


@t.test("a removed file is unloaded after SIGHUP")
def _():
    os.unlink(os.path.join(d.repo, "b.safetensors"))
    d.hup_and_wait(lambda: "b" not in d.models(), "b gone")
    eq(d.get("/v2/models/b").status, 404, "b metadata status")
    eq(d.infer("b", tdtest.infer_body([[0.0] * 4])).status, 404,
       "b infer status")


@t.test("a model removed while clients hammer it: 200 then 404, nothing "
        "else")
def _():
    gone = tdtest.Linear.seeded(40, classes=3, features=5)
    gone.save(d.repo, "gone")
    d.hup_and_wait(lambda: state_of("gone") == "READY", "gone READY")
    rows = gone.inputs(1)
    want = tdtest.flatten(gone.expected(rows))
    seen, bad = {}, []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                r = d.infer("gone", tdtest.infer_body(rows))
                seen[r.status] = seen.get(r.status, 0) + 1
                if r.status == 200:
                    tdtest.close_enough(tdtest.logits_of(r)[1], want, "gone")
                elif r.status == 404:
                    r.error()
                else:
                    bad.append(r)
            except Exception as e:
                bad.append(e)
    threads = [threading.Thread(target=client) for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    os.unlink(os.path.join(d.repo, "gone.safetensors"))
    d.hup_and_wait(lambda: "gone" not in d.models(), "gone unlisted")
    time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join(10)
    eq(bad[:3], [], "answers other than 200/404")
    check(seen.get(200) and seen.get(404), "statuses seen: %r" % seen)


@t.test("files that are not NAME.safetensors are ignored")
def _():
    with open(os.path.join(d.repo, "README.txt"), "w") as f:
        f.write("not a model\n")
    tdtest.write_atomic(os.path.join(d.repo, ".hidden.safetensors"),
                        A1.file_bytes())
    os.mkdir(os.path.join(d.repo, "dir.safetensors"))
    n = reload_count()
    d.hup_and_wait(lambda: reload_count() > n, "the reload counted")
    names = set(d.models())
    for bad in ("README", "README.txt", ".hidden", "dir"):
        check(bad not in names, "%s listed: %r" % (bad, sorted(names)))


@t.test("model names: [A-Za-z0-9_.-]{1,128} are served, other file names "
        "are not")
def _():
    lin = tdtest.Linear.seeded(43, classes=2, features=3)
    good = ["N" * 128, "a.b-c_9"]
    bad = ["m" * 129, "with space", "caf\u00e9", "semi;colon"]
    for name in good + bad:
        lin.save(d.repo, name)
    n = reload_count()
    d.hup_and_wait(lambda: reload_count() > n, "the reload counted")
    names = set(d.models())
    for name in good:
        check(name in names, "%s... not listed" % name[:20])
        tdtest.check_infer(d, name, lin, lin.inputs(1), name[:20])
    for name in bad:
        check(name not in names, "%r listed" % name[:20])
    for name in good + bad:
        os.unlink(os.path.join(d.repo, name + ".safetensors"))


@t.test("the repository at start: broken files do not stop the daemon")
def _():
    d2 = tdtest.Daemon()
    try:
        STEADY.save(d2.repo, "good")
        tdtest.write_atomic(os.path.join(d2.repo, "bad.safetensors"), b"x")
        d2.start()
        eq(d2.models()["bad"]["state"], "UNAVAILABLE", "bad state")
        tdtest.check_infer(d2, "good", STEADY, STEADY.inputs(1))
    finally:
        d2.close()


@t.test("SIGTERM at the end: exit 0, no sanitizer report on stderr")
def _():
    d.check_clean_exit()


t.run()
