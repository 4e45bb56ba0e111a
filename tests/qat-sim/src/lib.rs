//! qat-sim: a software qatlib for envoy-qat's tests.
//!
//! A cdylib that exports the subset of qatlib (`libqat.so.4`) and usdm (`libusdm.so.0`)
//! that envoy-qat's QAT backend calls, built from the same bindgen'd headers: every
//! exported function's signature is checked at compile time against the field types of
//! bindgen's `QatLib` struct (see [`signature_checks`]). The backend loads it through the
//! very same dlopen path as the real library.
//!
//! What it does, like a device:
//! - real arithmetic: RSA (key representation type 1 `n, d` and type 2 CRT `p, q, dP,
//!   dQ, qInv`) and ECDSA P-256/P-384 `r, s` for a caller-supplied nonce `k` (curve
//!   parameters passed in are checked), with the system's libcrypto.so.3 so that it is
//!   fast enough for benchmarks to measure the caller (see [`ossl`]), else (or with
//!   `QAT_SIM_ARITH=bigint`) with num-bigint and the p256/p384 crates;
//! - work runs on its own worker thread(s); a request completes (output written,
//!   callback called) ONLY inside `icp_sal_CyPollInstance`, and not before its simulated
//!   device latency has passed;
//! - each instance has a finite ring: a submission beyond it returns `CPA_STATUS_RETRY`;
//! - every flat buffer handed to it must lie inside memory from `qaeMemAllocNUMA`
//!   (else `CPA_STATUS_INVALID_PARAM`), and it counts pinned allocations and frees;
//! - deterministic (seeded) fault injection per instance: fail at submit, fail in the
//!   callback, spurious RETRY, slow responses, periodic restarts (in-flight requests then
//!   complete with `CPA_STATUS_FAIL`; submissions during the restart get
//!   `CPA_STATUS_RESTARTING`), or no device at all (`icp_sal_userStart` fails and prints
//!   "Failed to start <section>" as the real library does).
//!
//! Like qatlib (read from its sources, not guessed):
//! - typed instances (`types=asym+sym+dc`, `QAT_SIM_TYPES`): `cpaCyGetInstances` returns
//!   every crypto instance, sym-only ones included, as on a Gen4 VF split by qatmgr;
//!   `cpaGetInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM)` the asymmetric ones (or generic
//!   crypto ones when there are none); `cpaCyQueryCapabilities` says what each offers; an
//!   RSA or ECDSA request on a sym-only or compression handle gets CPA_STATUS_FAIL
//!   (SAL_CHECK_INSTANCE_TYPE);
//! - qatlib's RSA parameter checks (version, representation, operation size, top bits and
//!   oddness of n or p and q, 0 < c < n for type 1, CRT exponent ranges): INVALID_PARAM;
//! - each buffer's device address comes from the translation function the caller set
//!   with `cpaCySetAddressTranslation` (else usdm's, counted), and 0 is refused;
//! - per-instance NUMA nodes (`nodes=0+1`, reported as `nodeAffinity`); buffers allocated
//!   on another node than their instance's are counted;
//! - `icp_sal_userStart` is reference-counted (a later start succeeds, only the last
//!   stop stops); `qaeMemAllocNUMA` refuses a zero size or a non-power-of-two alignment;
//! - faults qatlib's README admits it does not report: `lost=P` (a response never
//!   arrives; its ring slot stays taken until a reset) and `reset_every_ms=N` (a device
//!   reset without notice: what the ring held is dropped, no callback, no RESTARTING).
//!
//! Configuration, read at `icp_sal_userStart`: the string given to
//! [`qat_sim_configure`] if any, else the environment: `QAT_SIM_INSTANCES`,
//! `QAT_SIM_RING`, `QAT_SIM_LATENCY_US`, `QAT_SIM_SEED`, `QAT_SIM_WORKERS`,
//! `QAT_SIM_SECTION`, `QAT_SIM_NO_DEVICE`, `QAT_SIM_FAULT_INSTANCES` (e.g. `0+2`) and
//! `QAT_SIM_FAULTS` (e.g. `submit_fail=0.01,cb_fail=0.01,retry=0.1,slow=0.01,slow_us=5000,
//! restart_every_ms=200,restart_ms=20`). The configure string takes the same keys in one
//! comma-separated list (`instances=2,ring=64,latency_us=50,cb_fail=0.1,...`).
//!
//! For tests: `qat_sim_counter(name)` reads counters (which arithmetic ran included);
//! `qat_sim_hold(1)` holds every response in the device until `qat_sim_hold(0)`, so tests
//! wait on events, not on a latency long enough for a slow machine; `QAT_SIM_LOG_ARITH=1`
//! prints once per kind which arithmetic computed an operation (for scripts).
//!
//! QATzip: [`qatzip`] exports the QATzip 1.3.1 subset envoy-qat calls from the same
//! library (point `ENVOY_QATZIP_LIB` at it), with a configurable number of DC instances
//! and QATzip's silent software fallback when calls outnumber them.
//!
//! It is a test double for qatlib's API contract, not a model of QAT hardware timing.
#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::Layout;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use num_bigint::BigUint;

mod ossl;
mod qatzip;

#[allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code,
    unused_imports,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/qat_sys.rs"));
}
use sys::*;

const SUCCESS: CpaStatus = CPA_STATUS_SUCCESS as CpaStatus;
const FAIL: CpaStatus = CPA_STATUS_FAIL;
const RETRY: CpaStatus = CPA_STATUS_RETRY;
const INVALID: CpaStatus = CPA_STATUS_INVALID_PARAM;
const RESTARTING: CpaStatus = CPA_STATUS_RESTARTING;
const UNSUPPORTED: CpaStatus = CPA_STATUS_UNSUPPORTED;
const SVC_ASYM: CpaAccelerationServiceType =
    _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_ASYM;
const SVC_SYM: CpaAccelerationServiceType = _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_SYM;
const SVC_CRYPTO: CpaAccelerationServiceType = _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO;
const SVC_DC: CpaAccelerationServiceType =
    _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_DATA_COMPRESSION;
const REP_TYPE_1: CpaCyRsaPrivateKeyRepType =
    _CpaCyRsaPrivateKeyRepType_CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_1;
const REP_TYPE_2: CpaCyRsaPrivateKeyRepType =
    _CpaCyRsaPrivateKeyRepType_CPA_CY_RSA_PRIVATE_KEY_REP_TYPE_2;

// ---------------------------------------------------------------- configuration

#[derive(Clone, Debug)]
struct Config {
    instances: usize,
    ring: usize,
    latency: Duration,
    seed: u64,
    workers: usize,
    section: Option<String>,
    no_device: bool,
    fault_instances: Option<Vec<usize>>,
    submit_fail: f64,
    cb_fail: f64,
    retry: f64,
    slow_p: f64,
    slow: Duration,
    restart_every: Option<Duration>,
    restart_for: Duration,
    /// Per-instance service type (sym, asym, dc, cy); None = `instances` generic crypto.
    types: Option<Vec<Kind>>,
    /// Probability that the response to a request never arrives (faulty instances).
    lost: f64,
    /// Period of silent device resets (faulty instances): requests in the ring are
    /// dropped without a callback and without a RESTARTING status.
    reset_every: Option<Duration>,
    /// Per-instance NUMA node (`nodes=0+1`); default 0.
    nodes: Option<Vec<u32>>,
    /// `generic_api=0`: `cpaGetNumInstances`/`cpaGetInstances` answer
    /// CPA_STATUS_UNSUPPORTED, as from a library whose API predates typed instances.
    no_generic_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instances: 2,
            ring: 64,
            latency: Duration::ZERO,
            seed: 1,
            workers: 1,
            section: None,
            no_device: false,
            fault_instances: None,
            submit_fail: 0.0,
            cb_fail: 0.0,
            retry: 0.0,
            slow_p: 0.0,
            slow: Duration::from_millis(5),
            restart_every: None,
            restart_for: Duration::from_millis(20),
            types: None,
            lost: 0.0,
            reset_every: None,
            nodes: None,
            no_generic_api: false,
        }
    }
}

/// An instance's service type, as qatmgr splits a VF's rings: Gen4 crypto VFs carry
/// separate symmetric and asymmetric instances; older devices generic crypto ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Generic crypto (`SAL_SERVICE_TYPE_CRYPTO`): sym and asym.
    Cy,
    /// Symmetric only (`SAL_SERVICE_TYPE_CRYPTO_SYM`).
    Sym,
    /// Asymmetric only (`SAL_SERVICE_TYPE_CRYPTO_ASYM`).
    Asym,
    /// Compression (`SAL_SERVICE_TYPE_COMPRESSION`).
    Dc,
}

impl Kind {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "cy" => Ok(Kind::Cy),
            "sym" => Ok(Kind::Sym),
            "asym" => Ok(Kind::Asym),
            "dc" => Ok(Kind::Dc),
            o => Err(format!("types: \"{o}\" is not one of cy, sym, asym, dc")),
        }
    }
    fn crypto(self) -> bool {
        self != Kind::Dc
    }
    fn asym(self) -> bool {
        matches!(self, Kind::Cy | Kind::Asym)
    }
    fn sym(self) -> bool {
        matches!(self, Kind::Cy | Kind::Sym)
    }
}

