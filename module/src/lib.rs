//! envoy-qat as an Envoy dynamic module: gzip response compression (`filter_name:
//! compressor`) and bounded gzip request decompression (`filter_name: decompressor`) for
//! stock Envoy 1.40 (`envoy.filters.http.dynamic_modules`), no rebuild of Envoy needed.
//!
//! Built as `libenvoy_qat_module.so` (`cargo build -p envoy-qat-module --release`), with
//! the core library's compressor and decompressor and without its C++/BoringSSL glue:
//! the module carries no C++ runtime and no second TLS library into Envoy.
//!
//! Every hook runs inside [`guard`]: a panic never crosses into Envoy. A failure before
//! the response headers leave lets the response through uncompressed; after they left
//! saying gzip, the stream is reset, never finished with a corrupt body.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod compressor;
pub mod config;
pub mod decompressor;
pub mod envoy;
pub mod tls;
pub mod worker;

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi::{
    body_status, headers_status, log_level, trailers_status, ConfigEnvoyPtr, EnvoyBuffer,
    FilterEnvoyPtr,
};
use envoy::Stream;

/// A filter config (one per `filter_name` + `filter_config` in Envoy's configuration).
enum FilterConfig {
    Compressor(Arc<compressor::ConfigState>),
    Decompressor(Arc<decompressor::ConfigState>),
}

/// A filter (one per HTTP stream).
enum Filter {
    Compressor(compressor::CompressorFilter),
    Decompressor(Box<decompressor::DecompressorFilter>),
}

/// Run a hook, turning a panic into `on_panic`'s value (and a log line).
pub(crate) fn guard<T>(hook: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            abi::log(
                log_level::ERROR,
                &format!("envoy-qat module: panic in {hook}: {why}"),
            );
            on_panic
        }
    }
}

/// The filter behind a module pointer, and a [`Stream`] for the hook's Envoy pointer.
///
/// # Safety
/// `module` is a pointer returned by `on_http_filter_new` and not yet destroyed;
/// `envoy` is the hook's filter pointer.
unsafe fn filter_and_stream<'a>(
    envoy: FilterEnvoyPtr,
    module: *const c_void,
) -> Option<(&'a mut Filter, Stream)> {
    let api = abi::api().ok()?;
    if module.is_null() {
        return None;
    }
    // SAFETY: per the function's contract, `module` is our live Box<Filter>; Envoy calls
    // a stream's hooks one at a time on its worker thread, so the &mut is unique.
    let f = unsafe { &mut *(module as *mut Filter) };
    // SAFETY: the hook's own filter pointer, used only during the hook.
    let s = unsafe { Stream::new(api, envoy) };
    Some((f, s))
}

/// Called once when Envoy loads the module: resolve every callback, or refuse to load.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard("program_init", std::ptr::null(), || match abi::api() {
        Ok(_) => {
            // Envoy exports tcmalloc's malloc/free: libqatzip must not be deep-bound here.
            envoy_qat::compress::qatzip::disable_deep_bind();
            abi::install_tracing();
            abi::log(
                log_level::INFO,
                &format!(
                    "envoy-qat module {} loaded (ABI {})",
                    env!("CARGO_PKG_VERSION"),
                    abi::ABI_VERSION.to_string_lossy()
                ),
            );
            abi::ABI_VERSION.as_ptr()
        }
        Err(missing) => {
            eprintln!(
                "envoy-qat module: this Envoy does not export {missing}, which the module \
                 needs: use the Envoy release the module was built for (1.40)"
            );
            std::ptr::null()
        }
    })
}

/// # Safety
/// Envoy passes valid buffers for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy_config: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("http_filter_config_new", std::ptr::null(), || {
        let Ok(api) = abi::api() else {
            return std::ptr::null();
        };
        // SAFETY: Envoy's buffers, valid for this call.
        let (name, text) = unsafe { (name.as_slice(), config.as_slice()) };
        let name = String::from_utf8_lossy(name).to_string();
        let made = match name.as_str() {
            "compressor" => config::CompressorFilterConfig::parse(text)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    // SAFETY: we are in config_new with Envoy's config pointer.
                    unsafe { compressor::ConfigState::new(api, envoy_config, c) }
                })
                .map(|c| FilterConfig::Compressor(Arc::new(c))),
            "decompressor" => config::DecompressorFilterConfig::parse(text)
                .map_err(|e| e.to_string())
                .map(|c| {
                    // SAFETY: we are in config_new with Envoy's config pointer.
                    let state = unsafe { decompressor::ConfigState::new(api, envoy_config, c) };
                    FilterConfig::Decompressor(Arc::new(state))
                }),
            other => Err(format!(
                "unknown filter_name {other:?}: the envoy-qat module has \"compressor\" and \"decompressor\""
            )),
        };
        match made {
            Ok(c) => Box::into_raw(Box::new(c)) as *const c_void,
            Err(e) => {
                abi::log(
                    log_level::ERROR,
                    &format!("envoy-qat module: filter {name:?}: bad filter_config: {e}"),
                );
                std::ptr::null()
            }
        }
    })
}

