//! Private keys from PEM text: `PrivateKey::from_bytes` (what every config path and the C
//! ABI's `key_from_bytes` call) on arbitrary text. Errors are fine; a panic, hang or
//! out-of-memory is a bug. A key that loads must report a type and a public key.

use envoy_qat::key::PrivateKey;

/// One fuzz input: panics on a bug.
pub fn run(data: &[u8]) {
    if let Ok(k) = PrivateKey::from_bytes(data, "fuzz") {
        assert!(
            !k.public_key_der().is_empty(),
            "{:?} without a public key",
            k
        );
    }
}
