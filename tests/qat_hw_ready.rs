//! What real QAT hardware and qatlib do that a lenient simulator hid (issue 15), on
//! tests/qat-sim made as strict as qatlib's sources: typed instances (a Gen4 crypto VF
//! carries sym-only and asym-only instances, and qatlib refuses RSA/ECDSA on a sym one),
//! qatlib's RSA parameter checks (a per-request error, not an instance fault), responses
//! that never arrive and device resets nobody announces (per-operation deadlines).

#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use envoy_qat::backend::qat::QatBackend;
use envoy_qat::engine::EngineError;
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::*;

const EC: SignatureScheme = SignatureScheme::EcdsaSecp256r1Sha256;
const RSA: SignatureScheme = SignatureScheme::RsaPssRsaeSha256;

/// Sign `n` messages alternating ECDSA and RSA; every one must verify with openssl.
fn sign_all(
    engine: &envoy_qat::engine::Engine,
    dir: &Path,
    ec: &Arc<PrivateKey>,
    rsa: &Arc<PrivateKey>,
    n: usize,
) {
    for i in 0..n {
        let (key, scheme) = if i % 2 == 0 { (ec, EC) } else { (rsa, RSA) };
        let msg = format!("hw-ready {i}");
        let sig = engine
            .submit(key, Operation::Sign(scheme), msg.as_bytes())
            .and_then(|p| p.wait())
            .unwrap_or_else(|e| panic!("op {i} ({scheme}): {e}"));
        let (ok, why) = openssl_verify(dir, key, scheme, msg.as_bytes(), &sig);
        assert!(ok, "op {i}: openssl rejects the signature: {why}");
    }
}

/// An RSA key of `bits` bits made by openssl (sizes qatlib may refuse included).
fn rsa_key_bits(dir: &Path, bits: usize) -> Arc<PrivateKey> {
    let path = dir.join(format!("rsa{bits}.pem"));
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .arg("-out")
        .arg(&path)
        .output()
        .expect("run openssl (install openssl)");
    assert!(out.status.success(), "openssl genpkey rsa {bits}: {out:?}");
    Arc::new(PrivateKey::from_file(&path).expect("parse openssl's key"))
}

#[test]
fn only_asymmetric_instances_are_used() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let wrong = sim().counter("wrong_type");
    // A Gen4 crypto VF as qatmgr splits it, plus a compression instance.
    let qat = backend("types=sym+asym+sym+asym+dc,ring=64");
    assert_eq!(
        qat.instances(),
        2,
        "only the asym instances: {}",
        qat.inventory()
    );
    let inv = qat.inventory().to_string();
    for want in ["4 crypto", "2 sym", "2 asym", "1 dc", "using 2"] {
        assert!(inv.contains(want), "inventory says {want:?}: {inv}");
    }
    // Without software fallback, any request on a sym instance would fail.
    let engine = engine(&qat, false);
    sign_all(&engine, dir.path(), &ec, &rsa, 40);
    let q = qat.stats();
    assert_eq!(
        sim().counter("wrong_type"),
        wrong,
        "a request went to a sym instance"
    );
    assert_eq!(q.evictions, 0, "{q}");
    assert_eq!(q.completed, 40, "{q}");
    engine.shutdown();
}

#[test]
fn generic_crypto_instances_still_serve() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    // Gen2 / 4xxx "cy" instances carry both services.
    let qat = backend("types=cy+cy");
    assert_eq!(qat.instances(), 2, "{}", qat.inventory());
    let engine = engine(&qat, false);
    sign_all(&engine, dir.path(), &ec, &rsa, 8);
    engine.shutdown();
}

#[test]
fn a_vf_without_asym_instances_is_unavailable_with_a_reason() {
    let _g = serial();
    sim().configure("types=sym+sym+dc");
    let err = QatBackend::new(&sim_config()).expect_err("no asym instance: unavailable");
    for want in ["asym", "2 sym", "1 dc", "cfg_services"] {
        assert!(err.contains(want), "reason names {want:?}: {err}");
    }
    // Nothing was left started: the next backend starts afresh.
    let qat = backend("types=asym");
    assert_eq!(qat.instances(), 1);
}

