//! Sample compression: bit streams, varints, the head encoder and the
//! sealed-chunk format.
//!
//! Two encodings share the bit-level building blocks:
//! - [`HeadChunk`] holds the samples still in memory: the newest in Gorilla
//!   (VLDB 2015) as published, delta-of-delta timestamps in buckets and
//!   XOR-encoded floats, appendable one sample at a time; every
//!   [`HEAD_BLOCK_POINTS`] of them re-encoded as a block of the format below;
//! - [`encode_points`] writes a sealed chunk once its window is complete,
//!   so it may look at all samples first: timestamps are either "regular"
//!   (one delta) or delta-of-delta; values pick the smallest of constant,
//!   scaled integers (with the common divisor of their deltas removed, as
//!   delta or delta-of-delta), ratios of integers, decimals with the few
//!   ulps each value lies off its decimal (float sums of decimals), float32
//!   data scaled by a power of ten, and Gorilla XOR with run-length coded
//!   repeats. Integer columns are differences (deltas, delta-of-deltas or
//!   distances from the first value), zigzagged or offset by their minimum
//!   (a counter's increments); the streams are coded as runs of zeros and
//!   gamma-coded lengths, or Rice-coded with the parameter that suits them,
//!   whichever is smallest.
//!
//! Every decoder is bounds-checked and refuses, never panics on, arbitrary
//! bytes (there is a fuzz target for it).

use crate::TsdbError;
use crate::model::Point;

/// Most points one encoded block may claim; a larger count is corruption.
pub(crate) const MAX_BLOCK_POINTS: usize = 1 << 20;

fn corrupt(what: &str) -> TsdbError {
    TsdbError::Corrupt(what.to_owned())
}

// ---------------------------------------------------------------- varints

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A cursor over bytes with bounds-checked reads.
pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// A count of items that each take at least one byte of what is left:
    /// any count an encoder wrote passes, and a damaged one cannot make
    /// the decoder allocate more than the input's size.
    pub(crate) fn count(&mut self) -> Result<usize, TsdbError> {
        let max = self.remaining();
        self.len(max)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos.min(self.bytes.len())..]
    }

    pub(crate) fn u8(&mut self) -> Result<u8, TsdbError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], TsdbError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32, TsdbError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64, TsdbError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, TsdbError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt("varint too long"))
    }

    pub(crate) fn ivarint(&mut self) -> Result<i64, TsdbError> {
        self.uvarint().map(unzigzag)
    }

    /// A length that must not exceed `max`.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize, TsdbError> {
        let n = self.uvarint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| corrupt("length out of bounds"))
    }

    pub(crate) fn str(&mut self, max: usize) -> Result<&'a str, TsdbError> {
        let n = self.len(max)?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| corrupt("invalid UTF-8"))
    }

    /// A string of any length the input holds.
    pub(crate) fn text(&mut self) -> Result<&'a str, TsdbError> {
        let max = self.remaining();
        self.str(max)
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

// ---------------------------------------------------------------- bits

/// Writes bits most significant first; the last byte is kept partially filled.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            buf: Vec::with_capacity(bytes),
            bits: 0,
        }
    }

    /// Appends the low `n` bits of `value`, `n <= 64`: the free bits of
    /// the last byte first, then whole bytes at once (the head and the
    /// seal spend most of their encoding time here).
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let mut value = if n == 64 {
            value
        } else {
            value & ((1u64 << n) - 1)
        };
        let mut n = n;
        self.bits += n as usize;
        let used = (self.bits - n as usize) % 8;
        if used != 0
            && let Some(last) = self.buf.last_mut()
        {
            let free = 8 - used as u32;
            if n <= free {
                *last |= (value << (free - n)) as u8;
                return;
            }
            *last |= (value >> (n - free)) as u8;
            n -= free;
            value &= (1u64 << n) - 1;
        }
        // Byte aligned: the n low bits of `value`, most significant first.
        let top = value << (64 - n);
        self.buf
            .extend_from_slice(&top.to_be_bytes()[..n.div_ceil(8) as usize]);
    }

    pub(crate) fn bit(&mut self, set: bool) {
        self.write(u64::from(set), 1);
    }

    pub(crate) fn bit_len(&self) -> usize {
        self.bits
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes sure `spare` more bytes fit; if not, grows by exactly `grow`.
    pub(crate) fn reserve_at_least(&mut self, spare: usize, grow: usize) {
        if self.buf.capacity() - self.buf.len() < spare {
            self.buf.reserve_exact(grow.max(spare));
        }
    }
}

/// Reads bits most significant first, refusing to read past `bits`.
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    bits: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8], bits: usize) -> Self {
        BitReader {
            buf,
            pos: 0,
            bits: bits.min(buf.len() * 8),
        }
    }

    pub(crate) fn read(&mut self, n: u32) -> Result<u64, TsdbError> {
        if n == 0 {
            return Ok(0);
        }
        if n > 64 || self.pos + n as usize > self.bits {
            return Err(corrupt("bit stream truncated"));
        }
        if n > 56 {
            let high = self.read(n - 32)?;
            let low = self.read(32)?;
            return Ok((high << 32) | low);
        }
        let byte = self.pos / 8;
        let mut word = [0u8; 8];
        let avail = (self.buf.len() - byte).min(8);
        word[..avail].copy_from_slice(&self.buf[byte..byte + avail]);
        let word = u64::from_be_bytes(word);
        let offset = (self.pos % 8) as u32;
        self.pos += n as usize;
        Ok((word << offset) >> (64 - n))
    }

    pub(crate) fn bit(&mut self) -> Result<bool, TsdbError> {
        Ok(self.read(1)? == 1)
    }

    /// Counts ones, up to `max`, consuming them and the zero after them
    /// (none after `max` ones).
    fn ones(&mut self, max: u64) -> Result<u64, TsdbError> {
        let mut q = 0u64;
        while q < max {
            let n = ((self.bits - self.pos) as u64).min(32).min(max - q) as u32;
            if n == 0 {
                return Err(corrupt("bit stream truncated"));
            }
            let start = self.pos;
            let window = self.read(n)?;
            let ones = ((!window) << (64 - n)).leading_zeros().min(n);
            if ones < n {
                self.pos = start + ones as usize + 1;
                return Ok(q + u64::from(ones));
            }
            q += u64::from(n);
        }
        Ok(q)
    }

    /// Elias gamma code of a number >= 1.
    fn gamma(&mut self) -> Result<u64, TsdbError> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 63 {
                return Err(corrupt("gamma code too long"));
            }
        }
        let rest = self.read(zeros)?;
        Ok((1u64 << zeros) | rest)
    }
}

