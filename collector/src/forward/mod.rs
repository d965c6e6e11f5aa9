//! Forwarding: Prometheus remote_write of what the store accepted to each
//! `[[forward]]` destination, at least once, in order per series.
//!
//! Per destination, a reader follows the store's accept log from the
//! destination's cursor (see `hostwatch_tsdb`'s `forward` module): for
//! the accepted groups of each pass, it takes the matching series'
//! samples from the groups' WAL frames (or, for groups the WAL no longer
//! holds, reads each series back once over the union of its spans), and
//! hands each shard, in one message per read, the series its id picks, so a
//! series' samples go through one queue in the order read (a shard's
//! samples waiting are bounded by `queue.capacity`). A read allocates
//! nothing per series: the WAL's samples come flat, and a shard's part
//! is one buffer of points with each series' index in the shard; the
//! reader keeps what it knows of each series in a table indexed by id
//! (the store's ids are dense), looks a series' key up once, when first
//! met (a read's new series in one call), and sends it to the shard with
//! the series' first samples, which learns its labels
//! (`send::LabelTable`) in the form the protocol writes. Each shard batches by size
//! (`queue.max_samples_per_request`) and age (`queue.max_age`) and sends
//! one request at a time, retrying network errors, 5xx and 429 with
//! jittered backoff (or the receiver's `Retry-After`), and dropping
//! requests refused otherwise (4xx), counted and logged with the
//! receiver's message. After each read the reader marks the last group
//! read in every shard; a shard acknowledges a mark once everything
//! before it got an answer, and the cursor moves to the lowest group every
//! shard acknowledged. A restart resumes from the cursor: some samples may
//! arrive twice, none is skipped.
//!
//! Layout: `config` (the sections, validation, the client), `send` (one
//! request and its answer), this file (reader, shards, counters).

pub(crate) mod config;
mod send;

use config::Destination;
use hostwatch_alerting::matcher::LabelMatcher;
use hostwatch_tsdb::{AcceptedGroup, AcceptedSamples, Point, SeriesKey, Store};
use rustc_hash::FxHashMap;
use send::{Batch, Encoder, LabelTable, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accept-log groups read per pass.
const GROUPS_PER_READ: usize = 256;
/// Most series listed (over all spans) in the groups read back at once:
/// a bound on a read's memory, in samples for one-sample spans.
const SERIES_PER_FEED: usize = 100_000;
/// How often a destination that is up to date looks for new groups.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the figures are logged and the accept log trimmed.
const REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// At shutdown, how long a shard's request in flight may take to be
/// answered (and the cursor moved for it) before it is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Counters of one destination since the collector started (a later
/// `/metrics` reads them).
#[derive(Debug, Default)]
pub(crate) struct DestinationStats {
    /// Samples the receiver accepted (2xx).
    pub(crate) sent: AtomicU64,
    /// Samples in requests that failed and were retried (network errors,
    /// 5xx, 429), counted once per failed attempt.
    pub(crate) failed: AtomicU64,
    /// Samples in requests the receiver refused (other 4xx): not sent again.
    pub(crate) dropped: AtomicU64,
    /// Samples read from the store and not yet answered.
    pub(crate) pending: AtomicU64,
    /// The destination's cursor: every group up to it is delivered.
    pub(crate) cursor: AtomicU64,
    /// Accepted groups not yet delivered (the store's newest group less the cursor).
    pub(crate) lag_groups: AtomicU64,
    /// Newest sample time read less the newest delivered (ms); 0 when
    /// nothing waits.
    pub(crate) lag_ms: AtomicI64,
    /// Time spent reading samples back from the store (ns, wall clock
    /// on a blocking thread: the accept log, keys, points).
    pub(crate) read_ns: AtomicU64,
    /// Time spent encoding and compressing request bodies (ns).
    pub(crate) encode_ns: AtomicU64,
    newest_read_ms: AtomicI64,
    newest_sent_ms: AtomicI64,
}

/// A point-in-time copy of [`DestinationStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardFigures {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub pending: u64,
    pub cursor: u64,
    pub lag_groups: u64,
    pub lag_ms: i64,
    /// Time spent reading samples back from the store, in nanoseconds.
    pub read_ns: u64,
    /// Time spent encoding and compressing requests, in nanoseconds.
    pub encode_ns: u64,
}

impl DestinationStats {
    pub(crate) fn figures(&self) -> ForwardFigures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ForwardFigures {
            sent: get(&self.sent),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            pending: get(&self.pending),
            cursor: get(&self.cursor),
            lag_groups: get(&self.lag_groups),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
            read_ns: get(&self.read_ns),
            encode_ns: get(&self.encode_ns),
        }
    }
}

/// One destination being forwarded to.
struct Running {
    destination: Destination,
    stats: Arc<DestinationStats>,
    /// Stops this destination alone (a child of the collector's stop).
    stop: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
}

