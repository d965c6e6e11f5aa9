//! Streams spooled batches to the collector and removes them once
//! acknowledged; reconnects with jittered exponential backoff, and at once
//! after a configuration reload.
//!
//! The backoff starts over only after acknowledged progress, so a collector
//! that welcomes streams but stores nothing (a full disk) is retried ever
//! more slowly. A refusal carrying `grpc-retry-pushback-ms` (decimal
//! milliseconds, as in gRPC's retry design A6) is retried no sooner than
//! the collector asked. The longest backoff stays below a third of the
//! collector's `host_down_after` (from its Welcome), so a collector back
//! from an outage hears from its agents before it would page them as down.
//! A connection gone silent is given up after the keepalive timeout, or
//! once batches wait `limits.ack_timeout` for an acknowledgement.
//!
//! With several collectors (`collectors`, by preference), the agent streams
//! to one at a time: after `limits.failover_after` failed attempts in a
//! row without an acknowledged batch it moves on to the next (and from the
//! last back to the first). While on one that is not the first, it tries
//! the more preferred ones every `limits.probe_interval` (jittered, below
//! a third of the known `host_down_after`) beside the open stream; once one
//! welcomes it, the stream it leaves gets its in-flight batches
//! acknowledged (bounded) and a Goodbye, so that collector does not page
//! the host as down. Each collector's Welcome says what that collector
//! holds of this spool, so batches another collector acknowledged are
//! simply not in the spool any more: the agent sends what it has after the
//! Welcome's sequence, and a collector stores a batch above its last + 1.
//!
//! A backlog (after the collector was away) is replayed in order, several
//! spooled batches coalesced per message (`limits.replay_batch_bytes`), with
//! at most `limits.max_in_flight` messages and about one replay message of
//! bytes unacknowledged: it drains at one large message per round trip, so
//! fresh samples are not held up for long, and neither the collector nor
//! the agent's memory takes more than the window.

use crate::config::AgentConfig;
use crate::health::Health;
use crate::spool::Spool;
use hostwatch_pki::transport::{ClientTarget, ConnectError, Keepalive, connect};
use hostwatch_proto::v1::agent_message::Kind as AgentKind;
use hostwatch_proto::v1::collector_message::Kind as CollectorKind;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{AgentMessage, CollectorMessage, Goodbye, Hello};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// How long a stopping agent keeps sending what it has spooled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnection delay; doubles up to the configured maximum.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// The metadata key (header or trailer) of the delay a refusing collector
/// asks for, in decimal milliseconds.
const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";
/// The longest delay a collector may ask for: beyond it, a misconfigured
/// collector would lose touch with its agents for good.
const MAX_PUSHBACK: Duration = Duration::from_secs(300);

pub(crate) struct Shipper {
    /// The collectors, in order of preference; never empty.
    targets: Vec<ClientTarget>,
    /// The entry of `targets` the agent streams to, or tries.
    current: usize,
    /// Failed attempts in a row on `current` without an acknowledged batch.
    failures_here: u32,
    failover_after: u32,
    probe_interval: Duration,
    spool: Arc<Spool>,
    health: Arc<Health>,
    hello: Hello,
    max_in_flight: usize,
    replay_batch_bytes: usize,
    max_backoff: Duration,
    ack_timeout: Duration,
    /// Each collector's `host_down_after` (or a host-down rule's shorter
    /// timeout), from its latest Welcome, by address.
    host_down_after: HashMap<String, Duration>,
    /// The connection of the open stream, for renewals; `None` between
    /// streams (held here, a closed connection would stay open).
    channel: watch::Sender<Option<Channel>>,
}

/// How a session ended without an error.
enum Ending {
    /// The agent is stopping; the drain is over.
    Stopped,
    /// A more preferred collector (this entry of `targets`) welcomed a
    /// probe: the session on the fallback is over, its stream goes on.
    /// (Boxed: a stream is large, and an ending is moved around.)
    Switch(usize, Box<Stream>),
}

/// A probe of the more preferred collectors, polled beside the stream.
type Probe<'a> = Pin<Box<dyn Future<Output = Option<(usize, Stream)>> + Send + 'a>>;

