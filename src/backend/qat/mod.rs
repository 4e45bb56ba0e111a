//! QAT backend: RSA and ECDSA private-key operations on Intel QuickAssist through qatlib.
//!
//! **What ran where.** No machine this project has been developed or tested on has a QAT
//! device. Everything here was exercised against two things only:
//! - `tests/qat-sim`, a software qatlib (same bindgen'd headers, same dlopen path, real
//!   arithmetic, completion only when polled, finite rings, injected faults), and
//! - Debian trixie's real `libqat.so.4` / `libusdm.so.0` (qatlib 24.02) with no device,
//!   where `icp_sal_userStart` fails and the backend reports itself unavailable.
//!
//! Nothing was run on QAT hardware: the data layouts follow qatlib's headers
//! (`cpa_cy_rsa.h`, `cpa_cy_ecdsa.h`) and are checked by the simulator, but device
//! behaviour (real latencies, ring sizes, restarts, DMA) is untested.
//!
//! How it works:
//! - `loader` opens libusdm.so.0 and libqat.so.4 with `RTLD_LOCAL | RTLD_DEEPBIND`,
//!   calls `icp_sal_userStart(section)` (default "SSL"), starts every asymmetric crypto
//!   instance with address translation `qaeVirtToPhysNUMA`.
//! - RSA: the engine pads in Rust (`scheme::prepare`); here the raw private operation
//!   goes to `cpaCyRsaDecrypt` with the CRT key (representation type 2: p, q, dP, dQ,
//!   qInv; type 1 `n, d` for keys without two primes).
//! - ECDSA P-256/P-384: `cpaCyEcdsaSignRS` with a fresh nonce `k` from the system CSPRNG
//!   (rejection-sampled in [1, n-1], never reused); the result is r || s, which
//!   `scheme::finish` DER-encodes.
//! - Every flat buffer lives in one pinned block from `qaeMemAllocNUMA` per operation,
//!   zeroed and freed (`qaeMemFreeNUMA`) in the callback before the job completes, or at
//!   shutdown for operations the device never answered. Blocks and bytes are counted
//!   when allocated and freed ([`QatStats`]`::pinned_*`, printed with the provider's
//!   stats), so pinned memory still held is visible at run time.
//! - Completions happen only inside [`Backend::poll`] (`icp_sal_CyPollInstance`), driven
//!   by the engine's poll thread.
//! - `CPA_STATUS_RETRY` (ring full) moves to the next instance; when every instance is
//!   full the job is refused as busy (back-pressure: the engine sends it to the software
//!   fallback when configured). `CPA_STATUS_FAIL` at submit or an error status in the
//!   callback fails the job (the engine redoes it in software when configured).
//!   `CPA_STATUS_RESTARTING`, or three failures in a row, take an instance out of
//!   rotation; after 100 ms one operation at a time probes it, and a success re-admits it.
//! - Per-request errors (`CPA_STATUS_INVALID_PARAM` from qatlib's parameter checks, an
//!   ECDSA signStatus of false, an RSA input not below the modulus) fail that operation
//!   only and never count toward eviction.
//! - Only asymmetric-capable instances are started (`cpaGetInstances(
//!   CPA_ACC_SVC_TYPE_CRYPTO_ASYM)`, else `cpaCyQueryCapabilities`): qatlib refuses RSA and
//!   ECDSA on a Gen4 VF's sym-only instances with `CPA_STATUS_FAIL`.
//! - Per-operation deadline ([`QatConfig::op_timeout`], default 5 s): qatlib reports
//!   neither a device reset nor a lost response. An operation past it fails over (or
//!   fails); its context and pinned block stay quarantined (counted) until the device
//!   answers late or qatlib stops, so nothing the device may still write is freed; its
//!   instance leaves the rotation and is probed again.

mod loader;
pub(crate) mod sys;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Backend, Job, OpError, Rejected};
use crate::key::{KeyMaterial, PrivateKey};
use crate::scheme::RawOp;
use loader::{status_text, Inst, Runtime};
use sys::{CpaFlatBuffer, CpaStatus};

pub use loader::{Inventory, ENV_LIB, ENV_LIB_DIR, ENV_USDM_LIB, LIBQAT, LIBUSDM};

/// Default qatlib configuration section (upstream Envoy and qatlib's samples use "SSL").
pub const DEFAULT_SECTION: &str = "SSL";

/// Default per-operation deadline: far above a device's normal latency (tens to hundreds
/// of microseconds for RSA-2048 / P-256 on 4xxx), so only a lost response reaches it.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the QAT backend.
#[derive(Clone, Debug)]
pub struct QatConfig {
    /// Directory holding libqat.so.4 and libusdm.so.0 (else $ENVOY_QAT_LIB_DIR, the
    /// system search path, then the build's dependency directory).
    pub lib_dir: Option<PathBuf>,
    /// Explicit path of libqat.so.4 (else $ENVOY_QAT_LIB).
    pub qat_lib: Option<PathBuf>,
    /// Explicit path of libusdm.so.0 (else $ENVOY_QAT_USDM_LIB, else next to libqat).
    pub usdm_lib: Option<PathBuf>,
    /// qatlib configuration section passed to `icp_sal_userStart`.
    pub section: String,
    /// Most crypto instances to use (0 = all).
    pub max_instances: usize,
    /// Offload ECDSA too (upstream offloads RSA only).
    pub ecdsa: bool,
    /// Send RSA keys in CRT form (key representation type 2, the fast path); false
    /// sends `n, d` (type 1), as for keys without two primes.
    pub rsa_crt: bool,
    /// Longest time an operation may stay on the device. qatlib does not report device
    /// resets or lost responses to the library (its README, "Limitations"): past this
    /// the operation fails over (or fails), its pinned memory stays quarantined until
    /// qatlib stops or the device answers late, and the instance is re-probed.
    pub op_timeout: Duration,
}

