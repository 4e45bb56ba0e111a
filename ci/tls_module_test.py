#!/usr/bin/env python3
"""envoy-qat's TLS transport socket `tls` and wake-up network filter `tls_wake` (module/,
libenvoy_qat_module.so) in the real stock Envoy 1.40, next to Envoy's own TLS, with real
clients (run with build/venv/bin/python; ci/test-tls-module.sh builds the module and qat-sim).

The main Envoy (--concurrency 2, qat-sim with a short fixed latency) runs, in front of ONE
upstream (module_side_by_side.Upstream), these listeners:

  ref_rsa, ref_ecdsa, ref_kx, ref_sni   Envoy's own TLS (envoy.transport_sockets.tls): the
                                        reference every case also runs against (RSA 2048,
                                        ECDSA P-256, RSA key exchange allowed, two SNI chains)
  mod_boring    the module, key_provider mode boring (BoringSSL in the module holds the key)
  mod_qat       the module, engine on qat-sim (RSA 2048, files), + the module's gzip compressor
  mod_soft      the module, engine backend software
  mod_ecdsa     the module, engine on qat-sim, ECDSA P-256 (inline PEM)
  mod_kx        the module, engine on qat-sim, cipher_suites with AES128-GCM-SHA256 (RSA kx)
  mod_sni       tls_inspector + two filter chains: a.example.com (RSA) / b.example.com (ECDSA)
  ref_resume / mod_resume   session resumption left on (every other listener has it off)
  mod_reload    its certificate and key files are replaced during the run

Every module chain has tls_wake first. Cases per listener: `openssl s_client` TLS 1.3 and 1.2
(Protocol / Cipher / Peer signature type / subject lines, an HTTP/1.1 request answered by the
upstream), RSA key exchange (works where cipher_suites allow it, refused by default), SNI picks
the certificate (and an unknown name gets no chain), `curl` h2 and http/1.1 (and --compressed
through the module's gzip), `h2load` with no resumption and one request per connection
(HTTP/1.1 "connection: close": h2load reconnects, so every request is a new full handshake;
successes == requests, handshake counters moved as much), 4 MiB responses and 3 MiB uploads
(h1, h2) and a client that stops reading for 1 s (back-pressure, partial writes), close_notify
and TCP half-close after a request (must end as with Envoy's own TLS), s_client -sess_out /
-sess_in resumption, and the certificate reload. Then, in their own Envoy runs:
clients that reset or close mid-handshake while the key operation is in flight (qat-sim latency
300 ms; the in-flight gauge is seen > 0 first, then must return to 0, the operations are
cancelled, and Envoy still serves; Envoy's own close by transport_socket_connect_timeout while
an operation is in flight cancels it),
a qat-sim fault run (every request still succeeds through the software failover; the failover
counter moves), a chain without tls_wake (must not hang: complete, or fail fast naming
tls_wake), `envoy --mode validate` of envoy-config/envoy/module-tls.yaml and of bad
transport_socket_config values, and that bootstrap served for real (TLS by the module, gzip by
the module). Leak checks after each run: no accepted socket left, Envoy's fds other than
eventfds back to their baseline (the engine keeps finished operations' eventfds in a pool, so
eventfds are checked by repeating a load: no growth), tls_connections_open and
tls_key_ops_in_flight at 0. No check is on timing.

Prints one line per check ("ok: ..." / "FAIL: ..." / "skip: ..." / "info: ..."), then
"N passed, M failed"; exits 1 on any failure, 2 on usage errors.

  --module-dir DIR   directory holding libenvoy_qat_module.so
  --sim FILE         libqat_sim.so (ENVOY_QAT_LIB for the engine's qat backend)
  --envoy-only       no module: only Envoy's own TLS listeners (to check the harness itself)
  --only REGEX       only the listeners (main section) whose name matches
  --sections LIST    main,resets,faults,nowake,validate,bootstrap (default: all)
  -v                 print what matched too (s_client lines, stats)
  --keep             keep the work directory (configs, certificates, Envoy logs)
"""
import argparse
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import module_side_by_side as sbs  # noqa: E402

R = sbs.R
REPO = sbs.REPO
MODULE_NAME = sbs.MODULE_NAME
BOOTSTRAP = os.path.join(REPO, "envoy-config", "envoy", "module-tls.yaml")

DTS = "type.googleapis.com/envoy.extensions.transport_sockets.dynamic_modules.v3.DynamicModuleTransportSocket"
DNF = "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter"
ENVOY_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

IO_TIMEOUT = 20           # one client run, end to end (a hang is a FAIL, not a wait)
SETTLE_WAIT = 15.0        # gauges / fds back to their resting value
QAT_LATENCY_MAIN_US = 500
QAT_LATENCY_LONG_US = 300000
FAULTS = "submit_fail=0.1,cb_fail=0.1,retry=0.2,restart_every_ms=400,restart_ms=50"
ENGINE_QAT = {"mode": "engine", "backend": "qat", "software_fallback": True}
ENGINE_SOFT = {"mode": "engine", "backend": "software"}
BORING = {"mode": "boring"}
RSA_KX = "AES128-GCM-SHA256"
# Envoy's own default cipher list for servers, plus RSA key exchange (for the *_kx listeners).
KX_SUITES = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
             "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
             RSA_KX]

VERBOSE = False
ENV = None   # the Envoy and work directory of the main section (for the resumption cases)
WORK = None


def info(what):
    print(f"info: {what}", flush=True)


# ---------------------------------------------------------------------------------------------
# Certificates

CERTS = {  # name -> (subject CN, key type)
    "rsa": ("rsa.envoy-qat.test", "rsa"),
    "ecdsa": ("ecdsa.envoy-qat.test", "ec"),
    "a": ("a.example.com", "rsa"),
    "b": ("b.example.com", "ec"),
}


def make_certs(d):
    """Self-signed certificates, one per CERTS entry: NAME.crt / NAME.key (PKCS#8 PEM); the RSA
    one also as rsa-pkcs1.key (traditional "RSA PRIVATE KEY")."""
    os.makedirs(d, exist_ok=True)
    for name, (cn, kind) in CERTS.items():
        newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt",
                                                                 "ec_paramgen_curve:P-256"]
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                        "-addext", f"subjectAltName=DNS:{cn}", *newkey,
                        "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".crt")],
                       check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "rsa", "-traditional", "-in", os.path.join(d, "rsa.key"),
                    "-out", os.path.join(d, "rsa-pkcs1.key")], check=True, capture_output=True, timeout=60)
    # The names module-tls.yaml and module-compression.yaml use under /etc/envoy/tls/.
    for src, dst in (("rsa", "server-rsa"), ("ecdsa", "server-ecdsa")):
        for ext in (".crt", ".key"):
            shutil.copy(os.path.join(d, src + ext), os.path.join(d, dst + ext))


# ---------------------------------------------------------------------------------------------
# Configuration

# h2load resumes its previous session when it reconnects (HTTP/1.1 with connection: close), so
# the listeners it drives that way have session resumption off: Envoy's own with
# DownstreamTlsContext's two fields, the module with its disable_session_ticket (TLS 1.3
# resumes through tickets only; h2load speaks TLS 1.3). The counters then show no resumption.
NO_RESUMPTION_ENVOY = {"disable_stateless_session_resumption": True, "disable_stateful_session_resumption": True}
NO_RESUMPTION_MODULE = {"disable_session_ticket": True}


def tls_context(tls_dir, cert, inline=False, cipher_suites=None, alpn=("h2", "http/1.1"), key_file=None,
                no_resumption=True):
    """DownstreamTlsContext fields as a dict: Envoy's own takes it as is, the module as JSON."""
    crt = os.path.join(tls_dir, cert + ".crt")
    key = key_file or os.path.join(tls_dir, cert + ".key")
    if inline:
        tc = {"certificate_chain": {"inline_string": open(crt).read()},
              "private_key": {"inline_string": open(key).read()}}
    else:
        tc = {"certificate_chain": {"filename": crt}, "private_key": {"filename": key}}
    params = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
    if cipher_suites:
        params["cipher_suites"] = list(cipher_suites)
    ctx = {"common_tls_context": {"tls_certificates": [tc], "alpn_protocols": list(alpn), "tls_params": params}}
    if no_resumption:
        ctx["no_resumption"] = True  # turned into each side's own field by envoy_ts / module_ts
    return ctx


def envoy_ts(ctx):
    ctx = dict(ctx)
    if ctx.pop("no_resumption", False):
        ctx.update(NO_RESUMPTION_ENVOY)
    return {"name": "envoy.transport_sockets.tls", "typed_config": dict({"@type": ENVOY_TLS}, **ctx)}


