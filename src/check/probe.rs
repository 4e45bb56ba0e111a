//! `envoy-qat check --probe`: the real outcome — start qatlib (`icp_sal_userStart`) and count
//! crypto instances, open a QATzip session without software backup. Opt-in: it claims the device
//! for a moment and both libraries print their own errors to stderr when there is none.

#[cfg(not(doctest))]
use std::ffi::CStr;
use std::path::PathBuf;

use super::Finding;

// The QAT backend's qatlib bindings: one generated module for the whole crate.
use crate::backend::qat::sys as qat_sys;
// The compressor's QATzip bindings: one generated module for the whole crate.
use crate::compress::qatzip::sys as qatzip_sys;

/// qatlib's process (config section) name for the probe.
#[cfg(not(doctest))]
const SECTION: &CStr = c"SSL";

#[cfg(not(doctest))]
fn open(dirs: &[PathBuf], system: bool, soname: &str) -> Option<libloading::Library> {
    let flags =
        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL | libc::RTLD_DEEPBIND;
    let mut candidates: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(soname))
        .filter(|p| p.exists())
        .collect();
    if system {
        candidates.push(PathBuf::from(soname));
    }
    candidates.iter().find_map(|p: &PathBuf| {
        // SAFETY: as in libs.rs — the initializers of libusdm/libqat/libqatzip only set up their
        // own static state; every handle lives until the probe returns.
        unsafe { libloading::os::unix::Library::open(Some(p.as_path()), flags) }
            .ok()
            .map(libloading::Library::from)
    })
}

/// Runs the probe; appends one finding for crypto instances and one for QATzip hardware.
/// qatlib and QATzip print their own messages (some on stdout): they go to stderr, so stdout
/// keeps only the report (--json stays parseable).
pub fn probe(dirs: &[PathBuf], system: bool, out: &mut Vec<Finding>) {
    crate::stdio::with_stdout_on_stderr(|| probe_inner(dirs, system, out));
}

#[cfg(doctest)]
fn probe_inner(_dirs: &[PathBuf], _system: bool, _out: &mut Vec<Finding>) {}

#[cfg(not(doctest))]
fn probe_inner(dirs: &[PathBuf], system: bool, out: &mut Vec<Finding>) {
    // libusdm first, so libqat's and libqatzip's NEEDED entries resolve to it.
    let Some(_usdm) = open(dirs, system, "libusdm.so.0") else {
        out.push(Finding::fail(
            "probe",
            "libusdm.so.0 does not load",
            "see the lib checks",
        ));
        return;
    };
    match open(dirs, system, "libqat.so.4") {
        None => out.push(Finding::fail(
            "probe cy",
            "libqat.so.4 does not load",
            "see the lib checks",
        )),
        Some(lib) => {
            // SAFETY: the symbols are looked up by bindgen's generated loader with the exact
            // signatures of the trixie headers the bindings were generated from.
            match unsafe { qat_sys::QatLib::from_library(lib) } {
                Err(e) => out.push(Finding::fail(
                    "probe cy",
                    format!("libqat.so.4 lacks a symbol: {e}"),
                    "install qatlib 24.02 or later",
                )),
                Ok(q) => out.push(probe_cy(&q)),
            }
        }
    }
    let _qat_for_qatzip = open(dirs, system, "libqat.so.4");
    match open(dirs, system, "libqatzip.so.3") {
        None => out.push(Finding::fail(
            "probe dc",
            "libqatzip.so.3 does not load",
            "see the lib checks",
        )),
        Some(lib) => {
            // SAFETY: as above, for the QATzip bindings.
            match unsafe { qatzip_sys::QatZipLib::from_library(lib) } {
                Err(e) => out.push(Finding::fail(
                    "probe dc",
                    format!("libqatzip.so.3 lacks a symbol: {e}"),
                    "install QATzip 1.2 or later",
                )),
                Ok(z) => out.push(probe_dc(&z)),
            }
        }
    }
}

