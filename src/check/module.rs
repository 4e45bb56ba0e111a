//! `envoy-qat check --envoy-config FILE` for Envoy dynamic modules: every dynamic-module
//! HTTP filter, network filter and transport socket in the config names a module that
//! exists on Envoy's search path, loads, exports every hook Envoy 1.40 looks up for that
//! kind, and, when it is envoy-qat's module, speaks Envoy 1.40's ABI and accepts the name
//! and config (checked by the module's own code, in the `.so`: for the `tls` socket this
//! reads the certificate and key and checks that they match).

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

/// `@type` of Envoy's dynamic-module HTTP filter config.
pub const DYNAMIC_MODULE_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// `@type` of Envoy's dynamic-module network filter config (the `tls_wake` filter).
pub const DYNAMIC_MODULE_NETWORK_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter";

/// `@type` of Envoy's dynamic-module transport socket config (the `tls` socket).
pub const DYNAMIC_MODULE_TRANSPORT_SOCKET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.dynamic_modules.v3.DynamicModuleTransportSocket";

/// What a dynamic-module config plugs into Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    HttpFilter,
    NetworkFilter,
    TransportSocket,
}

impl ModuleKind {
    /// The kind of a typed config's `@type`, if it is a dynamic-module one.
    pub fn of_type(t: &str) -> Option<Self> {
        match t {
            DYNAMIC_MODULE_FILTER_TYPE => Some(ModuleKind::HttpFilter),
            DYNAMIC_MODULE_NETWORK_FILTER_TYPE => Some(ModuleKind::NetworkFilter),
            DYNAMIC_MODULE_TRANSPORT_SOCKET_TYPE => Some(ModuleKind::TransportSocket),
            _ => None,
        }
    }

    fn name_field(self) -> &'static str {
        match self {
            ModuleKind::TransportSocket => "transport_socket_name",
            _ => "filter_name",
        }
    }

    fn config_field(self) -> &'static str {
        match self {
            ModuleKind::TransportSocket => "transport_socket_config",
            _ => "filter_config",
        }
    }

    fn hooks(self) -> &'static [&'static str] {
        match self {
            ModuleKind::HttpFilter => ENVOY_140_HTTP_HOOKS,
            ModuleKind::NetworkFilter => ENVOY_140_NETWORK_HOOKS,
            ModuleKind::TransportSocket => ENVOY_140_TRANSPORT_SOCKET_HOOKS,
        }
    }

    fn what(self) -> &'static str {
        match self {
            ModuleKind::HttpFilter => "an HTTP filter",
            ModuleKind::NetworkFilter => "a network filter",
            ModuleKind::TransportSocket => "a transport socket",
        }
    }
}

/// The hooks Envoy 1.40.0 requires of a transport-socket module (every
/// `envoy_dynamic_module_on_transport_socket_*` name in its binary).
pub const ENVOY_140_TRANSPORT_SOCKET_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_transport_socket_can_flush_close",
    "envoy_dynamic_module_on_transport_socket_close",
    "envoy_dynamic_module_on_transport_socket_destroy",
    "envoy_dynamic_module_on_transport_socket_do_read",
    "envoy_dynamic_module_on_transport_socket_do_write",
    "envoy_dynamic_module_on_transport_socket_factory_config_destroy",
    "envoy_dynamic_module_on_transport_socket_factory_config_new",
    "envoy_dynamic_module_on_transport_socket_get_failure_reason",
    "envoy_dynamic_module_on_transport_socket_get_protocol",
    "envoy_dynamic_module_on_transport_socket_new",
    "envoy_dynamic_module_on_transport_socket_on_connected",
    "envoy_dynamic_module_on_transport_socket_set_callbacks",
    "envoy_dynamic_module_on_transport_socket_start_secure_transport",
];

