//! One delivery worker per hook: sends the hook's outbox entries oldest
//! first (so a resolution never overtakes its firing), deletes each once
//! delivered, and retries with jittered exponential backoff when the
//! hook's outcome asks for it. A notification is given up (and logged as
//! an error) after a permanent failure or after `retry_for`.

use crate::engine::{Inner, lock};
use crate::hooks::{Hook, Outcome};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
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
    loop {
        if stop.is_cancelled() {
            return;
        }
        let entry = match inner.persist.outbox_first(&hook.name) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => continue,
                }
            }
            Err(e) => {
                tracing::error!(hook = %hook.name, error = %e, "cannot read the alert outbox");
                tokio::select! {
                    _ = stop.cancelled() => return,
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
            remove(&inner, &hook, entry.id);
            continue;
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = hook.deliver(&entry.notification, &entry.key, now) => outcome,
        };
        match outcome {
            Outcome::Delivered => {
                tracing::debug!(hook = %hook.name, notification.key = %entry.key, status = %entry.notification.status, "notification delivered");
                lock(&inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .delivered += 1;
                remove(&inner, &hook, entry.id);
            }
            Outcome::Failed(reason) => {
                tracing::error!(hook = %hook.name, notification.key = %entry.key, error = %reason, "notification refused; not retried");
                lock(&inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .failed += 1;
                remove(&inner, &hook, entry.id);
            }
            Outcome::Retry(reason) => {
                lock(&inner.stats)
                    .entry(hook.name.clone())
                    .or_default()
                    .retried += 1;
                let delay = backoff(attempt, hook.min_backoff, hook.max_backoff);
                attempt = attempt.saturating_add(1);
                tracing::warn!(hook = %hook.name, notification.key = %entry.key, attempt, retry_in = ?delay, error = %reason, "notification not delivered; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn remove(inner: &Inner, hook: &Hook, id: u64) {
    if let Err(e) = inner.persist.outbox_remove(&hook.name, id) {
        tracing::error!(hook = %hook.name, error = %e, "cannot remove a finished notification from the outbox");
    }
}

/// `min * 2^attempt`, capped at `max`, with full jitter over its upper
/// half so that many collectors' retries spread out.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..30 {
            let d = backoff(attempt, min, max);
            let ceiling = min.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }
}
