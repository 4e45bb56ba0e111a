//! The QATzip backend: libqatzip.so.3 opened at run time through the bindgen'd
//! dynamic-loading bindings (`$OUT_DIR/qatzip_sys.rs`), with a process-wide pool of
//! sessions no larger than the number of QAT compression (DC) instances.
//!
//! # Sessions: a pool sized to the DC instances
//!
//! QATzip 1.3.1 binds no session to an instance: every `qzCompressExt` call looks for a
//! free instance (`qzGrabInstance` in `qatzip.c`: one pass from the session's last
//! instance, an atomic test-and-set lock per instance, no waiting) and holds it for the
//! call. When none is free and `sw_backup` is set it compresses in software and returns
//! `QZ_OK` as if the device had done it. So what decides the path is how many calls run
//! at once, not how many sessions exist: per-thread sessions (what we had) let every
//! Envoy worker and every module thread call at once, and beyond the instance count the
//! extra calls silently went to QATzip's software path, which is slower than zlib-rs.
//!
//! Policy: sessions live in a pool per library (idle ones per session parameters, any
//! thread may take one: a QATzip session carries no thread state); at most
//! [`QatzipLib::session_limit`] are in use at once: the DC instance count
//! (`cpaDcGetNumInstances` of the libqat that libqatzip itself loaded, the very number
//! QATzip's `qzInit` reads), or `ENVOY_QATZIP_MAX_SESSIONS`. A call that finds every
//! session in use does not wait (the caller may be an Envoy worker): its input goes to
//! zlib-rs and is counted as `sessions_busy_bytes_in`. Until a device has been seen
//! the number of sessions is not limited (QATzip runs in software then anyway); the pool
//! still reuses them, so there are at most as many as calls that ever ran at once.
//! Prior art: Ceph's QAT compressor also pools QATzip sessions across threads.
//!
//! # Which path ran: the session's `total_in`
//!
//! QATzip 1.3.1 declares `QZ_SW_EXECUTION` for `ext_rc` but never sets it; `qzGetStatus`
//! fills nothing in; `hw_session_stat` stays `QZ_OK` when a call falls back for lack of a
//! free instance. What does tell: `qzCompressCrcExt` adds to the public
//! `QzSession_T::total_in` only on its device path; its software path (`qzSWCompress`,
//! reached below `input_sz_thrshold`, with no device, or with no free instance) leaves it
//! alone (1.1.2 to 1.3.1 alike). So the bytes a call added to `total_in` are the bytes the
//! device took. One case still counts too much: when a device request fails mid-call,
//! QATzip compresses the rest of that call in software and adds it to `total_in` as well
//! (a device fault, not load). Because this is behaviour, not documented API, it is
//! checked once per library ([`QatzipLib::total_in_is_device_only`]): a request below the
//! threshold (software by QATzip's own rule) must leave `total_in` unchanged. If it does
//! not, hardware bytes fall back to "session status `QZ_OK`", an upper bound, and
//! [`crate::compress::StatsSnapshot::hw_bytes_exact`] says so.
//!
//! Loading: `ENVOY_QATZIP_LIB` (a path to libqatzip.so.3) or the build's default, the
//! trixie libraries fetched by `ci/fetch-qat-deps.sh`, or `libqatzip.so.3` from the
//! system's search path. libqatzip needs libqat.so.4 and libusdm.so.0; when they sit next
//! to it they are opened first from that directory, so its NEEDED entries resolve by
//! soname without `LD_LIBRARY_PATH`. Everything is opened `RTLD_LOCAL | RTLD_DEEPBIND` (DEEPBIND off in a host with its own allocator, see [`disable_deep_bind`]):
//! our symbols stay out of the global scope and qatlib binds to its own libcrypto.so.3
//! first (see DESIGN.md's BoringSSL pitfall). Libraries stay loaded for the life of the
//! process (qatlib keeps global state; unloading it is not supported).
//! Measured with the trixie libraries: opening libqatzip.so.3 by full path alone fails
//! ("libusdm.so.0: cannot open shared object file"); opening libusdm.so.0 and libqat.so.4
//! first, `RTLD_LOCAL`, makes its NEEDED entries resolve by soname.
//!
//! No device: QATzip still sets up a session (`qzInit(sess, 1)` succeeds) and compresses
//! in its software fallback, but it retries the device every few requests and each retry
//! prints three lines to stderr (qatlib's "Cannot open /dev/vfio", QATzip's "Error no
//! hardware"). So once a request reports software execution with no hardware session,
//! [`QatzipLib::device_absent`] is true for [`REPROBE_INTERVAL`]: callers then compress
//! with zlib-rs directly (faster than QATzip's fallback, and quiet), and one request per
//! interval probes QATzip again so a device that appears later is picked up. Each probe
//! that again finds no device doubles the interval, up to [`REPROBE_INTERVAL_MAX`], so a
//! host with libqatzip and no QAT gets those stderr lines a few times an hour, not twice a
//! minute; a request that runs on a device resets it.

