//! Compressor settings: upstream Envoy's `Qatzip` proto
//! (`envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip`, fields 1-5 with the
//! same ranges) plus `window_bits` and `memory_level` as Envoy's gzip compressor has them,
//! and the backend choice.

use std::fmt;

use serde_json::Value;

/// The proto type name of upstream's QATzip compressor config.
pub const QATZIP_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip";

/// `Qatzip.HardwareBufferSize`: the QAT request size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HardwareBufferSize {
    /// 64 KiB (upstream maps DEFAULT to QATzip's default, 64 KiB).
    #[default]
    Default,
    Sz4K,
    Sz8K,
    Sz32K,
    Sz64K,
    Sz128K,
    Sz512K,
}

impl HardwareBufferSize {
    /// Every value, in proto number order.
    pub const ALL: [HardwareBufferSize; 7] = [
        Self::Default,
        Self::Sz4K,
        Self::Sz8K,
        Self::Sz32K,
        Self::Sz64K,
        Self::Sz128K,
        Self::Sz512K,
    ];

    /// Size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Self::Default | Self::Sz64K => 64 * 1024,
            Self::Sz4K => 4 * 1024,
            Self::Sz8K => 8 * 1024,
            Self::Sz32K => 32 * 1024,
            Self::Sz128K => 128 * 1024,
            Self::Sz512K => 512 * 1024,
        }
    }

    /// The proto enum name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "DEFAULT",
            Self::Sz4K => "SZ_4K",
            Self::Sz8K => "SZ_8K",
            Self::Sz32K => "SZ_32K",
            Self::Sz64K => "SZ_64K",
            Self::Sz128K => "SZ_128K",
            Self::Sz512K => "SZ_512K",
        }
    }

    /// The proto enum number.
    pub fn number(self) -> i64 {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0) as i64
    }

    /// From the proto enum name or number.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    fn from_number(n: i64) -> Option<Self> {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// Which engine compresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompressBackend {
    /// QATzip when libqatzip loads, else software.
    #[default]
    Auto,
    /// QATzip (its own software fallback included); an error if libqatzip does not load.
    Qatzip,
    /// zlib-rs only.
    Software,
}

impl CompressBackend {
    /// Parse `auto`, `qatzip` or `soft`/`software`.
    pub fn parse(s: &str) -> Result<Self, CompressConfigError> {
        match s {
            "auto" => Ok(Self::Auto),
            "qatzip" | "qat" => Ok(Self::Qatzip),
            "soft" | "software" => Ok(Self::Software),
            _ => Err(CompressConfigError::new(
                "backend",
                format!("{s:?}: expected auto, qatzip or soft"),
            )),
        }
    }
}

/// An invalid compressor setting: names the field and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressConfigError {
    /// The field, with its proto name.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub problem: String,
}

impl CompressConfigError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CompressConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "compressor config {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for CompressConfigError {}

/// Inclusive ranges, as upstream's proto validation rules state them.
pub const COMPRESSION_LEVEL_RANGE: (u32, u32) = (1, 9);
/// `input_size_threshold` range.
pub const INPUT_SIZE_THRESHOLD_RANGE: (u32, u32) = (128, 524_288);
/// `stream_buffer_size` range (2 MiB - 5 KiB at most, QATzip's limit).
pub const STREAM_BUFFER_SIZE_RANGE: (u32, u32) = (1024, 2_092_032);
/// `chunk_size` range.
pub const CHUNK_SIZE_RANGE: (u32, u32) = (4096, 65_536);
/// `window_bits` range (Envoy gzip's).
pub const WINDOW_BITS_RANGE: (u32, u32) = (9, 15);
/// `memory_level` range (Envoy gzip's).
pub const MEMORY_LEVEL_RANGE: (u32, u32) = (1, 9);

/// Compressor settings. Defaults are upstream's where upstream has the field
/// (level 1, threshold 1024, stream buffer 128 KiB, chunk 4096) and Envoy gzip's for
/// window bits (12) and memory level (5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressorConfig {
    /// 1 (fastest) to 9 (smallest). Proto field 1.
    pub compression_level: u32,
    /// QAT request size. Proto field 2.
    pub hardware_buffer_size: HardwareBufferSize,
    /// Inputs smaller than this go to software. Proto field 3.
    pub input_size_threshold: u32,
    /// QATzip stream buffer size. Proto field 4.
    pub stream_buffer_size: u32,
    /// Output chunk size: compressed output grows in steps of this. Proto field 5.
    pub chunk_size: u32,
    /// Deflate window: 2^window_bits bytes (software path; QAT uses a 32 KiB window).
    pub window_bits: u32,
    /// Deflate hash memory, 1 (least) to 9 (software path).
    pub memory_level: u32,
    /// Software backend: most streams of this factory that hold their own deflate state
    /// at once (0 = no limit). Streams beyond it share a per-thread state with a full
    /// flush per call (no dictionary across calls, nothing held between calls), so
    /// memory stays bounded however many streams are open.
    pub max_stream_states: u32,
    /// Which engine compresses.
    pub backend: CompressBackend,
}

