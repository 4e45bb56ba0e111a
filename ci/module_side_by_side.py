#!/usr/bin/env python3
"""envoy-qat's Envoy dynamic module side by side with Envoy's own compressor and decompressor,
in the real stock Envoy 1.40 (run with build/venv/bin/python; ci/test-module.sh does).

One Envoy (--concurrency 2) runs eight listeners, in pairs, in front of ONE upstream written
here (raw sockets, HTTP/1.1: any status and headers, content-length / chunked / close-delimited
bodies, trailers, chunks sent in lockstep with the client, resets mid-body):

  mod-default / builtin-default   our compressor with filter_config {} (= Envoy's defaults) /
                                  envoy.filters.http.compressor + gzip with level 6, memory_level 5,
                                  window_bits 12, chunk_size 4096 written out, default filter settings
  mod-custom / builtin-custom     every compressor field away from its default, the same on both
  mod-dec / builtin-dec           decompressor {} + compressor {} / envoy.filters.http.decompressor
                                  (gzip, requests only) + the built-in compressor
  mod-dec-custom / builtin-dec-custom   decompressor with max_output_bytes / max_inflate_ratio 20

Each module listener has its own metrics_namespace, so its counters can be told from the others.
Each case goes to both listeners of its pair over HTTP/1.1 (a raw socket) and HTTP/2 (`curl
--http2-prior-knowledge`), and the status, completeness, Content-Encoding, Content-Length, Vary,
ETag, Content-Type, Cache-Control, Transfer-Encoding, trailers, the body decoded with Python's
zlib (C zlib: independent of both compressors), what reached the upstream (its Accept-Encoding;
for request cases its Content-Encoding, framing and body) and the compressor counters the request
moved must be the same. Any difference is a FAIL that prints both sides. Where the module differs
on purpose (the decompressor, module/src/decompressor.rs) the case says so, skips those fields
and checks the module's side against what it promises instead.

Then: streaming (the upstream sends chunk i+1 only after the client has decoded chunk i, so a
filter that holds data back stalls and fails; no timing involved), a client that stops reading
8 MiB for a while (watermarks), upstream resets and client aborts mid-body (Envoy keeps serving,
closes the upstream, no stream left active), the counter totals in admin /stats,
`envoy --mode validate` of envoy-config/envoy/module-compression.yaml (the module really loads)
and of bad filter configs (refused, the log names the field), that bootstrap served over TLS, and
with --concurrency 1 a small response that completes while a big one's first chunk is still on
the module's threads (slowed by ENVOY_QAT_MODULE_TEST_DELAY_MS; ordering, not timing, is checked).

Prints one line per check ("ok: ..." / "FAIL: ..." / "skip: ..."), then "N passed, M failed";
exits 1 on any failure, 2 on usage errors.

  --module-dir DIR   directory holding libenvoy_qat_module.so (ci/test-module.sh builds it)
  --builtin-both     no module: the built-in filters on both sides (to check the harness itself)
  --only REGEX       run only the side-by-side cases whose name matches
  --sections LIST    cases,streaming,flow,resets,stats,validate,tls,concurrency (default: all)
  -v                 print what matched too
  --keep             keep the work directory (configs, Envoy logs) and print its path
"""
import argparse
import hashlib
import json
import os
import random
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
import urllib.error
import urllib.parse
import urllib.request
import zlib

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.path.join(REPO, "build", "venv", "bin", "envoy")
MODULE_NAME = "envoy_qat_module"
MODULE_FILE = f"lib{MODULE_NAME}.so"
BOOTSTRAP = os.path.join(REPO, "envoy-config", "envoy", "module-compression.yaml")

# Bounds for every wait (no test asserts on wall-clock time; these only stop hangs).
IO_TIMEOUT = 20.0         # one request, end to end
LOCKSTEP_WAIT = 8.0       # the upstream waits this long for the client to decode a chunk
READY_WAIT = 60.0         # Envoy start-up

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DYN = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
COMPRESSOR = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor"
GZIP_C = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
DECOMPRESSOR = "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor"
GZIP_D = "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"
HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# The compressor settings of the "custom" pair: every field away from its default.
CUSTOM = {
    "compression_level": 9,
    "memory_level": 9,
    "window_bits": 15,
    "chunk_size": 16384,
    "min_content_length": 100,
    "content_type": ["text/plain", "application/json"],
    "disable_on_etag_header": True,
    "remove_accept_encoding_header": True,
    "uncompressible_response_codes": [404, 410],
    # The module only: zlib-rs inline on Envoy's worker (the default pair's {} is backend auto,
    # which here, with libqatzip and no device, runs QATzip's software path on the module's threads).
    "backend": "software",
}
# Envoy's gzip decompressor defaults, written out on the built-in side.
DECOMP_DEFAULTS = {"window_bits": 15, "chunk_size": 4096, "max_inflate_ratio": 100}


# ---------------------------------------------------------------------------------------------
# Reporting

class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.lock = threading.Lock()

    def ok(self, what):
        with self.lock:
            self.passed += 1
            print(f"ok: {what}", flush=True)

    def fail(self, what, detail=""):
        with self.lock:
            self.failed += 1
            print(f"FAIL: {what}", flush=True)
            for line in str(detail).splitlines():
                print(f"    {line}", flush=True)

    def skip(self, what, why):
        with self.lock:
            self.skipped += 1
            print(f"skip: {what}: {why}", flush=True)

    def check(self, cond, what, detail=""):
        if cond:
            self.ok(what)
        else:
            self.fail(what, detail)
        return cond


R = Report()
VERBOSE = False
BUILTIN_BOTH = False


# ---------------------------------------------------------------------------------------------
# Bytes on sockets

class Reader:
    """Buffered reads from a socket: up to a separator, an exact count, or whatever is there."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def until(self, sep, limit=256 * 1024):
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("head too long")
            start = max(0, len(self.buf) - len(sep))
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def some(self, n):
        """Up to n bytes (at least one): whatever has arrived."""
        if not self.buf:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self):
        out = bytearray(self.buf)
        self.buf.clear()
        while True:
            d = self.sock.recv(65536)
            if not d:
                return bytes(out)
            out += d


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    return first, headers


class Headers:
    def __init__(self, items=()):
        self.items = list(items)

    def all(self, name):
        return [v for k, v in self.items if k == name]

    def get(self, name):
        vals = self.all(name)
        return ", ".join(vals) if vals else None

    def __repr__(self):
        return repr(self.items)


def read_chunked(r, on_data=None):
    """Reads a chunked body; returns (body, trailers)."""
    body = bytearray()
    while True:
        line = r.until(b"\r\n").strip()
        size = int(line.split(b";")[0], 16)
        if size == 0:
            trailers = []
            while True:
                line = r.until(b"\r\n")
                if line == b"\r\n":
                    return bytes(body), trailers
                k, _, v = line.decode("latin-1").partition(":")
                trailers.append((k.strip().lower(), v.strip()))
        left = size
        while left:
            d = r.some(left)
            left -= len(d)
            body += d
            if on_data:
                on_data(d)
        r.exact(2)


def reset_socket(s):
    """Close with RST (SO_LINGER 0): an abrupt reset, not a clean FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


# ---------------------------------------------------------------------------------------------
# The upstream

REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified",
           404: "Not Found", 410: "Gone", 500: "Internal Server Error"}


