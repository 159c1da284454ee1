"""tdtest: the harness of tinyd's integration tests (Python 3, stdlib only).

Tests talk to the built daemon as a client would: they start
$TD_BUILDDIR/server/tinyd on a free loopback port with a temporary
repository (--models) and state directory, wait until /v2/health/ready
answers, speak HTTP through http.client or raw sockets, and stop it with a
signal. Results are printed as TAP so automake's tap-driver counts every
case:

    t = tdtest.TAP()

    @t.test("health answers")
    def _():
        ...assert...

    t.run()

Nothing here knows how the daemon works inside; only docs/API.md.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TD_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.environ.get("TD_BUILDDIR") or SRCDIR
# TD_TINYD runs the tests against another binary (an installed daemon).
TINYD = (os.environ.get("TD_TINYD")
         or os.path.join(BUILDDIR, "server", "tinyd"))

# How long a daemon may take to become ready or to exit. Generous so a
# loaded 2-core CI machine (or an ASan build) does not make tests flaky.
START_TIMEOUT = float(os.environ.get("TD_START_TIMEOUT", "15"))
STOP_TIMEOUT = float(os.environ.get("TD_STOP_TIMEOUT", "15"))


# ------------------------------------------------------------------ TAP

class Skip(Exception):
    """Raised by TAP.skip (or directly) in a case that cannot run here:
    reported as `ok N - name # SKIP why`."""


class TAP:
    """Collects test cases and runs them in order, printing TAP."""

    @staticmethod
    def skip(reason):
        raise Skip(reason)

    def __init__(self):
        self.cases = []
        self.cleanups = []
        self.setups = []

    def test(self, name, todo=None):
        """Register a case. todo: why a known daemon bug makes it fail;
        TAP reports it as TODO (automake: XFAIL), and as XPASS - an error
        - once the bug is fixed, so the marker gets removed."""
        def register(fn):
            self.cases.append((name, fn, todo))
            return fn
        return register

    def setup(self, fn):
        """Run fn before the cases; if it fails, every case fails with its
        diagnostic (the plan is still printed, so nothing goes uncounted)."""
        self.setups.append(fn)
        return fn

    def cleanup(self, fn):
        """Run fn after all cases (even when one failed)."""
        self.cleanups.append(fn)
        return fn

    def run(self):
        print("1..%d" % len(self.cases), flush=True)
        setup_error = None
        try:
            for fn in self.setups:
                fn()
        except Exception:
            setup_error = traceback.format_exc().rstrip().splitlines()
        failed = 0
        for i, (name, fn, todo) in enumerate(self.cases, 1):
            if setup_error:
                print("not ok %d - %s" % (i, name))
                diag("setup failed:\n" + "\n".join(setup_error[-40:])
                     if i == 1 else "setup failed (see case 1)")
                continue
            t0 = time.monotonic()
            mark = " # TODO %s" % todo if todo else ""
            try:
                fn()
            except Skip as why:
                print("ok %d - %s # SKIP %s" % (i, name, why))
                sys.stdout.flush()
                continue
            except Exception:  # any exception is this case failing
                failed += 1
                print("not ok %d - %s%s" % (i, name, mark))
                for line in traceback.format_exc().rstrip().splitlines():
                    print("# " + line)
                report_crashed_daemons()
            else:
                print("ok %d - %s%s" % (i, name, mark))
                diag("%.2fs" % (time.monotonic() - t0))
            sys.stdout.flush()
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:
                print("# cleanup failed:")
                for line in traceback.format_exc().rstrip().splitlines():
                    print("# " + line)
        sys.stdout.flush()
        # Failures are the `not ok` lines; a non-zero status would make the
        # TAP driver count one more ERROR. It is kept for a crashed script.
        sys.exit(0)


_daemons = []   # every Daemon started, to explain a failure by a crash


def report_crashed_daemons():
    """After a failed case: show the stderr of any tinyd that exited
    without being told to (a crash explains the failures that follow)."""
    for d in _daemons:
        if d.proc is not None and d.proc.poll() is not None and \
                not d.stopping and not d.crash_reported:
            d.crash_reported = True
            diag("tinyd (port %s) exited by itself with status %s; stderr:\n%s"
                 % (d.port, d.proc.returncode, d.log()[-3000:]))


def diag(msg):
    """A TAP diagnostic line (shown in the test's .log)."""
    for line in str(msg).splitlines():
        print("# " + line)
    sys.stdout.flush()


def check(cond, msg):
    """assert that survives python -O and says what was wrong."""
    if not cond:
        raise AssertionError(msg)


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def close_enough(got, want, what, tol=1e-4):
    check(len(got) == len(want),
          "%s: %d values, want %d" % (what, len(got), len(want)))
    for i, (g, w) in enumerate(zip(got, want)):
        if abs(g - w) > tol * max(1.0, abs(w)):
            raise AssertionError("%s[%d]: got %r, want %r" % (what, i, g, w))


def wait_for(pred, timeout, what, interval=0.02):
    """Poll pred() until true; raise naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


# ------------------------------------------------------------ safetensors

_DTYPES = {"F32": ("<f", 4), "F64": ("<d", 8), "I32": ("<i", 4),
           "I64": ("<q", 8), "U8": ("<B", 1)}


def flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for v in x:
            out.extend(flatten(v))
        return out
    return [x]


def safetensors_bytes(tensors, metadata=None):
    """Encode a safetensors file.

    tensors: list of (name, dtype, shape, values) with values flat or nested
    (row-major). The header is padded with spaces to 8 bytes, as the
    reference writer does; tensors follow back to back in the given order.
    """
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, dtype, shape, values in tensors:
        fmt, size = _DTYPES[dtype]
        flat = flatten(values)
        data = b"".join(struct.pack(fmt, v) for v in flat)
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def read_safetensors(path_or_bytes):
    """Decode a safetensors file -> (metadata, {name: (dtype, shape, raw)}).

    Format: 8-byte little-endian header length, the JSON header, then the
    tensors' raw little-endian bytes at their data_offsets. raw is bytes;
    values(raw, dtype) unpacks it."""
    data = path_or_bytes
    if isinstance(path_or_bytes, str):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    tensors = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        tensors[name] = (h["dtype"], list(h["shape"]), data[base + a:base + b])
    return meta, tensors


def values(raw, dtype="F32"):
    """The numbers of a raw little-endian tensor, as a flat list."""
    fmt, size = _DTYPES[dtype]
    return list(struct.unpack("<%d%s" % (len(raw) // size, fmt[1]), raw))


def safetensors_raw(tensors, metadata=None):
    """Encode a safetensors file from already packed tensors.

    tensors: list of (name, dtype, shape, raw bytes), written in order (the
    shape is not checked against the byte count, to build broken files)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def write_atomic(path, data):
    """Write a file the way a careful operator would: temp + rename."""
    tmp = os.path.join(os.path.dirname(path),
                       ".tmp-%d-%s" % (os.getpid(), os.path.basename(path)))
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Linear:
    """A `linear` model: logits = x . W^T + b, W is (C, F), b is (C,)."""

    def __init__(self, weight, bias, labels=None):
        self.weight = [list(map(float, row)) for row in weight]
        self.bias = list(map(float, bias))
        self.labels = labels
        self.classes = len(self.weight)
        self.features = len(self.weight[0])

    @classmethod
    def seeded(cls, seed, classes=3, features=4, labels=None):
        """Small deterministic weights (exact in binary32)."""
        rng = _Lcg(seed)
        w = [[rng.small() for _ in range(features)] for _ in range(classes)]
        b = [rng.small() for _ in range(classes)]
        return cls(w, b, labels)

    def file_bytes(self, **overrides):
        """The model file. overrides: metadata=..., weight_shape=...,
        bias_shape=..., drop=("bias",) to build broken variants."""
        meta = {"kind": "linear"}
        if self.labels is not None:
            meta["labels"] = json.dumps(self.labels)
        meta = overrides.get("metadata", meta)
        tensors = [
            ("weight", "F32", overrides.get("weight_shape",
                                            [self.classes, self.features]),
             self.weight),
            ("bias", "F32", overrides.get("bias_shape", [self.classes]),
             self.bias),
        ]
        drop = overrides.get("drop", ())
        tensors = [t for t in tensors if t[0] not in drop]
        return safetensors_bytes(tensors, meta)

    def save(self, repo, name, **overrides):
        path = os.path.join(repo, name + ".safetensors")
        write_atomic(path, self.file_bytes(**overrides))
        return path

    def expected(self, rows):
        """logits (N, C) for inputs rows (N, F), computed in float64."""
        return [[sum(x * w for x, w in zip(row, wrow)) + b
                 for wrow, b in zip(self.weight, self.bias)]
                for row in rows]

    def inputs(self, n, seed=1):
        rng = _Lcg(seed + 1000)
        return [[rng.small() for _ in range(self.features)] for _ in range(n)]


class _Lcg:
    """Deterministic small numbers (k/8 in [-2, 2]) without `random`
    state shared across tests; such values are exact in float32."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 12345) & 0xFFFFFFFF

    def small(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return ((self.s >> 8) % 33 - 16) / 8.0


def infer_body(model_rows, name="input", datatype="FP32", shape=None, **extra):
    rows = model_rows
    body = {"inputs": [{
        "name": name,
        "datatype": datatype,
        "shape": shape if shape is not None else [len(rows), len(rows[0])],
        "data": flatten(rows),
    }]}
    body.update(extra)
    return body


# ---------------------------------------------------------------- daemon

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers   # http.client.HTTPMessage (case-insensitive)
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("body is not JSON (%s): %r"
                                 % (e, self.body[:300]))

    def error(self):
        """The `error` message of a JSON error body (asserted present)."""
        doc = self.json()
        check(isinstance(doc, dict) and isinstance(doc.get("error"), str)
              and doc["error"], "no {\"error\": \"...\"} in %r" % (doc,))
        return doc["error"]

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


class Daemon:
    """One tinyd process on a free loopback port.

    repo/state default to fresh temp dirs (removed on stop). args are extra
    flags. notify: a NOTIFY_SOCKET address string to export. env: extra
    environment. port: listen there (0: let tinyd pick) instead of a free
    port found here. config: None, or extra `key = value` lines of a config file
    given with --config, which then also carries listen, models and state
    (instead of flags). Use as a context manager or call start()/stop().
    """

    def __init__(self, repo=None, state=None, args=(), env=None,
                 notify=None, wait=True, config=None, port=None):
        self.tmp = tempfile.mkdtemp(prefix="tdtest-")
        self.repo = repo or os.path.join(self.tmp, "models")
        self.state = state or os.path.join(self.tmp, "state")
        os.makedirs(self.repo, exist_ok=True)
        os.makedirs(self.state, exist_ok=True)
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.notify = notify
        self.wait = wait
        self.config = config
        self.config_path = os.path.join(self.tmp, "tinyd.conf")
        self.proc = None
        self.stopping = False        # set once a test signals it to stop
        self.crash_reported = False
        self.fixed_port = port    # None: a free port is picked per start
        self.port = None
        self.stderr_path = os.path.join(self.tmp, "stderr.log")

    # -- process

    def command(self):
        if self.config is not None:
            with open(self.config_path, "w") as f:
                f.write("# tdtest\n\nlisten = 127.0.0.1:%d\nmodels = %s\n"
                        "state = %s\n" % (self.port, self.repo, self.state))
                for line in self.config:
                    f.write(line + "\n")
            return [TINYD, "--config", self.config_path] + self.args
        return [TINYD, "--listen", "127.0.0.1:%d" % self.port,
                "--models", self.repo, "--state", self.state] + self.args

    def environ(self):
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                  "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(k, None)
        if self.notify:
            env["NOTIFY_SOCKET"] = self.notify
        env.update(self.extra_env)
        return env

    def start(self):
        check(os.access(TINYD, os.X_OK), "%s is not built" % TINYD)
        for attempt in range(3):
            self.port = (free_port() if self.fixed_port is None
                         else self.fixed_port)
            self._errf = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=self._errf,
                stderr=self._errf, env=self.environ())
            if self not in _daemons:
                _daemons.append(self)
            if not self.wait:
                return self
            try:
                self.wait_ready()
                return self
            except AssertionError:
                # Another process may have taken the port in between.
                if self.proc.poll() is not None and attempt < 2 and \
                        "in use" in self.log().lower():
                    continue
                self.kill()
                raise
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.crash_reported = True
                raise AssertionError(
                    "tinyd exited with %s before it was ready; stderr:\n%s"
                    % (self.proc.returncode, self.log()[-3000:]))
            try:
                r = self.get("/v2/health/ready", timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.02)
        raise AssertionError("tinyd not ready after %.0fs (last: %r); "
                             "stderr:\n%s" % (timeout, last,
                                              self.log()[-3000:]))

    def send_signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.stopping = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("tinyd did not exit within %.1fs; stderr:\n%s"
                                 % (timeout, self.log()[-2000:])) from None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal and wait; returns the exit status (negative: signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopping = True
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("tinyd ignored signal %d for %.1fs"
                                     % (sig, timeout)) from None
        self._errf.close()
        return self.proc.returncode

    def kill(self):
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        """Stop (if running) and remove the temp dirs. A daemon that does
        not stop is killed (tests check stop() itself). Raises only when
        stderr holds a sanitizer report (an --enable-asan build)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop(timeout=5)
        except AssertionError:
            pass
        finally:
            self.kill()
            reports = self.sanitizer_reports()
            shutil.rmtree(self.tmp, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer report on tinyd's stderr:\n"
                                 + reports)

    def sanitizer_reports(self):
        """ASan/LSan/UBSan findings on stderr ('' if none), with context."""
        text = self.log()
        m = re.search(r"^.*(ERROR: (Address|Leak)Sanitizer|runtime error:|"
                      r"UndefinedBehaviorSanitizer).*$", text, re.M)
        return text[m.start():m.start() + 4000] if m else ""

    def check_clean_exit(self):
        """SIGTERM, then assert exit 0 and no sanitizer report."""
        rc = self.stop()
        reports = self.sanitizer_reports()
        check(not reports, "sanitizer report:\n" + reports)
        eq(rc, 0, "exit status after SIGTERM")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def hup_and_wait(self, pred, what, timeout=10):
        """SIGHUP, then poll pred() (a reload is asynchronous)."""
        self.send_signal(signal.SIGHUP)
        return wait_for(pred, timeout, what)

    # -- HTTP

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10,
                conn=None):
        own = conn is None
        c = conn or self.conn(timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
            elif isinstance(body, str):
                body = body.encode()
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            if own:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body=body, **kw)

    def infer(self, model, body, **kw):
        return self.post("/v2/models/%s/infer" % model, body, **kw)

    def models(self):
        """{name: entry} from /v2/models."""
        r = self.get("/v2/models")
        eq(r.status, 200, "GET /v2/models status")
        return {m["name"]: m for m in r.json()["models"]}

    def metrics(self):
        r = self.get("/metrics")
        eq(r.status, 200, "GET /metrics status")
        return r.body.decode("utf-8")

    def raw(self, timeout=10):
        """A connected raw socket, for requests http.client cannot make."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s


def logits_of(resp, name="logits"):
    """(shape, flat data) of an output in an infer response."""
    doc = resp.json()
    outs = {o["name"]: o for o in doc.get("outputs", [])}
    check(name in outs, "no output %r in %r" % (name, doc))
    return outs[name]["shape"], outs[name]["data"]


def check_infer(d, model, lin, rows, what="infer"):
    """POST rows to model and compare with lin's exact answer."""
    r = d.infer(model, infer_body(rows))
    eq(r.status, 200, "%s status (body %r)" % (what, r.body[:300]))
    shape, data = logits_of(r)
    eq(shape, [len(rows), lin.classes], what + " output shape")
    close_enough(data, flatten(lin.expected(rows)), what + " logits")


