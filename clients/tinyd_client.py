"""tinyd_client: a Python 3 client for tinyd, standard library only.

tinyd speaks the Open Inference Protocol v2 (KServe v2 / Triton REST) plus
a few endpoints of its own (docs/API.md). This module wraps every one of
them in a method of `Client`, turns the daemon's error answers into
`TinydError` (HTTP status + the server's {"error": ...} message) and a
refused connection into `TinydConnectionError`.

    >>> from tinyd_client import Client
    >>> c = Client("http://127.0.0.1:8080")           # doctest: +SKIP
    >>> c.ready()                                      # doctest: +SKIP
    True
    >>> [m["name"] for m in c.models()]                # doctest: +SKIP
    ['city']
    >>> c.distance("city", [1], [1920])                # doctest: +SKIP
    ([51234.0], [1.1])

HTTPS and bearer tokens:

    >>> c = Client("https://tinyd.example:8443", token="s3cret",
    ...            cafile="/etc/tinyd/ca.pem")         # doctest: +SKIP

Every call opens one connection and closes it: simple and thread-safe (a
Client may be shared between threads). Nothing is cached.
"""

import base64
import http.client
import json
import os
import ssl
import struct
import time
import urllib.parse

__all__ = ["Client", "TinydError", "TinydConnectionError", "JobFailed",
           "tensor"]

DEFAULT_URL = "http://127.0.0.1:8080"

# OIP datatype -> struct format letter (little-endian) for binary tensors.
_BINARY_FORMATS = {"FP32": "f", "FP64": "d", "INT8": "b", "INT16": "h",
                   "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
                   "UINT32": "I", "UINT64": "Q", "BOOL": "?"}


class TinydError(Exception):
    """The daemon answered with an HTTP error status.

    status: the HTTP status (int); message: the server's {"error"} text
    (or the raw body when it was not JSON); headers: the response headers.
    """

    def __init__(self, status, message, headers=None):
        super().__init__("HTTP %d: %s" % (status, message))
        self.status = status
        self.message = message
        self.headers = headers


class TinydConnectionError(Exception):
    """The daemon could not be reached (refused, DNS, TLS handshake, timeout)."""


class JobFailed(Exception):
    """A graph build ended `failed` or `cancelled`; job is its record."""

    def __init__(self, job):
        super().__init__("graph job %s %s: %s" % (
            job.get("id"), job.get("state"), job.get("error", "")))
        self.job = job


def tensor(name, datatype, data, shape=None):
    """An OIP input tensor. data is flat or nested (row-major); shape
    defaults to the nesting of data.

    >>> tensor("input", "FP32", [[1, 2], [3, 4]])
    {'name': 'input', 'datatype': 'FP32', 'shape': [2, 2], 'data': [1, 2, 3, 4]}
    """
    if shape is None:
        shape, d = [], data
        while isinstance(d, (list, tuple)):
            shape.append(len(d))
            d = d[0] if d else None
    return {"name": name, "datatype": datatype, "shape": list(shape),
            "data": _flatten(data)}


def _flatten(x):
    if not isinstance(x, (list, tuple)):
        return [x]
    out = []
    for v in x:
        if isinstance(v, (list, tuple)):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


