//! Streams queued batches to the collector and removes them once
//! acknowledged; reconnects with jittered exponential backoff.

use crate::queue::Queue;
use hostwatch_pki::transport::{ClientTarget, ConnectError, connect};
use hostwatch_proto::v1::agent_message::Kind as AgentKind;
use hostwatch_proto::v1::collector_message::Kind as CollectorKind;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{AgentMessage, Goodbye, Hello};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// How long a stopping agent keeps sending what it has queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnection delay; doubles up to the configured maximum.
const BACKOFF_BASE: Duration = Duration::from_millis(250);

pub(crate) struct Shipper {
    pub(crate) target: ClientTarget,
    pub(crate) queue: Arc<Queue>,
    pub(crate) hello: Hello,
    pub(crate) max_in_flight: usize,
    pub(crate) max_backoff: Duration,
    pub(crate) max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("collector refused: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("collector closed the stream")]
    Closed,
    #[error("collector sent {0} where a Welcome was expected")]
    NoWelcome(&'static str),
}

impl SessionError {
    /// Errors that another attempt soon will not fix: a refused identity or
    /// a protocol violation. Still retried (certificates get fixed and
    /// reloaded), but at the slowest pace.
    fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Status(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument))
    }
}

impl Shipper {
    /// Ships until `stop` completes, then drains for a while and says goodbye.
    pub(crate) async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut attempt: u32 = 0;
        loop {
            let mut welcomed = false;
            let result = self.session(&mut stop, &mut welcomed).await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    if welcomed {
                        attempt = 0;
                    }
                    let delay = if e.is_permanent() {
                        tracing::error!(error = %e, "collector refused this agent");
                        self.max_backoff
                    } else {
                        tracing::warn!(error = %e, queued = self.queue.len(), "not connected to the collector");
                        backoff(attempt, self.max_backoff)
                    };
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One stream; `Ok` only after a clean stop.
    async fn session(
        &self,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        welcomed: &mut bool,
    ) -> Result<(), SessionError> {
        let (channel, _) = tokio::select! {
            _ = stop.as_mut() => return Ok(()),
            connected = connect(&self.target) => connected?,
        };
        let mut client = IngestClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let (outbound, rx) = mpsc::channel(self.max_in_flight + 2);
        let hello = AgentMessage {
            kind: Some(AgentKind::Hello(self.hello.clone())),
        };
        // Cannot fail: the receiver is alive and the channel has room.
        let _ = outbound.try_send(hello);
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let last_stored = match inbound.message().await? {
            Some(message) => match message.kind {
                Some(CollectorKind::Welcome(w)) => w.last_stored_seq,
                Some(CollectorKind::Ack(_)) => return Err(SessionError::NoWelcome("an Ack")),
                None => return Err(SessionError::NoWelcome("an empty message")),
            },
            None => return Err(SessionError::Closed),
        };
        *welcomed = true;
        self.queue.ack_through(last_stored);
        tracing::info!(collector = %self.target.address, last_stored, queued = self.queue.len(), "connected to the collector");

        let mut sent = last_stored;
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let pushed = self.queue.pushed();
            while in_flight.len() < self.max_in_flight {
                let Some(batch) = self.queue.next_after(sent) else {
                    break;
                };
                sent = batch.seq;
                in_flight.push_back(batch.seq);
                let message = AgentMessage {
                    kind: Some(AgentKind::Batch(batch)),
                };
                if outbound.send(message).await.is_err() {
                    return Err(SessionError::Closed);
                }
            }
            if let Some(deadline) = drain_deadline
                && (in_flight.is_empty() || Instant::now() >= deadline)
            {
                let goodbye = AgentMessage {
                    kind: Some(AgentKind::Goodbye(Goodbye {
                        reason: "agent stopping".to_owned(),
                    })),
                };
                let _ = outbound.send(goodbye).await;
                drop(outbound);
                // Wait briefly for the collector to close its side, so the
                // goodbye is read before the connection goes away.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                if !in_flight.is_empty() {
                    tracing::warn!(
                        unacknowledged = in_flight.len(),
                        "stopping with unacknowledged batches"
                    );
                }
                return Ok(());
            }
            let deadline =
                drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = pushed, if in_flight.len() < self.max_in_flight => {}
                message = inbound.message() => match message?.and_then(|m| m.kind) {
                    Some(CollectorKind::Ack(ack)) => {
                        self.queue.ack_through(ack.seq);
                        while in_flight.front().is_some_and(|s| *s <= ack.seq) {
                            in_flight.pop_front();
                        }
                    }
                    Some(CollectorKind::Welcome(_)) => return Err(SessionError::NoWelcome("a second Welcome")),
                    None => return Err(SessionError::Closed),
                },
                _ = stop.as_mut(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                _ = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {}
            }
        }
    }
}

/// Delay before reconnection attempt `attempt`: exponential, capped, with
/// jitter so a fleet restarted together does not reconnect in lockstep.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    // Equal jitter: half fixed, half random, so the delay never collapses to zero.
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, max);
            let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(10, max)).collect();
        assert!(samples.len() > 1, "no jitter");
    }
}