impl Config {
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| format!("{key}={v}: {e}"))
        };
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("{key}={v}: {e}"))
        };
        match key.trim() {
            "instances" => self.instances = int(value)?.clamp(0, 64) as usize,
            "ring" => self.ring = int(value)?.max(1) as usize,
            "latency_us" => self.latency = Duration::from_micros(int(value)?),
            "seed" => self.seed = int(value)?,
            "workers" => self.workers = int(value)?.clamp(1, 16) as usize,
            "section" => self.section = Some(value.trim().to_string()),
            "no_device" => self.no_device = value.trim() != "0",
            "fault_instances" => {
                let v: Result<Vec<usize>, String> = value
                    .split('+')
                    .map(|s| int(s).map(|n| n as usize))
                    .collect();
                self.fault_instances = Some(v?);
            }
            "submit_fail" => self.submit_fail = num(value)?,
            "cb_fail" => self.cb_fail = num(value)?,
            "retry" => self.retry = num(value)?,
            "slow" => self.slow_p = num(value)?,
            "slow_us" => self.slow = Duration::from_micros(int(value)?),
            "restart_every_ms" => {
                let ms = int(value)?;
                self.restart_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "restart_ms" => self.restart_for = Duration::from_millis(int(value)?),
            "types" => {
                let v: Result<Vec<Kind>, String> = value.split('+').map(Kind::parse).collect();
                self.types = Some(v?);
            }
            "lost" => self.lost = num(value)?,
            "generic_api" => self.no_generic_api = value.trim() == "0",
            "nodes" => {
                let v: Result<Vec<u32>, String> =
                    value.split('+').map(|s| int(s).map(|n| n as u32)).collect();
                self.nodes = Some(v?);
            }
            "reset_every_ms" => {
                let ms = int(value)?;
                self.reset_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            other => return Err(format!("unknown qat-sim setting \"{other}\"")),
        }
        Ok(())
    }

    fn apply_list(&mut self, list: &str) -> Result<(), String> {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("qat-sim setting \"{item}\" is not key=value"))?;
            self.set(k, v)?;
        }
        Ok(())
    }

    fn from_env() -> Result<Self, String> {
        let mut c = Config::default();
        for (var, key) in [
            ("QAT_SIM_INSTANCES", "instances"),
            ("QAT_SIM_RING", "ring"),
            ("QAT_SIM_LATENCY_US", "latency_us"),
            ("QAT_SIM_SEED", "seed"),
            ("QAT_SIM_WORKERS", "workers"),
            ("QAT_SIM_SECTION", "section"),
            ("QAT_SIM_NO_DEVICE", "no_device"),
            ("QAT_SIM_FAULT_INSTANCES", "fault_instances"),
            ("QAT_SIM_TYPES", "types"),
        ] {
            if let Ok(v) = std::env::var(var) {
                c.set(key, &v)?;
            }
        }
        if let Ok(v) = std::env::var("QAT_SIM_FAULTS") {
            c.apply_list(&v)?;
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------- counters

static SUBMITS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static SUBMIT_FAULTS: AtomicU64 = AtomicU64::new(0);
static CB_FAULTS: AtomicU64 = AtomicU64::new(0);
static RESTARTS: AtomicU64 = AtomicU64::new(0);
static COMPLETIONS: AtomicU64 = AtomicU64::new(0);
static STARTS: AtomicU64 = AtomicU64::new(0);
static STOPS: AtomicU64 = AtomicU64::new(0);
static POLLS: AtomicU64 = AtomicU64::new(0);
static INVALID_PARAMS: AtomicU64 = AtomicU64::new(0);
/// Operations computed with libcrypto (the fast path) and with num-bigint / p256 / p384.
static ARITH_OSSL: AtomicU64 = AtomicU64::new(0);
static ARITH_BIGINT: AtomicU64 = AtomicU64::new(0);
/// Sum over delivered responses of the simulated device time: from submit until the
/// response was ready (its latency had passed and its arithmetic was done), in ns.
static DEVICE_NS: AtomicU64 = AtomicU64::new(0);
/// Sum over delivered responses of the time a ready response waited for the next
/// `icp_sal_CyPollInstance`, in ns: the latency the caller's polling added.
static POLL_WAIT_NS: AtomicU64 = AtomicU64::new(0);
static RSA_REP1: AtomicU64 = AtomicU64::new(0);
static RSA_REP2: AtomicU64 = AtomicU64::new(0);
static MEM_ALLOCS: AtomicU64 = AtomicU64::new(0);
static MEM_FREES: AtomicU64 = AtomicU64::new(0);
static MEM_BAD_FREES: AtomicU64 = AtomicU64::new(0);
/// `qaeMemAllocNUMA` calls refused as usdm refuses them (size 0, alignment not a power of 2).
static MEM_BAD_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Submissions on an instance of the wrong service type (qatlib: CPA_STATUS_FAIL).
static WRONG_TYPE: AtomicU64 = AtomicU64::new(0);
/// RSA requests refused by qatlib's parameter checks (CPA_STATUS_INVALID_PARAM).
static RSA_PARAM_REJECTS: AtomicU64 = AtomicU64::new(0);
/// Responses that never arrived (the `lost` fault and silent resets).
static LOST: AtomicU64 = AtomicU64::new(0);
/// Silent device resets.
static RESETS: AtomicU64 = AtomicU64::new(0);
/// `icp_sal_userStart` reference count (qatlib's start_ref_count).
static START_REFS: Mutex<u32> = Mutex::new(0);

/// While set, `icp_sal_CyPollInstance` delivers no response: requests stay in the device
/// (and in its rings) until a test releases them with `qat_sim_hold(0)`, so a test can
/// act on operations that are certainly still in flight without a latency it hopes is
/// long enough. Cleared by `icp_sal_userStart`.
static HOLD: AtomicBool = AtomicBool::new(false);

/// With `QAT_SIM_LOG_ARITH=1`, say on stderr, once per kind, which arithmetic computed an
/// operation ("qat-sim: computed an operation with libcrypto.so.3" or "... with num-bigint
/// / p256 / p384 (portable arithmetic)"): how a script that runs the simulator in another
/// process sees which path `QAT_SIM_ARITH` selected in that run.
fn note_arith(portable: bool) {
    static SAID: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    static LOG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*LOG.get_or_init(|| std::env::var("QAT_SIM_LOG_ARITH").is_ok_and(|v| v == "1")) {
        return;
    }
    if !SAID[usize::from(portable)].swap(true, Ordering::Relaxed) {
        if portable {
            eprintln!(
                "qat-sim: computed an operation with num-bigint / p256 / p384 (portable arithmetic)"
            );
        } else {
            eprintln!("qat-sim: computed an operation with libcrypto.so.3");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- pinned memory

/// Live allocations: start address -> (size, layout).
static MEM: Mutex<BTreeMap<usize, (Layout, c_int)>> = Mutex::new(BTreeMap::new());
/// Buffers submitted to an instance from memory allocated on another NUMA node
/// (cross-socket DMA on a 2-socket host).
static NUMA_MISMATCH: AtomicU64 = AtomicU64::new(0);
/// Submissions on an instance without a `cpaCySetAddressTranslation` function (qatlib
/// then uses its own; upstream and qatlib's samples always set usdm's).
static NO_V2P: AtomicU64 = AtomicU64::new(0);

/// The NUMA node `qaeMemAllocNUMA` was asked for, for the allocation holding `ptr`.
fn node_of(ptr: *const u8) -> Option<c_int> {
    let addr = ptr as usize;
    let mem = lock(&MEM);
    let (&start, &(layout, node)) = mem.range(..=addr).next_back()?;
    (addr < start + layout.size()).then_some(node)
}

fn is_pinned(ptr: *const u8, len: usize) -> bool {
    let addr = ptr as usize;
    let mem = lock(&MEM);
    match mem.range(..=addr).next_back() {
        Some((&start, (layout, _))) => addr + len <= start + layout.size(),
        None => false,
    }
}

/// `qaeMemAllocNUMA`: zeroed memory aligned to `phys_alignment_byte` (at least 64).
#[no_mangle]
pub extern "C" fn qaeMemAllocNUMA(
    size: usize,
    node: c_int,
    phys_alignment_byte: usize,
) -> *mut c_void {
    // usdm refuses a zero size and an alignment that is not a non-zero power of two.
    if size == 0 || !phys_alignment_byte.is_power_of_two() {
        MEM_BAD_ALLOCS.fetch_add(1, Ordering::Relaxed);
        return std::ptr::null_mut();
    }
    let align = phys_alignment_byte.max(64);
    let Ok(layout) = Layout::from_size_align(size, align) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if !p.is_null() {
        lock(&MEM).insert(p as usize, (layout, node));
        MEM_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    p.cast()
}

/// `qaeMemFreeNUMA`: frees `*ptr` (if it came from `qaeMemAllocNUMA`) and sets it to NULL.
///
/// # Safety
/// `ptr` is NULL or points to a pointer variable.
#[no_mangle]
pub unsafe extern "C" fn qaeMemFreeNUMA(ptr: *mut *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller passes a valid pointer to a pointer variable.
    let p = unsafe { *ptr };
    if p.is_null() {
        return;
    }
    let layout = lock(&MEM).remove(&(p as usize)).map(|(l, _)| l);
    match layout {
        Some(layout) => {
            // SAFETY: `p` was allocated by qaeMemAllocNUMA with exactly this layout and is
            // removed from the live map, so it is freed once.
            unsafe { std::alloc::dealloc(p.cast(), layout) };
            MEM_FREES.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            MEM_BAD_FREES.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: as above.
    unsafe { *ptr = std::ptr::null_mut() };
}

/// `qaeVirtToPhysNUMA`: the "physical" address of pinned memory (identity here), or 0
/// for memory that did not come from `qaeMemAllocNUMA`.
#[no_mangle]
pub extern "C" fn qaeVirtToPhysNUMA(virt: *mut c_void) -> u64 {
    if is_pinned(virt as *const u8, 1) {
        virt as u64
    } else {
        0
    }
}

// ---------------------------------------------------------------- the device

enum Work {
    Rsa(RsaWork),
    Ecdsa(EcdsaWork),
}

enum RsaWork {
    Rep1 {
        n: Vec<u8>,
        d: Vec<u8>,
        c: Vec<u8>,
    },
    Rep2 {
        p: Vec<u8>,
        q: Vec<u8>,
        dp: Vec<u8>,
        dq: Vec<u8>,
        qinv: Vec<u8>,
        c: Vec<u8>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

struct EcdsaWork {
    curve: Curve,
    k: Vec<u8>,
    m: Vec<u8>,
    d: Vec<u8>,
}

enum Output {
    Rsa(Vec<u8>),
    Ecdsa(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Copy)]
enum Callback {
    Rsa {
        cb: unsafe extern "C" fn(*mut c_void, CpaStatus, *mut c_void, *mut CpaFlatBuffer),
        out: usize,
    },
    Ecdsa {
        cb: unsafe extern "C" fn(
            *mut c_void,
            CpaStatus,
            *mut c_void,
            CpaBoolean,
            *mut CpaFlatBuffer,
            *mut CpaFlatBuffer,
        ),
        r: usize,
        s: usize,
    },
}

struct Request {
    inst: usize,
    generation: u64,
    lost: bool,
    callback: Callback,
    tag: usize,
    opdata: usize,
    submitted: Instant,
    ready_at: Instant,
    cb_fail: bool,
    work: Work,
}

struct Response {
    generation: u64,
    callback: Callback,
    tag: usize,
    opdata: usize,
    submitted: Instant,
    /// When the device could first have answered: the latency has passed and the
    /// arithmetic is done.
    ready_at: Instant,
    result: Result<Output, CpaStatus>,
}

struct InstState {
    started: bool,
    in_ring: usize,
    generation: u64,
    done: VecDeque<Response>,
    restart_until: Option<Instant>,
    next_restart: Option<Instant>,
    /// The caller's address translation (`cpaCySetAddressTranslation`); qatlib falls back
    /// to its own when none is set.
    v2p: CpaVirtualToPhysical,
    /// Ring slots held by requests whose response was lost, until a reset or restart.
    lost_in_ring: usize,
    /// Responses of generations below this were dropped by a silent reset.
    silent_floor: u64,
    next_reset: Option<Instant>,
}

struct Instance {
    idx: usize,
    kind: Kind,
    /// The instance's NUMA node (`nodeAffinity`).
    node: u32,
    faulty: bool,
    state: Mutex<InstState>,
}

struct Sim {
    cfg: Config,
    instances: Vec<Instance>,
    draws: AtomicU64,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

static SIM: Mutex<Option<Arc<Sim>>> = Mutex::new(None);
static CONFIGURED: Mutex<Option<String>> = Mutex::new(None);
static STOPPING: AtomicBool = AtomicBool::new(false);

fn sim() -> Option<Arc<Sim>> {
    lock(&SIM).clone()
}

impl Sim {
    /// A deterministic draw in [0, 1) from the seed and a draw counter (splitmix64).
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .cfg
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Handles of the crypto instances (generic, sym and asym), as cpaCyGetInstances
    /// returns them on a Gen4 VF split by qatmgr.
    fn crypto_handles(&self) -> Vec<CpaInstanceHandle> {
        self.handles_where(|k| k.crypto())
    }

    fn handles_where(&self, f: impl Fn(Kind) -> bool) -> Vec<CpaInstanceHandle> {
        self.instances
            .iter()
            .filter(|i| f(i.kind))
            .map(|i| (i.idx + 1) as CpaInstanceHandle)
            .collect()
    }

    /// `cpaGetInstances` for one service type (sal_instances.c): asym or sym instances,
    /// else the generic crypto ones; None for a type it does not know.
    fn handles_of(&self, svc: CpaAccelerationServiceType) -> Option<Vec<CpaInstanceHandle>> {
        let typed = |k: Kind| {
            let v = self.handles_where(|x| x == k);
            if v.is_empty() {
                self.handles_where(|x| x == Kind::Cy)
            } else {
                v
            }
        };
        match svc {
            SVC_ASYM => Some(typed(Kind::Asym)),
            SVC_SYM => Some(typed(Kind::Sym)),
            SVC_CRYPTO => Some(self.crypto_handles()),
            SVC_DC => Some(self.handles_where(|k| k == Kind::Dc)),
            _ => None,
        }
    }

    /// qatlib's checks before an asymmetric request's parameters: a known handle
    /// (else INVALID_PARAM), then the service type (SAL_CHECK_INSTANCE_TYPE: a sym-only
    /// or compression handle gets CPA_STATUS_FAIL).
    fn asym_service(&self, handle: CpaInstanceHandle) -> Result<&Instance, CpaStatus> {
        let inst = self.instance(handle).ok_or(INVALID)?;
        if !inst.kind.asym() {
            WRONG_TYPE.fetch_add(1, Ordering::Relaxed);
            return Err(FAIL);
        }
        Ok(inst)
    }

    fn instance(&self, handle: CpaInstanceHandle) -> Option<&Instance> {
        let i = handle as usize;
        if i == 0 {
            return None;
        }
        self.instances.get(i - 1)
    }

    /// Apply the restart schedule of a faulty instance. Returns whether it is restarting.
    fn restarting(&self, inst: &Instance, st: &mut InstState, now: Instant) -> bool {
        if let (true, Some(every)) = (inst.faulty, self.cfg.reset_every) {
            let next = *st.next_reset.get_or_insert(now + every);
            if now >= next {
                // A reset the library is never told about: what the ring held is gone,
                // with no callback and no RESTARTING status.
                st.next_reset = Some(now + every);
                let dropped = st.done.len();
                st.done.clear();
                LOST.fetch_add(dropped as u64, Ordering::Relaxed);
                st.in_ring = st.in_ring.saturating_sub(dropped + st.lost_in_ring);
                st.lost_in_ring = 0;
                st.generation += 1;
                st.silent_floor = st.generation;
                RESETS.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (true, Some(every)) = (inst.faulty, self.cfg.restart_every) {
            let next = *st.next_restart.get_or_insert(now + every);
            if now >= next {
                st.restart_until = Some(now + self.cfg.restart_for);
                st.next_restart = Some(now + every);
                st.generation += 1;
                st.in_ring = st.in_ring.saturating_sub(st.lost_in_ring);
                st.lost_in_ring = 0;
                RESTARTS.fetch_add(1, Ordering::Relaxed);
            }
        }
        match st.restart_until {
            Some(t) if now < t => true,
            Some(_) => {
                st.restart_until = None;
                false
            }
            None => false,
        }
    }

    /// Common admission of a request: returns the instance index and generation, whether
    /// its callback fails, when it was admitted and when it is ready, or a status to return
    /// to the caller. The ready time is the admission time plus the latency, both from one
    /// clock reading, so the device time a request reports is never below the latency.
    fn admit(
        &self,
        handle: CpaInstanceHandle,
    ) -> Result<(usize, u64, bool, bool, Instant, Instant), CpaStatus> {
        let inst = self.instance(handle).ok_or(INVALID)?;
        let now = Instant::now();
        // Fixed number of draws per request keeps a seeded run reproducible.
        let (f_submit, f_retry, f_cb, f_slow, f_lost) = (
            self.draw(),
            self.draw(),
            self.draw(),
            self.draw(),
            self.draw(),
        );
        let mut st = lock(&inst.state);
        if !st.started {
            return Err(FAIL);
        }
        if self.restarting(inst, &mut st, now) {
            return Err(RESTARTING);
        }
        if inst.faulty && f_submit < self.cfg.submit_fail {
            SUBMIT_FAULTS.fetch_add(1, Ordering::Relaxed);
            return Err(FAIL);
        }
        if st.in_ring >= self.cfg.ring || (inst.faulty && f_retry < self.cfg.retry) {
            RETRIES.fetch_add(1, Ordering::Relaxed);
            return Err(RETRY);
        }
        st.in_ring += 1;
        let latency = if inst.faulty && f_slow < self.cfg.slow_p {
            self.cfg.slow
        } else {
            self.cfg.latency
        };
        let cb_fail = inst.faulty && f_cb < self.cfg.cb_fail;
        let lost = inst.faulty && f_lost < self.cfg.lost;
        Ok((inst.idx, st.generation, cb_fail, lost, now, now + latency))
    }

    fn unadmit(&self, idx: usize) {
        let mut st = lock(&self.instances[idx].state);
        st.in_ring = st.in_ring.saturating_sub(1);
    }

    fn enqueue(&self, req: Request) -> CpaStatus {
        let idx = req.inst;
        let sent = match lock(&self.tx).as_ref() {
            Some(tx) => tx.send(req).is_ok(),
            None => false,
        };
        if sent {
            SUBMITS.fetch_add(1, Ordering::Relaxed);
            SUCCESS
        } else {
            self.unadmit(idx);
            FAIL
        }
    }
}

fn worker(sim: Arc<Sim>, rx: Arc<Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let req = {
            let rx = lock(&rx);
            match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            }
        };
        if req.lost {
            // The response never comes. Its ring slot stays taken until the ring is
            // reset (restart, silent reset, stop); if that already happened, it is free.
            LOST.fetch_add(1, Ordering::Relaxed);
            let mut st = lock(&sim.instances[req.inst].state);
            if req.generation == st.generation && st.started {
                st.lost_in_ring += 1;
            } else {
                st.in_ring = st.in_ring.saturating_sub(1);
            }
            continue;
        }
        let result = match &req.work {
            Work::Rsa(w) => rsa(w).map(Output::Rsa),
            Work::Ecdsa(w) => ecdsa(w).map(|(r, s)| Output::Ecdsa(r, s)),
        };
        let result = if req.cb_fail {
            CB_FAULTS.fetch_add(1, Ordering::Relaxed);
            Err(FAIL)
        } else {
            result
        };
        let resp = Response {
            generation: req.generation,
            callback: req.callback,
            tag: req.tag,
            opdata: req.opdata,
            submitted: req.submitted,
            ready_at: req.ready_at.max(Instant::now()),
            result,
        };
        let mut st = lock(&sim.instances[req.inst].state);
        if st.started {
            st.done.push_back(resp);
        }
    }
}

fn big(b: &[u8]) -> BigUint {
    BigUint::from_bytes_be(b)
}

fn fixed(v: &BigUint, len: usize) -> Vec<u8> {
    let b = v.to_bytes_be();
    let mut out = vec![0u8; len.max(b.len())];
    let off = out.len() - b.len();
    out[off..].copy_from_slice(&b);
    out
}

fn rsa(w: &RsaWork) -> Result<Vec<u8>, CpaStatus> {
    match w {
        RsaWork::Rep1 { .. } => RSA_REP1.fetch_add(1, Ordering::Relaxed),
        RsaWork::Rep2 { .. } => RSA_REP2.fetch_add(1, Ordering::Relaxed),
    };
    let Some(o) = ossl::get() else {
        ARITH_BIGINT.fetch_add(1, Ordering::Relaxed);
        note_arith(true);
        return rsa_bigint(w);
    };
    ARITH_OSSL.fetch_add(1, Ordering::Relaxed);
    note_arith(false);
    match w {
        RsaWork::Rep1 { n, d, c } => o.rsa_rep1(n, d, c),
        RsaWork::Rep2 {
            p,
            q,
            dp,
            dq,
            qinv,
            c,
        } => o.rsa_rep2(p, q, dp, dq, qinv, c, c.len()),
    }
    .map_err(|_| FAIL)
}

/// RSA with num-bigint: the portable path, and the reference the fast path is tested
/// against.
fn rsa_bigint(w: &RsaWork) -> Result<Vec<u8>, CpaStatus> {
    match w {
        RsaWork::Rep1 { n, d, c } => {
            let (nn, cc) = (big(n), big(c));
            if cc >= nn {
                return Err(FAIL);
            }
            Ok(fixed(&cc.modpow(&big(d), &nn), n.len()))
        }
        RsaWork::Rep2 {
            p,
            q,
            dp,
            dq,
            qinv,
            c,
        } => {
            let (p, q, cc) = (big(p), big(q), big(c));
            let n = &p * &q;
            if cc >= n {
                return Err(FAIL);
            }
            let m1 = (&cc % &p).modpow(&big(dp), &p);
            let m2 = (&cc % &q).modpow(&big(dq), &q);
            let diff = (&m1 + &p - (&m2 % &p)) % &p;
            let h = (big(qinv) * diff) % &p;
            let m = m2 + h * &q;
            Ok(fixed(&m, c.len()))
        }
    }
}

struct CurveParams {
    q: &'static str,
    a: &'static str,
    b: &'static str,
    n: &'static str,
}

const P256: CurveParams = CurveParams {
    q: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
    a: "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
    b: "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
    n: "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
};
const P384: CurveParams = CurveParams {
    q: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
    a: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc",
    b: "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
    n: "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
};

fn hex(s: &str) -> BigUint {
    BigUint::parse_bytes(s.as_bytes(), 16).expect("curve constant")
}

/// Curve constants parsed once.
struct Consts {
    p256_n: BigUint,
    p384_n: BigUint,
    p256: [BigUint; 5],
    p384: [BigUint; 5],
}

fn consts() -> &'static Consts {
    static C: std::sync::OnceLock<Consts> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let all = |c: &CurveParams, curve| {
            let (gx, gy) = generator(curve);
            [hex(c.q), hex(c.a), hex(c.b), big(&gx), big(&gy)]
        };
        Consts {
            p256_n: hex(P256.n),
            p384_n: hex(P384.n),
            p256: all(&P256, Curve::P256),
            p384: all(&P384, Curve::P384),
        }
    })
}

fn generator(curve: Curve) -> (Vec<u8>, Vec<u8>) {
    use p256::elliptic_curve::point::AffineCoordinates;
    match curve {
        Curve::P256 => {
            let g = p256::AffinePoint::GENERATOR;
            (g.x().to_vec(), g.y().to_vec())
        }
        Curve::P384 => {
            let g = p384::AffinePoint::GENERATOR;
            (g.x().to_vec(), g.y().to_vec())
        }
    }
}

/// Which curve the parameters describe (all of xg, yg, n, q, a, b must match).
fn identify(op: &CpaCyEcdsaSignRSOpData) -> Result<Curve, CpaStatus> {
    let n = big(flat(&op.n)?);
    let c = consts();
    for (curve, cn, params) in [
        (Curve::P256, &c.p256_n, &c.p256),
        (Curve::P384, &c.p384_n, &c.p384),
    ] {
        if &n != cn {
            continue;
        }
        let [q, a, b, gx, gy] = params;
        let ok = &big(flat(&op.xg)?) == gx
            && &big(flat(&op.yg)?) == gy
            && &big(flat(&op.q)?) == q
            && &big(flat(&op.a)?) == a
            && &big(flat(&op.b)?) == b
            && op.fieldType == _CpaCyEcFieldType_CPA_CY_EC_FIELD_TYPE_PRIME;
        return if ok { Ok(curve) } else { Err(INVALID) };
    }
    Err(INVALID)
}

/// ECDSA (r, s) with the curve crate's scalar arithmetic; integers reduced mod n first.
macro_rules! sign_rs {
    ($curve:ident, $n:expr, $len:expr, $k:expr, $m:expr, $d:expr) => {{
        #[allow(unused_imports)]
        use $curve::elliptic_curve::ff::{Field, PrimeField};
        use $curve::elliptic_curve::point::AffineCoordinates;
        let scalar = |v: &BigUint| -> Option<$curve::Scalar> {
            let bytes = $curve::FieldBytes::try_from(fixed(&(v % $n), $len).as_slice()).ok()?;
            Option::from($curve::Scalar::from_repr(bytes))
        };
        let k = scalar($k).ok_or(FAIL)?;
        let d = scalar($d).ok_or(FAIL)?;
        let m = scalar($m).ok_or(FAIL)?;
        let x = ($curve::ProjectivePoint::GENERATOR * k).to_affine().x();
        let r = scalar(&big(&x)).ok_or(FAIL)?;
        let kinv: $curve::Scalar = Option::from(k.invert()).ok_or(FAIL)?;
        let s = kinv * (m + r * d);
        if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
            return Err(FAIL);
        }
        Ok((r.to_repr().to_vec(), s.to_repr().to_vec()))
    }};
}

fn ecdsa(w: &EcdsaWork) -> Result<(Vec<u8>, Vec<u8>), CpaStatus> {
    let n = match w.curve {
        Curve::P256 => &consts().p256_n,
        Curve::P384 => &consts().p384_n,
    };
    let (k, d, m) = (big(&w.k), big(&w.d), big(&w.m));
    let zero = BigUint::from(0u8);
    if k == zero || &k >= n || d == zero || &d >= n {
        return Err(INVALID);
    }
    let Some(o) = ossl::get() else {
        ARITH_BIGINT.fetch_add(1, Ordering::Relaxed);
        note_arith(true);
        return ecdsa_bigint(w, n, &k, &m, &d);
    };
    ARITH_OSSL.fetch_add(1, Ordering::Relaxed);
    note_arith(false);
    let (p384, len) = match w.curve {
        Curve::P256 => (false, 32),
        Curve::P384 => (true, 48),
    };
    o.ecdsa(p384, &fixed(n, len), &w.k, &w.m, &w.d)
        .map_err(|_| FAIL)
}

/// ECDSA with the p256/p384 crates: the portable path and the fast path's reference.
fn ecdsa_bigint(
    w: &EcdsaWork,
    n: &BigUint,
    k: &BigUint,
    m: &BigUint,
    d: &BigUint,
) -> Result<(Vec<u8>, Vec<u8>), CpaStatus> {
    match w.curve {
        Curve::P256 => sign_rs!(p256, n, 32, k, m, d),
        Curve::P384 => sign_rs!(p384, n, 48, k, m, d),
    }
}

/// The bytes of a flat buffer that must lie in pinned memory.
fn flat(b: &CpaFlatBuffer) -> Result<&[u8], CpaStatus> {
    let len = b.dataLenInBytes as usize;
    if b.pData.is_null() || len == 0 || !is_pinned(b.pData, len) {
        INVALID_PARAMS.fetch_add(1, Ordering::Relaxed);
        return Err(INVALID);
    }
    // SAFETY: the buffer lies inside a live qaeMemAllocNUMA allocation (checked above)
    // and the caller keeps it alive until the callback.
    Ok(unsafe { std::slice::from_raw_parts(b.pData, len) })
}

// ---------------------------------------------------------------- exported qatlib API

/// `icp_sal_userStart`: start the simulated device with the current configuration.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn icp_sal_userStart(name: *const c_char) -> CpaStatus {
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    let cfg = match lock(&CONFIGURED).clone() {
        Some(list) => {
            let mut c = Config::default();
            c.apply_list(&list).map(|()| c)
        }
        None => Config::from_env(),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qat-sim: {e}");
            return FAIL;
        }
    };
    let mut slot = lock(&SIM);
    let mut refs = lock(&START_REFS);
    if slot.is_some() {
        // qatlib counts starts (sal_user.c start_ref_count): a later start succeeds
        // without looking at its name, and only the last stop stops.
        *refs += 1;
        return SUCCESS;
    }
    if cfg.no_device || cfg.section.as_deref().is_some_and(|s| s != name) {
        eprintln!("Failed to start {name}");
        return FAIL;
    }
    let (tx, rx) = mpsc::channel();
    let rx = Arc::new(Mutex::new(rx));
    let kinds: Vec<Kind> = match &cfg.types {
        Some(t) => t.clone(),
        None => vec![Kind::Cy; cfg.instances],
    };
    let instances = kinds
        .iter()
        .enumerate()
        .map(|(idx, &kind)| Instance {
            idx,
            kind,
            node: cfg
                .nodes
                .as_ref()
                .and_then(|n| n.get(idx).copied())
                .unwrap_or(0),
            faulty: cfg
                .fault_instances
                .as_ref()
                .is_none_or(|list| list.contains(&idx)),
            state: Mutex::new(InstState {
                started: false,
                in_ring: 0,
                generation: 0,
                done: VecDeque::new(),
                restart_until: None,
                next_restart: None,
                v2p: None,
                lost_in_ring: 0,
                silent_floor: 0,
                next_reset: None,
            }),
        })
        .collect();
    let s = Arc::new(Sim {
        instances,
        draws: AtomicU64::new(0),
        tx: Mutex::new(Some(tx)),
        workers: Mutex::new(Vec::new()),
        cfg,
    });
    let handles = (0..s.cfg.workers)
        .map(|i| {
            let (s2, rx2) = (Arc::clone(&s), Arc::clone(&rx));
            std::thread::Builder::new()
                .name(format!("qat-sim-{i}"))
                .spawn(move || worker(s2, rx2))
                .expect("spawn qat-sim worker")
        })
        .collect();
    *lock(&s.workers) = handles;
    STOPPING.store(false, Ordering::Release);
    STARTS.fetch_add(1, Ordering::Relaxed);
    *refs = 1;
    HOLD.store(false, Ordering::Release);
    *slot = Some(s);
    SUCCESS
}

/// `icp_sal_userStop`: stop the device; requests still in it are dropped unanswered.
#[no_mangle]
pub extern "C" fn icp_sal_userStop() -> CpaStatus {
    let s = {
        let mut slot = lock(&SIM);
        let mut refs = lock(&START_REFS);
        if slot.is_none() {
            return FAIL;
        }
        if *refs > 1 {
            *refs -= 1;
            return SUCCESS;
        }
        *refs = 0;
        match slot.take() {
            Some(s) => s,
            None => return FAIL,
        }
    };
    STOPPING.store(true, Ordering::Release);
    drop(lock(&s.tx).take());
    let workers = std::mem::take(&mut *lock(&s.workers));
    for w in workers {
        let _ = w.join();
    }
    STOPS.fetch_add(1, Ordering::Relaxed);
    SUCCESS
}

/// `cpaCyGetNumInstances`.
///
/// # Safety
/// `num` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpaCyGetNumInstances(num: *mut Cpa16U) -> CpaStatus {
    if num.is_null() {
        return INVALID;
    }
    let n = sim().map_or(0, |s| s.crypto_handles().len());
    // SAFETY: checked non-null; the caller passes a writable Cpa16U.
    unsafe { *num = n as Cpa16U };
    SUCCESS
}

/// `cpaCyGetInstances`.
///
/// # Safety
/// `out` holds `count` writable handles.
#[no_mangle]
pub unsafe extern "C" fn cpaCyGetInstances(
    count: Cpa16U,
    out: *mut CpaInstanceHandle,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let handles = s.crypto_handles();
    if out.is_null() || count as usize > handles.len() || count == 0 {
        return INVALID;
    }
    for (i, h) in handles.into_iter().take(count as usize).enumerate() {
        // SAFETY: `out` has room for `count` handles (caller contract).
        unsafe { *out.add(i) = h };
    }
    SUCCESS
}

/// `cpaGetNumInstances`: instances of one service type, as qatlib's sal_instances.c
/// counts them (asym or sym: that type's instances, else the generic crypto ones).
///
/// # Safety
/// `num` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpaGetNumInstances(
    svc: CpaAccelerationServiceType,
    num: *mut Cpa16U,
) -> CpaStatus {
    if num.is_null() {
        return INVALID;
    }
    let Some(s) = sim() else { return FAIL };
    if s.cfg.no_generic_api {
        return UNSUPPORTED;
    }
    let Some(h) = s.handles_of(svc) else {
        return INVALID;
    };
    // SAFETY: checked non-null; the caller passes a writable Cpa16U.
    unsafe { *num = h.len() as Cpa16U };
    SUCCESS
}

/// `cpaGetInstances`: the handles `cpaGetNumInstances` counted.
///
/// # Safety
/// `out` holds `count` writable handles.
#[no_mangle]
pub unsafe extern "C" fn cpaGetInstances(
    svc: CpaAccelerationServiceType,
    count: Cpa16U,
    out: *mut CpaInstanceHandle,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    if s.cfg.no_generic_api {
        return UNSUPPORTED;
    }
    let Some(handles) = s.handles_of(svc) else {
        return INVALID;
    };
    if out.is_null() || count as usize > handles.len() || count == 0 {
        return INVALID;
    }
    for (i, h) in handles.into_iter().take(count as usize).enumerate() {
        // SAFETY: `out` has room for `count` handles (caller contract).
        unsafe { *out.add(i) = h };
    }
    SUCCESS
}

/// `cpaCyQueryCapabilities`: what the instance's service type offers.
///
/// # Safety
/// `caps` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpaCyQueryCapabilities(
    handle: CpaInstanceHandle,
    caps: *mut CpaCyCapabilitiesInfo,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    if caps.is_null() {
        return INVALID;
    }
    if !inst.kind.crypto() {
        WRONG_TYPE.fetch_add(1, Ordering::Relaxed);
        return FAIL;
    }
    let b = |v: bool| {
        if v {
            _CpaBoolean_CPA_TRUE
        } else {
            _CpaBoolean_CPA_FALSE
        }
    };
    let (sym, asym) = (b(inst.kind.sym()), b(inst.kind.asym()));
    let v = CpaCyCapabilitiesInfo {
        symSupported: sym,
        symDpSupported: sym,
        keySupported: sym,
        dhSupported: asym,
        dsaSupported: asym,
        rsaSupported: asym,
        ecSupported: asym,
        ecdhSupported: asym,
        ecdsaSupported: asym,
        lnSupported: asym,
        primeSupported: asym,
        ..Default::default()
    };
    // SAFETY: checked non-null; the caller passes a writable struct.
    unsafe { *caps = v };
    SUCCESS
}

fn copy_str(dst: &mut [u8], s: &str) {
    let n = s.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n] = 0;
}

/// `cpaCyInstanceGetInfo2`.
///
/// # Safety
/// `info` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpaCyInstanceGetInfo2(
    handle: CpaInstanceHandle,
    info: *mut CpaInstanceInfo2,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    if info.is_null() {
        return INVALID;
    }
    let restarting = {
        let mut st = lock(&inst.state);
        s.restarting(inst, &mut st, Instant::now())
    };
    let mut v = CpaInstanceInfo2 {
        accelerationServiceType: match inst.kind {
            Kind::Cy => _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO,
            Kind::Sym => _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_SYM,
            Kind::Asym => _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_ASYM,
            Kind::Dc => _CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_DATA_COMPRESSION,
        },
        ..Default::default()
    };
    copy_str(&mut v.vendorName, "qat-sim");
    copy_str(&mut v.partName, "qat-sim (software, not a QAT device)");
    copy_str(&mut v.swVersion, env!("CARGO_PKG_VERSION"));
    copy_str(&mut v.instName, &format!("SSL{}", inst.idx));
    copy_str(&mut v.instID, &format!("qat-sim-cy-{}", inst.idx));
    v.operState = if restarting {
        _CpaOperationalState_CPA_OPER_STATE_DOWN
    } else {
        _CpaOperationalState_CPA_OPER_STATE_UP
    };
    v.nodeAffinity = inst.node;
    v.requiresPhysicallyContiguousMemory = _CpaBoolean_CPA_TRUE;
    v.isPolled = _CpaBoolean_CPA_TRUE;
    v.isOffloaded = _CpaBoolean_CPA_TRUE;
    // SAFETY: checked non-null; the caller passes a writable CpaInstanceInfo2.
    unsafe { *info = v };
    SUCCESS
}