def module_ts(ctx, key_provider):
    cfg = dict(ctx)
    if cfg.pop("no_resumption", False):
        cfg.update(NO_RESUMPTION_MODULE)
    if key_provider is not None:
        cfg["key_provider"] = key_provider
    return module_ts_raw(json.dumps(cfg))


def module_ts_raw(value):
    return {"name": "envoy.transport_sockets.dynamic_modules", "typed_config": {
        "@type": DTS,
        "dynamic_module_config": {"name": MODULE_NAME},
        "transport_socket_name": "tls",
        "implements_secure_transport": True,
        "transport_socket_config": {"@type": sbs.STRING_VALUE, "value": value},
    }}


def wake_filter():
    return {"name": "envoy.filters.network.dynamic_modules", "typed_config": {
        "@type": DNF, "dynamic_module_config": {"name": MODULE_NAME}, "filter_name": "tls_wake"}}


def hcm(name, gzip=False):
    filters = []
    if gzip:
        filters.append(sbs.module_filter("envoy_qat.compressor", "compressor", {"min_content_length": 100}))
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": sbs.ROUTER}})
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": sbs.HCM, "stat_prefix": name, "codec_type": "AUTO",
        "route_config": {"name": name, "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "request_headers_to_add": [{"header": {"key": "x-side", "value": name}}],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}],
        }]},
        "http_filters": filters,
    }}


def chain(name, ts, module, gzip=False, server_names=None, wake=True):
    c = {"filters": ([wake_filter()] if module and wake else []) + [hcm(name, gzip)], "transport_socket": ts}
    if server_names:
        c["filter_chain_match"] = {"server_names": server_names}
    return c


def listener(name, chains, inspector=False):
    lst = {"name": name, "stat_prefix": name,
           "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}, "filter_chains": chains}
    if inspector:
        lst["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                    "typed_config": {"@type": INSPECTOR}}]
    return lst


def upstream_cluster(port):
    c = sbs.cluster(port)
    # Idle upstream connections go away quickly, so that the fd count can come back to its baseline.
    c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "common_http_protocol_options"] = {"idle_timeout": "1s"}
    return c


class Spec:
    """A listener and what its clients must see."""

    def __init__(self, name, module, chains, key="rsa", subject=None, kx=False, sni=None, gzip=False,
                 inspector=False, mode=None, resume=False, reload=False, tickets=False):
        self.name = name
        self.module = module
        self.chains = chains
        self.key = key              # rsa | ec
        self.subject = subject      # expected CN
        self.kx = kx                # RSA key exchange configured
        self.sni = sni              # {server name: (CN, key)} for SNI listeners
        self.gzip = gzip
        self.inspector = inspector
        self.mode = mode
        self.resume = resume        # session resumption left on (the resumption cases)
        self.reload = reload        # its certificate files are replaced during the run
        self.tickets = tickets      # session_ticket_keys (the ticket-key cases)

    def listener(self):
        return listener(self.name, self.chains, self.inspector)


def main_specs(tls, envoy_only):
    s = []
    cn = {k: v[0] for k, v in CERTS.items()}
    s.append(Spec("ref_rsa", False, [chain("ref_rsa", envoy_ts(tls_context(tls, "rsa")), False)],
                  subject=cn["rsa"]))
    s.append(Spec("ref_ecdsa", False, [chain("ref_ecdsa", envoy_ts(tls_context(tls, "ecdsa")), False)],
                  key="ec", subject=cn["ecdsa"]))
    s.append(Spec("ref_kx", False, [chain("ref_kx", envoy_ts(tls_context(tls, "rsa", cipher_suites=KX_SUITES)),
                                          False)], subject=cn["rsa"], kx=True))
    s.append(Spec("ref_sni", False, [
        chain("ref_sni", envoy_ts(tls_context(tls, "a")), False, server_names=["a.example.com"]),
        chain("ref_sni", envoy_ts(tls_context(tls, "b")), False, server_names=["b.example.com"])],
        inspector=True, sni={"a.example.com": (cn["a"], "rsa"), "b.example.com": (cn["b"], "ec")}))
    s.append(Spec("ref_resume", False, [chain("ref_resume", envoy_ts(tls_context(tls, "rsa", no_resumption=False)),
                                              False)], subject=cn["rsa"], resume=True))
    if envoy_only:
        return s
    rd = os.path.join(tls, "reload")
    os.makedirs(rd, exist_ok=True)
    for ext in (".crt", ".key"):
        shutil.copy(os.path.join(tls, "rsa" + ext), os.path.join(rd, "cert" + ext))
    rctx = tls_context(tls, "rsa")
    rctx["common_tls_context"]["tls_certificates"] = [{"certificate_chain": {"filename": os.path.join(rd, "cert.crt")},
                                                       "private_key": {"filename": os.path.join(rd, "cert.key")}}]
    s.append(Spec("mod_reload", True, [chain("mod_reload", module_ts(rctx, ENGINE_QAT), True)],
                  subject=cn["rsa"], mode="engine/qat", reload=True))
    s.append(Spec("mod_resume", True, [chain("mod_resume", module_ts(tls_context(tls, "rsa", no_resumption=False),
                                                                      ENGINE_QAT), True)],
                  subject=cn["rsa"], resume=True, mode="engine/qat"))
    s.append(Spec("mod_boring", True, [chain("mod_boring", module_ts(tls_context(tls, "rsa"), BORING), True)],
                  subject=cn["rsa"], mode="boring"))
    s.append(Spec("mod_qat", True, [chain("mod_qat", module_ts(tls_context(tls, "rsa"), ENGINE_QAT), True,
                                          gzip=True)], subject=cn["rsa"], gzip=True, mode="engine/qat"))
    s.append(Spec("mod_soft", True, [chain("mod_soft", module_ts(tls_context(
        tls, "rsa", key_file=os.path.join(tls, "rsa-pkcs1.key")), ENGINE_SOFT), True)],
        subject=cn["rsa"], mode="engine/software"))
    s.append(Spec("mod_ecdsa", True, [chain("mod_ecdsa", module_ts(tls_context(tls, "ecdsa", inline=True),
                                                                    ENGINE_QAT), True)],
                  key="ec", subject=cn["ecdsa"], mode="engine/qat"))
    s.append(Spec("mod_kx", True, [chain("mod_kx", module_ts(tls_context(tls, "rsa", cipher_suites=KX_SUITES),
                                                              ENGINE_QAT), True)],
                  subject=cn["rsa"], kx=True, mode="engine/qat"))
    # Session ticket keys (Envoy's 80-byte format): tk_a and tk_b share key 1; tk_rot has key 2
    # first and key 1 second (rotation: it still decrypts key-1 tickets); tk_other has key 3.
    keys = {}
    for i in (1, 2, 3):
        keys[i] = os.path.join(tls, f"ticket{i}.key")
        with open(keys[i], "wb") as f:
            f.write(os.urandom(80))
    for name, ks in (("tk_a", [1]), ("tk_b", [1]), ("tk_rot", [2, 1]), ("tk_other", [3])):
        ctx = tls_context(tls, "rsa", no_resumption=False)
        ctx["session_ticket_keys"] = {"keys": [{"filename": keys[k]} for k in ks]}
        s.append(Spec(name, True, [chain(name, module_ts(ctx, ENGINE_QAT), True)], subject=cn["rsa"],
                      mode="engine/qat", tickets=True))
    s.append(Spec("mod_sni", True, [
        chain("mod_sni", module_ts(tls_context(tls, "a"), ENGINE_QAT), True, server_names=["a.example.com"]),
        chain("mod_sni", module_ts(tls_context(tls, "b"), ENGINE_QAT), True, server_names=["b.example.com"])],
        inspector=True, sni={"a.example.com": (cn["a"], "rsa"), "b.example.com": (cn["b"], "ec")},
        mode="engine/qat"))
    return s


def bootstrap(listeners, upstream_port):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": [upstream_cluster(upstream_port)]},
    }


def module_env(module_dir, sim, latency_us, faults=None):
    env = dict(os.environ)
    if module_dir:
        env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = module_dir
    if sim:
        env.update(ENVOY_QAT_LIB=sim, QAT_SIM_INSTANCES="2", QAT_SIM_LATENCY_US=str(latency_us))
        if faults:
            env["QAT_SIM_FAULTS"] = faults
        else:
            env.pop("QAT_SIM_FAULTS", None)
    return env


# ---------------------------------------------------------------------------------------------
# Clients

BODY = b"hello from the upstream\n" * 8
PAGE = sbs.text(20000, 31)


