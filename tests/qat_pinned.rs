//! Pinned-memory accounting of the QAT backend (`QatStats::pinned_*`), cross-checked
//! with tests/qat-sim's own count of live `qaeMemAllocNUMA` blocks: the backend's count
//! matches the simulator's while the device holds operations, cancelled operations keep
//! their block until the device answers (or shutdown reclaims it), and after a run with
//! faults and cancels every block is freed. Also: `serve` on the QAT backend prints the
//! counters in /stats and in its exit statistics.

#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_qat::backend::OpError;
use envoy_qat::engine::{Completion, Engine, EngineError, Pending};
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::*;

const EC: Operation = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
const RSA: Operation = Operation::Sign(SignatureScheme::RsaPssRsaeSha256);

/// The simulator's pinned-memory counters relative to `base`.
struct SimMem {
    outstanding: u64,
    allocs: u64,
    frees: u64,
}

impl SimMem {
    fn now() -> Self {
        SimMem {
            outstanding: sim().counter("mem_outstanding"),
            allocs: sim().counter("mem_allocs"),
            frees: sim().counter("mem_frees"),
        }
    }
    fn since(base: &SimMem) -> Self {
        let n = SimMem::now();
        SimMem {
            outstanding: n.outstanding - base.outstanding,
            allocs: n.allocs - base.allocs,
            frees: n.frees - base.frees,
        }
    }
}

fn wait_idle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "operations never ended: {}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Operations the device holds (a long simulated latency) are counted exactly as the
/// simulator counts them, cancelling them does not free device memory early, and shutdown
/// reclaims every block.
#[test]
fn held_blocks_match_the_simulator_and_shutdown_reclaims_them() {
    let _g = serial();
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let base = SimMem::now();
    // Nothing completes for a minute: every block stays with the device until shutdown.
    let qat = backend("instances=2,ring=64,latency_us=60000000");
    let engine = engine(&qat, true);
    let mut pending = Vec::new();
    for i in 0..16 {
        let (key, op) = if i % 3 == 0 { (&rsa, RSA) } else { (&ec, EC) };
        pending.push(engine.submit(key, op, b"held").expect("submit"));
    }
    let q = qat.stats();
    let s = SimMem::since(&base);
    assert_eq!(q.submitted, 16, "{q}");
    assert_eq!(q.pinned_allocs, 16, "{q}");
    assert_eq!(q.pinned_outstanding, 16, "{q}");
    assert_eq!(
        s.outstanding, 16,
        "simulator: {} live blocks",
        s.outstanding
    );
    assert_eq!(q.pinned_allocs, s.allocs, "backend and simulator disagree");
    assert!(q.pinned_outstanding_bytes > 0);
    assert_eq!(q.pinned_outstanding_bytes, q.pinned_alloc_bytes, "{q}");

    // Cancel half: the device still holds their buffers, so they stay counted.
    pending.truncate(8);
    let q = qat.stats();
    assert_eq!(q.pinned_outstanding, 16, "{q}");
    assert_eq!(SimMem::since(&base).outstanding, 16);

    // Shutdown ends the rest and frees every block the device never answered.
    engine.shutdown();
    for mut p in pending {
        assert!(matches!(
            p.try_complete(),
            Completion::Failed(EngineError::Shutdown)
        ));
    }
    let q = qat.stats();
    assert_eq!(q.reclaimed, 16, "{q}");
    assert_eq!(q.pinned_outstanding, 0, "{q}");
    assert_eq!(q.pinned_outstanding_bytes, 0, "{q}");
    let s = SimMem::since(&base);
    assert_eq!(s.outstanding, 0, "simulator still holds pinned blocks");
    assert_eq!((s.allocs, s.frees), (16, 16));
    drop(engine);
    drop(qat);
}