#[test]
fn a_request_qatlib_refuses_fails_alone_and_evicts_nothing() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    // 2064 bits: a valid RSA key, but not an operation size qatlib accepts
    // (LacRsa_IsValidRsaSize), so every request with it is INVALID_PARAM at submit.
    let odd = rsa_key_bits(dir.path(), 2064);
    let rejects = sim().counter("rsa_param_rejects");
    let qat = backend("instances=1,ring=64");
    let engine = engine(&qat, true);
    for i in 0..6 {
        let msg = format!("odd key {i}");
        let sig = engine
            .submit(&odd, Operation::Sign(RSA), msg.as_bytes())
            .and_then(|p| p.wait())
            .unwrap_or_else(|e| panic!("odd key op {i}: the fallback signs it: {e}"));
        let (ok, why) = openssl_verify(dir.path(), &odd, RSA, msg.as_bytes(), &sig);
        assert!(ok, "{why}");
    }
    assert!(sim().counter("rsa_param_rejects") - rejects >= 6);
    let q = qat.stats();
    assert_eq!(
        q.evictions, 0,
        "a per-request error evicted the instance: {q}"
    );
    assert_eq!(qat.instances_down(), 0);
    // The instance still serves other requests on the device, at once.
    let before = q.completed;
    engine
        .submit(&ec, Operation::Sign(EC), b"after")
        .and_then(|p| p.wait())
        .expect("ECDSA on QAT");
    assert_eq!(qat.stats().completed, before + 1, "{}", qat.stats());
    assert_eq!(engine.stats().fallbacks, 6);
    engine.shutdown();
}

#[test]
fn ciphertext_not_below_the_modulus_is_refused_not_wrapped() {
    let _g = serial();
    let dir = tmp();
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let qat = backend("instances=1");
    let engine = engine(&qat, false);
    // qatlib does not check c < n for a CRT key: the device would return
    // (c mod n)^d. BoringSSL's own RSA refuses such a ciphertext; so must we.
    let c = vec![0xffu8; 256];
    for _ in 0..4 {
        let r = engine
            .submit(&rsa, Operation::Decrypt, &c)
            .and_then(|p| p.wait());
        match r {
            Err(EngineError::Backend { error, .. }) => {
                assert!(error.to_string().contains("modulus"), "{error}")
            }
            other => panic!("ciphertext >= n must fail: {other:?}"),
        }
    }
    let q = qat.stats();
    assert_eq!(q.evictions, 0, "{q}");
    assert_eq!(qat.instances_down(), 0);
    engine.shutdown();
}

#[test]
fn check_probe_reports_instance_types() {
    let _g = serial();
    let d = tmp();
    for name in ["libqat.so.4", "libusdm.so.0"] {
        std::os::unix::fs::symlink(sim_path(), d.path().join(name)).unwrap();
    }
    let probe_cy = |list: &str| {
        sim().configure(list);
        let mut out = Vec::new();
        envoy_qat::check::probe::probe(&[d.path().to_path_buf()], false, &mut out);
        out.into_iter()
            .find(|f| f.check == "probe cy")
            .expect("a probe cy finding")
    };
    let f = probe_cy("types=sym+asym+asym+dc");
    assert_eq!(f.status, envoy_qat::check::Status::Pass, "{f:?}");
    assert!(
        f.detail
            .contains("3 crypto instance(s): 1 sym, 2 asym, 1 dc"),
        "{f:?}"
    );
    let f = probe_cy("types=sym+dc");
    assert_eq!(f.status, envoy_qat::check::Status::Fail, "{f:?}");
    assert!(f.detail.contains("none can do RSA or ECDSA"), "{f:?}");
    assert!(
        f.fix.as_deref().is_some_and(|x| x.contains("asym")),
        "{f:?}"
    );
}

/// A QAT backend on the simulator with a short per-operation deadline.
fn backend_with_deadline(list: &str, ms: u64) -> Arc<QatBackend> {
    sim().configure(list);
    let cfg = envoy_qat::backend::qat::QatConfig {
        op_timeout: std::time::Duration::from_millis(ms),
        ..sim_config()
    };
    Arc::new(QatBackend::new(&cfg).expect("QAT backend on qat-sim"))
}

