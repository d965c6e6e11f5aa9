//! Timestamp columns of sealed chunks, and whole blocks of points.

use super::bits::{put_bits, read_bits};
use super::bytes::{ByteReader, put_ivarint, put_uvarint, unzigzag, zigzag};
use super::ints::{Coding, read_ints_coded, write_ints_best};
use super::values::{decode_values, encode_values};
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
