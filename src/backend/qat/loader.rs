//! Finding, opening and starting qatlib: dlopen of libusdm.so.0 and libqat.so.4 with
//! `RTLD_LOCAL | RTLD_DEEPBIND` (so qatlib binds its own libcrypto.so.3 symbols, not a
//! BoringSSL that the host process may export), `icp_sal_userStart(section)`, and the
//! crypto instances.
//!
//! qatlib counts `icp_sal_userStart` calls per process (sal_user.c `start_ref_count`): a
//! later start succeeds without looking at its section name and only the last
//! `icp_sal_userStop` stops. The started runtime is shared by every QAT backend of the
//! process and stopped (`cpaCyStopInstance`, `icp_sal_userStop`) when the last one is
//! gone; another user in the process (QATzip starts qatlib too) keeps qatlib running,
//! and whichever started first chose the section. Opened libraries are never closed:
//! qatlib keeps threads and state that outlive any one backend.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::sys::{self, CpaInstanceHandle, CpaStatus, QatLib};
use super::QatConfig;

/// libqat's soname in Debian trixie (qatlib 24.02).
pub const LIBQAT: &str = "libqat.so.4";
/// usdm's soname (pinned-memory allocator).
pub const LIBUSDM: &str = "libusdm.so.0";
/// Environment: directory holding libqat.so.4 and libusdm.so.0.
pub const ENV_LIB_DIR: &str = "ENVOY_QAT_LIB_DIR";
/// Environment: explicit path of libqat.so.4 (or of a library exporting its API).
pub const ENV_LIB: &str = "ENVOY_QAT_LIB";
/// Environment: explicit path of libusdm.so.0.
pub const ENV_USDM_LIB: &str = "ENVOY_QAT_USDM_LIB";

/// The build's default search directory (Debian trixie's packages unpacked by
/// ci/fetch-qat-deps.sh).
const BUILD_DEPS_LIB: &str = env!("ENVOY_QAT_DEPS_LIB");

pub(crate) type VirtToPhys = unsafe extern "C" fn(*mut c_void) -> u64;

/// The opened libraries (leaked: never closed).
pub(crate) struct Lib {
    pub qat: QatLib,
    pub usdm: QatLib,
    pub v2p: VirtToPhys,
    pub qat_path: String,
}

fn status_name(s: CpaStatus) -> &'static str {
    match s {
        0 => "CPA_STATUS_SUCCESS",
        sys::CPA_STATUS_FAIL => "CPA_STATUS_FAIL",
        sys::CPA_STATUS_RETRY => "CPA_STATUS_RETRY",
        sys::CPA_STATUS_RESOURCE => "CPA_STATUS_RESOURCE",
        sys::CPA_STATUS_INVALID_PARAM => "CPA_STATUS_INVALID_PARAM",
        sys::CPA_STATUS_FATAL => "CPA_STATUS_FATAL",
        sys::CPA_STATUS_UNSUPPORTED => "CPA_STATUS_UNSUPPORTED",
        sys::CPA_STATUS_RESTARTING => "CPA_STATUS_RESTARTING",
        _ => "unknown status",
    }
}

/// "CPA_STATUS_FAIL (-1)".
pub(crate) fn status_text(s: CpaStatus) -> String {
    format!("{} ({s})", status_name(s))
}

fn open(path: &str) -> Result<libloading::Library, String> {
    // The AddressSanitizer test build (ci/test-sanitize-sim.sh) opens without DEEPBIND, which
    // ASan's dlopen refuses; it loads only tests/qat-sim, which needs no libcrypto.
    let deepbind = if cfg!(envoy_qat_asan) {
        0
    } else {
        libc::RTLD_DEEPBIND
    };
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | deepbind;
    // SAFETY: opening a shared library runs its initialisers. We only open qatlib,
    // usdm, or a library the operator named explicitly for that role.
    unsafe { libloading::os::unix::Library::open(Some(path), flags) }
        .map(libloading::Library::from)
        .map_err(|e| e.to_string())
}

