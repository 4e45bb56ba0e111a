//! The `tls` socket's stats. Transport sockets have no stats callbacks in the 1.40 ABI,
//! so the counters and gauges are defined by the `tls_wake` network filter's config and
//! incremented through it (`network_filter_config_increment_counter`, thread-safe in
//! Envoy: an atomic add on the stat). Names appear under Envoy's dynamic-module stats
//! namespace, e.g. `dynamicmodulescustom.tls_handshakes`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::abi::{self, ConfigEnvoyPtr, ModuleBuffer};

#[derive(Clone, Copy, Debug)]
pub enum Counter {
    Handshakes,
    HandshakeFailures,
    Resumed,
    V1_2,
    V1_3,
    KeyOps,
    KeyOpFailovers,
    KeyOpsInline,
    KeyOpsCancelled,
    NoWakeFilter,
    CertReloads,
    CertReloadFailures,
}

pub const COUNTERS: &[(Counter, &str)] = &[
    (Counter::Handshakes, "tls_handshakes"),
    (Counter::HandshakeFailures, "tls_handshake_failures"),
    (Counter::Resumed, "tls_resumed"),
    (Counter::V1_2, "tls_v1_2"),
    (Counter::V1_3, "tls_v1_3"),
    (Counter::KeyOps, "tls_key_ops"),
    (Counter::KeyOpFailovers, "tls_key_op_failovers"),
    (Counter::KeyOpsInline, "tls_key_ops_inline"),
    (Counter::KeyOpsCancelled, "tls_key_ops_cancelled"),
    (Counter::NoWakeFilter, "tls_no_wake_filter"),
    (Counter::CertReloads, "tls_cert_reloads"),
    (Counter::CertReloadFailures, "tls_cert_reload_failures"),
];

#[derive(Clone, Copy, Debug)]
pub enum Gauge {
    ConnectionsOpen,
    KeyOpsInFlight,
}

pub const GAUGES: &[(Gauge, &str)] = &[
    (Gauge::ConnectionsOpen, "tls_connections_open"),
    (Gauge::KeyOpsInFlight, "tls_key_ops_in_flight"),
];

static GAUGE_VALUES: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// A live `tls_wake` config whose stats we increment, and its stat ids.
struct Sink {
    config: usize,
    counters: Vec<usize>,
    gauges: Vec<usize>,
}

static SINKS: Mutex<Vec<Sink>> = Mutex::new(Vec::new());

/// Define the stats in a `tls_wake` config (at config load, on the main thread).
///
/// # Safety
/// `config` is the config pointer Envoy passed to `on_network_filter_config_new`, live
/// until [`detach`] is called for it.
pub unsafe fn attach(config: ConfigEnvoyPtr) {
    let Ok(api) = abi::api() else { return };
    let define = |name: &str, gauge: bool| {
        let mut id = 0usize;
        // SAFETY: the config pointer Envoy passed to config_new; the name lives for the call.
        let r = unsafe {
            if gauge {
                (api.network_filter_config_define_gauge)(
                    config,
                    ModuleBuffer::of(name.as_bytes()),
                    &mut id,
                )
            } else {
                (api.network_filter_config_define_counter)(
                    config,
                    ModuleBuffer::of(name.as_bytes()),
                    &mut id,
                )
            }
        };
        if r == abi::METRICS_SUCCESS {
            id
        } else {
            0
        }
    };
    let sink = Sink {
        config: config as usize,
        counters: COUNTERS.iter().map(|(_, n)| define(n, false)).collect(),
        gauges: GAUGES.iter().map(|(_, n)| define(n, true)).collect(),
    };
    SINKS.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
    for (g, _) in GAUGES {
        publish(*g);
    }
}

/// Stop using a config being destroyed.
pub fn detach(config: ConfigEnvoyPtr) {
    SINKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|s| s.config != config as usize);
}

/// Add one to a counter (in the newest live config: stats of the same name are one stat).
pub fn inc(c: Counter) {
    inc_by(c, 1)
}

/// Add `n` to a counter.
pub fn inc_by(c: Counter, n: u64) {
    let Ok(api) = abi::api() else { return };
    let sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = sinks.last() {
        let id = s.counters[c as usize];
        if id != 0 {
            // SAFETY: the config is live while it is in SINKS (removed at destroy, under
            // this lock); the increment is an atomic add in Envoy.
            unsafe {
                (api.network_filter_config_increment_counter)(s.config as ConfigEnvoyPtr, id, n)
            };
        }
    }
}

/// Add `delta` to a gauge and publish it.
pub fn gauge_add(g: Gauge, delta: i64) {
    GAUGE_VALUES[g as usize].fetch_add(delta, Ordering::AcqRel);
    publish(g);
}

/// The gauge's current value (for tests and logs).
pub fn gauge(g: Gauge) -> i64 {
    GAUGE_VALUES[g as usize].load(Ordering::Acquire)
}

fn publish(g: Gauge) {
    let Ok(api) = abi::api() else { return };
    let sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = sinks.last() {
        let id = s.gauges[g as usize];
        if id != 0 {
            let v = GAUGE_VALUES[g as usize].load(Ordering::Acquire).max(0) as u64;
            // SAFETY: as in `inc`.
            unsafe { (api.network_filter_config_set_gauge)(s.config as ConfigEnvoyPtr, id, v) };
        }
    }
}

static ENGINE_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Add the engines' new per-operation fallbacks (QAT refused or failed an operation and
/// the engine redid it on its BoringSSL backend) to `tls_key_op_failovers`, once each.
pub fn publish_engine_fallbacks(total_now: u64) {
    let prev = ENGINE_FALLBACKS.fetch_max(total_now, Ordering::AcqRel);
    if total_now > prev {
        inc_by(Counter::KeyOpFailovers, total_now - prev);
    }
}
