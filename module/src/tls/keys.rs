//! Private keys for the `tls` socket: BoringSSL's own key operations (inline, and as a
//! backend of our engine on the module's threads), and the `SSL_PRIVATE_KEY_METHOD` that
//! sends operations to the engine and resumes the handshake when they finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use boring::bn::BigNumRef;
use boring::ecdsa::EcdsaSig;
use boring::hash::MessageDigest;
use boring::pkey::{PKey, Private};
use boring::rsa::Padding;
use boring::sign::{RsaPssSaltlen, Signer};
use boring::ssl::{PrivateKeyMethod, PrivateKeyMethodError, SslRef, SslSignatureAlgorithm};
use envoy_qat::backend::soft::SoftBackend;
use envoy_qat::backend::{Job, OpError};
use envoy_qat::engine::{Completion, Engine, Pending};
use envoy_qat::key::PrivateKey;
use envoy_qat::scheme::{HashAlg, Operation, Padding as SchemePadding, RawOp, SignatureScheme};

use super::stats::{self, Counter, Gauge};
use super::wake::Conn;

/// A certificate's key in both forms: ours for the engine, BoringSSL's for its own code.
pub struct KeyPair {
    pub core: Arc<PrivateKey>,
    pub boring: PKey<Private>,
}

/// Parse a PEM key into both forms (error text names `what`).
pub fn load_key(pem: &[u8], what: &str) -> Result<KeyPair, String> {
    let core = PrivateKey::from_bytes(pem, what).map_err(|e| e.to_string())?;
    let boring = PKey::private_key_from_pem(pem)
        .map_err(|e| format!("{what}: BoringSSL cannot read the key: {e}"))?;
    Ok(KeyPair {
        core: Arc::new(core),
        boring,
    })
}

fn digest(h: HashAlg) -> MessageDigest {
    match h {
        HashAlg::Md5Sha1 => {
            MessageDigest::from_nid(boring::nid::Nid::MD5_SHA1).unwrap_or_else(MessageDigest::sha1)
        }
        HashAlg::Sha1 => MessageDigest::sha1(),
        HashAlg::Sha256 => MessageDigest::sha256(),
        HashAlg::Sha384 => MessageDigest::sha384(),
        HashAlg::Sha512 => MessageDigest::sha512(),
    }
}

/// Sign `input` (the message, not a digest) as TLS `scheme` asks, with BoringSSL.
pub fn boring_sign(
    key: &PKey<Private>,
    scheme: SignatureScheme,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let md = digest(scheme.hash());
    let mut s = Signer::new(md, key).map_err(|e| e.to_string())?;
    if scheme.padding() == SchemePadding::Pss {
        s.set_rsa_padding(Padding::PKCS1_PSS)
            .map_err(|e| e.to_string())?;
        s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .map_err(|e| e.to_string())?;
        s.set_rsa_mgf1_md(md).map_err(|e| e.to_string())?;
    }
    s.sign_oneshot_to_vec(input).map_err(|e| e.to_string())
}

/// Raw RSA decryption (`c^d mod n`, padding left in place), with BoringSSL.
pub fn boring_decrypt(key: &PKey<Private>, input: &[u8]) -> Result<Vec<u8>, String> {
    let rsa = key.rsa().map_err(|e| e.to_string())?;
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa
        .private_decrypt(input, &mut out, Padding::NONE)
        .map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

fn padded(n: &BigNumRef, len: usize) -> Result<Vec<u8>, String> {
    n.to_vec_padded(len).map_err(|e| e.to_string())
}

/// The raw operation of a backend job, with BoringSSL (RSA: blinded CRT; ECDSA: r || s).
fn raw_op(key: &PKey<Private>, op: &RawOp) -> Result<Vec<u8>, OpError> {
    let fail = |e: String| OpError::Failed(format!("BoringSSL: {e}"));
    match op {
        RawOp::RsaPrivate(input) => boring_decrypt(key, input).map_err(fail),
        RawOp::EcdsaSign(d) => {
            let ec = key.ec_key().map_err(|e| fail(e.to_string()))?;
            let sig = EcdsaSig::sign(d, &ec).map_err(|e| fail(e.to_string()))?;
            let len = (ec.group().degree() as usize).div_ceil(8);
            let mut out = padded(sig.r(), len).map_err(fail)?;
            out.extend(padded(sig.s(), len).map_err(fail)?);
            Ok(out)
        }
    }
}

/// BoringSSL keys by the address of their engine key (registered when a config loads).
type KeyRegistry = Mutex<HashMap<usize, (Weak<PrivateKey>, PKey<Private>)>>;

fn registry() -> &'static KeyRegistry {
    static R: OnceLock<KeyRegistry> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Make `pair.boring` the key BoringSSL uses for jobs on `pair.core`.
pub fn register(pair: &KeyPair) {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|_, (w, _)| w.strong_count() > 0);
    r.insert(
        Arc::as_ptr(&pair.core) as usize,
        (Arc::downgrade(&pair.core), pair.boring.clone()),
    );
}

