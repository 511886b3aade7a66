//! The dashboard at `/_/` over plain HTTP (its browser tests drive Chromium separately): signing
//! in and out, who may see it, the session cookie, CSRF and same-origin checks, and the
//! security headers on every page.

use crate::harness::{Guest, Options, Server};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

const EMAIL: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn with_admin() -> Options {
    Options {
        env: vec![
            ("PLINTH_ADMIN_EMAIL".into(), EMAIL.into()),
            ("PLINTH_ADMIN_PASSWORD".into(), PASSWORD.into()),
        ],
        ..Options::default()
    }
}

/// A browser-like client that does not follow redirects (so they can be checked) and keeps no
/// cookies of its own (each test passes the session cookie it means to).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The session cookie (`name=value`) a response sets, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("plinth_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// Posts a form as a page of this dashboard would (same origin).
async fn post_form(
    server: &Server,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser()
        .post(format!("{}{path}", server.base))
        .header("origin", server.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .form(fields);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn get_page(server: &Server, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = browser().get(format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn sign_in(server: &Server, fields: &[(&str, &str)]) -> String {
    let reply = post_form(server, "/_/sign-in", None, fields).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()["location"], "/_/");
    let set = reply.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/_/"] {
        assert!(set.contains(attribute), "{set}");
    }
    session_cookie(reply.headers()).unwrap()
}

/// A new operator API key (its text and id), made with the admin token.
async fn operator_key(server: &Server, name: &str) -> (String, String) {
    let created = server
        .send_json(
            reqwest::Method::POST,
            "/admin/api-keys",
            serde_json::json!({ "name": name, "role": "operator" }),
            Some(crate::harness::TOKEN),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let text = |field: &str| body[field].as_str().unwrap().to_string();
    (text("key"), text("id"))
}

/// The value of the hidden CSRF field on a page.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"_csrf\" value=\"").unwrap() + 20;
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn an_operator_signs_in_sees_the_server_and_signs_out() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::Hello).await;

    // Signed out: every page sends the browser to the sign-in page.
    let reply = get_page(&server, "/_/plugins", None).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()["location"], "/_/sign-in");
    let page = get_page(&server, "/_/sign-in", None).await;
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<form method=\"post\" action=\"/_/sign-in\"")
    );

    // A wrong password is refused on the page with the API's code, and sets no cookie.
    let wrong = post_form(
        &server,
        "/_/sign-in",
        None,
        &[("email", EMAIL), ("password", "nope-nope-nope")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(wrong.headers()).is_none());
    assert!(wrong.text().await.unwrap().contains("invalid_credentials"));

    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let overview = get_page(&server, "/_/", Some(&cookie)).await;
    assert_eq!(overview.status(), StatusCode::OK);
    let text = overview.text().await.unwrap();
    assert!(
        text.contains("Overview") && text.contains(EMAIL) && text.contains("(admin)"),
        "{text}"
    );
    assert!(
        text.contains("plugin.deploy"),
        "the deploy is among the recent changes: {text}"
    );
    let plugins = get_page(&server, "/_/plugins", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        plugins.contains("hello") && plugins.contains("/hello/{name}"),
        "{plugins}"
    );

    // Signing out needs the page's CSRF token, ends the session and clears the cookie.
    let refused = post_form(
        &server,
        "/_/sign-out",
        Some(&cookie),
        &[("_csrf", "forged")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("csrf_failed"));
    let signed_out = post_form(
        &server,
        "/_/sign-out",
        Some(&cookie),
        &[("_csrf", &csrf_of(&text))],
    )
    .await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let cleared = signed_out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = get_page(&server, "/_/", Some(&cookie)).await;
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "the old cookie still signs in"
    );
}

