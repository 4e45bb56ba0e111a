//! A TLS stream for tokio over cpp/ssl: BoringSSL drives a non-blocking socket, tokio's
//! `AsyncFd` tells us when the socket is ready, and during the handshake a private-key
//! operation's eventfd tells us when to call the handshake again.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use cxx::UniquePtr;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::bridge::ffi::{self, TlsConn, TlsContext};
use crate::bridge::{QatEngine, QatKey, TlsIo, TlsStatus};

// SAFETY: an SSL_CTX is safe to share between threads once configured (BoringSSL's
// documented thread-safety: SSL_new on one context from many threads), and we never
// reconfigure it after construction.
unsafe impl Send for TlsContext {}
// SAFETY: see above; every method we expose on it takes `&self` and only reads.
unsafe impl Sync for TlsContext {}
// SAFETY: an SSL may move between threads as long as one thread uses it at a time;
// `TlsConn` is reached only through `&mut`/`Pin<&mut>` of its single owner.
unsafe impl Send for TlsConn {}

/// A server TLS configuration (certificate chain plus how the key is used).
pub struct ServerContext {
    ctx: UniquePtr<TlsContext>,
}

impl ServerContext {
    /// Private-key operations go through our provider (`engine` with `key`).
    pub fn with_provider(
        cert_pem: &[u8],
        engine: &QatEngine,
        key: &QatKey,
    ) -> Result<Self, String> {
        ffi::tls_context_with_provider(cert_pem, engine, key)
            .map(|ctx| ServerContext { ctx })
            .map_err(|e| e.what().to_string())
    }

    /// BoringSSL holds the key and signs itself (Envoy's `fallback` path).
    pub fn with_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        ffi::tls_context_with_key(cert_pem, key_pem)
            .map(|ctx| ServerContext { ctx })
            .map_err(|e| e.what().to_string())
    }
}

/// A self-signed certificate (PEM) for a PEM private key, made with BoringSSL.
pub fn self_signed_cert(key_pem: &[u8], dns_name: &str, days: u32) -> Result<String, String> {
    ffi::self_signed_cert(key_pem, dns_name, days).map_err(|e| e.what().to_string())
}

/// Register an fd we do not own with tokio.
struct FdRef(RawFd);

