#!/usr/bin/env python3
"""Check cpp/api/*.proto against real Envoy: compile them with protoc against Envoy's own
descriptors (from PyPI's xds-protos, which carries envoy/config/core/v3/base.proto,
udpa and validate annotations), check the upstream-compatible field numbers and types,
and parse every `qat` / `qatzip` typed_config in envoy-config/ into our messages.

usage: check_api_protos.py REPO_DIR WORK_DIR
"""
import glob
import os
import re
import subprocess
import sys

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf import duration_pb2, wrappers_pb2, any_pb2, struct_pb2, descriptor_pb2 as _d  # noqa: F401
from envoy.config.core.v3 import base_pb2  # noqa: F401
from udpa.annotations import sensitive_pb2, status_pb2  # noqa: F401
from validate import validate_pb2  # noqa: F401

repo, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)

QAT = "envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig"
QATZIP = "envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip"
F = descriptor_pb2.FieldDescriptorProto

# Upstream's fields (envoyproxy/envoy api/contrib/...): number, type, message type.
UPSTREAM = {
    QAT: {
        "private_key": (1, F.TYPE_MESSAGE, ".envoy.config.core.v3.DataSource"),
        "poll_delay": (2, F.TYPE_MESSAGE, ".google.protobuf.Duration"),
    },
    QATZIP: {
        "compression_level": (1, F.TYPE_MESSAGE, ".google.protobuf.UInt32Value"),
        "hardware_buffer_size": (2, F.TYPE_ENUM, None),
        "input_size_threshold": (3, F.TYPE_MESSAGE, ".google.protobuf.UInt32Value"),
        "stream_buffer_size": (4, F.TYPE_MESSAGE, ".google.protobuf.UInt32Value"),
        "chunk_size": (5, F.TYPE_MESSAGE, ".google.protobuf.UInt32Value"),
    },
}
HW_ENUM = ["DEFAULT", "SZ_4K", "SZ_8K", "SZ_32K", "SZ_64K", "SZ_128K", "SZ_512K"]

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


# 1. Envoy's descriptors for our imports, transitively, as a FileDescriptorSet.
default_pool = descriptor_pool.Default()
deps = descriptor_pb2.FileDescriptorSet()
seen = set()


def add(fd):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for d in fd.dependencies:
        add(d)
    p = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(p)
    deps.file.append(p)


for name in ["envoy/config/core/v3/base.proto", "udpa/annotations/sensitive.proto",
             "udpa/annotations/status.proto", "validate/validate.proto",
             "google/protobuf/duration.proto", "google/protobuf/wrappers.proto"]:
    add(default_pool.FindFileByName(name))
deps_path = os.path.join(work, "envoy-deps.pb")
with open(deps_path, "wb") as f:
    f.write(deps.SerializeToString())

# 2. protoc compiles our protos against them.
api = os.path.join(repo, "cpp", "api")
protos = sorted(os.path.relpath(p, api) for p in glob.glob(os.path.join(api, "**", "*.proto"), recursive=True))
ours_path = os.path.join(work, "envoy-qat-api.pb")
r = subprocess.run(["protoc", f"--descriptor_set_in={deps_path}", f"-I{api}",
                    f"--descriptor_set_out={ours_path}", *protos], capture_output=True, text=True)
if r.returncode != 0:
    print(r.stderr)
    sys.exit("protoc rejected cpp/api")
print(f"protoc compiled {len(protos)} files against Envoy's descriptors")
ours = descriptor_pb2.FileDescriptorSet()
with open(ours_path, "rb") as f:
    ours.ParseFromString(f.read())
pool = descriptor_pool.DescriptorPool()
for fdp in list(deps.file) + list(ours.file):
    pool.Add(fdp)

# 3. Upstream's field numbers and types are kept; our own fields start at 10.
for full, fields in UPSTREAM.items():
    md = pool.FindMessageTypeByName(full)
    for fname, (num, typ, tname) in fields.items():
        fd = md.fields_by_name.get(fname)
        if fd is None:
            fail(f"{full}.{fname} missing")
            continue
        if fd.number != num or fd.type != typ or (tname and "." + fd.message_type.full_name != tname):
            fail(f"{full}.{fname}: number/type differ from upstream")
    for fd in md.fields:
        if fd.name not in fields and fd.number < 10:
            fail(f"{full}.{fd.name}: new fields must use numbers >= 10 (got {fd.number})")
