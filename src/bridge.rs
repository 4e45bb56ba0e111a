//! The one `#[cxx::bridge]` module: the whole Rust <-> C++ surface.
//!
//! C++ (cpp/ssl, and the Envoy shims on top of it) sees opaque Rust types:
//! - [`QatEngine`]: the asynchronous private-key engine (one per provider config),
//! - [`QatKey`]: a private key,
//! - [`PendingOp`]: one operation in flight, with its notification fd,
//!
//! plus shared plain structs for statistics. Rust sees the C++ TLS glue of cpp/ssl
//! (`TlsContext`, `TlsConn`) that `envoy-qat serve` drives.
//!
//! No panic crosses this boundary: every `extern "Rust"` entry point runs inside
//! `guard`, which catches a panic, logs what was being done, and returns a value that
//! fails closed (a failed operation, an empty result, an error). Errors that setup
//! functions return become `rust::Error` exceptions in C++; the functions BoringSSL calls
//! during a handshake never return `Result`, so nothing throws through C code.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BackendChoice, ProviderConfig};
use crate::engine::{Completion, Engine, EngineError, Pending};
use crate::key::PrivateKey;
use crate::scheme::{Operation, SignatureScheme};

#[cxx::bridge(namespace = "envoy_qat::ffi")]
pub mod ffi {
    /// Outcome of [`PendingOp::try_complete`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum OpStatus {
        /// The result was written to `out`.
        Ready,
        /// Not finished: wait for the fd, then call again.
        NotReady,
        /// Finished with an error (logged), or the output buffer was too small.
        Failed,
    }

    /// Engine statistics plus the counters of the C ABI's private-key method.
    #[derive(Debug, Clone, Default)]
    struct ProviderStats {
        /// Operations accepted by the engine.
        submitted: u64,
        /// Ended with a result.
        completed: u64,
        /// Ended with an error.
        failed: u64,
        /// Dropped (SSL released) before their result was taken.
        cancelled: u64,
        /// Still held by a backend.
        in_flight: u64,
        /// Refused because too many operations were in flight.
        rejected_busy: u64,
        /// Moved from the primary to the fallback backend.
        fallbacks: u64,
        /// `sign` calls from BoringSSL.
        sign_calls: u64,
        /// `decrypt` calls from BoringSSL.
        decrypt_calls: u64,
        /// Operations started that returned `ssl_private_key_retry` (asynchronous).
        started_async: u64,
        /// `complete` calls that found the result not ready yet (returned retry again).
        complete_not_ready: u64,
        /// Operations whose result was handed to BoringSSL by `complete`, after a retry.
        completed_after_retry: u64,
        /// Operations that failed at start or at completion (each logged).
        op_failures: u64,
        /// Submit-to-result latency percentiles, in nanoseconds.
        latency_p50_ns: u64,
        latency_p99_ns: u64,
        latency_max_ns: u64,
    }

    /// Provider settings as Envoy's typed config carries them (field copies; the policy
    /// lives in Rust). Zero means "default" for the numbers.
    #[derive(Debug, Clone, Default)]
    struct ProviderOptions {
        /// Longest poll interval while operations are in flight, ms (upstream `poll_delay`).
        poll_delay_ms: u32,
        /// Redo an operation in software when QAT refuses or fails it.
        software_failover: bool,
        /// Offer ECDSA keys to QAT (RSA always).
        ecdsa: bool,
        /// qatlib configuration section ("" = default).
        section_name: String,
        /// Where libqat / libusdm live ("" = the loader's search path).
        library_dir: String,
        /// Most operations in flight (0 = default).
        max_in_flight: u32,
        /// Upstream's fixed poll sleep instead of the adaptive policy.
        fixed_poll: bool,
    }

    /// Statistics of a compressor factory (all its streams).
    #[derive(Debug, Clone, Default)]
    struct CompressorStats {
        /// Streams created.
        streams: u64,
        /// Uncompressed bytes in.
        bytes_in: u64,
        /// gzip bytes out.
        bytes_out: u64,
        /// Input bytes a QAT device compressed.
        hardware_bytes: u64,
        /// Input bytes compressed in software.
        software_bytes: u64,
        /// Compression errors.
        errors: u64,
    }

    /// Result of a TLS call on a non-blocking socket.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum TlsStatus {
        /// Done (handshake finished, or `n` bytes moved).
        Ok,
        /// Wait until the socket is readable, then call again.
        WantRead,
        /// Wait until the socket is writable, then call again.
        WantWrite,
        /// Wait until `private_key_fd()` is readable, then call again.
        WantPrivateKey,
        /// The peer closed the connection cleanly (close_notify).
        Closed,
        /// A TLS or socket error (see `last_error()`).
        Error,
    }

    /// A TLS call's status and byte count.
    #[derive(Debug, Clone, Copy)]
    struct TlsIo {
        status: TlsStatus,
        n: usize,
    }

    extern "Rust" {
        /// The private-key engine: backend, poll thread, statistics.
        type QatEngine;
        /// A private key.
        type QatKey;
        /// One private-key operation in flight; dropping it cancels the operation.
        type PendingOp;
        // Slot for the streaming compressor (src/compress): `type QatCompressor;` and its
        // functions go here when it lands.

        /// An engine: backend "auto", "qat", "soft" or "noop"; poll delay in ms (0 = default).
        fn engine_new(backend: &str, poll_delay_ms: u32) -> Result<Box<QatEngine>>;
        /// An engine from Envoy's provider options (backend auto: QAT when usable).
        fn engine_from_options(options: ProviderOptions) -> Result<Box<QatEngine>>;
        /// Another handle to the same engine.
        fn clone_handle(self: &QatEngine) -> Box<QatEngine>;
        /// Empty when the engine can serve operations, else why not.
        fn unavailable_reason(self: &QatEngine) -> String;
        /// The primary backend's name.
        fn backend_name(self: &QatEngine) -> String;
        /// Statistics.
        fn stats(self: &QatEngine) -> ProviderStats;

        /// Parse a private key (PEM or DER); `source` names it in errors.
        fn key_from_bytes(bytes: &[u8], source: &str) -> Result<Box<QatKey>>;
        /// Another handle to the same key.
        fn clone_handle(self: &QatKey) -> Box<QatKey>;
        /// Whether it is an RSA key (decrypt is RSA-only).
        fn is_rsa(self: &QatKey) -> bool;
        /// Largest output of an operation (signature or decryption), in bytes.
        fn max_output_len(self: &QatKey) -> usize;
        /// TLS SignatureScheme code points this key can sign with, best first.
        fn signature_schemes(self: &QatKey) -> Vec<u16>;
        /// DER SubjectPublicKeyInfo of the public key (to check against a certificate).
        fn public_key_der(self: &QatKey) -> Vec<u8>;

        /// Start signing `input` (the message, not a digest) with TLS scheme `sigalg`.
        /// Never fails by returning: a failed start yields an op whose `failed()` is true.
        fn start_sign(
            engine: &QatEngine,
            key: &QatKey,
            sigalg: u16,
            input: &[u8],
        ) -> Box<PendingOp>;
        /// Start a raw RSA decryption (no padding removed).
        fn start_decrypt(engine: &QatEngine, key: &QatKey, input: &[u8]) -> Box<PendingOp>;
        /// Whether the operation failed to start (already logged).
        fn failed(self: &PendingOp) -> bool;
        /// The notification fd: readable once the result is ready (-1 if failed).
        /// Owned by the op; valid until the op is dropped.
        fn fd(self: &PendingOp) -> i32;
        /// Take the result into `out` (sets `out_len`) if it is ready.
        fn try_complete(self: &mut PendingOp, out: &mut [u8], out_len: &mut usize) -> OpStatus;

        /// Log from C++ through `tracing` (level: 0 error, 1 warn, 2 info, 3 debug).
        fn log_from_cpp(level: u8, msg: &str);

        /// Empty when the QAT backend itself is usable, else why not (one line). Envoy's
        /// isAvailable() uses it: without QAT, `fallback: true` serves with Envoy's own key.
        fn hardware_unavailable_reason(self: &QatEngine) -> String;

        /// The `qatzip` compressor library: one per filter config, shared by workers.
        type QatCompressorFactory;
        /// One HTTP response's gzip stream.
        type QatCompressor;
        /// A factory from the Qatzip typed config in proto3 JSON (upstream's ranges).
        fn compressor_factory_from_json(json: &str) -> Result<Box<QatCompressorFactory>>;
        /// A new stream.
        fn create(self: &QatCompressorFactory) -> Box<QatCompressor>;
        /// Whether QAT hardware compresses (false: software, or QATzip's own fallback).
        fn hardware_in_use(self: &QatCompressorFactory) -> bool;
        /// Statistics of every stream of this factory.
        fn stats(self: &QatCompressorFactory) -> CompressorStats;
        /// Compress `input` (a Flush, or Finish when `finish`), appending gzip bytes to
        /// `out`. False on failure (logged): the stream must end there.
        fn compress(
            self: &mut QatCompressor,
            input: &[u8],
            finish: bool,
            out: &mut Vec<u8>,
        ) -> bool;
    }

    #[namespace = "envoy_qat::ssl"]
    unsafe extern "C++" {
        include!("envoy-qat/cpp/ssl/tls.h");

        /// An `SSL_CTX` with a certificate chain and either our private-key method or a
        /// key held by BoringSSL itself.
        type TlsContext;
        /// One server-side TLS connection (`SSL*`) over a non-blocking socket fd.
        type TlsConn;

        /// A server context whose private-key operations go through `engine` with `key`.
        fn tls_context_with_provider(
            cert_chain_pem: &[u8],
            engine: &QatEngine,
            key: &QatKey,
        ) -> Result<UniquePtr<TlsContext>>;
        /// A server context whose key BoringSSL holds and uses directly (Envoy's
        /// `fallback` path, and the benchmark baseline).
        fn tls_context_with_key(
            cert_chain_pem: &[u8],
            key_pem: &[u8],
        ) -> Result<UniquePtr<TlsContext>>;
        /// A self-signed X.509 certificate (PEM) for `key_pem`, with subject CN and
        /// subjectAltName DNS:`dns_name` and IP 127.0.0.1, valid for `days`.
        fn self_signed_cert(key_pem: &[u8], dns_name: &str, days: u32) -> Result<String>;

        /// A connection on socket `fd` (not owned: the caller keeps and closes it).
        fn tls_conn_new(ctx: &TlsContext, fd: i32) -> Result<UniquePtr<TlsConn>>;
        fn handshake(self: Pin<&mut TlsConn>) -> TlsIo;
        fn read(self: Pin<&mut TlsConn>, buf: &mut [u8]) -> TlsIo;
        fn write(self: Pin<&mut TlsConn>, buf: &[u8]) -> TlsIo;
        /// Send close_notify (best effort).
        fn shutdown(self: Pin<&mut TlsConn>) -> TlsIo;
        /// The fd of the private-key operation in flight, or -1.
        fn private_key_fd(self: &TlsConn) -> i32;
        /// The negotiated ALPN protocol ("" if none).
        fn alpn(self: &TlsConn) -> String;
        /// "TLSv1.3 TLS_AES_128_GCM_SHA256 rsa_pss_rsae_sha256"-style summary.
        fn describe(self: &TlsConn) -> String;
        /// The last error, as text.
        fn last_error(self: &TlsConn) -> String;
        /// Calls of cpp/ssl's pending-fd hook on this connection so far.
        fn hook_calls(self: &TlsConn) -> u64;
        /// The fd the hook reported last (-1: the operation ended).
        fn hook_last_fd(self: &TlsConn) -> i32;
    }
}

