//! Value columns of sealed chunks: constants, scaled integers, ratios,
//! near-decimals, float32 or XOR, whichever is smallest.

use super::bits::{BitWriter, put_bits, read_bits};
use super::bytes::{ByteReader, put_ivarint, put_uvarint, unzigzag, zigzag};
use super::corrupt;
use super::ints::{Coding, best_ints_coding, read_ints_coded, write_ints_coded};
use super::xor::{read_xor, write_xor};
use crate::TsdbError;

const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const VALUES_CONSTANT: u8 = 0;
const VALUES_INT: u8 = 1;
const VALUES_F32: u8 = 3;
const VALUES_XOR: u8 = 4;
const VALUES_RATIO: u8 = 5;
pub(super) const VALUES_NEAR_SCALED: u8 = 6;

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
pub(super) const INTS_RICE: u8 = 4;
pub(super) const INTS_OFFSET: u8 = 8;

/// Largest denominator the ratio encoding looks for.
const MAX_DENOMINATOR: u64 = 1 << 24;

/// `round(v * 10^e)` for every value if that reproduces each value exactly.
pub(super) fn as_scaled_ints(values: &[f64], e: usize) -> Option<Vec<i64>> {
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
pub(super) fn as_fraction(v: f64) -> Option<(u64, u64)> {
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
pub(crate) fn encode_ints(ints: &[i64], out: &mut Vec<u8>) {
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
pub(crate) fn decode_ints(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<i64>, TsdbError> {
    decode_ints_prefix(r, count, count)
}

/// The first `take` of the `count` integers of a column, the reader moved
/// past the whole column.
fn decode_ints_prefix(
    r: &mut ByteReader<'_>,
    count: usize,
    take: usize,
) -> Result<Vec<i64>, TsdbError> {
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
    let take = take.min(count);
    if take == 0 {
        return Ok(Vec::new());
    }
    let mut zs = Vec::with_capacity(take - 1);
    read_ints_coded(
        &mut bits,
        coding,
        count.saturating_sub(1),
        take - 1,
        &mut zs,
    )?;
    let mut out = Vec::with_capacity(take);
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

/// Reads `count` values written by [`encode_values`].
pub(crate) fn decode_values(
    r: &mut ByteReader<'_>,
    count: usize,
    out: &mut Vec<f64>,
) -> Result<(), TsdbError> {
    decode_values_prefix(r, count, count, out)
}

/// Reads the first `take` of `count` values written by [`encode_values`],
/// moving the reader past all of them: the values of a chunk's points up
/// to a query's end, without decoding the rest.
pub(crate) fn decode_values_prefix(
    r: &mut ByteReader<'_>,
    count: usize,
    take: usize,
    out: &mut Vec<f64>,
) -> Result<(), TsdbError> {
    if count == 0 {
        return Ok(());
    }
    let take = take.min(count);
    match r.u8()? {
        VALUES_CONSTANT => {
            let v = f64::from_bits(r.u64_le()?);
            out.extend(std::iter::repeat_n(v, take));
        }
        VALUES_INT => {
            let e = usize::from(r.u8()?);
            let scale = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            let ints = decode_ints_prefix(r, count, take)?;
            out.extend(ints.into_iter().map(|x| x as f64 / scale));
        }
        VALUES_RATIO => {
            let denominators = decode_ints_prefix(r, count, take)?;
            let numerators = decode_ints_prefix(r, count, take)?;
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
            let ints = decode_ints_prefix(r, count, take)?;
            let ulps = decode_ints_prefix(r, count, take)?;
            out.extend(ints.into_iter().zip(ulps).map(|(i, d)| {
                f64::from_bits(((i as f64 / scale).to_bits() as i64).wrapping_add(d) as u64)
            }));
        }
        VALUES_F32 => {
            let e = usize::from(r.u8()?);
            let scale = *POW10.get(e).ok_or_else(|| corrupt("decimal exponent"))?;
            let mut bits = read_bits(r)?;
            let mut raw = Vec::with_capacity(take);
            read_xor(&mut bits, count, take, 32, &mut raw)?;
            out.extend(
                raw.into_iter()
                    .map(|b| f64::from(f32::from_bits(b as u32)) / scale),
            );
        }
        VALUES_XOR => {
            let mut bits = read_bits(r)?;
            let mut raw = Vec::with_capacity(take);
            read_xor(&mut bits, count, take, 64, &mut raw)?;
            out.extend(raw.into_iter().map(f64::from_bits));
        }
        _ => return Err(corrupt("unknown value encoding")),
    }
    Ok(())
}
