//! The engine contract (DESIGN.md): exactly-once completion under load, cancellation by
//! drop with no signal afterwards, shutdown with operations in flight, back-pressure,
//! per-operation fallback, and a poll thread that stops polling when idle.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::echo::{config, input, readable, rsa_key, Echo, Mode};
use envoy_qat::backend::soft::SoftBackend;
use envoy_qat::engine::{Completion, Engine, EngineError};
use envoy_qat::key::{KeyType, PrivateKey};
use envoy_qat::scheme::{Operation, SignatureScheme};

fn run_many(engine: &Engine, key: &Arc<PrivateKey>, threads: u64, per_thread: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut window: VecDeque<(u64, envoy_qat::engine::Pending)> = VecDeque::new();
                let check = |i: u64, mut p: envoy_qat::engine::Pending| {
                    let out = loop {
                        match p.try_complete() {
                            Completion::Ready(v) => break v,
                            Completion::NotReady => envoy_qat::engine::wait_readable(p.fd(), None),
                            Completion::Failed(e) => panic!("op {t}/{i} failed: {e}"),
                        }
                    };
                    let mut want = input(t, i);
                    want.reverse();
                    assert_eq!(out, want, "op {t}/{i} got another operation's result");
                    // Exactly once: the result cannot be taken again.
                    assert!(matches!(p.try_complete(), Completion::Failed(_)));
                };
                for i in 0..per_thread {
                    loop {
                        match engine.submit(key, Operation::Decrypt, &input(t, i)) {
                            Ok(p) => {
                                window.push_back((i, p));
                                break;
                            }
                            // Back-pressure: finish one of ours, or let other threads drain.
                            Err(EngineError::Busy { .. }) => match window.pop_front() {
                                Some((j, p)) => check(j, p),
                                None => std::thread::yield_now(),
                            },
                            Err(e) => panic!("submit: {e}"),
                        }
                    }
                    if window.len() >= 64 {
                        let (j, p) = window.pop_front().unwrap();
                        check(j, p);
                    }
                }
                for (j, p) in window {
                    check(j, p);
                }
            });
        }
    });
}

#[test]
fn hundred_thousand_operations_complete_exactly_once() {
    let key = rsa_key();
    for mode in [Mode::Polled, Mode::Inline] {
        let backend = Echo::new(mode);
        let engine = Engine::new(backend.clone(), None, config(128));
        run_many(&engine, &key, 4, 25_000);
        let st = engine.stats();
        assert_eq!(st.submitted, 100_000);
        assert_eq!(st.completed, 100_000);
        assert_eq!((st.failed, st.cancelled, st.in_flight), (0, 0, 0));
        assert!(st.balanced(), "{st:?}");
        assert_eq!(backend.completed.load(Ordering::Relaxed), 100_000);
        assert_eq!(st.latency.count, 100_000);
        if mode == Mode::Polled {
            assert!(st.polls > 0);
        }
    }
}

#[test]
fn real_software_results_through_many_threads() {
    // The same exactly-once check with real crypto: P-256 signatures verified by p256.
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let key = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
    let vk = {
        use p256::pkcs8::DecodePublicKey;
        p256::ecdsa::VerifyingKey::from_public_key_der(&key.public_key_der()).unwrap()
    };
    let engine = Engine::new(Arc::new(SoftBackend::new(2, 4096)), None, config(4096));
    let scheme = SignatureScheme::from_name("ecdsa_secp256r1_sha256").unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (engine, key, vk) = (&engine, &key, &vk);
            s.spawn(move || {
                let pend: Vec<_> = (0..500u32)
                    .map(|i| {
                        let msg = format!("{t}/{i}");
                        let p = engine
                            .submit(key, Operation::Sign(scheme), msg.as_bytes())
                            .unwrap();
                        (msg, p)
                    })
                    .collect();
                for (msg, p) in pend {
                    let der = p.wait().unwrap();
                    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                    let digest = <sha2::Sha256 as sha2::Digest>::digest(msg.as_bytes());
                    vk.verify_prehash(&digest, &sig)
                        .expect("signature is for this message");
                }
            });
        }
    });
    let st = engine.stats();
    assert_eq!((st.completed, st.in_flight), (2000, 0));
}

