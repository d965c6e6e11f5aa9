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
        "vendor/uplot/uPlot.iife.min.js",
        include_bytes!("../../console/vendor/uplot/uPlot.iife.min.js"),
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
/// `{{assets}}` stands for the assets' URL prefix, `{{modules}}` for the
/// preloads of the modules the page runs ([`preloads`]).
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
        .route("/", get(|| page(&PAGES.fleet)))
        .route("/hosts/{host}", get(|| page(&PAGES.host)))
        .route("/alerts", get(|| page(&PAGES.alerts)))
        .route("/assets/{version}/{*file}", get(asset))
        .layer(map_response(secure))
        .fallback(move |request: Request| dispatch(api.clone(), request))
}

/// The HTML pages with the assets' version filled in, built once; the
/// index once per page, each preloading the modules that page runs.
struct Pages {
    version: String,
    fleet: String,
    host: String,
    alerts: String,
    not_found: String,
    login: String,
}

static PAGES: LazyLock<Pages> = LazyLock::new(|| {
    let version = assets_version();
    let prefix = format!("/assets/{version}");
    let index = |module: &'static str, scripts: &[&str]| {
        INDEX_HTML
            .replace("{{modules}}", &preloads(module, scripts))
            .replace("{{assets}}", &prefix)
    };
    Pages {
        fleet: index("fleet.js", &[]),
        host: index("host.js", &[UPLOT]),
        alerts: index("alerts.js", &[]),
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

async fn page(html_text: &str) -> Response {
    html(StatusCode::OK, html_text)
}

/// The modules a page whose own module is `module` runs: app.js' static
/// imports (not the pages it imports when shown), `module` and its
/// imports, directly or not, each once.
fn page_modules(module: &'static str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut pending = vec![module, APP_MODULE];
    while let Some(name) = pending.pop() {
        if found.contains(&name) {
            continue;
        }
        found.push(name);
        pending.extend(imports(name));
    }
    found.retain(|name| *name != APP_MODULE);
    found
}

/// The module every page runs by its script tag.
const APP_MODULE: &str = "app.js";

/// The modules `module` imports statically: its `import ... from "./x.js"`
/// lines (the console's modules write each import on one line).
fn imports(module: &str) -> Vec<&'static str> {
    let text = ASSETS
        .iter()
        .find(|(path, _)| *path == module)
        .and_then(|(_, bytes)| std::str::from_utf8(bytes).ok())
        .unwrap_or("");
    text.lines()
        .filter(|line| line.starts_with("import "))
        .filter_map(|line| line.split(" from \"./").nth(1)?.split('"').next())
        .filter_map(|name| {
            ASSETS
                .iter()
                .map(|(path, _)| *path)
                .find(|path| *path == name)
        })
        .collect()
}

/// The chart library, a classic script host.js loads once its requests
/// are out; the host page preloads it, so it is in by then.
const UPLOT: &str = "vendor/uplot/uPlot.iife.min.js";

/// The preload tags of the modules a page whose own module is `module`
/// runs, so that the browser asks for them all at once rather than level
/// by level as it finds imports, and of the classic `scripts` it loads.
fn preloads(module: &'static str, scripts: &[&str]) -> String {
    let modules = page_modules(module)
        .into_iter()
        .map(|name| format!(r#"<link rel="modulepreload" href="{{{{assets}}}}/{name}">"#));
    let scripts = scripts
        .iter()
        .map(|name| format!(r#"<link rel="preload" as="script" href="{{{{assets}}}}/{name}">"#));
    modules.chain(scripts).collect::<Vec<_>>().join("\n")
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
        for path in ["/", "/hosts/db-1.example", "/alerts"] {
            let (status, headers, body) = call(Method::GET, path).await;
            assert_eq!(status, StatusCode::OK);
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

    /// The modules a page preloads.
    fn preloaded(page: &str) -> Vec<String> {
        let prefix = format!(
            r#"<link rel="modulepreload" href="/assets/{}/"#,
            PAGES.version
        );
        page.lines()
            .filter_map(|line| line.strip_prefix(&prefix)?.strip_suffix(r#"">"#))
            .map(str::to_owned)
            .collect()
    }

    /// Each page asks for the modules it runs at once (app.js by its
    /// script tag, the others preloaded), so none waits for the one
    /// importing it, and for no other page's; every module is some page's.
    /// The chart library is a classic script the host page loads itself
    /// (host.js) and preloads; the other pages never ask for it.
    #[test]
    fn each_page_preloads_the_modules_it_runs_and_no_others() {
        let app = format!(r#"<script type="module" src="{{{{assets}}}}/{APP_MODULE}">"#);
        assert!(INDEX_HTML.contains(&app), "index.html lacks {app}");
        let mut everywhere = vec![APP_MODULE.to_owned()];
        for (page, own, others) in [
            (&PAGES.fleet, "fleet.js", ["host.js", "alerts.js"]),
            (&PAGES.host, "host.js", ["fleet.js", "alerts.js"]),
            (&PAGES.alerts, "alerts.js", ["fleet.js", "host.js"]),
        ] {
            let modules = preloaded(page);
            for name in [own, "account.js", "api.js"] {
                assert!(
                    modules.iter().any(|m| m == name),
                    "{own}'s page lacks {name}: {modules:?}"
                );
            }
            for name in others {
                assert!(
                    !modules.iter().any(|m| m == name),
                    "{own}'s page preloads {name}"
                );
            }
            // Every import of a preloaded module is preloaded too.
            for module in &modules {
                for import in imports(module) {
                    assert!(
                        modules.iter().any(|m| m == import),
                        "{own}'s page lacks {import}, which {module} imports"
                    );
                }
            }
            let library = format!(
                r#"<link rel="preload" as="script" href="/assets/{}/{UPLOT}">"#,
                PAGES.version
            );
            assert_eq!(page.contains(&library), own == "host.js", "{own}");
            assert_eq!(
                page.matches(UPLOT).count(),
                usize::from(own == "host.js"),
                "{own}"
            );
            everywhere.extend(modules);
        }
        assert!(preloaded(&PAGES.host).iter().any(|m| m == "hostinfo.js"));
        for (name, _) in ASSETS
            .iter()
            .filter(|(n, _)| n.ends_with(".js") && !n.starts_with("vendor/"))
        {
            assert!(everywhere.iter().any(|m| m == name), "no page runs {name}");
        }
    }

    /// The import lines the preloads follow are every import a module
    /// makes: one written over several lines would be missed.
    #[test]
    fn every_import_of_a_module_is_on_an_import_line() {
        for (name, bytes) in ASSETS
            .iter()
            .filter(|(n, _)| n.ends_with(".js") && !n.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(bytes).unwrap();
            let written = text.matches(" from \"./").count();
            assert_eq!(imports(name).len(), written, "{name}");
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
