//! Link the module's C++ and unwinder runtimes statically, so the `.so` needs nothing but
//! glibc and loads in every stock Envoy image, including Envoy's distroless one
//! (`envoyproxy/envoy:distroless-*`, on distroless `base-nossl`: glibc only, no
//! libstdc++.so.6, no libgcc_s.so.1).
//!
//! Two libraries would otherwise be dynamic:
//! - `libstdc++.so.6`: boring-sys links BoringSSL's C++ runtime as `-lstdc++`.
//! - `libgcc_s.so.1`: Rust's std links the unwinder as `-lgcc_s`.
//!
//! Both are `-l` names the linker looks up directory by directory, taking the first
//! directory that has `lib<name>.so` or `lib<name>.a`. This script puts a directory of its
//! own first on the search path, holding `libstdc++.a` (GCC's static libstdc++) and
//! `libgcc_s.a` (GCC's `libgcc_eh.a`, what `gcc -static-libgcc -shared` links into shared
//! objects). Both archives are position-independent on the Linux targets GCC supports for
//! `-shared -static-libgcc -static-libstdc++`. Their symbols stay local: a cdylib exports
//! only the module's `#[no_mangle]` hooks (ci/test-module-abi.sh checks, and that the
//! module needs only glibc).
//!
//! Not under a sanitizer (ci/test-sanitize-sim.sh): the sanitizer runtime provides its own
//! `operator new`/`delete` and unwinder hooks, and the dynamic libraries are what it expects.
//! `ENVOY_QAT_MODULE_DYNAMIC_CXX=1` also keeps them dynamic.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ENVOY_QAT_MODULE_DYNAMIC_CXX");
    println!("cargo:rerun-if-env-changed=CC");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if env::var("ENVOY_QAT_MODULE_DYNAMIC_CXX").as_deref() == Ok("1")
        || flags.contains("sanitizer")
        || target_os != "linux"
        || target_env != "gnu"
    {
        return;
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("static-runtime");
    std::fs::create_dir_all(&dir).expect("create the static runtime directory");
    for (archive, as_name) in [
        ("libstdc++.a", "libstdc++.a"),
        ("libgcc_eh.a", "libgcc_s.a"),
    ] {
        let found = gcc_file(&cc, archive);
        let link = dir.join(as_name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&found, &link)
            .unwrap_or_else(|e| panic!("link {} to {}: {e}", link.display(), found.display()));
        println!("cargo:rerun-if-changed={}", found.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// The full path of one of the C compiler's own files (`cc -print-file-name=NAME`), or a
/// build failure that names the package to install.
fn gcc_file(cc: &str, name: &str) -> PathBuf {
    let out = Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .unwrap_or_else(|e| panic!("run `{cc} -print-file-name={name}`: {e}"));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_absolute() || !Path::new(&path).exists() {
        panic!(
            "`{cc}` has no {name} to link statically into the module (install GCC's static \
             C++ library, e.g. Debian's libstdc++-12-dev, or set ENVOY_QAT_MODULE_DYNAMIC_CXX=1 \
             to link libstdc++.so.6 and libgcc_s.so.1 dynamically)"
        );
    }
    path
}
