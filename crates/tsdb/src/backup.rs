//! Online backups of a running store, their verification, and restoring
//! a data directory from one (the layout and the manifest are specified in
//! `docs/format/backup.md`).
//!
//! A backup is a directory that mirrors the collector's data directory
//! under `data/`, with a `MANIFEST` beside it:
//! - the point: the highest durable commit group when the backup began
//!   (every batch acknowledged before the call is at or below it);
//! - the main database: its trees copied key by key into a fresh sled
//!   database, without the accept-log entries of later groups and with
//!   forwarding cursors no further than the point;
//! - the WAL: each generation's groups up to the point (and its series
//!   definitions) copied into a fresh sled database, so replay at open
//!   rebuilds the open windows as they were at the point;
//! - the partitions: their files copied as they are, each with its
//!   database closed (flushed) and kept closed while it is copied;
//! - optionally other sled databases of the caller (the collector's own
//!   state), copied tree by tree.
//!
//! Consistency comes from the maintenance lock, held for the whole copy:
//! sealing, WAL deletion and retention wait, so the partitions, the main
//! tree's sealed state and the set of WAL generations do not move, while
//! appends go on (they only add WAL groups above the point, and accept-log
//! entries, both left out). Appends never wait for a backup; a read or a
//! late sample of a partition being copied waits for that partition.
//!
//! The manifest (formats, the point, the partitions, every file with its
//! size and SHA-256) is written last, to a temporary name, synced, and
//! renamed; an `IN-PROGRESS` marker is written first and removed after
//! the manifest, so a backup cut short is refused by [`verify_backup`] and
//! [`restore`]. A backup into a directory holding an older one
//! (`incremental`) keeps each partition whose files are unchanged.

use crate::TsdbError;
use crate::keys;
use crate::partition::{self, PARTITION_FORMAT, STORE_FORMAT};
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "MANIFEST";
/// Present while a backup is being written.
pub const IN_PROGRESS: &str = "IN-PROGRESS";
/// The backup layout and manifest format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
/// The directory under a backup mirroring the data directory.
const DATA: &str = "data";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const HEADER: &str = "hostwatch backup";
/// Entries per sled batch when copying a tree.
const COPY_BATCH: usize = 4096;

/// What to back up besides the store.
#[derive(Default)]
pub struct BackupOptions {
    /// The target may hold an earlier backup: partitions whose files are
    /// unchanged are kept rather than copied again. Without it, a target
    /// holding anything is refused.
    pub incremental: bool,
    /// Other sled databases to copy, tree by tree, each to a directory
    /// relative to the data directory (`""` is the data directory itself):
    /// the collector's own state.
    pub databases: Vec<(String, sled::Db)>,
}

/// A file of a backup, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// A backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The backup format ([`BACKUP_FORMAT`]).
    pub format: u32,
    /// The store format of the copy.
    pub store_format: u32,
    pub partition_format: u32,
    /// When the backup began (ms since the epoch).
    pub created_ms: i64,
    /// The highest commit group in the copy: every batch acknowledged
    /// before the backup began.
    pub group: u64,
    /// The partitions copied, as (start, end) in ms.
    pub partitions: Vec<(i64, i64)>,
    /// Damaged partitions left out, with why.
    pub skipped: Vec<String>,
    pub files: Vec<BackupFile>,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// Bytes of every file of the backup.
    pub bytes_total: u64,
    /// Bytes written by this backup (less than the total when partitions
    /// of an earlier backup were kept).
    pub bytes_written: u64,
    pub partitions_copied: u64,
    pub partitions_kept: u64,
    /// The whole backup.
    pub duration: Duration,
    /// How long the maintenance lock was held: sealing and retention
    /// waited this long (appends did not wait).
    pub maintenance_paused: Duration,
}

fn fail(message: impl Into<String>) -> TsdbError {
    TsdbError::Backup(message.into())
}

fn io(what: &str, path: &Path, e: std::io::Error) -> TsdbError {
    fail(format!("cannot {what} {}: {e}", path.display()))
}

fn sync_dir(path: &Path) -> Result<(), TsdbError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync directory", path, e))
}

