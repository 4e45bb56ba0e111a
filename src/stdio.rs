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
    /// Whether this thread holds [`REDIRECT`] for [`capture_stderr`] (a nested
    /// [`with_stdout_on_stderr`] then redirects without taking the lock again).
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
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
    let _lock = if CAPTURING.with(|c| c.get()) {
        None
    } else {
        Some(REDIRECT.lock().unwrap_or_else(|e| e.into_inner()))
    };
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

/// Restores fd 2 from `saved` when dropped, also when the closure panics.
struct RestoreStderr {
    saved: libc::c_int,
}

impl Drop for RestoreStderr {
    fn drop(&mut self) {
        // SAFETY: flushes C stdio streams into the capture before stderr is restored.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        if self.saved >= 0 {
            // SAFETY: restores the saved stderr and closes the copy made when capturing.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
        }
        CAPTURING.with(|c| c.set(false));
    }
}

/// Run `f` with file descriptor 2 pointed at an anonymous in-memory file, then restore it
/// and return what was written there. For a benchmark that calls a library known to
/// print on every call (QATzip's software fallback retrying a device that is not there):
/// the caller summarises the lines instead of flooding the terminal. Process-wide, like
/// [`with_stdout_on_stderr`], and serialised with it. If the capture cannot be set up,
/// `f` runs with stderr as it was and the text is empty.
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::io::{Read as _, Seek as _};
    use std::os::fd::FromRawFd as _;
    if INSIDE.with(|i| i.get()) || CAPTURING.with(|c| c.get()) {
        return (f(), String::new());
    }
    let lock = REDIRECT.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::io::stderr().flush();
    // SAFETY: creates a new anonymous file; the name is a NUL-terminated literal.
    let mfd = unsafe { libc::memfd_create(c"envoy-qat-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    if mfd < 0 {
        drop(lock);
        return (f(), String::new());
    }
    // SAFETY: mfd is a descriptor this function owns from here on.
    let mut file = unsafe { std::fs::File::from_raw_fd(mfd) };
    // SAFETY: dup on the process's own stderr; the copy is restored and closed below.
    let saved = unsafe { libc::dup(2) };
    if saved >= 0 {
        // SAFETY: points fd 2 at the in-memory file, which stays open meanwhile.
        unsafe { libc::dup2(mfd, 2) };
    }
    CAPTURING.with(|c| c.set(true));
    let restore = RestoreStderr { saved };
    let out = f();
    drop(restore);
    drop(lock);
    let mut text = String::new();
    if file.rewind().is_ok() {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    (out, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_stderr_returns_what_c_and_rust_wrote_and_restores_fd_2() {
        let (v, text) = capture_stderr(|| {
            // Not eprintln!: the test harness captures that above the descriptor.
            let _ = writeln!(std::io::stderr(), "from rust");
            // SAFETY: writes a NUL-terminated literal through C stdio.
            unsafe {
                libc::fputs(c"from c\n".as_ptr(), stderr_stream());
            }
            7
        });
        assert_eq!(v, 7);
        assert!(text.contains("from rust"), "{text:?}");
        assert!(text.contains("from c"), "{text:?}");
        // fd 2 is the original again: a second capture sees only its own text.
        let ((), again) = capture_stderr(|| {
            let _ = writeln!(std::io::stderr(), "second");
        });
        assert_eq!(again.trim(), "second");
    }

    #[test]
    fn stdout_redirect_inside_a_capture_goes_to_the_capture_without_deadlock() {
        let ((), text) = capture_stderr(|| {
            with_stdout_on_stderr(|| {
                // SAFETY: writes a NUL-terminated literal to fd 1 through C stdio.
                unsafe { libc::puts(c"library start-up line".as_ptr()) };
            })
        });
        assert!(text.contains("library start-up line"), "{text:?}");
    }

    fn stderr_stream() -> *mut libc::FILE {
        // SAFETY: fdopen on a dup of fd 2 gives a FILE for C-level writes; leaked (test only).
        unsafe { libc::fdopen(libc::dup(2), c"w".as_ptr()) }
    }
}
