//! `envoy-qat check --envoy-config FILE`: finds every `qat` private key provider and `qatzip`
//! compressor library in an Envoy bootstrap (or any YAML holding Envoy config, such as an Istio
//! EnvoyFilter) and validates them the way Envoy would, with upstream's field names and ranges,
//! plus the placement mistakes users make (the seeds' snippet has two of them).
//!
//! YAML is read with `yaml-rust2` (maintained, pure safe Rust, YAML 1.2; `serde_yaml` is
//! archived) into `serde_json::Value`, the same shape Envoy's own YAML loader produces before it
//! parses the JSON into protos.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use super::Finding;
use crate::key::PrivateKey;

/// `@type` of our private key provider's typed config (upstream-compatible).
pub const QAT_PROVIDER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig";
/// `@type` of the QATzip compressor library's typed config (upstream-compatible).
pub const QATZIP_TYPE: &str =
    "type.googleapis.com/envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip";
/// The provider name Envoy looks the factory up by.
pub const QAT_PROVIDER_NAME: &str = "qat";
/// Smallest poll_delay upstream accepts.
pub const MIN_POLL_DELAY: Duration = Duration::from_millis(1);

const CHECK: &str = "envoy-config";
/// Appended to key-loading errors: what to do when the key file is not where the config says.
const KEY_FIX: &str =
    "mount the key where the DataSource points (e.g. the Secret at /etc/envoy/tls) or fix the path";

/// Converts one YAML node to JSON the way Envoy's loader does (mapping keys become strings).
fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => String::new(),
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Deepest nesting of sequences and mappings [`parse_yaml_docs`] accepts. yaml-rust2 builds a
/// document recursively (stack frames per level), so YAML nested some ten thousand levels
/// deep (`- - - - ...`, 2 bytes a level) overflowed the stack and aborted `envoy-qat check`.
/// Envoy and Istio configs nest a few dozen levels.
pub const MAX_YAML_DEPTH: usize = 256;

/// Walks the parser's events (a loop, no recursion) and refuses nesting beyond
/// [`MAX_YAML_DEPTH`] before the recursive loader runs.
fn check_yaml_depth(text: &str, source: &str) -> Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), mark)) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Err(format!(
                        "{source}: not YAML that Envoy reads: nested more than {MAX_YAML_DEPTH} levels deep (line {})",
                        mark.line()
                    ));
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(e) => return Err(format!("{source}: not YAML: {e}")),
        }
    }
}

/// Parses every document of a YAML text into JSON values; `source` names it in errors.
pub fn parse_yaml_docs(text: &str, source: &str) -> Result<Vec<Value>, String> {
    check_yaml_depth(text, source)?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{source}: not YAML: {e}"))?;
    Ok(docs.iter().map(yaml_to_json).collect())
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("@type").and_then(Value::as_str)
}

fn check_fields(obj: &Map<String, Value>, allowed: &[&str], message: &str) -> Result<(), String> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown field `{k}` in {message} (fields: {})",
                allowed
                    .iter()
                    .filter(|a| !a.starts_with('@'))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Parses a protobuf Duration as Envoy's YAML accepts it: "1.5s" or {seconds, nanos}.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => {
            let unit_err =
                || format!("duration {s:?} must be seconds ending in `s`, e.g. 0.002s for 2 ms");
            if ["ms", "us", "ns", "µs"].iter().any(|u| s.ends_with(u)) {
                return Err(unit_err());
            }
            let num = s.strip_suffix('s').ok_or_else(unit_err)?;
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if int.is_empty() && frac.is_empty()
                || !int.bytes().all(|b| b.is_ascii_digit())
                || !frac.bytes().all(|b| b.is_ascii_digit())
                || frac.len() > 9
            {
                return Err(format!(
                    "duration {s:?} is not seconds with at most 9 decimals, e.g. 0.002s"
                ));
            }
            let secs: u64 = if int.is_empty() {
                0
            } else {
                int.parse()
                    .map_err(|_| format!("duration {s:?}: seconds out of range"))?
            };
            let nanos: u32 = if frac.is_empty() {
                0
            } else {
                format!("{frac:0<9}").parse().unwrap_or(0)
            };
            Ok(Duration::new(secs, nanos))
        }
        Value::Object(o) => {
            check_fields(o, &["seconds", "nanos"], "Duration")?;
            let int = |k: &str| -> Result<i64, String> {
                match o.get(k) {
                    None => Ok(0),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .ok_or_else(|| format!("Duration.{k} {n} is not an integer")),
                    Some(Value::String(s)) => s
                        .parse()
                        .map_err(|_| format!("Duration.{k} {s:?} is not an integer")),
                    Some(other) => Err(format!("Duration.{k} {other} is not an integer")),
                }
            };
            let (secs, nanos) = (int("seconds")?, int("nanos")?);
            if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
                return Err(format!(
                    "Duration {{seconds: {secs}, nanos: {nanos}}} is negative or nanos is out of 0..999999999"
                ));
            }
            Ok(Duration::new(secs as u64, nanos as u32))
        }
        other => Err(format!(
            "duration {other} is neither a string like 0.002s nor {{seconds, nanos}}"
        )),
    }
}

