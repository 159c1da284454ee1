#!/usr/bin/env python3
"""Scale-out on loopback, as docs/SCALING.md describes it: two tinyd
replicas sharing one read-only repository behind nginx, a client hammering
inference through nginx while the replicas are reloaded one after the other
(SIGHUP) and restarted one after the other (SIGTERM, start again): no
request fails. nginx runs as the current user from a temporary prefix, in
the foreground, on a free loopback port; the test skips without it (Debian
package nginx-light)."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean (distcheck)
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tdtest  # noqa: E402
from tdtest import check, eq  # noqa: E402

NGINX = "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) \
    else shutil.which("nginx")
ROWS = [[0.5, -1.0, 2.0, 0.25]]
V1 = tdtest.Linear.seeded(21, features=4)
V2 = tdtest.Linear.seeded(22, features=4)

t = tdtest.TAP()


class Replica(tdtest.Daemon):
    """A daemon that keeps its port across restarts (nginx names it)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.fixed_port = tdtest.free_port()

    def start(self):
        self.port = self.fixed_port
        self._errf = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._errf,
            stderr=self._errf, env=self.environ())
        self.wait_ready()
        return self


class Front:
    """The HTTP client side of tdtest.Daemon, aimed at nginx."""

    def __init__(self, port):
        self.port = port

    conn = tdtest.Daemon.conn
    request = tdtest.Daemon.request
    get = tdtest.Daemon.get
    post = tdtest.Daemon.post
    infer = tdtest.Daemon.infer