#[cfg(not(doctest))]
fn probe_cy(q: &qat_sys::QatLib) -> Finding {
    if q.icp_sal_userStart.is_err()
        || q.icp_sal_userStop.is_err()
        || q.cpaCyGetNumInstances.is_err()
    {
        return Finding::fail(
            "probe cy",
            "libqat.so.4 lacks icp_sal_userStart, icp_sal_userStop or cpaCyGetNumInstances",
            "install qatlib 24.02 or later",
        );
    }
    // SAFETY: SECTION is a NUL-terminated string that outlives the call; qatlib copies it.
    let st = unsafe { q.icp_sal_userStart(SECTION.as_ptr()) };
    if st != qat_sys::CPA_STATUS_SUCCESS as i32 {
        return Finding::fail(
            "probe cy",
            format!("icp_sal_userStart(\"SSL\") returned {st}: qatlib found no usable QAT device"),
            "fix the failed device, vfio, memlock and IPC_LOCK checks above; TLS falls back to software with fallback: true",
        );
    }
    let mut n: qat_sys::Cpa16U = 0;
    // SAFETY: qatlib is started; `n` is a valid out-pointer for the duration of the call.
    let st = unsafe { q.cpaCyGetNumInstances(&mut n) };
    // Per service type, as the QAT backend chooses (Gen4 crypto VFs carry sym-only and
    // asym-only instances; RSA and ECDSA run on asym ones only).
    let by_type = |svc: qat_sys::CpaAccelerationServiceType| -> Option<qat_sys::Cpa16U> {
        q.cpaGetNumInstances.as_ref().ok()?;
        let mut k: qat_sys::Cpa16U = 0;
        // SAFETY: qatlib is started; `k` is a valid out-pointer for the call.
        let s = unsafe { q.cpaGetNumInstances(svc, &mut k) };
        Some(if s == qat_sys::CPA_STATUS_SUCCESS as i32 {
            k
        } else {
            0
        })
    };
    let asym = by_type(qat_sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_ASYM);
    let sym = by_type(qat_sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_CRYPTO_SYM);
    let dc = by_type(qat_sys::_CpaAccelerationServiceType_CPA_ACC_SVC_TYPE_DATA_COMPRESSION);
    // SAFETY: balances the successful icp_sal_userStart above.
    unsafe { q.icp_sal_userStop() };
    let show = |v: Option<qat_sys::Cpa16U>| v.map_or("?".to_string(), |v| v.to_string());
    let counts = format!(
        "{n} crypto instance(s): {} sym, {} asym, {} dc",
        show(sym),
        show(asym),
        show(dc)
    );
    if st != qat_sys::CPA_STATUS_SUCCESS as i32 || n == 0 {
        Finding::fail(
            "probe cy",
            format!("qatlib started but reports {n} crypto instances (status {st})"),
            "enable asym on the PF (qat/cfg_services asym;dc or sym;asym) and give this container a qat.intel.com/cy VF",
        )
    } else if asym == Some(0) {
        Finding::fail(
            "probe cy",
            format!("qatlib started: {counts}; none can do RSA or ECDSA, so the private-key provider is unavailable"),
            "enable asym on the PF (qat/cfg_services asym;dc or sym;asym) and give this container a qat.intel.com/cy VF",
        )
    } else {
        Finding::pass(
            "probe cy",
            format!(
                "qatlib started: {counts}; the private-key provider uses the {} asym instance(s)",
                show(asym)
            ),
        )
    }
}

#[cfg(not(doctest))]
fn probe_dc(z: &qatzip_sys::QatZipLib) -> Finding {
    if z.qzInit.is_err() || z.qzClose.is_err() {
        return Finding::fail(
            "probe dc",
            "libqatzip.so.3 lacks qzInit or qzClose",
            "install QATzip 1.2 or later",
        );
    }
    let mut sess = qatzip_sys::QzSession_T::default();
    // SAFETY: `sess` is a zeroed session owned by this frame; sw_backup 0 asks for hardware only.
    let st = unsafe { z.qzInit(&mut sess, 0) };
    // SAFETY: qzClose accepts a session in any state qzInit left it in.
    unsafe { z.qzClose(&mut sess) };
    let ok = st == qatzip_sys::QZ_OK as i32 || st == qatzip_sys::QZ_DUPLICATE as i32;
    if ok {
        Finding::pass("probe dc", "QATzip opened a hardware session")
    } else {
        Finding::fail(
            "probe dc",
            format!("qzInit without software backup returned {st}: no QAT compression hardware"),
            "give this container a qat.intel.com/dc VF with dc enabled on its PF; QATzip falls back to software otherwise",
        )
    }
}
