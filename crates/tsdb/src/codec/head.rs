//! The head encoder: samples still in memory.

use super::bits::{BitReader, BitWriter};
use super::bytes::{ByteReader, put_ivarint, put_uvarint, unzigzag, zigzag};
use super::times::{decode_points_through, encode_points};
use crate::TsdbError;
use crate::head_file::{HeadFile, HeadFiles};
use crate::model::Point;
use std::sync::Arc;

/// Samples appended in time order, for the samples still in memory. The
/// newest (up to [`HEAD_BLOCK_POINTS`]) are Gorilla-encoded as they come;
/// each full run of them is re-encoded with the sealed-chunk codec, which
/// takes a fraction of Gorilla's bytes on agent data (noisy decimals,
/// counters, whole pages), and appended to a head file
/// ([`crate::head_file`]), out of the heap: the chunk keeps where each
/// block is.
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    /// The file of the complete blocks, from the first one on.
    file: Option<Arc<HeadFile>>,
    /// Per complete block, oldest first: its offset in `file` and length
    /// (uvarints) and its first time (an ivarint, less the previous
    /// block's), so that a read of a short span steps over the blocks
    /// before it without reading them; grown to the exact size, since
    /// most series' heads live an hour.
    refs: Vec<u8>,
    /// Samples in the blocks.
    block_points: u32,
    /// The newest samples, at least one.
    run: GorillaRun,
}

/// Samples a head keeps Gorilla-encoded before re-encoding them as a block.
pub(crate) const HEAD_BLOCK_POINTS: usize = 64;

/// One complete block as [`HeadChunk::refs`] lists it.
#[derive(Debug, Clone, Copy)]
struct BlockRef {
    offset: u64,
    len: usize,
    first_t: i64,
}

impl HeadChunk {
    pub(crate) fn new(first: Point) -> Self {
        HeadChunk {
            file: None,
            refs: Vec::new(),
            block_points: 0,
            run: GorillaRun::new(first),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.block_points as usize + self.run.len()
    }

    pub(crate) fn last_t(&self) -> i64 {
        self.run.last_t
    }

    /// Heap bytes of the chunk's own (its blocks are in its file).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.refs.capacity() + self.run.bits.heap_bytes()
    }

    /// Appends a sample later than every sample so far; a complete run
    /// goes to a block in `files`' current file (or the chunk's own).
    pub(crate) fn push(&mut self, p: Point, files: &HeadFiles) {
        if self.run.len() < HEAD_BLOCK_POINTS {
            self.run.push(p);
            return;
        }
        let run = std::mem::replace(&mut self.run, GorillaRun::new(p));
        let points = run.points();
        let mut block = Vec::new();
        encode_points(&points, &mut block);
        let previous_first = self.refs().last().map_or(0, |r| r.first_t);
        let file = self.file.get_or_insert_with(|| files.current());
        let offset = file.append(&block);
        let mut entry = Vec::with_capacity(24);
        put_uvarint(&mut entry, offset);
        put_uvarint(&mut entry, block.len() as u64);
        put_ivarint(&mut entry, points[0].t_ms.wrapping_sub(previous_first));
        // Exact growth while the head is small (most series' heads live an
        // hour), an eighth more at a time once it is large, so a dense
        // window is not copied whole for every block.
        self.refs
            .reserve_exact(entry.len().max(self.refs.len() / 8));
        self.refs.extend_from_slice(&entry);
        self.block_points += points.len() as u32;
    }

    /// The complete blocks, oldest first. `refs` is written by `push`
    /// only: a decoding error would be a bug, and ends the list.
    fn refs(&self) -> Vec<BlockRef> {
        let mut out = Vec::new();
        let mut r = ByteReader::new(&self.refs);
        let mut first_t = 0i64;
        while !r.is_empty() {
            let (Ok(offset), Ok(len), Ok(delta)) = (r.uvarint(), r.uvarint(), r.ivarint()) else {
                break;
            };
            first_t = first_t.wrapping_add(delta);
            out.push(BlockRef {
                offset,
                len: len as usize,
                first_t,
            });
        }
        out
    }

    /// Every sample, oldest first.
    pub(crate) fn points(&self) -> Result<Vec<Point>, TsdbError> {
        let mut out = Vec::with_capacity(self.len());
        self.points_through(i64::MIN, i64::MAX, &mut out)?;
        Ok(out)
    }

    /// Appends the samples with times in `[start, end)` to `out`, oldest
    /// first. Blocks wholly before `start` are stepped over by their
    /// first times (a block ends before the next one's first time), and
    /// none is read past `end`: an instant query's lookback reads the one
    /// or two blocks it needs and the newest run, not the whole window.
    /// Fails only when the head file cannot be read.
    pub(crate) fn points_within(
        &self,
        start: i64,
        end: i64,
        out: &mut Vec<Point>,
    ) -> Result<(), TsdbError> {
        if start < end {
            self.points_through(start, end - 1, out)?;
        }
        Ok(())
    }

