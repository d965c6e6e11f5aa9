//! The web console: HTML, CSS and JavaScript modules from
//! `collector/console/`, embedded in the binary and served on the API's
//! listener at `/`. The pages read everything through the API beside
//! them (Prometheus' `/api/v1/...` and hostwatch's `/api/v1/hostwatch/...`);
//! this module only serves files.
//!
//! Assets live under `/assets/<version>/`, where the version is a hash of
//! every asset's name and content: a changed file changes every asset URL,
//! so assets are cached as immutable, relative imports between modules
//! need no rewriting, and only the small HTML pages (which name the
//! version) are revalidated. Every console response carries the security
//! headers of [`secure`]; the Content-Security-Policy allows no inline
//! script or style, so the files hold none.

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hostwatch_stdx::escape_html;
use std::hash::Hasher;
use std::sync::LazyLock;
use tower::ServiceExt;

/// The files served under `/assets/<version>/`, by their path there.
const ASSETS: &[(&str, &[u8])] = &[
    ("app.js", include_bytes!("../../console/app.js")),
    ("api.js", include_bytes!("../../console/api.js")),
    ("account.js", include_bytes!("../../console/account.js")),
    ("format.js", include_bytes!("../../console/format.js")),
    ("fleet.js", include_bytes!("../../console/fleet.js")),
    ("host.js", include_bytes!("../../console/host.js")),
    ("hostinfo.js", include_bytes!("../../console/hostinfo.js")),
    ("alerts.js", include_bytes!("../../console/alerts.js")),
    ("alertview.js", include_bytes!("../../console/alertview.js")),
    (
        "silenceview.js",
        include_bytes!("../../console/silenceview.js"),
    ),
    ("hooktest.js", include_bytes!("../../console/hooktest.js")),
    (
        "connection.js",
        include_bytes!("../../console/connection.js"),
    ),
    ("dom.js", include_bytes!("../../console/dom.js")),
    ("console.css", include_bytes!("../../console/console.css")),
    ("login.css", include_bytes!("../../console/login.css")),
    ("favicon.svg", include_bytes!("../../console/favicon.svg")),
    (
        "vendor/uplot/uPlot.esm.js",
        include_bytes!("../../console/vendor/uplot/uPlot.esm.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        include_bytes!("../../console/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/uplot/LICENSE",
        include_bytes!("../../console/vendor/uplot/LICENSE"),
    ),
];

/// The console's one page (its script draws the page the URL names: `/`
/// the fleet, `/hosts/<host>` a host, `/alerts` the alerts) and the page
/// for unknown routes;
/// `{{assets}}` stands for the assets' URL prefix.
const INDEX_HTML: &str = include_str!("../../console/index.html");
const NOT_FOUND_HTML: &str = include_str!("../../console/404.html");
/// The login page (no script: a plain form); `{{notice}}` and `{{next}}`
/// are filled in per answer.
const LOGIN_HTML: &str = include_str!("../../console/login.html");

/// The console's routes, in front of the API's router `api`: a path that
/// is neither a console page nor an asset goes to the API, and where the
/// API has no such endpoint either, a path outside the API's prefixes
/// gets the console's 404 page (under them, the API's JSON error).
pub(crate) fn router(api: Router) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/hosts/{host}", get(index))
        .route("/alerts", get(index))
        .route("/assets/{version}/{*file}", get(asset))
        .layer(map_response(secure))
        .fallback(move |request: Request| dispatch(api.clone(), request))
}

/// The HTML pages with the assets' version filled in, built once.
struct Pages {
    version: String,
    index: String,
    not_found: String,
    login: String,
}

static PAGES: LazyLock<Pages> = LazyLock::new(|| {
    let version = assets_version();
    let prefix = format!("/assets/{version}");
    Pages {
        index: INDEX_HTML.replace("{{assets}}", &prefix),
        not_found: NOT_FOUND_HTML.replace("{{assets}}", &prefix),
        login: LOGIN_HTML.replace("{{assets}}", &prefix),
        version,
    }
});

/// A hash of every asset's path and bytes, in hex. It names a version of
/// the files for caches, not a secret, so a non-cryptographic hash serves.
fn assets_version() -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    for (path, bytes) in ASSETS {
        hasher.write(path.as_bytes());
        hasher.write_usize(bytes.len());
        hasher.write(bytes);
    }
    format!("{:016x}", hasher.finish())
}

async fn index() -> Response {
    html(StatusCode::OK, &PAGES.index)
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|(path, _)| *path == file);
    match found {
        Some((path, bytes)) if version == PAGES.version => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        // An older version's URL (a page loaded before an upgrade) is not
        // served: its content is gone from this binary.
        _ => html(StatusCode::NOT_FOUND, &PAGES.not_found),
    }
}

/// An HTML page, revalidated on every load so it names the current assets.
fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.to_owned(),
    )
        .into_response()
}

/// What the login page says above its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginNotice {
    /// Why the page is shown (a session ended, a logout).
    Info(String),
    /// Why a login was refused.
    Error(String),
}

/// The login page with `notice`, sending the user to `next` (a local
/// path) once logged in, with the console's headers.
pub(crate) fn login_page(status: StatusCode, notice: Option<LoginNotice>, next: &str) -> Response {
    let notice = match notice {
        None => String::new(),
        Some(LoginNotice::Info(text)) => {
            format!(
                r#"<p class="notice" id="notice" role="status">{}</p>"#,
                escape_html(&text)
            )
        }
        Some(LoginNotice::Error(text)) => format!(
            r#"<p class="notice error" id="notice" role="alert">{}</p>"#,
            escape_html(&text)
        ),
    };
    let page = PAGES
        .login
        .replace("{{notice}}", &notice)
        .replace("{{next}}", &escape_html(next));
    with_security_headers(html(status, &page))
}

