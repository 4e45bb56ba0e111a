#!/usr/bin/env python3
"""Offline validation of envoy-config/ (run with build/venv/bin/python; ci/validate-configs.sh does).

  envoy [FILE...]       every Envoy bootstrap (default: envoy-config/envoy/*.yaml) and every
                        Envoy fragment inside an Istio EnvoyFilter (default: envoy-config/istio/*.yaml)
                        through the real stock Envoy: `envoy --mode validate`, after swapping ONLY our
                        QAT typed configs for stock equivalents (the `qat` private key provider ->
                        the plain key file next to it; the qatzip compressor library -> Envoy's gzip)
                        and pointing /etc/envoy/tls/ at freshly generated RSA and ECDSA certificates.
                        --keep DIR writes, per file, NAME.qat.yaml (paths mapped, QAT configs intact,
                        for `envoy-qat check --envoy-config`) and NAME.stock.yaml (what Envoy saw).
  manifests [FILE...]   every Istio and Kubernetes manifest (default: envoy-config/istio/*.yaml and
                        envoy-config/k8s/*.yaml) against JSON schemas: Kubernetes' published schemas
                        (kubernetes-validate package, strict), the EnvoyFilter CRD schema and our
                        IstioOperator / ProxyConfig schemas (tests/data/schemas/); the sidecar injection
                        templates as Pods; QAT resource/capability rules; the containerd memlock drop-in.
  stockify FILE         print FILE with the QAT typed configs swapped (what `envoy` validates).
  smoke                 run envoy-config/envoy/qat-tls-compression.yaml for real in the stock Envoy
                        (QAT typed configs swapped, ports moved to free loopback ports) in front of a
                        second Envoy speaking HTTP/2 cleartext, and drive it with curl and openssl:
                        HTTP/2 over TLS, the RSA and the ECDSA certificate chosen by signature
                        algorithm, gzip responses that decode.

Prints one line per checked item ("ok ..." or "FAIL ...: reason"); exits 1 if anything failed,
2 on usage errors.
"""
import argparse
import configparser
import copy
import gzip
import socket
import time
import urllib.request
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.path.join(REPO, "tests", "data", "schemas")
K8S_SCHEMA_VERSION = "v1.33.0-local-strict"

QAT_PROVIDER_TYPE = (
    "type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig"
)
QATZIP_TYPE = "type.googleapis.com/envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip"
GZIP_TYPE = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
TLS_DIR = "/etc/envoy/tls/"
QAT_RESOURCES = ("qat.intel.com/cy", "qat.intel.com/dc", "qat.intel.com/generic")
MIN_MEMLOCK = 16 * 1024 * 1024
KNOWN_TEMPLATES = {"sidecar", "gateway", "grpc-agent", "grpc-simple", "qathw-crypto", "qathw-compression"}

failures = 0


def report(ok, what, reason=""):
    global failures
    if ok:
        print(f"ok   {what}")
    else:
        failures += 1
        print(f"FAIL {what}: {reason}")


def rel(path):
    full = os.path.abspath(path)
    return os.path.relpath(full, REPO) if full.startswith(REPO + os.sep) else path


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------------------------------------
# Envoy: swap our QAT typed configs for stock ones, then `envoy --mode validate`.


def stockify(node):
    """Returns a copy of an Envoy config tree with only the QAT typed configs replaced."""
    node = copy.deepcopy(node)

    def walk(n):
        if isinstance(n, dict):
            pkp = n.get("private_key_provider")
            if isinstance(pkp, dict) and pkp.get("provider_name") == "qat":
                # The provider's key becomes the plain key (our configs already carry both).
                if "private_key" not in n:
                    key = (pkp.get("typed_config") or {}).get("private_key")
                    if key is not None:
                        n["private_key"] = key
                del n["private_key_provider"]
            tc = n.get("typed_config")
            if isinstance(tc, dict) and tc.get("@type") == QATZIP_TYPE:
                gz = {"@type": GZIP_TYPE}
                if "chunk_size" in tc:  # same field and range in both libraries
                    gz["chunk_size"] = tc["chunk_size"]
                level = str(tc.get("compression_level", ""))
                if level.isdigit():  # 1-9 in both, an enum in gzip's proto; ranges: envoy-qat check
                    gz["compression_level"] = f"COMPRESSION_LEVEL_{level}"
                n["typed_config"] = gz
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    return node


