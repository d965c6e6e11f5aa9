//! hostwatch's embedded time-series store on sled.
//!
//! The life of a sample: [`Store::append`] validates a batch (rejecting,
//! with a counted reason, non-finite values, timestamps too far ahead,
//! older than the retention or older than the out-of-order tolerance),
//! resolves each series to a compact id, encodes the accepted samples as
//! one WAL frame, and queues it for the next commit group; the samples go
//! into the head (Gorilla-encoded open windows in memory) and the call
//! returns once the group is written and flushed, a flush shared by every
//! append queued meanwhile ([`Store::submit`] and [`Store::wait`] split
//! the two, so one caller can have many batches in flight). A background thread seals each window once no
//! accepted sample can land in it any more: a raw chunk (delta-of-delta
//! times, values as constants, scaled integers, scaled float32 or XOR,
//! whichever is smallest); a day's last window also writes the day's 1 h
//! chunk. The WAL
//! lives in sled databases of its own (generations); once every group of a generation is sealed, the generation is deleted
//! whole. Restart replays the WAL from the lowest group not sealed into
//! the head; a group a sealed chunk already holds is skipped, so replay is
//! idempotent.
//!
//! Exactly once: a batch's (host, source, sequence) travels in its WAL
//! frame and is persisted when the frame is deleted; a sequence at or below
//! the highest stored is a replay and is acknowledged without being stored.
//!
//! Layout:
//! - `model`: series keys, points, batches, matchers, validation;
//! - `options`: limits, windows, the clock;
//! - `codec`: bit streams, the head encoder, the sealed-chunk codec;
//! - `chunk`, `snapshot`: stored blocks (raw chunks, aggregate rows,
//!   process snapshots) in a checksummed envelope;
//! - `wal`: WAL frames; `commit`: group commit, WAL generations and their
//!   truncation (`Truncation`, the order sealing follows);
//! - `head`: per-host in-memory state; `shape`: the previous batch's series,
//!   for lookups; `keys`: the sled key layout;
//! - `store`: the `Store` facade and the state it opens; under it `open`
//!   (open and replay), `append` (the append path: an `Appender` logs a
//!   batch before applying it) and `apply` (the head insertions, which
//!   take a WAL `commit::Group`); `read`: the store's reads; `query`:
//!   steps and aggregations;
//! - `index`: the series index in memory: keys, each metric's key order and
//!   postings by label value, for selecting series;
//! - `catalog`: metric names, and one series's raw points, for the PromQL engine;
//! - `forward`: the accept log and cursors forwarding reads;
//! - `partition`: time partitions (a sled database each) holding the
//!   sealed chunks and snapshot blocks, and the store's format version;
//! - `maintain`: sealing, WAL truncation, retention; `stats`, `verify`;
//! - `backup`: online backups, their verification, restoring from one;
//! - `supervise`: the free-space reserve, failures and rebuilding from
//!   disk, the background thread;
//! - `fuzzing`: every decoder of stored bytes, for the fuzz targets
//!   (`fuzz/`) and their property tests;
//! - `workload` (feature `test-util`): the deterministic writer the crash
//!   test and the benchmark kill.
//!
//! This crate sees neither tokio nor protobuf; the collector converts at its edge.

pub mod backup;
mod catalog;
mod chunk;
mod codec;
mod commit;
mod forward;
mod head;
mod index;
mod keys;
mod maintain;
mod model;
mod options;
mod partition;
mod query;
mod read;
mod shape;
mod snapshot;
mod stats;
mod store;
mod supervise;
mod tails;
mod verify;
mod wal;
#[cfg(feature = "test-util")]
pub mod workload;

pub use backup::{BackupOptions, BackupReport, Manifest};
pub use forward::{AcceptedGroup, AcceptedSamples, AcceptedSpan, SampleRun};
pub use maintain::{MaintenancePhase, MaintenanceReport};
pub use model::{
    Aggregation, AppendOutcome, Batch, HOST_LABEL, Label, MAX_LABEL_VALUE_LEN, MAX_LABELS,
    MAX_NAME_LEN, Matcher, Point, ProcessInfo, ProcessSnapshot, Rejections, SeriesData,
    SeriesInput, SeriesKey, series_hash,
};
pub use options::{Clock, MAX_WINDOW_SAMPLES, Options};
pub use query::Step;
pub use stats::StoreStats;
pub use store::{Pending, Store};
pub use supervise::{Condition, Health, REOPEN_MIN_FREE_BYTES, free_bytes};
pub use verify::{MetricBytes, RawBytes, VerifyReport};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// The caller's input is unusable; the message says why.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A query selects more points than its caller allows; refused before
    /// its whole result was read.
    #[error("the query selects more than {limit} points")]
    TooManyPoints { limit: usize },
    /// Stored data does not decode; the message says what.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The store stopped accepting writes (a WAL write failed) or its
    /// state is unusable; the message says why.
    #[error("store failed: {0}")]
    Failed(String),
    /// The store's file system has less free space than the reserve
    /// ([`Options::min_free_bytes`]): appends are refused until it is back.
    #[error("store read-only: {0}")]
    ReadOnly(String),
    /// A backup could not be written, checked or restored: the target, a
    /// file, or the backup itself (cut short, damaged, of a newer format);
    /// the message names it.
    #[error("backup: {0}")]
    Backup(String),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
}

impl TsdbError {
    /// A file system operation on the store's files failed: the store
    /// cannot go on ([`TsdbError::Failed`]).
    pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        TsdbError::Failed(format!("cannot {what} {}: {e}", path.display()))
    }
}

/// Entry points for the fuzz targets: decoders of untrusted bytes.
#[doc(hidden)]
pub mod fuzzing;
