//! Envoy-style streaming gzip compression over QATzip and zlib-rs, and a bounded
//! decompressor.
//!
//! # The interface
//!
//! Envoy's compressor filter calls its compressor synchronously on the worker thread:
//! `compress(buffer, Flush | Finish)` replaces the buffer's contents with compressed
//! bytes. [`Compressor::compress`] has exactly those semantics:
//!
//! - the output of every call, appended to the output of the earlier calls, is one RFC
//!   1952 gzip member;
//! - after [`Mode::Flush`] everything written so far decodes (a byte-aligned flush point:
//!   zlib's sync flush on the software path, a full flush on the QATzip path);
//! - [`Mode::Finish`] writes the end of the deflate data and the gzip trailer; the
//!   compressor accepts no more calls after it.
//!
//! A [`CompressorFactory`] is shared by all streams of a filter config (one per
//! listener/route in Envoy); each HTTP stream creates one [`Compressor`].
//!
//! # Backends
//!
//! - **Software** (`backend: soft`): zlib-rs (the engine behind flate2's `zlib-rs`
//!   feature, used directly because its `Deflate` takes Envoy gzip's `memory_level`).
//!   Each stream owns a deflate state, created on the stream's first byte and freed at
//!   `Finish`; sync flushes keep the dictionary across flushes, as Envoy's gzip does.
//!   A zlib-rs state costs about 165 KB at Envoy gzip's defaults (window 12, memory
//!   level 5) and 380 KB at zlib's (15, 8): zlib-rs's hash head table is a fixed 128 KiB
//!   whatever the memory level (C zlib scales it down). So at most `max_stream_states`
//!   streams per factory (default 512) hold their own state; streams beyond that share
//!   the per-thread full-flush state described below and hold nothing between calls.
//! - **QATzip** (`backend: qatzip`, or `auto` when libqatzip loads): libqatzip.so.3 is
//!   opened at run time (never linked). QATzip sessions come from a process-wide pool
//!   that keeps at most one session per QAT DC instance in use at once: QATzip 1.3.1
//!   grabs a free instance per call and, when none is free, silently compresses in
//!   software, so calls beyond the instance count go to zlib-rs instead (faster than
//!   QATzip's fallback, and counted as `sessions_busy_bytes_in`); see [`qatzip`]'s docs.
//!   Each call's input goes through `qzCompressExt` in raw-deflate format with `last = 0`:
//!   QATzip ends every request with a full flush (`CPA_DC_FLUSH_FULL` on the device,
//!   `Z_FULL_FLUSH` in its software fallback), so each call yields self-contained,
//!   byte-aligned deflate blocks and streams can share sessions safely; we write the gzip
//!   header, the final empty block, the CRC-32 and the length ourselves. QATzip's stream
//!   API (`qzCompressStream`) was not used: it only emits output when its stream buffer
//!   fills or at `last = 1`, which ends the deflate stream — it cannot sync-flush — and it
//!   holds two `stream_buffer_size` buffers (256 KiB by default) per stream.
//!   Inputs smaller than `input_size_threshold` go to a per-thread zlib-rs state with a
//!   full flush per call, so a QATzip-mode stream holds no deflate state at all between
//!   calls: memory per idle stream is the size of [`Compressor`].
//!   With no device, QATzip's fallback is used for a first request, then zlib-rs
//!   directly, re-probing QATzip after 30 s, then at doubling intervals up to 10 min (see
//!   [`qatzip`]'s docs for why).
//!   Hardware bytes are the input a call added to the session's `total_in`, which QATzip
//!   advances on its device path only (checked at start-up; see [`qatzip`]);
//!   [`CompressStats`] counts hardware and software bytes. One log line (target
//!   `envoy_qat::compress`) says which path is in use.
//!
//! # Which level to pick
//!
//! Measured with `ci/bench-compress.sh` (`envoy-qat bench compress`, release build, one
//! thread, best of 3 runs on a shared 2-core machine; speeds vary ~20% between
//! invocations, sizes do not; 1 MiB Flush pieces). Web corpus (`ci/web-corpus.sh`:
//! 33.3 MB of real HTML, CSS, JS, JSON, SVG, text and XML, the content types Envoy's
//! compressor filter compresses by default); size and wall-clock speed relative to
//! `gzip -6` (ratio 6.40, 29.9 MB/s) measured in the same run, then the generated corpus
//! (synthetic text with 10% random bytes; `gzip -6` ratio 3.29):
//!
//! | compressor            | ratio | size/gzip-6 | speed/gzip-6 | generated: size, speed |
//! |-----------------------|-------|-------------|--------------|------------------------|
//! | gzip -1               | 5.02  | 1.275       | 2.4x         | 1.196, 2.1x            |
//! | pigz -6, 2 cores      | 6.41  | 1.000       | 2.2x         | 1.002, 2.1x            |
//! | zlib-rs level 1       | 4.08  | 1.570       | 10.3x        | 1.385, 7.5x            |
//! | zlib-rs level 2       | 5.29  | 1.210       | 5.6x         | 1.145, 4.7x            |
//! | zlib-rs level 3       | 5.81  | 1.103       | 4.6x         | 1.090, 3.9x            |
//! | zlib-rs level 4       | 6.12  | 1.047       | 3.6x         | 1.054, 2.9x            |
//! | zlib-rs level 5       | 6.33  | 1.011       | 3.0x         | 1.027, 2.1x            |
//! | zlib-rs level 6       | 6.41  | 1.000       | 2.2x         | 1.008, 1.5x            |
//! | zlib-rs level 7/8/9   | 6.49/6.54/6.52 | 0.99/0.98/0.98 | 1.4/0.9/1.1x | 0.99/0.99/1.00, 1.2/1.1/1.3x |
//! | QATzip fallback 1/6/9 | 4.84/6.00/6.09 | 1.32/1.07/1.05 | 3.9/1.3/0.6x | 1.19/1.03/1.02, 3.6/1.3/0.9x |
//!
//! Level 6 against `gzip -6` in 7 interleaved rounds: median 2.04-2.12x by CPU time on the
//! web corpus (three runs), 1.64-1.65x on the generated one, whose random tenth and
//! low-redundancy text are where zlib-rs gains least.
//!
//! zlib-rs level 1 compresses much worse than `gzip -1` (it uses a faster, greedier
//! strategy; on Rust sources 3.76 vs 4.52). **Use level 6** when size matters (within 1%
//! of `gzip -6`, about 2x its speed on web content) and **level 3** for speed (about 10%
//! larger than `gzip -6`, still smaller than `gzip -1`, about 4x `gzip -6`'s speed). Avoid level 1
//! unless CPU is all that counts; 7-9 cost up to 1.7x the time of 6 for 1% less size.
//! Upstream's proto default is level 1; envoy-qat keeps it for compatibility, so set
//! `compression_level` explicitly. QATzip's software fallback uses C zlib at the given
//! level, restarting the dictionary every hardware buffer (64 KiB), hence the 3% loss.

