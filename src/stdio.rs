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

/// Restores fd 2 from `saved` when dropped, also when the closure panics; on a panic it
/// first copies what was captured (the panic message among it) to the real stderr.
struct RestoreStderr {
    saved: libc::c_int,
    mfd: libc::c_int,
}

impl Drop for RestoreStderr {
    fn drop(&mut self) {
        // SAFETY: flushes C stdio streams into the capture before stderr is restored.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        if self.saved >= 0 {
            if std::thread::panicking() {
                copy_fd(self.mfd, self.saved);
            }
            // SAFETY: restores the saved stderr and closes the copy made when capturing.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
        }
        CAPTURING.with(|c| c.set(false));
    }
}

/// Copy everything in `from` (rewound first) to `to`; errors are ignored (best effort, on
/// the way out of a panic).
fn copy_fd(from: libc::c_int, to: libc::c_int) {
    let mut buf = [0u8; 8192];
    // SAFETY: both are open descriptors of this process; buf is valid for its length.
    unsafe {
        libc::lseek(from, 0, libc::SEEK_SET);
        loop {
            let n = libc::read(from, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            let _ = libc::write(to, buf.as_ptr().cast(), n as usize);
        }
    }
}

/// Run `f` with file descriptor 2 pointed at an anonymous in-memory file, then restore it
/// and return what was written there. For a benchmark that calls a library known to
/// print on every call (QATzip's software fallback retrying a device that is not there):
/// the caller summarises the lines instead of flooding the terminal, and should print
/// them whole if `f` failed. If `f` panics, the captured text (with the panic message)
/// goes to the real stderr. Our own log lines are not captured (see [`log_writer`]).
/// Process-wide, like [`with_stdout_on_stderr`], and serialised with it: another thread's
/// [`with_stdout_on_stderr`] waits until the capture ends, so `f` must not wait for such
/// a thread. If the capture cannot be set up, `f` runs with stderr as it was and the text
/// is empty.
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::io::{Read as _, Seek as _};
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
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
    let restore = RestoreStderr {
        saved,
        mfd: file.as_raw_fd(),
    };
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

/// A copy of file descriptor 2 taken the first time it is asked for (at start-up, by the
/// command line's log set-up), so log lines reach the real stderr even while
/// [`capture_stderr`] has fd 2.
static LOG_FD: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();

/// The writer for our log lines: the copy of stderr taken at start-up, or stderr itself
/// if no copy could be made.
pub fn log_writer() -> LogWriter {
    LogWriter(
        LOG_FD
            .get_or_init(|| {
                use std::os::fd::FromRawFd as _;
                // SAFETY: dup of the process's own fd 2; the copy is owned by the File.
                let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
                // SAFETY: fd is a fresh descriptor owned by nothing else.
                (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
            })
            .as_ref(),
    )
}

/// See [`log_writer`].
pub struct LogWriter(Option<&'static std::fs::File>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0 {
            Some(mut f) => f.write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0 {
            Some(mut f) => f.flush(),
            None => std::io::stderr().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// (device, inode) of what `fd` points at.
    fn identity(fd: libc::c_int) -> (u64, u64) {
        // SAFETY: fstat writes into a zeroed stat struct we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        (st.st_dev, st.st_ino)
    }

    /// What fds 1 and 2 point at when no redirection is in progress: read under
    /// [`REDIRECT`], which every redirection holds, because the tests run in parallel and
    /// another test's capture moves fd 2 meanwhile.
    fn settled_fds() -> ((u64, u64), (u64, u64)) {
        let _lock = REDIRECT.lock().unwrap_or_else(|e| e.into_inner());
        (identity(1), identity(2))
    }

    #[test]
    fn capture_stderr_returns_what_c_and_rust_wrote_and_restores_fd_2() {
        let before = settled_fds();
        let (v, text) = capture_stderr(|| {
            // Not eprintln!: the test harness captures that above the descriptor.
            let _ = writeln!(std::io::stderr(), "marker-rust-7f3a");
            // SAFETY: a raw write(2) of a static buffer of the given length to fd 2.
            unsafe {
                libc::write(2, c"marker-c-7f3a\n".as_ptr().cast(), 14);
            }
            7
        });
        assert_eq!(v, 7);
        assert!(text.contains("marker-rust-7f3a"), "{text:?}");
        assert!(text.contains("marker-c-7f3a"), "{text:?}");
        assert_eq!(settled_fds(), before, "fd 1 or 2 not restored");
        // A second capture sees its own text, not the first's.
        let ((), again) = capture_stderr(|| {
            let _ = writeln!(std::io::stderr(), "marker-second-7f3a");
        });
        assert!(again.contains("marker-second-7f3a"), "{again:?}");
        assert!(!again.contains("marker-rust-7f3a"), "{again:?}");
    }

    #[test]
    fn capture_stderr_restores_fd_2_when_the_closure_panics() {
        let before = settled_fds();
        let r = std::panic::catch_unwind(|| capture_stderr(|| panic!("marker-panic-7f3a")));
        assert!(r.is_err());
        assert_eq!(settled_fds(), before, "fd 1 or 2 not restored");
        // The lock was released: another capture works.
        let ((), t) = capture_stderr(|| {
            let _ = writeln!(std::io::stderr(), "marker-after-7f3a");
        });
        assert!(t.contains("marker-after-7f3a"), "{t:?}");
    }

    #[test]
    fn stdout_redirect_inside_a_capture_goes_to_the_capture_without_deadlock() {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let ((), text) = capture_stderr(|| {
                with_stdout_on_stderr(|| {
                    let _ = writeln!(std::io::stdout(), "marker-stdout-7f3a");
                    let _ = std::io::stdout().flush();
                })
            });
            let _ = tx.send(text);
        });
        let text = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("deadlock: with_stdout_on_stderr inside capture_stderr did not return");
        assert!(text.contains("marker-stdout-7f3a"), "{text:?}");
    }
}
