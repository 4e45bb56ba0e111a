//! `envoy-qat check`: is this node or pod ready for QAT?
//!
//! Every check yields one or more [`Finding`]s — pass, warn or fail, a one-line detail and,
//! unless it passed, a one-line fix. The node checks read only files (sysfs, /dev, /proc) under
//! roots that tests point at fabricated trees; the library check dlopens qatlib and QATzip; the
//! Envoy config check parses a bootstrap and validates every `qat` private key provider and
//! `qatzip` compressor in it with upstream's ranges.
//!
//! Exit codes of [`run`]: 0 ready (nothing failed), 1 not ready, 2 usage error.

pub mod envoy;
pub mod libs;
pub mod module;
pub mod node;
pub mod probe;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

/// Exit code: every check passed or warned.
pub const EXIT_READY: i32 = 0;
/// Exit code: at least one check failed.
pub const EXIT_NOT_READY: i32 = 1;
/// Exit code: bad flags or unreadable inputs named on the command line.
pub const EXIT_USAGE: i32 = 2;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    /// Lower-case name used in text and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Short stable name of the check, e.g. `memlock` or `envoy-config`.
    pub check: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (absent when the check passed).
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &str, detail: impl Into<String>) -> Self {
        Finding {
            check: check.to_owned(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check: check.to_owned(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check: check.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// All findings of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Only Envoy configs were checked (--config-only): the summary speaks of the config.
    pub config_only: bool,
}

impl Report {
    /// Ready when no check failed (warnings allowed).
    pub fn ready(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fail)
    }

    fn count(&self, s: Status) -> usize {
        self.findings.iter().filter(|f| f.status == s).count()
    }

    /// The report as JSON: `{"ready": bool, "summary": {...}, "checks": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "check": f.check,
                    "status": f.status.as_str(),
                    "detail": f.detail,
                    "fix": f.fix,
                })
            })
            .collect();
        json!({
            "ready": self.ready(),
            "summary": {
                "pass": self.count(Status::Pass),
                "warn": self.count(Status::Warn),
                "fail": self.count(Status::Fail),
            },
            "checks": checks,
        })
    }

    /// The report as aligned text lines, fixes indented under their finding.
    pub fn to_text(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        let mut s = String::new();
        for f in &self.findings {
            let tag = match f.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(s, "{tag}  {:<width$}  {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                let _ = writeln!(s, "      {:<width$}  fix: {fix}", "");
            }
        }
        let (p, w, fl) = (
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
        );
        let (yes, no) = if self.config_only {
            (
                "Envoy config ready for QAT",
                "Envoy config NOT ready for QAT",
            )
        } else {
            ("ready for QAT", "NOT ready for QAT")
        };
        if self.ready() {
            let _ = writeln!(s, "{yes}: {p} passed, {w} warnings");
        } else {
            let _ = writeln!(s, "{no}: {fl} failed, {w} warnings, {p} passed");
        }
        s
    }
}

/// Where the node checks look: the real `/sys`, `/dev` and `/proc`, or a fabricated tree.
#[derive(Clone, Debug)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// Flags of `envoy-qat check`.
#[derive(Args, Debug, Clone, Default)]
pub struct CheckArgs {
    /// Inspect a node or pod filesystem mounted here instead of / (sysfs at ROOT/sys, devices at
    /// ROOT/dev, procfs at ROOT/proc); the per-tree flags below override it.
    #[arg(long, value_name = "ROOT")]
    pub root: Option<PathBuf>,
    /// sysfs root (default /sys).
    #[arg(long, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,
    /// Device root holding vfio/ (default /dev).
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,
    /// procfs root; self/status, self/limits and self/environ are read (default /proc).
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// Also validate every `qat` private key provider and `qatzip` compressor in this Envoy
    /// bootstrap YAML (repeatable). Relative key paths resolve from the current directory, as in Envoy.
    #[arg(long = "envoy-config", value_name = "FILE")]
    pub envoy_config: Vec<PathBuf>,
    /// Only validate the --envoy-config files; skip the node and library checks.
    #[arg(long)]
    pub config_only: bool,
    /// Look for libqat.so.4, libusdm.so.0 and libqatzip.so.3 in this directory first (repeatable;
    /// default: the qatlib/QATzip directory envoy-qat was built against), then the system paths.
    #[arg(long = "lib-dir", value_name = "DIR")]
    pub lib_dirs: Vec<PathBuf>,
    /// Do not fall back to the system library search path.
    #[arg(long)]
    pub no_system_libs: bool,
    /// Also start qatlib (icp_sal_userStart, count crypto instances) and open a hardware-only
    /// QATzip session: the real outcome, which briefly claims the device. Uses this process's
    /// real devices whatever --root says.
    #[arg(long)]
    pub probe: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// The roots the node checks read, after --root and the per-tree overrides.
    pub fn roots(&self) -> Roots {
        let base = self.root.as_deref();
        let pick = |own: &Option<PathBuf>, sub: &str| -> PathBuf {
            match (own, base) {
                (Some(p), _) => p.clone(),
                (None, Some(b)) => b.join(sub),
                (None, None) => Path::new("/").join(sub),
            }
        };
        Roots {
            sys: pick(&self.sysfs_root, "sys"),
            dev: pick(&self.dev_root, "dev"),
            proc: pick(&self.proc_root, "proc"),
        }
    }
}

/// Runs every check the flags ask for; returns the report or a usage error.
pub fn collect(args: &CheckArgs) -> Result<Report, String> {
    let roots = args.roots();
    if let Some(r) = &args.root {
        if !r.is_dir() {
            return Err(format!("--root {}: not a directory", r.display()));
        }
    }
    for (flag, p) in [
        ("--sysfs-root", &args.sysfs_root),
        ("--dev-root", &args.dev_root),
        ("--proc-root", &args.proc_root),
    ] {
        if let Some(p) = p {
            if !p.is_dir() {
                return Err(format!("{flag} {}: not a directory", p.display()));
            }
        }
    }
    let mut findings = Vec::new();
    if !args.config_only {
        node::check_node(&roots, &mut findings);
        let dirs = if args.lib_dirs.is_empty() {
            libs::default_lib_dirs()
        } else {
            args.lib_dirs.clone()
        };
        libs::check_libraries(&dirs, !args.no_system_libs, &mut findings);
        if args.probe {
            probe::probe(&dirs, !args.no_system_libs, &mut findings);
        }
    } else if args.envoy_config.is_empty() {
        return Err("--config-only needs at least one --envoy-config FILE".into());
    }
    for cfg in &args.envoy_config {
        envoy::check_envoy_config(cfg, &mut findings)?;
    }
    Ok(Report {
        findings,
        config_only: args.config_only,
    })
}

/// `envoy-qat check`: prints the report; returns the process exit code (0 ready, 1 not ready,
/// 2 usage error).
pub fn run(args: CheckArgs) -> i32 {
    let report = match collect(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("envoy-qat check: {e}");
            return EXIT_USAGE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        print!("{}", report.to_text());
    }
    if report.ready() {
        EXIT_READY
    } else {
        EXIT_NOT_READY
    }
}