def map_paths(node, tls_dir):
    """Points every DataSource filename under /etc/envoy/tls/ at tls_dir (also inside the
    dynamic module's JSON configs)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "filename" and isinstance(v, str) and v.startswith(TLS_DIR):
                out[k] = os.path.join(tls_dir, v[len(TLS_DIR):])
            else:
                out[k] = map_paths(v, tls_dir)
        return out
    if isinstance(node, list):
        return [map_paths(v, tls_dir) for v in node]
    if isinstance(node, str) and TLS_DIR in node:
        # The module's transport_socket_config: JSON text holding DataSource filenames.
        return node.replace(TLS_DIR, tls_dir.rstrip("/") + "/")
    return node


def make_certs(d):
    """Self-signed RSA-2048 and EC P-256 certificates under the names our configs use."""
    specs = {
        "server-rsa": ["-newkey", "rsa:2048"],
        "server-ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    }
    for name, newkey in specs.items():
        subprocess.run(
            ["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=envoy-qat.test",
             *newkey, "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".crt")],
            check=True, capture_output=True)


def run_envoy(envoy, cfg_path):
    p = subprocess.run([envoy, "--mode", "validate", "-c", cfg_path, "--log-level", "error"],
                       capture_output=True, text=True, timeout=120)
    out = (p.stdout + p.stderr).strip().splitlines()
    crit = [l for l in out if "critical" in l or "error" in l.lower()]
    return p.returncode, (crit[-1] if crit else (out[-1] if out else f"exit {p.returncode}"))


def http_filter_bootstrap(filters):
    """A minimal bootstrap around EnvoyFilter HTTP_FILTER patch values, router last."""
    return {
        "static_resources": {
            "listeners": [{
                "name": "envoyfilter-fragment",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15999}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "fragment",
                        "route_config": {"name": "local"},
                        "http_filters": filters + [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }]
        }
    }


def envoy_targets(files):
    """(label, config tree, base name) for each bootstrap and each EnvoyFilter fragment."""
    targets = []
    for f in files:
        for doc in load_docs(f):
            if not isinstance(doc, dict):
                report(False, rel(f), "a YAML document is not a mapping")
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            if doc.get("kind") == "EnvoyFilter":
                for j, cp in enumerate((doc.get("spec") or {}).get("configPatches") or []):
                    if cp.get("applyTo") != "HTTP_FILTER":
                        continue
                    value = (cp.get("patch") or {}).get("value")
                    label = f"{rel(f)} EnvoyFilter {name} patch {j}"
                    base = f"{os.path.basename(f)[:-5]}-{name}-{j}"
                    targets.append((label, http_filter_bootstrap([value]), base))
            elif "kind" not in doc:
                targets.append((rel(f), doc, os.path.basename(f)[:-5]))
    return targets


def cmd_envoy(args):
    files = args.files or sorted(glob.glob(os.path.join(REPO, "envoy-config/envoy/*.yaml"))) + sorted(
        glob.glob(os.path.join(REPO, "envoy-config/istio/*.yaml")))
    envoy = args.envoy or os.path.join(REPO, "build/venv/bin/envoy")
    if not os.access(envoy, os.X_OK):
        print(f"validate-configs: no Envoy binary at {envoy}: run ci/deps.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        tls = os.path.join(tmp, "tls")
        os.mkdir(tls)
        make_certs(tls)
        keep = args.keep
        if keep:
            os.makedirs(keep, exist_ok=True)
            os.makedirs(os.path.join(keep, "tls"), exist_ok=True)
            make_certs(os.path.join(keep, "tls"))
        targets = envoy_targets(files)
        if not targets:
            report(False, "envoy", "no Envoy config found in " + " ".join(map(rel, files)))
        for label, tree, base in targets:
            if "dynamic_modules.v3.DynamicModule" in json.dumps(tree) and not os.environ.get(
                    "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"):
                # Envoy loads the module during --mode validate: without the .so there is
                # nothing to validate against (ci/test-deploy.sh and ci/test-module.sh set it).
                print(f"skip envoy --mode validate {label}: uses a dynamic module and "
                      "ENVOY_DYNAMIC_MODULES_SEARCH_PATH is not set")
                continue
            stock = stockify(map_paths(tree, tls))
            path = os.path.join(tmp, base + ".stock.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(stock, f, sort_keys=False)
            if keep:
                with open(os.path.join(keep, base + ".qat.yaml"), "w") as f:
                    yaml.safe_dump(map_paths(tree, os.path.join(keep, "tls")), f, sort_keys=False)
                with open(os.path.join(keep, base + ".stock.yaml"), "w") as f:
                    yaml.safe_dump(stock, f, sort_keys=False)
            rc, msg = run_envoy(envoy, path)
            report(rc == 0, f"envoy --mode validate {label}", msg)
    return 1 if failures else 0


def cmd_stockify(args):
    for doc in load_docs(args.file):
        yaml.safe_dump(stockify(doc), sys.stdout, sort_keys=False)
        print("---")
    return 0


# ---------------------------------------------------------------------------------------------
# Manifests: JSON schemas plus the QAT rules the schemas cannot express.

_k8s_cache = {}


def k8s_validator(api_version, kind):
    """A Draft 2020-12 validator over Kubernetes' strict schema for this kind (kubernetes-validate)."""
    import kubernetes_validate

    base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
                        K8S_SCHEMA_VERSION)
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = os.path.join(base, f"{kind.lower()}-{group}.json")
    if not os.path.exists(path):
        return None
    if "defs" not in _k8s_cache:
        with open(os.path.join(base, "_definitions.json")) as f:
            _k8s_cache["defs"] = Resource.from_contents(json.load(f))
    with open(path) as f:
        schema = json.load(f)
    registry = Resource.from_contents(schema) @ (_k8s_cache["defs"] @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def local_validator(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(validator, doc):
    errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message[:300] for e in errs]


def pod_spec_rules(spec, where):
    """QAT rules: extended resources need limits == requests; a container with a QAT VF needs IPC_LOCK."""
    problems = []
    for c in (spec or {}).get("containers") or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        wants = [r for r in QAT_RESOURCES if r in req or r in lim]
        for r in wants:
            if r not in lim:
                problems.append(f"{where} container {c.get('name')}: {r} needs a limit "
                                "(extended resources are allocated by limit)")
            elif r in req and str(req[r]) != str(lim[r]):
                problems.append(f"{where} container {c.get('name')}: {r} request {req[r]} != limit {lim[r]}")
        caps = (((c.get("securityContext") or {}).get("capabilities") or {}).get("add")) or []
        if wants and "IPC_LOCK" not in caps:
            problems.append(f"{where} container {c.get('name')}: requests {', '.join(wants)} "
                            "but lacks capabilities.add: [IPC_LOCK] (qatlib pins memory)")
    return problems


def check_proxy_config(text, where, proxycfg):
    try:
        pc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"{where}: not YAML: {e}"]
    return [f"{where}: {m}" for m in schema_errors(proxycfg, pc)]