impl Default for QatConfig {
    fn default() -> Self {
        QatConfig {
            lib_dir: None,
            qat_lib: None,
            usdm_lib: None,
            section: DEFAULT_SECTION.into(),
            max_instances: 0,
            ecdsa: true,
            rsa_crt: true,
            op_timeout: DEFAULT_OP_TIMEOUT,
        }
    }
}

/// Counters of the QAT backend.
#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    completed: AtomicU64,
    retries: AtomicU64,
    busy: AtomicU64,
    submit_failures: AtomicU64,
    callback_failures: AtomicU64,
    restarting: AtomicU64,
    evictions: AtomicU64,
    readmissions: AtomicU64,
    reclaimed: AtomicU64,
    request_errors: AtomicU64,
    expired: AtomicU64,
    late_answers: AtomicU64,
    quarantined: AtomicU64,
    quarantined_bytes: AtomicU64,
}

/// A copy of the QAT backend's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QatStats {
    /// Requests the device accepted.
    pub submitted: u64,
    /// Callbacks with success.
    pub completed: u64,
    /// `CPA_STATUS_RETRY` answers at submit (ring full).
    pub retries: u64,
    /// Jobs refused because every instance was full.
    pub busy: u64,
    /// Submissions that failed (`CPA_STATUS_FAIL` or another error).
    pub submit_failures: u64,
    /// Callbacks with an error status.
    pub callback_failures: u64,
    /// `CPA_STATUS_RESTARTING` answers (submit or poll).
    pub restarting: u64,
    /// Times an instance left the rotation.
    pub evictions: u64,
    /// Times an instance came back after a successful probe.
    pub readmissions: u64,
    /// Operations never answered by the device, ended and freed at shutdown.
    pub reclaimed: u64,
    /// Requests qatlib or the device refused for their own content
    /// (`CPA_STATUS_INVALID_PARAM`, an ECDSA signStatus of false, an RSA input not below
    /// the modulus): failed alone, never counted against the instance.
    pub request_errors: u64,
    /// Operations past the per-operation deadline with no answer (failed over or
    /// failed; their instance left the rotation).
    pub expired: u64,
    /// Expired operations the device answered after all (their memory was freed then).
    pub late_answers: u64,
    /// Expired operations still unanswered: their pinned blocks stay allocated
    /// (quarantined) because the device may still write them, until qatlib stops.
    pub quarantined: u64,
    /// Bytes of those blocks.
    pub quarantined_bytes: u64,
    /// Operations in the device now.
    pub outstanding: u64,
    /// Pinned blocks allocated (`qaeMemAllocNUMA`) since the backend started: one per
    /// operation built.
    pub pinned_allocs: u64,
    /// Bytes of those blocks.
    pub pinned_alloc_bytes: u64,
    /// `qaeMemAllocNUMA` calls that returned NULL (pinned memory exhausted).
    pub pinned_alloc_failures: u64,
    /// Pinned blocks allocated and not freed yet. Between operations this must return to
    /// 0: anything else is pinned (non-swappable, device-visible) memory leaking.
    pub pinned_outstanding: u64,
    /// Bytes of those blocks.
    pub pinned_outstanding_bytes: u64,
}

impl std::fmt::Display for QatStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "submitted={} completed={} retries={} busy={} submit_failures={} callback_failures={} \
             restarting={} evictions={} readmissions={} reclaimed={} request_errors={} \
             expired={} late_answers={} quarantined={} quarantined_bytes={} outstanding={} \
             pinned_allocs={} pinned_alloc_bytes={} pinned_alloc_failures={} \
             pinned_outstanding={} pinned_outstanding_bytes={}",
            self.submitted,
            self.completed,
            self.retries,
            self.busy,
            self.submit_failures,
            self.callback_failures,
            self.restarting,
            self.evictions,
            self.readmissions,
            self.reclaimed,
            self.request_errors,
            self.expired,
            self.late_answers,
            self.quarantined,
            self.quarantined_bytes,
            self.outstanding,
            self.pinned_allocs,
            self.pinned_alloc_bytes,
            self.pinned_alloc_failures,
            self.pinned_outstanding,
            self.pinned_outstanding_bytes,
        )
    }
}

/// Pinned-memory accounting: every block from `qaeMemAllocNUMA` is counted when
/// allocated and when freed, so outstanding pinned memory is visible in the stats (on
/// hardware as on the simulator).
#[derive(Debug, Default)]
struct PinnedCounters {
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    alloc_failures: AtomicU64,
    frees: AtomicU64,
    free_bytes: AtomicU64,
}

