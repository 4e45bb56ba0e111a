//! TLS SignatureScheme code points → hash, padding and key type; and the Rust-side
//! preparation that turns a message into the input of a raw private-key operation.
//!
//! BoringSSL hands a private-key method the *message*; we hash it here and, for RSA,
//! apply EMSA-PKCS1-v1_5 (DigestInfo) or EMSA-PSS (salt = hash length, MGF1 with the
//! same hash), so a backend (software or QAT) only performs the raw operation
//! `m^d mod n` or an ECDSA signature over a digest.

use std::fmt;

use digest::Digest;
use zeroize::Zeroizing;

use crate::key::{KeyType, PrivateKey};

/// A hash function used by a signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// MD5 || SHA-1 (36 bytes), TLS 1.0/1.1 RSA signatures; no DigestInfo.
    Md5Sha1,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Md5Sha1 => 36,
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hash `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Md5Sha1 => {
                let mut v = md5::Md5::digest(data).to_vec();
                v.extend_from_slice(&sha1::Sha1::digest(data));
                v
            }
            HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// Hash the concatenation of `parts`.
    fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            HashAlg::Md5Sha1 => {
                let mut v = run::<md5::Md5>(parts);
                v.extend(run::<sha1::Sha1>(parts));
                v
            }
            HashAlg::Sha1 => run::<sha1::Sha1>(parts),
            HashAlg::Sha256 => run::<sha2::Sha256>(parts),
            HashAlg::Sha384 => run::<sha2::Sha384>(parts),
            HashAlg::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// DER DigestInfo prefix (AlgorithmIdentifier with NULL parameters) for EMSA-PKCS1-v1_5.
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Md5Sha1 => &[],
            HashAlg::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// How a signature is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    Pkcs1,
    Pss,
    Ecdsa,
}

/// The TLS SignatureSchemes BoringSSL can ask a private-key method for (RFC 8446 §4.2.3
/// code points; `rsa_pkcs1_md5_sha1` is BoringSSL's private 0xff01 for TLS 1.0/1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    RsaPkcs1Md5Sha1,
    RsaPkcs1Sha1,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    RsaPssRsaeSha256,
    RsaPssRsaeSha384,
    RsaPssRsaeSha512,
    EcdsaSha1,
    EcdsaSecp256r1Sha256,
    EcdsaSecp384r1Sha384,
}

impl SignatureScheme {
    /// Every supported scheme.
    pub const ALL: [SignatureScheme; 11] = [
        SignatureScheme::RsaPkcs1Md5Sha1,
        SignatureScheme::RsaPkcs1Sha1,
        SignatureScheme::RsaPkcs1Sha256,
        SignatureScheme::RsaPkcs1Sha384,
        SignatureScheme::RsaPkcs1Sha512,
        SignatureScheme::RsaPssRsaeSha256,
        SignatureScheme::RsaPssRsaeSha384,
        SignatureScheme::RsaPssRsaeSha512,
        SignatureScheme::EcdsaSha1,
        SignatureScheme::EcdsaSecp256r1Sha256,
        SignatureScheme::EcdsaSecp384r1Sha384,
    ];

    /// The TLS code point.
    pub fn code(self) -> u16 {
        match self {
            SignatureScheme::RsaPkcs1Md5Sha1 => 0xff01,
            SignatureScheme::RsaPkcs1Sha1 => 0x0201,
            SignatureScheme::RsaPkcs1Sha256 => 0x0401,
            SignatureScheme::RsaPkcs1Sha384 => 0x0501,
            SignatureScheme::RsaPkcs1Sha512 => 0x0601,
            SignatureScheme::RsaPssRsaeSha256 => 0x0804,
            SignatureScheme::RsaPssRsaeSha384 => 0x0805,
            SignatureScheme::RsaPssRsaeSha512 => 0x0806,
            SignatureScheme::EcdsaSha1 => 0x0203,
            SignatureScheme::EcdsaSecp256r1Sha256 => 0x0403,
            SignatureScheme::EcdsaSecp384r1Sha384 => 0x0503,
        }
    }

    /// The scheme for a TLS code point, if supported.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The IANA name (as `openssl s_client -sigalgs` accepts it).
    pub fn name(self) -> &'static str {
        match self {
            SignatureScheme::RsaPkcs1Md5Sha1 => "rsa_pkcs1_md5_sha1",
            SignatureScheme::RsaPkcs1Sha1 => "rsa_pkcs1_sha1",
            SignatureScheme::RsaPkcs1Sha256 => "rsa_pkcs1_sha256",
            SignatureScheme::RsaPkcs1Sha384 => "rsa_pkcs1_sha384",
            SignatureScheme::RsaPkcs1Sha512 => "rsa_pkcs1_sha512",
            SignatureScheme::RsaPssRsaeSha256 => "rsa_pss_rsae_sha256",
            SignatureScheme::RsaPssRsaeSha384 => "rsa_pss_rsae_sha384",
            SignatureScheme::RsaPssRsaeSha512 => "rsa_pss_rsae_sha512",
            SignatureScheme::EcdsaSha1 => "ecdsa_sha1",
            SignatureScheme::EcdsaSecp256r1Sha256 => "ecdsa_secp256r1_sha256",
            SignatureScheme::EcdsaSecp384r1Sha384 => "ecdsa_secp384r1_sha384",
        }
    }

    /// The scheme with this IANA name or hex code point ("0x0804").
    pub fn from_name(name: &str) -> Option<Self> {
        if let Some(hex) = name.strip_prefix("0x") {
            return u16::from_str_radix(hex, 16).ok().and_then(Self::from_code);
        }
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Its hash.
    pub fn hash(self) -> HashAlg {
        match self {
            SignatureScheme::RsaPkcs1Md5Sha1 => HashAlg::Md5Sha1,
            SignatureScheme::RsaPkcs1Sha1 | SignatureScheme::EcdsaSha1 => HashAlg::Sha1,
            SignatureScheme::RsaPkcs1Sha256
            | SignatureScheme::RsaPssRsaeSha256
            | SignatureScheme::EcdsaSecp256r1Sha256 => HashAlg::Sha256,
            SignatureScheme::RsaPkcs1Sha384
            | SignatureScheme::RsaPssRsaeSha384
            | SignatureScheme::EcdsaSecp384r1Sha384 => HashAlg::Sha384,
            SignatureScheme::RsaPkcs1Sha512 | SignatureScheme::RsaPssRsaeSha512 => HashAlg::Sha512,
        }
    }

    /// Its padding / signature form.
    pub fn padding(self) -> Padding {
        match self {
            SignatureScheme::RsaPkcs1Md5Sha1
            | SignatureScheme::RsaPkcs1Sha1
            | SignatureScheme::RsaPkcs1Sha256
            | SignatureScheme::RsaPkcs1Sha384
            | SignatureScheme::RsaPkcs1Sha512 => Padding::Pkcs1,
            SignatureScheme::RsaPssRsaeSha256
            | SignatureScheme::RsaPssRsaeSha384
            | SignatureScheme::RsaPssRsaeSha512 => Padding::Pss,
            SignatureScheme::EcdsaSha1
            | SignatureScheme::EcdsaSecp256r1Sha256
            | SignatureScheme::EcdsaSecp384r1Sha384 => Padding::Ecdsa,
        }
    }

    /// Whether a key of this type can make this signature. ECDSA schemes accept either
    /// curve: TLS 1.2 does not bind the curve to the scheme (BoringSSL checks the curve
    /// itself for TLS 1.3), so the hash comes from the scheme and the curve from the key.
    pub fn fits(self, key: KeyType) -> bool {
        match self.padding() {
            Padding::Pkcs1 | Padding::Pss => key.is_rsa(),
            Padding::Ecdsa => !key.is_rsa(),
        }
    }

    /// The schemes a key can make.
    pub fn for_key(key: KeyType) -> Vec<SignatureScheme> {
        Self::ALL.into_iter().filter(|s| s.fits(key)).collect()
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private-key operation as BoringSSL asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sign a message with a scheme.
    Sign(SignatureScheme),
    /// Raw RSA decrypt: `c^d mod n`, padding left in place (BoringSSL removes it).
    Decrypt,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Sign(s) => write!(f, "sign {s}"),
            Operation::Decrypt => f.write_str("rsa decrypt"),
        }
    }
}

/// The raw operation a backend performs.
#[derive(Clone, PartialEq, Eq)]
pub enum RawOp {
    /// `input^d mod n`; `input` is big-endian, exactly the modulus length, and < n.
    RsaPrivate(Zeroizing<Vec<u8>>),
    /// ECDSA over this digest (any length; it is truncated or left-padded to the curve
    /// order's size per SEC 1). The backend returns r || s, each the field size.
    EcdsaSign(Vec<u8>),
}

impl fmt::Debug for RawOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawOp::RsaPrivate(v) => write!(f, "RsaPrivate({} bytes)", v.len()),
            RawOp::EcdsaSign(v) => write!(f, "EcdsaSign({} bytes)", v.len()),
        }
    }
}

/// A request that cannot be served with this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeError {
    /// The scheme needs another key type.
    KeyMismatch { op: Operation, key: KeyType },
    /// The input has the wrong size for the operation.
    BadInput { op: Operation, why: String },
    /// The system random source failed (PSS salt).
    Random(String),
}

impl std::error::Error for SchemeError {}

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemeError::KeyMismatch { op, key } => {
                let need = match op {
                    Operation::Sign(s) if s.padding() == Padding::Ecdsa => "an EC",
                    _ => "an RSA",
                };
                write!(
                    f,
                    "{op} needs {need} key but the key is {key}; offer only the schemes of the key's type"
                )
            }
            SchemeError::BadInput { op, why } => write!(f, "{op}: {why}"),
            SchemeError::Random(e) => write!(f, "system random source failed: {e}"),
        }
    }
}

/// Turn a message (sign) or ciphertext (decrypt) into the raw operation for `key`.
pub fn prepare(key: &PrivateKey, op: Operation, input: &[u8]) -> Result<RawOp, SchemeError> {
    let kt = key.key_type();
    match op {
        Operation::Decrypt => {
            let KeyType::Rsa { bits } = kt else {
                return Err(SchemeError::KeyMismatch { op, key: kt });
            };
            let k = bits.div_ceil(8);
            if input.len() != k {
                return Err(SchemeError::BadInput {
                    op,
                    why: format!("ciphertext is {} bytes, the key needs {k}", input.len()),
                });
            }
            Ok(RawOp::RsaPrivate(Zeroizing::new(input.to_vec())))
        }
        Operation::Sign(scheme) => {
            if !scheme.fits(kt) {
                return Err(SchemeError::KeyMismatch { op, key: kt });
            }
            let hash = scheme.hash();
            let digest = hash.digest(input);
            match (scheme.padding(), kt) {
                (Padding::Ecdsa, _) => Ok(RawOp::EcdsaSign(digest)),
                (Padding::Pkcs1, KeyType::Rsa { bits }) => {
                    emsa_pkcs1_v15(hash, &digest, bits.div_ceil(8)).map(RawOp::RsaPrivate)
                }
                (Padding::Pss, KeyType::Rsa { bits }) => {
                    let mut salt = vec![0u8; hash.output_len()];
                    getrandom::fill(&mut salt).map_err(|e| SchemeError::Random(e.to_string()))?;
                    emsa_pss(hash, &digest, &salt, bits).map(RawOp::RsaPrivate)
                }
                _ => Err(SchemeError::KeyMismatch { op, key: kt }),
            }
        }
    }
}

/// Turn a backend's raw output into what BoringSSL expects: the RSA result as is, or a
/// DER ECDSA-Sig-Value from r || s.
pub fn finish(op: Operation, key: KeyType, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let want = key.raw_output_len();
    if raw.len() != want {
        return Err(format!(
            "backend returned {} bytes for {op} with {key}, expected {want}",
            raw.len()
        ));
    }
    match (op, key) {
        (Operation::Sign(s), KeyType::EcP256 | KeyType::EcP384)
            if s.padding() == Padding::Ecdsa =>
        {
            let (r, s) = raw.split_at(want / 2);
            Ok(ecdsa_der(r, s))
        }
        _ => Ok(raw),
    }
}

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2) for a modulus of `k` bytes.
fn emsa_pkcs1_v15(
    hash: HashAlg,
    digest: &[u8],
    k: usize,
) -> Result<Zeroizing<Vec<u8>>, SchemeError> {
    let prefix = hash.digest_info_prefix();
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return Err(SchemeError::BadInput {
            op: Operation::Sign(SignatureScheme::RsaPkcs1Sha512),
            why: "modulus too short for this hash".into(),
        });
    }
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.push(0x00);
    em.push(0x01);
    em.resize(k - t_len - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(prefix);
    em.extend_from_slice(digest);
    Ok(em)
}

/// MGF1 (RFC 8017 B.2.1) of `len` bytes.
fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut counter: u32 = 0;
    while out.len() < len {
        out.extend(hash.digest_parts(&[seed, &counter.to_be_bytes()]));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with emBits = modBits - 1, left-padded to the
/// modulus length so it can be fed to the raw RSA operation.
fn emsa_pss(
    hash: HashAlg,
    m_hash: &[u8],
    salt: &[u8],
    mod_bits: usize,
) -> Result<Zeroizing<Vec<u8>>, SchemeError> {
    let h_len = hash.output_len();
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    if em_len < h_len + salt.len() + 2 {
        return Err(SchemeError::BadInput {
            op: Operation::Sign(SignatureScheme::RsaPssRsaeSha512),
            why: "modulus too short for PSS with this hash".into(),
        });
    }
    let h = hash.digest_parts(&[&[0u8; 8], m_hash, salt]);
    let db_len = em_len - h_len - 1;
    let mut db = Zeroizing::new(vec![0u8; db_len]);
    db[db_len - salt.len() - 1] = 0x01;
    db[db_len - salt.len()..].copy_from_slice(salt);
    let mask = mgf1(hash, &h, db_len);
    for (d, m) in db.iter_mut().zip(mask) {
        *d ^= m;
    }
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let k = mod_bits.div_ceil(8);
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.resize(k - em_len, 0);
    em.extend_from_slice(&db);
    em.extend_from_slice(&h);
    em.push(0xbc);
    Ok(em)
}

/// DER ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } from big-endian r and s.
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, v: &[u8]) {
        let first = v
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(v.len().saturating_sub(1));
        let v = &v[first..];
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push(0x02);
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(r.len() + s.len() + 6);
    int(&mut body, r);
    int(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(0x30);
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in SignatureScheme::ALL {
            assert_eq!(SignatureScheme::from_code(s.code()), Some(s));
            assert_eq!(SignatureScheme::from_name(s.name()), Some(s));
        }
        assert_eq!(SignatureScheme::from_code(0x0807), None);
        assert_eq!(
            SignatureScheme::from_name("0x0804"),
            Some(SignatureScheme::RsaPssRsaeSha256)
        );
    }

    #[test]
    fn der_integers() {
        let d = ecdsa_der(&[0x80; 32], &[0x00, 0x01]);
        assert_eq!(&d[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&d[d.len() - 3..], &[0x02, 0x01, 0x01]);
        let z = ecdsa_der(&[0; 4], &[0; 4]);
        assert_eq!(z, vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
        // P-384 with both high bits set: 2 * (2 + 49) = 102 bytes of body.
        let big = ecdsa_der(&[0xff; 48], &[0xff; 48]);
        assert_eq!(&big[..4], &[0x30, 102, 0x02, 49]);
        assert_eq!(big.len(), 104);
    }

    #[test]
    fn pkcs1_layout() {
        let em = emsa_pkcs1_v15(HashAlg::Sha256, &[7; 32], 256).unwrap();
        assert_eq!(em.len(), 256);
        assert_eq!(&em[..2], &[0, 1]);
        assert_eq!(em[256 - 32 - 19 - 1], 0);
        assert_eq!(&em[256 - 32..], &[7; 32]);
    }
}