class Upstream:
    """HTTP/1.1 origin. GET/POST/HEAD /c/<case id>: answers as CASES[id] says, records each request
    by (case id, x-side) (x-side is added by each listener's route)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.cases = {}
        self.seen = {}
        self.notes = {}
        self.events = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def event(self, key):
        with self.lock:
            return self.events.setdefault(key, threading.Event())

    def note(self, key, text):
        with self.lock:
            self.notes.setdefault(key, []).append(text)

    def last_seen(self, cid, side):
        with self.lock:
            lst = self.seen.get((cid, side))
            return lst[-1] if lst else None

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(60)
        r = Reader(s)
        try:
            while True:
                head = r.until(b"\r\n\r\n")
                first, items = parse_head(head)
                method, target, _ = first.split(" ", 2)
                h = Headers(items)
                complete = True
                body = b""
                try:
                    if "chunked" in (h.get("transfer-encoding") or "").lower():
                        body, _ = read_chunked(r)
                    elif h.get("content-length"):
                        body = r.exact(int(h.get("content-length")))
                except (EOFError, OSError, ValueError):
                    complete = False
                cid = target.split("?")[0].rsplit("/", 1)[-1]
                side = h.get("x-side") or "?"
                with self.lock:
                    self.seen.setdefault((cid, side), []).append(
                        {"method": method, "headers": h, "body": body, "complete": complete})
                if not complete:
                    return
                spec = self.cases.get(cid)
                if spec is None:
                    s.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\n\r\nno case")
                    continue
                if not self._respond(s, spec, method, cid, side):
                    return
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _respond(self, s, spec, method, cid, side):
        """Sends the response; returns whether the connection stays open."""
        status = spec.get("status", 200)
        body = spec.get("body", b"")
        framing = spec.get("framing", "length")
        bodyless = method == "HEAD" or status in (204, 304)
        hdrs = list(spec.get("headers", []))
        if framing == "length" and status not in (204, 304):
            hdrs.append(("content-length", str(len(body))))
        elif framing == "chunked" and not bodyless:
            hdrs.append(("transfer-encoding", "chunked"))
        elif framing == "close":
            hdrs.append(("connection", "close"))
        head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        key = (cid, side)
        try:
            s.sendall(head.encode("latin-1"))
            if bodyless:
                return framing != "close"
            if framing in ("length", "close"):
                cut = spec.get("reset_after_bytes")
                if cut is not None:
                    s.sendall(body[:cut])
                    time.sleep(0.05)
                    reset_socket(s)
                    return False
                s.sendall(body)
                return framing == "length"
            chunks = spec["chunks"]
            lockstep = spec.get("lockstep", False)
            for i, c in enumerate(chunks):
                if spec.get("reset_after_chunks") == i:
                    time.sleep(0.05)
                    reset_socket(s)
                    return False
                s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
                if spec.get("abort_probe"):
                    # Wait for the client to go away, then keep writing until Envoy closes this
                    # upstream connection (it must: the stream was reset); bounded.
                    if not self.event((cid, side, "aborted")).wait(LOCKSTEP_WAIT):
                        self.note(key, "the client did not abort")
                    for _ in range(200):
                        time.sleep(0.025)
                        s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
                    self.note(key, "upstream connection still open 5 s after the client aborted")
                    return False
                if lockstep:
                    ev = self.event((cid, side, i))
                    if not ev.wait(LOCKSTEP_WAIT):
                        self.note(key, f"chunk {i} was not decoded by the client within "
                                       f"{LOCKSTEP_WAIT:.0f} s of being sent")
                        lockstep = False
            trailers = "".join(f"{k}: {v}\r\n" for k, v in spec.get("trailers", []))
            s.sendall(b"0\r\n" + trailers.encode("latin-1") + b"\r\n")
            return True
        except OSError as e:
            self.note(key, f"upstream write ended: {e.__class__.__name__}")
            self.event((cid, side, "upstream_closed")).set()
            return False


# ---------------------------------------------------------------------------------------------
# Clients

class Resp:
    def __init__(self, proto):
        self.proto = proto
        self.status = None
        self.headers = Headers()
        self.trailers = []
        self.body = b""
        self.complete = False
        self.error = None


def h1_request(port, method, path, headers=(), body=None, on_data=None, chunked_body=None,
               abort=None, timeout=IO_TIMEOUT):
    """HTTP/1.1 over a raw socket. on_data(piece) is called as body bytes arrive; abort(resp)
    returning True closes the connection there (a client that goes away mid-body)."""
    res = Resp("h1")
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        lines = [f"{method} {path} HTTP/1.1", "host: test"] + [f"{k}: {v}" for k, v in headers]
        payload = b""
        if chunked_body is not None:
            lines.append("transfer-encoding: chunked")
            payload = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunked_body if c) + b"0\r\n\r\n"
        elif body is not None:
            lines.append(f"content-length: {len(body)}")
            payload = body
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        r = Reader(s)
        while True:
            first, items = parse_head(r.until(b"\r\n\r\n"))
            res.status = int(first.split(" ")[1])
            if res.status >= 200 or res.status == 101:
                break
        res.headers = Headers(items)
        if method == "HEAD" or res.status in (204, 304):
            res.complete = True
            return res
        got = bytearray()

        def data(d):
            got.extend(d)
            if on_data:
                on_data(d)
            if abort and abort(res, bytes(got)):
                raise ConnectionAbortedError

        try:
            te = (res.headers.get("transfer-encoding") or "").lower()
            cl = res.headers.get("content-length")
            if "chunked" in te:
                _, res.trailers = read_chunked(r, data)
            elif cl is not None:
                left = int(cl)
                while left:
                    d = r.some(min(left, 65536))
                    left -= len(d)
                    data(d)
            else:
                while True:
                    try:
                        d = r.some(65536)
                    except EOFError:
                        break
                    data(d)
            res.complete = True
        except ConnectionAbortedError:
            res.error = "aborted by the client"
        except EOFError:
            res.error = "connection closed before the end of the body"
        except socket.timeout:
            res.error = "timeout"
        except OSError as e:
            res.error = f"{e.__class__.__name__}: {e}"
        res.body = bytes(got)
        return res
    except socket.timeout:
        res.error = "timeout"
        return res
    except (EOFError, OSError, ValueError) as e:
        res.error = f"{e.__class__.__name__}: {e}"
        return res
    finally:
        if abort:
            reset_socket(s)
        else:
            s.close()


def h2_request(port, method, path, headers=(), body=None, on_data=None, abort=None, work=None,
               timeout=IO_TIMEOUT):
    """HTTP/2 (prior knowledge, cleartext) through curl; the body is read from curl's stdout as it
    arrives (-N), undecoded (no --compressed)."""
    res = Resp("h2")
    fd, hdr = tempfile.mkstemp(dir=work, suffix=".h")
    os.close(fd)
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "-N", "--max-time", str(int(timeout)),
           "-D", hdr, "-o", "-"]
    if method == "HEAD":
        cmd.append("-I")
    elif method != "GET":
        cmd += ["-X", method]
    for k, v in headers:
        cmd += ["-H", f"{k}: {v}"]
    bodyfile = None
    if body is not None:
        fd, bodyfile = tempfile.mkstemp(dir=work, suffix=".b")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        cmd += ["--data-binary", "@" + bodyfile]
        if not any(k.lower() == "content-type" for k, _ in headers):
            cmd += ["-H", "content-type:"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = bytearray()
    aborted = False
    try:
        deadline = time.monotonic() + timeout + 5
        while time.monotonic() < deadline:
            d = os.read(p.stdout.fileno(), 65536)
            if not d:
                break
            if method == "HEAD":
                continue
            got += d
            if on_data:
                on_data(d)
            if abort and abort(res, bytes(got)):
                p.kill()
                aborted = True
                break
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err = p.stderr.read().decode(errors="replace").strip()
        with open(hdr, "rb") as f:
            raw = f.read()
        blocks = [b for b in raw.split(b"\r\n\r\n")]
        final = None
        rest = []
        for i, b in enumerate(blocks):
            if b.startswith(b"HTTP/"):
                st = int(b.split(b"\r\n", 1)[0].split()[1])
                if st >= 200:
                    final = b
                    rest = blocks[i + 1:]
                    res.status = st
        if final is not None:
            _, items = parse_head(final + b"\r\n")
            res.headers = Headers(items)
            for b in rest:  # curl writes trailers after the header block
                if b.strip():
                    _, t = parse_head(b"x\r\n" + b + b"\r\n")
                    res.trailers += t
        res.body = bytes(got)
        if aborted:
            res.error = "aborted by the client"
        elif p.returncode == 0:
            res.complete = True
        else:
            res.error = f"curl exit {p.returncode}: {err}"
        return res
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
        os.unlink(hdr)
        if bodyfile:
            os.unlink(bodyfile)


# ---------------------------------------------------------------------------------------------
# Bodies

WORDS = ("envoy proxy listener cluster route header gzip deflate stream filter upstream "
         "downstream the of and to in is for with on connection request response body chunk "
         "<div class=\"item\"> </div> {\"id\": 17, \"name\": \"value\"} function(x) { return x; }").split()


def text(n, seed=1):
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += (" ".join(rnd.choice(WORDS) for _ in range(12)) + "\n").encode()
    return bytes(out[:n])


def noise(n, seed=2):
    return random.Random(seed).randbytes(n)


def split(data, n):
    """n chunks (the last one takes the remainder)."""
    step = max(1, len(data) // n)
    return [data[i * step:(i + 1) * step] if i < n - 1 else data[i * step:] for i in range(n)]


def gz(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, 16 + 15)
    return c.compress(data) + c.flush()


def decode(raw):
    """(decoded, state): state 'ok' for one complete gzip member and nothing after it."""
    d = zlib.decompressobj(16 + 15)
    try:
        out = d.decompress(raw)
    except zlib.error as e:
        return b"", f"zlib error: {e}"
    if not d.eof:
        return out, "truncated gzip stream"
    if d.unused_data:
        return out, f"{len(d.unused_data)} bytes after the gzip trailer"
    return out, "ok"


def show(b):
    if b is None:
        return "None"
    h = hashlib.sha256(b).hexdigest()[:12]
    return f"{len(b)} B sha256:{h} {b[:40]!r}{'...' if len(b) > 40 else ''}"


# ---------------------------------------------------------------------------------------------
# Envoy

class Envoy:
    """A stock Envoy run: admin on a loopback port Envoy picks, listeners on ports Envoy picks."""

    def __init__(self, cfg, work, name, concurrency=2, env=None):
        self.work = work
        self.name = name
        self.cfg_path = os.path.join(work, name + ".yaml")
        with open(self.cfg_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        self.admin_file = os.path.join(work, name + ".admin")
        self.log_path = os.path.join(work, name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [ENVOY, "-c", self.cfg_path, "--concurrency", str(concurrency), "--disable-hot-restart",
             "--admin-address-path", self.admin_file, "--log-level", "info",
             "--component-log-level", "dynamic_modules:debug"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=work)
        self.admin = None
        self.ports = {}

    def wait_ready(self):
        deadline = time.monotonic() + READY_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.admin is None and os.path.exists(self.admin_file):
                a = open(self.admin_file).read().strip()
                if a:
                    self.admin = a
            if self.admin:
                try:
                    if self.get("/ready") .strip() == "LIVE":
                        ls = json.loads(self.get("/listeners?format=json"))
                        for st in ls.get("listener_statuses", []):
                            self.ports[st["name"]] = st["local_address"]["socket_address"]["port_value"]
                        return True
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.1)
        return False

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as r:
            return r.read().decode()

    def stats(self, filter=None):
        out = {}
        q = "/stats" + (f"?filter={urllib.parse.quote(filter)}" if filter else "")
        for line in self.get(q).splitlines():
            k, sep, v = line.rpartition(": ")
            if sep and v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [l for l in f if "server.cc:4" not in l and "server.cc:5" not in l]
            return "".join(lines[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def module_filter(name, filter_name, config, namespace=None):
    dmc = {"name": MODULE_NAME}
    if namespace:
        dmc["metrics_namespace"] = namespace
    return {"name": name, "typed_config": {
        "@type": DYN,
        "dynamic_module_config": dmc,
        "filter_name": filter_name,
        "filter_config": {"@type": STRING_VALUE, "value": json.dumps(config)},
    }}


def builtin_compressor(cfg):
    """envoy.filters.http.compressor + gzip from a module-style config dict."""
    common = {}
    if "min_content_length" in cfg:
        common["min_content_length"] = cfg["min_content_length"]
    if "content_type" in cfg:
        common["content_type"] = cfg["content_type"]
    resp = {"common_config": common}
    for k in ("disable_on_etag_header", "remove_accept_encoding_header", "uncompressible_response_codes"):
        if k in cfg:
            resp[k] = cfg[k]
    return {"name": "envoy.filters.http.compressor", "typed_config": {
        "@type": COMPRESSOR,
        "response_direction_config": resp,
        "compressor_library": {"name": "gzip", "typed_config": {
            "@type": GZIP_C,
            "compression_level": f"COMPRESSION_LEVEL_{cfg.get('compression_level', 6)}",
            "memory_level": cfg.get("memory_level", 5),
            "window_bits": cfg.get("window_bits", 12),
            "chunk_size": cfg.get("chunk_size", 4096),
        }},
    }}


def builtin_decompressor(max_inflate_ratio=100):
    lib = dict({"@type": GZIP_D}, **DECOMP_DEFAULTS)
    lib["max_inflate_ratio"] = max_inflate_ratio
    return {"name": "envoy.filters.http.decompressor", "typed_config": {
        "@type": DECOMPRESSOR,
        "decompressor_library": {"name": "gzip", "typed_config": lib},
        # Requests only, like the module's decompressor.
        "response_direction_config": {"common_config": {"enabled": {
            "default_value": False, "runtime_key": "test.decompressor.response.enabled"}}},
    }}


def listener(name, filters, side=None):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM,
                "stat_prefix": name,
                "codec_type": "AUTO",
                "http_protocol_options": {"enable_trailers": True},
                "route_config": {"name": name, "virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "request_headers_to_add": [{"header": {"key": "x-side", "value": side or name}}],
                    "routes": [{"match": {"prefix": "/"},
                                "route": {"cluster": "upstream", "timeout": "60s"}}],
                }]},
                "http_filters": filters + [{"name": "envoy.filters.http.router",
                                            "typed_config": {"@type": ROUTER}}],
            },
        }]}],
    }


def cluster(port, name="upstream"):
    return {
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTS,
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
        }},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


def bootstrap(listeners, clusters):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# ---------------------------------------------------------------------------------------------
# Cases

class Case:
    """One request, sent to both listeners of a pair over one protocol."""

    def __init__(self, name, spec=None, method="GET", headers=(), body=None, chunked_body=None,
                 pair="default", protos=("h1", "h2"), expect=None, upstream_view=False, design=None):
        self.name = name
        self.spec = spec or {}
        self.method = method
        self.headers = list(headers)
        self.body = body
        self.chunked_body = chunked_body
        self.pair = pair
        self.protos = protos
        self.expect = expect or {}
        self.upstream_view = upstream_view
        # A deliberate difference: (keys not compared, why, check(module view) -> [problems]).
        self.design = design


HTML = [("content-type", "text/html")]
AE = [("accept-encoding", "gzip")]


def response_cases():
    t2k = text(2000, 11)
    big = text(1 << 20, 12)
    c = []

    def add(name, spec, **kw):
        c.append(Case(name, spec, **kw))

    page = {"headers": HTML, "body": t2k}
    # Accept-Encoding variants.
    for label, ae, gz_ in (("none", None, False), ("gzip", "gzip", True), ("gzip;q=0", "gzip;q=0", False),
                           ("*", "*", True), ("identity", "identity", False),
                           ("br, gzip;q=0.5", "br, gzip;q=0.5", True), ("garbage", "x@y;;q==,", False),
                           ("GZIP upper case", "GZIP", None), ("deflate, gzip, br", "deflate, gzip, br", True),
                           ("*;q=0", "*;q=0", False), ("gzip;q=0, *", "gzip;q=0, *", None),
                           ("identity;q=0", "identity;q=0", None), ("br only", "br", False),
                           ("gzip;q=1.0 with spaces", " gzip ; q=1.0 ", None)):
        hdrs = [("accept-encoding", ae)] if ae is not None else []
        exp = {} if gz_ is None else {"content-encoding": "gzip" if gz_ else None}
        add(f"accept-encoding {label}", page, headers=hdrs, expect=exp)
    # Two Accept-Encoding header lines.
    add("accept-encoding in two header lines", page, headers=[("accept-encoding", "br"), ("accept-encoding", "gzip")])
    # Content types.
    for ct, want in (("text/html; charset=utf-8", True), ("application/json", True),
                     ("application/javascript", True), ("text/css", True), ("text/plain", True),
                     ("image/svg+xml", True), ("text/xml", True), ("application/xhtml+xml", None),
                     ("application/xml", None), ("TEXT/HTML", None), ("text/html;charset=UTF-8", None),
                     ("image/png", False), ("application/octet-stream", False), ("", None), (None, None)):
        hdrs = [("content-type", ct)] if ct is not None else []
        exp = {} if want is None else {"content-encoding": "gzip" if want else None}
        add(f"content-type {ct!r}", {"headers": hdrs, "body": t2k}, headers=AE, expect=exp)
    # Sizes around min_content_length (30 by default, 100 in the custom pair).
    for n in (0, 1, 29, 30, 31, 99, 100, 101):
        add(f"content-length {n}", {"headers": HTML, "body": text(n, n)}, headers=AE)
        add(f"content-length {n} (custom)", {"headers": [("content-type", "text/plain")], "body": text(n, n)},
            headers=AE, pair="custom")
    for n in (0, 5, 29):
        add(f"chunked body of {n} bytes (no content-length)",
            {"headers": HTML, "framing": "chunked", "chunks": [text(n, n)] if n else []}, headers=AE)
    add("close-delimited body (no length, no chunking)", {"headers": HTML, "framing": "close", "body": t2k},
        headers=AE, expect={"content-encoding": "gzip"})
    add("1 MiB body, content-length", {"headers": HTML, "body": big}, headers=AE, expect={"content-encoding": "gzip"})
    add("1 MiB body, 64 chunks", {"headers": HTML, "framing": "chunked", "chunks": split(big, 64)}, headers=AE,
        expect={"content-encoding": "gzip"})
    add("100 KiB of random bytes as text/plain", {"headers": [("content-type", "text/plain")], "body": noise(100 << 10)},
        headers=AE, expect={"content-encoding": "gzip"})
    add("5 chunks incl. empty and 1-byte ones",
        {"headers": HTML, "framing": "chunked", "chunks": [t2k[:700], b"x", t2k[700:1500], t2k[1500:]]},
        headers=AE)
    # Status codes.
    for st in (200, 201, 206, 404, 410, 500):
        hd = HTML + ([("content-range", f"bytes 0-1999/4000")] if st == 206 else [])
        add(f"status {st}", {"status": st, "headers": hd, "body": t2k}, headers=AE)
        add(f"status {st} (custom)", {"status": st, "headers": [("content-type", "text/plain")], "body": t2k},
            headers=AE, pair="custom")
    add("status 204", {"status": 204, "headers": HTML}, headers=AE)
    add("status 304", {"status": 304, "headers": HTML + [("etag", '"v1"')]}, headers=AE)
    # HEAD.
    add("HEAD", page, method="HEAD", headers=AE)
    add("HEAD, chunked", {"headers": HTML, "framing": "chunked", "chunks": [t2k]}, method="HEAD", headers=AE)
    # Cache-Control.
    add("cache-control: no-transform", {"headers": HTML + [("cache-control", "no-transform")], "body": t2k},
        headers=AE, expect={"content-encoding": None})
    add("cache-control: public, No-Transform", {"headers": HTML + [("cache-control", "public, No-Transform")],
                                                "body": t2k}, headers=AE)
    add("cache-control: max-age=60", {"headers": HTML + [("cache-control", "max-age=60")], "body": t2k},
        headers=AE, expect={"content-encoding": "gzip"})
    # Upstream already encoded.
    add("upstream content-encoding: gzip", {"headers": HTML + [("content-encoding", "gzip")], "body": gz(t2k)},
        headers=AE, expect={"content-encoding": "gzip"})
    add("upstream content-encoding: br", {"headers": HTML + [("content-encoding", "br")], "body": noise(500)},
        headers=AE, expect={"content-encoding": "br"})
    add("upstream content-encoding: identity", {"headers": HTML + [("content-encoding", "identity")], "body": t2k},
        headers=AE)
    add("upstream content-encoding: empty", {"headers": HTML + [("content-encoding", "")], "body": t2k},
        headers=AE)
    # ETags.
    for label, et in (("strong", '"abc123"'), ("weak", 'W/"abc123"'), ("malformed", "abc123")):
        for pair in ("default", "custom"):
            ct = HTML if pair == "default" else [("content-type", "text/plain")]
            add(f"etag {label} ({pair})", {"headers": ct + [("etag", et)], "body": t2k}, headers=AE, pair=pair)
    # Vary.
    for label, v in (("Origin", "Origin"), ("accept-encoding", "accept-encoding"),
                     ("Accept-Encoding, Origin", "Accept-Encoding, Origin"), ("*", "*"), ("empty", "")):
        add(f"upstream vary: {label}", {"headers": HTML + [("vary", v)], "body": t2k}, headers=AE)
        add(f"upstream vary: {label}, no accept-encoding", {"headers": HTML + [("vary", v)], "body": t2k})
    add("upstream vary in two header lines", {"headers": HTML + [("vary", "Origin"), ("vary", "Cookie")], "body": t2k},
        headers=AE)
    # Trailers.
    add("trailers", {"headers": HTML, "framing": "chunked", "chunks": split(t2k, 3),
                     "trailers": [("x-checksum", "abc"), ("x-count", "3")]}, headers=AE)
    add("trailers, not compressed", {"headers": [("content-type", "image/png")], "framing": "chunked",
                                     "chunks": split(noise(3000), 3), "trailers": [("x-checksum", "abc")]},
        headers=AE)
    # Remove accept-encoding (custom pair: remove_accept_encoding_header true).
    add("accept-encoding forwarded (default)", page, headers=AE, upstream_view=True)
    add("accept-encoding removed (custom)", {"headers": [("content-type", "text/plain")], "body": t2k},
        headers=AE, pair="custom", upstream_view=True)
    add("accept-encoding identity forwarded (custom)", {"headers": [("content-type", "text/plain")], "body": t2k},
        headers=[("accept-encoding", "identity")], pair="custom", upstream_view=True)
    add("custom: content-type out of the custom list", page, headers=AE, pair="custom",
        expect={"content-encoding": None})
    # Request bodies pass through the compressor untouched (and POST responses are compressed).
    add("POST, plain request body", page, method="POST", headers=AE + [("content-type", "text/plain")],
        body=text(5000, 3), upstream_view=True)
    return c


# The module's decompressor differs from Envoy's on purpose (module/src/decompressor.rs): it
# holds the request until the whole body is decoded and checked, so the upstream gets the
# complete decoded body with its exact Content-Length (Envoy: chunked), and corrupt or truncated
# gzip gets 400, a body over max_output_bytes / max_inflate_ratio 413, with nothing sent upstream
# (Envoy: 200, and the upstream gets a truncated body with a normal end of stream).
WHY_FRAMING = "the module holds the request and sends the exact Content-Length; Envoy streams it chunked"
WHY_REJECT = ("the module answers {status} and sends nothing upstream; Envoy's decompressor forwards "
              "what it decoded (a truncated body) with a normal end of stream")
# The module's upstream body is checked against the plaintext itself (Envoy's may be truncated).
UPSTREAM_FRAMING = ("upstream content-length", "upstream transfer-encoding", "upstream body")
REJECT_KEYS = "*"  # a different response altogether: only the module's side is checked


def decoded_in_full(plain):
    def check(v):
        p = []
        if v.get("upstream body") != plain:
            p.append(f"upstream body {show(v.get('upstream body'))}, want the decoded {show(plain)}")
        if v.get("upstream content-length") != str(len(plain)):
            p.append(f"upstream content-length {v.get('upstream content-length')!r}, want {len(plain)}")
        if v.get("upstream transfer-encoding") is not None:
            p.append(f"upstream transfer-encoding {v.get('upstream transfer-encoding')!r}, want none")
        return p
    return (UPSTREAM_FRAMING, WHY_FRAMING, check)


def rejected(status):
    def check(v):
        p = []
        if v.get("status") != status:
            p.append(f"status {v.get('status')}, want {status}")
        if "upstream request" not in v:
            p.append(f"the upstream got a request (body {show(v.get('upstream body'))}, "
                     f"complete={v.get('upstream body complete')})")
        return p
    return (REJECT_KEYS, WHY_REJECT.format(status=status), check)


def request_cases():
    """The decompressor (request direction): what reaches the upstream, and the status."""
    t = text(50000, 21)
    ok = {"headers": [("content-type", "text/plain")], "body": b"ok\n"}
    c = []

    def add(name, **kw):
        kw.setdefault("method", "POST")
        kw.setdefault("pair", "dec")
        c.append(Case(name, ok, upstream_view=True, **kw))

    GZ = [("content-encoding", "gzip")]
    add("request gzip", headers=GZ + [("content-type", "text/plain")], body=gz(t), design=decoded_in_full(t))
    add("request gzip, level 1", headers=GZ, body=gz(t, 1), design=decoded_in_full(t))
    add("request Content-Encoding GZIP", headers=[("content-encoding", "GZIP")], body=gz(t),
        design=decoded_in_full(t))
    add("request gzip, sent chunked", headers=GZ, chunked_body=split(gz(t), 7), protos=("h1",),
        design=decoded_in_full(t))
    add("request gzip, 1 MiB decoded", headers=GZ, body=gz(text(1 << 20, 22)),
        design=decoded_in_full(text(1 << 20, 22)))
    add("request identity", headers=[("content-encoding", "identity")], body=t)
    add("request without content-encoding", body=t)
    add("request br", headers=[("content-encoding", "br")], body=noise(300))
    add("request 'br, gzip'", headers=[("content-encoding", "br, gzip")], body=gz(b"pretend brotli" * 10))
    # As Envoy: the first listed coding is decoded, the rest ("br") goes on to the upstream.
    add("request 'gzip, br'", headers=[("content-encoding", "gzip, br")], body=gz(t),
        design=decoded_in_full(t))
    add("request gzip with cache-control: no-transform", headers=GZ + [("cache-control", "no-transform")], body=gz(t))
    add("request gzip, empty body", headers=GZ, body=b"", design=decoded_in_full(b""))
    add("request gzip of empty content", headers=GZ, body=gz(b""), design=decoded_in_full(b""))
    # Envoy's decompressor stops after the first member; RFC 1952 (and gzip -d) decode them all.
    two = decoded_in_full(t[:2000])
    add("request gzip, two members", headers=GZ, body=gz(t[:1000]) + gz(t[1000:2000]),
        design=(two[0], "the module decodes every gzip member (RFC 1952, as gzip -d does); Envoy's "
                "decompressor stops after the first", two[2]))
    add("request gzip, 4 MiB of zeros (ratio ~1000:1, over max_inflate_ratio 100)", headers=GZ,
        body=gz(bytes(4 << 20), 9), design=rejected(413))
    add("request gzip, 200 KB mostly zeros (~90:1 overall, under max_inflate_ratio 100)", headers=GZ,
        body=gz(bytes(200000) + noise(1500, 5), 9), design=decoded_in_full(bytes(200000) + noise(1500, 5)))
    add("request corrupt gzip", headers=GZ, body=b"\x1f\x8b\x08\x00" + noise(2000, 9), design=rejected(400))
    add("request not gzip at all", headers=GZ, body=t[:3000], design=rejected(400))
    add("request truncated gzip", headers=GZ, body=gz(t)[:5000], design=rejected(400))
    add("request gzip with a bad CRC", headers=GZ, body=gz(t)[:-8] + b"\0\0\0\0" + gz(t)[-4:], design=rejected(400))
    add("request gzip, the response compressed too", headers=GZ + [("accept-encoding", "gzip")], body=gz(t),
        design=decoded_in_full(t))
    # Custom pair: module max_output_bytes 100000 / max_inflate_ratio 20; Envoy: max_inflate_ratio 20.
    add("request gzip, 150 KB decoded (over the module's max_output_bytes 100000) (custom)", headers=GZ,
        body=gz(noise(30000, 3) + text(120000, 4)), pair="dec-custom", design=rejected(413))
    add("request gzip, 60 KB decoded (custom)", headers=GZ, body=gz(noise(20000, 3) + text(40000, 4)),
        pair="dec-custom",
        design=decoded_in_full(noise(20000, 3) + text(40000, 4)))
    return c


def view(res, case, up, upstream_side):
    """What must match between the two sides."""
    h = res.headers
    v = {"status": res.status, "complete": res.complete}
    for k in ("content-encoding", "content-length", "vary", "etag", "content-type", "cache-control"):
        v[k] = h.get(k)
    if res.proto == "h1":
        v["transfer-encoding"] = h.get("transfer-encoding")
    v["trailers"] = sorted((k, x) for k, x in res.trailers if k.startswith("x-"))
    enc = (h.get("content-encoding") or "").split(",")[-1].strip().lower()
    if enc == "gzip" and not (case.method == "HEAD" or res.status in (204, 304)):
        dec, state = decode(res.body) if res.complete else (decode(res.body)[0], "incomplete")
        v["body"] = dec
        v["gzip stream"] = state
        v["_wire"] = len(res.body)
    else:
        v["body"] = res.body
        v["_wire"] = len(res.body)
    seen = up.last_seen(case.cid, upstream_side)
    v["upstream accept-encoding"] = seen["headers"].get("accept-encoding") if seen else "<no request>"
    if case.upstream_view:
        if seen:
            sh = seen["headers"]
            v["upstream content-encoding"] = sh.get("content-encoding")
            v["upstream content-length"] = sh.get("content-length")
            v["upstream transfer-encoding"] = sh.get("transfer-encoding")
            v["upstream body"] = seen["body"]
            v["upstream body complete"] = seen["complete"]
        else:
            v["upstream request"] = None
    v["_notes"] = up.notes.get((case.cid, upstream_side), [])
    return v


def fmt(v, k):
    x = v.get(k, "<absent>")
    return show(x) if isinstance(x, bytes) else repr(x)


def compare(what, a, b, case, names):
    keys = [k for k in list(a) + [k for k in b if k not in a] if not k.startswith("_")]
    skip, why, design_problems = (), None, []
    if case.design and not BUILTIN_BOTH:
        skip, why, check = case.design
        design_problems = [f"{names[0]}: {p}" for p in check(a)]
    if skip == "*":
        skip = keys
    diff = [k for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>") and k not in skip]
    problems = list(design_problems)
    for k, want in case.expect.items():
        for nm, v in ((names[0], a), (names[1], b)):
            if v.get(k) != want:
                problems.append(f"{nm}: expected {k} {want!r}, got {v.get(k)!r}")
    # Sanity on every side: a gzip body decodes completely and gives the upstream body back.
    spec_body = case.spec.get("body")
    if spec_body is None and "chunks" in case.spec:
        spec_body = b"".join(case.spec["chunks"])
    for nm, v in ((names[0], a), (names[1], b)):
        if v.get("gzip stream") not in (None, "ok"):
            problems.append(f"{nm}: gzip stream: {v['gzip stream']}")
        if (v["complete"] and v["status"] not in (204, 304) and case.method != "HEAD" and spec_body is not None
                and (v.get("content-encoding") or "").lower() in ("gzip",)
                and not any(k == "content-encoding" for k, _ in case.spec.get("headers", []))
                and v["body"] != spec_body):
            problems.append(f"{nm}: decoded body differs from the upstream's ({show(v['body'])} vs {show(spec_body)})")
        for n in v["_notes"]:
            problems.append(f"{nm}: {n}")
    info = f"[{names[0]} {a['_wire']} B, {names[1]} {b['_wire']} B on the wire]"
    if why:
        theirs = ", ".join(f"{k}={fmt(b, k)}" for k in ("status", "upstream body", "upstream transfer-encoding")
                           if k in b and k in skip)
        info += f" (differs by design: {why}; {names[1]}: {theirs})"
    if not diff and not problems:
        R.ok(f"{what} {info}")
        if VERBOSE:
            print("    " + ", ".join(f"{k}={fmt(a, k)}" for k in keys))
        return True
    lines = []
    for k in diff:
        lines.append(f"{k}: {names[0]}={fmt(a, k)}  {names[1]}={fmt(b, k)}")
    lines += problems
    same = [f"{k}={fmt(a, k)}" for k in keys if k not in diff and k not in ("body", "upstream body")]
    lines.append("same on both: " + ", ".join(same))
    R.fail(f"{what} {info}", "\n".join(lines))
    return False


def run_case(case, env, up, sides, proto, work):
    case.cid = f"{re.sub(r'[^a-z0-9]+', '-', case.name.lower()).strip('-')[:60]}-{proto}-{case.pair}"
    up.cases[case.cid] = case.spec
    views = []
    for side in sides:
        port = env.ports[side]
        path = f"/c/{case.cid}"
        before = side_counters(env.stats("compressor"), side)
        if proto == "h1":
            res = h1_request(port, case.method, path, case.headers, case.body, chunked_body=case.chunked_body)
        else:
            body = case.body if case.chunked_body is None else b"".join(case.chunked_body)
            res = h2_request(port, case.method, path, case.headers, body, work=work)
        if res.error and "timeout" in res.error:
            R.fail(f"{proto} {case.name}: {side} timed out", res.error)
        v = view(res, case, up, side)
        after = side_counters(env.stats("compressor"), side)
        # The counters this request moved (counts, not bytes: byte totals differ by design).
        v["stats"] = {k: after.get(k, 0) - before.get(k, 0) for k in COUNT_STATS
                      if after.get(k, 0) != before.get(k, 0)}
        views.append(v)
    return compare(f"{proto} {case.name}", views[0], views[1], case, sides)


# ---------------------------------------------------------------------------------------------
# Streaming, resets and aborts

def streaming_case(env, up, sides, proto, work, nchunks=5):
    """The upstream sends chunk i+1 only after the client has decoded chunk i."""
    cid = f"lockstep-{proto}"
    chunks = [text(3000 + 500 * i, 100 + i) for i in range(nchunks)]
    up.cases[cid] = {"headers": HTML, "framing": "chunked", "chunks": chunks, "lockstep": True}
    bounds = []
    total = 0
    for ch in chunks:
        total += len(ch)
        bounds.append(total)
    plain = b"".join(chunks)
    results = {}

    def one(side):
        dec = zlib.decompressobj(16 + 15)
        got = bytearray()
        state = {"next": 0, "err": None}

        def on_data(d):
            try:
                got.extend(dec.decompress(d))
            except zlib.error as e:
                state["err"] = str(e)
                return
            while state["next"] < len(bounds) and len(got) >= bounds[state["next"]]:
                if bytes(got[:bounds[state["next"]]]) != plain[:bounds[state["next"]]]:
                    state["err"] = f"decoded bytes differ by chunk {state['next']}"
                    return
                up.event((cid, side, state["next"])).set()
                state["next"] += 1

        port = env.ports[side]
        if proto == "h1":
            res = h1_request(port, "GET", f"/c/{cid}", AE, on_data=on_data)
        else:
            res = h2_request(port, "GET", f"/c/{cid}", AE, on_data=on_data, work=work)
        results[side] = (res, state, bytes(got), dec.eof)

    ths = [threading.Thread(target=one, args=(s,)) for s in sides]
    for t in ths:
        t.start()
    for t in ths:
        t.join(IO_TIMEOUT * 2)
    for side in sides:
        if side not in results:
            R.fail(f"{proto} streaming lockstep: {side}", "client thread did not finish")
            continue
        res, state, got, eof = results[side]
        notes = up.notes.get((cid, side), [])
        R.check(res.complete and not notes and state["err"] is None and got == plain and eof
                and (res.headers.get("content-encoding") == "gzip"),
                f"{proto} streaming: {side}: each of {nchunks} chunks decoded by the client before the "
                f"upstream sent the next",
                f"complete={res.complete} error={res.error} content-encoding={res.headers.get('content-encoding')} "
                f"decoded {len(got)}/{len(plain)} eof={eof} decode error={state['err']} upstream notes={notes}")


def wait_gauges_zero(env, listener_prefixes, what):
    """Bounded poll of admin gauges: no stream left active on those listeners or the cluster."""
    names = [f"http.{p}.downstream_rq_active" for p in listener_prefixes] + ["cluster.upstream.upstream_rq_active"]
    last = {}
    for _ in range(100):
        st = env.stats()
        last = {n: st.get(n) for n in names}
        if all(v == 0 for v in last.values()):
            R.ok(f"{what}: no stream left active ({', '.join(names)} all 0)")
            return True
        time.sleep(0.1)
    R.fail(f"{what}: streams left active", repr(last))
    return False


def flow_control_case(env, up, sides, work):
    """A client that stops reading for a while: 8 MiB that barely compress fill the socket and
    Envoy's buffers (watermarks, the upstream read-disabled), then everything must arrive."""
    body = noise(8 << 20, 61)
    paused_stat = "cluster.upstream.upstream_flow_control_paused_reading_total"
    paused_before = env.stats(paused_stat).get(paused_stat, 0)
    for proto in ("h1", "h2"):
        cid = f"slow-reader-{proto}"
        up.cases[cid] = {"headers": [("content-type", "text/plain")], "framing": "chunked",
                         "chunks": split(body, 32)}
        for side in sides:
            paused = []

            def on_data(d, paused=paused):
                if not paused:
                    paused.append(1)
                    time.sleep(1.5)

            res = (h1_request if proto == "h1" else h2_request)(
                env.ports[side], "GET", f"/c/{cid}", AE, on_data=on_data, timeout=20,
                **({} if proto == "h1" else {"work": work}))
            dec, state = decode(res.body) if res.headers.get("content-encoding") == "gzip" else (res.body, "-")
            R.check(res.complete and state == "ok" and dec == body,
                    f"{proto} client pauses reading 8 MiB: {side}: complete, decodes to the upstream body "
                    f"({len(res.body)} B on the wire)",
                    f"status={res.status} complete={res.complete} error={res.error} "
                    f"content-encoding={res.headers.get('content-encoding')} decode={state} "
                    f"decoded {len(dec)} of {len(body)} B")
    paused = env.stats(paused_stat).get(paused_stat, 0) - paused_before
    R.check(paused > 0, f"the paused clients made Envoy stop reading from the upstream ({paused_stat} +{paused})",
            "the flow-control cases did not reach Envoy's watermarks: make the body bigger")