def check_annotations(meta, where, proxycfg):
    problems = []
    ann = (meta or {}).get("annotations") or {}
    if "proxy.istio.io/config" in ann:
        problems += check_proxy_config(ann["proxy.istio.io/config"], where + " proxy.istio.io/config", proxycfg)
    if "inject.istio.io/templates" in ann:
        names = [t.strip() for t in str(ann["inject.istio.io/templates"]).split(",")]
        unknown = [n for n in names if n not in KNOWN_TEMPLATES]
        if unknown:
            problems.append(f"{where} inject.istio.io/templates: unknown template(s) {', '.join(unknown)}")
        if "sidecar" not in names:
            problems.append(f"{where} inject.istio.io/templates: list 'sidecar' first, then the QAT template")
    return problems


def check_doc(doc, where, v):
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    problems = []
    if kind == "EnvoyFilter":
        problems += schema_errors(v["envoyfilter"], doc)
    elif kind == "IstioOperator":
        problems += schema_errors(v["istiooperator"], doc)
        spec = doc.get("spec") or {}
        dc = (spec.get("meshConfig") or {}).get("defaultConfig")
        if dc is not None:
            problems += [f"meshConfig.defaultConfig: {m}" for m in schema_errors(v["proxyconfig"], dc)]
        for gw in (spec.get("components") or {}).get("ingressGateways") or []:
            k8s = gw.get("k8s") or {}
            pa = k8s.get("podAnnotations") or {}
            if "proxy.istio.io/config" in pa:
                problems += check_proxy_config(pa["proxy.istio.io/config"],
                                               f"gateway {gw.get('name')} proxy.istio.io/config", v["proxyconfig"])
            caps = []
            for ov in k8s.get("overlays") or []:
                for p in ov.get("patches") or []:
                    if str(p.get("path", "")).endswith("capabilities.add"):
                        val = p.get("value")
                        caps += val if isinstance(val, list) else [val]
            fake = {"containers": [{"name": "istio-proxy", "resources": k8s.get("resources") or {},
                                    "securityContext": {"capabilities": {"add": caps}}}]}
            problems += pod_spec_rules(fake, f"gateway {gw.get('name')}")
        templates = ((spec.get("values") or {}).get("sidecarInjectorWebhook") or {}).get("templates") or {}
        for name, text in templates.items():
            try:
                t = yaml.safe_load(text)
            except yaml.YAMLError as e:
                problems.append(f"template {name}: not YAML: {e}")
                continue
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, **(t or {})}
            problems += [f"template {name}: {m}" for m in schema_errors(v["pod"], pod)]
            problems += pod_spec_rules((t or {}).get("spec"), f"template {name}")
            for c in ((t or {}).get("spec") or {}).get("containers") or []:
                if c.get("name") != "istio-proxy":
                    problems.append(f"template {name}: container {c.get('name')!r} is not istio-proxy "
                                    "(templates merge into the injected istio-proxy container by name)")
    else:
        val = k8s_validator(api, kind) if kind else None
        if val is None:
            return [f"no schema for apiVersion {api!r} kind {kind!r}"]
        problems += schema_errors(val, doc)
        tmpl = (doc.get("spec") or {}).get("template") or {}
        if tmpl:
            name = (doc.get("metadata") or {}).get("name")
            problems += pod_spec_rules(tmpl.get("spec"), f"{kind} {name}")
            problems += check_annotations(tmpl.get("metadata"), f"{kind} {name}",
                                          v["proxyconfig"])
    return problems


