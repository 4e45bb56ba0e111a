//! The asynchronous private-key engine.
//!
//! Contract (see DESIGN.md):
//! - [`Engine::submit`] never blocks on crypto or on a device. It hashes and pads the
//!   input (microseconds), hands a raw operation to a backend and returns a [`Pending`].
//! - A [`Pending`] owns an eventfd that becomes readable exactly once, when the result is
//!   ready; [`Pending::try_complete`] returns ready / not ready / failed.
//! - Dropping a [`Pending`] cancels it: the result is discarded when the backend finishes,
//!   its fd is closed at once, and nothing is signalled afterwards.
//! - Every accepted operation ends exactly once: completed, failed or cancelled.
//! - Backends that complete only when polled (QAT) are driven by one poll thread that
//!   parks on a condition variable while nothing is in flight (idle costs nothing).
//! - At most `max_in_flight` operations at a time; beyond that `submit` fails with
//!   [`EngineError::Busy`] (back-pressure).
//! - With a fallback backend, an operation the primary refuses or fails is redone by the
//!   fallback (per operation), and counted.

mod poll;
pub mod stats;

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use poll::PollPolicy;
pub use stats::{HistogramSnapshot, StatsSnapshot};

use crate::backend::{Backend, CompletionSink, Job, OpError, Rejected};
use crate::key::PrivateKey;
use crate::scheme::{self, Operation, RawOp, SchemeError};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most operations in flight at once.
    pub max_in_flight: usize,
    /// Longest sleep of the poll thread between polls while operations are in flight
    /// (upstream's `poll_delay`).
    pub poll_delay: Duration,
    /// How the poll thread waits between polls.
    pub poll_policy: PollPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_in_flight: 65_536,
            poll_delay: Duration::from_millis(2),
            poll_policy: PollPolicy::Adaptive,
        }
    }
}

/// Why an operation could not be started or did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The key cannot do this operation, or the input is malformed.
    Scheme(SchemeError),
    /// `max_in_flight` operations are already in flight.
    Busy { max_in_flight: usize },
    /// The backend refused or failed the operation (and no fallback saved it).
    Backend {
        backend: &'static str,
        error: OpError,
    },
    /// The engine is shut down.
    Shutdown,
    /// The notification fd could not be created.
    Io(String),
    /// The backend's output did not fit the operation.
    BadOutput(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Scheme(e) => e.fmt(f),
            EngineError::Busy { max_in_flight } => write!(
                f,
                "{max_in_flight} private-key operations already in flight; retry later or raise max_in_flight"
            ),
            EngineError::Backend { backend, error } => write!(f, "{backend} backend: {error}"),
            EngineError::Shutdown => f.write_str("private-key engine is shut down"),
            EngineError::Io(e) => write!(f, "cannot create a notification eventfd: {e}"),
            EngineError::BadOutput(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<SchemeError> for EngineError {
    fn from(e: SchemeError) -> Self {
        EngineError::Scheme(e)
    }
}

/// The state of a pending operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// The result: a signature, or the raw RSA decryption.
    Ready(Vec<u8>),
    /// Not finished yet; wait for the fd to become readable.
    NotReady,
    /// Finished with an error (or the result was already taken).
    Failed(EngineError),
}

enum SlotState {
    Waiting,
    Ready(Result<Vec<u8>, EngineError>),
    Taken,
    Cancelled,
}

/// Called once when the result is ready, on the thread that completes it (see
/// [`Engine::submit_notify`]).
pub type Notify = Box<dyn FnOnce() + Send>;

struct SlotInner {
    state: SlotState,
    fd: Option<OwnedFd>,
    notify: Option<Notify>,
}

/// One operation in flight: the completion sink of its backend job.
struct Slot {
    id: u64,
    op: Operation,
    key: Arc<PrivateKey>,
    started: Instant,
    /// Kept for a per-operation failover; None when there is no fallback backend.
    raw: Mutex<Option<RawOp>>,
    on_fallback: AtomicBool,
    polled: AtomicBool,
    inner: Mutex<SlotInner>,
    engine: Weak<Inner>,
}

struct Inner {
    primary: Arc<dyn Backend>,
    fallback: Option<Arc<dyn Backend>>,
    config: EngineConfig,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    live: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Drained eventfds of finished operations, reused by new ones (saves two syscalls
    /// per operation). A pooled fd is never reachable from a slot, so nothing signals it.
    fd_pool: Mutex<Vec<OwnedFd>>,
    stats: stats::Stats,
    poller: poll::Poller,
}

/// The asynchronous private-key engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("primary", &self.inner.primary.name())
            .field("fallback", &self.inner.fallback.as_ref().map(|b| b.name()))
            .finish()
    }
}