use std::collections::HashMap;
use std::ffi::c_uint;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::config::CompressorConfig;

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all,
    // bindgen's generated loader: its unsafe blocks are the dlsym'd calls themselves.
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn,
    rustdoc::all
)]
pub(crate) mod sys {
    include!(concat!(env!("OUT_DIR"), "/qatzip_sys.rs"));
}

/// How long a first "no QAT device" result stands before QATzip is asked again.
pub const REPROBE_INTERVAL: Duration = Duration::from_secs(30);
/// The longest interval between probes once they keep finding no device (doubling from
/// [`REPROBE_INTERVAL`]).
pub const REPROBE_INTERVAL_MAX: Duration = Duration::from_secs(600);

/// The interval after a probe that found no device, given the one before it (`None`: the
/// first such result).
fn next_reprobe_interval(prev: Option<Duration>) -> Duration {
    prev.map_or(REPROBE_INTERVAL, |d| (d * 2).min(REPROBE_INTERVAL_MAX))
}

/// Environment variable naming libqatzip.so.3 to load.
pub const LIB_ENV: &str = "ENVOY_QATZIP_LIB";

/// Environment variable overriding the session limit (default: the DC instance count).
pub const MAX_SESSIONS_ENV: &str = "ENVOY_QATZIP_MAX_SESSIONS";

const QZ_OK: i32 = 0;
const QZ_SW_EXECUTION_MASK: u64 = 1 << 4;

/// What one QATzip request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ran {
    /// Input bytes the device compressed (see the module docs for how this is known);
    /// the rest of the request went through QATzip's software fallback.
    pub hw_bytes: u64,
}

/// `cpaDcGetNumInstances(Cpa16U *)`, looked up in the libqat that libqatzip loaded.
type DcGetNumInstances = unsafe extern "C" fn(*mut u16) -> i32;

/// A loaded libqatzip.
pub struct QatzipLib {
    lib: sys::QatZipLib,
    path: PathBuf,
    hardware_seen: AtomicBool,
    path_logged: AtomicBool,
    /// When a request last ran in software for lack of a device, and how long that result
    /// stands before the next probe.
    no_device_at: Mutex<Option<(Instant, Duration)>>,
    /// Whether `device_absent` may shortcut to zlib-rs (on by default).
    shortcut: AtomicBool,
    /// The session pool.
    pool: Mutex<Pool>,
    /// `cpaDcGetNumInstances` from libqatzip's own libqat, if it exports one.
    dc_num_instances: Option<DcGetNumInstances>,
    /// Whether `total_in` advances on the device path only (checked at the first session).
    total_in_device_only: OnceLock<bool>,
    /// Set once the first session has been made (and the limit learned, with a device).
    started: OnceLock<()>,
    // Keep the dependency handles open as long as libqatzip (never, in practice: the
    // loaded libraries are cached for the process's lifetime).
    _deps: Vec<libloading::Library>,
}

// SAFETY: QatZipLib holds a library handle and plain function pointers; the pooled
// sessions are behind a mutex and each is used by one thread at a time (see `Session`).
unsafe impl Send for QatzipLib {}
// SAFETY: as above; shared access reads function pointers or goes through the mutex.
unsafe impl Sync for QatzipLib {}

