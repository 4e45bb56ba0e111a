//! A streaming, bounded decompressor for gzip (RFC 1952, concatenated members), zlib
//! (RFC 1950) and raw deflate (RFC 1951).
//!
//! Limits: `max_output` bytes in total and `max_ratio` (output / input) end the stream
//! with [`DecompressError::TooLarge`] / [`DecompressError::RatioExceeded`] before more
//! than one chunk beyond the limit is ever produced. Corrupt, truncated or foreign input
//! gives an error that names the problem and its input offset; no input makes it panic
//! or loop without progress.

use flate2::{Decompress, FlushDecompress, Status};

/// Input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// gzip members (concatenation allowed).
    Gzip,
    /// zlib stream.
    Zlib,
    /// Raw deflate.
    Raw,
    /// Decide from the first bytes: gzip magic, a valid zlib header, else raw deflate.
    Auto,
}

/// Decompression bomb limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecompressLimits {
    /// Most output bytes in total (0 = no limit).
    pub max_output: u64,
    /// Most output bytes per input byte (0 = no limit); checked once output passes
    /// `ratio_grace` bytes, so tiny inputs of highly repetitive data pass.
    pub max_ratio: u64,
    /// Output below which the ratio is not checked.
    pub ratio_grace: u64,
}

impl Default for DecompressLimits {
    /// 1 GiB of output; ratio unchecked (deflate itself tops out near 1032:1).
    fn default() -> Self {
        Self {
            max_output: 1 << 30,
            max_ratio: 0,
            ratio_grace: 1 << 20,
        }
    }
}

impl DecompressLimits {
    /// No limits.
    pub fn unlimited() -> Self {
        Self {
            max_output: 0,
            max_ratio: 0,
            ratio_grace: 0,
        }
    }
}

/// Why decompression stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// The input does not start like the format says.
    BadMagic {
        format: &'static str,
        found: Vec<u8>,
    },
    /// A gzip/zlib header field is invalid.
    BadHeader { offset: u64, detail: String },
    /// The deflate data is invalid.
    Corrupt { offset: u64, detail: String },
    /// A checksum or length in a trailer does not match the data.
    Checksum { offset: u64, detail: String },
    /// The input ended inside a member.
    Truncated { offset: u64, inside: &'static str },
    /// Bytes after the last member that are not another member.
    TrailingGarbage { offset: u64 },
    /// Output would exceed `max_output`.
    TooLarge { limit: u64 },
    /// Output / input exceeded `max_ratio`.
    RatioExceeded { limit: u64, output: u64, input: u64 },
    /// Used after an error or after `finish`.
    Closed,
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadMagic { format, found } => write!(
                f,
                "not {format} data: starts with {}",
                found
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Self::BadHeader { offset, detail } => {
                write!(f, "invalid header at byte {offset}: {detail}")
            }
            Self::Corrupt { offset, detail } => {
                write!(f, "corrupt deflate data near byte {offset}: {detail}")
            }
            Self::Checksum { offset, detail } => {
                write!(f, "checksum mismatch at byte {offset}: {detail}")
            }
            Self::Truncated { offset, inside } => write!(
                f,
                "truncated input: ended at byte {offset} inside the {inside}"
            ),
            Self::TrailingGarbage { offset } => write!(
                f,
                "trailing garbage at byte {offset}: not another gzip member"
            ),
            Self::TooLarge { limit } => write!(
                f,
                "decompressed output exceeds the limit of {limit} bytes (possible decompression bomb); raise max_output if this is expected"
            ),
            Self::RatioExceeded { limit, output, input } => write!(
                f,
                "expansion ratio exceeds {limit}:1 ({output} bytes out of {input} in; possible decompression bomb); raise max_ratio if this is expected"
            ),
            Self::Closed => write!(f, "decompressor already finished or failed"),
        }
    }
}

impl std::error::Error for DecompressError {}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Stage {
    /// Waiting for the first bytes to decide (Auto) or for a gzip/zlib header.
    Header,
    Body,
    /// gzip: 8 bytes; zlib: 4 bytes.
    Trailer,
    /// After a complete gzip member: another member may follow.
    BetweenMembers,
    /// After a complete zlib/raw stream: nothing may follow.
    Done,
    Failed,
}

