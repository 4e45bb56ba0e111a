//! Private keys: PEM or DER, RSA (PKCS#1, PKCS#8; 2048–4096 bits) and EC P-256 / P-384
//! (SEC1, PKCS#8).
//!
//! Every bad input gets its own [`KeyError`] that names the source and the fix. Secret
//! material lives only in the `rsa`/`p256`/`p384` key types (zeroized on drop) and in
//! [`Zeroizing`] buffers while parsing; it never appears in `Debug` output, logs or errors.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use zeroize::Zeroizing;

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const RSA_MAX_BITS: usize = 4096;

/// The algorithm and size of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA with a modulus of this many bits.
    Rsa { bits: usize },
    /// ECDSA over NIST P-256 (secp256r1).
    EcP256,
    /// ECDSA over NIST P-384 (secp384r1).
    EcP384,
}

impl KeyType {
    /// Whether this is an RSA key.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa { .. })
    }

    /// Size of a raw private-key operation's output: the RSA modulus length, or r||s.
    pub fn raw_output_len(self) -> usize {
        match self {
            KeyType::Rsa { bits } => bits.div_ceil(8),
            KeyType::EcP256 => 64,
            KeyType::EcP384 => 96,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyType::EcP256 => f.write_str("EC P-256"),
            KeyType::EcP384 => f.write_str("EC P-384"),
        }
    }
}

/// The encoding a key was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    Pkcs1,
    Pkcs8,
    Sec1,
}

pub(crate) enum KeyMaterial {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A parsed private key. Its `Debug` output shows the type and source, never key bytes.
pub struct PrivateKey {
    material: KeyMaterial,
    key_type: KeyType,
    format: KeyFormat,
    source: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("type", &self.key_type)
            .field("format", &self.format)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Read a key from a file (PEM or DER).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError {
            source: source.clone(),
            kind: KeyErrorKind::Io(e.to_string()),
        })?;
        let bytes = Zeroizing::new(bytes);
        warn_if_world_readable(path);
        Self::from_bytes(&bytes, &source)
    }

    /// Parse a key from inline bytes (PEM or DER). `source` names it in errors, e.g.
    /// "inline_bytes" or the name of the config field.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, KeyError> {
        let err = |kind| KeyError {
            source: source.to_string(),
            kind,
        };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(err(KeyErrorKind::Empty));
        }
        let der = if looks_like_pem(bytes) {
            pem_private_key(bytes).map_err(err)?
        } else if bytes.first() == Some(&0x30) {
            Zeroizing::new(bytes.to_vec())
        } else {
            return Err(err(KeyErrorKind::NotAKey(
                "neither PEM (no -----BEGIN line) nor DER".into(),
            )));
        };
        let (material, format) = parse_der(&der).map_err(err)?;
        let key_type = match &material {
            KeyMaterial::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                let bits = k.n().bit_width() as usize;
                if bits < RSA_MIN_BITS {
                    return Err(err(KeyErrorKind::RsaTooSmall(bits)));
                }
                if bits > RSA_MAX_BITS {
                    return Err(err(KeyErrorKind::RsaTooLarge(bits)));
                }
                KeyType::Rsa { bits }
            }
            KeyMaterial::P256(_) => KeyType::EcP256,
            KeyMaterial::P384(_) => KeyType::EcP384,
        };
        Ok(PrivateKey {
            material,
            key_type,
            format,
            source: source.to_string(),
        })
    }

    /// Generate a fresh key (for `serve` without a key, and for tests).
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let material = match key_type {
            KeyType::Rsa { bits } => {
                let mut rng = getrandom::SysRng;
                let k = rsa::PrivateKey::new(&mut rng, bits).map_err(|e| KeyError {
                    source: "generated".into(),
                    kind: KeyErrorKind::Invalid(e.to_string()),
                })?;
                KeyMaterial::Rsa(Box::new(k))
            }
            KeyType::EcP256 => KeyMaterial::P256(p256::ecdsa::SigningKey::from(
                <p256::SecretKey as rsa::Generate>::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(|e| KeyError {
                    source: "generated".into(),
                    kind: KeyErrorKind::Invalid(e.to_string()),
                })?,
            )),
            KeyType::EcP384 => KeyMaterial::P384(p384::ecdsa::SigningKey::from(
                <p384::SecretKey as rsa::Generate>::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(|e| KeyError {
                    source: "generated".into(),
                    kind: KeyErrorKind::Invalid(e.to_string()),
                })?,
            )),
        };
        Ok(PrivateKey {
            material,
            key_type,
            format: KeyFormat::Pkcs8,
            source: "generated".into(),
        })
    }

    /// Encode as unencrypted PKCS#8 PEM (for handing a generated key to a TLS library).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        use pkcs8::EncodePrivateKey;
        let r = match &self.material {
            KeyMaterial::Rsa(k) => k.to_pkcs8_pem(pkcs8::LineEnding::LF),
            KeyMaterial::P256(k) => {
                p256::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_pem(pkcs8::LineEnding::LF)
            }
            KeyMaterial::P384(k) => {
                p384::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_pem(pkcs8::LineEnding::LF)
            }
        };
        r.map_err(|e| KeyError {
            source: self.source.clone(),
            kind: KeyErrorKind::Invalid(format!("cannot encode as PKCS#8: {e}")),
        })
    }

    /// The key's algorithm and size.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The encoding it was read from.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// Where the key came from (a path, or a label for inline bytes).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// DER SubjectPublicKeyInfo of the public half (to match against a certificate).
    pub fn public_key_der(&self) -> Vec<u8> {
        use pkcs8::spki::EncodePublicKey;
        let r = match &self.material {
            KeyMaterial::Rsa(k) => k.to_public_key().to_public_key_der(),
            KeyMaterial::P256(k) => k.verifying_key().to_public_key_der(),
            KeyMaterial::P384(k) => k.verifying_key().to_public_key_der(),
        };
        r.map(|d| d.into_vec()).unwrap_or_default()
    }

    pub(crate) fn material(&self) -> &KeyMaterial {
        &self.material
    }
}

fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!(
                key = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "private key file is readable by group or others; chmod 600 it"
            );
        }
    }
}

/// A key that could not be used, with the source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The file path or inline label.
    pub source: String,
    /// What is wrong.
    pub kind: KeyErrorKind,
}

/// What is wrong with a key. Display gives the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyErrorKind {
    Io(String),
    Empty,
    Truncated,
    NotAKey(String),
    Encrypted,
    Certificate,
    PublicKey,
    RsaTooSmall(usize),
    RsaTooLarge(usize),
    Unsupported(String),
    MoreThanOne(usize),
    Invalid(String),
}

impl std::error::Error for KeyError {}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "private key {}: ", self.source)?;
        match &self.kind {
            KeyErrorKind::Io(e) => write!(f, "cannot read it ({e}); check the path and permissions"),
            KeyErrorKind::Empty => f.write_str("is empty; point at a PEM or DER private key file"),
            KeyErrorKind::Truncated => f.write_str(
                "is truncated (the encoding ends early); copy the whole key file again",
            ),
            KeyErrorKind::NotAKey(why) => write!(
                f,
                "is not a private key ({why}); expected PEM (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) or DER"
            ),
            KeyErrorKind::Encrypted => f.write_str(
                "encrypted PEM is not supported; decrypt it first (openssl pkey -in KEY -out KEY.plain) and protect the file with permissions",
            ),
            KeyErrorKind::Certificate => f.write_str(
                "holds a certificate, not a private key; give the certificate as certificate_chain and the key file here",
            ),
            KeyErrorKind::PublicKey => f.write_str(
                "holds a public key, not a private key; give the private key file",
            ),
            KeyErrorKind::RsaTooSmall(bits) => write!(
                f,
                "RSA key of {bits} bits is too small; use at least {RSA_MIN_BITS} bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)"
            ),
            KeyErrorKind::RsaTooLarge(bits) => write!(
                f,
                "RSA key of {bits} bits is larger than the supported {RSA_MAX_BITS}; use 2048, 3072 or 4096 bits"
            ),
            KeyErrorKind::Unsupported(what) => write!(
                f,
                "{what} keys are not supported; use RSA (2048-4096 bits) or EC P-256 / P-384"
            ),
            KeyErrorKind::MoreThanOne(n) => write!(
                f,
                "holds {n} private keys; put exactly one key in the file"
            ),
            KeyErrorKind::Invalid(why) => write!(
                f,
                "is malformed ({why}); regenerate or re-export it (openssl pkey -in KEY -out KEY.pem)"
            ),
        }
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Find exactly one private key block in PEM text and return its DER.
fn pem_private_key(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyErrorKind> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| KeyErrorKind::NotAKey("PEM text is not valid UTF-8".into()))?;
    let mut keys: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
    let mut saw_cert = false;
    let mut saw_public = false;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after.find("-----").ok_or(KeyErrorKind::Truncated)?;
        let label = after[..label_end].to_string();
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or(KeyErrorKind::Truncated)?;
        let body = &body_start[..body_end];
        rest = &body_start[body_end + end_marker.len()..];
        match label.as_str() {
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" | "CERTIFICATE REQUEST" => {
                saw_cert = true;
                continue;
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                saw_public = true;
                continue;
            }
            "EC PARAMETERS" => continue,
            "ENCRYPTED PRIVATE KEY" => return Err(KeyErrorKind::Encrypted),
            "DSA PRIVATE KEY" => return Err(KeyErrorKind::Unsupported("DSA".into())),
            "OPENSSH PRIVATE KEY" => {
                return Err(KeyErrorKind::NotAKey(
                    "OpenSSH format; convert it with ssh-keygen -p -m PEM".into(),
                ))
            }
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {}
            other => {
                return Err(KeyErrorKind::NotAKey(format!(
                    "unexpected PEM block \"{other}\""
                )))
            }
        }
        // Legacy OpenSSL encryption puts RFC 1421 headers in the block.
        if body.contains("Proc-Type:") || body.contains("DEK-Info:") {
            return Err(KeyErrorKind::Encrypted);
        }
        let b64: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| KeyErrorKind::Invalid("PEM body is not valid base64".into()))?;
        keys.push((label, Zeroizing::new(der)));
    }
    match keys.len() {
        0 if saw_cert => Err(KeyErrorKind::Certificate),
        0 if saw_public => Err(KeyErrorKind::PublicKey),
        0 => Err(KeyErrorKind::NotAKey("no private key PEM block".into())),
        1 => Ok(keys.pop().map(|(_, der)| der).unwrap_or_default()),
        n => Err(KeyErrorKind::MoreThanOne(n)),
    }
}

