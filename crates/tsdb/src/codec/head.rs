//! The head encoder: samples still in memory.

use super::bits::{BitReader, BitWriter};
use super::bytes::{ByteReader, put_uvarint, unzigzag, zigzag};
use super::times::{decode_points_through, encode_points};
use crate::TsdbError;
use crate::model::Point;

/// Samples appended in time order, for the samples still in memory. The
/// newest (up to [`HEAD_BLOCK_POINTS`]) are Gorilla-encoded as they come;
/// each full run of them is re-encoded with the sealed-chunk codec, which
/// takes a fraction of Gorilla's bytes on agent data (noisy decimals,
/// counters, whole pages), and the head is most of the collector's memory
/// per series.
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    /// Complete runs, oldest first, each its length (a uvarint) and an
    /// [`encode_points`] block, so that a read of a short span steps over
    /// the blocks before it without decoding them; grown to the exact
    /// size, since most series' heads live an hour.
    blocks: Vec<u8>,
    /// Samples in `blocks`.
    block_points: u32,
    /// The newest samples, at least one.
    run: GorillaRun,
}

/// Samples a head keeps Gorilla-encoded before re-encoding them as a block.
pub(crate) const HEAD_BLOCK_POINTS: usize = 64;

impl HeadChunk {
    pub(crate) fn new(first: Point) -> Self {
        HeadChunk {
            blocks: Vec::new(),
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

    pub(crate) fn heap_bytes(&self) -> usize {
        self.blocks.capacity() + self.run.bits.heap_bytes()
    }

    /// Appends a sample later than every sample so far.
    pub(crate) fn push(&mut self, p: Point) {
        if self.run.len() < HEAD_BLOCK_POINTS {
            self.run.push(p);
            return;
        }
        let run = std::mem::replace(&mut self.run, GorillaRun::new(p));
        let points = run.points();
        let mut block = Vec::new();
        encode_points(&points, &mut block);
        let mut len = Vec::with_capacity(3);
        put_uvarint(&mut len, block.len() as u64);
        // Exact growth while the head is small (most series' heads live an
        // hour), an eighth more at a time once it is large, so a dense
        // window is not copied whole for every block.
        self.blocks
            .reserve_exact((len.len() + block.len()).max(self.blocks.len() / 8));
        self.blocks.extend_from_slice(&len);
        self.blocks.extend_from_slice(&block);
        self.block_points += points.len() as u32;
    }

    /// Every sample, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        let mut out = Vec::with_capacity(self.len());
        self.points_through(i64::MIN, i64::MAX, &mut out);
        out
    }

    /// The newest sample before `end`, if any: from the newest run when it
    /// begins before `end`, else from the newest block that does (a block
    /// ends before the next one's first time), decoded only up to `end`.
    /// An instant query at a time inside the window (the past hour in a
    /// dashboard, a fleet whose data runs past the query) decodes one
    /// block's prefix or the run's, not every sample since `end - lookback`.
    pub(crate) fn newest_before(&self, end: i64) -> Option<Point> {
        let mut out = Vec::new();
        if self.run.first_t < end {
            // Written by `push` only; a decoding error would be a bug here.
            let _ = self.run.decode_into(end.saturating_sub(1), &mut out);
            return out.last().copied();
        }
        let mut blocks = ByteReader::new(&self.blocks);
        let mut newest = None;
        while !blocks.is_empty() {
            let Ok(block) = blocks.uvarint().and_then(|n| blocks.bytes(n as usize)) else {
                break;
            };
            match first_time(block) {
                Ok(first) if first < end => newest = Some(block),
                _ => break,
            }
        }
        let _ = decode_points_through(&mut ByteReader::new(newest?), i64::MIN, end - 1, &mut out);
        out.last().copied()
    }

    /// Appends the samples with times in `[start, end)` to `out`, oldest
    /// first. Blocks wholly before `start` are stepped over by their
    /// lengths (a block ends before the next one's first time), and none
    /// is decoded past `end`: an instant query's lookback decodes the one
    /// or two blocks it needs and the newest run, not the whole window.
    pub(crate) fn points_within(&self, start: i64, end: i64, out: &mut Vec<Point>) {
        if start < end {
            self.points_through(start, end - 1, out);
        }
    }

    /// The samples with times in `[first, last]`, appended to `out`.
    fn points_through(&self, first: i64, last: i64, out: &mut Vec<Point>) {
        // Written by `push` only; a decoding error would be a bug here, and
        // what was decoded before it is kept.
        let mut blocks = ByteReader::new(&self.blocks);
        // The block read last, whose times end before the next first one.
        let mut previous: Option<&[u8]> = None;
        while !blocks.is_empty() {
            let Ok(block) = blocks.uvarint().and_then(|n| blocks.bytes(n as usize)) else {
                return;
            };
            let Ok(block_first) = first_time(block) else {
                return;
            };
            if block_first > last {
                break;
            }
            if let Some(done) = previous.take()
                && block_first > first
                && decode_points_through(&mut ByteReader::new(done), first, last, out).is_err()
            {
                return;
            }
            previous = Some(block);
        }
        let run_first = self.run.first_t;
        if let Some(done) = previous
            && run_first > first
            && decode_points_through(&mut ByteReader::new(done), first, last, out).is_err()
        {
            return;
        }
        if run_first <= last && self.run.last_t >= first {
            let from = out.len();
            let _ = self.run.decode_into(last, out);
            let keep = out[from..].partition_point(|p| p.t_ms < first);
            out.drain(from..from + keep);
        }
    }
}

/// The first time of an [`encode_points`] block, without decoding it.
fn first_time(block: &[u8]) -> Result<i64, TsdbError> {
    let mut r = ByteReader::new(block);
    r.uvarint()?;
    r.ivarint()
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
    /// Leading and trailing zero bits of the last value's XOR block
    /// (`u8::MAX` before the first), at most 63: bytes, as every open
    /// window holds one run.
    lead: u8,
    trail: u8,
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
            lead: u8::MAX,
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
            let (block_lead, block_trail) = (u32::from(self.lead), u32::from(self.trail));
            if self.lead != u8::MAX && lead >= block_lead && trail >= block_trail {
                self.bits.bit(false);
                self.bits
                    .write(x >> block_trail, 64 - block_lead - block_trail);
            } else {
                let len = 64 - lead - trail;
                self.bits.bit(true);
                self.bits.write(u64::from(lead), 5);
                self.bits.write(u64::from(len - 1), 6);
                self.bits.write(x >> trail, len);
                // Both below 64: x is not 0.
                self.lead = lead as u8;
                self.trail = trail as u8;
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
        let _ = self.decode_into(i64::MAX, &mut out);
        out
    }

    /// Appends the samples up to time `last` to `out`, oldest first,
    /// decoding none after the first one past it.
    fn decode_into(&self, last: i64, out: &mut Vec<Point>) -> Result<(), TsdbError> {
        let mut r = BitReader::new(self.bits.bytes(), self.bits.bit_len());
        let mut t = self.first_t;
        let mut value = self.first_value;
        if t > last {
            return Ok(());
        }
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
            if t > last {
                break;
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