pub use ffi::{OpStatus, ProviderOptions, ProviderStats, TlsIo, TlsStatus};

/// Run `f`; on a panic, log it with `what` and return `fail`.
fn guard<T>(what: &str, fail: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(entry = what, panic = %msg, "panic in a C ABI entry point; failing closed");
            fail()
        }
    }
}

/// Counters of the private-key method as seen from the C ABI.
#[derive(Default)]
struct AbiCounters {
    sign_calls: AtomicU64,
    decrypt_calls: AtomicU64,
    started_async: AtomicU64,
    complete_not_ready: AtomicU64,
    completed_after_retry: AtomicU64,
    op_failures: AtomicU64,
}

/// The engine behind the C ABI.
pub struct QatEngine {
    engine: Engine,
    counters: Arc<AbiCounters>,
}

impl QatEngine {
    /// Wrap an engine built in Rust.
    pub fn from_engine(engine: Engine) -> Self {
        QatEngine {
            engine,
            counters: Arc::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn clone_handle(&self) -> Box<QatEngine> {
        guard(
            "QatEngine::clone_handle",
            || {
                Box::new(QatEngine {
                    engine: self.engine.clone(),
                    counters: self.counters.clone(),
                })
            },
            || {
                Box::new(QatEngine {
                    engine: self.engine.clone(),
                    counters: self.counters.clone(),
                })
            },
        )
    }

    fn unavailable_reason(&self) -> String {
        guard(
            "QatEngine::unavailable_reason",
            || "internal error (panic)".into(),
            || self.engine.availability().err().unwrap_or_default(),
        )
    }

    fn backend_name(&self) -> String {
        self.engine.backend_name().to_string()
    }

    fn hardware_unavailable_reason(&self) -> String {
        guard(
            "QatEngine::hardware_unavailable_reason",
            || "internal error (panic)".into(),
            || match self.engine.primary_availability() {
                Ok(()) if self.engine.backend_name() == "qat" => String::new(),
                Ok(()) => format!("the {} backend is not QAT", self.engine.backend_name()),
                Err(why) => why,
            },
        )
    }

    /// Engine statistics and the C ABI's counters.
    pub fn stats(&self) -> ProviderStats {
        guard("QatEngine::stats", ProviderStats::default, || {
            let s = self.engine.stats();
            let c = &self.counters;
            ProviderStats {
                submitted: s.submitted,
                completed: s.completed,
                failed: s.failed,
                cancelled: s.cancelled,
                in_flight: s.in_flight,
                rejected_busy: s.rejected_busy,
                fallbacks: s.fallbacks,
                sign_calls: c.sign_calls.load(Relaxed),
                decrypt_calls: c.decrypt_calls.load(Relaxed),
                started_async: c.started_async.load(Relaxed),
                complete_not_ready: c.complete_not_ready.load(Relaxed),
                completed_after_retry: c.completed_after_retry.load(Relaxed),
                op_failures: c.op_failures.load(Relaxed),
                latency_p50_ns: s.latency.quantile(0.5).as_nanos() as u64,
                latency_p99_ns: s.latency.quantile(0.99).as_nanos() as u64,
                latency_max_ns: s.latency.max_ns,
            }
        })
    }
}

impl std::fmt::Display for ProviderStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "submitted={} completed={} failed={} cancelled={} in_flight={} rejected_busy={} \
             fallbacks={} sign_calls={} decrypt_calls={} started_async={} complete_not_ready={} \
             completed_after_retry={} op_failures={} latency_p50={:?} latency_p99={:?} latency_max={:?}",
            self.submitted,
            self.completed,
            self.failed,
            self.cancelled,
            self.in_flight,
            self.rejected_busy,
            self.fallbacks,
            self.sign_calls,
            self.decrypt_calls,
            self.started_async,
            self.complete_not_ready,
            self.completed_after_retry,
            self.op_failures,
            Duration::from_nanos(self.latency_p50_ns),
            Duration::from_nanos(self.latency_p99_ns),
            Duration::from_nanos(self.latency_max_ns),
        )
    }
}

