//! Every kind of bad key gets its own clear error that names the source and the fix;
//! no input makes key loading panic; secrets stay out of Debug and error text.

mod common;

use common::{keyset, openssl, Kind};
use envoy_qat::key::{KeyErrorKind, PrivateKey};

fn s(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn load_err(path: &std::path::Path) -> envoy_qat::key::KeyError {
    match PrivateKey::from_file(path) {
        Ok(k) => panic!("{} loaded as {:?}", path.display(), k.key_type()),
        Err(e) => e,
    }
}

/// (name, file, the expected error kind, text the message must contain).
type Case = (
    &'static str,
    std::path::PathBuf,
    fn(&KeyErrorKind) -> bool,
    &'static str,
);

#[test]
fn each_bad_key_has_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = keyset(d, Kind::Rsa(2048));
    let pem = std::fs::read_to_string(&good.pkcs8_pem).unwrap();
    let der = std::fs::read(&good.pkcs8_der).unwrap();

    let mut cases: Vec<Case> = Vec::new();
    let w = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    cases.push((
        "empty",
        w("empty.pem", b""),
        |k| matches!(k, KeyErrorKind::Empty),
        "is empty",
    ));
    cases.push((
        "whitespace",
        w("blank.pem", b"\n  \n"),
        |k| matches!(k, KeyErrorKind::Empty),
        "is empty",
    ));
    cases.push((
        "missing file",
        d.join("nope.pem"),
        |k| matches!(k, KeyErrorKind::Io(_)),
        "check the path",
    ));
    // Truncated PEM (END line cut off) and truncated DER.
    cases.push((
        "truncated pem",
        w("trunc.pem", &pem.as_bytes()[..pem.len() / 2]),
        |k| matches!(k, KeyErrorKind::Truncated),
        "truncated",
    ));
    cases.push((
        "truncated der",
        w("trunc.der", &der[..der.len() - 100]),
        |k| matches!(k, KeyErrorKind::Truncated),
        "truncated",
    ));
    cases.push((
        "not a key",
        w("hello.txt", b"hello, world\n"),
        |k| matches!(k, KeyErrorKind::NotAKey(_)),
        "is not a private key",
    ));
    // Encrypted PEM, both PKCS#8 and legacy Proc-Type.
    let enc8 = d.join("enc8.pem");
    openssl(&[
        "pkey",
        "-in",
        &s(&good.pkcs8_pem),
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        &s(&enc8),
    ]);
    cases.push((
        "encrypted pkcs8",
        enc8,
        |k| matches!(k, KeyErrorKind::Encrypted),
        "decrypt it first",
    ));
    let enc1 = d.join("enc1.pem");
    openssl(&[
        "pkey",
        "-in",
        &s(&good.pkcs8_pem),
        "-traditional",
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        &s(&enc1),
    ]);
    assert!(std::fs::read_to_string(&enc1)
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    cases.push((
        "encrypted pkcs1",
        enc1,
        |k| matches!(k, KeyErrorKind::Encrypted),
        "decrypt it first",
    ));
    // A certificate instead of a key (PEM and DER).
    let cert = d.join("cert.pem");
    openssl(&[
        "req",
        "-x509",
        "-key",
        &s(&good.pkcs8_pem),
        "-subj",
        "/CN=test",
        "-days",
        "1",
        "-out",
        &s(&cert),
    ]);
    cases.push((
        "certificate",
        cert.clone(),
        |k| matches!(k, KeyErrorKind::Certificate),
        "certificate_chain",
    ));
    let cert_der = d.join("cert.der");
    openssl(&[
        "x509",
        "-in",
        &s(&cert),
        "-outform",
        "DER",
        "-out",
        &s(&cert_der),
    ]);
    cases.push((
        "certificate der",
        cert_der,
        |k| matches!(k, KeyErrorKind::Certificate),
        "certificate_chain",
    ));
    cases.push((
        "public key",
        good.public_pem.clone(),
        |k| matches!(k, KeyErrorKind::PublicKey),
        "public key",
    ));
    // RSA below 2048 bits.
    let small = d.join("rsa1024.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &s(&small),
    ]);
    cases.push((
        "rsa 1024",
        small,
        |k| matches!(k, KeyErrorKind::RsaTooSmall(1024)),
        "at least 2048",
    ));
    // Unsupported key types.
    let p521 = d.join("p521.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-521",
        "-out",
        &s(&p521),
    ]);
    cases.push((
        "p-521",
        p521.clone(),
        |k| matches!(k, KeyErrorKind::Unsupported(_)),
        "P-256 / P-384",
    ));
    let p521_sec1 = d.join("p521-sec1.pem");
    openssl(&[
        "pkey",
        "-in",
        &s(&p521),
        "-traditional",
        "-out",
        &s(&p521_sec1),
    ]);
    cases.push((
        "p-521 sec1",
        p521_sec1,
        |k| matches!(k, KeyErrorKind::Unsupported(_)),
        "P-256 / P-384",
    ));
    let ed = d.join("ed25519.pem");
    openssl(&["genpkey", "-algorithm", "ED25519", "-out", &s(&ed)]);
    cases.push((
        "ed25519",
        ed,
        |k| matches!(k, KeyErrorKind::Unsupported(_)),
        "not supported",
    ));
    let dsap = d.join("dsa.param");
    openssl(&[
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "dsa_paramgen_bits:2048",
        "-out",
        &s(&dsap),
    ]);
    let dsa = d.join("dsa.pem");
    openssl(&["genpkey", "-paramfile", &s(&dsap), "-out", &s(&dsa)]);
    cases.push((
        "dsa",
        dsa,
        |k| matches!(k, KeyErrorKind::Unsupported(_)),
        "not supported",
    ));
    // Two keys in one file.
    let ec = keyset(d, Kind::P256);
    let two = format!("{pem}{}", std::fs::read_to_string(&ec.pkcs8_pem).unwrap());
    cases.push((
        "two keys",
        w("two.pem", two.as_bytes()),
        |k| matches!(k, KeyErrorKind::MoreThanOne(2)),
        "exactly one key",
    ));
    // A key's DER with its body corrupted but lengths intact.
    let mut bad = der.clone();
    let n = bad.len();
    for b in &mut bad[n / 2..n / 2 + 8] {
        *b = 0xff;
    }
    let bad_path = w("corrupt.der", &bad);
    let e = load_err(&bad_path);
    assert!(!matches!(e.kind, KeyErrorKind::Empty), "corrupt DER: {e}");

    let mut kinds_seen = Vec::new();
    for (name, path, is_kind, fix) in &cases {
        let e = load_err(path);
        assert!(
            is_kind(&e.kind),
            "{name}: wrong error kind {:?}: {e}",
            e.kind
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&s(path)),
            "{name}: error does not name the file: {msg}"
        );
        assert!(
            msg.contains(fix),
            "{name}: error lacks the fix {fix:?}: {msg}"
        );
        assert!(!msg.contains('\n'), "{name}: error is not one line: {msg}");
        kinds_seen.push(std::mem::discriminant(&e.kind));
    }
    kinds_seen.dedup();
    assert!(kinds_seen.len() >= 10, "too few distinct errors");

    // The certificate + key bundle that many users have is accepted.
    let bundle = format!("{}{pem}", std::fs::read_to_string(&cert).unwrap());
    let k = PrivateKey::from_bytes(bundle.as_bytes(), "bundle").unwrap();
    assert!(k.key_type().is_rsa());
}

