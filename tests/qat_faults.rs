//! Fault injection on tests/qat-sim: each fault with software fallback on and off. Every
//! operation must end exactly once, with a signature that openssl verifies or a clear
//! error; no pinned memory may leak; a restarting instance leaves the rotation and comes
//! back.

#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_qat::backend::qat::QatBackend;
use envoy_qat::backend::OpError;
use envoy_qat::engine::{Completion, Engine, EngineError, Pending};
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::*;

const EC: SignatureScheme = SignatureScheme::EcdsaSecp256r1Sha256;
const RSA: SignatureScheme = SignatureScheme::RsaPkcs1Sha256;

struct Outcome {
    ok: Vec<(usize, Vec<u8>)>,
    err: Vec<(usize, EngineError)>,
}

fn pick(
    i: usize,
    ec: &Arc<PrivateKey>,
    rsa: &Arc<PrivateKey>,
) -> (Arc<PrivateKey>, SignatureScheme) {
    if i % 4 == 0 {
        (Arc::clone(rsa), RSA)
    } else {
        (Arc::clone(ec), EC)
    }
}

/// Run `n` operations, at most `depth` in flight; busy refusals are retried (that is
/// back-pressure), any other refusal or failure is an outcome. The operations are numbered
/// `first..first + n`; the number picks the key and the message.
fn run(
    engine: &Engine,
    ec: &Arc<PrivateKey>,
    rsa: &Arc<PrivateKey>,
    first: usize,
    n: usize,
    depth: usize,
) -> Outcome {
    let mut out = Outcome {
        ok: Vec::new(),
        err: Vec::new(),
    };
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let mut i = first;
    let end = first + n;
    let deadline = Instant::now() + Duration::from_secs(120);
    while i < end || !pending.is_empty() {
        assert!(Instant::now() < deadline, "fault run did not finish");
        while i < end && pending.len() < depth {
            let (key, scheme) = pick(i, ec, rsa);
            match engine.submit(&key, Operation::Sign(scheme), format!("op {i}").as_bytes()) {
                Ok(p) => {
                    pending.push((i, p));
                    i += 1;
                }
                Err(EngineError::Backend {
                    error: OpError::Busy(_),
                    ..
                }) => break,
                Err(e) => {
                    out.err.push((i, e));
                    i += 1;
                }
            }
        }
        let mut j = 0;
        let mut progressed = false;
        while j < pending.len() {
            match pending[j].1.try_complete() {
                Completion::NotReady => j += 1,
                Completion::Ready(sig) => {
                    out.ok.push((pending.swap_remove(j).0, sig));
                    progressed = true;
                }
                Completion::Failed(e) => {
                    out.err.push((pending.swap_remove(j).0, e));
                    progressed = true;
                }
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    out
}

/// The restart case: rounds of `n` operations until a restart has failed operations on
/// the device (callback failures), which a restart met at submission does not reach. The
/// simulator's restart clock starts with the backend, so a fast first round can end
/// before the first restart, and a slow one can meet it at submission.
fn run_until_restart_in_flight(
    engine: &Engine,
    qat: &QatBackend,
    ec: &Arc<PrivateKey>,
    rsa: &Arc<PrivateKey>,
    n: usize,
) -> (Outcome, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all = Outcome {
        ok: Vec::new(),
        err: Vec::new(),
    };
    let mut total = 0;
    loop {
        let o = run(engine, ec, rsa, total, n, 16);
        all.ok.extend(o.ok);
        all.err.extend(o.err);
        total += n;
        if qat.stats().callback_failures > 0 {
            return (all, total);
        }
        assert!(
            Instant::now() < deadline,
            "no restart caught operations on the device in {total} operations"
        );
    }
}

fn check_exactly_once(o: &Outcome, n: usize) {
    let mut seen = vec![0u8; n];
    for i in o.ok.iter().map(|x| x.0).chain(o.err.iter().map(|x| x.0)) {
        seen[i] += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "an operation ended twice or never"
    );
}

fn verify_sample(
    dir: &std::path::Path,
    o: &Outcome,
    ec: &PrivateKey,
    rsa: &PrivateKey,
    every: usize,
) {
    for (i, sig) in o.ok.iter().filter(|(i, _)| i % every == 0) {
        let (key, scheme) = if i % 4 == 0 { (rsa, RSA) } else { (ec, EC) };
        let (ok, why) = openssl_verify(dir, key, scheme, format!("op {i}").as_bytes(), sig);
        assert!(ok, "op {i}: openssl rejects the signature: {why}");
    }
}

#[test]
fn fault_matrix_with_and_without_fallback() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let base = sim().counter("mem_outstanding");
    let n = 200;
    let faults = [
        ("submit_fail", "submit_fail=0.2"),
        ("cb_fail", "cb_fail=0.2"),
        ("retry", "retry=0.5"),
        ("slow", "slow=0.3,slow_us=3000"),
        (
            "restart",
            // A device latency of 5 ms keeps operations on the device when a restart
            // comes, so in-flight operations fail and must still end exactly once.
            "restart_every_ms=40,restart_ms=15,latency_us=5000",
        ),
    ];
    for (name, fault) in faults {
        for fallback in [true, false] {
            let qat = backend(&format!("instances=2,ring=32,seed=7,{fault}"));
            let engine = engine(&qat, fallback);
            let (o, total) = if name == "restart" {
                run_until_restart_in_flight(&engine, &qat, &ec, &rsa, n)
            } else {
                (run(&engine, &ec, &rsa, 0, n, 16), n)
            };
            let what = format!("{name} fallback={fallback}");
            check_exactly_once(&o, total);
            verify_sample(dir.path(), &o, &ec, &rsa, 10);
            let s = engine.stats();
            let q = qat.stats();
            assert_eq!(s.in_flight, 0, "{what}");
            assert_eq!(s.cancelled, 0, "{what}");
            assert_eq!(s.completed as usize, o.ok.len(), "{what}");
            if fallback {
                assert!(o.err.is_empty(), "{what}: {:?}", o.err.first());
                match name {
                    "submit_fail" | "cb_fail" | "restart" => {
                        assert!(s.fallbacks > 0, "{what}: failovers are counted")
                    }
                    _ => {}
                }
            } else {
                for (i, e) in &o.err {
                    let msg = e.to_string();
                    assert!(
                        matches!(e, EngineError::Backend { backend: "qat", .. })
                            && (msg.contains("CPA_STATUS") || msg.contains("out of rotation")),
                        "{what}: op {i}: unclear error: {msg}"
                    );
                }
                match name {
                    "submit_fail" | "cb_fail" | "restart" => {
                        assert!(!o.err.is_empty(), "{what}: faults must show")
                    }
                    _ => assert!(o.err.is_empty(), "{what}: {:?}", o.err.first()),
                }
                assert_eq!(s.fallbacks, 0, "{what}");
            }
            match name {
                "submit_fail" => assert!(q.submit_failures > 0, "{what}"),
                "cb_fail" => assert!(q.callback_failures > 0, "{what}"),
                "retry" => assert!(q.retries > 0, "{what}"),
                "restart" => assert!(q.callback_failures > 0, "{what}"),
                _ => {}
            }
            assert_eq!(q.outstanding, 0, "{what}");
            engine.shutdown();
            drop(engine);
            drop(qat);
            assert_eq!(
                sim().counter("mem_outstanding"),
                base,
                "{what}: pinned memory leaked"
            );
        }
    }
    assert_eq!(sim().counter("invalid_params"), 0);
    assert_eq!(sim().counter("mem_bad_frees"), 0);
}

#[test]
fn restarting_instance_leaves_rotation_and_returns() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    // Instance 0 restarts for 30 ms every 150 ms; instance 1 is healthy.
    let qat = backend("instances=2,ring=64,fault_instances=0,restart_every_ms=150,restart_ms=30");
    let engine = engine(&qat, true);
    let start = Instant::now();
    let mut total = 0;
    while start.elapsed() < Duration::from_millis(1200) || qat.stats().readmissions == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "instance never came back"
        );
        let o = run(&engine, &ec, &rsa, 0, 50, 8);
        check_exactly_once(&o, 50);
        assert!(
            o.err.is_empty(),
            "with fallback nothing fails: {:?}",
            o.err.first()
        );
        verify_sample(dir.path(), &o, &ec, &rsa, 25);
        total += 50;
    }
    let q = qat.stats();
    assert!(sim().counter("restarts") > 0);
    assert!(
        q.evictions > 0,
        "restart must take the instance out of rotation: {q:?}"
    );
    assert!(
        q.readmissions > 0,
        "the instance must come back after a probe: {q:?}"
    );
    assert_eq!(engine.stats().completed as usize, total);
    engine.shutdown();
}