/// Where to look for a library: explicit path, else each directory, else the system
/// search path, else the build's dependency directory.
fn candidates(explicit: Option<&Path>, dirs: &[PathBuf], soname: &str) -> Vec<String> {
    if let Some(p) = explicit {
        return vec![p.display().to_string()];
    }
    let mut v: Vec<String> = dirs
        .iter()
        .map(|d| d.join(soname).display().to_string())
        .collect();
    v.push(soname.to_string());
    v.push(Path::new(BUILD_DEPS_LIB).join(soname).display().to_string());
    v
}

fn open_first(
    cands: &[String],
    what: &str,
    fix: &str,
) -> Result<(libloading::Library, String), String> {
    let mut tried = Vec::new();
    for c in cands {
        // Skip absolute paths that do not exist: their dlerror says nothing more.
        if c.contains('/') && !Path::new(c).exists() {
            tried.push(format!("{c}: no such file"));
            continue;
        }
        match open(c) {
            Ok(l) => return Ok((l, c.clone())),
            Err(e) => tried.push(e),
        }
    }
    Err(format!(
        "cannot load {what} (tried {}); {fix}",
        tried.join("; ")
    ))
}

static LIBS: Mutex<Option<HashMap<(String, String), &'static Lib>>> = Mutex::new(None);

/// Open (once per process and path pair) libusdm and libqat.
pub(crate) fn load(cfg: &QatConfig) -> Result<&'static Lib, String> {
    let env_path = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let qat_explicit = cfg.qat_lib.clone().or_else(|| env_path(ENV_LIB));
    let usdm_explicit = cfg.usdm_lib.clone().or_else(|| env_path(ENV_USDM_LIB));
    let mut dirs = Vec::new();
    if let Some(d) = cfg.lib_dir.clone().or_else(|| env_path(ENV_LIB_DIR)) {
        dirs.push(d);
    }
    let fix = format!(
        "install Debian's libqat4 and libusdm0, or set {ENV_LIB_DIR} (config qat_lib_dir) to their directory, or {ENV_LIB} (config qat_lib) to the library"
    );
    let qat_cands = candidates(qat_explicit.as_deref(), &dirs, LIBQAT);
    // usdm next to an explicitly named libqat first, then the same search as libqat.
    let mut usdm_dirs = dirs.clone();
    if let Some(parent) = qat_explicit.as_deref().and_then(Path::parent) {
        usdm_dirs.insert(0, parent.to_path_buf());
    }
    let usdm_cands = candidates(usdm_explicit.as_deref(), &usdm_dirs, LIBUSDM);

    // A library named explicitly that exports usdm's API too (the test simulator) is
    // its own usdm, unless a libusdm.so.0 sits next to it or is named explicitly.
    if let (Some(q), None) = (qat_explicit.as_deref(), usdm_explicit.as_deref()) {
        let beside = q.parent().map(|p| p.join(LIBUSDM));
        if !beside.as_deref().is_some_and(Path::exists) {
            let path = q.display().to_string();
            if let Ok(l) = open(&path) {
                // SAFETY: looking a symbol up does not call it.
                if unsafe { l.get::<VirtToPhys>(b"qaeMemAllocNUMA\0") }.is_ok() {
                    let l2 = open(&path)?;
                    return finish_load(l, path.clone(), l2, path);
                }
            }
        }
    }
    // usdm first: libqat's NEEDED libusdm.so.0 then binds to the copy already loaded,
    // even when it lives outside the system search path.
    let (usdm_lib, usdm_path) = open_first(&usdm_cands, LIBUSDM, &fix)?;
    let (qat_lib, qat_path) = open_first(&qat_cands, LIBQAT, &fix)?;
    finish_load(qat_lib, qat_path, usdm_lib, usdm_path)
}

