//! The store's limits, windows and clock.

use crate::TsdbError;
use std::sync::Arc;
use std::time::Duration;

/// One hour in milliseconds: raw chunk windows are whole hours, so that
/// every 1 h aggregate comes from exactly one chunk.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// The most samples of one series in one chunk window the chunk codec
/// reads back (a larger count in a chunk is taken for damage).
pub const MAX_WINDOW_SAMPLES: usize = crate::codec::MAX_BLOCK_POINTS;
/// One minute in milliseconds.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// One day: the span of a chunk of the 1 h tier.
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Limits and windows of the store.
#[derive(Clone)]
pub struct Options {
    /// Samples older than this (ms) are rejected and, in the background, deleted.
    pub retention_ms: i64,
    /// When set, the oldest data is deleted in the background while the
    /// stored chunks, snapshots and WAL add up to more than this many bytes.
    pub retention_bytes: Option<u64>,
    /// Samples further than this (ms) in the future are rejected.
    pub future_tolerance_ms: i64,
    /// A sample older than its series' newest sample by at most this (ms)
    /// is still accepted; older ones are rejected as out of order. At most
    /// [`Options::chunk_window_ms`].
    pub out_of_order_tolerance_ms: i64,
    /// Most series one host may have.
    pub max_series_per_host: usize,
    /// Most samples one series may hold in one chunk window; later ones
    /// are refused (counted as `too_dense`), so every window can be
    /// sealed and read back. At most [`MAX_WINDOW_SAMPLES`].
    pub max_window_samples: usize,
    /// Time span of one raw chunk (ms): a whole number of hours dividing a day.
    pub chunk_window_ms: i64,
    /// Time span of one partition (ms; see the `partition` module): the
    /// sealed chunks and snapshot blocks of its windows live in one sled
    /// database, which retention deletes whole. A whole number of windows
    /// that divides a day, or a whole number of days.
    pub partition_ms: i64,
    /// A series that received nothing for this long (ms, wall clock) has its
    /// finished windows sealed even though no newer sample pushed them out.
    pub idle_seal_ms: i64,
    /// WAL bytes after which new commit groups go to a new WAL database
    /// (a generation), so that the older one can be deleted whole once
    /// sealed; see the `commit` module.
    pub wal_generation_bytes: u64,
    /// How often the background thread seals chunks, truncates the WAL and
    /// enforces retention; `None` runs no thread (call [`crate::Store::maintain`],
    /// and [`crate::Store::recover`] after a failure).
    pub maintenance_interval: Option<Duration>,
    /// A partition neither written nor read for this long has its sled
    /// database flushed and closed (see the `partition` module); reopened
    /// by the next read or write.
    pub partition_idle_close: Duration,
    /// Bytes of sled's page cache for chunks and the index.
    pub cache_bytes: u64,
    /// Bytes of decoded sealed-chunk tails kept for reads of many series
    /// over one short span (instant queries' lookbacks over sealed
    /// windows); 0 keeps none. See the `tails` module.
    pub read_cache_bytes: u64,
    /// Appends are refused while the store's file system has less free
    /// space than this (0: never), before the disk is full; see
    /// [`crate::Condition::ReadOnly`].
    pub min_free_bytes: u64,
    /// Keep the accept log that forwarding reads (see
    /// [`crate::Store::accepted_after`]): off when nothing forwards.
    pub accept_log: bool,
    /// Current time; injectable for tests.
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention_ms: 30 * DAY_MS,
            retention_bytes: None,
            future_tolerance_ms: 10 * MINUTE_MS,
            out_of_order_tolerance_ms: 10 * MINUTE_MS,
            max_series_per_host: 10_000,
            max_window_samples: MAX_WINDOW_SAMPLES,
            chunk_window_ms: HOUR_MS,
            partition_ms: DAY_MS,
            idle_seal_ms: 15 * MINUTE_MS,
            wal_generation_bytes: 32 << 20,
            maintenance_interval: Some(Duration::from_secs(5)),
            partition_idle_close: Duration::from_secs(60),
            cache_bytes: 64 << 20,
            read_cache_bytes: 32 << 20,
            min_free_bytes: 0,
            accept_log: false,
            clock: Arc::new(hostwatch_stdx::now_ms),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("retention_ms", &self.retention_ms)
            .field("retention_bytes", &self.retention_bytes)
            .field("future_tolerance_ms", &self.future_tolerance_ms)
            .field("out_of_order_tolerance_ms", &self.out_of_order_tolerance_ms)
            .field("max_series_per_host", &self.max_series_per_host)
            .field("max_window_samples", &self.max_window_samples)
            .field("chunk_window_ms", &self.chunk_window_ms)
            .field("partition_ms", &self.partition_ms)
            .field("idle_seal_ms", &self.idle_seal_ms)
            .field("wal_generation_bytes", &self.wal_generation_bytes)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("partition_idle_close", &self.partition_idle_close)
            .field("cache_bytes", &self.cache_bytes)
            .field("read_cache_bytes", &self.read_cache_bytes)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("accept_log", &self.accept_log)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Refuses options the store cannot honour, naming the field.
    pub fn validate(&self) -> Result<(), TsdbError> {
        let bad = |m: String| Err(TsdbError::Invalid(m));
        if self.retention_ms <= 0 {
            return bad("retention_ms must be greater than zero".into());
        }
        if self.retention_bytes == Some(0) {
            return bad("retention_bytes must be greater than zero".into());
        }
        if self.future_tolerance_ms < 0 {
            return bad("future_tolerance_ms must not be negative".into());
        }
        if self.max_series_per_host == 0 {
            return bad("max_series_per_host must be greater than zero".into());
        }
        if !(1..=MAX_WINDOW_SAMPLES).contains(&self.max_window_samples) {
            return bad(format!(
                "max_window_samples ({}) must be between 1 and {MAX_WINDOW_SAMPLES}",
                self.max_window_samples
            ));
        }
        let w = self.chunk_window_ms;
        if w <= 0 || w % HOUR_MS != 0 || DAY_MS % w != 0 {
            return bad(format!(
                "chunk_window_ms ({w}) must be a whole number of hours that divides a day"
            ));
        }
        let p = self.partition_ms;
        if p <= 0 || p % w != 0 || (DAY_MS % p != 0 && p % DAY_MS != 0) {
            return bad(format!(
                "partition_ms ({p}) must be a whole number of chunk windows ({w} ms) that divides a day, or a whole number of days"
            ));
        }
        if !(0..=w).contains(&self.out_of_order_tolerance_ms) {
            return bad(format!(
                "out_of_order_tolerance_ms ({}) must be between 0 and chunk_window_ms ({w})",
                self.out_of_order_tolerance_ms
            ));
        }
        if self.idle_seal_ms <= 0 {
            return bad("idle_seal_ms must be greater than zero".into());
        }
        if self.wal_generation_bytes == 0 {
            return bad("wal_generation_bytes must be greater than zero".into());
        }
        if self.maintenance_interval.is_some_and(|d| d.is_zero()) {
            return bad("maintenance_interval must be greater than zero".into());
        }
        Ok(())
    }

