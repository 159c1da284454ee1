#!/usr/bin/env python3
"""Write the seed corpora for fuzz_oip_json, fuzz_oip_binary and
fuzz_base64 into corpus/oip_json/, corpus/oip_binary/, corpus/base64/.

oip_json inputs are one byte (bits 0-6 modulo 5: the spec set of
oip_fuzz.h, bit 7: batch limit 64) and a JSON infer request; oip_binary
inputs are two bytes, little-endian (low 13 bits:
Inference-Header-Content-Length, top 3 bits modulo 5: the spec set), then
the JSON header and the raw tensors. Valid requests
for every spec set, and one invalid request per kind of check.
Re-run after changing it:
    python3 tests/fuzz/gen_corpus_oip.py
"""
import base64
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def inp(name, dt, shape, data=None, nbytes=None):
    d = {"name": name, "datatype": dt, "shape": shape}
    if data is not None:
        d["data"] = data
    if nbytes is not None:
        d["parameters"] = {"binary_data_size": nbytes}
    return d


def req(inputs, outputs=None, rid=None, params=None):
    r = {}
    if rid is not None:
        r["id"] = rid
    if params is not None:
        r["parameters"] = params
    r["inputs"] = inputs
    if outputs is not None:
        r["outputs"] = outputs
    return json.dumps(r).encode()


JSON_SEEDS = {
    # set 0: x FP32 [-1,3] -> y FP32 [-1,3], logits FP32 [-1,5]
    "valid_fp32_nested": (0, req([inp("x", "FP32", [2, 3],
                                      [[1, 2.5, -3], [0, 1e-3, 7]])],
                                 rid="req-1")),
    "valid_fp32_flat_topk": (0, req([inp("x", "FP32", [1, 3], [1, 2, 3])],
                                    [{"name": "logits", "parameters":
                                      {"classification": 3}},
                                     {"name": "y"}])),
    "valid_fp32_batch_limit": (0x80, req([inp("x", "FP32", [1, 3],
                                           [0.5, 0.25, 0.125])])),
    "bad_fp32_count": (0, req([inp("x", "FP32", [2, 3], [1, 2, 3])])),
    "bad_fp32_dim": (0, req([inp("x", "FP32", [1, 4], [1, 2, 3, 4])])),
    "bad_fp32_string": (0, req([inp("x", "FP32", [1, 3], [1, "a", 3])])),
    "bad_batch_limit": (0x80, req([inp("x", "FP32", [65, 3], [0] * 195)])),
    "bad_topk": (0, req([inp("x", "FP32", [1, 3], [1, 2, 3])],
                        [{"name": "y", "parameters":
                          {"classification": 0}}])),
    "bad_unknown_output": (0, req([inp("x", "FP32", [1, 3], [1, 2, 3])],
                                  [{"name": "z"}])),
    "bad_malformed": (0, b'{"inputs": [{"name": "x", '),
    "bad_dup_key": (0, b'{"inputs": [], "inputs": []}'),
    "bad_not_object": (0, b'[]'),
    "bad_empty_inputs": (0, req([])),
    "bad_parameters": (0, req([inp("x", "FP32", [1, 3], [1, 2, 3])],
                              params={"exact": 1})),
    # set 1: source, target INT64 [-1] -> distance FP64 [-1]
    "valid_i64_exact": (1, req([inp("source", "INT64", [3], [0, 1, 2]),
                                inp("target", "INT64", [3], [5, 4, 3])],
                               params={"exact": True})),
    "valid_i64_topk_1d": (1, req([inp("source", "INT64", [40],
                                      list(range(40))),
                                  inp("target", "INT64", [40], [0] * 40)],
                                 [{"name": "distance", "parameters":
                                   {"classification": 39}}])),
    "bad_i64_batches": (1, req([inp("source", "INT64", [2], [0, 1]),
                                inp("target", "INT64", [3], [5, 4, 3])])),
    "bad_i64_missing": (1, req([inp("source", "INT64", [1], [0])])),
    "bad_i64_twice": (1, req([inp("source", "INT64", [1], [0]),
                              inp("source", "INT64", [1], [0])])),
    "bad_i64_real": (1, req([inp("source", "INT64", [1], [0.5]),
                             inp("target", "INT64", [1], [1])])),
    "bad_datatype": (1, req([inp("source", "FP32", [1], [0]),
                             inp("target", "INT64", [1], [1])])),
    "bad_shape_negative": (1, req([inp("source", "INT64", [-1], []),
                                   inp("target", "INT64", [1], [1])])),
    "bad_too_many_values": (1, req([inp("source", "INT64", [5000], [0]),
                                    inp("target", "INT64", [5000], [1])])),
    # set 2: image UINT8 [-1,-1,3], mask BOOL [-1] -> score, label
    "valid_u8_bool": (2, req([inp("image", "UINT8", [1, 2, 3],
                                  [[[0, 1, 2], [253, 254, 255]]]),
                              inp("mask", "BOOL", [1], [True])],
                             [{"name": "score", "parameters":
                               {"classification": 1}},
                              {"name": "label"}])),
    "valid_u8_empty_batch": (2, req([inp("image", "UINT8", [0, 4, 3], []),
                                     inp("mask", "BOOL", [0], [])])),
    "bad_u8_range": (2, req([inp("image", "UINT8", [1, 1, 3], [0, 1, 256]),
                             inp("mask", "BOOL", [1], [False])])),
    "bad_bool_int": (2, req([inp("image", "UINT8", [1, 1, 3], [0, 1, 2]),
                             inp("mask", "BOOL", [1], [1])])),
    "bad_too_deep": (2, req([inp("image", "UINT8", [1, 1, 3],
                                 [[[[[[[[[[1]]]]]]]]], 2, 3]),
                             inp("mask", "BOOL", [1], [False])])),
    # set 3: weight FP64 [-1], table INT32 [2,2] -> index INT64 [-1,4]
    "valid_f64_i32": (3, req([
        inp("table", "INT32", [2, 2], [[1, -2], [2147483647, -2147483648]]),
        inp("weight", "FP64", [2], [0.1, -1e300])], [{"name": "index"}])),
    "bad_i32_range": (3, req([inp("table", "INT32", [2, 2],
                                  [1, 2, 3, 2147483648])])),
    # set 4: FP16, UINT16, BF16: binary only
    "bad_fp16_json": (4, req([inp("half", "FP16", [1, 2], [1, 2]),
                              inp("count", "UINT16", [1], [1]),
                              inp("brain", "BF16", [1, 1, 2], [1, 2])])),
}