impl Default for CompressorConfig {
    fn default() -> Self {
        Self {
            compression_level: 1,
            hardware_buffer_size: HardwareBufferSize::Default,
            input_size_threshold: 1024,
            stream_buffer_size: 128 * 1024,
            chunk_size: 4096,
            window_bits: 12,
            memory_level: 5,
            max_stream_states: 512,
            backend: CompressBackend::Auto,
        }
    }
}

fn check(field: &'static str, v: u32, (lo, hi): (u32, u32)) -> Result<(), CompressConfigError> {
    if v < lo || v > hi {
        Err(CompressConfigError::new(
            field,
            format!("{v} is out of range: must be between {lo} and {hi}"),
        ))
    } else {
        Ok(())
    }
}

impl CompressorConfig {
    /// Check every field against its range.
    pub fn validate(&self) -> Result<(), CompressConfigError> {
        check(
            "compression_level",
            self.compression_level,
            COMPRESSION_LEVEL_RANGE,
        )?;
        check(
            "input_size_threshold",
            self.input_size_threshold,
            INPUT_SIZE_THRESHOLD_RANGE,
        )?;
        check(
            "stream_buffer_size",
            self.stream_buffer_size,
            STREAM_BUFFER_SIZE_RANGE,
        )?;
        check("chunk_size", self.chunk_size, CHUNK_SIZE_RANGE)?;
        check("window_bits", self.window_bits, WINDOW_BITS_RANGE)?;
        check("memory_level", self.memory_level, MEMORY_LEVEL_RANGE)?;
        Ok(())
    }

    /// Read Envoy's proto3 JSON form of the `Qatzip` message (as in a `typed_config`
    /// converted from YAML): snake_case or lowerCamelCase names; numbers, numeric strings
    /// or `{"value": N}` for the wrapped integers; enum names or numbers. An `@type` key,
    /// if present, must name the `Qatzip` message. `window_bits`, `memory_level`,
    /// `max_stream_states` and `backend` are envoy-qat extensions. Unknown fields are errors (Envoy rejects them
    /// too). The result is validated.
    pub fn from_proto_json(v: &Value) -> Result<Self, CompressConfigError> {
        let obj = v.as_object().ok_or_else(|| {
            CompressConfigError::new("typed_config", "expected a JSON/YAML object (a mapping)")
        })?;
        let mut cfg = Self::default();
        for (key, val) in obj {
            match key.as_str() {
                "@type" => {
                    let t = val.as_str().unwrap_or_default();
                    if t != QATZIP_TYPE_URL {
                        return Err(CompressConfigError::new(
                            "@type",
                            format!("{val}: expected \"{QATZIP_TYPE_URL}\""),
                        ));
                    }
                }
                "compression_level" | "compressionLevel" => {
                    cfg.compression_level = wrapped_u32("compression_level", val)?
                }
                "hardware_buffer_size" | "hardwareBufferSize" => {
                    cfg.hardware_buffer_size = hw_enum(val)?
                }
                "input_size_threshold" | "inputSizeThreshold" => {
                    cfg.input_size_threshold = wrapped_u32("input_size_threshold", val)?
                }
                "stream_buffer_size" | "streamBufferSize" => {
                    cfg.stream_buffer_size = wrapped_u32("stream_buffer_size", val)?
                }
                "chunk_size" | "chunkSize" => cfg.chunk_size = wrapped_u32("chunk_size", val)?,
                "window_bits" | "windowBits" => cfg.window_bits = wrapped_u32("window_bits", val)?,
                "memory_level" | "memoryLevel" => {
                    cfg.memory_level = wrapped_u32("memory_level", val)?
                }
                "max_stream_states" | "maxStreamStates" => {
                    cfg.max_stream_states = wrapped_u32("max_stream_states", val)?
                }
                "backend" => {
                    cfg.backend = CompressBackend::parse(val.as_str().unwrap_or_default())?
                }
                other => {
                    return Err(CompressConfigError::new(
                        "typed_config",
                        format!(
                            "unknown field {other:?}: the Qatzip message has compression_level, \
                             hardware_buffer_size, input_size_threshold, stream_buffer_size, \
                             chunk_size (and envoy-qat's window_bits, memory_level, max_stream_states, backend)"
                        ),
                    ))
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn wrapped_u32(field: &'static str, v: &Value) -> Result<u32, CompressConfigError> {
    let inner = match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("value") => &m["value"],
        other => other,
    };
    let n: Option<u64> = match inner {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) => u32::try_from(n)
            .map_err(|_| CompressConfigError::new(field, format!("{n} does not fit in a uint32"))),
        None => Err(CompressConfigError::new(
            field,
            format!("{v}: expected a non-negative integer (or {{\"value\": N}})"),
        )),
    }
}

fn hw_enum(v: &Value) -> Result<HardwareBufferSize, CompressConfigError> {
    let names = || {
        HardwareBufferSize::ALL
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let r = match v {
        Value::String(s) => HardwareBufferSize::from_name(s),
        Value::Number(n) => n.as_i64().and_then(HardwareBufferSize::from_number),
        _ => None,
    };
    r.ok_or_else(|| {
        CompressConfigError::new(
            "hardware_buffer_size",
            format!("{v}: expected one of {} (or 0-6)", names()),
        )
    })
}
