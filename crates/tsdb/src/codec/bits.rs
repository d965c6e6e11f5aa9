//! Bit streams: a writer, a reader, gamma codes.

use super::bytes::{ByteReader, put_uvarint};
use super::corrupt;
use crate::TsdbError;

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
        // Eight whole bytes when the buffer has them (all reads but the
        // last few of a stream), without copying through a padded array.
        let word = match self.buf[byte..].first_chunk::<8>() {
            Some(eight) => u64::from_be_bytes(*eight),
            None => {
                let mut word = [0u8; 8];
                let avail = (self.buf.len() - byte).min(8);
                word[..avail].copy_from_slice(&self.buf[byte..byte + avail]);
                u64::from_be_bytes(word)
            }
        };
        let offset = (self.pos % 8) as u32;
        self.pos += n as usize;
        Ok((word << offset) >> (64 - n))
    }

    /// The next 57 bits or more, left-aligned (the first in the top bit),
    /// without consuming them, when the buffer has eight bytes from here;
    /// bits past the stream's end are included, so the caller checks
    /// [`BitReader::left`] before consuming what it found.
    pub(super) fn peek57(&self) -> Option<u64> {
        let eight = self.buf.get(self.pos / 8..)?.first_chunk::<8>()?;
        Some(u64::from_be_bytes(*eight) << (self.pos % 8))
    }

    /// Bits not read yet.
    pub(super) fn left(&self) -> usize {
        self.bits - self.pos
    }

    /// Consumes `n` bits a [`BitReader::peek57`] looked at (at most
    /// [`BitReader::left`]).
    pub(super) fn skip(&mut self, n: usize) {
        debug_assert!(n <= self.left());
        self.pos += n;
    }

    pub(crate) fn bit(&mut self) -> Result<bool, TsdbError> {
        Ok(self.read(1)? == 1)
    }

    /// Counts ones, up to `max`, consuming them and the zero after them
    /// (none after `max` ones).
    pub(super) fn ones(&mut self, max: u64) -> Result<u64, TsdbError> {
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
    pub(super) fn gamma(&mut self) -> Result<u64, TsdbError> {
        // The zeros before the leading one, counted up to 32 at a time.
        let mut zeros = 0u32;
        loop {
            let n = (self.bits - self.pos).min(32) as u32;
            if n == 0 {
                return Err(corrupt("bit stream truncated"));
            }
            let start = self.pos;
            let window = self.read(n)?;
            let z = (window << (64 - n)).leading_zeros().min(n);
            zeros += z;
            if zeros > 63 {
                return Err(corrupt("gamma code too long"));
            }
            if z < n {
                self.pos = start + z as usize + 1;
                break;
            }
        }
        let rest = self.read(zeros)?;
        Ok((1u64 << zeros) | rest)
    }
}

pub(super) fn put_gamma(w: &mut BitWriter, v: u64) {
    debug_assert!(v >= 1);
    let n = 63 - v.leading_zeros();
    w.write(0, n);
    w.write(v, n + 1);
}

/// Appends a bit stream to bytes: its length in bits, then its bytes.
pub(super) fn put_bits(out: &mut Vec<u8>, w: BitWriter) {
    put_uvarint(out, w.bit_len() as u64);
    out.extend_from_slice(w.bytes());
}

/// Reads a bit stream written by [`put_bits`].
pub(super) fn read_bits<'a>(r: &mut ByteReader<'a>) -> Result<BitReader<'a>, TsdbError> {
    let bits = r.len(usize::MAX / 2)?;
    let bytes = r.bytes(bits.div_ceil(8))?;
    Ok(BitReader::new(bytes, bits))
}
