#!/usr/bin/env python3
"""The HTTP surface of docs/API.md: routes, bodies, status codes, errors,
body limits and /metrics, against one daemon serving one linear model."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import math
import os
import re
import socket
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

MAX_BODY = 65536
t = tdtest.TAP()
# A short drain: clients that vanish mid-request below are only reaped by
# the connection timeout, and the last case stops the daemon.
d = tdtest.Daemon(args=["--max-body", str(MAX_BODY), "--drain-timeout", "2"])
LIN = tdtest.Linear.seeded(7, classes=3, features=4,
                           labels=["cat", "dog", "eel"])
LIN.save(d.repo, "lin")
t.setup(d.start)
t.cleanup(d.close)


def json_ct(r, what):
    ct = r.headers.get("Content-Type", "")
    check(ct.startswith("application/json"),
          "%s: Content-Type %r, want application/json" % (what, ct))


@t.test("GET /v2: server metadata")
def _():
    r = d.get("/v2")
    eq(r.status, 200, "status")
    json_ct(r, "/v2")
    doc = r.json()
    eq(doc.get("name"), "tinyd", "name")
    check(re.match(r"^\d+\.\d+\.\d+", str(doc.get("version"))),
          "version %r" % doc.get("version"))
    check(isinstance(doc.get("extensions"), list), "extensions not a list")


@t.test("GET /v2/health/live and /ready: 200 with JSON bodies")
def _():
    r = d.get("/v2/health/live")
    eq((r.status, r.json()), (200, {"live": True}), "live")
    r = d.get("/v2/health/ready")
    eq((r.status, r.json()), (200, {"ready": True}), "ready")


@t.test("GET /v2/models lists the repository sorted by name")
def _():
    tdtest.Linear.seeded(8).save(d.repo, "alpha")
    d.hup_and_wait(lambda: "alpha" in d.models(), "alpha listed")
    doc = d.get("/v2/models").json()
    names = [m["name"] for m in doc["models"]]
    eq(names, sorted(names), "order of names")
    for name in ("alpha", "lin"):
        m = [m for m in doc["models"] if m["name"] == name]
        eq(len(m), 1, "entries named %s" % name)
        eq(m[0].get("kind"), "linear", name + " kind")
        eq(m[0].get("state"), "READY", name + " state")


@t.test("GET /v2/models/lin: metadata of a linear model")
def _():
    r = d.get("/v2/models/lin")
    eq(r.status, 200, "status")
    json_ct(r, "model metadata")
    doc = r.json()
    eq(doc.get("name"), "lin", "name")
    eq(doc.get("versions"), ["1"], "versions")
    eq(doc.get("kind"), "linear", "kind")
    check(isinstance(doc.get("platform"), str), "platform missing")
    check(isinstance(doc.get("parameters"), dict), "parameters missing")
    eq([(i["name"], i["datatype"], i["shape"]) for i in doc["inputs"]],
       [("input", "FP32", [-1, 4])], "inputs")
    eq([(o["name"], o["datatype"], o["shape"]) for o in doc["outputs"]],
       [("logits", "FP32", [-1, 3])], "outputs")


@t.test("GET /v2/models/lin/versions/1 is the same model; version 2 is 404")
def _():
    a = d.get("/v2/models/lin").json()
    r = d.get("/v2/models/lin/versions/1")
    eq(r.status, 200, "versions/1 status")
    eq(r.json(), a, "versions/1 metadata")
    r = d.get("/v2/models/lin/versions/1/ready")
    eq(r.status, 200, "versions/1/ready status")
    r = d.get("/v2/models/lin/versions/2")
    eq(r.status, 404, "versions/2 status")
    r.error()


@t.test("GET /v2/models/lin/ready: 200 ready")
def _():
    r = d.get("/v2/models/lin/ready")
    eq(r.status, 200, "status")
    doc = r.json()
    eq(doc.get("name"), "lin", "name")
    eq(doc.get("ready"), True, "ready")


@t.test("unknown model: 404 with a JSON error naming it (metadata, ready, "
        "infer)")
def _():
    for method, path in (("GET", "/v2/models/nosuch"),
                         ("GET", "/v2/models/nosuch/ready"),
                         ("POST", "/v2/models/nosuch/infer")):
        body = tdtest.infer_body(LIN.inputs(1)) if method == "POST" else None
        r = d.request(method, path, body=body)
        eq(r.status, 404, "%s %s status" % (method, path))
        json_ct(r, path)
        check("nosuch" in r.error(), "%s: error does not name the model: %r"
              % (path, r.error()))


@t.test("unknown paths: 404 with a JSON error")
def _():
    for path in ("/", "/v1", "/v2/nothing", "/v2/models/lin/bogus",
                 "/v2/health", "/metricsx", "/v2/models/lin/infer/more"):
        r = d.get(path)
        eq(r.status, 404, "GET %s status" % path)
        r.error()


@t.test("wrong method: 405 with an Allow header and a JSON error")
def _():
    cases = (("POST", "/v2", "GET"), ("DELETE", "/v2/health/live", "GET"),
             ("POST", "/v2/health/ready", "GET"), ("PUT", "/v2/models", "GET"),
             ("POST", "/v2/models/lin", "GET"),
             ("GET", "/v2/models/lin/infer", "POST"),
             ("POST", "/metrics", "GET"))
    for method, path, allowed in cases:
        r = d.request(method, path, body=b"{}" if method != "GET" else None)
        eq(r.status, 405, "%s %s status" % (method, path))
        allow = r.headers.get("Allow", "")
        check(allowed in [a.strip() for a in allow.split(",")],
              "%s %s: Allow %r does not list %s" % (method, path, allow,
                                                     allowed))
        r.error()


@t.test("HEAD of a GET route is answered without a body")
def _():
    c = d.conn()
    try:
        c.request("HEAD", "/v2/health/live")
        r = c.getresponse()
        body = r.read()
        check(r.status in (200, 405), "HEAD status %d" % r.status)
        eq(body, b"", "HEAD body")
    finally:
        c.close()


@t.test("413 from Content-Length alone, before the body is sent")
def _():
    s = d.raw()
    try:
        s.sendall(("POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n" % (MAX_BODY * 100)).encode())
        r = tdtest.read_http_response(s, timeout=5)
    finally:
        s.close()
    eq(r.status, 413, "status")
    check(str(MAX_BODY) in r.error() or "body" in r.error().lower(),
          "413 error does not say what was too large: %r" % r.error())


@t.test("413 instead of 100 Continue with Expect: 100-continue")
def _():
    s = d.raw()
    try:
        s.sendall(("POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/json\r\n"
                   "Expect: 100-continue\r\n"
                   "Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)).encode())
        s.settimeout(5)
        first = s.recv(12)
        check(first.startswith(b"HTTP/1.1 413"),
              "first answer %r, want HTTP/1.1 413 (no 100 Continue)" % first)
    finally:
        s.close()


@t.test("413 for a chunked body over --max-body")
def _():
    s = d.raw()
    try:
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 8192
        sent = 0
        try:
            while sent <= MAX_BODY * 4:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass   # refusing as soon as the limit is passed is allowed
        r = tdtest.read_http_response(s, timeout=5)
    finally:
        s.close()
    eq(r.status, 413, "status")
    r.error()


@t.test("a body just under --max-body is accepted")
def _():
    body = tdtest.infer_body(LIN.inputs(1))
    raw = tdtest.json.dumps(body)
    raw = raw[:-1] + ', "id": "%s"}' % ("p" * (MAX_BODY - len(raw) - 20))
    check(len(raw) < MAX_BODY, "test body too large")
    r = d.post("/v2/models/lin/infer", raw,
               headers={"Content-Type": "application/json"})
    eq(r.status, 200, "status (body %r)" % r.body[:200])


@t.test("malformed JSON: 400 naming line and column")
def _():
    r = d.post("/v2/models/lin/infer", '{"inputs": [\n  {"name": }]}',
               headers={"Content-Type": "application/json"})
    eq(r.status, 400, "status")
    json_ct(r, "400")
    msg = r.error()
    check(re.search(r"line\D{0,3}2\b", msg) and re.search(r"col", msg),
          "error does not name line 2 and a column: %r" % msg)


@t.test("an empty body and a non-object body are 400")
def _():
    for body in (b"", b"[1, 2]", b"42", b"null"):
        r = d.post("/v2/models/lin/infer", body,
                   headers={"Content-Type": "application/json"})
        eq(r.status, 400, "status for body %r" % body)
        r.error()


@t.test("the daemon still serves after all the errors above")
def _():
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(2))


# --------------------------------------------------------------- metrics

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
VALUE = r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)" \
        r"|[+-]?Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*,?)?\})? (%s)(?: -?\d+)?$"
                    % (NAME, LABEL, LABEL, VALUE))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Check the Prometheus text format 0.0.4 strictly and return
    (types, samples) with samples a list of (name, {labels}, value)."""
    check(text.endswith("\n"), "metrics do not end with a newline")
    helps, types, samples = set(), {}, []
    family_of_line = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            check(re.fullmatch(NAME, name), "line %d: bad name %r" % (n, name))
            check(name not in helps, "line %d: second HELP for %s" % (n, name))
            helps.add(name)
            family_of_line.append(name)
        elif line.startswith("# TYPE "):
            parts = line.split(" ")
            check(len(parts) == 4 and parts[3] in
                  ("counter", "gauge", "histogram", "summary", "untyped"),
                  "line %d: bad TYPE line %r" % (n, line))
            name = parts[2]
            check(name not in types, "line %d: second TYPE for %s" % (n, name))
            check(not any(s[0] == name or base_name(s[0], types) == name
                          for s in samples),
                  "line %d: TYPE of %s after its samples" % (n, name))
            types[name] = parts[3]
            family_of_line.append(name)
        elif line.startswith("#") or line == "":
            check(line == "" or line.startswith("# "),
                  "line %d: bad comment %r" % (n, line))
        else:
            m = SAMPLE.match(line)
            check(m, "line %d does not match the sample grammar: %r"
                  % (n, line))
            labels = dict(LABEL_RE.findall(m.group(2) or ""))
            v = m.group(3)
            value = float(v.replace("Inf", "inf").replace("NaN", "nan"))
            samples.append((m.group(1), labels, value))
            family_of_line.append(base_name(m.group(1), types))
    # One family's lines form one uninterrupted group.
    seen, prev = set(), None
    for fam in family_of_line:
        if fam != prev:
            check(fam not in seen, "lines of %s are not contiguous" % fam)
            seen.add(fam)
            prev = fam
    return types, samples


