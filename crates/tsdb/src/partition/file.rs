//! A closed partition's immutable file (`<start>/chunks`, partition
//! format 2; specified in docs/format/partition-file.md): the partition's
//! (key, value) entries in key order, in blocks with a CRC-32 each, a
//! sparse index of the blocks' first keys, and a fixed-size footer.
//!
//! [`write`] writes one from entries in key order, synced; [`PartFile`]
//! opens one, checking its footer and index (the index stays in memory:
//! one first key a block), and reads blocks with `pread`, each checked
//! against its CRC before it is parsed. Nothing in a file is trusted: a
//! damaged one is an error naming the file and the problem, never a
//! panic, and a damaged block is skipped by reads (counted) and reported
//! by `verify`.

use crate::TsdbError;
use crate::codec::{ByteReader, put_uvarint};
use sled::IVec;
use std::collections::VecDeque;
use std::io::Write;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file's first and last 8 bytes.
const MAGIC: &[u8; 8] = b"HWTSPART";
/// The version of this file format, in its header and its footer.
pub(crate) const FILE_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const FOOTER_LEN: u64 = 44;
/// Entries are added to a block until it holds at least this many bytes:
/// a range read of one series reads a block or two; the index keeps one
/// first key per block.
const BLOCK_TARGET: usize = 16 << 10;
/// No block or index is larger than this (a damaged length is refused
/// before anything is allocated for it).
const MAX_SECTION: u64 = 1 << 31;

/// One block in the index.
struct BlockRef {
    offset: u64,
    /// Bytes of its entries (its CRC follows them).
    len: u32,
    first: Box<[u8]>,
}

/// Writes `entries` (strictly increasing keys) to `path`, a new file,
/// and syncs it unless `sync` is false (the fuzz targets' scratch
/// files). Returns how many entries it holds.
pub(crate) fn write(
    path: &Path,
    entries: impl Iterator<Item = Result<(IVec, IVec), TsdbError>>,
    sync: bool,
) -> Result<u64, TsdbError> {
    let io = |e| TsdbError::io("write", path, e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FILE_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    out.write_all(&header).map_err(io)?;
    let mut offset = HEADER_LEN;
    let mut index: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    let mut block = Vec::with_capacity(BLOCK_TARGET * 2);
    let mut first: Option<Vec<u8>> = None;
    let mut previous: Option<IVec> = None;
    let mut count = 0u64;
    let mut content = crc32fast::Hasher::new();
    let mut flush_block = |block: &mut Vec<u8>,
                           first: &mut Option<Vec<u8>>,
                           out: &mut std::io::BufWriter<std::fs::File>|
     -> Result<(), TsdbError> {
        let Some(key) = first.take() else {
            return Ok(());
        };
        let crc = crc32fast::hash(block);
        content.update(&crc.to_le_bytes());
        out.write_all(block).map_err(io)?;
        out.write_all(&crc.to_le_bytes()).map_err(io)?;
        let len = u32::try_from(block.len())
            .ok()
            .filter(|&l| u64::from(l) < MAX_SECTION)
            .ok_or_else(|| TsdbError::Invalid("a partition entry over 2 GiB".into()))?;
        index.push((offset, len, key));
        offset += u64::from(len) + 4;
        block.clear();
        Ok(())
    };
    for entry in entries {
        let (key, value) = entry?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(TsdbError::Invalid(format!(
                "partition file {}: keys out of order",
                path.display()
            )));
        }
        if first.is_none() {
            first = Some(key.to_vec());
        }
        put_uvarint(&mut block, key.len() as u64);
        put_uvarint(&mut block, value.len() as u64);
        block.extend_from_slice(&key);
        block.extend_from_slice(&value);
        count += 1;
        previous = Some(key);
        if block.len() >= BLOCK_TARGET {
            flush_block(&mut block, &mut first, &mut out)?;
        }
    }
    flush_block(&mut block, &mut first, &mut out)?;
    let mut encoded = Vec::with_capacity(index.len() * 32);
    for (offset, len, key) in &index {
        encoded.extend_from_slice(&offset.to_le_bytes());
        encoded.extend_from_slice(&len.to_le_bytes());
        put_uvarint(&mut encoded, key.len() as u64);
        encoded.extend_from_slice(key);
    }
    let index_crc = crc32fast::hash(&encoded);
    content.update(&index_crc.to_le_bytes());
    out.write_all(&encoded).map_err(io)?;
    out.write_all(&index_crc.to_le_bytes()).map_err(io)?;
    let blocks = u32::try_from(index.len())
        .map_err(|_| TsdbError::Invalid("a partition of over 2^32 blocks".into()))?;
    let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
    footer.extend_from_slice(&offset.to_le_bytes());
    footer.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    footer.extend_from_slice(&blocks.to_le_bytes());
    footer.extend_from_slice(&count.to_le_bytes());
    footer.extend_from_slice(&content.finalize().to_le_bytes());
    footer.extend_from_slice(&FILE_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    footer.extend_from_slice(MAGIC);
    out.write_all(&footer).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    if sync {
        file.sync_all().map_err(io)?;
    }
    Ok(count)
}

/// An open partition file: its footer and index checked, its index in
/// memory.
pub(crate) struct PartFile {
    path: PathBuf,
    file: std::fs::File,
    index: Vec<BlockRef>,
    entries: u64,
    /// Where a block that does not check is counted.
    counters: Arc<crate::store::Counters>,
}

impl std::fmt::Debug for PartFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartFile")
            .field("path", &self.path)
            .field("blocks", &self.index.len())
            .finish()
    }
}