/// What a session achieved, for the reconnection that follows.
#[derive(Debug, Default)]
struct Progress {
    /// The collector said Welcome.
    welcomed: bool,
    /// The collector acknowledged a batch: it stores again.
    acknowledged: bool,
    /// The collector's `host_down_after`, if its Welcome told it.
    host_down_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Connect(ConnectError),
    /// The collector refused the certificate as revoked, in the handshake
    /// (its `certificate_revoked` alert, which may only reach the agent
    /// with the first call).
    #[error(
        "the collector refused this agent's certificate: it was revoked (hostwatch hosts \
         revoke); enroll this host again with a new enrollment token \
         (hostwatch-agent enroll --replace)"
    )]
    Revoked,
    #[error("collector refused: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("connection to the collector lost: {0}")]
    Lost(String),
    #[error(
        "connection to the collector lost: nothing heard for {silent:.1?}, keepalive pings \
         unanswered (limits.keepalive_interval, limits.keepalive_timeout): {cause}"
    )]
    KeepaliveTimeout { silent: Duration, cause: String },
    #[error("collector closed the stream")]
    Closed,
    #[error(
        "the server does not speak hostwatch's ingest protocol (not a hostwatch collector?): \
         {0}"
    )]
    NotACollector(String),
    #[error("collector sent {0} where a Welcome was expected")]
    NoWelcome(&'static str),
    #[error("no Welcome from the collector within {0:?} (limits.connect_timeout)")]
    NoAnswer(Duration),
    #[error("no acknowledgement within {0:?} for batches in flight (limits.ack_timeout)")]
    NoAck(Duration),
    #[error("configuration reloaded")]
    Reconfigured,
}

impl From<ConnectError> for SessionError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Revoked { .. } => SessionError::Revoked,
            other => SessionError::Connect(other),
        }
    }
}

impl From<tonic::Status> for SessionError {
    /// tonic reports a broken connection (a keepalive timeout, a reset) as
    /// a status too, with the transport error as its source; a status the
    /// collector sent has none.
    fn from(status: tonic::Status) -> Self {
        if hostwatch_pki::transport::is_certificate_revoked(&status) {
            return SessionError::Revoked;
        }
        // A gRPC server without the Ingest service, or a server that is not
        // gRPC at all (tonic says which HTTP status it answered with).
        if std::error::Error::source(&status).is_none()
            && (status.code() == Code::Unimplemented
                || status.message().contains("invalid content-type"))
        {
            return SessionError::NotACollector(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            ));
        }
        let Some(cause) = std::error::Error::source(&status) else {
            return SessionError::Refused(status);
        };
        // The message and the chain repeat each other in part.
        SessionError::Lost(hostwatch_stdx::with_sources(
            status.message().to_owned(),
            Some(cause),
        ))
    }
}

/// A failed read on a stream: `silent` is how long nothing came from the
/// collector. The stream only learns that its connection is gone ("broken
/// pipe"); a loss after a silence the keepalive does not allow is the
/// keepalive's doing.
fn read_error(status: tonic::Status, silent: Duration, keepalive: Keepalive) -> SessionError {
    match SessionError::from(status) {
        SessionError::Lost(cause) if silent >= keepalive.interval + keepalive.timeout => {
            SessionError::KeepaliveTimeout { silent, cause }
        }
        other => other,
    }
}

impl SessionError {
    /// Errors that another attempt soon will not fix: a refused identity or
    /// a protocol violation. Still retried (certificates get fixed and
    /// reloaded), but at the slowest pace.
    fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Revoked)
            || matches!(self, SessionError::Refused(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument))
    }

    /// The delay the collector asked for with its refusal, at most
    /// [`MAX_PUSHBACK`]; a value that is not a decimal number is ignored.
    fn pushback(&self) -> Option<Duration> {
        let SessionError::Refused(status) = self else {
            return None;
        };
        pushback(status)
    }
}

/// The delay a collector asked for with the refusal `status`, at most
/// [`MAX_PUSHBACK`]; a value that is not a decimal number is ignored.
pub(crate) fn pushback(status: &tonic::Status) -> Option<Duration> {
    let value = status.metadata().get(PUSHBACK_KEY)?.to_str().ok()?;
    let ms: u64 = value.trim().parse().ok()?;
    Some(Duration::from_millis(ms).min(MAX_PUSHBACK))
}