fn engine_new(backend: &str, poll_delay_ms: u32) -> Result<Box<QatEngine>, String> {
    guard(
        "engine_new",
        || Err("internal error (panic) while creating the engine".into()),
        || {
            let cfg = ProviderConfig {
                backend: BackendChoice::parse(backend).map_err(|e| e.to_string())?,
                poll_delay: Duration::from_millis(poll_delay_ms.into()),
                ..ProviderConfig::default()
            };
            let engine = cfg.build_engine().map_err(|e| e.to_string())?;
            Ok(Box::new(QatEngine::from_engine(engine)))
        },
    )
}

fn engine_from_options(o: ffi::ProviderOptions) -> Result<Box<QatEngine>, String> {
    guard(
        "engine_from_options",
        || Err("internal error (panic) while creating the engine".into()),
        || {
            let defaults = ProviderConfig::default();
            let mut cfg = ProviderConfig {
                // Envoy's `qat` provider is QAT: without a device it reports itself
                // unavailable (so `fallback: true` serves with Envoy's own key, which
                // BoringSSL signs faster than our software path) rather than quietly
                // running software crypto.
                backend: BackendChoice::Qat,
                poll_delay: Duration::from_millis(o.poll_delay_ms.into()),
                poll_policy: if o.fixed_poll {
                    crate::engine::PollPolicy::Fixed
                } else {
                    crate::engine::PollPolicy::Adaptive
                },
                software_fallback: o.software_failover,
                max_in_flight: if o.max_in_flight == 0 {
                    defaults.max_in_flight
                } else {
                    o.max_in_flight as usize
                },
                qat_lib_dir: (!o.library_dir.is_empty()).then(|| o.library_dir.clone().into()),
                qat_section: if o.section_name.is_empty() {
                    defaults.qat_section.clone()
                } else {
                    o.section_name.clone()
                },
                qat_ecdsa: o.ecdsa,
                ..defaults
            };
            cfg.validate().map_err(|e| e.to_string())?;
            let engine = match cfg.build_engine() {
                Ok(engine) => engine,
                // No usable QAT and no per-operation failover: keep an engine whose QAT
                // side is a stand-in, so the provider exists and says why it is unavailable.
                Err(e) if e.field == "backend" => {
                    cfg.software_fallback = true;
                    cfg.build_engine().map_err(|e| e.to_string())?
                }
                Err(e) => return Err(e.to_string()),
            };
            Ok(Box::new(QatEngine::from_engine(engine)))
        },
    )
}

