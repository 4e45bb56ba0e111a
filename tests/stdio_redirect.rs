//! `stdio::with_stdout_on_stderr` from several threads at once (every serve/Envoy worker
//! thread creating its QATzip session under the first load): stdout must be back on its
//! own file afterwards. Found by ci/soak.sh, where serve's exit statistics sometimes went
//! to stderr: two overlapping redirections let the second one save the first's
//! redirection and "restore" fd 1 to stderr for the rest of the process.
//!
//! One test in its own binary: it points fd 1 at a file of its own while it runs.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use envoy_qat::stdio::with_stdout_on_stderr;

fn file_id(fd: i32) -> (u64, u64) {
    // SAFETY: fstat on a descriptor of this process into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0, "fstat({fd})");
    (st.st_dev, st.st_ino)
}

#[test]
fn overlapping_redirections_leave_stdout_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
    // SAFETY: save this process's fds 1 and 2 and point them at two distinct files, so the
    // test can tell them apart whatever the harness connected them to.
    let (saved_out, saved_err) = unsafe { (libc::dup(1), libc::dup(2)) };
    // SAFETY: as above.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    let want = file_id(1);
    assert_ne!(want, file_id(2));

    let mut rounds_overlapped = 0;
    let mut after = Vec::new();
    for _ in 0..5 {
        // A redirects and holds the redirection for 50 ms; B starts its own while A's is
        // in place and holds it longer, so B's ends last (unless B has to wait for A).
        let (inside_tx, inside_rx) = mpsc::channel();
        let a = std::thread::spawn(move || {
            with_stdout_on_stderr(|| {
                inside_tx.send(file_id(1)).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            })
        });
        let seen_by_a = inside_rx.recv().unwrap();
        let b = std::thread::spawn(move || {
            with_stdout_on_stderr(|| {
                let id = file_id(1);
                std::thread::sleep(Duration::from_millis(100));
                id
            })
        });
        a.join().unwrap();
        let seen_by_b = b.join().unwrap();
        if seen_by_a == seen_by_b {
            rounds_overlapped += 1;
        }
        after.push(file_id(1));
        if file_id(1) != want {
            // Put stdout back for the next round (the bug leaves it on stderr).
            // SAFETY: fd 1 of this process, pointed at the test's stdout file again.
            unsafe { libc::dup2(out.as_raw_fd(), 1) };
        }
    }
    // Nested calls on one thread do not deadlock and restore once.
    let nested = with_stdout_on_stderr(|| with_stdout_on_stderr(|| file_id(1)));
    let after_nested = file_id(1);
    // Stdout output after all that lands in the stdout file (written to the real stdout:
    // println! would go to the test harness's capture).
    let mut so = std::io::stdout();
    std::io::Write::write_all(&mut so, b"still stdout\n").unwrap();
    std::io::Write::flush(&mut so).unwrap();

    // SAFETY: put the harness's descriptors back.
    unsafe {
        libc::dup2(saved_out, 1);
        libc::dup2(saved_err, 2);
        libc::close(saved_out);
        libc::close(saved_err);
    }
    // Assertions after the harness's descriptors are back, so failures are visible.
    let broken = after.iter().filter(|&&id| id != want).count();
    assert_eq!(
        broken, 0,
        "after overlapping redirections fd 1 was left on stderr in {broken} of 5 rounds"
    );
    assert_eq!(
        rounds_overlapped, 5,
        "both redirections always point at stderr"
    );
    assert_ne!(nested, want, "a nested call runs redirected");
    assert_eq!(after_nested, want, "a nested call restores stdout once");
    let text = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(text.contains("still stdout"), "stdout file: {text:?}");
}
