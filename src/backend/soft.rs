//! Software backend: the `rsa`, `p256` and `p384` crates on a small worker pool.
//!
//! Crate choice (measured on the project's 2-core machines): rsa 0.10 fixes the
//! RUSTSEC-2023-0071 timing advisory of 0.9 and shares one RustCrypto generation
//! (crypto-bigint 0.7) with p256/p384 0.14, which sign about 2.6x faster than 0.13.
//! RSA private operations are blinded (a fresh random blinding factor per operation)
//! and checked (`m^e == c`) against fault attacks. ECDSA uses hedged nonces: RFC 6979
//! mixed with fresh system randomness, so a nonce is never reused.
//!
//! The `rsa` crate is several times slower than OpenSSL/BoringSSL for RSA; with no QAT,
//! Envoy's own BoringSSL key (`fallback: true`) is the fast path. This backend is the
//! per-operation safety net when a QAT instance fails, and the reference for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{Backend, Job, OpError, Rejected};
use crate::key::KeyMaterial;
use crate::scheme::RawOp;

/// Default queue depth of the worker pool.
pub const DEFAULT_QUEUE: usize = 4096;

/// What a worker does with one job.
pub type Compute = Arc<dyn Fn(&Job) -> Result<Vec<u8>, OpError> + Send + Sync>;

/// Software backend on a worker pool.
pub struct SoftBackend {
    name: &'static str,
    tx: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
}

impl SoftBackend {
    /// A pool of `threads` workers (0 = one per CPU) with a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> Self {
        Self::with_compute("soft", threads, queue, Arc::new(compute))
    }

    /// The same pool running another software implementation (`name` in logs and stats,
    /// e.g. the dynamic module's BoringSSL); its threads are named `envoy-qat-<name>-<i>`.
    pub fn with_compute(name: &'static str, threads: usize, queue: usize, f: Compute) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
        let stopping = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|i| {
                let rx: Receiver<Job> = rx.clone();
                let stopping = Arc::clone(&stopping);
                let f = Arc::clone(&f);
                std::thread::Builder::new()
                    .name(format!("envoy-qat-{name}-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            let result = if stopping.load(Ordering::Acquire) {
                                Err(OpError::Shutdown)
                            } else {
                                f(&job)
                            };
                            job.complete(result);
                        }
                    })
                    .expect("spawn software backend worker")
            })
            .collect();
        SoftBackend {
            name,
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            stopping,
        }
    }
}

impl Default for SoftBackend {
    fn default() -> Self {
        Self::new(0, DEFAULT_QUEUE)
    }
}

impl Backend for SoftBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn availability(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            Err("software backend shut down".into())
        } else {
            Ok(())
        }
    }

    fn submit(&self, job: Job) -> Result<(), Rejected> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(Rejected {
                job,
                error: OpError::Unavailable("software backend shut down".into()),
            });
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => Err(Rejected {
                job,
                error: OpError::Busy("software worker queue is full".into()),
            }),
            Err(TrySendError::Disconnected(job)) => Err(Rejected {
                job,
                error: OpError::Unavailable("software backend shut down".into()),
            }),
        }
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        // Dropping the sender lets the workers finish what is queued and exit.
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for SoftBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Perform one raw operation in software.
pub fn compute(job: &Job) -> Result<Vec<u8>, OpError> {
    match (&job.op, job.key.material()) {
        (RawOp::RsaPrivate(input), KeyMaterial::Rsa(key)) => rsa_private(key, input),
        (RawOp::EcdsaSign(digest), KeyMaterial::P256(key)) => {
            use p256::ecdsa::signature::hazmat::RandomizedPrehashSigner;
            let prehash = field_sized(digest, 32);
            let sig: p256::ecdsa::Signature = key
                .sign_prehash_with_rng(&mut getrandom::SysRng, &prehash)
                .map_err(|e| OpError::Failed(format!("ECDSA P-256: {e}")))?;
            Ok(sig.to_bytes().to_vec())
        }
        (RawOp::EcdsaSign(digest), KeyMaterial::P384(key)) => {
            use p384::ecdsa::signature::hazmat::RandomizedPrehashSigner;
            let prehash = field_sized(digest, 48);
            let sig: p384::ecdsa::Signature = key
                .sign_prehash_with_rng(&mut getrandom::SysRng, &prehash)
                .map_err(|e| OpError::Failed(format!("ECDSA P-384: {e}")))?;
            Ok(sig.to_bytes().to_vec())
        }
        (op, _) => Err(OpError::Failed(format!(
            "{op:?} does not fit a {} key",
            job.key.key_type()
        ))),
    }
}

/// The digest as SEC 1 turns it into an integer for a curve of `n` bytes: the leftmost
/// `n` bytes of a longer hash, or a shorter hash left-padded with zeros (same integer).
fn field_sized(digest: &[u8], n: usize) -> Vec<u8> {
    if digest.len() >= n {
        digest[..n].to_vec()
    } else {
        let mut v = vec![0u8; n - digest.len()];
        v.extend_from_slice(digest);
        v
    }
}

/// Blinded, checked `input^d mod n`, returned at the modulus length.
pub fn rsa_private(key: &rsa::PrivateKey, input: &[u8]) -> Result<Vec<u8>, OpError> {
    use rsa::traits::PublicKeyParts;
    let k = key.size();
    let c = rsa::BoxedUint::from_be_slice(input, key.n_bits_precision())
        .map_err(|e| OpError::Failed(format!("RSA input: {e}")))?;
    let m = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut getrandom::SysRng), &c)
        .map_err(|e| OpError::Failed(format!("RSA private operation: {e}")))?;
    let bytes = m.to_be_bytes();
    let mut out = vec![0u8; k];
    let take = bytes.len().min(k);
    out[k - take..].copy_from_slice(&bytes[bytes.len() - take..]);
    Ok(out)
}
