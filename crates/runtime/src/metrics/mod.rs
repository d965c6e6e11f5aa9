//! Self-monitoring shared by the collector and the agent: the plain-HTTP
//! `/metrics` port (`metrics_listen`), loopback addresses only, and this
//! process's figures (`process`).
//!
//! The port answers without credentials, so it may only listen where
//! nothing but this host reaches it: `metrics_listen` refuses any address
//! that is not loopback. It speaks just enough HTTP/1.x for a scraper:
//! one request per connection (`GET` or `HEAD /metrics`), at most
//! [`MAX_CONNECTIONS`] at once, each within [`READ_TIMEOUT`].

mod process;

pub use process::ProcessFigures;

use hostwatch_stdx::exposition::CONTENT_TYPE;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// A request's head must arrive within this, and the answer leave.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read.
const MAX_HEAD_BYTES: usize = 8 << 10;

/// `metrics_listen`: a loopback address, or `None` when empty or absent.
/// The message says why anything else is refused.
pub fn loopback_address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let address: SocketAddr = text
        .parse()
        .map_err(|e| format!("{text:?} is not an address (ip:port): {e}"))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{address} is not a loopback address: this port answers without credentials, so it listens on 127.0.0.0/8 or [::1] only (scrape the HTTPS /metrics from elsewhere)"
        ));
    }
    Ok(Some(address))
}

/// Deserializes `metrics_listen` through [`loopback_address`].
pub fn optional_loopback<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    loopback_address(&text).map_err(serde::de::Error::custom)
}

/// Serves the exposition `render` writes for each scrape at `/metrics`
/// on `listener` until `stop` completes; connections in progress then
/// end by themselves (bounded by [`READ_TIMEOUT`]).
pub async fn serve<F, Fut>(listener: TcpListener, render: F, stop: impl Future<Output = ()>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let render = Arc::new(render);
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let place = tokio::select! {
            _ = &mut stop => return,
            place = places.clone().acquire_owned() => place,
        };
        // The semaphore is never closed.
        let Ok(place) = place else { return };
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let render = render.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, render)).await;
                    drop(place);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics port: accept failed");
                // Out of file descriptors, for instance: not a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn answer<F, Fut>(mut stream: TcpStream, render: Arc<F>) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n")) {
            break end;
        }
        if head.len() >= MAX_HEAD_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                "request head too large\n",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "",
            "malformed request line\n",
        )
        .await;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return respond(
            &mut stream,
            "400 Bad Request",
            "",
            "malformed request line\n",
        )
        .await;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "",
            "not found: scrape /metrics\n",
        )
        .await;
    }
    match method {
        "GET" => {
            let body = render().await;
            respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        "HEAD" => {
            let body = render().await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.shutdown().await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "",
                "only GET and HEAD\n",
            )
            .await
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let content_type = if content_type.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        content_type
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert_eq!(loopback_address(""), Ok(None));
        assert_eq!(
            loopback_address("127.0.0.1:9464"),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert!(loopback_address("127.3.2.1:1").unwrap().is_some());
        assert!(loopback_address("[::1]:9464").unwrap().is_some());
        for (text, says) in [
            ("0.0.0.0:9464", "not a loopback address"),
            ("192.168.1.5:9464", "not a loopback address"),
            ("[::]:9464", "not a loopback address"),
            ("localhost:9464", "not an address"),
            ("127.0.0.1", "not an address"),
            ("127.0.0.1:99999", "not an address"),
        ] {
            let e = loopback_address(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    /// Sends `request` raw and returns the whole answer.
    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_exposition_at_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = scrapes.clone();
        let render = move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move { format!("# HELP x X.\n# TYPE x gauge\nx {n}\n") }
        };
        let stop = tokio_util_free_stop();
        let server = tokio::spawn(serve(listener, render, stop.1));

        let out = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{out}"
        );
        assert!(
            out.ends_with("\r\n\r\n# HELP x X.\n# TYPE x gauge\nx 1\n"),
            "{out}"
        );
        let out = ask(addr, b"GET /metrics?x=1 HTTP/1.0\n\n").await;
        assert!(out.ends_with("x 2\n"), "{out}");
        let out = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
        for (request, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404"),
            (b"GET /api/v1/query HTTP/1.1\r\n\r\n", "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
            (b"GET /metrics\r\n\r\n", "400"),
            (b"GET /metrics SPDY/3\r\n\r\n", "400"),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "400",
            ),
        ] {
            let out = ask(addr, request).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{:?}: {out}",
                String::from_utf8_lossy(request)
            );
        }
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 100, b'a');
        let out = ask(addr, &huge).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        // A client that says nothing does not hold the server: others are
        // answered meanwhile.
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let out = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        drop(silent);
        stop.0.send(()).unwrap();
        server.await.unwrap();
    }

    /// A stop signal without tokio-util: a oneshot's sender and a future.
    fn tokio_util_free_stop() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }
}