impl Engine {
    /// An engine over `primary`, with an optional per-operation `fallback`.
    pub fn new(
        primary: Arc<dyn Backend>,
        fallback: Option<Arc<dyn Backend>>,
        config: EngineConfig,
    ) -> Self {
        let needs_poll =
            primary.needs_polling() || fallback.as_ref().is_some_and(|b| b.needs_polling());
        let inner = Arc::new(Inner {
            primary,
            fallback,
            poller: poll::Poller::new(config.poll_delay, config.poll_policy),
            config,
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            fd_pool: Mutex::new(Vec::new()),
            stats: stats::Stats::default(),
        });
        if needs_poll {
            poll::spawn(&inner);
        }
        Engine { inner }
    }

    /// The primary backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.primary.name()
    }

    /// Whether the primary backend (QAT, when configured) can serve operations now.
    pub fn primary_availability(&self) -> Result<(), String> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err("engine is shut down".into());
        }
        self.inner.primary.availability()
    }

    /// Whether the engine can serve operations now: the primary is available, or a
    /// fallback is. The error says why not.
    pub fn availability(&self) -> Result<(), String> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err("engine is shut down".into());
        }
        match (self.inner.primary.availability(), &self.inner.fallback) {
            (Ok(()), _) => Ok(()),
            (Err(e), Some(fb)) => fb.availability().map_err(|e2| {
                format!(
                    "{}: {e}; fallback {}: {e2}",
                    self.inner.primary.name(),
                    fb.name()
                )
            }),
            (Err(e), None) => Err(format!("{}: {e}", self.inner.primary.name())),
        }
    }

    /// Start an operation. Never blocks on crypto or a device.
    pub fn submit(
        &self,
        key: &Arc<PrivateKey>,
        op: Operation,
        input: &[u8],
    ) -> Result<Pending, EngineError> {
        self.submit_inner(key, op, input, None)
    }

    /// [`Engine::submit`], and call `notify` once when the result is ready (on the thread
    /// that completes it: a backend worker or the poll thread), right after the fd is
    /// signalled. For event loops that cannot watch an fd (an Envoy dynamic module wakes
    /// its connection through Envoy's scheduler instead). Not called for an operation
    /// cancelled first (its [`Pending`] dropped), nor when `submit_notify` returns Err.
    /// `notify` must not block: it runs where other completions wait.
    pub fn submit_notify(
        &self,
        key: &Arc<PrivateKey>,
        op: Operation,
        input: &[u8],
        notify: Notify,
    ) -> Result<Pending, EngineError> {
        self.submit_inner(key, op, input, Some(notify))
    }

    fn submit_inner(
        &self,
        key: &Arc<PrivateKey>,
        op: Operation,
        input: &[u8],
        notify: Option<Notify>,
    ) -> Result<Pending, EngineError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(EngineError::Shutdown);
        }
        let raw = scheme::prepare(key, op, input)?;
        let max = inner.config.max_in_flight;
        if inner.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            inner.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Busy { max_in_flight: max });
        }
        let fd = match inner.take_fd() {
            Ok(fd) => fd,
            Err(e) => {
                inner.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(EngineError::Io(e.to_string()));
            }
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            op,
            key: Arc::clone(key),
            started: Instant::now(),
            raw: Mutex::new(inner.fallback.as_ref().map(|_| raw.clone())),
            on_fallback: AtomicBool::new(false),
            polled: AtomicBool::new(false),
            inner: Mutex::new(SlotInner {
                state: SlotState::Waiting,
                fd: Some(fd),
                notify,
            }),
            engine: Arc::downgrade(inner),
        });
        let raw_fd = lock(&slot.inner).fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        lock(&inner.live).insert(id, Arc::clone(&slot));
        inner.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            slot: Arc::clone(&slot),
            fd: raw_fd,
        };

        let job = Job::new(
            Arc::clone(key),
            raw,
            id,
            slot.clone() as Arc<dyn CompletionSink>,
        );
        let use_primary = inner.primary.supports(key) || inner.fallback.is_none();
        let first = if use_primary {
            &inner.primary
        } else {
            inner.fallback.as_ref().unwrap_or(&inner.primary)
        };
        if !use_primary {
            slot.on_fallback.store(true, Ordering::Relaxed);
            inner.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(Rejected { job, error }) = inner.submit_to(first, &slot, job) {
            match (&inner.fallback, use_primary) {
                (Some(fb), true) if !matches!(error, OpError::Shutdown) => {
                    slot.on_fallback.store(true, Ordering::Relaxed);
                    inner.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(op = %op, %error, "primary backend refused; using fallback");
                    if let Err(Rejected { job, error }) = inner.submit_to(fb, &slot, job) {
                        job.disarm();
                        inner.finish(
                            &slot,
                            Err(EngineError::Backend {
                                backend: fb.name(),
                                error,
                            }),
                        );
                    }
                }
                _ => {
                    let backend = first.name();
                    job.disarm();
                    // Refused before anything ran: undo the accounting and report the
                    // refusal synchronously (busy is back-pressure, not a failure).
                    inner.withdraw(&slot);
                    if let OpError::Busy(_) = error {
                        inner.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(EngineError::Backend { backend, error });
                }
            }
        }
        Ok(pending)
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        StatsSnapshot {
            submitted: s.submitted.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            in_flight: self.inner.in_flight.load(Ordering::Relaxed) as u64,
            rejected_busy: s.rejected_busy.load(Ordering::Relaxed),
            fallbacks: s.fallbacks.load(Ordering::Relaxed),
            polls: s.polls.load(Ordering::Relaxed),
            poll_sleeps: s.poll_sleeps.load(Ordering::Relaxed),
            latency: s.latency.snapshot(),
        }
    }

    /// CPU time used so far by the poll thread (None if there is none, e.g. no backend
    /// that needs polling has been used yet).
    pub fn poll_thread_cpu(&self) -> Option<Duration> {
        self.inner.poller.thread_cpu()
    }

    /// The backends' own counters ([`Backend::stats_line`]): (backend name, line) for
    /// the primary and then the fallback, those that have any.
    pub fn backend_stats(&self) -> Vec<(&'static str, String)> {
        std::iter::once(&self.inner.primary)
            .chain(self.inner.fallback.as_ref())
            .filter_map(|b| b.stats_line().map(|l| (b.name(), l)))
            .collect()
    }

    /// Operations redone on the fallback backend so far (the `fallbacks` of
    /// [`Engine::stats`], without building a snapshot).
    pub fn fallbacks(&self) -> u64 {
        self.inner.stats.fallbacks.load(Ordering::Relaxed)
    }

    /// Operations in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Stop: refuse new operations, stop the backends, and end every operation still in
    /// flight with [`EngineError::Shutdown`]. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    /// An unsignalled eventfd: a pooled one, or a new one.
    fn take_fd(&self) -> std::io::Result<OwnedFd> {
        match lock(&self.fd_pool).pop() {
            Some(fd) => Ok(fd),
            None => new_eventfd(),
        }
    }

    /// Take back the eventfd of a dropped operation; `signalled` if it may hold a count.
    fn return_fd(&self, fd: OwnedFd, signalled: bool) {
        if signalled {
            drain(&fd);
        }
        let mut pool = lock(&self.fd_pool);
        if pool.len() < FD_POOL_MAX && !self.closed.load(Ordering::Acquire) {
            pool.push(fd);
        }
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.primary.shutdown();
        if let Some(fb) = &self.fallback {
            fb.shutdown();
        }
        let rest: Vec<Arc<Slot>> = lock(&self.live).values().cloned().collect();
        for slot in rest {
            self.finish(&slot, Err(EngineError::Shutdown));
        }
        self.poller.stop();
        lock(&self.fd_pool).clear();
    }

    fn submit_to(
        &self,
        backend: &Arc<dyn Backend>,
        slot: &Arc<Slot>,
        job: Job,
    ) -> Result<(), Rejected> {
        let polled = backend.needs_polling();
        slot.polled.store(polled, Ordering::Relaxed);
        if polled {
            self.poller.add();
        }
        let r = backend.submit(job);
        if r.is_err() && polled {
            self.poller.done();
        }
        r
    }

    /// Remove a slot that never ran (refused at submit).
    fn withdraw(&self, slot: &Arc<Slot>) {
        if lock(&self.live).remove(&slot.id).is_some() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.submitted.fetch_sub(1, Ordering::Relaxed);
        }
        let mut g = lock(&slot.inner);
        g.state = SlotState::Cancelled;
        g.fd = None;
        g.notify = None;
    }

    /// End an operation exactly once: the first call wins, later ones do nothing.
    fn finish(&self, slot: &Arc<Slot>, result: Result<Vec<u8>, EngineError>) {
        if lock(&self.live).remove(&slot.id).is_none() {
            return;
        }
        self.stats.latency.record(slot.started.elapsed());
        let mut g = lock(&slot.inner);
        // A cancelled slot (counted when its Pending dropped) is discarded.
        let waiting = matches!(g.state, SlotState::Waiting);
        if waiting {
            let counter = if result.is_ok() {
                &self.stats.completed
            } else {
                &self.stats.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // After the outcome is counted and before anyone can see the result: a reader
        // that sees in_flight == 0 sees every outcome counted, and a caller holding its
        // result never sees its own operation still in flight.
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let notify = if waiting {
            g.state = SlotState::Ready(result);
            if let Some(fd) = &g.fd {
                signal(fd);
            }
            g.notify.take()
        } else {
            None
        };
        drop(g);
        if let Some(notify) = notify {
            notify();
        }
    }
}

impl CompletionSink for Slot {
    fn complete(&self, _job_id: u64, result: Result<Vec<u8>, OpError>) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let Some(me) = lock(&engine.live).get(&self.id).cloned() else {
            return;
        };
        if self.polled.swap(false, Ordering::Relaxed) {
            engine.poller.completed(self.started.elapsed());
        }
        match result {
            Ok(raw) => {
                let out = scheme::finish(self.op, self.key.key_type(), raw)
                    .map_err(EngineError::BadOutput);
                engine.finish(&me, out);
            }
            Err(error) => {
                let backend = if self.on_fallback.load(Ordering::Relaxed) {
                    engine.fallback.as_ref().map_or("fallback", |b| b.name())
                } else {
                    engine.primary.name()
                };
                let cancelled = matches!(lock(&self.inner).state, SlotState::Cancelled);
                let retry = match (&engine.fallback, self.on_fallback.load(Ordering::Relaxed)) {
                    (Some(fb), false)
                        if !cancelled
                            && !engine.closed.load(Ordering::Acquire)
                            && !matches!(error, OpError::Shutdown) =>
                    {
                        lock(&self.raw).take().map(|raw| (fb, raw))
                    }
                    _ => None,
                };
                if let Some((fb, raw)) = retry {
                    self.on_fallback.store(true, Ordering::Relaxed);
                    engine.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(op = %self.op, %error, "operation failed on primary backend; redoing it on fallback");
                    let job = Job::new(
                        Arc::clone(&self.key),
                        raw,
                        self.id,
                        me.clone() as Arc<dyn CompletionSink>,
                    );
                    if let Err(Rejected { job, error }) = engine.submit_to(fb, &me, job) {
                        job.disarm();
                        engine.finish(
                            &me,
                            Err(EngineError::Backend {
                                backend: fb.name(),
                                error,
                            }),
                        );
                    }
                    return;
                }
                let error = match error {
                    // The backend stopped because the engine is shutting down.
                    OpError::Shutdown => EngineError::Shutdown,
                    error => EngineError::Backend { backend, error },
                };
                engine.finish(&me, Err(error));
            }
        }
    }
}