#[test]
fn soak_no_pinned_memory_leak_with_cancels() {
    let _g = serial();
    // 100k in CI's QAT suite (QAT_SOAK_OPS=100000); fewer by default to keep `cargo test` short.
    let n: usize = std::env::var("QAT_SOAK_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let base = sim().counter("mem_outstanding");
    let allocs = sim().counter("mem_allocs");
    let frees = sim().counter("mem_frees");
    let qat: Arc<QatBackend> = backend("instances=2,ring=128,workers=1,cb_fail=0.001,seed=3");
    let engine = engine(&qat, true);
    // One in ten cancelled, half at submit and half after some completions went by.
    let (ok, cancelled) = run_with_cancels(&engine, &ec, None, n, 64, 10);
    wait_idle(&engine);
    assert_eq!(ok + cancelled, n);
    let s = engine.stats();
    assert_eq!(s.completed as usize + s.cancelled as usize, n);
    // A dropped operation counts as cancelled, unless the device answered between the
    // submit and the drop: then it already counted as completed (ended exactly once).
    assert!(s.cancelled as usize <= cancelled, "{s:?}");
    assert_eq!(
        s.completed as usize,
        ok + (cancelled - s.cancelled as usize)
    );
    engine.shutdown();
    drop(engine);
    let q = qat.stats();
    drop(qat);
    assert_eq!(
        sim().counter("mem_outstanding"),
        base,
        "pinned memory leaked"
    );
    // Every pinned block allocated during the run was freed, and the run used the device.
    let allocated = sim().counter("mem_allocs") - allocs;
    assert_eq!(sim().counter("mem_frees") - frees, allocated);
    assert!(allocated as usize >= n && q.submitted > 0, "{q:?}");
}