fn put_gamma(w: &mut BitWriter, v: u64) {
    debug_assert!(v >= 1);
    let n = 63 - v.leading_zeros();
    w.write(0, n);
    w.write(v, n + 1);
}

// ----------------------------------------------- integer streams (sealed)

/// Writes unsigned numbers: runs of zeros as `0` + gamma(run), any other
/// number as `1` + gamma(bit length) + its bits below the leading one.
struct IntStream<'w> {
    w: &'w mut BitWriter,
    zeros: u64,
}

impl<'w> IntStream<'w> {
    fn new(w: &'w mut BitWriter) -> Self {
        IntStream { w, zeros: 0 }
    }

    fn push(&mut self, z: u64) {
        if z == 0 {
            self.zeros += 1;
            return;
        }
        self.flush_zeros();
        let n = 64 - z.leading_zeros();
        self.w.bit(true);
        put_gamma(self.w, u64::from(n));
        self.w.write(z, n - 1);
    }

    fn flush_zeros(&mut self) {
        if self.zeros > 0 {
            self.w.bit(false);
            put_gamma(self.w, self.zeros);
            self.zeros = 0;
        }
    }

    fn finish(mut self) {
        self.flush_zeros();
    }
}

/// Reads `count` numbers written by [`IntStream`].
fn read_ints(r: &mut BitReader<'_>, count: usize, out: &mut Vec<u64>) -> Result<(), TsdbError> {
    let end = out.len() + count;
    while out.len() < end {
        if r.bit()? {
            let n = r.gamma()?;
            if n > 64 {
                return Err(corrupt("integer wider than 64 bits"));
            }
            let n = n as u32;
            let rest = r.read(n - 1)?;
            out.push((1u64 << (n - 1)) | rest);
        } else {
            let run = r.gamma()?;
            if run > (end - out.len()) as u64 {
                return Err(corrupt("zero run past the end"));
            }
            out.extend(std::iter::repeat_n(0, run as usize));
        }
    }
    Ok(())
}

// ------------------------------------------ Rice-coded streams (sealed)

/// Quotients at or above this are escaped: the number follows in the
/// [`IntStream`] form, so one outlier (a counter reset) costs few bits.
const RICE_ESCAPE: u64 = 24;
/// Largest Rice parameter.
const MAX_RICE_K: u32 = 62;

/// Bits [`write_rice`] spends on `z` with parameter `k`.
fn rice_bits(z: u64, k: u32) -> u64 {
    let q = z >> k;
    if q < RICE_ESCAPE {
        q + 1 + u64::from(k)
    } else {
        let n = u64::from(64 - z.leading_zeros());
        RICE_ESCAPE + 2 * (63 - n.leading_zeros() as u64) + 1 + (n - 1)
    }
}

/// The Rice parameter that codes `zs` in the fewest bits, and that count.
/// Near-Gaussian noise (a gauge's steps, a counter's increments around its
/// rate) costs about log2(spread) + 2 bits a number this way, where the
/// gamma-coded [`IntStream`] spends twice the log of the bit length more.
fn best_rice(zs: &[u64]) -> (u32, u64) {
    let mean = zs.iter().map(|&z| u128::from(z)).sum::<u128>() / zs.len().max(1) as u128;
    let around = 128 - mean.leading_zeros();
    let from = around.saturating_sub(3);
    let to = (around + 1).min(MAX_RICE_K);
    (from..=to)
        .map(|k| (k, zs.iter().map(|&z| rice_bits(z, k)).sum::<u64>()))
        .min_by_key(|&(_, bits)| bits)
        .unwrap_or((0, 0))
}

/// Writes each number as its quotient by 2^k in unary (ones, then a zero)
/// and its k low bits; a quotient of [`RICE_ESCAPE`] or more as that many
/// ones and the number's bit length (gamma) and bits below the leading one.
fn write_rice(w: &mut BitWriter, zs: &[u64], k: u32) {
    for &z in zs {
        let q = z >> k;
        if q < RICE_ESCAPE {
            write_ones(w, q);
            w.bit(false);
            w.write(z, k);
        } else {
            write_ones(w, RICE_ESCAPE);
            // z >= RICE_ESCAPE, so it has a leading one.
            let n = 64 - z.leading_zeros();
            put_gamma(w, u64::from(n));
            w.write(z, n - 1);
        }
    }
}

fn write_ones(w: &mut BitWriter, mut n: u64) {
    while n > 0 {
        let take = n.min(32) as u32;
        w.write(u64::MAX, take);
        n -= u64::from(take);
    }
}

/// Reads `count` numbers written by [`write_rice`].
fn read_rice(
    r: &mut BitReader<'_>,
    count: usize,
    k: u32,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    if k > MAX_RICE_K {
        return Err(corrupt("Rice parameter out of range"));
    }
    for _ in 0..count {
        let q = r.ones(RICE_ESCAPE)?;
        if q < RICE_ESCAPE {
            out.push((q << k) | r.read(k)?);
        } else {
            let n = r.gamma()?;
            if !(1..=64).contains(&n) {
                return Err(corrupt("escaped number wider than 64 bits"));
            }
            let n = n as u32;
            let rest = r.read(n - 1)?;
            out.push((1u64 << (n - 1)) | rest);
        }
    }
    Ok(())
}

/// How a stream of unsigned numbers is coded: zero runs and gamma lengths
/// ([`IntStream`]), or Rice with a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gamma,
    Rice(u32),
}

/// The smaller of the two codings of `zs`, and its length in bits.
fn best_ints_coding(zs: &[u64]) -> (Coding, u64) {
    let (k, rice_bits) = best_rice(zs);
    let gamma_bits = int_stream_bits(zs);
    if !zs.is_empty() && rice_bits < gamma_bits {
        (Coding::Rice(k), rice_bits)
    } else {
        (Coding::Gamma, gamma_bits)
    }
}