/// A streaming decompressor.
pub struct Decompressor {
    format: Format,
    resolved: Option<Format>,
    limits: DecompressLimits,
    stage: Stage,
    pending: Vec<u8>,
    inflate: Decompress,
    crc: u32,
    adler: u32,
    member_len: u64,
    total_in: u64,
    total_out: u64,
    members: u64,
    chunk: usize,
    scratch: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Decompressor {
    /// A decompressor for `format` with `limits`.
    pub fn new(format: Format, limits: DecompressLimits) -> Self {
        Self {
            format,
            resolved: None,
            limits,
            stage: Stage::Header,
            pending: Vec::new(),
            inflate: Decompress::new(false),
            crc: 0,
            adler: 1,
            member_len: 0,
            total_in: 0,
            total_out: 0,
            members: 0,
            chunk: 64 * 1024,
            scratch: Vec::new(),
        }
    }

    /// Input bytes consumed so far.
    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    /// Output bytes produced so far.
    pub fn total_out(&self) -> u64 {
        self.total_out
    }

    /// Complete gzip members (or zlib/raw streams) seen.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Feed `input`; decompressed bytes are appended to `out`.
    pub fn decompress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecompressError> {
        if matches!(self.stage, Stage::Failed) {
            return Err(DecompressError::Closed);
        }
        let r = self.run(input, out);
        if r.is_err() {
            self.stage = Stage::Failed;
        }
        r
    }

    /// End of input: an error unless the data ended at the end of a member/stream.
    pub fn finish(&mut self) -> Result<(), DecompressError> {
        let off = self.total_in;
        let r = match self.stage {
            Stage::BetweenMembers | Stage::Done => Ok(()),
            Stage::Failed => Err(DecompressError::Closed),
            Stage::Header if self.members == 0 && self.pending.is_empty() => {
                Err(DecompressError::Truncated {
                    offset: off,
                    inside: "header (empty input)",
                })
            }
            Stage::Header => Err(DecompressError::Truncated {
                offset: off,
                inside: "header",
            }),
            Stage::Body => Err(DecompressError::Truncated {
                offset: off,
                inside: "deflate data",
            }),
            Stage::Trailer => Err(DecompressError::Truncated {
                offset: off,
                inside: "trailer",
            }),
        };
        if r.is_err() {
            self.stage = Stage::Failed;
        }
        r
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), DecompressError> {
        loop {
            match self.stage {
                Stage::Failed => return Err(DecompressError::Closed),
                Stage::Done => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    return Err(DecompressError::TrailingGarbage {
                        offset: self.total_in,
                    });
                }
                Stage::BetweenMembers | Stage::Header => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    if self.stage == Stage::BetweenMembers {
                        // Another gzip member must start with the magic.
                        let have = self.pending.len();
                        let need = 2usize.saturating_sub(have);
                        let take = need.min(input.len());
                        let mut probe = self.pending.clone();
                        probe.extend_from_slice(&input[..take]);
                        if probe[..] != GZIP_MAGIC[..probe.len()] {
                            return Err(DecompressError::TrailingGarbage {
                                offset: self.total_in - have as u64,
                            });
                        }
                        self.stage = Stage::Header;
                    }
                    let used = self.header(input)?;
                    input = &input[used..];
                }
                Stage::Body => {
                    if !self.pending.is_empty() {
                        // Deflate bytes buffered while Auto told the formats apart.
                        let carried = std::mem::take(&mut self.pending);
                        let used = self.body(&carried, out)?;
                        if used < carried.len() {
                            return Err(DecompressError::TrailingGarbage {
                                offset: self.total_in,
                            });
                        }
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let used = self.body(input, out)?;
                    input = &input[used..];
                }
                Stage::Trailer => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let used = self.trailer(input)?;
                    input = &input[used..];
                }
            }
        }
    }

    /// Accumulate and parse a header; returns bytes of `input` consumed.
    fn header(&mut self, input: &[u8]) -> Result<usize, DecompressError> {
        let start_pending = self.pending.len();
        self.pending.extend_from_slice(input);
        let fmt = match self.resolved {
            Some(f) => f,
            None => {
                let f = match self.format {
                    Format::Auto => {
                        if self.pending.len() < 2 {
                            self.total_in += input.len() as u64;
                            return Ok(input.len());
                        }
                        let p = &self.pending;
                        if p[..2] == GZIP_MAGIC {
                            Format::Gzip
                        } else if p[0] & 0x0f == 8
                            && p[0] >> 4 <= 7
                            && (u16::from(p[0]) << 8 | u16::from(p[1])) % 31 == 0
                        {
                            Format::Zlib
                        } else {
                            Format::Raw
                        }
                    }
                    f => f,
                };
                self.resolved = Some(f);
                f
            }
        };
        let base = self.total_in - start_pending as u64;
        let parsed = match fmt {
            Format::Raw => Some(0),
            Format::Zlib => parse_zlib_header(&self.pending, base)?,
            Format::Gzip => parse_gzip_header(&self.pending, base)?,
            Format::Auto => unreachable!("resolved above"),
        };
        match parsed {
            None => {
                // Header incomplete: everything was buffered.
                self.total_in += input.len() as u64;
                Ok(input.len())
            }
            Some(hlen) => {
                // hlen counts pending bytes; those beyond the header go back to input.
                // Raw deflate found by Auto has no header (hlen 0) while the byte buffered
                // to tell the formats apart is already deflate data: it stays in `pending`
                // for the body (uncounted again, the body counts it), and no input is used.
                let carried = start_pending.saturating_sub(hlen);
                let used = hlen.saturating_sub(start_pending);
                self.total_in += used as u64;
                self.total_in -= carried as u64;
                self.pending.drain(..hlen.min(start_pending));
                self.pending.truncate(carried);
                self.inflate.reset(false);
                self.crc = 0;
                self.adler = 1;
                self.member_len = 0;
                self.stage = Stage::Body;
                Ok(used)
            }
        }
    }

    fn check_limits(&self) -> Result<(), DecompressError> {
        let l = &self.limits;
        if l.max_output != 0 && self.total_out > l.max_output {
            return Err(DecompressError::TooLarge {
                limit: l.max_output,
            });
        }
        if l.max_ratio != 0
            && self.total_out > l.ratio_grace
            && self.total_out > l.max_ratio.saturating_mul(self.total_in.max(1))
        {
            return Err(DecompressError::RatioExceeded {
                limit: l.max_ratio,
                output: self.total_out,
                input: self.total_in,
            });
        }
        Ok(())
    }

    fn body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecompressError> {
        let mut used = 0usize;
        loop {
            // Never let one step produce more than a chunk beyond the output limit.
            let mut room = self.chunk;
            if self.limits.max_output != 0 {
                let left = self.limits.max_output.saturating_sub(self.total_out) + 1;
                room = room.min(left.min(usize::MAX as u64) as usize).max(1);
            }
            if self.scratch.len() < room {
                self.scratch.resize(room, 0);
            }
            let in_before = self.inflate.total_in();
            let out_before = self.inflate.total_out();
            let st = self
                .inflate
                .decompress(
                    &input[used..],
                    &mut self.scratch[..room],
                    FlushDecompress::None,
                )
                .map_err(|e| DecompressError::Corrupt {
                    offset: self.total_in,
                    detail: e.to_string(),
                })?;
            let consumed = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            let new = &self.scratch[..produced];
            out.extend_from_slice(new);
            self.crc = zlib_rs::crc32::crc32(self.crc, new);
            if self.resolved == Some(Format::Zlib) {
                self.adler = zlib_rs::adler32::adler32(self.adler, new);
            }
            used += consumed;
            self.total_in += consumed as u64;
            self.total_out += produced as u64;
            self.member_len += produced as u64;
            self.check_limits()?;
            match st {
                Status::StreamEnd => {
                    self.stage = match self.resolved {
                        Some(Format::Raw) => {
                            self.members += 1;
                            Stage::Done
                        }
                        _ => Stage::Trailer,
                    };
                    return Ok(used);
                }
                _ => {
                    if used == input.len() && produced < room {
                        // All input taken and the output did not fill: need more input.
                        return Ok(used);
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(DecompressError::Corrupt {
                            offset: self.total_in,
                            detail: "inflate made no progress".into(),
                        });
                    }
                }
            }
        }
    }

    fn trailer(&mut self, input: &[u8]) -> Result<usize, DecompressError> {
        let need = if self.resolved == Some(Format::Zlib) {
            4
        } else {
            8
        };
        let take = (need - self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        self.total_in += take as u64;
        if self.pending.len() < need {
            return Ok(take);
        }
        let off = self.total_in - need as u64;
        let t = std::mem::take(&mut self.pending);
        if self.resolved == Some(Format::Zlib) {
            let want = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
            if want != self.adler {
                return Err(DecompressError::Checksum {
                    offset: off,
                    detail: format!("zlib Adler-32 is {want:08x}, data gives {:08x}", self.adler),
                });
            }
            self.members += 1;
            self.stage = Stage::Done;
        } else {
            let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
            if crc != self.crc {
                return Err(DecompressError::Checksum {
                    offset: off,
                    detail: format!("gzip CRC-32 is {crc:08x}, data gives {:08x}", self.crc),
                });
            }
            if isize != self.member_len as u32 {
                return Err(DecompressError::Checksum {
                    offset: off + 4,
                    detail: format!(
                        "gzip length is {isize}, data has {} (mod 2^32)",
                        self.member_len as u32
                    ),
                });
            }
            self.members += 1;
            self.stage = Stage::BetweenMembers;
        }
        Ok(take)
    }
}

