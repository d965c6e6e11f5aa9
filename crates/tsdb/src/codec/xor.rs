//! Gorilla XOR streams of bit patterns, with run-length coded repeats.

use super::bits::{BitReader, BitWriter, put_gamma};
use super::corrupt;
use crate::TsdbError;

/// Gorilla XOR of `width`-bit patterns with run-length coded repeats:
/// `0` + gamma(run) for repeated values, `10` + bits inside the previous
/// leading/trailing window, `11` + leading zeros + length + bits.
pub(super) fn write_xor(w: &mut BitWriter, values: &[u64], width: u32) {
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

/// Reads the first `take` of `count` values written by [`write_xor`].
pub(super) fn read_xor(
    r: &mut BitReader<'_>,
    count: usize,
    take: usize,
    width: u32,
    out: &mut Vec<u64>,
) -> Result<(), TsdbError> {
    if count == 0 || take == 0 {
        return Ok(());
    }
    let field = if width == 64 { 6 } else { 5 };
    let end = out.len() + count;
    let wanted = out.len() + take.min(count);
    let mut prev = r.read(width)?;
    out.push(prev);
    // `decoded` counts a repeat run whole, `out` only its part below `wanted`.
    let mut decoded = out.len();
    let mut window: Option<(u32, u32)> = None;
    while decoded < wanted {
        if !r.bit()? {
            let run = r.gamma()?;
            if run > (end - decoded) as u64 {
                return Err(corrupt("repeat run past the end"));
            }
            let run = run as usize;
            out.extend(std::iter::repeat_n(prev, run.min(wanted - decoded)));
            decoded += run;
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
        decoded += 1;
    }
    Ok(())
}