def base_name(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) in \
                ("histogram", "summary"):
            return name[:-len(suffix)]
    return name


def check_histograms(types, samples):
    for name, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for sname, labels, value in samples:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            if sname == name + "_bucket":
                check("le" in labels, "%s_bucket without le" % name)
                le = float(labels["le"].replace("Inf", "inf"))
                series.setdefault(key, {}).setdefault("b", []).append(
                    (le, value))
            elif sname in (name + "_sum", name + "_count"):
                series.setdefault(key, {})[sname[len(name) + 1:]] = value
        check(series, "histogram %s has no samples" % name)
        for key, s in series.items():
            b = s.get("b", [])
            check(b and math.isinf(b[-1][0]),
                  "%s%s: last bucket is not le=\"+Inf\"" % (name, key))
            eq([le for le, _ in b], sorted(le for le, _ in b),
               "%s%s bucket order" % (name, key))
            counts = [c for _, c in b]
            eq(counts, sorted(counts), "%s%s cumulative buckets" % (name, key))
            check("count" in s and "sum" in s,
                  "%s%s: _sum or _count missing" % (name, key))
            eq(s["count"], b[-1][1], "%s%s _count vs +Inf bucket"
               % (name, key))


def total(samples, name, **match):
    return sum(v for n, labels, v in samples if n == name and
               all(labels.get(k) == want for k, want in match.items()))