def s_client(port, args, request=True, timeout=IO_TIMEOUT):
    """openssl s_client; with request, sends one HTTP/1.1 GET (connection: close) over the
    connection. Returns a dict of what it printed."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "http/1.1", *args]
    data = b"GET /c/hello HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n" if request else b""
    if request:
        cmd.append("-ign_eof")
    try:
        p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
        out = p.stdout.decode("latin-1")
        err = p.stderr.decode("latin-1")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("latin-1")
        err = (e.stderr or b"").decode("latin-1")
        rc = "timeout"
    r = {"rc": rc, "out": out, "err": err}
    m = re.search(r"^(?:New|Reused), (\S+), Cipher is (\S+)", out, re.M)
    r["new"] = m.groups() if m else None
    r["reused"] = bool(re.search(r"^Reused, ", out, re.M))
    # The SSL-Session block (printed only when there is a session to print) or the "New, ..." line.
    m = re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
    r["protocol"] = m.group(1) if m else (r["new"][0] if r["new"] else None)
    m = re.search(r"^\s*Cipher\s*:\s*(\S+)", out, re.M)
    r["cipher"] = m.group(1) if m else (r["new"][1] if r["new"] else None)
    m = re.search(r"^subject=.*CN\s*=\s*([^,/\n]+)", out, re.M)
    r["subject"] = m.group(1).strip() if m else None
    m = re.search(r"^Peer signature type: (\S+)", out, re.M)
    r["sigtype"] = m.group(1) if m else None
    m = re.search(r"^ALPN protocol: (\S+)", out, re.M)
    r["alpn"] = m.group(1) if m else None
    m = re.search(r"^HTTP/1\.1 (\d{3})", out, re.M)
    r["status"] = int(m.group(1)) if m else None
    r["body_ok"] = BODY.decode() in out
    return r


def s_summary(r):
    return (f"exit {r['rc']}; New {r['new']}; Protocol {r['protocol']}; Cipher {r['cipher']}; subject "
            f"{r['subject']}; sig {r['sigtype']}; ALPN {r['alpn']}; HTTP {r['status']}; body "
            f"{'ok' if r['body_ok'] else 'missing'}; stderr {r['err'].strip()[-300:]!r}")


def curl(port, flag, path="/c/hello", extra=(), work=None, timeout=IO_TIMEOUT, resolve=None):
    h = os.path.join(work, "curl.h")
    b = os.path.join(work, "curl.b")
    for f in (h, b):
        if os.path.exists(f):
            os.unlink(f)
    host = "127.0.0.1"
    cmd = ["curl", "-sS", "-k", flag, "--max-time", str(timeout), "-D", h, "-o", b,
           "-w", "%{http_version} %{http_code}"]
    if resolve:
        cmd += ["--resolve", f"{resolve}:{port}:127.0.0.1"]
        host = resolve
    cmd += [*extra, f"https://{host}:{port}{path}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        out, err = p.stdout, p.stderr.strip()
    except subprocess.TimeoutExpired:
        out, err = "", "timeout"
    hdrs = open(h).read().lower() if os.path.exists(h) else ""
    body = open(b, "rb").read() if os.path.exists(b) else b""
    return out.split(), hdrs, body, err


H2LOAD_RE = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored")


def h2load(port, n, c, h1_close=True, timeout=120, extra=(), host=None):
    """h2load over TLS, one request per connection (HTTP/1.1 with connection: close; h2load then
    opens a new connection, with a new SSL object: a full handshake each time) or, with h1_close
    False, HTTP/2 with as many clients as requests. Returns (succeeded, 2xx, output)."""
    cmd = ["h2load", "-n", str(n), "-c", str(c), "-m", "1", "-t", "1", *extra]
    if h1_close:
        cmd += ["--h1", "-H", "connection: close"]
    if host:  # SNI from the URI's host
        cmd += ["--connect-to", f"127.0.0.1:{port}"]
    cmd.append(f"https://{host or '127.0.0.1'}:{port}/c/hello")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return 0, 0, f"h2load timed out after {timeout} s: {(e.stdout or b'')[-600:]!r}"
    m = H2LOAD_RE.search(out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    return (int(m.group(2)) if m else 0), (int(st.group(1)) if st else 0), out


# ---------------------------------------------------------------------------------------------
# Stats, fds, sockets

STAT_NAMES = ["tls_handshakes", "tls_handshake_failures", "tls_resumed", "tls_v1_2", "tls_v1_3", "tls_key_ops",
              "tls_key_op_failovers", "tls_key_ops_inline", "tls_key_ops_cancelled", "tls_connections_open", "tls_key_ops_in_flight"]


def module_stats(env):
    """The module's tls_* stats (anything with "tls_" in its name that is not Envoy's own
    tls_inspector or ssl stats)."""
    try:
        st = env.stats("tls_")
    except OSError:
        return {}
    return {k: v for k, v in st.items() if "tls_inspector" not in k and ".ssl." not in k}


def stat(st, name):
    """Sum over every stat whose name is `name` or ends with `.name` / `_name` (the prefix varies)."""
    tot = 0
    found = False
    for k, v in st.items():
        if k == name or k.endswith("." + name) or k.endswith("_" + name) or ("." + name + ".") in k:
            tot += v
            found = True
    return tot if found else None


def envoy_ssl_counters(env, listener_name):
    """Envoy's own listener ssl.handshake and ssl.session_reused counters (the reference side)."""
    st = env.stats(f"listener.{listener_name}.ssl.")
    return (st.get(f"listener.{listener_name}.ssl.handshake", 0),
            st.get(f"listener.{listener_name}.ssl.session_reused", 0))


