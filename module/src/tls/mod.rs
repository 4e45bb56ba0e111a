//! `transport_socket_name: tls`: downstream TLS 1.2/1.3 termination inside stock Envoy
//! 1.40 (`envoy.transport_sockets.dynamic_modules`), with private-key operations on our
//! engine (QAT when usable; BoringSSL on the module's threads otherwise and as the
//! per-operation failover) or held by BoringSSL (`key_provider.mode: boring`).
//!
//! BoringSSL is the `boring` crate's, built into the module; its symbols stay inside the
//! `.so`. The socket reads and writes the connection's fd through Envoy's raw I/O
//! callbacks, and hands plaintext to Envoy's read buffer / takes it from the write
//! buffer, as Envoy's own TLS socket does. A key operation in flight makes the handshake
//! return "retry"; the `tls_wake` network filter ([`wake`]) resumes it on the
//! connection's worker when the engine finishes.

pub mod config;
pub mod keys;
pub mod stats;
pub mod wake;

#[cfg(test)]
mod fake_envoy_tests;

use std::ffi::c_void;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use boring::error::ErrorStack;
use boring::ex_data::Index;
use boring::hash::MessageDigest;
use boring::ssl::{
    AlpnError, ErrorCode, NameType, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode,
    SslOptions, SslStream, SslVersion, TicketKeyCallbackResult,
};
use boring::symm::Cipher;
use boring::x509::X509;
use envoy_qat::engine::Engine;

use crate::abi::{
    self, connection_event, io_status, log_level, post_io_action, EnvoyBuffer, IoResult,
    ModuleBuffer, SocketEnvoyPtr,
};
use config::{DataSource, KeyMode, TlsSocketConfig, TlsVersion};
use stats::{Counter, Gauge};
use wake::Conn;

/// The transport socket's name (`transport_socket_name`).
pub const SOCKET_NAME: &str = "tls";

/// The SSL ex_data slot holding a connection's [`Conn`].
pub fn conn_index() -> Index<Ssl, Arc<Conn>> {
    static I: OnceLock<Index<Ssl, Arc<Conn>>> = OnceLock::new();
    *I.get_or_init(|| Ssl::new_ex_index().expect("an SSL ex_data index"))
}

fn engines() -> &'static Mutex<std::collections::HashMap<String, Engine>> {
    static E: OnceLock<Mutex<std::collections::HashMap<String, Engine>>> = OnceLock::new();
    E.get_or_init(Default::default)
}

/// One engine per distinct `key_provider` setting, shared by every socket config (one
/// QAT start, one poll thread).
fn engine_for(cfg: &TlsSocketConfig) -> Result<Engine, String> {
    let key = format!("{:?}", cfg.provider);
    let mut m = engines().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = m.get(&key) {
        return Ok(e.clone());
    }
    let software: Arc<dyn envoy_qat::backend::Backend> =
        Arc::new(keys::boring_backend(cfg.provider.soft_threads));
    let e = cfg
        .provider
        .build_engine_with(Some(software))
        .map_err(|e| format!("key_provider.{}: {}", e.field, e.problem))?;
    abi::log(
        log_level::INFO,
        &format!("envoy-qat tls: private-key engine {}", e.backend_name()),
    );
    m.insert(key, e.clone());
    Ok(e)
}

fn ssl_err(what: &str, e: ErrorStack) -> String {
    format!("{what}: {e}")
}

fn version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::V1_0 => SslVersion::TLS1,
        TlsVersion::V1_1 => SslVersion::TLS1_1,
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }
}

fn source_name(d: &DataSource) -> String {
    match d {
        DataSource::File(p) => p.display().to_string(),
        DataSource::Inline(_) => "inline_string".into(),
    }
}

/// Envoy's session ticket key: name 16, HMAC-SHA256 key 32, AES-256-CBC key 32.
const TICKET_KEY_LEN: usize = 80;

