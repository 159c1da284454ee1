"""tinyfix: the TinyNet fixtures of tests/fixtures/tinynet as the
integration tests use them (stdlib only, no torch).

OURS is tiny_ours.safetensors (our format, 33x33, 5 labelled classes) with
tiny_io.safetensors's three inputs and PyTorch logits; TIMM is the timm
checkpoint tiny_timm.safetensors with its sidecar tiny_timm.json (40x40,
10 classes) and tiny_timm_io40.safetensors's inputs and logits."""

import json
import os
import shutil
import struct

import tdtest
from tdtest import check, eq

FIXTURES = os.path.join(tdtest.SRCDIR, "tests", "fixtures", "tinynet")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _json_or_text(v):
    """A metadata value: JSON (numbers, arrays) or a plain string."""
    try:
        return json.loads(v)
    except ValueError:
        return v


class Fixture:
    """One model file, what it declares, and reference inputs/logits."""

    def __init__(self, file, io_file, prefix, sidecar=None):
        self.path = os.path.join(FIXTURES, file)
        self.sidecar = None
        meta, tensors = tdtest.read_safetensors(self.path)
        if sidecar:
            with open(os.path.join(FIXTURES, sidecar)) as f:
                self.sidecar = json.load(f)
            conf = dict(self.sidecar)
        else:
            conf = {k: _json_or_text(v) for k, v in meta.items()}
        self.arch = {k: float(conf[k]) for k in ("r", "d", "w")}
        self.res = int(conf["resolution"])
        self.classes = tensors["classifier.weight"][1][0]
        self.labels = conf.get("labels")
        self.mean = [float(v) for v in conf.get("mean", IMAGENET_MEAN)]
        self.std = [float(v) for v in conf.get("std", IMAGENET_STD)]
        self.interpolation = conf.get("interpolation", "bicubic")
        self.crop_pct = float(conf.get("crop_pct", 0.875))
        _, io = tdtest.read_safetensors(os.path.join(FIXTURES, io_file))
        dtype, shape, raw = io[prefix + "_input"]
        eq(shape[1:], [3, self.res, self.res], "fixture input shape")
        flat = tdtest.values(raw, dtype)
        per = 3 * self.res * self.res
        self.n = shape[0]
        self.rows = [flat[i * per:(i + 1) * per] for i in range(self.n)]
        dtype, shape, raw = io[prefix + "_logits"]
        eq(shape, [self.n, self.classes], "fixture logits shape")
        flat = tdtest.values(raw, dtype)
        self.logits = [flat[i * self.classes:(i + 1) * self.classes]
                       for i in range(self.n)]


OURS = Fixture("tiny_ours.safetensors", "tiny_io.safetensors", "ours")
TIMM = Fixture("tiny_timm.safetensors", "tiny_timm_io40.safetensors", "timm",
               sidecar="tiny_timm.json")


def install(repo, name, fx, **sidecar_changes):
    """Copy fx's file (and sidecar, changed by sidecar_changes) into the
    repository as `name`."""
    dst = os.path.join(repo, name + ".safetensors")
    if fx.sidecar is not None:
        side = dict(fx.sidecar)
        side.update(sidecar_changes)
        with open(os.path.join(repo, name + ".json"), "w") as f:
            json.dump(side, f)
    else:
        check(not sidecar_changes, "our format has no sidecar")
    shutil.copyfile(fx.path, dst + ".tmp")
    os.rename(dst + ".tmp", dst)
    return dst


def f32_text(values):
    """float32 values as the shortest decimal that reads back exactly."""
    return [float("%.9g" % v) for v in values]


def infer_body(fx, idx, **extra):
    """JSON infer request of fx's images idx (a list of indices)."""
    data = []
    for i in idx:
        data.extend(f32_text(fx.rows[i]))
    body = {"inputs": [{"name": "input", "datatype": "FP32",
                        "shape": [len(idx), 3, fx.res, fx.res],
                        "data": data}]}
    body.update(extra)
    return body


def binary_request_rows(rows, res, json_extra=None):
    """(body, headers) of a binary-tensor infer request of NCHW images."""
    flat = [v for row in rows for v in row]
    raw = struct.pack("<%df" % len(flat), *flat)
    header = {"inputs": [{"name": "input", "datatype": "FP32",
                          "shape": [len(rows), 3, res, res],
                          "parameters": {"binary_data_size": len(raw)}}]}
    header.update(json_extra or {})
    h = json.dumps(header).encode()
    return h + raw, {"Content-Type": "application/octet-stream",
                     "Inference-Header-Content-Length": str(len(h))}


def binary_request(fx, idx, json_extra=None):
    return binary_request_rows([fx.rows[i] for i in idx], fx.res, json_extra)


def close_logits(got, want, what, row_max=None):
    """The issue's tolerance: |got - want| <= 1e-4 * max|logit| + 1e-4,
    max over the reference row (row_max, default want). Returns the
    largest error."""
    check(len(got) == len(want), "%s: %d values, want %d"
          % (what, len(got), len(want)))
    tol = 1e-4 * max(abs(v) for v in (row_max or want)) + 1e-4
    worst = 0.0
    for j, (g, w) in enumerate(zip(got, want)):
        check(isinstance(g, (int, float)) and abs(g - w) <= tol,
              "%s[%d]: got %r, want %r (tolerance %.2g)" % (what, j, g, w,
                                                            tol))
        worst = max(worst, abs(g - w))
    return worst


def check_logits(resp, fx, idx, what="logits"):
    """resp's logits are fx's reference logits of images idx."""
    shape, data = tdtest.logits_of(resp)
    eq(shape, [len(idx), fx.classes], what + " shape")
    c = fx.classes
    return max(close_logits(data[k * c:(k + 1) * c], fx.logits[i],
                            "%s row %d (image %d)" % (what, k, i))
               for k, i in enumerate(idx))


def check_infer(d, model, fx, idx, what="infer"):
    r = d.infer(model, infer_body(fx, idx))
    eq(r.status, 200, "%s status (%r)" % (what, r.body[:300]))
    return check_logits(r, fx, idx, what)
