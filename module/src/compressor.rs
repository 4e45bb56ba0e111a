//! `filter_name: compressor`: gzip response compression with the decisions of Envoy's
//! own compressor filter (`envoy.filters.http.compressor` with the gzip library),
//! request for request, and the compression done by the core's [`CompressorFactory`]
//! (zlib-rs, or QATzip on the module's own threads).
//!
//! The header rules follow Envoy's filter (read in its source, not copied): the response
//! is compressed when it is not the end of the stream, the client accepts gzip (q-values,
//! `identity`, `*`), Content-Length is absent or at least `min_content_length`, the
//! Content-Type is in the list, there is no `Cache-Control: no-transform`, no
//! Content-Encoding, no compressed Transfer-Encoding, no upgrade, an allowed status and
//! (with `disable_on_etag_header`) no ETag. Then Content-Length goes, Content-Encoding
//! becomes gzip, a strong ETag is removed and `Vary: Accept-Encoding` is added (also
//! whenever the response could have been compressed). Every body chunk ends with a sync
//! flush, so a client decodes all it has received; the end of the stream (or trailers)
//! writes the gzip trailer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_qat::compress::{Compressor, CompressorFactory, Mode};

use crate::abi::{self, body_status, body_type, header_type, headers_status, trailers_status};
use crate::config::CompressorFilterConfig;
use crate::envoy::{define_counter, Scheduler, Stream};
use crate::worker::{self, Job, Slot};

const RESP: u32 = header_type::RESPONSE_HEADER;

/// Compressed output held while a chain of jobs runs (the upstream sending faster than
/// the compressor) before it is sent regardless.
const HOLD_LIMIT: usize = 256 * 1024;

/// Counters, named like Envoy's compressor filter's, plus which path did the work.
pub const STATS: &[&str] = &[
    "compressed",
    "not_compressed",
    "no_accept_header",
    "header_identity",
    "header_compressor_used",
    "header_compressor_overshadowed",
    "header_wildcard",
    "header_not_valid",
    "total_uncompressed_bytes",
    "total_compressed_bytes",
    "content_length_too_small",
    "not_compressed_etag",
    "hardware_bytes",
    "software_bytes",
    "inline_chunks",
    "async_chunks",
    "errors",
    "qatzip_sessions_busy_bytes",
];

#[derive(Clone, Copy)]
enum S {
    Compressed = 0,
    NotCompressed,
    NoAcceptHeader,
    HeaderIdentity,
    HeaderCompressorUsed,
    HeaderCompressorOvershadowed,
    HeaderWildcard,
    HeaderNotValid,
    TotalUncompressed,
    TotalCompressed,
    ContentLengthTooSmall,
    NotCompressedEtag,
    HardwareBytes,
    SoftwareBytes,
    InlineChunks,
    AsyncChunks,
    Errors,
    SessionsBusyBytes,
}

/// Shared by every stream of one filter config.
pub struct ConfigState {
    pub cfg: CompressorFilterConfig,
    pub factory: CompressorFactory,
    counters: Vec<Option<usize>>,
    /// The factory's hardware / software input bytes already added to the counters.
    hw_published: AtomicU64,
    sw_published: AtomicU64,
    busy_published: AtomicU64,
    delay: Duration,
}

impl ConfigState {
    /// # Safety
    /// `envoy_config` is the `filter_config_envoy_ptr` of the `config_new` hook being run.
    pub unsafe fn new(
        api: &'static abi::Api,
        envoy_config: abi::ConfigEnvoyPtr,
        cfg: CompressorFilterConfig,
    ) -> Result<Self, String> {
        let factory = CompressorFactory::new(cfg.engine.clone()).map_err(|e| e.to_string())?;
        let counters = STATS
            .iter()
            .map(|n| {
                // SAFETY: per this function's contract.
                unsafe { define_counter(api, envoy_config, &format!("compressor.{n}")) }
            })
            .collect();
        let delay = std::env::var("ENVOY_QAT_MODULE_TEST_DELAY_MS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        abi::log(
            abi::log_level::INFO,
            &format!(
                "envoy-qat module: compressor level {} window_bits {} memory_level {} on {}{}",
                cfg.engine.compression_level,
                cfg.engine.window_bits,
                cfg.engine.memory_level,
                match factory.backend_name() {
                    "qatzip" => "QATzip (on the module's threads)",
                    _ => "zlib-rs (software)",
                },
                if delay.is_zero() {
                    String::new()
                } else {
                    format!(", test delay {delay:?} per asynchronous chunk")
                }
            ),
        );
        Ok(Self {
            cfg,
            factory,
            counters,
            hw_published: AtomicU64::new(0),
            sw_published: AtomicU64::new(0),
            busy_published: AtomicU64::new(0),
            delay,
        })
    }