class Client:
    """A connection profile for one tinyd.

    url: http://HOST:PORT or https://HOST:PORT (a path prefix is kept, so
    tinyd behind a reverse proxy at /tinyd works); token: the bearer token
    sent with every request (needed for graph submission, deletion, load
    and unload when the daemon has --tokens); cafile: PEM file of the CA
    (or the self-signed certificate) to verify HTTPS with, else the system
    store; insecure: skip certificate verification (testing only);
    timeout: seconds per request.
    """

    def __init__(self, url=DEFAULT_URL, token=None, cafile=None,
                 timeout=60.0, insecure=False):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url %r: expected http://HOST:PORT or "
                             "https://HOST:PORT" % url)
        self.url = url
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._ssl = None
        if u.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=cafile)
            if insecure:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    # ------------------------------------------------------------ plumbing

    def request(self, method, path, body=None, headers=None, query=None,
                ok=(200, 201, 202)):
        """One HTTP exchange -> (status, headers, body bytes).

        body: bytes, str, or a dict/list sent as JSON. query: dict of
        parameters (None values are left out). A status not in ok raises
        TinydError; a transport failure raises TinydConnectionError.
        """
        hdrs = {"Accept": "application/json"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs.update(headers or {})
        target = self.prefix + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                target += "?" + urllib.parse.urlencode(q)
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(self.host, self.port,
                                               timeout=self.timeout,
                                               context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self.host, self.port,
                                              timeout=self.timeout)
        try:
            conn.request(method, target, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            raise TinydConnectionError("%s %s:%d: %s" % (
                self.scheme, self.host, self.port, e)) from e
        finally:
            conn.close()
        if r.status not in ok:
            raise TinydError(r.status, _error_message(data), r.headers)
        return r.status, r.headers, data

    def _json(self, method, path, body=None, **kw):
        _, _, data = self.request(method, path, body=body, **kw)
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise TinydError(502, "%s %s: the answer is not JSON (%s)"
                             % (method, path, e)) from None

    @staticmethod
    def _name(name):
        return urllib.parse.quote(str(name), safe="")

    # -------------------------------------------------------------- health

    def live(self):
        """True when /v2/health/live answers 200."""
        try:
            self.request("GET", "/v2/health/live")
            return True
        except TinydError:
            return False

    def ready(self):
        """True when /v2/health/ready answers 200 (False on 503)."""
        try:
            self.request("GET", "/v2/health/ready")
            return True
        except TinydError as e:
            if e.status == 503:
                return False
            raise

    def health(self):
        """{"live": bool, "ready": bool}.

        >>> Client().health()                          # doctest: +SKIP
        {'live': True, 'ready': True}
        """
        return {"live": self.live(), "ready": self.ready()}

    def server_metadata(self):
        """GET /v2: {"name", "version", "extensions"}."""
        return self._json("GET", "/v2")

    # -------------------------------------------------------------- models

    def models(self):
        """The repository: [{"name", "kind", "state", "reason"?}, ...]."""
        return self._json("GET", "/v2/models")["models"]

    def model(self, name):
        """A model's metadata: inputs, outputs, kind, parameters (labels)."""
        return self._json("GET", "/v2/models/" + self._name(name))

    def model_ready(self, name):
        """True if the model serves, False if its file failed to load;
        TinydError(404) if there is no such model."""
        try:
            self.request("GET", "/v2/models/%s/ready" % self._name(name))
            return True
        except TinydError as e:
            if e.status == 503:
                return False
            raise

    def infer(self, model, inputs, outputs=None, parameters=None,
              request_id=None, binary=False):
        """OIP inference -> the response {"model_name", "outputs": [...]}.

        inputs: a list of tensors (see tensor()). binary=True sends the
        tensors' data with Triton's binary tensor extension (raw
        little-endian bytes after the JSON header) instead of JSON numbers;
        the answer is JSON either way.

        >>> c.infer("lin", [tensor("input", "FP32", [[0.5, 1, 2, 0]])])  # doctest: +SKIP
        {'model_name': 'lin', 'outputs': [{'name': 'logits', ...}]}
        """
        body = {"inputs": [dict(t) for t in inputs]}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        if parameters:
            body["parameters"] = parameters
        if request_id is not None:
            body["id"] = str(request_id)
        path = "/v2/models/%s/infer" % self._name(model)
        if not binary:
            return self._json("POST", path, body)
        blobs = []
        for t in body["inputs"]:
            fmt = _BINARY_FORMATS.get(t["datatype"])
            if fmt is None:
                raise ValueError("binary data of datatype %s is not "
                                 "supported" % t["datatype"])
            flat = _flatten(t.pop("data"))
            raw = struct.pack("<%d%s" % (len(flat), fmt), *flat)
            t["parameters"] = dict(t.get("parameters") or {},
                                   binary_data_size=len(raw))
            blobs.append(raw)
        header = json.dumps(body).encode()
        return self._json("POST", path, header + b"".join(blobs), headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header))})

    def classify(self, model, images, top_k=5):
        """Images -> one list of predictions per image, most likely first:
        [[{"label", "index", "probability"}, ...], ...].

        images: file names and/or bytes (JPEG or PNG), sent in one JSON
        request as base64 instances.

        >>> c.classify("net", ["cat.jpg"], top_k=1)      # doctest: +SKIP
        [[{'label': 'cat', 'index': 3, 'probability': 0.91}]]
        """
        instances = []
        for img in images:
            if isinstance(img, str):
                with open(img, "rb") as f:
                    img = f.read()
            instances.append({"b64": base64.b64encode(img).decode("ascii")})
        doc = self._json("POST", "/v1/models/%s:classify" % self._name(model),
                         {"instances": instances, "top_k": int(top_k)})
        return doc["predictions"]

    def classify_raw(self, model, image, content_type=None, top_k=5):
        """One image as the raw body (image/jpeg or image/png, guessed from
        its first bytes unless given) -> its list of predictions."""
        if isinstance(image, str):
            with open(image, "rb") as f:
                image = f.read()
        if content_type is None:
            content_type = ("image/png" if image[:4] == b"\x89PNG"
                            else "image/jpeg")
        doc = self._json("POST", "/v1/models/%s:classify" % self._name(model),
                         image, headers={"Content-Type": content_type},
                         query={"top_k": int(top_k)})
        return doc["predictions"][0]

    # ------------------------------------------------------------ distances

    def distance(self, model, sources, targets, exact=False):
        """Distances between sources[i] and targets[i] on an oracle model
        -> (distances, factors). A distance is None when there is no path;
        the true distance d satisfies d <= distance <= factor * d, and
        exact=True computes exact distances (factor 1).

        >>> c.distance("city", [1, 5], [1920, 6])      # doctest: +SKIP
        ([51234.0, 812.0], [1.1, 1.1])
        """
        sources, targets = list(sources), list(targets)
        if len(sources) != len(targets):
            raise ValueError("%d sources but %d targets"
                             % (len(sources), len(targets)))
        doc = self.infer(model, [
            tensor("source", "INT64", [int(s) for s in sources]),
            tensor("target", "INT64", [int(t) for t in targets])],
            parameters={"exact": True} if exact else None)
        outs = {o["name"]: o["data"] for o in doc["outputs"]}
        return outs["distance"], outs["factor"]

    def table(self, model, sources, targets, exact=False, chunk=8192):
        """The many-to-many table: every source against every target, in
        ceil(len(sources) * len(targets) / chunk) infer calls
        -> (distances, factors), each a list of len(sources) rows of
        len(targets) values (None: no path).

        >>> c.table("city", [1, 2], [10, 20, 30])[0]   # doctest: +SKIP
        [[912.0, 1830.5, 2711.0], [845.0, 1766.0, 2650.5]]
        """
        sources, targets = list(sources), list(targets)
        pairs = [(s, t) for s in sources for t in targets]
        dist, fac = [], []
        for i in range(0, len(pairs), max(1, int(chunk))):
            part = pairs[i:i + chunk]
            d, f = self.distance(model, [p[0] for p in part],
                                 [p[1] for p in part], exact=exact)
            dist.extend(d)
            fac.extend(f)
        n = len(targets)
        return ([dist[r * n:(r + 1) * n] for r in range(len(sources))],
                [fac[r * n:(r + 1) * n] for r in range(len(sources))])

    # --------------------------------------------------------------- graphs

    def submit_graph(self, graph, name=None, format=None, mode=None,
                     eps=None):
        """Upload a graph to build a distance oracle -> the job record
        (202; "id", "state": "queued", ...). graph: a file name or bytes
        (DIMACS .gr, edge list or JSON, gzip or not). Needs a token when
        the daemon has --tokens.

        >>> job = c.submit_graph("roads.gr.gz", name="roads", eps=0.1)   # doctest: +SKIP
        >>> c.wait_job(job["id"])["state"]                               # doctest: +SKIP
        'ready'
        """
        if isinstance(graph, str):
            with open(graph, "rb") as f:
                graph = f.read()
        return self._json("POST", "/v1/graphs", bytes(graph),
                          headers={"Content-Type":
                                   "application/octet-stream"},
                          query={"name": name, "format": format,
                                 "mode": mode,
                                 "eps": None if eps is None else repr(eps)})

    def jobs(self):
        """Every graph job, newest first."""
        return self._json("GET", "/v1/graphs")["graphs"]

    def job(self, job_id):
        """One job: state, progress (0..1), phase, nodes, edges, error."""
        return self._json("GET", "/v1/graphs/" + self._name(job_id))

    def delete_job(self, job_id):
        """Cancel a queued or running build, or delete a finished job and
        its oracle -> {"id", "deleted": true}."""
        return self._json("DELETE", "/v1/graphs/" + self._name(job_id))

    def wait_job(self, job_id, progress=None, interval=0.2, timeout=None):
        """Poll a job until it is ready -> its final record.

        progress(job) is called on every poll. Raises JobFailed when the
        job ends failed or cancelled, TimeoutError after timeout seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress is not None:
                progress(job)
            if job.get("state") == "ready":
                return job
            if job.get("state") in ("failed", "cancelled"):
                raise JobFailed(job)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("graph job %s still %s after %gs" % (
                    job_id, job.get("state"), timeout))
            time.sleep(interval)

    # ----------------------------------------------------------- repository

    def repository_index(self, ready=None):
        """Triton's repository index: [{"name", "version", "state",
        "reason"?}]; ready=True lists only the models that serve."""
        body = {"ready": bool(ready)} if ready is not None else None
        return self._json("POST", "/v2/repository/index", body)

    def load(self, name):
        """(Re)load a model from the repository now; answers once done."""
        return self._json("POST", "/v2/repository/models/%s/load"
                          % self._name(name), b"")

    def unload(self, name):
        """Stop serving a model (it stays unloaded across SIGHUP)."""
        return self._json("POST", "/v2/repository/models/%s/unload"
                          % self._name(name), b"")

    # -------------------------------------------------------------- metrics

    def metrics(self):
        """The Prometheus text of /metrics."""
        _, _, data = self.request("GET", "/metrics",
                                  headers={"Accept": "text/plain"})
        return data.decode("utf-8")


def _error_message(data):
    try:
        doc = json.loads(data.decode("utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
        if isinstance(doc, dict) and "ready" in doc:
            return "not ready"
    except ValueError:
        pass
    text = data.decode("utf-8", "replace").strip()
    return text[:500] or "(empty body)"


def from_environ(**overrides):
    """A Client configured from TINYD_URL, TINYD_TOKEN and TINYD_CACERT."""
    kw = {"url": os.environ.get("TINYD_URL") or DEFAULT_URL,
          "token": os.environ.get("TINYD_TOKEN") or None,
          "cafile": os.environ.get("TINYD_CACERT") or None}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return Client(**kw)