def handshake_counters(spec, env):
    """(full handshakes, resumptions) so far on this listener (the module's counters are the
    module's, over all its listeners)."""
    if not spec.module:
        hs, reused = envoy_ssl_counters(env, spec.name)
        return hs - reused, reused
    st = module_stats(env)
    return (stat(st, "tls_handshakes") or 0) - (stat(st, "tls_resumed") or 0), stat(st, "tls_resumed") or 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def accepted_sockets(pid, ports):
    """Sockets of the process whose local port is one of the listener ports and that are not
    listening: downstream connections still open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    n = 0
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(tab).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            lport = int(f[1].rsplit(":", 1)[1], 16)
            if f[9] in inodes and lport in ports and f[3] != "0A":
                n += 1
    return n


def wait_for(pred, timeout=SETTLE_WAIT):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v[0] or time.monotonic() > deadline:
            return v
        time.sleep(0.2)


def eventfds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventfd]"
        except OSError:
            pass
    return n


def leak_checks(env, what, fd_base, module):
    """fd_base: (all fds, eventfds) at the baseline. The engine keeps the eventfds of finished
    operations for reuse (src/engine: FD_POOL_MAX idle ones per engine), so its pool grows to
    the peak number of operations in flight: eventfds are reported here, and checked for
    growth by repeating a load (eventfd_growth_check); every other fd must be back."""
    pid = env.proc.pid
    ports = set(env.ports.values())
    ok, n = wait_for(lambda: ((lambda n: (n == 0, n))(accepted_sockets(pid, ports))))
    R.check(ok, f"{what}: no downstream connection left open in Envoy", f"{n} accepted sockets still open")
    base_other = fd_base[0] - fd_base[1]
    ok, n = wait_for(lambda: ((lambda n: (n <= base_other, n))(fd_count(pid) - eventfds(pid))))
    R.check(ok, f"{what}: Envoy's fds other than eventfds back to their baseline ({base_other})",
            f"{n} open: {fd_kinds(pid)}")
    info(f"{what}: eventfds {fd_base[1]} at the baseline, {eventfds(pid)} now (the engine's idle pool)")
    if module:
        for g in ("tls_connections_open", "tls_key_ops_in_flight"):
            ok, v = wait_for(lambda g=g: ((lambda v: (v == 0, v))(stat(module_stats(env), g))))
            R.check(ok, f"{what}: gauge {g} is 0", f"{g} = {v} (stats: {module_stats(env)})")


def eventfd_growth_check(env, what, load, times=3, slack=0):
    """Runs `load` `times` times; Envoy's eventfd count must not grow after the first (an
    eventfd per operation that is never given back would grow it every time, by about the
    load's operation count). `slack`: the engine's idle pool keeps as many eventfds as
    operations were ever in flight at once, and a burst whose clients race each other can
    reach a few more at once than the first one did."""
    counts = []
    for _ in range(times):
        load()
        wait_for(lambda: ((lambda n: (n == 0, n))(accepted_sockets(env.proc.pid, set(env.ports.values())))))
        time.sleep(0.5)
        counts.append(eventfds(env.proc.pid))
    R.check(max(counts[1:]) <= counts[0] + slack,
            f"{what}, {times} times: Envoy's eventfds do not grow after the first"
            + (f" (by more than {slack})" if slack else ""),
            f"eventfds after each run: {counts}")


def fd_kinds(pid):
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        k = re.sub(r"\[\d+\]|\d+", "", t.split(":")[0] if ":" in t else t)
        if k.startswith("anon_inode"):
            k = t
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


# ---------------------------------------------------------------------------------------------
# The main run: every listener, every client

def check_handshake(spec, r, version, what, cn=None, key=None, cipher=None):
    cn = cn or spec.subject
    key = key or spec.key
    problems = []
    if r["rc"] == "timeout":
        problems.append("s_client timed out (a hung handshake)")
    if r["protocol"] != version:
        problems.append(f"Protocol {r['protocol']}, want {version}")
    if cipher and r["cipher"] != cipher:
        problems.append(f"Cipher {r['cipher']}, want {cipher}")
    elif version == "TLSv1.3" and not (r["cipher"] or "").startswith("TLS_"):
        problems.append(f"Cipher {r['cipher']}, want a TLS 1.3 suite")
    elif version == "TLSv1.2" and not cipher:
        want = "ECDHE-RSA-" if key == "rsa" else "ECDHE-ECDSA-"
        if not (r["cipher"] or "").startswith(want):
            problems.append(f"Cipher {r['cipher']}, want {want}*")
    if r["subject"] != cn:
        problems.append(f"subject CN {r['subject']}, want {cn}")
    if not cipher or not cipher.startswith("AES"):  # RSA key exchange has no signature
        want_sig = ("RSA-PSS", "RSA") if key == "rsa" else ("ECDSA",)
        if r["sigtype"] not in want_sig:
            problems.append(f"Peer signature type {r['sigtype']}, want {'/'.join(want_sig)}")
    if r["status"] != 200 or not r["body_ok"]:
        problems.append(f"HTTP over it: status {r['status']}, body {'ok' if r['body_ok'] else 'missing'}")
    R.check(not problems, f"{spec.name}: {what}",
            "; ".join(problems) + "\n" + s_summary(r))
    if VERBOSE:
        print(f"    {s_summary(r)}")


def openssl_cases(spec):
    if spec.sni:
        for name, (cn, key) in spec.sni.items():
            for v, flag in (("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")):
                r = s_client(spec.ports, [flag, "-servername", name])
                check_handshake(spec, r, v, f"s_client {v} -servername {name} gets {cn} ({key})", cn, key)
        r = s_client(spec.ports, ["-tls1_3", "-servername", "c.example.com"], request=False)
        R.check(r["rc"] not in (0, "timeout") and r["protocol"] in (None, "(NONE)") and not r["subject"],
                f"{spec.name}: s_client -servername c.example.com (no filter chain) is refused, no hang",
                s_summary(r))
        r = s_client(spec.ports, ["-tls1_3", "-noservername"], request=False)
        R.check(r["rc"] not in (0, "timeout") and not r["subject"],
                f"{spec.name}: s_client without SNI (no filter chain) is refused, no hang", s_summary(r))
        return
    for v, flag in (("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")):
        r = s_client(spec.ports, [flag])
        check_handshake(spec, r, v, f"s_client {v} ({spec.key}): Protocol, Cipher, signature, subject, HTTP 200")
    if spec.resume:
        for v, flag in (("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")):
            sess = os.path.join(WORK, f"{spec.name}-{v}.sess")
            r1 = s_client(spec.ports, [flag, "-sess_out", sess])
            hs0, re0 = handshake_counters(spec, ENV)
            r2 = s_client(spec.ports, [flag, "-sess_in", sess])
            hs1, re1 = handshake_counters(spec, ENV)
            R.check(r1["status"] == 200 and r2["status"] == 200 and r2["reused"] and r2["protocol"] == v
                    and re1 - re0 == 1,
                    f"{spec.name}: s_client {v} -sess_out then -sess_in: the session is resumed (Reused line, "
                    f"resumption counter +1)",
                    f"first: {s_summary(r1)}\nsecond: reused {r2['reused']}; {s_summary(r2)}\n"
                    f"resumptions +{re1 - re0}")
    if spec.key == "rsa":
        r = s_client(spec.ports, ["-tls1_2", "-cipher", RSA_KX])
        if spec.kx:
            check_handshake(spec, r, "TLSv1.2", f"s_client -tls1_2 -cipher {RSA_KX} (RSA key exchange, configured)",
                            cipher=RSA_KX)
        else:
            R.check(r["rc"] not in (0, "timeout") and r["cipher"] in (None, "0000", "(NONE)") and not r["status"],
                    f"{spec.name}: s_client -tls1_2 -cipher {RSA_KX} (RSA key exchange) is refused by default",
                    s_summary(r))


def ticket_cases(specs):
    """A ticket from one listener resumes on another with the same key file, on one that has
    it as its second (rotated-out) key, and not on one with another key."""
    by = {s.name: s for s in specs if s.tickets}
    if len(by) < 4:
        return
    for v, flag in (("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")):
        sess = os.path.join(WORK, f"tickets-{v}.sess")
        r0 = s_client(by["tk_a"].ports, [flag, "-sess_out", sess])
        R.check(r0["status"] == 200, f"tickets {v}: a session from tk_a", s_summary(r0))
        for name, want in (("tk_a", True), ("tk_b", True), ("tk_rot", True), ("tk_other", False)):
            r = s_client(by[name].ports, [flag, "-sess_in", sess])
            R.check(r["status"] == 200 and bool(r["reused"]) == want,
                    f"tickets {v}: tk_a's ticket {'resumes' if want else 'does not resume'} on {name} "
                    f"({'same key' if name in ('tk_a', 'tk_b') else 'key 1 second' if name == 'tk_rot' else 'other key'})",
                    f"reused {r['reused']}; {s_summary(r)}")


def curl_cases(spec, work):
    names = list(spec.sni) if spec.sni else [None]
    for name in names:
        label = f" ({name})" if name else ""
        for proto, flag, want in (("h2", "--http2", "2"), ("http/1.1", "--http1.1", "1.1")):
            w, hdrs, body, err = curl(spec.ports, flag, work=work, resolve=name)
            R.check(w == [want, "200"] and body == BODY,
                    f"{spec.name}: curl {proto}{label}: HTTP/{want} 200 with the upstream's body",
                    f"curl -w {w}, {len(body)} B, {err}")
    if spec.gzip:
        for proto, flag in (("h2", "--http2"), ("http/1.1", "--http1.1")):
            w, hdrs, body, err = curl(spec.ports, flag, path="/c/page", extra=["--compressed"], work=work)
            R.check(w[1:] == ["200"] and "content-encoding: gzip" in hdrs and body == PAGE,
                    f"{spec.name}: curl --compressed {proto}: gzip by the module's compressor, decodes to the "
                    f"upstream's {len(PAGE)} B",
                    f"curl -w {w}, {len(body)} B, headers {hdrs.strip()!r}, {err}")


def h2load_cases(spec, env):
    if spec.resume or spec.reload or spec.tickets:
        return
    names = list(spec.sni) if spec.sni else [None]
    for name in names:
        label = f" ({name})" if name else ""
        for n, c, close, how in ((200, 20, True, "http/1.1 connection: close, 20 clients (a new connection and a "
                                                 "full handshake per request)"),
                                 (100, 100, False, "h2, 100 clients at once (100 parallel handshakes)")):
            hs0, re0 = handshake_counters(spec, env)
            ok, st2, out = h2load(spec.ports, n, c, h1_close=close, host=name)
            hs1, re1 = handshake_counters(spec, env)
            R.check(ok == n and st2 == n and hs1 - hs0 >= n and re1 == re0,
                    f"{spec.name}: h2load -n {n}{label}, {how}: {n} succeeded with 2xx, >= {n} full handshakes, "
                    f"no resumption",
                    f"{ok} succeeded, {st2} 2xx; full handshakes +{hs1 - hs0}, resumptions +{re1 - re0}"
                    + ("" if spec.module else " (listener ssl.* counters)") + f"\n{out[-900:]}")
            if VERBOSE:
                print(f"    full handshakes +{hs1 - hs0}, resumptions +{re1 - re0}")


class TlsConn:
    """A TLS client over a plain socket through ssl.SSLObject and memory BIOs, so that the test
    decides what goes on the wire and when (close_notify, half-close, reset)."""

    def __init__(self, port, version=None, timeout=IO_TIMEOUT):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outg, server_side=False)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.eof = False
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                self._recv()

    def flush(self):
        out = self.outg.read()
        if out:
            self.sock.sendall(out)

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            self.eof = True
            self.inc.write_eof()
            raise EOFError
        self.inc.write(d)

    def send(self, data):
        self.obj.write(data)
        self.flush()

    def close_notify(self):
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        self.flush()

    def read_all(self, limit=None, pause=None, limit_fn=None):
        """Reads until close_notify, EOF or an error; returns (bytes, how it ended). pause(got)
        may sleep (a slow reader)."""
        got = bytearray()
        while True:
            try:
                d = self.obj.read(65536)
                if not d:
                    return bytes(got), "close_notify"
                got += d
                if pause:
                    pause(got)
                if limit_fn and limit is None:
                    limit = limit_fn(got)
                if limit and len(got) >= limit:
                    return bytes(got), "complete"
            except ssl.SSLWantReadError:
                try:
                    self._recv()
                except EOFError:
                    return bytes(got), "tcp eof without close_notify"
                except socket.timeout:
                    return bytes(got), "timeout"
                except ConnectionResetError:
                    return bytes(got), "tcp reset"
            except ssl.SSLZeroReturnError:
                return bytes(got), "close_notify"
            except ssl.SSLEOFError:
                return bytes(got), "tcp eof without close_notify"
            except ssl.SSLError as e:
                return bytes(got), f"ssl error {e.reason}"

    def close(self):
        self.sock.close()


def http_status(raw):
    m = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(m.group(1)) if m else None


def halfclose_outcome(port, how):
    """What a client sees after a GET (connection: close) followed by `how`."""
    try:
        c = TlsConn(port)
    except (OSError, EOFError, ssl.SSLError) as e:
        return f"handshake failed: {e.__class__.__name__}"
    try:
        c.send(b"GET /c/hello HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        if how == "close_notify":
            c.close_notify()
        elif how == "tcp half-close":
            c.sock.shutdown(socket.SHUT_WR)
        raw, end = c.read_all()
        body_ok = raw.endswith(BODY)
        return f"status {http_status(raw)}, body {'complete' if body_ok else 'incomplete'}, ended by {end}"
    finally:
        c.close()


def halfclose_cases(specs):
    """close_notify and TCP half-close right after a request: the module must end the same way
    Envoy's own TLS does (compared with ref_rsa)."""
    ref = next((s for s in specs if s.name == "ref_rsa"), None)
    if not ref:
        return
    for how in ("none", "close_notify", "tcp half-close"):
        want = halfclose_outcome(ref.ports, how)
        if VERBOSE or not any(s.module for s in specs):
            info(f"ref_rsa: GET then {how}: {want}")
        for s in specs:
            if not s.module or s.sni:
                continue
            got = halfclose_outcome(s.ports, how)
            R.check(got == want, f"{s.name}: GET (connection: close) then {how}: ends as Envoy's own TLS does "
                                 f"({want})", f"module: {got}\nEnvoy's own TLS: {want}")