    fn count(&self, s: &Stream, which: S, n: u64) {
        s.count(self.counters.get(which as usize).copied().flatten(), n);
    }

    /// Add the factory's new hardware / software bytes to the counters, exactly once
    /// whichever stream or thread gets here first.
    fn publish_paths(&self, s: &Stream) {
        let st = self.factory.stats();
        for (now, published, which) in [
            (st.hw_bytes_in, &self.hw_published, S::HardwareBytes),
            (st.sw_bytes_in, &self.sw_published, S::SoftwareBytes),
            (
                st.sessions_busy_bytes_in,
                &self.busy_published,
                S::SessionsBusyBytes,
            ),
        ] {
            let prev = published.fetch_max(now, Ordering::AcqRel);
            if now > prev {
                self.count(s, which, now - prev);
            }
        }
    }

    /// Whether chunks of this size go to the module's threads.
    fn asynchronous(&self, len: usize) -> bool {
        !self.delay.is_zero()
            || self.factory.backend_name() == "qatzip"
            || (self.cfg.software_async_min_bytes > 0 && len >= self.cfg.software_async_min_bytes)
    }
}

/// One response stream.
pub struct CompressorFilter {
    config: Arc<ConfigState>,
    accept_encoding: Option<Vec<u8>>,
    /// The stream's compressor; None when not compressing or while a job holds it.
    compressor: Option<Compressor>,
    compressing: bool,
    /// The job in flight, if any (at most one per stream keeps the order).
    inflight: Option<Slot>,
    scheduler: Option<Arc<Scheduler>>,
    events: u64,
    /// The end of the response (last data or trailers) has been seen.
    ended: bool,
    /// The job in flight ends the gzip member.
    final_inflight: bool,
    /// Iteration is stopped waiting for a job.
    stopped: bool,
    /// A failure after the headers left: the stream was reset.
    failed: bool,
    /// Compressed output held back until iteration continues (after the end of the
    /// stream, a job's output waits for the final job's).
    held: Vec<u8>,
    scratch: Vec<u8>,
}

