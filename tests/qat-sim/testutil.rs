//! Helpers shared by the tests/qat_*.rs suites: finding and driving the simulator, keys
//! made by the openssl CLI, and verification with the openssl CLI.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use envoy_qat::backend::qat::{QatBackend, QatConfig};
use envoy_qat::backend::soft::SoftBackend;
use envoy_qat::backend::{Backend, OpError};
use envoy_qat::engine::{Completion, Engine, EngineConfig, EngineError, Pending};
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{HashAlg, Operation, Padding, SignatureScheme};

/// The simulator's state is per process: tests of one binary take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// Path of libqat_sim.so built by cargo next to this test binary (target/<profile>/deps
/// or target/<profile>).
pub fn sim_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    for dir in [
        deps.clone(),
        deps.parent().map(Path::to_path_buf).unwrap_or(deps),
    ] {
        let p = dir.join("libqat_sim.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libqat_sim.so not found next to {}: build it with `cargo build -p qat-sim` (cargo test builds it as a dev-dependency)", exe.display());
}

/// The simulator's test API, opened through the same file the backend loads.
pub struct Sim {
    lib: libloading::Library,
}

pub fn sim() -> &'static Sim {
    static S: OnceLock<Sim> = OnceLock::new();
    S.get_or_init(|| Sim {
        // SAFETY: the simulator has no initialisers with preconditions.
        lib: unsafe { libloading::Library::new(sim_path()) }.expect("open libqat_sim.so"),
    })
}

impl Sim {
    /// Configuration for the next icp_sal_userStart (comma-separated key=value).
    pub fn configure(&self, list: &str) {
        let c = CString::new(list).unwrap();
        // SAFETY: the simulator's exported `int qat_sim_configure(const char *)`.
        let f = unsafe {
            self.lib
                .get::<unsafe extern "C" fn(*const c_char) -> c_int>(b"qat_sim_configure\0")
        }
        .unwrap();
        // SAFETY: a valid NUL-terminated string.
        assert_eq!(unsafe { f(c.as_ptr()) }, 0, "qat-sim rejected {list}");
    }

    /// A counter (see qat_sim_counter in tests/qat-sim/src/lib.rs).
    pub fn counter(&self, name: &str) -> u64 {
        let c = CString::new(name).unwrap();
        // SAFETY: the simulator's exported `uint64_t qat_sim_counter(const char *)`.
        let f = unsafe {
            self.lib
                .get::<unsafe extern "C" fn(*const c_char) -> u64>(b"qat_sim_counter\0")
        }
        .unwrap();
        // SAFETY: a valid NUL-terminated string.
        let v = unsafe { f(c.as_ptr()) };
        assert_ne!(v, u64::MAX, "unknown qat-sim counter {name}");
        v
    }

    /// Hold every response in the device (`true`) until released (`false`); see
    /// qat_sim_hold in tests/qat-sim/src/lib.rs. The next backend start releases them.
    pub fn hold(&self, on: bool) {
        // SAFETY: the simulator's exported `void qat_sim_hold(int)`.
        let f = unsafe {
            self.lib
                .get::<unsafe extern "C" fn(c_int)>(b"qat_sim_hold\0")
        }
        .unwrap();
        // SAFETY: takes a plain integer.
        unsafe { f(c_int::from(on)) };
    }
}

/// QAT backend settings that load the simulator. The per-operation deadline is far above
/// the default 5 s: ci/test-sanitize-sim.sh runs these suites under AddressSanitizer with
/// the simulator's portable arithmetic, where hundreds of queued signatures take longer than
/// that, and only the tests of the deadline itself (which set their own) may trip it.
pub fn sim_config() -> QatConfig {
    QatConfig {
        qat_lib: Some(sim_path()),
        op_timeout: std::time::Duration::from_secs(120),
        ..QatConfig::default()
    }
}

/// A QAT backend on the simulator configured with `list`.
pub fn backend(list: &str) -> Arc<QatBackend> {
    sim().configure(list);
    Arc::new(QatBackend::new(&sim_config()).expect("QAT backend on qat-sim"))
}

/// An engine over `qat`, with the software backend as per-operation fallback or not.
pub fn engine(qat: &Arc<QatBackend>, fallback: bool) -> Engine {
    let fb: Option<Arc<dyn Backend>> = if fallback {
        Some(Arc::new(SoftBackend::new(2, 4096)))
    } else {
        None
    };
    Engine::new(
        Arc::clone(qat) as Arc<dyn Backend>,
        fb,
        EngineConfig::default(),
    )
}

/// A temporary directory for openssl files.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run openssl (install openssl)")
}

/// A key made by `openssl genpkey` (so openssl and we agree on the key file).
pub fn openssl_key(dir: &Path, kind: &str) -> (PathBuf, Arc<PrivateKey>) {
    let path = dir.join(format!("{kind}.pem"));
    let mut cmd = Command::new("openssl");
    cmd.arg("genpkey").arg("-out").arg(&path);
    match kind {
        "rsa2048" | "rsa3072" | "rsa4096" => {
            cmd.args(["-algorithm", "RSA", "-pkeyopt"])
                .arg(format!("rsa_keygen_bits:{}", &kind[3..]));
        }
        "p256" => {
            cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        "p384" => {
            cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
        }
        other => panic!("unknown key kind {other}"),
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "openssl genpkey {kind}: {:?}", out);
    let key = PrivateKey::from_file(&path).expect("parse openssl's key");
    (path, Arc::new(key))
}

fn dgst_name(h: HashAlg) -> &'static str {
    match h {
        HashAlg::Sha1 => "-sha1",
        HashAlg::Sha256 => "-sha256",
        HashAlg::Sha384 => "-sha384",
        HashAlg::Sha512 => "-sha512",
        HashAlg::Md5Sha1 => "-md5-sha1",
    }
}