fn lib_cache() -> &'static Mutex<HashMap<PathBuf, Arc<QatzipLib>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<QatzipLib>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The default libqatzip path: `ENVOY_QATZIP_LIB`, else the build's trixie libraries if
/// present, else the bare soname (system search path).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os(LIB_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let built = Path::new(env!("ENVOY_QAT_DEPS_LIB")).join("libqatzip.so.3");
    if built.exists() {
        return built;
    }
    PathBuf::from("libqatzip.so.3")
}

/// Whether libqatzip and its dependencies are opened with `RTLD_DEEPBIND` (default on).
static DEEP_BIND: AtomicBool = AtomicBool::new(true);

/// Open libqatzip without `RTLD_DEEPBIND` from now on. For a host process that exports its
/// own `malloc`/`free` and no libcrypto symbols, as Envoy does (tcmalloc, BoringSSL kept
/// private): with `RTLD_DEEPBIND`, qatlib's libraries would call glibc's `free` on memory
/// that glibc's own functions took from the host's `malloc`, and Envoy aborts at the
/// first QATzip session ("free(): invalid pointer", seen with Envoy 1.40). Without it,
/// qatlib still gets OpenSSL's libcrypto.so.3, since the host exports none of its names.
/// The Envoy dynamic module calls this when Envoy loads it.
pub fn disable_deep_bind() {
    DEEP_BIND.store(false, Ordering::Relaxed);
}

impl QatzipLib {
    /// Load (once per process) from [`default_path`].
    pub fn load_default() -> Result<Arc<Self>, String> {
        Self::load(&default_path())
    }

    /// Load (once per process and path) libqatzip from `path`.
    pub fn load(path: &Path) -> Result<Arc<Self>, String> {
        let mut cache = lib_cache().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = cache.get(path) {
            return Ok(l.clone());
        }
        let l = Arc::new(Self::open(path)?);
        cache.insert(path.to_path_buf(), l.clone());
        Ok(l)
    }

    fn open(path: &Path) -> Result<Self, String> {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        let deep = if DEEP_BIND.load(Ordering::Relaxed) {
            libc::RTLD_DEEPBIND
        } else {
            0
        };
        let flags = RTLD_NOW | RTLD_LOCAL | deep;
        let mut deps = Vec::new();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            for dep in ["libusdm.so.0", "libqat.so.4"] {
                let p = dir.join(dep);
                if p.exists() {
                    // SAFETY: loading a shared library runs its constructors; libusdm and
                    // libqat have no constructors with preconditions on the caller.
                    let l = unsafe { Library::open(Some(&p), flags) }
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    deps.push(libloading::Library::from(l));
                }
            }
        }
        // SAFETY: as above for libqatzip.
        let l = unsafe { Library::open(Some(path), flags) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let l = libloading::Library::from(l);
        // dlsym on libqatzip's handle also searches the libraries it loaded (its libqat).
        // SAFETY: the symbol has qatlib's signature `CpaStatus cpaDcGetNumInstances(Cpa16U *)`
        // (cpa_dc.h); the pointer stays valid while the library is loaded (for the
        // process's lifetime, see the module docs).
        let dc_num_instances: Option<DcGetNumInstances> = unsafe {
            l.get::<DcGetNumInstances>(b"cpaDcGetNumInstances\0")
                .ok()
                .map(|f| *f)
        };
        let limit = max_sessions_from_env()?;
        // SAFETY: from_library only looks symbols up; the generated signatures come from
        // the same qatzip.h that libqatzip.so.3 was built from (Debian trixie).
        let lib = unsafe { sys::QatZipLib::from_library(l) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let missing: Vec<&str> = [
            ("qzInit", lib.qzInit.is_ok()),
            ("qzGetDefaults", lib.qzGetDefaults.is_ok()),
            ("qzSetupSession", lib.qzSetupSession.is_ok()),
            ("qzCompressExt", lib.qzCompressExt.is_ok()),
            ("qzMaxCompressedLength", lib.qzMaxCompressedLength.is_ok()),
            ("qzTeardownSession", lib.qzTeardownSession.is_ok()),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: missing symbols {}: not a QATzip 1.x library",
                path.display(),
                missing.join(", ")
            ));
        }
        Ok(Self {
            lib,
            path: path.to_path_buf(),
            hardware_seen: AtomicBool::new(false),
            path_logged: AtomicBool::new(false),
            no_device_at: Mutex::new(None),
            shortcut: AtomicBool::new(true),
            pool: Mutex::new(Pool {
                limit: limit.map(|n| (n, LimitSource::Env)),
                fixed: limit.is_some(),
                ..Pool::default()
            }),
            dc_num_instances,
            total_in_device_only: OnceLock::new(),
            started: OnceLock::new(),
            _deps: deps,
        })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether any request so far ran on a QAT device.
    pub fn hardware_seen(&self) -> bool {
        self.hardware_seen.load(Ordering::Relaxed)
    }

