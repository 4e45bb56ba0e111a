//! Compressor soak: gigabytes through the same `Compressor` Envoy's `qatzip` library and
//! `serve` use, the way Envoy's compressor filter drives it: many concurrent streams on
//! worker threads sharing one factory, every call a `Flush` of a random-sized piece
//! (1 byte to 1 MiB, some empty), streams of random length ending with `Finish` (some
//! with data in the last call) and replaced by new ones.
//!
//! Every stream is decoded as it goes by C zlib's streaming inflate (tests/czlib: the
//! system zlib, not the zlib-rs that compresses, nor flate2, which is built on zlib-rs
//! here) and compared byte for byte with its input, which is never stored: the input
//! comes from a seeded generator (text, random bytes and runs, in random segments) and a
//! second generator with the same seed regenerates it on the decoding side. After every
//! `Flush` the decoder must have produced everything written so far (the sync-flush
//! contract).
//!
//! It prints MB/s and RSS over time and checks at the end: every stream decoded whole,
//! no compressor errors, no deflate state left alive, and RSS growth after the warm-up
//! (from a reading taken while the workers run, once the first 10% of the bytes went
//! through, to the largest later reading and to the reading at the end) within
//! `SOAK_COMPRESS_RSS_SLACK_MB` (default 64 MB); no such reading is a failure.
//! Why 64 MB: the working set is fixed (per thread 6 streams, each with a deflate state
//! of 165-380 KB, a decoder with a 32 KiB window, and up to 1 MiB input and output
//! buffers: about 20 MB for 2 threads), so a flat process stays within allocator noise
//! of it; a leaked deflate state per stream (hundreds of KB x thousands of streams) or a
//! leaked buffer per call (hundreds of thousands of calls) exceeds it many times over.
//!
//! Ignored by default (it is sized for minutes); ci/soak.sh runs it in release:
//!   SOAK_COMPRESS_BYTES=10000000000 cargo test --release --test soak_compress -- --ignored --nocapture
//! Knobs: SOAK_COMPRESS_BYTES (default 256 MB), SOAK_COMPRESS_THREADS (2),
//! SOAK_COMPRESS_LEVEL (6), SOAK_COMPRESS_BACKEND (mixed|auto|soft|qatzip; default mixed:
//! threads alternate between a software factory and an auto one, i.e. QATzip when
//! libqatzip loads),
//! SOAK_COMPRESS_SEED (1), SOAK_COMPRESS_RSS_SLACK_MB (64).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_qat::compress::{CompressBackend, Compressor, CompressorConfig, CompressorFactory, Mode};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v}: {e}")),
        Err(_) => default,
    }
}

/// xorshift64*: fast, seeded, good enough to pick sizes and make incompressible bytes.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi as f64).ln());
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + u * (h - l)).exp() as u64).clamp(lo, hi)
    }
}

const WORDS: &[&str] = &[
    "envoy",
    "qat",
    "gzip",
    "stream",
    "flush",
    "header",
    "content-type",
    "application/json",
    "{\"id\":",
    "\"name\":",
    "true",
    "false",
    "null",
    "0123456789",
    "GET /api/v1/items",
    "HTTP/1.1 200 OK",
    "accept-encoding",
    "x-request-id",
    "cluster",
    "upstream",
    "\n",
    " ",
    ", ",
    "</div>",
    "<div class=\"row\">",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
];

