//! Helpers shared by integration tests: key material made by the real openssl CLI and
//! verification of our output with the openssl CLI (never with the crates we sign with).
#![allow(dead_code)]

pub mod echo;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Run openssl with `args`; panic with its stderr if it fails.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (installed by ci/deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run openssl and return whether it succeeded, with stdout and stderr.
pub fn openssl_status(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A key type the tests generate with openssl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rsa(u32),
    P256,
    P384,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Rsa(2048),
        Kind::Rsa(3072),
        Kind::Rsa(4096),
        Kind::P256,
        Kind::P384,
    ];

    pub fn label(self) -> String {
        match self {
            Kind::Rsa(b) => format!("rsa{b}"),
            Kind::P256 => "p256".into(),
            Kind::P384 => "p384".into(),
        }
    }
}

/// Keys of one type in every format we accept, plus the public key, on disk.
pub struct KeySet {
    pub kind: Kind,
    pub dir: PathBuf,
    /// PKCS#8 PEM (BEGIN PRIVATE KEY).
    pub pkcs8_pem: PathBuf,
    /// PKCS#8 DER.
    pub pkcs8_der: PathBuf,
    /// PKCS#1 (RSA) or SEC1 (EC) PEM.
    pub trad_pem: PathBuf,
    /// PKCS#1 (RSA) or SEC1 (EC) DER.
    pub trad_der: PathBuf,
    /// Public key PEM.
    pub public_pem: PathBuf,
}

impl KeySet {
    pub fn formats(&self) -> [(&'static str, &Path); 4] {
        [
            ("pkcs8-pem", &self.pkcs8_pem),
            ("pkcs8-der", &self.pkcs8_der),
            ("traditional-pem", &self.trad_pem),
            ("traditional-der", &self.trad_der),
        ]
    }
}

/// Generate a key with openssl and write it in every format into `dir`.
pub fn keyset(dir: &Path, kind: Kind) -> KeySet {
    let label = kind.label();
    let p = |suffix: &str| dir.join(format!("{label}.{suffix}"));
    let pkcs8_pem = p("pkcs8.pem");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    match kind {
        Kind::Rsa(bits) => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
            "-out",
            &s(&pkcs8_pem),
        ]),
        Kind::P256 | Kind::P384 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            if kind == Kind::P256 {
                "ec_paramgen_curve:P-256"
            } else {
                "ec_paramgen_curve:P-384"
            },
            "-out",
            &s(&pkcs8_pem),
        ]),
    };
    let pkcs8_der = p("pkcs8.der");
    // `openssl pkey -outform DER` writes the traditional form; pkcs8 -topk8 writes PKCS#8.
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &s(&pkcs8_pem),
        "-outform",
        "DER",
        "-out",
        &s(&pkcs8_der),
    ]);
    let trad_pem = p("trad.pem");
    openssl(&[
        "pkey",
        "-in",
        &s(&pkcs8_pem),
        "-traditional",
        "-out",
        &s(&trad_pem),
    ]);
    let trad_der = p("trad.der");
    openssl(&[
        "pkey",
        "-in",
        &s(&pkcs8_pem),
        "-traditional",
        "-outform",
        "DER",
        "-out",
        &s(&trad_der),
    ]);
    let public_pem = p("pub.pem");
    openssl(&[
        "pkey",
        "-in",
        &s(&pkcs8_pem),
        "-pubout",
        "-out",
        &s(&public_pem),
    ]);
    let head = std::fs::read_to_string(&trad_pem).unwrap();
    assert!(
        head.starts_with("-----BEGIN RSA PRIVATE KEY")
            || head.starts_with("-----BEGIN EC PRIVATE KEY"),
        "openssl -traditional wrote {}",
        head.lines().next().unwrap_or("")
    );
    KeySet {
        kind,
        dir: dir.to_owned(),
        pkcs8_pem,
        pkcs8_der,
        trad_pem,
        trad_der,
        public_pem,
    }
}

/// Verify `sig` over `msg` for the TLS scheme `scheme` with the openssl CLI.
/// Returns Err with openssl's complaint if verification fails.
pub fn openssl_verify(
    dir: &Path,
    public_pem: &Path,
    scheme: &str,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let tag = format!("{:x}", fxhash(msg) ^ fxhash(sig));
    let msg_path = dir.join(format!("msg-{tag}"));
    let sig_path = dir.join(format!("sig-{tag}"));
    std::fs::write(&msg_path, msg).unwrap();
    std::fs::write(&sig_path, sig).unwrap();
    let m = msg_path.to_str().unwrap();
    let sg = sig_path.to_str().unwrap();
    let pk = public_pem.to_str().unwrap();
    let result = if scheme == "rsa_pkcs1_md5_sha1" {
        // TLS 1.0/1.1: PKCS#1 v1.5 type 1 padding over MD5(m) || SHA1(m), no DigestInfo.
        let (ok, recovered, err) = openssl_status(&[
            "pkeyutl",
            "-verifyrecover",
            "-pubin",
            "-inkey",
            pk,
            "-in",
            sg,
            "-pkeyopt",
            "rsa_padding_mode:pkcs1",
        ]);
        if !ok {
            Err(err)
        } else {
            let mut want = openssl(&["dgst", "-md5", "-binary", m]);
            want.extend(openssl(&["dgst", "-sha1", "-binary", m]));
            if recovered == want {
                Ok(())
            } else {
                Err(format!(
                    "recovered {} bytes do not equal MD5||SHA1 of the message",
                    recovered.len()
                ))
            }
        }
    } else {
        let hash = scheme.rsplit('_').next().unwrap();
        let mut args = vec![
            "dgst".to_owned(),
            format!("-{hash}"),
            "-verify".into(),
            pk.into(),
        ];
        if scheme.starts_with("rsa_pss") {
            for o in [
                "rsa_padding_mode:pss",
                "rsa_pss_saltlen:digest",
                &format!("rsa_mgf1_md:{hash}"),
            ] {
                args.push("-sigopt".into());
                args.push(o.to_owned());
            }
        }
        args.extend(["-signature".into(), sg.into(), m.into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = openssl_status(&refs);
        if ok && String::from_utf8_lossy(&out).contains("Verified OK") {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out), err))
        }
    };
    let _ = std::fs::remove_file(&msg_path);
    let _ = std::fs::remove_file(&sig_path);
    result
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Path of the envoy-qat binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_envoy-qat"))
}

/// The `r` of a DER ECDSA signature (SEQUENCE { INTEGER r, INTEGER s }), as encoded.
pub fn ecdsa_r(der: &[u8]) -> Vec<u8> {
    let body = if der[1] & 0x80 != 0 {
        &der[3..]
    } else {
        &der[2..]
    };
    assert_eq!(body[0], 0x02, "DER INTEGER r expected");
    body[2..2 + body[1] as usize].to_vec()
}
