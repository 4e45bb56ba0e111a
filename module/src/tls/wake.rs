//! Waking a `tls` connection when its private-key operation finishes on another thread.
//!
//! Transport sockets have no scheduler in the 1.40 ABI; network filters do. The
//! `tls_wake` network filter (first in the filter chain) creates a scheduler for its
//! connection and pairs with the connection's socket by connection id. A completion
//! commits to that scheduler; on the connection's worker, `on_network_filter_scheduled`
//! marks the socket readable and Envoy calls the socket's `do_read`, which resumes the
//! handshake. The scheduler is deleted under the same lock that a completion holds to
//! commit, so nothing is ever committed to a deleted scheduler; a completion for a closed
//! connection finds no scheduler (or a scheduler whose filter is gone, which Envoy drops).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::abi::{
    self, log_level, network_status, ConfigEnvoyPtr, EnvoyBuffer, FilterEnvoyPtr, SchedulerPtr,
    SocketEnvoyPtr,
};

use super::keys::InFlight;
use super::stats::{self, Counter, Gauge};

/// The name of the wake-up filter (`filter_name` of `envoy.filters.network.dynamic_modules`).
pub const FILTER_NAME: &str = "tls_wake";

#[derive(Default)]
struct WakeState {
    scheduler: Option<usize>,
    socket: Option<usize>,
}

/// One downstream connection's shared state: the socket's and the filter's meeting point.
pub struct Conn {
    pub id: u64,
    wake: Mutex<WakeState>,
    in_flight: Mutex<Option<InFlight>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn registry() -> &'static Mutex<HashMap<u64, Weak<Conn>>> {
    static R: OnceLock<Mutex<HashMap<u64, Weak<Conn>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl Conn {
    /// A connection's state, registered under its id, for the socket `socket`.
    pub fn register(id: u64, socket: SocketEnvoyPtr) -> Arc<Conn> {
        let c = Arc::new(Conn {
            id,
            wake: Mutex::new(WakeState {
                scheduler: None,
                socket: Some(socket as usize),
            }),
            in_flight: Mutex::new(None),
        });
        lock(registry()).insert(id, Arc::downgrade(&c));
        c
    }

    /// The socket is going away: unregister, forget it, cancel its operation.
    pub fn unregister(&self) {
        {
            let mut r = lock(registry());
            if r.get(&self.id)
                .is_some_and(|w| w.as_ptr() == self as *const Conn)
            {
                r.remove(&self.id);
            }
        }
        lock(&self.wake).socket = None;
        self.cancel();
    }

    /// Drop the operation in flight, if any (the engine discards its result).
    pub fn cancel(&self) {
        if lock(&self.in_flight).take().is_some() {
            stats::inc(Counter::KeyOpsCancelled);
            stats::gauge_add(Gauge::KeyOpsInFlight, -1);
        }
    }

    pub fn set_in_flight(&self, f: Option<InFlight>) -> Option<InFlight> {
        std::mem::replace(&mut *lock(&self.in_flight), f)
    }

    pub fn has_in_flight(&self) -> bool {
        lock(&self.in_flight).is_some()
    }

    /// Whether a `tls_wake` filter is there to resume this connection.
    pub fn can_wake(&self) -> bool {
        lock(&self.wake).scheduler.is_some()
    }

    /// The completion callback for an operation of this connection.
    pub fn notifier(self: &Arc<Self>) -> Box<dyn FnOnce() + Send> {
        let weak = Arc::downgrade(self);
        Box::new(move || {
            if let Some(c) = weak.upgrade() {
                c.wake();
            }
        })
    }

    /// From any thread: have the connection's worker call the socket's do_read.
    fn wake(&self) {
        let w = lock(&self.wake);
        if let (Some(s), Ok(api)) = (w.scheduler, abi::api()) {
            // SAFETY: the scheduler is live while it is in WakeState (deleted under this
            // lock); commit is thread-safe (it posts to the connection's dispatcher).
            unsafe { (api.network_filter_scheduler_commit)(s as SchedulerPtr, self.id) };
        }
    }
}

// SAFETY: the raw pointers inside are plain addresses used under the locks above; the
// socket pointer is only dereferenced (by Envoy) on the connection's worker thread.
unsafe impl Send for Conn {}
// SAFETY: as above.
unsafe impl Sync for Conn {}

/// The `tls_wake` filter of one connection.
pub struct WakeFilter {
    conn: Option<Arc<Conn>>,
    scheduler: Option<usize>,
}

static WAKE_CONFIGS: AtomicUsize = AtomicUsize::new(0);
static MISSING_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether any `tls_wake` filter config is loaded.
pub fn wake_configs() -> usize {
    WAKE_CONFIGS.load(Ordering::Acquire)
}

/// Say (once) that a connection has no wake-up filter.
pub fn warn_missing_filter() {
    stats::inc(Counter::NoWakeFilter);
    if !MISSING_LOGGED.swap(true, Ordering::AcqRel) {
        abi::log(
            log_level::ERROR,
            "envoy-qat tls: a connection's filter chain has no `tls_wake` network filter \
             (envoy.filters.network.dynamic_modules, filter_name: tls_wake, first in the chain); \
             its private-key operations run inline with BoringSSL on Envoy's worker. Add the \
             filter to every filter chain that uses the tls transport socket.",
        );
    }
}

fn config_new(config: ConfigEnvoyPtr, name: &[u8], cfg: &[u8]) -> *const c_void {
    if name != FILTER_NAME.as_bytes() {
        abi::log(
            log_level::ERROR,
            &format!(
                "envoy-qat module: unknown network filter_name {:?}; the module's network filter is {FILTER_NAME:?}",
                String::from_utf8_lossy(name)
            ),
        );
        return std::ptr::null();
    }
    let text = String::from_utf8_lossy(cfg);
    let t = text.trim();
    if !(t.is_empty() || t == "{}") {
        abi::log(
            log_level::ERROR,
            &format!(
                "envoy-qat module: tls_wake takes no config (got {t:?}); remove filter_config"
            ),
        );
        return std::ptr::null();
    }
    stats::attach(config);
    WAKE_CONFIGS.fetch_add(1, Ordering::AcqRel);
    Box::into_raw(Box::new(config as usize)) as *const c_void
}

/// # Safety
/// Envoy passes valid buffers for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    config: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    cfg: EnvoyBuffer,
) -> *const c_void {
    crate::guard("network_filter_config_new", std::ptr::null(), || {
        // SAFETY: Envoy's buffers, valid for the call.
        let (n, c) = unsafe { (name.as_slice(), cfg.as_slice()) };
        config_new(config, n, c)
    })
}