/// Run `n` ECDSA operations (at most `depth` in flight); every one must end exactly
/// once, within a generous bound (the test never asserts on timing, only that nothing
/// stays in flight for ever). Returns (successes, failures).
fn run_ec(
    engine: &envoy_qat::engine::Engine,
    ec: &Arc<PrivateKey>,
    n: usize,
    depth: usize,
) -> (usize, Vec<EngineError>) {
    use envoy_qat::engine::Completion;
    let mut pending = Vec::new();
    let (mut ok, mut err, mut i) = (0, Vec::new(), 0);
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while i < n || !pending.is_empty() {
        assert!(
            std::time::Instant::now() < bound,
            "operations never ended: {} in flight; {}",
            pending.len(),
            engine.stats()
        );
        while i < n && pending.len() < depth {
            match engine.submit(ec, Operation::Sign(EC), format!("op {i}").as_bytes()) {
                Ok(p) => pending.push(p),
                Err(e) => err.push(e),
            }
            i += 1;
        }
        let before = pending.len();
        pending.retain_mut(|p| match p.try_complete() {
            Completion::NotReady => true,
            Completion::Ready(_) => {
                ok += 1;
                false
            }
            Completion::Failed(e) => {
                err.push(e);
                false
            }
        });
        if pending.len() == before {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    (ok, err)
}

#[test]
fn lost_responses_fail_over_at_the_deadline_and_stay_quarantined() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let base = sim().counter("mem_outstanding");
    let lost = sim().counter("lost");
    // One response in five never arrives; the deadline is 200 ms.
    let qat = backend_with_deadline("instances=2,ring=64,lost=0.2,seed=11", 200);
    let engine = engine(&qat, true);
    let (ok, err) = run_ec(&engine, &ec, 100, 8);
    assert!(
        err.is_empty(),
        "with fallback nothing fails: {:?}",
        err.first()
    );
    assert_eq!(ok, 100);
    let s = engine.stats();
    assert_eq!((s.completed, s.in_flight), (100, 0), "{s:?}");
    let q = qat.stats();
    let lost = sim().counter("lost") - lost;
    assert!(lost > 0, "the fault must show");
    assert_eq!(q.expired, lost, "every lost response expired once: {q}");
    assert!(s.fallbacks >= q.expired, "{s:?} {q}");
    assert!(q.evictions > 0, "{q}");
    // Their memory is still held: the device could still write it.
    assert_eq!(q.quarantined, q.expired - q.late_answers, "{q}");
    assert!(
        q.quarantined_bytes > 0 && q.pinned_outstanding >= q.quarantined,
        "{q}"
    );
    engine.shutdown();
    let q = qat.stats();
    assert_eq!((q.quarantined, q.quarantined_bytes), (0, 0), "{q}");
    drop(engine);
    drop(qat);
    assert_eq!(
        sim().counter("mem_outstanding"),
        base,
        "pinned memory leaked"
    );
}

#[test]
fn lost_response_without_fallback_fails_with_a_reason() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let qat = backend_with_deadline("instances=1,lost=1.0", 100);
    let engine = engine(&qat, false);
    let e = engine
        .submit(&ec, Operation::Sign(EC), b"never answered")
        .and_then(|p| p.wait())
        .expect_err("no answer: the operation fails at the deadline");
    assert!(e.to_string().contains("no answer within 100 ms"), "{e}");
    assert_eq!(
        qat.instances_down(),
        1,
        "the silent instance leaves the rotation"
    );
    engine.shutdown();
}

#[test]
fn silent_device_reset_is_survived_and_the_instance_returns() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let base = sim().counter("mem_outstanding");
    let resets = sim().counter("resets");
    // Instance 0 is reset every 150 ms without telling anyone; a 5 ms device latency
    // keeps operations on it when that happens. Instance 1 is healthy.
    let qat = backend_with_deadline(
        "instances=2,ring=64,fault_instances=0,reset_every_ms=150,latency_us=5000",
        100,
    );
    let engine = engine(&qat, true);
    let mut total = 0;
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Until a reset caught operations on the device and the instance came back.
    while qat.stats().expired == 0 || qat.stats().readmissions == 0 {
        assert!(std::time::Instant::now() < bound, "{}", qat.stats());
        let (ok, err) = run_ec(&engine, &ec, 50, 8);
        assert!(
            err.is_empty(),
            "with fallback nothing fails: {:?}",
            err.first()
        );
        assert_eq!(ok, 50);
        total += 50;
    }
    assert!(sim().counter("resets") > resets);
    let s = engine.stats();
    assert_eq!(
        s.completed as usize, total,
        "each operation ended exactly once"
    );
    engine.shutdown();
    drop(engine);
    drop(qat);
    assert_eq!(
        sim().counter("mem_outstanding"),
        base,
        "pinned memory leaked"
    );
}

#[test]
fn pinned_memory_is_allocated_on_the_instance_node() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let mismatch = sim().counter("numa_mismatch");
    // Two instances on two sockets (nodeAffinity 0 and 1), as on a 2-socket host.
    let qat = backend("instances=2,nodes=0+1,ring=64");
    let engine = engine(&qat, false);
    sign_all(&engine, dir.path(), &ec, &rsa, 20);
    assert_eq!(
        sim().counter("numa_mismatch"),
        mismatch,
        "buffers were allocated on another node than their instance's"
    );
    engine.shutdown();
}

