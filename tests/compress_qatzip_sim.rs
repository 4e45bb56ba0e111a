//! The QATzip path against the QATzip simulator in tests/qat-sim (src/qatzip.rs), which
//! models QATzip 1.3.1: a fixed number of DC instances per process, a free one grabbed
//! per call, and a silent software fallback (QZ_OK) when calls outnumber them.
//!
//! Each test loads its own copy of libqat_sim.so (a separate "process" for QATzip: its
//! own instances, counters and session pool) and configures it through
//! `qatzip_sim_configure`.
//!
//! What is checked: hardware bytes are exactly what the simulated device compressed
//! (not what QATzip's status claims); the session pool keeps concurrent calls within the
//! instance count, so no call falls back silently, and the overflow goes to zlib-rs,
//! counted; every output decodes with `gzip -d` and flate2.

mod compress_common;

#[path = "qat-sim/testutil.rs"]
mod testutil;

use std::ffi::{c_char, c_int, CString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use compress_common::*;
use envoy_qat::compress::qatzip::{QatzipLib, REPROBE_INTERVAL};
use envoy_qat::compress::{CompressorConfig, CompressorFactory, Mode, StatsSnapshot};

/// One simulated QATzip process: a private copy of the simulator library.
struct SimCopy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    handle: libloading::Library,
    lib: Arc<QatzipLib>,
}

impl SimCopy {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libqatzip-sim.so");
        std::fs::copy(testutil::sim_path(), &path).unwrap();
        let lib = QatzipLib::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: the simulator's constructors have no preconditions; the same object
        // QatzipLib opened (same path), so configuring it configures what QatzipLib calls.
        let handle = unsafe { libloading::Library::new(&path) }.unwrap();
        let c = CString::new(config).unwrap();
        // SAFETY: the exported configure function takes a NUL-terminated string.
        let rc = unsafe {
            handle
                .get::<unsafe extern "C" fn(*const c_char) -> c_int>(b"qatzip_sim_configure\0")
                .unwrap()(c.as_ptr())
        };
        assert_eq!(rc, 0, "qatzip_sim_configure({config})");
        Self {
            _dir: dir,
            path,
            handle,
            lib,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        let c = CString::new(name).unwrap();
        // SAFETY: as above; the counter function reads a NUL-terminated name.
        let v = unsafe {
            self.handle
                .get::<unsafe extern "C" fn(*const c_char) -> u64>(b"qatzip_sim_counter\0")
                .unwrap()(c.as_ptr())
        };
        assert_ne!(v, u64::MAX, "unknown counter {name}");
        v
    }