/// A private key behind the C ABI.
pub struct QatKey {
    key: Arc<PrivateKey>,
}

impl QatKey {
    /// Wrap a key loaded in Rust.
    pub fn new(key: Arc<PrivateKey>) -> Self {
        QatKey { key }
    }

    fn clone_handle(&self) -> Box<QatKey> {
        Box::new(QatKey {
            key: self.key.clone(),
        })
    }

    fn is_rsa(&self) -> bool {
        self.key.key_type().is_rsa()
    }

    fn max_output_len(&self) -> usize {
        // A DER ECDSA signature: r and s, each up to field size + 1, plus headers.
        let kt = self.key.key_type();
        if kt.is_rsa() {
            kt.raw_output_len()
        } else {
            kt.raw_output_len() + 16
        }
    }

    fn signature_schemes(&self) -> Vec<u16> {
        guard("QatKey::signature_schemes", Vec::new, || {
            signature_schemes_for(self.key.key_type())
        })
    }

    fn public_key_der(&self) -> Vec<u8> {
        guard("QatKey::public_key_der", Vec::new, || {
            self.key.public_key_der()
        })
    }
}

/// The TLS 1.2/1.3 schemes a key signs with, in BoringSSL preference order (strongest
/// hash first for the key's curve; SHA-1 last, for old TLS 1.2 clients). The private
/// MD5-SHA1 scheme of TLS 1.0/1.1 is left out: BoringSSL selects it by itself.
pub fn signature_schemes_for(kt: crate::key::KeyType) -> Vec<u16> {
    use crate::key::KeyType;
    use SignatureScheme as S;
    let order: &[S] = match kt {
        KeyType::Rsa { .. } => &[
            S::RsaPssRsaeSha256,
            S::RsaPssRsaeSha384,
            S::RsaPssRsaeSha512,
            S::RsaPkcs1Sha256,
            S::RsaPkcs1Sha384,
            S::RsaPkcs1Sha512,
            S::RsaPkcs1Sha1,
        ],
        KeyType::EcP256 => &[
            S::EcdsaSecp256r1Sha256,
            S::EcdsaSecp384r1Sha384,
            S::EcdsaSha1,
        ],
        KeyType::EcP384 => &[
            S::EcdsaSecp384r1Sha384,
            S::EcdsaSecp256r1Sha256,
            S::EcdsaSha1,
        ],
    };
    order.iter().map(|s| s.code()).collect()
}

