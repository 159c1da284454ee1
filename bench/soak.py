#!/usr/bin/env python3
"""soak: mixed traffic against one tinyd for a long time, with a SIGHUP
every 30 s (each one swapping a model file) and small graph submissions in
between; counts failed requests and samples the daemon's resident memory.

    bench/soak.py [--minutes 10] [--threads 4] [--hup-every 30]
                  [--graph-every 20] [--warmup 60] [--sample-every 5]
                  [--log FILE]

Run from the build directory (or set TD_BUILDDIR / TD_SRCDIR). TD_TINYD
runs another binary, e.g. an --enable-asan build; the daemon's stderr is
then searched for sanitizer reports at the end. Loopback only.

Traffic, round robin per client thread: GET /v2/health/ready, infer on a
linear model (answers checked against either of its two versions, since
reloads swap them), infer on the TinyNet fixture (logits checked against
PyTorch's), :classify of a JPEG, distance queries on the bundled oracle
(models/zoo/city.safetensors, checked against each other: a bound within
its factor of the exact answer), and GET /metrics. A failure is any status
but the expected one, a connection error, or a wrong answer.

Prints requests by type, failures (the goal is 0), the daemon's VmRSS after
warm-up and at the end, and the growth in percent (the goal is < 5%).
Exit status: 0 when there were no failures and no sanitizer report.
"""

import sys
sys.dont_write_bytecode = True
import argparse
import collections
import os
import platform
import random
import shutil
import signal
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("TD_SRCDIR") or os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import tdtest  # noqa: E402
import tinyfix  # noqa: E402

