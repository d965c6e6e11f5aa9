//! Streams of unsigned integers: zero runs and gamma-coded lengths, or
//! Rice codes with an escape, whichever is smaller.

use super::bits::{BitReader, BitWriter, put_gamma};
use super::corrupt;
use crate::TsdbError;

/// Writes unsigned numbers: runs of zeros as `0` + gamma(run), any other
/// number as `1` + gamma(bit length) + its bits below the leading one.
pub(super) struct IntStream<'w> {
    w: &'w mut BitWriter,
    zeros: u64,
}

impl<'w> IntStream<'w> {
    pub(super) fn new(w: &'w mut BitWriter) -> Self {
        IntStream { w, zeros: 0 }
    }

    pub(super) fn push(&mut self, z: u64) {
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

    pub(super) fn finish(mut self) {
        self.flush_zeros();
    }
}

/// Reads the first `take` of `count` numbers written by [`IntStream`].
fn read_ints(
    r: &mut BitReader<'_>,
    count: usize,
    take: usize,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    let base = out.len();
    let end = base + count;
    let wanted = base + take.min(count);
    // `decoded` counts a zero run whole, `out` only its part below `wanted`.
    let mut decoded = base;
    while decoded < wanted {
        // Most numbers: the flag, gamma length and bits within one peek.
        if let Some(window) = r.peek57()
            && window >> 63 == 1
        {
            // `1`, gamma(n): `zeros` zeros and n's zeros + 1 bits, then
            // the number's n - 1 bits below its leading one.
            let zeros = (window << 1).leading_zeros();
            if zeros <= 6 {
                let n = ((window << (1 + zeros)) >> (63 - zeros)) as u32;
                let head = 2 + 2 * zeros;
                let width = (head + n - 1) as usize;
                if (1..=57).contains(&n) && width <= 57 && width <= r.left() {
                    let rest = match n {
                        1 => 0,
                        _ => (window << head) >> (65 - n),
                    };
                    r.skip(width);
                    out.push((1u64 << (n - 1)) | rest);
                    decoded += 1;
                    continue;
                }
            }
        }
        if r.bit()? {
            let n = r.gamma()?;
            if n > 64 {
                return Err(corrupt("integer wider than 64 bits"));
            }
            let n = n as u32;
            let rest = r.read(n - 1)?;
            out.push((1u64 << (n - 1)) | rest);
            decoded += 1;
        } else {
            let run = r.gamma()?;
            if run > (end - decoded) as u64 {
                return Err(corrupt("zero run past the end"));
            }
            let run = run as usize;
            out.extend(std::iter::repeat_n(0, run.min(wanted - decoded)));
            decoded += run;
        }
    }
    Ok(())
}

// Rice-coded streams.

/// Quotients at or above this are escaped: the number follows in the
/// [`IntStream`] form, so one outlier (a counter reset) costs few bits.
const RICE_ESCAPE: u64 = 24;
/// Largest Rice parameter.
pub(super) const MAX_RICE_K: u32 = 62;

/// Bits [`write_rice`] spends on `z` with parameter `k`.
pub(super) fn rice_bits(z: u64, k: u32) -> u64 {
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
pub(super) fn write_rice(w: &mut BitWriter, zs: &[u64], k: u32) {
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
pub(super) fn read_rice(
    r: &mut BitReader<'_>,
    count: usize,
    k: u32,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    if k > MAX_RICE_K {
        return Err(corrupt("Rice parameter out of range"));
    }
    for _ in 0..count {
        // Most numbers: the quotient and the low bits within one peek.
        if let Some(window) = r.peek57() {
            let q = u64::from(window.leading_ones());
            let width = q as usize + 1 + k as usize;
            if q < RICE_ESCAPE && width <= 57 && width <= r.left() {
                let low = if k == 0 {
                    0
                } else {
                    (window << (q + 1)) >> (64 - k)
                };
                r.skip(width);
                out.push((q << k) | low);
                continue;
            }
        }
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
pub(super) enum Coding {
    Gamma,
    Rice(u32),
}

/// The smaller of the two codings of `zs`, and its length in bits.
pub(super) fn best_ints_coding(zs: &[u64]) -> (Coding, u64) {
    let (k, rice_bits) = best_rice(zs);
    let gamma_bits = int_stream_bits(zs);
    if !zs.is_empty() && rice_bits < gamma_bits {
        (Coding::Rice(k), rice_bits)
    } else {
        (Coding::Gamma, gamma_bits)
    }
}

pub(super) fn write_ints_coded(zs: &[u64], coding: Coding, bits: u64) -> BitWriter {
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
pub(super) fn write_ints_best(zs: &[u64]) -> (Coding, BitWriter) {
    let (coding, bits) = best_ints_coding(zs);
    (coding, write_ints_coded(zs, coding, bits))
}

/// Bits [`IntStream`] takes for `zs`, counted without writing them.
pub(super) fn int_stream_bits(zs: &[u64]) -> u64 {
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

/// Reads the first `take` of `count` numbers coded as `coding`: a reader
/// that needs only the start of a stream stops there.
pub(super) fn read_ints_coded(
    r: &mut BitReader<'_>,
    coding: Coding,
    count: usize,
    take: usize,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    match coding {
        Coding::Gamma => read_ints(r, count, take, out),
        Coding::Rice(k) => read_rice(r, take.min(count), k, out),
    }
}
