//! The poll thread: drives backends that complete only when polled (QAT).
//!
//! It parks on a condition variable while nothing polled is in flight, so an idle
//! engine costs no CPU. While operations are in flight it polls, and between empty polls
//! it waits according to the [`PollPolicy`]:
//! - `Adaptive` (default): with few operations in flight (below [`BATCH_IN_FLIGHT`];
//!   once batching, below [`SPIN_BELOW`]), right after work arrives or completes it
//!   polls tightly (yielding the CPU between polls) for a short spin window, then sleeps
//!   with an exponentially growing interval capped at `poll_delay`. With more in flight it batches: it sleeps a quarter of the
//!   recent operation latency (a moving average, at least 5 µs, at most
//!   `poll_delay`) between polls, so each poll collects several completions. Spinning
//!   at high load would cost most of a core (on a virtual machine every short sleep also
//!   costs ~20 µs of CPU to arm the timer) while the operations spend their time queued
//!   at the device, not waiting for the poll.
//! - `Fixed`: sleeps `poll_delay` between polls, as upstream Envoy's QAT provider does.
//!
//! A policy that learned the device latency for a lone operation too (first poll at 3/4
//! of the moving average) was measured on qat-sim and dropped: on a virtual machine a
//! sleep overshoots by tens of microseconds, the overshoot feeds the learned latency
//! (amplified fourfold at 3/4), and a lone operation's added latency grew tenfold. The
//! batching sleep of a quarter of the latency waits on average an eighth of it, so an
//! overshoot is amplified only 8/7 and the average settles.
//!
//! The thread asks for 1 µs of timer slack so that short sleeps are short.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Inner;

/// How the poll thread waits between polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PollPolicy {
    /// Tight polling right after activity, then exponential back-off up to `poll_delay`.
    #[default]
    Adaptive,
    /// A fixed sleep of `poll_delay` between polls (upstream's behaviour).
    Fixed,
}

impl std::str::FromStr for PollPolicy {
    type Err = String;

    /// `adaptive` or `fixed`, as the command line spells them.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adaptive" => Ok(PollPolicy::Adaptive),
            "fixed" => Ok(PollPolicy::Fixed),
            other => Err(format!("{other}: expected adaptive or fixed")),
        }
    }
}

/// How long the adaptive policy keeps polling tightly after activity.
const SPIN_WINDOW: Duration = Duration::from_micros(50);
/// First sleep after the spin window.
const FIRST_SLEEP: Duration = Duration::from_micros(5);
/// From this many polled operations in flight the adaptive policy batches instead of
/// spinning...
pub const BATCH_IN_FLIGHT: usize = 8;
/// ...until fewer than this many are in flight (hysteresis, so a load that hovers around
/// the threshold does not alternate between spinning and batching).
pub const SPIN_BELOW: usize = 4;

/// Whether the adaptive policy batches, given whether it did and how many are in flight.
fn batching_next(was: bool, active: usize) -> bool {
    if was {
        active >= SPIN_BELOW
    } else {
        active >= BATCH_IN_FLIGHT
    }
}
/// The poll thread's timer slack (ns).
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Where the poll thread parks; shared so the thread can wait without keeping the
/// engine alive.
type Park = Arc<(Mutex<()>, Condvar)>;

pub(super) struct Poller {
    active: AtomicUsize,
    /// Moving average (weight 1/8) of polled operations' submit-to-completion latency, ns.
    latency_ns: AtomicU64,
    stop: AtomicBool,
    park: Park,
    poll_delay: Duration,
    policy: PollPolicy,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Poller {
    pub(super) fn new(poll_delay: Duration, policy: PollPolicy) -> Self {
        Poller {
            active: AtomicUsize::new(0),
            latency_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            park: Arc::new((Mutex::new(()), Condvar::new())),
            poll_delay: poll_delay.max(Duration::from_micros(1)),
            policy,
            thread: Mutex::new(None),
        }
    }

    /// One more polled operation in flight; wakes the thread on 0 -> 1.
    pub(super) fn add(&self) {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            let _g = self.park.0.lock().unwrap_or_else(|e| e.into_inner());
            self.park.1.notify_one();
        }
    }

    /// One polled operation finished (or was refused at submit).
    pub(super) fn done(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// One polled operation completed `latency` after it was submitted.
    pub(super) fn completed(&self, latency: Duration) {
        self.done();
        let x = latency.as_nanos().min(u64::MAX as u128) as u64;
        // Completions are nearly always reported by the poll thread (a backend's shutdown
        // may poll from another thread), so plain load/store suffices: a racing update
        // loses one sample, never corrupts the average.
        let old = self.latency_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            x
        } else {
            (old - old / 8).saturating_add(x / 8)
        };
        self.latency_ns.store(new, Ordering::Relaxed);
    }

    /// The sleep between polls while batching.
    fn batch_sleep(&self) -> Duration {
        Duration::from_nanos(self.latency_ns.load(Ordering::Relaxed) / 4)
            .max(FIRST_SLEEP)
            .min(self.poll_delay)
    }