/// # Safety
/// `config` was returned by `on_http_filter_config_new` and is destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guard("http_filter_config_destroy", (), || {
        if !config.is_null() {
            // SAFETY: our Box<FilterConfig>, destroyed once by Envoy.
            drop(unsafe { Box::from_raw(config as *mut FilterConfig) });
        }
    })
}

/// # Safety
/// `config` is a live filter config.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _envoy: FilterEnvoyPtr,
) -> *const c_void {
    guard("http_filter_new", std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        // SAFETY: our live Box<FilterConfig>; only shared references are taken.
        let c = unsafe { &*(config as *const FilterConfig) };
        let f = match c {
            FilterConfig::Compressor(c) => {
                Filter::Compressor(compressor::CompressorFilter::new(c.clone()))
            }
            FilterConfig::Decompressor(c) => {
                Filter::Decompressor(Box::new(decompressor::DecompressorFilter::new(c.clone())))
            }
        };
        Box::into_raw(Box::new(f)) as *const c_void
    })
}

/// # Safety
/// `filter` was returned by `on_http_filter_new` and is destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    guard("http_filter_destroy", (), || {
        if !filter.is_null() {
            // SAFETY: our Box<Filter>, destroyed once by Envoy. A job in flight keeps its
            // own references; its result is dropped and its commit is a no-op.
            drop(unsafe { Box::from_raw(filter as *mut Filter) });
        }
    })
}

/// # Safety
/// Envoy's hook contract (live pointers, the stream's worker thread).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guard("request_headers", headers_status::CONTINUE, || {
        // SAFETY: the hook's pointers.
        match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Compressor(f), s)) => f.on_request_headers(&s),
            Some((Filter::Decompressor(f), s)) => f.on_request_headers(&s, end_of_stream),
            None => headers_status::CONTINUE,
        }
    })
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guard("request_body", body_status::CONTINUE, || {
        // SAFETY: the hook's pointers.
        match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Decompressor(f), s)) => f.on_request_body(&s, end_of_stream),
            _ => body_status::CONTINUE,
        }
    })
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
) -> u32 {
    guard("request_trailers", trailers_status::CONTINUE, || {
        // SAFETY: the hook's pointers.
        match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Decompressor(f), s)) => f.on_request_trailers(&s),
            _ => trailers_status::CONTINUE,
        }
    })
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // A panic here leaves the headers as they are: at worst the response goes out
    // uncompressed (nothing was compressed yet).
    guard("response_headers", headers_status::CONTINUE, || {
        // SAFETY: the hook's pointers.
        match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Compressor(f), s)) => f.on_response_headers(&s, end_of_stream),
            _ => headers_status::CONTINUE,
        }
    })
}

/// After a panic in a body or trailer hook of a compressing stream: reset it.
fn reset_after_panic(envoy: FilterEnvoyPtr, filter: *const c_void) {
    // SAFETY: the hook's pointers (still live: we are inside the hook).
    if let Some((Filter::Compressor(f), s)) = unsafe { filter_and_stream(envoy, filter) } {
        if f.committed() {
            f.fail(&s, "panic while compressing (see the log)");
        }
    }
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guard("response_body", None, || {
        // SAFETY: the hook's pointers.
        Some(match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Compressor(f), s)) => f.on_response_body(&s, end_of_stream),
            _ => body_status::CONTINUE,
        })
    })
    .unwrap_or_else(|| {
        guard("response_body reset", (), || {
            reset_after_panic(envoy, filter)
        });
        body_status::STOP_ITERATION_AND_BUFFER
    })
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
) -> u32 {
    guard("response_trailers", None, || {
        // SAFETY: the hook's pointers.
        Some(match unsafe { filter_and_stream(envoy, filter) } {
            Some((Filter::Compressor(f), s)) => f.on_response_trailers(&s),
            _ => trailers_status::CONTINUE,
        })
    })
    .unwrap_or_else(|| {
        guard("response_trailers reset", (), || {
            reset_after_panic(envoy, filter)
        });
        trailers_status::STOP_ITERATION
    })
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoyPtr,
    filter: *const c_void,
    event_id: u64,
) {
    let ok = guard("scheduled", false, || {
        // SAFETY: the hook's pointers.
        if let Some((Filter::Compressor(f), s)) = unsafe { filter_and_stream(envoy, filter) } {
            f.on_scheduled(&s, event_id);
        }
        true
    });
    if !ok {
        guard("scheduled reset", (), || reset_after_panic(envoy, filter));
    }
}