fn ticket_callback(b: &mut SslContextBuilder, keys: Vec<[u8; TICKET_KEY_LEN]>) {
    let cb = move |_: &boring::ssl::SslRef,
                   name: &mut [u8; 16],
                   iv: &mut [u8; 16],
                   cctx: &mut boring::symm::CipherCtxRef,
                   hctx: &mut boring::hmac::HmacCtxRef,
                   encrypt: bool| {
        let init = |k: &[u8; TICKET_KEY_LEN],
                    cctx: &mut boring::symm::CipherCtxRef,
                    hctx: &mut boring::hmac::HmacCtxRef,
                    iv: &[u8; 16]| {
            let c = if encrypt {
                cctx.init_encrypt(&Cipher::aes_256_cbc(), &k[48..80], iv)
            } else {
                cctx.init_decrypt(&Cipher::aes_256_cbc(), &k[48..80], iv)
            };
            c.is_ok() && hctx.init(&k[16..48], &MessageDigest::sha256()).is_ok()
        };
        if encrypt {
            let k = &keys[0];
            name.copy_from_slice(&k[..16]);
            if boring::rand::rand_bytes(iv).is_err() || !init(k, cctx, hctx, iv) {
                return TicketKeyCallbackResult::Error;
            }
            TicketKeyCallbackResult::Success
        } else {
            match keys.iter().position(|k| k[..16] == name[..]) {
                None => TicketKeyCallbackResult::Noop,
                Some(i) => {
                    if !init(&keys[i], cctx, hctx, iv) {
                        return TicketKeyCallbackResult::Error;
                    }
                    if i == 0 {
                        TicketKeyCallbackResult::Success
                    } else {
                        TicketKeyCallbackResult::DecryptSuccessRenew
                    }
                }
            }
        }
    };
    // SAFETY: the callback initialises the name, IV, cipher and HMAC contexts as
    // SSL_CTX_set_tlsext_ticket_key_cb requires (AES-256-CBC + HMAC-SHA256, as Envoy).
    unsafe { b.set_ticket_key_callback(cb) };
}

/// Choose the first of our protocols that the client offers (ALPN, server preference,
/// as Envoy does).
fn select_alpn<'a>(ours: &[Vec<u8>], client: &'a [u8]) -> Option<&'a [u8]> {
    for p in ours {
        let mut rest = client;
        while let Some((&n, tail)) = rest.split_first() {
            let n = n as usize;
            if tail.len() < n {
                break;
            }
            if &tail[..n] == p.as_slice() {
                return Some(&tail[..n]);
            }
            rest = &tail[n..];
        }
    }
    None
}

