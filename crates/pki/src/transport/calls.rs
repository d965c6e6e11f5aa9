//! Each gRPC call on a listener's connections: counted open (the idle
//! timeout closes only connections without calls), and its request
//! messages held to the pending-bytes budget and the message timeout.
//!
//! HTTP/2 flow control bounds what the connection buffers unread (hyper's
//! default windows), but tonic moves a message's bytes out of those windows
//! into its own buffer as they arrive and keeps them until the message is
//! whole: a peer that never sends a message's last byte held that memory
//! for as long as it liked. The budget counts the declared length of every
//! message begun and not complete (tonic reserves that much when it reads
//! the length), per connection and in total.

use super::PeerInfo;
use super::listener::{ConnectionState, OpenCall, Who};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};

/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// The tower layer that applies a listener's per-call limits; add it to
/// the server that serves [`super::incoming`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLimitLayer;

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;
    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit { inner }
    }
}

/// See [`CallLimitLayer`].
#[derive(Debug, Clone)]
pub struct CallLimit<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for CallLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Connections of the mTLS listener carry their peer; anything else
        // (none in the collector) is passed through.
        let Some(peer) = request.extensions().get::<PeerInfo>().cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let open = peer.connection.call_opened();
        let request = request.map(|body| Body::new(LimitedBody::new(body, peer)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(CallBody { body, _open: open })))
        })
    }
}

/// A response body that keeps its call counted open until it ends.
struct CallBody {
    body: Body,
    _open: OpenCall,
}

impl HttpBody for CallBody {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body whose messages are held to the budget and the timeout.
struct LimitedBody {
    body: Body,
    peer: PeerInfo,
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come after its prefix.
    remaining: usize,
    /// Bytes of the budget the current message holds.
    charged: usize,
    /// When the current message must be complete; none between messages.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedBody {
    fn new(body: Body, peer: PeerInfo) -> Self {
        LimitedBody {
            body,
            peer,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            charged: 0,
            deadline: None,
        }
    }

    fn connection(&self) -> &Arc<ConnectionState> {
        &self.peer.connection
    }

    /// Follows the message framing through `data`, charging each message
    /// from its prefix to its last byte.
    fn account(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining == 0 {
                if self.prefix_len == 0 {
                    let timeout = self.connection().listener.limits.message_timeout;
                    self.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
                }
                let n = (PREFIX - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
                self.prefix_len += n;
                data = &data[n..];
                if self.prefix_len == PREFIX {
                    self.prefix_len = 0;
                    let [_, a, b, c, d] = self.prefix;
                    let len = u32::from_be_bytes([a, b, c, d]) as usize;
                    if len == 0 {
                        self.deadline = None;
                    } else {
                        self.charge(len)?;
                        self.remaining = len;
                    }
                }
            } else {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.release();
                    self.deadline = None;
                }
            }
        }
        Ok(())
    }

    fn charge(&mut self, len: usize) -> Result<(), Status> {
        let connection = self.peer.connection.clone();
        let listener = &connection.listener;
        let limits = &listener.limits;
        // Longer than any message the server decodes (the per-connection
        // budget is at least the largest message): tonic refuses it with
        // its own status as soon as it reads this prefix.
        if len > limits.max_pending_bytes_per_connection {
            return Ok(());
        }
        let here = connection.pending_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if here > limits.max_pending_bytes_per_connection {
            connection.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(self.refuse(
                len,
                format!(
                    "incomplete messages on this connection would hold more than {} bytes",
                    limits.max_pending_bytes_per_connection
                ),
            ));
        }
        let total = listener.pending_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if total > limits.max_pending_bytes {
            listener.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            connection.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(self.refuse(
                len,
                format!(
                    "incomplete messages on all connections would hold more than {} bytes",
                    limits.max_pending_bytes
                ),
            ));
        }
        self.charged = len;
        Ok(())
    }

    fn release(&mut self) {
        let charged = std::mem::take(&mut self.charged);
        if charged > 0 {
            let connection = self.connection();
            connection
                .pending_bytes
                .fetch_sub(charged, Ordering::Relaxed);
            connection
                .listener
                .pending_bytes
                .fetch_sub(charged, Ordering::Relaxed);
        }
    }

    /// Counts and logs a refused message; the status ends the call.
    fn refuse(&self, len: usize, reason: String) -> Status {
        let listener = &self.connection().listener;
        listener.message_refused();
        if let Some(suppressed) = super::listener::lock(&listener.message_log).admit() {
            tracing::warn!(peer.addr = %self.peer.addr, peer.id = %Who(&self.peer.identity), message.bytes = len, suppressed, reason = %reason, "message refused");
        }
        Status::resource_exhausted(format!("message of {len} bytes refused: {reason}"))
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            let declared = this.charged;
            let timeout = this.connection().listener.limits.message_timeout;
            this.release();
            return Poll::Ready(Some(Err(
                this.refuse(declared, format!("not complete within {timeout:?}"))
            )));
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = this.account(data)
        {
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