/// A skipped partition's reason as one manifest line: control
/// characters (a line break, or a `\r` that reading by lines would drop)
/// become spaces, so a manifest read back and written again is the same.
fn one_line(why: &str) -> String {
    why.replace(|c: char| c.is_control(), " ")
}

impl Manifest {
    /// Bytes of every file listed.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = format!(
            "{HEADER}\nformat {}\nstore_format {}\npartition_format {}\ncreated_ms {}\ngroup {}\n",
            self.format, self.store_format, self.partition_format, self.created_ms, self.group
        );
        for (start, end) in &self.partitions {
            out.push_str(&format!("partition {start} {end}\n"));
        }
        for why in &self.skipped {
            out.push_str(&format!("skipped {}\n", one_line(why)));
        }
        for f in &self.files {
            out.push_str(&format!(
                "file {} {} {}\n",
                crate::verify::hex(&f.sha256),
                f.size,
                f.path
            ));
        }
        out
    }

    /// Parses a manifest; the error names the line and what is wrong. A
    /// newer backup or store format is refused, naming both versions.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(format!("it does not start with {HEADER:?}"));
        }
        let mut manifest = Manifest {
            format: 0,
            store_format: 0,
            partition_format: 0,
            created_ms: 0,
            group: 0,
            partitions: Vec::new(),
            skipped: Vec::new(),
            files: Vec::new(),
        };
        let mut seen = 0u8;
        for (n, line) in lines {
            let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            let (field, rest) = line.split_once(' ').ok_or_else(|| bad("no value"))?;
            // Each number in its own type: read as a wider one and cast,
            // `format 4294967297` passed for format 1 and `group -1` for
            // the highest group.
            fn number<T: std::str::FromStr>(
                rest: &str,
                bit: u8,
                seen: &mut u8,
                bad: impl Fn(&str) -> String,
            ) -> Result<T, String> {
                *seen |= bit;
                rest.parse().map_err(|_| bad("not a number"))
            }
            match field {
                "format" => manifest.format = number(rest, 1, &mut seen, bad)?,
                "store_format" => manifest.store_format = number(rest, 2, &mut seen, bad)?,
                "partition_format" => {
                    manifest.partition_format = number(rest, 4, &mut seen, bad)?;
                }
                "created_ms" => manifest.created_ms = number(rest, 8, &mut seen, bad)?,
                "group" => manifest.group = number(rest, 16, &mut seen, bad)?,
                "partition" => {
                    let (s, e) = rest.split_once(' ').ok_or_else(|| bad("no end"))?;
                    let s = s.parse().map_err(|_| bad("not a start"))?;
                    let e = e.parse().map_err(|_| bad("not an end"))?;
                    manifest.partitions.push((s, e));
                }
                "skipped" => manifest.skipped.push(one_line(rest)),
                "file" => {
                    let mut parts = rest.splitn(3, ' ');
                    let sha = parts
                        .next()
                        .and_then(unhex)
                        .ok_or_else(|| bad("bad checksum"))?;
                    let size = parts
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad size"))?;
                    let path = parts.next().ok_or_else(|| bad("no path"))?;
                    if !safe_relative(path) {
                        return Err(bad("the path leaves the backup"));
                    }
                    manifest.files.push(BackupFile {
                        path: path.to_owned(),
                        size,
                        sha256: sha,
                    });
                }
                _ => return Err(bad("unknown field")),
            }
        }
        if seen != 31 {
            return Err(
                "a field is missing (format, store_format, partition_format, created_ms, group)"
                    .into(),
            );
        }
        if manifest.format != BACKUP_FORMAT {
            return Err(format!(
                "it is in backup format {}; this build reads backup format {BACKUP_FORMAT}",
                manifest.format
            ));
        }
        if manifest.store_format > STORE_FORMAT {
            return Err(format!(
                "it holds a store in format {}; this build reads store format {STORE_FORMAT} (and migrates older ones): restore it with a newer hostwatch",
                manifest.store_format
            ));
        }
        // Format 2 added rewritten partitions beside format 1's: a build
        // reads every format up to its own.
        if !(1..=PARTITION_FORMAT).contains(&manifest.partition_format) {
            return Err(format!(
                "it holds partitions in format {}; this build reads partition formats 1 to {PARTITION_FORMAT}",
                manifest.partition_format
            ));
        }
        Ok(manifest)
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A relative path of plain components under `data/`.
fn safe_relative(path: &str) -> bool {
    // No control character: a path ending in `\r` read back without it
    // (lines end in `\n` or `\r\n`), and the store writes none.
    if path.chars().any(char::is_control) {
        return false;
    }
    let mut parts = path.split('/');
    parts.next() == Some(DATA)
        && parts.all(|p| !p.is_empty() && p != "." && p != "..")
        && path.split('/').count() > 1
}

