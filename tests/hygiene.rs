//! Key hygiene: with every log at TRACE level captured during key loading, signing,
//! decrypting and every error path, no key material appears in logs, errors or Debug
//! output. ECDSA nonces are never reused (r values distinct).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{keyset, openssl, Kind};
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::key::{KeyType, PrivateKey};
use envoy_qat::scheme::{Operation, SignatureScheme};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Secret strings of a key as openssl prints them: the hex of each private component
/// (privateExponent, primes, exponents, coefficient, or the EC private scalar).
fn secret_hex(path: &std::path::Path) -> Vec<String> {
    let text = String::from_utf8(openssl(&[
        "pkey",
        "-in",
        path.to_str().unwrap(),
        "-text",
        "-noout",
    ]))
    .unwrap();
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        let header = !line.starts_with(' ')
            || t.ends_with(':')
                && !t.contains(' ')
                && t.chars()
                    .any(|c| c.is_alphabetic() && !c.is_ascii_hexdigit());
        if header {
            if let Some(h) = cur.take() {
                if h.len() >= 32 {
                    out.push(h);
                }
            }
            let name = t.trim_end_matches(':');
            let secret = [
                "privateExponent",
                "prime1",
                "prime2",
                "exponent1",
                "exponent2",
                "coefficient",
                "priv",
            ];
            if secret.contains(&name) {
                cur = Some(String::new());
            }
        } else if let Some(h) = cur.as_mut() {
            h.extend(t.split(':').filter(|x| !x.is_empty()));
        }
    }
    if let Some(h) = cur {
        if h.len() >= 32 {
            out.push(h);
        }
    }
    // Drop openssl's leading 00 sign byte; keep 24 hex digits from the middle as the probe.
    out.into_iter()
        .map(|h| {
            let h = h.trim_start_matches("00").to_owned();
            h[8..32].to_owned()
        })
        .collect()
}

#[test]
fn no_key_material_in_trace_logs_errors_or_debug() {
    let cap = Capture::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let mut probes: Vec<String> = Vec::new();
    let mut pem_lines: Vec<String> = Vec::new();
    let mut text = String::new();
    let engine = ProviderConfig {
        backend: BackendChoice::Soft,
        soft_threads: 1,
        ..ProviderConfig::default()
    }
    .build_engine()
    .unwrap();
    for kind in [Kind::Rsa(2048), Kind::P256, Kind::P384] {
        let set = keyset(dir.path(), kind);
        let found = secret_hex(&set.pkcs8_pem);
        assert!(
            !found.is_empty(),
            "no secret components parsed for {kind:?}"
        );
        probes.extend(found);
        for p in [&set.pkcs8_pem, &set.trad_pem] {
            pem_lines.extend(
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 40)
                    .map(str::to_owned),
            );
        }
        // World-readable: triggers the permission warning path.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&set.pkcs8_pem, std::fs::Permissions::from_mode(0o644)).unwrap();
        for (_, path) in set.formats() {
            let key = Arc::new(PrivateKey::from_file(path).unwrap());
            text += &format!("{key:?}\n");
            for scheme in SignatureScheme::ALL {
                match engine.submit(&key, Operation::Sign(scheme), b"hello") {
                    Ok(p) => {
                        text += &format!("{p:?}\n");
                        text += &format!("{:?}\n", p.wait().map(|s| s.len()));
                    }
                    Err(e) => text += &format!("{e} {e:?}\n"),
                }
            }
            match engine.submit(&key, Operation::Decrypt, &[1u8; 7]) {
                Ok(p) => text += &format!("{p:?}\n"),
                Err(e) => text += &format!("{e} {e:?}\n"),
            }
        }
        // Damaged copies of the key: every error path.
        let der = std::fs::read(&set.pkcs8_der).unwrap();
        for cut in [10, der.len() / 2, der.len() - 1] {
            if let Err(e) = PrivateKey::from_bytes(&der[..cut], "cut") {
                text += &format!("{e} {e:?}\n");
            }
        }
        let pem = std::fs::read_to_string(&set.pkcs8_pem).unwrap();
        let doubled = format!("{pem}{pem}");
        let e = PrivateKey::from_bytes(doubled.as_bytes(), "doubled").unwrap_err();
        text += &format!("{e} {e:?}\n");
        let garbled = pem.replace('A', "*");
        if let Err(e) = PrivateKey::from_bytes(garbled.as_bytes(), "garbled") {
            text += &format!("{e} {e:?}\n");
        }
    }
    let generated = PrivateKey::generate(KeyType::EcP256).unwrap();
    text += &format!("{generated:?}\n");
    drop(_guard);

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("readable by group or others"),
        "the permission warning was not logged; capture is not working:\n{logs}"
    );
    let all = format!("{logs}\n{text}");
    let lower = all.to_lowercase();
    for p in &probes {
        assert!(
            !lower.contains(&p.to_lowercase()),
            "secret component hex {p} leaked"
        );
    }
    for l in &pem_lines {
        assert!(!all.contains(&l[..32]), "a PEM body line leaked");
    }
}

#[test]
fn ecdsa_nonces_are_never_reused() {
    let engine = ProviderConfig {
        backend: BackendChoice::Soft,
        soft_threads: 2,
        ..ProviderConfig::default()
    }
    .build_engine()
    .unwrap();
    for (kt, scheme) in [
        (KeyType::EcP256, "ecdsa_secp256r1_sha256"),
        (KeyType::EcP384, "ecdsa_secp384r1_sha384"),
    ] {
        let key = Arc::new(PrivateKey::generate(kt).unwrap());
        let scheme = SignatureScheme::from_name(scheme).unwrap();
        let pending: Vec<_> = (0..2000)
            .map(|_| {
                engine
                    .submit(&key, Operation::Sign(scheme), b"same message")
                    .unwrap()
            })
            .collect();
        let mut rs: Vec<Vec<u8>> = pending
            .into_iter()
            .map(|p| common::ecdsa_r(&p.wait().unwrap()))
            .collect();
        let n = rs.len();
        rs.sort();
        rs.dedup();
        assert_eq!(rs.len(), n, "{kt}: an ECDSA nonce was reused");
    }
}
