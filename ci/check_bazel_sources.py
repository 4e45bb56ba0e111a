#!/usr/bin/env python3
"""Bazel cannot run here, so check what a build would trip on first: every file a BUILD
file names exists, and every glob() matches at least one file; every file a Dockerfile
COPYs from the build context exists. Also the mistakes Envoy's rules reject at loading
time: an api_cc_py_proto_library dependency that Envoy's macro already adds (a duplicate
label fails) or that has no `_cc_proto` twin (only `:pkg` targets have one), and labels
inside Envoy's extension packages (visible only to Envoy's own tree). Exits non-zero with
one line per problem.

usage: check_bazel_sources.py REPO_DIR
"""
import glob
import os
import re
import sys

repo = sys.argv[1]
problems = []

# (BUILD file, the directory its labels are relative to)
builds = [
    ("bazel/envoy_qat.BUILD.bazel", "."),  # the repository @envoy_qat is the source tree
    ("bazel/BUILD.bazel", "bazel"),  # @envoy_qat_build is bazel/
]
FILE_ATTRS = r"(?:srcs|hdrs|src|crate_root|data|exports_files)"
for build, base in builds:
    text = open(os.path.join(repo, build)).read()
    text = re.sub(r"#.*", "", text)
    for m in re.finditer(r"glob\(\s*\[(.*?)\]", text, re.S):
        for pat in re.findall(r'"([^"]+)"', m.group(1)):
            if not glob.glob(os.path.join(repo, base, pat), recursive=True):
                problems.append(f"{build}: glob {pat!r} matches no file under {base}/")
    # String lists or single strings of the file attributes, glob() calls removed.
    plain = re.sub(r"glob\(\s*\[.*?\]\s*\)", "[]", text, flags=re.S)
    for m in re.finditer(FILE_ATTRS + r"\s*=\s*(\[.*?\]|\"[^\"]*\")", plain, re.S):
        for name in re.findall(r'"([^"]+)"', m.group(1)):
            if name.startswith((":", "@", "//")):
                continue
            if not os.path.exists(os.path.join(repo, base, name)):
                problems.append(f"{build}: {name} does not exist under {base}/")
    for m in re.finditer(r"exports_files\(\s*\[(.*?)\]", plain, re.S):
        for name in re.findall(r'"([^"]+)"', m.group(1)):
            if not os.path.exists(os.path.join(repo, base, name)):
                problems.append(f"{build}: exported {name} does not exist under {base}/")

# api_cc_py_proto_library (Envoy's api/bazel/api_build_system.bzl) adds protobuf's
# well-known types, googleapis and PGV's validate.proto itself, and maps every dependency
# to its `_cc_proto` twin, which only `:pkg` (api_proto_package / xds_proto_package) has.
text = re.sub(r"#.*", "", open(os.path.join(repo, "bazel/envoy_qat.BUILD.bazel")).read())
for m in re.finditer(r"api_cc_py_proto_library\((.*?)\n\)", text, re.S):
    name = re.search(r'name\s*=\s*"([^"]+)"', m.group(1)).group(1)
    deps = re.search(r"deps\s*=\s*\[(.*?)\]", m.group(1), re.S)
    for dep in re.findall(r'"([^"]+)"', deps.group(1) if deps else ""):
        if dep.startswith(("@com_google_protobuf//", "@com_google_googleapis//",
                           "@com_envoyproxy_protoc_gen_validate//")):
            problems.append(f"bazel/envoy_qat.BUILD.bazel: {name}: {dep} is added by "
                            "api_cc_py_proto_library itself (a duplicate label fails)")
        elif not dep.endswith(":pkg"):
            problems.append(f"bazel/envoy_qat.BUILD.bazel: {name}: {dep} has no _cc_proto twin "
                            "(name a :pkg proto package)")
for build in glob.glob(os.path.join(repo, "bazel/*.bazel")):
    for label in re.findall(r'"(@envoy//(?:source|contrib)/extensions/[^"]*)"',
                            re.sub(r"#.*", "", open(build).read())):
        problems.append(f"{os.path.relpath(build, repo)}: {label} is in an Envoy extension "
                        "package, visible only inside Envoy's tree")

# Dockerfiles are built with the repository root as context (see bazel/build-image.sh).
for df in glob.glob(os.path.join(repo, "bazel/Dockerfile.*")):
    for line in open(df):
        m = re.match(r"\s*(?:COPY|ADD)\s+(.*)", line)
        if not m or "--from=" in m.group(1):
            continue
        parts = [p for p in m.group(1).split() if not p.startswith("--")]
        for src in parts[:-1]:
            if not glob.glob(os.path.join(repo, src)):
                problems.append(f"{os.path.relpath(df, repo)}: COPY source {src} does not exist")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