/// Build the SSL_CTX a config describes (files read now).
fn build_context(cfg: &TlsSocketConfig, engine: Option<&Engine>) -> Result<SslContext, String> {
    const CHAIN: &str = "common_tls_context.tls_certificates[0].certificate_chain";
    const KEY: &str = "common_tls_context.tls_certificates[0].private_key";
    let chain_pem = cfg.cert_chain.read(CHAIN).map_err(|e| e.to_string())?;
    let key_pem = cfg.private_key.read(KEY).map_err(|e| e.to_string())?;
    let certs = X509::stack_from_pem(&chain_pem).map_err(|e| {
        format!(
            "{CHAIN} ({}): not a PEM certificate chain: {e}",
            source_name(&cfg.cert_chain)
        )
    })?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "{CHAIN} ({}): no certificate in it",
            source_name(&cfg.cert_chain)
        ));
    };
    let pair = keys::load_key(
        &key_pem,
        &format!("{KEY} ({})", source_name(&cfg.private_key)),
    )?;
    let public = leaf.public_key().map_err(|e| ssl_err(CHAIN, e))?;
    if !public.public_eq(&pair.boring) {
        return Err(format!(
            "{KEY} ({}) is not the key of the certificate in {CHAIN} ({})",
            source_name(&cfg.private_key),
            source_name(&cfg.cert_chain)
        ));
    }
    let mut b = SslContext::builder(SslMethod::tls()).map_err(|e| ssl_err("SSL_CTX_new", e))?;
    b.set_certificate(leaf).map_err(|e| ssl_err(CHAIN, e))?;
    for c in &certs[1..] {
        b.add_extra_chain_cert(c.clone())
            .map_err(|e| ssl_err(CHAIN, e))?;
    }
    match (&cfg.key_mode, engine) {
        (KeyMode::Engine, Some(engine)) => {
            keys::register(&pair);
            b.set_private_key_method(keys::EngineKeyMethod {
                engine: engine.clone(),
                key: Arc::new(pair),
            });
        }
        _ => {
            b.set_private_key(&pair.boring)
                .map_err(|e| ssl_err(KEY, e))?;
            b.check_private_key().map_err(|e| ssl_err(KEY, e))?;
        }
    }
    b.set_min_proto_version(Some(version(cfg.min_version)))
        .map_err(|e| ssl_err("tls_params.tls_minimum_protocol_version", e))?;
    b.set_max_proto_version(Some(version(cfg.max_version)))
        .map_err(|e| ssl_err("tls_params.tls_maximum_protocol_version", e))?;
    let ciphers = if cfg.cipher_suites.is_empty() {
        config::ENVOY_DEFAULT_CIPHERS.join(":")
    } else {
        cfg.cipher_suites.join(":")
    };
    b.set_cipher_list(&ciphers)
        .map_err(|e| ssl_err("common_tls_context.tls_params.cipher_suites", e))?;
    let curves = if cfg.ecdh_curves.is_empty() {
        config::ENVOY_DEFAULT_CURVES.join(":")
    } else {
        cfg.ecdh_curves.join(":")
    };
    b.set_curves_list(&curves)
        .map_err(|e| ssl_err("common_tls_context.tls_params.ecdh_curves", e))?;
    if !cfg.signature_algorithms.is_empty() {
        b.set_sigalgs_list(&cfg.signature_algorithms.join(":"))
            .map_err(|e| ssl_err("common_tls_context.tls_params.signature_algorithms", e))?;
    }
    if !cfg.alpn.is_empty() {
        let ours = cfg.alpn.clone();
        b.set_alpn_select_callback(move |_, client| {
            select_alpn(&ours, client).ok_or(AlpnError::NOACK)
        });
    }
    if cfg.disable_session_ticket {
        b.set_options(SslOptions::NO_TICKET);
    } else if !cfg.ticket_keys.is_empty() {
        let mut ks = Vec::new();
        for (i, d) in cfg.ticket_keys.iter().enumerate() {
            let field = format!("session_ticket_keys.keys[{i}]");
            let k = d.read(&field).map_err(|e| e.to_string())?;
            let k: [u8; TICKET_KEY_LEN] = k.as_slice().try_into().map_err(|_| {
                format!("{field} ({}): {} bytes; a session ticket key is exactly 80 bytes (e.g. openssl rand 80)", source_name(d), k.len())
            })?;
            ks.push(k);
        }
        ticket_callback(&mut b, ks);
    }
    b.set_session_id_context(b"envoy-qat-tls")
        .map_err(|e| ssl_err("session id context", e))?;
    b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    Ok(b.build())
}

struct CtxState {
    ctx: SslContext,
    stamps: [Option<(SystemTime, u64)>; 2],
    checked: Instant,
}

/// A `tls` transport socket factory config.
pub struct TlsFactory {
    cfg: TlsSocketConfig,
    engine: Option<Engine>,
    state: Mutex<CtxState>,
}

