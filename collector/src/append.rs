//! Agents' batches into the store through two threads of their own, not
//! tokio's blocking pool: one hop per batch there and one back.
//!
//! A stream hands its batch to the *submit* thread, which puts it in the
//! store's head and queues its WAL frame (`Store::submit`), and passes it
//! on to the *commit* thread. That one takes every batch waiting, makes
//! them durable with one group commit (the first `Store::wait` writes and
//! flushes everything queued; the others find their group durable), and
//! then, batch by batch, evaluates it (not a replay) and marks its host
//! seen, and wakes its stream to send the acknowledgement. While the
//! commit thread flushes, the submit thread queues the next group, so the
//! flushes follow the disk as before, with one flusher and no waiter woken
//! for nothing; under load, group commits start at most every
//! [`COMMIT_INTERVAL`], so each carries more batches.
//!
//! A stream has at most one batch here at a time (it waits for the
//! answer before it reads the next message), so both queues hold at most
//! one batch per stream; they are bounded all the same.

use crate::hosts::HostRegistry;
use crate::metrics::{Evaluation, SelfMetrics};
use hostwatch_alerting::{Alerting, BatchContext};
use hostwatch_tsdb::{AppendOutcome, Batch, Pending, Store, TsdbError};
use std::sync::Arc;
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Batches waiting for the submit thread, and between the two threads.
const QUEUE: usize = 4096;
/// The shortest time from one group commit's start to the next: each
/// costs sled a write, an fsync and the wake-ups of its I/O threads, so
/// under load a group takes what came in this long, for at most this much
/// more acknowledgement latency; a batch after a quiet spell is committed
/// at once.
const COMMIT_INTERVAL: Duration = Duration::from_millis(10);

/// A batch's answer: the store's outcome once durable, or why not.
type Answer = Result<AppendOutcome, TsdbError>;

/// What the submit thread is asked.
enum Job {
    Append {
        batch: Batch,
        context: BatchContext,
        answer: oneshot::Sender<Answer>,
    },
    /// Finish what came before, then end both threads.
    Stop,
}

/// A batch submitted, waiting for its group to be durable.
struct Submitted {
    batch: Batch,
    context: BatchContext,
    pending: Pending,
    answer: oneshot::Sender<Answer>,
}

/// Why a batch has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error(transparent)]
    Store(#[from] TsdbError),
    /// The threads have stopped (the collector is stopping) or died.
    #[error("the collector is stopping: batches are no longer stored")]
    Stopped,
}

/// The handle streams append through; cheap to clone.
#[derive(Clone)]
pub(crate) struct Appender {
    jobs: mpsc::Sender<Job>,
    /// Fires (dropped) once both threads have ended.
    ended: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
}

/// What the commit thread needs besides the store.
pub(crate) struct AfterDurable {
    pub(crate) alerting: Alerting,
    pub(crate) hosts: HostRegistry,
    pub(crate) metrics: Arc<SelfMetrics>,
}

impl Appender {
    /// Starts the two threads over `store`.
    pub(crate) fn start(store: Arc<Store>, after: AfterDurable) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::channel(QUEUE);
        let (submitted, commits) = sync_mpsc::sync_channel(QUEUE);
        let (ended_tx, ended) = oneshot::channel();
        let commit_store = store.clone();
        // The commit thread ends once the submit thread (its sender) is
        // gone and it answered everything before; `stop` waits for that.
        // Everything it holds of the databases (the store, and the state
        // database through alerting and the registry) goes before `stop`
        // is told, so a collector started right after can open them.
        std::thread::Builder::new()
            .name("ingest-commit".into())
            .spawn(move || {
                commit_loop(&commit_store, &after, commits);
                drop(after);
                drop(commit_store);
                drop(ended_tx);
            })?;
        std::thread::Builder::new()
            .name("ingest-submit".into())
            .spawn(move || submit_loop(store, inbox, submitted))?;
        Ok(Appender {
            jobs,
            ended: Arc::new(tokio::sync::Mutex::new(Some(ended))),
        })
    }

    /// Stores `batch` and returns once it is durable (and evaluated, and
    /// its host seen), with the store's outcome.
    pub(crate) async fn append(
        &self,
        batch: Batch,
        context: BatchContext,
    ) -> Result<AppendOutcome, AppendError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job::Append {
                batch,
                context,
                answer,
            })
            .await
            .map_err(|_| AppendError::Stopped)?;
        Ok(answered.await.map_err(|_| AppendError::Stopped)??)
    }

    /// Lets the batches already handed over finish (durable, answered),
    /// then ends both threads; returns once they have ended.
    pub(crate) async fn stop(&self) {
        let _ = self.jobs.send(Job::Stop).await;
        if let Some(ended) = self.ended.lock().await.take() {
            let _ = ended.await;
        }
    }
}

/// The submit thread: each batch into the head and the commit queue, in
/// the order they came.
fn submit_loop(
    store: Arc<Store>,
    mut inbox: mpsc::Receiver<Job>,
    submitted: sync_mpsc::SyncSender<Submitted>,
) {
    while let Some(Job::Append {
        batch,
        context,
        answer,
    }) = inbox.blocking_recv()
    {
        match store.submit(&batch) {
            Ok(pending) => {
                let next = Submitted {
                    batch,
                    context,
                    pending,
                    answer,
                };
                if submitted.send(next).is_err() {
                    // The commit thread died: this batch's stream is told
                    // (its answer dropped), and so are those after it.
                    break;
                }
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        }
    }
    // The store's handle goes before the commit thread can end (it ends
    // once `submitted` is gone), so a stopped appender holds no store.
    drop(store);
    drop(submitted);
}

/// The commit thread: everything submitted so far made durable at once,
/// then each batch's evaluation and answer.
fn commit_loop(store: &Store, after: &AfterDurable, commits: sync_mpsc::Receiver<Submitted>) {
    let mut group = Vec::new();
    let mut last_commit: Option<Instant> = None;
    while let Ok(first) = commits.recv() {
        // Batches that came within COMMIT_INTERVAL of the last commit
        // wait for the rest of it, and are joined meanwhile by others.
        if let Some(due) = last_commit.map(|at| at + COMMIT_INTERVAL) {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        last_commit = Some(Instant::now());
        group.push(first);
        group.extend(commits.try_iter().take(QUEUE));
        for s in group.drain(..) {
            // The first one still to be made durable writes and flushes
            // every frame queued until then, the others' included.
            let result = store.wait(s.pending);
            if let Ok(outcome) = &result {
                // Evaluated once, after it is durable; a replay the store
                // skipped was evaluated when first stored.
                if !outcome.duplicate {
                    after.metrics.evaluated(Evaluation::Batch, || {
                        after.alerting.observe(&s.batch, s.context)
                    });
                }
                after.hosts.seen(&s.batch.host);
            }
            let _ = s.answer.send(result);
        }
    }
}
