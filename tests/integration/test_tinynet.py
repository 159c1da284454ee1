#!/usr/bin/env python3
"""TinyNet served end to end, as a client sees it: the fixture models in
/v2/models and their metadata, OIP infer (JSON and Triton's binary tensor
extension, classification extension) against PyTorch's logits, bad tensor
input, broken model files loaded with SIGHUP, and dynamic batching.
:classify (images) is in test_classify.py.

Reference logits come from tests/fixtures/tinynet (PyTorch, float64):
tiny_io.safetensors for tiny_ours (33x33 inputs, its served resolution) and
tiny_timm_io40.safetensors for the timm checkpoint at its sidecar's 40x40
(gen_itest_fixtures.py). The tolerance is the issue's:
|got - want| <= 1e-4 * max|logit of the row| + 1e-4."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import os
import re
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402
import tinyfix  # noqa: E402
from tinyfix import OURS, TIMM  # noqa: E402

t = tdtest.TAP()
d = tdtest.Daemon(args=["--threads", "2"])
tinyfix.install(d.repo, "tiny_ours", OURS)
tinyfix.install(d.repo, "tiny_timm", TIMM)
tinyfix.install(d.repo, "victim", OURS)   # replaced by a broken file later
LIN = tdtest.Linear.seeded(3, classes=3, features=4)
LIN.save(d.repo, "lin")
d.start()
t.cleanup(d.close)


def alive(what="the daemon still serves"):
    """tiny_ours still answers one image correctly."""
    tinyfix.check_infer(d, "tiny_ours", OURS, [0], what)


# ------------------------------------------------------------ metadata

@t.test("/v2/models lists both fixture models READY, kind tinynet")
def _():
    models = d.models()
    for name in ("tiny_ours", "tiny_timm", "victim"):
        check(name in models, "%s not in %r" % (name, sorted(models)))
        eq(models[name]["state"], "READY", name + " state")
        eq(models[name]["kind"], "tinynet", name + " kind")
        check("reason" not in models[name], "%s has a reason: %r"
              % (name, models[name]))


def check_metadata(name, fx):
    r = d.get("/v2/models/" + name)
    eq(r.status, 200, "status (%r)" % r.body[:200])
    m = r.json()
    eq(m["name"], name, "name")
    eq(m["kind"], "tinynet", "kind")
    eq(m["inputs"], [{"name": "input", "datatype": "FP32",
                      "shape": [-1, 3, fx.res, fx.res]}], "inputs")
    eq(m["outputs"], [{"name": "logits", "datatype": "FP32",
                       "shape": [-1, fx.classes]}], "outputs")
    p = m["parameters"]
    for key in ("r", "d", "w"):
        tdtest.close_enough([p[key]], [fx.arch[key]], "parameters." + key,
                            tol=1e-6)
    eq((p["resolution"], p["classes"]), (fx.res, fx.classes),
       "resolution, classes")
    tdtest.close_enough(p["mean"] + p["std"], fx.mean + fx.std,
                        "mean + std", tol=1e-6)
    eq(p["interpolation"], fx.interpolation, "interpolation")
    tdtest.close_enough([p["crop_pct"]], [fx.crop_pct], "crop_pct", tol=1e-6)
    # Counted, not looked up: the head alone has 1280 * classes weights.
    check(isinstance(p["params"], int) and p["params"] > 1280 * fx.classes,
          "params %r" % p["params"])
    check(isinstance(p["macs"], int) and p["macs"] > p["params"],
          "macs %r" % p["macs"])
    return m


@t.test("GET /v2/models/tiny_ours: input [-1,3,33,33], logits [-1,5], "
        "architecture and preprocessing from the file's metadata")
def _():
    check_metadata("tiny_ours", OURS)


@t.test("GET /v2/models/tiny_timm: the sidecar's architecture, 40x40, "
        "10 classes from the classifier, ImageNet mean/std by default")
def _():
    check_metadata("tiny_timm", TIMM)


def strings_lists(doc):
    """Every list of strings anywhere in a JSON document."""
    if isinstance(doc, list):
        if doc and all(isinstance(v, str) for v in doc):
            yield doc
        for v in doc:
            yield from strings_lists(v)
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from strings_lists(v)


@t.test("GET /v2/models/{name} gives the class labels")
def _():
    for name, fx in (("tiny_ours", OURS), ("tiny_timm", TIMM)):
        m = d.get("/v2/models/" + name).json()
        check(fx.labels in list(strings_lists(m)),
              "%s: labels %r not in the metadata %r" % (name, fx.labels, m))


# ------------------------------------------------------------ infer

@t.test("infer, JSON data: our format, batch 3, matches PyTorch")
def _():
    worst = tinyfix.check_infer(d, "tiny_ours", OURS, [0, 1, 2])
    tdtest.diag("largest |error| %.3g (max |logit| %.3g)"
                % (worst, max(abs(v) for row in OURS.logits for v in row)))


@t.test("infer, JSON data: each image alone gives the same logits as in "
        "the batch")
def _():
    for i in range(OURS.n):
        tinyfix.check_infer(d, "tiny_ours", OURS, [i], "image %d" % i)


@t.test("infer, JSON data: the timm checkpoint with its sidecar, batch 3, "
        "matches PyTorch")
def _():
    worst = tinyfix.check_infer(d, "tiny_timm", TIMM, [0, 1, 2])
    tdtest.diag("largest |error| %.3g (max |logit| %.3g)"
                % (worst, max(abs(v) for row in TIMM.logits for v in row)))
    tinyfix.check_infer(d, "tiny_timm", TIMM, [2], "image 2 alone")


@t.test("infer, nested JSON data [N][3][R][R] is read row-major")
def _():
    fx = OURS
    rows = [fx.rows[i] for i in (1, 0)]
    nested = [[[row[(c * fx.res + y) * fx.res:(c * fx.res + y + 1) * fx.res]
                for y in range(fx.res)] for c in range(3)] for row in rows]
    r = d.infer("tiny_ours", {"inputs": [{
        "name": "input", "datatype": "FP32",
        "shape": [2, 3, fx.res, fx.res], "data": nested}]})
    eq(r.status, 200, "status (%r)" % r.body[:300])
    tinyfix.check_logits(r, fx, [1, 0])


@t.test("infer, binary tensor extension: the same logits as JSON")
def _():
    for fx, model in ((OURS, "tiny_ours"), (TIMM, "tiny_timm")):
        body, headers = tinyfix.binary_request(fx, [2, 0, 1])
        r = d.post("/v2/models/%s/infer" % model, body, headers=headers)
        eq(r.status, 200, "%s status (%r)" % (model, r.body[:300]))
        tinyfix.check_logits(r, fx, [2, 0, 1], model)


@t.test("classification extension: top-k score:index:label in order")
def _():
    for fx, model, k in ((OURS, "tiny_ours", 3), (TIMM, "tiny_timm", 4)):
        r = d.infer(model, tinyfix.infer_body(fx, [0, 1, 2], outputs=[
            {"name": "logits", "parameters": {"classification": k}}]))
        eq(r.status, 200, "%s status (%r)" % (model, r.body[:300]))
        out = r.json()["outputs"][0]
        eq((out["datatype"], out["shape"]), ("BYTES", [3, k]),
           model + " datatype, shape")
        for i in range(3):
            want = fx.logits[i]
            top = sorted(range(fx.classes), key=lambda c: -want[c])[:k]
            got = [s.split(":", 2) for s in out["data"][i * k:(i + 1) * k]]
            eq([(int(c), label) for _, c, label in got],
               [(c, fx.labels[c]) for c in top], "%s row %d" % (model, i))
            tinyfix.close_logits([float(s) for s, _, _ in got],
                                 [want[c] for c in top], "%s row %d scores"
                                 % (model, i), row_max=want)


@t.test("classification extension and binary input together")
def _():
    body, headers = tinyfix.binary_request(OURS, [1], json_extra={
        "outputs": [{"name": "logits", "parameters": {"classification": 5}}]})
    r = d.post("/v2/models/tiny_ours/infer", body, headers=headers)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    labels = [s.split(":", 2)[2] for s in r.json()["outputs"][0]["data"]]
    want = OURS.logits[1]
    eq(labels, [OURS.labels[c] for c in
                sorted(range(5), key=lambda c: -want[c])], "labels")


# ------------------------------------------------------------ bad input

def bad(name, body, *words, status=400, headers=None):
    """A case: body (dict: JSON; bytes with headers: binary) is refused
    with `status`, the error names one of `words`, and the daemon still
    serves."""
    @t.test("%d for %s, error names it, still serving" % (status, name))
    def _():
        if headers is None:
            r = d.infer("tiny_ours", body)
        else:
            r = d.post("/v2/models/tiny_ours/infer", body, headers=headers)
        eq(r.status, status, "status (%r)" % r.body[:300])
        msg = r.error()
        check(any(w.lower() in msg.lower() for w in words),
              "error %r names none of %r" % (msg, words))
        alive()


ROW = OURS.rows[0]
PER = len(ROW)
R = OURS.res


def body_of(shape, data, datatype="FP32"):
    return {"inputs": [{"name": "input", "datatype": datatype,
                        "shape": shape, "data": data}]}


bad("a wrong image size [1,3,32,32]",
    body_of([1, 3, 32, 32], ROW[:3 * 32 * 32]), "shape", "33")
bad("a wrong channel count [1,1,33,33]",
    body_of([1, 1, R, R], ROW[:R * R]), "shape")
bad("a wrong rank [3,33,33]", body_of([3, R, R], ROW), "shape")
bad("a wrong datatype (INT32)", body_of([1, 3, R, R], [0] * PER, "INT32"),
    "datatype", "INT32")
bad("a wrong datatype (FP64)", body_of([1, 3, R, R], ROW, "FP64"),
    "datatype", "FP64")
bad("data count not matching the shape (1 image for [2,3,33,33])",
    body_of([2, 3, R, R], ROW), "data", "values", str(2 * PER))
bad("data count not matching the shape (one value short)",
    body_of([1, 3, R, R], ROW[:-1]), "data", "values", str(PER - 1))
bad("an unknown input name", {"inputs": [{
    "name": "image", "datatype": "FP32", "shape": [1, 3, R, R],
    "data": ROW}]}, "image")


@t.test("404 for an unknown model (infer, metadata, ready), still serving")
def _():
    for method, path, body in (
            ("POST", "/v2/models/no_such/infer", body_of([1, 3, R, R], ROW)),
            ("GET", "/v2/models/no_such", None),
            ("GET", "/v2/models/no_such/ready", None)):
        r = d.request(method, path, body=body)
        eq(r.status, 404, "%s %s status" % (method, path))
        check("no_such" in r.error(), "error %r" % r.error())
    alive()


TRUNC_BODY, TRUNC_HEADERS = tinyfix.binary_request(OURS, [0, 1])
bad("truncated binary data (binary_data_size beyond the body)",
    TRUNC_BODY[:-4 * PER], "binary", "size", "bytes",
    headers=TRUNC_HEADERS)


def short_size_request():
    """binary_data_size says one image while the shape says two."""
    body, headers = tinyfix.binary_request(OURS, [0])
    h = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:h])
    doc["inputs"][0]["shape"][0] = 2
    head = json.dumps(doc).encode()
    headers["Inference-Header-Content-Length"] = str(len(head))
    return head + body[h:], headers


SHORT_BODY, SHORT_HEADERS = short_size_request()
bad("binary_data_size not matching the shape", SHORT_BODY, "binary", "size",
    "bytes", "shape", headers=SHORT_HEADERS)


@t.test("NaN and Inf through the binary extension: 200, no crash, the "
        "finite image is exact")
def _():
    nan, inf = float("nan"), float("inf")
    one_nan = list(OURS.rows[1])
    one_nan[PER // 2] = nan
    rows = [[nan] * PER, one_nan, [inf] * PER, OURS.rows[0]]
    body, headers = tinyfix.binary_request_rows(rows, R)
    r = d.post("/v2/models/tiny_ours/infer", body, headers=headers)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    shape, data = tdtest.logits_of(r)
    eq(shape, [4, OURS.classes], "shape")
    c = OURS.classes
    for i in range(3):
        for v in data[i * c:(i + 1) * c]:
            check(v is None or isinstance(v, float),
                  "row %d: %r is not a number or null" % (i, v))
    check(all(v is None or v != v for v in data[:c]),
          "an all-NaN image gave finite logits %r" % (data[:c],))
    tinyfix.close_logits(data[3 * c:], OURS.logits[0], "finite image")
    alive()


@t.test("an empty batch [0,3,33,33] is answered empty (200) or refused "
        "(400), never a 5xx, and the daemon still serves")
def _():
    # Its own daemon: this bug kills an ASan build, and the cases after
    # this one should still tell what they test.
    e = tdtest.Daemon()
    try:
        tinyfix.install(e.repo, "tiny_ours", OURS)
        e.start()
        r = e.infer("tiny_ours", body_of([0, 3, R, R], []))
        check(r.status in (200, 400), "status %d (%r)" % (r.status, r.body))
        if r.status == 200:
            eq(tdtest.logits_of(r), ([0, OURS.classes], []), "empty answer")
        else:
            r.error()
        tinyfix.check_infer(e, "tiny_ours", OURS, [0], "infer after it")
        e.check_clean_exit()
    finally:
        e.close()


# -------------------------------------------------- broken files, SIGHUP

GOOD_META, GOOD_TENSORS = tdtest.read_safetensors(OURS.path)
MISSING = "blocks.1.0.conv_dw.weight"
MISSHAPED = "blocks.0.0.conv_dw.weight"


def broken_file(drop=None, reshape=None):
    """tiny_ours without tensor `drop`, or with `reshape` given a 5x5
    kernel (data sized to match, so the container itself is valid)."""
    out = []
    for name, (dtype, shape, raw) in GOOD_TENSORS.items():
        if name == drop:
            continue
        if name == reshape:
            shape = shape[:2] + [5, 5]
            raw = bytes(4 * shape[0] * shape[1] * 25)
        out.append((name, dtype, shape, raw))
    return tdtest.safetensors_raw(out, GOOD_META)


def shape_text(shape):
    return "[%s]" % ",".join(map(str, shape))


@t.test("SIGHUP with a missing-tensor file, a mis-shaped-tensor file and "
        "a good model replaced by a broken file: the bad ones are "
        "UNAVAILABLE, the rest keeps serving")
def _():
    tdtest.write_atomic(os.path.join(d.repo, "missing.safetensors"),
                        broken_file(drop=MISSING))
    tdtest.write_atomic(os.path.join(d.repo, "misshaped.safetensors"),
                        broken_file(reshape=MISSHAPED))
    tdtest.write_atomic(os.path.join(d.repo, "victim.safetensors"),
                        broken_file(reshape=MISSHAPED))
    d.hup_and_wait(lambda: {"missing", "misshaped"} <= set(d.models())
                   and "reason" in d.models()["victim"], "the reload")
    models = d.models()
    for name in ("missing", "misshaped"):
        eq(models[name]["state"], "UNAVAILABLE", name + " state")
        r = d.get("/v2/models/%s/ready" % name)
        eq(r.status, 503, name + " ready status")
        r = d.infer(name, body_of([1, 3, R, R], ROW))
        check(r.status in (400, 503), "%s infer status %d"
              % (name, r.status))
        r.error()
    for name in ("tiny_ours", "tiny_timm", "lin"):
        eq(models[name]["state"], "READY", name + " state")
    tinyfix.check_infer(d, "tiny_ours", OURS, [0, 1], "tiny_ours after")
    tinyfix.check_infer(d, "tiny_timm", TIMM, [1], "tiny_timm after")


@t.test("the mis-shaped tensor's reason names it, the shape expected and "
        "the shape found")
def _():
    reason = d.models()["misshaped"].get("reason", "")
    flat = reason.replace(" ", "")
    want = GOOD_TENSORS[MISSHAPED][1]
    check(MISSHAPED in reason, "reason %r does not name %s"
          % (reason, MISSHAPED))
    check(shape_text(want) in flat, "reason %r lacks the expected shape %s"
          % (reason, shape_text(want)))
    check(shape_text(want[:2] + [5, 5]) in flat,
          "reason %r lacks the shape found" % reason)


@t.test("the missing tensor's reason names it")
def _():
    reason = d.models()["missing"].get("reason", "")
    check(MISSING in reason, "reason %r does not name %s" % (reason, MISSING))


@t.test("the missing tensor's reason gives the shape expected")
def _():
    reason = d.models()["missing"].get("reason", "")
    want = shape_text(GOOD_TENSORS[MISSING][1])
    check(want in reason.replace(" ", ""),
          "reason %r lacks the expected shape %s" % (reason, want))


@t.test("a good model replaced by a broken file keeps its old version "
        "serving, with the failed reload as its reason")
def _():
    m = d.models()["victim"]
    eq(m["state"], "READY", "state")
    check(MISSHAPED in m.get("reason", ""), "reason %r" % m.get("reason"))
    tinyfix.check_infer(d, "victim", OURS, [0, 2], "victim's old version")


@t.test("the broken model fixed on disk loads at the next SIGHUP")
def _():
    tdtest.write_atomic(os.path.join(d.repo, "missing.safetensors"),
                        tdtest.safetensors_raw(
                            [(n,) + v for n, v in GOOD_TENSORS.items()],
                            GOOD_META))
    d.hup_and_wait(lambda: d.models()["missing"]["state"] == "READY",
                   "missing to load")
    tinyfix.check_infer(d, "missing", OURS, [1], "the fixed model")


# ------------------------------------------------------ dynamic batching

def metric(text, name, model, le=None):
    lab = 'model="%s"' % model + (',le="%s"' % le if le else "")
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(lab)),
                  text, re.M)
    check(m, "no %s{%s} in /metrics" % (name, lab))
    return float(m.group(1))


@t.test("dynamic batching: concurrent single-image requests are merged "
        "(--max-batch 8), every answer correct, /metrics shows it")
def _():
    b = tdtest.Daemon(args=["--max-batch", "8", "--batch-delay-us", "20000",
                            "--threads", "2"])
    t.batcher = b
    tinyfix.install(b.repo, "tiny_ours", OURS)
    b.start()
    n = 32
    results = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        try:
            img = i % OURS.n
            if i % 2:
                body, headers = tinyfix.binary_request(OURS, [img])
            else:
                body = json.dumps(tinyfix.infer_body(OURS, [img])).encode()
                headers = {"Content-Type": "application/json"}
            # Connected and encoded before the barrier, so the requests
            # arrive together and queue behind the two busy workers.
            c = b.conn(timeout=30)
            c.connect()
            barrier.wait(30)
            r = b.request("POST", "/v2/models/tiny_ours/infer", body=body,
                          headers=headers, conn=c)
            c.close()
            eq(r.status, 200, "status (%r)" % r.body[:200])
            tinyfix.check_logits(r, OURS, [img], "client %d" % i)
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
                                              "; ".join(failed[:3])))
    text = b.metrics()
    execs = metric(text, "tinyd_inference_exec_count_total", "tiny_ours")
    count = metric(text, "tinyd_inference_batch_size_count", "tiny_ours")
    rows = metric(text, "tinyd_inference_batch_size_sum", "tiny_ours")
    single = metric(text, "tinyd_inference_batch_size_bucket", "tiny_ours",
                    "1")
    upto8 = metric(text, "tinyd_inference_batch_size_bucket", "tiny_ours",
                   "8")
    queued = metric(text, "tinyd_inference_queue_duration_us_total",
                    "tiny_ours")
    tdtest.diag("%d requests -> %d forward passes (%d of one row), "
                "queue %.0f us" % (n, execs, single, queued))
    eq(rows, n, "rows computed")
    eq(count, execs, "histogram count vs exec count")
    check(execs < n, "exec count %d, not below %d requests" % (execs, n))
    check(count - single >= 1, "no forward pass had more than one row")
    eq(upto8, count, "passes of at most --max-batch 8 rows")
    check(queued > 0, "queue duration %r" % queued)


@t.test("one request of batch 16 with --threads 2 is computed correctly in "
        "one forward pass split across the workers")
def _():
    b = getattr(t, "batcher", None)
    check(b is not None, "the batching daemon did not start")
    before = b.metrics()
    idx = [i % OURS.n for i in range(16)]
    idx = idx[5:] + idx[:5]          # not a plain repetition
    body, headers = tinyfix.binary_request(OURS, idx)
    r = b.post("/v2/models/tiny_ours/infer", body, headers=headers,
               timeout=30)
    eq(r.status, 200, "status (%r)" % r.body[:300])
    tinyfix.check_logits(r, OURS, idx, "batch 16")
    after = b.metrics()

    def delta(*a):
        return metric(after, *a) - metric(before, *a)
    eq(delta("tinyd_inference_exec_count_total", "tiny_ours"), 1,
       "forward passes for the one request")
    eq(delta("tinyd_inference_batch_size_bucket", "tiny_ours", "16") -
       delta("tinyd_inference_batch_size_bucket", "tiny_ours", "8"), 1,
       "passes of 9..16 rows")
    b.check_clean_exit()


@t.cleanup
def _():
    b = getattr(t, "batcher", None)
    if b is not None:
        b.close()


@t.test("SIGTERM at the end: exit 0, no sanitizer report on stderr")
def _():
    d.check_clean_exit()


t.run()