#[test]
fn inline_bytes_name_their_source() {
    let e = PrivateKey::from_bytes(b"", "private_key.inline_bytes").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("private key private_key.inline_bytes: "),
        "{e}"
    );
}

#[test]
fn no_input_panics_and_secrets_stay_out_of_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for kind in [Kind::Rsa(2048), Kind::P256, Kind::P384] {
        let set = keyset(dir.path(), kind);
        for (_, p) in set.formats() {
            inputs.push(std::fs::read(p).unwrap());
        }
    }
    // Deterministic mutations: truncation at every 7th byte, bit flips, length-byte edits.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut tried = 0;
    for base in &inputs {
        let key = PrivateKey::from_bytes(base, "k").unwrap();
        let dbg = format!("{key:?}");
        assert!(
            !dbg.contains("BEGIN") && dbg.len() < 200,
            "Debug leaks: {dbg}"
        );
        for cut in (0..base.len()).step_by(7) {
            let _ = PrivateKey::from_bytes(&base[..cut], "k");
            tried += 1;
        }
        for _ in 0..600 {
            let mut m = base.clone();
            let i = (next() as usize) % m.len();
            m[i] ^= 1 << (next() % 8);
            if next() % 3 == 0 {
                let j = (next() as usize) % m.len();
                m[j] = (next() & 0xff) as u8;
            }
            if let Err(e) = PrivateKey::from_bytes(&m, "k") {
                // The error text never carries key bytes (a PEM body or long hex runs).
                let t = e.to_string();
                assert!(t.len() < 400, "error text too long: {t}");
            }
            tried += 1;
        }
    }
    assert!(tried > 5000);
}