/// A private-key operation in flight. Drop it to cancel.
pub struct Pending {
    slot: Arc<Slot>,
    fd: RawFd,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.slot.id)
            .field("op", &self.slot.op)
            .finish()
    }
}

impl Pending {
    /// The notification fd: readable once the result is ready. Valid until this
    /// `Pending` is dropped; register it with an event loop, don't close it.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        self.slot.op
    }

    /// Take the result if it is there.
    pub fn try_complete(&mut self) -> Completion {
        let mut g = lock(&self.slot.inner);
        match std::mem::replace(&mut g.state, SlotState::Taken) {
            SlotState::Waiting => {
                g.state = SlotState::Waiting;
                Completion::NotReady
            }
            SlotState::Ready(r) => {
                if let Some(fd) = &g.fd {
                    drain(fd);
                }
                match r {
                    Ok(v) => Completion::Ready(v),
                    Err(e) => Completion::Failed(e),
                }
            }
            SlotState::Taken | SlotState::Cancelled => Completion::Failed(EngineError::BadOutput(
                "the result of this operation was already taken".into(),
            )),
        }
    }

    /// Block until the result is ready (for the CLI and tests; an event loop polls the fd).
    pub fn wait(mut self) -> Result<Vec<u8>, EngineError> {
        loop {
            match self.try_complete() {
                Completion::Ready(v) => return Ok(v),
                Completion::Failed(e) => return Err(e),
                Completion::NotReady => wait_readable(self.fd, None),
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (cancelled_now, fd, signalled, _notify) = {
            let mut g = lock(&self.slot.inner);
            let was_waiting = matches!(g.state, SlotState::Waiting);
            let signalled = matches!(g.state, SlotState::Ready(_));
            g.state = SlotState::Cancelled;
            // Under the lock: no completion can notify afterwards (the closure is
            // dropped below, outside the lock).
            let notify = g.notify.take();
            // Take the fd out under the lock: no completion can signal it afterwards.
            (was_waiting, g.fd.take(), signalled, notify)
        };
        if let Some(engine) = self.slot.engine.upgrade() {
            if cancelled_now {
                engine.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(fd) = fd {
                engine.return_fd(fd, signalled);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most idle eventfds an engine keeps for reuse.
pub const FD_POOL_MAX: usize = 1024;

fn new_eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions; we check the result.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn drain(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd we own.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// Wait until `fd` is readable (or the timeout passes).
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `p` is a valid pollfd array of length 1 for the duration of the call.
    let _ = unsafe { libc::poll(&mut p, 1, ms) };
}