    /// The samples with times in `[first, last]`, appended to `out`.
    fn points_through(&self, first: i64, last: i64, out: &mut Vec<Point>) -> Result<(), TsdbError> {
        let mut bytes = Vec::new();
        let mut decode = |block: BlockRef, out: &mut Vec<Point>| -> Result<(), TsdbError> {
            let Some(file) = &self.file else {
                return Err(TsdbError::Failed("head blocks without their file".into()));
            };
            file.read(block.offset, block.len, &mut bytes)?;
            decode_points_through(&mut ByteReader::new(&bytes), first, last, out)
        };
        // The block listed last, whose times end before the next first one.
        let mut previous: Option<BlockRef> = None;
        for block in self.refs() {
            if block.first_t > last {
                break;
            }
            if let Some(done) = previous.take()
                && block.first_t > first
            {
                decode(done, out)?;
            }
            previous = Some(block);
        }
        let run_first = self.run.first_t;
        if let Some(done) = previous
            && run_first > first
        {
            decode(done, out)?;
        }
        if run_first <= last && self.run.last_t >= first {
            let from = out.len();
            self.run.decode_into(out)?;
            let keep = out[from..].partition_point(|p| p.t_ms < first);
            out.drain(from..from + keep);
            let past = out[from..].partition_point(|p| p.t_ms <= last);
            out.truncate(from + past);
        }
        Ok(())
    }
}

/// Gorilla (VLDB 2015) as published, appendable one sample at a time:
/// `dod == 0` costs one bit, a repeated value one bit.
#[derive(Debug, Clone)]
pub(super) struct GorillaRun {
    pub(super) bits: BitWriter,
    count: u32,
    first_t: i64,
    first_value: u64,
    last_t: i64,
    last_delta: i64,
    last_value: u64,
    lead: u32,
    trail: u32,
}

impl GorillaRun {
    pub(super) fn new(first: Point) -> Self {
        GorillaRun {
            bits: BitWriter::with_capacity(16),
            count: 1,
            first_t: first.t_ms,
            first_value: first.value.to_bits(),
            last_t: first.t_ms,
            last_delta: 0,
            last_value: first.value.to_bits(),
            lead: u32::MAX,
            trail: 0,
        }
    }

    fn len(&self) -> usize {
        self.count as usize
    }

    /// Appends a sample later than every sample so far.
    pub(super) fn push(&mut self, p: Point) {
        debug_assert!(p.t_ms > self.last_t);
        // One sample takes at most 19 bytes; grow by little at a time,
        // where doubling would leave up to half of a run's bytes unused.
        self.bits.reserve_at_least(20, 48);
        let delta = p.t_ms.wrapping_sub(self.last_t);
        let dod = if self.count == 1 {
            // The first delta is written in full so that any interval costs the same.
            self.bits.write(zigzag(delta), 64);
            0
        } else {
            delta.wrapping_sub(self.last_delta)
        };
        if self.count > 1 {
            let w = &mut self.bits;
            match dod {
                0 => w.bit(false),
                -64..=63 => {
                    w.write(0b10, 2);
                    w.write(dod as u64, 7);
                }
                -256..=255 => {
                    w.write(0b110, 3);
                    w.write(dod as u64, 9);
                }
                -2048..=2047 => {
                    w.write(0b1110, 4);
                    w.write(dod as u64, 12);
                }
                _ => {
                    w.write(0b1111, 4);
                    w.write(dod as u64, 64);
                }
            }
        }
        let v = p.value.to_bits();
        let x = v ^ self.last_value;
        if x == 0 {
            self.bits.bit(false);
        } else {
            self.bits.bit(true);
            let lead = x.leading_zeros().min(31);
            let trail = x.trailing_zeros();
            if self.lead != u32::MAX && lead >= self.lead && trail >= self.trail {
                self.bits.bit(false);
                self.bits
                    .write(x >> self.trail, 64 - self.lead - self.trail);
            } else {
                let len = 64 - lead - trail;
                self.bits.bit(true);
                self.bits.write(u64::from(lead), 5);
                self.bits.write(u64::from(len - 1), 6);
                self.bits.write(x >> trail, len);
                self.lead = lead;
                self.trail = trail;
            }
        }
        self.last_delta = delta;
        self.last_t = p.t_ms;
        self.last_value = v;
        self.count += 1;
    }

    /// Every sample, oldest first.
    fn points(&self) -> Vec<Point> {
        let mut out = Vec::with_capacity(self.len());
        // The stream is written by `push` only; a decoding error would be a bug here.
        let _ = self.decode_into(&mut out);
        out
    }

    fn decode_into(&self, out: &mut Vec<Point>) -> Result<(), TsdbError> {
        let mut r = BitReader::new(self.bits.bytes(), self.bits.bit_len());
        let mut t = self.first_t;
        let mut value = self.first_value;
        out.push(Point {
            t_ms: t,
            value: f64::from_bits(value),
        });
        let mut delta = 0i64;
        let (mut lead, mut trail) = (0u32, 0u32);
        for i in 1..self.count {
            if i == 1 {
                delta = unzigzag(r.read(64)?);
            } else {
                let dod = if !r.bit()? {
                    0
                } else if !r.bit()? {
                    sign_extend(r.read(7)?, 7)
                } else if !r.bit()? {
                    sign_extend(r.read(9)?, 9)
                } else if !r.bit()? {
                    sign_extend(r.read(12)?, 12)
                } else {
                    r.read(64)? as i64
                };
                delta = delta.wrapping_add(dod);
            }
            t = t.wrapping_add(delta);
            if r.bit()? {
                if r.bit()? {
                    lead = r.read(5)? as u32;
                    let len = r.read(6)? as u32 + 1;
                    trail = 64u32.saturating_sub(lead + len);
                }
                value ^= r.read(64 - lead - trail)? << trail;
            }
            out.push(Point {
                t_ms: t,
                value: f64::from_bits(value),
            });
        }
        Ok(())
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}