/// Verify `sig` over `msg` with the openssl CLI and the key's public half (DER SPKI
/// from `PrivateKey::public_key_der`). Returns openssl's verdict and output.
pub fn openssl_verify(
    dir: &Path,
    key: &PrivateKey,
    scheme: SignatureScheme,
    msg: &[u8],
    sig: &[u8],
) -> (bool, String) {
    let pubf = dir.join("pub.der");
    let msgf = dir.join("msg.bin");
    let sigf = dir.join("sig.bin");
    std::fs::write(&pubf, key.public_key_der()).unwrap();
    std::fs::write(&msgf, msg).unwrap();
    std::fs::write(&sigf, sig).unwrap();
    if scheme.hash() == HashAlg::Md5Sha1 {
        // TLS 1.0/1.1's RSA signature: PKCS#1 v1.5 type 1 padding around MD5 || SHA-1,
        // without DigestInfo. Recover it with openssl and compare with openssl's digests.
        let out = run(Command::new("openssl")
            .args([
                "pkeyutl",
                "-verifyrecover",
                "-pubin",
                "-keyform",
                "DER",
                "-inkey",
            ])
            .arg(&pubf)
            .args(["-pkeyopt", "rsa_padding_mode:pkcs1", "-in"])
            .arg(&sigf));
        let mut want = Vec::new();
        for d in ["-md5", "-sha1"] {
            let o = run(Command::new("openssl")
                .args(["dgst", d, "-binary"])
                .arg(&msgf));
            want.extend_from_slice(&o.stdout);
        }
        let ok = out.status.success() && out.stdout == want;
        return (ok, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut cmd = Command::new("openssl");
    cmd.args([
        "dgst",
        dgst_name(scheme.hash()),
        "-keyform",
        "DER",
        "-verify",
    ])
    .arg(&pubf)
    .arg("-signature")
    .arg(&sigf);
    if scheme.padding() == Padding::Pss {
        cmd.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    cmd.arg(&msgf);
    let out = run(&mut cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("Verified OK"), text)
}

/// `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:none` of `plain` (modulus length).
pub fn openssl_raw_encrypt(dir: &Path, key_pem: &Path, plain: &[u8]) -> Vec<u8> {
    let inf = dir.join("plain.bin");
    std::fs::write(&inf, plain).unwrap();
    let out = run(Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-inkey"])
        .arg(key_pem)
        .args(["-pkeyopt", "rsa_padding_mode:none", "-in"])
        .arg(&inf));
    assert!(out.status.success(), "openssl encrypt: {out:?}");
    out.stdout
}

/// `openssl pkeyutl -decrypt -pkeyopt rsa_padding_mode:none` of `c`.
pub fn openssl_raw_decrypt(dir: &Path, key_pem: &Path, c: &[u8]) -> Vec<u8> {
    let inf = dir.join("cipher.bin");
    std::fs::write(&inf, c).unwrap();
    let out = run(Command::new("openssl")
        .args(["pkeyutl", "-decrypt", "-inkey"])
        .arg(key_pem)
        .args(["-pkeyopt", "rsa_padding_mode:none", "-in"])
        .arg(&inf));
    assert!(out.status.success(), "openssl decrypt: {out:?}");
    out.stdout
}

/// The simulator's pinned-memory counters relative to `base`.
pub struct SimMem {
    pub outstanding: u64,
    pub allocs: u64,
    pub frees: u64,
}

impl SimMem {
    pub fn now() -> Self {
        SimMem {
            outstanding: sim().counter("mem_outstanding"),
            allocs: sim().counter("mem_allocs"),
            frees: sim().counter("mem_frees"),
        }
    }
    pub fn since(base: &SimMem) -> Self {
        let n = SimMem::now();
        SimMem {
            outstanding: n.outstanding - base.outstanding,
            allocs: n.allocs - base.allocs,
            frees: n.frees - base.frees,
        }
    }
}

/// Wait (up to 2 minutes) until `engine` has nothing in flight.
pub fn wait_idle(engine: &Engine) {
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

/// Run `n` operations (ECDSA, and one in five RSA if `rsa` is given) at most `depth` in flight, cancelling one in
/// `cancel_every` (half of them at once, half after a few completions went by). Returns
/// (results taken, operations dropped without taking their result).
pub fn run_with_cancels(
    engine: &Engine,
    ec: &Arc<PrivateKey>,
    rsa: Option<&Arc<PrivateKey>>,
    n: usize,
    depth: usize,
    cancel_every: usize,
) -> (usize, usize) {
    const EC: Operation = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
    const RSA: Operation = Operation::Sign(SignatureScheme::RsaPssRsaeSha256);
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let mut parked: Vec<Pending> = Vec::new();
    let (mut ok, mut cancelled, mut i) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while i < n || !pending.is_empty() {
        assert!(Instant::now() < deadline, "run did not finish");
        while i < n && pending.len() < depth {
            let (key, op) = match rsa {
                Some(rsa) if i % 5 == 0 => (rsa, RSA),
                _ => (ec, EC),
            };
            match engine.submit(key, op, format!("op {i}").as_bytes()) {
                Ok(p) if i % cancel_every == cancel_every - 1 => {
                    // Alternate: dropped right after submit, or parked and dropped
                    // later while others complete.
                    if cancelled % 2 == 0 {
                        drop(p);
                    } else {
                        parked.push(p);
                    }
                    cancelled += 1;
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
