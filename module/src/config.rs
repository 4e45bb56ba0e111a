//! The module's filter configs: JSON whose field names follow Envoy's compressor and
//! decompressor filters and gzip library, plus upstream Qatzip's fields and `backend`.
//! An empty object means Envoy's defaults. Unknown and out-of-range fields are errors
//! that name the field, and Envoy refuses the config.

use envoy_qat::compress::{CompressBackend, CompressorConfig, HardwareBufferSize};
use serde_json::{Map, Value};

/// Envoy's compressor filter's default `content_type` list (the filter's own list,
/// compared case-insensitively, parameters after `;` ignored).
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
    "application/grpc-web",
    "application/grpc-web+proto",
];

/// `filter_name: compressor`.
#[derive(Clone, Debug)]
pub struct CompressorFilterConfig {
    /// The engine settings (level, window, memory level, chunk, QATzip fields, backend).
    pub engine: CompressorConfig,
    /// Responses with a smaller Content-Length are not compressed (Envoy: 30).
    pub min_content_length: u64,
    /// Lower-cased media types that are compressed.
    pub content_types: Vec<String>,
    pub disable_on_etag_header: bool,
    pub remove_accept_encoding_header: bool,
    pub uncompressible_response_codes: Vec<u32>,
    /// Software backend: chunks at least this big are compressed on the module's worker
    /// threads instead of Envoy's worker (0 = never). QATzip always goes to the workers.
    pub software_async_min_bytes: usize,
}

/// `filter_name: decompressor`.
#[derive(Clone, Debug)]
pub struct DecompressorFilterConfig {
    /// Most decompressed bytes a request body may have (413 beyond).
    pub max_output_bytes: u64,
    /// Most decompressed bytes per compressed byte (413 beyond), checked past 1 MiB.
    pub max_inflate_ratio: u64,
    /// Add `gzip` to the request's Accept-Encoding (Envoy's advertise_accept_encoding).
    pub advertise_accept_encoding: bool,
}

/// A config error: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {:?}: {}", self.field, self.problem)
    }
}

pub(crate) fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

pub(crate) fn parse_object(text: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|_| err("filter_config", "not UTF-8"))?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(err(
            "filter_config",
            format!("expected a JSON object, got {other}"),
        )),
        Err(e) => Err(err("filter_config", format!("invalid JSON: {e}"))),
    }
}

/// Accept a number, a numeric string, or `{"value": N}` (proto3 JSON wrappers).
pub(crate) fn uint(field: &str, v: &Value, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    let inner = match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("value") => &m["value"],
        other => other,
    };
    let n = match inner {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| err(field, format!("{v}: expected a non-negative integer")))?;
    if n < lo || n > hi {
        return Err(err(
            field,
            format!("{n} is out of range: must be between {lo} and {hi}"),
        ));
    }
    Ok(n)
}

pub(crate) fn boolean(field: &str, v: &Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| err(field, format!("{v}: expected true or false")))
}

/// Envoy gzip's `compression_level` enum names, or 1-9.
fn level(v: &Value) -> Result<u32, ConfigError> {
    if let Some(s) = v.as_str() {
        let l = match s {
            "DEFAULT_COMPRESSION" => Some(6),
            "BEST_SPEED" | "COMPRESSION_LEVEL_1" => Some(1),
            "BEST_COMPRESSION" | "COMPRESSION_LEVEL_9" => Some(9),
            _ => s
                .strip_prefix("COMPRESSION_LEVEL_")
                .and_then(|d| d.parse::<u32>().ok())
                .filter(|d| (1..=9).contains(d)),
        };
        if let Some(l) = l {
            return Ok(l);
        }
        if s.trim().parse::<u32>().is_err() {
            return Err(err(
                "compression_level",
                format!("{s:?}: expected 1-9, DEFAULT_COMPRESSION, BEST_SPEED, BEST_COMPRESSION or COMPRESSION_LEVEL_<n>"),
            ));
        }
    }
    Ok(uint("compression_level", v, 1, 9)? as u32)
}

