//! The QAT backend through the engine on tests/qat-sim (a software qatlib loaded through
//! the same dlopen path), every result checked with the openssl CLI.

mod common;
#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_qat::backend::qat::{QatBackend, QatConfig};
use envoy_qat::backend::OpError;
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::engine::{Completion, EngineError};
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::*;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn every_scheme_and_key_type_verifies_with_openssl() {
    let _g = serial();
    let base = sim().counter("mem_outstanding");
    let qat = backend("instances=2,ring=64");
    let engine = engine(&qat, false);
    let dir = tmp();
    let msg = b"envoy-qat: every scheme through QAT (simulated)";
    let mut signed = 0;
    for kind in ["rsa2048", "rsa3072", "rsa4096", "p256", "p384"] {
        let (_, key) = openssl_key(dir.path(), kind);
        for scheme in SignatureScheme::for_key(key.key_type()) {
            let sig = engine
                .submit(&key, Operation::Sign(scheme), msg)
                .and_then(|p| p.wait())
                .unwrap_or_else(|e| panic!("{kind} {scheme}: {e}"));
            let (ok, why) = openssl_verify(dir.path(), &key, scheme, msg, &sig);
            assert!(ok, "openssl rejects {kind} {scheme} from QAT: {why}");
            signed += 1;
        }
    }
    let s = engine.stats();
    assert_eq!(s.completed, signed);
    assert_eq!(s.failed, 0);
    assert_eq!(s.fallbacks, 0, "no operation may have run in software");
    assert_eq!(qat.stats().completed, signed);
    // The simulator computed with libcrypto (its fast path), so the signatures openssl
    // just verified came from that path; with QAT_SIM_ARITH=bigint (the AddressSanitizer
    // run, ci/test-sanitize-sim.sh, whose dlopen refuses libcrypto's RTLD_DEEPBIND) they
    // came from the portable path.
    let path = if std::env::var("QAT_SIM_ARITH").is_ok_and(|v| v == "bigint") {
        "arith_bigint"
    } else {
        "arith_ossl"
    };
    assert!(sim().counter(path) >= signed, "{path}");
    engine.shutdown();
    drop(engine);
    drop(qat);
    assert_eq!(
        sim().counter("mem_outstanding"),
        base,
        "pinned memory leaked"
    );
    assert_eq!(sim().counter("invalid_params"), 0);
}

#[test]
fn raw_decrypt_equals_openssl_no_padding() {
    let _g = serial();
    let qat = backend("instances=1");
    let engine = engine(&qat, false);
    let dir = tmp();
    for kind in ["rsa2048", "rsa3072"] {
        let (pem, key) = openssl_key(dir.path(), kind);
        let k = key.key_type().raw_output_len();
        for round in 0..3u8 {
            let mut plain = vec![0u8; k];
            getrandom::fill(&mut plain[1..]).unwrap();
            plain[1] |= round; // vary
            let c = openssl_raw_encrypt(dir.path(), &pem, &plain);
            let ours = engine
                .submit(&key, Operation::Decrypt, &c)
                .and_then(|p| p.wait())
                .expect("raw decrypt on QAT");
            let theirs = openssl_raw_decrypt(dir.path(), &pem, &c);
            assert_eq!(ours, theirs, "{kind}: raw decrypt differs from openssl");
            assert_eq!(ours, plain);
        }
    }
    assert_eq!(engine.stats().fallbacks, 0);
    engine.shutdown();
}