/// Loads the key a DataSource names (filename, inline_string, inline_bytes or
/// environment_variable) with our own key parser; the result says which key type it is.
fn load_data_source_key(ds: &Value) -> Result<PrivateKey, String> {
    let obj = ds
        .as_object()
        .ok_or_else(|| format!("private_key {ds} is not a DataSource mapping"))?;
    check_fields(
        obj,
        &[
            "filename",
            "inline_string",
            "inline_bytes",
            "environment_variable",
            "watched_directory",
        ],
        "private_key (a DataSource)",
    )?;
    let specifiers: Vec<&str> = [
        "filename",
        "inline_string",
        "inline_bytes",
        "environment_variable",
    ]
    .into_iter()
    .filter(|k| obj.contains_key(*k))
    .collect();
    if specifiers.len() != 1 {
        return Err(format!(
            "private_key must set exactly one of filename, inline_string, inline_bytes, environment_variable (has {})",
            if specifiers.is_empty() {
                "none".to_owned()
            } else {
                specifiers.join(" and ")
            }
        ));
    }
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    match specifiers[0] {
        "filename" => {
            let f = s("filename").ok_or("private_key.filename is not a string")?;
            PrivateKey::from_file(f).map_err(|e| e.to_string())
        }
        "inline_string" => {
            let t = s("inline_string").ok_or("private_key.inline_string is not a string")?;
            PrivateKey::from_bytes(t.as_bytes(), "private_key.inline_string")
                .map_err(|e| e.to_string())
        }
        "inline_bytes" => {
            let t = s("inline_bytes").ok_or("private_key.inline_bytes is not a base64 string")?;
            let raw = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .map_err(|e| format!("private_key.inline_bytes is not base64: {e}"))?,
            );
            PrivateKey::from_bytes(&raw, "private_key.inline_bytes").map_err(|e| e.to_string())
        }
        _ => {
            let var = s("environment_variable")
                .ok_or("private_key.environment_variable is not a string")?;
            let val = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                format!("private_key.environment_variable {var} is not set in this environment")
            })?);
            PrivateKey::from_bytes(val.as_bytes(), &format!("environment variable {var}"))
                .map_err(|e| e.to_string())
        }
    }
}

/// Validates a QatPrivateKeyMethodConfig (fields private_key = 1, poll_delay = 2): poll_delay
/// present and ≥ 1 ms, private_key loadable with [`PrivateKey`]. Returns a one-line summary.
pub fn check_qat_provider_config(tc: &Value) -> Result<String, String> {
    let obj = tc
        .as_object()
        .ok_or("QatPrivateKeyMethodConfig is not a mapping")?;
    if let Some(pk) = obj.get("private_key").and_then(Value::as_object) {
        if pk.contains_key("poll_delay") {
            return Err(
                "poll_delay is nested under private_key: move it up one level, beside private_key \
                 (it is a field of QatPrivateKeyMethodConfig, not of the DataSource)"
                    .into(),
            );
        }
    }
    check_fields(
        obj,
        &["@type", "private_key", "poll_delay"],
        "QatPrivateKeyMethodConfig",
    )?;
    let pd = obj
        .get("poll_delay")
        .ok_or("poll_delay is required (at least 1 ms), e.g. poll_delay: 0.002s")?;
    let delay = parse_duration(pd).map_err(|e| format!("poll_delay: {e}"))?;
    if delay < MIN_POLL_DELAY {
        return Err(format!(
            "poll_delay {delay:?} is below the minimum of 1 ms (e.g. poll_delay: 0.002s)"
        ));
    }
    let ds = obj.get("private_key").ok_or(
        "private_key is missing: the provider needs the key (a DataSource such as {filename: ...})",
    )?;
    let key = load_data_source_key(ds).map_err(|e| format!("{e}\n{KEY_FIX}"))?;
    Ok(format!(
        "{} key from {}, poll_delay {delay:?}",
        key.key_type(),
        key.source()
    ))
}

