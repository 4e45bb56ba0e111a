//! `envoy-qat serve` as a user runs it: the built binary, real curl over HTTP/2 and
//! HTTP/1.1 with gzip, exit after --requests with the provider's stats printed.

mod common;

use std::process::Command;

use common::serve::Serve;

fn curl(port: &str, version: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            version,
            "--compressed",
            "-w",
            "%{http_version}",
            "-o",
            "-",
            &format!("https://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("curl (Debian package curl) must be installed");
    assert!(
        out.status.success(),
        "curl {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let ver =
        String::from_utf8(body.split_off(body.len() - if version == "--http2" { 1 } else { 3 }))
            .unwrap();
    (ver, body)
}

#[test]
fn serve_answers_h2_and_http1_with_gzip_and_exits_after_requests() {
    let serve = Serve::start(
        &[
            "--key-type",
            "p256",
            "--backend",
            "soft",
            "--response-size",
            "3000",
            "--requests",
            "2",
        ],
        &[],
        &[],
    );
    let port = serve.port.clone();

    let (v2, body2) = curl(&port, "--http2");
    let (v1, body1) = curl(&port, "--http1.1");
    assert_eq!((v2.as_str(), v1.as_str()), ("2", "1.1"));
    assert_eq!(body2.len(), 3000);
    assert_eq!(body1, body2);
    assert!(body2.starts_with(b"envoy-qat serve: line 00000000"));

    let (status, rest) = serve.finish();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("stopped (--requests reached)"), "{rest}");
    assert!(rest.contains("gzip_responses=2"), "{rest}");
    let provider = rest.lines().find(|l| l.starts_with("provider:")).unwrap();
    assert!(provider.contains(" completed_after_retry=2 "), "{provider}");
    assert!(provider.contains(" op_failures=0 "), "{provider}");
}
