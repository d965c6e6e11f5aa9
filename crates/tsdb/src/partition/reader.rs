//! What reads a partition see, whichever holds it: its sled database
//! while it is written, or its immutable file once rewritten
//! ([`super::file`]). Keys come back in key order either way.

use super::file::{FileIter, PartFile};
use crate::TsdbError;
use sled::IVec;
use std::ops::Bound;
use std::sync::Arc;

/// A readable partition.
#[derive(Clone)]
pub(crate) enum PartRead {
    Sled(sled::Db),
    File(Arc<PartFile>),
}

/// Entries of a partition in key order, from either end.
pub(crate) enum Entries {
    Sled(sled::Iter),
    File(FileIter),
}

impl PartRead {
    /// The value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<IVec>, TsdbError> {
        match self {
            PartRead::Sled(db) => Ok(db.get(key)?),
            PartRead::File(f) => Ok(f.get(key)),
        }
    }

    /// Entries with keys in `[from, to]`.
    pub(crate) fn range(&self, from: &[u8], to: &[u8]) -> Entries {
        match self {
            PartRead::Sled(db) => Entries::Sled(db.range(from..=to)),
            PartRead::File(f) => {
                Entries::File(f.range(Bound::Included(from.to_vec()), Bound::Included(to.to_vec())))
            }
        }
    }

    /// Entries whose keys start with `prefix`.
    pub(crate) fn scan_prefix(&self, prefix: &[u8]) -> Entries {
        match self {
            PartRead::Sled(db) => Entries::Sled(db.scan_prefix(prefix)),
            PartRead::File(f) => {
                Entries::File(f.range(Bound::Included(prefix.to_vec()), prefix_end(prefix)))
            }
        }
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> Entries {
        match self {
            PartRead::Sled(db) => Entries::Sled(db.iter()),
            PartRead::File(f) => Entries::File(f.range(Bound::Unbounded, Bound::Unbounded)),
        }
    }

    /// Entries it holds (a key walk for sled).
    pub(crate) fn len(&self) -> u64 {
        match self {
            PartRead::Sled(db) => db.len() as u64,
            PartRead::File(f) => f.len(),
        }
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

impl Iterator for Entries {
    type Item = Result<(IVec, IVec), TsdbError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Sled(it) => it.next().map(|e| e.map_err(TsdbError::from)),
            Entries::File(it) => it.next().map(Ok),
        }
    }
}

impl DoubleEndedIterator for Entries {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Sled(it) => it.next_back().map(|e| e.map_err(TsdbError::from)),
            Entries::File(it) => it.next_back().map(Ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same entries through sled and through a file read the same.
    #[test]
    fn sled_and_file_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::commit::open_sled(&dir.path().join("db"), 1 << 20).unwrap();
        for i in 0u32..3000 {
            let mut key = vec![b'C', (i / 1000) as u8, 0xff];
            key.extend_from_slice(&i.to_be_bytes());
            db.insert(key, vec![7; (i % 300) as usize]).unwrap();
        }
        let path = dir.path().join("chunks");
        let entries = db.iter().map(|e| e.map_err(TsdbError::from));
        super::super::file::write(&path, entries, true).unwrap();
        let counters = Arc::new(crate::store::Counters::default());
        let file = PartRead::File(Arc::new(PartFile::open(&path, counters).unwrap()));
        let sled = PartRead::Sled(db);
        let keys = |e: Entries| -> Vec<IVec> { e.map(|e| e.unwrap().0).collect() };
        let rev = |e: Entries| -> Vec<IVec> { e.rev().map(|e| e.unwrap().0).collect() };
        assert_eq!(file.len(), sled.len());
        assert_eq!(keys(file.iter()), keys(sled.iter()));
        for prefix in [
            &b"C"[..],
            b"C\x01",
            b"C\x01\xff",
            b"C\x02\xff\x00\x00\x08",
            b"D",
            b"",
        ] {
            assert_eq!(
                keys(file.scan_prefix(prefix)),
                keys(sled.scan_prefix(prefix))
            );
            assert_eq!(rev(file.scan_prefix(prefix)), rev(sled.scan_prefix(prefix)));
        }
        let (from, to) = (
            &b"C\x00\xff\x00\x00\x01\x00"[..],
            &b"C\x02\xff\x00\x00\x09"[..],
        );
        assert_eq!(keys(file.range(from, to)), keys(sled.range(from, to)));
        assert_eq!(rev(file.range(from, to)), rev(sled.range(from, to)));
        for k in [&b"C\x01\xff\x00\x00\x04\x00"[..], b"C", b"Z"] {
            assert_eq!(file.get(k).unwrap(), sled.get(k).unwrap());
        }
    }
}