/// Why a part of the file does not read.
fn bad(what: &str) -> String {
    what.to_owned()
}

impl PartFile {
    /// Opens the file at `path`, checking its header, footer and index;
    /// the error names the problem (the caller names the file).
    pub(crate) fn open(
        path: &Path,
        counters: Arc<crate::store::Counters>,
    ) -> Result<PartFile, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("does not open: {e}"))?;
        let size = file
            .metadata()
            .map_err(|e| format!("does not read: {e}"))?
            .len();
        if size < HEADER_LEN + FOOTER_LEN {
            return Err(format!("is truncated ({size} bytes)"));
        }
        let read = |offset: u64, len: u64| -> Result<Vec<u8>, String> {
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| format!("does not read at {offset}: {e}"))?;
            Ok(buf)
        };
        let header = read(0, HEADER_LEN)?;
        if &header[..8] != MAGIC {
            return Err(bad("is not a partition file (wrong magic)"));
        }
        let footer = read(size - FOOTER_LEN, FOOTER_LEN)?;
        if &footer[36..] != MAGIC {
            return Err(bad("is truncated or damaged (no footer magic)"));
        }
        if crc32fast::hash(&footer[..32]).to_le_bytes() != footer[32..36] {
            return Err(bad("has a damaged footer (checksum mismatch)"));
        }
        let mut f = ByteReader::new(&footer);
        let (index_offset, index_len, blocks, entries, _content, version) = (|| {
            Ok::<_, TsdbError>((
                f.u64_le()?,
                f.u32_le()?,
                f.u32_le()?,
                f.u64_le()?,
                f.u32_le()?,
                f.u32_le()?,
            ))
        })()
        .map_err(|e| format!("has a damaged footer: {e}"))?;
        let header_version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        for v in [header_version, version] {
            if v != FILE_VERSION {
                return Err(format!(
                    "is in partition file format {v}; this build reads partition file format {FILE_VERSION}"
                ));
            }
        }
        let index_end = index_offset
            .checked_add(u64::from(index_len))
            .and_then(|e| e.checked_add(4));
        if index_offset < HEADER_LEN || index_end != Some(size - FOOTER_LEN) {
            return Err(bad("has a damaged footer (index out of bounds)"));
        }
        let raw = read(index_offset, u64::from(index_len) + 4)?;
        let (encoded, crc) = raw.split_at(index_len as usize);
        if crc32fast::hash(encoded).to_le_bytes() != crc {
            return Err(bad("has a damaged index (checksum mismatch)"));
        }
        let mut r = ByteReader::new(encoded);
        let mut index = Vec::with_capacity((blocks as usize).min(encoded.len() / 13));
        let mut expected = HEADER_LEN;
        for _ in 0..blocks {
            let parsed = (|| {
                let offset = r.u64_le()?;
                let len = r.u32_le()?;
                let key_len = r.count()?;
                Ok::<_, TsdbError>((offset, len, r.bytes(key_len)?))
            })();
            let (offset, len, first) = parsed.map_err(|e| format!("has a damaged index: {e}"))?;
            if offset != expected || u64::from(len) >= MAX_SECTION {
                return Err(bad("has a damaged index (blocks out of place)"));
            }
            if index.last().is_some_and(|b: &BlockRef| *b.first >= *first) {
                return Err(bad("has a damaged index (keys out of order)"));
            }
            expected = offset + u64::from(len) + 4;
            index.push(BlockRef {
                offset,
                len,
                first: first.into(),
            });
        }
        if !r.is_empty() || expected != index_offset {
            return Err(bad("has a damaged index (its blocks do not fill the file)"));
        }
        Ok(PartFile {
            path: path.to_owned(),
            file,
            index,
            entries,
            counters,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Entries it holds (from its footer).
    pub(crate) fn len(&self) -> u64 {
        self.entries
    }

    /// Block `i`'s entries, checked against its CRC; the error names the
    /// block and the problem.
    fn block(&self, i: usize) -> Result<Vec<u8>, String> {
        let b = &self.index[i];
        let mut buf = vec![0; b.len as usize + 4];
        self.file
            .read_exact_at(&mut buf, b.offset)
            .map_err(|e| format!("block at {} does not read: {e}", b.offset))?;
        let crc = buf.split_off(b.len as usize);
        if crc32fast::hash(&buf).to_le_bytes()[..] != crc[..] {
            return Err(format!("block at {}: checksum mismatch", b.offset));
        }
        Ok(buf)
    }

    /// Block `i`'s entries; a damaged one is logged, counted and read as
    /// empty.
    fn block_or_skip(&self, i: usize) -> Vec<u8> {
        match self.block(i) {
            Ok(b) => b,
            Err(why) => {
                self.skipped(&why);
                Vec::new()
            }
        }
    }

    fn skipped(&self, why: &str) {
        tracing::error!(path = %self.path.display(), error = why, "damaged partition file block: skipped");
        crate::store::bump(&self.counters.corrupt_blocks, 1);
    }

    /// The index of the block that may hold `key`: the last whose first
    /// key is at most `key` (0 when none is).
    fn block_of(&self, key: &[u8]) -> usize {
        self.index
            .partition_point(|b| &*b.first <= key)
            .saturating_sub(1)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<IVec> {
        if self.index.is_empty() {
            return None;
        }
        let i = self.block_of(key);
        let block = self.block_or_skip(i);
        let mut found = None;
        let parsed = entries(&block, |k, v| {
            if k == key {
                found = Some(IVec::from(v));
            }
            k < key
        });
        if let Err(e) = parsed {
            self.skipped(&format!("block at {}: {e}", self.index[i].offset));
        }
        found
    }

    /// Entries with keys within `(from, to)`, in key order either way.
    pub(crate) fn range(self: &Arc<Self>, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> FileIter {
        let lo = match &from {
            Bound::Included(k) | Bound::Excluded(k) => self.block_of(k),
            Bound::Unbounded => 0,
        };
        let hi = match &to {
            Bound::Included(k) | Bound::Excluded(k) => {
                self.index.partition_point(|b| &*b.first <= k.as_slice())
            }
            Bound::Unbounded => self.index.len(),
        };
        FileIter {
            file: self.clone(),
            from,
            to,
            lo,
            hi: hi.max(lo),
            front: VecDeque::new(),
            back: VecDeque::new(),
        }
    }

    /// Walks every block: `f` gets each entry of the blocks that check;
    /// returns what is wrong with the others (each naming the block).
    pub(crate) fn check(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), TsdbError>,
    ) -> Result<Vec<String>, TsdbError> {
        let mut problems = Vec::new();
        let mut previous: Option<Vec<u8>> = None;
        let mut count = 0u64;
        for i in 0..self.index.len() {
            let block = match self.block(i) {
                Ok(b) => b,
                Err(why) => {
                    problems.push(why);
                    previous = None;
                    continue;
                }
            };
            let mut keys_ok = true;
            let mut visited = Vec::new();
            let parsed = entries(&block, |k, v| {
                if previous.as_deref().is_some_and(|p| p >= k) {
                    keys_ok = false;
                }
                previous = Some(k.to_vec());
                visited.push((k.to_vec(), v.to_vec()));
                true
            });
            count += visited.len() as u64;
            for (k, v) in &visited {
                f(k, v)?;
            }
            let offset = self.index[i].offset;
            if let Err(e) = parsed {
                problems.push(format!("block at {offset}: {e}"));
            } else if !keys_ok
                || visited
                    .first()
                    .is_some_and(|(k, _)| **k != *self.index[i].first)
            {
                problems.push(format!("block at {offset}: keys out of order"));
            }
        }
        if problems.is_empty() && count != self.entries {
            problems.push(format!(
                "holds {count} entries, its footer says {}",
                self.entries
            ));
        }
        Ok(problems)
    }

    /// The footer's bytes: equal footers mean equal files (the footer holds
    /// a CRC of every block's CRC and of the index).
    pub(crate) fn footer_of(path: &Path) -> Option<Vec<u8>> {
        let file = std::fs::File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let mut buf = vec![0; FOOTER_LEN as usize];
        file.read_exact_at(&mut buf, size.checked_sub(FOOTER_LEN)?)
            .ok()?;
        Some(buf)
    }
}

/// Calls `f` with each entry of a block's bytes in order while it returns
/// true.
fn entries(block: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(), TsdbError> {
    let mut r = ByteReader::new(block);
    while !r.is_empty() {
        let key_len = r.count()?;
        let value_len = r.count()?;
        let key = r.bytes(key_len)?;
        let value = r.bytes(value_len)?;
        if !f(key, value) {
            break;
        }
    }
    Ok(())
}

/// A range of a partition file's entries, read a block at a time from
/// either end.
pub(crate) struct FileIter {
    file: Arc<PartFile>,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    /// Blocks `lo..hi` are not read yet.
    lo: usize,
    hi: usize,
    front: VecDeque<(IVec, IVec)>,
    back: VecDeque<(IVec, IVec)>,
}

impl FileIter {
    fn within(&self, key: &[u8]) -> bool {
        let above = match &self.from {
            Bound::Included(f) => key >= f.as_slice(),
            Bound::Excluded(f) => key > f.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.to {
            Bound::Included(t) => key <= t.as_slice(),
            Bound::Excluded(t) => key < t.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Block `i`'s entries within the range.
    fn load(&self, i: usize) -> VecDeque<(IVec, IVec)> {
        let block = self.file.block_or_skip(i);
        let mut out = VecDeque::new();
        let parsed = entries(&block, |k, v| {
            if self.within(k) {
                out.push_back((IVec::from(k), IVec::from(v)));
            }
            true
        });
        if let Err(e) = parsed {
            let offset = self.file.index[i].offset;
            self.file.skipped(&format!("block at {offset}: {e}"));
        }
        out
    }
}

impl Iterator for FileIter {
    type Item = (IVec, IVec);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.front.pop_front() {
                return Some(e);
            }
            if self.lo < self.hi {
                self.front = self.load(self.lo);
                self.lo += 1;
                continue;
            }
            return self.back.pop_front();
        }
    }
}

impl DoubleEndedIterator for FileIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.back.pop_back() {
                return Some(e);
            }
            if self.lo < self.hi {
                self.hi -= 1;
                self.back = self.load(self.hi);
                continue;
            }
            return self.front.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Arc<crate::store::Counters> {
        Arc::new(crate::store::Counters::default())
    }

    fn key(i: u32) -> IVec {
        IVec::from(&format!("k{i:08}")[..])
    }

    /// A file of `n` entries with values of `value_len` bytes.
    fn written(dir: &Path, n: u32, value_len: usize) -> PathBuf {
        let path = dir.join("chunks");
        let entries = (0..n).map(|i| Ok((key(i), IVec::from(vec![(i % 251) as u8; value_len]))));
        assert_eq!(write(&path, entries, true).unwrap(), u64::from(n));
        path
    }

    fn all(file: &Arc<PartFile>) -> Vec<(IVec, IVec)> {
        file.range(Bound::Unbounded, Bound::Unbounded).collect()
    }

    #[test]
    fn entries_read_back_by_key_and_by_range_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 5000, 100);
        let file = Arc::new(PartFile::open(&path, counters()).unwrap());
        assert!(file.index.len() > 5, "several blocks");
        assert_eq!(file.len(), 5000);
        assert_eq!(all(&file).len(), 5000);
        for i in [0, 1, 654, 655, 4999] {
            assert_eq!(
                file.get(&key(i)),
                Some(IVec::from(vec![(i % 251) as u8; 100]))
            );
        }
        assert_eq!(file.get(b"k"), None);
        assert_eq!(file.get(b"k00000000x"), None);
        assert_eq!(file.get(b"z"), None);
        let range: Vec<IVec> = file
            .range(
                Bound::Included(key(640).to_vec()),
                Bound::Included(key(1900).to_vec()),
            )
            .map(|(k, _)| k)
            .collect();
        assert_eq!(range, (640..=1900).map(key).collect::<Vec<_>>());
        let back: Vec<IVec> = file
            .range(
                Bound::Excluded(key(640).to_vec()),
                Bound::Excluded(key(1900).to_vec()),
            )
            .rev()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(back, (641..1900).rev().map(key).collect::<Vec<_>>());
        // From both ends at once: every entry once.
        let mut it = file.range(Bound::Unbounded, Bound::Unbounded);
        let mut seen = Vec::new();
        while let (Some(a), b) = (it.next(), it.next_back()) {
            seen.push(a.0);
            seen.extend(b.map(|b| b.0));
        }
        seen.sort();
        assert_eq!(seen, (0..5000).map(key).collect::<Vec<_>>());
        assert_eq!(file.check(|_, _| Ok(())).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_empty_file_and_large_values_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 0, 0);
        let file = Arc::new(PartFile::open(&path, counters()).unwrap());
        assert_eq!(all(&file), vec![]);
        assert_eq!(file.get(b"a"), None);
        std::fs::remove_file(&path).unwrap();
        let path = written(dir.path(), 7, 300_000);
        let file = Arc::new(PartFile::open(&path, counters()).unwrap());
        assert_eq!(file.index.len(), 7, "a block per large value");
        assert_eq!(file.get(&key(3)).unwrap().len(), 300_000);
    }

    #[test]
    fn keys_out_of_order_are_refused_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [key(2), key(1)].map(|k| Ok((k, IVec::from(&b"v"[..]))));
        let err = write(&dir.path().join("chunks"), entries.into_iter(), true).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }

    /// What opening `path` says after `damage` changes its bytes.
    fn damaged(damage: impl FnOnce(&mut Vec<u8>)) -> (Result<Arc<PartFile>, String>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 3000, 100);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        let c = counters();
        let opened = PartFile::open(&path, c.clone()).map(Arc::new);
        let skipped = c.corrupt_blocks.load(std::sync::atomic::Ordering::Relaxed);
        (opened, skipped)
    }

    #[test]
    fn a_damaged_header_footer_or_index_is_refused_naming_the_problem() {
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage); 6] = [
            ("wrong magic", |b| b[0] = b'X'),
            (
                "partition file format 7; this build reads partition file format 1",
                |b| b[8] = 7,
            ),
            ("truncated", |b| b.truncate(b.len() - 100)),
            ("truncated", |b| b.truncate(20)),
            // In the footer's fields.
            ("damaged footer", |b| {
                let n = b.len();
                b[n - 30] ^= 1;
            }),
            // In the index's CRC, just before the footer.
            ("damaged index", |b| {
                let n = b.len();
                b[n - 45] ^= 1;
            }),
        ];
        for (want, damage) in cases {
            let (opened, _) = damaged(damage);
            let err = opened.unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn a_block_with_a_bad_checksum_is_skipped_counted_and_reported() {
        let (opened, _) = damaged(|b| b[100] ^= 0xff);
        let file = opened.unwrap();
        assert_eq!(file.get(&key(0)), None);
        assert!(file.get(&key(2999)).is_some(), "other blocks still read");
        let read = all(&file).len();
        assert!(read > 0 && read < 3000, "{read}");
        let skipped = file
            .counters
            .corrupt_blocks
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(skipped, 2, "each read of the block counted");
        let problems = file.check(|_, _| Ok(())).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("checksum mismatch"), "{problems:?}");
    }
}
