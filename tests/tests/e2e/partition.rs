//! A silent partition between agent and collector: a TCP proxy on loopback
//! that, when told, swallows every byte and closes nothing. The agent gives
//! the dead connection up and makes a new one; the collector closes its
//! side after its keepalive; the host is paged down once, from the time
//! its data stopped, and the dead stream closing late does not bring it
//! back.

use hostwatch_agent::AgentConfig;
use hostwatch_proto::v1::{HostStatus, ListHostsRequest};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(30);

/// A TCP proxy in front of `upstream` that can go silent: a silenced
/// connection's bytes are read and dropped in both directions, and neither
/// side is ever closed, as behind a black-holing firewall.
struct BlackHoleProxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Whether new connections are silenced from the start.
    swallow_new: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHoleProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let swallow_new = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let task = tokio::spawn({
            let (accepted, swallow_new, connections) =
                (accepted.clone(), swallow_new.clone(), connections.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let silenced = Arc::new(AtomicBool::new(swallow_new.load(Ordering::SeqCst)));
                    connections.lock().unwrap().push(silenced.clone());
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pipe(client_read, server_write, silenced.clone()));
                    tokio::spawn(pipe(server_read, client_write, silenced));
                }
            }
        });
        BlackHoleProxy {
            addr,
            accepted,
            swallow_new,
            connections,
            task,
        }
    }

    /// Silences every connection open now, for good.
    fn cut(&self) {
        for silenced in self.connections.lock().unwrap().iter() {
            silenced.store(true, Ordering::SeqCst);
        }
    }

    /// Whether connections made from now on are silenced.
    fn swallow_new(&self, swallow: bool) {
        self.swallow_new.store(swallow, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until the end, or drops what it reads while
/// `silenced`; a silenced connection is never closed.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, silenced: Arc<AtomicBool>) {
    let mut buf = vec![0; 16 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if silenced.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    if silenced.load(Ordering::SeqCst) {
        // Holds `to` open until the test ends.
        std::future::pending::<()>().await;
    }
    let _ = to.shutdown().await;
}

/// An agent through `proxy` that notices a dead connection within about
/// a second.
fn agent_config_via(pki: &TestPki, proxy: &BlackHoleProxy, state: &std::path::Path) -> AgentConfig {
    let mut config = agent_config(pki, "cut-off", proxy.addr, state);
    config.limits.keepalive_interval = Duration::from_millis(500);
    config.limits.keepalive_timeout = Duration::from_millis(500);
    config.limits.ack_timeout = Duration::from_secs(1);
    config.limits.connect_timeout = Duration::from_secs(1);
    config
}

async fn host(pki: &TestPki, collector: SocketAddr) -> Option<HostStatus> {
    let hosts = operator(pki, collector)
        .await
        .list_hosts(ListHostsRequest::default())
        .await
        .ok()?
        .into_inner()
        .hosts;
    hosts.into_iter().find(|h| h.host_id == "cut-off")
}

#[tokio::test]
async fn the_agent_replaces_a_connection_gone_silent() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    // Its keepalive closes the dead stream, so it stops without waiting.
    let config = collector_config_with(
        &pki,
        data.path(),
        "[limits]\nkeepalive_interval = \"1s\"\nkeepalive_timeout = \"1s\"\n",
    );
    let collector = RunningCollector::start(config).await;
    let proxy = BlackHoleProxy::start(collector.addr).await;
    let state = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(agent_config_via(&pki, &proxy, state.path()));
    eventually(WAIT, "the host's first batch", || async {
        host(&pki, collector.addr)
            .await
            .filter(|h| h.last_seen_ms > 0)
    })
    .await;

    proxy.cut();
    let cut_ms = now_ms();
    // Batches stored after the cut came over a new connection.
    eventually(WAIT, "data over a new connection", || async {
        let h = host(&pki, collector.addr).await?;
        (proxy.accepted() >= 2 && h.last_seen_ms > cut_ms).then_some(())
    })
    .await;
    agent.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn a_partitioned_host_is_paged_once_and_the_late_close_changes_nothing() {
    let pki = TestPki::new();
    let receiver = WebhookReceiver::start().await;
    let data = tempfile::tempdir().unwrap();
    // The collector pages after 2 s of silence but closes a dead stream
    // only after about 5 s: the order that re-fired host_down.
    let config = collector_config_with(
        &pki,
        data.path(),
        &format!(
            "host_down_after = \"2s\"\n[limits]\nkeepalive_interval = \"3s\"\nkeepalive_timeout = \"2s\"\n\
             [alerting]\ndefault_rules = false\nflap_window = \"0s\"\n\
             [[alerting.rules]]\nname = \"host_down\"\nkind = \"host_down\"\n\
             [[alerting.hooks]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\n\
             group_wait = \"0s\"\ngroup_interval = \"0s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
            receiver.addr
        ),
    );
    let collector = RunningCollector::start(config).await;
    let proxy = BlackHoleProxy::start(collector.addr).await;
    let state = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(agent_config_via(&pki, &proxy, state.path()));
    eventually(WAIT, "the host connected with data", || async {
        host(&pki, collector.addr)
            .await
            .filter(|h| h.connected && h.last_seen_ms > 0)
    })
    .await;

    proxy.swallow_new(true);
    proxy.cut();
    let cut_ms = now_ms();
    let host_down = |status: &str| {
        receiver
            .alerts()
            .iter()
            .filter(|(s, l, _)| s == status && l["alertname"] == "host_down")
            .count()
    };
    eventually(WAIT, "host_down firing", || async {
        (host_down("firing") > 0).then_some(())
    })
    .await;
    let closed = eventually(WAIT, "the collector closing the dead stream", || async {
        host(&pki, collector.addr).await.filter(|h| !h.connected)
    })
    .await;
    // A batch already past the proxy when it cut may be stored a moment
    // later; the close comes seconds after the cut (the keepalive), so a
    // close counted as a sign of life would show far beyond this.
    let in_flight_ms = 1_000;
    assert!(
        closed.last_seen_ms <= cut_ms + in_flight_ms,
        "last seen {} after the cut at {cut_ms}: the closing stream counted as a sign of life",
        closed.last_seen_ms
    );

    proxy.swallow_new(false);
    eventually(
        WAIT,
        "host_down resolved once the agent is back",
        || async { (host_down("resolved") > 0).then_some(()) },
    )
    .await;
    assert_eq!(host_down("firing"), 1, "{:?}", receiver.alerts());
    assert_eq!(host_down("resolved"), 1, "{:?}", receiver.alerts());
    agent.stop().await;
    collector.stop().await;
}
