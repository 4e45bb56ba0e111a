#!/usr/bin/env python3
"""cpp/envoy cannot be compiled here (Envoy's Bazel build needs the internet), so check
mechanically what can be: every bridge item it uses (envoy_qat::ffi::X, and methods called
on bridge objects) is declared in src/bridge.rs's #[cxx::bridge]; every cpp/ssl item it
uses (envoy_qat::ssl::X) is declared in cpp/ssl/*.h; every ProviderOptions / stats field it
reads exists; the protos it includes exist in cpp/api; the names Envoy looks up are
upstream's. And what compiling against Envoy's headers found (README, "What runs where"):
 - every quoted include resolves the way bazel/envoy_qat.BUILD.bazel lays them out:
   cpp/envoy/*.h and cpp/api/**.pb.h / .pb.validate.h by repository path, cpp/ssl only as
   envoy-qat/cpp/ssl/*.h (a second path to the same header redefines its classes), the
   bridge as envoy-qat/src/bridge.rs.h; anything else must be Envoy's (envoy/, source/) or a
   third-party header Envoy provides;
 - MessageUtil::downcastAndValidate<T> needs T's generated .pb.validate.h in the same file
   (PGV's Validate() is found only then), and each factory validates its typed config;
 - no Event::TimerPtr outside main_thread_ticker.h: a timer owned by an object whose last
   reference may drop on a worker is destroyed on the wrong thread.

usage: check_cpp_envoy.py REPO_DIR
"""
import glob
import os
import re
import sys

repo = sys.argv[1]
problems = []
envoy_src = {p: open(p).read() for p in glob.glob(os.path.join(repo, "cpp/envoy/*.[hc]*"))}
bridge = open(os.path.join(repo, "src/bridge.rs")).read()
m = re.search(r"#\[cxx::bridge[^\]]*\]\s*pub mod ffi \{(.*)\n\}", bridge, re.S)
if not m:
    sys.exit("src/bridge.rs: no #[cxx::bridge] pub mod ffi")
ffi = m.group(1)
ssl_headers = "\n".join(open(p).read() for p in glob.glob(os.path.join(repo, "cpp/ssl/*.h")))

declared = set(re.findall(r"\bfn\s+(\w+)", ffi)) | set(re.findall(r"\btype\s+(\w+)", ffi)) \
    | set(re.findall(r"\bstruct\s+(\w+)", ffi)) | set(re.findall(r"\benum\s+(\w+)", ffi))
structs = {name: set(re.findall(r"^\s*(\w+)\s*:", body, re.M))
           for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\}", ffi, re.S)}

for path, text in sorted(envoy_src.items()):
    rel = os.path.relpath(path, repo)
    for name in sorted(set(re.findall(r"envoy_qat::ffi::(\w+)", text))):
        if name not in declared:
            problems.append(f"{rel}: envoy_qat::ffi::{name} is not in src/bridge.rs")
    for name in sorted(set(re.findall(r"envoy_qat::ssl::(\w+)", text))):
        if not re.search(rf"\b{name}\b", ssl_headers):
            problems.append(f"{rel}: envoy_qat::ssl::{name} is not declared in cpp/ssl/*.h")
    # Methods called on bridge objects through rust::Box / references: inner->x(), engine->x().
    for name in sorted(set(re.findall(r"\b(?:inner_|inner|engine|provider->engine\(\))(?:->|\.)(\w+)\(", text))):
        if name not in declared:
            problems.append(f"{rel}: bridge method {name}() is not in src/bridge.rs")
    # Fields of bridge structs read or written: o.x = ..., now.x, last_.x
    for var, sname in (("o", "ProviderOptions"), ("now", None), ("last", None)):
        for field in sorted(set(re.findall(rf"\b{re.escape(var)}\.(\w+)\b", text))):
            owners = [sname] if sname else [s for s in structs if field in structs[s]]
            if sname and field not in structs.get(sname, set()):
                problems.append(f"{rel}: {sname}.{field} is not a field in src/bridge.rs")
            elif not sname and not owners:
                problems.append(f"{rel}: no bridge struct has a field {field}")
    for inc in re.findall(r'#include "(cpp/api/[^"]+)\.pb\.h"', text):
        if not os.path.exists(os.path.join(repo, inc + ".proto")):
            problems.append(f"{rel}: {inc}.proto does not exist")

# Includes, as Bazel lays them out.
THIRD_PARTY = ("absl/", "openssl/", "fmt/", "spdlog/", "google/protobuf/", "validate/")
for path, text in sorted(envoy_src.items()):
    rel = os.path.relpath(path, repo)
    for inc in re.findall(r'^#include "([^"]+)"', text, re.M):
        if inc.startswith("cpp/envoy/"):
            ok = os.path.exists(os.path.join(repo, inc))
        elif inc.startswith("cpp/api/"):
            ok = re.fullmatch(r"cpp/api/.*\.pb(\.validate)?\.h", inc) and os.path.exists(
                os.path.join(repo, re.sub(r"\.pb(\.validate)?\.h$", ".proto", inc)))
        elif inc.startswith("envoy-qat/cpp/ssl/"):
            ok = inc.endswith(".h") and os.path.exists(os.path.join(repo, inc[len("envoy-qat/"):]))
        elif inc == "envoy-qat/src/bridge.rs.h":
            ok = True
        elif inc.startswith("cpp/"):
            ok = False  # e.g. cpp/ssl/private_key.h: ssl_headers publishes it only as envoy-qat/...
        else:
            ok = inc.startswith(("envoy/", "source/") + THIRD_PARTY)
        if not ok:
            problems.append(f"{rel}: #include \"{inc}\" does not resolve in the Bazel layout")
    for typ in set(re.findall(r"downcastAndValidate<\s*const\s+(\w+)\s*&\s*>", text)):
        alias = re.search(rf"using\s+{typ}\s*=\s*([\w:]+);", text)
        full = alias.group(1) if alias else typ
        pkg_path = "/".join(full.split("::")[:-1])
        if not re.search(rf'#include "cpp/api/{re.escape(pkg_path)}/\w+\.pb\.validate\.h"', text):
            problems.append(f"{rel}: downcastAndValidate<{typ}> without #include of its "
                            ".pb.validate.h (PGV's Validate() would be undeclared)")
    if "Event::TimerPtr" in text and not rel.endswith("main_thread_ticker.h"):
        problems.append(f"{rel}: owns an Event::TimerPtr; use MainThreadTicker "
                        "(created and destroyed on the main thread)")
for func in ("createPrivateKeyMethodProviderInstance", "createCompressorFactoryFromProto"):
    body = [t for t in envoy_src.values() if re.search(rf"::{func}\(", t)]
    if not body or "downcastAndValidate" not in re.split(rf"::{func}\(", body[0], 1)[1][:2000]:
        problems.append(f"cpp/envoy: {func} does not validate its config with downcastAndValidate")

joined = "\n".join(envoy_src.values())
for needle, what in [('return "qat";', "provider factory name qat"),
                     ('"envoy.compression.qatzip.compressor"', "compressor extension name"),
                     ("REGISTER_FACTORY(QatPrivateKeyMethodFactory", "provider registration"),
                     ("REGISTER_FACTORY(QatzipCompressorLibraryFactory", "compressor registration")]:
    if needle not in joined:
        problems.append(f"cpp/envoy: {what} missing ({needle})")

for p in problems:
    print("FAIL:", p)
if problems:
    sys.exit(f"{len(problems)} cpp/envoy consistency problem(s)")
print(f"cpp/envoy: {len(envoy_src)} files consistent with src/bridge.rs, cpp/ssl and cpp/api")