impl PinnedCounters {
    /// (allocated blocks, allocated bytes, outstanding blocks, outstanding bytes).
    fn read(&self) -> (u64, u64, u64, u64) {
        // Frees first: a block is counted as allocated before it can be freed (and the
        // release/acquire pairs order the two), so the later allocation loads are never
        // behind the free loads.
        let frees = self.frees.load(Ordering::Acquire);
        let free_bytes = self.free_bytes.load(Ordering::Acquire);
        let allocs = self.allocs.load(Ordering::Acquire);
        let alloc_bytes = self.alloc_bytes.load(Ordering::Acquire);
        (
            allocs,
            alloc_bytes,
            allocs.saturating_sub(frees),
            alloc_bytes.saturating_sub(free_bytes),
        )
    }
}

/// One operation handed to qatlib, keyed by its context's address. The job lives here,
/// not in the context: whoever takes it under the lock (the callback, or the deadline
/// scan) ends it, so it ends exactly once.
struct Entry {
    job: Option<Job>,
    inst: usize,
    deadline_ms: u64,
    bytes: u64,
    /// Past its deadline: the job has been ended; the context and its pinned block wait
    /// for a late answer or for qatlib to stop (quarantine).
    expired: bool,
}

struct Shared {
    rt: Arc<Runtime>,
    counters: Counters,
    pinned: Arc<PinnedCounters>,
    /// Operation contexts handed to qatlib (addresses of leaked `Box<OpCtx>`).
    outstanding: Mutex<HashMap<usize, Entry>>,
    op_timeout_ms: u64,
    /// Next deadline scan (runtime ms).
    next_scan_ms: AtomicU64,
}

/// The QAT backend.
pub struct QatBackend {
    shared: Arc<Shared>,
    next: AtomicUsize,
    closed: AtomicBool,
    /// Submissions hold it shared; shutdown takes it exclusively before it stops qatlib
    /// and reclaims what the device still holds, so no submission is mid-call then.
    gate: RwLock<()>,
    ecdsa: bool,
    rsa_crt: bool,
}

impl std::fmt::Debug for QatBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QatBackend")
            .field("library", &self.shared.rt.lib.qat_path)
            .field("section", &self.shared.rt.section)
            .field("instances", &self.shared.rt.instances.len())
            .finish()
    }
}

impl QatBackend {
    /// Load qatlib and start its crypto instances. The error is the one-line reason the
    /// backend is unavailable.
    pub fn new(cfg: &QatConfig) -> Result<Self, String> {
        let rt = loader::runtime(cfg)?;
        Ok(QatBackend {
            shared: Arc::new(Shared {
                rt,
                counters: Counters::default(),
                pinned: Arc::new(PinnedCounters::default()),
                outstanding: Mutex::new(HashMap::new()),
                op_timeout_ms: (cfg.op_timeout.as_millis() as u64).max(1),
                next_scan_ms: AtomicU64::new(0),
            }),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            gate: RwLock::new(()),
            ecdsa: cfg.ecdsa,
            rsa_crt: cfg.rsa_crt,
        })
    }

    /// Crypto instances in use.
    pub fn instances(&self) -> usize {
        self.shared.rt.instances.len()
    }

    /// What qatlib reported at start (sym / asym / dc instances) and which instances
    /// the backend uses.
    pub fn inventory(&self) -> &Inventory {
        &self.shared.rt.inventory
    }

    /// Instances out of rotation now.
    pub fn instances_down(&self) -> usize {
        self.shared
            .rt
            .instances
            .iter()
            .filter(|i| i.is_down())
            .count()
    }

    /// The library in use.
    pub fn library(&self) -> &str {
        &self.shared.rt.lib.qat_path
    }

    /// A copy of the counters.
    pub fn stats(&self) -> QatStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = &self.shared.pinned;
        let (pinned_allocs, pinned_alloc_bytes, pinned_outstanding, pinned_outstanding_bytes) =
            p.read();
        QatStats {
            submitted: l(&c.submitted),
            completed: l(&c.completed),
            retries: l(&c.retries),
            busy: l(&c.busy),
            submit_failures: l(&c.submit_failures),
            callback_failures: l(&c.callback_failures),
            restarting: l(&c.restarting),
            evictions: l(&c.evictions),
            readmissions: l(&c.readmissions),
            reclaimed: l(&c.reclaimed),
            request_errors: l(&c.request_errors),
            expired: l(&c.expired),
            late_answers: l(&c.late_answers),
            quarantined: l(&c.quarantined),
            quarantined_bytes: l(&c.quarantined_bytes),
            outstanding: lock(&self.shared.outstanding).len() as u64,
            pinned_allocs,
            pinned_alloc_bytes,
            pinned_alloc_failures: l(&p.alloc_failures),
            pinned_outstanding,
            pinned_outstanding_bytes,
        }
    }
}