fn key_from_bytes(bytes: &[u8], source: &str) -> Result<Box<QatKey>, String> {
    guard(
        "key_from_bytes",
        || {
            Err(format!(
                "{source}: internal error (panic) while parsing the key"
            ))
        },
        || {
            let key = PrivateKey::from_bytes(bytes, source).map_err(|e| e.to_string())?;
            Ok(Box::new(QatKey { key: Arc::new(key) }))
        },
    )
}

/// One operation behind the C ABI.
pub struct PendingOp {
    pending: Option<Pending>,
    counters: Arc<AbiCounters>,
    op: Option<Operation>,
}

impl PendingOp {
    fn failed_op(counters: &Arc<AbiCounters>, op: Option<Operation>) -> Box<PendingOp> {
        counters.op_failures.fetch_add(1, Relaxed);
        Box::new(PendingOp {
            pending: None,
            counters: counters.clone(),
            op,
        })
    }

    fn failed(&self) -> bool {
        self.pending.is_none()
    }

    fn fd(&self) -> i32 {
        self.pending.as_ref().map_or(-1, |p| p.fd())
    }

    fn try_complete(&mut self, out: &mut [u8], out_len: &mut usize) -> OpStatus {
        let counters = self.counters.clone();
        let fail = || {
            counters.op_failures.fetch_add(1, Relaxed);
            OpStatus::Failed
        };
        guard("PendingOp::try_complete", fail, || {
            let Some(p) = self.pending.as_mut() else {
                self.counters.op_failures.fetch_add(1, Relaxed);
                return OpStatus::Failed;
            };
            match p.try_complete() {
                Completion::NotReady => {
                    self.counters.complete_not_ready.fetch_add(1, Relaxed);
                    OpStatus::NotReady
                }
                Completion::Ready(v) => {
                    if v.len() > out.len() {
                        tracing::error!(
                            op = ?self.op,
                            len = v.len(),
                            max = out.len(),
                            "private-key result larger than BoringSSL's buffer; failing the handshake"
                        );
                        self.counters.op_failures.fetch_add(1, Relaxed);
                        return OpStatus::Failed;
                    }
                    out[..v.len()].copy_from_slice(&v);
                    *out_len = v.len();
                    self.counters.completed_after_retry.fetch_add(1, Relaxed);
                    OpStatus::Ready
                }
                Completion::Failed(e) => {
                    tracing::warn!(op = ?self.op, error = %e, "private-key operation failed");
                    self.counters.op_failures.fetch_add(1, Relaxed);
                    OpStatus::Failed
                }
            }
        })
    }
}