/// `cpaCyStartInstance`.
#[no_mangle]
pub extern "C" fn cpaCyStartInstance(handle: CpaInstanceHandle) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    if !inst.kind.crypto() {
        WRONG_TYPE.fetch_add(1, Ordering::Relaxed);
        return FAIL;
    }
    lock(&inst.state).started = true;
    SUCCESS
}

/// `cpaCyStopInstance`: outstanding requests are dropped without callbacks (as the API says).
#[no_mangle]
pub extern "C" fn cpaCyStopInstance(handle: CpaInstanceHandle) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    if !inst.kind.crypto() {
        WRONG_TYPE.fetch_add(1, Ordering::Relaxed);
        return FAIL;
    }
    let mut st = lock(&inst.state);
    st.started = false;
    st.done.clear();
    st.in_ring = 0;
    st.lost_in_ring = 0;
    st.generation += 1;
    SUCCESS
}

/// `cpaCySetAddressTranslation`.
#[no_mangle]
pub extern "C" fn cpaCySetAddressTranslation(
    handle: CpaInstanceHandle,
    v2p: CpaVirtualToPhysical,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    if !inst.kind.crypto() {
        WRONG_TYPE.fetch_add(1, Ordering::Relaxed);
        return FAIL;
    }
    if v2p.is_none() {
        return INVALID;
    }
    lock(&inst.state).v2p = v2p;
    SUCCESS
}