impl QatBackend {
    /// End the operations past their deadline (from the poll thread, at most every
    /// quarter deadline). qatlib reports neither a device reset nor a lost response
    /// (its README, "Limitations"), so without this such an operation would stay in
    /// flight for ever. Its job fails now (the engine fails over when configured); its
    /// context and pinned block stay (quarantined: the device may still write them)
    /// until a late answer or qatlib's stop; its instance leaves the rotation and is
    /// probed again later.
    fn expire_overdue(&self) {
        let shared = &self.shared;
        let rt = &shared.rt;
        let now = rt.now_ms();
        let next = shared.next_scan_ms.load(Ordering::Relaxed);
        let step = (shared.op_timeout_ms / 4).clamp(1, 100);
        if now < next
            || shared
                .next_scan_ms
                .compare_exchange(next, now + step, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let c = &shared.counters;
        let mut overdue = Vec::new();
        for e in lock(&shared.outstanding).values_mut() {
            if e.expired || now < e.deadline_ms {
                continue;
            }
            e.expired = true;
            c.expired.fetch_add(1, Ordering::Relaxed);
            c.quarantined.fetch_add(1, Ordering::Relaxed);
            c.quarantined_bytes.fetch_add(e.bytes, Ordering::Relaxed);
            if let Some(job) = e.job.take() {
                overdue.push((job, e.inst));
            }
        }
        for (job, idx) in overdue {
            let inst = &rt.instances[idx];
            if inst.failed(rt, true) {
                c.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %inst.name, timeout_ms = shared.op_timeout_ms, "QAT instance gave no answer within the operation deadline (device reset or lost response); out of rotation");
            }
            job.complete(Err(OpError::Failed(format!(
                "QAT instance {} gave no answer within {} ms (a device reset or a lost response, which qatlib does not report); the operation's pinned memory stays quarantined until qatlib stops",
                inst.name, shared.op_timeout_ms
            ))));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------ pinned memory

/// One pinned block from `qaeMemAllocNUMA`, zeroed and freed on drop; counted in
/// [`PinnedCounters`] from allocation to free.
struct Pinned {
    lib: &'static loader::Lib,
    counters: Arc<PinnedCounters>,
    ptr: *mut u8,
    len: usize,
    used: usize,
}

// SAFETY: the block is plain memory owned by this value; qatlib only reads/writes it
// between submit and callback, while the owning OpCtx is parked in `outstanding`.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(
        lib: &'static loader::Lib,
        counters: &Arc<PinnedCounters>,
        len: usize,
        node: i32,
    ) -> Result<Self, OpError> {
        // SAFETY: plain allocation call; the result is checked.
        let ptr = unsafe { lib.usdm.qaeMemAllocNUMA(len, node, 64) }.cast::<u8>();
        if ptr.is_null() {
            counters.alloc_failures.fetch_add(1, Ordering::Relaxed);
            return Err(OpError::Busy(format!(
                "qaeMemAllocNUMA({len}) failed: pinned memory exhausted (raise the memlock limit / usdm pool)"
            )));
        }
        counters.allocs.fetch_add(1, Ordering::AcqRel);
        counters.alloc_bytes.fetch_add(len as u64, Ordering::AcqRel);
        Ok(Pinned {
            lib,
            counters: Arc::clone(counters),
            ptr,
            len,
            used: 0,
        })
    }

    /// A flat buffer of `len` bytes holding `data` left-padded with zeros.
    fn buffer(&mut self, len: usize, data: &[u8]) -> CpaFlatBuffer {
        let off = self.used;
        assert!(off + len <= self.len && data.len() <= len);
        self.used += len.next_multiple_of(8);
        // SAFETY: [off, off+len) lies inside the block (asserted above).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) };
        dst[len - data.len()..].copy_from_slice(data);
        CpaFlatBuffer {
            dataLenInBytes: len as u32,
            pData: dst.as_mut_ptr(),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: the block is ours and `len` bytes long; key material is wiped.
        unsafe { std::ptr::write_bytes(self.ptr, 0, self.len) };
        let mut p = self.ptr.cast::<c_void>();
        // SAFETY: `p` came from qaeMemAllocNUMA and is freed exactly once.
        unsafe { self.lib.usdm.qaeMemFreeNUMA(&mut p) };
        self.counters
            .free_bytes
            .fetch_add(self.len as u64, Ordering::AcqRel);
        self.counters.frees.fetch_add(1, Ordering::AcqRel);
    }
}

fn read_flat(b: &CpaFlatBuffer) -> Vec<u8> {
    // SAFETY: the buffer points into our pinned block, `dataLenInBytes` long.
    unsafe { std::slice::from_raw_parts(b.pData, b.dataLenInBytes as usize) }.to_vec()
}

// ------------------------------------------------------------------ operations

enum OpData {
    Rsa {
        op: sys::CpaCyRsaDecryptOpData,
        key: sys::CpaCyRsaPrivateKey,
        out: CpaFlatBuffer,
    },
    Ecdsa {
        op: sys::CpaCyEcdsaSignRSOpData,
        r: CpaFlatBuffer,
        s: CpaFlatBuffer,
        status: sys::CpaBoolean,
    },
}

struct OpCtx {
    shared: Arc<Shared>,
    inst: usize,
    data: OpData,
    // Dropped after `data` (which points into it).
    mem: Option<Pinned>,
}

/// Big-endian `v` as exactly `len` bytes (leading zeros stripped or added).
fn fit(v: &[u8], len: usize) -> Option<Zeroizing<Vec<u8>>> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[start..];
    if v.len() > len {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    out[len - v.len()..].copy_from_slice(v);
    Some(out)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("curve constant"))
        .collect()
}

struct Curve {
    q: &'static str,
    a: &'static str,
    b: &'static str,
    gx: &'static str,
    gy: &'static str,
    n: &'static str,
}

/// SEC 2 / FIPS 186-4 domain parameters.
const P256: Curve = Curve {
    q: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
    a: "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
    b: "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
    gx: "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
    gy: "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    n: "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
};
const P384: Curve = Curve {
    q: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
    a: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc",
    b: "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
    gx: "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
    gy: "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
    n: "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
};

/// A fresh nonce in [1, n-1] from the system CSPRNG (rejection sampling: uniform).
fn nonce(n: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let mut k = Zeroizing::new(vec![0u8; n.len()]);
    loop {
        getrandom::fill(&mut k)
            .map_err(|e| OpError::Failed(format!("system random source failed: {e}")))?;
        if k.iter().any(|&b| b != 0) && k.as_slice() < n {
            return Ok(k);
        }
    }
}

/// The digest as an integer for a curve of `n` bytes (SEC 1: leftmost bytes).
fn field_sized(digest: &[u8], n: usize) -> Vec<u8> {
    if digest.len() >= n {
        digest[..n].to_vec()
    } else {
        let mut v = vec![0u8; n - digest.len()];
        v.extend_from_slice(digest);
        v
    }
}

fn build(
    job: &Job,
    lib: &'static loader::Lib,
    pinned: &Arc<PinnedCounters>,
    rsa_crt: bool,
    node: i32,
) -> Result<(OpData, Pinned), OpError> {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let bad = |why: &str| OpError::Failed(format!("QAT: {why}"));
    match (&job.op, job.key.material()) {
        (RawOp::RsaPrivate(input), KeyMaterial::Rsa(key)) => {
            let k = key.size();
            if input.len() != k {
                return Err(bad("RSA input is not the modulus length"));
            }
            // qatlib checks 0 < c < n only for a type-1 key; with CRT the device would
            // return (c mod n)^d. A TLS 1.2 client can send any ciphertext: refuse it, as
            // BoringSSL's own RSA does.
            let n = fit(&key.n().to_be_bytes(), k).ok_or_else(|| bad("modulus size"))?;
            if input.as_slice() >= n.as_slice() {
                return Err(bad(
                    "RSA input is not below the modulus (malformed ciphertext)",
                ));
            }
            let half = k / 2;
            let crt = (|| {
                let primes = key.primes();
                if !rsa_crt || primes.len() != 2 || k % 2 != 0 {
                    return None;
                }
                let qinv = key.crt_coefficient()?;
                Some([
                    fit(&primes[0].as_ref().to_be_bytes(), half)?,
                    fit(&primes[1].as_ref().to_be_bytes(), half)?,
                    fit(&key.dp()?.to_be_bytes(), half)?,
                    fit(&key.dq()?.to_be_bytes(), half)?,
                    fit(&Zeroizing::new(qinv.to_be_bytes()), half)?,
                ])
            })();
            let mut key_data = sys::CpaCyRsaPrivateKey {
                version: sys::_CpaCyRsaVersion_CPA_CY_RSA_VERSION_TWO_PRIME,
                ..Default::default()
            };
            let mut mem;
            match crt {
                Some([p, q, dp, dq, qinv]) => {
                    mem = Pinned::new(
                        lib,
                        pinned,
                        5 * half.next_multiple_of(8) + 2 * k.next_multiple_of(8),
                        node,
                    )?;
                    key_data.privateKeyRepType =
                        sys::_CpaCyRsaPrivateKeyRepType_CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2;
                    key_data.privateKeyRep2 = sys::CpaCyRsaPrivateKeyRep2 {
                        prime1P: mem.buffer(half, &p),
                        prime2Q: mem.buffer(half, &q),
                        exponent1Dp: mem.buffer(half, &dp),
                        exponent2Dq: mem.buffer(half, &dq),
                        coefficientQInv: mem.buffer(half, &qinv),
                    };
                }
                None => {
                    let n = fit(&key.n().to_be_bytes(), k).ok_or_else(|| bad("modulus size"))?;
                    let d = fit(&key.d().to_be_bytes(), k).ok_or_else(|| bad("exponent size"))?;
                    mem = Pinned::new(lib, pinned, 4 * k.next_multiple_of(8), node)?;
                    key_data.privateKeyRepType =
                        sys::_CpaCyRsaPrivateKeyRepType_CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_1;
                    key_data.privateKeyRep1 = sys::CpaCyRsaPrivateKeyRep1 {
                        modulusN: mem.buffer(k, &n),
                        privateExponentD: mem.buffer(k, &d),
                    };
                }
            }
            let op = sys::CpaCyRsaDecryptOpData {
                pRecipientPrivateKey: std::ptr::null_mut(),
                inputData: mem.buffer(k, input),
            };
            let out = mem.buffer(k, &[]);
            Ok((
                OpData::Rsa {
                    op,
                    key: key_data,
                    out,
                },
                mem,
            ))
        }
        (RawOp::EcdsaSign(digest), KeyMaterial::P256(_) | KeyMaterial::P384(_)) => {
            let (curve, d) = match job.key.material() {
                KeyMaterial::P256(k) => (&P256, Zeroizing::new(k.to_bytes().to_vec())),
                KeyMaterial::P384(k) => (&P384, Zeroizing::new(k.to_bytes().to_vec())),
                KeyMaterial::Rsa(_) => unreachable!("matched above"),
            };
            let n = unhex(curve.n);
            let len = n.len();
            let k = nonce(&n)?;
            let m = field_sized(digest, len);
            let mut mem = Pinned::new(lib, pinned, 11 * len.next_multiple_of(8), node)?;
            let op = sys::CpaCyEcdsaSignRSOpData {
                xg: mem.buffer(len, &unhex(curve.gx)),
                yg: mem.buffer(len, &unhex(curve.gy)),
                n: mem.buffer(len, &n),
                q: mem.buffer(len, &unhex(curve.q)),
                a: mem.buffer(len, &unhex(curve.a)),
                b: mem.buffer(len, &unhex(curve.b)),
                k: mem.buffer(len, &k),
                m: mem.buffer(len, &m),
                d: mem.buffer(len, &d),
                fieldType: sys::_CpaCyEcFieldType_CPA_CY_EC_FIELD_TYPE_PRIME,
            };
            let r = mem.buffer(len, &[]);
            let s = mem.buffer(len, &[]);
            Ok((
                OpData::Ecdsa {
                    op,
                    r,
                    s,
                    status: sys::_CpaBoolean_CPA_FALSE,
                },
                mem,
            ))
        }
        (op, _) => Err(bad(&format!(
            "{op:?} does not fit a {} key",
            job.key.key_type()
        ))),
    }
}

enum Submit {
    Accepted,
    Retry,
    Restarting,
    Failed(CpaStatus),
}

/// Hand one prepared operation to one instance.
///
/// # Safety
/// `ctx` is a leaked `Box<OpCtx>` registered in `outstanding`; on anything but
/// `Accepted` qatlib did not take it and the caller still owns it.
unsafe fn submit_to(ctx: *mut OpCtx, inst: &Inst) -> Submit {
    // SAFETY: the caller owns `ctx` until qatlib accepts it; the poll thread cannot see
    // it before that.
    let c = unsafe { &mut *ctx };
    let lib = c.shared.rt.lib;
    let tag = ctx.cast::<c_void>();
    let s = match &mut c.data {
        OpData::Rsa { op, key, out } => {
            op.pRecipientPrivateKey = key;
            // SAFETY: op data, key and buffers live in the boxed context (and its pinned
            // block) until the callback frees them.
            unsafe {
                lib.qat
                    .cpaCyRsaDecrypt(inst.handle(), Some(rsa_cb), tag, op, out)
            }
        }
        OpData::Ecdsa { op, r, s, status } => {
            // SAFETY: as above.
            unsafe {
                lib.qat
                    .cpaCyEcdsaSignRS(inst.handle(), Some(ecdsa_cb), tag, op, status, r, s)
            }
        }
    };
    match s {
        0 => Submit::Accepted,
        sys::CPA_STATUS_RETRY => Submit::Retry,
        sys::CPA_STATUS_RESTARTING => Submit::Restarting,
        other => Submit::Failed(other),
    }
}

/// End an operation from its callback: copy the result out, free the pinned block,
/// then complete the job.
/// How an operation failed: the instance's fault (counted toward eviction) or the
/// request's own (qatlib's parameter checks, a signStatus of false): that request alone.
enum Failure {
    Instance(String),
    Request(String),
}

fn finish(mut ctx: Box<OpCtx>, result: Result<Vec<u8>, Failure>) {
    let shared = Arc::clone(&ctx.shared);
    let entry = lock(&shared.outstanding).remove(&(&*ctx as *const OpCtx as usize));
    shared.rt.completions.fetch_add(1, Ordering::Relaxed);
    let inst = &shared.rt.instances[ctx.inst];
    let c = &shared.counters;
    let (job, expired) = entry.map_or((None, false), |e| (e.job, e.expired));
    if expired {
        // A late answer: its job already ended at the deadline; the device is done with
        // the block now, so it leaves quarantine and is freed.
        c.late_answers.fetch_add(1, Ordering::Relaxed);
        c.quarantined.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &ctx.mem {
            c.quarantined_bytes
                .fetch_sub(m.len as u64, Ordering::Relaxed);
        }
        drop(ctx.mem.take());
        return;
    }
    match &result {
        Ok(_) => {
            c.completed.fetch_add(1, Ordering::Relaxed);
            if inst.ok() {
                c.readmissions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(instance = %inst.name, "QAT instance answered its probe; back in rotation");
            }
        }
        Err(Failure::Instance(why)) => {
            c.callback_failures.fetch_add(1, Ordering::Relaxed);
            if inst.failed(&shared.rt, false) {
                c.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %inst.name, %why, "QAT instance failing; out of rotation");
            }
        }
        Err(Failure::Request(_)) => {
            c.request_errors.fetch_add(1, Ordering::Relaxed);
            inst.end_probe();
        }
    }
    let result = result.map_err(|f| match f {
        Failure::Instance(why) | Failure::Request(why) => why,
    });
    drop(ctx.mem.take());
    drop(ctx);
    if let Some(job) = job {
        job.complete(result.map_err(OpError::Failed));
    }
}