JPEG = os.path.join(SRC, "tests", "fixtures", "image", "photo_97x61.jpg")
CITY = os.path.join(SRC, "models", "zoo", "city.safetensors")
CITY_NODES = 1920   # numbered from 1 (docs: models/zoo/README.md)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, args):
        self.args = args
        self.d = tdtest.Daemon()
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.failures = collections.Counter()
        self.examples = []
        self.samples = []           # (seconds since start, VmRSS kB)
        self.hups = 0
        self.graphs = 0
        self.lins = [tdtest.Linear.seeded(11, classes=10, features=64),
                     tdtest.Linear.seeded(12, classes=10, features=64)]
        with open(JPEG, "rb") as f:
            self.jpeg = f.read()

    # -- bookkeeping

    def ok(self, kind):
        with self.lock:
            self.counts[kind] += 1

    def fail(self, kind, why):
        with self.lock:
            self.counts[kind] += 1
            self.failures[kind] += 1
            if len(self.examples) < 20:
                self.examples.append("%.0fs %s: %s" % (
                    time.monotonic() - self.t0, kind, str(why)[:300]))

    # -- one request of each kind; raise on anything unexpected

    def health(self):
        r = self.d.get("/v2/health/ready")
        tdtest.eq(r.status, 200, "status")

    def metrics(self):
        r = self.d.get("/metrics")
        tdtest.eq(r.status, 200, "status")
        tdtest.check(b"tinyd_http_requests_total" in r.body, "no counters")

    def infer_linear(self, rnd):
        rows = self.lins[0].inputs(4, seed=rnd.randrange(1000))
        r = self.d.infer("lin", tdtest.infer_body(rows))
        tdtest.eq(r.status, 200, "status (%r)" % r.body[:200])
        _, data = tdtest.logits_of(r)
        wants = [tdtest.flatten(l.expected(rows)) for l in self.lins]
        tdtest.check(any(len(data) == len(w) and all(
            abs(a - b) < 1e-4 for a, b in zip(data, w)) for w in wants),
            "logits match neither version")

    def infer_tinynet(self, rnd):
        i = rnd.randrange(tinyfix.OURS.n)
        r = self.d.infer("tiny", tinyfix.infer_body(tinyfix.OURS, [i]))
        tdtest.eq(r.status, 200, "status (%r)" % r.body[:200])
        tinyfix.check_logits(r, tinyfix.OURS, [i])

    def classify(self, rnd):
        r = self.d.post("/v1/models/tiny:classify?top_k=3", self.jpeg,
                        headers={"Content-Type": "image/jpeg"})
        tdtest.eq(r.status, 200, "status (%r)" % r.body[:200])
        preds = r.json()["predictions"]
        tdtest.check(len(preds) == 1 and len(preds[0]) == 3,
                     "predictions %r" % preds)

    def distance(self, rnd):
        pairs = [(rnd.randint(1, CITY_NODES), rnd.randint(1, CITY_NODES))
                 for _ in range(8)]
        body = {"inputs": [
            {"name": "source", "datatype": "INT64", "shape": [8],
             "data": [p[0] for p in pairs]},
            {"name": "target", "datatype": "INT64", "shape": [8],
             "data": [p[1] for p in pairs]}]}
        r = self.d.infer("city", body)
        tdtest.eq(r.status, 200, "status (%r)" % r.body[:200])
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        body["parameters"] = {"exact": True}
        rx = self.d.infer("city", body)
        tdtest.eq(rx.status, 200, "exact status (%r)" % rx.body[:200])
        exact = {o["name"]: o["data"] for o in rx.json()["outputs"]}
        for a, f, e in zip(out["distance"], out["factor"],
                           exact["distance"]):
            tdtest.check(e is not None and e - 1e-9 <= a <= f * e + 1e-9,
                         "bound %r factor %r exact %r" % (a, f, e))

    # -- loops

    def client(self, i):
        rnd = random.Random(i)
        kinds = [("health", lambda: self.health()),
                 ("infer_linear", lambda: self.infer_linear(rnd)),
                 ("infer_tinynet", lambda: self.infer_tinynet(rnd)),
                 ("classify", lambda: self.classify(rnd)),
                 ("distance", lambda: self.distance(rnd)),
                 ("metrics", lambda: self.metrics())]
        k = i
        while not self.stop_ev.is_set():
            name, fn = kinds[k % len(kinds)]
            k += 1
            try:
                fn()
                self.ok(name)
            except Exception as e:  # every surprise is a failure
                self.fail(name, e)

    def reloader(self):
        """SIGHUP every hup_every seconds, each time swapping lin's file
        for its other version first, so every reload really swaps."""
        v = 0
        while not self.stop_ev.wait(self.args.hup_every):
            v ^= 1
            self.lins[v].save(self.d.repo, "lin")
            self.d.send_signal(signal.SIGHUP)
            with self.lock:
                self.hups += 1

    def submitter(self):
        """A small graph every graph_every seconds: submit, wait for the
        build, check one exact distance, delete it."""
        n = 0
        while not self.stop_ev.wait(self.args.graph_every):
            n += 1
            name = "soak-%d" % n
            w, h = 20, 15
            rnd = random.Random(n)
            edges = []
            for y in range(h):
                for x in range(w):
                    v = y * w + x
                    if x + 1 < w:
                        edges.append((v, v + 1, rnd.randint(1, 9)))
                    if y + 1 < h:
                        edges.append((v, v + w, rnd.randint(1, 9)))
            body = "".join("%d %d %d\n" % e for e in edges)
            try:
                r = self.d.post("/v1/graphs?name=%s&eps=0.5" % name, body)
                tdtest.eq(r.status, 202, "submit (%r)" % r.body[:200])
                job = r.json()["id"]
                deadline = time.monotonic() + 120
                while True:
                    r = self.d.get("/v1/graphs/" + job)
                    tdtest.eq(r.status, 200, "job status")
                    state = r.json()["state"]
                    if state != "queued" and state != "building":
                        break
                    tdtest.check(time.monotonic() < deadline, "build slow")
                    time.sleep(0.2)
                tdtest.eq(state, "ready", "job state (%r)" % r.json())
                tdtest.wait_for(lambda: name in self.d.models(), 10,
                                name + " listed")
                q = {"inputs": [
                    {"name": "source", "datatype": "INT64", "shape": [1],
                     "data": [0]},
                    {"name": "target", "datatype": "INT64", "shape": [1],
                     "data": [w * h - 1]}], "parameters": {"exact": True}}
                r = self.d.infer(name, q)
                tdtest.eq(r.status, 200, "query (%r)" % r.body[:200])
                r = self.d.request("DELETE", "/v1/graphs/" + job)
                tdtest.eq(r.status, 200, "delete (%r)" % r.body[:200])
                self.ok("graph")
            except Exception as e:
                self.fail("graph", e)
            with self.lock:
                self.graphs += 1

    def sampler(self):
        while not self.stop_ev.is_set():
            try:
                kb = rss_kb(self.d.proc.pid)
            except OSError:
                kb = 0
            with self.lock:
                self.samples.append((time.monotonic() - self.t0, kb))
            self.stop_ev.wait(self.args.sample_every)

    # -- run

    def run(self):
        a = self.args
        self.lins[0].save(self.d.repo, "lin")
        tinyfix.install(self.d.repo, "tiny", tinyfix.OURS)
        shutil.copyfile(CITY, os.path.join(self.d.repo, "city.safetensors"))
        self.d.start()
        print("soak: tinyd %s pid %d on 127.0.0.1:%d, %.1f min, %d client "
              "threads, SIGHUP every %gs, a graph every %gs"
              % (tdtest.TINYD, self.d.proc.pid, self.d.port, a.minutes,
                 a.threads, a.hup_every, a.graph_every), flush=True)
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.client, args=(i,))
                   for i in range(a.threads)]
        threads += [threading.Thread(target=self.reloader),
                    threading.Thread(target=self.submitter),
                    threading.Thread(target=self.sampler)]
        for t in threads:
            t.daemon = True
            t.start()
        end = self.t0 + a.minutes * 60
        last = self.t0
        while time.monotonic() < end:
            time.sleep(min(5, max(0, end - time.monotonic())))
            if time.monotonic() - last >= 60:
                last = time.monotonic()
                with self.lock:
                    print("soak: %4.0fs %d requests, %d failures, RSS %d kB"
                          % (last - self.t0, sum(self.counts.values()),
                             sum(self.failures.values()),
                             self.samples[-1][1] if self.samples else 0),
                          flush=True)
        self.stop_ev.set()
        for t in threads:
            t.join(130)
        elapsed = time.monotonic() - self.t0
        final_rss = rss_kb(self.d.proc.pid)
        rc = self.d.stop()
        log = self.d.log()
        if a.log:
            with open(a.log, "w") as f:
                f.write(log)
        reports = self.d.sanitizer_reports()
        shutil.rmtree(self.d.tmp, ignore_errors=True)
        return self.report(elapsed, final_rss, rc, reports)

    def report(self, elapsed, final_rss, rc, reports):
        a = self.args
        total = sum(self.counts.values())
        failed = sum(self.failures.values())
        print()
        print("machine: %s, nproc %d, %s; %s UTC" % (
            platform.node(), os.cpu_count(), cpu_model(),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime())))
        print("duration %.1f s, %d SIGHUPs, %d graphs submitted"
              % (elapsed, self.hups, self.graphs))
        print("%-14s %9s %9s %9s" % ("type", "requests", "req/s", "failed"))
        for k in sorted(self.counts):
            print("%-14s %9d %9.1f %9d" % (k, self.counts[k],
                                           self.counts[k] / elapsed,
                                           self.failures[k]))
        print("%-14s %9d %9.1f %9d" % ("total", total, total / elapsed,
                                       failed))
        for e in self.examples:
            print("  failure: " + e)
        warm = [kb for t, kb in self.samples if t >= a.warmup and kb]
        if warm:
            base = warm[0]
            growth = 100.0 * (final_rss - base) / base
            print("RSS after %gs warm-up %d kB, at the end %d kB, max %d kB: "
                  "growth %+.2f%%" % (a.warmup, base, final_rss,
                                       max(warm + [final_rss]), growth))
        else:
            print("RSS: no sample after the warm-up (run longer)")
        print("RSS samples (s:kB): " + " ".join(
            "%.0f:%d" % s for s in self.samples[::max(1, len(self.samples)
                                                         // 24)]))
        print("exit status after SIGTERM: %s" % rc)
        print("sanitizer reports on stderr: %s"
              % ("none" if not reports else "\n" + reports))
        return 0 if failed == 0 and not reports and rc == 0 else 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--hup-every", type=float, default=30.0)
    p.add_argument("--graph-every", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds before the RSS baseline is taken")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--log", help="keep the daemon's stderr here")
    args = p.parse_args()
    if args.warmup >= args.minutes * 60:
        args.warmup = args.minutes * 60 / 5
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