/// The running destinations and their counters.
#[derive(Clone)]
pub(crate) struct Forwarding {
    running: Arc<std::sync::Mutex<Vec<Running>>>,
    store: Arc<Store>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Whether the store keeps its accept log (set at open: with at
    /// least one destination configured).
    logging: bool,
}

impl Forwarding {
    fn running(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        // A panic while holding it leaves a list that is still whole.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Figures of every destination, by name.
    pub(crate) fn figures(&self) -> Vec<(String, ForwardFigures)> {
        self.running()
            .iter()
            .map(|r| (r.destination.name.clone(), r.stats.figures()))
            .collect()
    }

    /// Starts forwarding to `destinations` on `tasks` until `stop`; drops
    /// the cursors of destinations no longer configured (and the accept
    /// log, when none is). Called once at start, in the runtime: it reads
    /// the cursors in place.
    pub(crate) fn start(
        store: Arc<Store>,
        destinations: Vec<Destination>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Forwarding, hostwatch_tsdb::TsdbError> {
        let names: Vec<String> = destinations.iter().map(|d| d.name.clone()).collect();
        let cursors = prepare(&store, &names)?;
        let forwarding = Forwarding {
            running: Arc::default(),
            store: store.clone(),
            tasks: tasks.clone(),
            stop: stop.clone(),
            logging: !destinations.is_empty(),
        };
        for (destination, cursor) in destinations.into_iter().zip(cursors) {
            let stats = Arc::new(DestinationStats::default());
            forwarding.launch(destination, stats, cursor);
        }
        if forwarding.logging {
            tasks.spawn(forwarding.clone().report(store, stop));
        }
        Ok(forwarding)
    }

    /// Starts a destination's reader from `cursor`.
    fn launch(&self, destination: Destination, stats: Arc<DestinationStats>, cursor: u64) {
        stats.cursor.store(cursor, Ordering::Relaxed);
        tracing::info!(destination = %destination.name, cursor, "forwarding starts");
        let stop = self.stop.child_token();
        let reader = Reader::new(
            self.store.clone(),
            destination.clone(),
            stats.clone(),
            &self.tasks,
            stop.clone(),
        );
        let reader = self.tasks.spawn(reader.run());
        self.running().push(Running {
            destination,
            stats,
            stop,
            reader,
        });
    }

    /// Applies a reloaded configuration: destinations removed stop and
    /// lose their cursor, changed ones restart from theirs, new ones start
    /// from the present. The first destination needs a restart (the store
    /// keeps its accept log only when one was configured at start).
    /// Returns the names forwarded to.
    pub(crate) async fn reload(&self, destinations: Vec<Destination>) -> Vec<String> {
        if !self.logging && !destinations.is_empty() {
            tracing::error!(
                "[[forward]] sections added: forwarding starts at the next restart (the store keeps its accept log only when a destination is configured at start)"
            );
            return Vec::new();
        }
        let stopped: Vec<Running> = {
            let mut running = self.running();
            let (keep, stop): (Vec<Running>, Vec<Running>) = running.drain(..).partition(|r| {
                destinations
                    .iter()
                    .any(|d| d.name == r.destination.name && !d.differs(&r.destination))
            });
            *running = keep;
            stop
        };
        let mut kept_stats = HashMap::new();
        for r in stopped {
            r.stop.cancel();
            // The reader waits for its shards (bounded) and stores the cursor.
            let abort = r.reader.abort_handle();
            if tokio::time::timeout(2 * SHUTDOWN_GRACE, r.reader)
                .await
                .is_err()
            {
                abort.abort();
            }
            kept_stats.insert(r.destination.name.clone(), r.stats);
        }
        let names: Vec<String> = destinations.iter().map(|d| d.name.clone()).collect();
        let store = self.store.clone();
        let all = names.clone();
        let cursors = match blocking(move || prepare(&store, &all)).await {
            Ok(cursors) => cursors,
            Err(e) => {
                tracing::error!(error = %e, "forwarding not reloaded: cannot read the cursors");
                return self.figures().into_iter().map(|(n, _)| n).collect();
            }
        };
        for (destination, cursor) in destinations.into_iter().zip(cursors) {
            if self
                .running()
                .iter()
                .any(|r| r.destination.name == destination.name)
            {
                continue;
            }
            let stats = kept_stats.remove(&destination.name).unwrap_or_default();
            self.launch(destination, stats, cursor);
        }
        for name in kept_stats.keys() {
            tracing::info!(destination = %name, "forwarding stopped: no longer configured");
        }
        names
    }

    /// Logs the figures and trims the accept log behind the lowest cursor.
    async fn report(self, store: Arc<Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REPORT_INTERVAL) => {}
            }
            let mut lowest = u64::MAX;
            for (name, figures) in self.figures() {
                lowest = lowest.min(figures.cursor);
                tracing::info!(
                    destination = %name,
                    sent = figures.sent,
                    failed = figures.failed,
                    dropped = figures.dropped,
                    pending = figures.pending,
                    lag_groups = figures.lag_groups,
                    lag_ms = figures.lag_ms,
                    "forwarding"
                );
            }
            let store = store.clone();
            if let Err(e) = blocking(move || store.trim_accept_log(lowest)).await {
                tracing::warn!(error = %e, "cannot trim the accept log");
            }
        }
    }
}