/// # Safety
/// `config` is a pointer returned by config_new.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(
    config: *const c_void,
) {
    crate::guard("network_filter_config_destroy", (), || {
        if config.is_null() {
            return;
        }
        // SAFETY: our Box<usize> from config_new, destroyed once.
        let envoy_config = unsafe { Box::from_raw(config as *mut usize) };
        stats::detach(*envoy_config as ConfigEnvoyPtr);
        WAKE_CONFIGS.fetch_sub(1, Ordering::AcqRel);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new(
    _config: *const c_void,
    _filter: FilterEnvoyPtr,
) -> *const c_void {
    crate::guard("network_filter_new", std::ptr::null(), || {
        Box::into_raw(Box::new(WakeFilter {
            conn: None,
            scheduler: None,
        })) as *const c_void
    })
}

/// # Safety
/// `module` is a pointer returned by on_network_filter_new, not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(
    envoy: FilterEnvoyPtr,
    module: *const c_void,
) -> u32 {
    crate::guard(
        "network_filter_new_connection",
        network_status::CONTINUE,
        || {
            let Ok(api) = abi::api() else {
                return network_status::CONTINUE;
            };
            // SAFETY: our live filter; Envoy calls its hooks on one worker thread.
            let f = unsafe { &mut *(module as *mut WakeFilter) };
            // SAFETY: the hook's filter pointer.
            let id = unsafe { (api.network_filter_get_connection_id)(envoy) };
            let conn = lock(registry()).get(&id).and_then(Weak::upgrade);
            let Some(conn) = conn else {
                // Not a `tls` socket connection: nothing to wake.
                return network_status::CONTINUE;
            };
            // SAFETY: the hook's filter pointer; the scheduler is deleted in destroy.
            let s = unsafe { (api.network_filter_scheduler_new)(envoy) } as usize;
            lock(&conn.wake).scheduler = Some(s);
            f.scheduler = Some(s);
            f.conn = Some(conn);
            network_status::CONTINUE
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_read(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _len: usize,
    _end_stream: bool,
) -> u32 {
    network_status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_write(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _len: usize,
    _end_stream: bool,
) -> u32 {
    network_status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_event(
    _envoy: FilterEnvoyPtr,
    _module: *const c_void,
    _event: u32,
) {
}

/// # Safety
/// `module` is a pointer returned by on_network_filter_new, not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_scheduled(
    _envoy: FilterEnvoyPtr,
    module: *const c_void,
    _event_id: u64,
) {
    crate::guard("network_filter_scheduled", (), || {
        let Ok(api) = abi::api() else { return };
        // SAFETY: our live filter, on its worker thread.
        let f = unsafe { &*(module as *const WakeFilter) };
        let socket = f.conn.as_ref().and_then(|c| lock(&c.wake).socket);
        if let Some(s) = socket {
            // SAFETY: the socket is live while registered in WakeState (cleared by its
            // destroy on this same worker thread); Envoy re-arms the read event.
            unsafe { (api.transport_socket_set_is_readable)(s as SocketEnvoyPtr) };
        }
    })
}

/// # Safety
/// `module` is a pointer returned by on_network_filter_new, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_destroy(module: *const c_void) {
    crate::guard("network_filter_destroy", (), || {
        if module.is_null() {
            return;
        }
        // SAFETY: our Box from on_network_filter_new.
        let f = unsafe { Box::from_raw(module as *mut WakeFilter) };
        if let (Some(conn), Some(s)) = (&f.conn, f.scheduler) {
            let mut w = lock(&conn.wake);
            if w.scheduler == Some(s) {
                w.scheduler = None;
            }
            if let Ok(api) = abi::api() {
                // SAFETY: our scheduler, deleted once, under the lock completions commit under.
                unsafe { (api.network_filter_scheduler_delete)(s as SchedulerPtr) };
            }
        }
    })
}