fn start(engine: &QatEngine, key: &QatKey, op: Operation, input: &[u8]) -> Box<PendingOp> {
    let c = &engine.counters;
    guard(
        "start private-key operation",
        || PendingOp::failed_op(c, Some(op)),
        || match engine.engine.submit(&key.key, op, input) {
            Ok(p) => {
                c.started_async.fetch_add(1, Relaxed);
                Box::new(PendingOp {
                    pending: Some(p),
                    counters: c.clone(),
                    op: Some(op),
                })
            }
            Err(e) => {
                match &e {
                    EngineError::Busy { .. } => {
                        tracing::warn!(%op, error = %e, "private-key operation refused")
                    }
                    _ => {
                        tracing::warn!(%op, key = key.key.source(), error = %e, "private-key operation could not start")
                    }
                }
                PendingOp::failed_op(c, Some(op))
            }
        },
    )
}

fn start_sign(engine: &QatEngine, key: &QatKey, sigalg: u16, input: &[u8]) -> Box<PendingOp> {
    engine.counters.sign_calls.fetch_add(1, Relaxed);
    match SignatureScheme::from_code(sigalg) {
        Some(s) => start(engine, key, Operation::Sign(s), input),
        None => {
            tracing::warn!(
                sigalg = format_args!("{sigalg:#06x}"),
                "BoringSSL asked for an unsupported signature scheme; failing the handshake"
            );
            PendingOp::failed_op(&engine.counters, None)
        }
    }
}

fn start_decrypt(engine: &QatEngine, key: &QatKey, input: &[u8]) -> Box<PendingOp> {
    engine.counters.decrypt_calls.fetch_add(1, Relaxed);
    start(engine, key, Operation::Decrypt, input)
}

fn log_from_cpp(level: u8, msg: &str) {
    guard(
        "log_from_cpp",
        || (),
        || match level {
            0 => tracing::error!(target: "envoy_qat::cpp", "{msg}"),
            1 => tracing::warn!(target: "envoy_qat::cpp", "{msg}"),
            2 => tracing::info!(target: "envoy_qat::cpp", "{msg}"),
            _ => tracing::debug!(target: "envoy_qat::cpp", "{msg}"),
        },
    )
}

/// The `qatzip` compressor library behind the C ABI.
pub struct QatCompressorFactory {
    inner: crate::compress::CompressorFactory,
}

/// One gzip stream behind the C ABI.
pub struct QatCompressor {
    inner: crate::compress::Compressor,
}

fn compressor_factory_from_json(json: &str) -> Result<Box<QatCompressorFactory>, String> {
    guard(
        "compressor_factory_from_json",
        || Err("internal error (panic) while creating the compressor".into()),
        || {
            let v: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| format!("qatzip typed config is not JSON: {e}"))?;
            let cfg = crate::compress::CompressorConfig::from_proto_json(&v)
                .map_err(|e| e.to_string())?;
            let inner = crate::compress::CompressorFactory::new(cfg).map_err(|e| e.to_string())?;
            Ok(Box::new(QatCompressorFactory { inner }))
        },
    )
}

