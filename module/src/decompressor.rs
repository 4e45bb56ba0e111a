//! `filter_name: decompressor`: gzip request bodies decoded by the core's bounded
//! [`Decompressor`] before they reach the upstream.
//!
//! A deliberate difference from Envoy's own decompressor filter: Envoy streams the
//! decoded body to the upstream and, on corrupt data or an excessive inflate ratio, stops
//! decoding and forwards what it has (the upstream gets a truncated body and a normal
//! end of stream). This filter holds the request headers until the whole body is decoded
//! and checked, so the upstream gets either the complete decoded body, with its exact
//! Content-Length, or nothing: corrupt or truncated gzip is answered with 400, a body
//! over `max_output_bytes` or `max_inflate_ratio` with 413. The decoded body is held in
//! Envoy's request buffer, so Envoy's own buffer limit (413) also applies.

use std::sync::Arc;

use envoy_qat::compress::{DecompressError, DecompressLimits, Decompressor, Format};

use crate::abi::{self, body_status, body_type, header_type, headers_status, trailers_status};
use crate::config::DecompressorFilterConfig;
use crate::envoy::{define_counter, Stream};

const REQ: u32 = header_type::REQUEST_HEADER;
/// `StopIterationNoBuffer`: after a local reply, nothing more goes anywhere.
const STOP_NO_BUFFER: u32 = 3;

pub const STATS: &[&str] = &[
    "decompressed",
    "not_decompressed",
    "total_compressed_bytes",
    "total_uncompressed_bytes",
    "rejected_corrupt",
    "rejected_too_large",
];

#[derive(Clone, Copy)]
enum S {
    Decompressed = 0,
    NotDecompressed,
    TotalCompressed,
    TotalUncompressed,
    RejectedCorrupt,
    RejectedTooLarge,
}

pub struct ConfigState {
    pub cfg: DecompressorFilterConfig,
    counters: Vec<Option<usize>>,
}

impl ConfigState {
    /// # Safety
    /// `envoy_config` is the `filter_config_envoy_ptr` of the `config_new` hook being run.
    pub unsafe fn new(
        api: &'static abi::Api,
        envoy_config: abi::ConfigEnvoyPtr,
        cfg: DecompressorFilterConfig,
    ) -> Self {
        let counters = STATS
            .iter()
            .map(|n| {
                // SAFETY: per this function's contract.
                unsafe { define_counter(api, envoy_config, &format!("decompressor.{n}")) }
            })
            .collect();
        Self { cfg, counters }
    }

    fn count(&self, s: &Stream, which: S, n: u64) {
        s.count(self.counters.get(which as usize).copied().flatten(), n);
    }
}

