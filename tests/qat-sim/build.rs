//! Bindgen over the same qatlib headers as envoy-qat's build.rs (fetched by
//! `ci/fetch-qat-deps.sh`), with the same dynamic-loading struct: the simulator checks the
//! signature of every function it exports against the struct's field types.
use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=ENVOY_QAT_DEPS");
    println!("cargo:rerun-if-changed=build.rs");
    let deps = env::var_os("ENVOY_QAT_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../build/qat-deps"));
    let qat = deps.join("usr/include/qat");
    if !qat.join("cpa.h").exists() {
        panic!(
            "qatlib headers not found under {}: run `ci/fetch-qat-deps.sh` or point ENVOY_QAT_DEPS at them",
            qat.display()
        );
    }
    let header = "#include <cpa.h>\n#include <cpa_cy_im.h>\n#include <cpa_cy_rsa.h>\n\
                  #include <cpa_cy_ec.h>\n#include <cpa_cy_ecdsa.h>\n#include <icp_sal_user.h>\n\
                  #include <icp_sal_poll.h>\n#include <qae_mem.h>\n#include <cpa_dc.h>\n";
    bindgen::Builder::default()
        .header_contents("qat_wrapper.h", header)
        .clang_arg(format!("-I{}", qat.display()))
        .allowlist_function("cpaCy(GetNumInstances|GetInstances|StartInstance|StopInstance|InstanceGetInfo2|QueryCapabilities|SetAddressTranslation|RsaDecrypt|EcdsaSignRS)")
        .allowlist_function("cpaGet(NumInstances|Instances)")
        .allowlist_function("cpaDcGetNumInstances")
        .allowlist_function("icp_sal_(userStart|userStop|CyPollInstance)")
        .allowlist_function("qaeMem(AllocNUMA|FreeNUMA)|qaeVirtToPhysNUMA")
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

    // QATzip (the simulator in src/qatzip.rs): the same qatzip.h as envoy-qat's build.rs.
    let include = deps.join("usr/include");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("qatzip.h").display()
    );
    bindgen::Builder::default()
        .header(include.join("qatzip.h").display().to_string())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function(
            "qz(Init|GetDefaults|SetupSession|CompressExt|MaxCompressedLength|TeardownSession)",
        )
        .allowlist_type("Qz.*|QZ.*")
        .allowlist_var("QZ_.*")
        .dynamic_library_name("QatZipLib")
        .dynamic_link_require_all(false)
        .generate_comments(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen over qatzip.h failed")
        .write_to_file(out.join("qatzip_sys.rs"))
        .expect("write qatzip_sys.rs");
}
