#!/usr/bin/env python3
"""The README's curl examples, run as written against a live daemon, so
the docs cannot rot.

Every ```sh block of README.md's section "curl examples for every
endpoint" is concatenated, in order, into one `sh -e` script, run with
the placeholders URL, TOKEN, MODEL, NET and IMAGE in its environment and a
`curl` wrapper first in PATH. The wrapper runs the real curl, prints the
body as curl would, and logs each call's method, URL, status and body.
Each call must answer 2xx, or the status of a `# status: N` line just
before it; JSON answers must parse. Every endpoint of docs/openapi.yaml
must be called by at least one example."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import urllib.parse  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
import miniyaml  # noqa: E402
from tdtest import check, eq  # noqa: E402

t = tdtest.TAP()
SECTION = "## curl examples for every endpoint"
TOKEN = "tok-docs-0123456789"
README = os.path.join(tdtest.SRCDIR, "README.md")
OPENAPI = os.path.join(tdtest.SRCDIR, "docs", "openapi.yaml")

# A shell script, not Python: it runs once per call, and must start fast.
# Each call gets a directory NNNN/ in $TD_CURL_LOG with rc, info, body.
WRAPPER = r'''#!/bin/sh
n=$(ls "$TD_CURL_LOG" | wc -l)
dir="$TD_CURL_LOG/$(printf %04d "$n")"
mkdir "$dir"
"$TD_REAL_CURL" "$@" -o "$dir/body" \
    -w '%{http_code}\n%{method}\n%{content_type}\n%{url_effective}\n' \
    > "$dir/info"
rc=$?
echo "$rc" > "$dir/rc"
[ -f "$dir/body" ] && cat "$dir/body"
exit "$rc"
'''


def sh_blocks(path, heading):
    """The ```sh blocks of the section under `heading` (to the next ##)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.find("\n" + heading + "\n")
    check(start >= 0, "%s has no section %r" % (path, heading))
    end = text.find("\n## ", start + len(heading) + 2)
    section = text[start:end if end > 0 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


CURL_CALL = re.compile(r"(^|[\s(|;&])curl\s")


def expectations(blocks):
    """One expected status per curl call, in order: an int, or None for
    any 2xx. A `# status: N` comment line applies to the next call."""
    out, pending = [], None
    for block in blocks:
        for line in block.splitlines():
            m = re.match(r"\s*#\s*status:\s*(\d{3})\s*$", line)
            if m:
                pending = int(m.group(1))
                continue
            if line.lstrip().startswith("#"):
                continue
            for _ in CURL_CALL.finditer(line):
                out.append(pending)
                pending = None
    return out


def spec_routes():
    """[(METHOD, regex of the path)] of every operation in openapi.yaml."""
    with open(OPENAPI, encoding="utf-8") as f:
        spec = miniyaml.load(f.read())
    routes = []
    for path, ops in spec["paths"].items():
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        for method in ops:
            if method in ("get", "post", "delete", "put"):
                routes.append((method.upper(), path, re.compile(rx)))
    return routes


