//! Whether qatlib (libqat.so.4 with libusdm.so.0) and QATzip (libqatzip.so.3) load in this
//! process, the way the backends dlopen them.

use std::path::{Path, PathBuf};

use super::Finding;

/// The libraries in load order: each one's dependencies come before it, so a library found in a
/// private directory resolves its `NEEDED` entries against the ones already loaded.
pub const LIBRARIES: &[(&str, &str)] = &[
    ("libusdm.so.0", "libusdm0"),
    ("libqat.so.4", "libqat4"),
    ("libqatzip.so.3", "libqatzip3"),
];

/// The qatlib/QATzip directory this build was compiled against (build.rs sets
/// ENVOY_QAT_DEPS_LIB), if any.
pub fn default_lib_dirs() -> Vec<PathBuf> {
    option_env!("ENVOY_QAT_DEPS_LIB")
        .map(|d| vec![PathBuf::from(d)])
        .unwrap_or_default()
}

enum Outcome {
    Loaded(String),
    Failed(String),
    NotFound,
}

fn open(target: &Path) -> Result<libloading::os::unix::Library, libloading::Error> {
    // As the backends load them: the library resolves its own dependencies first (DEEPBIND), so
    // libqat's libcrypto references cannot bind to a BoringSSL already in the process.
    let flags =
        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL | libc::RTLD_DEEPBIND;
    // SAFETY: loading runs the library's ELF initializers. qatlib's and QATzip's initializers only
    // set up their own static state (no device access happens before icp_sal_userStart / qzInit),
    // and the handle is dropped (dlclose) before anything else uses the library.
    unsafe { libloading::os::unix::Library::open(Some(target), flags) }
}

/// Tries to dlopen each library from `dirs`, then (when `system` is set) by soname through the
/// system search path; appends one finding per library.
pub fn check_libraries(dirs: &[PathBuf], system: bool, out: &mut Vec<Finding>) {
    // Keep every handle until the end: later libraries need the earlier ones loaded.
    let mut handles = Vec::new();
    for (soname, package) in LIBRARIES {
        let mut outcome = Outcome::NotFound;
        for d in dirs {
            let p = d.join(soname);
            if !p.exists() {
                continue;
            }
            outcome = match open(&p) {
                Ok(h) => {
                    handles.push(h);
                    Outcome::Loaded(p.display().to_string())
                }
                Err(e) => Outcome::Failed(format!("{}: {e}", p.display())),
            };
            break;
        }
        if matches!(outcome, Outcome::NotFound) && system {
            outcome = match open(Path::new(soname)) {
                Ok(h) => {
                    handles.push(h);
                    Outcome::Loaded(format!("{soname} from the system search path"))
                }
                Err(e) => {
                    let msg = e.to_string();
                    if msg.contains("No such file") || msg.contains("cannot open shared object") {
                        Outcome::NotFound
                    } else {
                        Outcome::Failed(msg)
                    }
                }
            };
        }
        let check = format!("lib {soname}");
        match outcome {
            Outcome::Loaded(from) => out.push(Finding::pass(&check, format!("loaded {from}"))),
            Outcome::Failed(e) => out.push(Finding::fail(
                &check,
                format!("found but does not load: {e}"),
                "install its dependencies (libqat.so.4 needs OpenSSL's libcrypto.so.3 and libusdm.so.0)",
            )),
            Outcome::NotFound => {
                let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                let place = match (searched.is_empty(), system) {
                    (true, true) => "the system search path".to_owned(),
                    (true, false) => "nowhere (no --lib-dir, system search off)".to_owned(),
                    (false, true) => format!("{} or the system search path", searched.join(", ")),
                    (false, false) => searched.join(", "),
                };
                out.push(Finding::fail(
                    &check,
                    format!("not found in {place}"),
                    format!(
                        "install Debian's {package} (trixie or later) or Intel's qatlib/QATzip build, \
                         or point --lib-dir / LD_LIBRARY_PATH at it"
                    ),
                ));
            }
        }
    }
    drop(handles);
}