/// The files below `dir`, relative to it (`/`-separated), sorted.
fn list_files(dir: &Path) -> Result<Vec<String>, TsdbError> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), TsdbError> {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(|e| io("list", &dir, e))?;
            if kind.is_dir() {
                walk(root, &rel, out)?;
            } else if kind.is_file() {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// Copies `from` to `to` (created, synced), returning its size and
/// SHA-256 as read; or, without `to`, only reads and hashes it.
fn copy_hashed(from: &Path, to: Option<&Path>) -> Result<(u64, [u8; 32]), TsdbError> {
    let mut input = std::fs::File::open(from).map_err(|e| io("read", from, e))?;
    let mut output = match to {
        Some(to) => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            Some(std::fs::File::create(to).map_err(|e| io("create", to, e))?)
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| io("read", from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if let (Some(out), Some(to)) = (output.as_mut(), to) {
            out.write_all(&buf[..n]).map_err(|e| io("write", to, e))?;
        }
    }
    if let (Some(out), Some(to)) = (output, to) {
        out.sync_all().map_err(|e| io("sync", to, e))?;
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(&hasher.finalize());
    Ok((size, sha))
}

/// A fresh sled database for a copy: no flusher thread, so once flushed
/// and dropped, nothing writes its files any more.
fn fresh_sled(path: &Path) -> Result<sled::Db, TsdbError> {
    std::fs::create_dir_all(path).map_err(|e| io("create", path, e))?;
    Ok(sled::Config::new()
        .path(path)
        .cache_capacity(8 << 20)
        .flush_every_ms(None)
        .open()?)
}

/// Copies `entries` into `to`, in batches; a `None` from `keep` leaves an
/// entry out, otherwise it gives the value to write.
fn copy_entries(
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    to: &sled::Tree,
    mut keep: impl FnMut(&[u8], sled::IVec) -> Option<sled::IVec>,
) -> Result<(), TsdbError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for entry in entries {
        let (key, value) = entry?;
        if let Some(value) = keep(&key, value) {
            batch.insert(key, value);
            n += 1;
        }
        if n == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// The backup directory being written.
struct Target {
    dir: PathBuf,
    previous: Option<Manifest>,
    files: Vec<BackupFile>,
    written: u64,
}

impl Target {
    /// Checks the target and marks it in progress: missing or empty, or
    /// (with `incremental`) holding a backup, whose copies but those of
    /// partitions are then removed.
    fn prepare(dir: &Path, incremental: bool) -> Result<Self, TsdbError> {
        if !dir.is_absolute() {
            return Err(TsdbError::Invalid(format!(
                "the backup directory must be an absolute path on the collector's host, not {}",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create the backup directory", dir, e))?;
        let names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| io("list", dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let is_backup = names.iter().any(|n| n == MANIFEST || n == IN_PROGRESS);
        let previous = if names.is_empty() {
            None
        } else if !is_backup {
            return Err(TsdbError::Invalid(format!(
                "{} is not empty and does not hold a hostwatch backup: choose an empty or new directory",
                dir.display()
            )));
        } else if !incremental {
            return Err(TsdbError::Invalid(format!(
                "{} already holds a backup: pass incremental to bring it up to date, or choose an empty directory",
                dir.display()
            )));
        } else {
            // An earlier backup cut short keeps its partitions' files but no
            // manifest: they are copied again.
            match std::fs::read_to_string(dir.join(MANIFEST)) {
                Ok(text) => Some(Manifest::parse(&text).map_err(|why| {
                    TsdbError::Invalid(format!(
                        "{} holds a backup this build cannot update: {why}",
                        dir.display()
                    ))
                })?),
                Err(_) => None,
            }
        };
        let marker = dir.join(IN_PROGRESS);
        std::fs::write(&marker, format!("started {}\n", hostwatch_stdx::now_ms()))
            .and_then(|()| std::fs::File::open(&marker)?.sync_all())
            .map_err(|e| io("write", &marker, e))?;
        sync_dir(dir)?;
        for name in [MANIFEST, MANIFEST_TMP] {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
            }
        }
        sync_dir(dir)?;
        // Everything but the partitions is written afresh.
        let data = dir.join(DATA);
        if data.exists() {
            for entry in std::fs::read_dir(&data).map_err(|e| io("list", &data, e))? {
                let path = entry.map_err(|e| io("list", &data, e))?.path();
                if path.file_name().is_some_and(|n| n == "store") {
                    for entry in std::fs::read_dir(&path).map_err(|e| io("list", &path, e))? {
                        let inner = entry.map_err(|e| io("list", &path, e))?.path();
                        if inner.file_name().is_none_or(|n| n != "partitions") {
                            remove_path(&inner)?;
                        }
                    }
                } else {
                    remove_path(&path)?;
                }
            }
        }
        Ok(Target {
            dir: dir.to_owned(),
            previous,
            files: Vec::new(),
            written: 0,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Lists every file below `rel` (written by this backup) in the
    /// manifest, but those under its subdirectories named in `skip`.
    fn record(&mut self, rel: &str, skip: &[&str]) -> Result<(), TsdbError> {
        let root = self.path(rel);
        for file in list_files(&root)? {
            if skip
                .iter()
                .any(|s| file.strip_prefix(s).is_some_and(|r| r.starts_with('/')))
            {
                continue;
            }
            let (size, sha256) = copy_hashed(&root.join(&file), None)?;
            self.written += size;
            self.files.push(BackupFile {
                path: format!("{rel}/{file}"),
                size,
                sha256,
            });
        }
        sync_tree(&root)
    }

    /// Copies a sled database tree by tree to `rel` (the caller filters
    /// through `keep`, given the tree's name), then records its files.
    fn copy_sled(
        &mut self,
        rel: &str,
        from: &sled::Db,
        mut keep: impl FnMut(&[u8], &[u8], sled::IVec) -> Option<sled::IVec>,
    ) -> Result<(), TsdbError> {
        let path = self.path(rel);
        let to = fresh_sled(&path)?;
        for name in from.tree_names() {
            let source = from.open_tree(&name)?;
            let target = to.open_tree(&name)?;
            copy_entries(source.iter(), &target, |k, v| keep(&name, k, v))?;
        }
        to.flush()?;
        drop(to);
        Ok(())
    }

    /// Copies a partition's files to `rel`, or keeps the earlier backup's
    /// copy when every file matches it. Returns whether it copied. A
    /// `rewritten` partition's files never change: the earlier copy is
    /// kept without reading them when it lists the same files and
    /// [`partition::same_rewritten`] holds.
    fn copy_partition(
        &mut self,
        rel: &str,
        from: &Path,
        rewritten: bool,
    ) -> Result<bool, TsdbError> {
        let files = list_files(from)?;
        let prefix = format!("{rel}/");
        if rewritten && let Some(previous) = &self.previous {
            let before: Vec<&BackupFile> = previous
                .files
                .iter()
                .filter(|f| f.path.starts_with(&prefix))
                .collect();
            let same_names = before.len() == files.len()
                && before
                    .iter()
                    .zip(&files)
                    .all(|(b, name)| b.path.strip_prefix(&prefix) == Some(name.as_str()));
            if same_names && partition::same_rewritten(from, &self.path(rel)) {
                let kept: Vec<BackupFile> = before.into_iter().cloned().collect();
                self.files.extend(kept);
                return Ok(false);
            }
        }
        let mut listed = Vec::with_capacity(files.len());
        for file in &files {
            let (size, sha256) = copy_hashed(&from.join(file), None)?;
            listed.push(BackupFile {
                path: format!("{rel}/{file}"),
                size,
                sha256,
            });
        }
        let kept = self.previous.as_ref().is_some_and(|previous| {
            let before: Vec<&BackupFile> = previous
                .files
                .iter()
                .filter(|f| f.path.starts_with(&prefix))
                .collect();
            before.len() == listed.len()
                && before.iter().zip(&listed).all(|(a, b)| *a == b)
                && listed
                    .iter()
                    .all(|f| std::fs::metadata(self.path(&f.path)).is_ok_and(|m| m.len() == f.size))
        });
        if kept {
            self.files.extend(listed);
            return Ok(false);
        }
        let to = self.path(rel);
        if to.exists() {
            remove_path(&to)?;
        }
        let mut copied = Vec::with_capacity(files.len());
        for file in &files {
            let (size, sha256) = copy_hashed(&from.join(file), Some(&to.join(file)))?;
            self.written += size;
            copied.push(BackupFile {
                path: format!("{rel}/{file}"),
                size,
                sha256,
            });
        }
        if copied != listed {
            return Err(fail(format!(
                "partition {} changed while it was copied",
                from.display()
            )));
        }
        sync_tree(&to)?;
        self.files.extend(copied);
        Ok(true)
    }

    /// Writes a file of this backup's own (a WAL generation's `ready`).
    fn write_file(&mut self, rel: &str, contents: &[u8]) -> Result<(), TsdbError> {
        let path = self.path(rel);
        std::fs::write(&path, contents)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| io("write", &path, e))?;
        Ok(())
    }

    /// Removes the partitions the manifest does not list, then writes the
    /// manifest (synced, renamed into place) and removes the marker.
    fn finish(mut self, mut manifest: Manifest) -> Result<(Manifest, u64), TsdbError> {
        let parts = self.path(&format!("{DATA}/store/partitions"));
        if parts.exists() {
            let keep: Vec<String> = manifest
                .partitions
                .iter()
                .map(|(s, _)| s.to_string())
                .collect();
            for entry in std::fs::read_dir(&parts).map_err(|e| io("list", &parts, e))? {
                let path = entry.map_err(|e| io("list", &parts, e))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if !name.is_some_and(|n| keep.contains(&n)) {
                    remove_path(&path)?;
                }
            }
        }
        sync_tree(&self.path(DATA))?;
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.files = std::mem::take(&mut self.files);
        let tmp = self.path(MANIFEST_TMP);
        self.write_file(MANIFEST_TMP, manifest.encode().as_bytes())?;
        let path = self.path(MANIFEST);
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        let marker = self.path(IN_PROGRESS);
        std::fs::remove_file(&marker).map_err(|e| io("remove", &marker, e))?;
        sync_dir(&self.dir)?;
        Ok((manifest, self.written))
    }
}

fn remove_path(path: &Path) -> Result<(), TsdbError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| io("remove", path, e))
}

/// Syncs `dir` and every directory below it (their entries).
fn sync_tree(dir: &Path) -> Result<(), TsdbError> {
    sync_dir(dir)?;
    for entry in std::fs::read_dir(dir).map_err(|e| io("list", dir, e))? {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&entry.path())?;
        }
    }
    Ok(())
}

impl Store {
    /// Writes a consistent copy of the running store (and of
    /// `options.databases`) to `dir`, an absolute path: see the module
    /// documentation. One backup runs at a time; appends go on meanwhile.
    pub fn backup(&self, dir: &Path, options: BackupOptions) -> Result<BackupReport, TsdbError> {
        let started = Instant::now();
        let _one = self.backup_lock().try_lock().map_err(|_| {
            TsdbError::Invalid("a backup is already running; try again once it is done".into())
        })?;
        // A failed state's memory is ahead of its files: back up the state
        // rebuilt from them instead.
        if let crate::Condition::Failed { cause } = self.health()?.condition {
            return Err(TsdbError::Failed(format!(
                "cannot back up while the store is failed ({cause}); it rebuilds itself from disk once writes can succeed"
            )));
        }
        let inner = self.inner()?;
        let created_ms = (inner.options.clock)();
        let mut target = Target::prepare(dir, options.incremental)?;
        let maintenance = inner
            .maintenance
            .lock()
            .map_err(|_| crate::store::poisoned())?;
        let locked = Instant::now();
        // Everything acknowledged so far is durable, so at or below it.
        let group = inner.commit.durable();
        let store = format!("{DATA}/store");

        target.copy_sled(&store, &inner.db, |_, key, value| match key.first() {
            Some(&keys::ACCEPTED) => crate::forward::group_of(key)
                .is_some_and(|g| g <= group)
                .then_some(value),
            Some(&keys::CURSOR) => match <[u8; 8]>::try_from(&value[..]) {
                Ok(v) if u64::from_be_bytes(v) > group => Some(group.to_be_bytes().to_vec().into()),
                _ => Some(value),
            },
            _ => Some(value),
        })?;
        let mut wal = Vec::new();
        inner.commit.with_generations(|generations| {
            for g in generations {
                let rel = format!("{store}/wal/{:020}", g.number);
                target.copy_sled(&rel, &g.db()?, |_, key, value| match keys::parse_wal(key) {
                    Some(n) if n > group => None,
                    _ => Some(value),
                })?;
                target.write_file(&format!("{rel}/ready"), b"")?;
                wal.push(rel);
            }
            Ok(())
        })?;
        // The main database's files are the store directory's own.
        target.record(&store, &["wal", "partitions"])?;
        for rel in &wal {
            target.record(rel, &[])?;
        }
        let mut manifest = Manifest {
            format: BACKUP_FORMAT,
            store_format: STORE_FORMAT,
            partition_format: PARTITION_FORMAT,
            created_ms,
            group,
            partitions: Vec::new(),
            skipped: Vec::new(),
            files: Vec::new(),
        };
        let (mut copied, mut kept) = (0, 0);
        for p in inner.partitions.all()? {
            let rel = format!("{store}/partitions/{}", p.start);
            let copy = |path: &Path, rewritten| target.copy_partition(&rel, path, rewritten);
            match p.with_closed(copy)? {
                Ok(true) => copied += 1,
                Ok(false) => kept += 1,
                Err(why) => {
                    tracing::warn!(path = %p.path.display(), reason = %why, "backup leaves out a damaged partition");
                    manifest
                        .skipped
                        .push(format!("partition {}: {why}", p.path.display()));
                    continue;
                }
            }
            manifest.partitions.push((p.start, p.end));
        }
        drop(maintenance);
        let maintenance_paused = locked.elapsed();
        for (rel, db) in &options.databases {
            // The data directory itself holds the collector's database
            // beside the store's directory.
            let (rel, skip) = if rel.is_empty() {
                (DATA.to_owned(), &["store"][..])
            } else {
                (format!("{DATA}/{rel}"), &[][..])
            };
            target.copy_sled(&rel, db, |_, _, value| Some(value))?;
            target.record(&rel, skip)?;
        }
        if self.inner()?.incarnation != inner.incarnation {
            return Err(fail(
                "the store failed and was rebuilt during the backup: it is not consistent; take it again",
            ));
        }
        drop(inner);
        let (manifest, bytes_written) = target.finish(manifest)?;
        let report = BackupReport {
            bytes_total: manifest.bytes(),
            bytes_written,
            partitions_copied: copied,
            partitions_kept: kept,
            duration: started.elapsed(),
            maintenance_paused,
            manifest,
        };
        tracing::info!(
            dir = %dir.display(),
            group = report.manifest.group,
            bytes_total = report.bytes_total,
            bytes_written = report.bytes_written,
            partitions_copied = copied,
            partitions_kept = kept,
            duration_ms = report.duration.as_millis() as u64,
            maintenance_paused_ms = maintenance_paused.as_millis() as u64,
            "backup written"
        );
        Ok(report)
    }
}

/// Why a backup directory cannot be used, if it cannot: cut short, no
/// manifest, a manifest that does not read or of a newer format.
fn read_manifest(dir: &Path) -> Result<Manifest, TsdbError> {
    if dir.join(IN_PROGRESS).exists() {
        return Err(fail(format!(
            "the backup in {} is incomplete: it was interrupted ({IN_PROGRESS} is still there); take a new backup",
            dir.display()
        )));
    }
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!(
                "{} holds no complete backup: {MANIFEST} is missing (a backup cut short, or not a backup directory)",
                dir.display()
            )));
        }
        Err(e) => return Err(io("read", &path, e)),
    };
    Manifest::parse(&text).map_err(|why| fail(format!("{}: {why}", path.display())))
}

/// Checks a backup without restoring it: complete (not cut short), its
/// manifest of formats this build reads, every file there with its size
/// and checksum. The error names every file missing or damaged.
pub fn verify_backup(dir: &Path) -> Result<Manifest, TsdbError> {
    let manifest = read_manifest(dir)?;
    let mut damaged = Vec::new();
    for file in &manifest.files {
        let path = dir.join(&file.path);
        match copy_hashed(&path, None) {
            Ok((size, _)) if size != file.size => damaged.push(format!(
                "{}: {size} bytes, the manifest says {}",
                file.path, file.size
            )),
            Ok((_, sha)) if sha != file.sha256 => {
                damaged.push(format!("{}: checksum mismatch (damaged)", file.path))
            }
            Ok(_) => {}
            Err(e) => damaged.push(e.to_string()),
        }
    }
    if !damaged.is_empty() {
        return Err(fail(format!(
            "the backup in {} is damaged: {}",
            dir.display(),
            damaged.join("; ")
        )));
    }
    Ok(manifest)
}

/// Restores the data directory `data_dir` (missing or empty) from the
/// backup in `from`, checked first ([`verify_backup`]); each file is
/// checked again as it is copied. The collector (or [`Store::open`] on
/// `data_dir/store`) then opens it as the store was at the backup's point.
/// On an error, what was copied is removed.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, TsdbError> {
    let manifest = verify_backup(from)?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(TsdbError::Invalid(format!(
                    "the data directory {} is not empty: a restore only fills an empty or missing one (move the old one away first)",
                    data_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("list", data_dir, e)),
    }
    std::fs::create_dir_all(data_dir).map_err(|e| io("create", data_dir, e))?;
    let copied = (|| {
        for file in &manifest.files {
            let rel = file
                .path
                .strip_prefix(&format!("{DATA}/"))
                .ok_or_else(|| fail(format!("{} is not under {DATA}/", file.path)))?;
            let (size, sha) = copy_hashed(&from.join(&file.path), Some(&data_dir.join(rel)))?;
            if (size, sha) != (file.size, file.sha256) {
                return Err(fail(format!(
                    "{} changed while it was restored (checksum mismatch)",
                    file.path
                )));
            }
        }
        sync_tree(data_dir)
    })();
    if let Err(e) = copied {
        // The directory was empty: nothing but the copy is lost.
        if let Ok(entries) = std::fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                let _ = remove_path(&entry.path());
            }
        }
        return Err(e);
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: BACKUP_FORMAT,
            store_format: STORE_FORMAT,
            partition_format: PARTITION_FORMAT,
            created_ms: 1_800_000_000_000,
            group: 42,
            partitions: vec![(0, 86_400_000)],
            skipped: vec!["partition /x/1: its directory is missing".into()],
            files: vec![BackupFile {
                path: "data/store/partitions/0/a file".into(),
                size: 7,
                sha256: [0xab; 32],
            }],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = manifest();
        assert_eq!(Manifest::parse(&m.encode()).unwrap(), m);
    }

    #[test]
    fn a_bad_manifest_is_refused_naming_the_problem() {
        let text = manifest().encode();
        let cases = [
            (
                text.replacen("hostwatch backup", "something else", 1),
                "does not start",
            ),
            (text.replace("group 42\n", ""), "missing"),
            (
                text.replace("group 42", "group many"),
                "line 6: not a number",
            ),
            (text.replace("file ab", "file zz"), "bad checksum"),
            (text.replace(" 7 data/", " seven data/"), "bad size"),
            (text.replace("data/store", "/etc"), "leaves the backup"),
            (
                text.replace("data/store/partitions/0", "data/../x"),
                "leaves the backup",
            ),
            (format!("{text}color blue\n"), "unknown field"),
            (
                text.replace("partition_format 2", "partition_format 3"),
                "partitions in format 3",
            ),
            (
                text.replace("partition_format 2", "partition_format 0"),
                "partitions in format 0",
            ),
        ];
        for (bad, why) in cases {
            let err = Manifest::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