/// The network-filter hooks Envoy 1.40.0 requires (the others are optional).
pub const ENVOY_140_NETWORK_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_network_filter_config_new",
    "envoy_dynamic_module_on_network_filter_config_destroy",
    "envoy_dynamic_module_on_network_filter_new",
    "envoy_dynamic_module_on_network_filter_new_connection",
    "envoy_dynamic_module_on_network_filter_read",
    "envoy_dynamic_module_on_network_filter_write",
    "envoy_dynamic_module_on_network_filter_event",
    "envoy_dynamic_module_on_network_filter_destroy",
];

/// The environment variable Envoy finds `lib<name>.so` through.
pub const SEARCH_PATH_ENV: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";

/// The ABI version string of the Envoy release the module is tested with (1.40.0).
pub const ENVOY_ABI_VERSION: &str = "v0.2.0";

/// The hooks Envoy 1.40.0 looks up when it loads an HTTP filter module (the
/// `envoy_dynamic_module_on_http_filter*` names in its binary, plus program init).
pub const ENVOY_140_HTTP_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_config_scheduled",
    "envoy_dynamic_module_on_http_filter_config_http_callout_done",
    "envoy_dynamic_module_on_http_filter_config_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_data",
    "envoy_dynamic_module_on_http_filter_config_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_config_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_per_route_config_new",
    "envoy_dynamic_module_on_http_filter_per_route_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    "envoy_dynamic_module_on_http_filter_local_reply",
];

/// The filter config text Envoy hands the module: a StringValue's or BytesValue's
/// bytes, a Struct's JSON.
fn filter_config_text(fc: Option<&Value>, field: &str) -> Result<Vec<u8>, String> {
    let Some(fc) = fc else {
        return Ok(Vec::new());
    };
    let t = fc.get("@type").and_then(Value::as_str).unwrap_or_default();
    let value = fc.get("value");
    match t.rsplit('/').next().unwrap_or_default() {
        "google.protobuf.StringValue" => Ok(value
            .and_then(Value::as_str)
            .unwrap_or_default()
            .as_bytes()
            .to_vec()),
        "google.protobuf.BytesValue" => base64::engine::general_purpose::STANDARD
            .decode(value.and_then(Value::as_str).unwrap_or_default())
            .map_err(|e| format!("{field}: BytesValue value is not base64: {e}")),
        "google.protobuf.Struct" => Ok(value
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_else(|| b"{}".to_vec())),
        other => Err(format!(
            "{field}: @type {other:?}: use google.protobuf.StringValue (JSON text) or google.protobuf.Struct"
        )),
    }
}

/// Where Envoy would find `lib<name>.so`.
pub fn locate(name: &str) -> Result<PathBuf, String> {
    let file = format!("lib{name}.so");
    match std::env::var_os(SEARCH_PATH_ENV) {
        Some(dir) if !dir.is_empty() => {
            let p = Path::new(&dir).join(&file);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "dynamic module {name:?}: {} does not exist\nput {file} in {} or point {SEARCH_PATH_ENV} at the directory that holds it",
                    p.display(),
                    Path::new(&dir).display()
                ))
            }
        }
        _ => Err(format!(
            "dynamic module {name:?}: {SEARCH_PATH_ENV} is not set, so Envoy cannot find {file}\nset {SEARCH_PATH_ENV} to the directory holding {file} in Envoy's environment (and here)"
        )),
    }
}

/// Check one DynamicModuleFilter typed config. Ok: a one-line summary; Err: the problem,
/// then a newline and the fix.
pub fn check_dynamic_module_filter(tc: &Value) -> Result<String, String> {
    check_dynamic_module(tc, ModuleKind::HttpFilter)
}