    /// True while a recent request found no QAT device (see the module docs); false at
    /// most once per re-probe interval ([`REPROBE_INTERVAL`], doubling up to
    /// [`REPROBE_INTERVAL_MAX`]) so the caller probes QATzip again.
    pub fn device_absent(&self) -> bool {
        if !self.shortcut.load(Ordering::Relaxed) {
            return false;
        }
        let mut g = self.no_device_at.lock().unwrap_or_else(|e| e.into_inner());
        match *g {
            Some((t, interval)) if t.elapsed() < interval => true,
            Some((_, interval)) => {
                // Let this caller probe; others keep skipping until it reports.
                *g = Some((Instant::now(), interval));
                false
            }
            None => false,
        }
    }

    /// Let the next request probe QATzip now, as if the current "no device" result had
    /// run out (its interval is kept). For tests and measurements.
    pub fn expire_no_device_result(&self) {
        if let Some((t, d)) = lock(&self.no_device_at).as_mut() {
            *t = Instant::now().checked_sub(*d).unwrap_or(*t);
        }
    }

    /// How long the current "no device" result stands (`None`: no such result).
    pub fn reprobe_interval(&self) -> Option<Duration> {
        lock(&self.no_device_at).map(|(_, d)| d)
    }

    /// Turn the no-device shortcut off (every request goes to QATzip, whose software
    /// fallback then runs: for measuring it) or back on.
    pub fn set_no_device_shortcut(&self, on: bool) {
        self.shortcut.store(on, Ordering::Relaxed);
    }

    fn log_path_once(&self, hw: bool, stat: i64) {
        if !self.path_logged.swap(true, Ordering::Relaxed) {
            if hw {
                tracing::info!(target: "envoy_qat::compress", "compressor: QATzip on a QAT device ({})", self.path.display());
            } else {
                tracing::info!(
                    target: "envoy_qat::compress",
                    "compressor: QATzip software fallback, no QAT device (session status {stat}; {}); \
                     compressing with zlib-rs and asking QATzip again after {} s, then at \
                     doubling intervals up to {} s",
                    self.path.display(),
                    REPROBE_INTERVAL.as_secs(),
                    REPROBE_INTERVAL_MAX.as_secs()
                );
            }
        }
    }

    /// Whether the session's `total_in` advances only on QATzip's device path (see the
    /// module docs), checked at this library's first session; `None` before that.
    pub fn total_in_is_device_only(&self) -> Option<bool> {
        self.total_in_device_only.get().copied()
    }

    /// The most sessions in use at once, `None` while there is no limit (no device seen
    /// and no `ENVOY_QATZIP_MAX_SESSIONS`).
    pub fn session_limit(&self) -> Option<usize> {
        lock(&self.pool).limit.map(|(n, _)| n)
    }

    /// Set the session limit (`None`: no limit; `Some(0)` is taken as 1). For tests and
    /// measurements; a limit (or no limit) set here is not replaced by the DC instance
    /// count.
    pub fn set_session_limit(&self, limit: Option<usize>) {
        let mut p = lock(&self.pool);
        p.limit = limit.map(|n| (n.max(1), LimitSource::Caller));
        p.fixed = true;
    }

