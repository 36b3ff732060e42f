//! Rate limits over HTTP: pull budgets counted on manifest GETs (exact headers, HEAD free,
//! 429 with Retry-After, reset), per-account budgets, X-Forwarded-For only from trusted
//! proxies, and the lockout after repeated failed logins.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::Value;

use crate::auth::{
    ADMIN_PASSWORD, add_member, add_user, admin, basic, bearer, set_public, token, token_response,
    with_auth,
};
use crate::harness::*;

const MANIFEST: &str = "/v2/lib/app/manifests/v1";

/// berth with `config` as its `berth.toml` and extra environment; the config's directory
/// lives as long as the returned guard.
fn start(config: &str, env: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut all = vec![("BERTH_CONFIG", path.as_str())];
    all.extend_from_slice(env);
    (Server::start_with(&all), dir)
}

/// An open-mode (loopback, no accounts) berth with `lib/app:v1` pushed.
async fn open_with(config: &str) -> (Server, tempfile::TempDir) {
    let (s, dir) = start(config, &[]);
    s.push_image("lib/app", "v1", b"layer").await;
    (s, dir)
}

/// A berth that requires credentials, with `lib/app:v1` pushed and `lib` public.
async fn secured_with(config: &str) -> (Server, tempfile::TempDir) {
    let (mut s, dir) = start(config, &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    s.authorization = Some(admin());
    s.push_image("lib/app", "v1", b"layer").await;
    set_public(&s, "lib").await;
    (s, dir)
}

/// `method` on the test manifest with optional credentials and `X-Forwarded-For`.
async fn pull(s: &Server, method: Method, auth: Option<&str>, xff: Option<&str>) -> Response {
    let mut req = s
        .http
        .request(method, s.url(MANIFEST))
        .header("accept", OCI_MANIFEST);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

async fn get(s: &Server, auth: Option<&str>) -> Response {
    pull(s, Method::GET, auth, None).await
}

fn remaining(res: &Response) -> Option<String> {
    header(res, "ratelimit-remaining")
}

/// A 429 TOOMANYREQUESTS: its `Retry-After` in seconds and its message.
async fn too_many(res: Response) -> (u64, String) {
    assert_eq!(res.status(), 429);
    let retry: u64 = header(&res, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    (
        retry,
        body["errors"][0]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn counted_pulls_carry_exact_headers() {
    let (s, _dir) = open_with("[rate_limit]\nanonymous = \"3/1h\"\n").await;
    for left in [2, 1, 0] {
        let res = get(&s, None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "ratelimit-limit").unwrap(), "3;w=3600");
        assert_eq!(remaining(&res).unwrap(), format!("{left};w=3600"));
    }
}

#[tokio::test]
async fn head_requests_are_free() {
    let (s, _dir) = open_with("[rate_limit]\nanonymous = \"3/1h\"\n").await;
    for _ in 0..5 {
        let res = pull(&s, Method::HEAD, None, None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(remaining(&res), None, "a HEAD is not counted");
    }
    assert_eq!(remaining(&get(&s, None).await).unwrap(), "2;w=3600");
    pull(&s, Method::HEAD, None, None).await;
    assert_eq!(remaining(&get(&s, None).await).unwrap(), "1;w=3600");
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after() {
    let (s, _dir) = open_with("[rate_limit]\nanonymous = \"3/1h\"\n").await;
    for _ in 0..3 {
        assert_eq!(get(&s, None).await.status(), 200);
    }
    let res = get(&s, None).await;
    assert_eq!(remaining(&res).unwrap(), "0;w=3600");
    let (retry, message) = too_many(res).await;
    // One pull comes back every hour / 3.
    assert!((1190..=1200).contains(&retry), "Retry-After {retry}");
    assert!(message.contains("3/1h"), "{message}");
    assert!(
        message.contains("per anonymous client address"),
        "{message}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
    // A refused pull changed nothing: HEAD still answers, the wait did not grow.
    assert_eq!(pull(&s, Method::HEAD, None, None).await.status(), 200);
    let (again, _) = too_many(get(&s, None).await).await;
    assert!(again <= retry, "{again} > {retry}");
}

#[tokio::test]
async fn limits_reset_after_the_window() {
    let (s, _dir) = open_with("[rate_limit]\nanonymous = \"2/2s\"\n").await;
    assert_eq!(remaining(&get(&s, None).await).unwrap(), "1;w=2");
    assert_eq!(remaining(&get(&s, None).await).unwrap(), "0;w=2");
    let (retry, _) = too_many(get(&s, None).await).await;
    assert_eq!(retry, 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = get(&s, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        remaining(&res).unwrap(),
        "1;w=2",
        "the whole budget is back"
    );
}

#[tokio::test]
async fn accounts_have_budgets_apart_from_anonymous_clients() {
    let config = "[rate_limit]\nanonymous = \"1/1h\"\nauthenticated = \"2/1h\"\n";
    let (s, _dir) = secured_with(config).await;
    add_user(&s, "ann", "ann-pass-123").await;
    let res = get(&s, None).await;
    assert_eq!(header(&res, "ratelimit-limit").unwrap(), "1;w=3600");
    assert_eq!(remaining(&res).unwrap(), "0;w=3600");
    too_many(get(&s, None).await).await;

    // Basic credentials and bearer tokens are counted per account, each its own budget.
    let res = get(&s, Some(&admin())).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ratelimit-limit").unwrap(), "2;w=3600");
    assert_eq!(remaining(&res).unwrap(), "1;w=3600");
    let t = token(
        &s,
        Some(&basic("ann", "ann-pass-123")),
        &["repository:lib/app:pull"],
    )
    .await;
    let res = get(&s, Some(&bearer(&t))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(remaining(&res).unwrap(), "1;w=3600");
    assert_eq!(
        remaining(&get(&s, Some(&admin())).await).unwrap(),
        "0;w=3600"
    );
    let (_, message) = too_many(get(&s, Some(&admin())).await).await;
    assert!(message.contains("account admin"), "{message}");
    assert!(
        message.contains("2/1h manifest GETs per account"),
        "{message}"
    );
    assert_eq!(get(&s, Some(&bearer(&t))).await.status(), 200);
}

#[tokio::test]
async fn unlimited_accounts_and_roles_are_not_counted() {
    let config = "[rate_limit]\nauthenticated = \"1/1h\"\nunlimited = [\"ci\"]\n\
                  unlimited_roles = [\"maintainer\"]\n";
    let (s, _dir) = secured_with(config).await;
    for (name, role) in [("ci", "reader"), ("mia", "maintainer"), ("rita", "reader")] {
        add_user(&s, name, "pass-12345").await;
        add_member(&s, "lib", name, role).await;
    }
    for name in ["ci", "mia"] {
        for _ in 0..3 {
            let res = get(&s, Some(&basic(name, "pass-12345"))).await;
            assert_eq!(res.status(), 200);
            assert_eq!(remaining(&res), None, "{name} is not counted");
        }
    }
    let rita = basic("rita", "pass-12345");
    assert_eq!(remaining(&get(&s, Some(&rita)).await).unwrap(), "0;w=3600");
    too_many(get(&s, Some(&rita)).await).await;
    // Anonymous pulls have no limit configured.
    let res = get(&s, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(remaining(&res), None);
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let (s, _dir) = open_with("[rate_limit]\nanonymous = \"1/1h\"\n").await;
    let res = pull(&s, Method::GET, None, Some("10.0.0.1")).await;
    assert_eq!(res.status(), 200);
    let res = pull(&s, Method::GET, None, Some("10.0.0.2")).await;
    let (_, message) = too_many(res).await;
    assert!(
        message.contains("127.0.0.1"),
        "both share the peer's budget: {message}"
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_behind_a_trusted_proxy() {
    let config = "[rate_limit]\nanonymous = \"1/1h\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let (s, _dir) = open_with(config).await;
    for client in ["10.0.0.1", "10.0.0.2"] {
        let res = pull(&s, Method::GET, None, Some(client)).await;
        assert_eq!(res.status(), 200, "{client} has its own budget");
        assert_eq!(remaining(&res).unwrap(), "0;w=3600");
    }
    let res = pull(&s, Method::GET, None, Some("10.0.0.1")).await;
    let (_, message) = too_many(res).await;
    assert!(message.contains("10.0.0.1"), "{message}");
    // The proxy's own requests (no header) are counted for the proxy.
    assert_eq!(get(&s, None).await.status(), 200);
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_out() {
    let s = Server::start_with(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    add_user(&s, "ann", "ann-pass-123").await;
    for _ in 0..5 {
        let res = token_response(&s, Some(&basic("ann", "wrong")), &[]).await;
        assert_eq!(res.status(), 401);
    }
    let right = basic("ann", "ann-pass-123");
    let (retry, message) = too_many(token_response(&s, Some(&right), &[]).await).await;
    assert!((890..=900).contains(&retry), "Retry-After {retry}");
    assert!(message.contains("ann"), "{message}");
    // Locked everywhere credentials are checked: Basic on /v2 and the OAuth2 form.
    too_many(with_auth(&s, Method::GET, "/v2/", &right).await).await;
    let res = s
        .http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=ann&password=ann-pass-123&service=berth")
        .send()
        .await
        .unwrap();
    too_many(res).await;
    // Other accounts from the same address still log in.
    assert_eq!(token_response(&s, Some(&admin()), &[]).await.status(), 200);
}

/// `berth serve --print-config` with `config` as its configuration file.
fn print_config(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(BERTH)
        .args(["serve", "--print-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn bad_rate_limit_values_are_refused_at_start() {
    for (toml, says) in [
        ("anonymous = \"100/6x\"", "[rate_limit] anonymous"),
        ("authenticated = \"0/1h\"", "at least 1"),
        (
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "[rate_limit] trusted_proxies",
        ),
        ("unlimited_roles = [\"owner\"]", "not a role"),
        ("per_ip = \"1/1h\"", "unknown field"),
    ] {
        let out = print_config(&format!("[rate_limit]\n{toml}\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml} was accepted");
        assert!(stderr.contains(says), "{toml}: {stderr}");
    }
}

#[test]
fn print_config_shows_the_rate_limits() {
    let out = print_config(
        "[rate_limit]\nanonymous = \"100/360m\"\nunlimited = [\"ci-robot\"]\n\
         unlimited_roles = [\"maintainer\", \"registry_admin\"]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    for line in [
        "[rate_limit]",
        "anonymous = \"100/6h\"",
        "unlimited = [\"ci-robot\"]",
        "unlimited_roles = [\"maintainer\", \"registry_admin\"]",
        "trusted_proxies = [\"127.0.0.1/32\"]",
    ] {
        assert!(printed.contains(line), "{line} missing from\n{printed}");
    }
    assert!(!printed.contains("authenticated"), "unset stays unset");
}
