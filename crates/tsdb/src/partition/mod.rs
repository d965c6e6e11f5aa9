//! Time partitions: sealed chunks (raw and 1 h tier) and process snapshot
//! blocks live in one sled database per span of time
//! ([`crate::Options::partition_ms`], a day by default) under
//! `<store>/partitions/<start>/`, so that retention deletes a whole
//! directory instead of rewriting every leaf key by key (sled does not
//! give the space of deleted keys back).
//!
//! A partition's lifecycle ([`Partition`]):
//! - *created* when the first window of its span is sealed: its directory,
//!   its sled database, then its marker file (`partition`: the partition
//!   format and its span), each durable; a directory without the marker
//!   was cut short before anything was written to it and is removed at
//!   open; then registered in the main database (`Mpart` + start), which
//!   is what lets a missing directory be noticed;
//! - *written* while its windows seal (each maintenance pass flushes the
//!   partitions it wrote before the WAL groups they replace go);
//! - *closed* once no maintenance pass has written or read it for
//!   [`crate::Options::partition_idle_close`] (a minute by default): its database is flushed and dropped (sled keeps the
//!   pages it wrote or read resident far beyond its cache), or, once
//!   rewritten, its file's index dropped; reopened when read or written
//!   again;
//! - *rewritten* once no accepted sample is expected in it any more (its
//!   end older than the store's clock by the out-of-order tolerance, the
//!   idle sealing delay and `partition_idle_close`) and nothing was
//!   written to it for `partition_idle_close`: its entries, in key order,
//!   into one immutable file (`chunks`, see `file`), written as
//!   `chunks.tmp`, synced, renamed, the directory synced; then its marker
//!   is replaced (atomically) by one of format 2, which is the commit
//!   point; then its sled database is removed. A late sample whose window
//!   lands in it after all (a series seen again within the retention)
//!   *thaws* it: its entries go back into a fresh sled database, flushed,
//!   the marker back to format 1, the file removed, and it is written and
//!   later rewritten as before;
//! - *deleted* by retention, whole: renamed to `<start>.deleted` (durably),
//!   unregistered, then removed; open removes what a crash left of that.
//!
//! Each step is a method of [`Partition`] (`create`, `db_for_write` and
//! `flush`, `close_if_idle`, `rewrite`, `thaw`, `delete`, and `recover`
//! at open, which finishes what a crash cut short: under a format-1
//! marker a leftover file is removed, under a format-2 one whatever is
//! left of the sled database); [`Partitions`] registers, finds and
//! counts them, and hands `create` and `delete` the registry's step, which
//! they take in its place in the order.
//!
//! Reads go through [`PartRead`], backed by either.
//!
//! A partition whose directory is missing, whose marker does not read or
//! names another format, whose database does not open, or whose file's
//! header, footer or index does not check is *damaged*:
//! queries skip it (counted in `corrupt_blocks`), `verify` reports it,
//! sealing into it fails (the windows stay in the head and the WAL). A
//! block of a file that does not check is skipped by reads and counted
//! the same way, and reported by `verify`.
//!
//! Key layout inside a partition: the main tree's `C` and `P` keys (see
//! `keys`); the 1 h chunk of a day lives in the partition of the day's
//! last window, where the windows it summarizes end.

mod file;
mod reader;

pub(crate) use reader::PartRead;

use crate::TsdbError;
use crate::commit::sync_dir;
use crate::keys;
use crate::options::{DAY_MS, Options, align};
use file::PartFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// The store's on-disk format: the main database's key layout (see
/// `keys`), the WAL frame, the chunk and snapshot encodings and the
/// partition directory. Stored under [`keys::META_FORMAT`]. Format 1 (no
/// format key) kept chunks and snapshot blocks in the main database; it
/// is migrated on open. Format 2 sealed snapshot blocks as rows only; 3
/// seals them in columns and still reads rows, so a format-2 store is
/// migrated by its format record alone.
pub(crate) const STORE_FORMAT: u32 = 3;
/// The format a store without a format key was written in.
const FORMAT_UNVERSIONED: u32 = 1;
/// Partitions with snapshot blocks as rows only.
const FORMAT_ROW_SNAPSHOTS: u32 = 2;
/// The newest format of a partition directory, in its marker file: 1 is
/// a sled database, 2 an immutable file ([`file`]). This build reads both.
pub(crate) const PARTITION_FORMAT: u32 = FORMAT_FILE;
/// A partition held in a sled database.
pub(crate) const FORMAT_SLED: u32 = 1;
/// A partition rewritten into one immutable file.
pub(crate) const FORMAT_FILE: u32 = 2;
/// The marker file of a partition directory.
const MARKER: &str = "partition";
/// A marker being replaced.
const MARKER_TMP: &str = "partition.tmp";
/// A rewritten partition's file.
const FILE: &str = "chunks";
/// A file being written.
const FILE_TMP: &str = "chunks.tmp";
/// Suffix a partition's directory is renamed to before it is removed.
const DELETED: &str = ".deleted";