    /// Counters of the session pool.
    pub fn pool_stats(&self) -> PoolStats {
        let p = lock(&self.pool);
        PoolStats {
            in_use: p.in_use,
            idle: p.idle.iter().map(|(_, v)| v.len()).sum(),
            created: p.created,
            peak_in_use: p.peak_in_use,
            busy: p.busy,
        }
    }

    /// Tear down the idle sessions (those in use go back to the pool when their call ends).
    pub fn drop_idle_sessions(&self) {
        let idle = std::mem::take(&mut lock(&self.pool).idle);
        for (_, v) in idle {
            for s in v {
                self.teardown(s);
            }
        }
    }

    /// Compress `input` on a pooled session for `cfg` as raw deflate with `last = 0`:
    /// QATzip ends the request with a full flush, so the appended output is
    /// self-contained, byte-aligned, non-final deflate blocks. `Ok(None)`: every session
    /// allowed is in use (nothing was written; compress the input elsewhere).
    pub fn compress_full_flush(
        self: &Arc<Self>,
        cfg: &CompressorConfig,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Ran>, String> {
        let key = SessionKey::of(cfg);
        let Some(mut sess) = self.acquire(key)? else {
            return Ok(None);
        };
        let r = self.compress_on(&mut sess, input, out);
        self.release(key, sess, r.is_ok());
        r.map(Some)
    }

    fn compress_on(
        &self,
        sess: &mut Session,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Ran, String> {
        let sess: *mut sys::QzSession_T = &mut *sess.0;
        let n = c_uint::try_from(input.len()).map_err(|_| "input too large".to_string())?;
        // SAFETY: sess is an initialised session this thread holds alone (taken from the
        // pool).
        let bound = unsafe { self.lib.qzMaxCompressedLength(n, sess) } as usize;
        // Generous: the bound, plus a stored-block worst case, plus slack.
        let need = bound.max(input.len() + input.len() / 8 + 1024);
        out.reserve(need);
        let spare = out.spare_capacity_mut();
        let mut src_len = n;
        let mut dest_len = c_uint::try_from(spare.len()).unwrap_or(c_uint::MAX);
        let mut ext: u64 = 0;
        // SAFETY: sess is valid (as above); reading a plain field.
        let total_before = unsafe { (*sess).total_in };
        // SAFETY: src points at n readable bytes; dest at dest_len writable bytes of
        // spare capacity; sess is held by this thread alone; QATzip writes at most
        // dest_len bytes and reports how many in dest_len.
        let rc = unsafe {
            self.lib.qzCompressExt(
                sess,
                input.as_ptr(),
                &mut src_len,
                spare.as_mut_ptr().cast(),
                &mut dest_len,
                0,
                &mut ext,
            )
        };
        if rc != QZ_OK {
            return Err(format!("qzCompressExt returned {rc} (ext {ext:#x})"));
        }
        if src_len != n || dest_len as usize > spare.len() {
            return Err(format!(
                "qzCompressExt consumed {src_len} of {n} bytes, produced {dest_len}"
            ));
        }
        // SAFETY: QATzip initialised dest_len bytes of the spare capacity.
        unsafe { out.set_len(out.len() + dest_len as usize) };
        // SAFETY: sess is valid; reading plain fields.
        let (stat, total_after) = unsafe { ((*sess).hw_session_stat, (*sess).total_in) };
        let status_hw = ext & QZ_SW_EXECUTION_MASK == 0 && stat == QZ_OK as i64;
        let hw_bytes = if self.total_in_device_only.get() == Some(&true) {
            // c_ulong is u64 on the 64-bit Linux targets QATzip supports.
            let delta: u64 = total_after.wrapping_sub(total_before);
            delta.min(u64::from(n))
        } else if status_hw {
            // Upper bound: the session could use the device, not that it did.
            u64::from(n)
        } else {
            0
        };
        if hw_bytes > 0 {
            self.hardware_seen.store(true, Ordering::Relaxed);
            *lock(&self.no_device_at) = None;
        } else if stat != QZ_OK as i64 {
            let mut g = lock(&self.no_device_at);
            *g = Some((Instant::now(), next_reprobe_interval(g.map(|(_, d)| d))));
        }
        self.log_path_once(stat == QZ_OK as i64, stat);
        Ok(Ran { hw_bytes })
    }

    /// Take an idle session for `key`, or make one, unless the limit is reached.
    fn acquire(self: &Arc<Self>, key: SessionKey) -> Result<Option<Session>, String> {
        // The first session is made while other callers wait (QATzip's qzInit holds its
        // own process lock meanwhile anyway), so that the limit is known before a burst
        // of first calls could outnumber the instances.
        self.started.get_or_init(|| match self.new_session(key) {
            Ok(s) => {
                let mut p = lock(&self.pool);
                p.created += 1;
                p.idle.push((key, vec![s]));
            }
            Err(e) => {
                tracing::debug!(target: "envoy_qat::compress", "QATzip: first session failed ({e})")
            }
        });
        let idle = {
            let mut p = lock(&self.pool);
            if p.limit.is_some_and(|(l, _)| p.in_use >= l) {
                p.busy += 1;
                return Ok(None);
            }
            p.in_use += 1;
            p.peak_in_use = p.peak_in_use.max(p.in_use);
            p.idle
                .iter_mut()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.pop())
        };
        if let Some(s) = idle {
            return Ok(Some(s));
        }
        match self.new_session(key) {
            Ok(s) => {
                lock(&self.pool).created += 1;
                Ok(Some(s))
            }
            Err(e) => {
                lock(&self.pool).in_use -= 1;
                Err(e)
            }
        }
    }

    /// Give a session back: to the idle list when it worked, else tear it down (a failed
    /// session starts over next time).
    fn release(&self, key: SessionKey, sess: Session, ok: bool) {
        let spare = {
            let mut p = lock(&self.pool);
            p.in_use -= 1;
            // Idle sessions per parameter set stay within the most ever in use at once.
            if ok {
                match p.idle.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(sess),
                    None => p.idle.push((key, vec![sess])),
                }
                None
            } else {
                Some(sess)
            }
        };
        if let Some(s) = spare {
            self.teardown(s);
        }
    }

