"""Every version the custom Envoy build pins, in one place.

Envoy 1.31.0 is the pinned release (Istio 1.23 ships the same Envoy). Its checksum is the
one published for the v1.31.0 source archive. Everything Envoy itself depends on (Bazel
version, build image, rules_rust, BoringSSL, protobuf) is pinned by Envoy's own files in
that archive; bazel/build.sh reads the Bazel version and build image from them.
"""

ENVOY_VERSION = "1.31.0"

ENVOY_SHA256 = "39ba37aed81a9d4988a5736cf558243179f2bf1490843da25687d1aafd9d01c6"

ENVOY_URL = "https://github.com/envoyproxy/envoy/archive/v{}.tar.gz".format(ENVOY_VERSION)

ENVOY_STRIP_PREFIX = "envoy-{}".format(ENVOY_VERSION)

# Go toolchain that Envoy 1.31's dependency imports expect.
ENVOY_GO_VERSION = "1.22.4"

# Istio release whose proxy carries Envoy 1.31 (for the proxyv2 image).
ISTIO_VERSION = "1.23.2"