@t.test("/metrics is Prometheus text 0.0.4 with well-formed histograms")
def _():
    r = d.get("/metrics")
    eq(r.status, 200, "status")
    ct = r.headers.get("Content-Type", "")
    check(ct.startswith("text/plain") and "0.0.4" in ct,
          "Content-Type %r" % ct)
    types, samples = parse_metrics(r.body.decode("utf-8"))
    for name, kind in (("tinyd_http_requests_total", "counter"),
                       ("tinyd_http_request_duration_seconds", "histogram"),
                       ("tinyd_http_requests_in_flight", "gauge"),
                       ("tinyd_models", "gauge"),
                       ("tinyd_reloads_total", "counter"),
                       ("tinyd_inference_request_success_total", "counter"),
                       ("tinyd_inference_request_failure_total", "counter"),
                       ("tinyd_inference_count_total", "counter")):
        eq(types.get(name), kind, "TYPE of " + name)
    check_histograms(types, samples)
    check(total(samples, "tinyd_models", state="READY") >= 2,
          "tinyd_models{state=\"READY\"} below 2")
    check(total(samples, "tinyd_reloads_total") >= 1,
          "no reload counted after the SIGHUP above")


@t.test("/metrics counters increase after requests")
def _():
    _, before = parse_metrics(d.metrics())
    for _ in range(5):
        eq(d.get("/v2/health/live").status, 200, "live")
    rows = LIN.inputs(3)
    for _ in range(2):
        tdtest.check_infer(d, "lin", LIN, rows)
    eq(d.infer("lin", tdtest.infer_body(rows, name="nope")).status, 400,
       "bad infer status")
    d.get("/v2/no/such/path")
    _, after = parse_metrics(d.metrics())

    def grew(name, by, **labels):
        a, b = total(after, name, **labels), total(before, name, **labels)
        check(a - b >= by, "%s%r grew by %g, want >= %g" % (name, labels,
                                                             a - b, by))
    grew("tinyd_http_requests_total", 9)
    grew("tinyd_http_requests_total", 2, code="200")
    grew("tinyd_http_requests_total", 1, code="400")
    grew("tinyd_http_requests_total", 1, code="404")
    grew("tinyd_http_request_duration_seconds_count", 9)
    grew("tinyd_inference_request_success_total", 2, model="lin")
    grew("tinyd_inference_request_failure_total", 1, model="lin")
    grew("tinyd_inference_count_total", 6, model="lin")
    eq(total(after, "tinyd_inference_count_total", model="lin")
       - total(before, "tinyd_inference_count_total", model="lin"), 6,
       "inference count: a batch of n counts n")


