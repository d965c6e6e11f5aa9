//! Timestamp columns of sealed chunks, and whole blocks of points.

use super::bits::{put_bits, read_bits};
use super::bytes::{ByteReader, put_ivarint, put_uvarint, unzigzag, zigzag};
use super::ints::{Coding, read_ints_coded, write_ints_best};
use super::values::{decode_values_prefix, encode_values};
use super::{MAX_BLOCK_POINTS, corrupt};
use crate::TsdbError;
use crate::model::Point;

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
    decode_times_through(r, count, i64::MAX, out)
}

/// Reads a column of `count` increasing timestamps up to the first one
/// after `last` (the ones up to `last`), moving the reader past the whole
/// column. Times are checked for order by the caller.
fn decode_times_through(
    r: &mut ByteReader<'_>,
    count: usize,
    last: i64,
    out: &mut Vec<i64>,
) -> Result<(), TsdbError> {
    if count == 0 {
        return Ok(());
    }
    let mut t = r.ivarint()?;
    let mut keep = t <= last;
    if keep {
        out.push(t);
    }
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
    keep &= t <= last;
    if keep {
        out.push(t);
    }
    match mode {
        TIMES_REGULAR => {
            for _ in 2..count {
                t = t.wrapping_add(delta);
                if !keep || t > last {
                    break;
                }
                out.push(t);
            }
        }
        TIMES_DOD | TIMES_DOD_RICE => {
            // The stream is read (so the reader moves past it) even when
            // none of its times are wanted.
            let mut bits = read_bits(r)?;
            if !keep {
                return Ok(());
            }
            let mut zs = Vec::with_capacity(count - 2);
            read_ints_coded(&mut bits, coding, count - 2, count - 2, &mut zs)?;
            for z in zs {
                delta = delta.wrapping_add(unzigzag(z));
                t = t.wrapping_add(delta);
                if t > last {
                    break;
                }
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
    let mut points = Vec::new();
    decode_points_through(r, i64::MIN, i64::MAX, &mut points)?;
    Ok(points)
}

/// Appends the points of what [`encode_points`] wrote with times in
/// `[first, last]` to `out`, moving the reader past the whole block. Values
/// after `last` are not decoded, nor times after the first past it, so a
/// query ending early in a chunk pays for the part it reads. Refuses times
/// that do not increase (among those decoded).
pub(crate) fn decode_points_through(
    r: &mut ByteReader<'_>,
    first: i64,
    last: i64,
    out: &mut Vec<Point>,
) -> Result<(), TsdbError> {
    let count = r.len(MAX_BLOCK_POINTS)?;
    let mut times = Vec::with_capacity(count);
    decode_times_through(r, count, last, &mut times)?;
    if times.windows(2).any(|w| w[1] <= w[0]) {
        return Err(corrupt("timestamps do not increase"));
    }
    let mut values = Vec::with_capacity(times.len());
    decode_values_prefix(r, count, times.len(), &mut values)?;
    let from = times.partition_point(|&t| t < first);
    out.extend(
        times[from..]
            .iter()
            .zip(&values[from..])
            .map(|(&t_ms, &value)| Point { t_ms, value }),
    );
    Ok(())
}
