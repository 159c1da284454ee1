#!/usr/bin/env python3
"""Inference on `linear` models: exact answers computed here from the
weights this test wrote, 400s naming what was wrong, and 100 concurrent
connections."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import math
import os
import socket
import struct
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq, flatten, infer_body  # noqa: E402

t = tdtest.TAP()
d = tdtest.Daemon()
LIN = tdtest.Linear.seeded(11, classes=5, features=7)
WIDE = tdtest.Linear.seeded(12, classes=10, features=784)
LBL = tdtest.Linear.seeded(13, classes=4, features=3,
                          labels=["ant", "bee", "cow", "dog:ish"])
LIN.save(d.repo, "lin")
WIDE.save(d.repo, "wide")
LBL.save(d.repo, "lbl")
t.setup(d.start)
t.cleanup(d.close)


@t.test("one row: logits = x.W^T + b")
def _():
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1))


@t.test("a batch of 33 rows")
def _():
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(33, seed=5))


@t.test("a 784-feature model (MNIST-sized) with a batch of 16")
def _():
    tdtest.check_infer(d, "wide", WIDE, WIDE.inputs(16))


@t.test("nested data is accepted like flat data")
def _():
    rows = LIN.inputs(3)
    body = infer_body(rows)
    body["inputs"][0]["data"] = rows      # [[...], [...], [...]]
    r = d.infer("lin", body)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    shape, data = tdtest.logits_of(r)
    eq(shape, [3, LIN.classes], "shape")
    tdtest.close_enough(data, flatten(LIN.expected(rows)), "logits")


@t.test("the response echoes id and names the model; data is flat FP32")
def _():
    r = d.infer("lin", infer_body(LIN.inputs(2), id="req-42"))
    eq(r.status, 200, "status")
    doc = r.json()
    eq(doc.get("model_name"), "lin", "model_name")
    eq(doc.get("id"), "req-42", "id")
    out = doc["outputs"][0]
    eq(out["datatype"], "FP32", "datatype")
    check(all(isinstance(v, (int, float)) for v in out["data"]),
          "data is not flat numbers: %r" % out["data"])


@t.test("the versioned infer path answers the same")
def _():
    rows = LIN.inputs(2)
    r = d.post("/v2/models/lin/versions/1/infer", infer_body(rows))
    eq(r.status, 200, "status")
    tdtest.close_enough(tdtest.logits_of(r)[1],
                        flatten(LIN.expected(rows)), "logits")


@t.test("requested outputs: logits by name; an unknown output is 400")
def _():
    rows = LIN.inputs(1)
    r = d.infer("lin", infer_body(rows, outputs=[{"name": "logits"}]))
    eq(r.status, 200, "status with outputs=[logits]")
    r = d.infer("lin", infer_body(rows, outputs=[{"name": "probs9"}]))
    eq(r.status, 400, "status with outputs=[probs9]")
    check("probs9" in r.error(), "error does not name it: %r" % r.error())


@t.test("integers in FP32 data are accepted as numbers")
def _():
    rows = [[1, 0, -1, 2, 0, 0, 1]]
    r = d.infer("lin", infer_body(rows))
    eq(r.status, 200, "status (%r)" % r.body[:300])
    tdtest.close_enough(tdtest.logits_of(r)[1], flatten(LIN.expected(rows)),
                        "logits")


def bad(name, body, *words):
    """Register a case: body is 400 and the error names one of words."""
    @t.test("400 for %s, error names it" % name)
    def _():
        r = d.infer("lin", body)
        eq(r.status, 400, "status (body %r)" % r.body[:300])
        msg = r.error().lower()
        check(any(w.lower() in msg for w in words),
              "error %r names none of %r" % (msg, words))
        tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


ROW = LIN.inputs(1)
bad("a wrong feature count in shape", infer_body([ROW[0] + [0.5]]),
    "shape", "7", "8")
bad("a 1-D shape", infer_body(ROW, shape=[7]), "shape")
bad("a wrong datatype", infer_body(ROW, datatype="INT32"), "datatype",
    "INT32", "FP32")
bad("an unknown datatype", infer_body(ROW, datatype="FP17"), "datatype",
    "FP17")
bad("data count not matching the shape", infer_body(ROW, shape=[2, 7]),
    "data", "count", "14", "element")
bad("an unknown input name", infer_body(ROW, name="pixels"), "pixels")
bad("empty inputs", {"inputs": []}, "input")
bad("missing inputs", {"id": "x"}, "inputs")
bad("inputs not an array", {"inputs": {"name": "input"}}, "inputs")
bad("non-numeric data", infer_body([["a"] * 7]), "data", "number", "numeric")
bad("a negative dimension", infer_body(ROW, shape=[-1, 7]), "shape")
bad("shape not an array", dict(inputs=[dict(name="input", datatype="FP32",
                                           shape="1x7", data=ROW[0])]),
    "shape")
bad("missing data", dict(inputs=[dict(name="input", datatype="FP32",
                                      shape=[1, 7])]), "data")


@t.test("a zero-row batch is either answered empty or refused with 400")
def _():
    r = d.infer("lin", {"inputs": [{"name": "input", "datatype": "FP32",
                                    "shape": [0, 7], "data": []}]})
    check(r.status in (200, 400), "status %d" % r.status)
    if r.status == 200:
        shape, data = tdtest.logits_of(r)
        eq((shape, data), ([0, LIN.classes], []), "empty answer")
    else:
        r.error()


# ------------------------------------------------ extensions, hostile input

def binary_request(rows, features, json_extra=None):
    """(body, headers) of a Triton binary-tensor infer request."""
    raw = struct.pack("<%df" % (len(rows) * features), *flatten(rows))
    header = {"inputs": [{"name": "input", "datatype": "FP32",
                          "shape": [len(rows), features],
                          "parameters": {"binary_data_size": len(raw)}}]}
    header.update(json_extra or {})
    h = json.dumps(header).encode()
    return h + raw, {"Content-Type": "application/octet-stream",
                     "Inference-Header-Content-Length": str(len(h))}


@t.test("binary tensor extension: raw FP32 input gives the same logits")
def _():
    check("binary_tensor_data" in d.get("/v2").json().get("extensions", []),
          "binary_tensor_data not advertised in /v2 extensions")
    rows = LIN.inputs(4)
    body, headers = binary_request(rows, LIN.features)
    r = d.post("/v2/models/lin/infer", body, headers=headers)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    tdtest.close_enough(tdtest.logits_of(r)[1], flatten(LIN.expected(rows)),
                        "logits")


@t.test("binary NaN and Inf inputs are computed through: no crash, the "
        "finite row is exact")
def _():
    nan, inf = float("nan"), float("inf")
    rows = [[nan] + [0.5] * 6, [inf] * 7, LIN.inputs(1)[0]]
    body, headers = binary_request(rows, LIN.features)
    r = d.post("/v2/models/lin/infer", body, headers=headers)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    shape, data = tdtest.logits_of(r)
    eq(shape, [3, LIN.classes], "shape")
    c = LIN.classes
    for v in data[:c]:
        check(v is None or (isinstance(v, float) and math.isnan(v)),
              "NaN row gave %r" % (data[:c],))
    tdtest.close_enough(data[2 * c:], flatten(LIN.expected(rows[2:])),
                        "finite row")
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("binary_data_size larger than the body is 400")
def _():
    rows = LIN.inputs(2)
    body, headers = binary_request(rows, LIN.features)
    r = d.post("/v2/models/lin/infer", body[:-4], headers=headers)
    eq(r.status, 400, "status (%r)" % r.body[:300])
    r.error()


@t.test("Inference-Header-Content-Length beyond the body is 400")
def _():
    body, headers = binary_request(LIN.inputs(1), LIN.features)
    headers["Inference-Header-Content-Length"] = str(len(body) + 10)
    r = d.post("/v2/models/lin/infer", body, headers=headers)
    eq(r.status, 400, "status (%r)" % r.body[:300])
    check("Inference-Header-Content-Length" in r.error(),
          "error does not name the header: %r" % r.error())


@t.test("classification extension: top-k as score:index:label from the "
        "model's labels")
def _():
    rows = LBL.inputs(3)
    r = d.infer("lbl", infer_body(rows, outputs=[
        {"name": "logits", "parameters": {"classification": 2}}]))
    eq(r.status, 200, "status (%r)" % r.body[:300])
    out = r.json()["outputs"][0]
    eq(out["datatype"], "BYTES", "datatype")
    eq(out["shape"], [3, 2], "shape")
    for i, logits in enumerate(LBL.expected(rows)):
        top = sorted(range(len(logits)), key=lambda c: -logits[c])[:2]
        for j, c in enumerate(top):
            score, index, label = out["data"][2 * i + j].split(":")
            eq((int(index), label), (c, LBL.labels[c]),
               "row %d top-%d" % (i, j + 1))
            tdtest.close_enough([float(score)], [logits[c]], "score",
                                tol=1e-5)


@t.test("FP32 overflow (3e38 inputs) answers valid JSON, no crash")
def _():
    r = d.infer("lin", infer_body([[3e38] * 7, [-3e38] * 7]))
    check(r.status in (200, 400), "status %d" % r.status)
    r.json()
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("a value beyond FP32 (1e39) is 400 or computed, never a crash")
def _():
    r = d.infer("lin", infer_body([[1e39] + [0.0] * 6]))
    check(r.status in (200, 400), "status %d" % r.status)
    r.json()
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("shapes whose element count overflows are refused, not allocated")
def _():
    for rows in (2 ** 62, 2 ** 61 + 1, 2 ** 40, 10 ** 9):
        r = d.infer("lin", infer_body([[0.5] * 7], shape=[rows, 7]))
        check(r.status in (400, 413), "shape [%d, 7]: status %d"
              % (rows, r.status))
        r.error()
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("duplicate keys in the JSON body are 400 naming the key")
def _():
    r = d.post("/v2/models/lin/infer",
               '{"inputs": [], "inputs": []}',
               headers={"Content-Type": "application/json"})
    eq(r.status, 400, "status")
    check("inputs" in r.error() or "duplicate" in r.error().lower(),
          "error %r" % r.error())


@t.test("deeply nested JSON is refused with 400, no crash")
def _():
    deep = "[" * 100000 + "]" * 100000
    r = d.post("/v2/models/lin/infer",
               '{"inputs": [{"name": "input", "datatype": "FP32", '
               '"shape": [1, 7], "data": %s}]}' % deep,
               headers={"Content-Type": "application/json"})
    eq(r.status, 400, "status")
    r.error()
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("a chunked request body under the limit is accepted")
def _():
    rows = LIN.inputs(2)
    body = json.dumps(infer_body(rows)).encode()
    s = d.raw()
    try:
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 50):
            part = body[i:i + 50]
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        s.sendall(b"0\r\n\r\n")
        r = tdtest.read_http_response(s)
    finally:
        s.close()
    eq(r.status, 200, "status (%r)" % r.body[:300])
    tdtest.close_enough(tdtest.logits_of(r)[1], flatten(LIN.expected(rows)),
                        "logits")


@t.test("Expect: 100-continue under the limit gets 100 then the answer")
def _():
    rows = LIN.inputs(1)
    body = json.dumps(infer_body(rows)).encode()
    s = d.raw()
    try:
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Expect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.settimeout(5)
        first = s.recv(25)
        check(first.startswith(b"HTTP/1.1 100"),
              "first answer %r, want 100 Continue" % first)
        # The rest of the 100 response is at most its blank line.
        rest = first.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in first \
            else b""
        check(rest == b"" or b"\r\n\r\n" in first, "garbled 100")
        s.sendall(body)
        r = tdtest.read_http_response(s)
    finally:
        s.close()
    eq(r.status, 200, "status (%r)" % r.body[:300])


@t.test("two pipelined requests on one connection are answered in order")
def _():
    s = d.raw()
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v2/models/lin/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        f = s.makefile("rb")
        answers = []
        for _ in range(2):
            line = f.readline()
            msg = tdtest.http.client.parse_headers(f)
            answers.append((line.split()[1], f.read(
                int(msg["Content-Length"]))))
        f.close()
    finally:
        s.close()
    eq(answers[0][0], b"200", "first status")
    eq(json.loads(answers[0][1]), {"live": True}, "first body")
    eq(json.loads(answers[1][1]).get("name"), "lin", "second body")


@t.test("model names with path tricks are 404, never a file outside")
def _():
    for path in ("/v2/models/..", "/v2/models/.hidden",
                 "/v2/models/lin%2F..%2Fwide", "/v2/models/%2e%2e/ready",
                 "/v2/models/" + "x" * 300):
        r = d.get(path)
        check(r.status in (400, 404), "%s: status %d" % (path, r.status))
        r.error()


@t.test("an HTTP/1.0 request without Host is answered and closed")
def _():
    s = d.raw()
    try:
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    check(data.startswith(b"HTTP/1."), "answer %r" % data[:100])
    check(b" 200 " in data.split(b"\r\n")[0] or
          b" 400 " in data.split(b"\r\n")[0], "answer %r" % data[:100])


@t.test("garbage instead of HTTP does not disturb the daemon")
def _():
    for junk in (b"\x00\xff" * 100 + b"\r\n\r\n",
                 b"GET " + b"A" * 100000 + b" HTTP/1.1\r\n\r\n",
                 b"POST /v2/models/lin/infer HTTP/1.1\r\nContent-Length: "
                 b"-5\r\n\r\n",
                 b"POST /v2/models/lin/infer HTTP/1.1\r\nContent-Length: "
                 b"99999999999999999999999\r\n\r\n"):
        s = d.raw()
        try:
            s.sendall(junk)
            s.settimeout(0.5)
            try:
                s.recv(4096)   # an answer (MHD's own 4xx) or nothing
            except (ConnectionResetError, socket.timeout):
                pass
        finally:
            s.close()
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(1), "infer after it")


@t.test("100 concurrent connections each get their own correct answer")
def _():
    n = 100
    barrier = threading.Barrier(n)
    results = [None] * n

    def client(i):
        rows = LIN.inputs(1 + i % 4, seed=100 + i)
        try:
            c = d.conn(timeout=30)
            c.connect()
            barrier.wait(30)     # all 100 connected before any request
            body = json.dumps(infer_body(rows, id=str(i))).encode()
            c.request("POST", "/v2/models/lin/infer", body=body,
                      headers={"Content-Type": "application/json"})
            resp = c.getresponse()
            r = tdtest.Response(resp.status, resp.headers, resp.read())
            c.close()
            eq(r.status, 200, "status")
            eq(r.json().get("id"), str(i), "id")
            tdtest.close_enough(tdtest.logits_of(r)[1],
                                flatten(LIN.expected(rows)), "logits")
            results[i] = "ok"
        except Exception as e:
            results[i] = "client %d: %r" % (i, e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    failed = [r for r in results if r != "ok"]
    check(not failed, "%d of %d failed: %s" % (len(failed), n,
                                              "; ".join(map(str, failed[:5]))))

    def in_flight():
        for line in d.metrics().splitlines():
            if line.startswith("tinyd_http_requests_in_flight "):
                return float(line.split()[1])
    # Only the /metrics request itself is in flight once all are answered.
    tdtest.wait_for(lambda: in_flight() <= 1, 5,
                    "tinyd_http_requests_in_flight back to 1")


@t.test("dynamic batching: concurrent requests of mixed sizes, two models, "
        "and bad requests among them, each answered on its own")
def _():
    b = tdtest.Daemon(args=["--max-batch", "4", "--batch-delay-us", "20000",
                            "--threads", "2"])
    try:
        LIN.save(b.repo, "lin")
        other = tdtest.Linear.seeded(14, classes=5, features=7)
        other.save(b.repo, "other")
        b.start()
        n = 40
        results = [None] * n
        barrier = threading.Barrier(n)

        def client(i):
            model, lin = (("lin", LIN), ("other", other))[i % 2]
            rows = lin.inputs(1 + i % 9, seed=300 + i)   # 1..9 rows
            body = infer_body(rows, id=str(i))
            if i % 7 == 3:
                body["inputs"][0]["shape"] = [len(rows), 6]  # bad on purpose
            try:
                barrier.wait(30)
                r = b.infer(model, body, timeout=30)
                if i % 7 == 3:
                    eq(r.status, 400, "bad request %d status" % i)
                else:
                    eq(r.status, 200, "status (%r)" % r.body[:200])
                    eq(r.json().get("id"), str(i), "id")
                    shape, data = tdtest.logits_of(r)
                    eq(shape, [len(rows), lin.classes], "shape")
                    tdtest.close_enough(data, flatten(lin.expected(rows)),
                                        "logits")
                results[i] = "ok"
            except Exception as e:
                results[i] = "client %d: %r" % (i, e)

        threads = [threading.Thread(target=client, args=(i,))
                   for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        failed = [r for r in results if r != "ok"]
        check(not failed, "%d of %d failed: %s"
              % (len(failed), n, "; ".join(map(str, failed[:5]))))
        b.check_clean_exit()
    finally:
        b.close()


@t.test("SIGTERM at the end: exit 0, no sanitizer report on stderr")
def _():
    d.check_clean_exit()


t.run()