/// # Safety
/// Envoy's hook contract.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoyPtr,
    _filter: *const c_void,
) {
}

// Hooks Envoy 1.40 requires of every HTTP filter module, unused here.

/// # Safety
/// Unused; never dereferences its arguments.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    abi::log(
        log_level::ERROR,
        "envoy-qat module: per-route configs are not supported; configure the filter per listener",
    );
    std::ptr::null()
}

/// # Safety
/// Unused; never dereferences its argument.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: *const c_void,
) {
}

/// # Safety
/// Unused; never dereferences its arguments.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy_config: ConfigEnvoyPtr,
    _config: *const c_void,
    _event_id: u64,
) {
}

/// Generates no-op hooks (callouts, streams, watermarks) with unused arguments.
macro_rules! noop_hooks {
    ($($name:ident),* $(,)?) => {$(
        /// # Safety
        /// Unused; never dereferences its arguments.
        #[no_mangle]
        pub unsafe extern "C" fn $name(_a: *mut c_void, _b: *const c_void) {}
    )*};
}

noop_hooks!(
    envoy_dynamic_module_on_http_filter_http_callout_done,
    envoy_dynamic_module_on_http_filter_http_stream_headers,
    envoy_dynamic_module_on_http_filter_http_stream_data,
    envoy_dynamic_module_on_http_filter_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_http_stream_complete,
    envoy_dynamic_module_on_http_filter_http_stream_reset,
    envoy_dynamic_module_on_http_filter_config_http_callout_done,
    envoy_dynamic_module_on_http_filter_config_http_stream_headers,
    envoy_dynamic_module_on_http_filter_config_http_stream_data,
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_config_http_stream_complete,
    envoy_dynamic_module_on_http_filter_config_http_stream_reset,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
);

/// # Safety
/// Unused; never dereferences its arguments.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _envoy: FilterEnvoyPtr,
    _filter: *const c_void,
    _code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    0
}

/// Not part of Envoy's ABI: what `envoy-qat check` reads from the `.so` a config names,
/// without initialising the module: "envoy-qat-module <version> abi <ABI version>".
#[no_mangle]
pub extern "C" fn envoy_qat_module_info() -> *const c_char {
    static INFO: &str = concat!(
        "envoy-qat-module ",
        env!("CARGO_PKG_VERSION"),
        " abi v0.2.0\0"
    );
    INFO.as_ptr().cast()
}

/// Not part of Envoy's ABI: `envoy-qat check` validates a filter config with the same
/// parser Envoy's load will use. Returns true when valid; otherwise writes the error
/// (truncated, NUL-terminated) into `err`.
///
/// # Safety
/// `name`/`config` point to `name_len`/`config_len` readable bytes; `err` to `err_len`
/// writable bytes (or is null with `err_len` 0).
#[no_mangle]
pub unsafe extern "C" fn envoy_qat_module_check_config(
    name: *const u8,
    name_len: usize,
    config: *const u8,
    config_len: usize,
    err: *mut u8,
    err_len: usize,
) -> bool {
    guard("check_config", false, || {
        // SAFETY: the caller's buffers, per the contract above.
        let (name, text) = unsafe {
            (
                EnvoyBuffer {
                    ptr: name.cast(),
                    length: name_len,
                }
                .as_slice(),
                EnvoyBuffer {
                    ptr: config.cast(),
                    length: config_len,
                }
                .as_slice(),
            )
        };
        let r = match name {
            b"compressor" => config::CompressorFilterConfig::parse(text).map(|_| ()),
            b"decompressor" => config::DecompressorFilterConfig::parse(text).map(|_| ()),
            b"tls" => tls::factory_from_config(name, text, false, true)
                .map(|_| ())
                .map_err(|e| config::ConfigError {
                    field: "transport_socket_config".into(),
                    problem: e,
                }),
            b"tls_wake" if text.iter().all(u8::is_ascii_whitespace) || text == b"{}" => Ok(()),
            b"tls_wake" => Err(config::ConfigError {
                field: "filter_config".into(),
                problem: "tls_wake takes no config; remove filter_config".into(),
            }),
            other => Err(config::ConfigError {
                field: "filter_name".into(),
                problem: format!(
                    "{:?}: the envoy-qat module has the HTTP filters \"compressor\" and \"decompressor\", the network filter \"tls_wake\" and the transport socket \"tls\"",
                    String::from_utf8_lossy(other)
                ),
            }),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                if !err.is_null() && err_len > 0 {
                    let msg = e.to_string();
                    let n = msg.len().min(err_len - 1);
                    // SAFETY: `err` has err_len writable bytes; n + 1 <= err_len.
                    unsafe {
                        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
                        *err.add(n) = 0;
                    }
                }
                false
            }
        }
    })
}
