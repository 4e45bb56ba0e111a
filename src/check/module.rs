//! `envoy-qat check --envoy-config FILE` for Envoy dynamic modules: every
//! `envoy.filters.http.dynamic_modules` filter in the config names a module that exists on
//! Envoy's search path, loads, exports every hook Envoy 1.40 looks up for an HTTP filter,
//! and, when it is envoy-qat's module, speaks Envoy 1.40's ABI and accepts the filter's
//! `filter_name` and `filter_config` (checked by the module's own parser, in the `.so`).

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

/// `@type` of Envoy's dynamic-module HTTP filter config.
pub const DYNAMIC_MODULE_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

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
fn filter_config_text(fc: Option<&Value>) -> Result<Vec<u8>, String> {
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
            .map_err(|e| format!("filter_config: BytesValue value is not base64: {e}")),
        "google.protobuf.Struct" => Ok(value
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_else(|| b"{}".to_vec())),
        other => Err(format!(
            "filter_config: @type {other:?}: use google.protobuf.StringValue (JSON text) or google.protobuf.Struct"
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
    let dmc = tc.get("dynamic_module_config").ok_or(
        "DynamicModuleFilter without dynamic_module_config\nadd dynamic_module_config: {name: <module>}",
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
        .get("filter_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let config = filter_config_text(tc.get("filter_config"))
        .map_err(|e| format!("{e}\nwrite filter_config as a StringValue holding JSON"))?;
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
    let missing: Vec<&str> = ENVOY_140_HTTP_HOOKS
        .iter()
        .copied()
        .filter(|h| {
            // SAFETY: only the symbol's presence is checked; nothing is called.
            unsafe { lib.get::<*const ()>(h.as_bytes()) }.is_err()
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "dynamic module {}: lacks hooks Envoy 1.40 requires: {}\nbuild the module against Envoy 1.40's ABI",
            path.display(),
            missing.join(", ")
        ));
    }
    // SAFETY: the symbol, when present, is envoy-qat's `extern "C" fn() -> *const c_char`
    // returning a static NUL-terminated string.
    let info =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const c_char>(b"envoy_qat_module_info") };
    let Ok(info) = info else {
        return Ok(format!(
            "dynamic module {} ({filter_name}): loads and exports every hook Envoy 1.40 requires (not envoy-qat's module: its config is not checked)",
            path.display()
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
            "envoy-qat module filter {filter_name:?}: {}\nfix the filter_config (README: \"Stock Envoy, no rebuild\" lists the fields and ranges)",
            String::from_utf8_lossy(&err[..end])
        ));
    }
    Ok(format!(
        "{info} at {} ({filter_name}): loads, exports every hook Envoy 1.40 requires, config valid",
        path.display()
    ))
}