impl AsRawFd for FdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Resolves when the peer has closed or reset `sock` ("closed the connection" or "reset the
/// connection (...)"); never resolves once the peer has sent data, which is left unread
/// for BoringSSL (a TLS 1.3 client may send its ChangeCipherSpec, or give up with an
/// alert, while the server signs). Used while a private-key operation is in flight, so
/// that a client that gives up does not keep the device busy for nothing.
async fn peer_gone(sock: &AsyncFd<TcpStream>) -> String {
    loop {
        let Ok(mut g) = sock.readable().await else {
            return std::future::pending().await;
        };
        match sock.get_ref().peek(&mut [0u8; 1]) {
            Ok(0) => return "closed the connection".into(),
            Ok(_) => return std::future::pending().await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => g.clear_ready(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return format!("reset the connection ({e})"),
        }
    }
}

/// One accepted TLS connection.
pub struct TlsStream {
    // Drop order is declaration order: the SSL (which may own a private-key eventfd and
    // uses the socket fd) goes before the socket is closed.
    conn: UniquePtr<TlsConn>,
    sock: AsyncFd<TcpStream>,
    _ctx: Arc<ServerContext>,
}

fn tls_error(conn: &TlsConn) -> io::Error {
    io::Error::other(conn.last_error())
}

impl TlsStream {
    /// Wrap an accepted, non-blocking socket; call [`TlsStream::handshake`] next.
    pub fn new(ctx: Arc<ServerContext>, sock: TcpStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let conn = ffi::tls_conn_new(&ctx.ctx, sock.as_raw_fd())
            .map_err(|e| io::Error::other(e.what().to_string()))?;
        Ok(TlsStream {
            conn,
            // SAFETY: the TcpStream owns a valid socket fd, which stays open and unchanged
            // while the AsyncFd owns the stream (it closes only when the AsyncFd drops).
            sock: unsafe {
                AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE)?
            },
            _ctx: ctx,
        })
    }

    /// Run the handshake; returns how many times it waited for a private-key operation.
    pub async fn handshake(&mut self) -> io::Result<u32> {
        let mut key_waits = 0;
        let mut st = self.conn.pin_mut().handshake();
        loop {
            match st.status {
                TlsStatus::Ok => return Ok(key_waits),
                TlsStatus::WantRead => {
                    let mut g = self.sock.readable().await?;
                    st = self.conn.pin_mut().handshake();
                    if st.status == TlsStatus::WantRead {
                        g.clear_ready();
                    }
                }
                TlsStatus::WantWrite => {
                    let mut g = self.sock.writable().await?;
                    st = self.conn.pin_mut().handshake();
                    if st.status == TlsStatus::WantWrite {
                        g.clear_ready();
                    }
                }
                TlsStatus::WantPrivateKey => {
                    key_waits += 1;
                    let fd = self.conn.private_key_fd();
                    if fd < 0 {
                        return Err(io::Error::other(
                            "handshake waits for a private-key operation but none is in flight",
                        ));
                    }
                    {
                        // Registered only while waiting: the eventfd closes when the
                        // operation completes inside the next handshake call.
                        // SAFETY: `fd` is the eventfd owned by the pending operation inside
                        // `self.conn`; it stays open until the next handshake call (which
                        // cannot run while `afd`, dropped at the end of this block, exists),
                        // or until `self.conn` drops, which also cannot happen meanwhile.
                        let afd = unsafe {
                            AsyncFd::register_with_interest(FdRef(fd), Interest::READABLE)?
                        };
                        tokio::select! {
                            r = afd.readable() => {
                                let _ready = r?;
                            }
                            why = peer_gone(&self.sock) => {
                                // Returning drops the connection's owner, and with it the
                                // SSL, which cancels the operation (the engine counts it).
                                return Err(io::Error::new(
                                    io::ErrorKind::ConnectionAborted,
                                    format!("the client {why} while its private-key operation was in flight; the operation is cancelled"),
                                ));
                            }
                        }
                    }
                    st = self.conn.pin_mut().handshake();
                }
                TlsStatus::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("during handshake: {}", self.conn.last_error()),
                    ))
                }
                _ => return Err(tls_error(&self.conn)),
            }
        }
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> String {
        self.conn.alpn()
    }

    /// Protocol version, cipher and signature scheme.
    pub fn describe(&self) -> String {
        self.conn.describe()
    }

    /// Retry `op` until it is done or the socket is not ready (then Pending).
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(Pin<&mut TlsConn>) -> TlsIo,
    ) -> Poll<io::Result<TlsIo>> {
        let mut io = op(self.conn.pin_mut());
        loop {
            match io.status {
                TlsStatus::WantRead => {
                    let mut g = ready!(self.sock.poll_read_ready(cx))?;
                    io = op(self.conn.pin_mut());
                    if io.status == TlsStatus::WantRead {
                        g.clear_ready();
                    }
                }
                TlsStatus::WantWrite => {
                    let mut g = ready!(self.sock.poll_write_ready(cx))?;
                    io = op(self.conn.pin_mut());
                    if io.status == TlsStatus::WantWrite {
                        g.clear_ready();
                    }
                }
                TlsStatus::Ok | TlsStatus::Closed => return Poll::Ready(Ok(io)),
                TlsStatus::WantPrivateKey => {
                    return Poll::Ready(Err(io::Error::other(
                        "private-key operation requested after the handshake",
                    )))
                }
                _ => return Poll::Ready(Err(tls_error(&self.conn))),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = {
            let dst = buf.initialize_unfilled();
            let io = ready!(this.poll_io(cx, |c| c.read(dst)))?;
            if io.status == TlsStatus::Closed {
                0
            } else {
                io.n
            }
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = ready!(this.poll_io(cx, |c| c.write(buf)))?;
        if io.status == TlsStatus::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Poll::Ready(Ok(io.n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A successful SSL_write has handed its record to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Best effort close_notify; then half-close the socket.
        let _ = this.conn.pin_mut().shutdown();
        let _ = this.sock.get_ref().shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}
