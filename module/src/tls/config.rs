//! The `tls` transport socket's config: JSON whose names follow Envoy's
//! `DownstreamTlsContext` where Envoy has the field (`common_tls_context.tls_certificates`,
//! `alpn_protocols`, `tls_params`, `session_ticket_keys`, `disable_session_ticket`), plus
//! `key_provider` for where private-key operations run. Unknown fields and bad values are
//! errors naming the field; a file that cannot be read names the file.

use std::path::PathBuf;
use std::time::Duration;

use envoy_qat::config::{BackendChoice, ProviderConfig};
use serde_json::{Map, Value};

use crate::config::{boolean, err, parse_object, uint, ConfigError};

/// Envoy's `DataSource`: a file (re-read when it changes) or inline PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    File(PathBuf),
    Inline(Vec<u8>),
}

impl DataSource {
    /// The bytes, or an error naming `field` and the file.
    pub fn read(&self, field: &str) -> Result<Vec<u8>, ConfigError> {
        match self {
            DataSource::Inline(b) => Ok(b.clone()),
            DataSource::File(p) => std::fs::read(p).map_err(|e| {
                err(
                    field,
                    format!(
                        "cannot read {}: {e}; check the path and permissions",
                        p.display()
                    ),
                )
            }),
        }
    }

    /// The file's modification time and size (None for inline data).
    pub fn stamp(&self) -> Option<(std::time::SystemTime, u64)> {
        match self {
            DataSource::File(p) => std::fs::metadata(p)
                .ok()
                .and_then(|m| m.modified().ok().map(|t| (t, m.len()))),
            DataSource::Inline(_) => None,
        }
    }
}

/// Where private-key operations run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// BoringSSL inside the module holds the key and signs inline on Envoy's worker,
    /// as Envoy's own TLS does: the baseline for measuring.
    Boring,
    /// Our asynchronous engine: QAT when usable (`backend`), BoringSSL on the module's
    /// threads otherwise and as the per-operation failover.
    Engine,
}

/// TLS protocol versions (Envoy's `TlsParameters.TlsProtocol` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

#[derive(Clone, Debug)]
pub struct TlsSocketConfig {
    pub cert_chain: DataSource,
    pub private_key: DataSource,
    pub alpn: Vec<Vec<u8>>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// OpenSSL cipher list for TLS 1.2 and below (Envoy's default when empty).
    pub cipher_suites: Vec<String>,
    pub ecdh_curves: Vec<String>,
    pub signature_algorithms: Vec<String>,
    /// Envoy's 80-byte session ticket keys (name 16, HMAC 32, AES 32); the first encrypts.
    pub ticket_keys: Vec<DataSource>,
    pub disable_session_ticket: bool,
    pub key_mode: KeyMode,
    /// The engine's settings (key_mode engine).
    pub provider: ProviderConfig,
    /// How often (at most) the certificate and key files are checked for changes.
    pub reload_interval: Duration,
}

/// Envoy's default TLS 1.2 cipher list for servers (`DownstreamTlsContext`).
pub const ENVOY_DEFAULT_CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Envoy's default curves for servers.
pub const ENVOY_DEFAULT_CURVES: &[&str] = &["X25519", "P-256"];

fn object<'a>(field: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object()
        .ok_or_else(|| err(field, format!("{v}: expected an object")))
}

fn strings(field: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let a = v
        .as_array()
        .ok_or_else(|| err(field, format!("{v}: expected a list of strings")))?;
    a.iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| err(field, format!("{s}: expected a string")))
        })
        .collect()
}

fn string<'a>(field: &str, v: &'a Value) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| err(field, format!("{v}: expected a string")))
}

