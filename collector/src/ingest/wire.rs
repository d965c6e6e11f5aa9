//! Ingest.Stream read and answered by the collector itself, over the
//! HTTP/2 request and response bodies: gRPC's framing, a compression flag
//! and a 4-byte big-endian length before each protobuf message.
//!
//! Why not tonic's: its decoder keeps one buffer per call, grown past the
//! largest message and never shrunk, and its reply encoder an 8 KiB
//! buffer, both for the call's life, and an agent's stream stays open
//! for days (docs/benchmarks.md, fleet). Here a message's bytes live
//! until it is decoded, and a reply is encoded into a buffer of its own
//! size. Renew, and every other service, stay tonic's.

use super::{Inbound, IngestService, Replies};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hostwatch_proto::v1::ingest_server::IngestServer;
use hostwatch_proto::v1::{AgentMessage, CollectorMessage};
use http_body::{Body as HttpBody, Frame};
use prost::Message;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::{Code, Status};
use tower::Service;

/// The path of the call served here; the Ingest service's others go to
/// tonic.
const STREAM_PATH: &str = "/hostwatch.v1.Ingest/Stream";
/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// The Ingest service as the server routes it: Stream read and written
/// here, the other calls by tonic's generated server.
#[derive(Clone)]
pub(crate) struct IngestRoutes {
    tonic: IngestServer<IngestService>,
    service: Arc<IngestService>,
    /// `limits.max_message_bytes`.
    max_message: usize,
}

impl IngestRoutes {
    pub(crate) fn new(service: IngestService, max_message: usize) -> Self {
        let service = Arc::new(service);
        IngestRoutes {
            tonic: IngestServer::from_arc(service.clone()).max_decoding_message_size(max_message),
            service,
            max_message,
        }
    }
}

impl tonic::server::NamedService for IngestRoutes {
    const NAME: &'static str = <IngestServer<IngestService> as tonic::server::NamedService>::NAME;
}

impl Service<http::Request<Body>> for IngestRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.tonic, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != STREAM_PATH {
            return self.tonic.call(request);
        }
        let (service, max_message) = (self.service.clone(), self.max_message);
        Box::pin(async move { Ok(open(&service, request, max_message).await) })
    }
}

/// Answers an Ingest.Stream call: the replies' headers once the Hello is
/// read and accepted, or the status refusing it.
async fn open(
    service: &IngestService,
    request: http::Request<Body>,
    max_message: usize,
) -> http::Response<Body> {
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        let mut response = Status::unimplemented(format!(
            "messages compressed with {encoding:?}: this collector reads uncompressed messages only"
        ))
        .into_http::<Body>();
        response
            .headers_mut()
            .insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
        return response;
    }
    let (parts, body) = request.into_parts();
    let call = tonic::Request::from_http(http::Request::from_parts(parts, ()));
    let inbound = Inbound::Frames(Frames::new(body, max_message));
    match service.open(call, inbound).await {
        Ok(replies) => {
            let mut response = http::Response::new(Body::new(ReplyBody {
                replies: Some(replies),
            }));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err(status) => status.into_http(),
    }
}

/// Why no message came out of the request body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("message refused: {len} bytes, more than limits.max_message_bytes ({max})")]
    Oversized { len: usize, max: usize },
    #[error("message refused: compressed, but the call negotiated no compression")]
    Compressed,
    #[error("message refused: compression flag {0}, neither 0 nor 1")]
    BadFlag(u8),
    #[error("message refused: the stream ended {0}")]
    Truncated(String),
    #[error("message refused: not an AgentMessage: {0}")]
    Undecodable(prost::DecodeError),
    /// The listener's budget for incomplete messages, or its message
    /// timeout, ended the call (it counted and logged that).
    #[error("{}", .0.message())]
    Limit(Status),
    /// The request broke: the agent or its connection went away.
    #[error("the stream broke: {0}")]
    Broken(Status),
}