fn parse_zlib_header(p: &[u8], base: u64) -> Result<Option<usize>, DecompressError> {
    if p.len() < 2 {
        return Ok(None);
    }
    let (cmf, flg) = (p[0], p[1]);
    if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
        return Err(DecompressError::BadMagic {
            format: "zlib",
            found: p[..2].to_vec(),
        });
    }
    if cmf >> 4 > 7 {
        return Err(DecompressError::BadHeader {
            offset: base,
            detail: format!("window size 2^{} exceeds 32 KiB", (cmf >> 4) + 8),
        });
    }
    if flg & 0x20 != 0 {
        return Err(DecompressError::BadHeader {
            offset: base + 1,
            detail: "preset dictionary (FDICT) is not supported".into(),
        });
    }
    Ok(Some(2))
}

/// Parse a gzip header at the start of `p`; `None` if more bytes are needed.
fn parse_gzip_header(p: &[u8], base: u64) -> Result<Option<usize>, DecompressError> {
    if p.len() < 2 {
        if !p.is_empty() && p[0] != GZIP_MAGIC[0] {
            return Err(DecompressError::BadMagic {
                format: "gzip",
                found: p.to_vec(),
            });
        }
        return Ok(None);
    }
    if p[..2] != GZIP_MAGIC {
        return Err(DecompressError::BadMagic {
            format: "gzip",
            found: p[..p.len().min(4)].to_vec(),
        });
    }
    if p.len() < 10 {
        return Ok(None);
    }
    if p[2] != 8 {
        return Err(DecompressError::BadHeader {
            offset: base + 2,
            detail: format!("compression method {} is not deflate (8)", p[2]),
        });
    }
    let flg = p[3];
    if flg & 0xe0 != 0 {
        return Err(DecompressError::BadHeader {
            offset: base + 3,
            detail: format!("reserved flag bits set ({flg:#04x})"),
        });
    }
    let mut i = 10usize;
    if flg & 0x04 != 0 {
        // FEXTRA: 2-byte length then data (QATzip's "QZ" field lives here).
        if p.len() < i + 2 {
            return Ok(None);
        }
        let xlen = usize::from(u16::from_le_bytes([p[i], p[i + 1]]));
        i += 2 + xlen;
        if p.len() < i {
            return Ok(None);
        }
    }
    for bit in [0x08u8, 0x10] {
        // FNAME, FCOMMENT: zero-terminated. Bound them so a missing NUL cannot make us
        // buffer forever.
        if flg & bit != 0 {
            match p[i..].iter().position(|&b| b == 0) {
                Some(z) => i += z + 1,
                None if p.len() - i > 64 * 1024 => {
                    return Err(DecompressError::BadHeader {
                        offset: base + i as u64,
                        detail: "file name or comment longer than 64 KiB".into(),
                    })
                }
                None => return Ok(None),
            }
        }
    }
    if flg & 0x02 != 0 {
        if p.len() < i + 2 {
            return Ok(None);
        }
        let want = u16::from_le_bytes([p[i], p[i + 1]]);
        let got = (zlib_rs::crc32::crc32(0, &p[..i]) & 0xffff) as u16;
        if want != got {
            return Err(DecompressError::BadHeader {
                offset: base + i as u64,
                detail: format!("header CRC16 is {want:04x}, header gives {got:04x}"),
            });
        }
        i += 2;
    }
    Ok(Some(i))
}

/// Decompress all of `data` (convenience for tests and the CLI).
pub fn decompress_all(
    data: &[u8],
    format: Format,
    limits: DecompressLimits,
) -> Result<Vec<u8>, DecompressError> {
    let mut d = Decompressor::new(format, limits);
    let mut out = Vec::new();
    d.decompress(data, &mut out)?;
    d.finish()?;
    Ok(out)
}