/// Byte length of the number in `b` without leading zero bytes (qatlib's
/// LacPke_GetMinBytes).
fn min_bytes(b: &[u8]) -> usize {
    b.len() - b.iter().take_while(|&&x| x == 0).count()
}

/// RSA operation sizes qatlib accepts (LacRsa_IsValidRsaSize; Debian's build has the
/// legacy sizes enabled, as its log strings show).
const RSA_BITS: [usize; 7] = [512, 1024, 1536, 2048, 3072, 4096, 8192];

/// qatlib's RSA decrypt parameter checks (LacRsa_DecryptParamsCheck, lac_rsa.c):
/// version, key representation, operation size from the key's own numbers, input and
/// output sizes, the top bits and oddness of n (type 1) or p and q (type 2), 0 < c < n
/// (type 1 only: qatlib cannot check it for a CRT key), 1 < dP < p-1, 1 < dQ < q-1,
/// 1 <= qInv < p. Every failure is CPA_STATUS_INVALID_PARAM.
fn rsa_params(
    key: &CpaCyRsaPrivateKey,
    input: &CpaFlatBuffer,
    out: &CpaFlatBuffer,
) -> Result<RsaWork, CpaStatus> {
    let reject = || {
        RSA_PARAM_REJECTS.fetch_add(1, Ordering::Relaxed);
        INVALID
    };
    if key.version != _CpaCyRsaVersion_CPA_CY_RSA_VERSION_TWO_PRIME {
        return Err(reject());
    }
    let odd = |b: &[u8]| b.last().is_some_and(|x| x & 1 == 1);
    // The byte where a number of `len` bytes starts in its buffer.
    let top = |b: &[u8], len: usize| -> Option<u8> { b.len().checked_sub(len).map(|i| b[i]) };
    let (op_size, work) = match key.privateKeyRepType {
        REP_TYPE_1 => {
            let r = &key.privateKeyRep1;
            let d = flat(&r.privateExponentD)?;
            let n = flat(&r.modulusN)?;
            (min_bytes(n), (Some((n, d)), None))
        }
        REP_TYPE_2 => {
            let r = &key.privateKeyRep2;
            let p = flat(&r.prime1P)?;
            let q = flat(&r.prime2Q)?;
            let dp = flat(&r.exponent1Dp)?;
            let dq = flat(&r.exponent2Dq)?;
            let qinv = flat(&r.coefficientQInv)?;
            let size = if min_bytes(p) == min_bytes(q) {
                2 * min_bytes(p)
            } else {
                0
            };
            (size, (None, Some((p, q, dp, dq, qinv))))
        }
        _ => return Err(reject()),
    };
    if !RSA_BITS.contains(&(op_size * 8)) {
        return Err(reject());
    }
    let c = flat(input)?;
    if min_bytes(c) > op_size {
        return Err(reject());
    }
    flat(out)?;
    if (out.dataLenInBytes as usize) < op_size {
        return Err(reject());
    }
    let c = fixed(&big(c), op_size);
    match work {
        (Some((n, d)), _) => {
            if top(n, op_size).is_none_or(|b| b & 0xc0 == 0) || !odd(n) {
                return Err(reject());
            }
            let (nn, cc) = (big(n), big(&c));
            if cc == BigUint::from(0u8) || cc >= nn {
                return Err(reject());
            }
            Ok(RsaWork::Rep1 {
                n: fixed(&nn, op_size),
                d: d.to_vec(),
                c,
            })
        }
        (_, Some((p, q, dp, dq, qinv))) => {
            let half = op_size / 2;
            for x in [p, q] {
                if top(x, half).is_none_or(|b| b & 0x80 == 0) || !odd(x) {
                    return Err(reject());
                }
            }
            let one = BigUint::from(1u8);
            let (bp, bq) = (big(p), big(q));
            let (bdp, bdq, bqi) = (big(dp), big(dq), big(qinv));
            if bdp <= one || bdp >= &bp - &one || bdq <= one || bdq >= &bq - &one {
                return Err(reject());
            }
            if bqi == BigUint::from(0u8) || bqi >= bp {
                return Err(reject());
            }
            Ok(RsaWork::Rep2 {
                p: p.to_vec(),
                q: q.to_vec(),
                dp: dp.to_vec(),
                dq: dq.to_vec(),
                qinv: qinv.to_vec(),
                // The device computes with c mod p and c mod q: c >= n (which qatlib
                // does not check for a CRT key) gives (c mod n)^d mod n.
                c: fixed(&(big(&c) % (&bp * &bq)), op_size),
            })
        }
        _ => Err(reject()),
    }
}

