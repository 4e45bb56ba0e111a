//! Build script: bindgen over qatlib's and QATzip's real headers (Debian trixie's
//! libqat-dev / libqatzip-dev, fetched by `ci/fetch-qat-deps.sh`), generating
//! dynamic-loading bindings: the libraries are opened with dlopen at run time and
//! never linked, so one binary runs with or without QAT.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=ENVOY_QAT_DEPS");
    println!("cargo:rerun-if-changed=build.rs");
    let deps = env::var_os("ENVOY_QAT_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("build/qat-deps"));
    let include = deps.join("usr/include");
    if !include.join("qat/cpa.h").exists() || !include.join("qatzip.h").exists() {
        panic!(
            "qatlib/QATzip headers not found under {}: run `ci/fetch-qat-deps.sh` \
             (fetches Debian trixie's libqat-dev and libqatzip-dev into build/qat-deps), \
             or point ENVOY_QAT_DEPS at a directory holding usr/include/qat/cpa.h and usr/include/qatzip.h",
            include.display()
        );
    }
    println!(
        "cargo:rustc-env=ENVOY_QAT_DEPS_LIB={}",
        deps.join("usr/lib/x86_64-linux-gnu").display()
    );
    // Under rustc's -Zsanitizer=address (ci/test-sanitize-sim.sh) the test executables carry
    // the ASan runtime and the instrumented libqat_sim.so they dlopen needs its symbols:
    // export them from the executables. ASan's dlopen refuses RTLD_DEEPBIND
    // (google/sanitizers#611): cfg envoy_qat_asan makes the QAT loader open without it.
    println!("cargo::rustc-check-cfg=cfg(envoy_qat_asan)");
    if env::var("CARGO_CFG_SANITIZE").is_ok_and(|s| s.split(',').any(|s| s == "address")) {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic");
        println!("cargo:rustc-cfg=envoy_qat_asan");
    }
    qat_bindings(&include, &out);
    qatzip_bindings(&include, &out);
    // Two switches for the C++ glue (the cxx bridge's C++ and cpp/ssl over Debian's Android
    // BoringSSL):
    // - feature "glue" (default) off: no bridge at all, Rust or C++ (the Envoy dynamic
    //   module, which must bring no C++ runtime and no second TLS library into Envoy);
    // - ENVOY_QAT_SKIP_CXX=1: the custom Envoy build (bazel/rust-staticlib.sh). Cargo builds
    //   the Rust core with the bridge's Rust side as a static library; cxxbridge generates
    //   the bridge's C++ and Bazel compiles it, cpp/ssl and cpp/envoy against Envoy's own
    //   BoringSSL. Nothing here may then compile C++ or link a TLS library: Debian's
    //   Android BoringSSL would otherwise end up in Envoy beside Envoy's own. Only the
    //   library can be built so: the binary and the tests need the C++ glue.
    println!("cargo:rerun-if-env-changed=ENVOY_QAT_SKIP_CXX");
    let skip_cxx = env::var("ENVOY_QAT_SKIP_CXX").is_ok_and(|v| !v.is_empty() && v != "0");
    if env::var_os("CARGO_FEATURE_GLUE").is_some() && !skip_cxx {
        cxx_glue(&manifest);
    }
}

fn qat_bindings(include: &Path, out: &Path) {
    let qat = include.join("qat");
    println!("cargo:rerun-if-changed={}", qat.display());
    let header = "#include <cpa.h>\n#include <cpa_cy_im.h>\n#include <cpa_cy_rsa.h>\n\
                  #include <cpa_cy_ec.h>\n#include <cpa_cy_ecdsa.h>\n#include <icp_sal_user.h>\n\
                  #include <icp_sal_poll.h>\n#include <qae_mem.h>\n";
    bindgen::Builder::default()
        .header_contents("qat_wrapper.h", header)
        .clang_arg(format!("-I{}", qat.display()))
        .allowlist_function("cpaCy(GetNumInstances|GetInstances|StartInstance|StopInstance|InstanceGetInfo2|QueryCapabilities|SetAddressTranslation|InstanceSetNotificationCb|GetStatusText)")
        .allowlist_function("cpaGet(NumInstances|Instances)")
        .allowlist_function("cpaCyRsaDecrypt|cpaCyEcdsaSignRS")
        .allowlist_function("icp_sal_(userStart|userStop|CyPollInstance|CyGetFileDescriptor|CyPutFileDescriptor|check_device|poll_device_events)")
        .allowlist_function("qaeMem(AllocNUMA|FreeNUMA|VirtToPhysNUMA|Init|Destroy)")
        .allowlist_type("Cpa.*|CPA_.*")
        .allowlist_var("CPA_.*")
        .dynamic_library_name("QatLib")
        .dynamic_link_require_all(false)
        // The headers' comments hold indented examples that rustdoc would run as doctests.
        .generate_comments(false)
        .derive_default(true)
        .layout_tests(false)
        // The C headers' comments hold C snippets that rustdoc would run as doctests.
        .generate_comments(false)
        .generate()
        .expect("bindgen over qatlib headers failed")
        .write_to_file(out.join("qat_sys.rs"))
        .expect("write qat_sys.rs");
}

