//! The web console's login: an API token traded for a session cookie
//! over real TLS, the cookie reading the API, CSRF checks on mutations,
//! logout, sessions ended by their token's revocation or their own
//! expiry, refusals counted, and the login's rate limit.

use super::tokens::{Collector, assert_load, create, store_load};
use hostwatch_pki::{Role, TlsFiles};
use hostwatch_proto::v1::RevokeTokenRequest;
use hostwatch_proto::v1::Role as Wire;
use hostwatch_tests::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const COOKIE: &str = "__Host-hostwatch_session";

/// A browser-like client: TLS 1.3 trusting the test CA, with `files`'
/// certificate (none when `None`), following no redirects.
pub(crate) fn client(pki: &TestPki, files: Option<&TlsFiles>, http: SocketAddr) -> reqwest::Client {
    let mut config = match files {
        Some(files) => hostwatch_pki::client_config(files)
            .unwrap()
            .0
            .as_ref()
            .clone(),
        None => client_without_certificate(&pki.ca_path()),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .resolve("localhost", http)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `pairs` form-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    pairs.join("&")
}

pub(crate) fn url(http: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", http.port())
}

/// An answer: status, headers and body (JSON when it parses).
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or_default())
    }

    /// The session cookie it sets: `name=value` and its attributes.
    fn set_cookie(&self) -> (String, Vec<String>) {
        let set = self.header("set-cookie");
        let mut parts = set.split("; ");
        let pair = parts.next().unwrap_or_default().to_owned();
        assert!(pair.starts_with(&format!("{COOKIE}=")), "{set}");
        (pair, parts.map(str::to_owned).collect())
    }

    /// An API error of `error_type` whose message says `why`.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, error_type: &str, why: &str) {
        let body = &self.body;
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["errorType"], error_type, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{why:?} not in {body}");
    }
}

async fn login_json(client: &reqwest::Client, http: SocketAddr, token: &str) -> Answer {
    let response = client
        .post(url(http, "/login"))
        .header("content-type", "application/json")
        .body(json!({ "token": token }).to_string())
        .send()
        .await
        .unwrap();
    Answer::of(response).await
}

pub(crate) async fn get(
    client: &reqwest::Client,
    http: SocketAddr,
    path: &str,
    cookie: &str,
) -> Answer {
    let mut request = client.get(url(http, path));
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    Answer::of(request.send().await.unwrap()).await
}

async fn logout(
    client: &reqwest::Client,
    http: SocketAddr,
    cookie: &str,
    csrf: Option<&str>,
) -> Answer {
    let mut request = client.post(url(http, "/logout"));
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    Answer::of(request.send().await.unwrap()).await
}

fn load(answer: Answer) -> (u16, Value) {
    (answer.status, answer.body)
}