pub mod cli;
pub mod config;
pub mod decompress;
pub mod deflate;
pub mod qatzip;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zlib_rs::{Deflate, DeflateFlush};

pub use config::{CompressBackend, CompressConfigError, CompressorConfig, HardwareBufferSize};
pub use decompress::{DecompressError, DecompressLimits, Decompressor, Format};

use deflate::{deflate_into, new_raw_deflate, trailer, EMPTY_FINAL_BLOCK, GZIP_HEADER};

/// How a [`Compressor::compress`] call ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything compressed so far becomes decodable; the stream continues.
    Flush,
    /// End the stream: final block and gzip trailer.
    Finish,
}

/// A compression failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompressError {
    /// `compress` was called after `Finish`.
    AlreadyFinished,
    /// The configuration is invalid.
    Config(CompressConfigError),
    /// The QATzip backend was required but could not be used.
    QatzipUnavailable(String),
    /// The engine failed.
    Engine(String),
}

impl std::fmt::Display for CompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyFinished => write!(
                f,
                "compress called after Finish: create a new compressor for each stream"
            ),
            Self::Config(e) => write!(f, "{e}"),
            Self::QatzipUnavailable(e) => write!(
                f,
                "QATzip backend unavailable: {e}; set ENVOY_QATZIP_LIB to libqatzip.so.3 or use backend auto/soft"
            ),
            Self::Engine(e) => write!(f, "compression failed: {e}"),
        }
    }
}

