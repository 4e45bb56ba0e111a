//! Backends perform raw private-key operations ([`RawOp`]) asynchronously.
//!
//! One trait, implemented by the software backend ([`soft`]), the QAT backend and the
//! no-op backend used to measure the engine's own overhead. A backend receives a
//! [`Job`] and must end it exactly once through [`Job::complete`]; dropping a job
//! without completing it fails the operation (so nothing is ever lost).

pub mod noop;
pub mod qat;
pub mod soft;

use std::fmt;
use std::sync::Arc;

use crate::key::PrivateKey;
use crate::scheme::RawOp;

/// Why a raw operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The backend cannot take work now (queue full). Back-pressure, not a fault.
    Busy(String),
    /// The backend is not usable (no device, not started, shut down).
    Unavailable(String),
    /// The operation failed in the backend or device.
    Failed(String),
    /// The engine shut down before the operation finished.
    Shutdown,
    /// The backend dropped the job without completing it (a bug; counted as failure).
    Lost,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Busy(why) => write!(f, "backend busy: {why}"),
            OpError::Unavailable(why) => write!(f, "backend unavailable: {why}"),
            OpError::Failed(why) => write!(f, "operation failed: {why}"),
            OpError::Shutdown => f.write_str("engine shut down before the operation finished"),
            OpError::Lost => f.write_str("backend dropped the operation without a result"),
        }
    }
}

impl std::error::Error for OpError {}

/// Receives the result of one job. Implemented by the engine.
pub trait CompletionSink: Send + Sync {
    /// Called exactly once per job with its result (r || s for ECDSA, the modulus-length
    /// result for RSA).
    fn complete(&self, job_id: u64, result: Result<Vec<u8>, OpError>);
}

/// One raw operation handed to a backend. Must end through [`Job::complete`].
pub struct Job {
    /// The key to use.
    pub key: Arc<PrivateKey>,
    /// What to compute.
    pub op: RawOp,
    id: u64,
    sink: Option<Arc<dyn CompletionSink>>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("key", &self.key.key_type())
            .field("op", &self.op)
            .finish()
    }
}

impl Job {
    /// A job that reports to `sink` under `id`.
    pub fn new(key: Arc<PrivateKey>, op: RawOp, id: u64, sink: Arc<dyn CompletionSink>) -> Self {
        Job {
            key,
            op,
            id,
            sink: Some(sink),
        }
    }

    /// The job's id, unique within its engine.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Detach the job from its sink without reporting: the engine reports the outcome
    /// itself (a refused job that never ran).
    pub(crate) fn disarm(mut self) {
        self.sink = None;
    }

    /// End the job with a result.
    pub fn complete(mut self, result: Result<Vec<u8>, OpError>) {
        if let Some(sink) = self.sink.take() {
            sink.complete(self.id, result);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.complete(self.id, Err(OpError::Lost));
        }
    }
}

/// A refusal to take a job: the job comes back so it can go elsewhere.
pub struct Rejected {
    /// The job, untouched.
    pub job: Job,
    /// Why it was refused.
    pub error: OpError,
}

/// A provider of raw private-key operations.
pub trait Backend: Send + Sync {
    /// Short name for logs and stats ("soft", "qat", "noop").
    fn name(&self) -> &'static str;

    /// Whether the backend can take work now; with the reason when it cannot.
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    /// Take a job without blocking. On success the backend completes it later (or
    /// already did). On refusal the job is handed back.
    fn submit(&self, job: Job) -> Result<(), Rejected>;

    /// Whether completions only happen inside [`Backend::poll`] (QAT). Backends that
    /// complete on their own threads return false and are never polled.
    fn needs_polling(&self) -> bool {
        false
    }

    /// Drive completions; returns how many jobs completed. Called from the engine's
    /// poll thread only.
    fn poll(&self) -> usize {
        0
    }

    /// Whether this backend can run this kind of key (e.g. QAT with ECDSA disabled).
    fn supports(&self, _key: &PrivateKey) -> bool {
        true
    }

    /// Stop taking work and end every job it holds (with [`OpError::Shutdown`]).
    fn shutdown(&self) {}

    /// The backend's own counters as one line of `name=value` pairs, for stats output
    /// (the QAT backend: device answers, faults seen, pinned memory); None when it has
    /// none beyond the engine's.
    fn stats_line(&self) -> Option<String> {
        None
    }
}
