//! Engine statistics: lock-free counters and a log-linear latency histogram, readable
//! at run time without stopping anything.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two (2^3 = 8: about 9% resolution).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values up to 2^40 ns (about 18 minutes).
const OCTAVES: usize = 40;
const BUCKETS: usize = OCTAVES * SUB;

/// A concurrent latency histogram in nanoseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = ((ns >> shift) as usize) & (SUB - 1);
    (((msb - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// Upper bound (ns) of the values a bucket holds.
fn bucket_upper(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let octave = (b / SUB) as u32 - 1 + SUB_BITS;
    let sub = (b % SUB) as u64;
    let base = 1u64 << octave;
    base + (sub + 1) * (base >> SUB_BITS) - 1
}

impl Histogram {
    /// Record one value.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            count: self.count.load(Relaxed),
            sum_ns: self.sum_ns.load(Relaxed),
            max_ns: self.max_ns.load(Relaxed),
        }
    }
}

/// A copy of a [`Histogram`].
#[derive(Clone, Debug, Default)]
pub struct HistogramSnapshot {
    buckets: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Sum of values (ns).
    pub sum_ns: u64,
    /// Largest value (ns).
    pub max_ns: u64,
}

impl HistogramSnapshot {
    /// The value at quantile `q` (0..=1), as the upper bound of its bucket.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bucket_upper(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    /// Mean value.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.checked_div(self.count).unwrap_or(0))
    }

    /// Difference `self - earlier` (for a measurement window).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets = if earlier.buckets.len() == self.buckets.len() {
            self.buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect()
        } else {
            self.buckets.clone()
        };
        HistogramSnapshot {
            buckets,
            count: self.count.saturating_sub(earlier.count),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            max_ns: self.max_ns,
        }
    }
}

/// Engine counters.
#[derive(Default)]
pub struct Stats {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) rejected_busy: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) poll_sleeps: AtomicU64,
    pub(crate) latency: Histogram,
}

/// A copy of the engine's statistics.
#[derive(Clone, Debug, Default)]
pub struct StatsSnapshot {
    /// Operations accepted by `submit`.
    pub submitted: u64,
    /// Ended with a result.
    pub completed: u64,
    /// Ended with an error.
    pub failed: u64,
    /// Ended because the caller dropped the pending operation first.
    pub cancelled: u64,
    /// Operations the backend still holds (including cancelled ones not yet finished).
    pub in_flight: u64,
    /// Submissions refused because `max_in_flight` was reached.
    pub rejected_busy: u64,
    /// Operations moved from the primary backend to the fallback backend.
    pub fallbacks: u64,
    /// Calls to the backend's poll function.
    pub polls: u64,
    /// Times the poll thread slept or parked.
    pub poll_sleeps: u64,
    /// Submit-to-result latency.
    pub latency: HistogramSnapshot,
}

impl StatsSnapshot {
    /// Every accepted operation has ended exactly once and nothing is pending.
    pub fn balanced(&self) -> bool {
        self.in_flight == 0 && self.submitted == self.completed + self.failed + self.cancelled
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "submitted={} completed={} failed={} cancelled={} in_flight={} rejected_busy={} fallbacks={} \
             latency_p50={:?} latency_p99={:?} latency_max={:?}",
            self.submitted,
            self.completed,
            self.failed,
            self.cancelled,
            self.in_flight,
            self.rejected_busy,
            self.fallbacks,
            self.latency.quantile(0.5),
            self.latency.quantile(0.99),
            Duration::from_nanos(self.latency.max_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            12_345,
            1 << 30,
            u64::MAX,
        ] {
            let b = bucket_of(ns);
            assert!(b >= last, "{ns}");
            last = b;
            if ns < (1 << 39) {
                assert!(bucket_upper(b) >= ns, "{ns} > {}", bucket_upper(b));
                assert!(
                    bucket_upper(b) <= ns + ns / 8 + 1,
                    "{ns} {}",
                    bucket_upper(b)
                );
            }
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=100 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).as_micros();
        assert!((48..=56).contains(&p50), "{p50}");
        assert!(s.quantile(1.0).as_micros() <= 100);
    }
}
