//! The `envoy-qat` command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use envoy_qat::backend;
use envoy_qat::bench;
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::engine::{Engine, EngineConfig, PollPolicy};
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{Operation, SignatureScheme};

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   the operation failed (backend error, verification failure)
  2   usage error (bad flags)
  3   bad input (key, config, data) — the message names it and the fix
  4   a required backend or tool is unavailable";

/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: bad input.
const EXIT_INPUT: u8 = 3;
/// Exit code: unavailable backend or tool.
const EXIT_UNAVAILABLE: u8 = 4;

#[derive(Parser)]
#[command(
    name = "envoy-qat",
    version,
    about = "Intel QAT private-key provider and gzip compressor for Envoy and Istio",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. "info" or "envoy_qat=debug".
    #[arg(long, global = true, default_value = "warn", env = "ENVOY_QAT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sign a message (or raw-RSA-decrypt a ciphertext) with a private key; the output
    /// verifies with `openssl pkeyutl` / `openssl dgst`.
    #[command(after_help = EXIT_CODES)]
    Sign(SignArgs),
    /// Measure private-key operations through the engine next to `openssl speed`.
    #[command(after_help = EXIT_CODES)]
    Bench(BenchArgs),
    /// Compress to gzip (gzip-compatible flags: -1..-9, -c, -d, -k, -f).
    #[command(after_help = EXIT_CODES)]
    Compress(envoy_qat::compress::cli::CompressArgs),
    /// Decompress gzip (or zlib/raw deflate) with optional bomb limits.
    #[command(after_help = EXIT_CODES)]
    Decompress(envoy_qat::compress::cli::DecompressArgs),
    /// Measure compression (same as `bench compress`) next to gzip and pigz.
    #[command(after_help = EXIT_CODES)]
    BenchCompress(envoy_qat::compress::cli::BenchCompressArgs),
    /// Is this node or pod ready for QAT? Devices, drivers, IOMMU, /dev/vfio, memlock,
    /// IPC_LOCK, qatlib/QATzip, and optionally an Envoy config. Exit 0 ready, 1 not ready, 2 usage.
    Check(envoy_qat::check::CheckArgs),
    /// HTTPS server (h2 and HTTP/1.1, gzip) whose TLS private-key operations go through
    /// the provider (cpp/ssl over the engine); prints its stats on exit and on a signal.
    #[command(after_help = EXIT_CODES)]
    Serve(envoy_qat::serve::ServeArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Measure gzip compression per backend and level next to gzip and pigz.
    Compress(envoy_qat::compress::cli::BenchCompressArgs),
}

#[derive(Args)]
struct BackendArgs {
    /// Backend: auto (QAT if usable, else software), qat, soft (rsa/p256/p384 crates),
    /// noop (no crypto; engine overhead only).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Do not redo failed QAT operations in software.
    #[arg(long)]
    no_fallback: bool,
    /// Software worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Longest poll interval while operations are in flight, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    poll_delay_ms: f64,
    /// Poll policy for polled backends: adaptive (with few in flight, spin briefly after
    /// activity, then exponential back-off up to the poll delay; from 8 in flight until
    /// fewer than 4, sleep a quarter of the average latency between polls) or fixed
    /// (upstream's fixed sleep).
    #[arg(long, default_value = "adaptive")]
    poll_policy: String,
    /// Path of libqat.so.4 (or of a library exporting its API, such as the test
    /// simulator libqat_sim.so).
    #[arg(long, env = "ENVOY_QAT_LIB")]
    qat_lib: Option<PathBuf>,
    /// Directory holding libqat.so.4 and libusdm.so.0.
    #[arg(long, env = "ENVOY_QAT_LIB_DIR")]
    qat_lib_dir: Option<PathBuf>,
    /// Path of libusdm.so.0 (default: next to libqat, then the search path).
    #[arg(long, env = "ENVOY_QAT_USDM_LIB")]
    usdm_lib: Option<PathBuf>,
    /// qatlib configuration section passed to icp_sal_userStart.
    #[arg(long, default_value = "SSL", env = "ENVOY_QAT_SECTION")]
    qat_section: String,
    /// Most QAT crypto instances to use (0 = all).
    #[arg(long, default_value_t = 0)]
    qat_instances: usize,
    /// Keep ECDSA in software; offload RSA only (as upstream Envoy does).
    #[arg(long)]
    no_qat_ecdsa: bool,
    /// Per-operation deadline on QAT, in milliseconds: an operation the device has not
    /// answered by then fails over to software (or fails with --no-fallback) and its
    /// instance is re-probed (qatlib does not report device resets or lost responses).
    #[arg(long, default_value_t = 5000, env = "ENVOY_QAT_OP_TIMEOUT_MS")]
    qat_op_timeout_ms: u64,
}

