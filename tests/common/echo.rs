//! A test backend that completes RSA raw operations with the input reversed, inline, on
//! poll, or when the test releases them.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_qat::backend::{Backend, Job, OpError, Rejected};
use envoy_qat::engine::{EngineConfig, PollPolicy};
use envoy_qat::key::{KeyType, PrivateKey};
use envoy_qat::scheme::RawOp;

/// How the test backend completes jobs.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Inside submit.
    Inline,
    /// Only when the engine's poll thread calls poll() (like QAT).
    Polled,
    /// Only when the test calls release().
    Hold,
    /// Refuse every job (to exercise fallback).
    Refuse,
}

/// Completes RSA raw operations with the input reversed, so every result is checkable.
pub struct Echo {
    pub mode: Mode,
    pub held: Mutex<VecDeque<Job>>,
    pub completed: AtomicUsize,
}

impl Echo {
    pub fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Echo {
            mode,
            held: Mutex::new(VecDeque::new()),
            completed: AtomicUsize::new(0),
        })
    }

    pub fn answer(&self, job: Job) {
        let out = match &job.op {
            RawOp::RsaPrivate(x) => x.iter().rev().copied().collect(),
            RawOp::EcdsaSign(_) => vec![1u8; job.key.key_type().raw_output_len()],
        };
        self.completed.fetch_add(1, Ordering::Relaxed);
        job.complete(Ok(out));
    }

    pub fn release(&self) -> usize {
        let jobs: Vec<Job> = self.held.lock().unwrap().drain(..).collect();
        let n = jobs.len();
        for j in jobs {
            self.answer(j);
        }
        n
    }
}

impl Backend for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn submit(&self, job: Job) -> Result<(), Rejected> {
        match self.mode {
            Mode::Inline => self.answer(job),
            Mode::Refuse => {
                return Err(Rejected {
                    job,
                    error: OpError::Unavailable("test backend refuses".into()),
                })
            }
            Mode::Polled | Mode::Hold => self.held.lock().unwrap().push_back(job),
        }
        Ok(())
    }
    fn needs_polling(&self) -> bool {
        self.mode == Mode::Polled
    }
    fn poll(&self) -> usize {
        // Complete a bounded batch per poll, like a device ring.
        let batch: Vec<Job> = {
            let mut q = self.held.lock().unwrap();
            let n = q.len().min(256);
            q.drain(..n).collect()
        };
        let n = batch.len();
        for j in batch {
            self.answer(j);
        }
        n
    }
    fn shutdown(&self) {
        for j in self.held.lock().unwrap().drain(..) {
            j.complete(Err(OpError::Shutdown));
        }
    }
}

pub fn rsa_key() -> Arc<PrivateKey> {
    Arc::new(PrivateKey::generate(KeyType::Rsa { bits: 2048 }).unwrap())
}

pub fn config(max_in_flight: usize) -> EngineConfig {
    EngineConfig {
        max_in_flight,
        poll_delay: Duration::from_millis(1),
        poll_policy: PollPolicy::Adaptive,
    }
}

/// A ciphertext-shaped input (256 bytes, < n because the top byte is 0) unique to (t, i).
pub fn input(t: u64, i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 256];
    v[1..9].copy_from_slice(&t.to_be_bytes());
    v[9..17].copy_from_slice(&i.to_be_bytes());
    v[255] = (i % 251) as u8;
    v
}

pub fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}
