//! The bounded streaming decompressor (`compress::Decompressor`) on arbitrary input with
//! arbitrary limits and arbitrary input splits. It must never panic, hang or allocate
//! without bound; errors are fine.
//!
//! Input layout (so seeds are plain compressed files behind an 8-byte header):
//! byte 0 format (gzip, zlib, raw, auto), byte 1 split size, bytes 2..6 max_output
//! (u32 LE, 0 = none), byte 6 max_ratio (0 = none), byte 7 ratio_grace (KiB), then data.
//!
//! Oracles: feeding the data in pieces gives the same result as feeding it at once (with
//! no ratio limit, which is judged on the input consumed so far); output
//! never passes `max_output` by more than one internal chunk (64 KiB); `total_out` counts
//! what was produced; gzip data accepted by us decodes to the same bytes with C zlib
//! (tests/czlib: independent of the zlib-rs our decompressor is built on; flate2 is not,
//! as this project builds it).

use envoy_qat::compress::{DecompressLimits, Decompressor, Format};

/// The decompressor's output chunk: it may overshoot a limit by at most this much.
const CHUNK: u64 = 64 * 1024;

fn decode(
    format: Format,
    limits: DecompressLimits,
    data: &[u8],
    split: usize,
) -> (Result<(), String>, Vec<u8>, u64) {
    let mut d = Decompressor::new(format, limits);
    let mut out = Vec::new();
    let mut r = Ok(());
    for piece in data.chunks(split.max(1)) {
        if let Err(e) = d.decompress(piece, &mut out) {
            r = Err(e.to_string());
            // After an error the stream is closed.
            assert!(d.decompress(b"x", &mut Vec::new()).is_err());
            break;
        }
    }
    if r.is_ok() {
        r = d.finish().map_err(|e| e.to_string());
    }
    assert_eq!(
        d.total_out(),
        out.len() as u64,
        "total_out disagrees with the output"
    );
    (r, out, d.members())
}

/// One fuzz input: panics on a bug.
pub fn run(input: &[u8]) {
    if input.len() < 8 {
        return;
    }
    let (h, data) = input.split_at(8);
    let format = [Format::Gzip, Format::Zlib, Format::Raw, Format::Auto][usize::from(h[0] % 4)];
    let split = match h[1] {
        0 => data.len(),
        n => usize::from(n),
    };
    let max_output = u64::from(u32::from_le_bytes([h[2], h[3], h[4], h[5]]));
    let limits = DecompressLimits {
        max_output,
        max_ratio: u64::from(h[6]),
        ratio_grace: u64::from(h[7]) * 1024,
    };
    let (whole, out_whole, members) = decode(format, limits, data, data.len());
    if max_output > 0 {
        assert!(
            out_whole.len() as u64 <= max_output + CHUNK,
            "{} bytes out with max_output {max_output}",
            out_whole.len()
        );
    }
    let (pieces, out_pieces, _) = decode(format, limits, data, split);
    if limits.max_ratio != 0 {
        // The ratio is judged on the input consumed so far, which depends on the split.
        return;
    }
    assert_eq!(
        whole.is_ok(),
        pieces.is_ok(),
        "at once: {whole:?}; in pieces of {split}: {pieces:?}"
    );
    if whole.is_ok() {
        assert_eq!(
            out_whole, out_pieces,
            "pieces of {split} decode differently"
        );
    }
    if whole.is_ok() && format == Format::Gzip && members > 0 {
        let theirs = czlib::gunzip_members(data)
            .unwrap_or_else(|e| panic!("we accepted gzip that C zlib rejects: {e}"));
        assert_eq!(
            theirs, out_whole,
            "C zlib decodes our accepted gzip differently"
        );
    }
}