def reset_and_abort_cases(env, up, sides, work):
    t = text(40000, 31)
    for proto in ("h1", "h2"):
        # Upstream resets mid-body (chunked, then content-length framed).
        for label, spec in (
                ("chunked", {"headers": HTML, "framing": "chunked", "chunks": split(t, 8), "reset_after_chunks": 3}),
                ("content-length", {"headers": HTML, "body": t, "reset_after_bytes": 15000})):
            cid = f"upstream-reset-{label}-{proto}"
            up.cases[cid] = spec
            vs = []
            for side in sides:
                res = (h1_request if proto == "h1" else h2_request)(
                    env.ports[side], "GET", f"/c/{cid}", AE, **({} if proto == "h1" else {"work": work}))
                dec, state = decode(res.body) if res.headers.get("content-encoding") == "gzip" else (res.body, "-")
                vs.append({"status": res.status, "complete": res.complete,
                           "content-encoding": res.headers.get("content-encoding"),
                           "decoded is a prefix of the body": t.startswith(dec), "error": res.error,
                           "_decoded": len(dec)})
            same = {k: v for k, v in vs[0].items() if k not in ("error",) and not k.startswith("_")} == \
                {k: v for k, v in vs[1].items() if k not in ("error",) and not k.startswith("_")}
            R.check(same and not vs[0]["complete"] and vs[0]["decoded is a prefix of the body"]
                    and vs[1]["decoded is a prefix of the body"],
                    f"{proto} upstream reset mid-body ({label}): the client sees an incomplete response on both, "
                    f"the same way [{sides[0]} decoded {vs[0]['_decoded']} B, {sides[1]} {vs[1]['_decoded']} B]",
                    f"{sides[0]}: {vs[0]}\n{sides[1]}: {vs[1]}")
        # Client aborts mid-body; the upstream keeps writing until Envoy closes it.
        cid = f"client-abort-{proto}"
        up.cases[cid] = {"headers": HTML, "framing": "chunked", "chunks": [text(8000, 40 + i) for i in range(6)],
                         "lockstep": True, "abort_probe": True}
        for side in sides:
            def abort(res, got, side=side):
                if len(got) > 0:
                    up.event((cid, side, "aborted")).set()
                    return True
                return False

            res = (h1_request if proto == "h1" else h2_request)(
                env.ports[side], "GET", f"/c/{cid}", AE, abort=abort,
                **({} if proto == "h1" else {"work": work}))
            up.event((cid, side, "aborted")).set()
            ev = up.event((cid, side, "upstream_closed"))
            closed = ev.wait(10)
            R.check(closed, f"{proto} client aborts mid-body: {side}: Envoy closes the upstream connection",
                    f"client: status={res.status} error={res.error}; upstream notes={up.notes.get((cid, side))}")
            after = h1_request(env.ports[side], "GET", "/c/" + next(iter(up.cases)), AE)
            R.check(after.status is not None and after.complete,
                    f"{proto} client aborts mid-body: {side}: Envoy keeps serving",
                    f"next request: status={after.status} error={after.error}")
    wait_gauges_zero(env, sides, "after resets and aborts")


