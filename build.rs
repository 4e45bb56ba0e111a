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
    qat_bindings(&include, &out);
    qatzip_bindings(&include, &out);
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
        .allowlist_function("cpaCy(GetNumInstances|GetInstances|StartInstance|StopInstance|InstanceGetInfo2|SetAddressTranslation|InstanceSetNotificationCb|GetStatusText)")
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
        .generate()
        .expect("bindgen over qatzip.h failed")
        .write_to_file(out.join("qatzip_sys.rs"))
        .expect("write qatzip_sys.rs");
}
