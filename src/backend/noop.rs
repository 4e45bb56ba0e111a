//! A backend that does no crypto: it completes every job at once with zeros of the
//! right length. It measures the engine's own overhead (`envoy-qat bench --backend noop`).

use super::{Backend, Job, Rejected};

/// Completes every job inside `submit`.
#[derive(Debug, Default)]
pub struct NoopBackend;

impl Backend for NoopBackend {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn submit(&self, job: Job) -> Result<(), Rejected> {
        let len = job.key.key_type().raw_output_len();
        job.complete(Ok(vec![0u8; len]));
        Ok(())
    }
}
