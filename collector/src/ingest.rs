//! The Ingest service: one bidirectional stream per agent connection.
//!
//! Hello first (host id checked against the certificate), Welcome back with
//! the last sequence already stored, then batches, each acknowledged only
//! after the store has flushed it.
//!
//! Layout: this file, the session (tonic's `Ingest` trait: Renew, and
//! Stream for a server built without [`IngestRoutes`]); `wire`, the
//! stream's framing read and written by the collector itself, which is
//! how `serve` runs Ingest.Stream.

mod wire;

pub(crate) use wire::IngestRoutes;

use crate::append::AppendError;
use crate::auth::{self, Access};
use crate::convert;
use crate::metrics::{MessageRefusal, StreamRefusal};
use crate::shared::Shared;
use hostwatch_alerting::BatchContext;
use hostwatch_proto::v1::agent_message::Kind as AgentKind;
use hostwatch_proto::v1::collector_message::Kind as CollectorKind;
use hostwatch_proto::v1::ingest_server::Ingest;
use hostwatch_proto::v1::{
    Ack, AgentMessage, CollectorMessage, RenewRequest, RenewResponse, Welcome,
};
use hostwatch_stdx::now_ms;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::{Code, Request, Response, Status, Streaming};

/// A stream logs its first batch with refused samples, then at most one
/// per this interval (a clock-skewed agent has them in every batch).
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct IngestService {
    pub(crate) shared: Shared,
    /// The issuing CA that renews agent certificates, if configured.
    pub(crate) issuing: Option<std::sync::Arc<crate::enroll::Issuing>>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReplyStream;

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        // The host is the certificate's, never the request's.
        let peer = auth::require(&request, Access::Agent)?;
        let host = peer.identity.name.clone();
        let csr = request.into_inner().csr;
        let (tokens, issuing) = (self.shared.tokens.enroll.clone(), self.issuing.clone());
        let renewed_host = host.clone();
        // Signing and the store's flush block.
        let result = tokio::task::spawn_blocking(move || {
            crate::enroll::renew(&tokens, issuing.as_deref(), &renewed_host, &csr)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let counters = &self.shared.refused_messages;
        match result {
            Ok(response) => {
                counters.renewals.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer.addr = %peer.addr, host.id = %host, serial = %response.serial, not_after_ms = response.not_after_ms, "agent certificate renewed");
                Ok(Response::new(response))
            }
            Err(e) => {
                counters.renewals_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer.addr = %peer.addr, host.id = %host, error = %e, "certificate renewal refused");
                Err(e.status())
            }
        }
    }

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let (metadata, extensions, inbound) = request.into_parts();
        let call = Request::from_parts(metadata, extensions, ());
        let replies = self.open(call, Inbound::Tonic(inbound)).await?;
        Ok(Response::new(Box::pin(replies)))
    }
}