/// The simulator's exported qatlib start/stop, called as another user of qatlib in the
/// same process (QATzip starts qatlib too) would.
fn sim_start_stop() -> (
    libloading::Symbol<'static, unsafe extern "C" fn(*const std::ffi::c_char) -> i32>,
    libloading::Symbol<'static, unsafe extern "C" fn() -> i32>,
) {
    static LIB: std::sync::OnceLock<libloading::Library> = std::sync::OnceLock::new();
    // SAFETY: the simulator has no initialisers with preconditions.
    let lib = LIB.get_or_init(|| unsafe { libloading::Library::new(sim_path()) }.unwrap());
    // SAFETY: the simulator's exports with qatlib's signatures.
    unsafe {
        (
            lib.get(b"icp_sal_userStart\0").unwrap(),
            lib.get(b"icp_sal_userStop\0").unwrap(),
        )
    }
}

#[test]
fn qatlib_start_is_shared_with_another_user_of_the_process() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (start, stop) = sim_start_stop();
    let qat = backend("instances=1");
    assert_eq!(sim().counter("start_refs"), 1);
    // Another user starts qatlib again (any section name): qatlib counts it.
    // SAFETY: a NUL-terminated string.
    assert_eq!(unsafe { start(c"SHIM".as_ptr()) }, 0);
    assert_eq!(sim().counter("start_refs"), 2);
    let engine = engine(&qat, false);
    engine
        .submit(&ec, Operation::Sign(EC), b"shared")
        .and_then(|p| p.wait())
        .expect("sign");
    engine.shutdown();
    drop(engine);
    drop(qat);
    // Our stop does not stop qatlib under the other user.
    assert_eq!(sim().counter("start_refs"), 1);
    // SAFETY: balances the start above.
    assert_eq!(unsafe { stop() }, 0);
    assert_eq!(sim().counter("start_refs"), 0);
}

#[test]
fn every_used_instance_has_our_address_translation() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let before = sim().counter("no_v2p_submits");
    let qat = backend("types=asym+asym");
    let engine = engine(&qat, false);
    for _ in 0..4 {
        engine
            .submit(&ec, Operation::Sign(EC), b"v2p")
            .and_then(|p| p.wait())
            .expect("sign");
    }
    assert_eq!(sim().counter("no_v2p_submits"), before);
    engine.shutdown();
}

#[test]
fn check_says_what_qatlib_supports() {
    use envoy_qat::check::{node, Roots, Status};
    let finding = |device: &str| {
        let d = tmp();
        let f = d.path().join("sys/bus/pci/devices/0000:3d:01.0");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("vendor"), "0x8086\n").unwrap();
        std::fs::write(f.join("device"), format!("0x{device}\n")).unwrap();
        let roots = Roots {
            sys: d.path().join("sys"),
            dev: d.path().join("dev"),
            proc: d.path().join("proc"),
        };
        let mut out = Vec::new();
        node::check_node(&roots, &mut out);
        out.into_iter()
            .find(|f| f.check == "qatlib-support")
            .expect("a qatlib-support finding")
    };
    let c62x = finding("37c9");
    assert_eq!(c62x.status, Status::Warn, "{c62x:?}");
    assert!(c62x.detail.contains("C62x (37c9)"), "{c62x:?}");
    assert!(
        c62x.fix
            .as_deref()
            .is_some_and(|f| f.contains("libqat_s.so")),
        "{c62x:?}"
    );
    assert_eq!(finding("4941").status, Status::Pass);
    assert_eq!(finding("4947").status, Status::Pass);
    assert_eq!(finding("4949").status, Status::Warn);
}

#[test]
fn without_typed_instance_queries_capabilities_choose() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let wrong = sim().counter("wrong_type");
    // A library that answers CPA_STATUS_UNSUPPORTED to cpaGetNumInstances(type).
    let qat = backend("types=sym+asym+sym+asym,generic_api=0");
    assert_eq!(qat.instances(), 2, "{}", qat.inventory());
    assert!(
        qat.inventory()
            .to_string()
            .contains("cpaCyQueryCapabilities"),
        "{}",
        qat.inventory()
    );
    let engine = engine(&qat, false);
    sign_all(&engine, dir.path(), &ec, &rsa, 8);
    assert_eq!(sim().counter("wrong_type"), wrong);
    engine.shutdown();
    drop(engine);
    drop(qat);
    sim().configure("types=sym+sym,generic_api=0");
    let err = QatBackend::new(&sim_config()).expect_err("no asym instance");
    assert!(err.contains("none of them asymmetric"), "{err}");
}
