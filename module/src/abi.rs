//! The part of Envoy's dynamic-module C ABI this module uses, declared by hand.
//!
//! Written from Envoy's `source/extensions/dynamic_modules/abi/abi.h` (read, not copied)
//! and checked against the stock Envoy 1.40.0 binary: every callback below is exported
//! by it (`ci/test-module.sh` compares [`CALLBACKS`] with `nm -D`), and the argument
//! registers of the ones whose layout changed between ABI versions (body chunk counts,
//! `send_response`'s details, `reset_stream`) were read from its machine code.
//!
//! Callbacks are not linked: they are looked up with `dlsym(RTLD_DEFAULT, ...)` when
//! Envoy loads the module ([`Api::resolve`]). A missing one makes
//! `envoy_dynamic_module_on_program_init` fail with a log line naming it, so an Envoy
//! whose ABI moved refuses the module at start-up instead of crashing on a request. It
//! also keeps the crate's own unit tests linkable without Envoy.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

/// The ABI version string Envoy 1.40 compares with ours (a mismatch only warns).
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// A byte range owned by Envoy, valid for the duration of the hook or callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null(),
            length: 0,
        }
    }

    /// # Safety
    /// `ptr` must be null or point to `length` readable bytes that stay valid for `'a`.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees ptr/length describe live bytes (Envoy's ABI
            // contract for buffers it hands to a hook or returns from a callback).
            unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