impl CompressorFilterConfig {
    /// Parse the filter config text. `{}` (or empty text) is Envoy's defaults: level 6,
    /// memory level 5, window bits 12, chunk 4096, min_content_length 30.
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let m = parse_object(text)?;
        let mut engine = CompressorConfig {
            compression_level: 6,
            backend: CompressBackend::Auto,
            ..CompressorConfig::default()
        };
        let mut c = Self {
            engine: CompressorConfig::default(),
            min_content_length: 30,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            disable_on_etag_header: false,
            remove_accept_encoding_header: false,
            uncompressible_response_codes: Vec::new(),
            software_async_min_bytes: 0,
        };
        for (k, v) in &m {
            match k.as_str() {
                "compression_level" => engine.compression_level = level(v)?,
                "memory_level" => engine.memory_level = uint(k, v, 1, 9)? as u32,
                "window_bits" => engine.window_bits = uint(k, v, 9, 15)? as u32,
                "chunk_size" => engine.chunk_size = uint(k, v, 4096, 65536)? as u32,
                "hardware_buffer_size" => {
                    engine.hardware_buffer_size = match v {
                        Value::String(s) => HardwareBufferSize::from_name(s),
                        Value::Number(n) => n.as_i64().and_then(|n| {
                            HardwareBufferSize::ALL.into_iter().find(|h| h.number() == n)
                        }),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        err(
                            k,
                            format!("{v}: expected DEFAULT, SZ_4K, SZ_8K, SZ_32K, SZ_64K, SZ_128K or SZ_512K"),
                        )
                    })?
                }
                "input_size_threshold" => {
                    engine.input_size_threshold = uint(k, v, 128, 524_288)? as u32
                }
                "stream_buffer_size" => {
                    engine.stream_buffer_size = uint(k, v, 1024, 2_092_032)? as u32
                }
                "backend" => {
                    engine.backend = match v.as_str() {
                        Some("auto") => CompressBackend::Auto,
                        Some("qatzip") => CompressBackend::Qatzip,
                        Some("software") | Some("soft") => CompressBackend::Software,
                        _ => {
                            return Err(err(
                                k,
                                format!("{v}: expected \"auto\", \"qatzip\" or \"software\""),
                            ))
                        }
                    }
                }
                "min_content_length" => c.min_content_length = uint(k, v, 0, u32::MAX as u64)?,
                "content_type" => {
                    let arr = v
                        .as_array()
                        .ok_or_else(|| err(k, format!("{v}: expected a list of media types")))?;
                    let mut types = Vec::new();
                    for t in arr {
                        let s = t
                            .as_str()
                            .ok_or_else(|| err(k, format!("{t}: expected a string")))?;
                        types.push(s.trim().to_ascii_lowercase());
                    }
                    if !types.is_empty() {
                        c.content_types = types;
                    }
                }
                "disable_on_etag_header" => c.disable_on_etag_header = boolean(k, v)?,
                "remove_accept_encoding_header" => {
                    c.remove_accept_encoding_header = boolean(k, v)?
                }
                "uncompressible_response_codes" => {
                    let arr = v
                        .as_array()
                        .ok_or_else(|| err(k, format!("{v}: expected a list of status codes")))?;
                    for s in arr {
                        c.uncompressible_response_codes
                            .push(uint(k, s, 200, 599)? as u32);
                    }
                }
                "software_async_min_bytes" => {
                    c.software_async_min_bytes = uint(k, v, 0, 1 << 30)? as usize
                }
                other => {
                    return Err(err(
                        other,
                        "unknown field: the compressor takes compression_level, memory_level, \
                         window_bits, chunk_size, min_content_length, content_type, \
                         disable_on_etag_header, remove_accept_encoding_header, \
                         uncompressible_response_codes, hardware_buffer_size, \
                         input_size_threshold, stream_buffer_size, backend, \
                         software_async_min_bytes",
                    ))
                }
            }
        }
        // A 0 min_content_length means Envoy's default, as in Envoy.
        if c.min_content_length == 0 {
            c.min_content_length = 30;
        }
        engine
            .validate()
            .map_err(|e| err(e.field, e.problem.clone()))?;
        c.engine = engine;
        Ok(c)
    }

    /// Whether a Content-Type value is in the list (parameters ignored, case-insensitive).
    pub fn content_type_allowed(&self, value: &[u8]) -> bool {
        let v = String::from_utf8_lossy(value);
        let media = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types.contains(&media)
    }
}