    /// Start of the raw window holding `t_ms`.
    pub(crate) fn window_of(&self, t_ms: i64) -> i64 {
        align(t_ms, self.chunk_window_ms)
    }
}

/// The multiple of `step` at or below `t_ms` (saturating at the ends of time).
pub(crate) fn align(t_ms: i64, step: i64) -> i64 {
    t_ms.div_euclid(step).saturating_mul(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_name_their_field() {
        /// A change that makes the default options invalid, and the field
        /// the error must name.
        type Case = (fn(&mut Options), &'static str);
        let cases: [Case; 13] = [
            (|o| o.partition_ms = 0, "partition_ms"),
            (|o| o.partition_ms = 5 * HOUR_MS, "partition_ms"),
            (|o| o.partition_ms = 36 * HOUR_MS, "partition_ms"),
            (|o| o.retention_ms = 0, "retention_ms"),
            (|o| o.retention_bytes = Some(0), "retention_bytes"),
            (|o| o.chunk_window_ms = 5 * HOUR_MS, "chunk_window_ms"),
            (|o| o.chunk_window_ms = 90 * MINUTE_MS, "chunk_window_ms"),
            (
                |o| o.out_of_order_tolerance_ms = 2 * HOUR_MS,
                "out_of_order_tolerance_ms",
            ),
            (
                |o| o.maintenance_interval = Some(Duration::ZERO),
                "maintenance_interval",
            ),
            (|o| o.wal_generation_bytes = 0, "wal_generation_bytes"),
            (|o| o.max_series_per_host = 0, "max_series_per_host"),
            (|o| o.max_window_samples = 0, "max_window_samples"),
            (
                |o| o.max_window_samples = MAX_WINDOW_SAMPLES + 1,
                "max_window_samples",
            ),
        ];
        for (set, field) in cases {
            let mut options = Options::default();
            set(&mut options);
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field} not named in {err}");
        }
        Options::default().validate().unwrap();
    }

    #[test]
    fn windows_align_below_negative_times_too() {
        let o = Options::default();
        assert_eq!(o.window_of(HOUR_MS + 5), HOUR_MS);
        assert_eq!(o.window_of(-1), -HOUR_MS);
        assert_eq!(o.window_of(0), 0);
    }
}