    fn teardown(&self, mut s: Session) {
        // SAFETY: the session was set up by `new_session` and nothing uses it after
        // this. qzClose is not called: it would stop QAT for the whole process.
        unsafe {
            self.lib.qzTeardownSession(&mut *s.0);
        }
    }

    fn new_session(&self, key: SessionKey) -> Result<Session, String> {
        let sess = self.setup_session(key)?;
        // Check once, on a session of its own, that a request QATzip runs in software by
        // its own rule (below input_sz_thrshold) leaves total_in alone.
        self.total_in_device_only.get_or_init(|| {
            let verdict = self
                .setup_session(key)
                .map(|mut probe| {
                    let r = self.total_in_probe(&mut probe);
                    self.teardown(probe);
                    r
                })
                .unwrap_or_else(|e| Err(format!("probe session: {e}")));
            match verdict {
                Ok(true) => true,
                Ok(false) => {
                    tracing::warn!(target: "envoy_qat::compress", "QATzip ({}) counts software-compressed input in total_in: hardware bytes are counted from the session status, an upper bound", self.path.display());
                    false
                }
                Err(e) => {
                    tracing::warn!(target: "envoy_qat::compress", "QATzip ({}): total_in check failed ({e}); hardware bytes are counted from the session status, an upper bound", self.path.display());
                    false
                }
            }
        });
        let stat = sess.0.hw_session_stat;
        if stat == QZ_OK as i64 {
            self.learn_instance_count();
        }
        Ok(sess)
    }

    /// Compress a few bytes below the session's threshold: QATzip sends such a request
    /// to software (`qzCompressCrcExt`). Ok(true) if total_in did not move.
    fn total_in_probe(&self, probe: &mut Session) -> Result<bool, String> {
        let sess: *mut sys::QzSession_T = &mut *probe.0;
        let input = [b'a'; 64];
        let mut out = [0u8; 256];
        let mut src_len = input.len() as c_uint;
        let mut dest_len = out.len() as c_uint;
        // SAFETY: sess is a session set up by this thread and used by no other; the
        // buffers are valid for the lengths given.
        let (before, rc, after) = unsafe {
            let before = (*sess).total_in;
            let rc = self.lib.qzCompressExt(
                sess,
                input.as_ptr(),
                &mut src_len,
                out.as_mut_ptr(),
                &mut dest_len,
                0,
                std::ptr::null_mut(),
            );
            (before, rc, (*sess).total_in)
        };
        if rc != QZ_OK {
            return Err(format!("qzCompressExt returned {rc}"));
        }
        Ok(after == before)
    }