unsafe extern "C" fn rsa_cb(
    tag: *mut c_void,
    status: CpaStatus,
    _op: *mut c_void,
    _out: *mut CpaFlatBuffer,
) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `tag` is the leaked Box<OpCtx> we passed at submit; qatlib calls the
        // callback once.
        let ctx = unsafe { Box::from_raw(tag.cast::<OpCtx>()) };
        let result = match (&ctx.data, status) {
            (OpData::Rsa { out, .. }, 0) => Ok(read_flat(out)),
            (_, sys::CPA_STATUS_INVALID_PARAM) => Err(Failure::Request(format!(
                "cpaCyRsaDecrypt callback status {}: the device refused this request",
                status_text(status)
            ))),
            (_, s) => Err(Failure::Instance(format!(
                "cpaCyRsaDecrypt callback status {}",
                status_text(s)
            ))),
        };
        finish(ctx, result);
    });
    if r.is_err() {
        tracing::error!("panic in the QAT RSA callback (caught)");
    }
}

unsafe extern "C" fn ecdsa_cb(
    tag: *mut c_void,
    status: CpaStatus,
    _op: *mut c_void,
    ok: sys::CpaBoolean,
    _r: *mut CpaFlatBuffer,
    _s: *mut CpaFlatBuffer,
) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: as in rsa_cb.
        let ctx = unsafe { Box::from_raw(tag.cast::<OpCtx>()) };
        let result = match (&ctx.data, status, ok) {
            (OpData::Ecdsa { r, s, .. }, 0, sys::_CpaBoolean_CPA_TRUE) => {
                let mut v = read_flat(r);
                v.extend_from_slice(&read_flat(s));
                Ok(v)
            }
            // The device ran and said this signature did not work out (or refused the
            // request's values): this request's fault, not the instance's.
            (_, s @ (0 | sys::CPA_STATUS_INVALID_PARAM), ok) => Err(Failure::Request(format!(
                "cpaCyEcdsaSignRS callback status {}, signStatus {ok}",
                status_text(s)
            ))),
            (_, s, ok) => Err(Failure::Instance(format!(
                "cpaCyEcdsaSignRS callback status {}, signStatus {ok}",
                status_text(s)
            ))),
        };
        finish(ctx, result);
    });
    if r.is_err() {
        tracing::error!("panic in the QAT ECDSA callback (caught)");
    }
}