fn finish_load(
    qat_lib: libloading::Library,
    qat_path: String,
    usdm_lib: libloading::Library,
    usdm_path: String,
) -> Result<&'static Lib, String> {
    let key = (qat_path.clone(), usdm_path.clone());
    let mut map = LIBS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = map.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(l);
    }
    // SAFETY: the symbol's type is qae_mem.h's `uint64_t qaeVirtToPhysNUMA(void *)`,
    // which is bindgen's CpaVirtualToPhysical; the library is never closed, so the
    // pointer stays valid.
    let v2p: VirtToPhys = unsafe { usdm_lib.get::<VirtToPhys>(b"qaeVirtToPhysNUMA\0") }
        .map(|s| *s)
        .map_err(|e| format!("{usdm_path}: no qaeVirtToPhysNUMA: {e}"))?;
    // SAFETY: bindgen's from_library only looks symbols up.
    let qat = unsafe { QatLib::from_library(qat_lib) }.map_err(|e| format!("{qat_path}: {e}"))?;
    // SAFETY: as above.
    let usdm =
        unsafe { QatLib::from_library(usdm_lib) }.map_err(|e| format!("{usdm_path}: {e}"))?;
    let missing: Vec<&str> = [
        ("icp_sal_userStart", qat.icp_sal_userStart.is_ok()),
        ("icp_sal_userStop", qat.icp_sal_userStop.is_ok()),
        ("cpaCyGetNumInstances", qat.cpaCyGetNumInstances.is_ok()),
        ("cpaCyGetInstances", qat.cpaCyGetInstances.is_ok()),
        ("cpaCyInstanceGetInfo2", qat.cpaCyInstanceGetInfo2.is_ok()),
        ("cpaCyStartInstance", qat.cpaCyStartInstance.is_ok()),
        ("cpaCyStopInstance", qat.cpaCyStopInstance.is_ok()),
        (
            "cpaCySetAddressTranslation",
            qat.cpaCySetAddressTranslation.is_ok(),
        ),
        ("cpaCyRsaDecrypt", qat.cpaCyRsaDecrypt.is_ok()),
        ("cpaCyEcdsaSignRS", qat.cpaCyEcdsaSignRS.is_ok()),
        ("icp_sal_CyPollInstance", qat.icp_sal_CyPollInstance.is_ok()),
        ("qaeMemAllocNUMA", usdm.qaeMemAllocNUMA.is_ok()),
        ("qaeMemFreeNUMA", usdm.qaeMemFreeNUMA.is_ok()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{qat_path} / {usdm_path} lack {}: not a qatlib 24.x build",
            missing.join(", ")
        ));
    }
    let lib: &'static Lib = Box::leak(Box::new(Lib {
        qat,
        usdm,
        v2p,
        qat_path,
    }));
    map.get_or_insert_with(HashMap::new).insert(key, lib);
    Ok(lib)
}

/// How long an instance stays out of rotation before it is probed again.
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(100);
/// Consecutive failures that take an instance out of rotation.
pub(crate) const FAILS_TO_EVICT: u32 = 3;

/// One started crypto instance.
pub(crate) struct Inst {
    pub handle: usize,
    pub name: String,
    /// The instance's NUMA node (`nodeAffinity`): its operations' pinned memory is
    /// allocated there, as upstream Envoy does, so the device does not DMA across sockets.
    pub node: i32,
    /// Consecutive failures.
    fails: AtomicU32,
    /// Out of rotation until this time (ms since the runtime started; 0 = in rotation).
    down_until_ms: std::sync::atomic::AtomicU64,
    /// An instance out of rotation takes one probe operation at a time.
    probing: AtomicBool,
}

impl Inst {
    pub fn handle(&self) -> CpaInstanceHandle {
        self.handle as CpaInstanceHandle
    }

    /// In rotation, or due for a probe.
    pub fn usable(&self, rt: &Runtime) -> bool {
        let until = self.down_until_ms.load(Ordering::Acquire);
        until == 0 || rt.now_ms() >= until
    }

    /// Take this instance for one operation: Some(false) in rotation, Some(true) as
    /// the one probe of an instance due for it, None when it is out of rotation (or its
    /// probe is on the device already).
    pub fn claim(&self, rt: &Runtime) -> Option<bool> {
        let until = self.down_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Some(false);
        }
        if rt.now_ms() < until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| true)
    }

    /// A probe ended without telling whether the instance works (refused at submit, a
    /// per-request error): the next operation may probe.
    pub fn end_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    pub fn is_down(&self) -> bool {
        self.down_until_ms.load(Ordering::Acquire) != 0
    }

    /// A success: back in rotation. Returns true when it was out.
    pub fn ok(&self) -> bool {
        self.fails.store(0, Ordering::Relaxed);
        let was = self.down_until_ms.swap(0, Ordering::AcqRel) != 0;
        self.probing.store(false, Ordering::Release);
        was
    }

    /// A failure; `evict` takes it out at once (restarting). Returns true when this
    /// took it out of rotation.
    pub fn failed(&self, rt: &Runtime, evict: bool) -> bool {
        let n = self.fails.fetch_add(1, Ordering::AcqRel) + 1;
        // A failed probe sends an instance that is out of rotation back out at once.
        let r = if evict || n >= FAILS_TO_EVICT || self.is_down() {
            let until = rt.now_ms() + PROBE_AFTER.as_millis() as u64;
            self.down_until_ms.swap(until.max(1), Ordering::AcqRel) == 0
        } else {
            false
        };
        self.probing.store(false, Ordering::Release);
        r
    }
}

