//! The durable spool: every batch is written to local disk before it is
//! sent, and deleted only once the collector has acknowledged it
//! (docs/design.md, "Delivery guarantee").
//!
//! On disk, `<state_dir>/spool/` holds segment files named by the first
//! sequence number they may hold (`00000000000000000042.seg`). A segment
//! starts with a header (magic, spool id, first sequence, checksum) and
//! continues with records (magic, length, sequence, CRC-32 of sequence and
//! payload, payload = the encoded `Batch`). Records are appended; a segment
//! is deleted once every record in it is acknowledged, and a new one is
//! started when the current one reaches its target size. The newest
//! segment always exists, so the spool id and the sequence survive a
//! restart even when everything was acknowledged.
//!
//! Acknowledgements are not written down: after a restart, the collector's
//! Welcome says which sequences it already holds, and those are dropped.
//!
//! Bounds and damage:
//! - the spool is bounded by bytes; beyond, the oldest batches are dropped
//!   and counted (the count travels in every batch to the collector);
//! - a torn record (the agent killed mid-write) or a corrupt one (bad
//!   sector) is skipped and counted, never a refusal to start;
//! - when the disk refuses writes (full, read-only, unreadable directory),
//!   batches are kept in memory under the same byte bound and a segment is
//!   tried again at the next batch.

use hostwatch_proto::v1::{Batch, Label};
use prost::Message;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

const SEGMENT_MAGIC: &[u8; 8] = b"HWSPOOL1";
const SEGMENT_HEADER: usize = 32;
const RECORD_MAGIC: [u8; 4] = *b"HWR1";
const RECORD_HEADER: usize = 20;
/// A length beyond this is damage, not a record.
const MAX_RECORD: usize = crate::MAX_MESSAGE_BYTES;

/// Counters and sizes of the spool, for the agent's own health series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpoolStats {
    /// Bytes on disk (segments, acknowledged records not yet deleted
    /// included) plus bytes held in memory.
    pub bytes: u64,
    /// Batches waiting for an acknowledgement.
    pub batches: u64,
    /// Batches dropped, oldest first, because the spool was full; since start.
    pub dropped_total: u64,
    /// Torn or corrupt records (or headers) skipped; since start.
    pub corrupt_total: u64,
    /// Writes the disk refused; since start.
    pub write_errors_total: u64,
    /// Whether new batches currently go to disk (false: memory only).
    pub durable: bool,
}

/// The unacknowledged batches, oldest first, on disk when possible.
pub struct Spool {
    inner: Mutex<Inner>,
    /// Wakes the shipper when a batch arrives.
    pushed: Notify,
}

struct Inner {
    dir: PathBuf,
    spool_id: u64,
    next_seq: u64,
    max_bytes: u64,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// First sequence (key) of the segment new records go to.
    active: Option<u64>,
    /// Records not yet acknowledged, in sequence order.
    entries: VecDeque<Entry>,
    memory_bytes: u64,
    /// The batch pushed last, kept decoded so the shipper sends fresh
    /// batches without reading them back.
    recent: Option<Batch>,
    stats: SpoolStats,
}

struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    /// Entries in it not yet acknowledged.
    live: u64,
}

/// Why a spooled batch cannot be read back: it is skipped and counted.
#[derive(Debug, thiserror::Error)]
enum UnreadableBatch {
    #[error("segment gone")]
    SegmentGone,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("checksum mismatch")]
    Checksum,
    #[error("sequence mismatch")]
    Sequence,
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// A segment file read at start whose header is valid.
struct ScannedSegment {
    first_seq: u64,
    path: PathBuf,
    spool_id: u64,
    bytes: Vec<u8>,
}

struct Entry {
    seq: u64,
    place: Place,
}

enum Place {
    Disk {
        segment: u64,
        /// Offset of the record header.
        offset: u64,
        len: u32,
    },
    Memory(Vec<u8>),
}

