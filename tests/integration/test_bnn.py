#!/usr/bin/env python3
"""Binary networks (kind "bnn"): a random-weight model made by
tests/tools/bnn_mkrandom is served; GET /v2/models/{name} reports it binary
and MST-compressed with its statistics; infer logits equal a pure-Python
forward pass computed here from the file's own tensors; :classify works
on a grayscale PNG; broken plans are refused at load and the rest keep
serving."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import json
import math
import os
import struct
import subprocess
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq, infer_body  # noqa: E402

ARCH = {"in_ch": 1, "in_h": 28, "in_w": 28,
        "stem": {"cout": 8, "k": 3, "stride": 1, "pad": 1},
        "blocks": [{"cout": 16, "k": 3, "stride": 2, "pad": 1},
                   {"cout": 12, "k": 3, "stride": 2, "pad": 0},
                   {"cout": 10, "k": 1, "stride": 1, "pad": 0}],
        "classes": 10}
MKRANDOM = os.path.join(tdtest.BUILDDIR, "tests", "tools", "bnn_mkrandom")

t = tdtest.TAP()
d = tdtest.Daemon()
GOOD = os.path.join(d.repo, "fbnn.safetensors")
subprocess.run([MKRANDOM, GOOD, "--arch", json.dumps(ARCH), "--seed", "3",
                "--flip", "10"], check=True, stdout=subprocess.DEVNULL)
with open(GOOD, "rb") as f:
    GOOD_BYTES = f.read()


# ----------------------------------------------------- safetensors in Python

_FMT = {"F32": ("f", 4), "I32": ("i", 4), "I8": ("b", 1), "U64": ("Q", 8)}


def parse(data):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, h in header.items():
        fmt, size = _FMT[h["dtype"]]
        b, e = h["data_offsets"]
        count = (e - b) // size
        tensors[name] = (h["shape"],
                         list(struct.unpack("<%d%s" % (count, fmt),
                                            data[base + b:base + e])))
    return header, meta, base, tensors


def patched(data, name, values=None, meta=None):
    """data with one tensor's values replaced (same size) or metadata
    entries replaced (the header is re-encoded, offsets unchanged)."""
    header, old_meta, base, _ = parse(data)
    body = bytearray(data[base:])
    if values is not None:
        h = header[name]
        fmt, _ = _FMT[h["dtype"]]
        b, e = h["data_offsets"]
        body[b:e] = struct.pack("<%d%s" % (len(values), fmt), *values)
    m = dict(old_meta)
    m.update(meta or {})
    header["__metadata__"] = m
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + bytes(body)


# ------------------------------------------------ the forward pass in Python

def forward(tensors, meta, img):
    """img: flat (1, H, W) normalised floats -> logits (classes)."""
    arch = json.loads(meta["arch"])
    h, w, c = arch["in_h"], arch["in_w"], arch["in_ch"]
    x = [img[i * h * w:(i + 1) * h * w] for i in range(c)]  # (C, H*W)

    def conv(x, h, w, cin, spec, tap):
        k, s, p = spec["k"], spec["stride"], spec["pad"]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        out = []
        for o in range(spec["cout"]):
            plane = []
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0
                    for ky in range(k):
                        iy = oy * s - p + ky
                        if iy < 0 or iy >= h:
                            continue  # zero padding contributes nothing
                        for kx in range(k):
                            ix = ox * s - p + kx
                            if ix < 0 or ix >= w:
                                continue
                            for ci in range(cin):
                                acc += x[ci][iy * w + ix] * tap(o, ci, ky, kx)
                    plane.append(acc)
            out.append(plane)
        return out, ho, wo

    st = arch["stem"]
    sw = tensors["stem.weight"][1]
    k = st["k"]
    y, h, w = conv(x, h, w, c, st,
                   lambda o, ci, ky, kx: sw[((o * c + ci) * k + ky) * k + kx])
    sc, sb = tensors["stem.scale"][1], tensors["stem.bias"][1]
    x = [[-1 if sc[o] * v + sb[o] < 0 else 1 for v in y[o]]
         for o in range(st["cout"])]
    c = st["cout"]
    nb = len(arch["blocks"])
    for i, spec in enumerate(arch["blocks"]):
        shape, words = tensors["blocks.%d.weight" % i]
        kw = shape[1]
        cw = (c + 63) // 64
        k = spec["k"]

        def tap(o, ci, ky, kx, words=words, kw=kw, cw=cw, k=k):
            word = words[o * kw + (ky * k + kx) * cw + ci // 64]
            return -1 if (word >> (ci % 64)) & 1 else 1

        y, h, w = conv(x, h, w, c, spec, tap)
        c = spec["cout"]
        if i + 1 < nb:
            thr = tensors["blocks.%d.thr" % i][1]
            sg = tensors["blocks.%d.tsign" % i][1]
            x = [[-1 if sg[o] * v < thr[o] else 1 for v in y[o]]
                 for o in range(c)]
        else:
            sc = tensors["blocks.%d.scale" % i][1]
            bi = tensors["blocks.%d.bias" % i][1]
            pooled = [sum(sc[o] * v + bi[o] for v in y[o]) / (h * w)
                      for o in range(c)]
    fw, fb = tensors["fc.weight"][1], tensors["fc.bias"][1]
    return [fb[j] + sum(fw[j * c + o] * pooled[o] for o in range(c))
            for j in range(arch["classes"])]


_, META, _, TENSORS = parse(GOOD_BYTES)
MEAN = json.loads(META["mean"])[0]
STD = json.loads(META["std"])[0]


def image(seed):
    """A 28x28 grayscale picture as bytes 0..255 (a blob and a gradient)."""
    px = []
    for yy in range(28):
        for xx in range(28):
            v = (xx * 7 + yy * 3 + seed * 37) % 256
            if (xx - 14 - seed) ** 2 + (yy - 12) ** 2 < 40:
                v = 255 - v
            px.append(v)
    return px


def normalised(px):
    return [(v / 255.0 - MEAN) / STD for v in px]


def png_gray(px, w=28, h=28):
    raw = b"".join(b"\x00" + bytes(px[y * w:(y + 1) * w]) for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


d.start()
t.cleanup(d.close)


@t.test("GET /v2/models/fbnn: binary, MST, statistics per layer and total")
def _():
    r = d.get("/v2/models/fbnn")
    eq(r.status, 200, "status (%r)" % r.body[:300])
    doc = r.json()
    eq(doc.get("kind"), "bnn", "kind")
    p = doc["parameters"]
    eq((p.get("binary"), p.get("mst")), (True, True), "binary, mst")
    # the fmnist shape suits the bit-sliced executor; each block runs on
    # the executor estimated faster (docs/BNN.md)
    eq(p.get("executor"), "auto", "executor (%r)" % p.get("executor_note"))
    sb = p["sliced_blocks"]
    eq(len(sb["batch_1"]), 3, "sliced_blocks per block")
    eq(len(sb["batch_full"]), 3, "sliced_blocks per block")
    check(sb["full_batch"] >= 1, "full_batch %r" % sb["full_batch"])
    eq(doc["inputs"][0]["shape"], [-1, 1, 28, 28], "input shape")
    stats = p["stats"]
    file_stats = json.loads(META["bnn_stats"])
    eq(len(stats["layers"]), 3, "layers")
    cin = ARCH["stem"]["cout"]
    for i, (got, spec) in enumerate(zip(stats["layers"], ARCH["blocks"])):
        kbits = cin * spec["k"] ** 2
        eq(got["cout"], spec["cout"], "layer %d cout" % i)
        eq(got["k_bits"], kbits, "layer %d K" % i)
        eq(got["bitops_dense"], spec["cout"] * kbits, "layer %d dense" % i)
        eq(got["bitops_mst"], kbits + got["mst_distance"], "layer %d mst" % i)
        eq(got["depth"], file_stats["layers"][i]["depth"], "layer %d depth" % i)
        check(got["mst_distance"] < (spec["cout"] - 1) * kbits,
              "layer %d: MST distance %d not below a dense tree"
              % (i, got["mst_distance"]))
        cin = spec["cout"]
    tot = stats["total"]
    eq(tot["bitops_dense"], sum(l["bitops_dense"] * l["pixels"]
                                for l in stats["layers"]), "total dense")
    check(tot["bitops_ratio"] > 1, "total bit-ops ratio %r" % tot["bitops_ratio"])


@t.test("infer: logits equal a pure-Python forward pass of the file")
def _():
    rows = [normalised(image(s)) for s in (1, 2)]
    r = d.infer("fbnn", {"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": [2, 1, 28, 28],
                                     "data": [v for row in rows for v in row]}]})
    eq(r.status, 200, "status (%r)" % r.body[:300])
    shape, data = tdtest.logits_of(r)
    eq(shape, [2, 10], "shape")
    for b, row in enumerate(rows):
        want = forward(TENSORS, META, row)
        tdtest.close_enough(data[b * 10:(b + 1) * 10], want,
                            "image %d logits" % b, tol=1e-4)
        check(max(want) - min(want) > 1e-3, "degenerate logits %r" % want)


@t.test(":classify on a grayscale PNG gives the Python forward's softmax")
def _():
    px = image(4)
    r = d.request("POST", "/v1/models/fbnn:classify?top_k=3",
                  body=png_gray(px), headers={"Content-Type": "image/png"})
    eq(r.status, 200, "status (%r)" % r.body[:300])
    preds = r.json()["predictions"]
    eq(len(preds), 1, "one image")
    logits = forward(TENSORS, META, normalised(px))
    mx = max(logits)
    ex = [math.exp(v - mx) for v in logits]
    probs = [v / sum(ex) for v in ex]
    best = sorted(range(10), key=lambda j: -probs[j])[:3]
    eq([p["index"] for p in preds[0]], best, "top-3 indices")
    eq(preds[0][0]["label"], "class_%d" % best[0], "label")
    tdtest.close_enough([p["probability"] for p in preds[0]],
                        [probs[j] for j in best], "probabilities", tol=1e-3)


def broken_case(name, what, data, *words):
    @t.test("a plan with %s is refused at load naming the tensor; the rest "
            "keep serving" % what)
    def _():
        tdtest.write_atomic(os.path.join(d.repo, name + ".safetensors"), data)
        d.hup_and_wait(lambda: name in d.models(), name + " listed")
        m = d.models()[name]
        eq(m.get("state"), "UNAVAILABLE", name + " state")
        reason = m.get("reason") or ""
        check(any(w in reason for w in words),
              "reason %r names none of %r" % (reason, words))
        eq(d.get("/v2/models/fbnn/ready").status, 200, "fbnn still ready")
        r = d.infer("fbnn", {"inputs": [{"name": "input", "datatype": "FP32",
                                         "shape": [1, 1, 28, 28],
                                         "data": [0.5] * 784}]})
        eq(r.status, 200, "fbnn infer after it")


_order = TENSORS["blocks.0.mst.order"][1]
_parent = TENSORS["blocks.0.mst.parent"][1]
_bad_order = list(_order)
_bad_order[4] = 16
broken_case("b_range", "a channel out of range",
            patched(GOOD_BYTES, "blocks.0.mst.order", _bad_order),
            "blocks.0.mst.order")
_cycle = list(_parent)
_cycle[_order[0]] = _order[1]
broken_case("b_cycle", "a parent cycle",
            patched(GOOD_BYTES, "blocks.0.mst.parent", _cycle),
            "blocks.0.mst.parent")
_st = json.loads(META["bnn_stats"])
_st["layers"][1]["depth"] += 1
broken_case("b_depth", "a depth not matching the plan",
            patched(GOOD_BYTES, None, meta={"bnn_stats": json.dumps(_st)}),
            "blocks.1.mst: depth")
_arch = json.loads(META["arch"])
_arch["stem"]["cout"] = 70  # packed rows of block 0 would need 2 words a tap
broken_case("b_packed", "packed sizes not matching the shapes",
            patched(GOOD_BYTES, None, meta={"arch": json.dumps(_arch)}),
            "stem.weight", "blocks.0.weight")

t.run()
