//! `envoy-qat serve` started as a user starts it: the built binary on an ephemeral port,
//! its first stdout line (the listening address) read, the rest kept for the exit stats.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

pub struct Serve {
    /// None once waited for; a Serve dropped early (a failed assertion) kills it.
    child: Option<Child>,
    out: BufReader<ChildStdout>,
    /// The first line serve printed (listening address, backend).
    pub first: String,
    /// The port it listens on.
    pub port: String,
}

impl Serve {
    /// Start `envoy-qat serve --listen 127.0.0.1:0 ARGS` with `env` set and `env_remove`
    /// unset, and wait for its listening line.
    pub fn start(args: &[&str], env: &[(&str, &OsStr)], env_remove: &[&str]) -> Serve {
        let mut cmd = Command::new(super::bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in env_remove {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("start envoy-qat serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .split("https://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no listening line: {first}"))
            .to_string();
        Serve {
            child: Some(child),
            out,
            first,
            port,
        }
    }

    /// Wait for serve to exit; its status and everything it printed after the first line.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.take().unwrap().wait().unwrap();
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