    /// CPU time the poll thread has used so far (None before it starts or after it
    /// stopped). Read from the thread's own CPU clock, so it is exact to the
    /// nanosecond and costs the poll thread nothing.
    pub(super) fn thread_cpu(&self) -> Option<Duration> {
        use std::os::unix::thread::JoinHandleExt;
        let guard = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        let handle = guard.as_ref()?;
        if handle.is_finished() {
            return None;
        }
        let mut clock: libc::clockid_t = 0;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the thread has not been joined (we hold the lock that `stop` takes to
        // join it), so its pthread_t is valid; both out-pointers are valid locals.
        let ok = unsafe {
            libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock) == 0
                && libc::clock_gettime(clock, &mut ts) == 0
        };
        ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        {
            let _g = self.park.0.lock().unwrap_or_else(|e| e.into_inner());
            self.park.1.notify_all();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

pub(super) fn spawn(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let handle = std::thread::Builder::new()
        .name("envoy-qat-poll".into())
        .spawn(move || run(weak))
        .expect("spawn poll thread");
    *inner
        .poller
        .thread
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(handle);
}

fn run(weak: Weak<Inner>) {
    // Linux lets a sleep overshoot by the thread's timer slack (50 µs by default), which
    // would turn the adaptive policy's first short sleeps into 55+ µs. Ask for 1 µs.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS) };
    let mut last_activity = Instant::now();
    let mut sleep = FIRST_SLEEP;
    let mut batching = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let p = &inner.poller;
        if p.stop.load(Ordering::Acquire) {
            return;
        }
        if p.active.load(Ordering::Acquire) == 0 {
            // Park until work arrives, without a strong reference to the engine, so the
            // engine can be dropped (and its backends released) while the thread waits.
            inner.stats.poll_sleeps.fetch_add(1, Ordering::Relaxed);
            let park = Arc::clone(&p.park);
            let weak_again = Arc::downgrade(&inner);
            let guard = park.0.lock().unwrap_or_else(|e| e.into_inner());
            let idle = p.active.load(Ordering::Acquire) == 0 && !p.stop.load(Ordering::Acquire);
            drop(inner);
            if idle {
                // Wake at least once a second to notice an engine that went away.
                let _ = park.1.wait_timeout(guard, Duration::from_secs(1));
            } else {
                drop(guard);
            }
            if weak_again.strong_count() == 0 {
                return;
            }
            last_activity = Instant::now();
            sleep = FIRST_SLEEP;
            batching = false;
            continue;
        }
        inner.stats.polls.fetch_add(1, Ordering::Relaxed);
        let done = inner.primary.poll()
            + inner
                .fallback
                .as_ref()
                .map_or(0, |f| if f.needs_polling() { f.poll() } else { 0 });
        let delay = p.poll_delay;
        let policy = p.policy;
        batching = batching_next(batching, p.active.load(Ordering::Acquire));
        if policy == PollPolicy::Adaptive && batching {
            let s = p.batch_sleep();
            drop(inner);
            last_activity = Instant::now();
            sleep = FIRST_SLEEP;
            std::thread::sleep(s);
            continue;
        }
        if done > 0 {
            last_activity = Instant::now();
            sleep = FIRST_SLEEP;
            continue;
        }
        drop(inner);
        match policy {
            PollPolicy::Fixed => std::thread::sleep(delay),
            PollPolicy::Adaptive => {
                if last_activity.elapsed() < SPIN_WINDOW {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(sleep);
                    sleep = (sleep * 2).min(delay);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_starts_at_8_in_flight_and_ends_below_4() {
        let mut b = false;
        let mut seen = Vec::new();
        for active in [1, 7, 8, 9, 5, 4, 3, 7, 8] {
            b = batching_next(b, active);
            seen.push(b);
        }
        assert_eq!(
            seen,
            [false, false, true, true, true, true, false, false, true]
        );
    }

    #[test]
    fn batch_sleep_is_a_quarter_of_the_average_latency_within_bounds() {
        let p = Poller::new(Duration::from_millis(1), PollPolicy::Adaptive);
        // No completion seen yet: the shortest sleep.
        assert_eq!(p.batch_sleep(), FIRST_SLEEP);
        for _ in 0..3 {
            p.add();
        }
        // The first sample sets the average.
        p.completed(Duration::from_micros(400));
        assert_eq!(p.batch_sleep(), Duration::from_micros(100));
        // A slower sample moves it by an eighth of the difference.
        p.completed(Duration::from_micros(1200));
        assert_eq!(p.batch_sleep(), Duration::from_micros(125));
        assert_eq!(p.active.load(Ordering::Relaxed), 1);
        // Never longer than poll_delay, never shorter than FIRST_SLEEP.
        for _ in 0..64 {
            p.add();
            p.completed(Duration::from_secs(1));
        }
        assert_eq!(p.batch_sleep(), Duration::from_millis(1));
        for _ in 0..256 {
            p.add();
            p.completed(Duration::from_nanos(10));
        }
        assert_eq!(p.batch_sleep(), FIRST_SLEEP);
        assert_eq!(p.active.load(Ordering::Relaxed), 1);
    }
}
