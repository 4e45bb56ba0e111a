//! C zlib's `inflate` as an independent gzip decoder for envoy-qat's tests.
//!
//! envoy-qat compresses with zlib-rs, and flate2 as envoy-qat builds it (`zlib-rs` feature)
//! decodes with the same library, so a flate2 round trip cannot catch a bug that zlib-rs
//! makes on both sides. This crate calls the system's C zlib (through `libz-sys`, linked
//! directly: flate2's own "zlib" feature would switch every flate2 in the crate graph to C
//! zlib, envoy-qat's included). Envoy's own gzip filters are built on C zlib (or zlib-ng).
//!
//! [`GzDecoder`] is streaming: [`GzDecoder::write`] feeds bytes and appends everything
//! zlib can produce from them, so after a sync flush the output is complete (the contract
//! Envoy's compressor filter relies on); [`GzDecoder::finish`] checks that the stream ended
//! with a complete member (CRC-32 and length verified by zlib).
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_int, CStr};
use std::ptr;

use libz_sys as z;

/// The version string of the C zlib that is linked (`zlibVersion()`), e.g. "1.2.13".
pub fn version() -> &'static str {
    // SAFETY: zlibVersion() returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(z::zlibVersion()) }
        .to_str()
        .unwrap_or("?")
}

/// zlib's allocator callback: plain calloc.
unsafe extern "C" fn zalloc(_opaque: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc has no preconditions; it returns NULL on failure, which zlib handles.
    unsafe { libc::calloc(items as usize, size as usize) }
}

/// zlib's free callback: plain free of what [`zalloc`] returned.
unsafe extern "C" fn zfree(_opaque: z::voidpf, address: z::voidpf) {
    // SAFETY: zlib passes only pointers it got from `zalloc` (calloc), or NULL.
    unsafe { libc::free(address) }
}

/// A streaming gzip decoder on C zlib (`inflateInit2` with window bits 15 + 16: gzip only).
pub struct GzDecoder {
    /// Boxed: zlib's internal state points back at the z_stream, so it must not move.
    strm: Box<z::z_stream>,
    /// Decode concatenated members (as `gzip -dc` does) instead of refusing data after the
    /// first one.
    multi: bool,
    /// The current member ended (trailer checked).
    member_done: bool,
    members: u64,
}

impl GzDecoder {
    /// A decoder of one gzip member: data after its end is an error.
    pub fn new() -> Self {
        Self::with_members(false)
    }

    /// A decoder of concatenated gzip members, like `gzip -dc`.
    pub fn multi() -> Self {
        Self::with_members(true)
    }

