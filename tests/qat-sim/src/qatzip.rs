//! A QATzip 1.3.1 stand-in, exported from the same cdylib (`libqat_sim.so`): point
//! `ENVOY_QATZIP_LIB` at it. It exports only what envoy-qat calls (`qzInit`,
//! `qzGetDefaults`, `qzSetupSession`, `qzCompressExt`, `qzMaxCompressedLength`,
//! `qzTeardownSession`, and qatlib's `cpaDcGetNumInstances`), with the rules QATzip
//! 1.3.1's `src/qatzip.c` and `src/qatzip_utils.c` enforce (read there, not guessed;
//! each function names what it models):
//!
//! - a process has a fixed number of DC instances (`instances=N`); a compress call grabs
//!   a free one for its duration (an atomic lock per instance, one pass from the
//!   session's last instance, no waiting) and releases it at the end;
//! - when none is free: with `sw_backup` set the call compresses in software and returns
//!   `QZ_OK` with nothing saying so (`ext_rc` untouched, `hw_session_stat` still
//!   `QZ_OK`); without it, `QZ_NOSW_NO_INST_ATTACH` and `hw_session_stat` becomes
//!   `QZ_NO_INST_ATTACH`;
//! - inputs below `input_sz_thrshold`, or no device, go to software too;
//! - `QzSession_T::total_in`/`total_out` advance on the device path only;
//! - `qzInit`: `QZ_PARAMS` for a NULL session or `sw_backup > 1`, `QZ_DUPLICATE` once
//!   started (or once the device was found missing); no device: `QZ_OK` with
//!   `sw_backup`, else `QZ_NOSW_NO_HW`;
//! - `qzSetupSession`: `qzCheckParams`' ranges (`QZ_PARAMS`), `QZ_DUPLICATE` for a session
//!   already set up, `QZ_UNSUPPORTED_FMT` for a data format it cannot set up (the session
//!   then stays with `hw_session_stat = QZ_FAIL` and every compress fails), no device:
//!   `QZ_OK` with `hw_session_stat = QZ_NO_HW` (sw_backup) or `QZ_NOSW_NO_HW`.
//!
//! Simulator limits: output is raw deflate only (`QZ_DEFLATE_RAW`, what envoy-qat asks
//! for; other deflate formats get `QZ_UNSUPPORTED_FMT`), each device request is
//! compressed with flate2 in `hw_buff_sz` pieces, each ending in a full flush (as the
//! device's `CPA_DC_FLUSH_FULL`), software with one deflate stream per session and a full
//! flush per call (as QATzip's `qzDeflateSWCompress` with `last = 0`).
//!
//! Configuration (read at the first `qzInit`, or set again with `qatzip_sim_configure`,
//! which also resets the process state): `QATZIP_SIM` or the configure string, a comma
//! list of `instances=N` (default 1), `no_device=1`, `hw_us=N` (how long a device request
//! holds its instance, default 0), `device_error_every=N` (every Nth device request fails
//! half-way: QATzip then compresses the rest in software and still adds it all to
//! `total_in`, `qzCompressCrcExt`), `total_in_counts_sw=1` (hypothetical, not 1.3.1: the
//! software path adds to `total_in` too, for testing callers that check).
//! Counters: `qatzip_sim_counter(name)`.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_ulong, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};

#[allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code,
    unused_imports,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
pub(crate) mod zsys {
    include!(concat!(env!("OUT_DIR"), "/qatzip_sys.rs"));
}
use zsys::*;

const OK: c_int = QZ_OK as c_int;
const DUPLICATE: c_int = QZ_DUPLICATE as c_int;
const PARAMS: c_int = QZ_PARAMS;
const FAIL: c_int = QZ_FAIL;
const BUF_ERROR: c_int = QZ_BUF_ERROR;
const NO_HW: c_int = QZ_NO_HW as c_int;
const NO_INST_ATTACH: c_int = QZ_NO_INST_ATTACH as c_int;
const UNSUPPORTED_FMT: c_int = QZ_UNSUPPORTED_FMT as c_int;
const NONE: c_int = QZ_NONE as c_int;
const NOSW_NO_HW: c_int = QZ_NOSW_NO_HW;
const NOSW_NO_INST_ATTACH: c_int = QZ_NOSW_NO_INST_ATTACH;
/// `QZ_DEFLATE` in qatzip.h (a cast bindgen does not translate).
const DEFLATE: u8 = 8;
/// `REQ_THRESHOLD_MAXIMUM` (`NUM_BUFF`) in qatzip.h.
const REQ_THRESHOLD_MAXIMUM: u32 = 32;
/// `MAX_GRAB_RETRY` in qatzip.c.
const MAX_GRAB_RETRY: usize = 10;