def binary(set_, header, blob):
    assert len(header) < 1 << 13
    return struct.pack("<H", len(header) | set_ << 13) + header + blob


def binreq(inputs, outputs=None):
    return req(inputs, outputs)


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
i64 = lambda *v: struct.pack("<%dq" % len(v), *v)

BINARY_SEEDS = {
    "valid_fp32": binary(0, binreq([inp("x", "FP32", [2, 3], nbytes=24)]),
                         f32(1, 2, 3, float("nan"), float("inf"), -0.0)),
    "valid_fp32_topk": binary(0, binreq(
        [inp("x", "FP32", [1, 3], nbytes=12)],
        [{"name": "logits", "parameters": {"classification": 2}}]),
        f32(0.1, 0.9, 0.5)),
    "valid_i64": binary(1, binreq([inp("source", "INT64", [2], nbytes=16),
                                   inp("target", "INT64", [2], nbytes=16)]),
                        i64(0, 1) + i64(-1, 2 ** 63 - 1)),
    "valid_i64_mixed": binary(1, binreq([inp("source", "INT64", [1], [7]),
                                         inp("target", "INT64", [1],
                                             nbytes=8)]),
                              i64(3)),
    "valid_u8_bool": binary(2, binreq([inp("image", "UINT8", [1, 2, 3],
                                           nbytes=6),
                                       inp("mask", "BOOL", [1], nbytes=1)]),
                            bytes([0, 1, 2, 3, 4, 255, 1])),
    "valid_f64_i32": binary(3, binreq([inp("weight", "FP64", [1], nbytes=8),
                                       inp("table", "INT32", [2, 2],
                                           nbytes=16)]),
                            struct.pack("<d", 0.25) +
                            struct.pack("<4i", 1, 2, 3, 4)),
    "valid_fp16_u16_bf16": binary(4, binreq(
        [inp("half", "FP16", [2, 2], nbytes=8),
         inp("count", "UINT16", [2], nbytes=4),
         inp("brain", "BF16", [2, 1, 2], nbytes=8)]),
        struct.pack("<4e", 1.5, -2, 0, 65504) + struct.pack("<2H", 0, 65535) +
        bytes(range(8))),
    "bad_size_mismatch": binary(0, binreq([inp("x", "FP32", [1, 3],
                                               nbytes=8)]), f32(1, 2)),
    "bad_truncated": binary(0, binreq([inp("x", "FP32", [1, 3],
                                           nbytes=12)]), f32(1, 2)),
    "bad_trailing": binary(0, binreq([inp("x", "FP32", [1, 3], nbytes=12)]),
                           f32(1, 2, 3) + b"\0\0\0\0"),
    "bad_both": binary(0, binreq([inp("x", "FP32", [1, 3], [1, 2, 3],
                                      nbytes=12)]), f32(1, 2, 3)),
    "bad_negative_size": binary(0, binreq([inp("x", "FP32", [1, 3],
                                               nbytes=-12)]), f32(1, 2, 3)),
    "bad_header_cut": binary(0, b"", binreq([inp("x", "FP32", [1, 3],
                                                 nbytes=12)])),
    "bad_fp16_json": binary(4, binreq([inp("half", "FP16", [1, 2],
                                           [1, 2])]), b""),
}

B64_SEEDS = {
    "valid_padded": base64.b64encode(b"\x89PNG\r\n\x1a\n\0"),
    "valid_unpadded": base64.b64encode(b"\xff\xd8\xff\xe0ab").rstrip(b"="),
    "valid_urlsafe": base64.urlsafe_b64encode(bytes(range(250, 256))),
    "valid_empty": b"",
    "valid_nonzero_tail_bits": b"QR==",
    "bad_length": b"QUJDR",
    "bad_char": b"QUJ*RA==",
    "bad_inner_pad": b"QQ==QQ==",
    "bad_space": b"QUJD RA==",
}


def write(name, files):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    for fname, data in sorted(files.items()):
        with open(os.path.join(out, fname), "wb") as f:
            f.write(data)


write("oip_json", {k: bytes([s]) + b for k, (s, b) in JSON_SEEDS.items()})
write("oip_binary", BINARY_SEEDS)
write("base64", B64_SEEDS)