impl TlsFactory {
    fn new(cfg: TlsSocketConfig, validating: bool) -> Result<Self, String> {
        let engine = match cfg.key_mode {
            KeyMode::Engine if !validating => Some(engine_for(&cfg)?),
            _ => None,
        };
        let stamps = [cfg.cert_chain.stamp(), cfg.private_key.stamp()];
        let ctx = build_context(&cfg, engine.as_ref())?;
        Ok(TlsFactory {
            cfg,
            engine,
            state: Mutex::new(CtxState {
                ctx,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The current SSL_CTX; rebuilt when the certificate or key file changed (checked at
    /// most every `reload_interval`; a bad new file keeps the old context, and says so).
    fn context(&self) -> SslContext {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !self.cfg.reload_interval.is_zero() && s.checked.elapsed() >= self.cfg.reload_interval {
            s.checked = Instant::now();
            let stamps = [self.cfg.cert_chain.stamp(), self.cfg.private_key.stamp()];
            if stamps != s.stamps {
                s.stamps = stamps;
                match build_context(&self.cfg, self.engine.as_ref()) {
                    Ok(ctx) => {
                        s.ctx = ctx;
                        stats::inc(Counter::CertReloads);
                        abi::log(
                            log_level::INFO,
                            &format!(
                                "envoy-qat tls: reloaded {}",
                                source_name(&self.cfg.cert_chain)
                            ),
                        );
                    }
                    Err(e) => {
                        stats::inc(Counter::CertReloadFailures);
                        abi::log(
                            log_level::ERROR,
                            &format!("envoy-qat tls: certificate reload failed, keeping the previous one: {e}"),
                        );
                    }
                }
            }
        }
        s.ctx.clone()
    }
}

/// Reads and writes the connection's fd through Envoy's raw I/O callbacks.
struct EnvoyIo {
    ptr: usize,
    eof: bool,
}

impl Read for EnvoyIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let api = abi::api().map_err(io::Error::other)?;
        let mut n = 0usize;
        // SAFETY: the socket's Envoy pointer, used during one of its hooks; Envoy
        // writes at most buf.len() bytes into buf and one usize.
        let st = unsafe {
            (api.transport_socket_io_read)(
                self.ptr as SocketEnvoyPtr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut n,
            )
        };
        match st {
            io_status::SUCCESS => {
                if n == 0 && !buf.is_empty() {
                    self.eof = true;
                }
                Ok(n)
            }
            io_status::AGAIN => Err(io::ErrorKind::WouldBlock.into()),
            _ => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "recv failed",
            )),
        }
    }
}

impl Write for EnvoyIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let api = abi::api().map_err(io::Error::other)?;
        let mut n = 0usize;
        // SAFETY: as in read; Envoy reads buf.len() bytes.
        let st = unsafe {
            (api.transport_socket_io_write)(
                self.ptr as SocketEnvoyPtr,
                buf.as_ptr().cast(),
                buf.len(),
                &mut n,
            )
        };
        match st {
            io_status::SUCCESS => Ok(n),
            io_status::AGAIN => Err(io::ErrorKind::WouldBlock.into()),
            _ => Err(io::Error::new(io::ErrorKind::BrokenPipe, "send failed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One downstream connection's TLS.
pub struct TlsSocket {
    factory: Arc<TlsFactory>,
    envoy: usize,
    stream: Option<SslStream<EnvoyIo>>,
    conn: Option<Arc<Conn>>,
    handshake_done: bool,
    failed: bool,
    shutdown_sent: bool,
    protocol: Vec<u8>,
    failure: String,
}

enum Step {
    Done,
    Wait,
    Close,
}

impl TlsSocket {
    fn api(&self) -> Option<&'static abi::Api> {
        abi::api().ok()
    }

    fn setup(&mut self) {
        let Some(api) = self.api() else { return };
        let mut id = 0u64;
        // SAFETY: the socket's Envoy pointer during set_callbacks.
        let have_id = unsafe {
            (api.transport_socket_get_connection_id)(self.envoy as SocketEnvoyPtr, &mut id)
        };
        if !have_id {
            self.fail("no connection id from Envoy".into());
            return;
        }
        let conn = Conn::register(id, self.envoy as SocketEnvoyPtr);
        let ctx = self.factory.context();
        let ssl = Ssl::new(&ctx).map(|mut ssl| {
            ssl.set_ex_data(conn_index(), Arc::clone(&conn));
            ssl
        });
        match ssl.and_then(|ssl| {
            SslStream::new(
                ssl,
                EnvoyIo {
                    ptr: self.envoy,
                    eof: false,
                },
            )
        }) {
            Ok(s) => self.stream = Some(s),
            Err(e) => self.fail(format!("SSL_new: {e}")),
        }
        self.conn = Some(conn);
    }

    /// Whether the peer closed or reset the connection (a peek at the fd, nothing read).
    fn peer_gone(&self) -> bool {
        let Some(api) = self.api() else { return false };
        // SAFETY: the socket's Envoy pointer during one of its hooks.
        let fd = unsafe { (api.transport_socket_get_fd)(self.envoy as SocketEnvoyPtr) };
        if fd < 0 {
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: a 1-byte buffer we own; MSG_PEEK leaves the data for BoringSSL.
        let n = unsafe {
            libc::recv(
                fd,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
    }

    /// Publish the engines' fallbacks (see [`stats::publish_engine_fallbacks`]).
    fn publish_fallbacks(&self) {
        if self.factory.engine.is_some() {
            let total: u64 = engines()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(Engine::fallbacks)
                .sum();
            stats::publish_engine_fallbacks(total);
        }
    }

    fn fail(&mut self, why: String) {
        if !self.failed && !self.handshake_done {
            stats::inc(Counter::HandshakeFailures);
        }
        self.failed = true;
        abi::log(
            log_level::DEBUG,
            &format!("envoy-qat tls: connection failed: {why}"),
        );
        self.failure = why;
    }

    /// Drive the handshake.
    fn handshake(&mut self) -> Step {
        if self.handshake_done {
            return Step::Done;
        }
        if self.failed {
            return Step::Close;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Step::Close;
        };
        match stream.accept() {
            Ok(()) => {
                self.handshake_done = true;
                let ssl = stream.ssl();
                self.protocol = ssl.selected_alpn_protocol().unwrap_or_default().to_vec();
                stats::inc(Counter::Handshakes);
                match ssl.version2() {
                    Some(SslVersion::TLS1_3) => stats::inc(Counter::V1_3),
                    Some(SslVersion::TLS1_2) => stats::inc(Counter::V1_2),
                    _ => {}
                }
                if ssl.session_reused() {
                    stats::inc(Counter::Resumed);
                }
                abi::log(
                    log_level::DEBUG,
                    &format!(
                        "envoy-qat tls: handshake done: {} {} sni={} alpn={} resumed={}",
                        ssl.version_str(),
                        ssl.current_cipher().map_or("-", |c| c.name()),
                        ssl.servername(NameType::HOST_NAME).unwrap_or("-"),
                        String::from_utf8_lossy(&self.protocol),
                        ssl.session_reused()
                    ),
                );
                if let Some(api) = self.api() {
                    // SAFETY: the socket's Envoy pointer during one of its I/O hooks.
                    unsafe {
                        (api.transport_socket_raise_event)(
                            self.envoy as SocketEnvoyPtr,
                            connection_event::CONNECTED,
                        )
                    };
                }
                Step::Done
            }
            Err(e) => match e.code() {
                ErrorCode::WANT_PRIVATE_KEY_OPERATION => {
                    // Envoy calls do_read when the peer closes or resets, but BoringSSL
                    // does not read while a key operation is pending: look at the socket
                    // ourselves, so a client gone mid-handshake cancels its operation now
                    // instead of when the device answers.
                    if self.peer_gone() {
                        if let Some(c) = &self.conn {
                            c.cancel();
                        }
                        self.fail(
                            "peer closed while the private-key operation was in flight".into(),
                        );
                        return Step::Close;
                    }
                    Step::Wait
                }
                ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => Step::Wait,
                _ => {
                    let why = match (e.ssl_error(), e.io_error()) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(io)) => io.to_string(),
                        _ if stream.get_ref().eof => "peer closed during the handshake".into(),
                        _ => format!("handshake error {:?}", e.code()),
                    };
                    self.fail(why);
                    Step::Close
                }
            },
        }
    }

    /// Drive the handshake for an I/O hook: Err(result) when the hook must return it now
    /// (waiting, or closing); Ok(whether the handshake completed in this call).
    fn drive_handshake(&mut self) -> Result<bool, IoResult> {
        let was_done = self.handshake_done;
        let step = self.handshake();
        if !was_done && !matches!(step, Step::Wait) {
            self.publish_fallbacks();
        }
        match step {
            Step::Close => Err(IoResult::close(0)),
            Step::Wait => Err(IoResult::keep_open(0, false)),
            Step::Done => Ok(!was_done),
        }
    }

    fn do_read(&mut self) -> IoResult {
        let close = IoResult::close(0);
        let just_done = match self.drive_handshake() {
            Ok(d) => d,
            Err(r) => return r,
        };
        if just_done {
            self.flush_pending_writes();
        }
        let Some(api) = self.api() else { return close };
        let Some(stream) = self.stream.as_mut() else {
            return close;
        };
        let mut total = 0u64;
        let mut end_stream = false;
        let mut action = post_io_action::KEEP_OPEN;
        let mut buf = [0u8; 16384];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(0) => {
                    end_stream = true;
                    break;
                }
                Ok(n) => {
                    // SAFETY: the socket's Envoy pointer during do_read (the read buffer is
                    // Envoy's current one); n bytes of buf are initialised.
                    unsafe {
                        (api.transport_socket_read_buffer_add)(
                            self.envoy as SocketEnvoyPtr,
                            buf.as_ptr().cast(),
                            n,
                        )
                    };
                    total += n as u64;
                    // SAFETY: as above.
                    if unsafe {
                        (api.transport_socket_should_drain_read_buffer)(
                            self.envoy as SocketEnvoyPtr,
                        )
                    } {
                        // SAFETY: as above; Envoy calls do_read again later.
                        unsafe {
                            (api.transport_socket_set_is_readable)(self.envoy as SocketEnvoyPtr)
                        };
                        break;
                    }
                }
                Err(e) => {
                    match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                        ErrorCode::ZERO_RETURN => end_stream = true,
                        ErrorCode::SYSCALL if stream.get_ref().eof && e.ssl_error().is_none() => {
                            end_stream = true
                        }
                        _ => {
                            self.failure = e.to_string();
                            action = post_io_action::CLOSE;
                        }
                    }
                    break;
                }
            }
        }
        IoResult {
            action,
            bytes_processed: total,
            end_stream_read: end_stream,
        }
    }

    /// After the handshake: let Envoy write what it queued meanwhile.
    fn flush_pending_writes(&self) {
        if let Some(api) = self.api() {
            // SAFETY: the socket's Envoy pointer during one of its hooks.
            unsafe {
                if (api.transport_socket_write_buffer_length)(self.envoy as SocketEnvoyPtr) > 0 {
                    (api.transport_socket_flush_write_buffer)(self.envoy as SocketEnvoyPtr);
                }
            }
        }
    }

    fn do_write(&mut self, end_stream: bool) -> IoResult {
        let close = IoResult::close(0);
        let just_done = match self.drive_handshake() {
            Ok(d) => d,
            Err(r) => return r,
        };
        let Some(api) = self.api() else { return close };
        if just_done {
            // Application data may have arrived with the client's last flight.
            // SAFETY: the socket's Envoy pointer during do_write.
            unsafe { (api.transport_socket_set_is_readable)(self.envoy as SocketEnvoyPtr) };
        }
        let Some(stream) = self.stream.as_mut() else {
            return close;
        };
        let ptr = self.envoy as SocketEnvoyPtr;
        let mut total = 0u64;
        loop {
            // SAFETY: the socket's Envoy pointer during do_write (the write buffer is
            // Envoy's current one).
            let len = unsafe { (api.transport_socket_write_buffer_length)(ptr) };
            if len == 0 {
                break;
            }
            let mut slice = EnvoyBuffer::empty();
            let mut count = 1usize;
            // SAFETY: room for one slice; Envoy writes at most `count` of them.
            unsafe { (api.transport_socket_write_buffer_get_slices)(ptr, &mut slice, &mut count) };
            if count == 0 || slice.length == 0 {
                break;
            }
            // SAFETY: the slice stays valid until the buffer is drained below.
            let data = unsafe { slice.as_slice() };
            let data = &data[..data.len().min(16384)];
            match stream.ssl_write(data) {
                Ok(n) => {
                    // SAFETY: drains what BoringSSL took (n ≤ the slice's length).
                    unsafe { (api.transport_socket_write_buffer_drain)(ptr, n) };
                    total += n as u64;
                }
                Err(e) => match e.code() {
                    ErrorCode::WANT_WRITE | ErrorCode::WANT_READ => break,
                    _ => {
                        self.failure = e.to_string();
                        return IoResult::close(total);
                    }
                },
            }
        }
        // SAFETY: as above.
        let drained = unsafe { (api.transport_socket_write_buffer_length)(ptr) } == 0;
        if end_stream && !self.shutdown_sent && drained {
            self.shutdown_sent = true;
            let _ = stream.shutdown();
        }
        IoResult::keep_open(total, false)
    }

    fn close(&mut self) {
        if let Some(c) = &self.conn {
            c.cancel();
        }
        if self.handshake_done && !self.shutdown_sent {
            self.shutdown_sent = true;
            if let Some(s) = self.stream.as_mut() {
                let _ = s.shutdown();
            }
        }
    }
}

impl Drop for TlsSocket {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.unregister();
        }
        // The SSL (and its ex_data reference to the Conn) goes with the stream.
        self.stream = None;
        stats::gauge_add(Gauge::ConnectionsOpen, -1);
    }
}