# ---------------------------------------------------------------------------------------------
# Sections

# The decompressor settings of the custom pair (the built-in has no output limit: ratio only).
CUSTOM_DECOMP = {"max_output_bytes": 100000, "max_inflate_ratio": 20}


def side_by_side(args, work, module_dir, up):
    def mod(cfg, dcfg, ns):
        """The module's filters (or, with --builtin-both, the built-in ones) for one listener."""
        out = []
        if dcfg is not None:
            out.append(builtin_decompressor(dcfg.get("max_inflate_ratio", 100)) if args.builtin_both
                       else module_filter("envoy_qat.decompressor", "decompressor", dcfg, ns))
        if cfg is not None:
            out.append(builtin_compressor(cfg) if args.builtin_both
                       else module_filter("envoy_qat.compressor", "compressor", cfg, ns))
        return out
    listeners = [
        # Response cases: compressors only.
        listener("mod-default", mod({}, None, NAMESPACE["mod-default"])),
        listener("builtin-default", [builtin_compressor({})]),
        listener("mod-custom", mod(CUSTOM, None, NAMESPACE["mod-custom"])),
        listener("builtin-custom", [builtin_compressor(CUSTOM)]),
        # Request cases: decompressor, then compressor (default settings).
        listener("mod-dec", mod({}, {}, NAMESPACE["mod-dec"])),
        listener("builtin-dec", [builtin_decompressor(), builtin_compressor({})]),
        listener("mod-dec-custom", mod(None, CUSTOM_DECOMP, NAMESPACE["mod-dec-custom"])),
        listener("builtin-dec-custom", [builtin_decompressor(CUSTOM_DECOMP["max_inflate_ratio"])]),
    ]
    env_vars = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=module_dir or work)
    env = Envoy(bootstrap(listeners, [cluster(up.port)]), work, "side-by-side", concurrency=2, env=env_vars)
    try:
        if not R.check(env.wait_ready(), "Envoy 1.40 starts with the module and the built-in listeners",
                       env.log_tail()):
            return None
        pairs = {p: (f"mod-{p}", f"builtin-{p}") for p in ("default", "custom", "dec", "dec-custom")}
        only = re.compile(args.only) if args.only else None
        for case in (response_cases() + request_cases()) if "cases" in args.sections else []:
            if only and not only.search(case.name):
                continue
            for proto in case.protos:
                try:
                    run_case(case, env, up, pairs[case.pair], proto, work)
                except Exception:  # a harness bug must not hide the other cases
                    R.fail(f"{proto} {case.name}: harness error", traceback.format_exc())
            if env.proc.poll() is not None:
                R.fail("Envoy exited during the side-by-side cases", env.log_tail())
                return None
        # Totals now, while every request so far was one of the cases above on both sides alike
        # (the streaming, reset and abort runs below end at timing-dependent points).
        if "stats" in args.sections:
            stats_section(args, env)
        if "streaming" in args.sections:
            for proto in ("h1", "h2"):
                streaming_case(env, up, pairs["default"], proto, work)
        if "flow" in args.sections:
            flow_control_case(env, up, pairs["default"], work)
        if "resets" in args.sections:
            reset_and_abort_cases(env, up, pairs["default"], work)
        R.check(env.proc.poll() is None, "Envoy is still running after the side-by-side cases", env.log_tail())
        return env
    finally:
        if args.keep:
            print(f"side-by-side Envoy log: {env.log_path}")
        env.stop()