impl IngestService {
    /// Opens an agent's session on `call` (its peer, the request's
    /// metadata): reads the Hello from `inbound`, and returns the replies,
    /// which run the session as they are polled.
    async fn open(&self, call: Request<()>, mut inbound: Inbound) -> Result<Replies, Status> {
        let metrics = &self.shared.metrics;
        let peer = auth::require(&call, Access::Agent)
            .inspect_err(|_| metrics.stream_refused(StreamRefusal::Role))?;
        let host = peer.identity.name.clone();
        let timeout = self.shared.limits.handshake_timeout;
        let first = tokio::time::timeout(timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no Hello within {timeout:?}")))
            .inspect_err(|_| metrics.stream_refused(StreamRefusal::NoHello))?
            .map_err(|e| refusal(&self.shared, e).unwrap_or_else(|broken| broken))?;
        let Some(AgentMessage {
            kind: Some(AgentKind::Hello(hello)),
        }) = first
        else {
            metrics.stream_refused(StreamRefusal::NoHello);
            return Err(Status::invalid_argument("the first message must be Hello"));
        };
        if hello.host_id != host {
            metrics.stream_refused(StreamRefusal::HostMismatch);
            tracing::warn!(peer.addr = %peer.addr, host.id = %host, claimed = %hello.host_id, "agent claims another host");
            return Err(Status::permission_denied(format!(
                "certificate is for host {host:?}, Hello claims {:?}",
                hello.host_id
            )));
        }
        crate::hosts::check_hello(&hello)
            .inspect_err(|_| metrics.stream_refused(StreamRefusal::BadHello))?;
        // An agent told to come back later keeps its batches; one welcomed
        // would only have each of them refused.
        if let Some(refusal) = convert::health_status(
            &self
                .shared
                .store
                .health()
                .map_err(convert::storage_status)
                .inspect_err(|_| metrics.stream_refused(StreamRefusal::StorageError))?,
        ) {
            metrics.stream_refused(StreamRefusal::NotStoring);
            tracing::debug!(peer.addr = %peer.addr, host.id = %host, "agent turned away: the store is not storing");
            return Err(refusal);
        }
        let (host_copy, spool_id) = (host.clone(), hello.spool_id);
        let last_stored_seq = self
            .shared
            .on_store(move |store| store.last_seq(&host_copy, spool_id))
            .await
            .inspect_err(|_| metrics.stream_refused(StreamRefusal::StorageError))?;
        let previous_boot_id = self
            .shared
            .hosts
            .connected(&host, hello.facts, &hello.boot_id);
        if let Some(expires_ms) = peer.certificate_expires_ms {
            self.shared.hosts.certificate(&host, expires_ms);
        }
        self.shared
            .alerting
            .host_connected(&host, &previous_boot_id, &hello.boot_id);
        tracing::info!(peer.addr = %peer.addr, host.id = %host, spool.id = spool_id, last_stored_seq, "agent connected");

        let welcome = CollectorMessage {
            kind: Some(CollectorKind::Welcome(Welcome {
                collector: self.shared.identity.name.clone(),
                last_stored_seq,
                host_down_after_ms: self.shared.host_down_after_ms(),
            })),
        };
        let session = Session {
            shared: self.shared.clone(),
            host,
            spool_id,
            stream_seq: 0,
            inbound,
            rejection_logs: LogThrottle::new(REJECTION_LOG_INTERVAL),
            _tracked: self.shared.tasks.token(),
        };
        Ok(Replies {
            welcome: Some(welcome),
            next: Some(Box::pin(session.next_reply())),
        })
    }
}

/// Where a session reads the agent's messages.
enum Inbound {
    /// The collector's own reader of the request body (`wire`).
    Frames(wire::Frames),
    /// tonic's decoder (the `Ingest` trait's).
    Tonic(Streaming<AgentMessage>),
}

/// Why no message could be read.
enum Unread {
    Frames(wire::FrameError),
    Tonic(Status),
}

impl Inbound {
    /// The next message, `None` once the agent has ended its side.
    async fn message(&mut self) -> Result<Option<AgentMessage>, Unread> {
        match self {
            Inbound::Frames(frames) => frames.message().await.map_err(Unread::Frames),
            Inbound::Tonic(streaming) => streaming.message().await.map_err(Unread::Tonic),
        }
    }
}

/// The status that answers a message that could not be read (counted
/// here or by the listener), or, as the error, the status of a stream
/// that broke by itself (the agent went away).
fn refusal(shared: &Shared, unread: Unread) -> Result<Status, Status> {
    let refused = &shared.refused_messages;
    let status = match unread {
        Unread::Frames(e) => {
            match &e {
                wire::FrameError::Broken(status) => return Err(status.clone()),
                // The listener counted and logged it.
                wire::FrameError::Limit(_) => {}
                wire::FrameError::Oversized { .. } => {
                    refused.oversized.fetch_add(1, Ordering::Relaxed);
                }
                wire::FrameError::Compressed
                | wire::FrameError::BadFlag(_)
                | wire::FrameError::Truncated(_)
                | wire::FrameError::Undecodable(_) => {
                    refused.undecodable.fetch_add(1, Ordering::Relaxed);
                }
            }
            e.status()
        }
        Unread::Tonic(status) => match status.code() {
            Code::OutOfRange => {
                refused.oversized.fetch_add(1, Ordering::Relaxed);
                Status::resource_exhausted(format!(
                    "message refused: {} (limits.max_message_bytes)",
                    status.message()
                ))
            }
            // The listener's budget for incomplete messages ended the call
            // (it counted and logged that): the agent is told why.
            Code::ResourceExhausted => Status::resource_exhausted(status.message()),
            // Transport errors carry their cause; a message that does not
            // decode has none.
            Code::Internal if std::error::Error::source(&status).is_none() => {
                refused.undecodable.fetch_add(1, Ordering::Relaxed);
                Status::invalid_argument(format!(
                    "message refused: not an AgentMessage: {}",
                    status.message()
                ))
            }
            _ => return Err(status),
        },
    };
    Ok(status)
}

/// What a session answers next, with the session back.
type NextReply =
    Pin<Box<dyn Future<Output = (Session, Option<Result<CollectorMessage, Status>>)> + Send>>;

/// The reply stream, which runs its session: the HTTP/2 stream's own task
/// reads each message, stores it and answers it when it polls for the
/// next reply, so a batch costs no task of its own and no channel to
/// cross between them. The Welcome first; the stream ends after an error
/// or when the session ends.
struct Replies {
    welcome: Option<CollectorMessage>,
    next: Option<NextReply>,
}

impl Stream for Replies {
    type Item = Result<CollectorMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(welcome) = self.welcome.take() {
            return Poll::Ready(Some(Ok(welcome)));
        }
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready((session, reply)) = next.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        // An error is the stream's last message.
        self.next = match &reply {
            Some(Ok(_)) => Some(Box::pin(session.next_reply())),
            Some(Err(_)) | None => None,
        };
        Poll::Ready(reply)
    }
}

