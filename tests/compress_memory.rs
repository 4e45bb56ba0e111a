//! Thousands of concurrent streams: memory per idle stream measured with a counting
//! global allocator, compared with what `CompressorFactory::stats()` reports, and freed
//! at Finish. Prints the figures (run with --nocapture to see them).

mod compress_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use compress_common::*;
use envoy_qat::compress::{CompressBackend, CompressorConfig, CompressorFactory, Mode};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: as alloc.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: as dealloc/alloc.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The allocation counter is process-wide: measuring tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Create `n` streams, give each some data and a Flush, and measure what stays allocated
/// while they are idle; then Finish them all and check every output.
fn measure(f: &CompressorFactory, n: usize) -> (f64, f64) {
    let data = text_bytes(2000, 5);
    // Warm-up: thread-local states, QATzip session, library caches.
    let _ = envoy_qat::compress::gzip(f, &data).unwrap();
    let base = live();
    let mut streams: Vec<_> = (0..n).map(|_| f.create()).collect();
    let created = live();
    let mut outs: Vec<Vec<u8>> = Vec::with_capacity(n);
    for c in streams.iter_mut() {
        let mut b = data.clone();
        c.compress(&mut b, Mode::Flush).unwrap();
        outs.push(b);
    }
    // Outputs are the caller's buffers; exclude them.
    let out_bytes: i64 = outs.iter().map(|o| o.capacity() as i64).sum::<i64>()
        + (outs.capacity() * std::mem::size_of::<Vec<u8>>()) as i64;
    let flushed = live() - out_bytes;
    let before_data = (created - base) as f64 / n as f64;
    let after_flush = (flushed - base) as f64 / n as f64;
    assert_eq!(f.stats().flushes, n as u64);
    for (c, o) in streams.iter_mut().zip(outs.iter_mut()) {
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish).unwrap();
        o.extend_from_slice(&b);
    }
    assert_eq!(
        f.stats().deflate_states,
        0,
        "Finish frees every deflate state"
    );
    let finished = live()
        - outs.iter().map(|o| o.capacity() as i64).sum::<i64>()
        - (outs.capacity() * std::mem::size_of::<Vec<u8>>()) as i64;
    let per_finished = (finished - base) as f64 / n as f64;
    assert!(
        per_finished < 256.0,
        "after Finish a stream holds {per_finished} bytes"
    );
    // Spot-check outputs with real decoders.
    for o in outs.iter().step_by(n / 5) {
        assert_gzip_d(o, &data);
    }
    drop(streams);
    (before_data, after_flush)
}

#[test]
fn bytes_per_idle_stream() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // QATzip mode: 10,000 concurrent streams hold no deflate or QATzip state between calls.
    let fq = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Qatzip,
        ..CompressorConfig::default()
    })
    .unwrap();
    let (q0, q1) = measure(&fq, 10_000);
    let sq = fq.stats();
    println!("qatzip: bytes per idle stream: {q0:.0} before data, {q1:.0} after a Flush (stats: {} / {})",
        sq.idle_stream_bytes_before_data, sq.idle_stream_bytes_after_flush);
    assert!(q1 <= 256.0, "qatzip idle stream holds {q1} bytes");
    assert!((q1 - sq.idle_stream_bytes_after_flush as f64).abs() < 64.0);

    // Software mode with Envoy gzip's defaults (window 12, memory level 5): a deflate
    // state per stream from its first byte to Finish. 1,000 streams.
    let fs = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Software,
        compression_level: 6,
        max_stream_states: 0,
        ..CompressorConfig::default()
    })
    .unwrap();
    let (s0, s1) = measure(&fs, 1000);
    let ss = fs.stats();
    println!("soft wbits 12 memlevel 5: bytes per idle stream: {s0:.0} before data, {s1:.0} after a Flush (stats estimate {})",
        ss.idle_stream_bytes_after_flush);
    assert!(s0 <= 256.0, "software stream before data holds {s0} bytes");
    let est = ss.idle_stream_bytes_after_flush as f64;
    assert!(
        (s1 - est).abs() / est < 0.03,
        "measured {s1} vs estimate {est}"
    );

    // Software, window 15 / memory level 8 (zlib's defaults): larger states.
    let fs15 = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Software,
        compression_level: 6,
        window_bits: 15,
        memory_level: 8,
        max_stream_states: 0,
        ..CompressorConfig::default()
    })
    .unwrap();
    let (_, s15) = measure(&fs15, 500);
    let est15 = fs15.stats().idle_stream_bytes_after_flush as f64;
    println!("soft wbits 15 memlevel 8: bytes per idle stream after a Flush: {s15:.0} (stats estimate {est15})");
    assert!(
        (s15 - est15).abs() / est15 < 0.03,
        "measured {s15} vs estimate {est15}"
    );
}

#[test]
fn software_memory_is_bounded_by_max_stream_states() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 5,000 concurrent software streams, at most 100 with their own deflate state: the
    // rest share the thread's full-flush state and hold nothing between calls.
    let f = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Software,
        compression_level: 6,
        max_stream_states: 100,
        ..CompressorConfig::default()
    })
    .unwrap();
    let data = text_bytes(3000, 8);
    let _ = envoy_qat::compress::gzip(&f, &data).unwrap();
    let base = live();
    let mut streams: Vec<_> = (0..5000).map(|_| f.create()).collect();
    let mut outs = Vec::with_capacity(5000);
    for c in streams.iter_mut() {
        let mut b = data.clone();
        c.compress(&mut b, Mode::Flush).unwrap();
        outs.push(b);
    }
    let out_bytes: i64 = outs
        .iter()
        .map(|o: &Vec<u8>| o.capacity() as i64)
        .sum::<i64>()
        + (outs.capacity() * std::mem::size_of::<Vec<u8>>()) as i64;
    let held = live() - base - out_bytes;
    let s = f.stats();
    assert_eq!(s.deflate_states, 100);
    assert_eq!(s.shared_state_streams, 4900);
    let bound = 100 * s.idle_stream_bytes_after_flush as i64 * 21 / 20 + 5000 * 64;
    println!("soft, 5000 streams, max_stream_states 100: {held} bytes held (bound {bound}), {:.0} bytes per stream", held as f64 / 5000.0);
    assert!(held <= bound, "{held} > {bound}");
    for (c, o) in streams.iter_mut().zip(outs.iter_mut()) {
        let mut b = b" and the end".to_vec();
        c.compress(&mut b, Mode::Finish).unwrap();
        o.extend_from_slice(&b);
    }
    let mut want = data.clone();
    want.extend_from_slice(b" and the end");
    // First (own state) and last (shared state) streams decode with gzip and Python.
    for o in [&outs[0], &outs[99], &outs[100], &outs[4999]] {
        assert_gzip_d(o, &want);
        assert_python_zlib(o, &want);
    }
    assert_eq!(f.stats().deflate_states, 0);
}
