//! The `tls` socket and the `tls_wake` filter driven through their hooks by a small fake
//! Envoy: the socket's I/O callbacks over one end of a socketpair, Envoy's read and write
//! buffers as vectors, the filter's scheduler as a channel. A BoringSSL client on the other
//! end handshakes (the key operation on the engine, resumed through the scheduler), sends a
//! request and reads the reply. In-process, so it runs under ASan
//! (`ci/test-sanitize-sim.sh`), which the module inside the stock Envoy cannot.

use std::ffi::{c_char, c_void};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boring::asn1::Asn1Time;
use boring::hash::MessageDigest;
use boring::pkey::PKey;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use boring::x509::{X509Builder, X509NameBuilder};
use envoy_qat::key::{KeyType, PrivateKey};

use crate::abi::{self, io_status, Api, EnvoyBuffer, IoResult, ModuleBuffer};

/// Envoy's side of one connection.
struct FakeSocket {
    fd: i32,
    id: u64,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    readable: bool,
    events: Vec<u32>,
}

struct FakeFilter {
    id: u64,
    tx: Sender<u64>,
}

/// SAFETY (for every fake below): the pointers are the fakes' own objects, alive for the
/// test's connection, used on the test's thread; buffers come from the module with their
/// lengths.
unsafe fn sock<'a>(p: *mut c_void) -> &'a mut FakeSocket {
    // SAFETY: see above.
    unsafe { &mut *(p as *mut FakeSocket) }
}

unsafe extern "C" fn io_read(p: *mut c_void, buf: *mut c_char, len: usize, n: *mut usize) -> u32 {
    // SAFETY: see `sock`.
    let s = unsafe { sock(p) };
    // SAFETY: buf has len writable bytes.
    let r = unsafe { libc::recv(s.fd, buf.cast(), len, libc::MSG_DONTWAIT) };
    // SAFETY: n is writable.
    unsafe { io_status_of(r, n) }
}

/// Envoy's io status for a recv/send result, its byte count into `n`.
///
/// # Safety
/// `n` is writable.
unsafe fn io_status_of(r: isize, n: *mut usize) -> u32 {
    if r >= 0 {
        // SAFETY: per the contract.
        unsafe { *n = r as usize };
        io_status::SUCCESS
    } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
        io_status::AGAIN
    } else {
        2
    }
}

