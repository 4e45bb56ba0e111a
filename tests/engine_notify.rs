//! `Engine::submit_notify`: the callback runs exactly once, after the result is ready
//! (the fd is already readable and `try_complete` returns it), on the completing thread;
//! never for an operation cancelled first, never for a refused one.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use envoy_qat::engine::{Completion, Engine};
use envoy_qat::scheme::Operation;

use common::echo::{config, input, readable, rsa_key, Echo, Mode};

#[test]
fn notify_once_after_the_result_and_never_after_cancel() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Hold);
    let engine = Engine::new(backend.clone(), None, config(16));
    let calls = Arc::new(AtomicUsize::new(0));
    let mk = |seen_ready: Arc<AtomicUsize>| -> Box<dyn FnOnce() + Send> {
        Box::new(move || {
            seen_ready.fetch_add(1, Ordering::SeqCst);
        })
    };
    let mut kept = engine
        .submit_notify(&key, Operation::Decrypt, &input(1, 1), mk(calls.clone()))
        .unwrap();
    let dropped = engine
        .submit_notify(&key, Operation::Decrypt, &input(1, 2), mk(calls.clone()))
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing before completion");
    assert_eq!(kept.try_complete(), Completion::NotReady);
    drop(dropped);
    // Completing both: only the kept one notifies, and after its fd is signalled.
    assert_eq!(backend.release(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one notification");
    assert!(
        readable(kept.fd()),
        "the fd is signalled before the notification"
    );
    assert!(matches!(kept.try_complete(), Completion::Ready(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let st = engine.stats();
    assert_eq!((st.completed, st.cancelled, st.in_flight), (1, 1, 0));
}

#[test]
fn refused_operations_do_not_notify() {
    let key = rsa_key();
    let backend = Echo::new(Mode::Hold);
    let engine = Engine::new(backend.clone(), None, config(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let _held = engine
        .submit_notify(
            &key,
            Operation::Decrypt,
            &input(2, 1),
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    let c = calls.clone();
    let busy = engine.submit_notify(
        &key,
        Operation::Decrypt,
        &input(2, 2),
        Box::new(move || {
            c.fetch_add(100, Ordering::SeqCst);
        }),
    );
    assert!(busy.is_err(), "max_in_flight 1 refuses the second");
    assert_eq!(backend.release(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