/// The address the device would use for each buffer, through the caller's translation
/// (`cpaCySetAddressTranslation`) or qatlib's default (usdm's): 0 means the device
/// cannot reach it (qatlib does not check; a device would fault).
fn translate(
    v2p: CpaVirtualToPhysical,
    node: u32,
    bufs: &[&CpaFlatBuffer],
) -> Result<(), CpaStatus> {
    if v2p.is_none() {
        NO_V2P.fetch_add(1, Ordering::Relaxed);
    }
    for b in bufs {
        if node_of(b.pData).is_some_and(|n| n as u32 != node) {
            NUMA_MISMATCH.fetch_add(1, Ordering::Relaxed);
        }
        let phys = match v2p {
            // SAFETY: the caller's CpaVirtualToPhysical, called as qatlib calls it.
            Some(f) => unsafe { f(b.pData.cast()) },
            None => qaeVirtToPhysNUMA(b.pData.cast()),
        };
        if phys == 0 {
            INVALID_PARAMS.fetch_add(1, Ordering::Relaxed);
            return Err(INVALID);
        }
    }
    Ok(())
}

/// `cpaCyRsaDecrypt` (asynchronous only).
///
/// # Safety
/// Pointers follow qatlib's contract: `op` and `out` stay valid until the callback.
#[no_mangle]
pub unsafe extern "C" fn cpaCyRsaDecrypt(
    handle: CpaInstanceHandle,
    cb: CpaCyGenFlatBufCbFunc,
    tag: *mut c_void,
    op: *const CpaCyRsaDecryptOpData,
    out: *mut CpaFlatBuffer,
) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let inst = match s.asym_service(handle) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let Some(cb) = cb else { return UNSUPPORTED };
    if op.is_null() || out.is_null() {
        return INVALID;
    }
    // SAFETY: non-null; the caller keeps the op data valid until the callback.
    let opd = unsafe { &*op };
    if opd.pRecipientPrivateKey.is_null() {
        return INVALID;
    }
    // SAFETY: non-null, valid per the caller's contract.
    let key = unsafe { &*opd.pRecipientPrivateKey };
    // SAFETY: `out` is non-null and valid per the caller's contract.
    let out_buf = unsafe { &*out };
    let work = match rsa_params(key, &opd.inputData, out_buf) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let v2p = lock(&inst.state).v2p;
    let mut bufs = vec![&opd.inputData, out_buf];
    match key.privateKeyRepType {
        REP_TYPE_1 => bufs.extend([
            &key.privateKeyRep1.modulusN,
            &key.privateKeyRep1.privateExponentD,
        ]),
        _ => {
            let r = &key.privateKeyRep2;
            bufs.extend([
                &r.prime1P,
                &r.prime2Q,
                &r.exponent1Dp,
                &r.exponent2Dq,
                &r.coefficientQInv,
            ]);
        }
    }
    if let Err(e) = translate(v2p, inst.node, &bufs) {
        return e;
    }
    let (inst, generation, cb_fail, lost, submitted, ready_at) = match s.admit(handle) {
        Ok(v) => v,
        Err(e) => return e,
    };
    s.enqueue(Request {
        inst,
        generation,
        lost,
        callback: Callback::Rsa {
            cb,
            out: out as usize,
        },
        tag: tag as usize,
        opdata: op as usize,
        submitted,
        ready_at,
        cb_fail,
        work: Work::Rsa(work),
    })
}

