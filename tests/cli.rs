//! The `envoy-qat` binary: sign and decrypt verified by the openssl CLI, documented exit
//! codes, one-line errors that name the problem, --help everywhere.

mod common;

use std::process::{Command, Output};

use common::{bin, keyset, openssl, openssl_verify, Kind};

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run envoy-qat")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sign_output_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("msg");
    std::fs::write(&msg, b"the quick brown fox").unwrap();
    for (kind, schemes) in [
        (
            Kind::Rsa(2048),
            &[
                "rsa_pkcs1_sha256",
                "rsa_pss_rsae_sha384",
                "rsa_pkcs1_md5_sha1",
            ][..],
        ),
        (Kind::P384, &["ecdsa_secp384r1_sha384", "ecdsa_sha1"][..]),
    ] {
        let set = keyset(dir.path(), kind);
        for scheme in schemes {
            let out = dir.path().join(format!("{scheme}.sig"));
            let o = run(&[
                "sign",
                "--key",
                set.trad_pem.to_str().unwrap(),
                "--scheme",
                scheme,
                "--in",
                msg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{scheme}: {}", stderr(&o));
            let sig = std::fs::read(&out).unwrap();
            openssl_verify(
                dir.path(),
                &set.public_pem,
                scheme,
                b"the quick brown fox",
                &sig,
            )
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        }
    }
    // stdin -> stdout
    let set = keyset(dir.path(), Kind::P256);
    let mut child = Command::new(bin())
        .args([
            "sign",
            "--key",
            set.pkcs8_pem.to_str().unwrap(),
            "--scheme",
            "ecdsa_secp256r1_sha256",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    openssl_verify(
        dir.path(),
        &set.public_pem,
        "ecdsa_secp256r1_sha256",
        b"piped",
        &o.stdout,
    )
    .unwrap();
}

#[test]
fn decrypt_matches_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let set = keyset(dir.path(), Kind::Rsa(2048));
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    std::fs::write(p("pt"), b"premaster").unwrap();
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        set.public_pem.to_str().unwrap(),
        "-in",
        &p("pt"),
        "-out",
        &p("ct"),
    ]);
    let o = run(&[
        "sign",
        "--key",
        set.pkcs8_pem.to_str().unwrap(),
        "--scheme",
        "decrypt",
        "--in",
        &p("ct"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let theirs = openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        set.pkcs8_pem.to_str().unwrap(),
        "-in",
        &p("ct"),
        "-pkeyopt",
        "rsa_padding_mode:none",
    ]);
    assert_eq!(o.stdout, theirs);
}

#[test]
fn exit_codes_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let set = keyset(dir.path(), Kind::P256);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Bad key: 3, names the file and the fix.
    let o = run(&[
        "sign",
        "--key",
        bad.to_str().unwrap(),
        "--scheme",
        "rsa_pkcs1_sha256",
        "--in",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains(bad.to_str().unwrap()) && e.contains("is empty"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    // Scheme that does not fit the key: 3.
    let o = run(&[
        "sign",
        "--key",
        set.pkcs8_pem.to_str().unwrap(),
        "--scheme",
        "rsa_pkcs1_sha256",
        "--in",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs an RSA key"), "{}", stderr(&o));
    // Unknown scheme and bad flags: 2.
    let o = run(&[
        "sign",
        "--key",
        set.pkcs8_pem.to_str().unwrap(),
        "--scheme",
        "ed25519",
        "--in",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ecdsa_secp256r1_sha256"),
        "lists the schemes: {}",
        stderr(&o)
    );
    let o = run(&["sign", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    // Missing input file: 3, names it.
    let o = run(&[
        "sign",
        "--key",
        set.pkcs8_pem.to_str().unwrap(),
        "--scheme",
        "ecdsa_secp256r1_sha256",
        "--in",
        "/nonexistent/msg",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/msg"), "{}", stderr(&o));
    // An unknown poll policy: 2, names the flag, the value and the choices. (serve on an
    // ephemeral port with a time limit, so a policy wrongly accepted fails the
    // assertion instead of hanging.)
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "1",
        "--key-type",
        "p256",
    ];
    for cmd in [&serve[..], &["bench", "--seconds", "1"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--poll-policy", "spin"]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--poll-policy spin: expected adaptive or fixed"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn help_everywhere() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let top = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(top.contains("Exit codes"), "{top}");
    for sub in ["sign", "bench"] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help");
        let h = String::from_utf8_lossy(&o.stdout);
        assert!(
            h.contains("Usage") && h.contains("Exit codes"),
            "{sub}: {h}"
        );
    }
}

#[test]
fn bench_runs_and_prints_ratios() {
    // A short run: figures and the ratio column exist (values are not asserted).
    let o = run(&[
        "bench",
        "--seconds",
        "0.3",
        "--key-types",
        "p256",
        "--concurrency",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ops/s") && out.contains("openssl"), "{out}");
    assert!(out.contains("noop"), "engine overhead line missing: {out}");
}