fn boring_key_for(core: &Arc<PrivateKey>) -> Option<PKey<Private>> {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.get(&(Arc::as_ptr(core) as usize)).map(|(_, k)| k.clone())
}

/// Our engine's software backend inside the module: BoringSSL's constant-time RSA and
/// ECDSA on the module's own threads (the core's pure-Rust backend is several times
/// slower), on the core's worker pool. The engine's per-operation failover from QAT lands
/// here too.
pub fn boring_backend(threads: usize) -> SoftBackend {
    SoftBackend::with_compute(
        "boringssl",
        threads,
        4096,
        Arc::new(|job: &Job| match boring_key_for(&job.key) {
            Some(k) => raw_op(&k, &job.op),
            None => Err(OpError::Unavailable(
                "key not registered with the BoringSSL backend".into(),
            )),
        }),
    )
}

/// One private-key operation of a connection, in flight on the engine.
pub struct InFlight {
    pub pending: Pending,
    /// For an inline BoringSSL redo if the engine fails it.
    pub op: Operation,
    pub input: Vec<u8>,
}

/// The key method of one `tls` socket config (key_mode engine).
pub struct EngineKeyMethod {
    pub engine: Engine,
    pub key: Arc<KeyPair>,
}

static FAILOVER_LOGGED: AtomicU64 = AtomicU64::new(0);

impl EngineKeyMethod {
    fn conn(ssl: &SslRef) -> Option<Arc<Conn>> {
        ssl.ex_data(super::conn_index()).cloned()
    }

    /// The operation with BoringSSL, inline on Envoy's worker (failover), into `output`.
    fn inline(
        &self,
        op: Operation,
        input: &[u8],
        output: &mut [u8],
        why: &str,
    ) -> Result<usize, PrivateKeyMethodError> {
        stats::inc(Counter::KeyOpFailovers);
        stats::inc(Counter::KeyOpsInline);
        if FAILOVER_LOGGED.fetch_add(1, Ordering::Relaxed) < 5 {
            crate::abi::log(
                crate::abi::log_level::WARN,
                &format!("envoy-qat tls: {op} done inline with BoringSSL: {why}"),
            );
        }
        let r = match op {
            Operation::Sign(s) => boring_sign(&self.key.boring, s, input),
            Operation::Decrypt => boring_decrypt(&self.key.boring, input),
        };
        match r {
            Ok(v) if v.len() <= output.len() => {
                output[..v.len()].copy_from_slice(&v);
                Ok(v.len())
            }
            _ => Err(PrivateKeyMethodError::FAILURE),
        }
    }

    fn start(
        &self,
        ssl: &mut SslRef,
        op: Operation,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        stats::inc(Counter::KeyOps);
        let Some(conn) = Self::conn(ssl) else {
            return self.inline(op, input, output, "no connection state");
        };
        if !conn.can_wake() {
            super::wake::warn_missing_filter();
            return self.inline(
                op,
                input,
                output,
                "the tls_wake network filter is not in this filter chain",
            );
        }
        let notify = conn.notifier();
        match self.engine.submit_notify(&self.key.core, op, input, notify) {
            Ok(pending) => {
                conn.set_in_flight(Some(InFlight {
                    pending,
                    op,
                    input: input.to_vec(),
                }));
                stats::gauge_add(Gauge::KeyOpsInFlight, 1);
                Err(PrivateKeyMethodError::RETRY)
            }
            Err(e) => self.inline(op, input, output, &e.to_string()),
        }
    }
}

/// BoringSSL calls the key method from C: a panic must not unwind through it (Rust would
/// abort Envoy). It fails the handshake instead, with a log line.
fn no_unwind(
    what: &str,
    f: impl FnOnce() -> Result<usize, PrivateKeyMethodError>,
) -> Result<usize, PrivateKeyMethodError> {
    crate::guard(what, Err(PrivateKeyMethodError::FAILURE), f)
}

impl PrivateKeyMethod for EngineKeyMethod {
    fn sign(
        &self,
        ssl: &mut SslRef,
        input: &[u8],
        alg: SslSignatureAlgorithm,
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        no_unwind("tls private key sign", || {
            self.sign_op(ssl, input, alg, output)
        })
    }

    fn decrypt(
        &self,
        ssl: &mut SslRef,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        no_unwind("tls private key decrypt", || {
            self.start(ssl, Operation::Decrypt, input, output)
        })
    }

    fn complete(
        &self,
        ssl: &mut SslRef,
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        no_unwind("tls private key complete", || self.complete_op(ssl, output))
    }
}