fn write_ints_coded(zs: &[u64], coding: Coding, bits: u64) -> BitWriter {
    let mut w = BitWriter::with_capacity(bits.div_ceil(8) as usize);
    match coding {
        Coding::Rice(k) => write_rice(&mut w, zs, k),
        Coding::Gamma => {
            let mut stream = IntStream::new(&mut w);
            for &z in zs {
                stream.push(z);
            }
            stream.finish();
        }
    }
    w
}

/// The smaller of the two codings of `zs`, written.
fn write_ints_best(zs: &[u64]) -> (Coding, BitWriter) {
    let (coding, bits) = best_ints_coding(zs);
    (coding, write_ints_coded(zs, coding, bits))
}

/// Bits [`IntStream`] takes for `zs`, counted without writing them.
fn int_stream_bits(zs: &[u64]) -> u64 {
    let gamma_bits = |v: u64| 2 * u64::from(63 - v.leading_zeros()) + 1;
    let mut bits = 0;
    let mut zeros = 0;
    for &z in zs {
        if z == 0 {
            zeros += 1;
            continue;
        }
        if zeros > 0 {
            bits += 1 + gamma_bits(zeros);
            zeros = 0;
        }
        let n = u64::from(64 - z.leading_zeros());
        bits += 1 + gamma_bits(n) + n - 1;
    }
    if zeros > 0 {
        bits += 1 + gamma_bits(zeros);
    }
    bits
}

fn read_ints_coded(
    r: &mut BitReader<'_>,
    coding: Coding,
    count: usize,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    match coding {
        Coding::Gamma => read_ints(r, count, out),
        Coding::Rice(k) => read_rice(r, count, k, out),
    }
}

// -------------------------------------------------- XOR streams (sealed)

/// Gorilla XOR of `width`-bit patterns with run-length coded repeats:
/// `0` + gamma(run) for repeated values, `10` + bits inside the previous
/// leading/trailing window, `11` + leading zeros + length + bits.
fn write_xor(w: &mut BitWriter, values: &[u64], width: u32) {
    let field = if width == 64 { 6 } else { 5 };
    let Some((&first, rest)) = values.split_first() else {
        return;
    };
    w.write(first, width);
    let mut prev = first;
    let mut window: Option<(u32, u32)> = None;
    let mut zeros = 0u64;
    for &v in rest {
        let x = v ^ prev;
        prev = v;
        if x == 0 {
            zeros += 1;
            continue;
        }
        if zeros > 0 {
            w.bit(false);
            put_gamma(w, zeros);
            zeros = 0;
        }
        w.bit(true);
        let lead = x.leading_zeros() - (64 - width);
        let trail = x.trailing_zeros();
        match window {
            Some((l, t)) if lead >= l && trail >= t => {
                w.bit(false);
                w.write(x >> t, width - l - t);
            }
            _ => {
                let lead = lead.min((1 << field) - 1);
                let len = width - lead - trail;
                w.bit(true);
                w.write(u64::from(lead), field);
                w.write(u64::from(len - 1), field);
                w.write(x >> trail, len);
                window = Some((lead, trail));
            }
        }
    }
    if zeros > 0 {
        w.bit(false);
        put_gamma(w, zeros);
    }
}

fn read_xor(
    r: &mut BitReader<'_>,
    count: usize,
    width: u32,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    if count == 0 {
        return Ok(());
    }
    let field = if width == 64 { 6 } else { 5 };
    let end = out.len() + count;
    let mut prev = r.read(width)?;
    out.push(prev);
    let mut window: Option<(u32, u32)> = None;
    while out.len() < end {
        if !r.bit()? {
            let run = r.gamma()?;
            if run > (end - out.len()) as u64 {
                return Err(corrupt("repeat run past the end"));
            }
            out.extend(std::iter::repeat_n(prev, run as usize));
            continue;
        }
        let (lead, trail) = if r.bit()? {
            let lead = r.read(field)? as u32;
            let len = r.read(field)? as u32 + 1;
            if lead + len > width {
                return Err(corrupt("XOR window wider than the value"));
            }
            let w = (lead, width - lead - len);
            window = Some(w);
            w
        } else {
            window.ok_or_else(|| corrupt("XOR window reused before set"))?
        };
        let bits = r.read(width - lead - trail)?;
        prev ^= bits << trail;
        out.push(prev);
    }
    Ok(())
}

// ------------------------------------------------------------ value columns

const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const VALUES_CONSTANT: u8 = 0;
const VALUES_INT: u8 = 1;
const VALUES_F32: u8 = 3;
const VALUES_XOR: u8 = 4;
const VALUES_RATIO: u8 = 5;
const VALUES_NEAR_SCALED: u8 = 6;

/// Most units in the last place a value may lie from its decimal to be
/// coded as that decimal and the distance.
const MAX_ULPS: i64 = 1 << 16;

/// Integer column orders (what the stream holds: differences from the
/// previous value, differences of those, or differences from the first
/// value); `| INTS_RICE` when Rice-coded (a parameter byte follows);
/// `| INTS_OFFSET` when the stream holds the numbers minus their minimum
/// (an ivarint after the divisor) instead of zigzagged: a counter's
/// increments are never negative and seldom near zero, so a zigzag would
/// spend a bit a number on the sign and Rice codes on the distance from zero.
const INTS_DELTA: u8 = 0;
const INTS_DOD: u8 = 1;
const INTS_LEVEL: u8 = 2;
const INTS_ORDER: u8 = 3;
const INTS_RICE: u8 = 4;
const INTS_OFFSET: u8 = 8;

/// Largest denominator the ratio encoding looks for.
const MAX_DENOMINATOR: u64 = 1 << 24;

/// `round(v * 10^e)` for every value if that reproduces each value exactly.
fn as_scaled_ints(values: &[f64], e: usize) -> Option<Vec<i64>> {
    const LIMIT: f64 = (1u64 << 53) as f64;
    let scale = POW10[e];
    values
        .iter()
        .map(|&v| {
            let x = (v * scale).round();
            // Checked on what the decoder computes, so -0.0 is not taken for 0.
            let i = x as i64;
            (x.abs() < LIMIT && (i as f64 / scale).to_bits() == v.to_bits()).then_some(i)
        })
        .collect()
}

