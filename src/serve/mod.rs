//! `envoy-qat serve`: an HTTPS server (HTTP/1.1 and HTTP/2 via ALPN) whose TLS runs
//! through cpp/ssl, with private-key operations through our provider (or, with
//! `--key-mode boringssl`, through BoringSSL's own key as Envoy's `fallback` does), and
//! whose responses are gzip-compressed. It exercises the code paths Envoy's shims use.

mod http;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bridge::{QatEngine, QatKey};
use crate::config::{BackendChoice, ProviderConfig};
use crate::engine::stats::Histogram;
use crate::key::{KeyType, PrivateKey};

pub use http::gzip_body;
use tls::{ServerContext, TlsStream};

/// Exit code: the server failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code: bad input (key, certificate).
const EXIT_INPUT: u8 = 3;
/// Exit code: backend unavailable.
const EXIT_UNAVAILABLE: u8 = 4;

/// `envoy-qat serve` flags.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Private key (PEM; PKCS#1, PKCS#8 or SEC1). Default: a generated key (--key-type).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Certificate chain (PEM, leaf first). Default: self-signed for the key.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Type of the generated key when --key is not given: rsa2048, rsa3072, rsa4096, p256, p384.
    #[arg(long, default_value = "rsa2048")]
    pub key_type: String,
    /// Write the certificate in use (PEM) to this file, e.g. for clients to verify it.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// Who performs private-key operations: "provider" (our engine through the
    /// SSL_PRIVATE_KEY_METHOD in cpp/ssl) or "boringssl" (BoringSSL's own key, as Envoy
    /// does with `fallback: true` when the provider is unavailable).
    #[arg(long, default_value = "provider")]
    pub key_mode: String,
    /// Provider backend: auto (QAT if usable, else software), qat, soft, noop.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Longest poll interval while operations are in flight, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub poll_delay_ms: f64,
    /// Poll policy for the QAT backend: adaptive (spin or batch, see the engine's poll
    /// module) or fixed (sleep the poll delay between polls, as upstream Envoy does).
    #[arg(long, default_value = "adaptive")]
    pub poll_policy: String,
    /// Software backend worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    pub soft_threads: usize,
    /// Per-operation deadline on QAT, in milliseconds (see `bench --help`).
    #[arg(long, default_value_t = 5000, env = "ENVOY_QAT_OP_TIMEOUT_MS")]
    pub qat_op_timeout_ms: u64,
    /// Event-loop threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Size of the (uncompressed) response body in bytes.
    #[arg(long, default_value_t = 4096)]
    pub response_size: usize,
    /// Exit after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Exit after serving this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
}

type RunResult = Result<(), (u8, String)>;

/// Server-wide counters.
#[derive(Default)]
pub(crate) struct ServerStats {
    pub(crate) handshakes: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) handshakes_waited_for_key: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) gzip_responses: AtomicU64,
    pub(crate) handshake_latency: Histogram,
}

fn parse_key_type(s: &str) -> Option<KeyType> {
    crate::bench::parse_key_type(s)
}

fn read_file(flag: &str, p: &PathBuf) -> Result<Vec<u8>, (u8, String)> {
    std::fs::read(p).map_err(|e| (EXIT_INPUT, format!("--{flag} {}: {e}", p.display())))
}