#[test]
fn shutdown_ends_every_operation_in_flight() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Hold);
    let engine = Engine::new(backend.clone(), None, config(10_000));
    let mut pending: Vec<_> = (0..1000)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(1, i))
                .unwrap()
        })
        .collect();
    engine.shutdown();
    for p in &mut pending {
        assert!(readable(p.fd()), "shutdown did not signal an operation");
        assert_eq!(p.try_complete(), Completion::Failed(EngineError::Shutdown));
    }
    assert_eq!(backend.release(), 0, "backend shutdown ended its jobs");
    let err = engine
        .submit(&key, Operation::Decrypt, &input(2, 0))
        .unwrap_err();
    assert_eq!(err, EngineError::Shutdown);
    assert!(err.to_string().contains("shut down"));
    let st = engine.stats();
    assert_eq!((st.failed, st.in_flight), (1000, 0));
    engine.shutdown(); // idempotent

    // With real work in flight on the software pool: every wait returns.
    let key = Arc::new(PrivateKey::generate(KeyType::Rsa { bits: 4096 }).unwrap());
    let engine = Engine::new(Arc::new(SoftBackend::new(2, 1024)), None, config(1024));
    let scheme = SignatureScheme::from_name("rsa_pkcs1_sha256").unwrap();
    let pending: Vec<_> = (0..200)
        .map(|_| engine.submit(&key, Operation::Sign(scheme), b"x").unwrap())
        .collect();
    engine.shutdown();
    let (mut ok, mut shut) = (0, 0);
    for p in pending {
        match p.wait() {
            Ok(_) => ok += 1,
            Err(EngineError::Shutdown) => shut += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok + shut, 200);
    assert!(shut > 0, "shutdown did not cut the queue short");
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn back_pressure_when_full() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Hold);
    let engine = Engine::new(backend.clone(), None, config(8));
    let mut pending: Vec<_> = (0..8)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(3, i))
                .unwrap()
        })
        .collect();
    let err = engine
        .submit(&key, Operation::Decrypt, &input(3, 8))
        .unwrap_err();
    assert_eq!(err, EngineError::Busy { max_in_flight: 8 });
    assert!(err.to_string().contains("raise max_in_flight"), "{err}");
    assert_eq!(engine.stats().rejected_busy, 1);
    // Submitting never blocked; freeing one slot admits one more.
    let job = backend.held.lock().unwrap().pop_front().unwrap();
    backend.answer(job);
    assert!(matches!(pending[0].try_complete(), Completion::Ready(_)));
    pending.push(
        engine
            .submit(&key, Operation::Decrypt, &input(3, 9))
            .unwrap(),
    );
    assert!(engine
        .submit(&key, Operation::Decrypt, &input(3, 10))
        .is_err());
    backend.release();
    let st = engine.stats();
    assert_eq!((st.completed, st.in_flight, st.rejected_busy), (9, 0, 2));
}

#[test]
fn refused_operations_fall_back_per_operation() {
    let key = rsa_key();
    let primary = Echo::new(Mode::Refuse);
    let fallback = Echo::new(Mode::Inline);
    let engine = Engine::new(primary, Some(fallback.clone()), config(64));
    for i in 0..50 {
        let out = engine
            .submit(&key, Operation::Decrypt, &input(4, i))
            .unwrap()
            .wait()
            .unwrap();
        let mut want = input(4, i);
        want.reverse();
        assert_eq!(out, want);
    }
    assert_eq!(fallback.completed.load(Ordering::Relaxed), 50);
    // Without a fallback the refusal is a clear error.
    let engine = Engine::new(Echo::new(Mode::Refuse), None, config(64));
    let err = engine
        .submit(&key, Operation::Decrypt, &input(4, 0))
        .and_then(|p| p.wait());
    let err = err.unwrap_err().to_string();
    assert!(err.contains("echo") && err.contains("refuses"), "{err}");
}

#[test]
fn poll_thread_stops_polling_when_idle() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Polled);
    let engine = Engine::new(backend, None, config(1024));
    run_many(&engine, &key, 2, 2_000);
    // Event-driven, no idle window to wait out: each turn of the poll thread's loop either
    // polls (`polls` + 1) or parks (`poll_sleeps` + 1), and a parked thread wakes at least
    // once a second (to notice a dropped engine) and turns the loop again. So once
    // `poll_sleeps` has moved on twice more after the work ended, the thread has been round
    // its loop with nothing in flight, and every such turn must have parked again, not
    // polled. A thread that polls while idle fails at its first poll.
    let done = engine.stats();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let b = loop {
        let now = engine.stats();
        assert_eq!(
            now.polls, done.polls,
            "poll thread polled with nothing in flight"
        );
        if now.poll_sleeps >= done.poll_sleeps + 2 {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "poll thread neither parked nor polled for 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // And it wakes for new work.
    let p = engine
        .submit(&key, Operation::Decrypt, &input(5, 0))
        .unwrap();
    p.wait().unwrap();
    assert!(engine.stats().polls > b.polls);
}