pub struct DecompressorFilter {
    config: Arc<ConfigState>,
    decoder: Option<Decompressor>,
    decoded: u64,
    done: bool,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl DecompressorFilter {
    pub fn new(config: Arc<ConfigState>) -> Self {
        Self {
            config,
            decoder: None,
            decoded: 0,
            done: false,
            scratch: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn on_request_headers(&mut self, s: &Stream, end_of_stream: bool) -> u32 {
        let cfg = &self.config.cfg;
        if cfg.advertise_accept_encoding {
            match s.header(REQ, "accept-encoding") {
                Some(v) if has_gzip(&v) => {}
                Some(mut v) => {
                    v.extend_from_slice(b",gzip");
                    s.set_header(REQ, "accept-encoding", &v);
                }
                None => {
                    s.set_header(REQ, "accept-encoding", b"gzip");
                }
            }
        }
        // As Envoy's decompressor: the first listed coding decides; the rest stays.
        let (gzip, rest) = match s.header(REQ, "content-encoding") {
            Some(v) => {
                let v = String::from_utf8_lossy(&v).to_string();
                let (first, rest) = v.split_once(',').unwrap_or((&v, ""));
                (
                    first.trim().eq_ignore_ascii_case("gzip"),
                    rest.trim().to_string(),
                )
            }
            None => (false, String::new()),
        };
        let no_transform = s.header_values(REQ, "cache-control").iter().any(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("no-transform"))
        });
        if end_of_stream || !gzip || no_transform {
            self.config.count(s, S::NotDecompressed, 1);
            return headers_status::CONTINUE;
        }
        if rest.is_empty() {
            s.remove_header(REQ, "content-encoding");
        } else {
            s.set_header(REQ, "content-encoding", rest.as_bytes());
        }
        s.remove_header(REQ, "content-length");
        self.decoder = Some(Decompressor::new(
            Format::Gzip,
            DecompressLimits {
                max_output: cfg.max_output_bytes,
                max_ratio: cfg.max_inflate_ratio,
                ratio_grace: 1 << 20,
            },
        ));
        self.config.count(s, S::Decompressed, 1);
        // Hold the headers until the body has been decoded and checked.
        headers_status::STOP_ITERATION
    }

    pub fn on_request_body(&mut self, s: &Stream, end_of_stream: bool) -> u32 {
        if self.decoder.is_none() || self.done {
            return body_status::CONTINUE;
        }
        let mut input = std::mem::take(&mut self.scratch);
        s.body(body_type::RECEIVED_REQUEST, &mut input);
        s.drain(body_type::RECEIVED_REQUEST, input.len());
        self.out.clear();
        let r = match self.decoder.as_mut() {
            Some(d) => d.decompress(&input, &mut self.out),
            None => Ok(()),
        };
        self.config.count(s, S::TotalCompressed, input.len() as u64);
        input.clear();
        self.scratch = input;
        if let Err(e) = r {
            return self.reject(s, e);
        }
        self.config
            .count(s, S::TotalUncompressed, self.out.len() as u64);
        self.decoded += self.out.len() as u64;
        s.append(body_type::RECEIVED_REQUEST, &self.out);
        if end_of_stream {
            return self.finish(s);
        }
        body_status::STOP_ITERATION_AND_BUFFER
    }

    pub fn on_request_trailers(&mut self, s: &Stream) -> u32 {
        if self.decoder.is_none() || self.done {
            return trailers_status::CONTINUE;
        }
        if self.finish(s) == body_status::CONTINUE {
            trailers_status::CONTINUE
        } else {
            trailers_status::STOP_ITERATION
        }
    }

    fn finish(&mut self, s: &Stream) -> u32 {
        let r = match self.decoder.as_mut() {
            // An empty body stays empty (Envoy's decompressor forwards it too).
            Some(d) if d.total_in() == 0 => Ok(()),
            Some(d) => d.finish(),
            None => Ok(()),
        };
        if let Err(e) = r {
            return self.reject(s, e);
        }
        self.done = true;
        s.set_header(REQ, "content-length", self.decoded.to_string().as_bytes());
        body_status::CONTINUE
    }

    fn reject(&mut self, s: &Stream, e: DecompressError) -> u32 {
        self.done = true;
        let (status, which, details) = match e {
            DecompressError::TooLarge { .. } | DecompressError::RatioExceeded { .. } => (
                413,
                S::RejectedTooLarge,
                "envoy_qat_module_decompressed_body_too_large",
            ),
            _ => (
                400,
                S::RejectedCorrupt,
                "envoy_qat_module_corrupt_gzip_body",
            ),
        };
        self.config.count(s, which, 1);
        let body = format!(
            "request body (Content-Encoding: gzip): {e}; send a complete, valid gzip body{}\n",
            if status == 413 {
                " within the decompressor's max_output_bytes / max_inflate_ratio"
            } else {
                ""
            }
        );
        abi::log(
            abi::log_level::DEBUG,
            &format!("envoy-qat module: {status}: {body}"),
        );
        s.send_response(status, &body, details);
        STOP_NO_BUFFER
    }
}

fn has_gzip(v: &[u8]) -> bool {
    String::from_utf8_lossy(v).split(',').any(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("gzip")
    })
}