/// Validates a Qatzip compressor config with upstream's ranges: compression_level 1–9,
/// hardware_buffer_size DEFAULT/SZ_4K/…/SZ_512K, input_size_threshold 128–524288,
/// stream_buffer_size 1024–2092032, chunk_size 4096–65536. Returns a one-line summary.
///
/// The one place the compressor config is checked: swap its body for the compressor module's
/// `CompressorConfig::from_proto_json` when that lands.
pub fn check_qatzip_config(tc: &Value) -> Result<String, String> {
    // The compressor's own parser: the same field names, ranges and enum as the running
    // compressor library, so check and Envoy agree on what is valid.
    crate::compress::CompressorConfig::from_proto_json(tc).map_err(|e| e.to_string())?;
    let obj = tc.as_object().ok_or("Qatzip config is not a mapping")?;
    let parts: Vec<String> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "@type")
        .map(|(k, v)| {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Object(m) if m.len() == 1 && m.contains_key("value") => {
                    m["value"].to_string()
                }
                other => other.to_string(),
            };
            format!("{k} {shown}")
        })
        .collect();
    Ok(if parts.is_empty() {
        "defaults".to_owned()
    } else {
        parts.join(", ")
    })
}

/// TlsCertificate-level rules for a `qat` provider: inside a tls_certificates entry next to its
/// certificate_chain, provider_name `qat`, and `fallback: true` paired with a plain private_key.
fn check_tls_certificate(obj: &Map<String, Value>, at: &str) -> Option<Finding> {
    let pkp = obj.get("private_key_provider")?.as_object()?;
    let name = pkp.get("provider_name").and_then(Value::as_str);
    let tc = pkp.get("typed_config");
    let ours = name == Some(QAT_PROVIDER_NAME) || tc.and_then(type_of) == Some(QAT_PROVIDER_TYPE);
    if !ours {
        return None;
    }
    if name != Some(QAT_PROVIDER_NAME) {
        return Some(Finding::fail(
            CHECK,
            format!(
                "{at}: provider_name is {} but the typed config is QatPrivateKeyMethodConfig",
                name.map_or("missing".to_owned(), |n| format!("`{n}`"))
            ),
            "set provider_name: qat",
        ));
    }
    if let Some(tc) = tc {
        if type_of(tc) != Some(QAT_PROVIDER_TYPE) {
            return Some(Finding::fail(
                CHECK,
                format!(
                    "{at}: provider `qat` with typed_config @type {}",
                    type_of(tc).unwrap_or("missing")
                ),
                format!("set \"@type\": {QAT_PROVIDER_TYPE}"),
            ));
        }
    } else {
        return Some(Finding::fail(
            CHECK,
            format!("{at}: provider `qat` without typed_config"),
            "add typed_config with @type QatPrivateKeyMethodConfig, private_key and poll_delay",
        ));
    }
    if obj.contains_key("tls_certificates") || !obj.contains_key("certificate_chain") {
        return Some(Finding::fail(
            CHECK,
            format!(
                "{at}: private_key_provider is not inside a tls_certificates entry{}",
                if obj.contains_key("certificate_chain") {
                    " (certificate_chain and private_key_provider sit beside tls_certificates)"
                } else {
                    " with a certificate_chain"
                }
            ),
            "write them as one list entry: tls_certificates: [{certificate_chain: ..., private_key: ..., private_key_provider: ...}]",
        ));
    }
    let fallback = pkp
        .get("fallback")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let plain_key = obj.contains_key("private_key");
    Some(match (fallback, plain_key) {
        (true, true) => {
            let a = obj.get("private_key").and_then(|k| k.get("filename"));
            let b = tc.and_then(|t| t.get("private_key")).and_then(|k| k.get("filename"));
            if a.is_some() && b.is_some() && a != b {
                Finding::warn(
                    CHECK,
                    format!("{at}: private_key {} differs from the provider's {}", a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)),
                    "point both at the key that matches certificate_chain",
                )
            } else {
                Finding::pass(
                    CHECK,
                    format!("{at}: TLS certificate with the qat provider, fallback to private_key"),
                )
            }
        }
        (true, false) => Finding::fail(
            CHECK,
            format!("{at}: fallback: true but no private_key next to the provider"),
            "add private_key (the same key as the provider's): without it Envoy fails with \
             \"Failed to load incomplete private key\" where QAT is unavailable",
        ),
        (false, _) => Finding::warn(
            CHECK,
            format!("{at}: qat provider without fallback: true"),
            "add fallback: true and private_key so nodes without a usable QAT device still serve TLS",
        ),
    })
}