BIG = sbs.noise(4 << 20, 41)


def data_cases(spec, work, up):
    """Bodies bigger than any buffer both ways, and a client that stops reading for a while
    (Envoy's write buffer fills: back-pressure and partial writes in the transport socket)."""
    if spec.sni or spec.resume or spec.reload or spec.kx or spec.tickets:
        return
    for proto, flag, want in (("h2", "--http2", "2"), ("http/1.1", "--http1.1", "1.1")):
        w, hdrs, body, err = curl(spec.ports, flag, path="/c/big", work=work)
        R.check(w == [want, "200"] and body == BIG, f"{spec.name}: curl {proto}: a 4 MiB response arrives intact",
                f"curl -w {w}, {sbs.show(body)} vs {sbs.show(BIG)}, {err}")
        up_body = sbs.noise(3 << 20, 43 + len(proto))
        fn = os.path.join(work, "upload.b")
        with open(fn, "wb") as f:
            f.write(up_body)
        w, hdrs, body, err = curl(spec.ports, flag, path="/c/upload", work=work,
                                  extra=["--data-binary", "@" + fn, "-H", "content-type: application/octet-stream"])
        seen = up.last_seen("upload", spec.name)
        R.check(w == [want, "200"] and seen is not None and seen["body"] == up_body,
                f"{spec.name}: curl {proto}: a 3 MiB request body reaches the upstream intact",
                f"curl -w {w} {err}; upstream got {sbs.show(seen['body']) if seen else None}")
    # A slow reader: reads 64 KiB, stops for 1 s (Envoy's buffers fill up), then reads the rest.
    # Keep-alive, so that Envoy's delayed_close_timeout (1 s after a connection: close response)
    # plays no part; the response ends at its content-length.
    want = len(BIG)
    try:
        c = TlsConn(spec.ports)
        c.send(b"GET /c/big HTTP/1.1\r\nhost: test\r\n\r\n")
        paused = []

        def pause(got):
            if not paused and len(got) > 65536:
                paused.append(1)
                time.sleep(1.0)

        def enough(got):
            i = got.find(b"\r\n\r\n")
            if i < 0:
                return None
            m = re.search(rb"content-length: (\d+)", bytes(got[:i]), re.I)
            return i + 4 + int(m.group(1)) if m else None
        raw, end = c.read_all(pause=pause, limit_fn=enough)
        c.close()
        ok = http_status(raw) == 200 and raw.endswith(BIG)
        detail = f"status {http_status(raw)}, {len(raw)} B (body {want} B), ended by {end}"
    except (OSError, EOFError, ssl.SSLError) as e:
        ok, detail = False, f"{e.__class__.__name__}: {e}"
    R.check(ok, f"{spec.name}: a client that stops reading for 1 s after 64 KiB still gets all 4 MiB",
            detail)


def reload_case(env, tls, work):
    """The module re-reads its certificate and key when the files change (issue item 3)."""
    port = env.ports.get("mod_reload")
    if port is None:
        return
    r = s_client(port, ["-tls1_3"])
    before = r["subject"]
    d = os.path.join(tls, "reload")
    new = os.path.join(work, "reload-new")
    os.makedirs(new, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=reloaded.envoy-qat.test",
                    "-newkey", "rsa:2048", "-keyout", os.path.join(new, "cert.key"),
                    "-out", os.path.join(new, "cert.crt")], check=True, capture_output=True, timeout=60)
    st0 = module_stats(env)
    # Key first, then the certificate, each replaced by a rename (never a half-written file).
    for f in ("cert.key", "cert.crt"):
        shutil.copy(os.path.join(new, f), os.path.join(d, f + ".tmp"))
        os.rename(os.path.join(d, f + ".tmp"), os.path.join(d, f))
    deadline = time.monotonic() + 15
    after = None
    while time.monotonic() < deadline:
        r = s_client(port, ["-tls1_3"])
        after = r["subject"]
        if after == "reloaded.envoy-qat.test" and r["status"] == 200:
            break
        time.sleep(0.5)
    st1 = module_stats(env)
    R.check(before == CERTS["rsa"][0] and after == "reloaded.envoy-qat.test" and r["status"] == 200,
            "mod_reload: certificate and key files replaced: new handshakes get the new certificate",
            f"subject before {before}, after {after}; {s_summary(r)}")
    info(f"reload: tls_cert_reloads +{(stat(st1, 'tls_cert_reloads') or 0) - (stat(st0, 'tls_cert_reloads') or 0)}, "
         f"tls_cert_reload_failures +{(stat(st1, 'tls_cert_reload_failures') or 0) - (stat(st0, 'tls_cert_reload_failures') or 0)}")


def main_section(args, work, tls, up):
    specs = main_specs(tls, args.envoy_only)
    if args.only:
        specs = [s for s in specs if re.search(args.only, s.name)]
    if not specs:
        R.skip("main section", "--only matched no listener")
        return
    env = sbs.Envoy(bootstrap([s.listener() for s in specs], up.port), work, "main", concurrency=2,
                    env=module_env(args.module_dir, args.sim, QAT_LATENCY_MAIN_US))
    try:
        if not R.check(env.wait_ready() and len(env.ports) == len(specs),
                       f"Envoy starts with listeners {', '.join(s.name for s in specs)}",
                       sbs.interesting(env.log_tail(60))):
            return
        global ENV, WORK
        ENV, WORK = env, work
        for s in specs:
            s.ports = env.ports[s.name]
        # Warm up (one request per listener, upstream connections made), then the fd baseline.
        for s in specs:
            curl(s.ports, "--http1.1", work=work, resolve=next(iter(s.sni)) if s.sni else None)
        time.sleep(1.5)
        fd_base = (fd_count(env.proc.pid), eventfds(env.proc.pid))
        info(f"main Envoy: {fd_base[0]} fds after warm-up ({fd_kinds(env.proc.pid)})")
        for s in specs:
            openssl_cases(s)
            curl_cases(s, work)
            data_cases(s, work, up)
            h2load_cases(s, env)
        halfclose_cases(specs)
        ticket_cases(specs)
        reload_case(env, tls, work)
        q = next((x for x in specs if x.name == "mod_qat"), None)
        if q:
            # The engine's pool already holds the eventfds of 100 parallel operations (the h2
            # bursts above); 300 more handshakes at 20 in flight must not add any.
            eventfd_growth_check(env, "main run: h2load -n 300 -c 20 on mod_qat after the 100-client bursts",
                                 lambda: h2load(q.ports, 300, 20))
        st = module_stats(env)
        if not args.envoy_only:
            info("module stats: " + (", ".join(f"{k}={v}" for k, v in sorted(st.items())) or "none found"))
            for name in STAT_NAMES:
                R.check(stat(st, name) is not None, f"module stat {name} is in admin /stats",
                        f"tls_ stats found: {sorted(st)}")
            R.check((stat(st, "tls_v1_2") or 0) > 0 and (stat(st, "tls_v1_3") or 0) > 0
                    and (stat(st, "tls_key_ops") or 0) > 0,
                    "module counters tls_v1_2, tls_v1_3, tls_key_ops moved",
                    f"{ {n: stat(st, n) for n in STAT_NAMES} }")
        leak_checks(env, "main run", fd_base, not args.envoy_only)
        errs = [l for l in open(env.log_path, errors="replace") if "critical" in l or "panic" in l.lower()]
        R.check(not errs, "main run: no critical or panic line in Envoy's log", "".join(errs[-10:]))
    finally:
        if args.keep:
            print(f"main Envoy log: {env.log_path}")
        env.stop()


