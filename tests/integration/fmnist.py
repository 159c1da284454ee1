"""Fashion-MNIST for the integration tests that train and serve: where the
Debian package dataset-fashion-mnist puts it, its class names, an IDX
reader, a grey PNG writer (so a test image goes through :classify as the
dataset's own pixels) and a softmax to compare :classify's scores with."""

import gzip
import math
import os
import struct
import zlib

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
          "Shirt", "Sneaker", "Bag", "Ankle boot"]


def installed():
    return os.path.exists(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))


def idx(path):
    """(dims, raw bytes) of a gzipped IDX file."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    return dims, raw[4 + 4 * ndim:]


def png_grey(pixels, w, h):
    """An 8-bit greyscale PNG of w*h bytes, rows top to bottom."""
    def chunk(kind, body):
        c = kind + body
        return struct.pack(">I", len(body)) + c + \
            struct.pack(">I", zlib.crc32(c) & 0xffffffff)
    rows = b"".join(b"\0" + pixels[y * w:(y + 1) * w] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]