/// For every value, the decimal `round(v * 10^e) / 10^e` (as an integer
/// at that scale) and the value's distance from it in units in the last
/// place, if each is within [`MAX_ULPS`]: sums and averages of decimals
/// (the `sum` of a load average's minute) lie a few ulps off a short
/// decimal, where XOR would spend most of the mantissa.
fn as_near_scaled(values: &[f64], e: usize) -> Option<(Vec<i64>, Vec<i64>)> {
    const LIMIT: f64 = (1u64 << 53) as f64;
    let scale = POW10[e];
    let mut ints = Vec::with_capacity(values.len());
    let mut ulps = Vec::with_capacity(values.len());
    for &v in values {
        let x = (v * scale).round();
        // NaN compares false: refused too.
        let representable = x.abs() < LIMIT;
        if !representable {
            return None;
        }
        let i = x as i64;
        let d = (v.to_bits() as i64).wrapping_sub((i as f64 / scale).to_bits() as i64);
        if !(-MAX_ULPS..=MAX_ULPS).contains(&d) {
            return None;
        }
        ints.push(i);
        ulps.push(d);
    }
    Some((ints, ulps))
}

/// `v * 10^e` as float32 for every value if that reproduces each value
/// exactly; sensors and sysinfo report float32, often scaled afterwards.
fn as_scaled_f32(values: &[f64], e: usize) -> Option<Vec<u64>> {
    let scale = POW10[e];
    values
        .iter()
        .map(|&v| {
            let p = (v * scale) as f32;
            (p.is_finite() && (f64::from(p) / scale).to_bits() == v.to_bits())
                .then_some(u64::from(p.to_bits()))
        })
        .collect()
}

/// The fraction with the smallest denominator (at most MAX_DENOMINATOR)
/// whose float64 quotient is exactly `v`. Monitoring ratios are quotients
/// of integers (busy over total ticks); if `v` is the correctly rounded
/// `a / b` with a small `b`, then `|v - a/b| < 1 / (2 b^2)` and `a / b` is a
/// convergent of `v`'s continued fraction (Legendre), which this walks.
fn as_fraction(v: f64) -> Option<(u64, u64)> {
    if v.to_bits() == 0 {
        return Some((0, 1));
    }
    if !(v > 0.0 && v < (1u64 << 40) as f64) {
        return None;
    }
    // v = m / 2^k exactly.
    let bits = v.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    let shift = 1075 - exponent;
    if exponent == 0 || shift > 120 {
        return None;
    }
    let (mut n, mut d): (u128, u128) = if shift <= 0 {
        (u128::from(mantissa) << (-shift), 1)
    } else {
        (u128::from(mantissa), 1u128 << shift)
    };
    let (mut p0, mut q0, mut p1, mut q1) = (0u128, 1u128, 1u128, 0u128);
    while d != 0 {
        let a = n / d;
        (n, d) = (d, n - a * d);
        let (p, q) = (a * p1 + p0, a * q1 + q0);
        if q > u128::from(MAX_DENOMINATOR) {
            return None;
        }
        if (p as f64 / q as f64).to_bits() == bits {
            return Some((p as u64, q as u64));
        }
        (p0, q0, p1, q1) = (p1, q1, p, q);
    }
    None
}

