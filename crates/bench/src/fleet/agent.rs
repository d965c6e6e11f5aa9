//! One simulated agent of `fleet`: the real agent's protocol and timing
//! (agent/src/shipper.rs), its spool kept in memory.
//!
//! A sampler task makes one batch per interval (the storage bench's host:
//! about 90 series of one point each, and a top-process snapshot), its
//! times jittered around the agent's grid, and spools it. A shipper task
//! connects with the agent's own client (`transport::connect`: TLS 1.3,
//! the agent's certificate, one HTTP/2 connection), opens Ingest.Stream,
//! says Hello with facts and, once welcomed, sends what is spooled after
//! the collector's last stored sequence: at most [`MAX_IN_FLIGHT`]
//! messages and about [`REPLAY_BATCH_BYTES`] unacknowledged, a backlog
//! coalesced into messages of up to that size, each acknowledged message
//! leaving the spool. A failed session is retried after the agent's
//! jittered exponential backoff (`hostwatch_stdx::backoff` from 250 ms to
//! the longest backoff, kept below a third of the collector's
//! `host_down_after`), reset only by acknowledged progress; a refusal
//! with `grpc-retry-pushback-ms` waits at least that long, jittered.

use crate::fixture::series_to_proto;
use crate::storage::data::HostGen;
use hostwatch_pki::transport::{ClientTarget, connect};
use hostwatch_proto::v1 as pb;
use pb::agent_message::Kind as AgentKind;
use pb::collector_message::Kind as CollectorKind;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The agent's defaults (agent/src/config.rs `Limits`, agent/src/lib.rs,
/// agent/src/shipper.rs), which the simulated agents keep.
const MAX_IN_FLIGHT: usize = 32;
const REPLAY_BATCH_BYTES: usize = 64 << 10;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_MESSAGE_BYTES: usize = 16 << 20;
const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";
const MAX_PUSHBACK: Duration = Duration::from_secs(300);
/// How far a sampling tick may lie from its place on the agent's grid,
/// as a share of the interval (a busy host's timer is late now and then).
const TICK_JITTER: f64 = 0.05;

/// What the agents share with the bench.
#[derive(Default)]
pub(super) struct Fleet {
    /// Acknowledgement latencies of messages holding one live batch.
    latencies: Mutex<Vec<Latency>>,
    /// Samples in acknowledged messages, all agents.
    pub(super) acked_samples: AtomicU64,
    /// Sessions that failed (connection refused, lost, no answer ...).
    pub(super) failed_sessions: AtomicU64,
    /// Why sessions failed, by kind, for the report's comments.
    failures: Mutex<HashMap<String, u64>>,
    /// Cancelled: the samplers stop making batches.
    pub(super) sampling: CancellationToken,
    /// Cancelled: every task ends.
    pub(super) stop: CancellationToken,
}

/// One acknowledged message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Latency {
    /// When it was handed to the stream.
    pub(super) sent: Instant,
    pub(super) seconds: f64,
}

impl Fleet {
    /// The latencies of messages sent within `from..to`, in seconds.
    pub(super) fn latencies_sent(&self, from: Instant, to: Instant) -> Vec<f64> {
        lock(&self.latencies)
            .iter()
            .filter(|l| l.sent >= from && l.sent < to)
            .map(|l| l.seconds)
            .collect()
    }

    /// Failed sessions by kind, most frequent first.
    pub(super) fn failures(&self) -> Vec<(String, u64)> {
        let mut kinds: Vec<_> = lock(&self.failures)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        kinds
    }

    fn failed(&self, e: &SessionError) {
        self.failed_sessions.fetch_add(1, Ordering::Relaxed);
        *lock(&self.failures).entry(e.kind()).or_default() += 1;
    }
}