impl EngineKeyMethod {
    fn sign_op(
        &self,
        ssl: &mut SslRef,
        input: &[u8],
        alg: SslSignatureAlgorithm,
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        let Some(scheme) = SignatureScheme::ALL
            .into_iter()
            .find(|s| SslSignatureAlgorithm::from(s.code()) == alg)
        else {
            return Err(PrivateKeyMethodError::FAILURE);
        };
        self.start(ssl, Operation::Sign(scheme), input, output)
    }

    fn complete_op(
        &self,
        ssl: &mut SslRef,
        output: &mut [u8],
    ) -> Result<usize, PrivateKeyMethodError> {
        let Some(conn) = Self::conn(ssl) else {
            return Err(PrivateKeyMethodError::FAILURE);
        };
        let Some(mut f) = conn.set_in_flight(None) else {
            return Err(PrivateKeyMethodError::FAILURE);
        };
        match f.pending.try_complete() {
            Completion::NotReady => {
                conn.set_in_flight(Some(f));
                Err(PrivateKeyMethodError::RETRY)
            }
            Completion::Ready(v) => {
                stats::gauge_add(Gauge::KeyOpsInFlight, -1);
                if v.len() > output.len() {
                    return Err(PrivateKeyMethodError::FAILURE);
                }
                output[..v.len()].copy_from_slice(&v);
                Ok(v.len())
            }
            Completion::Failed(e) => {
                stats::gauge_add(Gauge::KeyOpsInFlight, -1);
                let input = std::mem::take(&mut f.input);
                self.inline(f.op, &input, output, &e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boring::sign::Verifier;
    use envoy_qat::config::{BackendChoice, ProviderConfig};
    use envoy_qat::key::KeyType;

    fn pair(t: KeyType) -> KeyPair {
        let k = PrivateKey::generate(t).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        load_key(pem.as_bytes(), "test key").unwrap()
    }

    fn verify(p: &KeyPair, s: SignatureScheme, msg: &[u8], sig: &[u8]) -> bool {
        let md = digest(s.hash());
        let mut v = Verifier::new(md, &p.boring).unwrap();
        if s.padding() == SchemePadding::Pss {
            v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            v.set_rsa_mgf1_md(md).unwrap();
        }
        v.verify_oneshot(sig, msg).unwrap_or(false)
    }

    /// BoringSSL inline and the engine on the BoringSSL backend make signatures BoringSSL
    /// verifies, for every TLS scheme of each key type; raw RSA decryption round-trips.
    #[test]
    fn inline_and_engine_signatures_verify() {
        let mut provider = ProviderConfig {
            backend: BackendChoice::Soft,
            ..ProviderConfig::default()
        };
        provider.soft_threads = 2;
        let engine = provider
            .build_engine_with(Some(Arc::new(boring_backend(2))))
            .unwrap();
        assert_eq!(engine.backend_name(), "boringssl");
        let msg = b"a TLS 1.3 CertificateVerify input, more or less";
        for t in [
            KeyType::Rsa { bits: 2048 },
            KeyType::EcP256,
            KeyType::EcP384,
        ] {
            let p = pair(t);
            register(&p);
            for s in SignatureScheme::for_key(t) {
                if s.hash() == HashAlg::Md5Sha1 {
                    continue;
                }
                let sig = boring_sign(&p.boring, s, msg).unwrap();
                assert!(verify(&p, s, msg, &sig), "{t:?} {s} inline");
                let sig = engine
                    .submit(&p.core, Operation::Sign(s), msg)
                    .unwrap()
                    .wait()
                    .unwrap();
                assert!(verify(&p, s, msg, &sig), "{t:?} {s} engine");
            }
        }
        let p = pair(KeyType::Rsa { bits: 2048 });
        register(&p);
        let rsa = p.boring.rsa().unwrap();
        let mut block = vec![0u8; 256];
        block[1] = 2;
        block[2..].fill(0x5a);
        block[255] = 1;
        let mut c = vec![0u8; 256];
        rsa.public_encrypt(&block, &mut c, Padding::NONE).unwrap();
        assert_eq!(boring_decrypt(&p.boring, &c).unwrap(), block);
        let m = engine
            .submit(&p.core, Operation::Decrypt, &c)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(m, block);
        engine.shutdown();
    }

    /// A job on a key the backend does not know fails (the engine reports it), never
    /// hangs or panics.
    #[test]
    fn unregistered_key_fails_cleanly() {
        let engine = ProviderConfig {
            backend: BackendChoice::Soft,
            ..ProviderConfig::default()
        }
        .build_engine_with(Some(Arc::new(boring_backend(1))))
        .unwrap();
        let k = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let s = SignatureScheme::for_key(KeyType::EcP256)[0];
        let e = engine.submit(&k, Operation::Sign(s), b"x").unwrap().wait();
        assert!(e.unwrap_err().to_string().contains("not registered"));
        engine.shutdown();
    }
}