impl std::error::Error for CompressError {}

/// Counters shared by all streams of a factory.
#[derive(Debug, Default)]
pub struct CompressStats {
    streams_created: AtomicU64,
    streams_finished: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    hw_bytes_in: AtomicU64,
    sw_bytes_in: AtomicU64,
    flushes: AtomicU64,
    errors: AtomicU64,
    deflate_states: AtomicU64,
    shared_state_streams: AtomicU64,
    qatzip_bytes_in: AtomicU64,
    sessions_busy_bytes_in: AtomicU64,
}

/// A point-in-time copy of [`CompressStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Streams created.
    pub streams_created: u64,
    /// Streams that reached `Finish`.
    pub streams_finished: u64,
    /// Uncompressed bytes accepted.
    pub bytes_in: u64,
    /// Compressed bytes produced (headers and trailers included).
    pub bytes_out: u64,
    /// Input bytes a QAT device compressed: what each QATzip call added to its session's
    /// `total_in`, which QATzip 1.1-1.3.1 advances only on its device path (not when it
    /// falls back to software for lack of a device or of a free instance). Exact when
    /// `hw_bytes_exact`, except that when a device request fails mid-call QATzip finishes
    /// that call in software and counts it all in `total_in`. When not `hw_bytes_exact`
    /// (a QATzip whose `total_in` also counts software), an upper bound: input of calls
    /// on sessions whose status is `QZ_OK`.
    pub hw_bytes_in: u64,
    /// Input bytes compressed in software (zlib-rs or QATzip's fallback).
    pub sw_bytes_in: u64,
    /// `Flush` calls.
    pub flushes: u64,
    /// Engine errors (each one was retried in software when possible).
    pub errors: u64,
    /// Per-stream deflate states alive now (software backend).
    pub deflate_states: u64,
    /// Streams that used the shared per-thread state because `max_stream_states` was
    /// reached (software backend).
    pub shared_state_streams: u64,
    /// Input bytes QATzip compressed (device or its own fallback); the rest of
    /// `sw_bytes_in` went through zlib-rs.
    pub qatzip_bytes_in: u64,
    /// Input bytes compressed with zlib-rs because every QATzip session allowed (one per
    /// DC instance) was in use (part of `sw_bytes_in`).
    pub sessions_busy_bytes_in: u64,
    /// Whether `hw_bytes_in` is exact (QATzip's `total_in` checked; false also before
    /// QATzip's first session and on the software backend).
    pub hw_bytes_exact: bool,
    /// Bytes a stream holds while idle before its first data: the `Compressor` itself.
    pub idle_stream_bytes_before_data: usize,
    /// Bytes a stream holds while idle after a `Flush` (software: plus its deflate state).
    pub idle_stream_bytes_after_flush: usize,
}

impl StatsSnapshot {
    /// Compressed size / uncompressed size inverse (uncompressed / compressed).
    pub fn ratio(&self) -> f64 {
        if self.bytes_out == 0 {
            0.0
        } else {
            self.bytes_in as f64 / self.bytes_out as f64
        }
    }
}

enum Engine {
    Software,
    Qatzip(Arc<qatzip::QatzipLib>),
}

struct FactoryInner {
    cfg: CompressorConfig,
    engine: Engine,
    stats: CompressStats,
}

/// Shared per filter config: holds the configuration, the backend (with its pooled
/// QATzip sessions) and the counters. Cheap to clone.
#[derive(Clone)]
pub struct CompressorFactory {
    inner: Arc<FactoryInner>,
}