# ---------------------------------------------------------------------------------------------
# Resets mid-handshake

def client_hello(version, ciphers=None):
    """A TLS client (ssl.SSLObject over memory BIOs) and its first flight."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return obj, inc, outg


def send_second_flight(sock, obj, inc, outg, timeout=IO_TIMEOUT):
    """TLS 1.2 RSA key exchange: reads the server's flight until the client has its
    ClientKeyExchange, ChangeCipherSpec and Finished, and sends them: the server's key operation
    (the RSA decrypt) starts when they arrive."""
    sock.settimeout(timeout)
    while True:
        d = sock.recv(65536)
        if not d:
            return False
        inc.write(d)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return False
        out = outg.read()
        if out:
            sock.sendall(out)
            return True


def wait_in_flight(env, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = stat(module_stats(env), "tls_key_ops_in_flight")
        if v:
            return v
        time.sleep(0.01)
    return 0


def resets_section(args, work, tls, up):
    """A module Envoy whose qat-sim takes 300 ms per operation, so that a client can go away
    while its key operation is in flight (seen in tls_key_ops_in_flight first). With
    --envoy-only the same clients against Envoy's own TLS (no in-flight checks)."""
    mod = not args.envoy_only

    def ts(ctx):
        return module_ts(ctx, ENGINE_QAT) if mod else envoy_ts(ctx)
    specs = [
        Spec("r_qat", mod, [chain("r_qat", ts(tls_context(tls, "rsa", cipher_suites=KX_SUITES)), mod)],
             subject=CERTS["rsa"][0], kx=True),
        Spec("r_ecdsa", mod, [chain("r_ecdsa", ts(tls_context(tls, "ecdsa")), mod)], key="ec",
             subject=CERTS["ecdsa"][0]),
        # Envoy itself closes the connection while the operation is in flight: the handshake
        # (300 ms on the device) outlives transport_socket_connect_timeout.
        Spec("r_timeout", mod, [dict(chain("r_timeout", ts(tls_context(tls, "rsa")), mod),
                                     transport_socket_connect_timeout="0.1s")], subject=CERTS["rsa"][0]),
    ]
    env = sbs.Envoy(bootstrap([s.listener() for s in specs], up.port), work, "resets", concurrency=2,
                    env=module_env(args.module_dir, args.sim, QAT_LATENCY_LONG_US))
    try:
        if not R.check(env.wait_ready() and len(env.ports) == len(specs),
                       f"resets: Envoy starts" + (f" (qat-sim latency {QAT_LATENCY_LONG_US} us)" if mod else ""),
                       sbs.interesting(env.log_tail(60))):
            return
        for s in specs:
            s.ports = env.ports[s.name]
            if s.name == "r_timeout":
                continue
            r = s_client(s.ports, ["-tls1_3"])
            check_handshake(s, r, "TLSv1.3", "s_client TLS 1.3 completes (warm-up" +
                            (", 300 ms per key operation)" if mod else ")"))
        time.sleep(1.5)
        fd_base = (fd_count(env.proc.pid), eventfds(env.proc.pid))
        st0 = module_stats(env)
        variants = [
            ("TLS 1.3 ClientHello then RST", "r_qat", ssl.TLSVersion.TLSv1_3, None, "rst", False),
            ("TLS 1.3 ClientHello then FIN", "r_qat", ssl.TLSVersion.TLSv1_3, None, "fin", False),
            ("TLS 1.2 ECDHE ClientHello then RST", "r_qat", ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256",
             "rst", False),
            ("TLS 1.2 RSA key exchange, RST during the decrypt", "r_qat", ssl.TLSVersion.TLSv1_2, RSA_KX, "rst", True),
            ("TLS 1.3 ECDSA ClientHello then RST", "r_ecdsa", ssl.TLSVersion.TLSv1_3, None, "rst", False),
            ("TLS 1.3 ClientHello, shutdown(SHUT_WR) (half-close) then close", "r_qat", ssl.TLSVersion.TLSv1_3,
             None, "half", False),
        ]
        for what, lname, ver, ciphers, how, kx in variants:
            port = env.ports[lname]
            obj, inc, outg = client_hello(ver, ciphers)
            s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
            s.sendall(outg.read())
            if kx and not send_second_flight(s, obj, inc, outg):
                R.fail(f"resets: {what}", "the server closed before the client's Finished")
                s.close()
                continue
            inflight = wait_in_flight(env) if mod else time.sleep(0.05)
            if how == "rst":
                sbs.reset_socket(s)
            elif how == "half":
                s.shutdown(socket.SHUT_WR)
                time.sleep(0.05)
                s.close()
            else:
                s.close()
            if not mod:
                R.ok(f"resets: {what} (Envoy's own TLS)")
                continue
            R.check(inflight > 0, f"resets: {what}: the key operation was in flight when the client went away",
                    "tls_key_ops_in_flight never went above 0 (stats: "
                    f"{ {n: stat(module_stats(env), n) for n in STAT_NAMES} })")
            ok, v = wait_for(lambda: ((lambda v: (v == 0, v))(stat(module_stats(env), "tls_key_ops_in_flight"))))
            R.check(ok, f"resets: {what}: tls_key_ops_in_flight back to 0", f"still {v}")
        # Fifty at once, half RST and half FIN, all while their operations are in flight.
        socks = []
        for i in range(50):
            obj, inc, outg = client_hello(ssl.TLSVersion.TLSv1_3)
            s = socket.create_connection(("127.0.0.1", env.ports["r_qat" if i % 2 else "r_ecdsa"]),
                                         timeout=IO_TIMEOUT)
            s.sendall(outg.read())
            socks.append(s)
        inflight = wait_in_flight(env) if mod else time.sleep(0.1)
        for i, s in enumerate(socks):
            sbs.reset_socket(s) if i % 2 else s.close()
        if mod:
            R.check(inflight > 0, f"resets: 50 clients gone mid-handshake ({inflight} operations seen in flight)",
                    "no operation seen in flight")
            time.sleep(QAT_LATENCY_LONG_US / 1e6 + 0.5)
            st1 = module_stats(env)
            info("resets: " + ", ".join(f"{n} +{(stat(st1, n) or 0) - (stat(st0, n) or 0)}"
                                        for n in ("tls_key_ops", "tls_key_ops_cancelled", "tls_handshakes",
                                                  "tls_handshake_failures")))
            dc = (stat(st1, "tls_key_ops_cancelled") or 0) - (stat(st0, "tls_key_ops_cancelled") or 0)
            dfail = (stat(st1, "tls_handshake_failures") or 0) - (stat(st0, "tls_handshake_failures") or 0)
            # The module peeks at the socket while BoringSSL waits for the key: a client that goes
            # away cancels its operation at once (an operation that completes first is not).
            R.check(dc > 0, "resets: clients gone mid-operation get their operations cancelled "
                            "(tls_key_ops_cancelled moved)",
                    f"tls_key_ops_cancelled +{dc}, tls_handshake_failures +{dfail}: the operations ran to the end "
                    f"and the peer's close was seen only after that")
            info(f"resets: clients gone mid-operation: tls_key_ops_cancelled +{dc}, tls_handshake_failures +{dfail}")
        if mod:
            # Envoy closes the connection itself (transport_socket_connect_timeout 0.1 s) while
            # the 300 ms operation is in flight: the module must cancel it.
            c0 = stat(module_stats(env), "tls_key_ops_cancelled") or 0
            r = s_client(env.ports["r_timeout"], ["-tls1_3"], request=False)
            ok, v = wait_for(lambda: ((lambda v: (v == 0, v))(stat(module_stats(env), "tls_key_ops_in_flight"))))
            c1 = stat(module_stats(env), "tls_key_ops_cancelled") or 0
            R.check(r["protocol"] in (None, "(NONE)") and r["rc"] != "timeout" and ok and c1 > c0,
                    "resets: Envoy closes a connection (transport_socket_connect_timeout 0.1 s) while its key "
                    "operation is in flight: the operation is cancelled (tls_key_ops_cancelled +1, in flight 0)",
                    f"s_client: {s_summary(r)}; cancelled {c0} -> {c1}; in flight {v}")

            def burst():
                socks = []
                for i in range(50):
                    _, _, outg_ = client_hello(ssl.TLSVersion.TLSv1_3)
                    so = socket.create_connection(("127.0.0.1", env.ports["r_qat"]), timeout=IO_TIMEOUT)
                    so.sendall(outg_.read())
                    socks.append(so)
                wait_in_flight(env)
                for i, so in enumerate(socks):
                    sbs.reset_socket(so) if i % 2 else so.close()
                wait_for(lambda: ((lambda v: (v == 0, v))(stat(module_stats(env), "tls_key_ops_in_flight"))))
            eventfd_growth_check(env, "resets: 50 clients gone mid-handshake", burst, slack=10)
        # Envoy still serves, on every listener.
        for s in specs:
            if s.name == "r_timeout":
                continue
            w, _, body, err = curl(s.ports, "--http2", work=work)
            R.check(w == ["2", "200"] and body == BODY, f"resets: {s.name} still serves (curl h2 200) afterwards",
                    f"{w} {err}")
        ok, st2, out = h2load(env.ports["r_qat"], 40, 20)
        R.check(ok == 40, "resets: h2load -n 40 -c 20 afterwards: 40 succeeded", out[-600:])
        leak_checks(env, "resets", fd_base, mod)
        dead = [l for l in open(env.log_path, errors="replace") if re.search(r"critical|panic|dead scheduler", l, re.I)]
        R.check(env.proc.poll() is None and not dead, "resets: Envoy alive, no critical/panic line in its log",
                "".join(dead[-10:]))
    finally:
        if args.keep:
            print(f"resets Envoy log: {env.log_path}")
        env.stop()