fn data_source(field: &str, v: &Value) -> Result<DataSource, ConfigError> {
    let m = object(field, v)?;
    if m.len() != 1 {
        return Err(err(
            field,
            "expected exactly one of filename, inline_string, inline_bytes",
        ));
    }
    let (k, val) = m.iter().next().expect("one entry");
    let sub = format!("{field}.{k}");
    match k.as_str() {
        "filename" => {
            let p = string(&sub, val)?;
            if p.is_empty() {
                return Err(err(&sub, "empty path"));
            }
            Ok(DataSource::File(PathBuf::from(p)))
        }
        "inline_string" => Ok(DataSource::Inline(string(&sub, val)?.as_bytes().to_vec())),
        "inline_bytes" => {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD
                .decode(string(&sub, val)?)
                .map_err(|e| err(&sub, format!("not base64: {e}")))?;
            Ok(DataSource::Inline(b))
        }
        "environment_variable" => Err(err(
            &sub,
            "not supported by the module; use filename or inline_string",
        )),
        _ => Err(err(
            &sub,
            "unknown field; expected filename, inline_string or inline_bytes",
        )),
    }
}

fn version(field: &str, v: &Value, default: TlsVersion) -> Result<TlsVersion, ConfigError> {
    Ok(match string(field, v)? {
        "TLS_AUTO" => default,
        "TLSv1_0" => TlsVersion::V1_0,
        "TLSv1_1" => TlsVersion::V1_1,
        "TLSv1_2" => TlsVersion::V1_2,
        "TLSv1_3" => TlsVersion::V1_3,
        other => {
            return Err(err(
                field,
                format!("{other:?} is not one of TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3"),
            ))
        }
    })
}

fn unknown(prefix: &str, k: &str, known: &[&str]) -> ConfigError {
    err(
        &format!("{prefix}{k}"),
        format!("unknown field; known: {}", known.join(", ")),
    )
}

