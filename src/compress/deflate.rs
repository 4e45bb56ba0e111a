//! gzip framing (RFC 1952) and the zlib-rs deflate engines.
//!
//! Both backends write the same framing: a 10-byte gzip header, raw deflate data and an
//! 8-byte trailer (CRC-32 and length mod 2^32), so every stream is one gzip member
//! whatever engine produced each piece of its deflate data.

use std::mem::MaybeUninit;

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Status};

/// The gzip header we write: magic, CM=8 (deflate), no flags, MTIME=0, XFL=0, OS=3 (Unix).
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// An empty final deflate block with fixed Huffman codes: BFINAL=1, BTYPE=01, then the
/// 7-bit end-of-block code. Valid right after any byte-aligned flush point.
pub const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The gzip trailer: CRC-32 and ISIZE, little endian.
pub fn trailer(crc: u32, len: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&(len as u32).to_le_bytes());
    t
}

/// What a deflate engine could not do.
#[derive(Debug)]
pub struct DeflateFailure(pub String);

/// A raw deflate state from zlib-rs with the given level, window and memory level.
pub fn new_raw_deflate(level: u32, window_bits: u32, memory_level: u32) -> Deflate {
    // zlib (and zlib-rs) turn a raw window of 8 into 9; 9..=15 are validated by the config.
    Deflate::new_with_config(DeflateConfig {
        level: level as i32,
        window_bits: -(window_bits as i32),
        mem_level: memory_level as i32,
        ..DeflateConfig::default()
    })
}

/// Bytes zlib-rs allocates for one deflate state with these parameters (window,
/// prev and head tables, pending and symbol buffers), for memory accounting.
/// `tests/compress_memory.rs` checks it against a counting allocator.
pub fn deflate_state_bytes(window_bits: u32, memory_level: u32) -> usize {
    let w = 1usize << window_bits;
    let lit_bufsize = 1usize << (memory_level + 6);
    // window 2w bytes, prev w u16, head 65536 u16, pending 4*lit, symbols 3*lit (+ 64
    // align), and zlib-rs's internal state struct (about 3 KiB, measured).
    2 * w + 2 * w + 2 * 65536 + 4 * lit_bufsize + 3 * lit_bufsize + 64 + 3 * 1024
}

/// Run `input` through `z` with `flush`, appending to `out` in steps of `chunk` bytes.
/// For `SyncFlush`/`FullFlush` returns once all output up to the flush point is out;
/// for `Finish` once the stream end is written.
pub fn deflate_into(
    z: &mut Deflate,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: DeflateFlush,
    chunk: usize,
) -> Result<(), DeflateFailure> {
    let chunk = chunk.max(64);
    loop {
        if out.capacity() - out.len() < chunk {
            out.reserve(chunk);
        }
        let spare: &mut [MaybeUninit<u8>] = out.spare_capacity_mut();
        let avail = spare.len();
        let before_in = z.total_in();
        let before_out = z.total_out();
        let st = z
            .compress_uninit(input, spare, flush)
            .map_err(|e| DeflateFailure(format!("zlib-rs deflate: {}", e.as_str())))?;
        let used_in = (z.total_in() - before_in) as usize;
        let produced = (z.total_out() - before_out) as usize;
        // SAFETY: zlib-rs initialised exactly `produced` bytes at the start of the spare
        // capacity (total_out advanced by that much), and produced <= avail.
        unsafe { out.set_len(out.len() + produced) };
        input = &input[used_in..];
        match (st, flush) {
            (Status::StreamEnd, _) => return Ok(()),
            (_, DeflateFlush::Finish) => {}
            // zlib's contract: a flush is complete when output space was left over.
            (Status::Ok | Status::BufError, _) if input.is_empty() && produced < avail => {
                return Ok(())
            }
            (Status::BufError, _) if used_in == 0 && produced == 0 => {
                if input.is_empty() {
                    return Ok(());
                }
                return Err(DeflateFailure(
                    "zlib-rs deflate made no progress (buffer error)".into(),
                ));
            }
            _ => {}
        }
    }
}