/// What qatlib reported at start and what the backend chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Crypto instances (`cpaCyGetNumInstances`): generic, sym-only and asym-only.
    pub crypto: u16,
    /// Instances able to do symmetric crypto (`cpaGetNumInstances(CRYPTO_SYM)`); None
    /// when the library lacks `cpaGetNumInstances`.
    pub sym: Option<u16>,
    /// Instances able to do asymmetric crypto (RSA, ECDSA): the ones the backend may use.
    pub asym: u16,
    /// Compression instances (`cpaGetNumInstances(DATA_COMPRESSION)`), when known.
    pub dc: Option<u16>,
    /// How the asymmetric instances were found.
    pub method: &'static str,
    /// Names of the instances started and used.
    pub used: Vec<String>,
}

impl std::fmt::Display for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<u16>| v.map_or("?".to_string(), |n| n.to_string());
        write!(
            f,
            "qatlib reports {} crypto instance(s) ({} sym-capable, {} asym-capable) and {} dc; using {} asym: {} (found by {})",
            self.crypto,
            opt(self.sym),
            self.asym,
            opt(self.dc),
            self.used.len(),
            self.used.join(", "),
            self.method
        )
    }
}

/// qatlib started in this process.
pub(crate) struct Runtime {
    pub lib: &'static Lib,
    pub section: String,
    pub inventory: Inventory,
    pub instances: Vec<Inst>,
    pub users: AtomicUsize,
    pub completions: AtomicUsize,
    stopped: AtomicBool,
    epoch: Instant,
}