/// Forwarding on its own, outside a collector, from a store opened with
/// its accept log (what `hostwatch-bench forward` measures).
pub struct Forwarder {
    forwarding: Forwarding,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Forwarder {
    /// Starts forwarding what `store` accepts from now on to `sections`;
    /// within a tokio runtime. The error names the section and key.
    pub fn start(store: Arc<Store>, sections: &[config::ForwardConfig]) -> Result<Self, String> {
        let destinations = config::compile_all(sections)?;
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let forwarding = Forwarding::start(store, destinations, &tasks, stop.clone())
            .map_err(|e| e.to_string())?;
        Ok(Forwarder {
            forwarding,
            tasks,
            stop,
        })
    }

    /// Figures of every destination, by name.
    pub fn figures(&self) -> Vec<(String, ForwardFigures)> {
        self.forwarding.figures()
    }

    /// Stops every destination and waits for their tasks (each bounded by
    /// its shutdown grace).
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, hostwatch_tsdb::TsdbError> + Send + 'static,
) -> Result<T, hostwatch_tsdb::TsdbError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| hostwatch_tsdb::TsdbError::Failed(format!("forwarding task: {e}")))?
}

/// The cursor of each of `names`: its stored one, or for a new
/// destination the newest accepted group (it receives what is accepted
/// from now on). Cursors of other names are dropped; with no destination,
/// the whole accept log too.
fn prepare(store: &Store, names: &[String]) -> Result<Vec<u64>, hostwatch_tsdb::TsdbError> {
    let stored = store.forward_cursors()?;
    for (name, _) in &stored {
        if !names.contains(name) {
            tracing::info!(destination = %name, "dropping the cursor of a destination no longer configured");
            store.remove_forward_cursor(name)?;
        }
    }
    if names.is_empty() {
        store.trim_accept_log(u64::MAX)?;
        return Ok(Vec::new());
    }
    let now = store.accepted_through()?;
    names
        .iter()
        .map(|name| match stored.iter().find(|(n, _)| n == name) {
            Some((_, cursor)) => Ok(*cursor),
            None => {
                store.set_forward_cursor(name, now)?;
                Ok(now)
            }
        })
        .collect()
}

/// What the reader knows of a series, by id (see [`Series`]).
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Its index in its shard's label table, or [`UNSEEN`] (not looked
    /// up yet, or unknown to the store when looked up) or [`UNWANTED`]
    /// (the matchers do not select it).
    index: u32,
    /// The read that last met it (its number), and its place in that
    /// read's series.
    read: u32,
    slot: u32,
}

const UNSEEN: u32 = u32::MAX;
const UNWANTED: u32 = u32::MAX - 1;

impl Default for Known {
    fn default() -> Self {
        Known {
            index: UNSEEN,
            read: 0,
            slot: 0,
        }
    }
}

impl Known {
    /// Its index in its shard's label table, if it is wanted.
    fn wanted(&self) -> Option<u32> {
        (self.index < UNWANTED).then_some(self.index)
    }
}

/// What the reader knows of each series, indexed by id: the store gives
/// ids densely from its first series on, so a read's series (a batch's,
/// created together) lie next to each other here, where a map would
/// hash each to a line of its own. It grows only for series the store
/// knows, so a damaged accept-log entry cannot make it huge.
#[derive(Debug, Default)]
struct Series(Vec<Known>);