impl DecompressorFilterConfig {
    /// Parse the filter config text; `{}` means 10 MiB of output and a 100:1 ratio (Envoy
    /// gzip decompressor's default `max_inflate_ratio`).
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let m = parse_object(text)?;
        let mut c = Self {
            max_output_bytes: 10 << 20,
            max_inflate_ratio: 100,
            advertise_accept_encoding: false,
        };
        for (k, v) in &m {
            match k.as_str() {
                "max_output_bytes" => c.max_output_bytes = uint(k, v, 1, 1 << 40)?,
                "max_inflate_ratio" => c.max_inflate_ratio = uint(k, v, 1, 10_000)?,
                "advertise_accept_encoding" => c.advertise_accept_encoding = boolean(k, v)?,
                // Envoy gzip decompressor's fields, accepted and range-checked so its
                // configs carry over; the decoder takes any window up to 15 bits and
                // sizes its own output steps.
                "window_bits" => {
                    uint(k, v, 9, 15)?;
                }
                "chunk_size" => {
                    uint(k, v, 4096, 65536)?;
                }
                other => {
                    return Err(err(
                        other,
                        "unknown field: the decompressor takes max_output_bytes, \
                         max_inflate_ratio, advertise_accept_encoding, window_bits, chunk_size",
                    ))
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_envoys_defaults() {
        for text in [&b""[..], b"{}", b"  "] {
            let c = CompressorFilterConfig::parse(text).unwrap();
            assert_eq!(c.engine.compression_level, 6);
            assert_eq!(c.engine.memory_level, 5);
            assert_eq!(c.engine.window_bits, 12);
            assert_eq!(c.engine.chunk_size, 4096);
            assert_eq!(c.min_content_length, 30);
            assert!(c.content_type_allowed(b"text/HTML; charset=utf-8"));
            assert!(!c.content_type_allowed(b"image/png"));
        }
    }

    #[test]
    fn fields_and_errors_name_the_field() {
        let c = CompressorFilterConfig::parse(
            br#"{"compression_level":"BEST_SPEED","memory_level":9,"window_bits":15,
                "content_type":["Text/Plain"],"backend":"software","min_content_length":{"value":"100"}}"#,
        )
        .unwrap();
        assert_eq!(c.engine.compression_level, 1);
        assert_eq!(c.min_content_length, 100);
        assert_eq!(c.engine.backend, CompressBackend::Software);
        assert!(c.content_type_allowed(b"text/plain"));
        assert!(!c.content_type_allowed(b"text/html"));
        for (text, field) in [
            (&br#"{"compresion_level":6}"#[..], "compresion_level"),
            (br#"{"window_bits":16}"#, "window_bits"),
            (br#"{"memory_level":0}"#, "memory_level"),
            (br#"{"backend":"gpu"}"#, "backend"),
            (br#"{"content_type":"text/html"}"#, "content_type"),
            (br#"[1]"#, "filter_config"),
            (br#"{"#, "filter_config"),
        ] {
            let e = CompressorFilterConfig::parse(text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let e = DecompressorFilterConfig::parse(br#"{"max_output":1}"#).unwrap_err();
        assert_eq!(e.field, "max_output");
    }
}