#[test]
fn full_ring_is_back_pressure() {
    let _g = serial();
    // One instance, ring of 2, responses held in the device: the third request finds the
    // ring full (a slot frees only when a response is delivered, after the release).
    let qat = backend("instances=1,ring=2");
    sim().hold(true);
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "p256");
    let op = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
    let msg = b"back-pressure";
    {
        let engine = engine(&qat, false);
        let p1 = engine.submit(&key, op, msg).expect("first fits");
        let p2 = engine.submit(&key, op, msg).expect("second fits");
        let retries = sim().counter("retries");
        match engine.submit(&key, op, msg) {
            Err(EngineError::Backend {
                backend: "qat",
                error: OpError::Busy(why),
            }) => assert!(why.contains("CPA_STATUS_RETRY"), "{why}"),
            other => panic!("expected busy back-pressure, got {other:?}"),
        }
        assert!(sim().counter("retries") > retries);
        assert_eq!(qat.stats().busy, 1);
        sim().hold(false);
        for p in [p1, p2] {
            let sig = p.wait().expect("queued requests finish");
            assert!(
                openssl_verify(
                    dir.path(),
                    &key,
                    SignatureScheme::EcdsaSecp256r1Sha256,
                    msg,
                    &sig
                )
                .0
            );
        }
        // Room again.
        engine.submit(&key, op, msg).unwrap().wait().unwrap();
        engine.shutdown();
    }
    // With fallback, the refused request runs in software instead.
    drop(qat);
    let qat = backend("instances=1,ring=2");
    sim().hold(true);
    {
        let engine = engine(&qat, true);
        let p1 = engine.submit(&key, op, msg).unwrap();
        let p2 = engine.submit(&key, op, msg).unwrap();
        let p3 = engine
            .submit(&key, op, msg)
            .expect("software takes the overflow");
        sim().hold(false);
        for p in [p1, p2, p3] {
            let sig = p.wait().unwrap();
            assert!(
                openssl_verify(
                    dir.path(),
                    &key,
                    SignatureScheme::EcdsaSecp256r1Sha256,
                    msg,
                    &sig
                )
                .0
            );
        }
        assert_eq!(engine.stats().fallbacks, 1);
        engine.shutdown();
    }
}

#[test]
fn many_threads_every_operation_ends_exactly_once() {
    let _g = serial();
    let qat = backend("instances=2,ring=8,workers=2");
    let engine = engine(&qat, false);
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let threads = 4;
    let per = 150;
    let results: Vec<Vec<(usize, Vec<u8>)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (engine, ec, rsa) = (engine.clone(), Arc::clone(&ec), Arc::clone(&rsa));
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut pending = Vec::new();
                    let mut i = 0;
                    while i < per || !pending.is_empty() {
                        if i < per {
                            let (key, scheme) = if i % 5 == 0 {
                                (&rsa, SignatureScheme::RsaPssRsaeSha256)
                            } else {
                                (&ec, SignatureScheme::EcdsaSecp256r1Sha256)
                            };
                            let msg = format!("thread {t} op {i}");
                            match engine.submit(key, Operation::Sign(scheme), msg.as_bytes()) {
                                Ok(p) => {
                                    pending.push((i, p));
                                    i += 1;
                                }
                                // Rings full: back-pressure; collect results, then retry.
                                Err(EngineError::Backend {
                                    error: OpError::Busy(_),
                                    ..
                                }) => {}
                                Err(e) => panic!("submit: {e}"),
                            }
                        }
                        let mut j = 0;
                        while j < pending.len() {
                            match pending[j].1.try_complete() {
                                Completion::NotReady => j += 1,
                                Completion::Ready(sig) => {
                                    let (idx, _) = pending.swap_remove(j);
                                    out.push((idx, sig));
                                }
                                Completion::Failed(e) => panic!("op failed: {e}"),
                            }
                        }
                        if i >= per || pending.len() >= 16 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, r) in results.iter().enumerate() {
        let mut idx: Vec<usize> = r.iter().map(|(i, _)| *i).collect();
        idx.sort_unstable();
        assert_eq!(
            idx,
            (0..per).collect::<Vec<_>>(),
            "thread {t}: each op exactly once"
        );
    }
    // A sample of each kind, verified by openssl.
    for (t, r) in results.iter().enumerate().take(2) {
        for (i, sig) in r.iter().filter(|(i, _)| *i < 10) {
            let (key, scheme) = if i % 5 == 0 {
                (&rsa, SignatureScheme::RsaPssRsaeSha256)
            } else {
                (&ec, SignatureScheme::EcdsaSecp256r1Sha256)
            };
            let msg = format!("thread {t} op {i}");
            let (ok, why) = openssl_verify(dir.path(), key, scheme, msg.as_bytes(), sig);
            assert!(ok, "thread {t} op {i}: {why}");
        }
    }
    let s = engine.stats();
    let total = (threads * per) as u64;
    assert_eq!(s.completed, total);
    assert_eq!(s.failed + s.cancelled, 0);
    assert_eq!(s.in_flight, 0);
    assert_eq!(qat.stats().completed, total);
    assert_eq!(qat.stats().outstanding, 0);
    engine.shutdown();
}