/// `cpaCyEcdsaSignRS` (asynchronous only; prime curves P-256 and P-384).
///
/// # Safety
/// Pointers follow qatlib's contract: `op`, `r`, `s` stay valid until the callback.
#[no_mangle]
pub unsafe extern "C" fn cpaCyEcdsaSignRS(
    handle: CpaInstanceHandle,
    cb: CpaCyEcdsaSignRSCbFunc,
    tag: *mut c_void,
    op: *const CpaCyEcdsaSignRSOpData,
    sign_status: *mut CpaBoolean,
    r: *mut CpaFlatBuffer,
    s_out: *mut CpaFlatBuffer,
) -> CpaStatus {
    let _ = sign_status;
    let Some(s) = sim() else { return FAIL };
    let inst = match s.asym_service(handle) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let Some(cb) = cb else { return UNSUPPORTED };
    if op.is_null() || r.is_null() || s_out.is_null() {
        return INVALID;
    }
    // SAFETY: non-null; valid until the callback per the caller's contract.
    let (opd, rb, sb) = unsafe { (&*op, &*r, &*s_out) };
    let parse = || -> Result<EcdsaWork, CpaStatus> {
        let curve = identify(opd)?;
        let len = match curve {
            Curve::P256 => 32,
            Curve::P384 => 48,
        };
        flat(rb)?;
        flat(sb)?;
        if (rb.dataLenInBytes as usize) < len || (sb.dataLenInBytes as usize) < len {
            return Err(INVALID);
        }
        Ok(EcdsaWork {
            curve,
            k: flat(&opd.k)?.to_vec(),
            m: flat(&opd.m)?.to_vec(),
            d: flat(&opd.d)?.to_vec(),
        })
    };
    let work = match parse() {
        Ok(w) => w,
        Err(e) => return e,
    };
    let v2p = lock(&inst.state).v2p;
    let bufs = [
        &opd.xg, &opd.yg, &opd.n, &opd.q, &opd.a, &opd.b, &opd.k, &opd.m, &opd.d, rb, sb,
    ];
    if let Err(e) = translate(v2p, inst.node, &bufs) {
        return e;
    }
    let (inst, generation, cb_fail, lost, submitted, ready_at) = match s.admit(handle) {
        Ok(v) => v,
        Err(e) => return e,
    };
    s.enqueue(Request {
        inst,
        generation,
        lost,
        callback: Callback::Ecdsa {
            cb,
            r: r as usize,
            s: s_out as usize,
        },
        tag: tag as usize,
        opdata: op as usize,
        submitted,
        ready_at,
        cb_fail,
        work: Work::Ecdsa(work),
    })
}