impl Shipper {
    pub(crate) fn new(
        config: &AgentConfig,
        spool: Arc<Spool>,
        health: Arc<Health>,
        hello: Hello,
        channel: watch::Sender<Option<Channel>>,
    ) -> Self {
        let mut shipper = Shipper {
            targets: Vec::new(),
            current: 0,
            failures_here: 0,
            failover_after: 1,
            probe_interval: Duration::ZERO,
            spool,
            health,
            hello,
            max_in_flight: 1,
            replay_batch_bytes: 0,
            max_backoff: Duration::ZERO,
            ack_timeout: Duration::ZERO,
            host_down_after: HashMap::new(),
            channel,
        };
        shipper.apply(config);
        shipper
    }

    fn apply(&mut self, config: &AgentConfig) {
        let targets = crate::client_targets(config);
        let addresses =
            |t: &[ClientTarget]| t.iter().map(|t| t.address.clone()).collect::<Vec<_>>();
        if addresses(&targets) != addresses(&self.targets) {
            // A new list starts over at its most preferred collector.
            self.current = 0;
            self.failures_here = 0;
            self.health.collector(0);
        }
        self.targets = targets;
        self.failover_after = config.limits.failover_after;
        self.probe_interval = config.limits.probe_interval;
        self.max_in_flight = config.limits.max_in_flight;
        self.replay_batch_bytes = config.limits.replay_batch_bytes;
        self.max_backoff = config.limits.max_backoff;
        self.ack_timeout = config.limits.ack_timeout;
    }

    /// The collector the agent streams to, or tries. `current` is always
    /// an index of `targets`, which the configuration keeps non-empty
    /// (checked at load: `collectors` must list at least one).
    fn target(&self) -> &ClientTarget {
        &self.targets[self.current]
    }

    /// A third of the shortest `host_down_after` the collectors told, if any.
    fn down_cap(&self) -> Option<Duration> {
        let shortest = self.host_down_after.values().min()?;
        Some((*shortest / 3).max(BACKOFF_BASE))
    }

    /// The longest backoff: the configured one, kept below a third of the
    /// collectors' `host_down_after`.
    fn max_backoff(&self) -> Duration {
        match self.down_cap() {
            Some(cap) => self.max_backoff.min(cap),
            None => self.max_backoff,
        }
    }

    /// How long until the next try of a more preferred collector:
    /// `limits.probe_interval`, kept below a third of the collectors'
    /// `host_down_after`, jittered down by up to a quarter so the hosts of
    /// a fallback do not all return in the same instant.
    fn probe_delay(&self) -> Duration {
        let every = match self.down_cap() {
            Some(cap) => self.probe_interval.min(cap),
            None => self.probe_interval,
        };
        every.mul_f64(1.0 - 0.25 * rand::rng().random::<f64>())
    }

    /// The collector at `address` told its `host_down_after`; says if it
    /// caps the backoff.
    fn learn_host_down_after(&mut self, address: &str, down: Duration) {
        if self.host_down_after.get(address) == Some(&down) {
            return;
        }
        self.host_down_after.insert(address.to_owned(), down);
        if self.max_backoff() < self.max_backoff {
            tracing::info!(collector = %address, host_down_after = ?down, max_backoff = ?self.max_backoff(), "reconnection backoff kept below a third of the collector's host_down_after (limits.max_backoff)");
        }
    }

    /// After `e`, the failure that makes `limits.failover_after` in a row
    /// on the current collector: moves on to the next one (from the last,
    /// back to the first); the delay before trying it.
    fn fail_over(&mut self, e: &SessionError) -> Duration {
        let from = self.target().address.clone();
        self.current = (self.current + 1) % self.targets.len();
        self.failures_here = 0;
        self.health.failed_over(self.current);
        tracing::warn!(
            error = %e,
            collector = %from,
            next = %self.target().address,
            failures = self.failover_after,
            spooled = self.spool.len(),
            "collector failed {} times in a row (limits.failover_after): failing over to the next collector",
            self.failover_after
        );
        // The next collector has not failed: tried soon, not after the
        // grown backoff (still jittered, so hosts do not move together).
        hostwatch_stdx::backoff(0, BACKOFF_BASE, self.max_backoff())
    }