fn qatzip_bindings(include: &Path, out: &Path) {
    println!(
        "cargo:rerun-if-changed={}",
        include.join("qatzip.h").display()
    );
    bindgen::Builder::default()
        .header(include.join("qatzip.h").display().to_string())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("qz.*")
        .allowlist_type("Qz.*|QZ.*")
        .allowlist_var("QZ_.*|QATZIP_.*")
        .dynamic_library_name("QatZipLib")
        .dynamic_link_require_all(false)
        .derive_default(true)
        .layout_tests(false)
        // The C headers' comments hold C snippets that rustdoc would run as doctests.
        .generate_comments(false)
        .generate()
        .expect("bindgen over qatzip.h failed")
        .write_to_file(out.join("qatzip_sys.rs"))
        .expect("write qatzip_sys.rs");
}

/// cxx bridge (src/bridge.rs) and the BoringSSL glue (cpp/ssl), against Debian's
/// android-libboringssl-dev: headers in /usr/include/android, shared libraries in
/// /usr/lib/x86_64-linux-gnu/android (linked with an rpath to that directory).
/// ENVOY_QAT_SANITIZE=1 builds the C++ with gcc's AddressSanitizer and UBSan and links
/// their runtimes into every binary.
fn cxx_glue(manifest: &Path) {
    for v in [
        "ENVOY_QAT_BORINGSSL_INCLUDE",
        "ENVOY_QAT_BORINGSSL_LIB",
        "ENVOY_QAT_SANITIZE",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let include =
        env::var("ENVOY_QAT_BORINGSSL_INCLUDE").unwrap_or_else(|_| "/usr/include/android".into());
    let lib = env::var("ENVOY_QAT_BORINGSSL_LIB")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/android".into());
    if !Path::new(&include).join("openssl/ssl.h").exists()
        || !Path::new(&lib).join("libssl.so").exists()
    {
        panic!(
            "BoringSSL not found (headers {include}/openssl/ssl.h, library {lib}/libssl.so): \
             install Debian's android-libboringssl-dev (ci/deps.sh does), or set \
             ENVOY_QAT_BORINGSSL_INCLUDE and ENVOY_QAT_BORINGSSL_LIB"
        );
    }
    let sanitize = env::var("ENVOY_QAT_SANITIZE").is_ok_and(|v| !v.is_empty() && v != "0");
    let sources = ["cpp/ssl/private_key.cc", "cpp/ssl/tls.cc"];
    for f in sources
        .iter()
        .chain(&["cpp/ssl/private_key.h", "cpp/ssl/tls.h"])
    {
        println!("cargo:rerun-if-changed={}", manifest.join(f).display());
    }
    println!("cargo:rerun-if-changed=src/bridge.rs");
    let mut b = cxx_build::bridge("src/bridge.rs");
    b.files(sources.iter().map(|f| manifest.join(f)))
        // -isystem: BoringSSL's own headers are not ours to warn about.
        .flag("-isystem")
        .flag(&include)
        .std("c++17")
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Wno-unused-parameter");
    if sanitize {
        b.flag("-fsanitize=address,undefined")
            .flag("-fno-omit-frame-pointer")
            .flag("-fno-sanitize-recover=undefined")
            .opt_level(1);
        // rustc links with -nodefaultlibs, so gcc adds no sanitizer runtime itself: name
        // them, before any other library so libasan comes first in the load order.
        println!("cargo:rustc-link-lib=dylib=asan");
        println!("cargo:rustc-link-lib=dylib=ubsan");
    }
    b.compile("envoy_qat_cxx");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib=ssl");
    println!("cargo:rustc-link-lib=dylib=crypto");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
