//! Files holding the head's complete blocks, outside the heap.
//!
//! Once a series' head has 64 samples past its last block, they are
//! encoded as a block ([`crate::codec::HeadChunk`]) and appended here; the
//! head keeps only where each block is. The WAL holds every sample of the
//! head, so these files are never flushed to disk on purpose (no fsync)
//! and are emptied at open: replay writes them again.
//!
//! Appends go to a buffer written out (`pwrite`) once it holds
//! [`FLUSH_BYTES`]; reads of a block still in the buffer copy it from
//! there, the others read the file. A file that cannot be created or
//! written keeps its blocks in the buffer: the head then holds them in
//! memory as before, it loses none.
//!
//! A chunk writes every block to the file it wrote its first one to, and
//! holds that file; a file is deleted once the head file set has moved on
//! to a newer one ([`ROTATE_BYTES`]) and no chunk holds it any more (the
//! windows that wrote to it are sealed).

use crate::TsdbError;
use parking_lot::Mutex;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory of the head's files, beside the WAL's (`<store>/head/`).
pub(crate) const HEAD_DIR: &str = "head";

/// Bytes appended to a file before they are written out.
const FLUSH_BYTES: usize = 64 * 1024;

/// Size after which new chunks go to a new file, so that files whose
/// windows are sealed can be deleted.
const ROTATE_BYTES: u64 = 16 << 20;

/// The head's block files of one opening of the store.
#[derive(Debug)]
pub(crate) struct HeadFiles {
    /// `None`: blocks stay in memory (tests, or a directory that cannot be made).
    dir: Option<PathBuf>,
    /// Distinguishes these files from those of an earlier opening still held.
    prefix: u64,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    file: Option<Arc<HeadFile>>,
    next: u64,
}

impl HeadFiles {
    /// The head's files under `dir`, which is emptied first: what an
    /// earlier run left there is in the WAL as well, and replay writes it
    /// again. `prefix` (the store's opening number) names the files, so
    /// that an earlier opening's files, still held by its readers, are
    /// never mistaken for these.
    pub(crate) fn open(dir: &Path, prefix: u64) -> Result<Self, TsdbError> {
        std::fs::create_dir_all(dir).map_err(|e| TsdbError::io("create", dir, e))?;
        let entries = std::fs::read_dir(dir).map_err(|e| TsdbError::io("list", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TsdbError::io("list", dir, e))?.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TsdbError::io("remove", &path, e)),
            }
        }
        Ok(HeadFiles {
            dir: Some(dir.to_path_buf()),
            prefix,
            current: Mutex::new(Current {
                file: None,
                next: 0,
            }),
        })
    }

    /// Head files that keep every block in memory.
    #[cfg(test)]
    pub(crate) fn memory() -> Self {
        HeadFiles {
            dir: None,
            prefix: 0,
            current: Mutex::new(Current {
                file: None,
                next: 0,
            }),
        }
    }

    /// The file a chunk's first block goes to (and all its later ones).
    pub(crate) fn current(&self) -> Arc<HeadFile> {
        let mut current = self.current.lock();
        if let Some(file) = &current.file
            && file.len() < ROTATE_BYTES
        {
            return file.clone();
        }
        let n = current.next;
        current.next += 1;
        let file = Arc::new(match &self.dir {
            Some(dir) => HeadFile::create(dir.join(format!("{}-{n}", self.prefix))),
            None => HeadFile::memory(),
        });
        current.file = Some(file.clone());
        file
    }
}

/// One file of complete head blocks, appended to by many chunks.
#[derive(Debug)]
pub(crate) struct HeadFile {
    /// With `file`, the path to delete it at; `None`: in memory only.
    disk: Option<(PathBuf, File)>,
    tail: Mutex<Tail>,
}

#[derive(Debug, Default)]
struct Tail {
    /// Bytes written to the file: `[0, written)`.
    written: u64,
    /// The bytes after those, not written yet.
    buffer: Vec<u8>,
    /// Buffer length at which a failed write is tried again.
    retry_at: usize,
}

impl HeadFile {
    fn create(path: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path);
        match file {
            Ok(file) => HeadFile {
                disk: Some((path, file)),
                tail: Mutex::default(),
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot create a head block file; the head keeps its blocks in memory");
                HeadFile::memory()
            }
        }
    }

    fn memory() -> Self {
        HeadFile {
            disk: None,
            tail: Mutex::default(),
        }
    }

    /// Bytes appended so far.
    pub(crate) fn len(&self) -> u64 {
        let tail = self.tail.lock();
        tail.written + tail.buffer.len() as u64
    }

    /// Appends `bytes`; returns their offset. Never fails: bytes that
    /// cannot be written stay in memory, and are tried again later.
    pub(crate) fn append(&self, bytes: &[u8]) -> u64 {
        let mut tail = self.tail.lock();
        let offset = tail.written + tail.buffer.len() as u64;
        tail.buffer.extend_from_slice(bytes);
        if let Some((path, file)) = &self.disk
            && tail.buffer.len() >= FLUSH_BYTES.max(tail.retry_at)
        {
            match file.write_all_at(&tail.buffer, tail.written) {
                Ok(()) => {
                    tail.written += tail.buffer.len() as u64;
                    tail.buffer.clear();
                    tail.retry_at = 0;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write head blocks; kept in memory");
                    tail.retry_at = tail.buffer.len() + FLUSH_BYTES;
                }
            }
        }
        offset
    }

    /// Reads `len` bytes at `offset` (appended earlier) into `out`, replacing its contents.
    pub(crate) fn read(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<(), TsdbError> {
        out.clear();
        let end = offset + len as u64;
        {
            let tail = self.tail.lock();
            if end > tail.written + tail.buffer.len() as u64 {
                return Err(TsdbError::Failed(format!(
                    "head block at {offset} (+{len}) past the end of its file"
                )));
            }
            if offset >= tail.written {
                let from = (offset - tail.written) as usize;
                out.extend_from_slice(&tail.buffer[from..from + len]);
                return Ok(());
            }
        }
        // Written bytes never change: read without the lock.
        let Some((path, file)) = &self.disk else {
            return Err(TsdbError::Failed("head block in memory not found".into()));
        };
        out.resize(len, 0);
        file.read_exact_at(out, offset)
            .map_err(|e| TsdbError::io("read head blocks from", path, e))
    }

    /// Bytes held in memory (not written to the file).
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.tail.lock().buffer.capacity()
    }
}