def check_memlock_dropin(path):
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str
    try:
        cp.read(path)
    except configparser.Error as e:
        return [f"not a systemd unit drop-in: {e}"]
    if not cp.has_section("Service"):
        return ["no [Service] section"]
    keys = dict(cp.items("Service"))
    if "LimitMEMLOCK" not in keys:
        return ["no LimitMEMLOCK= in [Service]" + (f" (found {', '.join(keys)})" if keys else "")]
    val = keys["LimitMEMLOCK"].strip()
    if val == "infinity":
        return []
    m = re.fullmatch(r"(\d+)([KMG]?)", val)
    if not m:
        return [f"LimitMEMLOCK={val}: expected bytes (e.g. 134217728), a K/M/G suffix or infinity"]
    n = int(m.group(1)) * {"": 1, "K": 1024, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
    if n < MIN_MEMLOCK:
        return [f"LimitMEMLOCK={val} is below qatlib's 16 MiB per VF (16777216)"]
    return []


def cmd_manifests(args):
    files = args.files or sorted(glob.glob(os.path.join(REPO, "envoy-config/istio/*.yaml"))) + sorted(
        glob.glob(os.path.join(REPO, "envoy-config/k8s/*.yaml"))) + sorted(
        glob.glob(os.path.join(REPO, "envoy-config/k8s/*.conf")))
    v = {
        "envoyfilter": local_validator("envoyfilter-networking-istio-io-v1alpha3.json"),
        "istiooperator": local_validator("istiooperator-install-istio-io-v1alpha1.json"),
        "proxyconfig": local_validator("istio-proxyconfig.json"),
        "pod": k8s_validator("v1", "Pod"),
    }
    for f in files:
        if f.endswith(".conf"):
            probs = check_memlock_dropin(f)
            report(not probs, f"systemd drop-in {rel(f)}", "; ".join(probs))
            continue
        try:
            docs = load_docs(f)
        except yaml.YAMLError as e:
            report(False, rel(f), f"not YAML: {e}")
            continue
        if not docs:
            report(False, rel(f), "no YAML documents")
        for doc in docs:
            if not isinstance(doc, dict):
                report(False, rel(f), "a document is not a mapping")
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            if "kind" not in doc:
                report(False, f"{rel(f)}", "document without kind (an Envoy bootstrap? use `envoy`)")
                continue
            probs = check_doc(doc, rel(f), v)
            report(not probs, f"{rel(f)} {doc.get('kind')}/{name}", "; ".join(probs))
    return 1 if failures else 0



# ---------------------------------------------------------------------------------------------
# Smoke: the bootstrap served for real by the stock Envoy (QAT configs swapped), real clients.


def free_ports(n):
    """n distinct free loopback ports: every socket stays bound until all are read, so the
    kernel cannot hand the same port out twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def retarget_ports(node, mapping):
    """Replaces socket_address port_value N by mapping[N] and binds listeners to loopback."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "socket_address" and isinstance(v, dict):
                v = dict(v)
                if v.get("port_value") in mapping:
                    v["port_value"] = mapping[v["port_value"]]
                if v.get("address") == "0.0.0.0":
                    v["address"] = "127.0.0.1"
                out[k] = v
            else:
                out[k] = retarget_ports(v, mapping)
        return out
    if isinstance(node, list):
        return [retarget_ports(v, mapping) for v in node]
    return node


SMOKE_BODY = "".join(f"line {i}: envoy-qat smoke test body, compressible text\n" for i in range(60))


def backend_bootstrap(port):
    return {"static_resources": {"listeners": [{
        "name": "backend",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "backend", "codec_type": "HTTP2",
                "route_config": {"virtual_hosts": [{"name": "b", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": SMOKE_BODY}}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }]}}


def wait_ready(admin_port, proc, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def wait_port(port, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def served_key_type(port, sigalgs):
    """The public key algorithm of the certificate the server picks for these signature algorithms."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "envoy-qat.test",
                        "-sigalgs", sigalgs, "-showcerts"],
                       input="", capture_output=True, text=True, timeout=30)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
    if not m:
        return f"no certificate (openssl exit {p.returncode}: {p.stderr.strip()[-200:]})"
    x = subprocess.run(["openssl", "x509", "-noout", "-text"], input=m.group(0), capture_output=True,
                       text=True, timeout=30)
    alg = re.search(r"Public Key Algorithm: (\S+)", x.stdout)
    return alg.group(1) if alg else "unknown"


def cmd_smoke(args):
    envoy = args.envoy or os.path.join(REPO, "build/venv/bin/envoy")
    src = os.path.join(REPO, "envoy-config/envoy/qat-tls-compression.yaml")
    with tempfile.TemporaryDirectory(prefix="envoy-smoke-") as tmp:
        tls = os.path.join(tmp, "tls")
        os.mkdir(tls)
        make_certs(tls)
        https, admin, upstream = free_ports(3)
        front = retarget_ports(stockify(map_paths(load_docs(src)[0], tls)),
                               {10443: https, 9901: admin, 8080: upstream})
        paths = {}
        for name, tree in (("front", front), ("backend", backend_bootstrap(upstream))):
            paths[name] = os.path.join(tmp, name + ".yaml")
            with open(paths[name], "w") as f:
                yaml.safe_dump(tree, f, sort_keys=False)
        procs = []
        try:
            for name in ("backend", "front"):
                log = open(os.path.join(tmp, name + ".log"), "w")
                procs.append(subprocess.Popen([envoy, "-c", paths[name], "--disable-hot-restart",
                                               "--log-level", "warn", "--concurrency", "1"],
                                              stdout=log, stderr=subprocess.STDOUT))
            ok = wait_port(upstream) and wait_ready(admin, procs[1]) and wait_port(https)
            report(ok, "stock Envoy serves the swapped bootstrap",
                   f"did not become ready (upstream {upstream} admin {admin} https {https}; front exit "
                   f"{procs[1].poll()}, backend exit {procs[0].poll()}): "
                   + open(os.path.join(tmp, "front.log")).read()[-300:]
                   + open(os.path.join(tmp, "backend.log")).read()[-300:])
            if not ok:
                return 1
            # HTTP/2 over TLS with gzip, through to the HTTP/2 cleartext upstream.
            p = subprocess.run(["curl", "-sS", "-k", "--http2", "--max-time", "20", "-H", "accept-encoding: gzip",
                                "-D", os.path.join(tmp, "h"), "-o", os.path.join(tmp, "b"),
                                "-w", "%{http_version} %{http_code}", f"https://127.0.0.1:{https}/"],
                               capture_output=True, text=True, timeout=30)
            headers = open(os.path.join(tmp, "h")).read().lower() if os.path.exists(os.path.join(tmp, "h")) else ""
            body = open(os.path.join(tmp, "b"), "rb").read() if os.path.exists(os.path.join(tmp, "b")) else b""
            report(p.stdout.strip() == "2 200", "curl --http2 over TLS", f"got {p.stdout!r} {p.stderr.strip()}")
            try:
                plain = gzip.decompress(body).decode()
            except (OSError, EOFError, UnicodeDecodeError) as e:
                plain = f"<{e}>"
            report("content-encoding: gzip" in headers and plain == SMOKE_BODY,
                   f"gzip response ({len(body)} bytes for {len(SMOKE_BODY)}) decodes to the upstream body",
                   f"headers {headers.strip()!r}, decoded {plain[:60]!r}")
            for sigalgs, want in (("rsa_pss_rsae_sha256", "rsaEncryption"),
                                  ("ecdsa_secp256r1_sha256", "id-ecPublicKey")):
                got = served_key_type(https, sigalgs)
                report(got == want, f"openssl s_client -sigalgs {sigalgs} gets the {want} certificate", got)
        finally:
            for pr in procs:
                pr.terminate()
            for pr in procs:
                try:
                    pr.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pr.kill()
    return 1 if failures else 0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("envoy")
    e.add_argument("files", nargs="*")
    e.add_argument("--envoy", help="Envoy binary (default build/venv/bin/envoy)")
    e.add_argument("--keep", help="write the mapped (.qat.yaml) and swapped (.stock.yaml) configs here")
    m = sub.add_parser("manifests")
    m.add_argument("files", nargs="*")
    s = sub.add_parser("stockify")
    s.add_argument("file")
    k = sub.add_parser("smoke")
    k.add_argument("--envoy", help="Envoy binary (default build/venv/bin/envoy)")
    args = ap.parse_args()
    return {"envoy": cmd_envoy, "manifests": cmd_manifests, "stockify": cmd_stockify,
            "smoke": cmd_smoke}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