/// Write `v` into a flat buffer, left-padded to its length.
///
/// # Safety
/// `buf` points to a valid flat buffer whose data is writable for its length.
unsafe fn write_flat(buf: usize, v: &[u8]) {
    // SAFETY: per the function contract.
    let b = unsafe { &mut *(buf as *mut CpaFlatBuffer) };
    let len = b.dataLenInBytes as usize;
    // SAFETY: the data pointer is writable for `len` bytes (checked pinned at submit).
    let dst = unsafe { std::slice::from_raw_parts_mut(b.pData, len) };
    let take = v.len().min(len);
    dst.fill(0);
    dst[len - take..].copy_from_slice(&v[v.len() - take..]);
}

/// `icp_sal_CyPollInstance`: deliver ready responses (at most `quota`, 0 = all); the only
/// place where callbacks run.
#[no_mangle]
pub extern "C" fn icp_sal_CyPollInstance(handle: CpaInstanceHandle, quota: Cpa32U) -> CpaStatus {
    let Some(s) = sim() else { return FAIL };
    let Some(inst) = s.instance(handle) else {
        return INVALID;
    };
    POLLS.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let quota = if quota == 0 {
        usize::MAX
    } else {
        quota as usize
    };
    let held = HOLD.load(Ordering::Acquire);
    let (ready, restarting) = {
        let mut st = lock(&inst.state);
        if !st.started {
            return FAIL;
        }
        let restarting = s.restarting(inst, &mut st, now);
        let gen = st.generation;
        let mut ready = Vec::new();
        let mut removed = 0;
        let mut i = 0;
        while !held && i < st.done.len() && ready.len() < quota {
            // Responses from before a silent reset are gone; from before a restart they
            // fail at once; others wait for their latency (and, while the test holds
            // them, all wait).
            if st.done[i].generation < st.silent_floor {
                st.done.remove(i);
                removed += 1;
                LOST.fetch_add(1, Ordering::Relaxed);
            } else if st.done[i].generation != gen || st.done[i].ready_at <= now {
                let mut r = st.done.remove(i).expect("index in range");
                if r.generation != gen {
                    r.result = Err(FAIL);
                }
                ready.push(r);
                removed += 1;
            } else {
                i += 1;
            }
        }
        st.in_ring = st.in_ring.saturating_sub(removed);
        (ready, restarting)
    };
    let n = ready.len();
    for r in ready {
        COMPLETIONS.fetch_add(1, Ordering::Relaxed);
        let ready_at = r.ready_at.min(now);
        DEVICE_NS.fetch_add(
            ready_at.saturating_duration_since(r.submitted).as_nanos() as u64,
            Ordering::Relaxed,
        );
        POLL_WAIT_NS.fetch_add(
            now.saturating_duration_since(ready_at).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let status = if r.result.is_ok() { SUCCESS } else { FAIL };
        match (r.callback, r.result) {
            (Callback::Rsa { cb, out }, res) => {
                if let Ok(Output::Rsa(v)) = &res {
                    // SAFETY: `out` was valid at submit and the caller keeps it until the
                    // callback, which is now.
                    unsafe { write_flat(out, v) };
                }
                // SAFETY: calling the caller's callback with its own tag and pointers.
                unsafe {
                    cb(
                        r.tag as *mut c_void,
                        status,
                        r.opdata as *mut c_void,
                        out as *mut CpaFlatBuffer,
                    )
                };
            }
            (Callback::Ecdsa { cb, r: rp, s: sp }, res) => {
                let ok = if let Ok(Output::Ecdsa(rv, sv)) = &res {
                    // SAFETY: as above.
                    unsafe {
                        write_flat(rp, rv);
                        write_flat(sp, sv);
                    }
                    _CpaBoolean_CPA_TRUE
                } else {
                    _CpaBoolean_CPA_FALSE
                };
                // SAFETY: calling the caller's callback with its own tag and pointers.
                unsafe {
                    cb(
                        r.tag as *mut c_void,
                        status,
                        r.opdata as *mut c_void,
                        ok,
                        rp as *mut CpaFlatBuffer,
                        sp as *mut CpaFlatBuffer,
                    )
                };
            }
        }
    }
    if n > 0 {
        SUCCESS
    } else if restarting {
        RESTARTING
    } else {
        RETRY
    }
}

// ---------------------------------------------------------------- test API

/// Set the configuration used by the next `icp_sal_userStart` (comma-separated
/// `key=value`; NULL returns to the environment). Returns 0, or -1 for a bad list.
///
/// # Safety
/// `list` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn qat_sim_configure(list: *const c_char) -> c_int {
    if list.is_null() {
        *lock(&CONFIGURED) = None;
        return 0;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(list) }
        .to_string_lossy()
        .into_owned();
    let mut c = Config::default();
    match c.apply_list(&s) {
        Ok(()) => {
            *lock(&CONFIGURED) = Some(s);
            0
        }
        Err(e) => {
            eprintln!("qat-sim: {e}");
            -1
        }
    }
}