/// Run the server until a limit is reached or a signal arrives; print statistics.
pub fn run(a: ServeArgs) -> RunResult {
    let provider_mode = match a.key_mode.as_str() {
        "provider" => true,
        "boringssl" => false,
        other => {
            return Err((
                EXIT_USAGE,
                format!("--key-mode {other}: expected provider or boringssl"),
            ))
        }
    };
    if !(a.poll_delay_ms.is_finite() && a.poll_delay_ms > 0.0) {
        return Err((
            EXIT_USAGE,
            format!("--poll-delay-ms {}: must be > 0", a.poll_delay_ms),
        ));
    }
    let poll_policy = a
        .poll_policy
        .parse()
        .map_err(|e| (EXIT_USAGE, format!("--poll-policy {e}")))?;
    if a.cert.is_some() && a.key.is_none() {
        return Err((
            EXIT_USAGE,
            "--cert needs --key: the certificate's private key".into(),
        ));
    }
    // The key: from a file, or generated.
    let (key, key_pem) = match &a.key {
        Some(p) => {
            let bytes = read_file("key", p)?;
            let key = PrivateKey::from_bytes(&bytes, &p.display().to_string())
                .map_err(|e| (EXIT_INPUT, e.to_string()))?;
            let pem = key
                .to_pkcs8_pem()
                .map_err(|e| (EXIT_INPUT, e.to_string()))?;
            (key, pem)
        }
        None => {
            let kt = parse_key_type(&a.key_type).ok_or_else(|| {
                (
                    EXIT_USAGE,
                    format!(
                        "--key-type {}: expected rsa2048, rsa3072, rsa4096, p256 or p384",
                        a.key_type
                    ),
                )
            })?;
            let key = PrivateKey::generate(kt).map_err(|e| (EXIT_FAILED, e.to_string()))?;
            let pem = key
                .to_pkcs8_pem()
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
            (key, pem)
        }
    };
    let cert_pem = match &a.cert {
        Some(p) => read_file("cert", p)?,
        None => tls::self_signed_cert(key_pem.as_bytes(), "localhost", 30)
            .map_err(|e| (EXIT_FAILED, e))?
            .into_bytes(),
    };
    if let Some(p) = &a.cert_out {
        std::fs::write(p, &cert_pem)
            .map_err(|e| (EXIT_FAILED, format!("--cert-out {}: {e}", p.display())))?;
    }
    let key_type = key.key_type();

    let cfg = ProviderConfig {
        backend: BackendChoice::parse(&a.backend)
            .map_err(|e| (EXIT_USAGE, format!("--backend: {e}")))?,
        poll_delay: Duration::from_secs_f64(a.poll_delay_ms / 1000.0),
        poll_policy,
        soft_threads: a.soft_threads,
        qat_op_timeout: Duration::from_millis(a.qat_op_timeout_ms),
        ..ProviderConfig::default()
    };
    let engine = Arc::new(QatEngine::from_engine(
        cfg.build_engine()
            .map_err(|e| (EXIT_UNAVAILABLE, e.to_string()))?,
    ));
    let qkey = QatKey::new(Arc::new(key));
    let ctx = if provider_mode {
        ServerContext::with_provider(&cert_pem, &engine, &qkey)
    } else {
        ServerContext::with_key(&cert_pem, key_pem.as_bytes())
    }
    .map_err(|e| (EXIT_INPUT, e))?;
    let ctx = Arc::new(ctx);

    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| (EXIT_FAILED, format!("cannot start the event loop: {e}")))?;
    let stats = Arc::new(ServerStats::default());
    let body = http::make_body(a.response_size);
    let started = Instant::now();
    let mode = if provider_mode {
        format!("provider, backend {}", engine.engine().backend_name())
    } else {
        "boringssl (key held by BoringSSL)".to_string()
    };
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| (EXIT_FAILED, format!("--listen {}: {e}", a.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| (EXIT_FAILED, e.to_string()))?;
        println!("envoy-qat serve: listening on https://{local}/ (key {key_type}, {mode}; h2 and http/1.1; gzip)");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let done = Arc::new(tokio::sync::Notify::new());
        let limits = http::Limits {
            requests: a.requests,
            done: done.clone(),
        };
        let shared = Arc::new(http::Shared {
            body,
            stats: stats.clone(),
            limits,
            engine: engine.clone(),
            provider_mode,
        });
        let accept = async {
            loop {
                let (sock, _peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let ctx = ctx.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = sock.set_nodelay(true);
                    let sock = match sock.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take the socket");
                            return;
                        }
                    };
                    let t0 = Instant::now();
                    let mut tls = match TlsStream::new(ctx, sock) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start TLS");
                            return;
                        }
                    };
                    match tls.handshake().await {
                        Ok(waits) => {
                            shared.stats.handshake_latency.record(t0.elapsed());
                            shared.stats.handshakes.fetch_add(1, Relaxed);
                            if waits > 0 {
                                shared.stats.handshakes_waited_for_key.fetch_add(1, Relaxed);
                            }
                            tracing::debug!(tls = %tls.describe(), alpn = %tls.alpn(), "handshake done");
                        }
                        Err(e) => {
                            shared.stats.handshake_failures.fetch_add(1, Relaxed);
                            tracing::info!(error = %e, "handshake failed");
                            return;
                        }
                    }
                    http::serve_connection(tls, shared).await;
                });
            }
        };
        let duration = async {
            match a.duration {
                Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await,
                None => std::future::pending().await,
            }
        };
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| (EXIT_FAILED, e.to_string()))?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
        let why = tokio::select! {
            _ = accept => "accept loop ended",
            _ = duration => "--duration reached",
            _ = done.notified() => "--requests reached",
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        Ok::<&str, (u8, String)>(why)
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    let why = result?;
    print_stats(why, started.elapsed(), &stats, &engine, provider_mode);
    engine.engine().shutdown();
    Ok(())
}

fn print_stats(why: &str, elapsed: Duration, s: &ServerStats, engine: &QatEngine, provider: bool) {
    println!(
        "envoy-qat serve: stopped ({why}) after {:.1}s",
        elapsed.as_secs_f64()
    );
    print!("{}", stats_text(s, engine, provider));
}

/// The statistics as text lines (printed on exit and served at /stats).
pub(crate) fn stats_text(s: &ServerStats, engine: &QatEngine, provider: bool) -> String {
    let hs = s.handshake_latency.snapshot();
    let mut out = format!(
        "server: handshakes={} handshake_failures={} handshakes_waited_for_key={} requests={} \
         gzip_responses={} handshake_p50={:?} handshake_p99={:?}\n",
        s.handshakes.load(Relaxed),
        s.handshake_failures.load(Relaxed),
        s.handshakes_waited_for_key.load(Relaxed),
        s.requests.load(Relaxed),
        s.gzip_responses.load(Relaxed),
        hs.quantile(0.5),
        hs.quantile(0.99),
    );
    if provider {
        out += &format!("provider: {}\n", engine.stats());
        // The backends' own counters, e.g. the QAT backend's faults seen and pinned memory.
        for (name, line) in engine.engine().backend_stats() {
            out += &format!("backend {name}: {line}\n");
        }
    }
    out
}