/// Where a partition's database is.
enum State {
    Closed,
    Open(sled::Db),
    /// Rewritten into its immutable file.
    File(Arc<PartFile>),
    /// Skipped by queries, reported by `verify`: why.
    Damaged(String),
    /// Deleted by retention: a read that found it before is skipped.
    Deleted,
}

/// An entry of the partitions directory, as open finds it.
enum Found {
    /// A partition starting there.
    Partition(i64),
    /// A deletion cut short, now finished: the partition it was (if its
    /// name says), still to unregister.
    Deleted(Option<i64>),
    /// Not a partition, or a creation cut short (now removed).
    Other,
}

/// One time partition: its span, its directory and its database.
pub(crate) struct Partition {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) path: PathBuf,
    cache_bytes: u64,
    state: Mutex<State>,
    /// Written since the last flush.
    dirty: AtomicBool,
    /// When it was last written or read.
    used: Mutex<Instant>,
    /// When it was last written (`None`: not since the store opened).
    written: Mutex<Option<Instant>>,
    /// Where a damaged block of its file is counted.
    counters: Arc<crate::store::Counters>,
}

fn poisoned() -> TsdbError {
    TsdbError::Failed("partition state poisoned by a panic".into())
}

/// The marker file's text for a partition of `[start, end)` in `format`.
pub(crate) fn marker_text(format: u32, start: i64, end: i64) -> String {
    format!("hostwatch-tsdb partition\nformat {format}\nstart {start}\nend {end}\n")
}

/// Checks a marker file's text against the partition's span; returns its
/// format, or an error naming what is wrong.
pub(crate) fn check_marker(text: &str, start: i64, end: i64) -> Result<u32, String> {
    let mut lines = text.lines();
    if lines.next() != Some("hostwatch-tsdb partition") {
        return Err("its marker file is not a partition's".into());
    }
    let field = |line: Option<&str>, name: &str| -> Result<i64, String> {
        line.and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("its marker file has no {name}"))
    };
    let format = field(lines.next(), "format")?;
    let format = match u32::try_from(format) {
        Ok(f @ (FORMAT_SLED | FORMAT_FILE)) => f,
        _ => {
            return Err(format!(
                "it is in partition format {format}; this build reads partition formats {FORMAT_SLED} and {FORMAT_FILE}"
            ));
        }
    };
    let (s, e) = (field(lines.next(), "start")?, field(lines.next(), "end")?);
    if (s, e) != (start, end) {
        return Err(format!(
            "its marker spans [{s}, {e}), the store's options [{start}, {end}) (was partition_ms changed?)"
        ));
    }
    Ok(format)
}

/// Writes `text` to `dir/name`, synced, through a temporary file renamed
/// over it, and syncs `dir`: a crash leaves the old or the new text.
fn replace_file(dir: &Path, name: &str, text: &str) -> Result<(), TsdbError> {
    let tmp = dir.join(MARKER_TMP);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .map_err(|e| TsdbError::io("write", &tmp, e))?;
    let to = dir.join(name);
    std::fs::rename(&tmp, &to).map_err(|e| TsdbError::io("rename", &tmp, e))?;
    sync_dir(dir)
}

/// Removes the entries of `dir` not named in `keep`.
fn remove_all_but(dir: &Path, keep: &[&str]) -> Result<(), TsdbError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TsdbError::io("list", dir, e))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| TsdbError::io("list", dir, e))?;
        if keep.iter().any(|k| entry.file_name() == **k) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.map_err(|e| TsdbError::io("remove", &path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Removes `dir/name` if it exists, and syncs `dir` then.
fn remove_if_present(dir: &Path, name: &str) -> Result<(), TsdbError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TsdbError::io("remove", &path, e)),
    }
}

