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
//! samples waiting are bounded by `queue.capacity`). Each shard batches by size
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
use hostwatch_tsdb::{AcceptedGroup, SeriesKey, Store};
use rustc_hash::FxHashMap;
use send::{Encoder, Outcome, SeriesLabels, SeriesSamples};
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

/// Labels of each series seen (`None`: not matched), by id.
type LabelMap = FxHashMap<u64, Option<Arc<SeriesLabels>>>;

/// What a shard receives, in order.
enum Item {
    /// The shard's series of one read, with the places they hold in its
    /// queue (released once the shard takes them).
    Series(Vec<SeriesSamples>, OwnedSemaphorePermit),
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
    /// Labels of each series seen (`None`: not matched), by id.
    labels: LabelMap,
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
            labels: LabelMap::default(),
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
        self.learn(&groups).await?;
        let store = self.store.clone();
        let stats = self.stats.clone();
        // Lent to the read, which keeps the matching series alone.
        let labels = std::mem::take(&mut self.labels);
        let (labels, read) = blocking(move || {
            let began = std::time::Instant::now();
            let read = read_groups(&store, &groups, &labels);
            stats
                .read_ns
                .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
            Ok((labels, read))
        })
        .await?;
        self.labels = labels;
        let n = self.shards.len();
        let mut per_shard: Vec<(Vec<SeriesSamples>, usize)> =
            (0..n).map(|_| (Vec::new(), 0)).collect();
        let mut newest = i64::MIN;
        for (id, labels, points) in read? {
            if let Some(last) = points.last() {
                newest = newest.max(last.t_ms);
            }
            let (series, samples) = &mut per_shard[(id % n as u64) as usize];
            *samples += points.len();
            series.push(SeriesSamples { labels, points });
        }
        self.stats
            .newest_read_ms
            .fetch_max(newest, Ordering::Relaxed);
        for (shard, (series, samples)) in self.shards.iter().zip(per_shard) {
            if series.is_empty() {
                continue;
            }
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
            if shard.tx.send(Item::Series(series, permit)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Looks up, in one call, the keys of the groups' series not seen
    /// before, and whether the destination wants each (its labels if so).
    async fn learn(&mut self, groups: &[AcceptedGroup]) -> Result<(), hostwatch_tsdb::TsdbError> {
        let mut unknown: Vec<u64> = groups
            .iter()
            .flat_map(|g| &g.spans)
            .flat_map(|s| s.series.iter().copied())
            .filter(|id| !self.labels.contains_key(id))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        unknown.dedup();
        let store = self.store.clone();
        let keys = blocking(move || {
            unknown
                .into_iter()
                .map(|id| Ok((id, store.series_key(id)?)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        for (id, key) in keys {
            // A series the store does not know (yet) is looked up again.
            let Some(key) = key else { continue };
            let value = |name: &str| {
                if name == "__name__" {
                    Some(key.metric.as_str())
                } else {
                    key.label(name)
                }
            };
            let wanted = self.destination.matchers.iter().all(|m| m.matches(value));
            self.labels
                .insert(id, wanted.then(|| Arc::new(SeriesLabels::new(&key))));
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

/// One series read for a destination: its id, its labels, its points.
type ReadSeries = (u64, Arc<SeriesLabels>, Vec<hostwatch_tsdb::Point>);

/// Labels and points of each series of `groups` that `labels` matches,
/// in the order first met: from the groups' WAL frames, and for the
/// groups the WAL no longer holds, read back over their spans first (they
/// are older); each series' points sorted by time, without duplicates.
fn read_groups(
    store: &Store,
    groups: &[AcceptedGroup],
    labels: &LabelMap,
) -> Result<Vec<ReadSeries>, hostwatch_tsdb::TsdbError> {
    let numbers: Vec<u64> = groups.iter().map(|g| g.group).collect();
    let from_wal = store.accepted_samples(&numbers)?;
    let mut out: Vec<ReadSeries> = Vec::new();
    let mut slot: FxHashMap<u64, usize> = FxHashMap::default();
    let mut push = |id: u64, points: &mut Vec<hostwatch_tsdb::Point>| {
        if points.is_empty() {
            return;
        }
        if let Some(&i) = slot.get(&id) {
            out[i].2.append(points);
        } else if let Some(Some(labels)) = labels.get(&id) {
            slot.insert(id, out.len());
            out.push((id, labels.clone(), std::mem::take(points)));
        }
    };
    // The groups the WAL no longer holds: each series once, over the
    // union of its spans; series with the same bounds in one call.
    let mut union: FxHashMap<u64, (i64, i64)> = FxHashMap::default();
    for (group, samples) in groups.iter().zip(&from_wal) {
        if samples.is_some() {
            continue;
        }
        for span in &group.spans {
            for id in &span.series {
                if !labels.get(id).is_some_and(Option::is_some) {
                    continue;
                }
                let bounds = union.entry(*id).or_insert((span.start_ms, span.end_ms));
                bounds.0 = bounds.0.min(span.start_ms);
                bounds.1 = bounds.1.max(span.end_ms);
            }
        }
    }
    let mut by_bounds: FxHashMap<(i64, i64), Vec<u64>> = FxHashMap::default();
    for (id, bounds) in union {
        by_bounds.entry(bounds).or_default().push(id);
    }
    for ((start, end), mut ids) in by_bounds {
        ids.sort_unstable();
        for (id, mut points) in ids
            .iter()
            .copied()
            .zip(read_points(store, &ids, start, end)?)
        {
            push(id, &mut points);
        }
    }
    for (id, mut points) in from_wal.into_iter().flatten().flatten() {
        push(id, &mut points);
    }
    for (_, _, points) in &mut out {
        // Usually in order already: a late batch, or points read back over
        // spans and then from the WAL, are not.
        if !points.windows(2).all(|w| w[0].t_ms < w[1].t_ms) {
            points.sort_by_key(|p| p.t_ms);
            points.dedup_by_key(|p| p.t_ms);
        }
    }
    Ok(out)
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
        let mut encoder = Encoder::new(self.destination.protocol);
        let mut batch: Vec<SeriesSamples> = Vec::new();
        let mut samples = 0usize;
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
                Some(Item::Series(series, places)) => {
                    // Taken out of the queue: the reader may fill it again.
                    drop(places);
                    for SeriesSamples { labels, mut points } in series {
                        // Split so that no request exceeds the limit; the
                        // batch is sent once full, so there is always room.
                        while !points.is_empty() {
                            let room = q.max_samples_per_request - samples;
                            let rest = if points.len() > room {
                                points.split_off(room)
                            } else {
                                Vec::new()
                            };
                            samples += points.len();
                            batch.push(SeriesSamples {
                                labels: labels.clone(),
                                points,
                            });
                            deadline.get_or_insert_with(|| tokio::time::Instant::now() + q.max_age);
                            points = rest;
                            if samples >= q.max_samples_per_request {
                                if !self.flush(&mut encoder, &mut batch, &mut samples).await {
                                    return;
                                }
                                deadline = None;
                            }
                        }
                    }
                }
                Some(Item::Mark(group)) => mark = Some(group),
                None => {
                    if !self.flush(&mut encoder, &mut batch, &mut samples).await {
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
    async fn flush(
        &self,
        encoder: &mut Encoder,
        batch: &mut Vec<SeriesSamples>,
        samples: &mut usize,
    ) -> bool {
        if batch.is_empty() {
            return true;
        }
        let n = *samples as u64;
        let newest = batch
            .iter()
            .filter_map(|s| s.points.last())
            .map(|p| p.t_ms)
            .max()
            .unwrap_or(i64::MIN);
        let began = std::time::Instant::now();
        let encoded = encoder.encode(batch);
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
        *samples = 0;
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

    /// (series name, points) of each series read.
    fn read(store: &Store, labels: &LabelMap) -> Vec<(String, Vec<Point>)> {
        let groups = store.accepted_after(0, usize::MAX).unwrap();
        let mut out: Vec<(String, Vec<Point>)> = read_groups(store, &groups, labels)
            .unwrap()
            .into_iter()
            .map(|(id, _, points)| {
                let key = store.series_key(id).unwrap().unwrap();
                (key.label("s").unwrap().to_owned(), points)
            })
            .collect();
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
        let mut labels = LabelMap::default();
        for (key, id) in store.select("m", &[]).unwrap() {
            let wanted = key.label("s") != Some("skip");
            labels.insert(id, wanted.then(|| Arc::new(SeriesLabels::new(&key))));
        }
        let want = vec![
            (
                "a".to_owned(),
                vec![p(t - 1_000), p(t), p(t + 10), p(t + 20)],
            ),
            ("b".to_owned(), vec![p(t), p(t + 10)]),
        ];
        assert_eq!(read(&store, &labels), want);
        let groups: Vec<u64> = store
            .accepted_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|g| g.group)
            .collect();
        assert!(
            store
                .accepted_samples(&groups)
                .unwrap()
                .iter()
                .all(Option::is_some)
        );
        assert!(store.seal_all().unwrap().wal_generations_deleted > 0);
        assert!(
            store
                .accepted_samples(&groups)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(read(&store, &labels), want);
    }
}
