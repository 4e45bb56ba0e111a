//! Every signature scheme × key type × key format: sign with envoy-qat's engine on the
//! software backend, verify with the openssl CLI. Raw RSA decrypt against openssl.

mod common;

use std::sync::Arc;

use common::{keyset, openssl, openssl_verify, Kind};
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::engine::{Engine, EngineError};
use envoy_qat::key::{KeyFormat, KeyType, PrivateKey};
use envoy_qat::scheme::{Operation, SchemeError, SignatureScheme};

fn soft_engine() -> Engine {
    ProviderConfig {
        backend: BackendChoice::Soft,
        soft_threads: 2,
        ..ProviderConfig::default()
    }
    .build_engine()
    .expect("software engine")
}

fn expected_type(kind: Kind) -> KeyType {
    match kind {
        Kind::Rsa(bits) => KeyType::Rsa {
            bits: bits as usize,
        },
        Kind::P256 => KeyType::EcP256,
        Kind::P384 => KeyType::EcP384,
    }
}

#[test]
fn every_scheme_key_type_and_format_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let engine = soft_engine();
    let msg: Vec<u8> = (0..777u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut verified = 0;
    for kind in Kind::ALL {
        let set = keyset(dir.path(), kind);
        for (format, path) in set.formats() {
            let key = Arc::new(
                PrivateKey::from_file(path).unwrap_or_else(|e| panic!("{format} {kind:?}: {e}")),
            );
            assert_eq!(key.key_type(), expected_type(kind), "{format}");
            let want_format = match (format, kind) {
                ("pkcs8-pem" | "pkcs8-der", _) => KeyFormat::Pkcs8,
                (_, Kind::Rsa(_)) => KeyFormat::Pkcs1,
                _ => KeyFormat::Sec1,
            };
            assert_eq!(key.format(), want_format, "{format} {kind:?}");
            for scheme in SignatureScheme::ALL {
                let op = Operation::Sign(scheme);
                if !scheme.fits(key.key_type()) {
                    let err = engine.submit(&key, op, &msg).unwrap_err();
                    assert!(
                        matches!(err, EngineError::Scheme(SchemeError::KeyMismatch { .. })),
                        "{scheme} on {kind:?}: {err}"
                    );
                    assert!(err.to_string().contains("needs"), "{err}");
                    continue;
                }
                let sig = engine
                    .submit(&key, op, &msg)
                    .and_then(|p| p.wait())
                    .unwrap_or_else(|e| panic!("{scheme} {format} {kind:?}: {e}"));
                openssl_verify(dir.path(), &set.public_pem, scheme.name(), &msg, &sig)
                    .unwrap_or_else(|e| {
                        panic!("openssl rejects {scheme} by {format} {kind:?}: {e}")
                    });
                // A tampered message must not verify: the check can fail.
                let mut other = msg.clone();
                other[0] ^= 1;
                assert!(
                    openssl_verify(dir.path(), &set.public_pem, scheme.name(), &other, &sig)
                        .is_err(),
                    "{scheme}: openssl accepted a signature over another message"
                );
                verified += 1;
            }
        }
    }
    // 3 RSA sizes × 4 formats × 8 RSA schemes + 2 curves × 4 formats × 3 ECDSA schemes.
    assert_eq!(verified, 3 * 4 * 8 + 2 * 4 * 3);
}

#[test]
fn raw_rsa_decrypt_matches_openssl_no_padding() {
    let dir = tempfile::tempdir().unwrap();
    let engine = soft_engine();
    for kind in [Kind::Rsa(2048), Kind::Rsa(3072), Kind::Rsa(4096)] {
        let set = keyset(dir.path(), kind);
        let key = Arc::new(PrivateKey::from_file(&set.trad_pem).unwrap());
        // A TLS 1.2 RSA key exchange: a 48-byte premaster secret, PKCS#1 v1.5 encrypted.
        let pms = dir.path().join("pms");
        std::fs::write(&pms, [0x03u8; 48]).unwrap();
        let ct = dir.path().join("ct");
        let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        openssl(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            &s(&set.public_pem),
            "-in",
            &s(&pms),
            "-out",
            &s(&ct),
            "-pkeyopt",
            "rsa_padding_mode:pkcs1",
        ]);
        let ciphertext = std::fs::read(&ct).unwrap();
        let ours = engine
            .submit(&key, Operation::Decrypt, &ciphertext)
            .and_then(|p| p.wait())
            .unwrap();
        let theirs = openssl(&[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            &s(&set.pkcs8_pem),
            "-in",
            &s(&ct),
            "-pkeyopt",
            "rsa_padding_mode:none",
        ]);
        assert_eq!(ours, theirs, "{kind:?}: raw decrypt differs from openssl");
        // The padding is left in place: 00 02 <nonzero pad> 00 <premaster>.
        assert_eq!(&ours[..2], &[0, 2]);
        assert_eq!(&ours[ours.len() - 48..], &[0x03u8; 48]);
        // A ciphertext of the wrong length is a clear error, not a panic.
        let err = engine
            .submit(&key, Operation::Decrypt, &ciphertext[1..])
            .unwrap_err();
        assert!(err.to_string().contains("ciphertext is"), "{err}");
    }
    // Decrypt with an EC key is a key mismatch.
    let set = keyset(dir.path(), Kind::P256);
    let key = Arc::new(PrivateKey::from_file(&set.pkcs8_pem).unwrap());
    let err = engine
        .submit(&key, Operation::Decrypt, &[0; 32])
        .unwrap_err();
    assert!(err.to_string().contains("needs an RSA key"), "{err}");
}

#[test]
fn pss_and_ecdsa_are_randomised() {
    // PSS salts and ECDSA nonces are fresh per signature: two signatures differ, both verify.
    let dir = tempfile::tempdir().unwrap();
    let engine = soft_engine();
    for (kind, scheme) in [
        (
            Kind::Rsa(2048),
            SignatureScheme::from_name("rsa_pss_rsae_sha256").unwrap(),
        ),
        (
            Kind::P256,
            SignatureScheme::from_name("ecdsa_secp256r1_sha256").unwrap(),
        ),
    ] {
        let set = keyset(dir.path(), kind);
        let key = Arc::new(PrivateKey::from_file(&set.pkcs8_der).unwrap());
        let a = engine
            .submit(&key, Operation::Sign(scheme), b"m")
            .unwrap()
            .wait()
            .unwrap();
        let b = engine
            .submit(&key, Operation::Sign(scheme), b"m")
            .unwrap()
            .wait()
            .unwrap();
        assert_ne!(a, b, "{scheme}: two signatures of one message are equal");
        for sig in [a, b] {
            openssl_verify(dir.path(), &set.public_pem, scheme.name(), b"m", &sig).unwrap();
        }
    }
}
