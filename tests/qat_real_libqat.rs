//! Debian trixie's real qatlib (libqat.so.4 / libusdm.so.0 from build/qat-deps) on a
//! machine without a QAT device: it loads (RTLD_LOCAL | RTLD_DEEPBIND), fails to start
//! with a clear one-line reason, and the configuration falls back to software.

#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::path::PathBuf;

use envoy_qat::backend::qat::{QatBackend, QatConfig};
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::{openssl_key, openssl_verify, tmp};

fn real_lib_dir() -> PathBuf {
    let dir = std::env::var_os("ENVOY_QAT_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build/qat-deps"))
        .join("usr/lib/x86_64-linux-gnu");
    assert!(
        dir.join("libqat.so.4").exists(),
        "{} has no libqat.so.4: run ci/fetch-qat-deps.sh",
        dir.display()
    );
    dir
}

fn real_config() -> QatConfig {
    QatConfig {
        lib_dir: Some(real_lib_dir()),
        ..QatConfig::default()
    }
}

#[test]
fn real_libqat_without_device_is_unavailable_with_a_clear_reason() {
    let err = QatBackend::new(&real_config()).expect_err("no QAT device on this machine");
    assert!(
        err.contains("icp_sal_userStart(\"SSL\")")
            && err.contains("libqat.so.4")
            && err.contains("CPA_STATUS_FAIL (-1)")
            && err.contains("no usable QAT device"),
        "{err}"
    );
    assert!(!err.contains('\n'), "the reason is one line: {err}");
    // A second attempt in the same process gives the same answer (nothing half-started).
    let again = QatBackend::new(&real_config()).expect_err("still no device");
    assert_eq!(err, again);
}

#[test]
fn missing_library_names_what_was_tried_and_the_fix() {
    let cfg = QatConfig {
        qat_lib: Some(PathBuf::from("/nonexistent/libqat.so.4")),
        usdm_lib: Some(PathBuf::from("/nonexistent/libusdm.so.0")),
        ..QatConfig::default()
    };
    let err = QatBackend::new(&cfg).expect_err("no such library");
    assert!(
        err.contains("/nonexistent/libusdm.so.0") && err.contains("ENVOY_QAT_LIB_DIR"),
        "{err}"
    );
}

#[test]
fn config_falls_back_to_software_with_the_real_library() {
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "rsa2048");
    let scheme = SignatureScheme::RsaPssRsaeSha256;
    let base = ProviderConfig {
        qat_lib_dir: Some(real_lib_dir()),
        ..ProviderConfig::default()
    };

    // auto: software, silently usable.
    let auto = ProviderConfig {
        backend: BackendChoice::Auto,
        ..base.clone()
    }
    .build_engine()
    .expect("auto falls back to software");
    assert_eq!(auto.backend_name(), "soft");
    let sig = auto
        .submit(&key, Operation::Sign(scheme), b"auto")
        .unwrap()
        .wait()
        .unwrap();
    assert!(openssl_verify(dir.path(), &key, scheme, b"auto", &sig).0);
    auto.shutdown();

    // qat + software_fallback: QAT reported unavailable, every operation fails over.
    let qat_fb = ProviderConfig {
        backend: BackendChoice::Qat,
        software_fallback: true,
        ..base.clone()
    }
    .build_engine()
    .expect("qat with fallback builds");
    assert_eq!(qat_fb.backend_name(), "qat");
    assert!(qat_fb.availability().is_ok(), "usable through the fallback");
    for i in 0..3 {
        let msg = format!("fallback {i}");
        let sig = qat_fb
            .submit(&key, Operation::Sign(scheme), msg.as_bytes())
            .unwrap()
            .wait()
            .unwrap();
        assert!(openssl_verify(dir.path(), &key, scheme, msg.as_bytes(), &sig).0);
    }
    assert_eq!(
        qat_fb.stats().fallbacks,
        3,
        "each operation counted as a failover"
    );
    qat_fb.shutdown();

    // qat without fallback: a clear configuration error.
    let err = ProviderConfig {
        backend: BackendChoice::Qat,
        software_fallback: false,
        ..base
    }
    .build_engine()
    .expect_err("qat without device and without fallback");
    assert_eq!(err.field, "backend");
    let msg = err.to_string();
    assert!(
        msg.contains("QAT backend unavailable") && msg.contains("icp_sal_userStart"),
        "{msg}"
    );
}