hw = pool.FindMessageTypeByName(QATZIP).enum_types_by_name["HardwareBufferSize"]
if [v.name for v in sorted(hw.values, key=lambda v: v.number)] != HW_ENUM or \
        [v.number for v in sorted(hw.values, key=lambda v: v.number)] != list(range(7)):
    fail("HardwareBufferSize values differ from upstream")
pk = pool.FindMessageTypeByName(QAT).fields_by_name["private_key"]
if not any(k.name == "sensitive" for k, _ in pk.GetOptions().ListFields()):
    fail("private_key is not marked sensitive")

classes = {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in (QAT, QATZIP)}


def typed_configs(node, path="$"):
    if isinstance(node, dict):
        t = node.get("@type", "")
        name = t.rsplit("/", 1)[-1]
        if name in classes:
            yield path, name, node
        for k, v in node.items():
            yield from typed_configs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from typed_configs(v, f"{path}[{i}]")


def envoy_json(node):
    """Envoy also accepts a Duration written as {seconds, nanos}; proto3 JSON wants "1.5s"."""
    if isinstance(node, dict):
        if node and set(node) <= {"seconds", "nanos"}:
            total = int(node.get("seconds", 0)) * 10**9 + int(node.get("nanos", 0))
            return f"{total // 10**9}.{total % 10**9:09d}s"
        return {k: envoy_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [envoy_json(v) for v in node]
    return node


def parse(name, cfg):
    body = envoy_json({k: v for k, v in cfg.items() if k != "@type"})
    msg = classes[name]()
    json_format.ParseDict(body, msg)
    return msg


# 4. Every typed config in envoy-config/ parses into our messages and round-trips on the wire.
#    Counted two ways: the configs the YAML walk found and parsed, and the `@type: ...` lines
#    naming our messages in the files' text. They must agree (a walk that misses configs, or
#    a file that no longer loads, cannot pass with fewer) and neither may be 0.
TYPE_LINE = re.compile(r"""^\s*(?:-\s+)?["']?@type["']?\s*:\s*["']?type\.googleapis\.com/([\w.]+)""")
parsed = {QAT: 0, QATZIP: 0}
written = {QAT: 0, QATZIP: 0}
for path in sorted(glob.glob(os.path.join(repo, "envoy-config", "**", "*.y*ml"), recursive=True)):
    rel = os.path.relpath(path, repo)
    if "/broken/" in rel or rel.endswith(".broken.yaml"):
        continue
    with open(path) as f:
        text = f.read()
    for line in text.splitlines():
        m = TYPE_LINE.match(line)
        if m and m.group(1) in written:
            written[m.group(1)] += 1
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{rel}: not YAML: {e}")
        continue
    for doc in docs:
        for where, name, cfg in typed_configs(doc):
            try:
                msg = parse(name, cfg)
                again = classes[name].FromString(msg.SerializeToString())
                assert again == msg
                parsed[name] += 1
            except Exception as e:  # noqa: BLE001
                fail(f"{rel} {where}: {name.rsplit('.', 1)[-1]} does not parse: {e}")
for name in (QAT, QATZIP):
    short = name.rsplit(".", 1)[-1]
    print(f"parsed {parsed[name]} {short} typed configs from envoy-config/ ({written[name]} @type lines name it)")
    if parsed[name] == 0:
        fail(f"no {short} typed config parsed from envoy-config/")
    if parsed[name] != written[name]:
        fail(f"{short}: {written[name]} @type lines in envoy-config/ but {parsed[name]} configs parsed")

# 5. The same parser rejects what Envoy would reject: the seeds' nesting mistake and bad enums.
bad = [
    (QAT, {"private_key": {"filename": "/etc/key.pem", "poll_delay": "0.002s"}}),
    (QAT, {"private_key": {"filename": "/k"}, "poll_dalay": "0.002s"}),
    (QATZIP, {"hardware_buffer_size": "SZ_16K"}),
    (QATZIP, {"compression_level": "high"}),
]
for name, cfg in bad:
    try:
        parse(name, cfg)
        fail(f"accepted a bad config: {cfg}")
    except json_format.ParseError:
        pass
good = parse(QAT, {"private_key": {"filename": "/k"}, "poll_delay": "0.002s", "software_failover": True})
wire = good.SerializeToString()
# Field 1 (length-delimited) and field 2 (length-delimited) as upstream encodes them.
if wire[0] != (1 << 3 | 2) or (2 << 3 | 2) not in wire:
    fail("QatPrivateKeyMethodConfig wire encoding differs from upstream's field numbers")

if failures:
    sys.exit(f"{len(failures)} API check(s) failed")
print("cpp/api: compatible with upstream field numbers; every typed config parses")