impl Drop for HeadFile {
    fn drop(&mut self) {
        if let Some((path, _)) = &self.disk
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a head block file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_from_buffer_and_file_and_files_go_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let heads = dir.path().join("head");
        std::fs::create_dir_all(&heads).unwrap();
        std::fs::write(heads.join("left-by-a-crash"), b"x").unwrap();
        let files = HeadFiles::open(&heads, 7).unwrap();
        assert_eq!(std::fs::read_dir(&heads).unwrap().count(), 0);
        let file = files.current();
        let blocks: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| (0..(i % 97) as u8).map(|b| b ^ i as u8).collect())
            .collect();
        let offsets: Vec<u64> = blocks.iter().map(|b| file.append(b)).collect();
        // Some were written out, the newest are still buffered.
        assert!(std::fs::metadata(heads.join("7-0")).unwrap().len() > 0);
        assert!(file.buffered_bytes() > 0);
        let mut out = Vec::new();
        for (block, offset) in blocks.iter().zip(&offsets) {
            file.read(*offset, block.len(), &mut out).unwrap();
            assert_eq!(&out, block);
        }
        let past = file.len();
        let err = file.read(past, 1, &mut out).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        drop(file);
        // The current file stays until the set moves on and nobody holds it.
        assert!(heads.join("7-0").exists());
        drop(files);
        assert_eq!(std::fs::read_dir(&heads).unwrap().count(), 0);
    }

    #[test]
    fn new_chunks_go_to_a_new_file_past_the_rotation_size() {
        let dir = tempfile::tempdir().unwrap();
        let files = HeadFiles::open(dir.path(), 1).unwrap();
        let first = files.current();
        let block = vec![1u8; 1 << 20];
        for _ in 0..16 {
            first.append(&block);
        }
        let second = files.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(dir.path().join("1-0").exists());
        drop(first);
        assert!(!dir.path().join("1-0").exists());
        assert!(Arc::ptr_eq(&second, &files.current()));
    }

    /// Through the store: the open hour's blocks are read back from the
    /// head's file, the file goes with the store, and a reopened store
    /// rebuilds it from the WAL.
    #[test]
    fn a_store_reads_its_head_blocks_from_files_it_rebuilds_at_open() {
        use crate::{Batch, Label, Options, Point, SeriesInput, Store};
        const HOUR: i64 = 3_600_000;
        let dir = tempfile::tempdir().unwrap();
        let options = || Options {
            maintenance_interval: None,
            clock: Arc::new(|| 10 * HOUR),
            ..Options::default()
        };
        let series: Vec<SeriesInput> = (0..300)
            .map(|s| SeriesInput {
                metric: "m".to_owned(),
                labels: vec![Label::new("n", s.to_string())],
                points: (0..360)
                    .map(|i| Point {
                        t_ms: 9 * HOUR + i * 10_000,
                        value: (i * 7919 % 1000) as f64 / 7.0 + f64::from(s),
                    })
                    .collect(),
            })
            .collect();
        let batch = Batch {
            host: "a".to_owned(),
            source: 1,
            seq: 1,
            series: series.clone(),
            processes: vec![],
            malformed: 0,
        };
        let heads = dir.path().join(HEAD_DIR);
        let head_file_bytes = || -> u64 {
            std::fs::read_dir(&heads)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        let check = |store: &Store| {
            let got = store.range("m", &[], 9 * HOUR, 10 * HOUR).unwrap();
            assert_eq!(got.len(), series.len());
            for data in got {
                let n = data.key.label("n").unwrap();
                let want = &series[n.parse::<usize>().unwrap()].points;
                assert_eq!(&data.points, want, "series {n}");
            }
        };
        {
            let store = Store::open(dir.path(), options()).unwrap();
            store.append(&batch).unwrap();
            // Blocks past the first 64 KiB were written out to the file.
            assert!(head_file_bytes() >= FLUSH_BYTES as u64);
            check(&store);
        }
        assert_eq!(head_file_bytes(), 0, "the files go with the store");
        std::fs::write(heads.join("left-by-a-crash"), b"x").unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        assert!(store.stats().unwrap().replayed_samples >= 300 * 360);
        check(&store);
        assert!(!heads.join("left-by-a-crash").exists());
    }

    #[test]
    fn a_file_that_cannot_be_created_keeps_blocks_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let files = HeadFiles::open(&dir.path().join("head"), 1).unwrap();
        std::fs::remove_dir(dir.path().join("head")).unwrap();
        let file = files.current();
        let offsets: Vec<u64> = (0..2000u32)
            .map(|i| file.append(&i.to_le_bytes()))
            .collect();
        let mut out = Vec::new();
        for (i, offset) in offsets.iter().enumerate() {
            file.read(*offset, 4, &mut out).unwrap();
            assert_eq!(out, (i as u32).to_le_bytes());
        }
    }
}