/// Logs in with `token`: the cookie to send and the CSRF token.
pub(crate) async fn session(
    client: &reqwest::Client,
    http: SocketAddr,
    token: &str,
) -> (String, String) {
    let answer = login_json(client, http, token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let csrf = answer.body["data"]["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    (answer.set_cookie().0, csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_logs_in_and_the_session_reads_until_logout() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    let http = collector.http;
    store_load(&pki, collector.grpc).await;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let token = create(&mut admin, "console", Wire::Operator, 0)
        .await
        .unwrap()
        .token;
    let browser = client(&pki, None, http);

    // Without a credential: the API says 401, a page sends to the login.
    let answer = get(&browser, http, "/api/v1/query?query=host_load1", "").await;
    answer.assert_error(401, "unauthorized", "no verified client certificate");
    let answer = get(&browser, http, "/hosts/web1?range=6h", "").await;
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.header("location"),
        "/login?reason=required&next=%2Fhosts%2Fweb1%3Frange%3D6h"
    );
    let page = get(&browser, http, "/login?reason=required", "").await;
    assert_eq!(page.status, 200);
    let html = page.body.as_str().unwrap();
    assert!(html.contains("Log in with an API token"), "{html}");
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );

    // JSON login: the cookie and its attributes, the CSRF token.
    let answer = login_json(&browser, http, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let data = &answer.body["data"];
    assert_eq!(
        (&data["role"], &data["name"]),
        (&json!("operator"), &json!("console"))
    );
    let csrf = data["csrfToken"].as_str().unwrap().to_owned();
    let (cookie, attributes) = answer.set_cookie();
    assert!(cookie.starts_with(&format!("{COOKIE}=hws_")), "{cookie}");
    assert!(!cookie.contains(&token[4..]));
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(
            attributes.iter().any(|a| a == attribute),
            "{attribute}: {attributes:?}"
        );
    }

    // The cookie reads the API and the console, and names its session.
    assert_load(load(
        get(&browser, http, "/api/v1/query?query=host_load1", &cookie).await,
    ));
    let page = get(&browser, http, "/", &cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.body.as_str().unwrap().contains("app.js"));
    let who = get(&browser, http, "/api/v1/session", &cookie).await;
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.body["data"]["via"], "session");
    assert_eq!(who.body["data"]["csrfToken"], json!(csrf));

    // A form login goes where it was asked to, on this site only.
    for (next, location) in [("/hosts/web1", "/hosts/web1"), ("//evil.example/", "/")] {
        let response = browser
            .post(url(http, "/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token.as_str()), ("next", next)]))
            .send()
            .await
            .unwrap();
        let answer = Answer::of(response).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert_eq!(answer.header("location"), location);
        answer.set_cookie();
    }

    // Logout is a mutation: without or with a wrong CSRF token, 403.
    logout(&browser, http, &cookie, None).await.assert_error(
        403,
        "forbidden",
        "missing X-CSRF-Token",
    );
    logout(&browser, http, &cookie, Some("AAAA"))
        .await
        .assert_error(403, "forbidden", "does not match");
    // Another session's token does not pass either.
    let (_, other_csrf) = session(&browser, http, &token).await;
    logout(&browser, http, &cookie, Some(&other_csrf))
        .await
        .assert_error(403, "forbidden", "does not match");
    assert_load(load(
        get(&browser, http, "/api/v1/query?query=host_load1", &cookie).await,
    ));
    let answer = logout(&browser, http, &cookie, Some(&csrf)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (cleared, attributes) = answer.set_cookie();
    assert_eq!(cleared, format!("{COOKIE}="));
    assert!(
        attributes.iter().any(|a| a == "Max-Age=0"),
        "{attributes:?}"
    );

    // Ended: the API refuses the cookie, a page sends to the login.
    let before = collector.unauthorized_total(&pki).await;
    get(&browser, http, "/api/v1/query?query=host_load1", &cookie)
        .await
        .assert_error(401, "unauthorized", "session has expired or ended");
    let answer = get(&browser, http, "/", &cookie).await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.header("location"), "/login?reason=expired&next=%2F");
    assert!(answer.header("set-cookie").contains("Max-Age=0"));
    let page = get(&browser, http, "/login?reason=expired", "").await;
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("session has expired or ended")
    );
    assert_eq!(collector.unauthorized_total(&pki).await, before + 2);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_browsers_need_csrf_tokens_and_token_headers_do_not() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start(&pki, data.path()).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let token = create(&mut admin, "scripts", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;

    // A browser with a certificate: its mutations need its CSRF token,
    // which passes (logout then says there is no session to end).
    let browser = client(&pki, Some(&pki.files(Role::Operator, "alice")), http);
    let who = get(&browser, http, "/api/v1/session", "").await;
    assert_eq!(who.body["data"]["via"], "certificate", "{}", who.body);
    assert_eq!(who.body["data"]["name"], "alice");
    let csrf = who.body["data"]["csrfToken"].as_str().unwrap().to_owned();
    logout(&browser, http, "", None)
        .await
        .assert_error(403, "forbidden", "missing X-CSRF-Token");
    logout(&browser, http, "", Some(&csrf)).await.assert_error(
        400,
        "bad_data",
        "nothing to log out",
    );
    // Another certificate's token does not pass.
    let bob = client(&pki, Some(&pki.files(Role::Operator, "bob")), http);
    logout(&bob, http, "", Some(&csrf))
        .await
        .assert_error(403, "forbidden", "does not match");

    // A token header is no browser's: no CSRF token needed.
    let script = client(&pki, None, http);
    let response = script
        .post(url(http, "/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(400, "bad_data", "nothing to log out");
    let response = script
        .get(url(http, "/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let who = Answer::of(response).await;
    assert_eq!(who.body["data"]["via"], "token", "{}", who.body);
    assert_eq!(who.body["data"]["csrfToken"], Value::Null);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_expired_and_revoked_tokens_are_refused_and_counted() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    // Room for the logins of the wait for a token's expiry.
    let extra = "[http]\nlogin_attempts_per_minute = 1000\n";
    let collector = Collector::start_with(&pki, data.path(), extra).await;
    let http = collector.http;
    store_load(&pki, collector.grpc).await;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let browser = client(&pki, None, http);
    let before = collector.unauthorized_total(&pki).await;

    let unknown = format!("hwt_{}", "A".repeat(43));
    login_json(&browser, http, &unknown).await.assert_error(
        401,
        "unauthorized",
        "unknown or revoked",
    );
    login_json(&browser, http, "secret-guess")
        .await
        .assert_error(401, "unauthorized", "not a hostwatch API token");
    // The form gets the page again, saying why, with no cookie.
    let response = browser
        .post(url(http, "/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", unknown.as_str()), ("next", "/hosts/a")]))
        .send()
        .await
        .unwrap();
    let page = Answer::of(response).await;
    assert_eq!(page.status, 401);
    assert!(page.header("set-cookie").is_empty());
    let html = page.body.as_str().unwrap();
    assert!(
        html.contains("unknown or revoked") && html.contains(r#"role="alert""#),
        "{html}"
    );
    assert!(html.contains(r#"value="/hosts/a""#), "{html}");
    assert!(!html.contains(&unknown[4..]), "the token is echoed: {html}");
    // Malformed bodies are told what to send, and not counted.
    let response = browser
        .post(url(http, "/login"))
        .header("content-type", "application/json")
        .body("{\"tok\": 1}")
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(400, "bad_data", "send the token");
    let response = browser
        .post(url(http, "/login"))
        .header("content-type", "application/json")
        .body(json!({ "token": "A".repeat(5000) }).to_string())
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(400, "bad_data", "at most 4096 bytes");
    // A page of another site may not log the browser in.
    let response = browser
        .post(url(http, "/login"))
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(json!({ "token": unknown }).to_string())
        .send()
        .await
        .unwrap();
    Answer::of(response)
        .await
        .assert_error(403, "forbidden", "another site");
    // The login page and the assets need no credential.
    let page = get(&browser, http, "/login", "").await;
    let html = page.body.as_str().unwrap().to_owned();
    let css = html
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with("/login.css"))
        .unwrap();
    assert_eq!(get(&browser, http, css, "").await.status, 200);

    // A session never outlives its token.
    let short = create(&mut admin, "short", Wire::Viewer, 60_000)
        .await
        .unwrap()
        .token;
    let answer = login_json(&browser, http, &short).await;
    let (_, attributes) = answer.set_cookie();
    let max_age: i64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&max_age), "{attributes:?}");

    // Revoking the token ends its sessions at once.
    let revoked = create(&mut admin, "revoked", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;
    let (cookie, _) = session(&browser, http, &revoked).await;
    assert_load(load(
        get(&browser, http, "/api/v1/query?query=host_load1", &cookie).await,
    ));
    admin
        .revoke_token(RevokeTokenRequest {
            name: "revoked".into(),
        })
        .await
        .unwrap();
    get(&browser, http, "/api/v1/query?query=host_load1", &cookie)
        .await
        .assert_error(401, "unauthorized", "session has expired or ended");
    login_json(&browser, http, &revoked).await.assert_error(
        401,
        "unauthorized",
        "unknown or revoked",
    );

    // An expired token logs in no more.
    let expiring = create(&mut admin, "expiring", Wire::Viewer, 1_000)
        .await
        .unwrap()
        .token;
    let refused_expiring = AtomicU64::new(0);
    eventually(Duration::from_secs(10), "the token to expire", || {
        let answer = login_json(&browser, http, &expiring);
        let refused_expiring = &refused_expiring;
        async move {
            let answer = answer.await;
            if answer.status == 200 {
                return None;
            }
            refused_expiring.fetch_add(1, Ordering::Relaxed);
            answer.assert_error(401, "unauthorized", "expired");
            Some(())
        }
    })
    .await;

    // The three refused logins, the revoked session's request, the
    // revoked token's login and the expired token's.
    let refused = 3 + 2 + refused_expiring.load(Ordering::Relaxed);
    assert_eq!(collector.unauthorized_total(&pki).await, before + refused);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_expires_after_the_session_ttl() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let extra = "[http]\nsession_ttl = \"1s\"\n";
    let collector = Collector::start_with(&pki, data.path(), extra).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let token = create(&mut admin, "console", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;
    let browser = client(&pki, None, http);
    let answer = login_json(&browser, http, &token).await;
    let (cookie, attributes) = answer.set_cookie();
    assert!(
        attributes.iter().any(|a| a == "Max-Age=1"),
        "{attributes:?}"
    );
    let expires_at = answer.body["data"]["expiresAt"].as_f64().unwrap();
    eventually(Duration::from_secs(10), "the session to expire", || {
        let answer = get(&browser, http, "/api/v1/query?query=1", &cookie);
        async move {
            let sent = now_ms() as f64 / 1000.0;
            let answer = answer.await;
            if answer.status == 200 {
                assert!(sent < expires_at, "served after expiry: {}", answer.body);
                return None;
            }
            answer.assert_error(401, "unauthorized", "session has expired or ended");
            Some(())
        }
    })
    .await;
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_beyond_the_limit_get_429_and_are_counted() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let extra = "[http]\nlogin_attempts_per_minute = 3\n";
    let collector = Collector::start_with(&pki, data.path(), extra).await;
    let http = collector.http;
    let mut admin = collector.admin(pki.files(Role::Operator, "ops")).await;
    let token = create(&mut admin, "console", Wire::Viewer, 0)
        .await
        .unwrap()
        .token;
    let browser = client(&pki, None, http);
    let before = collector.unauthorized_total(&pki).await;
    let unknown = format!("hwt_{}", "B".repeat(43));
    for _ in 0..3 {
        login_json(&browser, http, &unknown).await.assert_error(
            401,
            "unauthorized",
            "unknown or revoked",
        );
    }
    // Even a good token waits now: the limit counts attempts.
    let answer = login_json(&browser, http, &token).await;
    answer.assert_error(429, "too_many_requests", "at most 3 a minute");
    let retry_after: u64 = answer.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(answer.header("set-cookie").is_empty());
    let response = browser
        .post(url(http, "/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token.as_str())]))
        .send()
        .await
        .unwrap();
    let page = Answer::of(response).await;
    assert_eq!(page.status, 429);
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("too many login attempts")
    );
    assert_eq!(collector.unauthorized_total(&pki).await, before + 5);
    collector.stop().await;
}