static WAKE_CHECK: std::sync::Once = std::sync::Once::new();
static MISSING_WAKE_SAID: std::sync::Once = std::sync::Once::new();
const MISSING_WAKE: &str = "envoy-qat tls: the tls transport socket is configured but no \
    `tls_wake` network filter is (envoy.filters.network.dynamic_modules, filter_name: tls_wake, \
    first in each filter chain that uses the socket); without it private-key operations run \
    inline with BoringSSL on Envoy's workers";

/// A few seconds after the first `tls` config loads: no `tls_wake` config at all means a
/// listener is missing the filter. Say so then, not at the first slow handshake.
fn check_wake_filter_later() {
    WAKE_CHECK.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("envoy-qat-tls-check".into())
            .spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(2));
                if wake::wake_configs() == 0 {
                    MISSING_WAKE_SAID.call_once(|| abi::log(log_level::ERROR, MISSING_WAKE));
                }
            });
    });
}

/// Parse and build a `tls` config (also for `envoy-qat check`).
pub fn factory_from_config(
    name: &[u8],
    config: &[u8],
    is_upstream: bool,
    validating: bool,
) -> Result<TlsFactory, String> {
    if name != SOCKET_NAME.as_bytes() {
        return Err(format!(
            "unknown transport_socket_name {:?}; the module's transport socket is {SOCKET_NAME:?}",
            String::from_utf8_lossy(name)
        ));
    }
    if is_upstream {
        return Err(
            "the tls transport socket is for downstream (listener) connections only; \
                    use Envoy's envoy.transport_sockets.tls for clusters"
                .into(),
        );
    }
    let cfg = config::parse(config).map_err(|e| e.to_string())?;
    TlsFactory::new(cfg, validating)
}

