//! Hooks over HTTP, under `/api/v1/hostwatch/hooks`, for the web
//! console's "Test a hook": listing the hooks in force (any role, as the
//! rules are), and sending one a test notification (the operator role,
//! and a CSRF token from a browser: [`Mutation`]), through the same
//! function as the gRPC Admin service's `TestHook` (`crate::hooks`).
//!
//! A test the receiver did not take is still a test that ran: it answers
//! 200 with `result` saying so (`retry`, `failed`) and the receiver's
//! answer or the error; only a request that could not run the test (no
//! such hook, the wrong role, no CSRF token) is an error.

use super::api::{Api, answer};
use super::caller::Mutation;
use crate::hooks;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use hostwatch_alerting::hooks::Outcome;
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// What a test's body holds, for error messages.
const TEST_BODY: &str = r#"{"resolve": false} (true sends the test alert's resolution)"#;

/// `router` with the hooks' endpoints added.
pub(super) fn routes(router: Router<Api>) -> Router<Api> {
    router
        .route("/api/v1/hostwatch/hooks", get(list).post(list))
        .route("/api/v1/hostwatch/hooks/{name}/test", post(test))
}

/// A test's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// Sends the test alert's resolution instead of the alert.
    #[serde(default)]
    resolve: bool,
}

/// The hooks in force, in configuration order: name and kind.
async fn list(State(api): State<Api>) -> Response {
    answer(async move {
        let hooks: Vec<Json> = api
            .shared
            .alerting
            .hooks()
            .into_iter()
            .map(|(name, kind)| json!({"name": name, "kind": kind}))
            .collect();
        Ok(Json::Array(hooks))
    })
    .await
}

/// Sends the hook `name` a test notification ([`TEST_BODY`]); the
/// operator role only.
async fn test(
    State(api): State<Api>,
    Mutation(caller): Mutation,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    answer(async move {
        caller.require_operator()?;
        let body: TestBody = api.json_body(request, TEST_BODY).await?;
        let outcome = hooks::test(&api.shared, caller.name(), "HTTP", &name, body.resolve).await?;
        let result = match &outcome {
            Outcome::Delivered(_) => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed(_) => "failed",
        };
        Ok(json!({
            "hook": name,
            "resolve": body.resolve,
            "result": result,
            "answer": outcome.answer(),
        }))
    })
    .await
}
