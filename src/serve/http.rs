//! The HTTP side of `serve`: hyper over the TLS stream, h2 or HTTP/1.1 by ALPN/preface,
//! gzip-compressed bodies.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::tls::TlsStream;
use super::ServerStats;
use crate::bridge::QatEngine;

/// When the server should stop.
pub(crate) struct Limits {
    pub(crate) requests: Option<u64>,
    pub(crate) done: Arc<tokio::sync::Notify>,
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) body: Bytes,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) limits: Limits,
    pub(crate) engine: Arc<QatEngine>,
    pub(crate) provider_mode: bool,
}

/// The response body: `size` bytes of readable, compressible text.
pub(crate) fn make_body(size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while v.len() < size {
        let _ = writeln!(
            v,
            "envoy-qat serve: line {i:08} of a compressible response body"
        );
        i += 1;
    }
    v.truncate(size);
    Bytes::from(v)
}

/// Gzip a whole response body (RFC 1952) through envoy-qat's streaming compressor, the
/// one Envoy's `qatzip` library uses: QATzip when a device is there, else zlib-rs.
pub fn gzip_body(data: &[u8]) -> std::io::Result<Vec<u8>> {
    static FACTORY: std::sync::OnceLock<Result<crate::compress::CompressorFactory, String>> =
        std::sync::OnceLock::new();
    let factory = FACTORY
        .get_or_init(|| {
            let cfg = crate::compress::CompressorConfig {
                compression_level: 6,
                ..Default::default()
            };
            crate::compress::CompressorFactory::new(cfg).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))?;
    crate::compress::gzip(factory, data).map_err(|e| std::io::Error::other(e.to_string()))
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = shared.stats.requests.fetch_add(1, Relaxed) + 1;
    if shared.limits.requests.is_some_and(|max| n >= max) {
        shared.limits.done.notify_one();
    }
    if req.uri().path() == "/stats" {
        let text = super::stats_text(&shared.stats, &shared.engine, shared.provider_mode);
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(r);
    }
    let gzip = accepts_gzip(&req);
    let mut r = if gzip {
        match gzip_body(&shared.body) {
            Ok(z) => {
                shared.stats.gzip_responses.fetch_add(1, Relaxed);
                let mut r = Response::new(Full::new(Bytes::from(z)));
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "gzip failed; sending the body uncompressed");
                Response::new(Full::new(shared.body.clone()))
            }
        }
    } else {
        Response::new(Full::new(shared.body.clone()))
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(VARY, HeaderValue::from_static("accept-encoding"));
    Ok(r)
}

/// Serve HTTP/1.1 or HTTP/2 on an established TLS connection until it closes.
pub(crate) async fn serve_connection(tls: TlsStream, shared: Arc<Shared>) {
    let alpn = tls.alpn();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if alpn == "h2" {
        builder = builder.http2_only();
    } else if alpn == "http/1.1" {
        builder = builder.http1_only();
    }
    let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
