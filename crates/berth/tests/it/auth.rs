//! Access control over HTTP: open mode, challenges, the token service, the admin API and
//! every refusal the issue lists (each its own test).

use base64::Engine;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const ADMIN_PASSWORD: &str = "admin-pass-123";

pub(crate) fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

pub(crate) fn admin() -> String {
    basic("admin", ADMIN_PASSWORD)
}

/// Runs the `berth` CLI against `s` as the admin (BERTH_USERNAME/BERTH_PASSWORD);
/// returns whether it succeeded, its standard output and its standard error.
pub(crate) fn admin_cli(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BERTH)
        .args(args)
        .env("BERTH_SERVER", &s.base)
        .env("BERTH_USERNAME", "admin")
        .env("BERTH_PASSWORD", ADMIN_PASSWORD)
        .env("BERTH_LOGIN_FILE", "/nonexistent/berth-login.json")
        .output()
        .expect("run berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// berth with credentials required (an `admin` account with a known password).
pub(crate) fn secured() -> Server {
    let mut s = Server::start_with(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    s.authorization = Some(admin());
    s
}

pub(crate) async fn api(
    s: &Server,
    method: Method,
    path: &str,
    auth: &str,
    body: Value,
) -> Response {
    s.http
        .request(method, s.url(path))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

pub(crate) async fn add_user(s: &Server, name: &str, password: &str) {
    let res = api(
        s,
        Method::POST,
        "/api/v1/users",
        &admin(),
        json!({"name": name, "password": password}),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

pub(crate) async fn add_member(s: &Server, ns: &str, account: &str, role: &str) {
    let res = api(
        s,
        Method::PUT,
        &format!("/api/v1/namespaces/{ns}/members/{account}"),
        &admin(),
        json!({"role": role}),
    )
    .await;
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
}

/// Makes a namespace public (anonymous pull).
pub(crate) async fn set_public(s: &Server, ns: &str) {
    let res = api(
        s,
        Method::PUT,
        &format!("/api/v1/namespaces/{ns}"),
        &admin(),
        json!({"visibility": "public"}),
    )
    .await;
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
}

async fn add_robot(s: &Server, name: &str, pattern: &str, expires_at: Option<i64>) -> String {
    let res = api(
        s,
        Method::POST,
        "/api/v1/robots",
        &admin(),
        json!({"name": name, "grants": [{"repositories": pattern, "actions": ["pull", "push"]}], "expires_at": expires_at}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

/// Asks the token service for `scopes` with `auth` (None: anonymous); returns the response.
pub(crate) async fn token_response(s: &Server, auth: Option<&str>, scopes: &[&str]) -> Response {
    let mut url = format!("{}/token?service=berth", s.base);
    for scope in scopes {
        url.push_str(&format!("&scope={scope}"));
    }
    let req = s.http.get(url);
    let req = match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    };
    req.send().await.unwrap()
}

pub(crate) async fn token(s: &Server, auth: Option<&str>, scopes: &[&str]) -> String {
    let res = token_response(s, auth, scopes).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    body["token"].as_str().unwrap().to_owned()
}

/// `POST /token` with an OAuth2 form; the JSON answer of a 200.
async fn post_token_form(s: &Server, form: String) -> Value {
    let res = s
        .http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A request without credentials.
async fn anon(s: &Server, method: Method, path: &str) -> Response {
    s.http.request(method, s.url(path)).send().await.unwrap()
}

/// The `WWW-Authenticate` header of a response that must carry one.
fn challenge(res: &Response) -> String {
    header(res, "www-authenticate").expect("a WWW-Authenticate challenge")
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `access` claim of a token (its payload decoded without verification).
fn access_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["access"].clone()
}

pub(crate) async fn with_auth(s: &Server, method: Method, path: &str, auth: &str) -> Response {
    s.http
        .request(method, s.url(path))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn loopback_without_accounts_runs_open_until_the_first_account() {
    let s = Server::start();
    let res = anon(&s, Method::GET, "/v2/").await;
    assert_eq!(res.status(), 200);
    s.push_blob("team/app", b"open mode").await;
    let res = s
        .http
        .post(s.url("/api/v1/users"))
        .body(json!({"name": "ann", "password": "ann-pass-123"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = anon(&s, Method::GET, "/v2/").await;
    assert_eq!(res.status(), 401, "the first account ends open mode");
}

#[tokio::test]
async fn base_challenge_names_the_realm_and_service() {
    let s = secured();
    let res = anon(&s, Method::GET, "/v2/").await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res),
        format!("Bearer realm=\"{}/token\",service=\"berth\"", s.base)
    );
    assert_eq!(error_code(res).await, "UNAUTHORIZED");
    let res = anon(&s, Method::GET, "/v2/team/app/tags/list").await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).ends_with(",scope=\"repository:team/app:pull\""));
}

#[tokio::test]
async fn a_token_from_the_token_service_opens_the_api() {
    let s = secured();
    let t = token(&s, Some(&admin()), &["repository:team/app:pull,push"]).await;
    assert_eq!(
        access_of(&t),
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    let res = with_auth(&s, Method::GET, "/v2/", &bearer(&t)).await;
    assert_eq!(res.status(), 200);
    let res = with_auth(&s, Method::POST, "/v2/team/app/blobs/uploads/", &bearer(&t)).await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn oauth_password_grant_returns_a_refresh_token_that_works() {
    let s = secured();
    let form = format!(
        "grant_type=password&username=admin&password={ADMIN_PASSWORD}&service=berth&scope=repository:team/app:pull&access_type=offline&client_id=test"
    );
    let body = post_token_form(&s, form).await;
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service=berth&scope=repository:team/app:pull"
    );
    let body = post_token_form(&s, form).await;
    let t = body["access_token"].as_str().unwrap();
    assert_eq!(access_of(t)[0]["actions"], json!(["pull"]));
    // A refresh token is not an access token.
    let res = with_auth(&s, Method::GET, "/v2/", &bearer(&refresh)).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn wrong_password_gets_no_token() {
    let s = secured();
    let res = token_response(&s, Some(&basic("admin", "wrong-password")), &[]).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "UNAUTHORIZED");
}

#[tokio::test]
async fn unsigned_alg_none_token_is_refused() {
    let s = secured();
    let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let forged = format!(
        "{}.{}.",
        enc(json!({"alg": "none", "typ": "JWT"})),
        enc(
            json!({"iss": "berth", "sub": "admin", "aud": "berth", "exp": 4102444800u64,
                   "access": [{"type": "repository", "name": "team/app", "actions": ["push"]}]})
        )
    );
    let res = with_auth(
        &s,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        &bearer(&forged),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn token_signed_by_another_registry_is_refused() {
    let s = secured();
    let other = secured();
    let t = token(&other, Some(&admin()), &["repository:team/app:pull,push"]).await;
    let res = with_auth(&s, Method::GET, "/v2/team/app/tags/list", &bearer(&t)).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn token_for_another_service_is_refused() {
    let s = secured();
    // Same signing key, different service: only the audience differs.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        s.data.join("token-signing-key.der"),
        data.join("token-signing-key.der"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("berth.toml"),
        "[auth]\nservice = \"other\"\n",
    )
    .unwrap();
    let config = tmp.path().join("berth.toml");
    let other = Server::start_on_with(
        &data,
        "127.0.0.1:0",
        &[
            ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("BERTH_CONFIG", config.to_str().unwrap()),
        ],
    );
    let res = other
        .http
        .get(format!(
            "{}/token?service=other&scope=repository:team/app:pull",
            other.base
        ))
        .header("authorization", admin())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = with_auth(&other, Method::GET, "/v2/team/app/tags/list", &bearer(&t)).await;
    assert_eq!(res.status(), 404, "the token works where it was issued");
    let res = with_auth(&s, Method::GET, "/v2/team/app/tags/list", &bearer(&t)).await;
    assert_eq!(res.status(), 401);
    let res = token_response(&s, Some(&admin()), &[]).await;
    assert_eq!(res.status(), 200);
    let res = s
        .http
        .get(format!("{}/token?service=other", s.base))
        .header("authorization", admin())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        400,
        "no tokens for a service that is not ours"
    );
}

#[tokio::test]
async fn token_for_one_repository_does_not_open_another() {
    let s = secured();
    let t = token(&s, Some(&admin()), &["repository:team/a:pull,push"]).await;
    let res = with_auth(&s, Method::GET, "/v2/team/b/tags/list", &bearer(&t)).await;
    assert_eq!(res.status(), 401);
    let challenge = challenge(&res);
    assert!(
        challenge.contains("scope=\"repository:team/b:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_eq!(error_code(res).await, "DENIED");
}

#[tokio::test]
async fn pull_only_token_can_neither_push_nor_delete() {
    let s = secured();
    let (digest, _) = s.push_image("team/app", "v1", b"layer").await;
    let t = token(&s, Some(&admin()), &["repository:team/app:pull"]).await;
    let res = with_auth(&s, Method::GET, "/v2/team/app/manifests/v1", &bearer(&t)).await;
    assert_eq!(res.status(), 200);
    let res = with_auth(&s, Method::POST, "/v2/team/app/blobs/uploads/", &bearer(&t)).await;
    assert_eq!(res.status(), 401);
    let path = format!("/v2/team/app/manifests/{digest}");
    let res = with_auth(&s, Method::DELETE, &path, &bearer(&t)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "DENIED");
    let res = s.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), 200, "the refused delete changed nothing");
}

#[tokio::test]
async fn token_requests_cannot_escalate_scope() {
    let s = secured();
    add_user(&s, "ann", "ann-pass-123").await;
    add_member(&s, "team", "ann", "reader").await;
    let t = token(
        &s,
        Some(&basic("ann", "ann-pass-123")),
        &[
            "repository:team/app:pull,push,delete",
            "repository:other/app:pull",
        ],
    )
    .await;
    assert_eq!(
        access_of(&t),
        json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
}

#[tokio::test]
async fn reader_with_basic_credentials_is_denied_push() {
    let s = secured();
    add_user(&s, "ann", "ann-pass-123").await;
    add_member(&s, "team", "ann", "reader").await;
    let ann = basic("ann", "ann-pass-123");
    let res = with_auth(&s, Method::GET, "/v2/team/app/tags/list", &ann).await;
    assert_eq!(
        res.status(),
        404,
        "pull is allowed (the repository is empty)"
    );
    let res = with_auth(&s, Method::POST, "/v2/team/app/blobs/uploads/", &ann).await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "DENIED");
}

#[tokio::test]
async fn robot_pushes_with_its_secret_until_revoked() {
    let s = secured();
    let secret = add_robot(&s, "ci", "ci/*", None).await;
    let robot = basic("ci", &secret);
    let t = token(&s, Some(&robot), &["repository:ci/app:pull,push"]).await;
    let res = with_auth(&s, Method::POST, "/v2/ci/app/blobs/uploads/", &bearer(&t)).await;
    assert_eq!(res.status(), 202);
    let res = with_auth(&s, Method::POST, "/v2/prod/app/blobs/uploads/", &robot).await;
    assert_eq!(res.status(), 403, "outside its grants");
    let res = api(
        &s,
        Method::POST,
        "/api/v1/accounts/ci/revoke",
        &admin(),
        json!({}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = token_response(&s, Some(&robot), &["repository:ci/app:pull"]).await;
    assert_eq!(res.status(), 401, "a revoked robot gets no token");
    let res = with_auth(&s, Method::POST, "/v2/ci/app/blobs/uploads/", &bearer(&t)).await;
    assert_eq!(res.status(), 401, "its earlier token stops working too");
    let res = with_auth(&s, Method::POST, "/v2/ci/app/blobs/uploads/", &robot).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn expired_robot_is_refused() {
    let s = secured();
    let secret = add_robot(&s, "old", "**", Some(1_000_000_000)).await;
    let res = token_response(&s, Some(&basic("old", &secret)), &[]).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn mount_without_pull_on_the_source_falls_back_to_an_upload() {
    let s = secured();
    let digest = s.push_blob("secret/app", b"private layer").await;
    add_user(&s, "ann", "ann-pass-123").await;
    add_member(&s, "team", "ann", "writer").await;
    let ann = basic("ann", "ann-pass-123");
    let path = format!("/v2/team/app/blobs/uploads/?mount={digest}&from=secret/app");
    let res = with_auth(&s, Method::POST, &path, &ann).await;
    assert_eq!(res.status(), 202, "no mount, a plain upload session");
    let res = with_auth(
        &s,
        Method::HEAD,
        &format!("/v2/team/app/blobs/{digest}"),
        &ann,
    )
    .await;
    assert_eq!(res.status(), 404, "the blob did not become readable");
    // Without `from` (automatic mount) the same holds.
    let path = format!("/v2/team/app/blobs/uploads/?mount={digest}");
    let res = with_auth(&s, Method::POST, &path, &ann).await;
    assert_eq!(res.status(), 202);
    // With pull on the source the mount happens.
    add_member(&s, "secret", "ann", "reader").await;
    let path = format!("/v2/team/app/blobs/uploads/?mount={digest}&from=secret/app");
    let res = with_auth(&s, Method::POST, &path, &ann).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_pull() {
    let s = secured();
    s.push_blob("team/app", b"a").await;
    s.push_blob("secret/app", b"b").await;
    add_user(&s, "ann", "ann-pass-123").await;
    add_member(&s, "team", "ann", "reader").await;
    let res = with_auth(
        &s,
        Method::GET,
        "/v2/_catalog",
        &basic("ann", "ann-pass-123"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["team/app"]));
    let res = s.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["secret/app", "team/app"]));
}

#[tokio::test]
async fn anonymous_pulls_public_namespaces_only() {
    let s = secured();
    s.push_image("pub/app", "v1", b"public").await;
    s.push_image("priv/app", "v1", b"private").await;
    set_public(&s, "pub").await;
    let t = token(
        &s,
        None,
        &["repository:pub/app:pull", "repository:priv/app:pull"],
    )
    .await;
    assert_eq!(
        access_of(&t),
        json!([{"type": "repository", "name": "pub/app", "actions": ["pull"]}])
    );
    let res = with_auth(&s, Method::GET, "/v2/pub/app/manifests/v1", &bearer(&t)).await;
    assert_eq!(res.status(), 200);
    let res = with_auth(&s, Method::GET, "/v2/priv/app/manifests/v1", &bearer(&t)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "UNAUTHORIZED");
    let res = s
        .http
        .get(s.url("/v2/pub/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "no token needed at all for a public pull"
    );
    let res = anon(&s, Method::POST, "/v2/pub/app/blobs/uploads/").await;
    assert_eq!(res.status(), 401, "anonymous push is refused");
}

/// Sends `GET path` as written (HTTP clients normalise `..` away) and returns the status
/// line and body.
async fn raw_get(s: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        admin()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn encoded_slashes_and_dot_segments_in_names_are_refused() {
    let s = secured();
    for path in [
        "/v2/team%2Fapp/tags/list",
        "/v2/team/../app/tags/list",
        "/v2/team/%2E%2E/app/tags/list",
    ] {
        let res = raw_get(&s, path).await;
        assert!(res.starts_with("HTTP/1.1 400"), "{path}: {res}");
        assert!(res.contains("NAME_INVALID"), "{path}: {res}");
    }
}

#[tokio::test]
async fn oversized_credentials_are_refused() {
    let s = secured();
    let huge = basic("admin", &"x".repeat(10_000));
    let res = with_auth(&s, Method::GET, "/v2/", &huge).await;
    assert_eq!(res.status(), 401);
    let res = token_response(&s, Some(&basic(&"u".repeat(10_000), "p")), &[]).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn admin_api_refuses_non_admins() {
    let s = secured();
    add_user(&s, "ann", "ann-pass-123").await;
    let res = api(
        &s,
        Method::POST,
        "/api/v1/users",
        &basic("ann", "ann-pass-123"),
        json!({"name": "bob", "password": "bob-pass-123"}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = anon(&s, Method::GET, "/api/v1/accounts").await;
    assert_eq!(res.status(), 401);
    let res = api(&s, Method::GET, "/api/v1/accounts", &admin(), json!({})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(account_names(&body), ["admin", "ann"]);
}

#[tokio::test]
async fn required_auth_creates_an_admin_with_a_password_printed_once() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "warn")
        .env("BERTH_AUTH_REQUIRED", "true")
        .env_remove("BERTH_ADMIN_PASSWORD")
        .env_remove("BERTH_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let password = line
        .trim()
        .rsplit_once(" with password ")
        .map(|(_, p)| p.to_owned())
        .unwrap_or_else(|| panic!("no password line: {line:?}"));
    let mut addr = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut addr)
        .unwrap();
    let addr = addr
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let res = http.get(format!("http://{addr}/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 401, "required: no open mode on loopback");
    let res = http
        .get(format!("http://{addr}/v2/"))
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the printed password works");
    let _ = child.kill();
    let _ = child.wait();
}
