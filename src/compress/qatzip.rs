//! The QATzip backend: libqatzip.so.3 opened at run time through the bindgen'd
//! dynamic-loading bindings (`$OUT_DIR/qatzip_sys.rs`), one session per worker thread
//! and session parameters.
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
//! interval probes QATzip again so a device that appears later is picked up.

use std::cell::RefCell;
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

/// How long a "no QAT device" result stands before QATzip is asked again.
pub const REPROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Environment variable naming libqatzip.so.3 to load.
pub const LIB_ENV: &str = "ENVOY_QATZIP_LIB";

const QZ_OK: i32 = 0;
const QZ_SW_EXECUTION_MASK: u64 = 1 << 4;

/// Which engine ran a QATzip request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// A QAT device.
    Hardware,
    /// QATzip's software fallback.
    Software,
}

/// A loaded libqatzip.
pub struct QatzipLib {
    lib: sys::QatZipLib,
    path: PathBuf,
    hardware_seen: AtomicBool,
    path_logged: AtomicBool,
    /// When a request last ran in software for lack of a device.
    no_device_at: Mutex<Option<Instant>>,
    /// Whether `device_absent` may shortcut to zlib-rs (on by default).
    shortcut: AtomicBool,
    // Keep the dependency handles open as long as libqatzip (never, in practice: the
    // loaded libraries are cached for the process's lifetime).
    _deps: Vec<libloading::Library>,
}