/// Numerators and denominators reproducing every value, each denominator
/// a multiple of its reduced one chosen close to the previous denominator,
/// so that a steady total (ticks per interval) stays steady.
fn as_ratios(values: &[f64]) -> Option<(Vec<i64>, Vec<i64>)> {
    let mut numerators = Vec::with_capacity(values.len());
    let mut denominators = Vec::with_capacity(values.len());
    let mut prev_q = 1u64;
    for &v in values {
        let (p, q) = as_fraction(v)?;
        let k = ((prev_q as f64 / q as f64).round() as u64).clamp(1, MAX_DENOMINATOR / q);
        numerators.push((p * k) as i64);
        denominators.push((q * k) as i64);
        prev_q = q * k;
    }
    Some((numerators, denominators))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Appends a value column to `out` (a mode byte, its parameters, then bit
/// streams whose bit lengths precede them), choosing the smallest encoding.
pub(crate) fn encode_values(values: &[f64], out: &mut Vec<u8>) {
    let Some(&first) = values.first() else {
        return;
    };
    if values.iter().all(|v| v.to_bits() == first.to_bits()) {
        out.push(VALUES_CONSTANT);
        out.extend_from_slice(&first.to_bits().to_le_bytes());
        return;
    }
    let mut best: Option<Vec<u8>> = None;
    let mut consider = |candidate: Vec<u8>| {
        if best.as_ref().is_none_or(|b| candidate.len() < b.len()) {
            best = Some(candidate);
        }
    };
    if let Some((e, ints)) =
        (0..POW10.len()).find_map(|e| as_scaled_ints(values, e).map(|i| (e, i)))
    {
        let mut c = vec![VALUES_INT, e as u8];
        encode_ints(&ints, &mut c);
        consider(c);
    } else {
        if let Some((numerators, denominators)) = as_ratios(values) {
            let mut c = vec![VALUES_RATIO];
            encode_ints(&denominators, &mut c);
            encode_ints(&numerators, &mut c);
            consider(c);
        }
        if let Some((e, (ints, ulps))) =
            (0..POW10.len()).find_map(|e| as_near_scaled(values, e).map(|n| (e, n)))
        {
            let mut c = vec![VALUES_NEAR_SCALED, e as u8];
            encode_ints(&ints, &mut c);
            encode_ints(&ulps, &mut c);
            consider(c);
        }
    }
    if let Some((e, bits)) = (0..4).find_map(|e| as_scaled_f32(values, e).map(|b| (e, b))) {
        let mut w = BitWriter::with_capacity(values.len() * 3);
        write_xor(&mut w, &bits, 32);
        let mut c = vec![VALUES_F32, e as u8];
        put_bits(&mut c, w);
        consider(c);
    }
    let bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    let mut w = BitWriter::with_capacity(values.len() * 4);
    write_xor(&mut w, &bits, 64);
    let mut c = vec![VALUES_XOR];
    put_bits(&mut c, w);
    consider(c);
    if let Some(best) = best {
        out.extend_from_slice(&best);
    }
}

/// An integer column: the first value, the greatest common divisor of the
/// differences, and the differences divided by it as deltas,
/// delta-of-deltas or distances from the first value, zigzagged or offset
/// by their minimum, whichever of the six is smallest.
fn encode_ints(ints: &[i64], out: &mut Vec<u8>) {
    let first = ints.first().copied().unwrap_or(0);
    let deltas: Vec<i64> = ints.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let divisor = deltas
        .iter()
        .fold(0u64, |g, d| gcd(g, d.unsigned_abs()))
        .max(1);
    let scaled: Vec<i64> = deltas.iter().map(|d| d / divisor as i64).collect();
    let mut prev = 0i64;
    let dods: Vec<i64> = scaled
        .iter()
        .map(|d| {
            let dod = d.wrapping_sub(prev);
            prev = *d;
            dod
        })
        .collect();
    let levels: Vec<i64> = ints
        .iter()
        .skip(1)
        .map(|x| x.wrapping_sub(first) / divisor as i64)
        .collect();
    // Distances from the first value that wrap around do not divide.
    let levels_exact = ints
        .iter()
        .skip(1)
        .zip(&levels)
        .all(|(x, l)| first.wrapping_add(l.wrapping_mul(divisor as i64)) == *x);
    // Each candidate's size is counted, and only the smallest written.
    struct Candidate {
        size: usize,
        header: Vec<u8>,
        zs: Vec<u64>,
        coding: Coding,
        bits: u64,
    }
    let mut best: Option<Candidate> = None;
    let orders = [
        (INTS_DELTA, &scaled),
        (INTS_DOD, &dods),
        (INTS_LEVEL, &levels),
    ];
    for (order, numbers) in orders {
        if order == INTS_LEVEL && !levels_exact {
            continue;
        }
        let min = numbers.iter().copied().min().unwrap_or(0);
        for offset in [None, Some(min)] {
            let zs: Vec<u64> = numbers
                .iter()
                .map(|&n| match offset {
                    // The distance from the minimum fits in a u64 even where
                    // the i64 subtraction wraps.
                    Some(min) => n.wrapping_sub(min) as u64,
                    None => zigzag(n),
                })
                .collect();
            let (coding, bits) = best_ints_coding(&zs);
            let tag = order | if offset.is_some() { INTS_OFFSET } else { 0 };
            let mut header = Vec::with_capacity(32);
            match coding {
                Coding::Gamma => header.push(tag),
                Coding::Rice(k) => {
                    header.push(tag | INTS_RICE);
                    header.push(k as u8);
                }
            }
            put_ivarint(&mut header, first);
            put_uvarint(&mut header, divisor);
            if let Some(min) = offset {
                put_ivarint(&mut header, min);
            }
            put_uvarint(&mut header, bits);
            let size = header.len() + bits.div_ceil(8) as usize;
            if best.as_ref().is_none_or(|b| size < b.size) {
                best = Some(Candidate {
                    size,
                    header,
                    zs,
                    coding,
                    bits,
                });
            }
        }
    }
    if let Some(c) = best {
        out.extend_from_slice(&c.header);
        out.extend_from_slice(write_ints_coded(&c.zs, c.coding, c.bits).bytes());
    }
}

/// Reads `count` integers written by [`encode_ints`].
fn decode_ints(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<i64>, TsdbError> {
    let tag = r.u8()?;
    let order = tag & INTS_ORDER;
    if tag > (INTS_ORDER | INTS_RICE | INTS_OFFSET) || order > INTS_LEVEL {
        return Err(corrupt("unknown integer column order"));
    }
    let coding = if tag & INTS_RICE != 0 {
        Coding::Rice(u32::from(r.u8()?))
    } else {
        Coding::Gamma
    };
    let first = r.ivarint()?;
    let divisor = r.uvarint()? as i64;
    let offset = if tag & INTS_OFFSET != 0 {
        Some(r.ivarint()?)
    } else {
        None
    };
    let mut bits = read_bits(r)?;
    let mut zs = Vec::with_capacity(count.saturating_sub(1));
    read_ints_coded(&mut bits, coding, count.saturating_sub(1), &mut zs)?;
    let mut out = Vec::with_capacity(count);
    out.push(first);
    let (mut x, mut delta) = (first, 0i64);
    for z in zs {
        let n = match offset {
            Some(min) => min.wrapping_add(z as i64),
            None => unzigzag(z),
        };
        x = match order {
            INTS_DELTA => x.wrapping_add(n.wrapping_mul(divisor)),
            INTS_DOD => {
                delta = delta.wrapping_add(n);
                x.wrapping_add(delta.wrapping_mul(divisor))
            }
            _ => first.wrapping_add(n.wrapping_mul(divisor)),
        };
        out.push(x);
    }
    Ok(out)
}

fn put_bits(out: &mut Vec<u8>, w: BitWriter) {
    put_uvarint(out, w.bit_len() as u64);
    out.extend_from_slice(w.bytes());
}

fn read_bits<'a>(r: &mut ByteReader<'a>) -> Result<BitReader<'a>, TsdbError> {
    let bits = r.len(usize::MAX / 2)?;
    let bytes = r.bytes(bits.div_ceil(8))?;
    Ok(BitReader::new(bytes, bits))
}

/// Reads `count` values written by [`encode_values`].
pub(crate) fn decode_values(
    r: &mut ByteReader<'_>,
    count: usize,
    out: &mut Vec<f64>,
) -> Result<(), TsdbError> {
    if count == 0 {
        return Ok(());
    }
    match r.u8()? {
        VALUES_CONSTANT => {
            let v = f64::from_bits(r.u64_le()?);
            out.extend(std::iter::repeat_n(v, count));
        }
        VALUES_INT => {
            let e = usize::from(r.u8()?);
            let scale = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            out.extend(decode_ints(r, count)?.into_iter().map(|x| x as f64 / scale));
        }
        VALUES_RATIO => {
            let denominators = decode_ints(r, count)?;
            let numerators = decode_ints(r, count)?;
            out.extend(
                numerators
                    .into_iter()
                    .zip(denominators)
                    .map(|(p, q)| p as f64 / q as f64),
            );
        }
        VALUES_NEAR_SCALED => {
            let e = usize::from(r.u8()?);
            let scale = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            let ints = decode_ints(r, count)?;
            let ulps = decode_ints(r, count)?;
            out.extend(ints.into_iter().zip(ulps).map(|(i, d)| {
                f64::from_bits(((i as f64 / scale).to_bits() as i64).wrapping_add(d) as u64)
            }));
        }
        VALUES_F32 => {
            let e = usize::from(r.u8()?);
            let scale = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            let mut bits = read_bits(r)?;
            let mut raw = Vec::with_capacity(count);
            read_xor(&mut bits, count, 32, &mut raw)?;
            out.extend(
                raw.into_iter()
                    .map(|b| f64::from(f32::from_bits(b as u32)) / scale),
            );
        }
        VALUES_XOR => {
            let mut bits = read_bits(r)?;
            let mut raw = Vec::with_capacity(count);
            read_xor(&mut bits, count, 64, &mut raw)?;
            out.extend(raw.into_iter().map(f64::from_bits));
        }
        _ => return Err(corrupt("unknown value encoding")),
    }
    Ok(())
}

// ------------------------------------------------------- timestamp columns

const TIMES_REGULAR: u8 = 0;
const TIMES_DOD: u8 = 1;
/// Delta-of-delta, Rice-coded (a parameter byte follows).
const TIMES_DOD_RICE: u8 = 2;

/// Appends a strictly increasing timestamp column.
pub(crate) fn encode_times(times: &[i64], out: &mut Vec<u8>) {
    let Some(&first) = times.first() else {
        return;
    };
    put_ivarint(out, first);
    if times.len() == 1 {
        return;
    }
    let first_delta = times[1].wrapping_sub(first);
    if times
        .windows(2)
        .all(|w| w[1].wrapping_sub(w[0]) == first_delta)
    {
        out.push(TIMES_REGULAR);
        put_ivarint(out, first_delta);
        return;
    }
    let mut prev_delta = first_delta;
    let zs: Vec<u64> = times[1..]
        .windows(2)
        .map(|pair| {
            let delta = pair[1].wrapping_sub(pair[0]);
            let z = zigzag(delta.wrapping_sub(prev_delta));
            prev_delta = delta;
            z
        })
        .collect();
    let (coding, w) = write_ints_best(&zs);
    match coding {
        Coding::Gamma => out.push(TIMES_DOD),
        Coding::Rice(k) => {
            out.push(TIMES_DOD_RICE);
            out.push(k as u8);
        }
    }
    put_ivarint(out, first_delta);
    put_bits(out, w);
}

pub(crate) fn decode_times(
    r: &mut ByteReader<'_>,
    count: usize,
    out: &mut Vec<i64>,
) -> Result<(), TsdbError> {
    if count == 0 {
        return Ok(());
    }
    let mut t = r.ivarint()?;
    out.push(t);
    if count == 1 {
        return Ok(());
    }
    let mode = r.u8()?;
    let coding = match mode {
        TIMES_DOD_RICE => Coding::Rice(u32::from(r.u8()?)),
        _ => Coding::Gamma,
    };
    let mut delta = r.ivarint()?;
    t = t.wrapping_add(delta);
    out.push(t);
    match mode {
        TIMES_REGULAR => {
            for _ in 2..count {
                t = t.wrapping_add(delta);
                out.push(t);
            }
        }
        TIMES_DOD | TIMES_DOD_RICE => {
            let mut bits = read_bits(r)?;
            let mut zs = Vec::with_capacity(count - 2);
            read_ints_coded(&mut bits, coding, count - 2, &mut zs)?;
            for z in zs {
                delta = delta.wrapping_add(unzigzag(z));
                t = t.wrapping_add(delta);
                out.push(t);
            }
        }
        _ => return Err(corrupt("unknown timestamp encoding")),
    }
    Ok(())
}

/// Encodes points sorted by strictly increasing time: count, times, values.
pub(crate) fn encode_points(points: &[Point], out: &mut Vec<u8>) {
    put_uvarint(out, points.len() as u64);
    let times: Vec<i64> = points.iter().map(|p| p.t_ms).collect();
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    encode_times(&times, out);
    encode_values(&values, out);
}

/// Decodes what [`encode_points`] wrote; refuses times that do not increase.
pub(crate) fn decode_points(r: &mut ByteReader<'_>) -> Result<Vec<Point>, TsdbError> {
    let count = r.len(MAX_BLOCK_POINTS)?;
    let mut times = Vec::with_capacity(count);
    decode_times(r, count, &mut times)?;
    if times.windows(2).any(|w| w[1] <= w[0]) {
        return Err(corrupt("timestamps do not increase"));
    }
    let mut values = Vec::with_capacity(count);
    decode_values(r, count, &mut values)?;
    Ok(times
        .into_iter()
        .zip(values)
        .map(|(t_ms, value)| Point { t_ms, value })
        .collect())
}

// ------------------------------------------------------------ head chunks

/// Samples appended in time order, for the samples still in memory. The
/// newest (up to [`HEAD_BLOCK_POINTS`]) are Gorilla-encoded as they come;
/// each full run of them is re-encoded with the sealed-chunk codec, which
/// takes a fraction of Gorilla's bytes on agent data (noisy decimals,
/// counters, whole pages), and the head is most of the collector's memory
/// per series.
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    /// Complete runs, [`encode_points`] blocks back to back, oldest first;
    /// grown to the exact size, since most series' heads live an hour.
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
        // Exact growth while the head is small (most series' heads live an
        // hour), an eighth more at a time once it is large, so a dense
        // window is not copied whole for every block.
        self.blocks
            .reserve_exact(block.len().max(self.blocks.len() / 8));
        self.blocks.extend_from_slice(&block);
        self.block_points += points.len() as u32;
    }

    /// Every sample, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        let mut out = Vec::with_capacity(self.len());
        let mut r = ByteReader::new(&self.blocks);
        while !r.is_empty() {
            // Written by `push` only; a decoding error would be a bug here.
            match decode_points(&mut r) {
                Ok(points) => out.extend(points),
                Err(_) => break,
            }
        }
        out.extend(self.run.points());
        out
    }
}

