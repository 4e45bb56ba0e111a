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
    /// CPU time of the engine's poll thread during the run (None without one).
    pub poll_cpu: Option<Duration>,
    /// Polls made during the run.
    pub polls: u64,
    /// Wall-clock length of the run.
    pub elapsed: Duration,
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
    let stats0 = engine.stats();
    let before = stats0.latency;
    let cpu0 = engine.poll_thread_cpu();
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
    let elapsed = start.elapsed();
    let stats1 = engine.stats();
    let latency = stats1.latency.since(&before);
    let poll_cpu = engine
        .poll_thread_cpu()
        .map(|c| c.saturating_sub(cpu0.unwrap_or_default()));
    Ok(BenchResult {
        label: format!("{} {}", key.key_type(), op_label(op)),
        backend: engine.backend_name().to_string(),
        concurrency,
        ops,
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        latency,
        errors,
        poll_cpu,
        polls: stats1.polls - stats0.polls,
        elapsed,
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

/// The poll thread's CPU during a run, as text: share of one core and per operation.
pub fn format_poll_cpu(r: &BenchResult) -> Option<String> {
    let cpu = r.poll_cpu?;
    let per_op = if r.ops > 0 {
        cpu / r.ops as u32
    } else {
        Duration::ZERO
    };
    Some(format!(
        "poll thread {:.1}% of a core ({:.1?}/op, {} polls)",
        100.0 * cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9),
        per_op,
        r.polls
    ))
}

/// Counters of tests/qat-sim, read when the QAT library in use is the simulator: how
/// long the simulated device took, so a benchmark can report the latency the engine
/// adds on top of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDevice {
    /// Responses delivered.
    pub completions: u64,
    /// Sum of device time (submit until the response was ready), ns.
    pub device_ns: u64,
    /// Sum of the time ready responses waited for a poll, ns.
    pub poll_wait_ns: u64,
}

impl SimDevice {
    /// Read the counters of the simulator at `path` if it is loaded in this process and
    /// is the simulator (it exports `qat_sim_counter`); None otherwise (real qatlib).
    pub fn read(path: &std::path::Path) -> Option<SimDevice> {
        use libloading::os::unix::{Library, RTLD_LAZY};
        const RTLD_NOLOAD: libc::c_int = 4;
        // SAFETY: RTLD_NOLOAD only returns a handle to a library that is already loaded
        // (and so already initialised); it never loads anything.
        let lib = unsafe { Library::open(Some(path), RTLD_LAZY | RTLD_NOLOAD) }.ok()?;
        // SAFETY: the simulator exports `u64 qat_sim_counter(const char*)`.
        let counter: libloading::os::unix::Symbol<
            unsafe extern "C" fn(*const libc::c_char) -> u64,
        > = unsafe { lib.get(b"qat_sim_counter\0") }.ok()?;
        // SAFETY: NUL-terminated names.
        let get = |n: &std::ffi::CStr| unsafe { counter(n.as_ptr()) };
        Some(SimDevice {
            completions: get(c"completions"),
            device_ns: get(c"device_ns"),
            poll_wait_ns: get(c"poll_wait_ns"),
        })
    }

    /// The difference `self - earlier`.
    pub fn since(&self, earlier: &SimDevice) -> SimDevice {
        SimDevice {
            completions: self.completions.saturating_sub(earlier.completions),
            device_ns: self.device_ns.saturating_sub(earlier.device_ns),
            poll_wait_ns: self.poll_wait_ns.saturating_sub(earlier.poll_wait_ns),
        }
    }

    /// Mean device time per response.
    pub fn mean_device(&self) -> Duration {
        Duration::from_nanos(self.device_ns / self.completions.max(1))
    }

    /// Mean time a ready response waited for the poll thread.
    pub fn mean_poll_wait(&self) -> Duration {
        Duration::from_nanos(self.poll_wait_ns / self.completions.max(1))
    }
}

/// The latency the engine added over the simulated device, as text: the run's p50/p99
/// minus the mean device time, and the mean wait for a poll.
pub fn format_added_latency(r: &BenchResult, dev: &SimDevice) -> String {
    let device = dev.mean_device();
    format!(
        "device {:.1?} mean; added over it: p50 {:.1?} p99 {:.1?} (of which waiting for a poll {:.1?} mean)",
        device,
        r.latency.quantile(0.5).saturating_sub(device),
        r.latency.quantile(0.99).saturating_sub(device),
        dev.mean_poll_wait()
    )
}

/// CPU time (user + system) used so far by this process's threads whose name starts with
/// `prefix` (from /proc, in clock ticks: about 10 ms resolution).
pub fn threads_cpu(prefix: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let dir = t.path();
        let named = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with(prefix));
        if !named {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                ticks += get(11) + get(12);
            }
        }
    }
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU time used by this process's waited-for children so far.
pub fn children_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_CHILDREN)
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