/// Parse a `transport_socket_config`.
pub fn parse(text: &[u8]) -> Result<TlsSocketConfig, ConfigError> {
    let top = parse_object(text)?;
    let mut cert_chain = None;
    let mut private_key = None;
    let mut cfg = TlsSocketConfig {
        cert_chain: DataSource::Inline(Vec::new()),
        private_key: DataSource::Inline(Vec::new()),
        alpn: Vec::new(),
        min_version: TlsVersion::V1_2,
        max_version: TlsVersion::V1_3,
        cipher_suites: Vec::new(),
        ecdh_curves: Vec::new(),
        signature_algorithms: Vec::new(),
        ticket_keys: Vec::new(),
        disable_session_ticket: false,
        key_mode: KeyMode::Engine,
        provider: ProviderConfig::default(),
        reload_interval: Duration::from_secs(1),
    };
    const TOP: &[&str] = &[
        "common_tls_context",
        "session_ticket_keys",
        "disable_session_ticket",
        "key_provider",
    ];
    for (k, v) in &top {
        match k.as_str() {
            "common_tls_context" => {
                const CTX: &[&str] = &["tls_certificates", "alpn_protocols", "tls_params"];
                for (k2, v2) in object(k, v)? {
                    let f = format!("common_tls_context.{k2}");
                    match k2.as_str() {
                        "tls_certificates" => {
                            let list = v2.as_array().ok_or_else(|| err(&f, "expected a list"))?;
                            if list.len() != 1 {
                                return Err(err(
                                    &f,
                                    format!(
                                        "{} certificates: the module takes exactly one per \
                                         transport socket; for several, use one filter chain \
                                         per certificate with filter_chain_match.server_names",
                                        list.len()
                                    ),
                                ));
                            }
                            for (k3, v3) in object(&f, &list[0])? {
                                let f3 = format!("{f}[0].{k3}");
                                match k3.as_str() {
                                    "certificate_chain" => cert_chain = Some(data_source(&f3, v3)?),
                                    "private_key" => private_key = Some(data_source(&f3, v3)?),
                                    _ => {
                                        return Err(unknown(
                                            &format!("{f}[0]."),
                                            k3,
                                            &["certificate_chain", "private_key"],
                                        ))
                                    }
                                }
                            }
                        }
                        "alpn_protocols" => {
                            cfg.alpn = strings(&f, v2)?
                                .into_iter()
                                .map(|p| {
                                    if p.is_empty() || p.len() > 255 {
                                        Err(err(&f, format!("{p:?}: 1 to 255 bytes")))
                                    } else {
                                        Ok(p.into_bytes())
                                    }
                                })
                                .collect::<Result<_, _>>()?;
                        }
                        "tls_params" => {
                            const P: &[&str] = &[
                                "tls_minimum_protocol_version",
                                "tls_maximum_protocol_version",
                                "cipher_suites",
                                "ecdh_curves",
                                "signature_algorithms",
                            ];
                            for (k3, v3) in object(&f, v2)? {
                                let f3 = format!("{f}.{k3}");
                                match k3.as_str() {
                                    "tls_minimum_protocol_version" => {
                                        cfg.min_version = version(&f3, v3, TlsVersion::V1_2)?
                                    }
                                    "tls_maximum_protocol_version" => {
                                        cfg.max_version = version(&f3, v3, TlsVersion::V1_3)?
                                    }
                                    "cipher_suites" => cfg.cipher_suites = strings(&f3, v3)?,
                                    "ecdh_curves" => cfg.ecdh_curves = strings(&f3, v3)?,
                                    "signature_algorithms" => {
                                        cfg.signature_algorithms = strings(&f3, v3)?
                                    }
                                    _ => return Err(unknown(&format!("{f}."), k3, P)),
                                }
                            }
                        }
                        _ => return Err(unknown("common_tls_context.", k2, CTX)),
                    }
                }
            }
            "session_ticket_keys" => {
                for (k2, v2) in object(k, v)? {
                    let f = format!("session_ticket_keys.{k2}");
                    if k2 != "keys" {
                        return Err(unknown("session_ticket_keys.", k2, &["keys"]));
                    }
                    let list = v2.as_array().ok_or_else(|| err(&f, "expected a list"))?;
                    for (i, d) in list.iter().enumerate() {
                        cfg.ticket_keys.push(data_source(&format!("{f}[{i}]"), d)?);
                    }
                }
            }
            "disable_session_ticket" => cfg.disable_session_ticket = boolean(k, v)?,
            "key_provider" => parse_key_provider(object(k, v)?, &mut cfg)?,
            _ => return Err(unknown("", k, TOP)),
        }
    }
    if cfg.min_version > cfg.max_version {
        return Err(err(
            "common_tls_context.tls_params.tls_minimum_protocol_version",
            "is above tls_maximum_protocol_version",
        ));
    }
    if cfg.disable_session_ticket && !cfg.ticket_keys.is_empty() {
        return Err(err(
            "disable_session_ticket",
            "true together with session_ticket_keys; set one of them",
        ));
    }
    cfg.cert_chain = cert_chain.ok_or_else(|| {
        err(
            "common_tls_context.tls_certificates",
            "missing: give one {certificate_chain, private_key}",
        )
    })?;
    cfg.private_key = private_key.ok_or_else(|| {
        err(
            "common_tls_context.tls_certificates[0].private_key",
            "missing: give the certificate's private key (filename or inline_string)",
        )
    })?;
    cfg.provider
        .validate()
        .map_err(|e| err(&format!("key_provider.{}", e.field), e.problem))?;
    Ok(cfg)
}

