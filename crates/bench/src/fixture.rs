//! What several benchmarks set up the same way: role certificates from a
//! test CA, a collector running in this process, batches in the protobuf
//! form an agent sends, and reopening a sled database just dropped.

use anyhow::Context;
use hostwatch_pki::{Ca, Identity, IssueOptions, Role, TlsFiles, cert_stem};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A certificate of `role`/`name` from `ca` (whose `ca.pem` is in `dir`),
/// valid for a day, written into `dir`; collectors' are for localhost.
pub(crate) fn issue(ca: &Ca, dir: &Path, role: Role, name: &str) -> anyhow::Result<TlsFiles> {
    let identity = Identity::new(role, name)?;
    let mut options = IssueOptions::valid_for_days(1);
    if role == Role::Collector {
        options = options.with_local_names(None);
    }
    let (cert, key) = ca
        .issue(&identity, &options)?
        .write(dir, &cert_stem(&identity))?;
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        cert,
        key,
    })
}

/// A collector serving on 127.0.0.1 in this process with the configuration
/// at `path`, until the token is cancelled.
pub(crate) async fn spawn_collector(
    path: &Path,
) -> anyhow::Result<(SocketAddr, CancellationToken, JoinHandle<()>)> {
    let config = hostwatch_collector::CollectorConfig::load(path)
        .with_context(|| format!("loading {}", path.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) =
                hostwatch_collector::serve(config, listener, stop.cancelled_owned()).await
            {
                eprintln!("collector: {e}");
            }
        })
    };
    Ok((addr, stop, task))
}

/// A store batch's series in the protobuf form an agent sends them.
pub(crate) fn series_to_proto(
    batch: &hostwatch_tsdb::Batch,
) -> Vec<hostwatch_proto::v1::SeriesPoints> {
    use hostwatch_proto::v1 as pb;
    batch
        .series
        .iter()
        .map(|s| pb::SeriesPoints {
            metric: s.metric.clone(),
            labels: s
                .labels
                .iter()
                .map(|l| pb::Label {
                    name: l.name.clone(),
                    value: l.value.clone(),
                })
                .collect(),
            timestamps_ms: s.points.iter().map(|p| p.t_ms).collect(),
            values: s.points.iter().map(|p| p.value).collect(),
        })
        .collect()
}

/// An agent's ingest stream for `host` to `target`, its Hello sent (spool
/// 1, boot id `bench`): what to send batches on, holding up to `capacity`,
/// and the collector's replies.
pub(crate) async fn open_ingest(
    target: &hostwatch_pki::transport::ClientTarget,
    host: &str,
    capacity: usize,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<hostwatch_proto::v1::AgentMessage>,
    tonic::Streaming<hostwatch_proto::v1::CollectorMessage>,
)> {
    use hostwatch_proto::v1 as pb;
    let (channel, _) = hostwatch_pki::transport::connect(target).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    tx.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            host_id: host.to_owned(),
            spool_id: 1,
            boot_id: "bench".to_owned(),
            facts: None,
        })),
    })
    .await?;
    let replies = pb::ingest_client::IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("opening the ingest stream")?
        .into_inner();
    Ok((tx, replies))
}

/// sled's background threads may hold the file lock of a database just
/// dropped for a moment, so an open right after a drop polls on a lock
/// error until it succeeds or 30 s pass.
pub(crate) fn retry_while_locked<T>(
    mut open: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open() {
            Ok(opened) => return Ok(opened),
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("lock") => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}