unsafe extern "C" fn io_write(
    p: *mut c_void,
    buf: *const c_char,
    len: usize,
    n: *mut usize,
) -> u32 {
    // SAFETY: see `sock`.
    let s = unsafe { sock(p) };
    // SAFETY: buf has len readable bytes.
    let r = unsafe {
        libc::send(
            s.fd,
            buf.cast(),
            len,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    // SAFETY: n is writable.
    unsafe { io_status_of(r, n) }
}

unsafe extern "C" fn read_buffer_add(p: *mut c_void, data: *const c_char, len: usize) {
    // SAFETY: see `sock`; data has len readable bytes.
    unsafe {
        sock(p)
            .read_buf
            .extend_from_slice(std::slice::from_raw_parts(data.cast(), len))
    };
}

unsafe extern "C" fn write_buffer_length(p: *mut c_void) -> usize {
    // SAFETY: see `sock`.
    unsafe { sock(p).write_buf.len() }
}

unsafe extern "C" fn write_buffer_get_slices(
    p: *mut c_void,
    out: *mut EnvoyBuffer,
    count: *mut usize,
) {
    // SAFETY: see `sock`; out has room for *count slices.
    unsafe {
        let s = sock(p);
        if s.write_buf.is_empty() || *count == 0 {
            *count = 0;
            return;
        }
        *out = EnvoyBuffer {
            ptr: s.write_buf.as_ptr().cast(),
            length: s.write_buf.len(),
        };
        *count = 1;
    }
}

unsafe extern "C" fn write_buffer_drain(p: *mut c_void, n: usize) {
    // SAFETY: see `sock`.
    let s = unsafe { sock(p) };
    s.write_buf.drain(..n.min(s.write_buf.len()));
}

unsafe extern "C" fn raise_event(p: *mut c_void, e: u32) {
    // SAFETY: see `sock`.
    unsafe { sock(p).events.push(e) };
}

unsafe extern "C" fn set_is_readable(p: *mut c_void) {
    // SAFETY: see `sock`.
    unsafe { sock(p).readable = true };
}

unsafe extern "C" fn socket_conn_id(p: *mut c_void, id: *mut u64) -> bool {
    // SAFETY: see `sock`; id is writable.
    unsafe { *id = sock(p).id };
    true
}

unsafe extern "C" fn get_fd(p: *mut c_void) -> i32 {
    // SAFETY: see `sock`.
    unsafe { sock(p).fd }
}

unsafe extern "C" fn filter_conn_id(f: *mut c_void) -> u64 {
    // SAFETY: the fake filter, as for `sock`.
    unsafe { (*(f as *mut FakeFilter)).id }
}

unsafe extern "C" fn scheduler_new(f: *mut c_void) -> *mut c_void {
    // SAFETY: the fake filter, as for `sock`.
    let tx = unsafe { (*(f as *mut FakeFilter)).tx.clone() };
    Box::into_raw(Box::new(Mutex::new(tx))) as *mut c_void
}

unsafe extern "C" fn scheduler_commit(s: *mut c_void, id: u64) {
    // SAFETY: a scheduler from scheduler_new, not yet deleted (the module's contract).
    let _ = unsafe { &*(s as *const Mutex<Sender<u64>>) }
        .lock()
        .unwrap()
        .send(id);
}

unsafe extern "C" fn scheduler_delete(s: *mut c_void) {
    // SAFETY: a scheduler from scheduler_new, deleted once.
    drop(unsafe { Box::from_raw(s as *mut Mutex<Sender<u64>>) });
}

unsafe extern "C" fn define_stat(_c: *mut c_void, _n: ModuleBuffer, id: *mut usize) -> u32 {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    // SAFETY: id is writable.
    unsafe { *id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) };
    abi::METRICS_SUCCESS
}

fn fake_api() -> Api {
    let mut a = Api::stubs();
    a.transport_socket_io_read = io_read;
    a.transport_socket_io_write = io_write;
    a.transport_socket_read_buffer_add = read_buffer_add;
    a.transport_socket_write_buffer_length = write_buffer_length;
    a.transport_socket_write_buffer_get_slices = write_buffer_get_slices;
    a.transport_socket_write_buffer_drain = write_buffer_drain;
    a.transport_socket_raise_event = raise_event;
    a.transport_socket_set_is_readable = set_is_readable;
    a.transport_socket_get_connection_id = socket_conn_id;
    a.transport_socket_get_fd = get_fd;
    a.network_filter_get_connection_id = filter_conn_id;
    a.network_filter_scheduler_new = scheduler_new;
    a.network_filter_scheduler_commit = scheduler_commit;
    a.network_filter_scheduler_delete = scheduler_delete;
    a.network_filter_config_define_counter = define_stat;
    a.network_filter_config_define_gauge = define_stat;
    a
}

/// A self-signed certificate and its key, PEM.
fn cert_and_key(t: KeyType) -> (String, String) {
    let key_pem = PrivateKey::generate(t)
        .unwrap()
        .to_pkcs8_pem()
        .unwrap()
        .to_string();
    let key = PKey::private_key_from_pem(key_pem.as_bytes()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "fake-envoy.test").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    (cert, key_pem)
}

fn buf(b: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: b.as_ptr().cast(),
        length: b.len(),
    }
}