#[tokio::test]
async fn forms_from_another_site_and_callers_without_the_role_are_refused() {
    let server = Server::start_fresh(with_admin());
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let page = get_page(&server, "/_/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);

    // The right token, but posted from another origin (as a hostile page's form would be).
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    headers.insert("origin", HeaderValue::from_static("https://evil.example"));
    let cross = browser()
        .post(format!("{}/_/sign-out", server.base))
        .headers(headers)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        get_page(&server, "/_/", Some(&cookie)).await.status(),
        StatusCode::OK,
        "still signed in"
    );

    // A plain account may not use the dashboard, and gets no session.
    let registered = server
        .post_json(
            "/auth/register",
            serde_json::json!({ "email": "pat@example.com", "password": "password-1234" }),
            None,
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let plain = post_form(
        &server,
        "/_/sign-in",
        None,
        &[("email", "pat@example.com"), ("password", "password-1234")],
    )
    .await;
    assert_eq!(plain.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(plain.headers()).is_none());

    // An operator's API key signs in; revoked, its session ends at the next page.
    let (key, id) = operator_key(&server, "ops laptop").await;
    let key_cookie = sign_in(&server, &[("api_key", key.as_str())]).await;
    let page = get_page(&server, "/_/", Some(&key_cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("API key ops laptop") && page.contains("(operator)"),
        "{page}"
    );
    let revoked = server
        .admin(reqwest::Method::DELETE, &format!("/admin/api-keys/{id}"))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get_page(&server, "/_/", Some(&key_cookie)).await.status(),
        StatusCode::SEE_OTHER
    );

    // A bearer token is not a dashboard session, nor a session cookie a bearer token.
    let bearer = browser()
        .get(format!("{}/_/", server.base))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::SEE_OTHER);
    let token = cookie.split_once('=').unwrap().1;
    assert_eq!(
        server.get_as("/admin/plugins", token).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_plugin_page_shows_versions_and_config_and_rolls_back() {
    let server = Server::start_fresh(with_admin());
    let guest = Guest::ConfigReader;
    let component = guest.component();
    let first = server
        .deploy("config-reader", &guest.manifest(), &component)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let changed = format!("{}\n[limits]\ntimeout = \"3s\"\n", guest.manifest());
    let second = server.deploy("config-reader", &changed, &component).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;

    let page = get_page(&server, "/_/plugins/config-reader", Some(&cookie)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    for expected in [
        "/config-reader/{key}",
        "Roll back to 1",
        "- timeout",
        "greeting, api_token",
        "wasi:config/store",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    let csrf = csrf_of(&text);

    // A secret set here reaches the plugin, and the page never shows it again.
    let path = "/_/plugins/config-reader/config";
    let set = post_form(
        &server,
        path,
        Some(&cookie),
        &[
            ("_csrf", &csrf),
            ("key", "api_token"),
            ("value", "sk_dashboard_secret"),
            ("secret", "true"),
        ],
    )
    .await;
    assert_eq!(set.status(), StatusCode::SEE_OTHER);
    // A plain value with markup in it is shown as text, never as markup.
    let set = post_form(
        &server,
        path,
        Some(&cookie),
        &[
            ("_csrf", &csrf),
            ("key", "greeting"),
            ("value", "<script>alert(1)</script>"),
        ],
    )
    .await;
    assert_eq!(set.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.get("/config-reader/api_token").await.text(),
        "sk_dashboard_secret"
    );
    let text = get_page(&server, "/_/plugins/config-reader", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("sk_dashboard_secret"), "a secret came back");
    assert!(!text.contains("<script>alert(1)"), "markup was not escaped");
    assert!(
        text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{text}"
    );

    // A rollback needs the form's token; with it, version 1 serves again, recorded as the user.
    let path = "/_/plugins/config-reader/rollback";
    let forged = post_form(
        &server,
        path,
        Some(&cookie),
        &[("_csrf", "nope"), ("version", "1")],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let rolled = post_form(
        &server,
        path,
        Some(&cookie),
        &[("_csrf", &csrf), ("version", "1")],
    )
    .await;
    assert_eq!(rolled.status(), StatusCode::SEE_OTHER);
    let versions = server
        .admin(
            reqwest::Method::GET,
            "/admin/plugins/config-reader/versions",
        )
        .await
        .json();
    let active: Vec<_> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["active"] == true)
        .collect();
    assert_eq!(active[0]["version"], 1, "{versions}");
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit?action=plugin.rollback")
        .await
        .json();
    assert!(
        audit["entries"][0]["actor"]
            .as_str()
            .unwrap()
            .contains(EMAIL),
        "{audit}"
    );
    let missing = post_form(
        &server,
        path,
        Some(&cookie),
        &[("_csrf", &csrf), ("version", "9")],
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().await.unwrap().contains("version_not_found"));

    // An operator sees the latest deploys, not the audit log (which names every account).
    let (key, _) = operator_key(&server, "ops").await;
    let operator = sign_in(&server, &[("api_key", key.as_str())]).await;
    let overview = get_page(&server, "/_/", Some(&operator))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("Latest deploys") && !overview.contains("api_key.create"),
        "{overview}"
    );
}

#[tokio::test]
async fn a_plugins_log_page_filters_by_level_text_and_request_and_its_stream_needs_a_session() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::Hello).await;
    for path in ["/hello/first", "/hello/second"] {
        assert_eq!(server.get(path).await.status, StatusCode::OK);
    }
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let all = get_page(&server, "/_/plugins/hello/logs", Some(&cookie)).await;
    assert_eq!(all.status(), StatusCode::OK);
    let all = all.text().await.unwrap();
    assert!(
        all.contains("/hello/first") && all.contains("/hello/second"),
        "{all}"
    );
    let text = get_page(&server, "/_/plugins/hello/logs?q=SECOND", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("/hello/second") && !text.contains("/hello/first"),
        "{text}"
    );
    let errors = get_page(&server, "/_/plugins/hello/logs?level=error", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !errors.contains("/hello/first") && !errors.contains("/hello/second"),
        "access lines of 200s are not errors: {errors}"
    );
    // The first line's request link shows only that request's lines.
    let start = all.find("logs?request=").unwrap() + "logs?request=".len();
    let id: String = all[start..].chars().take_while(|c| *c != '"').collect();
    let one = get_page(
        &server,
        &format!("/_/plugins/hello/logs?request={id}"),
        Some(&cookie),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        one.contains("/hello/first") && !one.contains("/hello/second"),
        "{one}"
    );
    // The live tail answers a signed-in browser with an event stream, nobody else.
    let stream = get_page(&server, "/_/plugins/hello/logs/stream", None).await;
    assert_eq!(stream.status(), StatusCode::SEE_OTHER);
    let stream = get_page(
        &server,
        "/_/plugins/hello/logs/stream?since=0",
        Some(&cookie),
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let missing = get_page(&server, "/_/plugins/nope/logs", Some(&cookie)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// `component` with a custom section of `extra` bytes appended (still a valid component).
fn padded(component: &[u8], extra: usize) -> Vec<u8> {
    let mut payload = vec![7u8];
    payload.extend_from_slice(b"padding");
    payload.resize(payload.len() + extra, 0);
    let mut out = component.to_vec();
    out.push(0);
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        out.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    out.extend(payload);
    out
}

async fn upload(
    server: &Server,
    cookie: &str,
    csrf: Option<&str>,
    component: Vec<u8>,
    manifest: &str,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    if let Some(csrf) = csrf {
        form = form.text("_csrf", csrf.to_string());
    }
    let form = form
        .part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"),
        )
        .text("manifest", manifest.to_string());
    browser()
        .post(format!("{}/_/deploy", server.base))
        .header("cookie", cookie)
        .header("origin", server.base.as_str())
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plugin_deployed_from_the_page_serves_and_a_refused_one_says_why() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::Hello).await;
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let page = get_page(&server, "/_/deploy", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    // Larger than the dashboard's other forms may be: uploads have the server's own limit.
    let component = padded(&Guest::PlainHttp.component(), 400 * 1024);
    let manifest =
        "name = \"greeter\"\n[[routes]]\npath = \"/greeter/{name}\"\nmethods = [\"GET\"]\n";

    // Small, so all of it is sent before the refusal (which comes before the body is read).
    let small = Guest::PlainHttp.component();
    let refused = upload(&server, &cookie, None, small, manifest).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let deployed = upload(&server, &cookie, Some(&csrf), component.clone(), manifest).await;
    assert_eq!(deployed.status(), StatusCode::SEE_OTHER);
    assert_eq!(deployed.headers()["location"], "/_/plugins/greeter");
    assert_eq!(server.get("/greeter/you").await.status, StatusCode::OK);
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit?target=greeter")
        .await
        .json();
    assert!(
        audit["entries"][0]["actor"]
            .as_str()
            .unwrap()
            .contains(EMAIL),
        "{audit}"
    );

    // A route another plugin holds: refused on the form with its code, the manifest kept.
    let clash = "name = \"clash\"\n[[routes]]\npath = \"/hello/{name}\"\nmethods = [\"GET\"]\n";
    let refused = upload(&server, &cookie, Some(&csrf), component, clash).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("route_conflict") && text.contains("name = &quot;clash&quot;"),
        "{text}"
    );
}

#[tokio::test]
async fn the_audit_log_page_is_for_admins_and_filters_by_action_and_target() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::Hello).await;
    server.deploy_guest(Guest::KvPlain).await;
    let admin = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let page = get_page(&server, "/_/audit", Some(&admin)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let all = page.text().await.unwrap();
    assert!(
        all.contains("href=\"/_/audit\"") && all.contains("kv-plain") && all.contains(">hello<"),
        "{all}"
    );
    let filtered = get_page(
        &server,
        "/_/audit?action=plugin.deploy&target=hello",
        Some(&admin),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        filtered.contains(">hello<") && !filtered.contains("kv-plain"),
        "{filtered}"
    );
    assert!(!filtered.contains("Older entries"));
    let bad = get_page(&server, "/_/audit?cursor=zz", Some(&admin)).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // An operator has no audit log link and is refused the page.
    let (key, _) = operator_key(&server, "ops").await;
    let operator = sign_in(&server, &[("api_key", key.as_str())]).await;
    let overview = get_page(&server, "/_/", Some(&operator))
        .await
        .text()
        .await
        .unwrap();
    assert!(!overview.contains("/_/audit"), "{overview}");
    assert_eq!(
        get_page(&server, "/_/audit", Some(&operator))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

/// The value of the hidden field `name` on a page (the first one).
fn hidden_of(page: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = page.find(&needle).unwrap() + needle.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn the_data_pages_browse_edit_delete_export_and_import_a_plugins_kv() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::KvPlain).await;
    let markup = b"<script>alert(1)</script>".to_vec();
    server
        .request(reqwest::Method::PUT, "/kv-plain/b/html", None, Some(markup))
        .await;
    server
        .request(
            reqwest::Method::PUT,
            "/kv-plain/b/bin",
            None,
            Some(vec![0, 255, 60]),
        )
        .await;
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;

    // The listing shows what the plugin stored, as text, never as markup.
    let list = get_page(&server, "/_/plugins/kv-plain/kv?bucket=b", Some(&cookie)).await;
    assert_eq!(list.status(), StatusCode::OK);
    let text = list.text().await.unwrap();
    assert!(
        text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{text}"
    );
    assert!(!text.contains("<script>alert"), "{text}");
    assert!(text.contains("0x00ff3c"), "{text}");
    let csrf = csrf_of(&text);

    // One entry: as text, and as hex.
    let entry = "/_/plugins/kv-plain/kv/entry?bucket=b&key=html";
    let page = get_page(&server, entry, Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("&lt;script&gt;"), "{page}");
    let tag = hidden_of(&page, "tag");
    let hex = get_page(&server, &format!("{entry}&view=hex"), Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(hex.contains("3c 73 63 72 69 70 74 3e"), "{hex}");

    // An edit against the value read reaches the plugin; one made from an older read is
    // refused and changes nothing.
    let edit = |value: &'static str, tag: String| {
        let (server, cookie, csrf) = (&server, cookie.clone(), csrf.clone());
        async move {
            post_form(
                server,
                "/_/plugins/kv-plain/kv/entry",
                Some(&cookie),
                &[
                    ("_csrf", &csrf),
                    ("bucket", "b"),
                    ("key", "html"),
                    ("format", "json"),
                    ("value", value),
                    ("tag", &tag),
                ],
            )
            .await
        }
    };
    let saved = edit("{\"safe\":\r\n true}", tag.clone()).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.get("/kv-plain/b/html").await.text(),
        "{\"safe\":\n true}"
    );
    let stale = edit("{\"lost\": true}", tag).await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert!(stale.text().await.unwrap().contains("kv_value_changed"));
    let not_json = edit("{not json", String::new()).await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        server.get("/kv-plain/b/html").await.text(),
        "{\"safe\":\n true}"
    );

    // Export, delete (only once confirmed), and the export's import brings it back.
    let export = get_page(&server, "/_/plugins/kv-plain/kv/export", Some(&cookie)).await;
    assert_eq!(export.status(), StatusCode::OK);
    assert!(
        export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("kv-plain-kv.jsonl")
    );
    let exported = export.bytes().await.unwrap().to_vec();
    assert_eq!(
        exported
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    let delete = |confirm: &'static str| {
        let (server, cookie, csrf) = (&server, cookie.clone(), csrf.clone());
        async move {
            post_form(
                server,
                "/_/plugins/kv-plain/kv/delete",
                Some(&cookie),
                &[
                    ("_csrf", &csrf),
                    ("bucket", "b"),
                    ("key", "html"),
                    ("confirm", confirm),
                ],
            )
            .await
        }
    };
    assert_eq!(delete("").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/kv-plain/b/html").await.status, StatusCode::OK);
    assert_eq!(delete("yes").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.get("/kv-plain/b/html").await.status,
        StatusCode::NOT_FOUND
    );

    let import = |csrf: Option<String>| {
        let (server, cookie, exported) = (&server, cookie.clone(), exported.clone());
        async move {
            let mut form = reqwest::multipart::Form::new();
            if let Some(csrf) = csrf {
                form = form.text("_csrf", csrf);
            }
            let form = form.part(
                "file",
                reqwest::multipart::Part::bytes(exported).file_name("kv.jsonl"),
            );
            browser()
                .post(format!("{}/_/plugins/kv-plain/kv/import", server.base))
                .header("cookie", cookie)
                .header("origin", server.base.as_str())
                .multipart(form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(import(None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("/kv-plain/b/html").await.status,
        StatusCode::NOT_FOUND
    );
    let imported = import(Some(csrf.clone())).await;
    assert_eq!(imported.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        imported.headers()["location"],
        "/_/plugins/kv-plain/kv?imported=2"
    );
    assert_eq!(
        server.get("/kv-plain/b/html").await.text(),
        "{\"safe\":\n true}"
    );

    // Every change is the signed-in admin's, in the audit log.
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit?target=kv-plain")
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["kv.import", "kv.delete", "kv.set", "plugin.deploy"],
        "{audit}"
    );
    assert!(
        audit["entries"][1]["actor"]
            .as_str()
            .unwrap()
            .contains(EMAIL)
    );
}

/// The text of a page `GET` with `cookie`, asserting its status.
async fn page_text(server: &Server, path: &str, cookie: &str, status: StatusCode) -> String {
    let page = get_page(server, path, Some(cookie)).await;
    assert_eq!(page.status(), status, "{path}");
    page.text().await.unwrap()
}

#[tokio::test]
async fn admins_manage_accounts_invitations_and_keys_in_the_pages_and_operators_cannot() {
    let server = Server::start_fresh(with_admin());
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let users = page_text(&server, "/_/users", &cookie, StatusCode::OK).await;
    assert!(users.contains(EMAIL), "{users}");
    let csrf = csrf_of(&users);
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let (server, cookie) = (&server, cookie.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(server, &path, Some(&cookie), &fields).await
        }
    };
    let with_csrf = |mut fields: Vec<(&'static str, String)>| {
        fields.push(("_csrf", csrf.clone()));
        fields
    };

    // An account made here can sign in with the role chosen; its role changes, it is disabled,
    // and it is deleted only once confirmed.
    let made = post(
        "/_/users".into(),
        with_csrf(vec![
            ("email", "ops@example.com".into()),
            ("password", "a long enough password".into()),
            ("role", "operator".into()),
        ]),
    )
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let account = made.headers()["location"].to_str().unwrap().to_string();
    let id = account.trim_start_matches("/_/users/").to_string();
    let shown = page_text(&server, &account, &cookie, StatusCode::OK).await;
    assert!(
        shown.contains("ops@example.com") && shown.contains("operator"),
        "{shown}"
    );
    let operator = sign_in(
        &server,
        &[
            ("email", "ops@example.com"),
            ("password", "a long enough password"),
        ],
    )
    .await;
    let account_json = |id: String| {
        let server = &server;
        let path = format!("/admin/users/{id}");
        async move { server.admin(reqwest::Method::GET, &path).await.json() }
    };
    let changed = post(
        format!("{account}/roles"),
        with_csrf(vec![("role", "admin".into())]),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        account_json(id.clone()).await["roles"],
        serde_json::json!(["user", "admin"])
    );
    let disabled = post(format!("{account}/disable"), with_csrf(vec![])).await;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    assert_eq!(account_json(id.clone()).await["disabled"], true);
    // Its dashboard session ended with it.
    let closed = get_page(&server, "/_/", Some(&operator)).await;
    assert_eq!(closed.status(), StatusCode::SEE_OTHER);
    let unconfirmed = post(format!("{account}/delete"), with_csrf(vec![])).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(account_json(id.clone()).await["email"], "ops@example.com");
    let deleted = post(
        format!("{account}/delete"),
        with_csrf(vec![("confirm", "yes".into())]),
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server
            .admin(reqwest::Method::GET, &format!("/admin/users/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // An admin cannot lock themselves out from here either.
    let own = server
        .admin(reqwest::Method::GET, "/admin/users")
        .await
        .json();
    let own_id = own["users"][0]["id"].as_str().unwrap().to_string();
    let refused = post(format!("/_/users/{own_id}/disable"), with_csrf(vec![])).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("cannot_modify_self"));

    // An invitation's code is shown once, never in a URL, and listed only by its id.
    let invited = post(
        "/_/invites".into(),
        with_csrf(vec![
            ("email", "new@example.com".into()),
            ("expires_in", "7days".into()),
        ]),
    )
    .await;
    assert_eq!(invited.status(), StatusCode::CREATED);
    assert_eq!(invited.headers()["cache-control"], "no-store");
    let text = invited.text().await.unwrap();
    let code_at = text.find("plinth_inv_").unwrap();
    let code: String = text[code_at..].chars().take_while(|c| *c != '<').collect();
    let listed = page_text(&server, "/_/users", &cookie, StatusCode::OK).await;
    assert!(
        listed.contains("new@example.com") && !listed.contains(&code),
        "{listed}"
    );
    let invite_id = server
        .admin(reqwest::Method::GET, "/admin/invites")
        .await
        .json()["invites"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = post(format!("/_/invites/{invite_id}/revoke"), with_csrf(vec![])).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let invites = server
        .admin(reqwest::Method::GET, "/admin/invites")
        .await
        .json();
    assert_eq!(invites["invites"], serde_json::json!([]));

    // An API key made here works at once, is shown once, and stops working when revoked.
    let made = post(
        "/_/keys".into(),
        with_csrf(vec![
            ("name", "<b>ci</b>".into()),
            ("role", "operator".into()),
            ("expires_in", "30days".into()),
        ]),
    )
    .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let text = made.text().await.unwrap();
    assert!(text.contains("&lt;b&gt;ci&lt;/b&gt;"), "{text}");
    let key_at = text.find("plinth_").unwrap();
    let key: String = text[key_at..].chars().take_while(|c| *c != '<').collect();
    assert_eq!(
        server.get_as("/admin/plugins", &key).await.status,
        StatusCode::OK
    );
    let keys = page_text(&server, "/_/keys", &cookie, StatusCode::OK).await;
    assert!(
        keys.contains("&lt;b&gt;ci&lt;/b&gt;") && !keys.contains(&key),
        "{keys}"
    );
    let key_id = server
        .admin(reqwest::Method::GET, "/admin/api-keys")
        .await
        .json()["api_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/_/keys/{key_id}/revoke");
    assert_eq!(
        post(path.clone(), with_csrf(vec![])).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.get_as("/admin/plugins", &key).await.status,
        StatusCode::OK
    );
    let revoked = post(path, with_csrf(vec![("confirm", "yes".into())])).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.get_as("/admin/plugins", &key).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Rotating the signing key keeps the old one verifying.
    let rotated = post(
        "/_/signing-keys/rotate".into(),
        with_csrf(vec![("confirm", "yes".into())]),
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::SEE_OTHER);
    let signing = server
        .admin(reqwest::Method::GET, "/admin/signing-keys")
        .await
        .json();
    assert_eq!(
        signing["verifying"].as_array().unwrap().len(),
        2,
        "{signing}"
    );

    // Each change is the admin's, in the audit log.
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit?limit=100")
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().unwrap().contains(EMAIL))
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "user.create",
        "user.roles",
        "user.disable",
        "user.delete",
        "invite.create",
        "invite.revoke",
        "api_key.create",
        "api_key.revoke",
        "signing_key.rotate",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }

    // An operator sees none of it, and cannot post to it.
    let (operator_key_text, _) = operator_key(&server, "ops").await;
    let operator = sign_in(&server, &[("api_key", &operator_key_text)]).await;
    let overview = page_text(&server, "/_/", &operator, StatusCode::OK).await;
    assert!(!overview.contains("/_/users") && !overview.contains("/_/keys"));
    for path in ["/_/users", "/_/keys", &format!("/_/users/{own_id}")] {
        page_text(&server, path, &operator, StatusCode::FORBIDDEN).await;
    }
    let operator_csrf = csrf_of(&overview);
    let refused = post_form(
        &server,
        "/_/keys",
        Some(&operator),
        &[
            ("_csrf", &operator_csrf),
            ("name", "escalate"),
            ("role", "admin"),
            ("expires_in", "never"),
        ],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let keys = server
        .admin(reqwest::Method::GET, "/admin/api-keys")
        .await
        .json();
    assert!(!keys.to_string().contains("escalate"), "{keys}");
}

#[tokio::test]
async fn the_overview_and_plugin_pages_chart_requests_errors_and_latency_as_they_happen() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::Misbehave).await;
    for _ in 0..3 {
        assert_eq!(server.get("/misbehave/fine").await.status, StatusCode::OK);
    }
    let trapped = server.get("/misbehave/recurse").await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;

    // The minute so far is charted: no waiting for it to close. (A minute closes 60 s after
    // start, so the four requests fall in one or two: the error's minute peaks at 1, and the
    // requests' at 2 to 4.)
    let overview = page_text(&server, "/_/", &cookie, StatusCode::OK).await;
    let peak = overview
        .split("Requests per minute over the last hour: now ")
        .nth(1)
        .and_then(|rest| rest.split("peak ").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no requests chart in {overview}"));
    assert!(["2", "3", "4"].contains(&peak), "{peak}");
    for expected in [
        "Errors per minute over the last hour: now ",
        ", peak 1\"",
        "p95 latency over the last hour: now ",
        "Instances in use over the last hour: now ",
        "Memory over the last hour: now ",
        "<polyline class=\"line\"",
    ] {
        assert!(
            overview.contains(expected),
            "{expected} missing from {overview}"
        );
    }
    assert!(
        !overview.contains("p95 latency over the last hour: now none"),
        "{overview}"
    );
    let plugins = page_text(&server, "/_/plugins", &cookie, StatusCode::OK).await;
    assert!(plugins.contains("25.0% of 4"), "{plugins}");
    assert!(
        plugins.contains("p95 latency of misbehave over the last hour"),
        "{plugins}"
    );
    let plugin = page_text(&server, "/_/plugins/misbehave", &cookie, StatusCode::OK).await;
    assert!(
        plugin.contains("Errors per minute over the last hour: now ")
            && plugin.contains(", peak 1\""),
        "{plugin}"
    );
}

/// The `Set-Cookie` a response sets for the session under `name`, whole.
fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

#[tokio::test]
async fn over_https_and_http2_the_session_cookie_is_secure_and_host_bound() {
    let server = crate::front_door::HttpsServer::start(&[
        ("PLINTH_ADMIN_EMAIL", EMAIL),
        ("PLINTH_ADMIN_PASSWORD", PASSWORD),
    ])
    .await;
    let (client, base) = (&server.client, &server.base);
    let signed_in = client
        .post(format!("{base}/_/sign-in"))
        .header("origin", base.as_str())
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.version(), reqwest::Version::HTTP_2);
    let set = set_cookie(signed_in.headers(), "__Host-plinth_session")
        .unwrap_or_else(|| panic!("{:?}", signed_in.headers()))
        .to_string();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = client
        .get(format!("{base}/_/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_of(&page.text().await.unwrap());
    // The plain name is not a session here: another service on this host could set it.
    let plain = cookie.replace("__Host-plinth_session", "plinth_session");
    let refused = client
        .get(format!("{base}/_/"))
        .header("cookie", &plain)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    // A form from this origin works over HTTP/2 (the host is in the authority), one from
    // another does not.
    let post = |origin: &'static str| {
        let (client, base, cookie, csrf) = (client, base.clone(), cookie.clone(), csrf.clone());
        async move {
            let origin = if origin.is_empty() {
                base.clone()
            } else {
                origin.to_string()
            };
            client
                .post(format!("{base}/_/sign-out"))
                .header("cookie", cookie)
                .header("origin", origin)
                .form(&[("_csrf", csrf)])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post("https://evil.example").await.status(),
        StatusCode::FORBIDDEN
    );
    let out = post("").await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let removed = set_cookie(out.headers(), "__Host-plinth_session").unwrap();
    assert!(
        removed.contains("Max-Age=0") && removed.contains("Secure"),
        "{removed}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_that_terminates_tls_the_cookie_is_secure() {
    // The test client stands in for the proxy, at 127.0.0.1.
    let server = Server::start_fresh(Options {
        args: vec!["--trusted-proxies".into(), "127.0.0.1/32".into()],
        ..with_admin()
    });
    let sign_in_via = |proto: &'static str| {
        let server = &server;
        async move {
            browser()
                .post(format!("{}/_/sign-in", server.base))
                .header("origin", server.base.as_str())
                .header("x-forwarded-proto", proto)
                .form(&[("email", EMAIL), ("password", PASSWORD)])
                .send()
                .await
                .unwrap()
        }
    };
    let reply = sign_in_via("https").await;
    let set = set_cookie(reply.headers(), "__Host-plinth_session")
        .unwrap_or_else(|| panic!("{:?}", reply.headers()));
    assert!(set.contains("Secure") && set.contains("Path=/"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = browser()
        .get(format!("{}/_/", server.base))
        .header("x-forwarded-proto", "https")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // The proxy's plain-HTTP side gets the plain cookie, as before.
    let reply = sign_in_via("http").await;
    assert!(session_cookie(reply.headers()).is_some());

    // Without trusting the peer, its header is the client's own word and changes nothing.
    let untrusted = Server::start_fresh(with_admin());
    let reply = browser()
        .post(format!("{}/_/sign-in", untrusted.base))
        .header("origin", untrusted.base.as_str())
        .header("x-forwarded-proto", "https")
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(set_cookie(reply.headers(), "__Host-plinth_session").is_none());
    assert!(session_cookie(reply.headers()).is_some());
}

#[tokio::test]
async fn a_plugin_never_sees_the_session_cookie_and_cannot_set_it() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::PlainHttp).await;
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let token = cookie.split_once('=').unwrap().1.to_string();
    // The browser sends it with a plugin's request too (under HTTPS its path is `/`).
    let seen = browser()
        .get(format!("{}/plain/headers", server.base))
        .header(
            "cookie",
            format!("theme=dark; __Host-plinth_session={token}; {cookie}"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(seen.contains("cookie: theme=dark"), "{seen}");
    assert!(!seen.contains(&token), "the plugin saw the session: {seen}");
    // Nor may a plugin plant or clear it.
    let answered = browser()
        .get(format!("{}/plain/set-cookie", server.base))
        .header(
            "x-set-cookie",
            "__Host-plinth_session=planted; Path=/; Secure",
        )
        .header("x-set-cookie", "plinth_session=; Max-Age=0; Path=/_/")
        .header("x-set-cookie", "cart=3; Path=/")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    let set: Vec<&str> = answered
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["cart=3; Path=/"]);
    // The dashboard still takes the cookie.
    assert_eq!(
        get_page(&server, "/_/", Some(&cookie)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_plugin_is_deleted_from_its_page_once_confirmed_and_purged_only_when_asked() {
    let server = Server::start_fresh(with_admin());
    server.deploy_guest(Guest::KvPlain).await;
    server
        .request(
            reqwest::Method::PUT,
            "/kv-plain/b/k",
            None,
            Some(b"kept".to_vec()),
        )
        .await;
    let cookie = sign_in(&server, &[("email", EMAIL), ("password", PASSWORD)]).await;
    let page = page_text(&server, "/_/plugins/kv-plain", &cookie, StatusCode::OK).await;
    let csrf = csrf_of(&page);
    let delete = |fields: &'static [(&'static str, &'static str)]| {
        let (server, cookie, csrf) = (&server, cookie.clone(), csrf.clone());
        async move {
            let mut all = vec![("_csrf", csrf.as_str())];
            all.extend_from_slice(fields);
            post_form(server, "/_/plugins/kv-plain/delete", Some(&cookie), &all).await
        }
    };
    assert_eq!(delete(&[]).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/kv-plain/b/k").await.status, StatusCode::OK);
    let deleted = delete(&[("confirm", "yes")]).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(deleted.headers()["location"], "/_/plugins");
    assert_eq!(
        server.get("/kv-plain/b/k").await.status,
        StatusCode::NOT_FOUND
    );
    let data = "/admin/plugins/kv-plain/kv";
    let entries = server.admin(reqwest::Method::GET, data).await.json()["entries"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "the data stays");
    // Deployed again, it finds its data; deleted with purge, the data goes too.
    server.deploy_guest(Guest::KvPlain).await;
    assert_eq!(server.get("/kv-plain/b/k").await.text(), "kept");
    let purged = delete(&[("confirm", "yes"), ("purge", "true")]).await;
    assert_eq!(purged.status(), StatusCode::SEE_OTHER);
    let entries = server.admin(reqwest::Method::GET, data).await.json()["entries"].clone();
    assert_eq!(entries, serde_json::json!([]));
    let audit = server
        .admin(reqwest::Method::GET, "/admin/audit?target=kv-plain")
        .await
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "plugin.purge",
            "plugin.delete",
            "plugin.deploy",
            "plugin.delete",
            "plugin.deploy"
        ]
    );
}
