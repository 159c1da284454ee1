#!/usr/bin/env python3
"""Write the seed corpora for fuzz_graph_dimacs, fuzz_graph_edgelist and
fuzz_graph_json into corpus/graph_*/.

Per format: small valid graphs (comments, parallel arcs, self-loops, real
weights, isolated vertices), one invalid input per kind of check the reader
makes, and gzip-wrapped copies (one member, two concatenated members, and a
truncated stream) so the fuzzer reaches the inflate path from the start.
The gzip bytes are deterministic (mtime 0). Re-run after changing it:
    python3 tests/fuzz/gen_corpus_graph.py
"""
import gzip
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def gz(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


DIMACS = {
    "valid_small.gr": b"c a road-like graph\np sp 4 5\n"
                      b"a 1 2 7\na 2 1 7\na 2 3 1\na 3 4 2\na 1 4 20\n",
    "valid_loops_parallel.gr": b"p sp 3 4\na 1 1 5\na 1 2 9\na 1 2 3\n"
                               b"a 3 2 0\n",
    "valid_real_crlf.gr": b"c crlf\r\np sp 2 1\r\na 1 2 2.5e0\r\n",
    "valid_isolated.gr": b"p sp 6 1\n\n   \na 6 1 1\nc trailing comment",
    "bad_count.gr": b"p sp 3 2\na 1 2 1\n",
    "bad_range.gr": b"p sp 3 1\na 1 4 1\n",
    "bad_weight.gr": b"p sp 2 1\na 1 2 -1\n",
    "bad_nan.gr": b"p sp 2 1\na 1 2 nan\n",
    "bad_two_p.gr": b"p sp 2 0\np sp 2 0\n",
    "bad_arc_first.gr": b"a 1 2 1\np sp 2 1\n",
    "bad_too_many_nodes.gr": b"p sp 100000 0\n",
    "bad_line.gr": b"p sp 2 1\nx 1 2 1\n",
}

EDGELIST = {
    "valid_small.txt": b"# comment\n0 1 7\n1 2\n2 3 0.5\n% other comment\n"
                       b"3 0 1e2\n",
    "valid_loops_parallel.txt": b"0 0 1\n0 1 5\n1 0 2\n\n4 1\n",
    "valid_tabs_crlf.txt": b"0\t1\t3\r\n1\t2\r\n",
    "valid_empty.txt": b"# nothing here\n\n",
    "bad_weight.txt": b"0 1 -3\n",
    "bad_inf.txt": b"0 1 inf\n",
    "bad_token.txt": b"0 x 1\n",
    "bad_trailing.txt": b"0 1 2 3\n",
    "bad_too_big_id.txt": b"0 4294967296\n",
    "bad_limit_id.txt": b"0 5000\n",
}

JSON = {
    "valid_small.json": b'{"nodes": 4, "edges": [[0, 1, 7], [1, 2], '
                        b'[2, 3, 0.5], [3, 0, 1e2]]}',
    "valid_loops_parallel.json": b'{"nodes": 3, "edges": [[0, 0, 1], '
                                 b'[0, 1, 5], [1, 0, 2]], "name": "x"}',
    "valid_no_edges.json": b'{"nodes": 0, "edges": []}',
    "bad_nodes.json": b'{"nodes": -1, "edges": []}',
    "bad_edges.json": b'{"nodes": 2, "edges": {}}',
    "bad_edge_shape.json": b'{"nodes": 2, "edges": [[0]]}',
    "bad_range.json": b'{"nodes": 2, "edges": [[0, 2, 1]]}',
    "bad_weight.json": b'{"nodes": 2, "edges": [[0, 1, -1.5]]}',
    "bad_syntax.json": b'{"nodes": 2, "edges": [[0, 1, 1]',
    "bad_too_many_nodes.json": b'{"nodes": 100000, "edges": []}',
    "bad_not_object.json": b'[1, 2, 3]',
}


def write(name, files):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    first_valid = None
    for fname, data in sorted(files.items()):
        with open(os.path.join(out, fname), "wb") as f:
            f.write(data)
        if fname.startswith("valid_") and first_valid is None:
            first_valid = data
    # gzip-wrapped: every valid seed, two members, a truncated stream.
    for fname, data in sorted(files.items()):
        if fname.startswith("valid_"):
            with open(os.path.join(out, fname + ".gz"), "wb") as f:
                f.write(gz(data))
    half = len(first_valid) // 2
    with open(os.path.join(out, "valid_two_members.gz"), "wb") as f:
        f.write(gz(first_valid[:half]) + gz(first_valid[half:]))
    with open(os.path.join(out, "bad_truncated.gz"), "wb") as f:
        f.write(gz(first_valid)[:-9])


write("graph_dimacs", DIMACS)
write("graph_edgelist", EDGELIST)
write("graph_json", JSON)
