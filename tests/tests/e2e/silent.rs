//! A collector that accepts the connection and the stream but never says
//! Welcome (wedged, or not a hostwatch collector at all) does not hold the
//! agent: it gives up after `limits.connect_timeout` and tries again, and
//! still stops at once when told to.

use hostwatch_pki::Role;
use hostwatch_pki::transport::{CallLimitLayer, ServerTls, incoming};
use hostwatch_proto::v1::ingest_server::{Ingest, IngestServer};
use hostwatch_proto::v1::{AgentMessage, CollectorMessage};
use hostwatch_tests::*;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Answers every stream with silence; counts the streams opened.
struct Silent {
    streams: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Ingest for Silent {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

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
        _request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_is_given_up_and_retried() {
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTls::load(pki.files(Role::Collector, "silent")).unwrap();
    let limits = test_listener_limits();
    let streams = Arc::new(AtomicUsize::new(0));
    let service = IngestServer::new(Silent {
        streams: streams.clone(),
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(CallLimitLayer)
            .add_service(service)
            .serve_with_incoming(incoming(listener, tls, limits, std::future::pending())),
    );

    let state = tempfile::tempdir().unwrap();
    let mut config = agent_config(&pki, "patient", addr, state.path());
    config.limits.connect_timeout = Duration::from_millis(300);
    let agent = RunningAgent::start(config);
    eventually(Duration::from_secs(20), "a second attempt", || {
        let streams = streams.clone();
        async move { (streams.load(Ordering::SeqCst) >= 2).then_some(()) }
    })
    .await;
    // Waiting for a Welcome, it still stops at once.
    tokio::time::timeout(Duration::from_secs(10), agent.stop())
        .await
        .expect("the agent did not stop");
    server.abort();
}