impl QatCompressorFactory {
    fn create(&self) -> Box<QatCompressor> {
        // No fallible work happens here: a stream allocates on its first data.
        Box::new(QatCompressor {
            inner: self.inner.create(),
        })
    }

    fn hardware_in_use(&self) -> bool {
        guard(
            "QatCompressorFactory::hardware_in_use",
            || false,
            || self.inner.qat_hardware_in_use(),
        )
    }

    fn stats(&self) -> ffi::CompressorStats {
        guard("QatCompressorFactory::stats", Default::default, || {
            let s = self.inner.stats();
            ffi::CompressorStats {
                streams: s.streams_created,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                hardware_bytes: s.hw_bytes_in,
                software_bytes: s.sw_bytes_in,
                errors: s.errors,
            }
        })
    }
}

impl QatCompressor {
    fn compress(&mut self, input: &[u8], finish: bool, out: &mut Vec<u8>) -> bool {
        let mode = if finish {
            crate::compress::Mode::Finish
        } else {
            crate::compress::Mode::Flush
        };
        guard(
            "QatCompressor::compress",
            || false,
            || {
                // Envoy passes an empty `out`: compress in its allocation (one copy of the
                // input, none of the output); otherwise append.
                let appended = if out.is_empty() {
                    out.extend_from_slice(input);
                    self.inner.compress(out, mode)
                } else {
                    let mut buf = input.to_vec();
                    let r = self.inner.compress(&mut buf, mode);
                    out.extend_from_slice(&buf);
                    r
                };
                match appended {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "qatzip compressor failed; ending the stream");
                        false
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressor_through_the_bridge_round_trips_with_flushes() {
        let json = r#"{"compressionLevel": 6, "hardwareBufferSize": "SZ_64K", "chunkSize": 4096}"#;
        let factory = compressor_factory_from_json(json).unwrap();
        let mut c = factory.create();
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} of a response\n").into_bytes())
            .collect();
        // Decoded as it comes by C zlib (tests/czlib), independent of the zlib-rs that
        // compresses: after each flushed call, everything written so far.
        let mut dec = czlib::GzDecoder::new();
        let mut back = Vec::new();
        for (i, chunk) in text.chunks(7000).enumerate() {
            let mut out = Vec::new();
            let last = (i + 1) * 7000 >= text.len();
            assert!(c.compress(chunk, last, &mut out));
            dec.write(&out, &mut back).unwrap();
            assert_eq!(back, text[..(i * 7000 + chunk.len())], "after call {i}");
        }
        dec.finish().unwrap();
        assert_eq!(back, text);
        let st = factory.stats();
        assert_eq!((st.streams, st.bytes_in), (1, text.len() as u64));
        assert!(st.bytes_out > 0 && st.bytes_out < st.bytes_in);
        // A config outside upstream's ranges is refused with the field named.
        let err = compressor_factory_from_json(r#"{"chunk_size": 1}"#)
            .err()
            .unwrap();
        assert!(err.contains("chunk_size"), "{err}");
        assert!(compressor_factory_from_json("not json").is_err());
    }

    #[test]
    fn guard_catches_panics_and_fails_closed() {
        let r: Result<u8, String> =
            guard("test", || Err("failed closed".into()), || panic!("boom"));
        assert_eq!(r.unwrap_err(), "failed closed");
    }

    #[test]
    fn failed_start_is_reported_not_thrown() {
        let e = engine_new("noop", 0).unwrap();
        let k = QatKey::new(Arc::new(
            PrivateKey::generate(crate::key::KeyType::EcP256).unwrap(),
        ));
        // An RSA scheme with an EC key: refused at start, op reports failed().
        let op = start_sign(&e, &k, 0x0804, b"hello");
        assert!(op.failed());
        assert_eq!(op.fd(), -1);
        // Unknown code point.
        assert!(start_sign(&e, &k, 0x9999, b"x").failed());
        assert_eq!(e.stats().op_failures, 2);
        assert!(engine_new("gpu", 0).is_err());
    }

    #[test]
    fn engine_from_envoy_options_validates() {
        let ok = engine_from_options(ffi::ProviderOptions {
            software_failover: true,
            ecdsa: true,
            ..Default::default()
        })
        .unwrap();
        assert!(ok.unavailable_reason().is_empty());
        let e = engine_from_options(ffi::ProviderOptions {
            poll_delay_ms: 5000,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("poll_delay"), "{e}");
    }
}