def read_call(path):
    """One call the wrapper logged -> dict."""
    def text(name):
        try:
            with open(os.path.join(path, name), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
    info = (text("info").split("\n") + [""] * 4)[:4]
    return {"rc": int(text("rc").strip() or -1),
            "status": int(info[0]) if info[0].isdigit() else 0,
            "method": info[1], "content_type": info[2], "url": info[3],
            "body": text("body")}


d = tdtest.Daemon()
run = {}


def setup():
    tok = os.path.join(d.tmp, "tokens")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    d.args = ["--tokens", tok]
    shutil.copy(os.path.join(tdtest.SRCDIR, "models", "zoo",
                             "city.safetensors"), d.repo)
    shutil.copy(os.path.join(tdtest.SRCDIR, "tests", "fixtures", "tinynet",
                             "tiny_ours.safetensors"),
                os.path.join(d.repo, "net.safetensors"))
    tdtest.Linear.seeded(7, classes=3, features=4).save(d.repo, "lin")
    d.start()


@t.cleanup
def _():
    d.close()


@t.test("the README's curl examples run against a live daemon")
def _():
    if not shutil.which("curl"):
        t.skip("curl is not installed")
    setup()
    blocks = sh_blocks(README, SECTION)
    check(len(blocks) >= 8, "only %d sh blocks in the section" % len(blocks))
    bindir = os.path.join(d.tmp, "bin")
    os.makedirs(bindir)
    wrapper = os.path.join(bindir, "curl")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    os.chmod(wrapper, 0o755)
    log = os.path.join(d.tmp, "curl.log")
    os.makedirs(log)
    env = dict(os.environ)
    env.update({
        "URL": "http://127.0.0.1:%d" % d.port, "TOKEN": TOKEN,
        "MODEL": "lin", "NET": "net",
        "IMAGE": os.path.join(tdtest.SRCDIR, "tests", "fixtures", "image",
                              "photo_97x61.jpg"),
        "PATH": bindir + os.pathsep + env.get("PATH", ""),
        "TD_REAL_CURL": shutil.which("curl"), "TD_CURL_LOG": log})
    script = "set -e\n" + "\n".join(blocks)
    p = subprocess.run(["sh", "-c", script], env=env, cwd=d.tmp,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    eq(p.returncode, 0, "the examples' script exit status (stderr %r)"
       % p.stderr[-500:])
    run["calls"] = [read_call(os.path.join(log, n))
                    for n in sorted(os.listdir(log))]
    tdtest.diag("%d curl calls" % len(run["calls"]))
    run["want"] = expectations(blocks)
    run["stdout"] = p.stdout


@t.test("every call answers the documented status with a parsable body")
def _():
    check("calls" in run, "the examples did not run")
    calls, want = run["calls"], run["want"]
    eq(len(calls), len(want), "curl calls made vs written in the docs")
    for i, (c, w) in enumerate(zip(calls, want)):
        what = "call %d: %s %s" % (i + 1, c["method"], c["url"])
        eq(c["rc"], 0, what + " curl exit status")
        if w is None:
            check(200 <= c["status"] < 300, "%s: status %d, body %r"
                  % (what, c["status"], c["body"][:300]))
        else:
            eq(c["status"], w, what + " status")
        if c["content_type"].startswith("application/json"):
            try:
                doc = json.loads(c["body"])
            except ValueError as e:
                raise AssertionError("%s: not JSON (%s): %r"
                                     % (what, e, c["body"][:200]))
            if c["status"] >= 400:
                check(isinstance(doc.get("error"), str) and doc["error"],
                      what + ": no {\"error\"} in %r" % doc)
        else:
            check(c["body"].strip(), what + ": empty body")


@t.test("the binary tensor example sends the same row as the JSON one")
def _():
    check("calls" in run, "the examples did not run")
    outs = []
    for c in run["calls"]:
        path = urllib.parse.urlsplit(c["url"]).path
        if c["status"] == 200 and path.endswith("/infer") and \
                "/lin/" in path + "/":
            doc = json.loads(c["body"])
            o = doc["outputs"][0]
            if o["shape"][0] == 1:
                outs.append(o["data"])
    check(len(outs) >= 2, "want a JSON and a binary one-row answer: %r"
          % outs)
    tdtest.close_enough(outs[-1], outs[-2], "binary vs JSON logits")


@t.test("every endpoint of docs/openapi.yaml has a curl example")
def _():
    check("calls" in run, "the examples did not run")
    hit = set()
    routes = spec_routes()
    for c in run["calls"]:
        path = urllib.parse.urlsplit(c["url"]).path
        for method, tmpl, rx in routes:
            if method == c["method"] and rx.match(path):
                hit.add((method, tmpl))
    missing = [(m, p) for m, p, _ in routes if (m, p) not in hit]
    check(not missing, "endpoints without a curl example: %r" % missing)


t.run()
