//! Agents stream samples; the collector stores them, lists hosts, and
//! answers queries, also after a restart.

use hostwatch_pki::Role;
use hostwatch_proto::v1::agent_message::Kind;
use hostwatch_proto::v1::collector_message::Kind as Reply;
use hostwatch_proto::v1::{
    AgentMessage, Aggregation, Batch, CollectorMessage, Hello, LatestRequest, ListHostsRequest,
    Matcher, RangeRequest, SeriesPoints, matcher,
};
use hostwatch_tests::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn host_matcher(host: &str) -> Matcher {
    Matcher {
        name: "host".into(),
        op: matcher::Op::Equal as i32,
        value: host.into(),
    }
}

async fn range_points(
    client: &mut hostwatch_proto::v1::query_client::QueryClient<tonic::transport::Channel>,
    metric: &str,
    host: &str,
) -> usize {
    let response = client
        .range(RangeRequest {
            metric: metric.into(),
            matchers: vec![host_matcher(host)],
            start_ms: now_ms() - 600_000,
            end_ms: now_ms() + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response.series.iter().map(|s| s.values.len()).sum()
}

#[tokio::test]
async fn two_agents_are_listed_up_and_their_samples_queryable() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let state = tempfile::tempdir().unwrap();
    let a = RunningAgent::start(agent_config(&pki, "alpha", collector.addr, state.path()));
    let b = RunningAgent::start(agent_config(&pki, "beta", collector.addr, state.path()));
    let mut client = operator(&pki, collector.addr).await;

    for host in ["alpha", "beta"] {
        eventually(WAIT, &format!("3 samples of {host}"), || {
            let mut client = client.clone();
            async move {
                (range_points(&mut client, "host_memory_available_bytes", host).await >= 3)
                    .then_some(())
            }
        })
        .await;
    }
    let hosts = client
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let ids: Vec<&str> = hosts.iter().map(|h| h.host_id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    for host in &hosts {
        assert!(host.up && host.connected, "{host:?}");
        let facts = host.facts.as_ref().expect("facts");
        assert!(
            facts.cpu_count > 0 && facts.memory_total_bytes > 0,
            "{facts:?}"
        );
        assert!(!host.boot_id.is_empty());
    }
    let latest = client
        .latest(LatestRequest {
            host_id: "alpha".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .values;
    let available = latest
        .iter()
        .find(|v| v.metric == "host_memory_available_bytes")
        .expect("memory in latest");
    assert!(available.value > 0.0);
    assert!(latest.iter().all(|v| {
        v.labels
            .iter()
            .any(|l| l.name == "host" && l.value == "alpha")
    }));

    a.stop().await;
    b.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn restarted_collector_still_serves_earlier_samples() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = collector_config(&pki, data.path());
    let collector = RunningCollector::start(config.clone()).await;
    let agent = RunningAgent::start(agent_config(&pki, "gamma", collector.addr, state.path()));
    let mut client = operator(&pki, collector.addr).await;
    eventually(WAIT, "samples of gamma", || {
        let mut client = client.clone();
        async move { (range_points(&mut client, "host_load1", "gamma").await >= 3).then_some(()) }
    })
    .await;
    agent.stop().await;
    let stored = range_points(&mut client, "host_load1", "gamma").await;
    collector.stop().await;

    let collector = RunningCollector::start(config).await;
    let mut client = operator(&pki, collector.addr).await;
    assert_eq!(
        range_points(&mut client, "host_load1", "gamma").await,
        stored
    );
    let hosts = client
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts[0].host_id, "gamma");
    assert!(!hosts[0].connected);
    assert!(
        hosts[0].clean_shutdown,
        "the agent said goodbye before the restart"
    );
    collector.stop().await;
}

#[tokio::test]
async fn stopped_or_killed_agents_turn_down_after_the_timeout() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = collector_config(&pki, data.path());
    config.host_down_after = Duration::from_secs(1);
    let collector = RunningCollector::start(config).await;
    let stopped = RunningAgent::start(agent_config(&pki, "stopped", collector.addr, state.path()));
    let killed = RunningAgent::start(agent_config(&pki, "killed", collector.addr, state.path()));
    let mut client = operator(&pki, collector.addr).await;
    let status =
        |client: &mut hostwatch_proto::v1::query_client::QueryClient<tonic::transport::Channel>| {
            let mut client = client.clone();
            async move {
                client
                    .list_hosts(ListHostsRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .hosts
            }
        };
    eventually(WAIT, "both hosts up", || {
        let fut = status(&mut client);
        async move { (fut.await.iter().filter(|h| h.up).count() == 2).then_some(()) }
    })
    .await;

    stopped.stop().await;
    killed.kill().await;
    // Still up right after: the timeout has not passed.
    let hosts = status(&mut client).await;
    assert!(hosts.iter().all(|h| h.up), "{hosts:?}");
    let hosts = eventually(WAIT, "both hosts down", || {
        let fut = status(&mut client);
        async move {
            let hosts = fut.await;
            hosts.iter().all(|h| !h.up && !h.connected).then_some(hosts)
        }
    })
    .await;
    let clean: Vec<(&str, bool)> = hosts
        .iter()
        .map(|h| (h.host_id.as_str(), h.clean_shutdown))
        .collect();
    assert_eq!(clean, [("killed", false), ("stopped", true)]);
    collector.stop().await;
}

#[tokio::test]
async fn operators_get_clear_errors_for_bad_queries() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let mut client = operator(&pki, collector.addr).await;
    let bad = [
        RangeRequest {
            metric: "".into(),
            matchers: vec![],
            start_ms: 0,
            end_ms: 1,
            ..Default::default()
        },
        RangeRequest {
            metric: "m".into(),
            matchers: vec![],
            start_ms: 5,
            end_ms: 5,
            ..Default::default()
        },
        RangeRequest {
            metric: "m".into(),
            matchers: vec![Matcher {
                name: "a".into(),
                op: matcher::Op::Regex as i32,
                value: "(".into(),
            }],
            start_ms: 0,
            end_ms: 1,
            ..Default::default()
        },
        RangeRequest {
            metric: "m".into(),
            matchers: vec![Matcher {
                name: "a".into(),
                op: 99,
                value: "x".into(),
            }],
            start_ms: 0,
            end_ms: 1,
            ..Default::default()
        },
    ];
    let stepped = |step_ms, aggregation| RangeRequest {
        metric: "m".into(),
        start_ms: 0,
        end_ms: 1,
        step_ms,
        aggregation,
        ..Default::default()
    };
    let bad = bad.into_iter().chain([
        // A step without an aggregation, an unknown one, a negative step,
        // an aggregation without a step.
        stepped(60_000, 0),
        stepped(60_000, 42),
        stepped(-1, Aggregation::Avg as i32),
        stepped(0, Aggregation::Avg as i32),
    ]);
    for request in bad {
        let status = client.range(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    let status = client
        .latest(LatestRequest {
            host_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    collector.stop().await;
}

#[tokio::test]
async fn process_snapshots_round_trip_and_replays_are_stored_once() {
    use hostwatch_pki::Role;
    use hostwatch_proto::v1::{
        Batch, ProcessInfo, ProcessSnapshot, ProcessesRequest, SeriesPoints,
    };

    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = RunningCollector::start(collector_config(&pki, data.path())).await;
    let now = now_ms();
    let batch = Batch {
        seq: 1,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: vec![],
            timestamps_ms: vec![now - 1000],
            values: vec![0.5],
        }],
        dropped_batches_total: 0,
        processes: vec![ProcessSnapshot {
            timestamp_ms: now - 1000,
            processes: vec![ProcessInfo {
                pid: 42,
                name: "busy".into(),
                command: "busy --loop".into(),
                user: "root".into(),
                cpu_cores: 0.97,
                rss_bytes: 1 << 20,
                start_time_ms: now - 60_000,
            }],
        }],
    };
    // The same batch twice, on two streams: a replay after a lost ack.
    for _ in 0..2 {
        let files = pki.files(Role::Agent, "delta");
        deliver_batch(files, collector.addr, "delta", 5, batch.clone()).await;
    }
    let mut client = operator(&pki, collector.addr).await;
    assert_eq!(
        range_points(&mut client, "host_load1", "delta").await,
        1,
        "replay stored twice"
    );
    let snapshot = client
        .processes(ProcessesRequest {
            host_id: "delta".into(),
            at_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .expect("a snapshot");
    assert_eq!(snapshot.processes[0].name, "busy");
    let before = client
        .processes(ProcessesRequest {
            host_id: "delta".into(),
            at_ms: now - 5000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(before.snapshot.is_none());
    collector.stop().await;
}

/// Sends `messages`, encoded already (any bytes), on an Ingest stream as
/// agent `host`; returns the replies up to the status that ended it.
async fn raw_ingest(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    host: &str,
    messages: Vec<Vec<u8>>,
) -> (Vec<CollectorMessage>, tonic::Status) {
    /// Sends bytes as they are; decodes replies as `CollectorMessage`s.
    struct RawCodec;
    struct RawEncoder;
    struct ReplyDecoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for ReplyDecoder {
        type Item = CollectorMessage;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<CollectorMessage>, tonic::Status> {
            prost::Message::decode(src)
                .map(Some)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }
    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = CollectorMessage;
        type Encoder = RawEncoder;
        type Decoder = ReplyDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ReplyDecoder {
            ReplyDecoder
        }
    }
    let channel = channel(pki.files(Role::Agent, host), addr).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/hostwatch.v1.Ingest/Stream");
    let outbound = tokio_stream::iter(messages);
    let mut inbound = match grpc
        .streaming(tonic::Request::new(outbound), path, RawCodec)
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), status),
    };
    let mut replies = Vec::new();
    loop {
        match inbound.message().await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => return (replies, tonic::Status::ok("")),
            Err(status) => return (replies, status),
        }
    }
}

#[tokio::test]
async fn oversized_and_undecodable_messages_end_the_stream_with_a_reason_and_are_counted() {
    use prost::Message;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "[limits]\nmax_message_bytes = 65536\n");
    let collector = RunningCollector::start(config).await;
    let hello = AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: "zeta".into(),
            spool_id: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let big = AgentMessage {
        kind: Some(Kind::Batch(Batch {
            seq: 1,
            series: vec![SeriesPoints {
                metric: "m".into(),
                labels: vec![],
                timestamps_ms: (0..10_000).map(|i| now_ms() - i).collect(),
                values: vec![1.5; 10_000],
            }],
            ..Default::default()
        })),
    }
    .encode_to_vec();
    assert!(big.len() > 65_536);
    let (replies, status) =
        raw_ingest(&pki, collector.addr, "zeta", vec![hello.clone(), big]).await;
    assert!(
        matches!(
            replies[..],
            [CollectorMessage {
                kind: Some(Reply::Welcome(_))
            }]
        ),
        "{replies:?}"
    );
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_message_bytes"), "{status:?}");

    // Not a protobuf message: field 0 does not exist.
    let garbage = vec![0x00, 0xff, 0xff];
    let (_, status) = raw_ingest(&pki, collector.addr, "zeta", vec![hello, garbage]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not an AgentMessage"),
        "{status:?}"
    );

    assert_eq!(refused_messages(&pki, collector.addr).await, (1, 1));
    collector.stop().await;
}

/// The collector's counts of oversized and undecodable agent messages,
/// as an operator reads them.
async fn refused_messages(pki: &TestPki, addr: std::net::SocketAddr) -> (u64, u64) {
    let admin = channel(pki.files(Role::Operator, "ops"), addr)
        .await
        .unwrap();
    let stats = hostwatch_proto::v1::admin_client::AdminClient::new(admin)
        .storage_stats(hostwatch_proto::v1::StorageStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    (stats.oversized_messages, stats.undecodable_messages)
}

/// Sends `body` (raw bytes, gRPC's framing or not) as the request body of
/// an Ingest.Stream call as agent `host`, with `headers` besides gRPC's;
/// returns the call's status, from its trailers or its headers.
async fn raw_framing(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    host: &str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
) -> tonic::Status {
    use http_body_util::BodyExt;
    use tower::Service;
    let mut channel = channel(pki.files(Role::Agent, host), addr).await.unwrap();
    let mut request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("https://{addr}/hostwatch.v1.Ingest/Stream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .unwrap();
    std::future::poll_fn(|cx| Service::poll_ready(&mut channel, cx))
        .await
        .unwrap();
    let response = tokio::time::timeout(WAIT, channel.call(request))
        .await
        .expect("an answer")
        .unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the end of the replies")
        .unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

#[tokio::test]
async fn bad_framing_ends_the_stream_with_a_status_naming_it() {
    use prost::Message;
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "[limits]\nmax_message_bytes = 65536\n");
    let collector = RunningCollector::start(config).await;
    let framed = |flag: u8, message: &[u8]| {
        let mut bytes = vec![flag];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        bytes
    };
    let hello = AgentMessage {
        kind: Some(Kind::Hello(Hello {
            host_id: "eta".into(),
            spool_id: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let batch = AgentMessage {
        kind: Some(Kind::Batch(Batch {
            seq: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let with_hello = |rest: &[u8]| [framed(0, &hello), rest.to_vec()].concat();
    let cases: Vec<(Vec<u8>, tonic::Code, &str)> = vec![
        (
            with_hello(&[0, 0, 0]),
            tonic::Code::InvalidArgument,
            "inside a message's 5-byte prefix",
        ),
        (
            with_hello(&framed(0, &batch)[..4 + batch.len()]),
            tonic::Code::InvalidArgument,
            "inside a message (",
        ),
        (
            with_hello(&framed(1, &batch)),
            tonic::Code::InvalidArgument,
            "compressed, but the call negotiated no compression",
        ),
        (
            // Refused at its prefix, before any of its 4 GiB.
            with_hello(&[0, 0xff, 0xff, 0xff, 0xff]),
            tonic::Code::ResourceExhausted,
            "more than limits.max_message_bytes (65536)",
        ),
        (
            framed(0, &hello)[..3].to_vec(),
            tonic::Code::InvalidArgument,
            "inside a message's 5-byte prefix",
        ),
    ];
    for (body, code, text) in cases {
        let status = raw_framing(&pki, collector.addr, "eta", &[], body).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(text), "{status:?} lacks {text:?}");
    }
    let status = raw_framing(
        &pki,
        collector.addr,
        "eta",
        &[("grpc-encoding", "gzip")],
        framed(1, &hello),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("gzip"), "{status:?}");
    // A clean end after a batch: OK, and the batch stored.
    let status = raw_framing(
        &pki,
        collector.addr,
        "eta",
        &[],
        with_hello(&framed(0, &batch)),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");

    assert_eq!(refused_messages(&pki, collector.addr).await, (1, 4));
    collector.stop().await;
}

#[tokio::test]
async fn a_query_over_max_query_points_is_refused() {
    use hostwatch_proto::v1::{Batch, Label, SeriesPoints};
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let config = collector_config_with(&pki, data.path(), "[limits]\nmax_query_points = 10\n");
    let collector = RunningCollector::start(config).await;
    // Three series of five samples: 15 points.
    let now = now_ms();
    let series = (0..3)
        .map(|cpu| SeriesPoints {
            metric: "host_cpu_utilization_ratio".into(),
            labels: vec![Label {
                name: "cpu".into(),
                value: cpu.to_string(),
            }],
            timestamps_ms: (0..5).map(|i| now - 5_000 + i * 1_000).collect(),
            values: vec![0.5; 5],
        })
        .collect();
    let batch = Batch {
        seq: 1,
        series,
        ..Default::default()
    };
    let files = pki.files(hostwatch_pki::Role::Agent, "zeta");
    deliver_batch(files, collector.addr, "zeta", 1, batch).await;
    let mut client = operator(&pki, collector.addr).await;
    let request = |matchers: Vec<Matcher>| RangeRequest {
        metric: "host_cpu_utilization_ratio".into(),
        matchers,
        start_ms: now - 600_000,
        end_ms: now + 1,
        ..Default::default()
    };
    let refused = client
        .range(request(vec![host_matcher("zeta")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("limits.max_query_points (10)"),
        "{refused:?}"
    );
    let one_cpu = Matcher {
        name: "cpu".into(),
        op: matcher::Op::Equal as i32,
        value: "1".into(),
    };
    let series = client
        .range(request(vec![host_matcher("zeta"), one_cpu]))
        .await
        .unwrap()
        .into_inner()
        .series;
    assert_eq!(series[0].timestamps_ms.len(), 5);
    collector.stop().await;
}