/// Gorilla (VLDB 2015) as published, appendable one sample at a time:
/// `dod == 0` costs one bit, a repeated value one bit.
#[derive(Debug, Clone)]
struct GorillaRun {
    bits: BitWriter,
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
    fn new(first: Point) -> Self {
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
    fn push(&mut self, p: Point) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(points: &[Point]) -> Vec<(i64, u64)> {
        points.iter().map(|p| (p.t_ms, p.value.to_bits())).collect()
    }

    fn round_trip(points: &[Point]) -> usize {
        let mut out = Vec::new();
        encode_points(points, &mut out);
        let back = decode_points(&mut ByteReader::new(&out)).unwrap();
        assert_eq!(bits(&back), bits(points));
        let mut head = HeadChunk::new(points[0]);
        for p in &points[1..] {
            head.push(*p);
        }
        assert_eq!(bits(&head.points()), bits(points));
        out.len()
    }

    fn deltas() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => Just(10_000i64),
            2 => 9_990i64..10_010,
            1 => 1i64..3,
            1 => 1i64..1_000_000_000,
        ]
    }

    fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
        prop_oneof![
            // Any bit pattern, NaN payloads and infinities included.
            prop::collection::vec(any::<u64>().prop_map(f64::from_bits), n),
            prop::collection::vec(
                prop_oneof![
                    Just(f64::NAN),
                    Just(-0.0),
                    Just(f64::INFINITY),
                    any::<f64>()
                ],
                n
            ),
            // Counters with resets.
            prop::collection::vec((0u64..1_000_000, prop::bool::weighted(0.05)), n).prop_map(
                |steps| {
                    let mut c = 0u64;
                    steps
                        .into_iter()
                        .map(|(d, reset)| {
                            c = if reset { d % 10 } else { c + d };
                            c as f64
                        })
                        .collect()
                }
            ),
            // Decimals, float32 percentages as ratios, constants.
            prop::collection::vec(-100_000i64..100_000, n)
                .prop_map(|v| v.into_iter().map(|x| x as f64 / 100.0).collect()),
            prop::collection::vec(0f32..100.0, n)
                .prop_map(|v| v.into_iter().map(|x| f64::from(x) / 100.0).collect()),
            // Float sums of decimals, as a minute's sum of load averages.
            prop::collection::vec(prop::collection::vec(-100_000i64..100_000, 6), n).prop_map(
                |v| v
                    .into_iter()
                    .map(|six| six.into_iter().map(|x| x as f64 / 100.0).sum())
                    .collect()
            ),
            // Ratios of ticks, as the agent computes utilizations.
            prop::collection::vec((0u64..5000, 3990u64..4010), n).prop_map(|v| v
                .into_iter()
                .map(|(a, b)| a.min(b) as f64 / b as f64)
                .collect()),
            any::<f64>().prop_map(move |v| vec![v; n]),
        ]
    }

    fn points() -> impl Strategy<Value = Vec<Point>> {
        (
            1usize..400,
            -1_000_000_000_000_000i64..1_000_000_000_000_000,
        )
            .prop_flat_map(|(n, start)| {
                (prop::collection::vec(deltas(), n), values(n)).prop_map(move |(d, v)| {
                    let mut t = start;
                    d.into_iter()
                        .zip(v)
                        .map(|(delta, value)| {
                            t += delta;
                            Point { t_ms: t, value }
                        })
                        .collect()
                })
            })
    }

    proptest! {
        #[test]
        fn chunks_and_head_chunks_round_trip_bit_exactly(points in points()) {
            round_trip(&points);
        }

        #[test]
        fn rice_streams_round_trip_and_cost_what_they_claim(
            zs in prop::collection::vec(prop_oneof![0u64..64, 0u64..1_000_000, any::<u64>()], 0..200),
            k in 0u32..=MAX_RICE_K,
        ) {
            let mut w = BitWriter::default();
            write_rice(&mut w, &zs, k);
            let claimed: u64 = zs.iter().map(|&z| rice_bits(z, k)).sum();
            prop_assert_eq!(w.bit_len() as u64, claimed);
            let mut r = BitReader::new(w.bytes(), w.bit_len());
            let mut out = Vec::new();
            read_rice(&mut r, zs.len(), k, &mut out).unwrap();
            prop_assert_eq!(out, zs);
        }

        #[test]
        fn integer_streams_cost_what_they_are_counted(
            zs in prop::collection::vec(prop_oneof![Just(0u64), 0u64..64, any::<u64>()], 0..200),
        ) {
            let mut w = BitWriter::default();
            let mut stream = IntStream::new(&mut w);
            for &z in &zs {
                stream.push(z);
            }
            stream.finish();
            prop_assert_eq!(w.bit_len() as u64, int_stream_bits(&zs));
        }

        #[test]
        fn bit_writer_packs_like_one_bit_at_a_time(
            fields in prop::collection::vec((any::<u64>(), 0u32..=64), 0..100),
        ) {
            let mut w = BitWriter::default();
            let mut bits = Vec::new();
            for &(value, n) in &fields {
                w.write(value, n);
                bits.extend((0..n).rev().map(|i| (value >> i) & 1 == 1));
            }
            let mut expected = vec![0u8; bits.len().div_ceil(8)];
            for (i, &bit) in bits.iter().enumerate() {
                expected[i / 8] |= u8::from(bit) << (7 - i % 8);
            }
            prop_assert_eq!(w.bit_len(), bits.len());
            prop_assert_eq!(w.bytes(), &expected[..]);
        }

        #[test]
        fn integer_columns_round_trip(
            ints in prop::collection::vec(
                prop_oneof![any::<i64>(), -1000i64..1000, (1i64 << 40)..(1i64 << 40) + 1000],
                1..100,
            ),
        ) {
            let mut out = Vec::new();
            encode_ints(&ints, &mut out);
            let mut r = ByteReader::new(&out);
            prop_assert_eq!(decode_ints(&mut r, ints.len()).unwrap(), ints);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn decoders_refuse_garbage_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_points(&mut ByteReader::new(&bytes));
            let mut values = Vec::new();
            let _ = decode_values(&mut ByteReader::new(&bytes), 50, &mut values);
        }
    }

    #[test]
    fn agent_shapes_compress_well() {
        let regular = |f: &dyn Fn(i64) -> f64| -> Vec<Point> {
            (0..360)
                .map(|i| Point {
                    t_ms: 1_800_000_000_000 + i * 10_000,
                    value: f(i),
                })
                .collect()
        };
        let constant = round_trip(&regular(&|_| 16_000_000_000.0));
        assert!(constant < 24, "constant: {constant} bytes");
        let uptime = round_trip(&regular(&|i| 86_400.0 + i as f64 * 10.0));
        assert!(uptime < 24, "uptime: {uptime} bytes");
        let pages = round_trip(&regular(&|i| 8e9 + ((i * 7919) % 61 - 30) as f64 * 4096.0));
        assert!(pages < 360 * 2, "memory in pages: {pages} bytes");
        let load = round_trip(&regular(&|i| ((i * 31) % 200) as f64 / 100.0));
        assert!(load < 360 * 2, "load average: {load} bytes");
        let cpu = round_trip(&regular(&|i| {
            f64::from(((i * 7919) % 1000) as f32 / 997.0 * 100.0) / 100.0
        }));
        assert!(cpu < 360 * 4, "float32 percentages as ratios: {cpu} bytes");
        // Busy over total ticks of 4 cores, the total a little irregular.
        let ticks = |i: i64| {
            let total = 4000 + (i * 7) % 5;
            let busy = 400 + (i * 7919) % 160;
            busy as f64 / total as f64
        };
        let xor = {
            let bits: Vec<u64> = (0..360).map(|i| ticks(i).to_bits()).collect();
            let mut w = BitWriter::default();
            write_xor(&mut w, &bits, 64);
            w.bytes().len()
        };
        let ratio = round_trip(&regular(&ticks));
        assert!(ratio * 2 < xor, "ticks ratios: {ratio} bytes, XOR {xor}");
    }

    #[test]
    fn head_chunks_keep_complete_runs_in_the_sealed_format() {
        // Busy over total ticks, as the agent's CPU utilizations: noisy
        // doubles, which Gorilla's XOR codes poorly.
        let points: Vec<Point> = (0..360)
            .map(|i| Point {
                t_ms: 1_800_000_000_000 + i * 10_000,
                value: (400 + (i * 7919) % 160) as f64 / (4000 + (i * 7) % 5) as f64,
            })
            .collect();
        let mut head = HeadChunk::new(points[0]);
        let mut gorilla = GorillaRun::new(points[0]);
        for p in &points[1..] {
            head.push(*p);
            gorilla.push(*p);
        }
        assert_eq!(bits(&head.points()), bits(&points));
        assert_eq!(head.len(), 360);
        assert!(
            head.heap_bytes() * 2 < gorilla.bits.bytes().len(),
            "head {} bytes, Gorilla alone {}",
            head.heap_bytes(),
            gorilla.bits.bytes().len()
        );
    }

    #[test]
    fn noisy_integers_take_the_rice_coding_when_it_is_smaller() {
        // A counter growing by 30,000 +- 50% a step, as context switches do.
        let mut x = 0x9e37_79b9_u64;
        let mut c = 1i64 << 30;
        let counter: Vec<i64> = (0..360)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                c += 15_000 + ((x >> 33) % 30_000) as i64;
                c
            })
            .collect();
        let mut out = Vec::new();
        encode_ints(&counter, &mut out);
        assert_ne!(out[0] & INTS_RICE, 0, "Rice-coded");
        let zs: Vec<u64> = counter.windows(2).map(|w| zigzag(w[1] - w[0])).collect();
        let mut gamma = BitWriter::default();
        let mut stream = IntStream::new(&mut gamma);
        zs.iter().for_each(|&z| stream.push(z));
        stream.finish();
        assert!(out.len() * 8 < gamma.bit_len(), "{} bytes", out.len());
        let back = decode_ints(&mut ByteReader::new(&out), counter.len()).unwrap();
        assert_eq!(back, counter);
        // Increments of 15,000 to 45,000 as distances from 15,000: no sign
        // bit, and one Rice parameter less than their zigzags need.
        assert_ne!(out[0] & INTS_OFFSET, 0, "offset by the smallest increment");
        let (_, zigzagged) = write_ints_best(&zs);
        assert!(
            out.len() * 8 + 256 < zigzagged.bit_len(),
            "{} bytes against {} bits zigzagged",
            out.len(),
            zigzagged.bit_len()
        );
    }

    #[test]
    fn float_sums_of_decimals_are_coded_as_decimals_and_ulps() {
        let sums: Vec<f64> = (0..60)
            .map(|i| {
                (0..6)
                    .map(|k| ((i * 37 + k * 11) % 300) as f64 / 100.0)
                    .sum()
            })
            .collect();
        assert!(
            as_scaled_ints(&sums, 2).is_none(),
            "some sums are inexact decimals"
        );
        let mut out = Vec::new();
        encode_values(&sums, &mut out);
        assert_eq!(out[0], VALUES_NEAR_SCALED);
        let mut back = Vec::new();
        decode_values(&mut ByteReader::new(&out), sums.len(), &mut back).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&sums));
        assert!(out.len() < 60 * 3, "{} bytes for 60 sums", out.len());
    }

    #[test]
    fn fractions_are_found_exactly() {
        for (a, b) in [
            (1u64, 3u64),
            (0, 7),
            (4000, 4001),
            (17, 1 << 20),
            (5, 1),
            (123_456, 4003),
        ] {
            let v = a as f64 / b as f64;
            let (p, q) = as_fraction(v).unwrap();
            assert_eq!((p as f64 / q as f64).to_bits(), v.to_bits(), "{a}/{b}");
            assert!(q <= b, "{a}/{b} found as {p}/{q}");
        }
        assert_eq!(as_fraction(std::f64::consts::PI), None);
        assert_eq!(as_fraction(-0.5), None);
        assert_eq!(as_fraction(-0.0), None);
        assert_eq!(as_fraction(f64::NAN), None);
    }

    #[test]
    fn irregular_intervals_and_resets_round_trip() {
        let points: Vec<Point> = [0i64, 1, 2, 10_000, 10_001, 3_600_000, 3_600_500]
            .iter()
            .zip([5.0, 6.0, 0.0, 1.0, f64::NAN, -0.0, 2.5])
            .map(|(&t_ms, value)| Point { t_ms, value })
            .collect();
        round_trip(&points);
        // Negative zero next to integers must not be taken for an integer.
        let zeros: Vec<Point> = [0.0, -0.0, 1.0, -0.0]
            .iter()
            .enumerate()
            .map(|(i, &value)| Point {
                t_ms: i as i64,
                value,
            })
            .collect();
        round_trip(&zeros);
    }
}