/// A poisoned lock only means a panic elsewhere; the data are whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One agent's state, as the bench reads it.
pub(super) struct Agent {
    pub(super) host: String,
    /// The last sequence made.
    pub(super) generated: AtomicU64,
    /// The highest sequence the collector acknowledged or welcomed with.
    pub(super) acked: AtomicU64,
    /// Welcomes received: sessions established.
    pub(super) welcomes: AtomicU64,
    /// Samples made, all batches.
    pub(super) samples: AtomicU64,
    /// The time of every batch made (its samples' and its snapshot's).
    pub(super) batch_times: Mutex<Vec<i64>>,
    spool: Mutex<VecDeque<Spooled>>,
    /// The last sequence spooled, for the shipper to wait on.
    pushed: watch::Sender<u64>,
}

/// A batch in the spool.
struct Spooled {
    batch: pb::Batch,
    bytes: usize,
    samples: u64,
}

/// A message the collector has not acknowledged yet.
struct InFlight {
    /// Its (last) sequence.
    seq: u64,
    sent: Instant,
    bytes: usize,
    samples: u64,
    /// Batches coalesced into it.
    batches: u32,
}

impl Agent {
    pub(super) fn new(host: String) -> Self {
        Agent {
            host,
            generated: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            welcomes: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            batch_times: Mutex::default(),
            spool: Mutex::default(),
            pushed: watch::Sender::new(0),
        }
    }

    fn push(&self, batch: pb::Batch, t_ms: i64) {
        let samples: u64 = batch.series.iter().map(|s| s.values.len() as u64).sum();
        let seq = batch.seq;
        let bytes = prost::Message::encoded_len(&batch);
        lock(&self.spool).push_back(Spooled {
            batch,
            bytes,
            samples,
        });
        lock(&self.batch_times).push(t_ms);
        self.samples.fetch_add(samples, Ordering::Relaxed);
        self.generated.store(seq, Ordering::Release);
        self.pushed.send_replace(seq);
    }

    /// Forgets the batches up to `seq`: the collector has them.
    fn ack_through(&self, seq: u64) {
        let mut spool = lock(&self.spool);
        while spool.front().is_some_and(|s| s.batch.seq <= seq) {
            spool.pop_front();
        }
        drop(spool);
        self.acked.fetch_max(seq, Ordering::AcqRel);
    }

    /// The spooled batches after `after`, coalesced into one message up to
    /// `max_bytes` (at least one batch), as the agent's spool does.
    fn batch_after(&self, after: u64, max_bytes: usize) -> Option<InFlightBatch> {
        let spool = lock(&self.spool);
        let start = spool.partition_point(|s| s.batch.seq <= after);
        let mut merged: Option<Merger> = None;
        let (mut bytes, mut samples, mut batches) = (0, 0, 0);
        for spooled in spool.range(start..) {
            if merged.is_some() && bytes + spooled.bytes > max_bytes {
                break;
            }
            bytes += spooled.bytes;
            samples += spooled.samples;
            batches += 1;
            match &mut merged {
                None => merged = Some(Merger::new(spooled.batch.clone())),
                Some(m) => m.add(&spooled.batch),
            }
        }
        merged.map(|m| InFlightBatch {
            batch: m.batch,
            bytes,
            samples,
            batches,
        })
    }
}

/// A message made of spooled batches.
struct InFlightBatch {
    batch: pb::Batch,
    bytes: usize,
    samples: u64,
    batches: u32,
}

/// Coalesces batches: each series' points appended to its first
/// occurrence, as agent/src/spool.rs's `Merger`.
struct Merger {
    batch: pb::Batch,
    index: HashMap<(String, Vec<(String, String)>), usize>,
}

impl Merger {
    fn new(batch: pb::Batch) -> Self {
        let index = batch
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (series_key(s), i))
            .collect();
        Merger { batch, index }
    }

    fn add(&mut self, next: &pb::Batch) {
        for s in &next.series {
            match self.index.get(&series_key(s)) {
                Some(&i) => {
                    let into = &mut self.batch.series[i];
                    into.timestamps_ms.extend_from_slice(&s.timestamps_ms);
                    into.values.extend_from_slice(&s.values);
                }
                None => {
                    self.index.insert(series_key(s), self.batch.series.len());
                    self.batch.series.push(s.clone());
                }
            }
        }
        self.batch.processes.extend(next.processes.iter().cloned());
        self.batch.dropped_batches_total = next.dropped_batches_total;
        self.batch.seq = next.seq;
    }
}

