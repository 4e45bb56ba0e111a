//! qatlib and QATzip print their own diagnostics, some on standard output ("ADF_UIO_PROXY
//! err: ... Failed to start SSL"). A command whose stdout is data (`envoy-qat sign`,
//! `compress -c`, `check --json`) must not carry them, so calls into those libraries that
//! may print run with stdout pointed at stderr.

use std::io::Write as _;

/// Run `f` with file descriptor 1 redirected to descriptor 2, then restore it. Process-wide:
/// use it around library start-up, not on a hot path.
pub fn with_stdout_on_stderr<T>(f: impl FnOnce() -> T) -> T {
    let _ = std::io::stdout().flush();
    // SAFETY: dup on the process's own stdout; the copy is restored and closed below.
    let saved = unsafe { libc::dup(1) };
    if saved >= 0 {
        // SAFETY: points fd 1 at the same file as fd 2; both are the process's own.
        unsafe { libc::dup2(2, 1) };
    }
    let out = f();
    // SAFETY: flushes every C stdio stream (the libraries' buffered printf output) into the
    // redirected descriptor before stdout is restored.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    if saved >= 0 {
        // SAFETY: restores the saved stdout and closes the copy made above.
        unsafe {
            libc::dup2(saved, 1);
            libc::close(saved);
        }
    }
    out
}