impl CompressorFactory {
    /// Validate `cfg` and pick the backend: `auto` uses QATzip when libqatzip loads
    /// (`ENVOY_QATZIP_LIB` or the build's default path), else software.
    pub fn new(cfg: CompressorConfig) -> Result<Self, CompressError> {
        cfg.validate().map_err(CompressError::Config)?;
        let engine = match cfg.backend {
            CompressBackend::Software => Engine::Software,
            CompressBackend::Qatzip => Engine::Qatzip(
                qatzip::QatzipLib::load_default().map_err(CompressError::QatzipUnavailable)?,
            ),
            CompressBackend::Auto => match qatzip::QatzipLib::load_default() {
                Ok(l) => Engine::Qatzip(l),
                Err(e) => {
                    tracing::info!(target: "envoy_qat::compress", "compressor: libqatzip not loaded ({e}); using software (zlib-rs)");
                    Engine::Software
                }
            },
        };
        if let Engine::Software = engine {
            tracing::info!(
                target: "envoy_qat::compress",
                "compressor: software path (zlib-rs), level {}",
                cfg.compression_level
            );
        }
        Ok(Self {
            inner: Arc::new(FactoryInner {
                cfg,
                engine,
                stats: CompressStats::default(),
            }),
        })
    }

    /// A QATzip factory over an already loaded library (tests and measurements that load
    /// a particular libqatzip, or a simulator, without `ENVOY_QATZIP_LIB`). The
    /// configuration's `backend` is not consulted.
    pub fn with_qatzip(
        cfg: CompressorConfig,
        lib: Arc<qatzip::QatzipLib>,
    ) -> Result<Self, CompressError> {
        cfg.validate().map_err(CompressError::Config)?;
        Ok(Self {
            inner: Arc::new(FactoryInner {
                cfg,
                engine: Engine::Qatzip(lib),
                stats: CompressStats::default(),
            }),
        })
    }

    /// A compressor for one stream.
    pub fn create(&self) -> Compressor {
        self.inner
            .stats
            .streams_created
            .fetch_add(1, Ordering::Relaxed);
        Compressor {
            f: self.inner.clone(),
            header_written: false,
            finished: false,
            crc: 0,
            len: 0,
            shared: false,
            soft: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &CompressorConfig {
        &self.inner.cfg
    }

    /// "qatzip" or "soft".
    pub fn backend_name(&self) -> &'static str {
        match self.inner.engine {
            Engine::Software => "soft",
            Engine::Qatzip(_) => "qatzip",
        }
    }

    /// The loaded QATzip library, when this factory uses it.
    pub fn qatzip_lib(&self) -> Option<&Arc<qatzip::QatzipLib>> {
        match &self.inner.engine {
            Engine::Qatzip(l) => Some(l),
            Engine::Software => None,
        }
    }

    /// Whether QATzip reached a QAT device on any thread so far (false: its software
    /// fallback ran, or the software backend is in use).
    pub fn qat_hardware_in_use(&self) -> bool {
        match &self.inner.engine {
            Engine::Qatzip(l) => l.hardware_seen(),
            Engine::Software => false,
        }
    }

    /// Counters and memory per idle stream.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let base = std::mem::size_of::<Compressor>();
        let after = match self.inner.engine {
            Engine::Software => {
                base + std::mem::size_of::<Deflate>()
                    + deflate::deflate_state_bytes(
                        self.inner.cfg.window_bits,
                        self.inner.cfg.memory_level,
                    )
            }
            Engine::Qatzip(_) => base,
        };
        StatsSnapshot {
            streams_created: s.streams_created.load(Ordering::Relaxed),
            streams_finished: s.streams_finished.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            hw_bytes_in: s.hw_bytes_in.load(Ordering::Relaxed),
            sw_bytes_in: s.sw_bytes_in.load(Ordering::Relaxed),
            flushes: s.flushes.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            deflate_states: s.deflate_states.load(Ordering::Relaxed),
            shared_state_streams: s.shared_state_streams.load(Ordering::Relaxed),
            qatzip_bytes_in: s.qatzip_bytes_in.load(Ordering::Relaxed),
            sessions_busy_bytes_in: s.sessions_busy_bytes_in.load(Ordering::Relaxed),
            hw_bytes_exact: match &self.inner.engine {
                Engine::Qatzip(l) => l.total_in_is_device_only() == Some(true),
                Engine::Software => false,
            },
            idle_stream_bytes_before_data: base,
            idle_stream_bytes_after_flush: after,
        }
    }
}