    fn factory(&self, level: u32) -> CompressorFactory {
        CompressorFactory::with_qatzip(
            CompressorConfig {
                compression_level: level,
                ..CompressorConfig::default()
            },
            self.lib.clone(),
        )
        .unwrap()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn gunzip_flate2(gz: &[u8]) -> Vec<u8> {
    let mut d = flate2::read::MultiGzDecoder::new(gz);
    let mut out = Vec::new();
    d.read_to_end(&mut out).expect("flate2 decodes the stream");
    out
}

/// `threads` threads at once, each compressing `streams` streams of `size` bytes in
/// 64 KiB Flush pieces; every stream is checked with flate2, one per thread with gzip -d.
fn run_concurrently(f: &CompressorFactory, threads: usize, streams: usize, size: usize) -> u64 {
    let start = Arc::new(Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut total = 0u64;
                for s in 0..streams {
                    let d = text_bytes(size + t * 101 + s * 7, (t * 1000 + s) as u64);
                    let mut c = f.create();
                    let (gz, _) = compress_pieces(&mut c, &d, 64 * 1024);
                    assert!(gunzip_flate2(&gz) == d, "thread {t} stream {s}: flate2");
                    if s == 0 {
                        assert_gzip_d(&gz, &d);
                    }
                    total += d.len() as u64;
                }
                total
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).sum()
}

/// Bytes of the start-up check of `total_in` (one request below the threshold, which
/// QATzip sends to software), once per library.
const PROBE: u64 = 64;

fn assert_balanced(s: &StatsSnapshot, total: u64) {
    assert_eq!(s.bytes_in, total);
    assert_eq!(s.hw_bytes_in + s.sw_bytes_in, total, "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
}

#[test]
fn calls_beyond_the_instances_go_to_zlib_rs_and_are_counted() {
    // 2 instances, each device request holds its instance 3 ms: 6 threads at once
    // would outnumber them.
    let sim = SimCopy::new("instances=2,hw_us=3000");
    let f = sim.factory(6);
    let total = run_concurrently(&f, 6, 3, 300_000);
    let s = f.stats();
    assert_balanced(&s, total);
    // The pool learned the instance count from cpaDcGetNumInstances...
    assert_eq!(sim.lib.session_limit(), Some(2), "{}", sim.path().display());
    // ...so QATzip never had to fall back silently, and never more than 2 calls held
    // instances at once.
    assert_eq!(sim.counter("no_instance"), 0);
    assert!(sim.counter("busy_peak") <= 2);
    let p = sim.lib.pool_stats();
    assert!(p.created <= 2 && p.peak_in_use <= 2, "{p:?}");
    assert!(
        p.busy > 0,
        "6 threads never found both sessions in use: {p:?}"
    );
    // Hardware bytes are what the device compressed; the overflow went to zlib-rs.
    assert!(s.hw_bytes_exact);
    assert_eq!(s.hw_bytes_in, sim.counter("hw_bytes"));
    assert!(s.hw_bytes_in > 0);
    assert!(s.sessions_busy_bytes_in > 0, "{s:?}");
    assert_eq!(
        s.qatzip_bytes_in,
        s.hw_bytes_in + sim.counter("sw_bytes") - PROBE
    );
    assert_eq!(
        s.sw_bytes_in,
        s.sessions_busy_bytes_in + sim.counter("sw_bytes") - PROBE
    );
}

#[test]
fn without_the_pool_qatzip_falls_back_silently_and_it_is_counted_as_software() {
    // The old policy (a session per caller, no limit): QATzip finds no free instance for
    // some calls, compresses them in software and says QZ_OK.
    let sim = SimCopy::new("instances=1,hw_us=3000");
    sim.lib.set_session_limit(None);
    let f = sim.factory(6);
    let total = run_concurrently(&f, 4, 3, 300_000);
    let s = f.stats();
    assert_balanced(&s, total);
    assert!(
        sim.counter("no_instance") > 0,
        "no silent fallback happened"
    );
    assert!(sim.counter("sw_bytes") > PROBE);
    // Software-compressed bytes are not hardware bytes, though QATzip said QZ_OK.
    assert!(s.hw_bytes_exact);
    assert_eq!(s.hw_bytes_in, sim.counter("hw_bytes"));
    assert_eq!(s.qatzip_bytes_in, total);
    assert_eq!(s.sw_bytes_in, sim.counter("sw_bytes") - PROBE);
    assert_eq!(s.sessions_busy_bytes_in, 0);
    assert!(sim.lib.pool_stats().created > 1);
}

#[test]
fn zero_instances_mean_software_and_no_hardware_bytes() {
    // cpaDcGetNumInstances may answer 0 and qzInit still succeeds (qatzip.c): every call
    // finds no instance. The pool then learns no limit (it needs one instance at least).
    let sim = SimCopy::new("instances=0");
    let f = sim.factory(1);
    let total = run_concurrently(&f, 2, 2, 200_000);
    let s = f.stats();
    assert_balanced(&s, total);
    assert_eq!(s.hw_bytes_in, 0);
    assert_eq!(sim.counter("hw_bytes"), 0);
    assert!(sim.counter("no_instance") > 0);
    assert_eq!(sim.lib.session_limit(), None);
}

#[test]
fn a_device_error_mid_call_is_the_one_overcount() {
    // Every 2nd device request fails half-way; QATzip finishes it in software and still
    // adds the whole call to total_in (the documented limit of hw_bytes_in).
    let sim = SimCopy::new("instances=1,device_error_every=2");
    let f = sim.factory(6);
    let d = text_bytes(600_000, 9);
    let mut c = f.create();
    let (gz, _) = compress_pieces(&mut c, &d, 100_000);
    assert!(gunzip_flate2(&gz) == d);
    assert_gzip_d(&gz, &d);
    let s = f.stats();
    assert_balanced(&s, d.len() as u64);
    assert!(sim.counter("device_errors") > 0);
    let device = sim.counter("hw_bytes");
    let software_in_device_calls = sim.counter("sw_bytes") - PROBE;
    assert_eq!(s.hw_bytes_in, device + software_in_device_calls);
}

#[test]
fn a_qatzip_whose_total_in_counts_software_makes_hw_bytes_an_upper_bound() {
    // Not QATzip 1.3.1: a hypothetical release whose software path also adds to total_in.
    // The start-up check notices and says the figure is an upper bound.
    let sim = SimCopy::new("instances=1,total_in_counts_sw=1");
    let f = sim.factory(6);
    let d = text_bytes(300_000, 5);
    let gz = envoy_qat::compress::gzip(&f, &d).unwrap();
    assert!(gunzip_flate2(&gz) == d);
    let s = f.stats();
    assert_eq!(sim.lib.total_in_is_device_only(), Some(false));
    assert!(!s.hw_bytes_exact);
    assert!(s.hw_bytes_in >= sim.counter("hw_bytes"));
    assert_balanced(&s, d.len() as u64);
}

#[test]
fn no_device_means_software_and_the_zlib_rs_shortcut() {
    let sim = SimCopy::new("no_device=1");
    let f = sim.factory(6);
    let d = text_bytes(400_000, 8);
    let mut c = f.create();
    let (gz, _) = compress_pieces(&mut c, &d, 100_000);
    assert!(gunzip_flate2(&gz) == d);
    let s = f.stats();
    assert_balanced(&s, d.len() as u64);
    assert_eq!(s.hw_bytes_in, 0);
    assert!(sim.lib.device_absent());
    assert!(!f.qat_hardware_in_use());
    // Only the first request (and the total_in check) reached QATzip.
    assert!(s.qatzip_bytes_in <= 100_000, "{s:?}");
    assert_eq!(sim.lib.session_limit(), None);
    // Each probe that again finds no device doubles the wait before the next one.
    assert_eq!(sim.lib.reprobe_interval(), Some(REPROBE_INTERVAL));
    for want in [60, 120] {
        sim.lib.expire_no_device_result();
        let before = f.stats().qatzip_bytes_in;
        let (gz, _) = compress_pieces(&mut f.create(), &d, 100_000);
        assert!(gunzip_flate2(&gz) == d);
        let probed = f.stats().qatzip_bytes_in - before;
        assert!(
            probed > 0 && probed <= 100_000,
            "one probe, not {probed} bytes"
        );
        assert_eq!(sim.lib.reprobe_interval(), Some(Duration::from_secs(want)));
        assert!(sim.lib.device_absent());
    }
}

#[test]
fn hardware_path_output_decodes_across_flushes() {
    // One caller, enough instances: everything on the simulated device, in hw_buff_sz
    // pieces with full flushes, interleaved streams on one session.
    let sim = SimCopy::new("instances=2");
    let f = sim.factory(9);
    let data: Vec<Vec<u8>> = (0..5).map(|i| text_bytes(150_000 + i, i as u64)).collect();
    let mut cs: Vec<_> = (0..5).map(|_| f.create()).collect();
    let mut outs = vec![Vec::new(); 5];
    for round in 0..3 {
        for (i, c) in cs.iter_mut().enumerate() {
            let q = data[i].len() / 3;
            let end = if round == 2 {
                data[i].len()
            } else {
                (round + 1) * q
            };
            let mut b = data[i][round * q..end].to_vec();
            let mode = if round == 2 {
                Mode::Finish
            } else {
                Mode::Flush
            };
            c.compress(&mut b, mode).unwrap();
            outs[i].extend_from_slice(&b);
        }
    }
    for (o, d) in outs.iter().zip(&data) {
        assert!(gunzip_flate2(o) == *d);
    }
    assert_gzip_d(&outs[0], &data[0]);
    let s = f.stats();
    let total: u64 = data.iter().map(|d| d.len() as u64).sum();
    assert_balanced(&s, total);
    assert_eq!(s.hw_bytes_in, total);
    assert_eq!(sim.counter("no_instance"), 0);
    assert_eq!(sim.lib.pool_stats().created, 1);
}

/// Measurement (issue 15, item 4): on the simulated device (2 DC instances, each device
/// request holding its instance 2 ms), T threads at once with no session limit (the old
/// per-caller sessions) and with the pool's limit (the instance count): how many bytes
/// the device did, how many QATzip silently did in software, and how many went to
/// zlib-rs.
///   cargo test --release --test compress_qatzip_sim -- --ignored --nocapture measure
#[test]
#[ignore]
fn measure_session_policy_on_the_simulator() {
    println!("QATzip simulator: 2 DC instances, 2 ms per device request, 64 KiB Flush pieces");
    println!(
        "{:>7} {:>10} {:>8} {:>10} {:>14} {:>11} {:>14}",
        "threads", "limit", "MB/s", "device MB", "silent-sw MB", "zlib-rs MB", "silent fallbk"
    );
    for threads in [2, 4, 8] {
        for pooled in [false, true] {
            let sim = SimCopy::new("instances=2,hw_us=2000");
            if !pooled {
                sim.lib.set_session_limit(None);
            }
            let f = sim.factory(6);
            let start = std::time::Instant::now();
            let total = run_concurrently(&f, threads, 4, 1 << 20);
            let secs = start.elapsed().as_secs_f64();
            let s = f.stats();
            println!(
                "{:>7} {:>10} {:>8.1} {:>10.1} {:>14.1} {:>11.1} {:>14}",
                threads,
                sim.lib
                    .session_limit()
                    .map_or("none".to_string(), |n| n.to_string()),
                total as f64 / secs / 1e6,
                s.hw_bytes_in as f64 / 1e6,
                (sim.counter("sw_bytes") - PROBE) as f64 / 1e6,
                s.sessions_busy_bytes_in as f64 / 1e6,
                sim.counter("no_instance"),
            );
        }
    }
}