impl Partition {
    fn new(
        dir: &Path,
        (start, end): (i64, i64),
        cache_bytes: u64,
        state: State,
        counters: Arc<crate::store::Counters>,
    ) -> Self {
        Partition {
            start,
            end,
            path: dir.join(start.to_string()),
            cache_bytes,
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
            used: Mutex::new(Instant::now()),
            written: Mutex::new(None),
            counters,
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, TsdbError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Creates the partition of `[start, end)` under `dir`, open for
    /// writes: its directory and database, then its marker file, each
    /// durable, then `register` (its registration in the main tree). A
    /// crash before the marker leaves a directory that open removes; one
    /// before the registration, a valid partition that open registers.
    fn create(
        dir: &Path,
        (start, end): (i64, i64),
        cache_bytes: u64,
        counters: Arc<crate::store::Counters>,
        register: impl FnOnce() -> Result<(), TsdbError>,
    ) -> Result<(Self, sled::Db), TsdbError> {
        let partition = Partition::new(dir, (start, end), cache_bytes, State::Closed, counters);
        let path = &partition.path;
        std::fs::create_dir_all(path).map_err(|e| TsdbError::io("create", path, e))?;
        let db = crate::commit::open_sled(path, cache_bytes)?;
        db.flush()?;
        // Through a renamed temporary file: a kill while the marker is
        // written must leave no marker (a creation cut short), never an
        // empty one (a damaged partition).
        replace_file(path, MARKER, &marker_text(FORMAT_SLED, start, end))?;
        sync_dir(dir)?;
        register()?;
        *partition.state()? = State::Open(db.clone());
        partition.dirty.store(true, Ordering::Release);
        *partition.written.lock().map_err(|_| poisoned())? = Some(Instant::now());
        Ok((partition, db))
    }

    /// What `path`, an entry of the partitions directory, is, once what a
    /// crash left of a creation or a deletion there is removed.
    fn recover(path: &Path) -> Result<Found, TsdbError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(start) = name.strip_suffix(DELETED) {
            // A deletion cut short: finish it.
            std::fs::remove_dir_all(path).map_err(|e| TsdbError::io("remove", path, e))?;
            return Ok(Found::Deleted(start.parse().ok()));
        }
        let Ok(start) = name.parse::<i64>() else {
            tracing::warn!(path = %path.display(), "ignoring a file that is not a partition");
            return Ok(Found::Other);
        };
        if !path.join(MARKER).is_file() {
            tracing::info!(path = %path.display(), "removing a partition cut short while being created");
            std::fs::remove_dir_all(path).map_err(|e| TsdbError::io("remove", path, e))?;
            return Ok(Found::Other);
        }
        // A rewrite or a thaw cut short: the marker says which side holds
        // the partition (it is replaced only once that side is whole);
        // what is left of the other goes. A marker that does not read
        // leaves everything as it is, for `verify` to report.
        remove_if_present(path, MARKER_TMP)?;
        let format = std::fs::read_to_string(path.join(MARKER))
            .ok()
            .and_then(|text| {
                let mut lines = text.lines().skip(1);
                lines.next()?.strip_prefix("format ")?.parse::<u32>().ok()
            });
        match format {
            Some(FORMAT_SLED) => {
                for leftover in [FILE_TMP, FILE] {
                    remove_if_present(path, leftover)?;
                }
            }
            Some(FORMAT_FILE) => remove_all_but(path, &[MARKER, FILE])?,
            _ => {}
        }
        Ok(Found::Partition(start))
    }

    /// Deletes the partition, whole, once nothing can find it any more
    /// (the caller took it out of the map): marked deleted (a read that
    /// found it before skips it), its directory renamed to
    /// `<start>.deleted` durably, then `unregister`, then the directory
    /// removed. A crash after the rename leaves a directory that open
    /// removes, unregistering it. Returns the chunks and snapshot blocks
    /// it held (0 when it was damaged).
    fn delete(
        self: Arc<Self>,
        dir: &Path,
        unregister: impl FnOnce() -> Result<(), TsdbError>,
    ) -> Result<u64, TsdbError> {
        // Counted for the report and the stats: a key walk, once a partition.
        let held = match self.read()? {
            Some(r) => r.len(),
            None => 0,
        };
        let path = self.path.clone();
        // Readers holding its database keep it until they let go; on Unix
        // that does not keep the directory from going.
        *self.state()? = State::Deleted;
        drop(self);
        let mut gone = path.clone().into_os_string();
        gone.push(DELETED);
        let gone = PathBuf::from(gone);
        if path.exists() {
            std::fs::rename(&path, &gone).map_err(|e| TsdbError::io("rename", &path, e))?;
            sync_dir(dir)?;
        }
        unregister()?;
        if gone.exists() {
            std::fs::remove_dir_all(&gone).map_err(|e| TsdbError::io("remove", &gone, e))?;
        }
        Ok(held)
    }

    fn touch(&self) {
        if let Ok(mut used) = self.used.lock() {
            *used = Instant::now();
        }
    }

    /// Why the partition is damaged, if it is.
    pub(crate) fn damage(&self) -> Result<Option<String>, TsdbError> {
        Ok(match &*self.state()? {
            State::Damaged(why) => Some(why.clone()),
            _ => None,
        })
    }

    /// What reads it, opened if closed; `Ok(None)` when it is damaged (the
    /// caller skips it) or deleted. One that does not open marks it damaged.
    pub(crate) fn read(&self) -> Result<Option<PartRead>, TsdbError> {
        self.touch();
        let mut state = self.state()?;
        match &*state {
            State::Open(db) => return Ok(Some(PartRead::Sled(db.clone()))),
            State::File(f) => return Ok(Some(PartRead::File(f.clone()))),
            State::Damaged(_) | State::Deleted => return Ok(None),
            State::Closed => {}
        }
        let checked = std::fs::read_to_string(self.path.join(MARKER))
            .map_err(|e| format!("its marker file does not read: {e}"))
            .and_then(|text| check_marker(&text, self.start, self.end));
        let opened = checked.and_then(|format| match format {
            FORMAT_FILE => {
                let path = self.path.join(FILE);
                PartFile::open(&path, self.counters.clone())
                    .map(|f| State::File(Arc::new(f)))
                    .map_err(|why| format!("its file {} {why}", path.display()))
            }
            _ => crate::commit::open_sled(&self.path, self.cache_bytes)
                .map(State::Open)
                .map_err(|e| format!("its database does not open: {e}")),
        });
        match opened {
            Ok(opened) => {
                *state = opened;
                Ok(match &*state {
                    State::Open(db) => Some(PartRead::Sled(db.clone())),
                    State::File(f) => Some(PartRead::File(f.clone())),
                    _ => None,
                })
            }
            Err(why) => {
                tracing::error!(path = %self.path.display(), error = %why, "damaged partition: skipped by queries");
                *state = State::Damaged(why);
                Ok(None)
            }
        }
    }

    /// Its database for a write: a damaged partition is an error; a
    /// rewritten one is thawed first.
    fn db_for_write(&self) -> Result<sled::Db, TsdbError> {
        self.dirty.store(true, Ordering::Release);
        *self.written.lock().map_err(|_| poisoned())? = Some(Instant::now());
        match self.read()? {
            Some(PartRead::Sled(db)) => Ok(db),
            Some(PartRead::File(file)) => self.thaw(&file),
            None => Err(TsdbError::Corrupt(format!(
                "cannot seal into partition {}: {}",
                self.path.display(),
                self.damage()?.unwrap_or_default()
            ))),
        }
    }

    /// Brings a rewritten partition back into a sled database, for a
    /// write: its entries copied into a fresh database, flushed; the
    /// marker back to format 1 (the commit point); the file removed.
    /// Reads wait meanwhile (a late sample this old is rare).
    fn thaw(&self, file: &Arc<PartFile>) -> Result<sled::Db, TsdbError> {
        let mut state = self.state()?;
        tracing::info!(path = %self.path.display(), "a late write thaws a rewritten partition");
        remove_all_but(&self.path, &[MARKER, FILE])?;
        let db = crate::commit::open_sled(&self.path, self.cache_bytes)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let problems = file.check(|key, value| {
            batch.insert(key, value);
            n += 1;
            if n % 4096 == 0 {
                db.apply_batch(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        if let Some(problem) = problems.first() {
            // Written back without its damaged blocks, they would be lost
            // for good: the window stays in the head and the WAL instead.
            drop(db);
            remove_all_but(&self.path, &[MARKER, FILE])?;
            return Err(TsdbError::Corrupt(format!(
                "cannot seal into partition {}: its file {} {problem}",
                self.path.display(),
                file.path().display()
            )));
        }
        db.apply_batch(batch)?;
        db.flush()?;
        replace_file(
            &self.path,
            MARKER,
            &marker_text(FORMAT_SLED, self.start, self.end),
        )?;
        remove_if_present(&self.path, FILE)?;
        *state = State::Open(db.clone());
        Ok(db)
    }

    /// Whether it may be rewritten now: held in sled, not damaged, and
    /// not written for `idle` (nor since the store opened).
    fn rewritable(&self, idle: Duration) -> Result<bool, TsdbError> {
        let quiet = self
            .written
            .lock()
            .map_err(|_| poisoned())?
            .is_none_or(|w| w.elapsed() >= idle);
        if !quiet || self.dirty.load(Ordering::Acquire) {
            return Ok(false);
        }
        Ok(match &*self.state()? {
            State::Open(_) => true,
            State::Closed => {
                std::fs::read_to_string(self.path.join(MARKER))
                    .ok()
                    .and_then(|t| check_marker(&t, self.start, self.end).ok())
                    == Some(FORMAT_SLED)
            }
            State::File(_) | State::Damaged(_) | State::Deleted => false,
        })
    }

    /// Rewrites the partition into its immutable file (see the module's
    /// lifecycle); the caller makes sure nothing writes to it meanwhile
    /// (writes come from maintenance, which calls this). Reads go on from
    /// the database until the file replaces it. Returns the entries
    /// written.
    fn rewrite(&self, closing: &AtomicBool) -> Result<u64, TsdbError> {
        let Some(PartRead::Sled(db)) = self.read()? else {
            return Ok(0);
        };
        let tmp = self.path.join(FILE_TMP);
        remove_if_present(&self.path, FILE_TMP)?;
        // Stopped once the store is closing: the leftover `chunks.tmp` is
        // removed by the next attempt or at open.
        let entries = db.iter().enumerate().map(|(i, e)| {
            if i % 4096 == 0 && closing.load(Ordering::Acquire) {
                return Err(TsdbError::Failed("the store is closing".into()));
            }
            e.map_err(TsdbError::from)
        });
        let n = file::write(&tmp, entries, true)?;
        let path = self.path.join(FILE);
        std::fs::rename(&tmp, &path).map_err(|e| TsdbError::io("rename", &tmp, e))?;
        sync_dir(&self.path)?;
        let opened = PartFile::open(&path, self.counters.clone())
            .map_err(|why| TsdbError::Corrupt(format!("{} {why}", path.display())))?;
        let mut state = self.state()?;
        replace_file(
            &self.path,
            MARKER,
            &marker_text(FORMAT_FILE, self.start, self.end),
        )?;
        *state = State::File(Arc::new(opened));
        drop(state);
        drop(db);
        remove_all_but(&self.path, &[MARKER, FILE])?;
        Ok(n)
    }

    /// Flushes what was written since the last flush.
    pub(crate) fn flush(&self) -> Result<(), TsdbError> {
        if self.dirty.swap(false, Ordering::AcqRel)
            && let State::Open(db) = &*self.state()?
            && let Err(e) = db.flush()
        {
            self.dirty.store(true, Ordering::Release);
            return Err(e.into());
        }
        Ok(())
    }

    /// Closes the database if it is open, clean and unused for `idle`;
    /// or the file, whose index then leaves memory until the next read.
    fn close_if_idle(&self, idle: Duration) -> Result<(), TsdbError> {
        let unused = self.used.lock().map_err(|_| poisoned())?.elapsed() >= idle;
        if !unused || self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.state()?;
        match &*state {
            State::Open(db) => {
                db.flush()?;
                *state = State::Closed;
            }
            State::File(_) => *state = State::Closed,
            State::Closed | State::Damaged(_) | State::Deleted => {}
        }
        Ok(())
    }

    /// Runs `f` on its directory with its database flushed and closed,
    /// and kept closed (reads and writes of it wait) until `f` returns: a
    /// backup copies its files as they are. A rewritten partition's files
    /// do not change: reads go on. `f` gets whether it is rewritten.
    /// `Ok(Err(why))` when it is damaged or deleted.
    pub(crate) fn with_closed<T>(
        &self,
        f: impl FnOnce(&Path, bool) -> Result<T, TsdbError>,
    ) -> Result<Result<T, String>, TsdbError> {
        let mut state = self.state()?;
        match &*state {
            State::Damaged(why) => return Ok(Err(why.clone())),
            State::Deleted => return Ok(Err("deleted by retention".into())),
            State::File(_) => {
                drop(state);
                return f(&self.path, true).map(Ok);
            }
            State::Open(db) => {
                db.flush()?;
                self.dirty.store(false, Ordering::Release);
                *state = State::Closed;
            }
            State::Closed => {}
        }
        let rewritten = std::fs::read_to_string(self.path.join(MARKER))
            .ok()
            .and_then(|t| check_marker(&t, self.start, self.end).ok())
            == Some(FORMAT_FILE);
        f(&self.path, rewritten).map(Ok)
    }

    /// Bytes of its files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.path)
    }
}

/// Bytes of the files below `path` (0 for what does not read).
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// Every partition of a store, by start.
pub(crate) struct Partitions {
    dir: PathBuf,
    span: i64,
    window: i64,
    cache_bytes: u64,
    /// How long a partition stays open unused.
    idle_close: Duration,
    /// The main tree, where partitions are registered.
    tree: sled::Tree,
    map: RwLock<BTreeMap<i64, Arc<Partition>>>,
    /// Windows starting before this are past the retention: not read,
    /// whether or not their partition is deleted yet.
    floor: AtomicI64,
    /// Where a read skipping a damaged partition is counted.
    counters: Arc<crate::store::Counters>,
}

/// The registry key of the partition starting at `start`.
pub(crate) fn registry_key(start: i64) -> Vec<u8> {
    let mut key = keys::META_PARTITION.to_vec();
    key.extend_from_slice(&keys::order_preserving(start).to_be_bytes());
    key
}

/// The start of a registry key; `None` for a malformed one.
pub(crate) fn parse_registry_key(key: &[u8]) -> Option<i64> {
    key.strip_prefix(keys::META_PARTITION)
        .and_then(|b| b.try_into().ok())
        .map(|b| keys::from_order_preserving(u64::from_be_bytes(b)))
}

impl Partitions {
    /// The partitions under `store/partitions`, registered in `tree`; what
    /// a crash left of a creation or a deletion is cleaned up, a valid
    /// directory not registered is registered, and a registered one whose
    /// directory is missing is kept as damaged.
    pub(crate) fn open(
        store: &Path,
        tree: sled::Tree,
        options: &Options,
        counters: Arc<crate::store::Counters>,
    ) -> Result<Self, TsdbError> {
        let dir = store.join("partitions");
        std::fs::create_dir_all(&dir).map_err(|e| TsdbError::io("create", &dir, e))?;
        let span = options.partition_ms;
        let cache_bytes = (options.cache_bytes / 2).max(1 << 20);
        let mut registered = BTreeMap::new();
        for entry in tree.scan_prefix(keys::META_PARTITION) {
            let (key, _) = entry?;
            match parse_registry_key(&key) {
                Some(start) => {
                    registered.insert(start, ());
                }
                None => tracing::warn!(key = ?key, "ignoring a malformed partition registration"),
            }
        }
        let mut map = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| TsdbError::io("list", &dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TsdbError::io("list", &dir, e))?.path();
            let start = match Partition::recover(&path)? {
                Found::Partition(start) => start,
                Found::Deleted(Some(start)) => {
                    tree.remove(registry_key(start))?;
                    registered.remove(&start);
                    continue;
                }
                Found::Deleted(None) | Found::Other => continue,
            };
            if registered.remove(&start).is_none() {
                tree.insert(registry_key(start), &[][..])?;
            }
            let end = start.saturating_add(span);
            let state = if align(start, span) == start {
                State::Closed
            } else {
                State::Damaged(format!(
                    "its start is not a multiple of partition_ms ({span}) (was it changed?)"
                ))
            };
            let p = Partition::new(&dir, (start, end), cache_bytes, state, counters.clone());
            map.insert(start, Arc::new(p));
        }
        for start in registered.into_keys() {
            let partition = Partition::new(
                &dir,
                (start, start.saturating_add(span)),
                cache_bytes,
                State::Damaged("its directory is missing".into()),
                counters.clone(),
            );
            tracing::error!(path = %partition.path.display(), "a registered partition's directory is missing: skipped by queries");
            map.insert(start, Arc::new(partition));
        }
        tree.flush()?;
        let now = (options.clock)();
        let floor = options.window_of(now.saturating_sub(options.retention_ms));
        Ok(Partitions {
            dir,
            span,
            window: options.chunk_window_ms,
            cache_bytes,
            idle_close: options.partition_idle_close,
            tree,
            map: RwLock::new(map),
            floor: AtomicI64::new(floor),
            counters,
        })
    }

    fn map(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<i64, Arc<Partition>>>, TsdbError> {
        self.map.read().map_err(|_| poisoned())
    }

    /// The start of the partition holding window `start`.
    pub(crate) fn of(&self, t: i64) -> i64 {
        align(t, self.span)
    }

    /// The partition holding the 1 h chunk of `day`: that of its last window.
    pub(crate) fn of_day(&self, day: i64) -> i64 {
        self.of(day.saturating_add(DAY_MS).saturating_sub(self.window))
    }

    /// Windows before this are past the retention and not read.
    pub(crate) fn floor(&self) -> i64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Raises the floor to `to`.
    pub(crate) fn raise_floor(&self, to: i64) {
        self.floor.fetch_max(to, Ordering::AcqRel);
    }

    /// The partition starting at `start`, if it exists and is not damaged.
    pub(crate) fn get(&self, start: i64) -> Result<Option<PartRead>, TsdbError> {
        let partition = self.map()?.get(&start).cloned();
        match partition {
            Some(p) => self.readable(&p),
            None => Ok(None),
        }
    }

    /// The value of `key` in the partition holding time `t`.
    pub(crate) fn value(&self, t: i64, key: &[u8]) -> Result<Option<sled::IVec>, TsdbError> {
        match self.get(self.of(t))? {
            Some(r) => r.get(key),
            None => Ok(None),
        }
    }

    /// The readable partitions overlapping `[from, to]` (times), oldest
    /// first.
    pub(crate) fn within(&self, from: i64, to: i64) -> Result<Vec<PartRead>, TsdbError> {
        if from > to {
            return Ok(Vec::new());
        }
        let parts: Vec<Arc<Partition>> = self
            .map()?
            .range(self.of(from)..=self.of(to))
            .map(|(_, p)| p.clone())
            .collect();
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            if let Some(r) = self.readable(&p)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The partition for a read; a damaged one is skipped and counted,
    /// one deleted meanwhile skipped.
    fn readable(&self, p: &Partition) -> Result<Option<PartRead>, TsdbError> {
        let r = p.read()?;
        if r.is_none() && p.damage()?.is_some() {
            crate::store::bump(&self.counters.corrupt_blocks, 1);
        }
        Ok(r)
    }

    /// Every partition, oldest first.
    pub(crate) fn all(&self) -> Result<Vec<Arc<Partition>>, TsdbError> {
        Ok(self.map()?.values().cloned().collect())
    }

    /// The partition starting at `start` for a write, created if missing.
    pub(crate) fn for_write(&self, start: i64) -> Result<sled::Db, TsdbError> {
        if let Some(p) = self.map()?.get(&start).cloned() {
            return p.db_for_write();
        }
        let mut map = self.map.write().map_err(|_| poisoned())?;
        if let Some(p) = map.get(&start).cloned() {
            drop(map);
            return p.db_for_write();
        }
        let end = start.saturating_add(self.span);
        let register = || {
            self.tree.insert(registry_key(start), &[][..])?;
            Ok(self.tree.flush().map(drop)?)
        };
        let counters = self.counters.clone();
        let (partition, db) = Partition::create(
            &self.dir,
            (start, end),
            self.cache_bytes,
            counters,
            register,
        )?;
        map.insert(start, Arc::new(partition));
        Ok(db)
    }

    /// Flushes every partition written since its last flush.
    pub(crate) fn flush(&self) -> Result<(), TsdbError> {
        for p in self.all()? {
            p.flush()?;
        }
        Ok(())
    }

    /// Closes the partitions unused for `partition_idle_close`.
    pub(crate) fn close_idle(&self) -> Result<(), TsdbError> {
        for p in self.all()? {
            p.close_if_idle(self.idle_close)?;
        }
        Ok(())
    }

    /// Rewrites into their immutable files the partitions that no sample
    /// is expected in any more: those ending at or before `before` (and
    /// after the retention's floor), not written for
    /// `partition_idle_close`; at most one unless `all`, so that a pass
    /// after an upgrade does not hold maintenance for every partition.
    /// Returns the partitions rewritten.
    pub(crate) fn rewrite_closed(
        &self,
        before: i64,
        all: bool,
        closing: &AtomicBool,
    ) -> Result<u64, TsdbError> {
        let floor = self.floor();
        let mut done = 0;
        for p in self.all()? {
            if p.end > before || p.end <= floor || !p.rewritable(self.idle_close)? {
                continue;
            }
            let started = Instant::now();
            let entries = p.rewrite(closing)?;
            tracing::info!(
                path = %p.path.display(),
                entries,
                bytes = p.disk_bytes(),
                ms = started.elapsed().as_millis() as u64,
                "rewrote a closed partition into its immutable file"
            );
            done += 1;
            if !all {
                break;
            }
        }
        Ok(done)
    }

    /// Deletes the partition starting at `start`: renamed durably, then
    /// unregistered, then removed. Returns the chunks and snapshot blocks
    /// it held (0 when it was damaged).
    pub(crate) fn delete(&self, start: i64) -> Result<u64, TsdbError> {
        let Some(partition) = self.map.write().map_err(|_| poisoned())?.remove(&start) else {
            return Ok(0);
        };
        partition.delete(&self.dir, || {
            self.tree.remove(registry_key(start))?;
            Ok(self.tree.flush().map(drop)?)
        })
    }

    /// Bytes of every partition's files.
    pub(crate) fn disk_bytes(&self) -> Result<u64, TsdbError> {
        Ok(self.all()?.iter().map(|p| p.disk_bytes()).sum())
    }

    /// Bytes of the whole store's files: the directory holding `partitions`.
    pub(crate) fn store_bytes(&self) -> u64 {
        self.dir.parent().map_or(0, dir_bytes)
    }
}

/// (key, value) entries, owned: for the fuzz targets.
pub(crate) type OwnedEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes `entries` (sorted) as a partition file at `path`: for the fuzz
/// targets.
pub(crate) fn fuzz_write_file(path: &Path, entries: &OwnedEntries) -> Result<u64, TsdbError> {
    let entries = entries
        .iter()
        .map(|(k, v)| Ok((sled::IVec::from(&k[..]), sled::IVec::from(&v[..]))));
    file::write(path, entries, false)
}

/// Opens the partition file at `path` and reads it every way a store
/// does: every entry from both ends (which must agree), each key looked
/// up, every block checked; returns the entries, or why it does not
/// open. For the fuzz targets.
pub(crate) fn fuzz_read_file(path: &Path) -> Result<OwnedEntries, String> {
    let counters = Arc::new(crate::store::Counters::default());
    let file = Arc::new(PartFile::open(path, counters)?);
    let read = PartRead::File(file.clone());
    let forward: Vec<(Vec<u8>, Vec<u8>)> = read
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let mut backward: Vec<(Vec<u8>, Vec<u8>)> = read
        .iter()
        .rev()
        .flatten()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    backward.reverse();
    assert_eq!(forward, backward, "a file reads alike from both ends");
    for (k, v) in &forward {
        assert_eq!(read.get(k).ok().flatten().as_deref(), Some(&v[..]));
    }
    let problems = file.check(|_, _| Ok(())).map_err(|e| e.to_string())?;
    if let Some(p) = problems.first() {
        return Err(p.clone());
    }
    Ok(forward)
}

/// Whether the rewritten partition directories `a` and `b` hold the same
/// files: the same marker, and files of the same size with the same
/// footer (which holds a CRC of every block's CRC and of the index). A
/// backup keeps its earlier copy of a rewritten partition then, without
/// reading it whole.
pub(crate) fn same_rewritten(a: &Path, b: &Path) -> bool {
    let marker = |d: &Path| std::fs::read(d.join(MARKER)).ok();
    let size = |d: &Path| std::fs::metadata(d.join(FILE)).ok().map(|m| m.len());
    let footer = |d: &Path| PartFile::footer_of(&d.join(FILE));
    marker(a).is_some()
        && marker(a) == marker(b)
        && size(a).is_some()
        && size(a) == size(b)
        && footer(a).is_some()
        && footer(a) == footer(b)
}

/// Reads the store's format from `tree`, migrating a format-1 store
/// (chunks and snapshot blocks in the main database) into partitions; a
/// format this build does not know is refused, naming both.
pub(crate) fn check_format(
    store: &Path,
    tree: &sled::Tree,
    partitions: &Partitions,
) -> Result<(), TsdbError> {
    let format = match tree.get(keys::META_FORMAT)? {
        Some(v) => match <[u8; 4]>::try_from(&v[..]) {
            Ok(b) => u32::from_be_bytes(b),
            Err(_) => {
                return Err(TsdbError::Corrupt(format!(
                    "the store in {} has a malformed format record ({} bytes)",
                    store.display(),
                    v.len()
                )));
            }
        },
        None => FORMAT_UNVERSIONED,
    };
    match format {
        STORE_FORMAT => return Ok(()),
        FORMAT_UNVERSIONED => migrate_unversioned(tree, partitions)?,
        FORMAT_ROW_SNAPSHOTS => {
            tree.insert(keys::META_FORMAT, &STORE_FORMAT.to_be_bytes()[..])?;
            tree.flush()?;
        }
        _ => {
            return Err(TsdbError::Failed(format!(
                "the store in {} is in format {format}; this build reads format {STORE_FORMAT} and migrates formats {FORMAT_UNVERSIONED} and {FORMAT_ROW_SNAPSHOTS}: refusing to open it",
                store.display()
            )));
        }
    }
    tracing::info!(store = %store.display(), from = format, to = STORE_FORMAT, "store format migrated");
    Ok(())
}

/// Moves a format-1 store's chunks and snapshot blocks into their
/// partitions. Copied first and flushed; then one atomic sled batch
/// removes them from the main tree and writes the format: a crash before
/// it leaves format 1, migrated again (the copies overwritten).
fn migrate_unversioned(tree: &sled::Tree, partitions: &Partitions) -> Result<(), TsdbError> {
    let mut remove = sled::Batch::default();
    let mut writes: BTreeMap<i64, sled::Batch> = BTreeMap::new();
    for prefix in [keys::CHUNK, keys::SNAPSHOTS] {
        for entry in tree.scan_prefix([prefix]) {
            let (key, value) = entry?;
            let home = match (keys::parse_chunk(&key), keys::parse_snapshots(&key)) {
                (Some((keys::TIER_HOUR, _, day)), _) => Some(partitions.of_day(day)),
                (Some((_, _, start)), _) | (None, Some((_, start))) => Some(partitions.of(start)),
                (None, None) => None,
            };
            // A key that does not parse stays where it is, for verify to report.
            if let Some(home) = home {
                writes.entry(home).or_default().insert(key.clone(), value);
                remove.remove(key);
            }
        }
    }
    for (start, batch) in writes {
        partitions.for_write(start)?.apply_batch(batch)?;
    }
    partitions.flush()?;
    remove.insert(keys::META_FORMAT, &STORE_FORMAT.to_be_bytes()[..]);
    tree.apply_batch(remove)?;
    tree.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_what_is_wrong() {
        let ok = marker_text(FORMAT_SLED, 0, DAY_MS);
        assert_eq!(check_marker(&ok, 0, DAY_MS), Ok(FORMAT_SLED));
        let file = marker_text(FORMAT_FILE, 0, DAY_MS);
        assert_eq!(check_marker(&file, 0, DAY_MS), Ok(FORMAT_FILE));
        let other = ok.replace("format 1", "format 9");
        let err = check_marker(&other, 0, DAY_MS).unwrap_err();
        assert!(
            err.contains("format 9") && err.contains("formats 1 and 2"),
            "{err}"
        );
        let err = check_marker(&ok, 0, 2 * DAY_MS).unwrap_err();
        assert!(err.contains("partition_ms"), "{err}");
        assert!(check_marker("junk", 0, DAY_MS).is_err());
        assert!(check_marker("hostwatch-tsdb partition\nformat x\n", 0, DAY_MS).is_err());
    }

    /// A rewrite stops once the store is closing, leaving the partition
    /// in sled; the next pass rewrites it whole.
    #[test]
    fn a_rewrite_stops_when_the_store_closes_and_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::commit::open_sled(&dir.path().join("main"), 1 << 20).unwrap();
        let options = Options {
            partition_idle_close: Duration::ZERO,
            clock: Arc::new(|| 10 * DAY_MS),
            ..Options::default()
        };
        let counters = Arc::new(crate::store::Counters::default());
        let tree = db.open_tree("tsdb").unwrap();
        let parts = Partitions::open(dir.path(), tree, &options, counters).unwrap();
        let written = parts.for_write(0).unwrap();
        for i in 0..10_000u32 {
            written.insert(i.to_be_bytes(), &b"value"[..]).unwrap();
        }
        drop(written);
        parts.flush().unwrap();
        let path = dir.path().join("partitions/0");
        let closing = AtomicBool::new(true);
        assert!(parts.rewrite_closed(DAY_MS, true, &closing).is_err());
        assert!(!path.join(FILE).exists());
        let marker = std::fs::read_to_string(path.join(MARKER)).unwrap();
        assert_eq!(check_marker(&marker, 0, DAY_MS), Ok(FORMAT_SLED));
        closing.store(false, Ordering::Release);
        assert_eq!(parts.rewrite_closed(DAY_MS, true, &closing).unwrap(), 1);
        assert!(!path.join(FILE_TMP).exists() && path.join(FILE).exists());
        let read = parts.get(0).unwrap().unwrap();
        assert!(matches!(read, PartRead::File(_)));
        assert_eq!(read.len(), 10_000);
    }
}
