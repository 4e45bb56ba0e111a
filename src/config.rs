//! Provider settings, validated, with upstream-compatible ranges, and the one place that
//! turns them into an [`Engine`].
//!
//! Upstream's `QatPrivateKeyMethodConfig` has `private_key` (DataSource) and `poll_delay`
//! (Duration, at least 1 ms in upstream's validation). Everything else here is ours, with
//! defaults that keep upstream's behaviour.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{self, Backend};
use crate::engine::{Engine, EngineConfig, PollPolicy};

/// Shortest `poll_delay` upstream accepts.
pub const MIN_POLL_DELAY: Duration = Duration::from_millis(1);
/// Upstream's default `poll_delay` when the field is unset.
pub const DEFAULT_POLL_DELAY: Duration = Duration::from_millis(5);

/// Which backend performs private-key operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// QAT when a device and qatlib are usable, else software.
    #[default]
    Auto,
    /// QAT only (unavailable without a device).
    Qat,
    /// Software (rsa / p256 / p384 crates).
    Soft,
    /// No crypto at all: for measuring the engine's own overhead.
    Noop,
}

impl BackendChoice {
    /// Parse "auto", "qat", "soft", "noop".
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "qat" => Ok(BackendChoice::Qat),
            "soft" | "software" => Ok(BackendChoice::Soft),
            "noop" => Ok(BackendChoice::Noop),
            _ => Err(ConfigError::new(
                "backend",
                format!("\"{s}\" is not one of auto, qat, soft, noop"),
            )),
        }
    }
}

/// Private-key provider settings.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Backend choice.
    pub backend: BackendChoice,
    /// Longest poll interval while operations are in flight (upstream `poll_delay`).
    pub poll_delay: Duration,
    /// Poll policy (ours; upstream always sleeps `poll_delay`).
    pub poll_policy: PollPolicy,
    /// Redo an operation in software when the QAT backend refuses or fails it.
    pub software_fallback: bool,
    /// Software worker threads (0 = one per CPU).
    pub soft_threads: usize,
    /// Most operations in flight at once.
    pub max_in_flight: usize,
    /// Directory of libqat.so.4 / libusdm.so.0 (else $ENVOY_QAT_LIB_DIR, the system
    /// search path, then the build's dependency directory).
    pub qat_lib_dir: Option<PathBuf>,
    /// Explicit path of libqat.so.4 (else $ENVOY_QAT_LIB).
    pub qat_lib: Option<PathBuf>,
    /// Explicit path of libusdm.so.0 (else $ENVOY_QAT_USDM_LIB, else next to libqat).
    pub usdm_lib: Option<PathBuf>,
    /// qatlib configuration section for `icp_sal_userStart` (default "SSL").
    pub qat_section: String,
    /// Most QAT crypto instances to use (0 = all).
    pub qat_max_instances: usize,
    /// Offload ECDSA to QAT too (upstream offloads RSA only).
    pub qat_ecdsa: bool,
    /// Per-operation deadline on QAT (ours; default 5 s): past it the operation fails
    /// over to software (or fails) and its instance is re-probed.
    pub qat_op_timeout: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            backend: BackendChoice::Auto,
            poll_delay: DEFAULT_POLL_DELAY,
            poll_policy: PollPolicy::Adaptive,
            software_fallback: true,
            soft_threads: 0,
            max_in_flight: 65_536,
            qat_lib_dir: None,
            qat_lib: None,
            usdm_lib: None,
            qat_section: backend::qat::DEFAULT_SECTION.into(),
            qat_max_instances: 0,
            qat_ecdsa: true,
            qat_op_timeout: backend::qat::DEFAULT_OP_TIMEOUT,
        }
    }
}