#[derive(Args)]
struct SignArgs {
    /// Private key file (PEM or DER; PKCS#1, PKCS#8 or SEC1).
    #[arg(long)]
    key: PathBuf,
    /// Signature scheme (IANA name such as rsa_pss_rsae_sha256, or a code like 0x0804),
    /// or "decrypt" for a raw RSA decryption (no padding removed).
    #[arg(long)]
    scheme: String,
    /// Input file (default: standard input).
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// Output file (default: standard output).
    #[arg(long = "out")]
    output: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Key types to measure: rsa2048, rsa3072, rsa4096, p256, p384 (comma separated).
    #[arg(long, default_value = "rsa2048,p256", value_delimiter = ',')]
    key_types: Vec<String>,
    /// Schemes to measure (default: the one `openssl speed` measures for each key type).
    #[arg(long, value_delimiter = ',')]
    schemes: Vec<String>,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Skip the `openssl speed` baseline.
    #[arg(long)]
    no_openssl: bool,
    /// Skip the no-op backend engine-overhead lines.
    #[arg(long)]
    no_overhead: bool,
    /// Also measure the idle poll thread's CPU over this many seconds, next to a
    /// timer-driven poll loop (0 = skip).
    #[arg(long, default_value_t = 0.0)]
    idle_seconds: f64,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    what: Option<BenchWhat>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Take the log's copy of stderr now, before anything can capture fd 2.
    let _ = envoy_qat::stdio::log_writer();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(envoy_qat::stdio::log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let r = match cli.command {
        Cmd::Sign(a) => sign(a),
        Cmd::Bench(BenchArgs {
            what: Some(BenchWhat::Compress(c)),
            ..
        }) => envoy_qat::compress::cli::run_bench(c),
        Cmd::Bench(a) => bench_cmd(a),
        Cmd::Compress(a) => envoy_qat::compress::cli::run_compress(a),
        Cmd::Decompress(a) => envoy_qat::compress::cli::run_decompress(a),
        Cmd::BenchCompress(a) => envoy_qat::compress::cli::run_bench(a),
        Cmd::Check(a) => return ExitCode::from(envoy_qat::check::run(a).clamp(0, 255) as u8),
        Cmd::Serve(a) => envoy_qat::serve::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("envoy-qat: {msg}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<(), (u8, String)>;

fn make_engine(a: &BackendArgs) -> Result<Engine, (u8, String)> {
    let poll_policy: PollPolicy = a
        .poll_policy
        .parse()
        .map_err(|e| (2, format!("--poll-policy {e}")))?;
    if !(a.poll_delay_ms.is_finite() && a.poll_delay_ms > 0.0) {
        return Err((
            2,
            format!("--poll-delay-ms {}: must be > 0", a.poll_delay_ms),
        ));
    }
    let cfg = ProviderConfig {
        backend: BackendChoice::parse(&a.backend).map_err(|e| (2, format!("--backend: {e}")))?,
        poll_delay: Duration::from_secs_f64(a.poll_delay_ms / 1000.0),
        poll_policy,
        software_fallback: !a.no_fallback,
        soft_threads: a.threads,
        qat_lib: a.qat_lib.clone(),
        qat_lib_dir: a.qat_lib_dir.clone(),
        usdm_lib: a.usdm_lib.clone(),
        qat_section: a.qat_section.clone(),
        qat_max_instances: a.qat_instances,
        qat_ecdsa: !a.no_qat_ecdsa,
        qat_op_timeout: Duration::from_millis(a.qat_op_timeout_ms),
        ..ProviderConfig::default()
    };
    cfg.build_engine()
        .map_err(|e| (EXIT_UNAVAILABLE, e.to_string()))
}

fn sign(a: SignArgs) -> CmdResult {
    let key = Arc::new(PrivateKey::from_file(&a.key).map_err(|e| (EXIT_INPUT, e.to_string()))?);
    let op = if a.scheme.eq_ignore_ascii_case("decrypt") {
        Operation::Decrypt
    } else {
        let s = SignatureScheme::from_name(&a.scheme).ok_or_else(|| {
            let names: Vec<&str> = SignatureScheme::ALL.iter().map(|s| s.name()).collect();
            (
                2,
                format!(
                    "--scheme {}: unknown; expected decrypt or one of {}",
                    a.scheme,
                    names.join(", ")
                ),
            )
        })?;
        Operation::Sign(s)
    };
    let mut input = Vec::new();
    match &a.input {
        Some(p) => {
            input =
                std::fs::read(p).map_err(|e| (EXIT_INPUT, format!("--in {}: {e}", p.display())))?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| (EXIT_INPUT, format!("standard input: {e}")))?;
        }
    }
    let engine = make_engine(&a.backend)?;
    let out = engine
        .submit(&key, op, &input)
        .and_then(|p| p.wait())
        .map_err(|e| match e {
            envoy_qat::engine::EngineError::Scheme(_) => (EXIT_INPUT, e.to_string()),
            _ => (EXIT_FAILED, e.to_string()),
        })?;
    engine.shutdown();
    match &a.output {
        Some(p) => std::fs::write(p, &out)
            .map_err(|e| (EXIT_FAILED, format!("--out {}: {e}", p.display()))),
        None => std::io::stdout()
            .write_all(&out)
            .map_err(|e| (EXIT_FAILED, format!("standard output: {e}"))),
    }
}

fn bench_cmd(a: BenchArgs) -> CmdResult {
    let engine = make_engine(&a.backend)?;
    let workers = if a.backend.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.backend.threads
    };
    let dur = Duration::from_secs_f64(a.seconds.max(0.1));
    println!(
        "envoy-qat bench: backend={} concurrency={} seconds={} workers={}",
        a.backend.backend, a.concurrency, a.seconds, workers
    );
    for kt_name in &a.key_types {
        let kt = bench::parse_key_type(kt_name).ok_or_else(|| {
            (
                2,
                format!("--key-types {kt_name}: expected rsa2048, rsa3072, rsa4096, p256 or p384"),
            )
        })?;
        let key = Arc::new(PrivateKey::generate(kt).map_err(|e| (EXIT_FAILED, e.to_string()))?);
        let schemes: Vec<SignatureScheme> = if a.schemes.is_empty() {
            vec![bench::openssl_like_scheme(kt)]
        } else {
            let mut v = Vec::new();
            for s in &a.schemes {
                let s = SignatureScheme::from_name(s)
                    .ok_or_else(|| (2, format!("--schemes {s}: unknown scheme")))?;
                if s.fits(kt) {
                    v.push(s);
                }
            }
            v
        };
        let mut ours_like = None;
        let sim_lib = a
            .backend
            .qat_lib
            .clone()
            .or_else(|| std::env::var_os("ENVOY_QAT_LIB").map(std::path::PathBuf::from));
        let sim = || sim_lib.as_deref().and_then(bench::SimDevice::read);
        for s in schemes {
            let dev0 = sim();
            let (cpu0, sim_cpu0) = (bench::process_cpu(), bench::threads_cpu("qat-sim"));
            let r = bench::run(&engine, &key, Operation::Sign(s), a.concurrency, dur)
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
            let (cpu, sim_cpu) = (
                bench::process_cpu().saturating_sub(cpu0),
                bench::threads_cpu("qat-sim").saturating_sub(sim_cpu0),
            );
            println!("{}", bench::format_result(&r));
            if let Some(cpu) = bench::format_poll_cpu(&r) {
                println!("    {cpu}");
            }
            if let (Some(d0), Some(d1)) = (dev0, sim()) {
                println!(
                    "    qat-sim {}",
                    bench::format_added_latency(&r, &d1.since(&d0))
                );
                // The simulated device computes on this machine's cores; what is left is
                // the engine's (and the benchmark loop's) CPU per operation.
                let ops = r.ops.max(1) as u32;
                println!(
                    "    CPU per operation: engine and caller {:.1?}, simulated device {:.1?}",
                    cpu.saturating_sub(sim_cpu) / ops,
                    sim_cpu / ops
                );
            }
            if s == bench::openssl_like_scheme(kt) {
                ours_like = Some(r.ops_per_sec);
            }
        }
        if !a.no_openssl {
            let secs = a.seconds.ceil().max(1.0) as u64;
            match (bench::openssl_speed(kt, secs, workers), ours_like) {
                (Ok(o), Some(ours)) => {
                    println!(
                    "{:<34} openssl speed -multi {}: {:>10.0} sign/s   ratio ours/openssl = {:.2}",
                    o.algorithm, o.processes, o.sign_per_sec, ours / o.sign_per_sec
                )
                }
                (Ok(o), None) => println!(
                    "{:<34} openssl speed -multi {}: {:>10.0} sign/s",
                    o.algorithm, o.processes, o.sign_per_sec
                ),
                (Err(e), _) => eprintln!("envoy-qat: baseline skipped: {e}"),
            }
        }
    }
    if a.idle_seconds > 0.0 && engine.poll_thread_cpu().is_some() {
        // The same engine, now idle: what its poll thread costs with nothing in flight.
        let period = Duration::from_secs_f64(a.idle_seconds);
        std::thread::sleep(Duration::from_millis(50));
        let polls0 = engine.stats().polls;
        let cpu0 = engine.poll_thread_cpu().unwrap_or_default();
        std::thread::sleep(period);
        let cpu = engine
            .poll_thread_cpu()
            .unwrap_or_default()
            .saturating_sub(cpu0);
        println!(
            "idle {:.0} s after the runs: poll thread {} polls, {:.3} ms CPU",
            period.as_secs_f64(),
            engine.stats().polls - polls0,
            cpu.as_secs_f64() * 1e3
        );
    }
    engine.shutdown();
    if !a.no_overhead {
        let key = Arc::new(
            PrivateKey::generate(envoy_qat::key::KeyType::EcP256)
                .map_err(|e| (EXIT_FAILED, e.to_string()))?,
        );
        let op = Operation::Sign(SignatureScheme::EcdsaSecp256r1Sha256);
        for (backend, conc, what) in [
            (
                backend::noop::NoopBackend::new(),
                1,
                "engine round trip, no crypto",
            ),
            (
                backend::noop::NoopBackend::polled(),
                a.concurrency,
                "through the poll thread, no crypto",
            ),
        ] {
            let noop = Engine::new(Arc::new(backend), None, EngineConfig::default());
            let r =
                bench::run(&noop, &key, op, conc, dur).map_err(|e| (EXIT_FAILED, e.to_string()))?;
            println!("{}   ({what})", bench::format_result(&r));
        }
        if a.idle_seconds > 0.0 {
            let period = Duration::from_secs_f64(a.idle_seconds);
            let cfg = EngineConfig::default();
            let poll_delay = cfg.poll_delay;
            let engine = Engine::new(Arc::new(backend::noop::NoopBackend::polled()), None, cfg);
            // Wake the poll thread with a burst, then leave it idle.
            bench::run(&engine, &key, op, 16, Duration::from_millis(100))
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
            std::thread::sleep(Duration::from_millis(50));
            let ours = bench::idle_cost(&engine, period);
            let timer =
                bench::timer_poll_cost(&backend::noop::NoopBackend::polled(), poll_delay, period);
            println!(
                "idle {:.0} s: poll thread {} polls, {:.3} ms CPU; timer-driven poll loop every {:?}: {} polls, {:.3} ms CPU",
                period.as_secs_f64(),
                ours.polls,
                ours.cpu.as_secs_f64() * 1e3,
                poll_delay,
                timer.polls,
                timer.cpu.as_secs_f64() * 1e3,
            );
        }
    }
    Ok(())
}
