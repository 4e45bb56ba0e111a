//! What the C ABI's private-key entry points do with BoringSSL's bytes, with arbitrary
//! lengths and code points. The bridge's `start_sign` / `start_decrypt` / `try_complete`
//! are private to the cxx module; they are thin guards around `Engine::submit` with
//! `SignatureScheme::from_code(sigalg)` and `Pending::try_complete`, which this target
//! drives with the same arguments (keys: RSA-2048, P-256, P-384; backends: soft and noop),
//! plus cancellation (dropping a pending operation before its result).
//!
//! Input: byte 0 key, byte 1 engine/op/cancel bits, bytes 2..4 sigalg (BE), bytes 4..6
//! input length (LE; the data is repeated or cut to it), then data.
//!
//! Oracles: a scheme that fits the key always signs; a result is never longer than the
//! bridge's `max_output_len` for the key (RSA: exactly the modulus length; ECDSA: at most
//! r||s + 16); decrypt succeeds only for RSA keys and modulus-length input, with
//! modulus-length output; every operation ends (a hang is a libFuzzer timeout).

use std::sync::{Arc, OnceLock};

use envoy_qat::bridge::QatEngine;
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::key::{KeyType, PrivateKey};
use envoy_qat::scheme::{Operation, SignatureScheme};

fn keys() -> &'static [Arc<PrivateKey>; 3] {
    static K: OnceLock<[Arc<PrivateKey>; 3]> = OnceLock::new();
    K.get_or_init(|| {
        [
            KeyType::Rsa { bits: 2048 },
            KeyType::EcP256,
            KeyType::EcP384,
        ]
        .map(|t| Arc::new(PrivateKey::generate(t).expect("generate a test key")))
    })
}

fn engines() -> &'static [QatEngine; 2] {
    static E: OnceLock<[QatEngine; 2]> = OnceLock::new();
    E.get_or_init(|| {
        [BackendChoice::Soft, BackendChoice::Noop].map(|backend| {
            QatEngine::from_engine(
                ProviderConfig {
                    backend,
                    soft_threads: 1,
                    ..ProviderConfig::default()
                }
                .build_engine()
                .expect("engine"),
            )
        })
    })
}

/// `QatKey::max_output_len` of the bridge.
fn max_output_len(kt: KeyType) -> usize {
    if kt.is_rsa() {
        kt.raw_output_len()
    } else {
        kt.raw_output_len() + 16
    }
}

/// One fuzz input: panics on a bug.
pub fn run(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let (h, rest) = data.split_at(6);
    let key = &keys()[usize::from(h[0] % 3)];
    let kt = key.key_type();
    let soft = h[1] & 1 == 0;
    let engine = &engines()[usize::from(!soft)];
    let decrypt = h[1] & 2 != 0;
    let cancel = h[1] & 4 != 0;
    let sigalg = u16::from_be_bytes([h[2], h[3]]);
    let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
    let input: Vec<u8> = if rest.is_empty() {
        vec![0; len]
    } else {
        rest.iter().copied().cycle().take(len).collect()
    };
    let op = if decrypt {
        Operation::Decrypt
    } else {
        match SignatureScheme::from_code(sigalg) {
            Some(s) => Operation::Sign(s),
            // The bridge fails an unknown code point before the engine sees it.
            None => return,
        }
    };
    let submitted = engine.engine().submit(key, op, &input);
    let must_work = match op {
        Operation::Sign(s) => s.fits(kt),
        Operation::Decrypt => false, // depends on the value being below the modulus
    };
    let mut pending = match submitted {
        Ok(p) => p,
        Err(e) => {
            assert!(!must_work, "{op} with {kt} refused at submit: {e}");
            if decrypt {
                assert!(!kt.is_rsa() || input.len() != kt.raw_output_len());
            }
            return;
        }
    };
    if cancel {
        drop(pending);
        return;
    }
    assert!(pending.fd() >= 0);
    let result = loop {
        match pending.try_complete() {
            envoy_qat::engine::Completion::NotReady => {
                envoy_qat::engine::wait_readable(pending.fd(), None)
            }
            envoy_qat::engine::Completion::Ready(v) => break Ok(v),
            envoy_qat::engine::Completion::Failed(e) => break Err(e),
        }
    };
    // A second take must not hand out the result again.
    assert!(!matches!(
        pending.try_complete(),
        envoy_qat::engine::Completion::Ready(_)
    ));
    match result {
        Ok(out) => {
            if soft {
                assert!(
                    out.len() <= max_output_len(kt),
                    "{op} with {kt}: {} bytes, the bridge's buffer holds {}",
                    out.len(),
                    max_output_len(kt)
                );
                if kt.is_rsa() {
                    assert_eq!(out.len(), kt.raw_output_len(), "{op} with {kt}");
                }
            }
            if decrypt {
                assert!(kt.is_rsa() && input.len() == kt.raw_output_len());
            }
        }
        Err(e) => assert!(!(must_work && soft), "{op} with {kt} failed: {e}"),
    }
}
