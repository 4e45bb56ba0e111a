//! The `envoy-qat compress`, `decompress` and `bench-compress` subcommands: argument
//! structs and run functions (the binary only dispatches here).

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::{
    CompressBackend, CompressorConfig, CompressorFactory, DecompressLimits, Decompressor, Format,
    Mode,
};

/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code: bad input.
const EXIT_INPUT: u8 = 3;
/// Exit code: unavailable backend.
const EXIT_UNAVAILABLE: u8 = 4;

/// (exit code, message).
pub type CliResult = Result<(), (u8, String)>;

/// Bytes read and compressed per call (each call ends with a Flush).
const BLOCK: usize = 1 << 20;

/// `envoy-qat compress`.
#[derive(Args, Debug)]
pub struct CompressArgs {
    /// Files to compress (FILE -> FILE.gz, FILE removed unless -k). None: stdin to stdout.
    pub files: Vec<PathBuf>,
    /// Write to standard output, keep the input files.
    #[arg(short = 'c', long = "stdout")]
    pub to_stdout: bool,
    /// Decompress instead (as `envoy-qat decompress`).
    #[arg(short = 'd', long = "decompress")]
    pub decompress: bool,
    /// Keep input files.
    #[arg(short = 'k', long)]
    pub keep: bool,
    /// Overwrite existing output files.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Compression level 1-9 (also -1 .. -9).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub level: Option<u32>,
    #[arg(short = '1', hide = true)]
    l1: bool,
    #[arg(short = '2', hide = true)]
    l2: bool,
    #[arg(short = '3', hide = true)]
    l3: bool,
    #[arg(short = '4', hide = true)]
    l4: bool,
    #[arg(short = '5', hide = true)]
    l5: bool,
    #[arg(short = '6', hide = true)]
    l6: bool,
    #[arg(short = '7', hide = true)]
    l7: bool,
    #[arg(short = '8', hide = true)]
    l8: bool,
    #[arg(short = '9', hide = true)]
    l9: bool,
    /// Backend: auto (QATzip if libqatzip loads, else software), qatzip, soft.
    #[arg(long, default_value = "soft")]
    pub backend: String,
    /// Deflate window bits 9-15 (software path).
    #[arg(long, default_value_t = 15)]
    pub window_bits: u32,
    /// Deflate memory level 1-9 (software path).
    #[arg(long, default_value_t = 8)]
    pub memory_level: u32,
    /// Inputs below this many bytes go to software (QATzip backend), 128-524288.
    #[arg(long, default_value_t = 1024)]
    pub input_size_threshold: u32,
    /// Bytes per compress call, each ending with a Flush (Envoy flushes every data frame).
    #[arg(long, default_value_t = BLOCK, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 30))]
    pub flush_every: usize,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Decompression limits.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Largest decompressed output in bytes (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_output: u64,
    /// Largest output/input ratio (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_ratio: u64,
}

/// `envoy-qat decompress`.
#[derive(Args, Debug)]
pub struct DecompressArgs {
    /// Files to decompress (FILE.gz -> FILE). None: stdin to stdout.
    pub files: Vec<PathBuf>,
    /// Write to standard output, keep the input files.
    #[arg(short = 'c', long = "stdout")]
    pub to_stdout: bool,
    /// Keep input files.
    #[arg(short = 'k', long)]
    pub keep: bool,
    /// Overwrite existing output files.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Input format: auto, gzip, zlib, raw.
    #[arg(long, default_value = "gzip")]
    pub format: String,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `envoy-qat bench-compress`.
#[derive(Args, Debug)]
pub struct BenchCompressArgs {
    /// Directory of files to use as the corpus (default: a generated mixed corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Size of the generated corpus in MiB.
    #[arg(long, default_value_t = 32)]
    pub size_mib: usize,
    /// Software levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9")]
    pub levels: Vec<u32>,
    /// Skip gzip and pigz.
    #[arg(long)]
    pub no_external: bool,
    /// Runs per measurement; the fastest counts (the machine may be shared).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Skip the QATzip backend.
    #[arg(long)]
    pub no_qatzip: bool,
    /// Write size for the flush-heavy measurement (a Flush after each write).
    #[arg(long, default_value_t = 1024)]
    pub flush_write: usize,
    /// Deflate window bits for the software backend.
    #[arg(long, default_value_t = 15)]
    pub window_bits: u32,
    /// Deflate memory level for the software backend.
    #[arg(long, default_value_t = 8)]
    pub memory_level: u32,
    /// Interleaved rounds of level 6 against `gzip -6` (one of each per round, the ratio
    /// taken within the round); 0 skips them. Best-of-N figures measured minutes apart
    /// drift with the machine's load; ratios within a round do much less. Each part of the
    /// corpus is then compared on its own in at most 3 rounds.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
}

impl CompressArgs {
    fn level(&self) -> u32 {
        let flags = [
            self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7, self.l8, self.l9,
        ];
        if let Some(l) = self.level {
            return l;
        }
        flags
            .iter()
            .rposition(|&b| b)
            .map(|i| i as u32 + 1)
            .unwrap_or(6)
    }
}

fn limits(a: &LimitArgs) -> DecompressLimits {
    DecompressLimits {
        max_output: a.max_output,
        max_ratio: a.max_ratio,
        ratio_grace: 1 << 20,
    }
}

/// A small progress bar on stderr, drawn only on a terminal and for large inputs.
struct Progress {
    on: bool,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Instant,
    label: String,
}

impl Progress {
    fn new(label: &str, total: Option<u64>, disabled: bool) -> Self {
        let big = total.is_none_or(|t| t >= 16 << 20);
        Self {
            on: !disabled && big && std::io::stderr().is_terminal(),
            total,
            done: 0,
            start: Instant::now(),
            // Draw at the first chance once the input is large.
            last: Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now),
            label: label.to_string(),
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        // Unknown size (stdin): only show once it is clearly large.
        if self.total.is_none() && self.done < 16 << 20 {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let mbs = self.done as f64 / secs / 1e6;
        let line = match self.total {
            Some(t) if t > 0 => {
                let frac = (self.done as f64 / t as f64).min(1.0);
                let w = 30;
                let fill = (frac * w as f64) as usize;
                format!(
                    "\r{} [{}{}] {:>3.0}% {:.0} MB/s ",
                    self.label,
                    "#".repeat(fill),
                    "-".repeat(w - fill),
                    frac * 100.0,
                    mbs
                )
            }
            _ => format!("\r{} {} MiB {:.0} MB/s ", self.label, self.done >> 20, mbs),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn end(&self) {
        if self.on && self.done >= 16 << 20 {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn compress_stream(
    factory: &CompressorFactory,
    input: &mut dyn Read,
    output: &mut dyn Write,
    name: &str,
    progress: &mut Progress,
    block_size: usize,
) -> CliResult {
    let mut c = factory.create();
    let mut block = vec![0u8; block_size.max(1)];
    loop {
        let n = read_full(input, &mut block).map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
        let mut buf = block[..n].to_vec();
        let mode = if n < block.len() {
            Mode::Finish
        } else {
            Mode::Flush
        };
        c.compress(&mut buf, mode)
            .map_err(|e| (EXIT_FAILED, format!("{name}: {e}")))?;
        output
            .write_all(&buf)
            .map_err(|e| (EXIT_FAILED, format!("writing output: {e}")))?;
        progress.add(n);
        if mode == Mode::Finish {
            break;
        }
    }
    output
        .flush()
        .map_err(|e| (EXIT_FAILED, format!("writing output: {e}")))?;
    progress.end();
    Ok(())
}

fn decompress_stream(
    d: &mut Decompressor,
    input: &mut dyn Read,
    output: &mut dyn Write,
    name: &str,
    progress: &mut Progress,
) -> CliResult {
    let mut block = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(1 << 20);
    loop {
        let n = input
            .read(&mut block)
            .map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
        if n == 0 {
            break;
        }
        out.clear();
        d.decompress(&block[..n], &mut out)
            .map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
        output
            .write_all(&out)
            .map_err(|e| (EXIT_FAILED, format!("writing output: {e}")))?;
        progress.add(n);
    }
    d.finish()
        .map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
    output
        .flush()
        .map_err(|e| (EXIT_FAILED, format!("writing output: {e}")))?;
    progress.end();
    Ok(())
}

/// Open `out` for writing unless it exists and `force` is off.
fn create_output(out: &Path, force: bool) -> Result<File, (u8, String)> {
    if out.exists() && !force {
        return Err((
            EXIT_INPUT,
            format!("{}: already exists; use -f to overwrite", out.display()),
        ));
    }
    File::create(out).map_err(|e| (EXIT_FAILED, format!("{}: {e}", out.display())))
}

/// Run `envoy-qat compress`.
pub fn run_compress(a: CompressArgs) -> CliResult {
    if a.decompress {
        return run_decompress(DecompressArgs {
            files: a.files,
            to_stdout: a.to_stdout,
            keep: a.keep,
            force: a.force,
            format: "gzip".into(),
            no_progress: a.no_progress,
            limits: a.limits,
        });
    }
    let cfg = CompressorConfig {
        compression_level: a.level(),
        window_bits: a.window_bits,
        memory_level: a.memory_level,
        input_size_threshold: a.input_size_threshold,
        backend: CompressBackend::parse(&a.backend)
            .map_err(|e| (EXIT_USAGE, format!("--backend: {e}")))?,
        ..CompressorConfig::default()
    };
    let factory = CompressorFactory::new(cfg).map_err(|e| match e {
        super::CompressError::QatzipUnavailable(_) => (EXIT_UNAVAILABLE, e.to_string()),
        _ => (EXIT_USAGE, e.to_string()),
    })?;
    if a.files.is_empty() {
        let mut p = Progress::new("compress", None, a.no_progress);
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        return compress_stream(
            &factory,
            &mut stdin.lock(),
            &mut std::io::BufWriter::new(stdout.lock()),
            "standard input",
            &mut p,
            a.flush_every,
        );
    }
    for f in &a.files {
        let name = f.display().to_string();
        let mut input = File::open(f).map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
        let size = input.metadata().ok().map(|m| m.len());
        let mut p = Progress::new(&name, size, a.no_progress);
        if a.to_stdout {
            let stdout = std::io::stdout();
            compress_stream(
                &factory,
                &mut input,
                &mut std::io::BufWriter::new(stdout.lock()),
                &name,
                &mut p,
                a.flush_every,
            )?;
        } else {
            if f.extension().is_some_and(|e| e == "gz") {
                return Err((
                    EXIT_INPUT,
                    format!("{name}: already has .gz suffix; use -c to compress it anyway"),
                ));
            }
            let mut outp = f.clone().into_os_string();
            outp.push(".gz");
            let outp = PathBuf::from(outp);
            let mut out = create_output(&outp, a.force)?;
            compress_stream(&factory, &mut input, &mut out, &name, &mut p, a.flush_every)?;
            if !a.keep {
                std::fs::remove_file(f).map_err(|e| (EXIT_FAILED, format!("{name}: {e}")))?;
            }
        }
    }
    Ok(())
}

/// Run `envoy-qat decompress`.
pub fn run_decompress(a: DecompressArgs) -> CliResult {
    let format = match a.format.as_str() {
        "auto" => Format::Auto,
        "gzip" | "gz" => Format::Gzip,
        "zlib" => Format::Zlib,
        "raw" | "deflate" => Format::Raw,
        other => {
            return Err((
                EXIT_USAGE,
                format!("--format {other}: expected auto, gzip, zlib or raw"),
            ))
        }
    };
    let lim = limits(&a.limits);
    if a.files.is_empty() {
        let mut d = Decompressor::new(format, lim);
        let mut p = Progress::new("decompress", None, a.no_progress);
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        return decompress_stream(
            &mut d,
            &mut stdin.lock(),
            &mut std::io::BufWriter::new(stdout.lock()),
            "standard input",
            &mut p,
        );
    }
    for f in &a.files {
        let name = f.display().to_string();
        let mut input = File::open(f).map_err(|e| (EXIT_INPUT, format!("{name}: {e}")))?;
        let size = input.metadata().ok().map(|m| m.len());
        let mut p = Progress::new(&name, size, a.no_progress);
        let mut d = Decompressor::new(format, lim);
        if a.to_stdout {
            let stdout = std::io::stdout();
            decompress_stream(
                &mut d,
                &mut input,
                &mut std::io::BufWriter::new(stdout.lock()),
                &name,
                &mut p,
            )?;
        } else {
            let s = f.to_string_lossy();
            let Some(stem) = s.strip_suffix(".gz") else {
                return Err((
                    EXIT_INPUT,
                    format!(
                        "{name}: unknown suffix (expected .gz); use -c to write to standard output"
                    ),
                ));
            };
            let outp = PathBuf::from(stem);
            let mut out = create_output(&outp, a.force)?;
            let r = decompress_stream(&mut d, &mut input, &mut out, &name, &mut p);
            if r.is_err() {
                let _ = std::fs::remove_file(&outp);
                return r;
            }
            if !a.keep {
                std::fs::remove_file(f).map_err(|e| (EXIT_FAILED, format!("{name}: {e}")))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Corpus and benchmark

const WORDS: &[&str] = &[
    "the",
    "request",
    "response",
    "envoy",
    "proxy",
    "header",
    "content",
    "gzip",
    "stream",
    "cluster",
    "listener",
    "route",
    "upstream",
    "downstream",
    "filter",
    "compression",
    "latency",
    "worker",
    "thread",
    "buffer",
    "istio",
    "sidecar",
    "mesh",
    "service",
    "tls",
    "certificate",
    "private",
    "key",
    "quickassist",
    "offload",
    "accelerator",
    "and",
    "of",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "by",
    "that",
    "this",
    "from",
    "at",
    "as",
    "an",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Deterministic text-like data of `n` bytes: prose lines, JSON records and HTML-ish
/// markup, as HTTP responses carry.
pub fn generate_corpus_text(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = Vec::with_capacity(n + 256);
    let mut id = 0u64;
    while v.len() < n {
        match r.below(3) {
            0 => {
                let words = 8 + r.below(12);
                for i in 0..words {
                    if i > 0 {
                        v.push(b' ');
                    }
                    v.extend_from_slice(WORDS[r.below(WORDS.len())].as_bytes());
                }
                v.extend_from_slice(b".\n");
            }
            1 => {
                id += 1;
                let _ = writeln!(
                    v,
                    "{{\"id\":{id},\"name\":\"{}-{}\",\"status\":{},\"latency_ms\":{}.{},\"tags\":[\"{}\",\"{}\"],\"ok\":{}}}",
                    WORDS[r.below(WORDS.len())],
                    r.below(10_000),
                    [200, 201, 204, 301, 404, 503][r.below(6)],
                    r.below(500),
                    r.below(1000),
                    WORDS[r.below(WORDS.len())],
                    WORDS[r.below(WORDS.len())],
                    r.below(2) == 0
                );
            }
            _ => {
                let _ = writeln!(
                    v,
                    "<div class=\"{}\"><a href=\"/{}/{}\">{} {}</a><span id=\"s{}\">{}</span></div>",
                    WORDS[r.below(WORDS.len())],
                    WORDS[r.below(WORDS.len())],
                    r.below(100_000),
                    WORDS[r.below(WORDS.len())],
                    WORDS[r.below(WORDS.len())],
                    r.below(1000),
                    r.below(1_000_000)
                );
            }
        }
    }
    v.truncate(n);
    v
}

/// The default benchmark corpus: 90% text-like (see [`generate_corpus_text`]) and 10%
/// random bytes (already-compressed content), interleaved in 64 KiB pieces.
pub fn generate_corpus(n: usize) -> Vec<u8> {
    generate_corpus_parts(n).0
}

/// [`generate_corpus`], with its text-like and its random pieces also gathered apart, as
/// the parts of the corpus the benchmark compares one by one.
fn generate_corpus_parts(n: usize) -> (Vec<u8>, Vec<CorpusPart>) {
    let text = generate_corpus_text(n, 1);
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut v = Vec::with_capacity(n);
    let (mut texts, mut randoms) = (Vec::new(), Vec::new());
    for (i, piece) in text.chunks(64 * 1024).enumerate() {
        let start = v.len();
        if i % 10 == 9 {
            for _ in 0..piece.len() / 8 {
                v.extend_from_slice(&r.next().to_le_bytes());
            }
            v.resize(v.len() + piece.len() % 8, 0x55);
            randoms.extend_from_slice(&v[start..]);
        } else {
            v.extend_from_slice(piece);
            texts.extend_from_slice(piece);
        }
    }
    let parts = vec![
        CorpusPart {
            name: "generated text/JSON/HTML (90%)".into(),
            data: texts,
        },
        CorpusPart {
            name: "generated random bytes (10%)".into(),
            data: randoms,
        },
    ];
    (v, parts)
}

/// One part of a benchmark corpus (a file of `--corpus DIR`, or a kind of generated
/// content), compared on its own against `gzip -6`.
struct CorpusPart {
    name: String,
    data: Vec<u8>,
}

/// The corpus and its parts (the files of `--corpus DIR`, or the generated corpus's
/// text-like and random pieces).
fn load_corpus(a: &BenchCompressArgs) -> Result<(Vec<u8>, Vec<CorpusPart>), (u8, String)> {
    match &a.corpus {
        None => Ok(generate_corpus_parts(a.size_mib.max(1) << 20)),
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| (EXIT_INPUT, format!("--corpus {}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut v = Vec::new();
            let mut parts = Vec::new();
            for f in files {
                let d =
                    std::fs::read(&f).map_err(|e| (EXIT_INPUT, format!("{}: {e}", f.display())))?;
                if d.is_empty() {
                    continue;
                }
                v.extend_from_slice(&d);
                let name = f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                parts.push(CorpusPart { name, data: d });
            }
            if v.is_empty() {
                return Err((
                    EXIT_INPUT,
                    format!("--corpus {}: no files with data", dir.display()),
                ));
            }
            Ok((v, parts))
        }
    }
}

/// One benchmark line.
#[derive(Clone, Debug)]
pub struct BenchLine {
    /// What ran.
    pub label: String,
    /// Uncompressed MB/s (10^6 bytes per second of wall-clock time).
    pub mb_per_s: f64,
    /// Uncompressed MB per second of CPU time (user + system) of what ran: on a shared
    /// machine this is steadier than wall-clock time, as it leaves out time spent waiting
    /// for a core.
    pub mb_per_cpu_s: f64,
    /// Compressed size in bytes.
    pub compressed: usize,
}

/// The fastest wall-clock and the smallest CPU time over a measurement's runs.
#[derive(Clone, Copy, Debug)]
struct Timing {
    wall: f64,
    cpu: f64,
}

impl Timing {
    fn best(self, other: Timing) -> Timing {
        Timing {
            wall: self.wall.min(other.wall),
            cpu: self.cpu.min(other.cpu),
        }
    }

    fn line(self, label: String, mb: f64, compressed: usize) -> BenchLine {
        BenchLine {
            label,
            mb_per_s: mb / self.wall,
            mb_per_cpu_s: mb / self.cpu.max(1e-9),
            compressed,
        }
    }
}

/// Best of `repeat` runs of [`time_once`].
fn time_ours(
    factory: &CompressorFactory,
    data: &[u8],
    repeat: usize,
) -> Result<(Timing, Vec<u8>), String> {
    let mut best: Option<(Timing, Vec<u8>)> = None;
    for _ in 0..repeat.max(1) {
        let (t, out) = time_once(factory, data)?;
        best = Some(match best {
            None => (t, out),
            Some((b, o)) => (b.best(t), o),
        });
    }
    Ok(best.expect("at least one run"))
}

fn time_once(factory: &CompressorFactory, data: &[u8]) -> Result<(Timing, Vec<u8>), String> {
    // Warm up the thread's state (and QATzip session) outside the timing.
    let _ = super::gzip(factory, &data[..data.len().min(64 * 1024)]);
    let cpu0 = crate::bench::process_cpu();
    let start = Instant::now();
    let mut c = factory.create();
    let mut out = Vec::with_capacity(data.len() / 2);
    let pieces: Vec<&[u8]> = data.chunks(BLOCK).collect();
    for (i, p) in pieces.iter().enumerate() {
        let mut b = p.to_vec();
        let mode = if i + 1 == pieces.len() {
            Mode::Finish
        } else {
            Mode::Flush
        };
        c.compress(&mut b, mode).map_err(|e| e.to_string())?;
        out.extend_from_slice(&b);
    }
    if pieces.is_empty() {
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&b);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = crate::bench::process_cpu()
        .saturating_sub(cpu0)
        .as_secs_f64();
    Ok((Timing { wall, cpu }, out))
}

/// Best of `repeat` runs of [`external_once`].
fn time_external(
    cmd: &str,
    args: &[&str],
    file: &Path,
    repeat: usize,
) -> Result<(Timing, usize), String> {
    let mut best: Option<(Timing, usize)> = None;
    for _ in 0..repeat.max(1) {
        let (t, n) = external_once(cmd, args, file)?;
        best = Some(match best {
            None => (t, n),
            Some((b, n0)) => (b.best(t), n0),
        });
    }
    Ok(best.expect("at least one run"))
}

fn external_once(cmd: &str, args: &[&str], file: &Path) -> Result<(Timing, usize), String> {
    // This CLI has no other children, so the growth of the waited-for children's CPU
    // time is this child's.
    let cpu0 = crate::bench::children_cpu();
    let start = Instant::now();
    let mut child = Command::new(cmd)
        .args(args)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut so = child.stdout.take().unwrap();
    loop {
        let k = so.read(&mut buf).map_err(|e| format!("{cmd}: {e}"))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let st = child.wait().map_err(|e| format!("{cmd}: {e}"))?;
    if !st.success() {
        return Err(format!("{cmd} exited with {st}"));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = crate::bench::children_cpu()
        .saturating_sub(cpu0)
        .as_secs_f64();
    Ok((Timing { wall, cpu }, n))
}

/// Ratios of `rounds` interleaved rounds of level 6 against `gzip -6`, each sorted.
struct Interleaved {
    /// Ours over gzip in MB per CPU-second, one per round whose runs the clocks saw.
    cpu: Vec<f64>,
    /// Ours over gzip in MB per wall-clock second.
    wall: Vec<f64>,
    /// Our compressed size over gzip's.
    size: f64,
}

/// `rounds` rounds of one `gzip -6` run and one run of `f` on `data` (also in `file`),
/// the ratios taken within each round.
fn interleaved_ratios(
    f: &CompressorFactory,
    data: &[u8],
    file: &Path,
    rounds: usize,
) -> Result<Interleaved, String> {
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    let mut size = f64::NAN;
    for r in 0..rounds {
        // Alternate which runs first, so neither always meets a warmer or busier machine.
        let ((g, gn), (o, out)) = if r % 2 == 0 {
            let g = external_once("gzip", &["-6", "-c"], file)?;
            (g, time_once(f, data)?)
        } else {
            let o = time_once(f, data)?;
            (external_once("gzip", &["-6", "-c"], file)?, o)
        };
        size = out.len() as f64 / gn.max(1) as f64;
        // A run too short for the CPU clocks to see says nothing about the ratio.
        if g.cpu > 0.0 && o.cpu > 0.0 {
            cpu.push(g.cpu / o.cpu);
        }
        if g.wall > 0.0 && o.wall > 0.0 {
            wall.push(g.wall / o.wall);
        }
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    Ok(Interleaved { cpu, wall, size })
}

/// The median of sorted `v` (None if empty).
fn median(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

fn fmt_range(v: &[f64]) -> String {
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("{a:.2}-{b:.2}x"),
        _ => "no measurable rounds".into(),
    }
}

/// Run `envoy-qat bench-compress`.
pub fn run_bench(a: BenchCompressArgs) -> CliResult {
    let (data, parts) = load_corpus(&a)?;
    let mb = data.len() as f64 / 1e6;
    let src = match &a.corpus {
        Some(d) => format!("corpus {}", d.display()),
        None => "generated mixed corpus (90% text/JSON/HTML, 10% random)".into(),
    };
    println!(
        "envoy-qat bench-compress: {src}, {:.1} MB; one thread; best of {}; MB/s of uncompressed input; ratio = uncompressed/compressed",
        mb, a.repeat
    );
    let dir = tempdir()?;
    let file = dir.join("corpus.bin");
    std::fs::write(&file, &data).map_err(|e| (EXIT_FAILED, format!("{}: {e}", file.display())))?;

    let mut lines: Vec<BenchLine> = Vec::new();
    let mut gzip6: Option<BenchLine> = None;
    if !a.no_external {
        for (label, cmd, args) in [
            ("gzip -6", "gzip", vec!["-6", "-c"]),
            ("gzip -1", "gzip", vec!["-1", "-c"]),
            ("pigz -6 (all cores)", "pigz", vec!["-6", "-c"]),
            ("pigz -6 -p 1", "pigz", vec!["-6", "-p", "1", "-c"]),
        ] {
            match time_external(cmd, &args, &file, a.repeat) {
                Ok((t, n)) => {
                    let l = t.line(label.into(), mb, n);
                    if label == "gzip -6" {
                        gzip6 = Some(l.clone());
                    }
                    lines.push(l);
                }
                Err(e) => eprintln!("envoy-qat: baseline {label} skipped: {e}"),
            }
        }
    }
    let mut ours6_gz: Option<Vec<u8>> = None;
    for &level in &a.levels {
        let cfg = CompressorConfig {
            compression_level: level,
            window_bits: a.window_bits,
            memory_level: a.memory_level,
            backend: CompressBackend::Software,
            ..CompressorConfig::default()
        };
        let f = CompressorFactory::new(cfg).map_err(|e| (EXIT_USAGE, e.to_string()))?;
        let (t, out) = time_ours(&f, &data, a.repeat).map_err(|e| (EXIT_FAILED, e))?;
        lines.push(t.line(
            format!(
                "envoy-qat soft (zlib-rs) level {level} wbits {} memlevel {}",
                a.window_bits, a.memory_level
            ),
            mb,
            out.len(),
        ));
        if level == 6 {
            ours6_gz = Some(out);
        }
    }
    // What QATzip printed on stderr while measured, summarised after the table.
    let mut qatzip_printed = String::new();
    if !a.no_qatzip {
        for level in [1u32, 6, 9] {
            let cfg = CompressorConfig {
                compression_level: level,
                backend: CompressBackend::Qatzip,
                ..CompressorConfig::default()
            };
            match CompressorFactory::new(cfg) {
                Ok(f) => {
                    // Measure QATzip itself, not the zlib-rs shortcut taken without a device.
                    if let Some(l) = f.qatzip_lib() {
                        l.set_no_device_shortcut(false);
                    }
                    let (r, printed) =
                        crate::stdio::capture_stderr(|| time_ours(&f, &data, a.repeat));
                    let (t, out) = r.map_err(|e| {
                        // What QATzip printed may say why.
                        eprint!("{printed}");
                        (EXIT_FAILED, e)
                    })?;
                    qatzip_printed.push_str(&printed);
                    if let Some(l) = f.qatzip_lib() {
                        l.set_no_device_shortcut(true);
                    }
                    let s = f.stats();
                    let path = if s.hw_bytes_in > 0 {
                        "QAT device"
                    } else {
                        "QATzip software fallback"
                    };
                    lines.push(t.line(
                        format!("envoy-qat qatzip level {level} ({path})"),
                        mb,
                        out.len(),
                    ));
                }
                Err(e) => eprintln!("envoy-qat: qatzip skipped: {e}"),
            }
        }
    }
    println!(
        "{:<58} {:>8} {:>9} {:>11} {:>7} {:>12} {:>11} {:>11}",
        "compressor",
        "MB/s",
        "MB/cpu-s",
        "bytes",
        "ratio",
        "speed/gzip-6",
        "cpu/gzip-6",
        "size/gzip-6"
    );
    for l in &lines {
        let (sp, cp, sz) = match &gzip6 {
            Some(g) => (
                format!("{:.2}x", l.mb_per_s / g.mb_per_s),
                format!("{:.2}x", l.mb_per_cpu_s / g.mb_per_cpu_s),
                format!("{:.3}x", l.compressed as f64 / g.compressed as f64),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<58} {:>8.1} {:>9.1} {:>11} {:>7.3} {:>12} {:>11} {:>11}",
            l.label,
            l.mb_per_s,
            l.mb_per_cpu_s,
            l.compressed,
            data.len() as f64 / l.compressed as f64,
            sp,
            cp,
            sz
        );
    }
    if let Some(summary) = summarise_printed(&qatzip_printed) {
        println!("(QATzip printed on stderr while measured: {summary}. Without a device it retries the device every few requests and each retry prints; outside this benchmark, once envoy-qat has seen QATzip run without a device, new streams take zlib-rs quietly, asking QATzip again after 30 s, then at doubling intervals up to 10 min)");
    }
    println!("(speed: wall-clock MB/s ratio; cpu: MB per CPU-second ratio, steadier on a shared machine; pigz on all cores uses several CPU-seconds per second)");
    // Level 6 on the software backend: interleaved with gzip -6, then flush-heavy.
    let cfg = CompressorConfig {
        compression_level: 6,
        window_bits: a.window_bits,
        memory_level: a.memory_level,
        backend: CompressBackend::Software,
        ..CompressorConfig::default()
    };
    let f = CompressorFactory::new(cfg).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    if gzip6.is_some() && a.levels.contains(&6) && a.rounds > 0 {
        let r = interleaved_ratios(&f, &data, &file, a.rounds).map_err(|e| (EXIT_FAILED, e))?;
        println!(
            "level 6 vs gzip -6, {} interleaved round{}: cpu ratio median {} (range {}), wall-clock ratio median {} (range {}), size {:.4}x",
            a.rounds,
            if a.rounds == 1 { "" } else { "s" },
            fmt_ratio(median(&r.cpu)),
            fmt_range(&r.cpu),
            fmt_ratio(median(&r.wall)),
            fmt_range(&r.wall),
            r.size
        );
        if parts.len() > 1 {
            compare_parts(&f, &parts, &dir, a.rounds.min(3))?;
        }
    }

    // Flush-heavy stream: small writes, a Flush after each.
    let fw = a.flush_write.max(1);
    let sample = &data[..data.len().min(8 << 20)];
    let mut flush_secs = f64::MAX;
    let mut total = 0usize;
    let mut flushes = 0usize;
    for _ in 0..a.repeat.max(1) {
        let start = Instant::now();
        let mut c = f.create();
        total = 0;
        flushes = 0;
        for p in sample.chunks(fw) {
            let mut b = p.to_vec();
            c.compress(&mut b, Mode::Flush)
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
            total += b.len();
            flushes += 1;
        }
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish)
            .map_err(|e| (EXIT_FAILED, e.to_string()))?;
        total += b.len();
        flush_secs = flush_secs.min(start.elapsed().as_secs_f64());
    }
    let (whole_t, whole) = time_ours(&f, sample, a.repeat).map_err(|e| (EXIT_FAILED, e))?;
    let whole_secs = whole_t.wall;
    println!(
        "flush-heavy (level 6, the corpus's first {:.1} MB, {fw}-byte writes, Flush each): {flushes} flushes, {:.2} us/flush, {} bytes vs {} unflushed (+{:.1} bytes/flush), {:.1} MB/s vs {:.1} MB/s",
        sample.len() as f64 / 1e6,
        (flush_secs - whole_secs).max(0.0) * 1e6 / flushes as f64,
        total,
        whole.len(),
        (total as f64 - whole.len() as f64) / flushes as f64,
        sample.len() as f64 / 1e6 / flush_secs,
        sample.len() as f64 / 1e6 / whole_secs,
    );

    // Decompression: ours vs gzip -d on our level-6 output.
    if let Some(gz) = ours6_gz {
        let gzfile = dir.join("corpus.gz");
        std::fs::write(&gzfile, &gz).map_err(|e| (EXIT_FAILED, e.to_string()))?;
        let mut secs = f64::MAX;
        let mut out = Vec::new();
        for _ in 0..a.repeat.max(1) {
            let start = Instant::now();
            out =
                super::decompress::decompress_all(&gz, Format::Gzip, DecompressLimits::unlimited())
                    .map_err(|e| (EXIT_FAILED, format!("our decompressor on our output: {e}")))?;
            secs = secs.min(start.elapsed().as_secs_f64());
        }
        if out != data {
            return Err((
                EXIT_FAILED,
                "decompressed data differs from the corpus".into(),
            ));
        }
        let ours = mb / secs;
        match time_external("gzip", &["-dc"], &gzfile, a.repeat) {
            Ok((gt, n)) if n == data.len() => println!(
                "decompress: envoy-qat {:.1} MB/s, gzip -d {:.1} MB/s, ratio {:.2}x",
                ours,
                mb / gt.wall,
                ours / (mb / gt.wall)
            ),
            Ok((_, n)) => {
                return Err((
                    EXIT_FAILED,
                    format!("gzip -d gave {n} bytes, expected {}", data.len()),
                ))
            }
            Err(e) => println!("decompress: envoy-qat {ours:.1} MB/s (gzip -d skipped: {e})"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// "N× line" for each distinct line of `text`, with log prefixes such as
/// `[Error] [2026-11-26 06:49:41] (qatzip.c:697): ` left off; None if there are none.
fn summarise_printed(text: &str) -> Option<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut l = line;
        // Leading "[...]" and "(...):" groups.
        loop {
            let t = l.trim_start();
            let end = match t.chars().next() {
                Some('[') => t.find(']').map(|i| i + 1),
                Some('(') => t.find("):").map(|i| i + 2),
                _ => None,
            };
            match end {
                Some(i) => l = &t[i..],
                None => break,
            }
        }
        let l = l.trim();
        let l = if l.is_empty() { line } else { l };
        match counts.iter_mut().find(|(s, _)| s == l) {
            Some((_, n)) => *n += 1,
            None => counts.push((l.to_string(), 1)),
        }
    }
    if counts.is_empty() {
        return None;
    }
    // The most frequent first (stable: ties keep their first-seen order), at most five.
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut parts: Vec<String> = counts
        .iter()
        .take(SUMMARY_LINES)
        .map(|(s, n)| format!("{n}x \"{s}\""))
        .collect();
    let rest: usize = counts.iter().skip(SUMMARY_LINES).map(|(_, n)| n).sum();
    if rest > 0 {
        parts.push(format!(
            "{rest} other line{}",
            if rest == 1 { "" } else { "s" }
        ));
    }
    Some(parts.join(", "))
}

/// Distinct lines [`summarise_printed`] names; the rest are counted.
const SUMMARY_LINES: usize = 5;

/// Level 6 against `gzip -6` on each part of the corpus on its own, in interleaved rounds.
fn compare_parts(
    f: &CompressorFactory,
    parts: &[CorpusPart],
    dir: &Path,
    rounds: usize,
) -> CliResult {
    println!(
        "by part, level 6 vs gzip -6, {rounds} interleaved round{} each (gzip's process start-up, about 2 ms, counts against it: parts under a few MB flatter us):",
        if rounds == 1 { "" } else { "s" }
    );
    let file = dir.join("part.bin");
    for p in parts {
        std::fs::write(&file, &p.data)
            .map_err(|e| (EXIT_FAILED, format!("{}: {e}", file.display())))?;
        let r = interleaved_ratios(f, &p.data, &file, rounds).map_err(|e| (EXIT_FAILED, e))?;
        println!(
            "  {:<40} {:>7.2} MB  cpu ratio median {:>6} (range {})  size {:.4}x",
            p.name,
            p.data.len() as f64 / 1e6,
            fmt_ratio(median(&r.cpu)),
            fmt_range(&r.cpu),
            r.size
        );
    }
    let _ = std::fs::remove_file(&file);
    Ok(())
}

fn tempdir() -> Result<PathBuf, (u8, String)> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("envoy-qat-bench-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err((
        EXIT_FAILED,
        format!("cannot create a directory under {}", base.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarise_printed_counts_lines_without_log_prefixes() {
        let text = "Cannot open /dev/vfio\n\
            [Error] [2026-11-26 06:49:41] (qatzip.c:697): Error no hardware, switch to SW if permitted\n\
            Cannot open /dev/vfio\n\
            [Error] [2026-11-26 06:49:42] (qatzip.c:697): Error no hardware, switch to SW if permitted\n\
            \n";
        assert_eq!(
            summarise_printed(text).as_deref(),
            Some(
                "2x \"Cannot open /dev/vfio\", 2x \"Error no hardware, switch to SW if permitted\""
            )
        );
        assert_eq!(summarise_printed(" \n\n"), None);
        // A line that is nothing but a prefix is kept whole.
        assert_eq!(summarise_printed("[x]\n").as_deref(), Some("1x \"[x]\""));
        // The most frequent first; beyond five distinct lines, a count.
        let many = "a\nb\nb\nc\nd\ne\nf\ng\n";
        assert_eq!(
            summarise_printed(many).as_deref(),
            Some("2x \"b\", 1x \"a\", 1x \"c\", 1x \"d\", 1x \"e\", 2 other lines")
        );
    }

    #[test]
    fn generated_corpus_parts_hold_exactly_its_bytes() {
        let (all, parts) = generate_corpus_parts(1 << 20);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].data.len() + parts[1].data.len(), all.len());
        // Every 10th 64 KiB piece is random; the text part is the others in order.
        let text: Vec<u8> = all
            .chunks(64 * 1024)
            .enumerate()
            .filter(|(i, _)| i % 10 != 9)
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        assert_eq!(parts[0].data, text);
        // The random part does not compress; the text part does.
        let size = |d: &[u8]| {
            let f = CompressorFactory::new(CompressorConfig::default()).unwrap();
            super::super::gzip(&f, d).unwrap().len() as f64 / d.len() as f64
        };
        assert!(size(&parts[1].data) > 0.99);
        assert!(size(&parts[0].data) < 0.5);
    }
}