#[test]
fn cancelled_operations_free_pinned_memory() {
    let _g = serial();
    let base = sim().counter("mem_outstanding");
    // The device holds every response until released below: each operation is dropped
    // while it is certainly still in the device, however slow or busy this machine is.
    let qat = backend("instances=2,ring=256");
    sim().hold(true);
    let engine = engine(&qat, false);
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "p256");
    let op = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
    let allocs = sim().counter("mem_allocs");
    let mut submitted = 0u64;
    for _ in 0..400 {
        if let Ok(p) = engine.submit(&key, op, b"cancel me") {
            submitted += 1;
            drop(p); // cancel at once: the device still answers; memory must be freed then
        }
    }
    assert!(submitted > 0);
    // All still in the device, none answered.
    assert_eq!(sim().counter("in_ring"), submitted);
    assert_eq!(engine.stats().completed, 0);
    // The device answers now; the answers of cancelled operations are discarded and their
    // pinned memory freed.
    sim().hold(false);
    wait_until("all cancelled operations to end", || {
        engine.in_flight() == 0
    });
    wait_until("pinned memory back to baseline", || {
        sim().counter("mem_outstanding") == base
    });
    // Each one was dropped before the device could answer: all cancelled, none completed.
    let st = engine.stats();
    assert_eq!((st.cancelled, st.completed), (submitted, 0), "{st:?}");
    assert_eq!(sim().counter("mem_allocs") - allocs, submitted);
    assert_eq!(sim().counter("mem_bad_frees"), 0);

    // Shutdown with requests still in the device: they end with Shutdown and their
    // memory is reclaimed after the instances stop.
    let slow = {
        engine.shutdown();
        drop(engine);
        drop(qat);
        backend("instances=1,ring=64")
    };
    sim().hold(true);
    let engine2 = testutil::engine(&slow, false);
    let pending: Vec<_> = (0..20)
        .map(|_| engine2.submit(&key, op, b"never answered").unwrap())
        .collect();
    assert!(sim().counter("mem_outstanding") >= base + 20);
    engine2.shutdown();
    for p in pending {
        match p.wait() {
            Err(EngineError::Shutdown)
            | Err(EngineError::Backend {
                error: OpError::Shutdown,
                ..
            }) => {}
            other => panic!("expected shutdown, got {other:?}"),
        }
    }
    assert_eq!(slow.stats().reclaimed, 20);
    drop(engine2);
    drop(slow);
    assert_eq!(
        sim().counter("mem_outstanding"),
        base,
        "pinned memory leaked at shutdown"
    );
}

#[test]
fn section_name_is_configurable_and_a_wrong_one_is_a_clear_reason() {
    let _g = serial();
    sim().configure("section=QAT_PROXY");
    let err = QatBackend::new(&sim_config()).expect_err("section SSL is not configured");
    assert!(
        err.contains("icp_sal_userStart(\"SSL\")") && err.contains("CPA_STATUS_FAIL"),
        "{err}"
    );
    let cfg = QatConfig {
        section: "QAT_PROXY".into(),
        ..sim_config()
    };
    let qat = QatBackend::new(&cfg).expect("configured section starts");
    assert_eq!(qat.instances(), 2);
}

#[test]
fn config_backend_auto_and_qat_use_the_simulator() {
    let _g = serial();
    sim().configure("instances=3");
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "p384");
    let scheme = SignatureScheme::EcdsaSecp384r1Sha384;
    for choice in [BackendChoice::Auto, BackendChoice::Qat] {
        let cfg = ProviderConfig {
            backend: choice,
            qat_lib: Some(sim_path()),
            qat_max_instances: 2,
            ..ProviderConfig::default()
        };
        let engine = cfg.build_engine().expect("engine on qat-sim");
        assert_eq!(engine.backend_name(), "qat");
        let polls = sim().counter("polls");
        let sig = engine
            .submit(&key, Operation::Sign(scheme), b"auto")
            .unwrap()
            .wait()
            .unwrap();
        assert!(openssl_verify(dir.path(), &key, scheme, b"auto", &sig).0);
        assert!(
            sim().counter("polls") > polls,
            "completion came from polling"
        );
        assert_eq!(engine.stats().fallbacks, 0);
        engine.shutdown();
    }
}

