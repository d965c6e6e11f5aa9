//! One delivery worker per hook: sends the hook's notifications oldest
//! first (so a resolution never overtakes its firing), from the outbox and
//! from memory (those the outbox could not take), takes each off its queue
//! once delivered, and retries with jittered exponential backoff when the
//! hook's outcome asks for it: after the backoff, or after the receiver's
//! `Retry-After` (capped at `hostwatch_stdx::MAX_RETRY_AFTER`) when that is later;
//! the time of that next attempt is in the hook's `DeliveryStats`. A
//! notification is given up (and logged as
//! an error) after a permanent failure or after `retry_for`.
//!
//! While the outbox cannot be written, a delivered entry cannot be removed
//! from it: the worker remembers it as done, passes over it, and removes
//! it once the database is writable again.

use crate::AlertingError;
use crate::engine::{Inner, lock};
use crate::hooks::{Hook, Outcome};
use crate::persist::OutboxEntry;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) async fn worker(
    inner: Arc<Inner>,
    hook: Arc<Hook>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut attempt: u32 = 0;
    let mut current: Option<u64> = None;
    // Finished, but maybe still in the outbox (it could not be written).
    let mut done: BTreeSet<u64> = BTreeSet::new();
    loop {
        if stop.is_cancelled() {
            return;
        }
        remove_done(&inner, &hook, &mut done);
        let entry = match next(&inner, &hook, &done) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => continue,
                }
            }
            Err(e) => {
                if !matches!(e, AlertingError::StateUnavailable(_)) {
                    tracing::error!(hook = %hook.name, error = %e, "cannot read the alert outbox");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep(hook.max_backoff) => continue,
                }
            }
        };
        if current != Some(entry.id) {
            current = Some(entry.id);
            attempt = 0;
        }
        let now = inner.clock.now_ms();
        if now - entry.created_ms > hook.retry_for_ms {
            tracing::error!(hook = %hook.name, notification.key = %entry.key, attempts = attempt, "notification not delivered within retry_for; given up");
            lock(&inner.stats)
                .entry(hook.name.clone())
                .or_default()
                .failed += 1;
            finish(&inner, &hook, entry.id, &mut done);
            continue;
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = hook.deliver(&entry.notification, &entry.key, entry.thread.as_deref(), now) => outcome,
        };
        match outcome {
            Outcome::Delivered(answer) => {
                tracing::debug!(hook = %hook.name, notification.key = %entry.key, status = %entry.notification.status, %answer, "notification delivered");
                lock(&inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .delivered += 1;
                finish(&inner, &hook, entry.id, &mut done);
            }
            Outcome::Failed(reason) => {
                tracing::error!(hook = %hook.name, notification.key = %entry.key, error = %reason, "notification refused; not retried");
                lock(&inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .failed += 1;
                finish(&inner, &hook, entry.id, &mut done);
            }
            Outcome::Retry { answer, after } => {
                let backoff = hostwatch_stdx::backoff(attempt, hook.min_backoff, hook.max_backoff);
                // Never sooner than the receiver asked (already capped at
                // MAX_RETRY_AFTER), nor than the hook's own backoff.
                let delay = after.map_or(backoff, |after| after.max(backoff));
                let next_ms = inner
                    .clock
                    .now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                {
                    let mut stats = lock(&inner.stats);
                    let stats = stats.entry(hook.name.clone()).or_default();
                    stats.retried += 1;
                    stats.next_attempt_ms = Some(next_ms);
                }
                attempt = attempt.saturating_add(1);
                tracing::warn!(hook = %hook.name, notification.key = %entry.key, attempt, retry_in = ?delay, retry_after = ?after, error = %answer, "notification not delivered; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The hook's oldest notification: the outbox's first, or the first of
/// those in memory if older. What the outbox held before it failed is
/// older than anything in memory, and what it takes after is newer.
fn next(
    inner: &Inner,
    hook: &Hook,
    done: &BTreeSet<u64>,
) -> Result<Option<OutboxEntry>, AlertingError> {
    let memory = lock(&inner.unqueued)
        .get(&hook.name)
        .and_then(|queue| queue.front().cloned());
    match (inner.persist.outbox_first(&hook.name, done), memory) {
        (Ok(Some(durable)), Some(memory)) if memory.created_ms < durable.created_ms => {
            Ok(Some(memory))
        }
        (Ok(Some(durable)), _) => Ok(Some(durable)),
        (_, Some(memory)) => Ok(Some(memory)),
        (result, None) => result,
    }
}

/// Takes a finished notification off its queue. An entry whose outbox
/// write failed may still be in the outbox (sled may have it in memory or
/// on disk), so every finished id is also removed from there.
fn finish(inner: &Inner, hook: &Hook, id: u64, done: &mut BTreeSet<u64>) {
    if let Some(stats) = lock(&inner.stats).get_mut(&hook.name) {
        stats.next_attempt_ms = None;
    }
    if let Some(queue) = lock(&inner.unqueued).get_mut(&hook.name) {
        queue.retain(|e| e.id != id);
    }
    done.insert(id);
    remove_done(inner, hook, done);
}

/// Removes finished notifications from the outbox, keeping those it
/// cannot remove now (the database cannot be written) for later.
fn remove_done(inner: &Inner, hook: &Hook, done: &mut BTreeSet<u64>) {
    done.retain(
        |&id| match inner.persist.outbox_remove(&hook.name, id) {
            Ok(()) => false,
            Err(AlertingError::StateUnavailable(_)) => true,
            Err(e) => {
                tracing::error!(hook = %hook.name, error = %e, "cannot remove a finished notification from the outbox");
                false
            }
        },
    );
}