/// A deterministic stream of test data in segments: text, random bytes, runs of a byte.
#[derive(Clone)]
struct Gen {
    rng: Rng,
    kind: u8,
    left: u64,
    run_byte: u8,
    /// Text: the rest of the current word not yet emitted.
    word: &'static [u8],
    /// Random bytes: the rest of the current random word.
    rand: [u8; 8],
    rand_left: usize,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen {
            rng: Rng::new(seed),
            kind: 0,
            left: 0,
            run_byte: 0,
            word: b"",
            rand: [0; 8],
            rand_left: 0,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            if self.left == 0 {
                let r = self.rng.below(100);
                self.kind = match r {
                    0..=69 => 0,  // text
                    70..=89 => 1, // random bytes
                    _ => 2,       // a run
                };
                self.left = self.rng.log_uniform(16, 4 << 20);
                self.run_byte = self.rng.next() as u8;
                self.word = b"";
                self.rand_left = 0;
            }
            let n = ((out.len() - i) as u64).min(self.left) as usize;
            let dst = &mut out[i..i + n];
            match self.kind {
                0 => {
                    let mut j = 0;
                    while j < n {
                        if self.word.is_empty() {
                            self.word =
                                WORDS[self.rng.below(WORDS.len() as u64) as usize].as_bytes();
                        }
                        let k = self.word.len().min(n - j);
                        dst[j..j + k].copy_from_slice(&self.word[..k]);
                        self.word = &self.word[k..];
                        j += k;
                    }
                }
                1 => {
                    // Byte by byte through an 8-byte buffer, so the bytes do not depend
                    // on how the stream is cut into fill calls.
                    let mut j = 0;
                    while j < n {
                        if self.rand_left == 0 && n - j >= 8 {
                            dst[j..j + 8].copy_from_slice(&self.rng.next().to_le_bytes());
                            j += 8;
                            continue;
                        }
                        if self.rand_left == 0 {
                            self.rand = self.rng.next().to_le_bytes();
                            self.rand_left = 8;
                        }
                        dst[j] = self.rand[8 - self.rand_left];
                        self.rand_left -= 1;
                        j += 1;
                    }
                }
                _ => dst.fill(self.run_byte),
            }
            self.left -= n as u64;
            i += n;
        }
    }
}

/// Compares decoded bytes with the regenerated input instead of storing it.
struct Verifier {
    expect: Gen,
    buf: Vec<u8>,
    pos: u64,
}

impl Verifier {
    fn check(&mut self, data: &[u8]) -> Result<(), String> {
        self.buf.resize(data.len(), 0);
        self.expect.fill(&mut self.buf);
        if self.buf != data {
            let at = self
                .buf
                .iter()
                .zip(data)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!(
                "decoded bytes differ from the input at offset {}",
                self.pos + at as u64
            ));
        }
        self.pos += data.len() as u64;
        Ok(())
    }
}

/// C zlib's streaming gzip decoder with its output checked as it comes.
struct Decoder {
    z: czlib::GzDecoder,
    out: Vec<u8>,
    v: Verifier,
}

impl Decoder {
    fn write(&mut self, gz: &[u8]) -> Result<(), String> {
        self.out.clear();
        self.z.write(gz, &mut self.out)?;
        self.v.check(&self.out)
    }
}

struct Stream {
    id: u64,
    c: Compressor,
    src: Gen,
    dec: Decoder,
    written: u64,
    target: u64,
}

impl Stream {
    fn new(f: &CompressorFactory, rng: &mut Rng, id: u64) -> Self {
        let seed = rng.next();
        // Mostly small and medium responses, some large ones, a few below the
        // compressor's input_size_threshold.
        let target = rng.log_uniform(256, 64 << 20);
        Stream {
            id,
            c: f.create(),
            src: Gen::new(seed),
            dec: Decoder {
                z: czlib::GzDecoder::new(),
                out: Vec::new(),
                v: Verifier {
                    expect: Gen::new(seed),
                    buf: Vec::new(),
                    pos: 0,
                },
            },
            written: 0,
            target,
        }
    }

    /// Feed compressed output to the decoder; after a Flush everything written so far
    /// must have come out.
    fn decode(&mut self, gz: &[u8]) {
        let id = self.id;
        self.dec
            .write(gz)
            .unwrap_or_else(|e| panic!("stream {id}: decoding failed: {e}"));
        let pos = self.dec.v.pos;
        assert_eq!(
            pos, self.written,
            "stream {id}: after Flush the decoder produced {pos} of {} bytes written",
            self.written
        );
    }
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    calls: AtomicU64,
    streams_done: AtomicU64,
}