#[test]
fn rsa_key_representation_type_1_and_type_2() {
    let _g = serial();
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "rsa2048");
    let scheme = SignatureScheme::RsaPkcs1Sha384;
    for crt in [true, false] {
        sim().configure("instances=1");
        let qat = Arc::new(
            QatBackend::new(&QatConfig {
                rsa_crt: crt,
                ..sim_config()
            })
            .unwrap(),
        );
        let engine = engine(&qat, false);
        let (rep1, rep2) = (sim().counter("rsa_rep1"), sim().counter("rsa_rep2"));
        let msg = format!("crt={crt}");
        let sig = engine
            .submit(&key, Operation::Sign(scheme), msg.as_bytes())
            .unwrap()
            .wait()
            .unwrap();
        let (ok, why) = openssl_verify(dir.path(), &key, scheme, msg.as_bytes(), &sig);
        assert!(ok, "crt={crt}: {why}");
        let used = if crt { "rsa_rep2" } else { "rsa_rep1" };
        let before = if crt { rep2 } else { rep1 };
        assert_eq!(sim().counter(used), before + 1, "crt={crt} must use {used}");
        engine.shutdown();
    }
}

#[test]
fn bench_reads_device_time_and_poll_thread_cpu() {
    use envoy_qat::bench;
    let _g = serial();
    // Not loaded yet under another path, and a library that is not the simulator: None.
    assert_eq!(
        bench::SimDevice::read(std::path::Path::new("/nonexistent/libqat.so.4")),
        None
    );
    let qat = backend("instances=1,latency_us=300");
    let engine = engine(&qat, false);
    // What the simulator's counters say, read through this test's own handle.
    let counters = || ["completions", "device_ns", "poll_wait_ns"].map(|n| sim().counter(n));
    assert!(
        engine.poll_thread_cpu().is_some(),
        "a polled backend has a poll thread"
    );
    let dir = tmp();
    let (_, key) = openssl_key(dir.path(), "p256");
    let c0 = counters();
    let d0 = bench::SimDevice::read(&sim_path()).expect("the simulator is loaded");
    let r = bench::run(
        &engine,
        &key,
        Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256),
        4,
        Duration::from_millis(200),
    )
    .expect("bench run");
    let d = bench::SimDevice::read(&sim_path())
        .expect("the simulator is loaded")
        .since(&d0);
    assert_eq!(r.errors, 0);
    assert!(r.ops > 0);
    assert_eq!(d.completions, r.ops, "one device response per operation");
    // bench reads each of the simulator's counters under its own name (the engine is idle
    // before and after the run, so the counters stand still while they are read).
    let c1 = counters();
    assert_eq!(
        [d.completions, d.device_ns, d.poll_wait_ns],
        [0, 1, 2].map(|i| c1[i] - c0[i]),
        "{d:?}"
    );
    assert!(r.poll_cpu.is_some_and(|c| c > Duration::ZERO));
    assert!(r.polls > 0);
    let line = bench::format_added_latency(&r, &d);
    assert!(line.contains("added over it: p50"), "{line}");
    assert!(
        line.starts_with(&format!("device {:.1?} mean;", d.mean_device())),
        "{line}"
    );
    engine.shutdown();
    assert_eq!(
        engine.poll_thread_cpu(),
        None,
        "the poll thread is gone after shutdown"
    );
}

#[test]
fn ecdsa_nonces_are_never_reused_on_qat() {
    // The QAT backend draws k itself (the device takes it as input): 2000 signatures of
    // the same message per curve must all have distinct r, and each must verify.
    let _g = serial();
    let qat = backend("instances=2,ring=256");
    let engine = engine(&qat, false);
    let dir = tmp();
    for (kind, scheme) in [
        ("p256", SignatureScheme::EcdsaSecp256r1Sha256),
        ("p384", SignatureScheme::EcdsaSecp384r1Sha384),
    ] {
        let (_, key) = openssl_key(dir.path(), kind);
        let msg = b"same message";
        let mut sigs: Vec<Vec<u8>> = Vec::new();
        // 400 at a time: within the two rings of 256, so none is refused as busy.
        for _ in 0..5 {
            let pending: Vec<_> = (0..400)
                .map(|_| {
                    engine
                        .submit(&key, Operation::Sign(scheme), msg)
                        .expect("submit")
                })
                .collect();
            sigs.extend(pending.into_iter().map(|p| p.wait().expect("signature")));
        }
        let mut rs: Vec<Vec<u8>> = sigs.iter().map(|der| common::ecdsa_r(der)).collect();
        rs.sort();
        rs.dedup();
        assert_eq!(
            rs.len(),
            sigs.len(),
            "{kind}: an ECDSA nonce was reused on QAT"
        );
        for sig in sigs.iter().step_by(500) {
            let (ok, why) = openssl_verify(dir.path(), &key, scheme, msg, sig);
            assert!(ok, "{kind}: {why}");
        }
    }
    assert_eq!(engine.stats().fallbacks, 0, "every signature came from QAT");
    engine.shutdown();
}
