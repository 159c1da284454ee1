#!/usr/bin/env python3
"""tinyd-train --bnn to tinyd: train a tiny binary network for a few steps
on Fashion-MNIST (both ReActNet steps, with the MST regulariser), serve the
file it wrote unchanged, and classify Fashion-MNIST test images through
:classify (grey PNG of the dataset's own pixels, 28 px, so the eval
transform is an identity resize).

What is compared.
  - `tinyd-train info` prints per-layer and total statistics that are the
    file's own `bnn_stats` metadata, and fails with a message on a file
    that is not a binary model;
  - GET /v2/models/{name} says binary and MST-compressed, with the same
    statistics;
  - :classify's top class equals the arg-max of infer's logits on the
    normalised image, its probabilities are their softmax, its labels the
    Fashion-MNIST names the trainer wrote;
  - the daemon's accuracy on the first N test images equals what
    `tinyd-train eval` (the inference engine in the trainer process)
    prints, and it is above chance.
Skipped when the Debian package dataset-fashion-mnist is not installed."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import base64
import json
import os
import re
import subprocess
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
import fmnist  # noqa: E402
from fmnist import idx, png_grey, softmax  # noqa: E402
from tdtest import check, eq  # noqa: E402

DATA = fmnist.DATA
TRAIN = os.path.join(tdtest.BUILDDIR, "models", "tinyd-train")
N = 40
PROB_TOL = 1e-3
LABELS = fmnist.LABELS
ARCH = {"in_ch": 1, "in_h": 28, "in_w": 28,
        "stem": {"cout": 16, "k": 3, "stride": 1, "pad": 1},
        "blocks": [{"cout": 32, "k": 3, "stride": 2, "pad": 1},
                   {"cout": 32, "k": 3, "stride": 2, "pad": 1}],
        "classes": 10}

t = tdtest.TAP()
have_data = fmnist.installed()
tmp = tempfile.mkdtemp(prefix="tdbnntrain-")
model = os.path.join(tmp, "models", "fbnn.safetensors")
os.makedirs(os.path.dirname(model))


state = {}


@t.test("tinyd-train --arch-json trains a tiny binary network on "
        "Fashion-MNIST (steps 1 and 2, MST regulariser) and writes it")
def _():
    if not have_data:
        tdtest.TAP.skip("dataset-fashion-mnist not installed")
    check(os.access(TRAIN, os.X_OK), "%s is not built" % TRAIN)
    subprocess.run([TRAIN, "--arch-json", json.dumps(ARCH), "--epochs", "3",
                    "--bnn-step1", "1", "--mst-lambda", "0.001",
                    "--batch", "32", "--lr", "5e-3", "--train-limit", "2048",
                    "--test-limit", str(N), "--threads", "1",
                    "--opt", "saf", "--saf-minus", "1", "--saf-start", "1",
                    "--quiet", "--out", model],
                   check=True, timeout=300)
    meta = tdtest.read_safetensors(model)[0]
    eq(meta["kind"], "bnn", "kind")
    eq(json.loads(meta["arch"]), ARCH, "arch")
    eq(json.loads(meta["labels"]), LABELS, "labels")
    state["stats"] = json.loads(meta["bnn_stats"])
    state["mean"] = json.loads(meta["mean"])[0]
    state["std"] = json.loads(meta["std"])[0]
    out = subprocess.run([TRAIN, "eval", model, "--test-limit", str(N),
                          "--threads", "1"],
                         check=True, timeout=120, capture_output=True,
                         text=True).stdout
    m = re.search(r"test accuracy ([0-9.]+)", out)
    check(m, "eval output %r" % out)
    state["trainer_acc"] = float(m.group(1))


@t.test("tinyd-train info prints the file's statistics; refuses a "
        "non-binary file")
def _():
    if "stats" not in state:
        tdtest.TAP.skip("no trained model")
    r = subprocess.run([TRAIN, "info", model], timeout=60,
                       capture_output=True, text=True)
    eq(r.returncode, 0, "exit status (%s)" % r.stderr)
    out = r.stdout
    check("binary network, MST-compressed" in out, "header in %r" % out)
    rows = [ln.split() for ln in out.splitlines()]
    layers = [ln for ln in rows if ln and ln[0].isdigit()]
    eq(len(layers), len(ARCH["blocks"]), "one line per binary layer")
    for i, (ln, want) in enumerate(zip(layers, state["stats"]["layers"])):
        # layer Cout K depth mst_dist bitops_dense bitops_mst ...
        eq([int(v) for v in ln[1:7]],
           [want["cout"], want["k_bits"], want["depth"],
            want["mst_distance"], want["bitops_dense"], want["bitops_mst"]],
           "layer %d statistics" % i)
    total = [ln for ln in rows if ln and ln[0] == "total"]
    eq(len(total), 1, "a total line")
    tot = state["stats"]["total"]
    eq([int(v) for v in total[0][2:6]],
       [tot["depth"], tot["mst_distance"], tot["bitops_dense"],
        tot["bitops_mst"]], "total statistics")
    bad = os.path.join(tmp, "not-a-model.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    r = subprocess.run([TRAIN, "info", bad], timeout=60,
                       capture_output=True, text=True)
    check(r.returncode != 0, "info on a bad file exited 0")
    check("tinyd-train info" in r.stderr and bad in r.stderr,
          "message %r" % r.stderr)


d = tdtest.Daemon(repo=os.path.dirname(model))


@t.test("tinyd serves the file: binary, MST statistics, and :classify "
        "agrees with infer and with tinyd-train eval")
def _():
    if "trainer_acc" not in state:
        tdtest.TAP.skip("no trained model")
    d.start()
    t.cleanup(d.close)
    r = d.get("/v2/models/fbnn")
    eq(r.status, 200, "metadata status (%r)" % r.body[:300])
    p = r.json()["parameters"]
    eq((p.get("binary"), p.get("mst")), (True, True), "binary, mst")
    eq(p["stats"]["total"]["bitops_mst"],
       state["stats"]["total"]["bitops_mst"], "served statistics")
    (n, h, w), pixels = idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    _, labels = idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    mean, std = state["mean"], state["std"]
    correct = 0
    for i in range(N):
        img = pixels[i * h * w:(i + 1) * h * w]
        r = d.post("/v1/models/fbnn:classify",
                   {"instances": [{"b64": base64.b64encode(
                       png_grey(img, w, h)).decode()}], "top_k": 10})
        eq(r.status, 200, "classify status (%r)" % r.body[:300])
        pred = r.json()["predictions"][0]
        grey = [(v / 255.0 - mean) / std for v in img]
        ri = d.infer("fbnn", {"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [1, 1, h, w],
            "data": [float("%.9g" % v) for v in grey]}]})
        eq(ri.status, 200, "infer status (%r)" % ri.body[:300])
        z = tdtest.logits_of(ri)[1]
        pz = softmax(z)
        eq(pred[0]["index"], max(range(10), key=lambda k: z[k]),
           "image %d: top class of :classify and of infer" % i)
        for e in pred:
            eq(e["label"], LABELS[e["index"]], "image %d label" % i)
            check(abs(e["probability"] - pz[e["index"]]) <= PROB_TOL,
                  "image %d class %d: probability %.5f, softmax of infer "
                  "logits %.5f" % (i, e["index"], e["probability"],
                                   pz[e["index"]]))
        correct += pred[0]["index"] == labels[i]
    acc = correct / N
    tdtest.diag("daemon accuracy on %d test images %.3f, tinyd-train eval "
                "%.3f" % (N, acc, state["trainer_acc"]))
    check(abs(acc - state["trainer_acc"]) < 0.5 / N,
          "daemon accuracy %.4f != tinyd-train eval %.4f on the same %d "
          "images" % (acc, state["trainer_acc"], N))
    check(acc >= 0.25, "accuracy %.3f after training: no better than "
          "guessing" % acc)


t.cleanup(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
t.run()