// DER object identifiers (content octets) this module tells apart.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
const OID_DH: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x03, 0x01];

fn oid_name(oid: &[u8]) -> String {
    match oid {
        OID_P521 => "EC P-521".into(),
        OID_SECP256K1 => "EC secp256k1".into(),
        OID_DSA => "DSA".into(),
        OID_DH => "Diffie-Hellman".into(),
        OID_RSA_PSS => "RSA-PSS-restricted (id-RSASSA-PSS)".into(),
        [0x2b, 0x65, 0x70] => "Ed25519".into(),
        [0x2b, 0x65, 0x71] => "Ed448".into(),
        [0x2b, 0x65, 0x6e] => "X25519".into(),
        [0x2b, 0x65, 0x6f] => "X448".into(),
        [0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d] => "SM2".into(),
        _ => format!("algorithm OID {}", oid_to_string(oid)),
    }
}

fn oid_to_string(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < oid.len() {
                let (a, b2) = if v < 80 {
                    (v / 40, v % 40)
                } else {
                    (2, v - 80)
                };
                parts.push(a.to_string());
                parts.push(b2.to_string());
            } else {
                parts.push(v.to_string());
            }
            v = 0;
        }
    }
    parts.join(".")
}

/// One DER TLV: tag and content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Read one TLV from the front of `input`; return it and the rest.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), KeyErrorKind> {
    let bad = || KeyErrorKind::NotAKey("not valid DER".into());
    let (&tag, rest) = input.split_first().ok_or(KeyErrorKind::Truncated)?;
    let (&len0, mut rest) = rest.split_first().ok_or(KeyErrorKind::Truncated)?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad());
        }
        if rest.len() < n {
            return Err(KeyErrorKind::Truncated);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(KeyErrorKind::Truncated);
    }
    Ok((
        Tlv {
            tag,
            content: &rest[..len],
        },
        &rest[len..],
    ))
}