/// Run `n` operations (RSA and ECDSA) at most `depth` in flight, cancelling one in
/// `cancel_every` (half of them at once, half after a few completions went by). Returns
/// (results taken, operations dropped without taking their result).
fn run_with_cancels(
    engine: &Engine,
    ec: &Arc<PrivateKey>,
    rsa: &Arc<PrivateKey>,
    n: usize,
    depth: usize,
    cancel_every: usize,
) -> (usize, usize) {
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let mut parked: Vec<Pending> = Vec::new();
    let (mut ok, mut cancelled, mut i) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while i < n || !pending.is_empty() {
        assert!(Instant::now() < deadline, "run did not finish");
        while i < n && pending.len() < depth {
            let (key, op) = if i % 5 == 0 { (rsa, RSA) } else { (ec, EC) };
            match engine.submit(key, op, format!("op {i}").as_bytes()) {
                Ok(p) if i % cancel_every == cancel_every - 1 => {
                    cancelled += 1;
                    if i % 2 == 0 {
                        drop(p);
                    } else {
                        parked.push(p);
                    }
                    i += 1;
                }
                Ok(p) => {
                    pending.push((i, p));
                    i += 1;
                }
                Err(EngineError::Backend {
                    error: OpError::Busy(_),
                    ..
                }) => break,
                Err(e) => panic!("op {i}: {e}"),
            }
        }
        let before = pending.len();
        pending.retain_mut(|(i, p)| match p.try_complete() {
            Completion::NotReady => true,
            Completion::Ready(_) => {
                ok += 1;
                false
            }
            Completion::Failed(e) => panic!("op {i}: with fallback nothing fails: {e}"),
        });
        if pending.len() < before && parked.len() > 8 {
            parked.clear(); // late cancels: some of these are in the device right now
        }
        if pending.len() == before {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    drop(parked);
    (ok, cancelled)
}

/// After thousands of operations with every kind of fault and cancels, the backend's
/// pinned counters are back to zero before shutdown, and agree with the simulator's.
#[test]
fn pinned_memory_returns_to_zero_after_faults_and_cancels() {
    let _g = serial();
    let n: usize = std::env::var("QAT_PINNED_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let dir = tmp();
    let (_, ec) = openssl_key(dir.path(), "p256");
    let (_, rsa) = openssl_key(dir.path(), "rsa2048");
    let base = SimMem::now();
    let qat = backend(
        "instances=2,ring=32,seed=5,submit_fail=0.02,cb_fail=0.02,retry=0.2,slow=0.02,\
         slow_us=3000,restart_every_ms=150,restart_ms=15,latency_us=200",
    );
    let engine = engine(&qat, true);
    let (ok, cancelled) = run_with_cancels(&engine, &ec, &rsa, n, 48, 7);
    wait_idle(&engine);
    assert_eq!(ok + cancelled, n);

    let st = engine.stats();
    assert!(st.balanced(), "every operation ends exactly once: {st}");
    assert_eq!(st.failed, 0, "{st}");
    // A late cancel of an operation that had already finished counts as completed.
    assert!(
        st.cancelled > 0 && st.cancelled as usize <= cancelled,
        "{st}"
    );
    assert_eq!((st.completed + st.cancelled) as usize, n, "{st}");
    let q = qat.stats();
    let s = SimMem::since(&base);
    // Before shutdown: nothing reclaimed, every block freed by its callback.
    assert_eq!(q.reclaimed, 0, "{q}");
    assert_eq!(q.outstanding, 0, "{q}");
    assert_eq!(q.pinned_outstanding, 0, "pinned blocks leaked: {q}");
    assert_eq!(q.pinned_outstanding_bytes, 0, "pinned bytes leaked: {q}");
    assert_eq!(s.outstanding, 0, "simulator still holds pinned blocks");
    assert_eq!(
        q.pinned_allocs, s.allocs,
        "backend and simulator disagree: {q}"
    );
    assert_eq!(s.frees, s.allocs);
    // The run really went through the device and its faults.
    assert!(q.pinned_allocs >= q.submitted && q.submitted > 0, "{q}");
    assert!(
        q.callback_failures > 0 && q.submit_failures > 0 && q.retries > 0,
        "{q}"
    );
    assert!(st.fallbacks > 0, "{st}");
    assert_eq!(q.pinned_alloc_failures, 0, "{q}");

    engine.shutdown();
    drop(engine);
    let q = qat.stats();
    drop(qat);
    assert_eq!(q.pinned_outstanding, 0, "{q}");
    assert_eq!(SimMem::since(&base).outstanding, 0);
    assert_eq!(sim().counter("mem_bad_frees"), 0);
}

fn curl_stats(port: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-k", &format!("https://127.0.0.1:{port}/stats")])
        .output()
        .expect("curl (Debian package curl) must be installed");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(text: &str, line_prefix: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .unwrap_or_else(|| panic!("no line {line_prefix:?} in:\n{text}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
}

/// `serve --backend qat` on the simulator shows the QAT backend's counters, pinned
/// memory included, in /stats and in its exit statistics.
#[test]
fn serve_on_qat_sim_prints_backend_and_pinned_counters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_envoy-qat"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key-type",
            "p256",
            "--backend",
            "qat",
            "--requests",
            "4",
        ])
        .env("ENVOY_QAT_LIB", sim_path())
        .env("QAT_SIM_INSTANCES", "2")
        .env_remove("QAT_SIM_FAULTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("backend qat"), "{first}");
    let port = first
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no listening line: {first}"))
        .to_string();
    let mut live = String::new();
    for _ in 0..3 {
        live = curl_stats(&port);
    }
    // Each /stats request was a new handshake signed on the (simulated) device.
    assert!(field(&live, "backend qat:", "pinned_allocs") >= 2, "{live}");
    assert!(
        field(&live, "backend qat:", "pinned_alloc_bytes") > 0,
        "{live}"
    );
    assert_eq!(field(&live, "backend qat:", "pinned_alloc_failures"), 0);
    // The 4th request stops the server (its response may be cut short by the exit).
    let _ = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{port}/"),
        ])
        .output();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert_eq!(field(&rest, "backend qat:", "pinned_allocs"), 4, "{rest}");
    assert_eq!(field(&rest, "backend qat:", "submitted"), 4, "{rest}");
    assert_eq!(
        field(&rest, "backend qat:", "pinned_outstanding"),
        0,
        "{rest}"
    );
    assert_eq!(
        field(&rest, "backend qat:", "pinned_outstanding_bytes"),
        0,
        "{rest}"
    );
    assert_eq!(field(&rest, "provider:", "submitted"), 4, "{rest}");
    assert_eq!(field(&rest, "provider:", "fallbacks"), 0, "{rest}");
}
