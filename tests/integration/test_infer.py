#!/usr/bin/env python3
"""Inference on `linear` models: exact answers computed here from the
weights this test wrote, 400s naming what was wrong, and 100 concurrent
connections."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import os
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq, flatten, infer_body  # noqa: E402

t = tdtest.TAP()
d = tdtest.Daemon()
LIN = tdtest.Linear.seeded(11, classes=5, features=7)
WIDE = tdtest.Linear.seeded(12, classes=10, features=784)
LIN.save(d.repo, "lin")
WIDE.save(d.repo, "wide")
d.start()
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


t.run()
