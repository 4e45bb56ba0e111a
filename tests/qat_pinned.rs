//! Pinned-memory accounting of the QAT backend (`QatStats::pinned_*`), cross-checked
//! with tests/qat-sim's own count of live `qaeMemAllocNUMA` blocks: the backend's count
//! matches the simulator's while the device holds operations, cancelled operations keep
//! their block until the device answers (or shutdown reclaims it), and after a run with
//! faults and cancels every block is freed. Also: `serve` on the QAT backend prints the
//! counters in /stats and in its exit statistics.

#[path = "qat-sim/testutil.rs"]
mod testutil;

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use common::serve::Serve;
use envoy_qat::engine::{Completion, EngineError};
use envoy_qat::scheme::{Operation, SignatureScheme};
use testutil::*;

const EC: Operation = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
const RSA: Operation = Operation::Sign(SignatureScheme::RsaPssRsaeSha256);

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
    let (ok, cancelled) = run_with_cancels(&engine, &ec, Some(&rsa), n, 48, 7);
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

/// Send the request that reaches serve's `--requests` limit (its response may be cut
/// short by the exit); serve must then exit successfully. Returns its exit statistics.
fn last_request(serve: Serve, port: &str) -> String {
    let _ = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{port}/"),
        ])
        .output();
    let (status, rest) = serve.finish();
    assert!(status.success(), "{rest}");
    rest
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
    let sim_lib = sim_path();
    let serve = Serve::start(
        &["--key-type", "p256", "--backend", "qat", "--requests", "4"],
        &[
            ("ENVOY_QAT_LIB", sim_lib.as_os_str()),
            ("QAT_SIM_INSTANCES", OsStr::new("2")),
        ],
        &["QAT_SIM_FAULTS"],
    );
    assert!(serve.first.contains("backend qat"), "{}", serve.first);
    let port = serve.port.clone();
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
    // The 4th request stops the server.
    let rest = last_request(serve, &port);
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

/// A client that gives up while its handshake's signature is in flight on the (simulated)
/// device: serve notices the closed socket during the wait and drops the connection, which
/// cancels the operation, instead of keeping the device busy for a client that is gone.
#[test]
fn serve_cancels_the_operation_of_a_client_that_closes_mid_handshake() {
    let sim_lib = sim_path();
    // A slow device: the operation is still in flight when the client goes.
    let serve = Serve::start(
        &["--key-type", "p256", "--backend", "qat", "--requests", "2"],
        &[
            ("ENVOY_QAT_LIB", sim_lib.as_os_str()),
            ("QAT_SIM_LATENCY_US", OsStr::new("4000000")),
        ],
        &["QAT_SIM_FAULTS"],
    );
    let port = serve.port.clone();
    // The client: a real ClientHello from openssl s_client, relayed by this test, which
    // then closes the connection. Relaying (rather than killing s_client after it printed
    // the ClientHello) guarantees the ClientHello is in serve's socket before the close:
    // s_client reports a message when it enters its write buffer, before the flush, and
    // on a busy machine a kill can land in between.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{relay_port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let hello = read_client_hello(&relay);
    let mut to_serve = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    std::io::Write::write_all(&mut to_serve, &hello).unwrap();
    // Gone mid-handshake, far inside the device latency.
    drop(to_serve);
    client.kill().unwrap();
    client.wait().unwrap();
    // The next handshake (this /stats request) waits for the device too.
    let live = curl_stats(&port);
    assert_eq!(field(&live, "provider:", "cancelled"), 1, "{live}");
    assert_eq!(field(&live, "server:", "handshake_failures"), 1, "{live}");
    let rest = last_request(serve, &port);
    assert_eq!(field(&rest, "provider:", "cancelled"), 1, "{rest}");
    assert_eq!(
        field(&rest, "backend qat:", "pinned_outstanding"),
        0,
        "{rest}"
    );
}

/// Accept one connection on `relay` (60 s at most) and read the TLS records that carry
/// its first handshake message, which must be a ClientHello; returns them as read.
fn read_client_hello(relay: &std::net::TcpListener) -> Vec<u8> {
    use std::io::Read as _;
    use std::time::{Duration, Instant};
    relay.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match relay.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "openssl s_client did not connect"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Records until the ClientHello message (4-byte header with a 24-bit length) is whole:
    // it may span more than one record.
    let whole = |m: &[u8]| {
        m.len() >= 4
            && m.len() >= 4 + (usize::from(m[1]) << 16 | usize::from(m[2]) << 8 | usize::from(m[3]))
    };
    let mut records = Vec::new();
    let mut message = Vec::new();
    while !whole(&message) {
        let mut header = [0u8; 5];
        conn.read_exact(&mut header).expect("a TLS record header");
        assert_eq!(header[0], 22, "not a TLS handshake record: {header:?}");
        let mut body = vec![0u8; u16::from_be_bytes([header[3], header[4]]) as usize];
        conn.read_exact(&mut body).expect("a whole TLS record");
        records.extend_from_slice(&header);
        records.extend_from_slice(&body);
        message.extend_from_slice(&body);
        assert_eq!(
            message[0], 1,
            "the first handshake message is not a ClientHello"
        );
    }
    records
}