impl FrameError {
    /// The status that tells the agent.
    pub(crate) fn status(&self) -> Status {
        match self {
            FrameError::Oversized { .. } | FrameError::Limit(_) => {
                Status::resource_exhausted(self.to_string())
            }
            FrameError::Compressed
            | FrameError::BadFlag(_)
            | FrameError::Truncated(_)
            | FrameError::Undecodable(_) => Status::invalid_argument(self.to_string()),
            FrameError::Broken(status) => status.clone(),
        }
    }
}

/// The agent's messages, read from the request body. The bytes of a
/// message not yet whole stay in the chunks HTTP/2 delivered them in;
/// nothing is kept once a message is decoded.
pub(crate) struct Frames {
    body: Body,
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    buffered: usize,
    /// `limits.max_message_bytes`.
    max_message: usize,
}

impl Frames {
    pub(crate) fn new(body: Body, max_message: usize) -> Self {
        Frames {
            body,
            chunks: VecDeque::new(),
            buffered: 0,
            max_message,
        }
    }

    /// The next message, `None` once the agent ended its side cleanly.
    pub(crate) async fn message(&mut self) -> Result<Option<AgentMessage>, FrameError> {
        loop {
            if let Some(message) = self.buffered_message()? {
                return Ok(Some(message));
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None if self.buffered == 0 => return Ok(None),
                None => return Err(self.truncated()),
                Some(Err(status)) if status.code() == Code::ResourceExhausted => {
                    return Err(FrameError::Limit(status));
                }
                Some(Err(status)) => return Err(FrameError::Broken(status)),
                Some(Ok(frame)) => {
                    // Trailers from a client are not gRPC's; ignored.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.buffered += data.len();
                        self.chunks.push_back(data);
                    }
                }
            }
        }
    }

    /// Where the body ended inside a message.
    fn truncated(&self) -> FrameError {
        if self.buffered < PREFIX {
            return FrameError::Truncated(format!(
                "inside a message's {PREFIX}-byte prefix ({} bytes)",
                self.buffered
            ));
        }
        let len = self.prefix().1;
        FrameError::Truncated(format!(
            "inside a message ({} of its {len} bytes)",
            self.buffered - PREFIX
        ))
    }

    /// The compression flag and length of the message at the front;
    /// `buffered` must be at least [`PREFIX`].
    fn prefix(&self) -> (u8, usize) {
        let mut prefix = [0u8; PREFIX];
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = (PREFIX - filled).min(chunk.len());
            prefix[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == PREFIX {
                break;
            }
        }
        let [flag, a, b, c, d] = prefix;
        (flag, u32::from_be_bytes([a, b, c, d]) as usize)
    }

    /// The message at the front, decoded, once all of it is here. A bad
    /// prefix is refused as soon as it is read, before its message.
    fn buffered_message(&mut self) -> Result<Option<AgentMessage>, FrameError> {
        if self.buffered < PREFIX {
            return Ok(None);
        }
        let (flag, len) = self.prefix();
        match flag {
            0 => {}
            1 => return Err(FrameError::Compressed),
            flag => return Err(FrameError::BadFlag(flag)),
        }
        if len > self.max_message {
            return Err(FrameError::Oversized {
                len,
                max: self.max_message,
            });
        }
        if self.buffered < PREFIX + len {
            return Ok(None);
        }
        self.take(PREFIX);
        let bytes = self.take(len);
        AgentMessage::decode(bytes)
            .map(Some)
            .map_err(FrameError::Undecodable)
    }

    /// The next `len` buffered bytes: a slice of the first chunk when it
    /// holds them all, a copy of the chunks they span otherwise.
    fn take(&mut self, len: usize) -> Bytes {
        self.buffered -= len;
        if let Some(first) = self.chunks.front_mut()
            && first.len() >= len
        {
            let bytes = first.split_to(len);
            if first.is_empty() {
                self.chunks.pop_front();
            }
            return bytes;
        }
        let mut bytes = BytesMut::with_capacity(len);
        while bytes.len() < len {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            let n = (len - bytes.len()).min(chunk.len());
            bytes.extend_from_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
        }
        bytes.freeze()
    }
}

