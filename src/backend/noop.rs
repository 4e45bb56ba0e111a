//! A backend that does no crypto: it completes every job with zeros of the right length.
//! It measures the engine's own overhead (`envoy-qat bench`). The polled variant holds
//! jobs until the engine's poll thread polls it, like a QAT instance, so the poll path and
//! the idle cost of the poll thread can be measured without a device.

use std::sync::Mutex;

use super::{Backend, Job, Rejected};

/// Completes every job inside `submit` or, when polled, inside `poll`.
#[derive(Debug, Default)]
pub struct NoopBackend {
    polled: bool,
    held: Mutex<Vec<Job>>,
}

impl NoopBackend {
    /// Completes jobs inside `submit`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Completes jobs only when the engine's poll thread polls.
    pub fn polled() -> Self {
        NoopBackend {
            polled: true,
            held: Mutex::new(Vec::new()),
        }
    }

    fn answer(job: Job) {
        let len = job.key.key_type().raw_output_len();
        job.complete(Ok(vec![0u8; len]));
    }
}

impl Backend for NoopBackend {
    fn name(&self) -> &'static str {
        if self.polled {
            "noop-polled"
        } else {
            "noop"
        }
    }

    fn submit(&self, job: Job) -> Result<(), Rejected> {
        if self.polled {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(job);
        } else {
            Self::answer(job);
        }
        Ok(())
    }

    fn needs_polling(&self) -> bool {
        self.polled
    }

    fn poll(&self) -> usize {
        let jobs = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        let n = jobs.len();
        jobs.into_iter().for_each(Self::answer);
        n
    }

    fn shutdown(&self) {
        let jobs = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        for j in jobs {
            j.complete(Err(super::OpError::Shutdown));
        }
    }
}