# ---------------------------------------------------------------------------------------------
# qat-sim faults

def faults_section(args, work, tls, up):
    if args.envoy_only:
        R.skip("qat-sim faults", "--envoy-only")
        return
    specs = [
        Spec("f_rsa", True, [chain("f_rsa", module_ts(tls_context(tls, "rsa"), ENGINE_QAT), True)]),
        Spec("f_ecdsa", True, [chain("f_ecdsa", module_ts(tls_context(tls, "ecdsa"), ENGINE_QAT), True)], key="ec"),
        # The engine without its own software fallback: a failed device operation comes back to
        # the module, which redoes it inline with BoringSSL (tls_key_ops_inline; every failover,
        # the engine's and the inline ones, is in tls_key_op_failovers).
        Spec("f_nofb", True, [chain("f_nofb", module_ts(tls_context(tls, "rsa"), dict(ENGINE_QAT, software_fallback=False)),
                                    True)]),
    ]
    env = sbs.Envoy(bootstrap([s.listener() for s in specs], up.port), work, "faults", concurrency=2,
                    env=module_env(args.module_dir, args.sim, 200, FAULTS))
    try:
        if not R.check(env.wait_ready() and len(env.ports) == len(specs),
                       f"faults: Envoy starts with QAT_SIM_FAULTS={FAULTS}", sbs.interesting(env.log_tail(60))):
            return
        time.sleep(1.0)
        fd_base = (fd_count(env.proc.pid), eventfds(env.proc.pid))
        for s in specs:
            st0 = module_stats(env)
            n = 300
            ok, st2, out = h2load(env.ports[s.name], n, 20)
            R.check(ok == n and st2 == n, f"faults: {s.name}: h2load {n} new handshakes under device faults: "
                                          f"all {n} succeeded", out[-900:])
            for v in ("-tls1_2", "-tls1_3"):
                bad = 0
                for _ in range(10):
                    r = s_client(env.ports[s.name], [v])
                    bad += r["status"] != 200
                R.check(bad == 0, f"faults: {s.name}: 10 s_client {v} handshakes all served", f"{bad} failed")
            st1 = module_stats(env)
            d = {n_: (stat(st1, n_) or 0) - (stat(st0, n_) or 0) for n_ in STAT_NAMES}
            info(f"faults: {s.name}: " + ", ".join(f"{k} +{v}" for k, v in d.items()))
            log = open(env.log_path, errors="replace").read()
            seen = {k: log.count(k) for k in ("out of rotation", "restarting", "failed", "inline with BoringSSL")}
            R.check(d["tls_key_op_failovers"] > 0, f"faults: {s.name}: tls_key_op_failovers moved",
                    f"{d}\nlog so far: {seen}")
            if s.name == "f_nofb":
                R.check(d["tls_key_ops_inline"] > 0, f"faults: {s.name}: without the engine's fallback, "
                        "failed device operations are redone inline (tls_key_ops_inline moved)", f"{d}")
            R.check(d["tls_handshake_failures"] == 0, f"faults: {s.name}: no handshake failed", f"{d}")
        leak_checks(env, "faults", fd_base, True)
    finally:
        if args.keep:
            print(f"faults Envoy log: {env.log_path}")
        env.stop()


# ---------------------------------------------------------------------------------------------
# A chain without tls_wake

def nowake_section(args, work, tls, up):
    if args.envoy_only:
        R.skip("chain without tls_wake", "--envoy-only")
        return
    lst = [listener("nowake_qat", [chain("nowake_qat", module_ts(tls_context(tls, "rsa"), ENGINE_QAT), True,
                                         wake=False)]),
           listener("nowake_boring", [chain("nowake_boring", module_ts(tls_context(tls, "rsa"), BORING), True,
                                            wake=False)])]
    cfg = bootstrap(lst, up.port)
    rc, log = envoy_validate(cfg, work, "nowake-validate", args.module_dir, args.sim)
    named = [l for l in log.splitlines() if "tls_wake" in l]
    info(f"nowake: envoy --mode validate exit {rc}; lines naming tls_wake: "
         f"{named[-3:] if named else 'none'}")
    if rc != 0:
        R.check(bool(named), "nowake: a chain without tls_wake is refused at load, the log names tls_wake",
                sbs.interesting(log))
        return
    env = sbs.Envoy(cfg, work, "nowake", concurrency=1, env=module_env(args.module_dir, args.sim, 2000))
    try:
        if not env.wait_ready():
            log = open(env.log_path, errors="replace").read()
            named = [l for l in log.splitlines() if "tls_wake" in l]
            R.check(bool(named), "nowake: Envoy refuses a chain without tls_wake at start, the log names tls_wake",
                    sbs.interesting(log))
            return
        for name in ("nowake_qat", "nowake_boring"):
            t0 = time.monotonic()
            r = s_client(env.ports[name], ["-tls1_3"], timeout=15)
            dt = time.monotonic() - t0
            log = open(env.log_path, errors="replace").read()
            named = [l for l in log.splitlines() if "tls_wake" in l]
            completed = r["status"] == 200
            info(f"nowake: {name}: s_client {'completed' if completed else 'did not complete'} "
                 f"(exit {r['rc']}, {dt:.1f} s); log lines naming tls_wake: {named[-2:] if named else 'none'}")
            R.check(r["rc"] != "timeout" and (completed or named),
                    f"nowake: {name}: no hang: the handshake completes or fails with a log line naming tls_wake",
                    s_summary(r) + "\n" + sbs.interesting(log))
    finally:
        env.stop()


# ---------------------------------------------------------------------------------------------
# envoy --mode validate, and the shipped bootstrap

def envoy_validate(cfg, work, name, module_dir, sim=None):
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    try:
        p = subprocess.run([sbs.ENVOY, "--mode", "validate", "-c", path, "--log-level", "info"],
                           capture_output=True, text=True, timeout=120, cwd=work,
                           env=module_env(module_dir, sim, 200))
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


def map_bootstrap(text_, tls, upstream_port):
    """module-tls.yaml pointed at this run: /etc/envoy/tls/ -> tls (also inside the module's JSON
    strings), admin and listeners on ports Envoy picks, clusters -> the test upstream."""
    tree = yaml.safe_load(text_.replace("/etc/envoy/tls/", tls.rstrip("/") + "/"))
    return sbs.map_bootstrap(tree, tls, upstream_port)