fn series_key(s: &pb::SeriesPoints) -> (String, Vec<(String, String)>) {
    let labels = s
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    (s.metric.clone(), labels)
}

/// Makes a batch every `interval`, the first `first` after now, until the
/// fleet stops sampling.
pub(super) async fn sample(
    agent: Arc<Agent>,
    mut host: HostGen,
    interval: Duration,
    first: Duration,
    fleet: Arc<Fleet>,
) {
    let start = Instant::now() + first;
    let mut scratch = host.batch();
    for tick in 0u32.. {
        let grid = start + interval * tick;
        let at = if tick == 0 {
            grid
        } else {
            let r: f64 = rand::rng().random_range(-1.0..=1.0);
            let shift = interval.mul_f64(TICK_JITTER * r.abs());
            if r < 0.0 { grid - shift } else { grid + shift }
        };
        tokio::select! {
            _ = fleet.sampling.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        let seq = u64::from(tick) + 1;
        let t_ms = hostwatch_stdx::now_ms();
        host.fill(&mut scratch, seq, t_ms, 1);
        let batch = pb::Batch {
            seq,
            series: series_to_proto(&scratch),
            dropped_batches_total: 0,
            processes: scratch.processes.iter().map(snapshot_to_proto).collect(),
        };
        agent.push(batch, t_ms);
    }
}

fn snapshot_to_proto(s: &hostwatch_tsdb::ProcessSnapshot) -> pb::ProcessSnapshot {
    pb::ProcessSnapshot {
        timestamp_ms: s.t_ms,
        processes: s
            .processes
            .iter()
            .map(|p| pb::ProcessInfo {
                pid: p.pid,
                name: p.name.clone(),
                command: p.command.clone(),
                user: p.user.clone(),
                cpu_cores: p.cpu_cores,
                rss_bytes: p.rss_bytes,
                start_time_ms: p.start_time_ms,
            })
            .collect(),
    }
}

/// The Hello of agent `index`: facts of a typical server.
pub(super) fn hello(index: u32, host: &str) -> pb::Hello {
    pb::Hello {
        host_id: host.to_owned(),
        spool_id: 1 + u64::from(index),
        boot_id: format!("{index:08x}-0000-4000-8000-000000000000"),
        facts: Some(pb::HostFacts {
            hostname: host.to_owned(),
            os_name: "Debian GNU/Linux".to_owned(),
            os_version: "12 (bookworm)".to_owned(),
            kernel_version: "6.1.0-28-amd64".to_owned(),
            architecture: "x86_64".to_owned(),
            cpu_model: "Intel(R) Xeon(R) Gold 6230R CPU @ 2.10GHz".to_owned(),
            cpu_count: 4,
            memory_total_bytes: 16 << 30,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            boot_time_ms: 1_790_000_000_000 + i64::from(index) * 1000,
        }),
    }
}

#[derive(Debug)]
enum SessionError {
    Connect(String),
    /// A status from the collector or the transport.
    Status(tonic::Status),
    Closed,
    NoWelcome,
    NoAnswer,
    NoAck,
}

impl SessionError {
    /// A short kind for the report: what went wrong, not for which agent.
    fn kind(&self) -> String {
        match self {
            SessionError::Connect(reason) => {
                let reason: String = reason.chars().take(120).collect();
                format!("connect: {reason}")
            }
            SessionError::Status(s) => {
                let message: String = s.message().chars().take(80).collect();
                format!("status {:?}: {message}", s.code())
            }
            SessionError::Closed => "stream closed".to_owned(),
            SessionError::NoWelcome => "no Welcome first".to_owned(),
            SessionError::NoAnswer => "no Welcome in time".to_owned(),
            SessionError::NoAck => "no acknowledgement in time".to_owned(),
        }
    }

    /// As the agent's: a refused identity or request is retried slowest.
    fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Status(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::InvalidArgument))
    }

    fn pushback(&self) -> Option<Duration> {
        let SessionError::Status(status) = self else {
            return None;
        };
        let value = status.metadata().get(PUSHBACK_KEY)?.to_str().ok()?;
        let ms: u64 = value.trim().parse().ok()?;
        Some(Duration::from_millis(ms).min(MAX_PUSHBACK))
    }
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        SessionError::Status(status)
    }
}

