//! qatlib and QATzip print their own diagnostics, some on standard output ("ADF_UIO_PROXY
//! err: ... Failed to start SSL"). A command whose stdout is data (`envoy-qat sign`,
//! `compress -c`, `check --json`) must not carry them, so calls into those libraries that
//! may print run with stdout pointed at stderr.
//!
//! The redirection is process-wide (it moves file descriptor 1), so redirections are
//! serialised: each one saves fd 1 and restores it afterwards, and two at once on
//! different threads (e.g. every worker thread creating its QATzip session under the
//! first load) would let the second save the first's redirection and then "restore"
//! stdout to stderr for the rest of the process.

use std::cell::Cell;
use std::io::Write as _;
use std::sync::Mutex;

/// Held while fd 1 is redirected.
static REDIRECT: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread is inside a redirection (a nested call just runs its closure).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Restores fd 1 from `saved` and leaves the redirection, also when the closure panics.
struct Restore {
    saved: libc::c_int,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: flushes every C stdio stream (the libraries' buffered printf output) into
        // the redirected descriptor before stdout is restored.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        if self.saved >= 0 {
            // SAFETY: restores the saved stdout and closes the copy made when redirecting.
            unsafe {
                libc::dup2(self.saved, 1);
                libc::close(self.saved);
            }
        }
        INSIDE.with(|i| i.set(false));
    }
}

/// Run `f` with file descriptor 1 redirected to descriptor 2, then restore it. Process-wide
/// and serialised with other threads' redirections: use it around library start-up, not on
/// a hot path. Output other threads write to stdout meanwhile goes to stderr.
pub fn with_stdout_on_stderr<T>(f: impl FnOnce() -> T) -> T {
    if INSIDE.with(|i| i.get()) {
        return f();
    }
    let _lock = REDIRECT.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::io::stdout().flush();
    // SAFETY: dup on the process's own stdout; the copy is restored and closed by Restore.
    let saved = unsafe { libc::dup(1) };
    if saved >= 0 {
        // SAFETY: points fd 1 at the same file as fd 2; both are the process's own.
        unsafe { libc::dup2(2, 1) };
    }
    INSIDE.with(|i| i.set(true));
    // Declared after the lock: dropped (fd 1 restored) before the lock is released.
    let _restore = Restore { saved };
    f()
}