@t.test("keep-alive: many requests on one connection")
def _():
    c = d.conn()
    try:
        for i in range(20):
            r = d.get("/v2/health/ready", conn=c)
            eq(r.status, 200, "request %d" % i)
        r = d.infer("lin", tdtest.infer_body(LIN.inputs(1)), conn=c)
        eq(r.status, 200, "infer on the kept-alive connection")
    finally:
        c.close()


@t.test("a client that disconnects mid-request does not disturb others")
def _():
    for _ in range(5):
        s = d.raw()
        s.sendall(b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\":")
        s.close()
        s = d.raw()
        s.sendall(b"GET /v2/hea")
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    time.sleep(0.05)
    tdtest.check_infer(d, "lin", LIN, LIN.inputs(2))


@t.test("--max-connections: a connection waiting in the backlog is served "
        "as soon as a slot frees")
def _():
    m = tdtest.Daemon(args=["--max-connections", "3"])
    idle = []
    try:
        m.start()
        for _ in range(3):
            c = m.conn()
            eq(m.get("/v2/health/live", conn=c).status, 200, "idle conn")
            idle.append(c)
        answer = {}

        def fourth():
            t0 = time.monotonic()
            try:
                r = m.get("/v2/health/live", timeout=5)
                answer["r"] = (r.status, time.monotonic() - t0)
            except Exception as e:
                answer["r"] = (repr(e), time.monotonic() - t0)
        th = threading.Thread(target=fourth)
        th.start()
        time.sleep(0.3)
        check(not answer, "a 4th connection was served beyond "
              "--max-connections 3: %r" % answer)
        idle.pop(0).close()
        t0 = time.monotonic()
        th.join(10)
        eq(answer.get("r", (None,))[0], 200, "4th request status")
        waited = time.monotonic() - t0
        check(waited < 2, "the 4th connection waited %.1fs after a slot "
              "freed" % waited)
    finally:
        for c in idle:
            c.close()
        m.close()


@t.test("SIGTERM at the end: exit 0, no sanitizer report on stderr")
def _():
    d.check_clean_exit()


t.run()
