//! Dropping pending operations cancels them: every eventfd closes at once, nothing
//! leaks, and completing the cancelled jobs later signals nothing (not even a reused fd
//! number). Alone in its own test binary so the process-wide fd count is exact.

mod common;

use envoy_qat::backend::Job;
use envoy_qat::engine::{Completion, Engine};
use envoy_qat::scheme::Operation;

use common::echo::{config, input, readable, rsa_key, Echo, Mode};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropped_operations_leak_nothing_and_signal_nothing() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Hold);
    let engine = Engine::new(backend.clone(), None, config(20_000));
    let fds_before = open_fds();
    let pending: Vec<_> = (0..10_000)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(9, i))
                .unwrap()
        })
        .collect();
    assert_eq!(
        open_fds(),
        fds_before + 10_000,
        "one eventfd per pending operation"
    );
    drop(pending);
    assert!(
        open_fds() <= fds_before + envoy_qat::engine::FD_POOL_MAX,
        "dropping closes every eventfd beyond the reuse pool"
    );
    let st = engine.stats();
    assert_eq!((st.cancelled, st.in_flight), (10_000, 10_000));
    // New operations reuse the closed fd numbers; completing the cancelled jobs must not
    // signal them.
    let fresh: Vec<_> = (0..100)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(10, i))
                .unwrap()
        })
        .collect();
    let fresh_jobs: Vec<Job> = {
        let mut q = backend.held.lock().unwrap();
        let n = q.len();
        q.drain(n - 100..).collect()
    };
    assert_eq!(backend.release(), 10_000);
    for p in &fresh {
        assert!(
            !readable(p.fd()),
            "a cancelled operation signalled a reused fd"
        );
    }
    for j in fresh_jobs {
        backend.answer(j);
    }
    for mut p in fresh {
        assert!(readable(p.fd()));
        assert!(matches!(p.try_complete(), Completion::Ready(_)));
    }
    let st = engine.stats();
    assert_eq!(
        (st.submitted, st.completed, st.cancelled, st.in_flight),
        (10_100, 100, 10_000, 0)
    );
    assert!(st.balanced(), "{st:?}");

    // Completed but never taken, then dropped: the pooled fd is drained before reuse.
    let done: Vec<_> = (0..50)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(11, i))
                .unwrap()
        })
        .collect();
    backend.release();
    assert!(done.iter().all(|p| readable(p.fd())));
    drop(done);
    let again: Vec<_> = (0..50)
        .map(|i| {
            engine
                .submit(&key, Operation::Decrypt, &input(12, i))
                .unwrap()
        })
        .collect();
    assert!(
        again.iter().all(|p| !readable(p.fd())),
        "a reused fd carried an old signal"
    );
    backend.release();
    for mut p in again {
        assert!(matches!(p.try_complete(), Completion::Ready(_)));
    }
    drop(engine);
    drop(backend);
    assert_eq!(
        open_fds(),
        fds_before,
        "an engine's pooled eventfds close with it"
    );
}