def read_http_response(sock, timeout=10):
    """Read one HTTP/1.1 response from a raw socket -> Response.

    Handles Content-Length and chunked bodies and skips 1xx answers."""
    sock.settimeout(timeout)
    f = sock.makefile("rb")
    try:
        while True:
            status_line = f.readline()
            if not status_line:
                raise AssertionError("connection closed before a response")
            parts = status_line.decode("latin-1").split(None, 2)
            status = int(parts[1])
            msg = http.client.parse_headers(f)
            if 100 <= status < 200:
                continue
            break
        if msg.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                body += f.read(size)
                f.readline()
        elif msg.get("Content-Length") is not None:
            body = f.read(int(msg["Content-Length"]))
        else:
            body = f.read()
        return Response(status, msg, body)
    finally:
        f.close()


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket.

    abstract=True binds in the abstract namespace (NOTIFY_SOCKET=@name)."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "tdtest-%d-%d" % (os.getpid(), id(self))
            self.sock.bind("\0" + name)
            self.address = "@" + name
            self.dir = None
        else:
            self.dir = tempfile.mkdtemp(prefix="tdnotify-")
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.address = path
        self.messages = []    # every datagram received, in order
        self.cursor = 0       # messages before this were consumed

    def wait_for(self, key, timeout=10):
        """Consume datagrams until one has the line `key` (e.g. "READY=1")
        and return its index in self.messages. Datagrams before it are
        consumed too, so successive calls check the order of events."""
        deadline = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.messages):
                i = self.cursor
                self.cursor += 1
                if key in self.messages[i].split("\n"):
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s on NOTIFY_SOCKET within %.1fs; "
                                     "got %r" % (key, timeout, self.messages))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(data.decode("utf-8", "replace"))

    def drain(self, seconds):
        """Collect datagrams for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.messages.append(data.decode("utf-8", "replace"))

    def close(self):
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Hammer:
    """Threads that POST infer requests in a loop and count failures.

    check(rows) -> None or a string describing what was wrong."""

    def __init__(self, d, model, lin_choices, threads=4):
        self.d = d
        self.model = model
        self.lins = lin_choices   # any of these answers is correct
        self.stop_ev = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,),
                                         daemon=True) for i in range(threads)]

    def _loop(self, i):
        rows = self.lins[0].inputs(2, seed=i)
        wants = [flatten(l.expected(rows)) for l in self.lins]
        while not self.stop_ev.is_set():
            try:
                r = self.d.infer(self.model, infer_body(rows), timeout=10)
                if r.status != 200:
                    raise AssertionError("status %d: %r" % (r.status, r.body))
                _, data = logits_of(r)
                if not any(len(data) == len(w) and
                           all(abs(a - b) < 1e-4 for a, b in zip(data, w))
                           for w in wants):
                    raise AssertionError("wrong logits %r" % (data,))
                with self.lock:
                    self.ok += 1
            except Exception as e:
                with self.lock:
                    self.failures.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