    /// How long to wait after `e`, the `attempt`th failure since the last
    /// acknowledged progress.
    fn retry_delay(&self, e: &SessionError, attempt: u32) -> Duration {
        let max = self.max_backoff();
        let collector = &self.target().address;
        if e.is_permanent() {
            tracing::error!(collector = %collector, error = %e, "collector refused this agent");
            max.max(e.pushback().unwrap_or_default())
        } else if let Some(pushback) = e.pushback() {
            // Jittered, so agents told the same delay do not return together.
            let asked = pushback + pushback.mul_f64(0.2 * rand::rng().random::<f64>());
            let delay = asked.max(hostwatch_stdx::backoff(attempt, BACKOFF_BASE, max));
            tracing::warn!(collector = %collector, error = %e, retry_in = ?delay, spooled = self.spool.len(), "the collector asked to be retried later");
            delay
        } else {
            tracing::warn!(collector = %collector, error = %e, spooled = self.spool.len(), "not connected to the collector");
            hostwatch_stdx::backoff(attempt, BACKOFF_BASE, max)
        }
    }

    /// Ships until `stop` completes, then drains for a while and says goodbye.
    pub(crate) async fn run(
        mut self,
        mut configs: watch::Receiver<AgentConfig>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Failed attempts since the last acknowledged progress: a Welcome
        // alone does not count, the collector may be unable to store.
        let mut attempt: u32 = 0;
        let mut sessions: u64 = 0;
        // A stream a probe opened to a more preferred collector.
        let mut ready: Option<Stream> = None;
        loop {
            let mut progress = Progress::default();
            let address = self.target().address.clone();
            let result = self
                .session(
                    &mut stop,
                    &mut configs,
                    &mut progress,
                    sessions > 0,
                    ready.take(),
                )
                .await;
            self.channel.send_replace(None);
            if progress.welcomed {
                sessions += 1;
                self.health.disconnected();
            }
            if progress.acknowledged {
                attempt = 0;
                self.failures_here = 0;
            }
            if let Some(down) = progress.host_down_after {
                self.learn_host_down_after(&address, down);
            }
            self.health
                .revoked(matches!(result, Err(SessionError::Revoked)));
            let e = match result {
                Ok(Ending::Stopped) => return,
                Ok(Ending::Switch(index, stream)) => {
                    self.current = index;
                    self.failures_here = 0;
                    self.health.collector(index);
                    tracing::info!(from = %address, collector = %self.target().address, "returning to a more preferred collector");
                    ready = Some(*stream);
                    continue;
                }
                Err(SessionError::Reconfigured) => {
                    let config = configs.borrow_and_update().clone();
                    self.apply(&config);
                    tracing::info!(collector = %self.target().address, "reconnecting with the reloaded configuration");
                    continue;
                }
                Err(e) => e,
            };
            self.failures_here = self.failures_here.saturating_add(1);
            let delay = if self.targets.len() > 1 && self.failures_here >= self.failover_after {
                self.fail_over(&e)
            } else {
                self.retry_delay(&e, attempt)
            };
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(delay) => {}
                // A reload (new certificates, say) is tried at once.
                _ = crate::config_changed(&mut configs) => {
                    let config = configs.borrow_and_update().clone();
                    self.apply(&config);
                    attempt = 0;
                }
            }
        }
    }

    /// One stream, on `ready` (opened by a probe) or a new one to the
    /// current collector.
    async fn session(
        &self,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        configs: &mut watch::Receiver<AgentConfig>,
        progress: &mut Progress,
        reconnect: bool,
        ready: Option<Stream>,
    ) -> Result<Ending, SessionError> {
        let stream = match ready {
            Some(stream) => stream,
            None => match self.open(stop, configs).await? {
                Some(stream) => stream,
                None => return Ok(Ending::Stopped),
            },
        };
        self.channel.send_replace(Some(stream.channel.clone()));
        let last_stored = stream.last_stored;
        progress.host_down_after = stream.host_down_after;
        progress.welcomed = true;
        self.health.connected(reconnect);
        // After a failover, this collector may hold less than what another
        // one acknowledged (and the spool dropped): the spool sends what it
        // has after `last_stored`, the collector stores it despite the gap.
        self.spool.skip_past(last_stored);
        self.spool.ack_through(last_stored);
        tracing::info!(collector = %self.target().address, preference = self.current, last_stored, spooled = self.spool.len(), "connected to the collector");
        self.exchange(stream, last_stored, stop, configs, progress)
            .await
    }

    /// Connects to the current collector, says Hello and reads its
    /// Welcome; `None` when stopped meanwhile.
    async fn open(
        &self,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        configs: &mut watch::Receiver<AgentConfig>,
    ) -> Result<Option<Stream>, SessionError> {
        let target = self.target();
        let (channel, _) = tokio::select! {
            _ = stop.as_mut() => return Ok(None),
            _ = crate::config_changed(configs) => return Err(SessionError::Reconfigured),
            connected = connect(target) => connected?,
        };
        // Renewals may use the connection even if the stream is refused.
        self.channel.send_replace(Some(channel.clone()));
        tokio::select! {
            _ = stop.as_mut() => Ok(None),
            _ = crate::config_changed(configs) => Err(SessionError::Reconfigured),
            opened = self.handshake(target, channel) => opened.map(Some),
        }
    }

    /// Says Hello on a new stream over `channel` and reads the Welcome,
    /// within the target's `connect_timeout`: a server that accepts the
    /// connection but never answers must not hold the agent.
    async fn handshake(
        &self,
        target: &ClientTarget,
        channel: Channel,
    ) -> Result<Stream, SessionError> {
        let mut client = IngestClient::new(channel.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        let (outbound, rx) = mpsc::channel(self.max_in_flight + 2);
        let hello = AgentMessage {
            kind: Some(AgentKind::Hello(self.hello.clone())),
        };
        // Cannot fail: the receiver is alive and the channel has room.
        let _ = outbound.try_send(hello);
        let handshake = async {
            let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
            let first = inbound.message().await?;
            Ok::<_, SessionError>((inbound, first))
        };
        let wait = target.connect_timeout;
        let (inbound, first) = tokio::time::timeout(wait, handshake)
            .await
            .map_err(|_| SessionError::NoAnswer(wait))??;
        let (last_stored, host_down_after) = welcome(first)?;
        Ok(Stream {
            channel,
            outbound,
            inbound,
            last_stored,
            host_down_after,
        })
    }

    /// Tries the collectors more preferred than the current one, in order;
    /// the first that welcomes the agent, with its stream.
    async fn probe(&self) -> Option<(usize, Stream)> {
        for (index, target) in self.targets[..self.current].iter().enumerate() {
            let opened = async {
                let (channel, _) = connect(target).await?;
                self.handshake(target, channel).await
            };
            match opened.await {
                Ok(stream) => return Some((index, stream)),
                Err(e) => {
                    tracing::debug!(collector = %target.address, error = %e, "a more preferred collector is still unavailable")
                }
            }
        }
        None
    }

    /// Sends spooled batches and reads acknowledgements until the stream
    /// fails, the configuration changes, `stop` completes and the drain is
    /// over, or a probe found a more preferred collector and the batches
    /// in flight here were acknowledged (or a bounded wait is over).
    async fn exchange(
        &self,
        stream: Stream,
        last_stored: u64,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        configs: &mut watch::Receiver<AgentConfig>,
        progress: &mut Progress,
    ) -> Result<Ending, SessionError> {
        let Stream {
            outbound,
            mut inbound,
            ..
        } = stream;
        let mut window = Window::after(last_stored);
        let mut drain_deadline: Option<Instant> = None;
        let mut stopping = false;
        let mut heard = Instant::now();
        // On a fallback, more preferred collectors are tried beside the stream.
        let probing = self.current > 0;
        let mut next_probe = Instant::now() + self.probe_delay();
        let mut probe: Option<Probe<'_>> = None;
        let mut switch: Option<(usize, Stream)> = None;
        loop {
            let pushed = self.spool.pushed();
            if switch.is_none() {
                self.fill(&mut window, &outbound).await?;
            }
            if let Some(deadline) = drain_deadline
                && (window.in_flight.is_empty() || Instant::now() >= deadline)
            {
                let reason = match &switch {
                    Some((index, _)) => format!(
                        "agent returning to its preferred collector {}",
                        self.targets[*index].address
                    ),
                    None => "agent stopping".to_owned(),
                };
                goodbye(outbound, inbound, window.in_flight.len(), reason).await;
                return Ok(match switch {
                    Some((index, stream)) => Ending::Switch(index, Box::new(stream)),
                    None => Ending::Stopped,
                });
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let deadline = drain_deadline.unwrap_or(far);
            let ack_due = window.ack_due(self.ack_timeout);
            let probe_due = probing && probe.is_none() && drain_deadline.is_none();
            tokio::select! {
                _ = pushed, if self.has_room(&window) && drain_deadline.is_none() => {}
                message = inbound.message() => match message
                    .map_err(|s| read_error(s, heard.elapsed(), self.target().keepalive))
                    .map(|m| m.and_then(|m| m.kind))
                {
                    // The fallback went away while the agent was leaving
                    // it: what it did not acknowledge goes to the next.
                    Err(_) | Ok(None) if switch.is_some() => {
                        if let Some((index, stream)) = switch.take() {
                            return Ok(Ending::Switch(index, Box::new(stream)));
                        }
                    }
                    Err(e) => return Err(e),
                    Ok(Some(CollectorKind::Ack(ack))) => {
                        heard = Instant::now();
                        self.spool.ack_through(ack.seq);
                        if window.acknowledge(ack.seq, &self.health) {
                            progress.acknowledged = true;
                        }
                    }
                    Ok(Some(CollectorKind::Welcome(_))) => return Err(SessionError::NoWelcome("a second Welcome")),
                    Ok(None) => return Err(SessionError::Closed),
                },
                _ = stop.as_mut(), if !stopping => {
                    // Stopping wins over a switch: what is spooled goes here.
                    stopping = true;
                    switch = None;
                    probe = None;
                    drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                _ = crate::config_changed(configs), if drain_deadline.is_none() => {
                    return Err(SessionError::Reconfigured);
                }
                _ = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {}
                _ = tokio::time::sleep_until(ack_due.unwrap_or(far)), if ack_due.is_some() && drain_deadline.is_none() => {
                    return Err(SessionError::NoAck(self.ack_timeout));
                }
                _ = tokio::time::sleep_until(next_probe), if probe_due => {
                    probe = Some(Box::pin(self.probe()));
                }
                found = async {
                    match probe.as_mut() {
                        Some(probe) => probe.await,
                        None => std::future::pending().await,
                    }
                }, if probe.is_some() => {
                    probe = None;
                    match found {
                        Some(found) => {
                            // Nothing more is sent here; what is in flight
                            // gets a bounded wait for its acknowledgement.
                            switch = Some(found);
                            drain_deadline = Some(Instant::now() + self.ack_timeout.min(DRAIN_TIMEOUT));
                        }
                        None => next_probe = Instant::now() + self.probe_delay(),
                    }
                }
            }
        }
    }

    /// The window: a number of messages, and (for a backlog, whose
    /// messages are large) about one replay message of bytes, so the
    /// agent's memory stays small while it catches up.
    fn has_room(&self, window: &Window) -> bool {
        window.in_flight.len() < self.max_in_flight && window.bytes < self.replay_batch_bytes
    }

    /// Sends spooled batches while the window has room.
    async fn fill(
        &self,
        window: &mut Window,
        outbound: &mpsc::Sender<AgentMessage>,
    ) -> Result<(), SessionError> {
        while self.has_room(window) {
            let Some((batch, size)) = self
                .spool
                .sized_batch_after(window.sent, self.replay_batch_bytes)
            else {
                break;
            };
            // The spooled size: `encoded_len` would walk every series of
            // the batch once more each tick.
            window.sending(batch.seq, size);
            let message = AgentMessage {
                kind: Some(AgentKind::Batch(batch)),
            };
            if outbound.send(message).await.is_err() {
                return Err(SessionError::Closed);
            }
        }
        Ok(())
    }
}

/// A session's stream, once the collector welcomed the agent on it.
struct Stream {
    /// The connection, for renewals.
    channel: Channel,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CollectorMessage>,
    /// The last sequence of this spool the collector holds.
    last_stored: u64,
    /// The collector's `host_down_after`, if its Welcome told it.
    host_down_after: Option<Duration>,
}

/// The last sequence the collector holds and its `host_down_after`, from
/// its Welcome, which must be the first message.
fn welcome(first: Option<CollectorMessage>) -> Result<(u64, Option<Duration>), SessionError> {
    let Some(message) = first else {
        return Err(SessionError::Closed);
    };
    match message.kind {
        Some(CollectorKind::Welcome(w)) => Ok((
            w.last_stored_seq,
            (w.host_down_after_ms > 0).then(|| Duration::from_millis(w.host_down_after_ms)),
        )),
        Some(CollectorKind::Ack(_)) => Err(SessionError::NoWelcome("an Ack")),
        None => Err(SessionError::NoWelcome("an empty message")),
    }
}

/// The batches sent and not yet acknowledged.
struct Window {
    /// The last sequence sent.
    sent: u64,
    /// Sequence (the last of a coalesced message), when it was sent, size.
    in_flight: VecDeque<(u64, Instant, usize)>,
    /// The sizes in `in_flight`, summed.
    bytes: usize,
    /// When the last acknowledgement came.
    last_ack: Instant,
}

impl Window {
    /// An empty window; the next batch to send comes after `sent`.
    fn after(sent: u64) -> Self {
        Window {
            sent,
            in_flight: VecDeque::new(),
            bytes: 0,
            last_ack: Instant::now(),
        }
    }

    fn sending(&mut self, seq: u64, size: usize) {
        self.sent = seq;
        self.in_flight.push_back((seq, Instant::now(), size));
        self.bytes += size;
    }

    /// Batches wait for an acknowledgement since they were sent, or since
    /// the last one came (a slow store still moves).
    fn ack_due(&self, ack_timeout: Duration) -> Option<Instant> {
        self.in_flight
            .front()
            .map(|&(_, sent, _)| sent.max(self.last_ack) + ack_timeout)
    }

    /// Takes the messages up to `seq` out of the window; whether any was.
    fn acknowledge(&mut self, seq: u64, health: &Health) -> bool {
        let mut acknowledged = false;
        while let Some((sent, at, size)) = self.in_flight.front().copied()
            && sent <= seq
        {
            if sent == seq {
                health.acknowledged_after(at.elapsed());
            }
            self.bytes -= size;
            self.in_flight.pop_front();
            self.last_ack = Instant::now();
            acknowledged = true;
        }
        acknowledged
    }
}

/// Says Goodbye at the end of the drain, and waits briefly for the
/// collector to close its side, so the goodbye is read before the
/// connection goes away.
async fn goodbye(
    outbound: mpsc::Sender<AgentMessage>,
    mut inbound: tonic::Streaming<CollectorMessage>,
    unacknowledged: usize,
    reason: String,
) {
    let goodbye = AgentMessage {
        kind: Some(AgentKind::Goodbye(Goodbye { reason })),
    };
    let _ = outbound.send(goodbye).await;
    drop(outbound);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    if unacknowledged > 0 {
        tracing::warn!(
            unacknowledged,
            "leaving the stream with unacknowledged batches (they stay spooled)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_with_pushback(value: &str) -> SessionError {
        let mut status = tonic::Status::unavailable("store full");
        status
            .metadata_mut()
            .insert(PUSHBACK_KEY, value.parse().unwrap());
        SessionError::from(status)
    }

    #[test]
    fn a_revoked_certificate_is_said_so_and_retried_slowest() {
        let refused = SessionError::from(ConnectError::Revoked {
            address: "collector:7070".to_owned(),
        });
        assert!(matches!(refused, SessionError::Revoked), "{refused}");
        assert!(refused.is_permanent());
        let text = refused.to_string();
        assert!(
            text.contains("revoked") && text.contains("enroll --replace"),
            "{text}"
        );
        // The alert as h2 passes it on: in the text of a transport error.
        let alert = std::io::Error::other("received fatal alert: CertificateRevoked");
        let lost = SessionError::from(tonic::Status::from_error(Box::new(alert)));
        assert!(matches!(lost, SessionError::Revoked), "{lost}");
        let other = SessionError::from(ConnectError::Connect {
            address: "collector:7070".to_owned(),
            reason: "connection refused".to_owned(),
        });
        assert!(!other.is_permanent(), "{other}");
    }

    #[test]
    fn pushback_is_read_bounded_and_ignored_when_malformed() {
        let pushback = |value| refused_with_pushback(value).pushback();
        assert_eq!(pushback("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(pushback("99999999999"), Some(MAX_PUSHBACK));
        for bad in ["-5", "soon", "1.5", ""] {
            assert_eq!(pushback(bad), None, "{bad:?}");
        }
        let unasked = SessionError::from(tonic::Status::unavailable("store full"));
        assert_eq!(unasked.pushback(), None);
    }

    #[test]
    fn a_broken_connection_is_not_reported_as_a_refusal() {
        let reset =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "keep-alive timed out");
        let lost = SessionError::from(tonic::Status::from_error(Box::new(reset)));
        let text = lost.to_string();
        assert!(
            text.starts_with("connection to the collector lost: ")
                && text.contains("keep-alive timed out"),
            "{text}"
        );
        let keepalive = Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        };
        let pipe = || {
            let broken = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
            tonic::Status::from_error(Box::new(broken))
        };
        let quick = read_error(pipe(), Duration::from_secs(2), keepalive).to_string();
        assert!(!quick.contains("keepalive"), "{quick}");
        let silent = read_error(pipe(), Duration::from_secs(16), keepalive).to_string();
        assert!(
            silent.starts_with("connection to the collector lost: nothing heard for 16.0s")
                && silent.contains("limits.keepalive_timeout")
                && silent.ends_with("broken pipe"),
            "{silent}"
        );
        let refused = SessionError::from(tonic::Status::invalid_argument("bad batch"));
        assert!(refused.is_permanent());
        assert_eq!(
            refused.to_string(),
            "collector refused: Client specified an invalid argument: bad batch"
        );
    }

    #[test]
    fn a_server_without_the_ingest_protocol_is_said_not_to_be_a_collector() {
        let unimplemented = SessionError::from(tonic::Status::unimplemented(""));
        let text = unimplemented.to_string();
        assert!(
            matches!(unimplemented, SessionError::NotACollector(_))
                && text.contains("not a hostwatch collector"),
            "{text}"
        );
        let refused = SessionError::from(tonic::Status::unavailable("store full"));
        assert!(matches!(refused, SessionError::Refused(_)), "{refused}");
    }

    /// A shipper for `collectors`, with `limits` added to `[limits]`.
    fn shipper(dir: &std::path::Path, collectors: &str, limits: &str) -> (Shipper, Arc<Health>) {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "collectors = [{collectors}]\nstate_dir = \"state\"\n[tls]\nca = \"ca.pem\"\n\
                 cert = \"agent.pem\"\nkey = \"agent.key\"\n[limits]\n{limits}\n"
            ),
        )
        .unwrap();
        let config = AgentConfig::load(&path).unwrap();
        let spool = Arc::new(Spool::open(&dir.join("spool"), 1 << 20));
        let health = Arc::new(Health::default());
        let (channel, _) = watch::channel(None);
        let shipper = Shipper::new(&config, spool, health.clone(), Hello::default(), channel);
        (shipper, health)
    }

    #[test]
    fn failing_over_goes_round_the_list_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shipper, health) = shipper(dir.path(), "\"a:1\", \"b:1\", \"c:1\"", "");
        let e = SessionError::Closed;
        let mut order = vec![shipper.target().address.clone()];
        for _ in 0..3 {
            let delay = shipper.fail_over(&e);
            assert!(delay <= BACKOFF_BASE, "{delay:?}");
            order.push(shipper.target().address.clone());
        }
        assert_eq!(order, ["a:1", "b:1", "c:1", "a:1"]);
        let mut out = crate::sampler::Samples::default();
        health.sample(&shipper.spool, &mut out);
        assert_eq!(out.get("hostwatch_agent_failovers_total", &[]), Some(3.0));
        assert_eq!(out.get("hostwatch_agent_collector_index", &[]), Some(0.0));
    }

    #[test]
    fn probes_come_before_a_third_of_the_host_down_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shipper, _) = shipper(
            dir.path(),
            "\"a:1\", \"b:1\"",
            "probe_interval = \"20s\"\nmax_backoff = \"20s\"",
        );
        let delays = |shipper: &Shipper| (0..50).map(|_| shipper.probe_delay()).collect::<Vec<_>>();
        assert!(
            delays(&shipper)
                .iter()
                .all(|d| (Duration::from_secs(15)..=Duration::from_secs(20)).contains(d))
        );
        // Told by the preferred collector (or the fallback: the shorter).
        shipper.learn_host_down_after("a:1", Duration::from_secs(30));
        shipper.learn_host_down_after("b:1", Duration::from_secs(60));
        let capped = delays(&shipper);
        assert!(
            capped
                .iter()
                .all(|d| (Duration::from_millis(7_500)..=Duration::from_secs(10)).contains(d)),
            "{capped:?}"
        );
        assert!(capped.iter().any(|d| *d != capped[0]), "jittered");
        assert_eq!(shipper.max_backoff(), Duration::from_secs(10));
    }
}