    /// Learn the DC instance count (once a device is seen, unless a limit is set).
    fn learn_instance_count(&self) {
        {
            let p = lock(&self.pool);
            if p.fixed || p.limit.is_some() {
                return;
            }
        }
        let Some(get) = self.dc_num_instances else {
            tracing::warn!(target: "envoy_qat::compress", "QATzip ({}): its libqat exports no cpaDcGetNumInstances; QATzip sessions are not limited (set {MAX_SESSIONS_ENV})", self.path.display());
            return;
        };
        let mut n: u16 = 0;
        // SAFETY: qatlib's signature; qzInit started qatlib (the session reports a device).
        let rc = unsafe { get(&mut n) };
        if rc != 0 || n == 0 {
            tracing::warn!(target: "envoy_qat::compress", "QATzip ({}): cpaDcGetNumInstances returned status {rc}, {n} instances; QATzip sessions are not limited (set {MAX_SESSIONS_ENV})", self.path.display());
            return;
        }
        let mut p = lock(&self.pool);
        if !p.fixed && p.limit.is_none() {
            p.limit = Some((usize::from(n), LimitSource::DcInstances));
            tracing::info!(target: "envoy_qat::compress", "QATzip: at most {n} sessions in use at once (one per DC instance); beyond that, zlib-rs");
        }
    }

    fn setup_session(&self, key: SessionKey) -> Result<Session, String> {
        let mut sess = Session(Box::default());
        // qzInit starts qatlib, which prints start-up errors on stdout: keep them off data output.
        let rc = crate::stdio::with_stdout_on_stderr(|| {
            // SAFETY: sess is a zeroed session struct that QATzip initialises.
            unsafe { self.lib.qzInit(&mut *sess.0, 1) }
        });
        // With no device qzInit still succeeds (software backup); negative codes are errors.
        if rc < 0 {
            return Err(format!("qzInit returned {rc}"));
        }
        let mut params = sys::QzSessionParams_T::default();
        // SAFETY: params is a plain struct QATzip fills in.
        let rc = unsafe { self.lib.qzGetDefaults(&mut params) };
        if rc != QZ_OK {
            return Err(format!("qzGetDefaults returned {rc}"));
        }
        params.comp_lvl = key.level;
        params.hw_buff_sz = key.hw_buff;
        params.strm_buff_sz = key.strm_buff;
        params.input_sz_thrshold = key.threshold;
        params.data_fmt = sys::QzDataFormat_E_QZ_DEFLATE_RAW;
        params.sw_backup = 1;
        // SAFETY: sess was initialised by qzInit; params is valid.
        let rc = unsafe { self.lib.qzSetupSession(&mut *sess.0, &mut params) };
        if let Err(e) = setup_status(rc) {
            // SAFETY: tearing down a partially set up session is allowed.
            unsafe { self.lib.qzTeardownSession(&mut *sess.0) };
            return Err(e);
        }
        tracing::debug!(target: "envoy_qat::compress", "QATzip session: setup rc {rc}, hw status {}", sess.0.hw_session_stat);
        Ok(sess)
    }
}

/// What `qzSetupSession`'s return code means for a fresh session: `QZ_OK` is success;
/// `QZ_PARAMS` (-1) and the other negative codes (`QZ_NOSW_*`, `QZ_FAIL`) are failures
/// (an older check, `rc != -QZ_DUPLICATE`, let QZ_PARAMS pass); `QZ_DUPLICATE` (+1) means
/// the session struct was already set up, which cannot happen for a zeroed struct and is
/// refused too; `QZ_UNSUPPORTED_FMT` (16, from `qzSetupDcSessionData`) leaves
/// `hw_session_stat` at `QZ_FAIL`, so every later `qzCompressExt` on that session would
/// fail: refused as well (QATzip 1.3.1, `qzSetupSession`, `qzSetupSessionInternal`).
pub fn setup_status(rc: i32) -> Result<(), String> {
    match rc {
        QZ_OK => Ok(()),
        -1 => Err("qzSetupSession returned QZ_PARAMS (-1): QATzip refused the session parameters (level, hardware buffer size, stream buffer size or threshold)".into()),
        1 => Err("qzSetupSession returned QZ_DUPLICATE (1) for a new session".into()),
        rc => Err(format!("qzSetupSession returned {rc}")),
    }
}

