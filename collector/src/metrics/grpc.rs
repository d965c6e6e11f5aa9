//! gRPC calls counted and timed by method: a tower layer on the gRPC
//! server. A call's time runs until its answer's headers: for unary
//! methods (every Query and Admin call but `Watch`) that is the whole
//! call; for streams (`Ingest.Stream`, `Query.Watch`) only its opening.
//! Paths the server does not serve (it answers UNIMPLEMENTED at once) are
//! counted as `unknown`, so a client cannot make labels.

use hostwatch_stdx::exposition::{Histogram, Kind, Text};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};

/// The label of calls to methods the server does not have.
const UNKNOWN: &str = "unknown";

#[derive(Debug, Default)]
struct Method {
    calls: AtomicU64,
    latency: Histogram,
}

/// Calls by method (`/package.Service/Method`).
#[derive(Debug, Default)]
pub(crate) struct GrpcFigures {
    /// A lock per call (not per sample): a call is far costlier.
    methods: Mutex<BTreeMap<String, Arc<Method>>>,
}

impl GrpcFigures {
    fn observe(&self, method: &str, took: Duration) {
        let entry = {
            let mut methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
            match methods.get(method) {
                Some(m) => m.clone(),
                None => methods.entry(method.to_owned()).or_default().clone(),
            }
        };
        entry.calls.fetch_add(1, Ordering::Relaxed);
        entry.latency.observe(took);
    }

    pub(crate) fn write(&self, text: &mut Text) {
        let methods: Vec<(String, Arc<Method>)> = self
            .methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let name = "hostwatch_collector_grpc_calls_total";
        text.family(
            name,
            Kind::Counter,
            "gRPC calls, by method; unknown: methods the server does not have.",
        );
        for (method, m) in &methods {
            text.sample(
                name,
                &[("method", method.as_str())],
                m.calls.load(Ordering::Relaxed) as f64,
            );
        }
        let name = "hostwatch_collector_grpc_call_duration_seconds";
        text.family(
            name,
            Kind::Histogram,
            "Time until a gRPC call's answer begins, by method: the whole call for unary methods, the opening for streams.",
        );
        for (method, m) in &methods {
            text.histogram(name, &[("method", method.as_str())], &m.latency.snapshot());
        }
    }
}

/// Counts and times every call of the server it wraps in `figures`.
#[derive(Clone)]
pub(crate) struct GrpcLayer(pub(crate) Arc<super::SelfMetrics>);

impl<S> Layer<S> for GrpcLayer {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`GrpcLayer`].
#[derive(Clone)]
pub(crate) struct Timed<S> {
    inner: S,
    metrics: Arc<super::SelfMetrics>,
}

impl<S> Service<Request<Body>> for Timed<S>
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
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await?;
            let unimplemented = response
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s.as_bytes() == b"12");
            let method = if unimplemented { UNKNOWN } else { &path };
            metrics.grpc.observe(method, started.elapsed());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_written_by_method() {
        let figures = GrpcFigures::default();
        figures.observe("/hostwatch.v1.Query/Range", Duration::from_millis(2));
        figures.observe("/hostwatch.v1.Query/Range", Duration::from_millis(4));
        figures.observe(UNKNOWN, Duration::from_millis(1));
        let mut text = Text::new();
        figures.write(&mut text);
        let text = text.finish();
        assert!(
            text.contains(
                "hostwatch_collector_grpc_calls_total{method=\"/hostwatch.v1.Query/Range\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("hostwatch_collector_grpc_calls_total{method=\"unknown\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hostwatch_collector_grpc_call_duration_seconds_sum{method=\"/hostwatch.v1.Query/Range\"} 0.006\n"),
            "{text}"
        );
    }
}