/// # Safety
/// Envoy passes valid buffers for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_factory_config_new(
    _envoy: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
    is_upstream: bool,
) -> *const c_void {
    crate::guard(
        "transport_socket_factory_config_new",
        std::ptr::null(),
        || {
            // SAFETY: Envoy's buffers, valid for the call.
            let (n, c) = unsafe { (name.as_slice(), config.as_slice()) };
            // SAFETY: a resolved callback without arguments.
            let validating = abi::api().is_ok_and(|api| unsafe { (api.is_validation_mode)() });
            match factory_from_config(n, c, is_upstream, validating) {
                Ok(f) => {
                    if !validating {
                        check_wake_filter_later();
                    }
                    Arc::into_raw(Arc::new(f)) as *const c_void
                }
                Err(e) => {
                    abi::log(
                        log_level::ERROR,
                        &format!("envoy-qat tls: bad transport_socket_config: {e}"),
                    );
                    std::ptr::null()
                }
            }
        },
    )
}

/// # Safety
/// `config` is a pointer returned by factory_config_new, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_factory_config_destroy(
    config: *const c_void,
) {
    crate::guard("transport_socket_factory_config_destroy", (), || {
        if !config.is_null() {
            // SAFETY: our Arc from factory_config_new.
            drop(unsafe { Arc::from_raw(config as *const TlsFactory) });
        }
    })
}