#[derive(Clone, Debug, Default)]
struct ZConfig {
    instances: usize,
    no_device: bool,
    hw_hold: Duration,
    device_error_every: u64,
    total_in_counts_sw: bool,
}

impl ZConfig {
    fn parse(list: &str) -> Result<Self, String> {
        let mut c = ZConfig {
            instances: 1,
            ..ZConfig::default()
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                format!("QATzip simulator: \"{item}\" is not key=value (e.g. instances=2)")
            })?;
            let num = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("QATzip simulator: {k}={v}: expected a whole number"))
            };
            match k.trim() {
                "instances" => c.instances = num(v)? as usize,
                "no_device" => c.no_device = num(v)? != 0,
                "hw_us" => c.hw_hold = Duration::from_micros(num(v)?),
                "device_error_every" => c.device_error_every = num(v)?,
                "total_in_counts_sw" => c.total_in_counts_sw = num(v)? != 0,
                o => {
                    return Err(format!(
                        "QATzip simulator: unknown key \"{o}\" (instances, no_device, hw_us, device_error_every, total_in_counts_sw)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// `g_process` in qatzip.c: what `qzInit` sets up once per process.
struct Process {
    cfg: ZConfig,
    /// `qz_init_status`: QZ_NONE until qzInit, then QZ_OK, QZ_NO_HW or QZ_NOSW_NO_HW.
    init_status: c_int,
    /// `qat_available`: None until qzInit looked (QZ_NONE in qatzip.c).
    qat_available: Option<bool>,
    /// One lock per instance (`qz_inst[i].lock`).
    locks: Arc<Vec<AtomicBool>>,
}

static PROCESS: Mutex<Option<Process>> = Mutex::new(None);
static CONFIGURED: Mutex<Option<String>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_process<R>(f: impl FnOnce(&mut Process) -> R) -> Result<R, String> {
    let mut g = lock(&PROCESS);
    if g.is_none() {
        let list = match lock(&CONFIGURED).clone() {
            Some(s) => s,
            None => std::env::var("QATZIP_SIM").unwrap_or_default(),
        };
        let cfg = ZConfig::parse(&list)?;
        *g = Some(Process {
            locks: Arc::new((0..cfg.instances).map(|_| AtomicBool::new(false)).collect()),
            cfg,
            init_status: NONE,
            qat_available: None,
        });
    }
    Ok(f(g.as_mut().expect("set above")))
}

macro_rules! counters {
    ($($name:ident),*) => {
        struct Counters { $($name: AtomicU64,)* }
        static C: Counters = Counters { $($name: AtomicU64::new(0),)* };
        fn counter(name: &str) -> Option<u64> {
            match name { $(stringify!($name) => Some(C.$name.load(Ordering::Relaxed)),)* _ => None }
        }
        fn reset_counters() { $(C.$name.store(0, Ordering::Relaxed);)* }
    };
}
counters!(
    inits,
    sessions,
    teardowns,
    hw_calls,
    hw_bytes,
    sw_calls,
    sw_bytes,
    no_instance,
    nosw_failures,
    device_errors,
    busy_peak
);

/// Instances held right now (for `busy_peak`).
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// Per-session state behind `QzSession_T::internal` (`QzSess_T` in qatzip.c).
struct Sess {
    params: QzSessionParams_T,
    inst_hint: usize,
    /// The software path's deflate stream (`deflate_strm`), made at first use.
    sw: Option<Compress>,
}

/// Reconfigure (and reset: the next `qzInit` starts over). NULL: back to `QATZIP_SIM`.
/// Returns 0, or -1 for a bad list (printed). Only between tests: no session may be in
/// use.
#[no_mangle]
pub unsafe extern "C" fn qatzip_sim_configure(list: *const c_char) -> c_int {
    let s = if list.is_null() {
        None
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        Some(
            unsafe { CStr::from_ptr(list) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    if let Some(s) = &s {
        if let Err(e) = ZConfig::parse(s) {
            eprintln!("{e}");
            return -1;
        }
    }
    *lock(&CONFIGURED) = s;
    *lock(&PROCESS) = None;
    reset_counters();
    BUSY.store(0, Ordering::Relaxed);
    0
}

/// A counter by name (inits, sessions, teardowns, hw_calls, hw_bytes, sw_calls,
/// sw_bytes, no_instance, nosw_failures, device_errors, busy_peak); u64::MAX if unknown.
#[no_mangle]
pub unsafe extern "C" fn qatzip_sim_counter(name: *const c_char) -> u64 {
    if name.is_null() {
        return u64::MAX;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    counter(&n).unwrap_or(u64::MAX)
}

/// Models `qzInit` (qatzip.c).
#[no_mangle]
pub unsafe extern "C" fn qzInit(sess: *mut QzSession_T, sw_backup: u8) -> c_int {
    if sess.is_null() || sw_backup > 1 {
        return PARAMS;
    }
    let r = with_process(|p| {
        if p.qat_available == Some(false) || p.init_status == OK {
            return DUPLICATE;
        }
        C.inits.fetch_add(1, Ordering::Relaxed);
        if p.cfg.no_device {
            // BACKOUT: no hardware; with sw_backup the caller still gets QZ_OK.
            p.qat_available = Some(false);
            if sw_backup == 1 {
                p.init_status = NO_HW;
                OK
            } else {
                p.init_status = NOSW_NO_HW;
                NOSW_NO_HW
            }
        } else {
            // cpaDcGetNumInstances may report 0 instances: qzInit still succeeds and every
            // later qzGrabInstance finds none.
            p.qat_available = Some(true);
            p.init_status = OK;
            OK
        }
    });
    r.unwrap_or_else(|e| {
        eprintln!("{e}");
        NOSW_NO_HW
    })
}

fn defaults() -> QzSessionParams_T {
    // g_sess_params_internal_default in qatzip.c, in the public struct's terms.
    QzSessionParams_T {
        huffman_hdr: QzHuffmanHdr_E_QZ_DYNAMIC_HDR,
        direction: QzDirection_E_QZ_DIR_BOTH,
        data_fmt: QzDataFormat_E_QZ_DEFLATE_GZIP_EXT,
        comp_lvl: QZ_COMP_LEVEL_DEFAULT,
        comp_algorithm: DEFLATE,
        max_forks: QZ_MAX_FORK_DEFAULT,
        sw_backup: QZ_SW_BACKUP_DEFAULT as u8,
        hw_buff_sz: QZ_HW_BUFF_SZ,
        strm_buff_sz: QZ_STRM_BUFF_SZ_DEFAULT,
        input_sz_thrshold: QZ_COMP_THRESHOLD_DEFAULT,
        req_cnt_thrshold: REQ_THRESHOLD_MAXIMUM,
        wait_cnt_thrshold: QZ_WAIT_CNT_THRESHOLD_DEFAULT,
    }
}

/// Models `qzGetDefaults` (qatzip.c).
#[no_mangle]
pub unsafe extern "C" fn qzGetDefaults(out: *mut QzSessionParams_T) -> c_int {
    if out.is_null() {
        return PARAMS;
    }
    // SAFETY: the caller passes a writable QzSessionParams_T.
    unsafe { out.write(defaults()) };
    OK
}

/// Models `qzCheckParams` (qatzip_utils.c).
fn check_params(p: &QzSessionParams_T) -> bool {
    p.huffman_hdr <= QzHuffmanHdr_E_QZ_STATIC_HDR
        && (QZ_DEFLATE_COMP_LVL_MINIMUM..=QZ_DEFLATE_COMP_LVL_MAXIMUM).contains(&p.comp_lvl)
        && p.direction <= QzDirection_E_QZ_DIR_BOTH
        && p.comp_algorithm == DEFLATE
        && p.sw_backup <= 1
        && (QZ_HW_BUFF_MIN_SZ..=QZ_HW_BUFF_MAX_SZ).contains(&p.hw_buff_sz)
        && (QZ_STRM_BUFF_MIN_SZ..=QZ_STRM_BUFF_MAX_SZ).contains(&p.strm_buff_sz)
        && p.input_sz_thrshold >= QZ_COMP_THRESHOLD_MINIMUM
        && (QZ_REQ_THRESHOLD_MINIMUM..=REQ_THRESHOLD_MAXIMUM).contains(&p.req_cnt_thrshold)
        && p.hw_buff_sz.is_power_of_two()
}

/// Models `qzSetupSession` with `qzSetupSessionInternal` (qatzip.c, qatzip_utils.c).
#[no_mangle]
pub unsafe extern "C" fn qzSetupSession(
    sess: *mut QzSession_T,
    params: *mut QzSessionParams_T,
) -> c_int {
    if sess.is_null() {
        return PARAMS;
    }
    let p = if params.is_null() {
        defaults()
    } else {
        // SAFETY: the caller passes a readable QzSessionParams_T.
        unsafe { *params }
    };
    if !check_params(&p) {
        return PARAMS;
    }
    // SAFETY: sess is the caller's QzSession_T.
    let s = unsafe { &mut *sess };
    if !s.internal.is_null() {
        return DUPLICATE;
    }
    s.internal = Box::into_raw(Box::new(Sess {
        params: p,
        inst_hint: 0,
        sw: None,
    }))
    .cast();
    s.hw_session_stat = FAIL.into();
    C.sessions.fetch_add(1, Ordering::Relaxed);
    // qzSetupDcSessionData: the simulator makes raw deflate only.
    if p.data_fmt != QzDataFormat_E_QZ_DEFLATE_RAW {
        // A positive code: the session is kept, hw_session_stat stays QZ_FAIL.
        return UNSUPPORTED_FMT;
    }
    let status = with_process(|pr| pr.init_status).unwrap_or(NOSW_NO_HW);
    if status != OK {
        if p.sw_backup == 1 {
            s.hw_session_stat = NO_HW.into();
            OK
        } else {
            s.hw_session_stat = NOSW_NO_HW.into();
            // rc < 0: qzSetupSession frees the session data again.
            // SAFETY: allocated just above by Box::into_raw.
            drop(unsafe { Box::from_raw(s.internal.cast::<Sess>()) });
            s.internal = std::ptr::null_mut();
            NOSW_NO_HW
        }
    } else {
        s.hw_session_stat = OK.into();
        OK
    }
}

/// Models `qzTeardownSession` (qatzip.c).
#[no_mangle]
pub unsafe extern "C" fn qzTeardownSession(sess: *mut QzSession_T) -> c_int {
    if sess.is_null() {
        return PARAMS;
    }
    // SAFETY: sess is the caller's QzSession_T.
    let s = unsafe { &mut *sess };
    if !s.internal.is_null() {
        // SAFETY: internal was made by qzSetupSession with Box::into_raw.
        drop(unsafe { Box::from_raw(s.internal.cast::<Sess>()) });
        s.internal = std::ptr::null_mut();
        C.teardowns.fetch_add(1, Ordering::Relaxed);
    }
    OK
}

/// Models `qzMaxCompressedLength` for a deflate session (qatzip.c): 34 for an empty
/// input, else 9/8 of the input plus `QZ_SKID_PAD_SZ` plus one gzip header and footer
/// (the chunk-count expression there evaluates to 1 for any non-empty input).
#[no_mangle]
pub unsafe extern "C" fn qzMaxCompressedLength(src_sz: c_uint, _sess: *mut QzSession_T) -> c_uint {
    if src_sz == 0 {
        return QZ_COMPRESSED_SZ_OF_EMPTY_FILE;
    }
    let n = u64::from(src_sz);
    let out = n.div_ceil(8) * 9 + u64::from(QZ_SKID_PAD_SZ) + 18 + 8;
    c_uint::try_from(out).unwrap_or(0)
}

/// qatlib's `cpaDcGetNumInstances` as QATzip's process sees it: the simulated DC
/// instances once `qzInit` found a device, else CPA_STATUS_FAIL (qatlib not started).
#[no_mangle]
pub unsafe extern "C" fn cpaDcGetNumInstances(num: *mut u16) -> crate::sys::CpaStatus {
    if num.is_null() {
        return crate::sys::CPA_STATUS_INVALID_PARAM;
    }
    match with_process(|p| (p.init_status, p.cfg.instances)) {
        Ok((s, n)) if s == OK => {
            // SAFETY: the caller passes a writable Cpa16U.
            unsafe { *num = u16::try_from(n).unwrap_or(u16::MAX) };
            crate::sys::CPA_STATUS_SUCCESS as crate::sys::CpaStatus
        }
        _ => crate::sys::CPA_STATUS_FAIL,
    }
}

/// Models `qzGrabInstance` (qatzip.c): from the hint, MAX_GRAB_RETRY passes over every
/// instance, taking the first whose lock is free; None when every one is held.
fn grab(locks: &[AtomicBool], hint: usize) -> Option<usize> {
    let n = locks.len();
    if n == 0 {
        return None;
    }
    let hint = if hint >= n { 0 } else { hint };
    for _ in 0..MAX_GRAB_RETRY {
        for k in 0..n {
            let i = (hint + k) % n;
            if !locks[i].swap(true, Ordering::Acquire) {
                return Some(i);
            }
        }
    }
    None
}

/// Raw deflate of `src` ending in a full flush, appended to `out`; false if the output
/// would pass `cap` bytes.
fn deflate_full_flush(z: &mut Compress, src: &[u8], out: &mut Vec<u8>, cap: usize) -> bool {
    let mut input = src;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (before_in, before_out) = (z.total_in(), z.total_out());
        if z.compress(input, &mut buf, FlushCompress::Full).is_err() {
            return false;
        }
        let used = (z.total_in() - before_in) as usize;
        let made = (z.total_out() - before_out) as usize;
        input = &input[used..];
        if out.len() + made > cap {
            return false;
        }
        out.extend_from_slice(&buf[..made]);
        // A flush is complete once all input is in and the output did not fill up.
        if input.is_empty() && made < buf.len() {
            return true;
        }
    }
}

fn level(p: &QzSessionParams_T) -> Compression {
    Compression::new(p.comp_lvl.min(9))
}

/// Models `qzCompressExt` / `qzCompressCrcExt` (qatzip.c) for raw deflate. `ext_rc` is
/// never written, as in 1.3.1 (it is set only by LZ4s post-processing).
#[no_mangle]
pub unsafe extern "C" fn qzCompressExt(
    sess: *mut QzSession_T,
    src: *const u8,
    src_len: *mut c_uint,
    dest: *mut u8,
    dest_len: *mut c_uint,
    last: c_uint,
    _ext_rc: *mut u64,
) -> c_int {
    let fail = |rc: c_int| {
        if !src_len.is_null() {
            // SAFETY: non-NULL pointers from the caller.
            unsafe { *src_len = 0 };
        }
        if !dest_len.is_null() {
            // SAFETY: as above.
            unsafe { *dest_len = 0 };
        }
        rc
    };
    if sess.is_null()
        || src.is_null()
        || src_len.is_null()
        || dest.is_null()
        || dest_len.is_null()
        || last > 1
    {
        return fail(PARAMS);
    }
    // SAFETY: sess is the caller's QzSession_T.
    let s = unsafe { &mut *sess };
    // "check if init called": qzInit with the session's sw_backup.
    let backup = if s.internal.is_null() {
        QZ_SW_BACKUP_DEFAULT as u8
    } else {
        // SAFETY: internal was made by qzSetupSession.
        unsafe { &*s.internal.cast::<Sess>() }.params.sw_backup
    };
    // SAFETY: sess is valid.
    let rc = unsafe { qzInit(sess, backup) };
    if rc != OK && rc != DUPLICATE && rc != NO_HW {
        return fail(rc);
    }
    if s.internal.is_null() || s.hw_session_stat == NONE.into() {
        // qzSetupSessionDeflate(sess, NULL) with the defaults: GZIP_EXT, which the
        // simulator does not make.
        return fail(UNSUPPORTED_FMT);
    }
    // SAFETY: internal was made by qzSetupSession; this thread holds the session.
    let st = unsafe { &mut *s.internal.cast::<Sess>() };
    if st.params.data_fmt != QzDataFormat_E_QZ_DEFLATE_RAW {
        return fail(UNSUPPORTED_FMT);
    }
    // SAFETY: the caller's lengths and buffers.
    let (n, cap) = unsafe { (*src_len as usize, *dest_len as usize) };
    // SAFETY: src holds n readable bytes.
    let input = unsafe { std::slice::from_raw_parts(src, n) };
    let Ok((init_status, locks, cfg)) =
        with_process(|p| (p.init_status, p.locks.clone(), p.cfg.clone()))
    else {
        return fail(FAIL);
    };
    let mut out = Vec::new();
    let stat = s.hw_session_stat as c_int;
    let to_software =
        (n as u32) < st.params.input_sz_thrshold || init_status == NO_HW || stat == NO_HW;
    if !to_software && stat != OK && stat != NO_INST_ATTACH {
        return fail(stat);
    }
    let inst = if to_software {
        None
    } else {
        match grab(&locks, st.inst_hint) {
            Some(i) => Some(i),
            None => {
                C.no_instance.fetch_add(1, Ordering::Relaxed);
                if st.params.sw_backup != 1 {
                    C.nosw_failures.fetch_add(1, Ordering::Relaxed);
                    s.hw_session_stat = NO_INST_ATTACH.into();
                    return fail(NOSW_NO_INST_ATTACH);
                }
                None
            }
        }
    };
    let Some(i) = inst else {
        // sw_compression: qzSWCompress, one deflate stream per session.
        C.sw_calls.fetch_add(1, Ordering::Relaxed);
        let z = st
            .sw
            .get_or_insert_with(|| Compress::new(level(&st.params), false));
        if !deflate_full_flush(z, input, &mut out, cap) {
            st.sw = None;
            return fail(BUF_ERROR);
        }
        C.sw_bytes.fetch_add(n as u64, Ordering::Relaxed);
        // SAFETY: out.len() <= cap bytes fit in dest.
        unsafe { write_out(&out, dest, dest_len) };
        if cfg.total_in_counts_sw {
            s.total_in += n as c_ulong;
            s.total_out += out.len() as c_ulong;
        }
        return OK;
    };
    st.inst_hint = i;
    let busy = BUSY.fetch_add(1, Ordering::Relaxed) + 1;
    C.busy_peak.fetch_max(busy as u64, Ordering::Relaxed);
    let call = C.hw_calls.fetch_add(1, Ordering::Relaxed) + 1;
    if !cfg.hw_hold.is_zero() {
        std::thread::sleep(cfg.hw_hold);
    }
    // doCompressIn/doCompressOut: hw_buff_sz requests, each a full flush.
    let piece = st.params.hw_buff_sz as usize;
    let error_at = cfg.device_error_every > 0 && call.is_multiple_of(cfg.device_error_every);
    let hw_part = if error_at { n / 2 } else { n };
    let mut ok = true;
    for chunk in input[..hw_part].chunks(piece.max(1)) {
        let mut z = Compress::new(level(&st.params), false);
        ok &= deflate_full_flush(&mut z, chunk, &mut out, cap);
    }
    C.hw_bytes.fetch_add(hw_part as u64, Ordering::Relaxed);
    if error_at {
        // A device request failed: the rest goes through qzSWCompress, and total_in
        // gets all of it (qz_in_len includes the software part).
        C.device_errors.fetch_add(1, Ordering::Relaxed);
        let z = st
            .sw
            .get_or_insert_with(|| Compress::new(level(&st.params), false));
        ok &= deflate_full_flush(z, &input[hw_part..], &mut out, cap);
        C.sw_bytes
            .fetch_add((n - hw_part) as u64, Ordering::Relaxed);
    }
    BUSY.fetch_sub(1, Ordering::Relaxed);
    locks[i].store(false, Ordering::Release); // qzReleaseInstance
    if !ok {
        return fail(BUF_ERROR);
    }
    // SAFETY: out.len() <= cap bytes fit in dest.
    unsafe { write_out(&out, dest, dest_len) };
    s.total_in += n as c_ulong;
    s.total_out += out.len() as c_ulong;
    s.thd_sess_stat = OK;
    OK
}

/// Copy `out` to `dest` and set `*dest_len`. Safety: `dest` has room for `out.len()`.
unsafe fn write_out(out: &[u8], dest: *mut u8, dest_len: *mut c_uint) {
    // SAFETY: the caller checked out.len() against the capacity it was given.
    unsafe {
        std::ptr::copy_nonoverlapping(out.as_ptr(), dest, out.len());
        *dest_len = out.len() as c_uint;
    }
}

#[allow(dead_code)]
mod signature_checks {
    use super::zsys::*;

    fn same<F>(_: &Result<F, libloading::Error>, _: F) {}

    fn check(l: &QatZipLib) {
        same(&l.qzInit, super::qzInit);
        same(&l.qzGetDefaults, super::qzGetDefaults);
        same(&l.qzSetupSession, super::qzSetupSession);
        same(&l.qzCompressExt, super::qzCompressExt);
        same(&l.qzMaxCompressedLength, super::qzMaxCompressedLength);
        same(&l.qzTeardownSession, super::qzTeardownSession);
    }

    fn check_dc(l: &crate::sys::QatLib) {
        same(&l.cpaDcGetNumInstances, super::cpaDcGetNumInstances);
    }
}
