//! Property tests over the parsers and encoders that see outside bytes: key loading,
//! scheme preparation (PKCS#1 / PSS encoding), raw RSA decrypt of arbitrary ciphertexts,
//! ECDSA DER encoding, and signature scheme code points.
//!
//! CI runs each property with PROPTEST_CASES (default 1000 here); for a long local run:
//!   PROPTEST_CASES=200000 cargo test --release --test properties

use std::sync::{Arc, OnceLock};

use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::engine::Engine;
use envoy_qat::key::{KeyType, PrivateKey};
use envoy_qat::scheme::{self, Operation, RawOp, SignatureScheme};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn rsa() -> &'static Arc<PrivateKey> {
    static K: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    K.get_or_init(|| Arc::new(PrivateKey::generate(KeyType::Rsa { bits: 2048 }).unwrap()))
}

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        ProviderConfig {
            backend: BackendChoice::Soft,
            soft_threads: 2,
            ..ProviderConfig::default()
        }
        .build_engine()
        .unwrap()
    })
}

fn modulus(key: &PrivateKey) -> Vec<u8> {
    // SubjectPublicKeyInfo -> RSAPublicKey -> n, via the rsa crate's public key parser.
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    rsa::PublicKey::from_public_key_der(&key.public_key_der())
        .unwrap()
        .n()
        .to_be_bytes()
        .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn key_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = PrivateKey::from_bytes(&bytes, "fuzz");
    }

    #[test]
    fn key_parser_never_panics_on_pem(
        label in prop::sample::select(vec!["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "CERTIFICATE", "ENCRYPTED PRIVATE KEY", "X"]),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        headers in any::<bool>(),
    ) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        let mut pem = format!("-----BEGIN {label}-----\n");
        if headers {
            pem += "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n";
        }
        for chunk in b64.as_bytes().chunks(64) {
            pem += std::str::from_utf8(chunk).unwrap();
            pem += "\n";
        }
        pem += &format!("-----END {label}-----\n");
        let _ = PrivateKey::from_bytes(pem.as_bytes(), "fuzz");
    }

    #[test]
    fn rsa_encodings_fit_below_the_modulus(
        msg in proptest::collection::vec(any::<u8>(), 0..4096),
        idx in 0usize..8,
    ) {
        let key = rsa();
        let schemes = SignatureScheme::for_key(key.key_type());
        let s = schemes[idx % schemes.len()];
        let raw = scheme::prepare(key, Operation::Sign(s), &msg).unwrap();
        let RawOp::RsaPrivate(em) = raw else { panic!("RSA scheme gave an ECDSA op") };
        let n = modulus(key);
        prop_assert_eq!(em.len(), n.len());
        prop_assert!(em.as_slice() < n.as_slice(), "encoded message is not below n");
    }

    #[test]
    fn raw_decrypt_of_any_ciphertext_ends_cleanly(ct in proptest::collection::vec(any::<u8>(), 256)) {
        // Values >= n are refused with an error, values < n decrypt; nothing panics or hangs.
        let key = rsa();
        let n = modulus(key);
        let r = engine().submit(key, Operation::Decrypt, &ct).and_then(|p| p.wait());
        if ct.as_slice() < n.as_slice() {
            prop_assert_eq!(r.unwrap().len(), 256);
        } else {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn ecdsa_der_matches_p256(r in any::<[u8; 32]>(), s in any::<[u8; 32]>()) {
        let (Some(rs), Some(ss)) = (
            Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(r.into())),
            Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(s.into())),
        ) else {
            return Ok(());
        };
        let theirs = p256::ecdsa::Signature::from_scalars(rs, ss).unwrap().to_der();
        prop_assert_eq!(scheme::ecdsa_der(&r, &s), theirs.as_bytes().to_vec());
    }

    #[test]
    fn scheme_code_points_round_trip(code in any::<u16>()) {
        if let Some(s) = SignatureScheme::from_code(code) {
            prop_assert_eq!(s.code(), code);
            prop_assert_eq!(SignatureScheme::from_name(s.name()), Some(s));
        }
    }
}
