//! Batches waiting for the collector's acknowledgement, in memory and
//! bounded by bytes. (The durable on-disk spool replaces it in a later
//! change; its interface stays.)

use hostwatch_proto::v1::{Batch, SeriesPoints};
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// The unacknowledged batches, oldest first.
pub struct Queue {
    inner: Mutex<Inner>,
    /// Wakes the shipper when a batch arrives.
    pushed: Notify,
    max_bytes: usize,
}

struct Inner {
    next_seq: u64,
    batches: VecDeque<(Batch, usize)>,
    bytes: usize,
    dropped_total: u64,
}

impl Queue {
    pub fn new(max_bytes: usize) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                next_seq: 1,
                batches: VecDeque::new(),
                bytes: 0,
                dropped_total: 0,
            }),
            pushed: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the queue consistent at each step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `series` as the next batch and queues it; when over the byte
    /// bound, drops the oldest batches and counts them. Returns the sequence.
    pub fn push(&self, series: Vec<SeriesPoints>) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let batch = Batch {
            seq,
            series,
            dropped_batches_total: inner.dropped_total,
            processes: Vec::new(),
        };
        let size = batch.encoded_len();
        inner.bytes += size;
        inner.batches.push_back((batch, size));
        while inner.bytes > self.max_bytes && inner.batches.len() > 1 {
            if let Some((old, old_size)) = inner.batches.pop_front() {
                inner.bytes -= old_size;
                inner.dropped_total += 1;
                tracing::warn!(batch.seq = old.seq, "queue full: dropped the oldest batch");
            }
        }
        drop(inner);
        self.pushed.notify_one();
        seq
    }

    /// The oldest batch with a sequence above `seq`.
    pub fn next_after(&self, seq: u64) -> Option<Batch> {
        let inner = self.lock();
        inner
            .batches
            .iter()
            .find(|(b, _)| b.seq > seq)
            .map(|(b, _)| b.clone())
    }

    /// Forgets every batch up to and including `seq`: the collector has it.
    pub fn ack_through(&self, seq: u64) {
        let mut inner = self.lock();
        while inner.batches.front().is_some_and(|(b, _)| b.seq <= seq) {
            if let Some((_, size)) = inner.batches.pop_front() {
                inner.bytes -= size;
            }
        }
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.lock().batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches dropped because the queue was full, since start.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Completes after the next [`Queue::push`] (or at once if one happened
    /// since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Vec<SeriesPoints> {
        vec![SeriesPoints {
            metric: "m".into(),
            labels: vec![],
            timestamps_ms: vec![1; n],
            values: vec![1.0; n],
        }]
    }

    #[test]
    fn numbers_acks_and_iterates_in_order() {
        let queue = Queue::new(1 << 20);
        assert_eq!(queue.push(series(1)), 1);
        assert_eq!(queue.push(series(1)), 2);
        assert_eq!(queue.push(series(1)), 3);
        assert_eq!(queue.next_after(0).unwrap().seq, 1);
        assert_eq!(queue.next_after(2).unwrap().seq, 3);
        assert!(queue.next_after(3).is_none());
        queue.ack_through(2);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_after(0).unwrap().seq, 3);
    }

    #[test]
    fn drops_oldest_when_full_and_reports_the_count() {
        let queue = Queue::new(2_000);
        for _ in 0..10 {
            queue.push(series(50));
        }
        assert!(queue.len() < 10);
        let dropped = queue.dropped_total();
        assert_eq!(dropped as usize + queue.len(), 10);
        let newest = queue.push(series(1));
        let batch = queue.next_after(newest - 1).unwrap();
        assert_eq!(batch.dropped_batches_total, queue.dropped_total());
    }
}
