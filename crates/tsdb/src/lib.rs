//! hostwatch's embedded time-series store on sled.
//!
//! The store keeps a series index (metric + labels to a numeric id), the
//! samples, and per (host, source) the highest batch sequence stored, which
//! makes agent replays idempotent. [`Store::append`] returns only once the
//! batch is flushed to disk, so the collector may acknowledge it.
//!
//! Layout:
//! - `model`: series keys, points, batches, matchers, validation;
//! - `store`: the sled layout, appends and queries.
//!
//! This crate sees neither tokio nor protobuf; the collector converts at its edge.

mod model;
mod store;

pub use model::{
    AppendOutcome, Batch, HOST_LABEL, Label, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_NAME_LEN,
    Matcher, Point, ProcessInfo, ProcessSnapshot, Rejections, SeriesData, SeriesInput, SeriesKey,
};
pub use store::{Clock, Options, Store};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// The caller's input is unusable; the message says why.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Stored data does not decode; the message says what.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
}