impl CompressorFilter {
    pub fn new(config: Arc<ConfigState>) -> Self {
        Self {
            config,
            accept_encoding: None,
            compressor: None,
            compressing: false,
            inflight: None,
            scheduler: None,
            events: 0,
            ended: false,
            final_inflight: false,
            stopped: false,
            failed: false,
            held: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Whether the response headers already went out saying gzip (a failure must then
    /// reset the stream).
    pub fn committed(&self) -> bool {
        self.compressing
    }

    pub fn on_request_headers(&mut self, s: &Stream) -> u32 {
        self.accept_encoding = s.header(header_type::REQUEST_HEADER, "accept-encoding");
        if self.config.cfg.remove_accept_encoding_header && self.accept_encoding.is_some() {
            s.remove_header(header_type::REQUEST_HEADER, "accept-encoding");
        }
        headers_status::CONTINUE
    }

    pub fn on_response_headers(&mut self, s: &Stream, end_of_stream: bool) -> u32 {
        let c = &self.config;
        let cfg = &c.cfg;
        // Evaluated in the order Envoy evaluates them: the stats depend on it.
        let big_enough = match s.header(RESP, "content-length") {
            Some(v) => {
                let ok = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .is_some_and(|n| n >= cfg.min_content_length);
                if !ok {
                    c.count(s, S::ContentLengthTooSmall, 1);
                }
                ok
            }
            None => true,
        };
        let compressible = big_enough
            && !is_upgrade(s)
            && s.header(RESP, "content-type")
                .is_none_or(|t| cfg.content_type_allowed(&t))
            && !has_token(
                &s.header_values(RESP, "cache-control"),
                "no-transform",
                true,
            )
            && {
                let allowed = !(cfg.disable_on_etag_header && s.header(RESP, "etag").is_some());
                if !allowed {
                    c.count(s, S::NotCompressedEtag, 1);
                }
                allowed
            }
            && s.header(RESP, "content-encoding").is_none()
            && status_compressible(s, &cfg.uncompressible_response_codes);
        let compress = !end_of_stream
            && self.accept_encoding_allowed(s, big_enough)
            && compressible
            && transfer_encoding_allowed(s);
        if compress {
            if let Some(etag) = s.header(RESP, "etag") {
                if etag.len() > 2 && !(matches!(etag[0], b'w' | b'W') && etag[1] == b'/') {
                    s.remove_header(RESP, "etag");
                }
            }
            s.remove_header(RESP, "content-length");
            s.set_header(RESP, "content-encoding", b"gzip");
            c.count(s, S::Compressed, 1);
            self.compressor = Some(c.factory.create());
            self.compressing = true;
        } else {
            c.count(s, S::NotCompressed, 1);
        }
        if compressible {
            let vary = s.header_values(RESP, "vary");
            if vary.is_empty() {
                s.set_header(RESP, "vary", b"Accept-Encoding");
            } else {
                let joined = vary.join(&b","[..]);
                if !has_token(std::slice::from_ref(&joined), "Accept-Encoding", false) {
                    let mut v = joined;
                    v.extend_from_slice(b", Accept-Encoding");
                    s.set_header(RESP, "vary", &v);
                }
            }
        }
        headers_status::CONTINUE
    }

    /// Envoy's accept-encoding negotiation with one compressor (gzip) in the chain.
    fn accept_encoding_allowed(&self, s: &Stream, maybe: bool) -> bool {
        if !maybe {
            return false;
        }
        let c = &self.config;
        let Some(ae) = &self.accept_encoding else {
            c.count(s, S::NoAcceptHeader, 1);
            return false;
        };
        // Envoy registers the compressor for the response unless a Content-Type is there
        // and not in the list (an empty one is not in the list).
        let ct_ok = s
            .header(RESP, "content-type")
            .is_none_or(|t| c.cfg.content_type_allowed(&t));
        let (decision, used) = choose_encoding(&String::from_utf8_lossy(ae), ct_ok);
        let stat = match decision {
            Decision::Valid if used => S::HeaderCompressorUsed,
            Decision::Valid => S::HeaderCompressorOvershadowed,
            Decision::Identity => S::HeaderIdentity,
            Decision::Wildcard => S::HeaderWildcard,
            Decision::NotValid => S::HeaderNotValid,
        };
        c.count(s, stat, 1);
        used
    }

    pub fn on_response_body(&mut self, s: &Stream, end_of_stream: bool) -> u32 {
        if !self.compressing || self.failed {
            return body_status::CONTINUE;
        }
        if end_of_stream {
            self.ended = true;
        }
        if self.inflight.is_some() {
            // Envoy keeps the chunk (and applies its flow control) until the job is done.
            self.stopped = true;
            return body_status::STOP_ITERATION_AND_WATERMARK;
        }
        let mut input = std::mem::take(&mut self.scratch);
        if !s.body(body_type::RECEIVED_RESPONSE, &mut input) {
            return self.fail(s, "cannot read the response body");
        }
        s.drain(body_type::RECEIVED_RESPONSE, input.len());
        let mode = if end_of_stream {
            Mode::Finish
        } else {
            Mode::Flush
        };
        if self.config.asynchronous(input.len()) {
            if self.submit(s, input, mode) {
                self.stopped = true;
                return body_status::STOP_ITERATION_AND_WATERMARK;
            }
            return self.fail(s, "cannot queue the chunk for the compression threads");
        }
        match self.compress_inline(s, &mut input, mode) {
            Ok(()) => {
                // Output of an earlier job still waiting (see on_scheduled) goes first.
                if !self.held.is_empty() {
                    s.append(body_type::RECEIVED_RESPONSE, &self.held);
                    self.held.clear();
                }
                s.append(body_type::RECEIVED_RESPONSE, &input);
                input.clear();
                self.scratch = input;
                body_status::CONTINUE
            }
            Err(e) => self.fail(s, &e),
        }
    }

    pub fn on_response_trailers(&mut self, s: &Stream) -> u32 {
        if !self.compressing || self.failed {
            return trailers_status::CONTINUE;
        }
        self.ended = true;
        if self.inflight.is_some() {
            // The job's completion finishes the member and continues with the trailers.
            self.stopped = true;
            return trailers_status::STOP_ITERATION;
        }
        let mut out = Vec::new();
        match self.compress_inline(s, &mut out, Mode::Finish) {
            Ok(()) => {
                // In the trailers hook Envoy hands added data straight to the next filters.
                let mut all = std::mem::take(&mut self.held);
                all.extend_from_slice(&out);
                s.append(body_type::BUFFERED_RESPONSE, &all);
                trailers_status::CONTINUE
            }
            Err(e) => {
                self.fail(s, &e);
                trailers_status::STOP_ITERATION
            }
        }
    }

    fn compress_inline(&mut self, s: &Stream, buf: &mut Vec<u8>, mode: Mode) -> Result<(), String> {
        let Some(comp) = self.compressor.as_mut() else {
            return Err("no compressor for the stream".into());
        };
        if comp.is_finished() {
            buf.clear();
            return Ok(());
        }
        let n = buf.len() as u64;
        comp.compress(buf, mode).map_err(|e| e.to_string())?;
        let c = &self.config;
        c.count(s, S::TotalUncompressed, n);
        c.count(s, S::TotalCompressed, buf.len() as u64);
        c.count(s, S::InlineChunks, 1);
        c.publish_paths(s);
        Ok(())
    }

    fn submit(&mut self, s: &Stream, input: Vec<u8>, mode: Mode) -> bool {
        let Some(compressor) = self.compressor.take() else {
            return false;
        };
        if self.scheduler.is_none() {
            self.scheduler = Scheduler::new(s).map(Arc::new);
        }
        let Some(scheduler) = self.scheduler.clone() else {
            self.compressor = Some(compressor);
            return false;
        };
        self.events += 1;
        let slot: Slot = Arc::new(Mutex::new(None));
        self.config
            .count(s, S::TotalUncompressed, input.len() as u64);
        let job = Job {
            compressor,
            input,
            mode,
            slot: slot.clone(),
            scheduler,
            event: self.events,
            delay: self.config.delay,
        };
        match worker::submit(job) {
            Ok(()) => {
                self.inflight = Some(slot);
                self.final_inflight = mode == Mode::Finish;
                true
            }
            Err(job) => {
                self.compressor = Some(job.compressor);
                false
            }
        }
    }

    /// A job finished: its output goes out, and whatever arrived meanwhile is the next job.
    pub fn on_scheduled(&mut self, s: &Stream, event: u64) {
        if event != self.events {
            abi::log(
                abi::log_level::WARN,
                &format!(
                    "envoy-qat module: stale compression event {event} (current {})",
                    self.events
                ),
            );
            return;
        }
        let Some(slot) = self.inflight.take() else {
            return;
        };
        let done = match slot.lock() {
            Ok(mut g) => g.take(),
            Err(_) => None,
        };
        let Some(done) = done else {
            self.fail(s, "the compression job ended without a result");
            return;
        };
        self.compressor = Some(done.compressor);
        let out = match done.output {
            Ok(out) => out,
            Err(e) => {
                self.fail(s, &e.to_string());
                return;
            }
        };
        let c = self.config.clone();
        c.count(s, S::TotalCompressed, out.len() as u64);
        c.count(s, S::AsyncChunks, 1);
        c.publish_paths(s);
        self.held.extend_from_slice(&out);
        if !self.stopped {
            // Iteration went on while this job ran and no chunk came since (a chunk would
            // have stopped it): Envoy's buffer is empty and there is no way to send without
            // a stop to continue from. The output waits for the stream's next chunk,
            // trailers or end, which are certain to come since the end was not seen.
            return;
        }
        // Envoy's buffer holds only raw bytes that arrived while the job ran: output is kept
        // here until the moment iteration continues, never mixed into that buffer.
        let mut raw = std::mem::take(&mut self.scratch);
        s.body(body_type::BUFFERED_RESPONSE, &mut raw);
        if !raw.is_empty() || (self.ended && !self.final_inflight) {
            s.drain(body_type::BUFFERED_RESPONSE, raw.len());
            let mode = if self.ended {
                Mode::Finish
            } else {
                Mode::Flush
            };
            if !self.submit(s, raw, mode) {
                self.fail(s, "cannot queue the chunk for the compression threads");
                return;
            }
            if !self.ended && self.held.len() >= HOLD_LIMIT {
                // Bound what waits here: send it now and let the new job run while
                // iteration goes on (the next chunk stops it again).
                self.release(s);
            }
            return;
        }
        raw.clear();
        self.scratch = raw;
        self.release(s);
    }

    /// Hand the held output to Envoy and resume iteration.
    fn release(&mut self, s: &Stream) {
        if !s.append(body_type::BUFFERED_RESPONSE, &self.held) {
            self.fail(s, "Envoy refused the compressed bytes");
            return;
        }
        self.held.clear();
        self.continue_if_stopped(s);
    }

    fn continue_if_stopped(&mut self, s: &Stream) {
        if self.stopped {
            self.stopped = false;
            s.continue_encoding();
        }
    }

    /// A failure after the headers said gzip: reset the stream, never send a corrupt body.
    pub fn fail(&mut self, s: &Stream, why: &str) -> u32 {
        self.failed = true;
        self.config.count(s, S::Errors, 1);
        abi::log(
            abi::log_level::ERROR,
            &format!("envoy-qat module: compressor: {why}; resetting the stream"),
        );
        s.reset("envoy_qat_module_compression_failed");
        body_status::STOP_ITERATION_AND_BUFFER
    }
}

fn is_upgrade(s: &Stream) -> bool {
    s.header(RESP, "upgrade").is_some()
        && has_token(&s.header_values(RESP, "connection"), "upgrade", true)
}

fn status_compressible(s: &Stream, uncompressible: &[u32]) -> bool {
    if uncompressible.is_empty() {
        return true;
    }
    match s
        .header(RESP, ":status")
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
    {
        Some(code) => !uncompressible.contains(&code),
        None => true,
    }
}

fn transfer_encoding_allowed(s: &Stream) -> bool {
    !has_any_token(
        &s.header_values(RESP, "transfer-encoding"),
        &["gzip", "br", "deflate", "compress", "zstd"],
    )
}

/// Whether a comma-separated header (all its values) holds `token` (trimmed).
fn has_token(values: &[Vec<u8>], token: &str, ignore_case: bool) -> bool {
    values.iter().any(|v| {
        String::from_utf8_lossy(v).split(',').any(|t| {
            let t = t.trim();
            if ignore_case {
                t.eq_ignore_ascii_case(token)
            } else {
                t == token
            }
        })
    })
}

fn has_any_token(values: &[Vec<u8>], tokens: &[&str]) -> bool {
    tokens.iter().any(|t| has_token(values, t, true))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Valid,
    Identity,
    Wildcard,
    NotValid,
}

/// Envoy's choice of encoding for one registered compressor (gzip): the decision and
/// whether gzip is used. `gzip_allowed` is false when the response's content type is
/// not in the list (Envoy then registers no compressor for it).
pub fn choose_encoding(accept_encoding: &str, gzip_allowed: bool) -> (Decision, bool) {
    let mut allowed = gzip_allowed;
    let mut pairs: Vec<(&str, f32)> = Vec::new();
    for token in accept_encoding.split(',').filter(|t| !t.is_empty()) {
        let name = token.split(';').next().unwrap_or("").trim();
        let mut q = 1.0f32;
        if let Some((_, params)) = token.split_once(';') {
            if let Some((k, v)) = params.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    match v.trim().parse::<f32>() {
                        Ok(x) => q = x,
                        Err(_) => continue,
                    }
                }
            }
        }
        pairs.push((name, q));
        if q == 0.0 && name == "gzip" {
            allowed = false;
        }
    }
    if pairs.is_empty() || !allowed {
        return (Decision::NotValid, false);
    }
    let mut choice: (&str, f32) = ("identity", 0.0);
    for &(name, q) in &pairs {
        if (name == "gzip" || name == "identity" || name == "*") && q > choice.1 {
            choice = (name, q);
        }
    }
    if choice.1 == 0.0 {
        return (Decision::NotValid, false);
    }
    match choice.0 {
        "identity" => (Decision::Identity, false),
        "*" => (Decision::Wildcard, true),
        _ => (Decision::Valid, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_matches_envoys_rules() {
        use Decision::*;
        for (ae, want) in [
            ("gzip", (Valid, true)),
            ("gzip;q=0", (NotValid, false)),
            ("*", (Wildcard, true)),
            ("identity", (Identity, false)),
            ("br, gzip;q=0.5", (Valid, true)),
            ("br", (NotValid, false)),
            ("deflate, gzip;q=0.5, identity;q=0.9", (Identity, false)),
            ("gzip;q=abc", (NotValid, false)),
            ("GZIP", (NotValid, false)),
            ("", (NotValid, false)),
            (" gzip ; q = 1 ", (Valid, true)),
            ("*;q=0.1, gzip;q=0.1", (Wildcard, true)),
        ] {
            assert_eq!(choose_encoding(ae, true), want, "{ae:?}");
        }
        assert_eq!(choose_encoding("gzip", false), (NotValid, false));
    }
}