fn children(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, KeyErrorKind> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read_tlv(content)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

fn parse_der(der: &[u8]) -> Result<(KeyMaterial, KeyFormat), KeyErrorKind> {
    let (outer, trailing) = read_tlv(der)?;
    if outer.tag != TAG_SEQUENCE {
        return Err(KeyErrorKind::NotAKey(
            "DER does not start with a SEQUENCE".into(),
        ));
    }
    if trailing.iter().any(|b| *b != 0) {
        return Err(KeyErrorKind::Invalid(
            "bytes after the end of the key".into(),
        ));
    }
    let items = children(outer.content)?;
    let invalid = |e: &dyn fmt::Display| KeyErrorKind::Invalid(e.to_string());
    match items.as_slice() {
        // Certificate / CSR: SEQUENCE { SEQUENCE tbs, ... }
        [first, ..] if first.tag == TAG_SEQUENCE => Err(KeyErrorKind::Certificate),
        // PKCS#8 PrivateKeyInfo: INTEGER version, AlgorithmIdentifier, OCTET STRING
        [v, alg, key, ..]
            if v.tag == TAG_INTEGER && alg.tag == TAG_SEQUENCE && key.tag == TAG_OCTET_STRING =>
        {
            let alg_items = children(alg.content)?;
            let oid = match alg_items.first() {
                Some(t) if t.tag == TAG_OID => t.content,
                _ => {
                    return Err(KeyErrorKind::NotAKey(
                        "PKCS#8 without an algorithm OID".into(),
                    ))
                }
            };
            match oid {
                OID_RSA => {
                    use rsa::pkcs8::DecodePrivateKey;
                    let k = rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?;
                    Ok((KeyMaterial::Rsa(Box::new(k)), KeyFormat::Pkcs8))
                }
                OID_EC => {
                    let curve = match alg_items.get(1) {
                        Some(t) if t.tag == TAG_OID => t.content,
                        _ => {
                            return Err(KeyErrorKind::Unsupported(
                                "EC with explicit curve parameters".into(),
                            ))
                        }
                    };
                    use pkcs8::DecodePrivateKey;
                    match curve {
                        OID_P256 => {
                            let k =
                                p256::SecretKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?;
                            Ok((KeyMaterial::P256(k.into()), KeyFormat::Pkcs8))
                        }
                        OID_P384 => {
                            let k =
                                p384::SecretKey::from_pkcs8_der(der).map_err(|e| invalid(&e))?;
                            Ok((KeyMaterial::P384(k.into()), KeyFormat::Pkcs8))
                        }
                        other => Err(KeyErrorKind::Unsupported(oid_name(other))),
                    }
                }
                other => Err(KeyErrorKind::Unsupported(oid_name(other))),
            }
        }
        // SEC1 ECPrivateKey: INTEGER 1, OCTET STRING, [0] parameters, [1] public key
        [v, key, rest @ ..] if v.tag == TAG_INTEGER && key.tag == TAG_OCTET_STRING => {
            let curve = rest
                .iter()
                .find(|t| t.tag == 0xa0)
                .and_then(|t| read_tlv(t.content).ok())
                .filter(|(t, _)| t.tag == TAG_OID)
                .map(|(t, _)| t.content);
            match curve {
                Some(OID_P256) => {
                    let k = p256::SecretKey::from_sec1_der(der).map_err(|e| invalid(&e))?;
                    Ok((KeyMaterial::P256(k.into()), KeyFormat::Sec1))
                }
                Some(OID_P384) => {
                    let k = p384::SecretKey::from_sec1_der(der).map_err(|e| invalid(&e))?;
                    Ok((KeyMaterial::P384(k.into()), KeyFormat::Sec1))
                }
                Some(other) => Err(KeyErrorKind::Unsupported(oid_name(other))),
                None => Err(KeyErrorKind::Unsupported(
                    "EC key without a named curve (SEC1 with no parameters)".into(),
                )),
            }
        }
        // PKCS#1 RSAPrivateKey: 9 INTEGERs; DSA's OpenSSL form: 6 INTEGERs.
        ints if ints.iter().all(|t| t.tag == TAG_INTEGER) => match ints.len() {
            9 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                let k = rsa::PrivateKey::from_pkcs1_der(der).map_err(|e| invalid(&e))?;
                Ok((KeyMaterial::Rsa(Box::new(k)), KeyFormat::Pkcs1))
            }
            6 => Err(KeyErrorKind::Unsupported("DSA".into())),
            n if n > 9 => Err(KeyErrorKind::Unsupported("multi-prime RSA".into())),
            _ => Err(KeyErrorKind::NotAKey("unknown DER structure".into())),
        },
        _ => Err(KeyErrorKind::NotAKey("unknown DER structure".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_strings() {
        assert_eq!(oid_to_string(OID_P256), "1.2.840.10045.3.1.7");
        assert_eq!(oid_to_string(OID_P384), "1.3.132.0.34");
    }

    #[test]
    fn debug_hides_material() {
        let k = PrivateKey::generate(KeyType::EcP256).unwrap();
        let s = format!("{k:?}");
        assert!(s.contains("EcP256"), "{s}");
        assert!(!s.contains("scalar"), "{s}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let mut buf = vec![0x30u8; len];
            for b in buf.iter_mut().skip(1) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (seed >> 16) as u8;
            }
            let _ = PrivateKey::from_bytes(&buf, "fuzz");
        }
    }
}