/// Paths under which the API answers, with its own JSON errors (and a
/// 401, not the login page, to a request without a credential): scrapers
/// of `/metrics` are no browsers either.
pub(crate) fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/-/") || path == "/metrics"
}

async fn dispatch(api: Router, request: Request) -> Response {
    let api_path = is_api_path(request.uri().path());
    let response = match api.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() == StatusCode::NOT_FOUND && !api_path {
        return secure(html(StatusCode::NOT_FOUND, &PAGES.not_found)).await;
    }
    response
}

/// The Content-Security-Policy of every console response: files from this
/// origin only, no inline script or style, no plugins, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the console's security headers to `response`.
async fn secure(response: Response) -> Response {
    with_security_headers(response)
}

/// Adds the console's security headers to `response`.
pub(crate) fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Method;

    /// Stands for the API's router: one endpoint and its JSON fallback.
    fn api() -> Router {
        Router::new()
            .route("/-/healthy", get(|| async { "Healthy" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "{\"status\":\"error\"}") })
    }

    async fn call(method: Method, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router(api()).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn assert_secure(headers: &axum::http::HeaderMap) {
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    /// The asset URLs an HTML page names.
    fn asset_urls(html: &str) -> Vec<String> {
        html.split('"')
            .filter(|s| s.starts_with("/assets/"))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn the_index_names_versioned_assets_that_are_served_immutable() {
        let (status, headers, body) = call(Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, host_page) = call(Method::GET, "/hosts/db-1.example").await;
        assert_eq!(host_page, body);
        let (_, _, alerts_page) = call(Method::GET, "/alerts").await;
        assert_eq!(alerts_page, body);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_secure(&headers);
        assert!(!body.contains("{{"), "{body}");
        let urls = asset_urls(&body);
        assert!(urls.len() >= 3, "{urls:?}");
        for url in urls {
            assert!(url.starts_with(&format!("/assets/{}/", PAGES.version)));
            let (status, headers, _) = call(Method::GET, &url).await;
            assert_eq!(status, StatusCode::OK, "{url}");
            assert_eq!(
                headers[header::CACHE_CONTROL],
                "public, max-age=31536000, immutable"
            );
            let want = content_type(&url);
            assert_eq!(headers[header::CONTENT_TYPE], want, "{url}");
            assert_secure(&headers);
        }
        let (_, headers, _) = call(Method::GET, &format!("/assets/{}/app.js", PAGES.version)).await;
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn unknown_pages_and_assets_get_the_404_page() {
        let v = &PAGES.version;
        for uri in [
            "/nope",
            "/hosts/a/b/c",
            &format!("/assets/{v}/nope.js"),
            &format!("/assets/{v}/../console.rs"),
            "/assets/0000000000000000/app.js",
        ] {
            let (status, headers, body) = call(Method::GET, uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert!(body.contains("Page not found"), "{uri}: {body}");
            assert_secure(&headers);
        }
    }

    #[tokio::test]
    async fn the_api_answers_under_its_prefixes_with_its_own_errors() {
        let (status, _, body) = call(Method::GET, "/-/healthy").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "Healthy"));
        let (status, _, body) = call(Method::GET, "/api/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "{\"status\":\"error\"}");
    }

    #[tokio::test]
    async fn other_methods_on_console_routes_are_refused_with_the_headers() {
        let (status, headers, _) = call(Method::POST, "/").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_secure(&headers);
    }

    #[tokio::test]
    async fn the_login_page_escapes_what_it_is_given_and_holds_no_script() {
        let notice = LoginNotice::Error("bad <token> & \"more\"".into());
        let response = login_page(StatusCode::UNAUTHORIZED, Some(notice), "/hosts/a\"><b>");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_secure(response.headers());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("bad &lt;token&gt; &amp; &quot;more&quot;"),
            "{body}"
        );
        assert!(
            body.contains(r#"value="/hosts/a&quot;&gt;&lt;b&gt;""#),
            "{body}"
        );
        assert!(body.contains(r#"role="alert""#), "{body}");
        assert!(!body.contains("{{") && !body.contains("<script") && !body.contains("style="));
        for url in asset_urls(&body) {
            let (status, _, _) = call(Method::GET, &url).await;
            assert_eq!(status, StatusCode::OK, "{url}");
        }
    }

    /// The index asks for every module at once (app.js by its script
    /// tag, the others preloaded), so none waits for the one importing it.
    #[test]
    fn the_index_preloads_every_module() {
        for (name, _) in ASSETS.iter().filter(|(name, _)| name.ends_with(".js")) {
            let tag = if *name == "app.js" {
                format!(r#"<script type="module" src="{{{{assets}}}}/{name}">"#)
            } else {
                format!(r#"<link rel="modulepreload" href="{{{{assets}}}}/{name}">"#)
            };
            assert!(INDEX_HTML.contains(&tag), "index.html lacks {tag}");
        }
    }

    /// Every file of the console's folder is served (or is one of the HTML
    /// pages, or the vendored library's notes), so none is forgotten.
    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut pending = vec![root.clone()];
        let mut files = Vec::new();
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    files.push(relative.to_str().unwrap().to_owned());
                }
            }
        }
        let pages = [
            "index.html",
            "404.html",
            "login.html",
            "vendor/uplot/README.md",
        ];
        for file in files {
            assert!(
                pages.contains(&file.as_str()) || ASSETS.iter().any(|(p, _)| *p == file),
                "{file} is in collector/console but not in ASSETS"
            );
        }
    }
}