/// One worker thread: `streams` concurrent streams until `budget` bytes went through.
fn worker(f: CompressorFactory, seed: u64, budget: u64, streams: usize, p: Arc<Progress>) {
    let mut rng = Rng::new(seed);
    let mut next_id = seed << 32;
    let mut new_stream = |rng: &mut Rng| {
        next_id += 1;
        Stream::new(&f, rng, next_id)
    };
    let mut live: Vec<Stream> = (0..streams).map(|_| new_stream(&mut rng)).collect();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut done = 0u64;
    while done < budget || !live.is_empty() {
        let i = rng.below(live.len() as u64) as usize;
        let s = &mut live[i];
        let draining = done >= budget;
        // A piece of 1 B .. 1 MiB (1 in 50 calls empty: Envoy flushes on empty buffers too).
        let n = if rng.below(50) == 0 {
            0
        } else {
            rng.log_uniform(1, 1 << 20)
        };
        let n = n.min(s.target - s.written).min(budget - done.min(budget));
        let last = s.written + n >= s.target || done + n >= budget;
        // Half the streams end with data in the Finish call, half with an empty Finish.
        let finish_with_data = last && rng.below(2) == 0;
        buf.clear();
        buf.resize(n as usize, 0);
        s.src.fill(&mut buf);
        s.written += n;
        let mode = if finish_with_data {
            Mode::Finish
        } else {
            Mode::Flush
        };
        s.c.compress(&mut buf, mode)
            .unwrap_or_else(|e| panic!("stream {}: compress failed: {e}", s.id));
        if mode == Mode::Flush {
            s.decode(&buf);
        } else {
            s.dec
                .write(&buf)
                .unwrap_or_else(|e| panic!("stream {}: decoding failed: {e}", s.id));
        }
        if last {
            if !finish_with_data {
                buf.clear();
                s.c.compress(&mut buf, Mode::Finish)
                    .unwrap_or_else(|e| panic!("stream {}: Finish failed: {e}", s.id));
                s.dec
                    .write(&buf)
                    .unwrap_or_else(|e| panic!("stream {}: decoding failed: {e}", s.id));
            }
            let s = live.swap_remove(i);
            let id = s.id;
            assert!(s.c.is_finished());
            s.dec
                .z
                .finish()
                .unwrap_or_else(|e| panic!("stream {id}: gzip trailer rejected: {e}"));
            assert_eq!(s.dec.v.pos, s.written, "stream {id}: decoded length");
            p.streams_done.fetch_add(1, Relaxed);
            if !draining {
                live.push(new_stream(&mut rng));
            }
        }
        done += n;
        p.bytes.fetch_add(n, Relaxed);
        p.calls.fetch_add(1, Relaxed);
    }
}