def bad_configs(tls):
    ctx = tls_context(tls, "rsa")
    missing = os.path.join(tls, "no-such.crt")

    ctx.pop("no_resumption", None)

    def with_(**kw):
        c = json.loads(json.dumps(ctx))
        c["key_provider"] = ENGINE_QAT
        for path, v in kw.items():
            node = c
            keys = path.split("__")
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = v
        return json.dumps(c)

    def tc(**kw):
        return with_(**{f"common_tls_context__tls_certificates": [dict(ctx["common_tls_context"]["tls_certificates"][0],
                                                                       **kw)]})

    return [
        ("bad JSON", '{"common_tls_context": {', None),
        ("unknown field", with_(common_tls_context__alpn_protocolz=["h2"]), "alpn_protocolz"),
        ("unknown top-level field", with_(certificate="x"), "certificate"),
        ("missing certificate file", tc(certificate_chain={"filename": missing}), "no-such.crt"),
        ("missing key file", tc(private_key={"filename": os.path.join(tls, "no-such.key")}), "no-such.key"),
        ("key that does not match the certificate", tc(private_key={"filename": os.path.join(tls, "ecdsa.key")}),
         None),
        ("bad TLS version name", with_(common_tls_context__tls_params={"tls_minimum_protocol_version": "TLS1.2"}),
         "tls_minimum_protocol_version"),
        ("unknown cipher suite", with_(common_tls_context__tls_params={"cipher_suites": ["NOT-A-CIPHER"]}),
         "cipher_suites"),
        ("bad key_provider mode", with_(key_provider={"mode": "turbo"}), "mode"),
        ("bad key_provider backend", with_(key_provider={"mode": "engine", "backend": "gpu"}), "backend"),
        ("no certificate", json.dumps({"common_tls_context": {"alpn_protocols": ["h2"]}}), "tls_certificates"),
    ]


def validate_section(args, work, tls, up):
    if args.envoy_only:
        R.skip("envoy --mode validate with the module", "--envoy-only")
        return
    if not os.path.exists(BOOTSTRAP):
        R.fail(f"{os.path.relpath(BOOTSTRAP, REPO)} exists")
        return
    mapped = map_bootstrap(open(BOOTSTRAP).read(), tls, up.port)
    rc, log = envoy_validate(mapped, work, "bootstrap-validate", args.module_dir, args.sim)
    R.check(rc == 0, f"envoy --mode validate {os.path.relpath(BOOTSTRAP, REPO)} (TLS files mapped) passes",
            f"exit {rc}:\n{sbs.interesting(log)}")
    for i, (what, value, field) in enumerate(bad_configs(tls)):
        cfg = bootstrap([listener("l", [chain("l", module_ts_raw(value), True)])], 9)
        rc, log = envoy_validate(cfg, work, f"bad-{i}", args.module_dir, args.sim)
        echo = (value, value.replace('"', '\\"'))
        named = [l for l in log.splitlines() if field and field in l and not any(e in l for e in echo)]
        errs = [l for l in log.splitlines() if re.search(r"\]\[(error|critical)\]", l)]
        if field:
            R.check(rc not in (0, "timeout") and bool(named),
                    f"transport_socket_config ({what}) is refused at load, the log names {field!r}",
                    f"exit {rc}:\n{sbs.interesting(log)}")
        else:
            R.check(rc not in (0, "timeout") and bool(errs),
                    f"transport_socket_config ({what}) is refused at load with an error line",
                    f"exit {rc}:\n{sbs.interesting(log)}")
        if VERBOSE:
            print("    " + ((named or errs or ["(no line)"])[-1])[:300])
    for i, (what, ctx, kp) in enumerate((
            ("files, engine qat", tls_context(tls, "rsa"), ENGINE_QAT),
            ("inline PEM, ECDSA, engine auto", tls_context(tls, "ecdsa", inline=True),
             {"mode": "engine", "backend": "auto"}),
            ("boring mode, TLS 1.3 only, cipher_suites, ecdh_curves",
             dict(tls_context(tls, "rsa"), common_tls_context=dict(
                 tls_context(tls, "rsa")["common_tls_context"],
                 tls_params={"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3",
                             "cipher_suites": KX_SUITES, "ecdh_curves": ["X25519", "P-256"]})), BORING),
            ("no key_provider (the default)", tls_context(tls, "rsa"), None))):
        rc, log = envoy_validate(bootstrap([listener("l", [chain("l", module_ts(ctx, kp), True)])], 9), work,
                                 f"good-{i}", args.module_dir, args.sim)
        R.check(rc == 0, f"transport_socket_config {what}: validates", f"exit {rc}:\n{sbs.interesting(log)}")
    ts = module_ts(tls_context(tls, "rsa"), ENGINE_QAT)
    ts["typed_config"]["transport_socket_name"] = "tls13-only"
    rc, log = envoy_validate(bootstrap([listener("l", [chain("l", ts, True)])], 9), work, "bad-name",
                             args.module_dir, args.sim)
    R.check(rc not in (0, "timeout") and "tls13-only" in log, "transport_socket_name 'tls13-only' is refused, "
                                                              "the log names it", f"exit {rc}:\n{sbs.interesting(log)}")


def bootstrap_section(args, work, tls, up):
    """envoy-config/envoy/module-tls.yaml served for real: TLS by the module on qat-sim, gzip by
    the module's compressor."""
    if args.envoy_only:
        R.skip("module-tls.yaml served", "--envoy-only")
        return
    if not os.path.exists(BOOTSTRAP):
        return
    mapped = map_bootstrap(open(BOOTSTRAP).read(), tls, up.port)
    env = sbs.Envoy(mapped, work, "bootstrap", concurrency=1, env=module_env(args.module_dir, args.sim, 200))
    try:
        if not R.check(env.wait_ready() and env.ports, f"{os.path.relpath(BOOTSTRAP, REPO)} starts",
                       sbs.interesting(env.log_tail(60))):
            return
        port = next(iter(env.ports.values()))
        for proto, flag, want in (("h2", "--http2", "2"), ("http/1.1", "--http1.1", "1.1")):
            w, hdrs, body, err = curl(port, flag, path="/c/page", extra=["--compressed"], work=work)
            R.check(w == [want, "200"] and "content-encoding: gzip" in hdrs and body == PAGE,
                    f"module-tls.yaml: curl --compressed {proto}: TLS by the module, gzip by the module, "
                    f"decodes to the upstream's body", f"curl -w {w}, {len(body)} B, {hdrs.strip()!r} {err}")
        r = s_client(port, ["-tls1_3"])
        R.check(r["protocol"] == "TLSv1.3" and r["status"] == 200,
                "module-tls.yaml: s_client TLS 1.3 served", s_summary(r))
        seen = up.last_seen("page", "?")
        xfp = seen["headers"].get("x-forwarded-proto") if seen else None
        R.check(xfp == "https", "module-tls.yaml: the upstream sees x-forwarded-proto: https",
                f"x-forwarded-proto {xfp!r}")
        st = module_stats(env)
        R.check((stat(st, "tls_handshakes") or 0) >= 3, "module-tls.yaml: the module counted the handshakes",
                f"{st}")
    finally:
        if args.keep:
            print(f"bootstrap Envoy log: {env.log_path}")
        env.stop()


# ---------------------------------------------------------------------------------------------

SECTIONS = ["main", "resets", "faults", "nowake", "validate", "bootstrap"]


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module-dir")
    ap.add_argument("--sim")
    ap.add_argument("--envoy-only", action="store_true")
    ap.add_argument("--only")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if any(x not in SECTIONS for x in args.sections):
        ap.error(f"--sections: choose from {SECTIONS}")
    VERBOSE = args.verbose
    if not args.envoy_only:
        if not args.module_dir or not os.path.isfile(os.path.join(args.module_dir, sbs.MODULE_FILE)):
            print(f"tls_module_test: no {sbs.MODULE_FILE} in --module-dir {args.module_dir!r}", file=sys.stderr)
            return 2
        if not args.sim or not os.path.isfile(args.sim):
            print(f"tls_module_test: no qat-sim library at --sim {args.sim!r}", file=sys.stderr)
            return 2
        args.module_dir = os.path.abspath(args.module_dir)
        args.sim = os.path.abspath(args.sim)
    for tool in ("openssl", "curl", "h2load"):
        if not shutil.which(tool):
            print(f"tls_module_test: {tool} missing (ci/deps.sh installs it)", file=sys.stderr)
            return 2
    work = tempfile.mkdtemp(prefix="tls-module-test-")
    start = time.monotonic()
    try:
        tls = os.path.join(work, "tls")
        make_certs(tls)
        up = sbs.Upstream()
        up.cases["hello"] = {"headers": [("content-type", "text/plain")], "body": BODY}
        up.cases["page"] = {"headers": [("content-type", "text/html")], "body": PAGE}
        up.cases["big"] = {"headers": [("content-type", "application/octet-stream")], "body": BIG}
        up.cases["upload"] = {"headers": [("content-type", "text/plain")], "body": b"ok\n"}
        for sec, fn in (("main", main_section), ("resets", resets_section), ("faults", faults_section),
                        ("nowake", nowake_section), ("validate", validate_section),
                        ("bootstrap", bootstrap_section)):
            if sec in args.sections:
                fn(args, work, tls, up)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{R.passed} passed, {R.failed} failed, {R.skipped} skipped in {time.monotonic() - start:.0f} s")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