impl Entry {
    fn payload_len(&self) -> usize {
        match &self.place {
            Place::Disk { len, .. } => *len as usize,
            Place::Memory(bytes) => bytes.len(),
        }
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`. Never fails: damage is
    /// skipped and counted, and a directory that cannot be used leaves the
    /// spool in memory (logged, and retried at every batch).
    pub fn open(dir: &Path, max_bytes: u64) -> Spool {
        let mut inner = Inner {
            dir: dir.to_owned(),
            spool_id: 0,
            next_seq: 1,
            max_bytes,
            segment_bytes: segment_bytes(max_bytes),
            segments: BTreeMap::new(),
            active: None,
            entries: VecDeque::new(),
            memory_bytes: 0,
            recent: None,
            stats: SpoolStats::default(),
        };
        if let Err(e) = inner.load() {
            tracing::error!(spool.dir = %dir.display(), error = %e, "cannot use the spool directory: keeping batches in memory until it can be written");
        }
        if inner.spool_id == 0 {
            inner.spool_id = new_spool_id();
        }
        if inner.active.is_none() {
            let next = inner.next_seq;
            inner.start_segment(next);
        }
        inner.enforce_bound();
        inner.stats.durable = inner.active.is_some();
        tracing::info!(
            spool.dir = %dir.display(),
            spool.id = inner.spool_id,
            next_seq = inner.next_seq,
            batches = inner.entries.len(),
            corrupt = inner.stats.corrupt_total,
            "spool opened"
        );
        Spool {
            inner: Mutex::new(inner),
            pushed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the spool consistent at each step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spool's random id: sequences are unique per (host, spool id).
    pub fn spool_id(&self) -> u64 {
        self.lock().spool_id
    }

    /// The sequence the next batch will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Numbers `batch` as the next one, with the running drop count, and
    /// stores it; when over the byte bound, drops the oldest batches and
    /// counts them. Returns the sequence.
    pub fn push(&self, mut batch: Batch) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        batch.seq = seq;
        batch.dropped_batches_total = inner.stats.dropped_total;
        let payload = batch.encode_to_vec();
        inner.append(seq, payload);
        inner.recent = Some(batch);
        inner.enforce_bound();
        inner.stats.durable = inner.active.is_some();
        drop(inner);
        self.pushed.notify_one();
        seq
    }

    /// [`Spool::sized_batch_after`]'s batch alone.
    #[cfg(test)]
    pub fn batch_after(&self, seq: u64, max_bytes: usize) -> Option<Batch> {
        self.sized_batch_after(seq, max_bytes)
            .map(|(batch, _)| batch)
    }

    /// The batches after `seq`, oldest first, coalesced into one of at most
    /// `max_bytes` encoded (or a single larger one); its sequence is the
    /// last one included. Damaged records are skipped and counted. With it,
    /// the spooled (encoded) bytes of the batches it holds, known without
    /// encoding it again: a coalesced batch encodes to at most that many.
    pub fn sized_batch_after(&self, seq: u64, max_bytes: usize) -> Option<(Batch, usize)> {
        let mut inner = self.lock();
        let mut merger: Option<Merger> = None;
        let mut size = 0;
        let mut after = seq;
        loop {
            let i = inner.entries.partition_point(|e| e.seq <= after);
            let Some(entry) = inner.entries.get(i) else {
                break;
            };
            let (entry_seq, len) = (entry.seq, entry.payload_len());
            if merger.is_some() && size + len > max_bytes {
                break;
            }
            let batch = match inner.recent.take_if(|b| b.seq == entry_seq) {
                Some(recent) => Ok(recent),
                None => inner.read(i),
            };
            match batch {
                Ok(batch) => {
                    size += len;
                    after = entry_seq;
                    match &mut merger {
                        None => merger = Some(Merger::new(batch)),
                        Some(m) => m.add(batch),
                    }
                }
                Err(e) => {
                    tracing::warn!(batch.seq = entry_seq, error = %e, "spooled batch unreadable: skipped");
                    inner.stats.corrupt_total += 1;
                    inner.remove_entry(i);
                }
            }
        }
        merger.map(|m| (m.batch, size))
    }

    /// Forgets every batch up to and including `seq`: the collector has it.
    pub fn ack_through(&self, seq: u64) {
        let mut inner = self.lock();
        while inner.entries.front().is_some_and(|e| e.seq <= seq) {
            inner.remove_entry(0);
        }
        inner.delete_acknowledged_segments();
    }

    /// The collector holds sequences up to `last_stored` for this spool
    /// but this spool would number new batches at or below it: the spool's
    /// end was lost (power failure). Numbering continues after it; batches
    /// numbered in between are taken as stored and counted as dropped.
    pub fn skip_past(&self, last_stored: u64) {
        let mut inner = self.lock();
        if last_stored < inner.next_seq {
            return;
        }
        tracing::warn!(
            next_seq = inner.next_seq,
            last_stored,
            "the collector holds later batches than this spool: continuing after them"
        );
        let lost = inner
            .entries
            .iter()
            .filter(|e| e.seq <= last_stored)
            .count() as u64;
        inner.stats.dropped_total += lost;
        inner.next_seq = last_stored + 1;
        drop(inner);
        self.ack_through(last_stored);
        // The new numbering must survive a restart: start a segment named after it.
        let mut inner = self.lock();
        let next = inner.next_seq;
        inner.start_segment(next);
        inner.stats.durable = inner.active.is_some();
    }

    /// Changes the byte bound (configuration reload).
    pub fn set_max_bytes(&self, max_bytes: u64) {
        let mut inner = self.lock();
        inner.max_bytes = max_bytes;
        inner.segment_bytes = segment_bytes(max_bytes);
        inner.enforce_bound();
    }

    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        SpoolStats {
            bytes: inner.bytes(),
            batches: inner.entries.len() as u64,
            ..inner.stats
        }
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes after the next [`Spool::push`] (or at once if one
    /// happened since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }

    /// Makes what was written durable on disk, segments and their names
    /// (at a clean stop: a power failure after it loses nothing).
    pub fn sync(&self) {
        let inner = self.lock();
        let segments = inner
            .segments
            .values()
            .map(|s| (&s.path, s.file.sync_data()));
        let dir = File::open(&inner.dir).and_then(|d| d.sync_all());
        for (path, result) in segments.chain([(&inner.dir, dir)]) {
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "cannot sync the spool");
            }
        }
    }
}

impl Inner {
    fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum::<u64>() + self.memory_bytes
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{first_seq:020}.seg"))
    }

    /// Reads the segments in the directory: the newest valid header gives
    /// the spool id; records are indexed; damage is counted and skipped.
    fn load(&mut self) -> io::Result<()> {
        let names = self.segment_names()?;
        let (scanned, mut damaged_end) = self.read_segments(names);
        let Some(spool_id) = scanned.last().map(|s| s.spool_id) else {
            // Nothing valid: a new spool (new id), numbered from 1.
            return Ok(());
        };
        self.spool_id = spool_id;
        let newest = scanned.last().map(|s| s.first_seq);
        for segment in scanned {
            if segment.spool_id != spool_id {
                // Left over from an earlier spool: numbered under another id,
                // it cannot be sent any more.
                let scan = scan_records(&segment.bytes);
                tracing::warn!(path = %segment.path.display(), batches = scan.records.len(), "spool segment of an earlier spool id: dropped");
                self.stats.dropped_total += scan.records.len() as u64;
                let _ = fs::remove_file(&segment.path);
                continue;
            }
            let newest = Some(segment.first_seq) == newest;
            damaged_end = damaged_end.max(self.index_segment(segment, newest));
        }
        self.next_seq = self.next_seq.max(damaged_end);
        Ok(())
    }

    /// The segment files in the directory, by first sequence; leftovers of
    /// interrupted segment creations are removed.
    fn segment_names(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        fs::create_dir_all(&self.dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                // A segment whose creation was interrupted: it held nothing.
                let _ = fs::remove_file(&path);
            } else if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                names.push((seq, path));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads the segments `names` whose header is valid; those whose header
    /// is damaged are removed. Also returns the sequence numbering must
    /// continue from at least, past what the damaged ones could hold.
    fn read_segments(&mut self, names: Vec<(u64, PathBuf)>) -> (Vec<ScannedSegment>, u64) {
        let mut scanned = Vec::new();
        let mut damaged_end = 0;
        for (first_seq, path) in names {
            match fs::read(&path) {
                Ok(bytes) => match parse_header(&bytes) {
                    Some((spool_id, seq)) if seq == first_seq => scanned.push(ScannedSegment {
                        first_seq,
                        path,
                        spool_id,
                        bytes,
                    }),
                    _ => {
                        tracing::warn!(path = %path.display(), "spool segment with a damaged header: removed");
                        self.stats.corrupt_total += 1;
                        // Its records may have been sent: never reuse the
                        // numbers it could hold (the name gives the first).
                        let most = (bytes.len() / RECORD_HEADER) as u64 + 1;
                        damaged_end = damaged_end.max(first_seq.saturating_add(most));
                        let _ = fs::remove_file(&path);
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable spool segment: skipped");
                    self.stats.corrupt_total += 1;
                }
            }
        }
        (scanned, damaged_end)
    }

    /// Indexes the records of a segment of this spool and keeps it open;
    /// the `newest` segment, when whole and not full, takes new records.
    /// Returns the sequence numbering must continue from at least, past
    /// records lost at its end (0 when none were).
    fn index_segment(&mut self, segment: ScannedSegment, newest: bool) -> u64 {
        let ScannedSegment {
            first_seq,
            path,
            bytes,
            ..
        } = segment;
        let scan = scan_records(&bytes);
        self.stats.corrupt_total += scan.damaged;
        self.next_seq = self.next_seq.max(first_seq);
        let mut live = 0;
        for record in &scan.records {
            if record.seq < self.next_seq {
                // Out of order: damage that happened to checksum right.
                self.stats.corrupt_total += 1;
                continue;
            }
            self.next_seq = record.seq + 1;
            self.entries.push_back(Entry {
                seq: record.seq,
                place: Place::Disk {
                    segment: first_seq,
                    offset: record.offset as u64,
                    len: record.len,
                },
            });
            live += 1;
        }
        let mut damaged_end = 0;
        if scan.damaged_tail_bytes > 0 {
            // Records lost at the end may have been sent: never reuse
            // their numbers (a gap is harmless, a reuse is taken for a replay).
            let most = (scan.damaged_tail_bytes / RECORD_HEADER) as u64 + 1;
            damaged_end = self.next_seq.saturating_add(most);
        }
        let appendable = newest && scan.damaged == 0 && (bytes.len() as u64) < self.segment_bytes;
        let file = if appendable {
            OpenOptions::new().read(true).append(true).open(&path)
        } else {
            File::open(&path)
        };
        match file {
            Ok(file) => {
                self.segments.insert(
                    first_seq,
                    Segment {
                        path,
                        file,
                        len: bytes.len() as u64,
                        live,
                    },
                );
                if appendable {
                    self.active = Some(first_seq);
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open spool segment: its batches are lost");
                self.stats.corrupt_total += live;
                self.entries.retain(
                    |e| !matches!(e.place, Place::Disk { segment, .. } if segment == first_seq),
                );
            }
        }
        damaged_end
    }

    /// Starts a new segment for sequences from `first_seq` (the next one
    /// to be written) and makes it the active one; on failure no segment
    /// is active and batches stay in memory.
    fn start_segment(&mut self, first_seq: u64) {
        match self.create_segment(first_seq) {
            Ok(segment) => {
                if self.active.is_none() && self.stats.write_errors_total > 0 {
                    tracing::info!(path = %segment.path.display(), "spool writable again");
                }
                // A segment of the same name can only be one without
                // records (a record would have moved the numbering past it).
                self.segments.insert(first_seq, segment);
                self.active = Some(first_seq);
            }
            Err(e) => {
                if self.active.is_some() || self.stats.write_errors_total == 0 {
                    tracing::error!(spool.dir = %self.dir.display(), error = %e, "cannot create a spool segment: keeping batches in memory");
                }
                self.stats.write_errors_total += 1;
                self.active = None;
            }
        }
        self.delete_acknowledged_segments();
    }

    fn create_segment(&self, first_seq: u64) -> io::Result<Segment> {
        fs::create_dir_all(&self.dir)?;
        let path = self.segment_path(first_seq);
        let tmp = path.with_extension("tmp");
        let mut header = Vec::with_capacity(SEGMENT_HEADER);
        header.extend_from_slice(SEGMENT_MAGIC);
        header.extend_from_slice(&self.spool_id.to_le_bytes());
        header.extend_from_slice(&first_seq.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&header)?;
            // The header names the spool and its sequence: it must outlive
            // a power failure, or numbers could be reused.
            file.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        Ok(Segment {
            path,
            file,
            len: SEGMENT_HEADER as u64,
            live: 0,
        })
    }

    /// Writes a record to the active segment (starting a new one when it
    /// is full or none is active); keeps it in memory if the disk refuses.
    fn append(&mut self, seq: u64, payload: Vec<u8>) {
        let full = self
            .active
            .and_then(|k| self.segments.get(&k))
            .is_some_and(|s| s.len >= self.segment_bytes);
        if full || self.active.is_none() {
            self.start_segment(seq);
        }
        if let Some(key) = self.active
            && let Some(segment) = self.segments.get_mut(&key)
        {
            let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
            record.extend_from_slice(&RECORD_MAGIC);
            record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&seq.to_le_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(&payload);
            record.extend_from_slice(&crc.finalize().to_le_bytes());
            record.extend_from_slice(&payload);
            let offset = segment.len;
            match segment.file.write_all(&record) {
                Ok(()) => {
                    segment.len += record.len() as u64;
                    segment.live += 1;
                    self.entries.push_back(Entry {
                        seq,
                        place: Place::Disk {
                            segment: key,
                            offset,
                            len: payload.len() as u32,
                        },
                    });
                    return;
                }
                Err(e) => {
                    tracing::error!(path = %segment.path.display(), error = %e, "cannot write to the spool: keeping batches in memory");
                    // Take back a partial write; if even that fails, the
                    // torn record is skipped at the next start.
                    let _ = segment.file.set_len(offset);
                    self.stats.write_errors_total += 1;
                    self.active = None;
                }
            }
        }
        self.memory_bytes += payload.len() as u64;
        self.entries.push_back(Entry {
            seq,
            place: Place::Memory(payload),
        });
    }

    /// Reads and decodes entry `i`.
    fn read(&self, i: usize) -> Result<Batch, UnreadableBatch> {
        let entry = &self.entries[i];
        let bytes = match &entry.place {
            Place::Memory(bytes) => return Ok(Batch::decode(bytes.as_slice())?),
            Place::Disk {
                segment,
                offset,
                len,
            } => {
                let segment = self
                    .segments
                    .get(segment)
                    .ok_or(UnreadableBatch::SegmentGone)?;
                let mut buf = vec![0; RECORD_HEADER + *len as usize];
                segment.file.read_exact_at(&mut buf, *offset)?;
                buf
            }
        };
        let record = parse_record(&bytes, 0).ok_or(UnreadableBatch::Checksum)?;
        if record.seq != entry.seq {
            return Err(UnreadableBatch::Sequence);
        }
        Ok(Batch::decode(&bytes[RECORD_HEADER..])?)
    }

    fn remove_entry(&mut self, i: usize) {
        let Some(entry) = self.entries.remove(i) else {
            return;
        };
        match entry.place {
            Place::Memory(bytes) => self.memory_bytes -= bytes.len() as u64,
            Place::Disk { segment, .. } => {
                if let Some(s) = self.segments.get_mut(&segment) {
                    s.live = s.live.saturating_sub(1);
                }
            }
        }
    }

    /// Deletes segments whose every record is acknowledged (or dropped).
    /// The newest segment stays (it carries the spool id and the
    /// sequence), except once a newer one replaced it: the active segment,
    /// full and fully acknowledged, gives way to a fresh one.
    fn delete_acknowledged_segments(&mut self) {
        if let Some(key) = self.active
            && let Some(active) = self.segments.get(&key)
            && active.live == 0
            && active.len >= self.segment_bytes
        {
            match self.create_segment(self.next_seq) {
                Ok(segment) => {
                    self.segments.insert(self.next_seq, segment);
                    self.active = Some(self.next_seq);
                }
                Err(e) => {
                    tracing::warn!(spool.dir = %self.dir.display(), error = %e, "cannot start a new spool segment");
                }
            }
        }
        let newest = self.segments.keys().next_back().copied();
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(k, s)| s.live == 0 && Some(**k) != newest && Some(**k) != self.active)
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            if let Some(segment) = self.segments.remove(&key)
                && let Err(e) = fs::remove_file(&segment.path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %segment.path.display(), error = %e, "cannot delete an acknowledged spool segment");
            }
        }
    }

    /// Drops the oldest batches (a whole segment at a time on disk) while
    /// over the bound; the newest batch always stays.
    fn enforce_bound(&mut self) {
        while self.bytes() > self.max_bytes && self.entries.len() > 1 {
            let Some(front) = self.entries.front() else {
                break;
            };
            let before = self.entries.len();
            match front.place {
                Place::Memory(_) => self.remove_entry(0),
                Place::Disk { segment, .. } => {
                    if Some(segment) == self.active {
                        // Only the active segment is left on disk: close it
                        // so its batches can go.
                        self.start_segment(self.next_seq);
                        if Some(segment) == self.active {
                            break;
                        }
                    }
                    let newest = self.entries.back().map(|e| e.seq);
                    let mut i = 0;
                    while i < self.entries.len() {
                        let e = &self.entries[i];
                        let here =
                            matches!(e.place, Place::Disk { segment: s, .. } if s == segment);
                        if here && Some(e.seq) != newest {
                            self.remove_entry(i);
                        } else {
                            i += 1;
                        }
                    }
                    if self.segments.get(&segment).is_some_and(|s| s.live > 0) {
                        break; // Holds the newest batch.
                    }
                }
            }
            let dropped = (before - self.entries.len()) as u64;
            if dropped > 0 {
                self.stats.dropped_total += dropped;
                tracing::warn!(
                    dropped,
                    dropped_total = self.stats.dropped_total,
                    "spool full: dropped the oldest batches"
                );
            }
            self.delete_acknowledged_segments();
        }
    }
}

/// What a spool directory holds, read without changing anything.
#[derive(Debug, Default)]
pub struct Inspection {
    /// The id in the newest valid segment header.
    pub spool_id: Option<u64>,
    /// Every readable record, acknowledged or not (acknowledgements are
    /// not written down), oldest first.
    pub batches: Vec<Batch>,
    /// Damaged headers, records and torn tails.
    pub damaged: u64,
}

/// Reads the spool in `dir` as the agent would at its next start, without
/// changing it (the agent may be running).
pub fn inspect(dir: &Path) -> io::Result<Inspection> {
    let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            let seq = path
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    names.sort();
    let mut inspection = Inspection::default();
    for (first_seq, path) in names {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Deleted by the running agent since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match parse_header(&bytes) {
            Some((id, seq)) if seq == first_seq => inspection.spool_id = Some(id),
            _ => {
                inspection.damaged += 1;
                continue;
            }
        }
        let scan = scan_records(&bytes);
        inspection.damaged += scan.damaged;
        for record in scan.records {
            let start = record.offset + RECORD_HEADER;
            match Batch::decode(&bytes[start..start + record.len as usize]) {
                Ok(batch) => inspection.batches.push(batch),
                Err(_) => inspection.damaged += 1,
            }
        }
    }
    Ok(inspection)
}

/// A segment's target size: small enough that dropping one (when full)
/// loses a small share, large enough that files stay few.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(1024, 1 << 20)
}

fn new_spool_id() -> u64 {
    // Zero means "none" on the wire.
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// (spool id, first sequence) of a valid segment header.
fn parse_header(bytes: &[u8]) -> Option<(u64, u64)> {
    let header = bytes.get(..SEGMENT_HEADER)?;
    if &header[..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(header[24..28].try_into().ok()?);
    if crc32fast::hash(&header[..24]) != crc {
        return None;
    }
    let id = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let first_seq = u64::from_le_bytes(header[16..24].try_into().ok()?);
    (id != 0).then_some((id, first_seq))
}

#[derive(Debug, Clone, PartialEq)]
struct RecordRef {
    seq: u64,
    offset: usize,
    len: u32,
}

/// The record at `offset` if its header and checksum are valid.
fn parse_record(bytes: &[u8], offset: usize) -> Option<RecordRef> {
    let header = bytes.get(offset..offset.checked_add(RECORD_HEADER)?)?;
    if header[..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len as usize > MAX_RECORD {
        return None;
    }
    let seq_bytes: [u8; 8] = header[8..16].try_into().ok()?;
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let start = offset + RECORD_HEADER;
    let payload = bytes.get(start..start.checked_add(len as usize)?)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq_bytes);
    hasher.update(payload);
    (hasher.finalize() == crc).then(|| RecordRef {
        seq: u64::from_le_bytes(seq_bytes),
        offset,
        len,
    })
}

struct Scan {
    records: Vec<RecordRef>,
    /// Damaged stretches skipped (a torn tail is one).
    damaged: u64,
    /// Bytes after the last valid record that hold no valid record.
    damaged_tail_bytes: usize,
}

/// Walks a segment's records; after damage, resumes at the next record
/// magic that starts a valid record.
fn scan_records(bytes: &[u8]) -> Scan {
    let mut scan = Scan {
        records: Vec::new(),
        damaged: 0,
        damaged_tail_bytes: 0,
    };
    let mut offset = SEGMENT_HEADER;
    while offset < bytes.len() {
        if let Some(record) = parse_record(bytes, offset) {
            offset += RECORD_HEADER + record.len as usize;
            scan.records.push(record);
            continue;
        }
        scan.damaged += 1;
        let resume = (offset + 1..bytes.len())
            .filter(|&i| bytes[i..].starts_with(&RECORD_MAGIC))
            .find(|&i| parse_record(bytes, i).is_some());
        match resume {
            Some(next) => offset = next,
            None => {
                scan.damaged_tail_bytes = bytes.len() - offset;
                break;
            }
        }
    }
    scan
}

/// Coalesces consecutive batches: points of the same series are joined
/// (they are in time order, as batches are), snapshots concatenated; the
/// sequence and the drop count are the last batch's.
struct Merger {
    batch: Batch,
    index: Option<HashMap<(String, Vec<Label>), usize>>,
}

impl Merger {
    fn new(batch: Batch) -> Self {
        Merger { batch, index: None }
    }

    fn add(&mut self, next: Batch) {
        let series = &mut self.batch.series;
        let index = self.index.get_or_insert_with(|| {
            series
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.metric.clone(), s.labels.clone()), i))
                .collect()
        });
        for s in next.series {
            let key = (s.metric.clone(), s.labels.clone());
            match index.get(&key) {
                Some(&i) => {
                    series[i].timestamps_ms.extend(s.timestamps_ms);
                    series[i].values.extend(s.values);
                }
                None => {
                    index.insert(key, series.len());
                    series.push(s);
                }
            }
        }
        self.batch.processes.extend(next.processes);
        self.batch.dropped_batches_total = next.dropped_batches_total;
        self.batch.seq = next.seq;
    }
}

#[cfg(test)]
mod tests;
