"""rust_cxx_bridge: generate the C++ half of a #[cxx::bridge] module with cxxbridge."""

load("@bazel_skylib//rules:run_binary.bzl", "run_binary")
load("@rules_cc//cc:defs.bzl", "cc_library")

def rust_cxx_bridge(name, src, deps = []):
    """Runs cxxbridge over `src` and wraps the result in a cc_library `name`.

    Args:
      name: the cc_library to create.
      src: the Rust file holding the #[cxx::bridge] module.
      deps: libraries the generated C++ links against (the Rust static library).
    """
    run_binary(
        name = "%s_generated" % name,
        srcs = [src],
        outs = [src + ".h", src + ".cc"],
        args = [
            "$(location %s)" % src,
            "-o",
            "$(location %s.h)" % src,
            "-o",
            "$(location %s.cc)" % src,
        ],
        tool = "@envoy_qat_crates//:cxxbridge-cmd__cxxbridge",
    )
    cc_library(
        name = name,
        srcs = [src + ".cc"],
        hdrs = [src + ".h"],
        include_prefix = "envoy-qat",
        deps = deps + ["@envoy_qat_crates//:cxx"],
        linkstatic = True,
    )