/// A setting out of range, naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub problem: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config field {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ProviderConfig {
    /// Check every field against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_delay < MIN_POLL_DELAY && self.poll_delay != Duration::ZERO {
            return Err(ConfigError::new(
                "poll_delay",
                format!(
                    "{:?} is below the minimum of 1ms; set it to at least 1ms (or leave it unset for {:?})",
                    self.poll_delay, DEFAULT_POLL_DELAY
                ),
            ));
        }
        if self.poll_delay > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "poll_delay",
                format!(
                    "{:?} is above 1s; every handshake would wait that long",
                    self.poll_delay
                ),
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1 << 20 {
            return Err(ConfigError::new(
                "max_in_flight",
                format!("{} is outside 1..=1048576", self.max_in_flight),
            ));
        }
        if self.qat_section.is_empty()
            || self.qat_section.len() > 64
            || !self
                .qat_section
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::new(
                "qat_section",
                format!(
                    "{:?} is not a qatlib section name: 1-64 letters, digits, '_' or '-' (default \"SSL\")",
                    self.qat_section
                ),
            ));
        }
        if self.qat_max_instances > 1024 {
            return Err(ConfigError::new(
                "qat_max_instances",
                format!("{} is outside 0..=1024 (0 = all)", self.qat_max_instances),
            ));
        }
        if self.qat_op_timeout < Duration::from_millis(10)
            || self.qat_op_timeout > Duration::from_secs(600)
        {
            return Err(ConfigError::new(
                "qat_op_timeout",
                format!(
                    "{:?} is outside 10ms..=600s; it must stay far above the device's latency (default {:?})",
                    self.qat_op_timeout,
                    backend::qat::DEFAULT_OP_TIMEOUT
                ),
            ));
        }
        if self.soft_threads > 1024 {
            return Err(ConfigError::new(
                "soft_threads",
                format!(
                    "{} is outside 0..=1024 (0 = one per CPU)",
                    self.soft_threads
                ),
            ));
        }
        Ok(())
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_in_flight: self.max_in_flight,
            poll_delay: if self.poll_delay.is_zero() {
                DEFAULT_POLL_DELAY
            } else {
                self.poll_delay
            },
            poll_policy: self.poll_policy,
        }
    }

    fn soft(&self) -> Arc<dyn Backend> {
        Arc::new(backend::soft::SoftBackend::new(
            self.soft_threads,
            backend::soft::DEFAULT_QUEUE,
        ))
    }

    /// The QAT backend settings within these settings.
    pub fn qat_config(&self) -> backend::qat::QatConfig {
        backend::qat::QatConfig {
            lib_dir: self.qat_lib_dir.clone(),
            qat_lib: self.qat_lib.clone(),
            usdm_lib: self.usdm_lib.clone(),
            section: self.qat_section.clone(),
            max_instances: self.qat_max_instances,
            ecdsa: self.qat_ecdsa,
            op_timeout: self.qat_op_timeout,
            ..backend::qat::QatConfig::default()
        }
    }

    fn qat(&self) -> Result<backend::qat::QatBackend, String> {
        backend::qat::QatBackend::new(&self.qat_config())
    }

    /// Build the engine these settings describe.
    pub fn build_engine(&self) -> Result<Engine, ConfigError> {
        self.build_engine_with(None)
    }

    /// [`ProviderConfig::build_engine`] with another software backend in place of the
    /// pure-Rust one, both as the `soft` choice and as the per-operation fallback (the
    /// dynamic module passes its BoringSSL backend).
    pub fn build_engine_with(
        &self,
        software: Option<Arc<dyn Backend>>,
    ) -> Result<Engine, ConfigError> {
        self.validate()?;
        let soft = || software.clone().unwrap_or_else(|| self.soft());
        let (primary, fallback): (Arc<dyn Backend>, Option<Arc<dyn Backend>>) = match self.backend {
            BackendChoice::Soft => (soft(), None),
            BackendChoice::Noop => (Arc::new(backend::noop::NoopBackend::new()), None),
            BackendChoice::Auto => match self.qat() {
                Ok(qat) => {
                    tracing::info!(
                        "private-key backend: QAT ({} instances from {}; {}), software fallback {}",
                        qat.instances(),
                        qat.library(),
                        qat.inventory(),
                        if self.software_fallback { "on" } else { "off" }
                    );
                    (Arc::new(qat), self.software_fallback.then(|| soft()))
                }
                Err(reason) => {
                    tracing::info!("private-key backend: software (QAT unavailable: {reason})");
                    (soft(), None)
                }
            },
            BackendChoice::Qat => match self.qat() {
                Ok(qat) => {
                    tracing::info!(
                        "private-key backend: QAT ({} instances from {}; {}), software fallback {}",
                        qat.instances(),
                        qat.library(),
                        qat.inventory(),
                        if self.software_fallback { "on" } else { "off" }
                    );
                    (Arc::new(qat), self.software_fallback.then(|| soft()))
                }
                Err(reason) if self.software_fallback => {
                    tracing::warn!(
                        "QAT backend unavailable: {reason}; every operation runs on the software fallback"
                    );
                    (
                        Arc::new(backend::qat::UnavailableQat::new(reason)),
                        Some(soft()),
                    )
                }
                Err(reason) => {
                    return Err(ConfigError::new(
                        "backend",
                        format!(
                            "qat: QAT backend unavailable: {reason}; use backend auto or soft, or enable software_fallback"
                        ),
                    ))
                }
            },
        };
        Ok(Engine::new(primary, fallback, self.engine_config()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut c = ProviderConfig::default();
        assert!(c.validate().is_ok());
        c.poll_delay = Duration::from_micros(500);
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "poll_delay");
        assert!(e.to_string().contains("at least 1ms"), "{e}");
        c.poll_delay = Duration::from_millis(1);
        c.max_in_flight = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_in_flight");
        assert!(BackendChoice::parse("gpu")
            .unwrap_err()
            .to_string()
            .contains("auto, qat, soft, noop"));
    }
}
