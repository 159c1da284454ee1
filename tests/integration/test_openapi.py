#!/usr/bin/env python3
"""docs/openapi.yaml against the running daemon's answers.

The spec is read with miniyaml (the YAML subset it is written in, so no
PyYAML is needed); where PyYAML is installed both readings must be equal,
which keeps the file real YAML. Then every operation is called on a live
daemon - successes and each documented error - and every answer must have
a status the operation documents, a declared content type, the declared
headers, and a body that passes the response schema (a small checker of
type, nullable, required, properties, items, enum, minimum, maximum,
minLength and $ref)."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
import miniyaml  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
SPEC_PATH = os.path.join(tdtest.SRCDIR, "docs", "openapi.yaml")
TOKEN = "tok-openapi-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN}
IMAGE = os.path.join(tdtest.SRCDIR, "tests", "fixtures", "image",
                     "photo_97x61.jpg")
with open(SPEC_PATH, encoding="utf-8") as _f:
    SPEC_TEXT = _f.read()
SPEC = miniyaml.load(SPEC_TEXT)
METHODS = ("get", "post", "put", "delete")


# ------------------------------------------------------------ the checker

def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        check(ref.startswith("#/"), "only local $ref: %r" % ref)
        node = SPEC
        for part in ref[2:].split("/"):
            check(isinstance(node, dict) and part in node,
                  "unresolved $ref %r" % ref)
            node = node[part]
    return node


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float))
    and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def validate(value, schema, where="$"):
    """Raise AssertionError naming the first place value breaks schema."""
    schema = resolve(schema)
    if value is None:
        check(schema.get("nullable") is True or not schema,
              "%s: null where %s is required" % (where, schema.get("type")))
        return
    typ = schema.get("type")
    if typ is not None:
        check(typ in _TYPES, "%s: unknown schema type %r" % (where, typ))
        check(_TYPES[typ](value), "%s: %r is not %s" % (where, value, typ))
    if "enum" in schema:
        check(value in schema["enum"], "%s: %r not in %r"
              % (where, value, schema["enum"]))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            check(value > lo if schema.get("exclusiveMinimum") else
                  value >= lo, "%s: %r below %r" % (where, value, lo))
        if "maximum" in schema:
            check(value <= schema["maximum"], "%s: %r above %r"
                  % (where, value, schema["maximum"]))
    if isinstance(value, str) and "minLength" in schema:
        check(len(value) >= schema["minLength"], "%s: too short" % where)
    if isinstance(value, dict):
        for key in schema.get("required", []):
            check(key in value, "%s: missing required %r (have %r)"
                  % (where, key, sorted(value)))
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, "%s.%s" % (where, key))
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], "%s[%d]" % (where, i))


def operation(method, template):
    check(template in SPEC["paths"], "no path %s in the spec" % template)
    ops = SPEC["paths"][template]
    check(method.lower() in ops, "no %s %s in the spec" % (method, template))
    return ops[method.lower()]


COVERED = set()


def conform(method, template, r, what=""):
    """Check response r of `method template` against the spec."""
    what = "%s %s%s -> %d" % (method, template, what, r.status)
    op = operation(method, template)
    responses = op["responses"]
    key = str(r.status)
    check(key in responses, "%s: status not documented (documented %s); "
          "body %r" % (what, sorted(responses), r.body[:200]))
    resp = resolve(responses[key])
    for h in resp.get("headers", {}):
        check(r.headers.get(h) is not None, "%s: no %s header" % (what, h))
    content = resp.get("content", {})
    ctype = (r.headers.get("Content-Type") or "").split(";")[0].strip()
    check(ctype in content, "%s: Content-Type %r, documented %r"
          % (what, ctype, sorted(content)))
    schema = content[ctype].get("schema", {})
    if ctype == "application/json":
        validate(r.json(), schema, what)
    else:
        validate(r.body.decode("utf-8"), schema, what)
    COVERED.add((method.upper(), template, key))
    return r


# ----------------------------------------------------------- the daemon

d = tdtest.Daemon()
LIN = tdtest.Linear.seeded(3, classes=3, features=4)


@t.cleanup
def _():
    d.close()


def call(method, template, params=None, body=None, headers=None, want=None,
         query=""):
    path = template
    for k, v in (params or {}).items():
        path = path.replace("{%s}" % k, v)
    r = d.request(method, path + query, body=body, headers=headers)
    if want is not None:
        eq(r.status, want, "%s %s status (body %r)"
           % (method, path + query, r.body[:200]))
    return conform(method, template, r, query)


# ------------------------------------------------------------------ tests

@t.test("the spec is OpenAPI 3.0 and miniyaml reads it as PyYAML does")
def _():
    check(str(SPEC["openapi"]).startswith("3.0"), "openapi version")
    try:
        import yaml
    except ImportError:
        tdtest.diag("PyYAML not installed: miniyaml's reading only")
    else:
        eq(SPEC, yaml.safe_load(SPEC_TEXT), "miniyaml vs PyYAML")
    ids = set()
    for path, ops in SPEC["paths"].items():
        for m in METHODS:
            if m in ops:
                op = ops[m]
                check(op.get("operationId") not in ids, "duplicate id")
                ids.add(op.get("operationId"))
                check(op.get("responses"), "%s %s: no responses" % (m, path))
                for code, resp in op["responses"].items():
                    check(isinstance(code, str), "%s %s: status %r must be "
                          "quoted" % (m, path, code))
                    resolve(resp)
    # Every $ref anywhere resolves.
    def walk(n):
        if isinstance(n, dict):
            if "$ref" in n:
                resolve(n)
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
    walk(SPEC)


@t.test("the checker rejects what breaks a schema")
def _():
    err = {"$ref": "#/components/schemas/Error"}
    validate({"error": "x"}, err)
    for bad in ({}, {"error": 5}, {"error": ""}, [], None):
        try:
            validate(bad, err)
        except AssertionError:
            continue
        raise AssertionError("validate accepted %r as Error" % (bad,))
    job = {"$ref": "#/components/schemas/GraphJob"}
    try:
        validate({"id": "g", "name": "n", "state": "exploded", "format":
                  "auto", "mode": "labels", "eps": 0.1, "progress": 0,
                  "phase": "", "submitted_ms": 1, "nodes": 0, "edges": 0},
                 job)
    except AssertionError as e:
        check("exploded" in str(e), str(e))
    else:
        raise AssertionError("an unknown job state passed")


@t.test("every endpoint of docs/API.md is in the spec")
def _():
    with open(os.path.join(tdtest.SRCDIR, "docs", "API.md")) as f:
        api = f.read()
    rows = re.findall(r"^\| (GET|POST|DELETE|PUT) \| `([^`?]+)", api, re.M)
    check(len(rows) >= 10, "endpoint table not found in docs/API.md")
    for method, path in rows:
        operation(method, path)


@t.test("health, server metadata, models: answers match the schemas")
def _():
    tok = os.path.join(d.tmp, "tokens")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    d.args = ["--tokens", tok]
    LIN.save(d.repo, "lin")
    shutil.copy(os.path.join(tdtest.SRCDIR, "tests", "fixtures", "tinynet",
                             "tiny_ours.safetensors"),
                os.path.join(d.repo, "net.safetensors"))
    shutil.copy(os.path.join(tdtest.SRCDIR, "models", "zoo",
                             "city.safetensors"), d.repo)
    with open(os.path.join(d.repo, "broken.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}  ")
    d.start()
    call("GET", "/v2", want=200)
    call("GET", "/v2/health/live", want=200)
    call("GET", "/v2/health/ready", want=200)
    r = call("GET", "/v2/models", want=200)
    states = {m["name"]: m["state"] for m in r.json()["models"]}
    eq(states.get("broken"), "UNAVAILABLE", "broken file's state")
    for name in ("lin", "net", "city"):
        call("GET", "/v2/models/{name}", {"name": name}, want=200)
    call("GET", "/v2/models/{name}", {"name": "nope"}, want=404)
    call("GET", "/v2/models/{name}/versions/{version}",
         {"name": "lin", "version": "1"}, want=200)
    call("GET", "/v2/models/{name}/versions/{version}",
         {"name": "lin", "version": "2"}, want=404)
    call("GET", "/v2/models/{name}/ready", {"name": "lin"}, want=200)
    call("GET", "/v2/models/{name}/ready", {"name": "broken"}, want=503)
    call("GET", "/v2/models/{name}/ready", {"name": "nope"}, want=404)
    call("GET", "/v2/models/{name}/versions/{version}/ready",
         {"name": "lin", "version": "1"}, want=200)


@t.test("inference: JSON, binary, oracle, errors")
def _():
    rows = LIN.inputs(2)
    call("POST", "/v2/models/{name}/infer", {"name": "lin"},
         tdtest.infer_body(rows, id="r1"), want=200)
    call("POST", "/v2/models/{name}/versions/{version}/infer",
         {"name": "lin", "version": "1"}, tdtest.infer_body(rows), want=200)
    raw = struct.pack("<8f", *tdtest.flatten(rows))
    h = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                "shape": [2, 4], "parameters":
                                {"binary_data_size": len(raw)}}]}).encode()
    call("POST", "/v2/models/{name}/infer", {"name": "lin"}, h + raw,
         {"Content-Type": "application/octet-stream",
          "Inference-Header-Content-Length": str(len(h))}, want=200)
    call("POST", "/v2/models/{name}/infer", {"name": "lin"}, b'{"inputs": [',
         {"Content-Type": "application/json"}, want=400)
    call("POST", "/v2/models/{name}/infer", {"name": "lin"},
         tdtest.infer_body([[1, 2, 3]]), want=400)
    call("POST", "/v2/models/{name}/infer", {"name": "nope"},
         tdtest.infer_body(rows), want=404)
    body = {"parameters": {"exact": True}, "inputs": [
        {"name": "source", "datatype": "INT64", "shape": [2],
         "data": [1, 7]},
        {"name": "target", "datatype": "INT64", "shape": [2],
         "data": [1920, 8]}]}
    call("POST", "/v2/models/{name}/infer", {"name": "city"}, body, want=200)
    body["inputs"][0]["data"] = [1, 999999]
    call("POST", "/v2/models/{name}/infer", {"name": "city"}, body, want=400)


@t.test(":classify: raw, base64 JSON, corrupt, unknown model")
def _():
    with open(IMAGE, "rb") as f:
        jpeg = f.read()
    tmpl = "/v1/models/{name}:classify"
    call("POST", tmpl, {"name": "net"}, jpeg,
         {"Content-Type": "image/jpeg"}, want=200, query="?top_k=2")
    b64 = base64.b64encode(jpeg).decode()
    call("POST", tmpl, {"name": "net"},
         {"instances": [{"b64": b64}, {"b64": b64}], "top_k": 3}, want=200)
    call("POST", tmpl, {"name": "net"}, jpeg[:200],
         {"Content-Type": "image/jpeg"}, want=400)
    call("POST", tmpl, {"name": "nope"}, jpeg,
         {"Content-Type": "image/jpeg"}, want=404)


@t.test("repository: index, load, unload with and without a token")
def _():
    r = call("POST", "/v2/repository/index", want=200)
    eq({e["name"]: e["state"] for e in r.json()}.get("broken"),
       "UNAVAILABLE", "broken in the index")
    r = call("POST", "/v2/repository/index", body={"ready": True}, want=200)
    check("broken" not in [e["name"] for e in r.json()], "ready filter")
    call("POST", "/v2/repository/index", body=b"[1]",
         headers={"Content-Type": "application/json"}, want=400)
    tmpl = "/v2/repository/models/{name}/"
    call("POST", tmpl + "unload", {"name": "lin"}, b"", want=401)
    call("POST", tmpl + "unload", {"name": "lin"}, b"",
         {"Authorization": "Bearer wrong"}, want=403)
    r = call("POST", tmpl + "unload", {"name": "lin"}, b"", AUTH, want=200)
    eq(r.json()["state"], "UNLOADED", "after unload")
    call("POST", tmpl + "unload", {"name": "nope"}, b"", AUTH, want=404)
    call("POST", tmpl + "load", {"name": "lin"}, b"", want=401)
    call("POST", tmpl + "load", {"name": "lin"}, b"",
         {"Authorization": "Bearer wrong"}, want=403)
    r = call("POST", tmpl + "load", {"name": "lin"}, b"", AUTH, want=200)
    eq(r.json()["state"], "READY", "after load")
    call("POST", tmpl + "load", {"name": "broken"}, b"", AUTH, want=400)
    call("POST", tmpl + "load", {"name": "nope"}, b"", AUTH, want=404)


@t.test("graph jobs: submit (202/400/401/403/409), list, get, delete; "
        "a no-path distance is null")
def _():
    graph = "0 1 2\n1 2 2\n3 4 1\n"
    call("POST", "/v1/graphs", body=graph, want=401, query="?name=split")
    call("POST", "/v1/graphs", body=graph,
         headers={"Authorization": "Bearer wrong"}, want=403,
         query="?name=split")
    call("POST", "/v1/graphs", body=graph, headers=AUTH, want=400,
         query="?name=split&eps=2")
    r = call("POST", "/v1/graphs", body=graph, headers=AUTH, want=202,
             query="?name=split&format=edgelist&mode=labels&eps=0.1")
    job = r.json()["id"]
    call("POST", "/v1/graphs", body=graph, headers=AUTH, want=409,
         query="?name=split")
    call("GET", "/v1/graphs", want=200)
    tdtest.wait_for(lambda: call("GET", "/v1/graphs/{id}", {"id": job},
                                 want=200).json()["state"] == "ready",
                    20, "the job to be ready")
    tdtest.wait_for(lambda: "split" in d.models(), 10, "split served")
    r = call("POST", "/v2/models/{name}/infer", {"name": "split"}, {
        "inputs": [{"name": "source", "datatype": "INT64", "shape": [2],
                    "data": [0, 0]},
                   {"name": "target", "datatype": "INT64", "shape": [2],
                    "data": [2, 4]}]}, want=200)
    dist = {o["name"]: o["data"] for o in r.json()["outputs"]}["distance"]
    eq(dist[1], None, "distance across components")
    call("GET", "/v1/graphs/{id}", {"id": "gnope"}, want=404)
    call("DELETE", "/v1/graphs/{id}", {"id": job}, want=401)
    call("DELETE", "/v1/graphs/{id}", {"id": job},
         headers={"Authorization": "Bearer wrong"}, want=403)
    call("DELETE", "/v1/graphs/{id}", {"id": job}, headers=AUTH, want=200)
    call("DELETE", "/v1/graphs/{id}", {"id": job}, headers=AUTH, want=404)


@t.test("metrics are text")
def _():
    r = call("GET", "/metrics", want=200)
    check("tinyd_http_requests_total" in r.body.decode(), "metrics body")


@t.test("every operation of the spec was called, with a success")
def _():
    missing = []
    for path, ops in SPEC["paths"].items():
        for m in METHODS:
            if m in ops and not any(
                    c[0] == m.upper() and c[1] == path and c[2][0] == "2"
                    for c in COVERED):
                missing.append("%s %s" % (m.upper(), path))
    check(not missing, "never called with success: %r" % missing)
    tdtest.diag("%d (operation, status) pairs checked" % len(COVERED))


t.run()
