//! The module's own compression threads. QATzip's calls block their caller for the
//! device's round trip, so chunks for QATzip (and large software chunks, when configured)
//! are compressed here instead of on Envoy's worker; the stream is resumed on its own
//! Envoy worker through its scheduler.
//!
//! One pool per process, started on first use (never in `--mode validate`). Each thread
//! keeps its own QATzip session (the core's sessions are per thread), so live sessions
//! never outnumber the pool, whatever the number of streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use envoy_qat::compress::{CompressError, Compressor, Mode};

use crate::envoy::Scheduler;

/// What a finished job hands back to its stream.
pub struct Done {
    pub compressor: Compressor,
    pub output: Result<Vec<u8>, CompressError>,
}

/// Where a job's result waits for its stream's scheduled hook.
pub type Slot = Arc<Mutex<Option<Done>>>;

pub struct Job {
    pub compressor: Compressor,
    pub input: Vec<u8>,
    pub mode: Mode,
    pub slot: Slot,
    pub scheduler: Arc<Scheduler>,
    pub event: u64,
    /// Test knob: extra time per job (ENVOY_QAT_MODULE_TEST_DELAY_MS), to make the
    /// asynchronous path measurably slow in tests.
    pub delay: Duration,
}

/// Jobs dropped because their stream had ended before a thread took them.
pub static CANCELLED: AtomicU64 = AtomicU64::new(0);

static POOL: OnceLock<Sender<Job>> = OnceLock::new();

fn threads() -> usize {
    std::env::var("ENVOY_QAT_MODULE_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2)
        })
}

fn pool() -> &'static Sender<Job> {
    POOL.get_or_init(|| {
        let (tx, rx) = unbounded::<Job>();
        let n = threads();
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("envoy-qat-gz{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        run(job);
                    }
                });
            if let Err(e) = spawned {
                crate::abi::log(
                    crate::abi::log_level::ERROR,
                    &format!("envoy-qat module: cannot start compression thread {i}: {e}"),
                );
            }
        }
        crate::abi::log(
            crate::abi::log_level::INFO,
            &format!("envoy-qat module: {n} compression threads started"),
        );
        tx
    })
}

fn run(mut job: Job) {
    // The stream's filter holds the other reference; when it is gone, so is the stream.
    if Arc::strong_count(&job.slot) == 1 {
        CANCELLED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !job.delay.is_zero() {
        std::thread::sleep(job.delay);
    }
    let mut buf = std::mem::take(&mut job.input);
    let output = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        job.compressor.compress(&mut buf, job.mode).map(|()| buf)
    }))
    .unwrap_or_else(|_| {
        Err(CompressError::Engine(
            "panic in the compressor (see the log)".into(),
        ))
    });
    if let Ok(mut slot) = job.slot.lock() {
        *slot = Some(Done {
            compressor: job.compressor,
            output,
        });
    }
    job.scheduler.commit(job.event);
}

/// Queue a job. Err gives it back when the pool cannot take it.
pub fn submit(job: Job) -> Result<(), Box<Job>> {
    pool().send(job).map_err(|e| Box::new(e.0))
}
