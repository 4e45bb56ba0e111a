//! Provider configuration as users write it: Envoy YAML (bootstraps, Istio EnvoyFilters)
//! through `envoy-qat check`'s reader (`check_envoy_yaml`: YAML -> JSON, every `qat`
//! provider's QatPrivateKeyMethodConfig with its DataSource key and poll_delay Duration,
//! every qatzip config), the same typed configs given as JSON, and the provider options the
//! C ABI hands over (`ProviderConfig` fields, `BackendChoice::parse`, `validate`).
//!
//! Errors (findings) are fine; a panic, hang or stack overflow is a bug.

use envoy_qat::check::envoy::{check_envoy_yaml, check_qat_provider_config, parse_duration};
use envoy_qat::config::{BackendChoice, ProviderConfig};
use std::time::Duration;

/// The fields of the C ABI's `ProviderOptions`, as `engine_from_options` maps them.
#[derive(Debug)]
struct Options {
    poll_delay_ms: u32,
    software_failover: bool,
    ecdsa: bool,
    section_name: String,
    max_in_flight: u32,
    soft_threads: u16,
    qat_max_instances: u16,
    backend: String,
}

impl Options {
    /// 17 bytes of numbers and flags, then `backend` and `section_name` split at the first 0.
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 17 {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let text = String::from_utf8_lossy(&b[17..]);
        let (backend, section) = text.split_once('\0').unwrap_or(("", &text));
        Some(Options {
            poll_delay_ms: u32_at(0),
            max_in_flight: u32_at(4),
            soft_threads: u16_at(8),
            qat_max_instances: u16_at(10),
            software_failover: b[12] & 1 != 0,
            ecdsa: b[12] & 2 != 0,
            backend: backend.to_owned(),
            section_name: section.to_owned(),
        })
    }
}

fn options(o: Options) {
    let defaults = ProviderConfig::default();
    let cfg = ProviderConfig {
        backend: BackendChoice::parse(&o.backend).unwrap_or_default(),
        poll_delay: Duration::from_millis(o.poll_delay_ms.into()),
        software_fallback: o.software_failover,
        max_in_flight: if o.max_in_flight == 0 {
            defaults.max_in_flight
        } else {
            o.max_in_flight as usize
        },
        qat_section: if o.section_name.is_empty() {
            defaults.qat_section.clone()
        } else {
            o.section_name
        },
        qat_ecdsa: o.ecdsa,
        soft_threads: o.soft_threads.into(),
        qat_max_instances: o.qat_max_instances.into(),
        ..defaults
    };
    if cfg.validate().is_ok() {
        // What validate accepts must be usable by the engine and qatlib.
        assert!(!cfg.qat_section.is_empty() && cfg.qat_section.len() <= 64);
        assert!(cfg.max_in_flight >= 1);
        let q = cfg.qat_config();
        assert_eq!(q.section, cfg.qat_section);
    }
}

/// Paths that could block or never end when `check` reads a DataSource filename (a real
/// file read is what the check does; the fuzzer must not wander into devices).
fn names_a_device(text: &[u8]) -> bool {
    [&b"/dev"[..], b"/proc", b"/sys", b"/run"]
        .iter()
        .any(|p| text.windows(p.len()).any(|w| w == *p))
}

/// One fuzz input: panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if names_a_device(rest) {
                return;
            }
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let mut out = Vec::new();
            check_envoy_yaml(text, "fuzz.yaml", &mut out);
            assert!(!out.is_empty(), "check_envoy_yaml reported nothing");
        }
        1 => {
            if names_a_device(rest) {
                return;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            let _ = check_qat_provider_config(&v);
            if let Ok(d) = parse_duration(&v) {
                // Formatting it back as seconds must parse to the same duration.
                let s = format!("{}.{:09}s", d.as_secs(), d.subsec_nanos());
                assert_eq!(parse_duration(&serde_json::Value::String(s)), Ok(d));
            }
        }
        _ => {
            if let Some(o) = Options::decode(rest) {
                options(o);
            }
        }
    }
}