/// A filter chain whose transport socket is the module's `tls` needs the module's
/// `tls_wake` network filter first in its filters: without it private-key operations
/// cannot resume the handshake asynchronously (the module then does them inline).
fn check_tls_wake(chain: &Value, at: &str) -> Option<Finding> {
    let ts = chain.pointer("/transport_socket/typed_config")?;
    if type_of(ts) != Some(super::module::DYNAMIC_MODULE_TRANSPORT_SOCKET_TYPE)
        || ts.get("transport_socket_name").and_then(Value::as_str) != Some("tls")
    {
        return None;
    }
    let first = chain.pointer("/filters/0/typed_config");
    let is_wake = first.is_some_and(|f| {
        type_of(f) == Some(super::module::DYNAMIC_MODULE_NETWORK_FILTER_TYPE)
            && f.get("filter_name").and_then(Value::as_str) == Some("tls_wake")
    });
    Some(if is_wake {
        Finding::pass(
            CHECK,
            format!("{at}: tls transport socket with tls_wake first in the chain"),
        )
    } else {
        Finding::fail(
            CHECK,
            format!("{at}: tls transport socket without the tls_wake network filter first in filters"),
            "add envoy.filters.network.dynamic_modules with filter_name: tls_wake (same dynamic_module_config) as the chain's first filter",
        )
    })
}

fn walk(v: &Value, at: &str, source: &str, out: &mut Vec<Finding>, found: &mut usize) {
    match v {
        Value::Object(obj) => {
            let here = if at.is_empty() { "(root)" } else { at };
            if let Some(Value::Array(chains)) = obj.get("filter_chains") {
                for (i, chain) in chains.iter().enumerate() {
                    if let Some(f) =
                        check_tls_wake(chain, &format!("{source} {here}.filter_chains[{i}]"))
                    {
                        out.push(f);
                    }
                }
            }
            if obj.contains_key("private_key_provider") {
                if let Some(f) = check_tls_certificate(obj, &format!("{source} {here}")) {
                    out.push(f);
                }
            }
            match type_of(v) {
                Some(QAT_PROVIDER_TYPE) => {
                    *found += 1;
                    out.push(match check_qat_provider_config(v) {
                        Ok(s) => Finding::pass(CHECK, format!("{source} {here}: qat provider: {s}")),
                        Err(e) => {
                            let (msg, fix) = match e.split_once('\n') {
                                Some((m, f)) => (m.to_owned(), f.to_owned()),
                                None => (e, "write QatPrivateKeyMethodConfig as private_key (DataSource) and poll_delay (≥ 1 ms) side by side".to_owned()),
                            };
                            Finding::fail(CHECK, format!("{source} {here}: qat provider: {msg}"), fix)
                        }
                    });
                }
                Some(QATZIP_TYPE) => {
                    *found += 1;
                    out.push(match check_qatzip_config(v) {
                        Ok(s) => Finding::pass(CHECK, format!("{source} {here}: qatzip compressor: {s}")),
                        Err(e) => Finding::fail(
                            CHECK,
                            format!("{source} {here}: qatzip compressor: {e}"),
                            "use upstream's Qatzip fields and ranges (compression_level 1-9, chunk_size 4096-65536, ...)",
                        ),
                    });
                }
                Some(t) if super::module::ModuleKind::of_type(t).is_some() => {
                    *found += 1;
                    let kind = super::module::ModuleKind::of_type(t).expect("checked");
                    out.push(match super::module::check_dynamic_module(v, kind) {
                        Ok(s) => Finding::pass(CHECK, format!("{source} {here}: {s}")),
                        Err(e) => {
                            let (msg, fix) = e
                                .split_once('\n')
                                .unwrap_or((&e, "see README: Stock Envoy, no rebuild"));
                            Finding::fail(CHECK, format!("{source} {here}: {msg}"), fix)
                        }
                    });
                }
                _ => {}
            }
            for (k, child) in obj {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(child, &p, source, out, found);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{at}[{i}]"), source, out, found);
            }
        }
        _ => {}
    }
}

/// Checks every QAT provider and QATzip compressor in a YAML text; `source` names it.
pub fn check_envoy_yaml(text: &str, source: &str, out: &mut Vec<Finding>) {
    let docs = match parse_yaml_docs(text, source) {
        Ok(d) => d,
        Err(e) => {
            out.push(Finding::fail(
                CHECK,
                e,
                "fix the YAML syntax (envoy --mode validate shows the same)",
            ));
            return;
        }
    };
    let mut found = 0;
    for (i, d) in docs.iter().enumerate() {
        let src = if docs.len() > 1 {
            format!("{source}#{i}")
        } else {
            source.to_owned()
        };
        walk(d, "", &src, out, &mut found);
    }
    if found == 0 {
        out.push(Finding::warn(
            CHECK,
            format!("{source}: no qat private key provider, qatzip compressor or dynamic module filter in it"),
            "add one (see envoy-config/envoy/qat-tls-compression.yaml) or drop --envoy-config",
        ));
    }
}

/// Reads FILE and checks it; an unreadable file is a usage error.
pub fn check_envoy_config(path: &Path, out: &mut Vec<Finding>) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--envoy-config {}: {e}", path.display()))?;
    check_envoy_yaml(&text, &path.display().to_string(), out);
    Ok(())
}