// SAFETY: QatZipLib holds a library handle and plain function pointers; QATzip's API is
// documented thread-safe per session, and sessions are never shared between threads here
// (they live in thread-locals).
unsafe impl Send for QatzipLib {}
// SAFETY: as above; shared access only reads function pointers.
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
        // SAFETY: from_library only looks symbols up; the generated signatures come from
        // the same qatzip.h that libqatzip.so.3 was built from (Debian trixie).
        let lib = unsafe { sys::QatZipLib::from_library(libloading::Library::from(l)) }
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
    /// most once per [`REPROBE_INTERVAL`] so the caller probes QATzip again.
    pub fn device_absent(&self) -> bool {
        if !self.shortcut.load(Ordering::Relaxed) {
            return false;
        }
        let mut g = self.no_device_at.lock().unwrap_or_else(|e| e.into_inner());
        match *g {
            Some(t) if t.elapsed() < REPROBE_INTERVAL => true,
            Some(_) => {
                // Let this caller probe; others keep skipping until it reports.
                *g = Some(Instant::now());
                false
            }
            None => false,
        }
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
                     compressing with zlib-rs and asking QATzip again every {} s",
                    self.path.display(),
                    REPROBE_INTERVAL.as_secs()
                );
            }
        }
    }

    /// Compress `input` on this thread's session for `cfg` as raw deflate with `last = 0`:
    /// QATzip ends the request with a full flush, so the appended output is
    /// self-contained, byte-aligned, non-final deflate blocks.
    pub fn compress_full_flush(
        self: &Arc<Self>,
        cfg: &CompressorConfig,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Ran, String> {
        let key = SessionKey::of(cfg);
        with_session(self, key, |sess| {
            let n = c_uint::try_from(input.len()).map_err(|_| "input too large".to_string())?;
            // SAFETY: sess is an initialised session owned by this thread.
            let bound = unsafe { self.lib.qzMaxCompressedLength(n, sess) } as usize;
            // Generous: the bound, plus a stored-block worst case, plus slack.
            let need = bound.max(input.len() + input.len() / 8 + 1024);
            out.reserve(need);
            let spare = out.spare_capacity_mut();
            let mut src_len = n;
            let mut dest_len = c_uint::try_from(spare.len()).unwrap_or(c_uint::MAX);
            let mut ext: u64 = 0;
            // SAFETY: src points at n readable bytes; dest at dest_len writable bytes of
            // spare capacity; sess is this thread's session; QATzip writes at most
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
            // SAFETY: sess is valid; reading a plain field.
            let stat: i64 = unsafe { (*sess).hw_session_stat };
            let hw = ext & QZ_SW_EXECUTION_MASK == 0 && stat == QZ_OK as i64;
            if hw {
                self.hardware_seen.store(true, Ordering::Relaxed);
                *self.no_device_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
            } else if stat != QZ_OK as i64 {
                *self.no_device_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            self.log_path_once(hw, stat);
            Ok(if hw { Ran::Hardware } else { Ran::Software })
        })
    }
}

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

struct ThreadSession {
    lib: Arc<QatzipLib>,
    key: SessionKey,
    sess: Box<sys::QzSession_T>,
}

impl Drop for ThreadSession {
    fn drop(&mut self) {
        // SAFETY: the session was set up by this thread and is not used after this.
        // qzClose is not called: it would stop QAT for the whole process.
        unsafe {
            self.lib.lib.qzTeardownSession(&mut *self.sess);
        }
    }
}

thread_local! {
    /// This thread's QATzip sessions, one per (library, session parameters).
    static SESSIONS: RefCell<Vec<ThreadSession>> = const { RefCell::new(Vec::new()) };
}

fn with_session<R>(
    lib: &Arc<QatzipLib>,
    key: SessionKey,
    f: impl FnOnce(*mut sys::QzSession_T) -> Result<R, String>,
) -> Result<R, String> {
    SESSIONS.with(|cell| {
        let mut v = cell.borrow_mut();
        let idx = match v
            .iter()
            .position(|s| Arc::ptr_eq(&s.lib, lib) && s.key == key)
        {
            Some(i) => i,
            None => {
                v.push(new_session(lib, key)?);
                v.len() - 1
            }
        };
        let sess: *mut sys::QzSession_T = &mut *v[idx].sess;
        let r = f(sess);
        if r.is_err() {
            // Start over with a fresh session next time.
            v.swap_remove(idx);
        }
        r
    })
}

fn new_session(lib: &Arc<QatzipLib>, key: SessionKey) -> Result<ThreadSession, String> {
    let mut sess: Box<sys::QzSession_T> = Box::default();
    // qzInit starts qatlib, which prints start-up errors on stdout: keep them off data output.
    let rc = crate::stdio::with_stdout_on_stderr(|| {
        // SAFETY: sess is a zeroed session struct that QATzip initialises.
        unsafe { lib.lib.qzInit(&mut *sess, 1) }
    });
    // With no device qzInit still succeeds (software backup); negative codes are errors.
    if rc < 0 {
        return Err(format!("qzInit returned {rc}"));
    }
    let mut params = sys::QzSessionParams_T::default();
    // SAFETY: params is a plain struct QATzip fills in.
    let rc = unsafe { lib.lib.qzGetDefaults(&mut params) };
    if rc != QZ_OK {
        return Err(format!("qzGetDefaults returned {rc}"));
    }
    params.comp_lvl = key.level;
    params.hw_buff_sz = key.hw_buff;
    params.strm_buff_sz = key.strm_buff;
    params.input_sz_thrshold = key.threshold;
    params.data_fmt = sys::QzDataFormat_E_QZ_DEFLATE_RAW;
    params.sw_backup = 1;
    // SAFETY: sess was initialised by qzInit on this thread; params is valid.
    let rc = unsafe { lib.lib.qzSetupSession(&mut *sess, &mut params) };
    // Negative codes are failures (QZ_PARAMS is -1: it used to pass as "-QZ_DUPLICATE");
    // QZ_DUPLICATE (+1) and the positive "using software" codes are not.
    if rc < 0 {
        // SAFETY: tearing down a partially set up session is allowed.
        unsafe { lib.lib.qzTeardownSession(&mut *sess) };
        return Err(format!("qzSetupSession returned {rc}"));
    }
    tracing::debug!(target: "envoy_qat::compress", "QATzip session on thread {:?}: setup rc {rc}, hw status {}", std::thread::current().id(), sess.hw_session_stat);
    Ok(ThreadSession {
        lib: lib.clone(),
        key,
        sess,
    })
}

/// QATzip sessions alive on the calling thread (for tests and stats).
pub fn thread_session_count() -> usize {
    SESSIONS.with(|c| c.borrow().len())
}