def envoy_validate(cfg, work, name, module_dir):
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    p = subprocess.run([ENVOY, "--mode", "validate", "-c", path, "--log-level", "info"],
                       capture_output=True, text=True, timeout=120, cwd=work,
                       env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=module_dir))
    return p.returncode, p.stdout + p.stderr


def interesting(log, n=12):
    """The log lines worth showing: errors and the module's own, else the last few."""
    lines = [l for l in log.splitlines() if "server.cc:4" not in l and "server.cc:5" not in l]
    picked = [l for l in lines if re.search(r"\]\[(error|critical|warning)\]|envoy-qat", l)]
    return "\n".join((picked or lines)[-n:])


def map_bootstrap(tree, tls_dir, upstream_port):
    """The shipped bootstrap pointed at this run: /etc/envoy/tls/ -> tls_dir, admin and listeners
    on 127.0.0.1 ports Envoy picks, every cluster endpoint -> the test upstream."""
    def walk(n):
        if isinstance(n, dict):
            out = {}
            for k, v in n.items():
                if k == "filename" and isinstance(v, str) and v.startswith("/etc/envoy/tls/"):
                    out[k] = os.path.join(tls_dir, v[len("/etc/envoy/tls/"):])
                else:
                    out[k] = walk(v)
            return out
        if isinstance(n, list):
            return [walk(v) for v in n]
        return n
    t = walk(tree)
    if "admin" in t:
        t["admin"]["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    for lst in t.get("static_resources", {}).get("listeners", []):
        lst["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    for c in t.get("static_resources", {}).get("clusters", []):
        c["type"] = "STATIC"
        for ep in c.get("load_assignment", {}).get("endpoints", []):
            for lb in ep.get("lb_endpoints", []):
                lb["endpoint"]["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}
    return t


def make_cert(d):
    for name, newkey in (("server-rsa", ["-newkey", "rsa:2048"]),
                         ("server-ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=envoy-qat.test", *newkey,
                        "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".crt")],
                       check=True, capture_output=True, timeout=60)


def filter_bootstrap(filters):
    return bootstrap([listener("l", filters)], [cluster(9)])


# Bad filter configs: each must be refused at load, with the field named in Envoy's log.
BAD_CONFIGS = [
    ("compressor", {"compresion_level": 6}, "compresion_level"),
    ("compressor", {"compression_level": 10}, "compression_level"),
    ("compressor", {"compression_level": 0}, "compression_level"),
    ("compressor", {"memory_level": 10}, "memory_level"),
    ("compressor", {"window_bits": 16}, "window_bits"),
    ("compressor", {"window_bits": 8}, "window_bits"),
    ("compressor", {"chunk_size": 100}, "chunk_size"),
    ("compressor", {"content_type": "text/html"}, "content_type"),
    ("compressor", {"disable_on_etag_header": "yes"}, "disable_on_etag_header"),
    ("compressor", {"uncompressible_response_codes": [99]}, "uncompressible_response_codes"),
    ("compressor", {"backend": "gpu"}, "backend"),
    ("compressor", {"hardware_buffer_size": "SZ_3K"}, "hardware_buffer_size"),
    ("compressor", {"input_size_threshold": 16}, "input_size_threshold"),
    ("compressor", {"stream_buffer_size": 10}, "stream_buffer_size"),
    ("decompressor", {"max_output": 1}, "max_output"),
    ("decompressor", {"max_inflate_ratio": 0}, "max_inflate_ratio"),
    ("decompressor", {"window_bits": 99}, "window_bits"),
]
GOOD_CONFIGS = [
    ("compressor", {}),
    ("compressor", CUSTOM),
    ("compressor", {"compression_level": 1, "backend": "auto", "hardware_buffer_size": "SZ_64K",
                    "input_size_threshold": 1024, "stream_buffer_size": 131072, "chunk_size": 65536}),
    ("compressor", {"compression_level": 6, "backend": "qatzip"}),
    ("decompressor", {}),
    ("decompressor", CUSTOM_DECOMP),
    # Envoy's gzip decompressor library's own field names (a config moved over from the built-in).
    ("decompressor", {"window_bits": 15, "chunk_size": 4096, "max_inflate_ratio": 100}),
]


def validate_section(args, work, module_dir, up):
    if args.builtin_both:
        R.skip("envoy --mode validate with the module", "--builtin-both")
        return
    tls = os.path.join(work, "tls")
    os.makedirs(tls, exist_ok=True)
    make_cert(tls)
    with open(BOOTSTRAP) as f:
        shipped = yaml.safe_load(f)
    mapped = map_bootstrap(shipped, tls, up.port)
    rc, log = envoy_validate(mapped, work, "bootstrap-validate", module_dir)
    R.check(rc == 0 and "envoy-qat module" in log,
            f"envoy --mode validate {os.path.relpath(BOOTSTRAP, REPO)} (TLS files mapped) loads the module and passes",
            f"exit {rc}:\n{interesting(log)}")
    rc, log = envoy_validate(mapped, work, "bootstrap-validate-nopath", os.path.join(work, "empty"))
    R.check(rc != 0 and MODULE_NAME in log,
            "envoy --mode validate without the module on ENVOY_DYNAMIC_MODULES_SEARCH_PATH fails naming it",
            f"exit {rc}:\n{interesting(log)}")
    for i, (fname, cfg, field) in enumerate(BAD_CONFIGS):
        rc, log = envoy_validate(filter_bootstrap([module_filter("m", fname, cfg)]), work, f"bad-{i}", module_dir)
        # A line that names the field (not merely one that echoes the whole config back).
        echo = (json.dumps(cfg), json.dumps(cfg).replace('"', '\\"'))
        named = [l for l in log.splitlines() if field in l and not any(e in l for e in echo)]
        R.check(rc != 0 and bool(named),
                f"{fname} {json.dumps(cfg)} is refused at load, the log names {field!r}",
                f"exit {rc}:\n{interesting(log)}")
    for i, (fname, cfg) in enumerate(GOOD_CONFIGS):
        rc, log = envoy_validate(filter_bootstrap([module_filter("m", fname, cfg)]), work, f"good-{i}", module_dir)
        R.check(rc == 0, f"{fname} {json.dumps(cfg)} is accepted", f"exit {rc}:\n{interesting(log)}")
    rc, log = envoy_validate(filter_bootstrap([module_filter("m", "gzipper", {})]), work, "bad-name", module_dir)
    R.check(rc != 0 and "gzipper" in log, "filter_name 'gzipper' is refused, the log names it",
            f"exit {rc}:\n{interesting(log)}")
    return tls


def tls_section(args, work, module_dir, up, tls):
    """The shipped bootstrap, served for real: HTTP/2 and HTTP/1.1 over TLS (Envoy's BoringSSL),
    gzip by the module, a gzip request body decoded."""
    if args.builtin_both:
        R.skip("the shipped bootstrap served over TLS", "--builtin-both")
        return
    with open(BOOTSTRAP) as f:
        mapped = map_bootstrap(yaml.safe_load(f), tls, up.port)
    env = Envoy(mapped, work, "bootstrap", concurrency=1,
                env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=module_dir))
    try:
        if not R.check(env.wait_ready() and env.ports, "the shipped bootstrap starts",
                       interesting(env.log_tail(60))):
            return
        port = next(iter(env.ports.values()))
        body = text(20000, 77)
        up.cases["tls"] = {"headers": HTML, "body": body}
        up.cases["tls-post"] = {"headers": [("content-type", "text/plain")], "body": b"ok\n"}
        for proto, flag in (("h2", "--http2"), ("http/1.1", "--http1.1")):
            h = os.path.join(work, "tls.h")
            b = os.path.join(work, "tls.b")
            p = subprocess.run(["curl", "-sS", "-k", flag, "--max-time", "20", "-H", "accept-encoding: gzip",
                                "-D", h, "-o", b, "-w", "%{http_version} %{http_code} %{ssl_verify_result}",
                                f"https://127.0.0.1:{port}/c/tls"], capture_output=True, text=True, timeout=30)
            hdrs = open(h).read().lower() if os.path.exists(h) else ""
            raw = open(b, "rb").read() if os.path.exists(b) else b""
            dec, state = decode(raw)
            want_v = "2" if proto == "h2" else "1.1"
            R.check(p.stdout.split()[:2] == [want_v, "200"] and "content-encoding: gzip" in hdrs
                    and state == "ok" and dec == body,
                    f"TLS {proto}: gzip by the module, {len(raw)} B decode to the upstream's {len(body)} B",
                    f"curl: {p.stdout!r} {p.stderr.strip()}; headers {hdrs.strip()!r}; decode: {state}")
        plain = text(30000, 78)
        res_file = os.path.join(work, "tls.b")
        p = subprocess.run(["curl", "-sS", "-k", "--http2", "--max-time", "20", "-H", "content-encoding: gzip",
                            "-H", "content-type: text/plain", "--data-binary", "@-", "-o", res_file,
                            "-w", "%{http_code}", f"https://127.0.0.1:{port}/c/tls-post"],
                           input=gz(plain), capture_output=True, timeout=30)
        seen = up.last_seen("tls-post", "?")
        R.check(p.stdout == b"200" and seen is not None and seen["body"] == plain
                and seen["headers"].get("content-encoding") is None,
                "TLS h2: a gzip request body reaches the upstream decoded by the module",
                f"curl: {p.stdout!r} {p.stderr.strip()!r}; upstream saw "
                f"{(seen['headers'], show(seen['body'])) if seen else None}")
    finally:
        env.stop()


def concurrency_section(args, work, module_dir, up):
    """--concurrency 1: a small response is not held up behind a big one whose compression
    runs on the module's threads (made slow with ENVOY_QAT_MODULE_TEST_DELAY_MS)."""
    if args.builtin_both:
        R.skip("--concurrency 1: small response vs a big one on the async path", "--builtin-both")
        return
    delay_ms = 1500
    env = Envoy(bootstrap([listener("one", [module_filter("c", "compressor", {})])], [cluster(up.port)]),
                work, "concurrency-1", concurrency=1,
                env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=module_dir,
                         ENVOY_QAT_MODULE_TEST_DELAY_MS=str(delay_ms)))
    try:
        if not R.check(env.wait_ready(), "Envoy --concurrency 1 with a slow asynchronous compressor starts",
                       interesting(env.log_tail(40))):
            return
        port = env.ports["one"]
        big = [text(16384, 90), text(200, 91)]  # few chunks: each costs the test delay
        # The upstream sends the big response's first chunk, then waits for the small request to
        # finish before sending the rest (bounded).
        up.cases["big"] = {"headers": HTML, "framing": "chunked", "chunks": big, "lockstep": True}
        up.cases["small"] = {"headers": [("content-type", "image/png")], "body": noise(2000, 91)}
        order = []
        lock = threading.Lock()
        got_big = {}
        t0 = time.monotonic()
        times = {}

        def mark(what):
            order.append(what)
            times[what] = f"{time.monotonic() - t0:.3f} s"

        def on_big_data(d):
            with lock:
                if "big: first body bytes" not in order:
                    mark("big: first body bytes")
                    times["big: first body bytes"] += f" ({len(d)} B)"

        def run_big():
            got_big["res"] = h1_request(port, "GET", "/c/big", AE, on_data=on_big_data, timeout=60)
            with lock:
                mark("big: done")

        th = threading.Thread(target=run_big)
        th.start()
        # Wait (bounded) until the big response's first chunk is on the module's threads.
        submitted = False
        for _ in range(200):
            st = env.stats()
            # Counted when a chunk is handed to the module's threads (async_chunks only when done).
            if st.get("dynamicmodulescustom.compressor.total_uncompressed_bytes", 0) >= 1:
                submitted = True
                break
            time.sleep(0.05)
        with lock:
            mark("small: sent")
        small = h1_request(port, "GET", "/c/small", AE, timeout=60)
        with lock:
            mark("small: done")
        for i in range(len(big)):
            up.event(("big", "one", i)).set()  # (x-side is the listener's name)
        th.join(90)
        res = got_big.get("res")
        dec, state = decode(res.body) if res else (b"", "no response")
        R.check(submitted, "--concurrency 1: the big response's first chunk went to the module's threads "
                           "(compressor.total_uncompressed_bytes moved)",
                "dynamicmodulescustom.compressor.total_uncompressed_bytes stayed 0")
        order = [o for o in order if o != "small: sent"]
        R.check(small.complete and small.status == 200 and order and order[0] == "small: done",
                f"--concurrency 1: the small response completes while the big one's first chunk is still being "
                f"compressed ({delay_ms} ms test delay per chunk): order {order}, at {times}",
                f"small: status={small.status} error={small.error}; times since the big request: {times}")
        st = side_counters(env.stats("compressor"), "mod-default")
        R.check(res is not None and res.complete and state == "ok" and dec == b"".join(big)
                and not up.notes.get(("big", "one")),
                f"--concurrency 1: the big response then completes and decodes ({sum(map(len, big))} B in "
                f"{st.get('async_chunks')} asynchronous chunks)",
                f"status={res.status if res else None} error={res.error if res else None} decode={state}; "
                f"upstream: {up.notes.get(('big', 'one'))}")
    finally:
        env.stop()


# The built-in compressor's counters (stat names under http.<prefix>.compressor.<name>.gzip.).
COMPRESSOR_STATS = ("compressed", "not_compressed", "no_accept_header", "header_identity",
                    "header_compressor_used", "header_compressor_overshadowed", "header_wildcard",
                    "header_not_valid", "total_uncompressed_bytes", "total_compressed_bytes",
                    "content_length_too_small", "not_compressed_etag")


def stats_section(args, env):
    """The totals over the cases (each case compared its own deltas already)."""
    st = env.stats()
    for pair in ("default", "custom", "dec"):
        mside, bside = f"mod-{pair}", f"builtin-{pair}"
        b = side_counters(st, bside)
        m = side_counters(st, mside)
        if not b:
            R.fail(f"stats: no built-in compressor counters for {bside}",
                   sorted(k for k in st if "compressor" in k)[:20])
            continue
        if not m:
            R.fail(f"stats: the module's compressor counters for {mside} are not in admin /stats",
                   "stats outside http./cluster./listener./server.: " + ", ".join(
                       sorted(k for k in st if k.split(".")[0] not in (
                           "http", "cluster", "listener", "server", "cluster_manager", "listener_manager",
                           "runtime", "filesystem", "main_thread", "workers", "http1", "http2", "vhost",
                           "control_plane", "dns", "envoy", "overload", "stats", "wasm",
                           "thread_local_cluster_manager"))[:60]))
            continue
        if pair != "dec":
            same = [k for k in COUNT_STATS + ["total_uncompressed_bytes"] if m.get(k) == b.get(k)]
            differ = [k for k in COUNT_STATS + ["total_uncompressed_bytes"] if m.get(k) != b.get(k)]
            R.check(not differ, f"stats ({pair}): the module's compressor counters equal the built-in's over the "
                                f"run: " + ", ".join(f"{k}={b.get(k)}" for k in same),
                    "\n".join(f"{k}: module {m.get(k)} built-in {b.get(k)}" for k in differ))
            mb, bb = m.get("total_compressed_bytes", 0), b.get("total_compressed_bytes", 0)
            R.check(bb > 0 and abs(mb / bb - 1) <= 0.02,
                    f"stats ({pair}): total_compressed_bytes module {mb} vs built-in {bb}"
                    + (f" (size ratio {mb / bb:.4f})" if bb else ""), "more than 2 % apart")
        if not args.builtin_both and pair != "dec":  # (dec: only tiny responses, nothing compressed)
            # Which path did the work: no QAT device here, so all of it in software.
            R.check(m.get("software_bytes", 0) > 0 and m.get("hardware_bytes") == 0,
                    f"stats ({pair}): the module counts the backend's bytes: software_bytes="
                    f"{m.get('software_bytes')} hardware_bytes={m.get('hardware_bytes')} "
                    f"(inline_chunks={m.get('inline_chunks')} async_chunks={m.get('async_chunks')} "
                    f"errors={m.get('errors')})", repr(m))
    for pair in ("dec", "dec-custom"):
        b = side_counters(st, f"builtin-{pair}", "decompressor")
        print(f"info: built-in decompressor ({pair}) request counters: "
              + ", ".join(f"{k}={v}" for k, v in sorted(b.items())))
        if args.builtin_both:
            continue
        m = side_counters(st, f"mod-{pair}", "decompressor")
        want = ("decompressed", "not_decompressed", "rejected_corrupt", "rejected_too_large") if pair == "dec" \
            else ("decompressed", "rejected_too_large")
        R.check(all(m.get(k, 0) > 0 for k in want)
                and m.get("total_uncompressed_bytes", 0) > 0 and m.get("total_compressed_bytes", 0) > 0,
                f"stats ({pair}): the module's decompressor counted: " + ", ".join(
                    f"{k}={v}" for k, v in sorted(m.items())),
                f"want {want} > 0; under {NAMESPACE['mod-' + pair]}.decompressor.: {m}")


# Where the module's counters are: Envoy 1.40 names a module's metrics
# <metrics_namespace>.<name> (DynamicModuleConfig.metrics_namespace, default
# "dynamicmodulescustom"), and /stats shows that prefix; the module names them
# compressor.<stat> and decompressor.<stat>. Each module listener here has its own namespace, so
# its counters can be told apart (mod-default keeps the default one).
NAMESPACE = {"mod-default": None, "mod-custom": "envoy_qat_custom", "mod-dec": "envoy_qat_dec",
             "mod-dec-custom": "envoy_qat_dec_custom"}
COUNT_STATS = [k for k in COMPRESSOR_STATS if not k.startswith("total_")]


def side_counters(st, side, what="compressor"):
    """A listener's compressor (or decompressor) counters by short name, or {}."""
    if side.startswith("mod-") and not BUILTIN_BOTH:
        prefix = f"{NAMESPACE[side] or 'dynamicmodulescustom'}.{what}."
        return {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}
    prefix = f"http.{side}.{what}."
    out = {}
    for k, v in st.items():
        if k.startswith(prefix) and (what == "compressor" or ".request." in k):
            out[k.rsplit(".", 1)[-1]] = v
    return out


SECTIONS = ["cases", "streaming", "flow", "resets", "stats", "validate", "tls", "concurrency"]
SIDE_BY_SIDE = {"cases", "streaming", "flow", "resets", "stats"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module-dir")
    ap.add_argument("--builtin-both", action="store_true")
    ap.add_argument("--only", help="run only the side-by-side cases whose name matches")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, of: {', '.join(SECTIONS)} (default: all; with --only: cases)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="print what matched, too")
    args = ap.parse_args()
    if args.only and args.sections == ",".join(SECTIONS):
        args.sections = "cases"
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in args.sections if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}: choose from {SECTIONS}")
    global VERBOSE, BUILTIN_BOTH
    VERBOSE = args.verbose
    BUILTIN_BOTH = args.builtin_both
    if not args.builtin_both:
        if not args.module_dir or not os.path.isfile(os.path.join(args.module_dir, MODULE_FILE)):
            print(f"module_side_by_side: no {MODULE_FILE} in --module-dir {args.module_dir!r}", file=sys.stderr)
            return 2
        args.module_dir = os.path.abspath(args.module_dir)
    if not os.access(ENVOY, os.X_OK):
        print(f"module_side_by_side: no Envoy at {ENVOY}: run ci/deps.sh", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="module-side-by-side-")
    start = time.monotonic()
    try:
        up = Upstream()
        if SIDE_BY_SIDE & set(args.sections):
            side_by_side(args, work, args.module_dir, up)
        tls = None
        if "validate" in args.sections or "tls" in args.sections:
            tls = validate_section(args, work, args.module_dir, up)
        if tls and "tls" in args.sections:
            tls_section(args, work, args.module_dir, up, tls)
        if "concurrency" in args.sections:
            concurrency_section(args, work, args.module_dir, up)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{R.passed} passed, {R.failed} failed, {R.skipped} skipped in {time.monotonic() - start:.0f} s")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