/// One HTTP stream's compressor. Not shared between threads at once (Envoy keeps a
/// stream on one worker), but it may move between threads.
pub struct Compressor {
    f: Arc<FactoryInner>,
    header_written: bool,
    finished: bool,
    crc: u32,
    len: u64,
    /// Software backend: this stream uses the per-thread full-flush state.
    shared: bool,
    /// Software backend: the stream's deflate state, from its first byte to Finish.
    soft: Option<Box<Deflate>>,
}

impl Drop for Compressor {
    fn drop(&mut self) {
        if self.soft.take().is_some() {
            self.f.stats.deflate_states.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Compressor {
    /// Replace `buf` (uncompressed input) with the compressed bytes for it, ending with a
    /// flush point (`Flush`) or the end of the gzip member (`Finish`).
    pub fn compress(&mut self, buf: &mut Vec<u8>, mode: Mode) -> Result<(), CompressError> {
        if self.finished {
            return Err(CompressError::AlreadyFinished);
        }
        let input = std::mem::take(buf);
        let r = self.compress_into(&input, buf, mode);
        if r.is_err() {
            self.f.stats.errors.fetch_add(1, Ordering::Relaxed);
            // The stream cannot continue consistently; no more output for it.
            self.finished = true;
            self.drop_soft();
            buf.clear();
        }
        r
    }

    /// Whether `Finish` has been done.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Reserve one of the factory's `max_stream_states` deflate states.
    fn take_state_slot(&self) -> bool {
        let max = u64::from(self.f.cfg.max_stream_states);
        self.f
            .stats
            .deflate_states
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn drop_soft(&mut self) {
        if self.soft.take().is_some() {
            self.f.stats.deflate_states.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn compress_into(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mode: Mode,
    ) -> Result<(), CompressError> {
        let f = self.f.clone();
        let cfg = &f.cfg;
        let stats = &f.stats;
        out.reserve(input.len() / 2 + 64);
        if !self.header_written {
            out.extend_from_slice(&GZIP_HEADER);
            self.header_written = true;
        }
        if !input.is_empty() {
            self.crc = zlib_rs::crc32::crc32(self.crc, input);
            self.len += input.len() as u64;
            stats
                .bytes_in
                .fetch_add(input.len() as u64, Ordering::Relaxed);
        }
        let chunk = cfg.chunk_size as usize;
        match &f.engine {
            Engine::Software => {
                if self.soft.is_none() && !self.shared && !input.is_empty() {
                    if self.take_state_slot() {
                        self.soft = Some(Box::new(new_raw_deflate(
                            cfg.compression_level,
                            cfg.window_bits,
                            cfg.memory_level,
                        )));
                    } else {
                        self.shared = true;
                        stats.shared_state_streams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let flush = match mode {
                    Mode::Flush => DeflateFlush::SyncFlush,
                    Mode::Finish => DeflateFlush::Finish,
                };
                match &mut self.soft {
                    Some(z) if !input.is_empty() || mode == Mode::Finish => {
                        deflate_into(z, input, out, flush, chunk)
                            .map_err(|e| CompressError::Engine(e.0))?
                    }
                    Some(_) => {}
                    None => {
                        // Shared per-thread state, or no data ever: self-contained
                        // full-flush blocks, then the empty final block at Finish.
                        if !input.is_empty() {
                            software_segment(cfg, input, out)?;
                        }
                        if mode == Mode::Finish {
                            out.extend_from_slice(&EMPTY_FINAL_BLOCK);
                        }
                    }
                }
                stats
                    .sw_bytes_in
                    .fetch_add(input.len() as u64, Ordering::Relaxed);
            }
            Engine::Qatzip(lib) => {
                if !input.is_empty() {
                    self.segment(lib, input, out)?;
                }
                if mode == Mode::Finish {
                    out.extend_from_slice(&EMPTY_FINAL_BLOCK);
                }
            }
        }
        if mode == Mode::Finish {
            out.extend_from_slice(&trailer(self.crc, self.len));
            self.finished = true;
            self.drop_soft();
            stats.streams_finished.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.flushes.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .bytes_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// QATzip mode: compress `input` into self-contained, byte-aligned, non-final deflate
    /// blocks (full flush), on a pooled QATzip session or, below the threshold or if QATzip
    /// fails or every QATzip session is in use, on this thread's zlib-rs state.
    fn segment(
        &self,
        lib: &Arc<qatzip::QatzipLib>,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        let cfg = &self.f.cfg;
        let stats = &self.f.stats;
        if input.len() >= cfg.input_size_threshold as usize && !lib.device_absent() {
            // Bound each QATzip request (and its output buffer) by the stream buffer size.
            let step = cfg.stream_buffer_size as usize;
            let mut rest = input;
            while !rest.is_empty() {
                let n = rest.len().min(step);
                let mark = out.len();
                match lib.compress_full_flush(cfg, &rest[..n], out) {
                    Ok(Some(ran)) => {
                        let hw = ran.hw_bytes.min(n as u64);
                        stats.hw_bytes_in.fetch_add(hw, Ordering::Relaxed);
                        stats
                            .sw_bytes_in
                            .fetch_add(n as u64 - hw, Ordering::Relaxed);
                        stats.qatzip_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        software_segment(cfg, &rest[..n], out)?;
                        stats.sw_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        stats
                            .sessions_busy_bytes_in
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        out.truncate(mark);
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "envoy_qat::compress", "QATzip failed ({e}); compressing {n} bytes in software");
                        software_segment(cfg, &rest[..n], out)?;
                        stats.sw_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                rest = &rest[n..];
            }
            Ok(())
        } else {
            software_segment(cfg, input, out)?;
            stats
                .sw_bytes_in
                .fetch_add(input.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// (level, window bits, memory level) and a deflate state with those parameters.
type KeyedDeflate = ((u32, u32, u32), Deflate);

thread_local! {
    /// Per-thread zlib-rs states for full-flush segments, by (level, window, mem level).
    static SEGMENT_DEFLATE: std::cell::RefCell<Vec<KeyedDeflate>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Compress `input` into self-contained non-final deflate blocks ending at a byte
/// boundary (zlib full flush), on this thread's reusable zlib-rs state.
fn software_segment(
    cfg: &CompressorConfig,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    let key = (cfg.compression_level, cfg.window_bits, cfg.memory_level);
    SEGMENT_DEFLATE.with(|cell| {
        let mut v = cell.borrow_mut();
        let idx = match v.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                v.push((key, new_raw_deflate(key.0, key.1, key.2)));
                v.len() - 1
            }
        };
        let z = &mut v[idx].1;
        let r = deflate_into(
            z,
            input,
            out,
            DeflateFlush::FullFlush,
            cfg.chunk_size as usize,
        );
        if r.is_err() {
            // Never reuse a state that failed mid-way.
            v.swap_remove(idx);
        }
        r.map_err(|e| CompressError::Engine(e.0))
    })
}

/// Compress all of `data` as one gzip member with a fresh compressor (convenience).
pub fn gzip(factory: &CompressorFactory, data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut c = factory.create();
    let mut buf = data.to_vec();
    c.compress(&mut buf, Mode::Finish)?;
    Ok(buf)
}
