#!/usr/bin/env python3
"""Generate the bundled demo road network: a deterministic, planar,
city-like graph in DIMACS format (vertices numbered from 1).

A W x H grid of intersections with jittered positions; streets join grid
neighbours with their Euclidean length in metres; about 12% of streets are
closed (never disconnecting the graph); every 5th row and column is a fast
avenue (weights scaled by 0.6, as if they were travel times); about 8% of
blocks get one diagonal street. Diagonals of different blocks never cross
and a block has at most one, so the graph stays planar.

Usage: make_city_graph.py W H SEED > city.gr
Standard library only: the output is committed, CI never runs this."""
import math
import random
import sys


def main():
    w, h, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(seed)
    pos = {}
    for y in range(h):
        for x in range(w):
            pos[(x, y)] = (x * 100 + rnd.uniform(-30, 30),
                           y * 100 + rnd.uniform(-30, 30))
    vid = {p: i + 1 for i, p in enumerate(sorted(pos, key=lambda q: (q[1], q[0])))}
    edges = {}

    def length(a, b):
        (ax, ay), (bx, by) = pos[a], pos[b]
        return math.hypot(ax - bx, ay - by)

    for (x, y) in pos:
        for dx, dy in ((1, 0), (0, 1)):
            q = (x + dx, y + dy)
            if q in pos:
                wt = length((x, y), q)
                if (dy == 0 and y % 5 == 0) or (dx == 0 and x % 5 == 0):
                    wt *= 0.6
                edges[((x, y), q)] = max(1, int(round(wt)))
    # Close streets at random, keeping the graph connected (union-find over
    # the streets that stay).
    order = list(edges)
    rnd.shuffle(order)
    closed = set(order[: len(order) * 12 // 100])
    parent = {p: p for p in pos}

    def find(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p
    kept = [e for e in order if e not in closed]
    for a, b in kept:
        parent[find(a)] = find(b)
    for e in sorted(closed):
        a, b = e
        if find(a) != find(b):
            parent[find(a)] = find(b)
            kept.append(e)
    # Diagonals through some blocks (at most one per block: planar).
    for (x, y) in sorted(pos):
        if (x + 1, y + 1) in pos and rnd.random() < 0.08:
            q = (x + 1, y + 1)
            kept.append(((x, y), q))
            edges[((x, y), q)] = max(1, int(round(length((x, y), q))))
    arcs = []
    for a, b in kept:
        wt = edges[(a, b)]
        arcs.append((vid[a], vid[b], wt))
        arcs.append((vid[b], vid[a], wt))
    out = sys.stdout
    out.write("c tinyd demo city: %dx%d grid, seed %d (models/make_city_graph.py)\n"
              % (w, h, seed))
    out.write("p sp %d %d\n" % (len(pos), len(arcs)))
    for u, v, wt in sorted(arcs):
        out.write("a %d %d %d\n" % (u, v, wt))


if __name__ == "__main__":
    main()