/// What a session achieved.
#[derive(Default)]
struct Progress {
    acknowledged: bool,
    host_down_after: Option<Duration>,
}

/// The shipping half of one agent.
pub(super) struct Shipper {
    pub(super) agent: Arc<Agent>,
    pub(super) fleet: Arc<Fleet>,
    pub(super) target: ClientTarget,
    pub(super) hello: pb::Hello,
    /// The collector's `host_down_after`, from its latest Welcome.
    pub(super) host_down_after: Option<Duration>,
}

impl Shipper {
    /// Ships from `first` after now until the fleet stops.
    pub(super) async fn run(mut self, first: Duration) {
        let stop = self.fleet.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(first) => {}
        }
        let mut attempt: u32 = 0;
        loop {
            let mut progress = Progress::default();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = self.session(&mut progress) => result,
            };
            if progress.acknowledged {
                attempt = 0;
            }
            if progress.host_down_after.is_some() {
                self.host_down_after = progress.host_down_after;
            }
            let e = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            self.fleet.failed(&e);
            let delay = self.retry_delay(&e, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The agent's longest backoff: below a third of `host_down_after`.
    fn max_backoff(&self) -> Duration {
        match self.host_down_after {
            Some(down) => MAX_BACKOFF.min((down / 3).max(BACKOFF_BASE)),
            None => MAX_BACKOFF,
        }
    }

    fn retry_delay(&self, e: &SessionError, attempt: u32) -> Duration {
        let max = self.max_backoff();
        if e.is_permanent() {
            max.max(e.pushback().unwrap_or_default())
        } else if let Some(pushback) = e.pushback() {
            let asked = pushback + pushback.mul_f64(0.2 * rand::rng().random::<f64>());
            asked.max(hostwatch_stdx::backoff(attempt, BACKOFF_BASE, max))
        } else {
            hostwatch_stdx::backoff(attempt, BACKOFF_BASE, max)
        }
    }

    /// One stream: connect, Hello, Welcome, then batches and acks until
    /// it fails.
    async fn session(&self, progress: &mut Progress) -> Result<(), SessionError> {
        let (channel, _) = connect(&self.target)
            .await
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        let mut client = pb::ingest_client::IngestClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outbound, rx) = mpsc::channel(MAX_IN_FLIGHT + 2);
        let hello = pb::AgentMessage {
            kind: Some(AgentKind::Hello(self.hello.clone())),
        };
        // Cannot fail: the receiver is alive and the channel has room.
        let _ = outbound.try_send(hello);
        let handshake = async {
            let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
            let first = inbound.message().await?;
            Ok::<_, SessionError>((inbound, first))
        };
        let (mut inbound, first) = tokio::time::timeout(self.target.connect_timeout, handshake)
            .await
            .map_err(|_| SessionError::NoAnswer)??;
        let last_stored = match first.and_then(|m| m.kind) {
            Some(CollectorKind::Welcome(w)) => {
                progress.host_down_after =
                    (w.host_down_after_ms > 0).then(|| Duration::from_millis(w.host_down_after_ms));
                w.last_stored_seq
            }
            Some(CollectorKind::Ack(_)) => return Err(SessionError::NoWelcome),
            None => return Err(SessionError::Closed),
        };
        let agent = &self.agent;
        agent.welcomes.fetch_add(1, Ordering::AcqRel);
        agent.ack_through(last_stored);
        let mut window = Window::after(last_stored);
        let mut pushed = agent.pushed.subscribe();
        loop {
            self.fill(&mut window, &outbound).await?;
            let far = Instant::now() + Duration::from_secs(3600);
            let ack_due = window.ack_due();
            tokio::select! {
                changed = pushed.changed(), if window.has_room() => {
                    // The sender lives in `agent`, which outlives this.
                    if changed.is_err() {
                        return Err(SessionError::Closed);
                    }
                }
                message = inbound.message() => match message?.and_then(|m| m.kind) {
                    Some(CollectorKind::Ack(ack)) => {
                        agent.ack_through(ack.seq);
                        if window.acknowledge(ack.seq, &self.fleet) {
                            progress.acknowledged = true;
                        }
                    }
                    Some(CollectorKind::Welcome(_)) => return Err(SessionError::NoWelcome),
                    None => return Err(SessionError::Closed),
                },
                _ = tokio::time::sleep_until(ack_due.unwrap_or(far)), if ack_due.is_some() => {
                    return Err(SessionError::NoAck);
                }
            }
        }
    }

