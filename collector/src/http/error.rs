//! The HTTP API's errors, in Prometheus' shape:
//! `{"status":"error","errorType":...,"error":...}` with its status code.

use crate::promql::QueryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hostwatch_promql::PromqlError;

/// An API error: Prometheus' error type, its status, and the message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A bad parameter or query (400).
    #[error("{0}")]
    BadData(String),
    /// The query failed while evaluating (422).
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time, waiting or evaluating (503).
    #[error("{0}")]
    Timeout(String),
    /// The collector cannot answer now (503).
    #[error("{0}")]
    Unavailable(String),
    /// No operator or viewer certificate, and no valid API token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed: the wrong role, or a browser's
    /// change without its CSRF token (403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many login attempts from one address (429); retry after the
    /// seconds given.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    /// No such endpoint (404).
    #[error("{0}")]
    NotFound(String),
}

impl ApiError {
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadData(_) => "bad_data",
            ApiError::Execution(_) => "execution",
            ApiError::Timeout(_) => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::NotFound(_) => "not_found",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadData(_) => StatusCode::BAD_REQUEST,
            ApiError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    /// A bad parameter, worded as Prometheus words it.
    pub(crate) fn param(name: &str, why: impl std::fmt::Display) -> Self {
        ApiError::BadData(format!("invalid parameter \"{name}\": {why}"))
    }
}

impl From<PromqlError> for ApiError {
    fn from(e: PromqlError) -> Self {
        match e {
            PromqlError::BadData(_) => ApiError::BadData(e.to_string()),
            PromqlError::Execution(_) | PromqlError::TooManySamples(_) => {
                ApiError::Execution(e.to_string())
            }
            PromqlError::Timeout(_) => ApiError::Timeout(e.to_string()),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Engine(e) => e.into(),
            QueryError::NoPlace(_) => ApiError::Timeout(e.to_string()),
            QueryError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// A status from the reads the gRPC Query service shares (`crate::reads`).
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => ApiError::BadData(message),
            tonic::Code::NotFound => ApiError::NotFound(message),
            _ => ApiError::Unavailable(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.error_type(),
            "error": self.to_string(),
        });
        let mut response = super::json::respond(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            // What a 401 must name (RFC 9110): the scheme it takes.
            ApiError::Unauthorized(_) => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"hostwatch\""),
                );
            }
            ApiError::TooManyRequests { retry_after_s, .. } => {
                headers.insert(axum::http::header::RETRY_AFTER, retry_after_s.into());
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_prometheus_type() {
        for (e, status) in [
            (PromqlError::BadData("x".into()), 400),
            (PromqlError::Execution("x".into()), 422),
            (PromqlError::TooManySamples("x"), 422),
            (PromqlError::Timeout("x"), 503),
        ] {
            let error_type = e.error_type();
            let api = ApiError::from(e);
            assert_eq!(api.error_type(), error_type);
            assert_eq!(api.status().as_u16(), status);
        }
    }
}