    fn with_members(multi: bool) -> Self {
        let mut strm = Box::new(z::z_stream {
            next_in: ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: ptr::null_mut(),
            state: ptr::null_mut(),
            zalloc,
            zfree,
            opaque: ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: `strm` is a fully initialised z_stream that stays at this address (boxed)
        // until inflateEnd in Drop; the version and size are zlib's own.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *strm,
                15 + 16,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        assert_eq!(rc, z::Z_OK, "C zlib inflateInit2 failed ({rc})");
        GzDecoder {
            strm,
            multi,
            member_done: false,
            members: 0,
        }
    }

    /// Members decoded completely so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    fn error(&self, rc: c_int) -> String {
        let msg = if self.strm.msg.is_null() {
            String::new()
        } else {
            // SAFETY: zlib sets msg to a static NUL-terminated string or leaves it NULL.
            unsafe { CStr::from_ptr(self.strm.msg) }
                .to_string_lossy()
                .into_owned()
        };
        format!("C zlib inflate error {rc}: {msg}")
    }

    /// Feed `input`; everything zlib can decode from the bytes fed so far is appended to
    /// `out` (after a sync flush point: all the data before it).
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut pos = 0;
        loop {
            if self.member_done {
                if pos == input.len() {
                    return Ok(());
                }
                if !self.multi {
                    return Err(format!(
                        "{} bytes after the end of the gzip member",
                        input.len() - pos
                    ));
                }
                // SAFETY: the stream was initialised by inflateInit2 and not ended.
                let rc = unsafe { z::inflateReset(&mut *self.strm) };
                if rc != z::Z_OK {
                    return Err(self.error(rc));
                }
                self.member_done = false;
            }
            out.reserve(64 * 1024);
            let spare = (out.capacity() - out.len()).min(u32::MAX as usize);
            let avail_in = (input.len() - pos).min(u32::MAX as usize);
            // zlib never writes through next_in (it is `z_const` in zlib.h).
            self.strm.next_in = input[pos..].as_ptr().cast_mut();
            self.strm.avail_in = avail_in as z::uInt;
            // SAFETY: `out.len() <= capacity`, so the pointer stays within the allocation.
            self.strm.next_out = unsafe { out.as_mut_ptr().add(out.len()) };
            self.strm.avail_out = spare as z::uInt;
            // SAFETY: next_in/avail_in describe live input and next_out/avail_out the
            // spare capacity of `out`; both stay valid for the call.
            let rc = unsafe { z::inflate(&mut *self.strm, z::Z_SYNC_FLUSH) };
            let consumed = avail_in - self.strm.avail_in as usize;
            let produced = spare - self.strm.avail_out as usize;
            self.strm.next_in = ptr::null_mut();
            self.strm.next_out = ptr::null_mut();
            // SAFETY: zlib initialised exactly `produced` bytes after the old length.
            unsafe { out.set_len(out.len() + produced) };
            pos += consumed;
            match rc {
                z::Z_STREAM_END => {
                    self.member_done = true;
                    self.members += 1;
                }
                // Output space ran out: more may be pending. Else all input is consumed.
                z::Z_OK if self.strm.avail_out == 0 || pos < input.len() => {}
                z::Z_OK => return Ok(()),
                // No progress possible: zlib needs more input.
                z::Z_BUF_ERROR if pos == input.len() => return Ok(()),
                _ => return Err(self.error(rc)),
            }
        }
    }

    /// The stream must have ended with a complete member (header, data, CRC-32 and length
    /// checked by zlib).
    pub fn finish(&self) -> Result<(), String> {
        if self.member_done {
            Ok(())
        } else if self.members == 0 && self.strm.total_in == 0 {
            Err("no gzip data".into())
        } else {
            Err("truncated gzip stream: the last member has no end".into())
        }
    }
}

impl Default for GzDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GzDecoder {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by inflateInit2 and is ended once, here.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

/// Decode one complete gzip member (nothing after it) with C zlib.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut d = GzDecoder::new();
    let mut out = Vec::new();
    d.write(data, &mut out)?;
    d.finish()?;
    Ok(out)
}

/// Decode concatenated gzip members with C zlib, like `gzip -dc`.
pub fn gunzip_members(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut d = GzDecoder::multi();
    let mut out = Vec::new();
    d.write(data, &mut out)?;
    d.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// gzip(1) output (another implementation again) for the decoder's own tests.
    fn gzip(data: &[u8], args: &[&str]) -> Vec<u8> {
        let mut c = Command::new("gzip")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run gzip");
        let mut stdin = c.stdin.take().unwrap();
        let data = data.to_vec();
        let w = std::thread::spawn(move || stdin.write_all(&data));
        let out = c.wait_with_output().unwrap();
        w.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn it_is_c_zlib() {
        assert!(version().starts_with('1'), "{}", version());
    }

    #[test]
    fn decodes_gzip_in_any_split_and_rejects_damage() {
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let gz = gzip(&text, &["-c", "-6"]);
        assert_eq!(gunzip(&gz).unwrap(), text);
        for split in [1, 7, 1000] {
            let mut d = GzDecoder::new();
            let mut out = Vec::new();
            for piece in gz.chunks(split) {
                d.write(piece, &mut out).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out, text, "split {split}");
        }
        // Truncated, a wrong CRC, data after the member, two members.
        assert!(gunzip(&gz[..gz.len() - 1]).is_err());
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(gunzip(&bad).unwrap_err().contains("incorrect data check"));
        let two = [gz.clone(), gz.clone()].concat();
        assert!(gunzip(&two).is_err());
        assert_eq!(
            gunzip_members(&two).unwrap(),
            [&text[..], &text[..]].concat()
        );
        assert!(gunzip(b"").is_err());
    }
}
