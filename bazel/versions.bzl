"""Every version the custom Envoy build pins, in one place (shell scripts read it with sed).

Envoy: release v1.36.4 (2025-12-10), the newest Envoy release whose full source could be read
and compiled against on the development machines (see README, "What runs where"). Pinned by
the release commit; the checksum is that of GitHub's .zip archive of that commit, as
pomerium/envoy-custom pins the same URL. Everything Envoy itself depends on (Bazel version,
BoringSSL, protobuf, rules_rust, Go) is pinned by Envoy's own files in that archive;
bazel/build.sh takes Envoy's .bazelversion and .bazelrc from it.

Istio: 1.28.2, whose istio/proxy tag pins Envoy 809213ab, the v1.36.4 release commit plus
the "Dev v1.36.5" version bump (no source change). Istio 1.28 is the Istio line built on
Envoy 1.36.

Rust: the Rust core is built by cargo in RUST_IMAGE (not by Envoy's rules_rust, whose
toolchain is older than our crates need); the cxx version is Cargo.lock's, and cxxbridge is
installed at that same version (bazel/rust-staticlib.sh checks).
"""

ENVOY_VERSION = "1.36.4"

ENVOY_COMMIT = "bad8280de85c25b147a90c1d9b8a8c67a13e7134"

ENVOY_SHA256 = "acaf4d3be97d4758539ff9f87c5344eab801337d246d5995f10c3af6f7a6c588"

ENVOY_URL = "https://github.com/envoyproxy/envoy/archive/{}.zip".format(ENVOY_COMMIT)

ENVOY_STRIP_PREFIX = "envoy-{}".format(ENVOY_COMMIT)

# Envoy's build image at the pin (its .github/config.yml "build-image" and .bazelrc).
ENVOY_BUILD_IMAGE = "docker.io/envoyproxy/envoy-build-ubuntu:f4a881a1205e8e6db1a57162faf3df7aed88eae8@sha256:b10346fe2eee41733dbab0e02322c47a538bf3938d093a5daebad9699860b814"

# The Rust toolchain that builds the Rust core (cxx needs 1.88+, rsa 0.10 1.87+).
RUST_IMAGE = "docker.io/library/rust:1.95.0-slim-trixie"

ISTIO_VERSION = "1.28.2"

# istio/proxy at tag 1.28.2, and the build image its common/scripts/setup_env.sh names.
ISTIO_PROXY_COMMIT = "0879e0055d1da524a89415acd456e230b27fba70"

ISTIO_PROXY_BUILD_IMAGE = "gcr.io/istio-testing/build-tools-proxy:release-1.28-2cff97d3b27d82d78c5d4e468a467f520cf2fbf3"
