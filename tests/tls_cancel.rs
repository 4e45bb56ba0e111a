//! Releasing an SSL while its private-key operation is in flight (a client that goes away
//! mid-handshake, or Envoy's `unregisterPrivateKeyMethod`): the operation is cancelled, its
//! notification fd is closed at once, and nothing fires afterwards. A real `openssl
//! s_client` supplies the ClientHello; cpp/ssl runs the server side over BoringSSL.
//! Run under AddressSanitizer by ci/test-abi.sh (ENVOY_QAT_SANITIZE=1).

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_qat::bridge::{ffi, QatEngine, QatKey, TlsStatus};
use envoy_qat::config::{BackendChoice, ProviderConfig};
use envoy_qat::key::{KeyType, PrivateKey};

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table; no memory is passed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Whether `fd` is open and readable now (a signalled eventfd).
fn signalled(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    fd_is_open(fd) && unsafe { libc::poll(&mut p, 1, 0) } == 1 && p.revents & libc::POLLIN != 0
}

/// Drive a server handshake on a blocking socket until it waits for the private key.
fn handshake_until_key_wait(
    ctx: &ffi::TlsContext,
    listener: &TcpListener,
) -> (
    cxx::UniquePtr<ffi::TlsConn>,
    std::process::Child,
    std::net::TcpStream,
) {
    let port = listener.local_addr().unwrap().port();
    let client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (Debian package openssl) must be installed");
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut conn = ffi::tls_conn_new(ctx, sock.as_raw_fd()).unwrap();
    let io = conn.pin_mut().handshake();
    assert_eq!(
        io.status,
        TlsStatus::WantPrivateKey,
        "handshake: {}",
        conn.last_error()
    );
    (conn, client, sock)
}

#[test]
fn releasing_an_ssl_with_an_operation_in_flight_cancels_it() {
    // RSA-4096 in software takes long enough that the operation is surely in flight.
    let key = PrivateKey::generate(KeyType::Rsa { bits: 4096 }).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let cert = ffi::self_signed_cert(pem.as_bytes(), "localhost", 1).unwrap();
    let engine = QatEngine::from_engine(
        ProviderConfig {
            backend: BackendChoice::Soft,
            soft_threads: 1,
            ..ProviderConfig::default()
        }
        .build_engine()
        .unwrap(),
    );
    let qkey = QatKey::new(Arc::new(key));
    let ctx = ffi::tls_context_with_provider(cert.as_bytes(), &engine, &qkey).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();

    // 1. Released while in flight.
    let (conn, mut client, sock) = handshake_until_key_wait(&ctx, &listener);
    let fd = conn.private_key_fd();
    assert!(fd >= 0 && fd_is_open(fd));
    assert_eq!((conn.hook_calls(), conn.hook_last_fd()), (1, fd));
    assert_eq!(engine.stats().submitted, 1);
    drop(conn);
    // The engine takes the eventfd back (closed, or drained into its reuse pool): the SSL no
    // longer owns it, and the cancelled operation never signals it.
    assert!(
        !signalled(fd),
        "the cancelled operation's eventfd is signalled"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.engine().in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !signalled(fd),
        "the cancelled operation signalled its fd after it finished"
    );
    let s = engine.stats();
    assert_eq!(s.in_flight, 0, "{s}");
    assert_eq!(s.cancelled, 1, "{s}");
    assert_eq!(s.completed_after_retry, 0, "{s}");
    assert_eq!(s.op_failures, 0, "{s}");
    let _ = client.kill();
    let _ = client.wait();
    drop(sock);

    // 2. The same context still completes a handshake through the retry path.
    let (mut conn, mut client, _sock) = handshake_until_key_wait(&ctx, &listener);
    let fd = conn.private_key_fd();
    assert_eq!((conn.hook_calls(), conn.hook_last_fd()), (1, fd));
    envoy_qat::engine::wait_readable(fd, Some(Duration::from_secs(60)));
    let io = conn.pin_mut().handshake();
    assert_eq!(io.status, TlsStatus::Ok, "{}", conn.last_error());
    // The hook heard that the operation ended (before its fd closed).
    assert_eq!((conn.hook_calls(), conn.hook_last_fd()), (2, -1));
    assert_eq!(conn.private_key_fd(), -1);
    assert!(
        conn.describe().starts_with("TLSv1.3"),
        "{}",
        conn.describe()
    );
    let s = engine.stats();
    assert_eq!((s.completed_after_retry, s.cancelled), (1, 1), "{s}");
    let _ = client.kill();
    let _ = client.wait();
}
