//! Link the module's C++ and compiler runtimes statically, so the `.so` needs nothing but
//! glibc and loads in every stock Envoy image, including Envoy's distroless one
//! (`envoyproxy/envoy:distroless-*`, on distroless `base-nossl`: glibc only, no
//! libstdc++.so.6, no libgcc_s.so.1).
//!
//! Two libraries would otherwise be dynamic:
//! - `libstdc++.so.6`: boring-sys links BoringSSL's C++ runtime as `-lstdc++`.
//! - `libgcc_s.so.1`: Rust's std links the unwinder and compiler support as `-lgcc_s`.
//!
//! Both are `-l` names the linker looks up directory by directory, taking the first
//! directory that has `lib<name>.so` or `lib<name>.a`. This script puts a directory of its
//! own first on the search path, holding `libstdc++.a` (GCC's static libstdc++) and
//! `libgcc_s.a`, a linker script `GROUP ( libgcc_eh.a libgcc.a )`: the unwinder and the
//! compiler support library, what `gcc -static-libgcc` links instead of libgcc_s (whose
//! own `libgcc_s.so` is a linker script that adds libgcc.a too). Their symbols stay local:
//! a cdylib exports only the module's `#[no_mangle]` hooks. `-z defs` makes any symbol left
//! undefined a link error, not a failure when Envoy loads the module.
//! ci/test-module-abi.sh checks that the module needs only glibc (and no newer glibc than
//! Envoy's images carry), exports only its hooks, and loads in a root holding glibc alone.
//!
//! The compiler asked for the archives is the target's C++ compiler as the `cc` crate finds
//! it (the one boring-sys compiles BoringSSL's C++ with: `CXX`, `CXX_<target>`, wrappers).
//!
//! Not under a sanitizer (ci/test-sanitize-sim.sh): the sanitizer runtime provides its own
//! `operator new`/`delete` and unwinder hooks, and the dynamic libraries are what it expects.
//! `ENVOY_QAT_MODULE_DYNAMIC_CXX=1` also keeps them dynamic.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=ENVOY_QAT_MODULE_DYNAMIC_CXX");
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
    let compiler = cc::Build::new()
        .cpp(true)
        .cargo_metadata(false)
        .get_compiler();
    let stdcxx = compiler_file(&compiler, "-print-file-name=libstdc++.a");
    let gcc_eh = compiler_file(&compiler, "-print-file-name=libgcc_eh.a");
    let libgcc = compiler_file(&compiler, "-print-libgcc-file-name");
    let dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("static-runtime");
    std::fs::create_dir_all(&dir).expect("create the static runtime directory");
    let link = dir.join("libstdc++.a");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&stdcxx, &link)
        .unwrap_or_else(|e| panic!("link {} to {}: {e}", link.display(), stdcxx.display()));
    std::fs::write(
        dir.join("libgcc_s.a"),
        format!(
            "/* module/build.rs: -lgcc_s as gcc -static-libgcc links it */\nGROUP ( {} {} )\n",
            gcc_eh.display(),
            libgcc.display()
        ),
    )
    .expect("write libgcc_s.a");
    for f in [&stdcxx, &gcc_eh, &libgcc] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
}

/// One of the C++ compiler's own files (`-print-file-name=NAME` or
/// `-print-libgcc-file-name`), or a build failure that says what to install.
fn compiler_file(compiler: &cc::Tool, arg: &str) -> PathBuf {
    let mut cmd = compiler.to_command();
    let out = cmd
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("run {:?} {arg}: {e}", compiler.path()));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_absolute() || !path.exists() {
        panic!(
            "{:?} {arg} names no file ({}): the module links GCC's static C++ runtime; \
             install it (Debian/Ubuntu: libstdc++-<gcc version>-dev, which g++ pulls in; \
             Fedora/RHEL: libstdc++-static) or set ENVOY_QAT_MODULE_DYNAMIC_CXX=1 to link \
             libstdc++.so.6 and libgcc_s.so.1 dynamically",
            compiler.path(),
            path.display()
        );
    }
    path
}
