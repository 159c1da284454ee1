#!/usr/bin/env python3
"""Write the seed corpus for fuzz_safetensors into corpus/safetensors/.

A few valid files (the reference writer's layout: compact JSON, metadata
first, header padded with spaces to a multiple of 8; and tinyd's layout,
padded to 64) and a few invalid ones, one per kind of check, so the fuzzer
starts next to every branch of the validator. Re-run after changing it:
    python3 tests/fuzz/gen_corpus_safetensors.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "corpus", "safetensors")

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2,
         "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8,
         "F64": 8}


def container(tensors, meta=None, align=8):
    """tensors: list of (name, dtype, shape, bytes) in data order."""
    hdr, off, data = {}, 0, b""
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape,
                     "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(hdr, separators=(",", ":")).encode()
    # Spaces are JSON whitespace; the data then starts at a multiple of
    # `align` (8: what the reference writer does).
    text += b" " * ((align - (8 + len(text)) % align) % align)
    return struct.pack("<Q", len(text)) + text + data


def raw(header_text, data=b""):
    text = header_text.encode()
    return struct.pack("<Q", len(text)) + text + data


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {}
    seeds["valid_torch_style"] = container(
        [("weight", "F32", [2, 2], struct.pack("<4f", 1.5, -2, 3.25, 0)),
         ("bias", "F32", [2], struct.pack("<2f", -0.5, 8))],
        {"format": "pt"})
    seeds["valid_all_dtypes"] = container(
        [("t." + dt, dt, [3], bytes(range(3 * sz))) for dt, sz in
         sorted(SIZES.items(), key=lambda kv: -kv[1])],
        {"kind": "test", "note": "\u00e9t\u00e9"})
    seeds["valid_scalar_and_empty"] = container(
        [("empty", "F64", [0, 4], b""), ("s", "I64", [], bytes(8)),
         ("z", "U8", [2, 0], b"")], {"kind": "tinynet"}, align=64)
    seeds["valid_empty"] = container([], None)
    seeds["valid_meta_only"] = container([], {"kind": "graph-oracle",
                                              "nodes": "12"}, align=64)
    seeds["valid_tinyd_layout"] = container(
        [("big", "F32", [4, 4], bytes(64)), ("odd", "U8", [5], b"abcde")],
        {"kind": "bnn"}, align=64)
    seeds["bad_overlap"] = raw(
        '{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},'
        '"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}', bytes(12))
    seeds["bad_gap"] = raw(
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        '"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}', bytes(12))
    seeds["bad_trailing"] = raw(
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', bytes(7))
    seeds["bad_dtype"] = raw(
        '{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    seeds["bad_shape_size"] = raw(
        '{"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}}',
        bytes(4))
    seeds["bad_overflow"] = raw(
        '{"a":{"dtype":"F64","shape":[4294967296,4294967296],'
        '"data_offsets":[0,0]}}')
    seeds["bad_meta"] = raw('{"__metadata__":{"kind":1}}')
    seeds["bad_json"] = raw('{"a":{"dtype":"U8",')
    seeds["bad_dup"] = raw(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2))
    seeds["bad_length"] = struct.pack("<Q", 1 << 40) + b"{}"
    # Header lengths a little past the end, with JSON that runs to the end
    # of the file: a reader that trusted N would parse past the buffer.
    # (The first is what the fuzzer found when the bound check was taken
    # out on purpose to test the harness.)
    seeds["bad_length_past_end"] = (struct.pack("<Q", 0x130000) +
                                    b'{"a":{"dtype":"U8",')
    seeds["bad_length_by_one"] = struct.pack("<Q", 9) + b"{}      "
    for name, data in seeds.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as fp:
            fp.write(data)


if __name__ == "__main__":
    main()
