//! How often an agent comes back to a collector that cannot take its
//! batches: against a real tonic Ingest server over real mTLS on loopback
//! that refuses the way a troubled collector does, on tokio's paused clock,
//! counting the streams the agent opens within a bounded time.

use hostwatch_agent::config::Limits;
use hostwatch_pki::Role;
use hostwatch_pki::transport::{CallLimitLayer, ServerTls, incoming};
use hostwatch_proto::v1::agent_message::Kind as AgentKind;
use hostwatch_proto::v1::collector_message::Kind as CollectorKind;
use hostwatch_proto::v1::ingest_server::{Ingest, IngestServer};
use hostwatch_proto::v1::{Ack, AgentMessage, CollectorMessage, Welcome};
use hostwatch_tests::*;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Refuses every stream at once with this code and, if set, a
    /// `grpc-retry-pushback-ms` of this many milliseconds.
    Refuse(Code, Option<u64>),
    /// Welcomes, then ends the stream with UNAVAILABLE at the first batch:
    /// a collector that accepts streams but cannot store.
    FailFirstBatch,
    /// Acknowledges the first batch, then fails as above.
    AckFirstBatchThenFail,
    /// Fails the first stream's first batch as above, refuses later
    /// streams at once with UNAVAILABLE: one Welcome only.
    WelcomeOnce,
    /// Welcomes and reads batches, never acknowledging one.
    NeverAck,
}

/// A collector that misbehaves as told; counts the streams opened.
struct FakeCollector {
    behaviour: Behaviour,
    host_down_after_ms: u64,
    streams: Arc<AtomicUsize>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for FakeCollector {
    type StreamStream = Replies;

    async fn renew(
        &self,
        _request: Request<hostwatch_proto::v1::RenewRequest>,
    ) -> Result<Response<hostwatch_proto::v1::RenewResponse>, Status> {
        Err(Status::unimplemented(
            "this test's collector renews nothing",
        ))
    }

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Replies>, Status> {
        let earlier = self.streams.fetch_add(1, Ordering::SeqCst);
        let behaviour = match self.behaviour {
            Behaviour::WelcomeOnce if earlier > 0 => Behaviour::Refuse(Code::Unavailable, None),
            other => other,
        };
        if let Behaviour::Refuse(code, pushback) = behaviour {
            let mut status = Status::new(code, "refused by the test");
            if let Some(ms) = pushback {
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", ms.to_string().parse().unwrap());
            }
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let welcome = Welcome {
            collector: "fake".to_owned(),
            last_stored_seq: 0,
            host_down_after_ms: self.host_down_after_ms,
        };
        let (replies, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let message = |kind| Ok(CollectorMessage { kind: Some(kind) });
            let cannot_store = || Err(Status::unavailable("cannot store"));
            // The Hello.
            let _ = inbound.message().await;
            let _ = replies.send(message(CollectorKind::Welcome(welcome))).await;
            while let Ok(Some(AgentMessage { kind })) = inbound.message().await {
                let Some(AgentKind::Batch(batch)) = kind else {
                    continue;
                };
                match behaviour {
                    Behaviour::FailFirstBatch | Behaviour::WelcomeOnce => {
                        let _ = replies.send(cannot_store()).await;
                        return;
                    }
                    Behaviour::AckFirstBatchThenFail => {
                        let ack = CollectorKind::Ack(Ack { seq: batch.seq });
                        let _ = replies.send(message(ack)).await;
                        let _ = replies.send(cannot_store()).await;
                        return;
                    }
                    Behaviour::NeverAck | Behaviour::Refuse(..) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The streams an agent with `limits` opens within `window` (tokio's
/// clock) against a collector behaving as told.
async fn streams_within(
    behaviour: Behaviour,
    host_down_after_ms: u64,
    limits: impl FnOnce(&mut Limits),
    window: Duration,
) -> usize {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTls::load(pki.files(Role::Collector, "fake")).unwrap();
    let listener_limits = test_listener_limits();
    let streams = Arc::new(AtomicUsize::new(0));
    let service = IngestServer::new(FakeCollector {
        behaviour,
        host_down_after_ms,
        streams: streams.clone(),
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(CallLimitLayer)
            .add_service(service)
            .serve_with_incoming(incoming(
                listener,
                tls,
                listener_limits,
                std::future::pending(),
            )),
    );
    let state = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, "patient", addr, state.path());
    limits(&mut config.limits);
    let agent = RunningAgent::start(config);
    tokio::time::sleep(window).await;
    let opened = streams.load(Ordering::SeqCst);
    agent.stop().await;
    server.abort();
    opened
}

#[tokio::test(start_paused = true)]
async fn a_welcome_without_acknowledgements_does_not_reset_the_backoff() {
    // Backing off from 250 ms to 4 s and staying there: about 20 streams
    // in a minute; resetting at every Welcome, one every 250 ms or less.
    let opened = streams_within(
        Behaviour::FailFirstBatch,
        0,
        |l| l.max_backoff = Duration::from_secs(4),
        Duration::from_secs(60),
    )
    .await;
    assert!((10..=40).contains(&opened), "{opened} streams in a minute");
}

#[tokio::test(start_paused = true)]
async fn acknowledged_progress_resets_the_backoff() {
    let opened = streams_within(
        Behaviour::AckFirstBatchThenFail,
        0,
        |l| l.max_backoff = Duration::from_secs(4),
        Duration::from_secs(30),
    )
    .await;
    assert!(opened >= 20, "{opened} streams in 30 s");
}

#[tokio::test(start_paused = true)]
async fn the_retry_delay_a_refusal_asks_for_is_honoured() {
    // The agent's own backoff would retry every 500 ms at most.
    for code in [Code::Unavailable, Code::ResourceExhausted] {
        let opened = streams_within(
            Behaviour::Refuse(code, Some(5_000)),
            0,
            |l| l.max_backoff = Duration::from_millis(500),
            Duration::from_secs(60),
        )
        .await;
        // At least 5 s apart.
        assert!(
            (1..=13).contains(&opened),
            "{code:?}: {opened} streams in a minute"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_is_retried_at_the_slowest_pace() {
    // Even when the refusal asks for less.
    for pushback in [None, Some(100)] {
        let opened = streams_within(
            Behaviour::Refuse(Code::InvalidArgument, pushback),
            0,
            |l| l.max_backoff = Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .await;
        assert!(
            (1..=7).contains(&opened),
            "{pushback:?}: {opened} streams in a minute"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn batches_never_acknowledged_make_the_agent_reconnect() {
    let opened = streams_within(
        Behaviour::NeverAck,
        0,
        |l| l.ack_timeout = Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert!(opened >= 3, "{opened} streams in 30 s");
}

#[tokio::test(start_paused = true)]
async fn the_backoff_stays_below_the_collectors_host_down_after() {
    // A configured 30 s ceiling would allow about 9 streams a minute; a
    // third of the collector's 3 s, told once, one every second or sooner.
    let opened = streams_within(
        Behaviour::WelcomeOnce,
        3_000,
        |l| l.max_backoff = Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await;
    assert!(opened >= 30, "{opened} streams in a minute");
}