struct Session {
    shared: Shared,
    host: String,
    spool_id: u64,
    /// Sequence of the previous batch on this stream, 0 before the first.
    stream_seq: u64,
    inbound: Inbound,
    /// Batches with refused samples: logged at most once an interval.
    rejection_logs: LogThrottle,
    /// Counts the session among the tasks a shutdown waits for.
    _tracked: TaskTrackerToken,
}

impl Drop for Session {
    /// However the stream ended: by itself, or with its connection.
    fn drop(&mut self) {
        self.shared.hosts.disconnected(&self.host);
        tracing::info!(host.id = %self.host, "agent disconnected");
    }
}

impl Session {
    /// Reads messages until one has a reply: `None` ends the stream
    /// cleanly, an error ends it with that status.
    async fn next_reply(mut self) -> (Self, Option<Result<CollectorMessage, Status>>) {
        let reply = self.read_and_answer().await;
        (self, reply)
    }

    async fn read_and_answer(&mut self) -> Option<Result<CollectorMessage, Status>> {
        let stop = self.shared.stop.clone();
        let message = tokio::select! {
            // Ending the reply stream lets the agent reconnect elsewhere
            // or later; everything acknowledged so far is on disk.
            _ = stop.cancelled() => return None,
            message = self.inbound.message() => message,
        };
        let result = match message {
            Ok(Some(AgentMessage { kind: Some(kind) })) => self.handle(kind).await,
            Ok(Some(AgentMessage { kind: None })) => {
                self.shared
                    .metrics
                    .message_refused(MessageRefusal::Unexpected);
                Err(Status::invalid_argument("empty message"))
            }
            Ok(None) => return None,
            Err(unread) => match refusal(&self.shared, unread) {
                Ok(refusal) => Err(refusal),
                Err(status) => {
                    tracing::debug!(host.id = %self.host, error = %status, "agent stream broke");
                    return None;
                }
            },
        };
        match result {
            Ok(reply) => reply.map(Ok),
            Err(status) => {
                if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                    && status.metadata().contains_key("grpc-retry-pushback-ms")
                {
                    // The store logged why it cannot store, once.
                    tracing::debug!(host.id = %self.host, error = %status, "ending agent stream");
                } else {
                    tracing::warn!(host.id = %self.host, error = %status, "ending agent stream");
                }
                Some(Err(status))
            }
        }
    }

