//! Round trips through our compressor (software and QATzip backends), decoded by the
//! system `gzip -d`, `pigz -d`, Python's zlib and our own decompressor.

mod compress_common;

use compress_common::*;
use envoy_qat::compress::decompress::decompress_all;
use envoy_qat::compress::{CompressBackend, CompressError, DecompressLimits, Format, Mode};

fn check_all_decoders(gz: &[u8], plain: &[u8]) {
    assert_gzip_d(gz, plain);
    assert_pigz_d(gz, plain);
    assert_python_zlib(gz, plain);
    let ours = decompress_all(gz, Format::Gzip, DecompressLimits::unlimited()).unwrap();
    assert!(ours == plain, "our decompressor differs");
}

#[test]
fn empty_one_byte_and_random() {
    for be in backends() {
        let f = factory(be, 6);
        for data in [
            Vec::new(),
            vec![b'x'],
            random_bytes(1 << 20, 7),
            random_bytes(100, 8),
        ] {
            let gz = envoy_qat::compress::gzip(&f, &data).unwrap();
            check_all_decoders(&gz, &data);
            if data.len() == 1 << 20 {
                // Incompressible: stored blocks, bounded expansion.
                assert!(
                    gz.len() < data.len() + data.len() / 100 + 64,
                    "{be:?}: {} bytes",
                    gz.len()
                );
            }
        }
    }
}

#[test]
fn finish_right_after_create() {
    for be in backends() {
        let f = factory(be, 6);
        let mut c = f.create();
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish).unwrap();
        check_all_decoders(&b, b"");
        // Nothing more is accepted after Finish.
        let mut more = b"late".to_vec();
        assert_eq!(
            c.compress(&mut more, Mode::Flush),
            Err(CompressError::AlreadyFinished)
        );
    }
}

#[test]
fn flush_with_no_new_data() {
    for be in backends() {
        let f = factory(be, 6);
        let mut c = f.create();
        let mut out = Vec::new();
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Flush).unwrap();
        out.extend_from_slice(&b);
        let mut b = b"hello hello hello".to_vec();
        c.compress(&mut b, Mode::Flush).unwrap();
        out.extend_from_slice(&b);
        let mark = out.len();
        for _ in 0..5 {
            let mut b = Vec::new();
            c.compress(&mut b, Mode::Flush).unwrap();
            assert!(b.len() <= 5, "{be:?}: empty flush wrote {} bytes", b.len());
            out.extend_from_slice(&b);
        }
        assert!(
            out.len() - mark <= 5,
            "{be:?}: repeated empty flushes grew the stream"
        );
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish).unwrap();
        out.extend_from_slice(&b);
        check_all_decoders(&out, b"hello hello hello");
    }
}

#[test]
fn thousands_of_tiny_flushes() {
    for be in backends() {
        let f = factory(be, 6);
        let data = text_bytes(20_000, 3);
        let mut c = f.create();
        // 1..=7-byte pieces, a Flush after each: ~5000 flushes.
        let mut out = Vec::new();
        let mut i = 0;
        let mut n = 0;
        while i < data.len() {
            let k = (1 + n % 7).min(data.len() - i);
            let mut b = data[i..i + k].to_vec();
            c.compress(&mut b, Mode::Flush).unwrap();
            out.extend_from_slice(&b);
            i += k;
            n += 1;
        }
        assert!(n > 4000);
        let mut b = Vec::new();
        c.compress(&mut b, Mode::Finish).unwrap();
        out.extend_from_slice(&b);
        check_all_decoders(&out, &data);
        assert_eq!(f.stats().flushes, n as u64);
    }
}

#[test]
fn large_text_100mb() {
    // 100 MB through the software backend in 1 MiB Flush pieces, then gzip -d and ours.
    // (QATzip's software fallback is covered with smaller inputs: it is slower.)
    let data = text_bytes(100_000_000, 11);
    let f = factory(CompressBackend::Software, 6);
    let mut c = f.create();
    let (gz, _) = compress_pieces(&mut c, &data, 1 << 20);
    assert!(
        gz.len() < data.len() / 3,
        "ratio too low: {} bytes",
        gz.len()
    );
    assert_gzip_d(&gz, &data);
    let ours = decompress_all(&gz, Format::Gzip, DecompressLimits::unlimited()).unwrap();
    assert!(ours == data);
    let s = f.stats();
    assert_eq!(s.bytes_in, data.len() as u64);
    assert_eq!(s.bytes_out, gz.len() as u64);
}

#[test]
fn qatzip_large_mixed_pieces() {
    // Pieces below and above input_size_threshold in one stream: software segments and
    // QATzip segments interleave inside one gzip member.
    let f = factory(CompressBackend::Qatzip, 6);
    let data = text_bytes(3_000_000, 5);
    let mut c = f.create();
    let mut out = Vec::new();
    let mut i = 0;
    for k in [100usize, 5000, 1023, 1024, 300_000, 7, 2_000_000]
        .iter()
        .cycle()
    {
        if i >= data.len() {
            break;
        }
        let k = (*k).min(data.len() - i);
        let mut b = data[i..i + k].to_vec();
        c.compress(&mut b, Mode::Flush).unwrap();
        out.extend_from_slice(&b);
        i += k;
    }
    let mut b = Vec::new();
    c.compress(&mut b, Mode::Finish).unwrap();
    out.extend_from_slice(&b);
    check_all_decoders(&out, &data);
    let s = f.stats();
    assert_eq!(s.hw_bytes_in + s.sw_bytes_in, data.len() as u64);
}

#[test]
fn concurrent_streams_on_many_threads() {
    // 8 threads x 250 live streams each, fed round-robin in 2-6 KiB Flush pieces, one
    // factory shared by all threads (as Envoy shares it across workers).
    for be in backends() {
        let f = factory(be, 6);
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let datas: Vec<Vec<u8>> = (0..250u64)
                        .map(|i| text_bytes(6000 + (i as usize * 13) % 5000, t * 1000 + i))
                        .collect();
                    let mut cs: Vec<_> = datas.iter().map(|_| f.create()).collect();
                    let mut outs = vec![Vec::new(); datas.len()];
                    let mut pos = vec![0usize; datas.len()];
                    let mut open = datas.len();
                    let mut round = 0usize;
                    while open > 0 {
                        for i in 0..datas.len() {
                            if cs[i].is_finished() {
                                continue;
                            }
                            let step = 2048 + ((i + round) % 5) * 1024;
                            let end = (pos[i] + step).min(datas[i].len());
                            let mut b = datas[i][pos[i]..end].to_vec();
                            let mode = if end == datas[i].len() {
                                Mode::Finish
                            } else {
                                Mode::Flush
                            };
                            cs[i].compress(&mut b, mode).unwrap();
                            outs[i].extend_from_slice(&b);
                            pos[i] = end;
                            if mode == Mode::Finish {
                                open -= 1;
                            }
                        }
                        round += 1;
                    }
                    for (o, d) in outs.iter().zip(&datas) {
                        let got =
                            decompress_all(o, Format::Gzip, DecompressLimits::unlimited()).unwrap();
                        assert!(got == *d);
                    }
                    // A sample through the system gzip.
                    assert_gzip_d(&outs[0], &datas[0]);
                    datas.iter().map(|d| d.len() as u64).sum::<u64>()
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let s = f.stats();
        assert_eq!(s.streams_created, 2000);
        assert_eq!(s.streams_finished, 2000);
        assert_eq!(s.bytes_in, total);
        assert_eq!(s.hw_bytes_in + s.sw_bytes_in, total);
        assert_eq!(s.deflate_states, 0);
    }
}
