//! A small blocking HTTP/1.1 client on one kept-alive connection, over
//! TCP (Prometheus) or TLS 1.3 with a client certificate (the collector):
//! both systems are timed the same way, request written to body read.

use anyhow::{Context, bail, ensure};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A byte stream: plain TCP or TLS over it.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// How to reach a server.
#[derive(Clone)]
pub(super) enum Endpoint {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

/// A client holding one connection, reopened when the server closed it.
pub(super) struct Client {
    endpoint: Endpoint,
    conn: Option<BufReader<Box<dyn Stream>>>,
}

/// Longest a request may take (the slowest queries take seconds).
const TIMEOUT: Duration = Duration::from_secs(300);

impl Client {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            conn: None,
        }
    }

    fn connect(&self) -> anyhow::Result<BufReader<Box<dyn Stream>>> {
        let (addr, tls) = match &self.endpoint {
            Endpoint::Plain(addr) => (*addr, None),
            Endpoint::Tls(addr, config) => (*addr, Some(config.clone())),
        };
        let tcp = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                let conn = rustls::ClientConnection::new(config, name)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        Ok(BufReader::with_capacity(1 << 16, stream))
    }

    /// GET `path`: the status and the body. A connection the server has
    /// closed since the last request is reopened once.
    pub(super) fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Ok(answer) => Ok(answer),
            Err(_) if reused => {
                self.conn = None;
                self.try_get(path)
            }
            Err(e) => Err(e),
        }
    }

    fn try_get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        let result = exchange(conn, path);
        match &result {
            Ok((_, _, keep)) if *keep => {}
            _ => self.conn = None,
        }
        result.map(|(status, body, _)| (status, body))
    }
}

/// One request and its response: status, body, whether the connection
/// stays open.
fn exchange(
    conn: &mut BufReader<Box<dyn Stream>>,
    path: &str,
) -> anyhow::Result<(u16, Vec<u8>, bool)> {
    let stream = conn.get_mut();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    stream.flush()?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        line.clear();
        ensure!(
            conn.read_line(&mut line)? > 0,
            "connection closed in headers"
        );
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            bail!("malformed header {header:?}");
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>()?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let size_text = line.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    conn.read_line(&mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            conn.read_exact(&mut body[at..])?;
            let mut crlf = [0; 2];
            conn.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((status, body, keep))
}

/// `s` percent-encoded for a URL's query string.
pub(super) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback answering each connection's requests with
    /// `responses` in turn, then closing it.
    fn serve(responses: Vec<&'static str>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            for response in responses {
                let mut line = String::new();
                // The request's head, up to its empty line.
                while reader.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
                writer.write_all(response.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_sized_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ]);
        let mut client = Client::new(Endpoint::Plain(addr));
        assert_eq!(client.get("/a").unwrap(), (200, b"hello".to_vec()));
        assert_eq!(client.get("/b").unwrap(), (422, b"abcde".to_vec()));
    }

    #[test]
    fn a_malformed_response_is_an_error() {
        for bad in [
            "nonsense\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let addr = serve(vec![bad]);
            let mut client = Client::new(Endpoint::Plain(addr));
            assert!(client.get("/").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(url_encode("a{b=\"c d\"}"), "a%7Bb%3D%22c%20d%22%7D");
    }
}
