//! Silences over the HTTPS API, as the web console makes them: listed by
//! any role, created and expired by operators only, with a CSRF token
//! from a browser; the creator is the caller's name; bad bodies refused
//! naming the problem; and the gRPC Admin service sees the same silences
//! and gives the same answers.

use super::sessions::{Answer, client, get, session, url};
use super::tokens::{Collector, create};
use hostwatch_pki::Role;
use hostwatch_proto::v1::Role as Wire;
use hostwatch_proto::v1::matcher::Op;
use hostwatch_proto::v1::{
    CreateSilenceRequest, ExpireSilenceRequest, ListSilencesRequest, Matcher,
};
use hostwatch_tests::*;
use serde_json::{Value, json};
use std::net::SocketAddr;

const SILENCES: &str = "/api/v1/hostwatch/silences";

/// How a request proves who sent it.
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    /// A browser: its session cookie (empty for a certificate's) and the
    /// CSRF header (none when `None`).
    Browser {
        cookie: &'a str,
        csrf: Option<&'a str>,
    },
    /// A script's API token.
    Bearer(&'a str),
}

/// `method` on `path` with `body` as JSON (none when `None`).
pub(crate) async fn send(
    client: &reqwest::Client,
    http: SocketAddr,
    method: reqwest::Method,
    path: &str,
    via: Via<'_>,
    body: Option<Value>,
) -> Answer {
    let mut request = client.request(method, url(http, path));
    match via {
        Via::Browser { cookie, csrf } => {
            if !cookie.is_empty() {
                request = request.header("cookie", cookie);
            }
            if let Some(csrf) = csrf {
                request = request.header("x-csrf-token", csrf);
            }
        }
        Via::Bearer(token) => request = request.bearer_auth(token),
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    Answer::of(request.send().await.unwrap()).await
}

async fn post(client: &reqwest::Client, http: SocketAddr, via: Via<'_>, body: Value) -> Answer {
    send(
        client,
        http,
        reqwest::Method::POST,
        SILENCES,
        via,
        Some(body),
    )
    .await
}

async fn expire(client: &reqwest::Client, http: SocketAddr, via: Via<'_>, id: &str) -> Answer {
    let path = format!("{SILENCES}/{id}");
    send(client, http, reqwest::Method::DELETE, &path, via, None).await
}

fn web1(duration: &str) -> Value {
    json!({
        "matchers": [{"name": "host", "op": "=", "value": "web1"}],
        "duration": duration,
        "comment": "disk swap",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_create_and_expire_silences_and_viewers_only_read_them() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let viewer_token = create(&mut admin, "watcher", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;
    let operator_token = create(&mut admin, "scripts", Wire::Operator, 0)
        .await
        .unwrap()
        .token;

    // An operator's browser (certificate): the CSRF token is required.
    let alice = client(&pki, Some(&pki.files(Role::Operator, "alice")), http);
    let who = get(&alice, http, "/api/v1/session", "").await;
    let csrf = who.body["data"]["csrfToken"].as_str().unwrap().to_owned();
    let browser = |csrf| Via::Browser { cookie: "", csrf };
    post(&alice, http, browser(None), web1("4h"))
        .await
        .assert_error(403, "forbidden", "missing X-CSRF-Token");
    post(&alice, http, browser(Some("AAAA")), web1("4h"))
        .await
        .assert_error(403, "forbidden", "does not match");
    let made = post(&alice, http, browser(Some(&csrf)), web1("4h")).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let silence = &made.body["data"];
    assert_eq!(silence["createdBy"], "alice", "{silence}");
    assert_eq!(silence["active"], true);
    assert_eq!(silence["comment"], "disk swap");
    assert_eq!(
        silence["matchers"],
        json!([{"name": "host", "op": "=", "value": "web1"}])
    );
    let id = silence["id"].as_str().unwrap().to_owned();
    // The creator is never the client's to say.
    let mut forged = web1("1h");
    forged["createdBy"] = json!("mallory");
    post(&alice, http, browser(Some(&csrf)), forged)
        .await
        .assert_error(400, "bad_data", "unknown field `createdBy`");

    // An operator's token: no CSRF token, its name as the creator.
    let script = client(&pki, None, http);
    // In 30 days, to the second, as Unix seconds.
    let ends_s = now_ms() / 1000 + 30 * 86_400;
    let body = json!({
        "matchers": [{"name": "alertname", "op": "=~", "value": "Disk.*"}],
        "endsAt": ends_s.to_string(),
    });
    let made = post(&script, http, Via::Bearer(&operator_token), body).await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert_eq!(made.body["data"]["createdBy"], "scripts");
    let ends = std::time::UNIX_EPOCH + std::time::Duration::from_secs(ends_s as u64);
    let ends = humantime::format_rfc3339(ends).to_string();
    assert_eq!(made.body["data"]["endsAt"], json!(ends));

    // A viewer reads them, newest first, but changes nothing: by session,
    // by token or by certificate, with or without its CSRF token.
    let (cookie, viewer_csrf) = session(&script, http, &viewer_token).await;
    let listed = get(&script, http, SILENCES, &cookie).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{}", listed.body);
    assert_eq!(ids[1], id);
    let viewer = Via::Browser {
        cookie: &cookie,
        csrf: Some(&viewer_csrf),
    };
    post(&script, http, viewer, web1("1h")).await.assert_error(
        403,
        "forbidden",
        "needs the operator role",
    );
    expire(&script, http, viewer, &id).await.assert_error(
        403,
        "forbidden",
        "needs the operator role",
    );
    let no_csrf = Via::Browser {
        cookie: &cookie,
        csrf: None,
    };
    post(&script, http, no_csrf, web1("1h")).await.assert_error(
        403,
        "forbidden",
        "missing X-CSRF-Token",
    );
    post(&script, http, Via::Bearer(&viewer_token), web1("1h"))
        .await
        .assert_error(403, "forbidden", "the viewer role");
    let val = client(&pki, Some(&pki.files(Role::Viewer, "val")), http);
    let val_csrf = get(&val, http, "/api/v1/session", "").await.body["data"]["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    post(&val, http, browser(Some(&val_csrf)), web1("1h"))
        .await
        .assert_error(403, "forbidden", "needs the operator role");

    // gRPC sees the same silences, made by the same names.
    let listed = admin
        .list_silences(ListSilencesRequest {})
        .await
        .unwrap()
        .into_inner()
        .silences;
    let by: Vec<&str> = listed.iter().map(|s| s.created_by.as_str()).collect();
    assert_eq!(by, ["scripts", "alice"]);

    // Expiring: an unknown id is 404; a live one ends; twice is refused,
    // through HTTP and gRPC alike.
    let operator = Via::Bearer(&operator_token);
    expire(&script, http, operator, "0123456789abcdef")
        .await
        .assert_error(404, "not_found", "no silence with id \"0123456789abcdef\"");
    let ended = expire(&alice, http, browser(Some(&csrf)), &id).await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.body["data"]["active"], false);
    expire(&script, http, operator, &id)
        .await
        .assert_error(400, "bad_data", "has already ended");
    let again = admin
        .expire_silence(ExpireSilenceRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::InvalidArgument);
    assert!(again.message().contains("has already ended"), "{again}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_silences_are_refused_naming_the_problem() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let token = create(&mut admin, "scripts", Wire::Operator, 0)
        .await
        .unwrap()
        .token;
    let script = client(&pki, None, http);
    let operator = Via::Bearer(&token);
    let matcher = |name: &str, op: &str, value: &str| json!({"matchers": [{"name": name, "op": op, "value": value}], "duration": "1h"});
    for (body, why) in [
        (matcher("host", "=~", "("), "host=~("),
        (matcher("host", "==", "web1"), "op must be"),
        (matcher("", "=", "web1"), "without a label name"),
        (matcher("bad-name", "=", "x"), "invalid label name"),
        (
            json!({"matchers": [], "duration": "1h"}),
            "at least one matcher",
        ),
        (json!({"duration": "1h"}), "missing field `matchers`"),
        (web1("0"), "not a positive duration"),
        (web1("0s"), "invalid parameter \"duration\""),
        (web1("-3600"), "not a positive duration"),
        (web1("soon"), "invalid parameter \"duration\""),
        (web1("400d"), "at most 365 days"),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "web1"}]}),
            "either a duration",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "web1"}], "duration": "1h", "endsAt": "2030-01-01T00:00:00Z"}),
            "not both",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "web1"}], "endsAt": "2001-01-01T00:00:00Z"}),
            "in the future",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "web1"}], "endsAt": "tomorrow"}),
            "invalid parameter \"endsAt\"",
        ),
    ] {
        post(&script, http, operator, body.clone())
            .await
            .assert_error(400, "bad_data", why);
    }
    // Not JSON.
    let response = script
        .post(url(http, SILENCES))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("matcher=host%3Dweb1")
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(400, "bad_data", "send a JSON body");
    let response = script
        .post(url(http, SILENCES))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(400, "bad_data", "invalid body");
    // gRPC refuses the too-long silence with the same words.
    let too_long = admin
        .create_silence(CreateSilenceRequest {
            matchers: vec![Matcher {
                name: "host".into(),
                op: Op::Equal as i32,
                value: "web1".into(),
            }],
            starts_ms: 0,
            ends_ms: now_ms() + 400 * 86_400_000,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    assert!(
        too_long.message().contains("at most 365 days"),
        "{too_long}"
    );
    // Nothing was made.
    let listed = get(&script, http, SILENCES, "").await;
    assert_eq!(listed.status, 401);
    let response = script
        .get(url(http, SILENCES))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let listed = Answer::of(response).await;
    assert_eq!(listed.body["data"], json!([]), "{}", listed.body);
    collector.stop().await;
}
