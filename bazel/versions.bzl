"""Every version the custom Envoy build pins, in one place (shell scripts read it with sed).

Envoy: release v1.37.0 (2026-01-13), the newest Envoy release whose full source could be read
and compiled against on the development machines (see README, "What runs where"); 1.37 is
inside Envoy's one-year support window until January 2027. Pinned by the release commit
("repo: Release v1.37.0"); the checksum is that of GitHub's .zip archive of that commit, as
pomerium/envoy-custom pins the same URL (istio/proxy's release-1.29 branch pinned the same
commit's .tar.gz, sha256 9ecc2195...ef5f). Everything Envoy itself depends on (Bazel version,
BoringSSL, protobuf, the hermetic LLVM toolchain, rules_rust, Go) is pinned by Envoy's own
files in that archive; bazel/build.sh takes Envoy's .bazelversion and .bazelrc from it.

Istio: 1.29.6, the newest patch of the Istio line built on Envoy 1.37 (its istio/proxy tag
pins Envoy fe0bc162, a commit of Envoy's release/v1.37 branch; Istio builds its own pin).

Rust: the Rust core is built by cargo in RUST_IMAGE (not by Envoy's rules_rust, whose
default toolchain, 1.86.0 in rules_rust 0.68.1, is older than our crates need); the cxx
version is Cargo.lock's, and cxxbridge is installed at that same version
(bazel/rust-staticlib.sh checks).
"""

ENVOY_VERSION = "1.37.0"

ENVOY_COMMIT = "6d9bb7d9a85d616b220d1f8fe67b61f82bbdb8d3"

ENVOY_SHA256 = "bb111b2037e35d8732f12f003ccf82e0d09dfc8a8b7810e849eb081f36d50ddc"

ENVOY_URL = "https://github.com/envoyproxy/envoy/archive/{}.zip".format(ENVOY_COMMIT)

ENVOY_STRIP_PREFIX = "envoy-{}".format(ENVOY_COMMIT)

# Envoy's CI build image at the pin (.github/config.yml "build-image": repo and sha-ci, the
# image ci/run_envoy_docker.sh runs Envoy's own CI builds in). Since 1.37 the compiler is
# Envoy's hermetic LLVM (toolchains_llvm), fetched by Bazel, not the image's.
ENVOY_BUILD_IMAGE = "docker.io/envoyproxy/envoy-build@sha256:20656853fae51927cda557e7af80ccff175f5de6f84bd0f092cd8672b2a6e0fe"

# The Rust toolchain that builds the Rust core (cxx needs 1.88+, rsa 0.10 1.87+).
RUST_IMAGE = "docker.io/library/rust:1.95.0-slim-trixie"

ISTIO_VERSION = "1.29.6"

# istio/proxy at tag 1.29.6, and the build image its common/scripts/setup_env.sh names.
ISTIO_PROXY_COMMIT = "8f4f69324c5c9271faad34c13e2e20a558669121"

ISTIO_PROXY_BUILD_IMAGE = "gcr.io/istio-testing/build-tools-proxy:release-1.29-3223474454a86429345d8e0b8edb1cb51955ff34"