/// The response body: each reply in a buffer of its own size, then the
/// call's status in the trailers (OK when the session ended cleanly).
struct ReplyBody {
    /// `None` once the trailers have gone.
    replies: Option<Replies>,
}

impl HttpBody for ReplyBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(replies) = self.replies.as_mut() else {
            return Poll::Ready(None);
        };
        let status = match ready!(Pin::new(replies).poll_next(cx)) {
            Some(Ok(message)) => return Poll::Ready(Some(Ok(Frame::data(encode(&message))))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.replies = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.replies.is_none()
    }
}

/// `message` with its prefix.
fn encode(message: &CollectorMessage) -> Bytes {
    let len = message.encoded_len();
    let mut bytes = BytesMut::with_capacity(PREFIX + len);
    bytes.put_u8(0);
    // A reply is an Ack, a Welcome or a renewal notice: far below 4 GiB.
    bytes.put_u32(len as u32);
    message.encode_raw(&mut bytes);
    bytes.freeze()
}

/// The trailers that carry `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Err(unsendable) = status.add_header(&mut headers) {
        headers.clear();
        // A message that cannot be a header value: its code still goes.
        tracing::warn!(error = %unsendable, "a stream's status does not fit in its trailers");
        headers.insert(Status::GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_proto::v1::agent_message::Kind;
    use hostwatch_proto::v1::{Batch, Hello};

    /// A request body delivering `chunks` as data frames, then its end.
    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut bytes = vec![flag];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        bytes
    }

    fn hello() -> AgentMessage {
        AgentMessage {
            kind: Some(Kind::Hello(Hello {
                host_id: "h".into(),
                spool_id: 7,
                ..Default::default()
            })),
        }
    }

    fn batch(seq: u64) -> AgentMessage {
        AgentMessage {
            kind: Some(Kind::Batch(Batch {
                seq,
                ..Default::default()
            })),
        }
    }

    async fn read_all(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<AgentMessage>, Option<FrameError>) {
        let mut frames = Frames::new(body(chunks), max);
        let mut messages = Vec::new();
        loop {
            match frames.message().await {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => return (messages, None),
                Err(e) => return (messages, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn messages_are_read_whatever_the_chunks() {
        let mut stream = framed(0, &hello().encode_to_vec());
        for seq in 1..=3 {
            stream.extend(framed(0, &batch(seq).encode_to_vec()));
        }
        let expected = vec![hello(), batch(1), batch(2), batch(3)];
        // Whole, byte by byte, and in chunks straddling prefixes.
        for size in [stream.len(), 1, 3, 7] {
            let chunks = stream.chunks(size).map(|c| c.to_vec()).collect();
            let (messages, error) = read_all(chunks, 1 << 20).await;
            assert_eq!(messages, expected, "chunks of {size}");
            assert!(error.is_none(), "chunks of {size}: {error:?}");
        }
    }

    #[tokio::test]
    async fn an_empty_message_decodes_to_nothing_and_a_clean_end_is_none() {
        let (messages, error) = read_all(vec![framed(0, &[])], 16).await;
        assert_eq!(messages, vec![AgentMessage { kind: None }]);
        assert!(error.is_none(), "{error:?}");
        let (messages, error) = read_all(vec![], 16).await;
        assert!(messages.is_empty() && error.is_none(), "{error:?}");
    }

    #[tokio::test]
    async fn bad_framing_is_refused_with_a_status_naming_it() {
        let good = framed(0, &hello().encode_to_vec());
        let cases: Vec<(Vec<Vec<u8>>, Code, &str)> = vec![
            (
                vec![good.clone(), vec![0, 0, 0]],
                Code::InvalidArgument,
                "inside a message's 5-byte prefix (3 bytes)",
            ),
            (
                vec![good[..good.len() - 1].to_vec()],
                Code::InvalidArgument,
                "inside a message (",
            ),
            (
                vec![framed(1, &hello().encode_to_vec())],
                Code::InvalidArgument,
                "compressed, but the call negotiated no compression",
            ),
            (
                vec![framed(2, &hello().encode_to_vec())],
                Code::InvalidArgument,
                "compression flag 2",
            ),
            (
                // Refused at its prefix: the rest never has to arrive.
                vec![vec![0, 0, 0, 4, 1]],
                Code::ResourceExhausted,
                "1025 bytes, more than limits.max_message_bytes (1024)",
            ),
            (
                vec![framed(0, &[0x00, 0xff, 0xff])],
                Code::InvalidArgument,
                "not an AgentMessage",
            ),
        ];
        for (chunks, code, text) in cases {
            let (_, error) = read_all(chunks, 1024).await;
            let status = error.expect("an error").status();
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(text), "{status:?} lacks {text:?}");
        }
    }

    #[tokio::test]
    async fn a_broken_body_and_the_listener_budget_keep_their_status() {
        for (code, broken) in [(Code::ResourceExhausted, false), (Code::Cancelled, true)] {
            let frames = vec![Err::<Frame<Bytes>, _>(Status::new(code, "cut"))];
            let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
            let error = Frames::new(body, 16).message().await.unwrap_err();
            assert_eq!(matches!(error, FrameError::Broken(_)), broken, "{error:?}");
            assert_eq!(error.status().code(), code);
        }
    }

    /// `bytes` cut into chunks at `cuts` (positions, any order).
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    proptest::proptest! {
        /// Whatever the bytes and however they are cut, the reader ends
        /// with messages, a clean end or a refusal, never a panic.
        #[test]
        fn garbage_in_any_chunks_ends_in_a_refusal_or_messages(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let (messages, error) = runtime().block_on(read_all(cut(&bytes, &cuts), 256));
            if let Some(error) = error {
                proptest::prop_assert!(!matches!(error, FrameError::Broken(_) | FrameError::Limit(_)));
                let code = error.status().code();
                proptest::prop_assert!(matches!(code, Code::InvalidArgument | Code::ResourceExhausted), "{error:?}");
            }
            proptest::prop_assert!(messages.len() <= bytes.len() / PREFIX);
        }

        /// Batches framed back to back come out whole and in order,
        /// however the stream is cut.
        #[test]
        fn framed_batches_come_out_whatever_the_cuts(
            seqs in proptest::collection::vec(1u64..u64::MAX, 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let sent: Vec<AgentMessage> = seqs.iter().map(|&s| batch(s)).collect();
            let stream: Vec<u8> = sent.iter().flat_map(|m| framed(0, &m.encode_to_vec())).collect();
            let (messages, error) = runtime().block_on(read_all(cut(&stream, &cuts), 1024));
            proptest::prop_assert!(error.is_none(), "{error:?}");
            proptest::prop_assert_eq!(messages, sent);
        }
    }

    #[test]
    fn a_reply_is_framed_and_a_status_goes_in_the_trailers() {
        let message = CollectorMessage {
            kind: Some(hostwatch_proto::v1::collector_message::Kind::Ack(
                hostwatch_proto::v1::Ack { seq: 42 },
            )),
        };
        let bytes = encode(&message);
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize,
            bytes.len() - PREFIX
        );
        assert_eq!(CollectorMessage::decode(&bytes[PREFIX..]).unwrap(), message);
        let headers = trailers(&Status::invalid_argument("bad \"seq\""));
        assert_eq!(headers["grpc-status"], "3");
        assert!(headers.contains_key("grpc-message"));
        assert_eq!(trailers(&Status::ok(""))["grpc-status"], "0");
    }
}