NGINX_CONF = """\
# tinyd behind nginx, the docs/SCALING.md example on loopback ports.
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream tinyd {{
        server 127.0.0.1:{p1} max_fails=1 fail_timeout=1s;
        server 127.0.0.1:{p2} max_fails=1 fail_timeout=1s;
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://tinyd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A replica that refuses the connection (stopped), drops it, or
            # answers 503 (draining, still loading) is skipped; inference is
            # free of side effects, so POSTs may be retried too.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, upstream_ports):
        self.tmp = tempfile.mkdtemp(prefix="tdnginx-")
        self.port = tdtest.free_port()
        user = ""
        if os.geteuid() == 0:
            # Workers would switch to `nobody` and could not use the temp
            # prefix; keep them as the current user.
            user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(user=user, tmp=self.tmp,
                                      p1=upstream_ports[0],
                                      p2=upstream_ports[1], port=self.port))
        self.log = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.tmp, "-c", self.conf, "-e",
             os.path.join(self.tmp, "error.log")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        front = Front(self.port)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: %s" % self.errors())
            try:
                return front.get("/v2/health/ready", timeout=2).status == 200
            except OSError:
                return False
        tdtest.wait_for(up, 15, "nginx to answer")

    def errors(self):
        out = ""
        for n in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.tmp, n), "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
                out += "\n".join(l for l in lines
                                  if "[info]" not in l)[-2000:] + "\n"
            except OSError:
                pass
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)   # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def snapshot(d):
    return {n: os.stat(os.path.join(d, n)).st_mtime_ns
            for n in sorted(os.listdir(d))}


def served(r, model="lin"):
    """Successful inferences of model on replica r (its metrics)."""
    for line in r.metrics().splitlines():
        if line.startswith('tinyd_inference_request_success_total{model="%s"}'
                           % model):
            return int(float(line.split()[-1]))
    return 0


def serves(r, lin):
    try:
        tdtest.check_infer(r, "lin", lin, ROWS, "replica")
        return True
    except AssertionError:
        return False


# ------------------------------------------------------------------ setup

if NGINX is None:
    print("1..0 # SKIP nginx not found (Debian package nginx-light)")
    sys.exit(0)

shared = tempfile.mkdtemp(prefix="tdshared-")
V1.save(shared, "lin")
tdtest.write_atomic(os.path.join(shared, "city.safetensors"),
                    open(os.path.join(tdtest.SRCDIR, "models", "zoo",
                                      "city.safetensors"), "rb").read())
os.chmod(shared, 0o555)   # read-only to everyone (root still may write)
r1 = Replica(repo=shared)
r2 = Replica(repo=shared)
nginx = None


@t.cleanup
def _():
    if nginx is not None:
        nginx.close()
    r1.close()
    r2.close()
    os.chmod(shared, 0o755)
    shutil.rmtree(shared, ignore_errors=True)


def operator_update(lin):
    """Replace lin in the shared repository (temp + rename)."""
    os.chmod(shared, 0o755)
    try:
        lin.save(shared, "lin")
    finally:
        os.chmod(shared, 0o555)


@t.test("two replicas on one read-only repository, both behind nginx")
def _():
    global nginx
    r1.start()
    r2.start()
    nginx = Nginx([r1.port, r2.port])
    front = Front(nginx.port)
    before = snapshot(shared)
    for _ in range(40):
        tdtest.check_infer(front, "lin", V1, ROWS, "through nginx")
    n1, n2 = served(r1), served(r2)
    tdtest.diag("replica 1 served %d, replica 2 served %d" % (n1, n2))
    check(n1 > 0 and n2 > 0, "nginx used one replica only (%d, %d)"
          % (n1, n2))
    eq(n1 + n2, 40, "requests served")
    eq(snapshot(shared), before, "the shared repository was written")
    check(not stat.S_IMODE(os.stat(shared).st_mode) & 0o222,
          "the repository is not read-only")


@t.test("rolling reload (SIGHUP one replica, wait, then the other): no "
        "request fails")
def _():
    front = Front(nginx.port)
    with tdtest.Hammer(front, "lin", [V1, V2], threads=4) as h:
        time.sleep(1)
        operator_update(V2)
        for r in (r1, r2):
            r.send_signal(signal.SIGHUP)
            tdtest.wait_for(lambda: serves(r, V2), 15, "replica on v2")
            time.sleep(1)
    tdtest.diag("%d requests, %d failed" % (h.ok, len(h.failures)))
    eq(h.failures[:5], [], "failed requests")
    check(h.ok > 50, "only %d requests went through" % h.ok)
    for _ in range(10):
        tdtest.check_infer(front, "lin", V2, ROWS, "after the rolling reload")


@t.test("rolling restart (SIGTERM one replica, start it again, then the "
        "other): nginx retries the live one, no request fails")
def _():
    front = Front(nginx.port)
    downtime_ok = []
    with tdtest.Hammer(front, "lin", [V2], threads=4) as h:
        time.sleep(1)
        for r in (r1, r2):
            eq(r.stop(), 0, "replica exit status after SIGTERM")
            ok0 = h.ok
            time.sleep(1.5)   # one replica down: the other serves all
            downtime_ok.append(h.ok - ok0)
            r.start()
            # Before stopping the next one, wait until nginx sends requests
            # to this one again: it keeps a replica that failed out of
            # rotation for fail_timeout, and with both out it answers 502.
            tdtest.wait_for(lambda: served(r) > 0, 15,
                            "nginx to use the restarted replica")
            time.sleep(0.5)
    tdtest.diag("%d requests, %d failed; served while a replica was down: "
                "%r" % (h.ok, len(h.failures), downtime_ok))
    if h.failures:
        tdtest.diag("nginx error.log:\n" + nginx.errors()[-1500:])
    eq(h.failures[:5], [], "failed requests")
    check(all(n > 10 for n in downtime_ok),
          "requests stalled while a replica was down: %r" % downtime_ok)
    eq(nginx.proc.poll(), None, "nginx is running")


@t.test("graph submissions go to one designated replica; the others serve "
        "only the shared repository")
def _():
    # Each replica has its own --state: an oracle built on replica 1 is
    # served by replica 1 only, which is why docs/SCALING.md sends
    # submissions to one replica (or gives the oracles a shared repository).
    r = r1.post("/v1/graphs?name=tri&eps=0.5", "0 1 1\n1 2 1\n0 2 5\n")
    eq(r.status, 202, "submit on replica 1 (%r)" % r.body[:200])
    tdtest.wait_for(lambda: r1.models().get("tri", {}).get("state")
                    == "READY", 30, "tri on replica 1")
    check("tri" not in r2.models(), "replica 2 must not know tri")
    check(os.listdir(os.path.join(r1.state, "oracles")) == ["tri.safetensors"],
          "the oracle is in replica 1's state")
    eq(os.listdir(os.path.join(r2.state, "oracles")) if os.path.isdir(
        os.path.join(r2.state, "oracles")) else [], [], "replica 2's oracles")


@t.test("both replicas exit 0 on SIGTERM, with no sanitizer report")
def _():
    for r in (r1, r2):
        r.check_clean_exit()


t.run()