/// One connection through the hooks, from the config to the sockets' destruction.
fn serve_one(t: KeyType, key_provider: &str, wake: bool, id: u64) {
    abi::install_for_tests(fake_api);
    let (cert, key) = cert_and_key(t);
    let cfg = serde_json::json!({
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"inline_string": cert},
                                  "private_key": {"inline_string": key}}],
            "alpn_protocols": ["h2", "http/1.1"]},
        "key_provider": serde_json::from_str::<serde_json::Value>(key_provider).unwrap(),
    })
    .to_string();
    // SAFETY: valid buffers for the call; the hooks' contracts as Envoy keeps them.
    unsafe {
        let wake_cfg = super::wake::envoy_dynamic_module_on_network_filter_config_new(
            std::ptr::dangling_mut::<c_void>(),
            buf(b"tls_wake"),
            buf(b""),
        );
        assert!(!wake_cfg.is_null());
        let factory = super::envoy_dynamic_module_on_transport_socket_factory_config_new(
            std::ptr::null_mut(),
            buf(b"tls"),
            buf(cfg.as_bytes()),
            false,
        );
        assert!(!factory.is_null(), "the config loads");

        let (server, client) = UnixStream::pair().unwrap();
        let mut fake = Box::new(FakeSocket {
            fd: server.as_raw_fd(),
            id,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            readable: false,
            events: Vec::new(),
        });
        let envoy = &mut *fake as *mut FakeSocket as *mut c_void;
        let socket = super::envoy_dynamic_module_on_transport_socket_new(factory, envoy);
        super::envoy_dynamic_module_on_transport_socket_set_callbacks(envoy, socket);
        let (tx, rx): (Sender<u64>, Receiver<u64>) = channel();
        let mut ff = Box::new(FakeFilter { id, tx });
        let fptr = &mut *ff as *mut FakeFilter as *mut c_void;
        let filter = if wake {
            let f = super::wake::envoy_dynamic_module_on_network_filter_new(wake_cfg, fptr);
            super::wake::envoy_dynamic_module_on_network_filter_new_connection(fptr, f);
            Some(f)
        } else {
            None
        };

        let client_thread = std::thread::spawn(move || {
            let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
            b.set_verify(SslVerifyMode::NONE);
            b.set_alpn_protos(b"\x08http/1.1").unwrap();
            let c = b.build();
            let mut s = c.connect("fake-envoy.test", client).unwrap();
            s.write_all(b"ping").unwrap();
            let mut reply = [0u8; 4];
            s.read_exact(&mut reply).unwrap();
            let alpn = s.ssl().selected_alpn_protocol().map(<[u8]>::to_vec);
            let _ = s.shutdown();
            (reply, alpn)
        });

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut replied = false;
        let mut woken = 0;
        let mut end = false;
        while !end {
            assert!(Instant::now() < deadline, "the connection did not finish");
            // Envoy's event loop: a scheduled event, the fd, or a readable mark.
            if let Ok(ev) = rx.try_recv() {
                assert_eq!(ev, id, "the event names the connection");
                woken += 1;
                super::wake::envoy_dynamic_module_on_network_filter_scheduled(
                    fptr,
                    filter.unwrap(),
                    ev,
                );
            }
            let mut p = libc::pollfd {
                fd: fake.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut p, 1, 5);
            if p.revents != 0 || fake.readable {
                fake.readable = false;
                let r: IoResult =
                    super::envoy_dynamic_module_on_transport_socket_do_read(envoy, socket);
                assert_eq!(r.action, abi::post_io_action::KEEP_OPEN, "do_read closed");
                end = r.end_stream_read;
            }
            if !replied && fake.read_buf.ends_with(b"ping") {
                fake.write_buf.extend_from_slice(b"pong");
                replied = true;
            }
            let w = super::envoy_dynamic_module_on_transport_socket_do_write(envoy, socket, false);
            assert_eq!(w.action, abi::post_io_action::KEEP_OPEN, "do_write closed");
        }
        let (reply, alpn) = client_thread.join().unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(fake.events, vec![abi::connection_event::CONNECTED]);
        // The engine's operation finished on another thread and woke the connection
        // through the filter's scheduler (never without the filter, nor in boring mode).
        let engine = key_provider.contains("engine");
        assert_eq!(woken > 0, wake && engine, "scheduled wake-ups: {woken}");
        let mut proto = ModuleBuffer::null();
        super::envoy_dynamic_module_on_transport_socket_get_protocol(envoy, socket, &mut proto);
        assert_eq!(
            std::slice::from_raw_parts(proto.ptr.cast::<u8>(), proto.length),
            b"http/1.1"
        );
        super::envoy_dynamic_module_on_transport_socket_close(envoy, socket, 0);
        super::envoy_dynamic_module_on_transport_socket_destroy(socket);
        if let Some(f) = filter {
            super::wake::envoy_dynamic_module_on_network_filter_destroy(f);
        }
        super::envoy_dynamic_module_on_transport_socket_factory_config_destroy(factory);
        super::wake::envoy_dynamic_module_on_network_filter_config_destroy(wake_cfg);
        drop(server);
    }
}

#[test]
fn rsa_on_the_engine_resumed_through_the_scheduler() {
    serve_one(
        KeyType::Rsa { bits: 2048 },
        r#"{"mode": "engine", "backend": "software"}"#,
        true,
        101,
    );
}

#[test]
fn ecdsa_on_the_engine_resumed_through_the_scheduler() {
    serve_one(
        KeyType::EcP256,
        r#"{"mode": "engine", "backend": "software"}"#,
        true,
        102,
    );
}

#[test]
fn boring_mode() {
    serve_one(KeyType::EcP256, r#"{"mode": "boring"}"#, true, 103);
}

#[test]
fn without_tls_wake_the_operation_runs_inline() {
    serve_one(
        KeyType::EcP256,
        r#"{"mode": "engine", "backend": "software"}"#,
        false,
        104,
    );
}