/// A counter by name: submits, retries, submit_faults, cb_faults, restarts, completions,
/// starts, stops, polls, invalid_params, rsa_rep1, rsa_rep2 (RSA requests computed
/// per key representation), mem_allocs, mem_frees, mem_bad_frees,
/// mem_outstanding (live pinned allocations), in_ring (requests in all rings now),
/// mem_bad_allocs, wrong_type (requests on an instance of the wrong service type),
/// rsa_param_rejects (qatlib's RSA parameter checks), lost (responses that never came),
/// resets (silent device resets), start_refs (icp_sal_userStart reference count),
/// numa_mismatch (buffers from another node than the instance's), no_v2p_submits
/// (requests on an instance without the caller's address translation).
/// Unknown names return u64::MAX.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn qat_sim_counter(name: *const c_char) -> u64 {
    if name.is_null() {
        return u64::MAX;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    match name.as_ref() {
        "submits" => c(&SUBMITS),
        "retries" => c(&RETRIES),
        "submit_faults" => c(&SUBMIT_FAULTS),
        "cb_faults" => c(&CB_FAULTS),
        "restarts" => c(&RESTARTS),
        "completions" => c(&COMPLETIONS),
        "starts" => c(&STARTS),
        "stops" => c(&STOPS),
        "polls" => c(&POLLS),
        "invalid_params" => c(&INVALID_PARAMS),
        "rsa_rep1" => c(&RSA_REP1),
        "rsa_rep2" => c(&RSA_REP2),
        "arith_ossl" => c(&ARITH_OSSL),
        "arith_bigint" => c(&ARITH_BIGINT),
        "device_ns" => c(&DEVICE_NS),
        "poll_wait_ns" => c(&POLL_WAIT_NS),
        "mem_allocs" => c(&MEM_ALLOCS),
        "mem_frees" => c(&MEM_FREES),
        "mem_bad_frees" => c(&MEM_BAD_FREES),
        "mem_bad_allocs" => c(&MEM_BAD_ALLOCS),
        "numa_mismatch" => c(&NUMA_MISMATCH),
        "no_v2p_submits" => c(&NO_V2P),
        "wrong_type" => c(&WRONG_TYPE),
        "rsa_param_rejects" => c(&RSA_PARAM_REJECTS),
        "lost" => c(&LOST),
        "resets" => c(&RESETS),
        "start_refs" => u64::from(*lock(&START_REFS)),
        "mem_outstanding" => lock(&MEM).len() as u64,
        "in_ring" => sim().map_or(0, |s| {
            s.instances
                .iter()
                .map(|i| lock(&i.state).in_ring as u64)
                .sum()
        }),
        _ => u64::MAX,
    }
}

/// Live pinned allocations (allocated and not yet freed).
#[no_mangle]
pub extern "C" fn qat_sim_mem_outstanding() -> u64 {
    lock(&MEM).len() as u64
}

/// Hold (`on` != 0) or release (0) every response: see [`HOLD`]. While held, polls deliver
/// nothing; requests still count in `in_ring`, so rings fill up as they would on a device
/// that has not answered yet.
#[no_mangle]
pub extern "C" fn qat_sim_hold(on: c_int) {
    HOLD.store(on != 0, Ordering::Release);
}

/// Compile-time checks: every exported qatlib/usdm function has exactly the type that
/// bindgen generated from the real headers.
#[allow(dead_code)]
mod signature_checks {
    use super::sys::*;

    fn same<F>(_: &Result<F, libloading::Error>, _: F) {}

    fn check(l: &QatLib) {
        same(&l.icp_sal_userStart, super::icp_sal_userStart);
        same(&l.icp_sal_userStop, super::icp_sal_userStop);
        same(&l.cpaCyGetNumInstances, super::cpaCyGetNumInstances);
        same(&l.cpaCyGetInstances, super::cpaCyGetInstances);
        same(&l.cpaCyInstanceGetInfo2, super::cpaCyInstanceGetInfo2);
        same(&l.cpaCyStartInstance, super::cpaCyStartInstance);
        same(&l.cpaCyStopInstance, super::cpaCyStopInstance);
        same(
            &l.cpaCySetAddressTranslation,
            super::cpaCySetAddressTranslation,
        );
        same(&l.cpaCyRsaDecrypt, super::cpaCyRsaDecrypt);
        same(&l.cpaCyEcdsaSignRS, super::cpaCyEcdsaSignRS);
        same(&l.icp_sal_CyPollInstance, super::icp_sal_CyPollInstance);
        same(&l.qaeMemAllocNUMA, super::qaeMemAllocNUMA);
        same(&l.qaeMemFreeNUMA, super::qaeMemFreeNUMA);
        same(&l.qaeVirtToPhysNUMA, super::qaeVirtToPhysNUMA);
        same(&l.cpaGetNumInstances, super::cpaGetNumInstances);
        same(&l.cpaGetInstances, super::cpaGetInstances);
        same(&l.cpaCyQueryCapabilities, super::cpaCyQueryCapabilities);
    }
}

/// The fast (libcrypto) arithmetic against the portable reference path.
#[cfg(test)]
mod arithmetic_paths {
    use super::*;

    /// splitmix64 bytes: a reproducible input stream.
    fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    #[test]
    fn libcrypto_loads_here() {
        assert!(
            ossl::get().is_some(),
            "libcrypto.so.3 (Debian package libssl3) did not load: the simulator would fall back to its slow path"
        );
    }

    #[test]
    fn rsa_fast_path_matches_reference() {
        let o = ossl::get().expect("libcrypto.so.3");
        // Two Mersenne primes make a valid (if unusual) RSA modulus, no prime search needed.
        let one = BigUint::from(1u8);
        let p = (&one << 607usize) - &one;
        let q = (&one << 521usize) - &one;
        let n = &p * &q;
        let e = BigUint::from(65537u32);
        let phi = (&p - &one) * (&q - &one);
        let d = e.modinv(&phi).expect("e invertible");
        let dp = &d % (&p - &one);
        let dq = &d % (&q - &one);
        let qinv = q.modinv(&p).expect("q invertible mod p");
        let nlen = n.to_bytes_be().len();
        let mut seed = 7;
        for _ in 0..50 {
            let c = big(&bytes(&mut seed, nlen)) % &n;
            let cb = fixed(&c, nlen);
            let w2 = RsaWork::Rep2 {
                p: p.to_bytes_be(),
                q: q.to_bytes_be(),
                dp: dp.to_bytes_be(),
                dq: dq.to_bytes_be(),
                qinv: qinv.to_bytes_be(),
                c: cb.clone(),
            };
            let reference = rsa_bigint(&w2).expect("reference");
            let RsaWork::Rep2 {
                p: pp,
                q: qq,
                dp: dpp,
                dq: dqq,
                qinv: qi,
                c: cc,
            } = &w2
            else {
                unreachable!()
            };
            let fast = o.rsa_rep2(pp, qq, dpp, dqq, qi, cc, nlen).expect("fast");
            assert_eq!(fast, reference);
            let fast1 = o
                .rsa_rep1(&n.to_bytes_be(), &d.to_bytes_be(), &cb)
                .expect("fast rep1");
            assert_eq!(fast1, reference);
            // And it really is the inverse of the public operation.
            assert_eq!(big(&fast).modpow(&e, &n), c);
        }
        // c >= n is refused.
        assert!(o
            .rsa_rep1(&n.to_bytes_be(), &d.to_bytes_be(), &n.to_bytes_be())
            .is_err());
    }

    #[test]
    fn ecdsa_fast_path_matches_reference() {
        let o = ossl::get().expect("libcrypto.so.3");
        let mut seed = 11;
        for (curve, len, n) in [
            (Curve::P256, 32, &consts().p256_n),
            (Curve::P384, 48, &consts().p384_n),
        ] {
            for i in 0..50 {
                let scalar = |seed: &mut u64| fixed(&(big(&bytes(seed, len)) % n), len);
                let w = EcdsaWork {
                    curve,
                    k: scalar(&mut seed),
                    // Digests longer than the order and all-ones exercise the reduction.
                    m: if i % 5 == 0 {
                        vec![0xff; len]
                    } else {
                        bytes(&mut seed, len)
                    },
                    d: scalar(&mut seed),
                };
                let (k, m, d) = (big(&w.k), big(&w.m), big(&w.d));
                let reference = ecdsa_bigint(&w, n, &k, &m, &d).expect("reference");
                let fast = o
                    .ecdsa(curve == Curve::P384, &fixed(n, len), &w.k, &w.m, &w.d)
                    .expect("fast");
                assert_eq!(fast, reference);
            }
        }
    }
}