/// # Safety
/// `config` is a live pointer returned by factory_config_new.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_new(
    config: *const c_void,
    envoy: SocketEnvoyPtr,
) -> *const c_void {
    crate::guard("transport_socket_new", std::ptr::null(), || {
        // SAFETY: a live Arc<TlsFactory> owned by Envoy's factory config; we add a count.
        let factory = unsafe {
            Arc::increment_strong_count(config as *const TlsFactory);
            Arc::from_raw(config as *const TlsFactory)
        };
        stats::gauge_add(Gauge::ConnectionsOpen, 1);
        Box::into_raw(Box::new(TlsSocket {
            factory,
            envoy: envoy as usize,
            stream: None,
            conn: None,
            handshake_done: false,
            failed: false,
            shutdown_sent: false,
            protocol: Vec::new(),
            failure: String::new(),
        })) as *const c_void
    })
}

/// # Safety
/// `socket` is a pointer returned by transport_socket_new, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_destroy(socket: *const c_void) {
    crate::guard("transport_socket_destroy", (), || {
        if !socket.is_null() {
            // SAFETY: our Box from transport_socket_new.
            drop(unsafe { Box::from_raw(socket as *mut TlsSocket) });
        }
    })
}

/// The socket behind a module pointer.
///
/// # Safety
/// `socket` is a live pointer returned by transport_socket_new; Envoy calls a socket's
/// hooks one at a time on its worker thread.
unsafe fn socket<'a>(socket: *const c_void) -> Option<&'a mut TlsSocket> {
    // SAFETY: per the contract above.
    unsafe { (socket as *mut TlsSocket).as_mut() }
}