fn parse_key_provider(
    m: &Map<String, Value>,
    cfg: &mut TlsSocketConfig,
) -> Result<(), ConfigError> {
    const K: &[&str] = &[
        "mode",
        "backend",
        "software_fallback",
        "poll_delay_ms",
        "poll_policy",
        "max_in_flight",
        "qat_op_timeout_ms",
        "qat_section",
        "qat_max_instances",
        "qat_ecdsa",
        "qat_lib",
        "software_threads",
        "reload_interval_ms",
    ];
    for (k, v) in m {
        let f = format!("key_provider.{k}");
        let p = &mut cfg.provider;
        match k.as_str() {
            "mode" => {
                cfg.key_mode = match string(&f, v)? {
                    "engine" => KeyMode::Engine,
                    "boring" => KeyMode::Boring,
                    other => {
                        return Err(err(&f, format!("{other:?} is not one of engine, boring")))
                    }
                }
            }
            "backend" => {
                p.backend = match string(&f, v)? {
                    "auto" => BackendChoice::Auto,
                    "qat" => BackendChoice::Qat,
                    "software" | "soft" => BackendChoice::Soft,
                    other => {
                        return Err(err(
                            &f,
                            format!("{other:?} is not one of auto, qat, software"),
                        ))
                    }
                }
            }
            "software_fallback" => p.software_fallback = boolean(&f, v)?,
            "poll_delay_ms" => p.poll_delay = Duration::from_millis(uint(&f, v, 1, 1000)?),
            // The QAT poll thread's wait between polls, as the `qat` provider's poll_policy:
            // adaptive (spin briefly after activity, batch under load) or fixed (poll_delay).
            "poll_policy" => {
                p.poll_policy = string(&f, v)?.parse().map_err(|e: String| err(&f, e))?
            }
            "max_in_flight" => p.max_in_flight = uint(&f, v, 1, 1 << 20)? as usize,
            "qat_op_timeout_ms" => {
                p.qat_op_timeout = Duration::from_millis(uint(&f, v, 10, 600_000)?)
            }
            "qat_section" => p.qat_section = string(&f, v)?.to_string(),
            "qat_max_instances" => p.qat_max_instances = uint(&f, v, 0, 1024)? as usize,
            "qat_ecdsa" => p.qat_ecdsa = boolean(&f, v)?,
            "qat_lib" => p.qat_lib = Some(PathBuf::from(string(&f, v)?)),
            "software_threads" => p.soft_threads = uint(&f, v, 0, 1024)? as usize,
            "reload_interval_ms" => {
                cfg.reload_interval = Duration::from_millis(uint(&f, v, 0, 3_600_000)?)
            }
            _ => return Err(unknown("key_provider.", k, K)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c.pem"}, "private_key": {"inline_string": "PEM"}}], "alpn_protocols": ["h2", "http/1.1"], "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"}}, "key_provider": {"mode": "boring"}}"#;

    #[test]
    fn parses_envoy_names() {
        let c = parse(OK.as_bytes()).unwrap();
        assert_eq!(c.cert_chain, DataSource::File("/c.pem".into()));
        assert_eq!(c.private_key, DataSource::Inline(b"PEM".to_vec()));
        assert_eq!(c.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(c.min_version, TlsVersion::V1_3);
        assert_eq!(c.max_version, TlsVersion::V1_3);
        assert_eq!(c.key_mode, KeyMode::Boring);
    }

    #[test]
    fn poll_policy_reaches_the_engine_config() {
        use envoy_qat::engine::PollPolicy;
        let with = |policy: &str| {
            let text = OK.replace(
                r#""key_provider": {"mode": "boring"}"#,
                &format!(r#""key_provider": {{"poll_policy": "{policy}"}}"#),
            );
            parse(text.as_bytes()).unwrap().provider.poll_policy
        };
        assert_eq!(with("fixed"), PollPolicy::Fixed);
        assert_eq!(with("adaptive"), PollPolicy::Adaptive);
        assert_eq!(
            parse(OK.as_bytes()).unwrap().provider.poll_policy,
            PollPolicy::Adaptive
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{}", "common_tls_context.tls_certificates"),
            (
                r#"{"common_tls_context": {"tls_certs": []}}"#,
                "common_tls_context.tls_certs",
            ),
            (
                r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c"}}]}}"#,
                "common_tls_context.tls_certificates[0].private_key",
            ),
            (
                r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c"}, "private_key": {"filename": "/k"}}], "tls_params": {"tls_maximum_protocol_version": "TLSv9"}}}"#,
                "common_tls_context.tls_params.tls_maximum_protocol_version",
            ),
            (
                r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c"}, "private_key": {"filename": "/k"}}]}, "key_provider": {"backend": "gpu"}}"#,
                "key_provider.backend",
            ),
            (
                r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c"}, "private_key": {"filename": "/k"}}]}, "key_provider": {"poll_delay_ms": 0}}"#,
                "key_provider.poll_delay_ms",
            ),
            (
                r#"{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/c"}, "private_key": {"filename": "/k"}}]}, "key_provider": {"poll_policy": "busy"}}"#,
                "key_provider.poll_policy",
            ),
            ("[1]", "filter_config"),
        ];
        for (text, field) in cases {
            let e = parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }
}