/// Check one dynamic-module typed config (HTTP filter, network filter or transport
/// socket). Ok: a one-line summary; Err: the problem, then a newline and the fix.
pub fn check_dynamic_module(tc: &Value, kind: ModuleKind) -> Result<String, String> {
    let dmc = tc.get("dynamic_module_config").ok_or(
        "dynamic module config without dynamic_module_config\nadd dynamic_module_config: {name: <module>}",
    )?;
    let local = dmc
        .pointer("/module/local/filename")
        .and_then(Value::as_str)
        .map(PathBuf::from);
    let name = dmc.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() && local.is_none() {
        return Err("dynamic_module_config has neither name nor module.local.filename\nname the module: lib<name>.so on the search path".into());
    }
    let filter_name = tc
        .get(kind.name_field())
        .and_then(Value::as_str)
        .unwrap_or_default();
    let config =
        filter_config_text(tc.get(kind.config_field()), kind.config_field()).map_err(|e| {
            format!(
                "{e}\nwrite {} as a StringValue holding JSON",
                kind.config_field()
            )
        })?;
    let path = match local {
        Some(p) if p.is_file() => p,
        Some(p) => {
            return Err(format!(
                "dynamic module {}: no such file\ninstall the module there or fix module.local.filename",
                p.display()
            ))
        }
        None => locate(name)?,
    };
    // SAFETY: loading a shared object runs its initialisers. envoy-qat's module has no
    // load-time code (its callbacks are resolved later, in program init, which is not
    // called here); a config names the module Envoy itself would load into its process.
    let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
        format!(
            "dynamic module {}: does not load: {e}\nrebuild it for this platform (cargo build -p envoy-qat-module --release)",
            path.display()
        )
    })?;
    let missing: Vec<&str> = kind
        .hooks()
        .iter()
        .copied()
        .filter(|h| {
            // SAFETY: only the symbol's presence is checked; nothing is called.
            unsafe { lib.get::<*const ()>(h.as_bytes()) }.is_err()
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "dynamic module {}: lacks hooks Envoy 1.40 requires of {}: {}\nbuild the module against Envoy 1.40's ABI",
            path.display(),
            kind.what(),
            missing.join(", ")
        ));
    }
    // SAFETY: the symbol, when present, is envoy-qat's `extern "C" fn() -> *const c_char`
    // returning a static NUL-terminated string.
    let info =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const c_char>(b"envoy_qat_module_info") };
    let Ok(info) = info else {
        return Ok(format!(
            "dynamic module {} ({filter_name}): loads and exports every hook Envoy 1.40 requires of {} (not envoy-qat's module: its config is not checked)",
            path.display(),
            kind.what()
        ));
    };
    // SAFETY: see above: a static NUL-terminated string.
    let info = unsafe { CStr::from_ptr(info()) }
        .to_string_lossy()
        .into_owned();
    let abi = info.rsplit(' ').next().unwrap_or_default();
    if abi != ENVOY_ABI_VERSION {
        return Err(format!(
            "dynamic module {}: {info}, but Envoy 1.40 speaks ABI {ENVOY_ABI_VERSION}\nuse the module built for your Envoy release",
            path.display()
        ));
    }
    type CheckFn = unsafe extern "C" fn(*const u8, usize, *const u8, usize, *mut u8, usize) -> bool;
    // SAFETY: envoy-qat's module exports this function with this signature.
    let check = unsafe { lib.get::<CheckFn>(b"envoy_qat_module_check_config") }
        .map_err(|e| format!("dynamic module {}: {info} without envoy_qat_module_check_config: {e}\nrebuild the module", path.display()))?;
    let mut err = vec![0u8; 1024];
    // SAFETY: both inputs are live slices; `err` has err.len() writable bytes.
    let ok = unsafe {
        check(
            filter_name.as_ptr(),
            filter_name.len(),
            config.as_ptr(),
            config.len(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if !ok {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        return Err(format!(
            "envoy-qat module {filter_name:?}: {}\nfix the {} (README: \"Stock Envoy, no rebuild\" lists the fields and ranges)",
            String::from_utf8_lossy(&err[..end]),
            kind.config_field()
        ));
    }
    Ok(format!(
        "{info} at {} ({filter_name}): loads, exports every hook Envoy 1.40 requires of {}, config valid",
        path.display(),
        kind.what()
    ))
}