    /// Sends spooled batches while the window has room.
    async fn fill(
        &self,
        window: &mut Window,
        outbound: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        while window.has_room() {
            let Some(message) = self.agent.batch_after(window.sent, REPLAY_BATCH_BYTES) else {
                break;
            };
            window.sending(&message);
            let message = pb::AgentMessage {
                kind: Some(AgentKind::Batch(message.batch)),
            };
            if outbound.send(message).await.is_err() {
                return Err(SessionError::Closed);
            }
        }
        Ok(())
    }
}

/// The messages sent and not yet acknowledged, as the agent's `Window`.
struct Window {
    sent: u64,
    in_flight: VecDeque<InFlight>,
    bytes: usize,
    last_ack: Instant,
}

impl Window {
    fn after(sent: u64) -> Self {
        Window {
            sent,
            in_flight: VecDeque::new(),
            bytes: 0,
            last_ack: Instant::now(),
        }
    }

    fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT && self.bytes < REPLAY_BATCH_BYTES
    }

    fn sending(&mut self, message: &InFlightBatch) {
        self.sent = message.batch.seq;
        self.bytes += message.bytes;
        self.in_flight.push_back(InFlight {
            seq: message.batch.seq,
            sent: Instant::now(),
            bytes: message.bytes,
            samples: message.samples,
            batches: message.batches,
        });
    }

    fn ack_due(&self) -> Option<Instant> {
        self.in_flight
            .front()
            .map(|m| m.sent.max(self.last_ack) + ACK_TIMEOUT)
    }

    /// Takes the messages up to `seq` out; records the latency of the one
    /// acknowledged by name if it held one batch (a backlog's coalesced
    /// messages wait behind each other by design). Whether any was taken.
    fn acknowledge(&mut self, seq: u64, fleet: &Fleet) -> bool {
        let mut acknowledged = false;
        while let Some(front) = self.in_flight.front()
            && front.seq <= seq
        {
            if front.seq == seq && front.batches == 1 {
                lock(&fleet.latencies).push(Latency {
                    sent: front.sent,
                    seconds: front.sent.elapsed().as_secs_f64(),
                });
            }
            fleet
                .acked_samples
                .fetch_add(front.samples, Ordering::Relaxed);
            self.bytes -= front.bytes;
            self.in_flight.pop_front();
            self.last_ack = Instant::now();
            acknowledged = true;
        }
        acknowledged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, points: usize) -> pb::Batch {
        let series = |metric: &str| pb::SeriesPoints {
            metric: metric.to_owned(),
            labels: vec![pb::Label {
                name: "cpu".to_owned(),
                value: "0".to_owned(),
            }],
            timestamps_ms: (0..points as i64).map(|i| seq as i64 * 1000 + i).collect(),
            values: vec![1.0; points],
        };
        pb::Batch {
            seq,
            series: vec![series("a"), series("b")],
            dropped_batches_total: 0,
            processes: vec![pb::ProcessSnapshot {
                timestamp_ms: seq as i64,
                processes: vec![],
            }],
        }
    }

    #[test]
    fn a_backlog_is_coalesced_up_to_the_bytes_and_acks_empty_the_spool() {
        let agent = Agent::new("host-0".to_owned());
        for seq in 1..=5 {
            agent.push(batch(seq, 1), 0);
        }
        assert_eq!(agent.generated.load(Ordering::Relaxed), 5);
        assert_eq!(agent.samples.load(Ordering::Relaxed), 10);
        let one = lock(&agent.spool)[0].bytes;
        // Room for three batches: the first three, merged per series.
        let message = agent.batch_after(0, 3 * one).unwrap();
        assert_eq!((message.batch.seq, message.batches), (3, 3));
        assert_eq!(message.samples, 6);
        assert_eq!(message.batch.series.len(), 2);
        assert_eq!(message.batch.series[0].timestamps_ms, [1000, 2000, 3000]);
        assert_eq!(message.batch.processes.len(), 3);
        // Less room than one batch still sends one.
        let message = agent.batch_after(3, 1).unwrap();
        assert_eq!((message.batch.seq, message.batches), (4, 1));
        agent.ack_through(4);
        assert_eq!(agent.acked.load(Ordering::Relaxed), 4);
        let message = agent.batch_after(0, usize::MAX).unwrap();
        assert_eq!((message.batch.seq, message.batches), (5, 1));
        agent.ack_through(5);
        assert!(agent.batch_after(0, usize::MAX).is_none());
    }

    #[test]
    fn the_window_records_single_batches_and_counts_samples() {
        let fleet = Fleet::default();
        let agent = Agent::new("host-0".to_owned());
        let mut window = Window::after(0);
        for seq in 1..=3 {
            agent.push(batch(seq, 2), 0);
        }
        let coalesced = agent.batch_after(0, usize::MAX).unwrap();
        window.sending(&coalesced);
        agent.push(batch(4, 2), 0);
        window.sending(&agent.batch_after(3, usize::MAX).unwrap());
        assert!(window.ack_due().is_some());
        assert!(!window.acknowledge(0, &fleet));
        // The coalesced message: samples counted, no latency.
        assert!(window.acknowledge(3, &fleet));
        assert_eq!(fleet.acked_samples.load(Ordering::Relaxed), 12);
        assert!(lock(&fleet.latencies).is_empty());
        assert!(window.acknowledge(4, &fleet));
        assert_eq!(lock(&fleet.latencies).len(), 1);
        assert_eq!(window.bytes, 0);
        assert!(window.ack_due().is_none());
    }

    #[test]
    fn refusals_are_retried_as_the_agent_does() {
        let fleet = Arc::new(Fleet::default());
        let shipper = Shipper {
            agent: Arc::new(Agent::new("host-0".to_owned())),
            fleet,
            target: ClientTarget {
                address: "127.0.0.1:1".to_owned(),
                server_name: None,
                tls: hostwatch_pki::TlsFiles {
                    ca: "ca.pem".into(),
                    cert: "c.pem".into(),
                    key: "c.key".into(),
                },
                connect_timeout: Duration::from_secs(1),
                keepalive: Default::default(),
            },
            hello: hello(0, "host-0"),
            host_down_after: Some(Duration::from_secs(6)),
        };
        // Kept below a third of host_down_after.
        assert_eq!(shipper.max_backoff(), Duration::from_secs(2));
        let refused = SessionError::from(tonic::Status::permission_denied("no"));
        assert_eq!(shipper.retry_delay(&refused, 0), Duration::from_secs(2));
        let mut status = tonic::Status::unavailable("busy");
        status
            .metadata_mut()
            .insert(PUSHBACK_KEY, "5000".parse().unwrap());
        let delay = shipper.retry_delay(&SessionError::from(status), 0);
        assert!(
            delay >= Duration::from_secs(5) && delay <= Duration::from_secs(6),
            "{delay:?}"
        );
        let lost = SessionError::Closed;
        assert!(shipper.retry_delay(&lost, 30) <= Duration::from_secs(2));
        assert!(shipper.retry_delay(&lost, 0) <= BACKOFF_BASE);
    }
}
