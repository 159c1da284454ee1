#!/usr/bin/python3
"""Seeds for fuzz_jpeg and fuzz_png: tiny images of every kind the decoders
branch on. Deterministic; needs Debian's python3-pil for the JPEGs.
    /usr/bin/python3 tests/fuzz/gen_corpus_image.py
writes tests/fuzz/corpus/jpeg/*.jpg and tests/fuzz/corpus/png/*.png."""
import os
import struct
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def pattern(w, h, mode):
    im = Image.new("RGB", (w, h))
    im.putdata([((x * 255) // max(1, w - 1), (y * 255) // max(1, h - 1),
                 ((x * y) * 7) & 255) for y in range(h) for x in range(w)])
    return im.convert(mode)


def jpegs(out):
    pattern(16, 12, "RGB").save(os.path.join(out, "baseline_420.jpg"),
                                quality=75)
    pattern(9, 7, "RGB").save(os.path.join(out, "baseline_444_odd.jpg"),
                              quality=90, subsampling=0)
    pattern(17, 9, "RGB").save(os.path.join(out, "progressive.jpg"),
                               quality=80, progressive=True)
    pattern(8, 8, "L").save(os.path.join(out, "gray.jpg"), quality=80)
    pattern(8, 6, "CMYK").save(os.path.join(out, "cmyk.jpg"), quality=80)
    pattern(33, 2, "RGB").save(os.path.join(out, "wide_422.jpg"), quality=60,
                               subsampling=1)
    pattern(2, 33, "L").save(os.path.join(out, "tall_gray_prog.jpg"),
                             quality=60, progressive=True)


def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
         (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(w, h, depth, ctype, interlace=False, extra=b""):
    """A PNG written by hand, so every colour type, depth and Adam7 appear
    (PIL's writer has no interlacing). Samples follow a fixed pattern."""
    chans = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    maxv = (1 << depth) - 1

    def row_bytes(xs, y):
        bits = []
        for x in xs:
            for c in range(chans):
                bits.append(((x * 5 + y * 3 + c * 7) * 37) % (maxv + 1))
        if depth >= 8:
            fmt = ">%d%s" % (len(bits), "H" if depth == 16 else "B")
            return struct.pack(fmt, *bits)
        out, acc, n = bytearray(), 0, 0
        for v in bits:
            acc = (acc << depth) | v
            n += depth
            if n == 8:
                out.append(acc)
                acc, n = 0, 0
        if n:
            out.append(acc << (8 - n))
        return bytes(out)

    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, w, dx))
        if not xs:
            continue
        for y in range(y0, h, dy):
            raw += b"\x00" + row_bytes(xs, y)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace))
    body = chunk(b"IHDR", ihdr)
    if ctype == 3:
        body += chunk(b"PLTE", bytes((i * 40) % 256 for i in range(3 << depth)))
        body += chunk(b"tRNS", bytes([0, 128]))
    body += extra + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def pngs(out):
    cases = {
        "gray1.png": (7, 5, 1, 0, False),
        "gray2_adam7.png": (9, 9, 2, 0, True),
        "gray4.png": (5, 3, 4, 0, False),
        "gray8_adam7.png": (8, 8, 8, 0, True),
        "gray16.png": (4, 4, 16, 0, False),
        "graya8.png": (6, 2, 8, 4, False),
        "graya16_adam7.png": (5, 5, 16, 4, True),
        "rgb8.png": (6, 4, 8, 2, False),
        "rgb16.png": (3, 3, 16, 2, False),
        "rgba8_adam7.png": (10, 3, 8, 6, True),
        "rgba16.png": (2, 2, 16, 6, False),
        "pal1.png": (9, 2, 1, 3, False),
        "pal4_adam7.png": (7, 7, 4, 3, True),
        "pal8.png": (4, 4, 8, 3, False),
    }
    for name, (w, h, depth, ctype, inter) in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(png(w, h, depth, ctype, inter))
    # Ancillary chunks the decoder must step over.
    text = chunk(b"tEXt", b"Comment\x00fuzz seed") + chunk(
        b"gAMA", struct.pack(">I", 45455))
    with open(os.path.join(out, "rgb8_text.png"), "wb") as f:
        f.write(png(3, 2, 8, 2, False, extra=text))


def main():
    for sub, fn in (("jpeg", jpegs), ("png", pngs)):
        out = os.path.join(HERE, "corpus", sub)
        os.makedirs(out, exist_ok=True)
        fn(out)


if __name__ == "__main__":
    main()