/// A byte range owned by the module, read by Envoy during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(b: &[u8]) -> Self {
        Self {
            ptr: b.as_ptr().cast(),
            length: b.len(),
        }
    }

    pub const fn null() -> Self {
        Self {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// A header owned by the module (for `send_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

pub type FilterEnvoyPtr = *mut c_void;
pub type ConfigEnvoyPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;
/// `envoy_dynamic_module_type_transport_socket_envoy_ptr`.
pub type SocketEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_transport_socket_io_status` (1.40: Success, Again, Error).
pub mod io_status {
    pub const SUCCESS: u32 = 0;
    pub const AGAIN: u32 = 1;
}

/// `envoy_dynamic_module_type_network_connection_event` (Envoy's `ConnectionEvent`).
pub mod connection_event {
    pub const CONNECTED: u32 = 2;
}

/// `envoy_dynamic_module_type_transport_socket_post_io_action`.
pub mod post_io_action {
    pub const KEEP_OPEN: u32 = 0;
    pub const CLOSE: u32 = 1;
}

/// `envoy_dynamic_module_type_on_network_filter_data_status`.
pub mod network_status {
    pub const CONTINUE: u32 = 0;
}

/// `envoy_dynamic_module_type_transport_socket_io_result` (`Network::IoResult`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoResult {
    pub action: u32,
    pub bytes_processed: u64,
    pub end_stream_read: bool,
}

impl IoResult {
    pub const fn close(bytes: u64) -> Self {
        Self {
            action: post_io_action::CLOSE,
            bytes_processed: bytes,
            end_stream_read: false,
        }
    }

    pub const fn keep_open(bytes: u64, end_stream_read: bool) -> Self {
        Self {
            action: post_io_action::KEEP_OPEN,
            bytes_processed: bytes,
            end_stream_read,
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_type {
    pub const REQUEST_HEADER: u32 = 0;
    pub const RESPONSE_HEADER: u32 = 2;
}

/// `envoy_dynamic_module_type_http_body_type`.
pub mod body_type {
    pub const RECEIVED_REQUEST: u32 = 0;
    pub const BUFFERED_REQUEST: u32 = 1;
    pub const RECEIVED_RESPONSE: u32 = 2;
    pub const BUFFERED_RESPONSE: u32 = 3;
}

/// Return values of the header hooks (`FilterHeadersStatus`).
pub mod headers_status {
    pub const CONTINUE: u32 = 0;
    pub const STOP_ITERATION: u32 = 1;
}

/// Return values of the body hooks (`FilterDataStatus`).
pub mod body_status {
    pub const CONTINUE: u32 = 0;
    pub const STOP_ITERATION_AND_BUFFER: u32 = 1;
    pub const STOP_ITERATION_AND_WATERMARK: u32 = 2;
}

/// Return values of the trailer hooks (`FilterTrailersStatus`).
pub mod trailers_status {
    pub const CONTINUE: u32 = 0;
    pub const STOP_ITERATION: u32 = 1;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// `envoy_dynamic_module_type_metrics_result` success.
pub const METRICS_SUCCESS: u32 = 0;

macro_rules! callbacks {
    ($( $field:ident : fn($($arg:ty),*) $(-> $ret:ty)? ;)*) => {
        /// Envoy's callbacks, resolved once when the module loads.
        pub struct Api {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        /// The name of every callback the module calls.
        pub const CALLBACKS: &[&str] = &[
            $( concat!("envoy_dynamic_module_callback_", stringify!($field)), )*
        ];

        impl Api {
            /// Callbacks that do nothing and return zero (false, null), for tests that
            /// replace the ones they exercise with fakes.
            #[cfg(test)]
            pub fn stubs() -> Self {
                Self {
                    $( $field: {
                        #[allow(clippy::unused_unit)]
                        unsafe extern "C" fn stub($(_: $arg),*) $(-> $ret)? {
                            // SAFETY: every return type here (bool, integers, pointers, ())
                            // is valid as all-zero bytes.
                            unsafe { std::mem::zeroed() }
                        }
                        stub
                    }, )*
                }
            }

            /// Look every callback up in the process (Envoy's exported symbols).
            /// Err names the first one missing.
            pub fn resolve() -> Result<Self, String> {
                Ok(Self {
                    $( $field: {
                        let name = concat!("envoy_dynamic_module_callback_", stringify!($field), "\0");
                        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
                        // reads the process's symbol tables.
                        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
                        if p.is_null() {
                            return Err(name.trim_end_matches('\0').to_string());
                        }
                        // SAFETY: the symbol is Envoy's callback of this name; its C
                        // signature is the one declared here (see the module docs).
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(p) }
                    }, )*
                })
            }
        }
    };
}

callbacks! {
    log: fn(u32, ModuleBuffer);
    log_enabled: fn(u32) -> bool;
    is_validation_mode: fn() -> bool;
    http_get_header: fn(FilterEnvoyPtr, u32, ModuleBuffer, *mut EnvoyBuffer, usize, *mut usize) -> bool;
    http_set_header: fn(FilterEnvoyPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_get_body_chunks_size: fn(FilterEnvoyPtr, u32) -> usize;
    http_get_body_chunks: fn(FilterEnvoyPtr, u32, *mut EnvoyBuffer) -> bool;
    http_get_body_size: fn(FilterEnvoyPtr, u32) -> usize;
    http_drain_body: fn(FilterEnvoyPtr, u32, usize) -> bool;
    http_append_body: fn(FilterEnvoyPtr, u32, ModuleBuffer) -> bool;
    http_send_response: fn(FilterEnvoyPtr, u32, *mut ModuleHttpHeader, usize, ModuleBuffer, ModuleBuffer);
    http_filter_reset_stream: fn(FilterEnvoyPtr, u32, ModuleBuffer);
    http_filter_continue_encoding: fn(FilterEnvoyPtr);
    http_filter_continue_decoding: fn(FilterEnvoyPtr);
    http_filter_scheduler_new: fn(FilterEnvoyPtr) -> SchedulerPtr;
    http_filter_scheduler_commit: fn(SchedulerPtr, u64);
    http_filter_scheduler_delete: fn(SchedulerPtr);
    http_filter_config_define_counter: fn(ConfigEnvoyPtr, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_increment_counter: fn(FilterEnvoyPtr, usize, *mut ModuleBuffer, usize, u64) -> u32;
    // Transport socket (module/src/tls): argument registers read from the 1.40 binary.
    transport_socket_io_read: fn(SocketEnvoyPtr, *mut c_char, usize, *mut usize) -> u32;
    transport_socket_io_write: fn(SocketEnvoyPtr, *const c_char, usize, *mut usize) -> u32;
    transport_socket_read_buffer_add: fn(SocketEnvoyPtr, *const c_char, usize);
    transport_socket_write_buffer_length: fn(SocketEnvoyPtr) -> usize;
    transport_socket_write_buffer_get_slices: fn(SocketEnvoyPtr, *mut EnvoyBuffer, *mut usize);
    transport_socket_write_buffer_drain: fn(SocketEnvoyPtr, usize);
    transport_socket_raise_event: fn(SocketEnvoyPtr, u32);
    transport_socket_should_drain_read_buffer: fn(SocketEnvoyPtr) -> bool;
    transport_socket_set_is_readable: fn(SocketEnvoyPtr);
    transport_socket_flush_write_buffer: fn(SocketEnvoyPtr);
    transport_socket_get_connection_id: fn(SocketEnvoyPtr, *mut u64) -> bool;
    transport_socket_get_fd: fn(SocketEnvoyPtr) -> i32;
    // Network filter (the `tls_wake` filter): its scheduler and config-level stats.
    network_filter_get_connection_id: fn(FilterEnvoyPtr) -> u64;
    network_filter_scheduler_new: fn(FilterEnvoyPtr) -> SchedulerPtr;
    network_filter_scheduler_commit: fn(SchedulerPtr, u64);
    network_filter_scheduler_delete: fn(SchedulerPtr);
    network_filter_config_define_counter: fn(ConfigEnvoyPtr, ModuleBuffer, *mut usize) -> u32;
    network_filter_config_define_gauge: fn(ConfigEnvoyPtr, ModuleBuffer, *mut usize) -> u32;
    network_filter_config_increment_counter: fn(ConfigEnvoyPtr, usize, u64) -> u32;
    network_filter_config_set_gauge: fn(ConfigEnvoyPtr, usize, u64) -> u32;
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

#[cfg(test)]
static TEST_API: OnceLock<Api> = OnceLock::new();

/// Use `api` instead of Envoy's callbacks from now on (tests with a fake Envoy); the first
/// call wins.
#[cfg(test)]
pub fn install_for_tests(api: impl FnOnce() -> Api) {
    TEST_API.get_or_init(api);
}

/// The resolved callbacks (resolving them on first use).
pub fn api() -> Result<&'static Api, &'static str> {
    #[cfg(test)]
    if let Some(a) = TEST_API.get() {
        return Ok(a);
    }
    API.get_or_init(Api::resolve)
        .as_ref()
        .map_err(|e| e.as_str())
}

/// Log through Envoy's logger (the `dynamic_modules` logger id). Does nothing when the
/// callbacks are not resolved (unit tests).
pub fn log(level: u32, msg: &str) {
    if let Ok(api) = api() {
        // SAFETY: resolved callbacks; the buffer lives for the call.
        unsafe {
            if (api.log_enabled)(level) {
                (api.log)(level, ModuleBuffer::of(msg.as_bytes()));
            }
        }
    }
}

/// Forwards the core library's `tracing` events (target `envoy_qat::...`) to Envoy's log,
/// one line per event at the event's level.
pub struct EnvoyLogWriter {
    level: u32,
    line: Vec<u8>,
}

impl std::io::Write for EnvoyLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EnvoyLogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        if !text.is_empty() {
            log(self.level, &format!("envoy-qat: {text}"));
        }
    }
}

/// The `MakeWriter` for [`EnvoyLogWriter`].
pub struct EnvoyLog;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EnvoyLog {
    type Writer = EnvoyLogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EnvoyLogWriter {
            level: log_level::INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let level = match *meta.level() {
            tracing::Level::ERROR => log_level::ERROR,
            tracing::Level::WARN => log_level::WARN,
            tracing::Level::INFO => log_level::INFO,
            tracing::Level::DEBUG => log_level::DEBUG,
            tracing::Level::TRACE => log_level::TRACE,
        };
        EnvoyLogWriter {
            level,
            line: Vec::new(),
        }
    }
}

/// Install the forwarding subscriber (once; later calls and a host subscriber win).
pub fn install_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(EnvoyLog)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}
