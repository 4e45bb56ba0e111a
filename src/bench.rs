//! `envoy-qat bench`: private-key operations per second and latency through the engine,
//! per scheme and backend, next to `openssl speed` for the same algorithms run in the
//! same invocation.

use std::os::fd::RawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Completion, Engine, EngineError, HistogramSnapshot, Pending};
use crate::key::{KeyType, PrivateKey};
use crate::scheme::{Operation, SignatureScheme};

/// One measurement.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// What was measured, e.g. "RSA-2048 rsa_pkcs1_sha256".
    pub label: String,
    /// Backend name.
    pub backend: String,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Operations completed.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency distribution over the run.
    pub latency: HistogramSnapshot,
    /// Operations that failed.
    pub errors: u64,
}

/// Run `op` on `key` through `engine` for `duration` with `concurrency` operations in
/// flight, from the calling thread (as an event loop would: it waits on the fds).
pub fn run(
    engine: &Engine,
    key: &Arc<PrivateKey>,
    op: Operation,
    concurrency: usize,
    duration: Duration,
) -> Result<BenchResult, EngineError> {
    let msg = [0x5au8; 100];
    let input: Vec<u8> = match op {
        Operation::Decrypt => {
            // Any value below the modulus works for a raw decrypt: 0x00 01 ...
            let k = key.key_type().raw_output_len();
            let mut v = vec![0x01u8; k];
            v[0] = 0;
            v
        }
        Operation::Sign(_) => msg.to_vec(),
    };
    let concurrency = concurrency.max(1);
    let before = engine.stats().latency;
    let start = Instant::now();
    let deadline = start + duration;
    let mut pending: Vec<Pending> = Vec::with_capacity(concurrency);
    let mut ops = 0u64;
    let mut errors = 0u64;
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(concurrency);
    loop {
        let now = Instant::now();
        let filling = now < deadline;
        while filling && pending.len() < concurrency {
            match engine.submit(key, op, &input) {
                Ok(p) => pending.push(p),
                Err(EngineError::Busy { .. }) | Err(EngineError::Backend { .. })
                    if !pending.is_empty() =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        if pending.is_empty() {
            break;
        }
        let mut i = 0;
        let mut progressed = false;
        while i < pending.len() {
            match pending[i].try_complete() {
                Completion::NotReady => i += 1,
                Completion::Ready(_) => {
                    ops += 1;
                    progressed = true;
                    pending.swap_remove(i);
                }
                Completion::Failed(_) => {
                    errors += 1;
                    progressed = true;
                    pending.swap_remove(i);
                }
            }
        }
        if !progressed && !pending.is_empty() {
            pfds.clear();
            pfds.extend(pending.iter().map(|p| libc::pollfd {
                fd: p.fd() as RawFd,
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `pfds` is a valid, initialised array of pollfd of the given length.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let latency = engine.stats().latency.since(&before);
    Ok(BenchResult {
        label: format!("{} {}", key.key_type(), op_label(op)),
        backend: engine.backend_name().to_string(),
        concurrency,
        ops,
        ops_per_sec: ops as f64 / elapsed,
        latency,
        errors,
    })
}

fn op_label(op: Operation) -> String {
    match op {
        Operation::Sign(s) => s.name().to_string(),
        Operation::Decrypt => "rsa_decrypt_raw".into(),
    }
}

/// `openssl speed` figure for the algorithm behind a key type: private-key ops/s.
#[derive(Clone, Debug)]
pub struct OpensslFigure {
    /// The `openssl speed` algorithm name.
    pub algorithm: String,
    /// Processes (`-multi`).
    pub processes: usize,
    /// Signs per second (all processes together).
    pub sign_per_sec: f64,
}

/// The `openssl speed` algorithm for a key type.
pub fn openssl_algorithm(kt: KeyType) -> String {
    match kt {
        KeyType::Rsa { bits } => format!("rsa{bits}"),
        KeyType::EcP256 => "ecdsap256".into(),
        KeyType::EcP384 => "ecdsap384".into(),
    }
}

/// Run `openssl speed -mr` for `kt`'s algorithm. Returns None (with a reason) if
/// openssl is missing or its output cannot be read.
pub fn openssl_speed(kt: KeyType, seconds: u64, processes: usize) -> Result<OpensslFigure, String> {
    let alg = openssl_algorithm(kt);
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-mr", "-seconds", &seconds.max(1).to_string()]);
    if processes > 1 {
        cmd.args(["-multi", &processes.to_string()]);
    }
    cmd.arg(&alg);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run openssl speed: {e}; install openssl"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines "+F2:idx:bits:sign/s:verify/s" (RSA) and "+F4:..." (ECDSA); with -multi the
    // summed line is the last one not prefixed with "Got:".
    let prefix = if kt.is_rsa() { "+F2:" } else { "+F4:" };
    let line = text
        .lines()
        .rfind(|l| l.starts_with(prefix))
        .ok_or_else(|| format!("openssl speed {alg}: no {prefix} line in its output"))?;
    let fields: Vec<&str> = line.split(':').collect();
    let sign = fields
        .get(3)
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("openssl speed {alg}: cannot read \"{line}\""))?;
    Ok(OpensslFigure {
        algorithm: alg,
        processes: processes.max(1),
        sign_per_sec: sign,
    })
}

/// The scheme `openssl speed` measures for a key type (for a like-for-like ratio).
pub fn openssl_like_scheme(kt: KeyType) -> SignatureScheme {
    match kt {
        KeyType::Rsa { .. } => SignatureScheme::RsaPkcs1Sha256,
        KeyType::EcP256 => SignatureScheme::EcdsaSecp256r1Sha256,
        KeyType::EcP384 => SignatureScheme::EcdsaSecp384r1Sha384,
    }
}

/// Parse "rsa2048", "rsa3072", "rsa4096", "p256", "p384".
pub fn parse_key_type(s: &str) -> Option<KeyType> {
    match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
        "rsa2048" | "rsa" => Some(KeyType::Rsa { bits: 2048 }),
        "rsa3072" => Some(KeyType::Rsa { bits: 3072 }),
        "rsa4096" => Some(KeyType::Rsa { bits: 4096 }),
        "p256" | "ecp256" | "ecdsap256" | "ec" => Some(KeyType::EcP256),
        "p384" | "ecp384" | "ecdsap384" => Some(KeyType::EcP384),
        _ => None,
    }
}

/// Print a result line.
pub fn format_result(r: &BenchResult) -> String {
    format!(
        "{:<34} {:<5} c={:<4} {:>10.0} ops/s  p50 {:>9.1?}  p99 {:>9.1?}  errors {}",
        r.label,
        r.backend,
        r.concurrency,
        r.ops_per_sec,
        r.latency.quantile(0.5),
        r.latency.quantile(0.99),
        r.errors
    )
}

/// CPU time used by the calling process (all threads) so far.
pub fn process_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct we pass; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What an idle period cost.
#[derive(Clone, Debug)]
pub struct IdleCost {
    /// CPU time spent during the period.
    pub cpu: Duration,
    /// Polls (wake-ups) during the period.
    pub polls: u64,
}

/// CPU time and polls of `engine`'s poll thread over `period` with nothing in flight
/// (the process is otherwise idle: the caller sleeps).
pub fn idle_cost(engine: &Engine, period: Duration) -> IdleCost {
    let polls0 = engine.stats().polls;
    let cpu0 = process_cpu();
    std::thread::sleep(period);
    IdleCost {
        cpu: process_cpu().saturating_sub(cpu0),
        polls: engine.stats().polls - polls0,
    }
}

/// The baseline for [`idle_cost`]: a timer-driven poll loop (sleep `poll_delay`, poll,
/// repeat, whether or not anything is in flight), measured over the same period.
pub fn timer_poll_cost(
    backend: &dyn crate::backend::Backend,
    poll_delay: Duration,
    period: Duration,
) -> IdleCost {
    std::thread::scope(|s| {
        s.spawn(|| {
            let cpu0 = rusage_cpu(libc::RUSAGE_THREAD);
            let end = Instant::now() + period;
            let mut polls = 0u64;
            while Instant::now() < end {
                std::thread::sleep(poll_delay);
                backend.poll();
                polls += 1;
            }
            IdleCost {
                cpu: rusage_cpu(libc::RUSAGE_THREAD).saturating_sub(cpu0),
                polls,
            }
        })
        .join()
        .expect("timer poll thread")
    })
}