impl Series {
    fn get(&self, id: u64) -> Known {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or_default()
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Known> {
        self.0.get_mut(usize::try_from(id).ok()?)
    }

    /// Sets what it knows of a series the store knows.
    fn set(&mut self, id: u64, known: Known) {
        let Ok(i) = usize::try_from(id) else {
            return;
        };
        if i >= self.0.len() {
            self.0.resize(i + 1, Known::default());
        }
        self.0[i] = known;
    }

    /// The known series, by id (for tests).
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (u64, &Known)> {
        self.0.iter().enumerate().map(|(i, k)| (i as u64, k))
    }
}

/// One read's samples for one shard.
struct ShardRead {
    /// The keys of the series new to the shard, in the order of their
    /// indexes: the shard learns their labels before it takes `batch`.
    keys: Vec<Arc<SeriesKey>>,
    /// Each series' index and points, in time order.
    batch: Batch,
}

/// What a shard receives, in order.
enum Item {
    /// The shard's series of one read, with the places they hold in its
    /// queue (released once the shard takes them).
    Series(ShardRead, OwnedSemaphorePermit),
    /// Everything before this was read from groups up to this one.
    Mark(u64),
}

/// A destination's reader: follows the accept log, feeds the shards,
/// moves the cursor.
struct Reader {
    store: Arc<Store>,
    destination: Arc<Destination>,
    stats: Arc<DestinationStats>,
    shards: Vec<ShardQueue>,
    /// The shards' tasks, awaited at shutdown.
    senders: Vec<tokio::task::JoinHandle<()>>,
    /// Per shard, the highest mark it acknowledged.
    acked: Vec<Arc<AtomicU64>>,
    /// What it knows of the series seen: used by each read on the
    /// blocking pool, then here.
    state: Arc<std::sync::Mutex<ReadState>>,
    stop: CancellationToken,
}

/// A shard queue's places: `queue.capacity`, at most what a semaphore
/// takes in one call (far beyond any memory).
fn places_of(q: &config::QueueConfig) -> u32 {
    u32::try_from(q.capacity).unwrap_or(u32::MAX)
}

/// The sending end of a shard's queue.
struct ShardQueue {
    tx: mpsc::Sender<Item>,
    /// `queue.capacity` places, one per sample waiting in the queue.
    places: Arc<Semaphore>,
}

impl Reader {
    fn new(
        store: Arc<Store>,
        destination: Destination,
        stats: Arc<DestinationStats>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let destination = Arc::new(destination);
        let cursor = stats.cursor.load(Ordering::Relaxed);
        let q = &destination.queue;
        let shards_n = q.shards;
        // Samples are bounded by the semaphore; the channel only holds
        // a few reads' messages and marks.
        let places = 64;
        let mut shards = Vec::with_capacity(q.shards);
        let mut acked = Vec::with_capacity(q.shards);
        let mut senders = Vec::with_capacity(q.shards);
        for index in 0..q.shards {
            let (tx, rx) = mpsc::channel(places);
            let ack = Arc::new(AtomicU64::new(cursor));
            let shard = Shard {
                index,
                destination: destination.clone(),
                stats: stats.clone(),
                acked: ack.clone(),
                stop: stop.clone(),
            };
            senders.push(tasks.spawn(shard.run(rx)));
            shards.push(ShardQueue {
                tx,
                places: Arc::new(Semaphore::new(places_of(q) as usize)),
            });
            acked.push(ack);
        }
        Reader {
            store,
            destination,
            stats,
            shards,
            senders,
            acked,
            state: Arc::new(std::sync::Mutex::new(ReadState::new(shards_n))),
            stop,
        }
    }

    async fn run(mut self) {
        self.follow().await;
        // Stopping: the requests in flight get a moment to be answered,
        // so that the cursor covers them and a restart does not send
        // them again.
        self.shards.clear();
        for sender in std::mem::take(&mut self.senders) {
            let abort = sender.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, sender).await.is_err() {
                abort.abort();
            }
        }
        self.advance_cursor().await;
    }

    /// Reads the accept log and feeds the shards until stopped.
    async fn follow(&mut self) {
        let name = self.destination.name.clone();
        let mut read_to = self.stats.cursor.load(Ordering::Relaxed);
        let mut attempt = 0u32;
        while !self.stop.is_cancelled() {
            self.advance_cursor().await;
            let store = self.store.clone();
            let groups = match blocking(move || store.accepted_after(read_to, GROUPS_PER_READ))
                .await
            {
                Ok(groups) => groups,
                Err(e) => {
                    tracing::warn!(destination = %name, error = %e, "cannot read the accept log");
                    let q = &self.destination.queue;
                    let delay = hostwatch_stdx::backoff(attempt, q.min_backoff, q.max_backoff);
                    attempt = attempt.saturating_add(1);
                    self.pause(delay).await;
                    continue;
                }
            };
            attempt = 0;
            if groups.is_empty() {
                self.pause(POLL_INTERVAL).await;
                continue;
            }
            // The last group fed whole: a group cut short by an error is
            // read again, so only whole groups are marked.
            let mut done = read_to;
            for chunk in chunks(groups) {
                let number = chunk.last().map_or(done, |g| g.group);
                if let Err(e) = self.feed(chunk).await {
                    tracing::warn!(destination = %name, error = %e, "cannot read accepted samples back");
                    self.pause(POLL_INTERVAL).await;
                    break;
                }
                if self.stop.is_cancelled() {
                    return;
                }
                done = number;
            }
            if done == read_to {
                continue;
            }
            for shard in &self.shards {
                if shard.tx.send(Item::Mark(done)).await.is_err() {
                    return;
                }
            }
            read_to = done;
        }
    }

