#!/usr/bin/env python3
"""POST /v1/models/{name}:classify end to end: JPEG and PNG, raw and
base64, against the model run through infer on PIL's preprocessing of the
same image; top_k; and every bad image input (corrupt, too large, too
many, empty, not base64, a model that takes no images).

What is compared. tests/fixtures/image holds, for a few transforms, the
tensor torchvision makes of an image with timm's eval transform (PIL
decode, resize, centre crop, normalise: manifest.json). Those tensors are
the right input only for a model whose own transform is exactly that one,
so this test serves the timm fixture checkpoint (TinyNet weights do not
depend on the resolution) under two sidecars copied from two fixture cases:
  cls_jpeg = case "jpeg_bicubic": photo_97x61.jpg, 40x40, bicubic, crop 0.95
  cls_png  = case "down_bicubic": photo_97x61.png, 32x32, bicubic, crop 0.875
(both ImageNet mean/std), checks through GET /v2/models that the daemon
took that transform, and then requires that :classify of the image ranks
the classes as infer does on the reference tensor, with probabilities
close to the softmax of those logits. Decoding and resampling in the
daemon are not bit-identical to PIL's, so ranks may differ only between
classes whose reference logits are within LOGIT_TIE of each other."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import base64
import json
import math
import os
import struct
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402
import tinyfix  # noqa: E402
from tinyfix import OURS, TIMM  # noqa: E402

IMAGES = os.path.join(tdtest.SRCDIR, "tests", "fixtures", "image")
LOGIT_TIE = 0.02      # logits closer than this may swap ranks
PROB_TOL = 1e-3       # |probability - reference softmax|; a wrong
#                       interpolation is off by ~0.03, a wrong crop by ~0.15

with open(os.path.join(IMAGES, "manifest.json")) as f:
    CASES = {c["name"]: c for c in json.load(f)["cases"]}


def image(name):
    with open(os.path.join(IMAGES, name), "rb") as f:
        return f.read()


class ClsModel:
    """The timm fixture served with a fixture case's transform."""

    def __init__(self, name, case):
        self.name = name
        self.case = CASES[case]
        check(self.case["out_h"] == self.case["out_w"] and
              not self.case["grayscale"], "case %s is not a square RGB "
              "transform" % case)
        self.image = self.case["image"]
        self.bytes = image(self.image)
        with open(os.path.join(IMAGES, self.case["expect"]), "rb") as f:
            raw = f.read()
        self.res = self.case["out_h"]
        self.reference = list(struct.unpack("<%df" % (len(raw) // 4), raw))
        eq(len(self.reference), 3 * self.res * self.res, case + " tensor")

    def install(self, repo):
        c = self.case
        tinyfix.install(repo, self.name, TIMM, resolution=c["out_h"],
                        interpolation=c["interp"], crop_pct=c["crop_pct"],
                        mean=c["mean"], std=c["std"])


CLS_JPEG = ClsModel("cls_jpeg", "jpeg_bicubic")
CLS_PNG = ClsModel("cls_png", "down_bicubic")
check(CLS_JPEG.image.endswith(".jpg") and CLS_PNG.image.endswith(".png"),
      "fixture cases changed their images")

t = tdtest.TAP()
d = tdtest.Daemon(args=["--threads", "2"])
CLS_JPEG.install(d.repo)
CLS_PNG.install(d.repo)
tinyfix.install(d.repo, "tiny_ours", OURS)
tdtest.Linear.seeded(3, classes=3, features=4).save(d.repo, "lin")
d.start()
t.cleanup(d.close)


def classify_raw(model, data, ctype, query="", daemon=None):
    return (daemon or d).post("/v1/models/%s:classify%s" % (model, query),
                              data, headers={"Content-Type": ctype})


def classify_b64(model, images, daemon=None, **extra):
    body = {"instances": [{"b64": base64.b64encode(b).decode()}
                          for b in images]}
    body.update(extra)
    return (daemon or d).post("/v1/models/%s:classify" % model, body)


def predictions(r, n_images, k):
    eq(r.status, 200, "status (%r)" % r.body[:300])
    doc = r.json()
    eq((doc.get("model_name") is not None, doc.get("model_version")),
       (True, "1"), "model_name, model_version")
    preds = doc["predictions"]
    eq(len(preds), n_images, "predictions per image")
    for p in preds:
        eq(len(p), k, "entries per image")
        for e in p:
            eq(sorted(e), ["index", "label", "probability"], "entry keys")
    return preds


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def reference_logits(m):
    r = d.infer(m.name, {"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [1, 3, m.res, m.res],
        "data": tinyfix.f32_text(m.reference)}]})
    eq(r.status, 200, "reference infer status (%r)" % r.body[:300])
    return tdtest.logits_of(r)[1]


def check_against_reference(m, pred, what):
    """pred (all classes) ranks as infer on PIL's tensor does."""
    z = reference_logits(m)
    p = softmax(z)
    eq(sorted(e["index"] for e in pred), list(range(TIMM.classes)),
       what + ": every class once")
    for a, b in zip(pred, pred[1:]):
        check(z[a["index"]] >= z[b["index"]] - LOGIT_TIE,
              "%s: class %d ranked before %d, reference logits %.4f < %.4f"
              % (what, a["index"], b["index"], z[a["index"]], z[b["index"]]))
    worst = 0.0
    for e in pred:
        eq(e["label"], TIMM.labels[e["index"]], what + " label")
        worst = max(worst, abs(e["probability"] - p[e["index"]]))
    check(worst <= PROB_TOL, "%s: probability off the reference softmax by "
          "%.4g" % (what, worst))
    total = sum(e["probability"] for e in pred)
    check(abs(total - 1) < 1e-4, "%s: probabilities sum to %r" % (what, total))
    return worst


@t.test("the served transforms are the fixture cases' (else the comparison "
        "below would be meaningless)")
def _():
    for m in (CLS_JPEG, CLS_PNG):
        p = d.get("/v2/models/" + m.name).json()["parameters"]
        c = m.case
        eq((p["resolution"], p["interpolation"]), (c["out_h"], c["interp"]),
           m.name + " resolution, interpolation")
        tdtest.close_enough([p["crop_pct"]] + p["mean"] + p["std"],
                            [c["crop_pct"]] + c["mean"] + c["std"],
                            m.name + " crop_pct, mean, std", tol=1e-6)


for m, ctype in ((CLS_JPEG, "image/jpeg"), (CLS_PNG, "image/png")):
    @t.test("raw %s body, top_k=all: ranks and probabilities of infer on "
            "PIL's tensor" % ctype)
    def _(m=m, ctype=ctype):
        r = classify_raw(m.name, m.bytes, ctype, "?top_k=%d" % TIMM.classes)
        pred = predictions(r, 1, TIMM.classes)[0]
        worst = check_against_reference(m, pred, m.image)
        tdtest.diag("%s: top %s, largest probability error %.2g"
                    % (m.image, pred[0]["label"], worst))

    @t.test("b64 %s in JSON, top_k in the body: the same as raw" % ctype)
    def _(m=m, ctype=ctype):
        r = classify_b64(m.name, [m.bytes], top_k=TIMM.classes)
        pred = predictions(r, 1, TIMM.classes)[0]
        check_against_reference(m, pred, m.image + " b64")
        raw = predictions(classify_raw(m.name, m.bytes, ctype,
                                       "?top_k=%d" % TIMM.classes), 1,
                          TIMM.classes)[0]
        eq([e["index"] for e in pred], [e["index"] for e in raw],
           "b64 vs raw ranks")
        tdtest.close_enough([e["probability"] for e in pred],
                            [e["probability"] for e in raw],
                            "b64 vs raw probabilities", tol=1e-5)


@t.test("a batch of a JPEG and a PNG: each image gets what it gets alone; "
        "default top_k is 5")
def _():
    jpg, png = CLS_JPEG.bytes, CLS_PNG.bytes
    preds = predictions(classify_b64("cls_png", [jpg, png, jpg]), 3, 5)
    for img, pred, ctype in ((jpg, preds[0], "image/jpeg"),
                             (png, preds[1], "image/png"),
                             (jpg, preds[2], "image/jpeg")):
        alone = predictions(classify_raw("cls_png", img, ctype), 1, 5)[0]
        eq([e["index"] for e in pred], [e["index"] for e in alone],
           ctype + " ranks in the batch vs alone")
        tdtest.close_enough([e["probability"] for e in pred],
                            [e["probability"] for e in alone],
                            ctype + " probabilities", tol=1e-5)
    check_against_reference(
        CLS_PNG, predictions(classify_raw("cls_png", png, "image/png",
                                          "?top_k=10"), 1, 10)[0],
        "png alone")


@t.test("our format: labels from the metadata, top_k=2 are the two most "
        "probable of all five, probabilities sum to 1")
def _():
    for name in ("photo_97x61.jpg", "progressive_64x48.jpg",
                 "palette_33x21.png", "gray_40x30.jpg", "cmyk_24x20.jpg"):
        ctype = "image/png" if name.endswith(".png") else "image/jpeg"
        full = predictions(classify_raw("tiny_ours", image(name), ctype,
                                        "?top_k=5"), 1, 5)[0]
        eq(sorted(e["index"] for e in full), list(range(5)), name)
        for e in full:
            eq(e["label"], OURS.labels[e["index"]], name + " label")
        probs = [e["probability"] for e in full]
        check(probs == sorted(probs, reverse=True), name + " not sorted")
        check(abs(sum(probs) - 1) < 1e-4, "%s: sum %r" % (name, sum(probs)))
        top2 = predictions(classify_raw("tiny_ours", image(name), ctype,
                                        "?top_k=2"), 1, 2)[0]
        eq([e["index"] for e in top2], [e["index"] for e in full[:2]],
           name + " top 2")


# ------------------------------------------------------------ bad input

def png_header(width, height, idat=b"\0" * 100):
    """A PNG whose IHDR (valid CRC) claims width x height; the image data
    is a few zero bytes, so decoding it would fail: a 413 rather than a
    400 shows the size was judged from the header, before decoding."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b""))


def alive(what="still serving"):
    r = classify_raw("cls_png", CLS_PNG.bytes, "image/png")
    predictions(r, 1, 5)
    tinyfix.check_infer(d, "tiny_ours", OURS, [0], what)


def refused(r, status, *words):
    eq(r.status, status, "status (%r)" % r.body[:300])
    msg = r.error()
    check(any(w.lower() in msg.lower() for w in words),
          "error %r names none of %r" % (msg, words))
    return msg


JPG = CLS_JPEG.bytes
SOF = JPG.find(b"\xff\xc0")
check(SOF > 0, "photo_97x61.jpg has no baseline SOF0 marker")


@t.test("400 for corrupt JPEGs (garbage after SOI, a broken SOF header, "
        "truncated data), raw and b64, still serving")
def _():
    bad = {
        "garbage": b"\xff\xd8\xff" + b"x" * 200,
        "broken SOF": JPG[:SOF + 2] + b"\x00\x00" + JPG[SOF + 4:],
        "truncated": JPG[:len(JPG) // 3],
    }
    for what, data in bad.items():
        refused(classify_raw("cls_jpeg", data, "image/jpeg"), 400, "jpeg",
                "image 0")
        msg = refused(classify_b64("cls_jpeg", [JPG, data]), 400, "image 1")
        check("image 1" in msg, "%s: error %r does not name image 1"
              % (what, msg))
    alive()


@t.test("413 for a PNG whose header claims 50000x50000, before decoding")
def _():
    refused(classify_raw("cls_png", png_header(50000, 50000), "image/png"),
            413, "50000")
    refused(classify_b64("cls_png", [CLS_PNG.bytes,
                                     png_header(50000, 50000)]), 413,
            "image 1")
    alive()


@t.test("413 for 8000x8000 (64M pixels over the default 40M, sides within "
        "limits); the same crafted PNG at 100x100 is 400, not decodable")
def _():
    msg = refused(classify_raw("cls_png", png_header(8000, 8000),
                               "image/png"), 413, "pixel", "64000000")
    tdtest.diag("8000x8000: %s" % msg)
    refused(classify_raw("cls_png", png_header(100, 100), "image/png"), 400,
            "png", "image 0")
    alive()


@t.test("400 for a PNG with a bad IHDR CRC, an empty body, and bytes that "
        "are no image")
def _():
    p = bytearray(png_header(20, 20))
    p[29] ^= 0xFF      # inside IHDR's CRC
    refused(classify_raw("cls_png", bytes(p), "image/png"), 400, "png",
            "crc", "image 0")
    refused(classify_raw("cls_png", b"", "image/png"), 400, "image", "empty")
    refused(classify_b64("cls_png", [b"GIF89a" + b"\0" * 40]), 400,
            "image 0")
    alive()


@t.test("400 for an empty batch, missing instances, bad base64, bad top_k")
def _():
    refused(d.post("/v1/models/cls_png:classify", {"instances": []}), 400,
            "instances", "empty")
    refused(d.post("/v1/models/cls_png:classify", {"images": []}), 400,
            "instances")
    refused(d.post("/v1/models/cls_png:classify",
                   {"instances": [{"b64": "not*base64!"}]}), 400,
            "base64", "instances[0]")
    refused(d.post("/v1/models/cls_png:classify", {"instances": [{}]}), 400,
            "b64", "instances[0]")
    refused(classify_b64("cls_png", [CLS_PNG.bytes], top_k=0), 400, "top_k")
    refused(classify_raw("cls_png", CLS_PNG.bytes, "image/png",
                         "?top_k=x"), 400, "top_k")
    refused(d.post("/v1/models/cls_png:classify", "{\"instances\": ["),
            400, "json", "line")
    alive()


@t.test("404 for an unknown model, 400 for a model that takes no images")
def _():
    refused(classify_raw("no_such", CLS_PNG.bytes, "image/png"), 404,
            "no_such")
    refused(classify_b64("no_such", [CLS_PNG.bytes]), 404, "no_such")
    msg = refused(classify_raw("lin", CLS_PNG.bytes, "image/png"), 400,
                  "lin")
    check("image" in msg.lower() or "classif" in msg.lower(),
          "error %r does not say the model takes no images" % msg)
    alive()


@t.test("--max-images 2: three images are 413 naming the limit, two are "
        "answered; --max-image-pixels 1000 refuses 97x61, takes 13x9")
def _():
    b = tdtest.Daemon(args=["--max-images", "2", "--max-image-pixels",
                            "1000"])
    try:
        CLS_PNG.install(b.repo)
        b.start()
        small = image("small_13x9.png")
        refused(classify_b64("cls_png", [small] * 3, daemon=b), 413, "2")
        predictions(classify_b64("cls_png", [small] * 2, daemon=b), 2, 5)
        refused(classify_raw("cls_png", CLS_PNG.bytes, "image/png",
                             daemon=b), 413, "pixel", "5917", "1000")
        refused(classify_b64("cls_png", [small, CLS_PNG.bytes], daemon=b),
                413, "image 1")
        predictions(classify_raw("cls_png", small, "image/png", daemon=b),
                    1, 5)
        b.check_clean_exit()
    finally:
        b.close()


@t.test("SIGTERM at the end: exit 0, no sanitizer report on stderr")
def _():
    d.check_clean_exit()


t.run()
