#!/usr/bin/env python3
"""tinyd-train to tinyd: train a small TinyNet for a few steps on
Fashion-MNIST, serve the file it wrote unchanged, and classify Fashion-MNIST
test images through :classify (grey PNG, the dataset's own pixels).

What is compared. The model is trained at 28 px, the images' own size, so
the daemon's eval transform is an identity resize and the input tensor is
known exactly: (pixel / 255 - mean) / std from the file's metadata,
repeated on R, G and B. Then
  - :classify ranks the classes as infer on that tensor does, with the
    softmax of those logits as probabilities, and names them with the
    Fashion-MNIST labels the trainer wrote;
  - its accuracy on the first N test images equals the accuracy that
    `tinyd-train eval` (the trainer's own forward, on 1-channel input)
    prints for the same N images: the two engines agree on every arg-max,
    which also checks the grey stem's spread over 3 channels;
  - the trainer learned something: that accuracy is well above chance.
Skipped when the Debian package dataset-fashion-mnist is not installed."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import base64
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

t = tdtest.TAP()
have_data = fmnist.installed()
tmp = tempfile.mkdtemp(prefix="tdtrain-")
model = os.path.join(tmp, "models", "fmnist.safetensors")
os.makedirs(os.path.dirname(model))


state = {}


@t.test("tinyd-train trains a small TinyNet on Fashion-MNIST for a few "
        "steps and writes the model")
def _():
    if not have_data:
        tdtest.TAP.skip("dataset-fashion-mnist not installed")
    check(os.access(TRAIN, os.X_OK), "%s is not built" % TRAIN)
    subprocess.run([TRAIN, "--r", "0.125", "--d", "0.3", "--w", "0.2",
                    "--res", "28", "--epochs", "2", "--batch", "64",
                    "--train-limit", "2048", "--test-limit", str(N),
                    "--opt", "saf", "--saf-minus", "1", "--saf-start", "1",
                    "--quiet", "--out", model],
                   check=True, timeout=300)
    meta = tdtest.read_safetensors(model)[0]
    eq((meta["kind"], meta["resolution"], meta["classes"], meta["channels"]),
       ("tinynet", "28", "10", "1"), "kind, resolution, classes, channels")
    out = subprocess.run([TRAIN, "eval", model, "--test-limit", str(N)],
                         check=True, timeout=120, capture_output=True,
                         text=True).stdout
    m = re.search(r"test accuracy ([0-9.]+)", out)
    check(m, "eval output %r" % out)
    state["trainer_acc"] = float(m.group(1))
    state["mean"] = float(re.findall(r"[-0-9.e]+", meta["mean"])[0])
    state["std"] = float(re.findall(r"[-0-9.e]+", meta["std"])[0])


d = tdtest.Daemon(repo=os.path.dirname(model))


@t.test("tinyd serves the file unchanged and :classify agrees with infer "
        "and with the trainer's own evaluation")
def _():
    if "trainer_acc" not in state:
        tdtest.TAP.skip("no trained model")
    d.start()
    t.cleanup(d.close)
    (n, h, w), pixels = idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    _, labels = idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    mean, std = state["mean"], state["std"]
    correct = 0
    for i in range(N):
        img = pixels[i * h * w:(i + 1) * h * w]
        r = d.post("/v1/models/fmnist:classify",
                   {"instances": [{"b64": base64.b64encode(
                       png_grey(img, w, h)).decode()}], "top_k": 10})
        eq(r.status, 200, "classify status (%r)" % r.body[:300])
        pred = r.json()["predictions"][0]
        grey = [(v / 255.0 - mean) / std for v in img]
        ri = d.infer("fmnist", {"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [1, 3, h, w],
            "data": [float("%.9g" % v) for v in grey * 3]}]})
        eq(ri.status, 200, "infer status (%r)" % ri.body[:300])
        z = tdtest.logits_of(ri)[1]
        p = softmax(z)
        eq(pred[0]["index"], max(range(10), key=lambda k: z[k]),
           "image %d: top class of :classify and of infer" % i)
        for e in pred:
            eq(e["label"], LABELS[e["index"]], "image %d label" % i)
            check(abs(e["probability"] - p[e["index"]]) <= PROB_TOL,
                  "image %d class %d: probability %.5f, softmax of infer "
                  "logits %.5f" % (i, e["index"], e["probability"],
                                   p[e["index"]]))
        correct += pred[0]["index"] == labels[i]
    acc = correct / N
    tdtest.diag("daemon accuracy on %d test images %.3f, trainer's eval %.3f"
                % (N, acc, state["trainer_acc"]))
    check(abs(acc - state["trainer_acc"]) < 0.5 / N,
          "daemon accuracy %.4f != tinyd-train eval %.4f on the same %d "
          "images" % (acc, state["trainer_acc"], N))
    check(acc >= 0.25, "accuracy %.3f after training: no better than "
          "guessing" % acc)


t.cleanup(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
t.run()