impl Backend for QatBackend {
    fn name(&self) -> &'static str {
        "qat"
    }

    fn availability(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("QAT backend shut down".into());
        }
        let rt = &self.shared.rt;
        if rt.instances.iter().any(|i| i.usable(rt)) {
            Ok(())
        } else {
            Err(format!(
                "all {} QAT instances are out of rotation (failing or restarting)",
                rt.instances.len()
            ))
        }
    }

    fn supports(&self, key: &PrivateKey) -> bool {
        key.key_type().is_rsa() || self.ecdsa
    }

    fn needs_polling(&self) -> bool {
        true
    }

    fn stats_line(&self) -> Option<String> {
        Some(self.stats().to_string())
    }

    fn submit(&self, job: Job) -> Result<(), Rejected> {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return Err(Rejected {
                job,
                error: OpError::Unavailable("QAT backend shut down".into()),
            });
        }
        let shared = &self.shared;
        let rt = &shared.rt;
        let n = rt.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Allocate on the node of the instance the operation will most likely go to
        // (the first in rotation from `start`).
        let node = (0..n)
            .map(|i| &rt.instances[(start + i) % n])
            .find(|i| i.usable(rt))
            .map_or(0, |i| i.node);
        let (data, mem) = match build(&job, rt.lib, &shared.pinned, self.rsa_crt, node) {
            Ok(v) => v,
            Err(error) => return Err(Rejected { job, error }),
        };
        let bytes = mem.len as u64;
        let ptr = Box::into_raw(Box::new(OpCtx {
            shared: Arc::clone(shared),
            inst: 0,
            data,
            mem: Some(mem),
        }));
        let mut job = Some(job);
        let c = &shared.counters;
        let mut full = 0;
        let mut error = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let inst = &rt.instances[idx];
            let Some(probe) = inst.claim(rt) else {
                continue;
            };
            // SAFETY: we own `ptr` until qatlib accepts it.
            unsafe { (*ptr).inst = idx };
            lock(&shared.outstanding).insert(
                ptr as usize,
                Entry {
                    job: job.take(),
                    inst: idx,
                    deadline_ms: rt.now_ms() + shared.op_timeout_ms,
                    bytes,
                    expired: false,
                },
            );
            // SAFETY: `ptr` is a leaked Box<OpCtx> registered just above.
            let r = unsafe { submit_to(ptr, inst) };
            if let Submit::Accepted = r {
                c.submitted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Not accepted: no callback and no deadline scan can have taken the job.
            job = lock(&shared.outstanding)
                .remove(&(ptr as usize))
                .and_then(|e| e.job);
            if probe {
                inst.end_probe();
            }
            match r {
                Submit::Accepted => unreachable!(),
                Submit::Retry => {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    full += 1;
                }
                Submit::Restarting => {
                    c.restarting.fetch_add(1, Ordering::Relaxed);
                    if inst.failed(rt, true) {
                        c.evictions.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %inst.name, "QAT instance restarting; out of rotation");
                    }
                }
                Submit::Failed(s @ sys::CPA_STATUS_INVALID_PARAM) => {
                    // qatlib's parameter checks refused this request (an unusual key or
                    // input): it fails alone; the instance is fine.
                    c.request_errors.fetch_add(1, Ordering::Relaxed);
                    error = Some(OpError::Failed(format!(
                        "QAT instance {} refused this request: {} (qatlib's parameter checks: the key or input is not one the device takes)",
                        inst.name,
                        status_text(s)
                    )));
                    break;
                }
                Submit::Failed(s) => {
                    c.submit_failures.fetch_add(1, Ordering::Relaxed);
                    if inst.failed(rt, false) {
                        c.evictions.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %inst.name, status = %status_text(s), "QAT instance failing; out of rotation");
                    }
                    error = Some(OpError::Failed(format!(
                        "QAT instance {} refused the request: {}",
                        inst.name,
                        status_text(s)
                    )));
                    break;
                }
            }
        }
        // SAFETY: qatlib did not take `ptr`; we own it again.
        drop(unsafe { Box::from_raw(ptr) });
        let job = job.expect("job present until accepted");
        let error = error.unwrap_or_else(|| {
            if full > 0 {
                c.busy.fetch_add(1, Ordering::Relaxed);
                OpError::Busy(format!(
                    "{full} of {n} QAT instances answered CPA_STATUS_RETRY (rings full), the rest are out of rotation"
                ))
            } else {
                OpError::Unavailable(format!(
                    "all {n} QAT instances are out of rotation (failing or restarting)"
                ))
            }
        });
        Err(Rejected { job, error })
    }

    fn poll(&self) -> usize {
        let rt = &self.shared.rt;
        if rt.is_stopped() {
            return 0;
        }
        let before = rt.completions.load(Ordering::Relaxed);
        for inst in &rt.instances {
            // SAFETY: a started instance; callbacks run inside this call on this thread.
            let s = unsafe { rt.lib.qat.icp_sal_CyPollInstance(inst.handle(), 0) };
            match s {
                0 | sys::CPA_STATUS_RETRY => {}
                sys::CPA_STATUS_RESTARTING => {
                    self.shared
                        .counters
                        .restarting
                        .fetch_add(1, Ordering::Relaxed);
                    if inst.failed(rt, true) {
                        self.shared
                            .counters
                            .evictions
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %inst.name, "QAT instance restarting; out of rotation");
                    }
                }
                other => {
                    if inst.failed(rt, false) {
                        self.shared
                            .counters
                            .evictions
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %inst.name, status = %status_text(other), "polling QAT instance failed; out of rotation");
                    }
                }
            }
        }
        self.expire_overdue();
        rt.completions.load(Ordering::Relaxed).wrapping_sub(before)
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = &self.shared;
        // Let the device answer what it holds (bounded), so its memory is not freed
        // under it.
        let deadline = Instant::now() + Duration::from_millis(500);
        let waiting = || lock(&shared.outstanding).values().any(|e| !e.expired);
        while waiting() && Instant::now() < deadline {
            if self.poll() == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // Wait for submissions in progress; later ones see `closed`.
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let last = shared.rt.users.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last {
            // Another backend keeps qatlib running and polls: late callbacks still free
            // their own memory.
            return;
        }
        shared.rt.stop();
        // No callback runs after the instances stopped: end and free what is left.
        let rest: Vec<(usize, Entry)> = lock(&shared.outstanding).drain().collect();
        for (p, e) in rest {
            // SAFETY: each address is a leaked Box<OpCtx> qatlib accepted and will never
            // call back for (instances stopped); it is removed from the set once.
            let ctx = unsafe { Box::from_raw(p as *mut OpCtx) };
            shared.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            if e.expired {
                // Out of quarantine: qatlib is stopped, the device no longer writes it.
                shared.counters.quarantined.fetch_sub(1, Ordering::Relaxed);
                shared
                    .counters
                    .quarantined_bytes
                    .fetch_sub(e.bytes, Ordering::Relaxed);
            }
            let job = e.job;
            drop(ctx);
            if let Some(job) = job {
                job.complete(Err(OpError::Shutdown));
            }
        }
    }
}

impl Drop for QatBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The QAT backend's stand-in when qatlib is unusable and the configuration still asks
/// for QAT with software fallback: reports the reason and refuses every job, so the
/// engine runs each operation on the fallback (and counts it).
#[derive(Debug)]
pub struct UnavailableQat {
    reason: String,
}

impl UnavailableQat {
    /// A stand-in that refuses with `reason`.
    pub fn new(reason: String) -> Self {
        UnavailableQat { reason }
    }
}

impl Backend for UnavailableQat {
    fn name(&self) -> &'static str {
        "qat"
    }

    fn availability(&self) -> Result<(), String> {
        Err(self.reason.clone())
    }

    fn submit(&self, job: Job) -> Result<(), Rejected> {
        Err(Rejected {
            job,
            error: OpError::Unavailable(self.reason.clone()),
        })
    }
}