    async fn pause(&self, delay: Duration) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    /// Moves the cursor to the lowest group every shard acknowledged.
    async fn advance_cursor(&self) {
        let lowest = self
            .acked
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        let store = self.store.clone();
        let name = self.destination.name.clone();
        let current = self.stats.cursor.load(Ordering::Relaxed);
        let through = if lowest > current {
            blocking(move || {
                store.set_forward_cursor(&name, lowest)?;
                store.accepted_through()
            })
            .await
        } else {
            blocking(move || store.accepted_through()).await
        };
        match through {
            Ok(through) => {
                let cursor = lowest.max(current);
                self.stats.cursor.store(cursor, Ordering::Relaxed);
                self.stats
                    .lag_groups
                    .store(through.saturating_sub(cursor), Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(destination = %self.destination.name, error = %e, "cannot store the forwarding cursor");
            }
        }
    }

    /// Reads the matching series of some groups back (in one call on the
    /// blocking pool) and hands them to their shards.
    ///
    /// The groups' samples come from their WAL frames, which hold exactly
    /// what each group accepted: only the new samples are decoded. A group
    /// the WAL no longer holds (its samples sealed and the generation
    /// deleted: a destination far behind) is read back from the head or
    /// the sealed chunks, each series once over the union of its spans in
    /// these groups (points of other groups in the union are sent again,
    /// which at least once allows). Each series' points of the chunk go
    /// out in time order, all of a shard's series in one message.
    async fn feed(&mut self, groups: Vec<AcceptedGroup>) -> Result<(), hostwatch_tsdb::TsdbError> {
        let store = self.store.clone();
        let stats = self.stats.clone();
        let destination = self.destination.clone();
        let state = self.state.clone();
        let read = blocking(move || {
            let began = std::time::Instant::now();
            let read = lock(&state).read(&store, &destination.matchers, &groups);
            stats
                .read_ns
                .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
            read
        })
        .await?;
        let mut newest = i64::MIN;
        let mut reads = Vec::with_capacity(self.shards.len());
        {
            let mut state = lock(&self.state);
            for (batch, keys) in read.into_iter().zip(&mut state.unsent) {
                if let Some(t) = batch.points.iter().map(|p| p.t_ms).max() {
                    newest = newest.max(t);
                }
                // New series go to their shard with its next samples.
                let keys = if batch.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(keys)
                };
                reads.push(ShardRead { keys, batch });
            }
        }
        self.stats
            .newest_read_ms
            .fetch_max(newest, Ordering::Relaxed);
        for (shard, read) in self.shards.iter().zip(reads) {
            if read.batch.is_empty() {
                continue;
            }
            let samples = read.batch.points.len();
            // A read larger than the queue waits for it to be empty.
            let wanted = samples.min(places_of(&self.destination.queue) as usize) as u32;
            let permit = tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                permit = shard.places.clone().acquire_many_owned(wanted) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            self.stats
                .pending
                .fetch_add(samples as u64, Ordering::Relaxed);
            if shard.tx.send(Item::Series(read, permit)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// `groups` in runs listing at most [`SERIES_PER_FEED`] series (a group
/// listing more is a run of its own).
fn chunks(groups: Vec<AcceptedGroup>) -> Vec<Vec<AcceptedGroup>> {
    let mut out: Vec<Vec<AcceptedGroup>> = Vec::new();
    let mut listed = 0;
    for group in groups {
        let n: usize = group.spans.iter().map(|s| s.series.len()).sum();
        match out.last_mut() {
            Some(run) if listed + n <= SERIES_PER_FEED => run.push(group),
            _ => {
                listed = 0;
                out.push(vec![group]);
            }
        }
        listed += n;
    }
    out
}

/// The reader's state: a panic while holding it leaves it usable (a
/// read fills its buffers afresh).
fn lock(state: &std::sync::Mutex<ReadState>) -> std::sync::MutexGuard<'_, ReadState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A destination reader's knowledge of the series, and the buffers of
/// its reads, reused from read to read.
struct ReadState {
    /// What it knows of each series seen, by id.
    series: Series,
    /// Per shard, the series it was given an index in the shard's label
    /// table for and has not yet sent there.
    unsent: Vec<Vec<Arc<SeriesKey>>>,
    /// Per shard, the number of indexes given.
    indexes: Vec<u32>,
    /// Numbers the reads, to tell the series met in this one.
    reads: u32,
    /// The series met in this read, in the order first met.
    slots: Vec<Slot>,
    /// Their pieces of points, chained per series.
    pieces: Vec<Piece>,
    /// The groups' samples from the WAL.
    wal: AcceptedSamples,
    /// Points read back over spans.
    back: Vec<Point>,
    /// The series of a read not seen before, and their keys: scratch
    /// space for looking them up in one call.
    unseen: Vec<u64>,
    keys: Vec<Option<Arc<SeriesKey>>>,
}

/// A series met in a read.
struct Slot {
    id: u64,
    index: u32,
    /// Its first and last pieces.
    head: u32,
    tail: u32,
}

/// Some points of a series: `points[start..end]` of the WAL's samples
/// or of those read back; `next` is the series' next piece (`u32::MAX`:
/// none).
struct Piece {
    from_wal: bool,
    start: usize,
    end: usize,
    next: u32,
}

const NO_PIECE: u32 = u32::MAX;

impl ReadState {
    fn new(shards: usize) -> Self {
        ReadState {
            series: Series::default(),
            unsent: vec![Vec::new(); shards],
            indexes: vec![0; shards],
            reads: 0,
            slots: Vec::new(),
            pieces: Vec::new(),
            wal: AcceptedSamples::default(),
            back: Vec::new(),
            unseen: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// The points of each series of `groups` that `matchers` select, per
    /// shard (`id % shards`), in the order first met: from the groups'
    /// WAL frames, and for the groups the WAL no longer holds, read back
    /// over their spans first (they are older); each series' points
    /// sorted by time, without duplicates. A series not seen before is
    /// looked up once (its labels then go to its shard from `unsent`).
    fn read(
        &mut self,
        store: &Store,
        matchers: &[LabelMatcher],
        groups: &[AcceptedGroup],
    ) -> Result<Vec<Batch>, hostwatch_tsdb::TsdbError> {
        self.reads = self.reads.wrapping_add(1);
        self.slots.clear();
        self.pieces.clear();
        self.back.clear();
        let numbers: Vec<u64> = groups.iter().map(|g| g.group).collect();
        let mut wal = std::mem::take(&mut self.wal);
        let read = self.read_into(store, matchers, groups, &numbers, &mut wal);
        self.wal = wal;
        read?;
        let mut out: Vec<Batch> = (0..self.indexes.len()).map(|_| Batch::default()).collect();
        let shards = out.len() as u64;
        for slot in &self.slots {
            let batch = &mut out[(slot.id % shards) as usize];
            let at = batch.points.len();
            let mut piece = slot.head;
            while let Some(p) = self.pieces.get(piece as usize) {
                let from = if p.from_wal {
                    &self.wal.points
                } else {
                    &self.back
                };
                batch.points.extend_from_slice(&from[p.start..p.end]);
                piece = p.next;
            }
            // Usually in order already: a late batch, or points read back
            // over spans and then from the WAL, are not.
            if !batch.points[at..].windows(2).all(|w| w[0].t_ms < w[1].t_ms) {
                let mut own = batch.points.split_off(at);
                own.sort_by_key(|p| p.t_ms);
                own.dedup_by_key(|p| p.t_ms);
                batch.points.extend(own);
            }
            let n = batch.points.len() - at;
            batch.series.push((slot.index, n as u32));
        }
        Ok(out)
    }

    fn read_into(
        &mut self,
        store: &Store,
        matchers: &[LabelMatcher],
        groups: &[AcceptedGroup],
        numbers: &[u64],
        wal: &mut AcceptedSamples,
    ) -> Result<(), hostwatch_tsdb::TsdbError> {
        store.accepted_samples(numbers, wal)?;
        // The groups the WAL no longer holds: each series once, over the
        // union of its spans; series with the same bounds in one call.
        let mut union: FxHashMap<u64, (i64, i64)> = FxHashMap::default();
        for (i, group) in groups.iter().enumerate() {
            if wal.runs_of(i).is_some() {
                continue;
            }
            for span in &group.spans {
                for id in &span.series {
                    let bounds = union.entry(*id).or_insert((span.start_ms, span.end_ms));
                    bounds.0 = bounds.0.min(span.start_ms);
                    bounds.1 = bounds.1.max(span.end_ms);
                }
            }
        }
        let from_wal = wal
            .groups
            .iter()
            .flatten()
            .flat_map(|r| &wal.runs[r.clone()]);
        let ids = union.keys().copied().chain(from_wal.map(|run| run.id));
        self.learn(store, matchers, ids)?;
        let mut by_bounds: FxHashMap<(i64, i64), Vec<u64>> = FxHashMap::default();
        for (id, bounds) in union {
            if self.series.get(id).wanted().is_some() {
                by_bounds.entry(bounds).or_default().push(id);
            }
        }
        for ((start, end), mut wanted) in by_bounds {
            wanted.sort_unstable();
            for (id, points) in wanted
                .iter()
                .copied()
                .zip(read_points(store, &wanted, start, end)?)
            {
                let at = self.back.len();
                self.back.extend_from_slice(&points);
                self.meet(id, false, at, self.back.len());
            }
        }
        for i in 0..groups.len() {
            let Some(range) = wal.groups[i].clone() else {
                continue;
            };
            for r in range {
                let run = wal.runs[r];
                self.meet(run.id, true, run.start, run.end);
            }
        }
        Ok(())
    }

    /// Looks up the series of `ids` not seen before, all in one call, and
    /// learns whether `matchers` select them: a selected series gets the
    /// next index in its shard (`id % shards`) and its key goes to
    /// `unsent`. A series the store does not know (yet) stays unseen:
    /// looked up again when met again.
    fn learn(
        &mut self,
        store: &Store,
        matchers: &[LabelMatcher],
        ids: impl Iterator<Item = u64>,
    ) -> Result<(), hostwatch_tsdb::TsdbError> {
        self.unseen.clear();
        self.unseen
            .extend(ids.filter(|id| self.series.get(*id).index == UNSEEN));
        if self.unseen.is_empty() {
            return Ok(());
        }
        self.unseen.sort_unstable();
        self.unseen.dedup();
        store.series_keys(&self.unseen, &mut self.keys)?;
        let read = self.reads.wrapping_sub(1);
        for (id, key) in self.unseen.iter().zip(self.keys.drain(..)) {
            let Some(key) = key else {
                continue;
            };
            let value = |name: &str| {
                if name == "__name__" {
                    Some(key.metric.as_str())
                } else {
                    key.label(name)
                }
            };
            let index = if matchers.iter().all(|m| m.matches(value)) {
                let shard = (id % self.indexes.len() as u64) as usize;
                // Far below UNWANTED: each index holds a series' labels
                // in memory.
                let index = self.indexes[shard];
                self.indexes[shard] += 1;
                self.unsent[shard].push(key);
                index
            } else {
                UNWANTED
            };
            self.series.set(
                *id,
                Known {
                    index,
                    read,
                    slot: 0,
                },
            );
        }
        Ok(())
    }

    /// Adds points `start..end` (of the WAL's samples or of those read
    /// back) of series `id`, if wanted (learned by [`ReadState::learn`]).
    fn meet(&mut self, id: u64, from_wal: bool, start: usize, end: usize) {
        if start == end {
            return;
        }
        let reads = self.reads;
        let Some(known) = self.series.get_mut(id) else {
            return;
        };
        let Some(index) = known.wanted() else {
            return;
        };
        let slots = &mut self.slots;
        let pieces = &mut self.pieces;
        let piece = pieces.len() as u32;
        let (seen, slot) = (known.read == reads, known.slot);
        // The slot is checked by id too: a read number comes round again
        // after 2^32 reads.
        let met = seen && slots.get(slot as usize).is_some_and(|s| s.id == id);
        if !met {
            known.read = reads;
            known.slot = slots.len() as u32;
        }
        pieces.push(Piece {
            from_wal,
            start,
            end,
            next: NO_PIECE,
        });
        if met {
            let s = &mut slots[slot as usize];
            let tail = std::mem::replace(&mut s.tail, piece);
            pieces[tail as usize].next = piece;
        } else {
            slots.push(Slot {
                id,
                index,
                head: piece,
                tail: piece,
            });
        }
    }
}

/// The points of each series of `ids` in `[start, end)`, in the order
/// given (none for a series the store does not know).
fn read_points(
    store: &Store,
    ids: &[u64],
    start: i64,
    end: i64,
) -> Result<Vec<Vec<hostwatch_tsdb::Point>>, hostwatch_tsdb::TsdbError> {
    let mut keys = Vec::with_capacity(ids.len());
    let mut known = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(key) = store.series_key(*id)? {
            keys.push((key, *id));
            known.push(i);
        }
    }
    let refs: Vec<(&SeriesKey, u64)> = keys.iter().map(|(k, id)| (&**k, *id)).collect();
    let mut out = vec![Vec::new(); ids.len()];
    for (i, points) in known
        .into_iter()
        .zip(store.series_points_many(&refs, start, end)?)
    {
        out[i] = points;
    }
    Ok(out)
}

/// One shard of a destination: batches its series and sends one request
/// at a time.
struct Shard {
    index: usize,
    destination: Arc<Destination>,
    stats: Arc<DestinationStats>,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Shard {
    async fn run(self, mut rx: mpsc::Receiver<Item>) {
        let q = &self.destination.queue;
        let mut encoder = Encoder::new();
        // The labels of the series the reader sent here, by index.
        let mut table = LabelTable::new(self.destination.protocol);
        let mut batch = Batch::default();
        // The newest mark received; acknowledged once the batch is answered.
        let mut mark: Option<u64> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let due = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                () = self.stop.cancelled() => return,
                () = due => None,
                item = rx.recv() => match item {
                    Some(item) => Some(item),
                    None => return,
                },
            };
            match item {
                Some(Item::Series(read, places)) => {
                    // Taken out of the queue: the reader may fill it again.
                    drop(places);
                    for key in &read.keys {
                        table.push(key);
                    }
                    for (index, mut points) in read.batch.each() {
                        // Split so that no request exceeds the limit; the
                        // batch is sent once full, so there is always room.
                        while !points.is_empty() {
                            let room = q.max_samples_per_request - batch.points.len();
                            let (now, rest) = points.split_at(room.min(points.len()));
                            batch.series.push((index as u32, now.len() as u32));
                            batch.points.extend_from_slice(now);
                            deadline.get_or_insert_with(|| tokio::time::Instant::now() + q.max_age);
                            points = rest;
                            if batch.points.len() >= q.max_samples_per_request {
                                if !self.flush(&mut encoder, &table, &mut batch).await {
                                    return;
                                }
                                deadline = None;
                            }
                        }
                    }
                }
                Some(Item::Mark(group)) => mark = Some(group),
                None => {
                    if !self.flush(&mut encoder, &table, &mut batch).await {
                        return;
                    }
                    deadline = None;
                }
            }
            if batch.is_empty() {
                if let Some(group) = mark.take() {
                    self.acked.store(group, Ordering::Release);
                }
                deadline = None;
            }
        }
    }

    /// Sends the batch until it is answered (sent or refused); false when
    /// stopped first.
    async fn flush(&self, encoder: &mut Encoder, table: &LabelTable, batch: &mut Batch) -> bool {
        if batch.is_empty() {
            return true;
        }
        let n = batch.points.len() as u64;
        let newest = batch
            .points
            .iter()
            .map(|p| p.t_ms)
            .max()
            .unwrap_or(i64::MIN);
        let began = std::time::Instant::now();
        let encoded = encoder.encode(table, batch);
        self.stats
            .encode_ns
            .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let q = &self.destination.queue;
        let name = &self.destination.name;
        let mut attempt = 0u32;
        loop {
            let body = match &encoded {
                Ok(body) => body.clone(),
                Err(message) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(destination = %name, shard = self.index, samples = n, reason = %message, "cannot encode a request: dropped");
                    break;
                }
            };
            match send::post(&self.destination, body).await {
                Outcome::Sent { written } => {
                    // A 2.0 receiver says how many it wrote; the rest it
                    // refused for good.
                    let written = written.map_or(n, |w| w.min(n));
                    self.stats.sent.fetch_add(written, Ordering::Relaxed);
                    if written < n {
                        self.stats.dropped.fetch_add(n - written, Ordering::Relaxed);
                        tracing::warn!(destination = %name, shard = self.index, samples = n, written, "the receiver wrote part of a request: the rest dropped");
                    }
                    self.stats
                        .newest_sent_ms
                        .fetch_max(newest, Ordering::Relaxed);
                    break;
                }
                Outcome::Refused(message) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(destination = %name, shard = self.index, samples = n, reason = %message, "the receiver refused a request: dropped");
                    break;
                }
                Outcome::Retry { after, message } => {
                    self.stats.failed.fetch_add(n, Ordering::Relaxed);
                    let delay = after.unwrap_or_else(|| {
                        hostwatch_stdx::backoff(attempt, q.min_backoff, q.max_backoff)
                    });
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(destination = %name, shard = self.index, samples = n, attempt, retry_in = ?delay, reason = %message, "a request failed: retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        let _ = self
            .stats
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
        let read = self.stats.newest_read_ms.load(Ordering::Relaxed);
        let sent = self.stats.newest_sent_ms.load(Ordering::Relaxed);
        let lag = if self.stats.pending.load(Ordering::Relaxed) == 0 {
            0
        } else {
            read.saturating_sub(sent).max(0)
        };
        self.stats.lag_ms.store(lag, Ordering::Relaxed);
        batch.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_tsdb::{Batch, Label, Options, Point, SeriesInput};

    const HOUR: i64 = 3_600_000;

    fn p(t_ms: i64) -> Point {
        Point {
            t_ms,
            value: t_ms as f64,
        }
    }

    fn append(store: &Store, seq: u64, series: &[&str], points: &[Point]) {
        let batch = Batch {
            host: "h".to_owned(),
            source: 1,
            seq,
            series: series
                .iter()
                .map(|s| SeriesInput {
                    metric: "m".to_owned(),
                    labels: vec![Label::new("s", *s)],
                    points: points.to_vec(),
                })
                .collect(),
            processes: vec![],
            malformed: 0,
        };
        assert_eq!(store.append(&batch).unwrap().rejected.total(), 0);
    }

    /// (series name, points) of each series read, by a reader of two
    /// shards that wants series whose `s` is not "skip", whose state
    /// `state` keeps from read to read.
    fn read(store: &Store, state: &mut ReadState) -> Vec<(String, Vec<Point>)> {
        let groups = store.accepted_after(0, usize::MAX).unwrap();
        let matchers = [LabelMatcher::parse("s!=skip").unwrap()];
        let batches = state.read(store, &matchers, &groups).unwrap();
        assert_eq!(batches.len(), 2);
        let mut out = Vec::new();
        for (shard, batch) in batches.iter().enumerate() {
            for (index, points) in batch.each() {
                // The series given an index in this shard, by index.
                let key = state
                    .series
                    .iter()
                    .filter(|(id, _)| *id % 2 == shard as u64)
                    .find(|(_, known)| known.wanted() == Some(index as u32))
                    .map(|(id, _)| store.series_key(id).unwrap().unwrap())
                    .unwrap();
                out.push((key.label("s").unwrap().to_owned(), points.to_vec()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The same samples, in time order, for the matching series alone,
    /// whether the groups come from the WAL or, once sealed and gone from
    /// it, are read back over their spans; a late batch included.
    #[test]
    fn groups_read_the_same_from_the_wal_and_from_their_spans() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            maintenance_interval: None,
            accept_log: true,
            clock: Arc::new(move || 10 * HOUR),
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let t = 10 * HOUR - 60_000;
        append(&store, 1, &["a", "b", "skip"], &[p(t), p(t + 10)]);
        append(&store, 2, &["a"], &[p(t + 20)]);
        append(&store, 3, &["a"], &[p(t - 1_000)]);
        let mut state = ReadState::new(2);
        let want = vec![
            (
                "a".to_owned(),
                vec![p(t - 1_000), p(t), p(t + 10), p(t + 20)],
            ),
            ("b".to_owned(), vec![p(t), p(t + 10)]),
        ];
        assert_eq!(read(&store, &mut state), want);
        let groups: Vec<u64> = store
            .accepted_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|g| g.group)
            .collect();
        // Each wanted series learned once, to go to its shard.
        let unsent = |state: &ReadState| state.unsent.iter().map(Vec::len).sum::<usize>();
        assert_eq!(unsent(&state), 2);
        let mut wal = AcceptedSamples::default();
        store.accepted_samples(&groups, &mut wal).unwrap();
        assert!(wal.groups.iter().all(Option::is_some));
        assert!(store.seal_all().unwrap().wal_generations_deleted > 0);
        store.accepted_samples(&groups, &mut wal).unwrap();
        assert!(wal.groups.iter().all(Option::is_none));
        assert_eq!(read(&store, &mut state), want);
        assert_eq!(unsent(&state), 2);
    }
}
