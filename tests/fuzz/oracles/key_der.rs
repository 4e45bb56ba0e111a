//! Private keys from DER: the bytes go to `PrivateKey::from_bytes` as DER (forced to start
//! with a SEQUENCE tag so the DER path is taken), and the same DER wrapped in PEM armor under
//! each label the parser knows. Oracle: the DER and PEM forms of one key must agree (both
//! load as the same key type and public key, or both fail).

use envoy_qat::key::PrivateKey;

const LABELS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len() * 4 / 3 + 4);
    for c in der.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                b64.push(B64[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    for line in b64.chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

/// One fuzz input: panics on a bug.
pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut der = Vec::with_capacity(rest.len() + 1);
    if rest.first() != Some(&0x30) {
        der.push(0x30);
    }
    der.extend_from_slice(rest);
    let from_der = PrivateKey::from_bytes(&der, "fuzz-der");
    let label = LABELS[usize::from(sel) % LABELS.len()];
    let from_pem = PrivateKey::from_bytes(&pem(label, &der), "fuzz-pem");
    // The parser reads the DER the same way under every private-key label, but only the
    // generic one is the same input in both forms by definition: agreement is required there.
    // (DER that happens to hold a "-----BEGIN " line is read as PEM by design.)
    let has_armor = der.windows(11).any(|w| w == b"-----BEGIN ");
    if label == "PRIVATE KEY" && !has_armor {
        match (&from_der, &from_pem) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.key_type(), b.key_type());
                assert_eq!(a.public_key_der(), b.public_key_der());
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "DER and PEM(PRIVATE KEY) of the same bytes disagree: der ok={} pem ok={}",
                a.is_ok(),
                b.is_ok()
            ),
        }
    }
    if let Ok(k) = &from_der {
        assert!(!k.public_key_der().is_empty());
    }
}