impl Runtime {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Stop the instances and qatlib (idempotent). No callback runs afterwards.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        for i in &self.instances {
            // SAFETY: a handle returned by cpaCyGetInstances and started by us.
            let s = unsafe { self.lib.qat.cpaCyStopInstance(i.handle()) };
            if s != 0 {
                tracing::debug!(instance = %i.name, status = %status_text(s), "cpaCyStopInstance failed");
            }
        }
        // SAFETY: icp_sal_userStart succeeded for this runtime.
        let s = unsafe { self.lib.qat.icp_sal_userStop() };
        if s != 0 {
            tracing::debug!(status = %status_text(s), "icp_sal_userStop failed");
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

static RUNTIME: Mutex<Weak<Runtime>> = Mutex::new(Weak::new());

/// The process's started qatlib: shared when already started with the same library and
/// section, else loaded and started now.
pub(crate) fn runtime(cfg: &QatConfig) -> Result<Arc<Runtime>, String> {
    let lib = load(cfg)?;
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    // A stopped runtime (its last backend shut down; stragglers may still hold it) is
    // finished with qatlib: start afresh.
    if let Some(rt) = slot.upgrade().filter(|rt| !rt.is_stopped()) {
        if !std::ptr::eq(rt.lib, lib) || rt.section != cfg.section {
            return Err(format!(
                "qatlib is already started in this process from {} with section \"{}\"; every QAT provider of a process must use the same library and section",
                rt.lib.qat_path, rt.section
            ));
        }
        rt.users.fetch_add(1, Ordering::AcqRel);
        return Ok(rt);
    }
    let rt = Arc::new(start(lib, cfg)?);
    *slot = Arc::downgrade(&rt);
    Ok(rt)
}

fn start(lib: &'static Lib, cfg: &QatConfig) -> Result<Runtime, String> {
    let section = CString::new(cfg.section.as_str())
        .map_err(|_| format!("QAT section name {:?} contains a NUL byte", cfg.section))?;
    // qatlib prints its start-up errors on stdout: keep them off data output.
    let s = crate::stdio::with_stdout_on_stderr(|| {
        // SAFETY: a NUL-terminated string that lives across the call.
        unsafe { lib.qat.icp_sal_userStart(section.as_ptr()) }
    });
    if s != 0 {
        return Err(format!(
            "icp_sal_userStart(\"{}\") in {} returned {}: no usable QAT device — no QAT VF bound to vfio-pci and visible to this process (device plugin resource, /dev/vfio, memlock limit), or no [{}] section in the qatlib configuration; qatlib's own messages above say which",
            cfg.section, lib.qat_path, status_text(s), cfg.section
        ));
    }
    let fail = |msg: String| {
        // SAFETY: icp_sal_userStart succeeded just above.
        unsafe { lib.qat.icp_sal_userStop() };
        Err(msg)
    };
    let mut n: u16 = 0;
    // SAFETY: `n` is a valid, writable Cpa16U.
    let s = unsafe { lib.qat.cpaCyGetNumInstances(&mut n) };
    if s != 0 || n == 0 {
        return fail(format!(
            "qatlib started (section \"{}\") but reports {} crypto instances ({}): enable the asym/sym service on the QAT device (ServicesEnabled) and give this process a crypto VF",
            cfg.section, n, status_text(s)
        ));
    }
    let (handles, mut inventory) = match asym_instances(lib, n) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if handles.is_empty() {
        return fail(format!(
            "qatlib started (section \"{}\") with {} crypto instance(s), none of them asymmetric ({} sym, 0 asym, {} dc): RSA and ECDSA need asym instances; enable asym on the device (qatlib: ServicesEnabled, or sysfs qat/cfg_services e.g. \"asym;dc\" or \"sym;asym\") and give this container a qat.intel.com/cy VF",
            cfg.section,
            inventory.crypto,
            inventory.sym.map_or("?".into(), |v| v.to_string()),
            inventory.dc.map_or("?".into(), |v| v.to_string()),
        ));
    }
    let want = if cfg.max_instances == 0 {
        handles.len()
    } else {
        cfg.max_instances.min(handles.len())
    };
    let mut instances = Vec::new();
    for (i, h) in handles.into_iter().enumerate().take(want) {
        let mut info = sys::CpaInstanceInfo2::default();
        // SAFETY: a handle from cpaCyGetInstances and a writable info struct.
        let s = unsafe { lib.qat.cpaCyInstanceGetInfo2(h, &mut info) };
        let name = if s == 0 {
            let raw = &info.instName;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        } else {
            format!("cy{i}")
        };
        let node = if s == 0 {
            i32::try_from(info.nodeAffinity).unwrap_or(0)
        } else {
            0
        };
        // SAFETY: as above; v2p has the CpaVirtualToPhysical signature.
        let s = unsafe { lib.qat.cpaCySetAddressTranslation(h, Some(lib.v2p)) };
        if s != 0 {
            tracing::warn!(instance = %name, status = %status_text(s), "cpaCySetAddressTranslation failed; instance skipped");
            continue;
        }
        // SAFETY: as above.
        let s = unsafe { lib.qat.cpaCyStartInstance(h) };
        if s != 0 {
            tracing::warn!(instance = %name, status = %status_text(s), "cpaCyStartInstance failed; instance skipped");
            continue;
        }
        inventory.used.push(name.clone());
        instances.push(Inst {
            handle: h as usize,
            name,
            node,
            fails: AtomicU32::new(0),
            down_until_ms: std::sync::atomic::AtomicU64::new(0),
            probing: AtomicBool::new(false),
        });
    }
    if instances.is_empty() {
        return fail(format!(
            "none of the {n} QAT crypto instances could be started (see the warnings above)"
        ));
    }
    Ok(Runtime {
        lib,
        section: cfg.section.clone(),
        inventory,
        instances,
        users: AtomicUsize::new(1),
        completions: AtomicUsize::new(0),
        stopped: AtomicBool::new(false),
        epoch: Instant::now(),
    })
}

/// `cpaGetNumInstances(svc)`, None when it answers an error: qatlib does when no device
/// offers the service at all, and a library whose API predates the type may.
fn num_of(lib: &Lib, svc: sys::CpaAccelerationServiceType) -> Option<u16> {
    let mut n: u16 = 0;
    // SAFETY: `n` is a valid, writable Cpa16U; the function exists (checked by the caller).
    let s = unsafe { lib.qat.cpaGetNumInstances(svc, &mut n) };
    (s == 0).then_some(n)
}

/// The crypto instances able to do RSA and ECDSA, and what qatlib reported.
///
/// On a Gen4 crypto VF qatmgr splits the rings into sym-only and asym-only instances and
/// `cpaCyGetInstances` returns both; RSA or ECDSA on a sym-only one fails with
/// CPA_STATUS_FAIL (qatlib's SAL_CHECK_INSTANCE_TYPE). qatlib's `cpaGetInstances(
/// CPA_ACC_SVC_TYPE_CRYPTO_ASYM)` returns the asym instances, or the generic crypto ones
/// of devices without the split. A library without it: every crypto instance whose
/// `cpaCyQueryCapabilities` says RSA (as Intel's QAT_Engine filters).
fn asym_instances(lib: &Lib, crypto: u16) -> Result<(Vec<CpaInstanceHandle>, Inventory), String> {
    const ASYM: sys::CpaAccelerationServiceType =
        sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_ASYM;
    const SYM: sys::CpaAccelerationServiceType =
        sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_SYM;
    const DC: sys::CpaAccelerationServiceType =
        sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_DATA_COMPRESSION;
    let mut inv = Inventory {
        crypto,
        ..Inventory::default()
    };
    let by_type = lib.qat.cpaGetNumInstances.is_ok() && lib.qat.cpaGetInstances.is_ok();
    // A library that answers an error for the type (or lacks the call) falls through
    // to the capability query.
    let typed = if by_type { num_of(lib, ASYM) } else { None };
    if let Some(n) = typed {
        inv.method = "cpaGetInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM)";
        inv.sym = Some(num_of(lib, SYM).unwrap_or(0));
        inv.dc = Some(num_of(lib, DC).unwrap_or(0));
        inv.asym = n;
        if n == 0 {
            return Ok((Vec::new(), inv));
        }
        let mut handles: Vec<CpaInstanceHandle> = vec![std::ptr::null_mut(); n as usize];
        // SAFETY: `handles` has room for `n` handles.
        let s = unsafe { lib.qat.cpaGetInstances(ASYM, n, handles.as_mut_ptr()) };
        if s != 0 {
            return Err(format!(
                "cpaGetInstances(CPA_ACC_SVC_TYPE_CRYPTO_ASYM, {n}) failed: {}",
                status_text(s)
            ));
        }
        return Ok((handles, inv));
    }
    let mut handles: Vec<CpaInstanceHandle> = vec![std::ptr::null_mut(); crypto as usize];
    // SAFETY: `handles` has room for `crypto` handles.
    let s = unsafe { lib.qat.cpaCyGetInstances(crypto, handles.as_mut_ptr()) };
    if s != 0 {
        return Err(format!("cpaCyGetInstances failed: {}", status_text(s)));
    }
    if lib.qat.cpaCyQueryCapabilities.is_err() {
        inv.method = "cpaCyGetInstances (no capability query in this library: all assumed asym)";
        inv.asym = crypto;
        return Ok((handles, inv));
    }
    inv.method = "cpaCyQueryCapabilities";
    let (mut sym, mut asym) = (0u16, Vec::new());
    for h in handles {
        let mut caps = sys::CpaCyCapabilitiesInfo::default();
        // SAFETY: a handle from cpaCyGetInstances and a writable capabilities struct.
        let s = unsafe { lib.qat.cpaCyQueryCapabilities(h, &mut caps) };
        if s != 0 {
            continue;
        }
        if caps.symSupported == sys::_CpaBoolean_CPA_TRUE {
            sym += 1;
        }
        if caps.rsaSupported == sys::_CpaBoolean_CPA_TRUE
            && caps.ecdsaSupported == sys::_CpaBoolean_CPA_TRUE
        {
            asym.push(h);
        }
    }
    inv.sym = Some(sym);
    inv.dc = if by_type { num_of(lib, DC) } else { None };
    inv.asym = asym.len() as u16;
    Ok((asym, inv))
}