/// # Safety
/// See [`socket`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_set_callbacks(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
) {
    crate::guard("transport_socket_set_callbacks", (), || {
        // SAFETY: per the hook's contract.
        if let Some(s) = unsafe { socket(s) } {
            s.setup();
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_transport_socket_on_connected(
    _envoy: SocketEnvoyPtr,
    _s: *const c_void,
) {
}

/// # Safety
/// See [`socket`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_do_read(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
) -> IoResult {
    let close = IoResult::close(0);
    crate::guard("transport_socket_do_read", close, || {
        // SAFETY: per the hook's contract.
        match unsafe { socket(s) } {
            Some(s) => s.do_read(),
            None => close,
        }
    })
}

/// # Safety
/// See [`socket`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_do_write(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
    end_stream: bool,
) -> IoResult {
    let close = IoResult::close(0);
    crate::guard("transport_socket_do_write", close, || {
        // SAFETY: per the hook's contract.
        match unsafe { socket(s) } {
            Some(s) => s.do_write(end_stream),
            None => close,
        }
    })
}

/// # Safety
/// See [`socket`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_close(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
    _event: u32,
) {
    crate::guard("transport_socket_close", (), || {
        // SAFETY: per the hook's contract.
        if let Some(s) = unsafe { socket(s) } {
            s.close();
        }
    })
}

/// # Safety
/// See [`socket`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_get_protocol(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
    out: *mut ModuleBuffer,
) {
    crate::guard("transport_socket_get_protocol", (), || {
        // SAFETY: per the hook's contract; Envoy copies the bytes before the next hook.
        if let (Some(s), Some(out)) = (unsafe { socket(s) }, unsafe { out.as_mut() }) {
            *out = if s.protocol.is_empty() {
                ModuleBuffer::null()
            } else {
                ModuleBuffer::of(&s.protocol)
            };
        }
    })
}

/// # Safety
/// See [`socket`]; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_get_failure_reason(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
    out: *mut ModuleBuffer,
) {
    crate::guard("transport_socket_get_failure_reason", (), || {
        // SAFETY: per the hook's contract; Envoy copies the bytes before the next hook.
        if let (Some(s), Some(out)) = (unsafe { socket(s) }, unsafe { out.as_mut() }) {
            *out = if s.failure.is_empty() {
                ModuleBuffer::null()
            } else {
                ModuleBuffer::of(s.failure.as_bytes())
            };
        }
    })
}

/// # Safety
/// See [`socket`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_transport_socket_can_flush_close(
    _envoy: SocketEnvoyPtr,
    s: *const c_void,
) -> bool {
    crate::guard("transport_socket_can_flush_close", true, || {
        // SAFETY: per the hook's contract.
        unsafe { socket(s) }.is_none_or(|s| s.handshake_done)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_transport_socket_start_secure_transport(
    _envoy: SocketEnvoyPtr,
    _s: *const c_void,
) -> bool {
    true
}