#[test]
#[ignore = "soak: minutes; run by ci/soak.sh (SOAK_COMPRESS_BYTES)"]
fn soak_compressor_random_flushes_decodes_and_stays_flat() {
    let total = env_u64("SOAK_COMPRESS_BYTES", 256 << 20);
    let threads = env_u64("SOAK_COMPRESS_THREADS", 2).max(1);
    let level = env_u64("SOAK_COMPRESS_LEVEL", 6) as u32;
    let seed = env_u64("SOAK_COMPRESS_SEED", 1);
    let slack_mb = env_u64("SOAK_COMPRESS_RSS_SLACK_MB", 64);
    // Default "mixed": threads alternate between a software factory and an auto one
    // (QATzip when libqatzip loads, as Envoy's qatzip library picks it), so one run covers
    // both paths.
    let choice = std::env::var("SOAK_COMPRESS_BACKEND").unwrap_or_else(|_| "mixed".into());
    let backends: Vec<CompressBackend> = match choice.as_str() {
        "soft" => vec![CompressBackend::Software],
        "qatzip" => vec![CompressBackend::Qatzip],
        "auto" => vec![CompressBackend::Auto],
        "mixed" => vec![CompressBackend::Software, CompressBackend::Auto],
        other => panic!("SOAK_COMPRESS_BACKEND={other}: expected mixed, auto, soft or qatzip"),
    };
    let streams_per_thread = 6;
    let factories: Vec<CompressorFactory> = backends
        .into_iter()
        .map(|backend| {
            CompressorFactory::new(CompressorConfig {
                compression_level: level,
                backend,
                // Fewer per-stream states than streams (software path): some streams use
                // the per-thread shared full-flush state, as under Envoy load beyond
                // max_stream_states.
                max_stream_states: 4,
                ..CompressorConfig::default()
            })
            .expect("compressor factory")
        })
        .collect();
    let names: Vec<&str> = factories.iter().map(|f| f.backend_name()).collect();
    println!(
        "compress soak: {} MB, {threads} threads x {streams_per_thread} streams, factories {names:?} (thread i uses factory i mod {}), level {level}, seed {seed}, decoded by C zlib {}",
        total / 1_000_000,
        factories.len(),
        czlib::version()
    );
    let stats = || {
        let mut sum = envoy_qat::compress::StatsSnapshot::default();
        for f in &factories {
            let s = f.stats();
            sum.streams_created += s.streams_created;
            sum.streams_finished += s.streams_finished;
            sum.bytes_in += s.bytes_in;
            sum.bytes_out += s.bytes_out;
            sum.errors += s.errors;
            sum.deflate_states += s.deflate_states;
            sum.shared_state_streams += s.shared_state_streams;
            sum.qatzip_bytes_in += s.qatzip_bytes_in;
            sum.hw_bytes_in += s.hw_bytes_in;
        }
        sum
    };
    let p = Arc::new(Progress::default());
    let start = Instant::now();
    let rss_start = rss_kb();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (f, p) = (factories[t as usize % factories.len()].clone(), p.clone());
            let budget = total / threads + if t == 0 { total % threads } else { 0 };
            std::thread::spawn(move || worker(f, seed * 1000 + t, budget, streams_per_thread, p))
        })
        .collect();
    println!(
        "{:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "secs", "MB", "MB/s", "calls", "streams", "states", "RSS_MB"
    );
    let warm_at = (total / 10).max(16 << 20).min(total);
    let mut rss_warm = None;
    let mut rss_max_after_warm = 0;
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        let bytes = p.bytes.load(Relaxed);
        let rss = rss_kb();
        // The warm-up reading only while the workers run: one taken after they ended
        // says nothing about growth under load.
        if bytes >= warm_at && (rss_warm.is_some() || !finished) {
            rss_warm.get_or_insert(rss);
            rss_max_after_warm = rss_max_after_warm.max(rss);
        }
        if finished || last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{:>8.1} {:>9.0} {:>8.1} {:>8} {:>8} {:>8} {:>7.1}",
                secs,
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs.max(1e-9),
                p.calls.load(Relaxed),
                p.streams_done.load(Relaxed),
                stats().deflate_states,
                rss as f64 / 1024.0
            );
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for h in handles {
        h.join().expect("a soak worker panicked (see above)");
    }
    let secs = start.elapsed().as_secs_f64();
    let st = stats();
    let rss_end = rss_kb();
    println!(
        "compress soak: {:.0} MB in {secs:.1} s = {:.1} MB/s (input; compress + verify-decode), \
         ratio {:.2}, {} calls, {} streams ({} on the shared state), {:.1} MB through QATzip, errors {}, \
         RSS start {:.1} MB, after warm-up {:.1} MB, max after warm-up {:.1} MB, end {:.1} MB",
        st.bytes_in as f64 / 1e6,
        st.bytes_in as f64 / 1e6 / secs,
        st.ratio(),
        p.calls.load(Relaxed),
        st.streams_finished,
        st.shared_state_streams,
        st.qatzip_bytes_in as f64 / 1e6,
        st.errors,
        rss_start as f64 / 1024.0,
        rss_warm.unwrap_or(0) as f64 / 1024.0,
        rss_max_after_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    assert_eq!(st.bytes_in, total, "every byte went through the compressor");
    assert_eq!(st.errors, 0, "compressor errors");
    assert_eq!(
        st.streams_created, st.streams_finished,
        "every stream finished"
    );
    assert_eq!(st.streams_finished, p.streams_done.load(Relaxed));
    assert_eq!(st.deflate_states, 0, "deflate states left alive");
    let rss_warm = rss_warm.unwrap_or_else(|| {
        panic!("no RSS reading after the warm-up ({warm_at} bytes) while the workers ran: raise SOAK_COMPRESS_BYTES")
    });
    assert!(rss_end > 0, "no RSS reading at the end");
    // The largest reading under load and the one at the end, over the warm-up reading.
    let growth_mb = rss_max_after_warm.max(rss_end).saturating_sub(rss_warm) as f64 / 1024.0;
    assert!(
        growth_mb <= slack_mb as f64,
        "RSS grew {growth_mb:.1} MB after the warm-up (bound {slack_mb} MB): a leak"
    );
    println!("compress soak: OK (RSS growth after warm-up {growth_mb:.1} MB <= {slack_mb} MB)");
}
