//! The QATzip backend with the real trixie libqatzip.so.3 (no QAT device here): it loads
//! with dlopen, falls back to QATzip's software path, says so, counts software bytes,
//! and its output decodes with stock gzip, Python's zlib and ours.

mod compress_common;

use compress_common::*;
use envoy_qat::compress::qatzip::{self, QatzipLib};
use envoy_qat::compress::{CompressBackend, CompressorConfig, CompressorFactory, Mode};

#[test]
fn loads_from_the_trixie_build_and_reports_software_path() {
    let _turn = SHORTCUT.lock().unwrap_or_else(|e| e.into_inner());
    let path = qatzip::default_path();
    let lib = QatzipLib::load(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    assert!(lib.path().ends_with("libqatzip.so.3"));
    let f = factory(CompressBackend::Qatzip, 6);
    assert_eq!(f.backend_name(), "qatzip");
    let data = text_bytes(500_000, 31);
    let gz = envoy_qat::compress::gzip(&f, &data).unwrap();
    assert_gzip_d(&gz, &data);
    assert_pigz_d(&gz, &data);
    assert_python_zlib(&gz, &data);
    let s = f.stats();
    // No device on this machine: every byte went through software, none through QAT.
    assert_eq!(s.hw_bytes_in, 0);
    assert_eq!(s.sw_bytes_in, data.len() as u64);
    assert!(!f.qat_hardware_in_use());
    assert!(gz.len() < data.len() / 2);
}

#[test]
fn auto_picks_qatzip_when_it_loads() {
    let f = CompressorFactory::new(CompressorConfig::default()).unwrap();
    assert_eq!(f.backend_name(), "qatzip");
}

#[test]
fn bad_library_path_is_a_clear_error() {
    let e = QatzipLib::load(std::path::Path::new("/nonexistent/libqatzip.so.3"))
        .err()
        .unwrap();
    assert!(e.contains("/nonexistent/libqatzip.so.3"), "{e}");
    // A library that is not QATzip.
    let e = QatzipLib::load(std::path::Path::new("libz.so.1"))
        .err()
        .unwrap();
    assert!(e.contains("missing symbols"), "{e}");
}

/// Tests that switch the library's process-wide no-device shortcut, or read its session
/// pool's counters, take turns.
static SHORTCUT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn pooled_sessions_shared_by_interleaved_streams_and_threads() {
    let _turn = SHORTCUT.lock().unwrap_or_else(|e| e.into_inner());
    let f = factory(CompressBackend::Qatzip, 6);
    // Every request to QATzip (no zlib-rs shortcut) so sessions are really used.
    f.qatzip_lib().unwrap().set_no_device_shortcut(false);
    let lib = f.qatzip_lib().unwrap().clone();
    let before = lib.pool_stats();
    // 20 streams on this thread, interleaved call by call, all above the threshold.
    let data: Vec<Vec<u8>> = (0..20)
        .map(|i| text_bytes(20_000 + i * 37, i as u64))
        .collect();
    let mut cs: Vec<_> = (0..20).map(|_| f.create()).collect();
    let mut outs = vec![Vec::new(); 20];
    for round in 0..4 {
        for (i, c) in cs.iter_mut().enumerate() {
            let d = &data[i];
            let q = d.len() / 4;
            let end = if round == 3 { d.len() } else { (round + 1) * q };
            let mut b = d[round * q..end].to_vec();
            c.compress(
                &mut b,
                if round == 3 {
                    Mode::Finish
                } else {
                    Mode::Flush
                },
            )
            .unwrap();
            outs[i].extend_from_slice(&b);
        }
    }
    // One call at a time: at most one new session (none if an idle one was there).
    let after = lib.pool_stats();
    assert!(
        after.created <= before.created + 1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.in_use, 0);
    for (o, d) in outs.iter().zip(&data) {
        let got = envoy_qat::compress::decompress::decompress_all(
            o,
            envoy_qat::compress::Format::Gzip,
            envoy_qat::compress::DecompressLimits::unlimited(),
        )
        .unwrap();
        assert!(got == *d);
    }
    // C zlib agrees (one subprocess, not one per stream).
    assert_python_zlib(&outs[0], &data[0]);
    assert_python_zlib(&outs[19], &data[19]);
    // Another thread reuses the idle session: sessions belong to no thread.
    let f2 = f.clone();
    std::thread::spawn(move || {
        let d = text_bytes(10_000, 1);
        let gz = envoy_qat::compress::gzip(&f2, &d).unwrap();
        assert_gzip_d(&gz, &d);
    })
    .join()
    .unwrap();
    assert_eq!(lib.pool_stats().created, after.created);
    lib.set_no_device_shortcut(true);
}

#[test]
fn threshold_routes_small_inputs_to_zlib_rs() {
    let _turn = SHORTCUT.lock().unwrap_or_else(|e| e.into_inner());
    let f = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Qatzip,
        input_size_threshold: 4096,
        ..CompressorConfig::default()
    })
    .unwrap();
    let lib = f.qatzip_lib().unwrap().clone();
    let before = lib.pool_stats();
    let d = text_bytes(4095, 3);
    let gz = envoy_qat::compress::gzip(&f, &d).unwrap();
    assert_gzip_d(&gz, &d);
    // Below the threshold QATzip was not even asked: no session taken.
    let after = lib.pool_stats();
    assert_eq!((after.created, after.busy), (before.created, before.busy));
    assert_eq!(f.stats().sw_bytes_in, 4095);
}