    /// Handles one message: its reply, or `None` to end the stream
    /// cleanly.
    async fn handle(&mut self, kind: AgentKind) -> Result<Option<CollectorMessage>, Status> {
        match kind {
            AgentKind::Batch(batch) => {
                // A batch stored before (an ack lost with a connection) is
                // fine: the store skips it. Within one stream, though,
                // sequences must increase, or the agent is broken.
                let received = std::time::Instant::now();
                if batch.seq <= self.stream_seq {
                    self.shared
                        .metrics
                        .message_refused(MessageRefusal::BadSequence);
                    return Err(Status::invalid_argument(format!(
                        "batch sequence {} after {}: sequences must increase and start at 1",
                        batch.seq, self.stream_seq
                    )));
                }
                let seq = batch.seq;
                let context = BatchContext {
                    received_ms: now_ms(),
                    dropped_batches_total: batch.dropped_batches_total,
                    future_tolerance_ms: self.shared.future_tolerance_ms,
                };
                let batch = convert::batch(&self.host, self.spool_id, batch);
                let outcome = self
                    .shared
                    .appender
                    .append(batch, context)
                    .await
                    .map_err(|e| match e {
                        AppendError::Store(e) => convert::storage_status(e),
                        AppendError::Stopped => Status::unavailable(e.to_string()),
                    })
                    .inspect_err(|_| {
                        self.shared
                            .metrics
                            .message_refused(MessageRefusal::NotStored)
                    })?;
                let rejected = outcome.rejected.total();
                if rejected > 0 {
                    self.log_rejections(seq, &outcome);
                }
                self.stream_seq = seq;
                self.shared.metrics.ack_latency.observe(received.elapsed());
                Ok(Some(CollectorMessage {
                    kind: Some(CollectorKind::Ack(Ack { seq })),
                }))
            }
            AgentKind::Goodbye(goodbye) => {
                tracing::info!(host.id = %self.host, reason = %goodbye.reason, "agent said goodbye");
                self.shared.hosts.goodbye(&self.host);
                Ok(None)
            }
            AgentKind::Hello(_) => {
                self.shared
                    .metrics
                    .message_refused(MessageRefusal::Unexpected);
                Err(Status::invalid_argument(
                    "Hello may only be the first message",
                ))
            }
        }
    }
}

impl Session {
    /// Logs a batch's refused samples: the stream's first such batch, then
    /// at most one per [`REJECTION_LOG_INTERVAL`], saying how many batches
    /// with refusals went unlogged meanwhile (all are counted in the
    /// storage stats).
    fn log_rejections(&mut self, seq: u64, outcome: &hostwatch_tsdb::AppendOutcome) {
        let Some(unlogged) = self.rejection_logs.admit(Instant::now()) else {
            return;
        };
        tracing::warn!(
            host.id = %self.host,
            batch.seq = seq,
            rejected = outcome.rejected.total(),
            malformed = outcome.rejected.malformed,
            first_error = outcome.first_error.as_deref().unwrap_or("arrays of unequal length"),
            unlogged_batches = unlogged,
            "samples rejected"
        );
    }
}

/// Lets one log line through per interval and counts the others.
#[derive(Debug)]
struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may go out now.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_an_interval_and_counts_the_rest() {
        let mut throttle = LogThrottle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for i in 1..=100 {
            assert_eq!(throttle.admit(start + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(throttle.admit(start + Duration::from_secs(60)), Some(100));
        assert_eq!(throttle.admit(start + Duration::from_secs(61)), None);
    }
}
