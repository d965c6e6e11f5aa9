//! Varints and a bounds-checked reader of bytes.

use super::corrupt;
use crate::TsdbError;

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