#[test]
fn without_a_device_qatzip_is_probed_then_zlib_rs_takes_over() {
    let _turn = SHORTCUT.lock().unwrap_or_else(|e| e.into_inner());
    let f = factory(CompressBackend::Qatzip, 6);
    // Enough data for several QATzip-sized requests, in separate calls.
    let d = text_bytes(400_000, 77);
    let mut c = f.create();
    let (gz, _) = compress_pieces(&mut c, &d, 100_000);
    assert_python_zlib(&gz, &d);
    let s = f.stats();
    assert_eq!(s.hw_bytes_in, 0);
    assert_eq!(s.sw_bytes_in, d.len() as u64);
    // Only probes went to QATzip: the first request, and one more per 30 s interval.
    assert!(
        s.qatzip_bytes_in <= 100_000,
        "{} bytes through QATzip",
        s.qatzip_bytes_in
    );
    assert!(f.qatzip_lib().unwrap().device_absent());
    // With the shortcut off every request goes to QATzip's own fallback.
    let f2 = factory(CompressBackend::Qatzip, 6);
    let lib = f2.qatzip_lib().unwrap().clone();
    lib.set_no_device_shortcut(false);
    let mut c = f2.create();
    let (gz, _) = compress_pieces(&mut c, &d, 100_000);
    lib.set_no_device_shortcut(true);
    assert_python_zlib(&gz, &d);
    assert_eq!(f2.stats().qatzip_bytes_in, d.len() as u64);
}

/// Measurement (issue 15, item 4): how the session policy behaves on QATzip's software
/// path (the trixie libqatzip, no device): T threads at once, each compressing streams
/// in 64 KiB Flush pieces, with no session limit (a session per concurrent caller, all
/// through QATzip's software fallback) and with limits of 1 and 2 (calls beyond go to
/// zlib-rs). Prints throughput, sessions made and where the bytes went.
///   cargo test --release --test compress_qatzip -- --ignored --nocapture measure_session_policy
#[test]
#[ignore]
fn measure_session_policy_on_qatzip_software_path() {
    let _turn = SHORTCUT.lock().unwrap_or_else(|e| e.into_inner());
    let threads = 4;
    let per_thread = 8 << 20;
    let lib = QatzipLib::load_default().unwrap();
    lib.set_no_device_shortcut(false);
    println!(
        "QATzip software path ({}), {threads} threads x {} MiB, level 6, 64 KiB Flush pieces",
        lib.path().display(),
        per_thread >> 20
    );
    println!(
        "{:>12} {:>8} {:>9} {:>12} {:>12} {:>10}",
        "limit", "MB/s", "sessions", "QATzip MB", "zlib-rs MB", "busy calls"
    );
    let corpus: Vec<Vec<u8>> = (0..threads)
        .map(|t| text_bytes(per_thread, 100 + t as u64))
        .collect();
    for limit in [None, Some(1), Some(2), None] {
        lib.drop_idle_sessions();
        lib.set_session_limit(limit);
        let before = lib.pool_stats();
        let f = CompressorFactory::with_qatzip(
            CompressorConfig {
                compression_level: 6,
                ..CompressorConfig::default()
            },
            lib.clone(),
        )
        .unwrap();
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for d in &corpus {
                let f = f.clone();
                s.spawn(move || {
                    for stream in d.chunks(1 << 20) {
                        let mut c = f.create();
                        let (gz, _) = compress_pieces(&mut c, stream, 64 * 1024);
                        assert!(gz.len() < stream.len());
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let st = f.stats();
        let p = lib.pool_stats();
        let total = st.bytes_in as f64;
        println!(
            "{:>12} {:>8.1} {:>9} {:>12.1} {:>12.1} {:>10}",
            limit.map_or("none".to_string(), |n| n.to_string()),
            total / secs / 1e6,
            p.created - before.created,
            st.qatzip_bytes_in as f64 / 1e6,
            (st.sw_bytes_in - st.qatzip_bytes_in.min(st.sw_bytes_in)) as f64 / 1e6,
            p.busy - before.busy
        );
    }
    lib.set_session_limit(None);
    lib.set_no_device_shortcut(true);
}