fn max_sessions_from_env() -> Result<Option<usize>, String> {
    parse_max_sessions(std::env::var_os(MAX_SESSIONS_ENV).as_deref())
}

fn parse_max_sessions(v: Option<&std::ffi::OsStr>) -> Result<Option<usize>, String> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.to_str().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!(
            "{MAX_SESSIONS_ENV}={}: expected a whole number >= 1 (the most QATzip sessions in use at once); unset it to use the QAT DC instance count",
            v.to_string_lossy()
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters of a library's session pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sessions in use now.
    pub in_use: usize,
    /// Sessions set up and idle.
    pub idle: usize,
    /// Sessions set up so far.
    pub created: u64,
    /// Most sessions in use at once so far.
    pub peak_in_use: usize,
    /// Requests that found every allowed session in use (sent to zlib-rs).
    pub busy: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LimitSource {
    Env,
    DcInstances,
    Caller,
}

#[derive(Default)]
struct Pool {
    limit: Option<(usize, LimitSource)>,
    /// The limit comes from the environment or the caller: not learned.
    fixed: bool,
    in_use: usize,
    peak_in_use: usize,
    created: u64,
    busy: u64,
    idle: Vec<(SessionKey, Vec<Session>)>,
}

/// A set-up QATzip session.
struct Session(Box<sys::QzSession_T>);

// SAFETY: a QATzip 1.3.1 session keeps its state in `sess->internal` and QATzip's
// thread-local data (`g_thread` in qatzip.c) holds only timers and pids, so a session may
// move between threads; the pool hands each session to one thread at a time.
unsafe impl Send for Session {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    level: u32,
    hw_buff: u32,
    strm_buff: u32,
    threshold: u32,
}

impl SessionKey {
    fn of(cfg: &CompressorConfig) -> Self {
        Self {
            level: cfg.compression_level,
            hw_buff: cfg.hardware_buffer_size.bytes(),
            strm_buff: cfg.stream_buffer_size,
            threshold: cfg.input_size_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprobe_interval_doubles_to_its_cap() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let next = next_reprobe_interval(d);
            seen.push(next.as_secs());
            d = Some(next);
        }
        assert_eq!(seen, [30, 60, 120, 240, 480, 600, 600, 600]);
    }

    #[test]
    fn setup_status_accepts_only_qz_ok() {
        assert!(setup_status(0).is_ok());
        // QZ_PARAMS is -1: the old `rc != -QZ_DUPLICATE` check took it for success.
        let e = setup_status(-1).unwrap_err();
        assert!(e.contains("QZ_PARAMS"), "{e}");
        assert!(setup_status(1).unwrap_err().contains("QZ_DUPLICATE"));
        for rc in [-2, -3, -101, -103, -104, -116, 11, 13, 14, 16] {
            assert!(setup_status(rc).is_err(), "{rc}");
        }
    }

    #[test]
    fn max_sessions_setting() {
        use std::ffi::OsStr;
        assert_eq!(parse_max_sessions(None), Ok(None));
        assert_eq!(parse_max_sessions(Some(OsStr::new(""))), Ok(None));
        assert_eq!(parse_max_sessions(Some(OsStr::new(" 4 "))), Ok(Some(4)));
        for bad in ["0", "-1", "two", "1.5"] {
            let e = parse_max_sessions(Some(OsStr::new(bad))).unwrap_err();
            assert!(e.contains(MAX_SESSIONS_ENV) && e.contains(bad), "{e}");
            assert!(e.contains("unset it"), "{e}");
        }
    }
}
