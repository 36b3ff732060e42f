//! Tag immutability rules: a protected tag never moves to another digest and is never
//! deleted; pushing the same digest again succeeds; excepted tags stay mutable.

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{ADMIN_PASSWORD, admin_cli, secured};
use crate::harness::*;

async fn add_rule(s: &Server, body: Value) -> Value {
    let (status, rule) = s
        .send_json(Method::POST, "/api/v1/immutability-rules", &body)
        .await;
    assert_eq!(status, 201, "{rule}");
    rule
}

async fn resolve(s: &Server, repo: &str, tag: &str) -> Option<String> {
    let res = s
        .req(Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (res.status() == 200).then(|| header(&res, "docker-content-digest").unwrap())
}

/// The manifest bytes of an image with one layer, pushed untagged (by digest).
async fn image(s: &Server, repo: &str, layer: &[u8]) -> (String, Vec<u8>) {
    let (digest, bytes) = s.push_image(repo, "scratch", layer).await;
    (digest, bytes)
}

#[tokio::test]
async fn matching_tags_cannot_move_but_excepted_ones_can() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "v1", b"one").await;
    s.push_image("team/app", "latest", b"one").await;
    let rule = add_rule(
        &s,
        json!({"repositories": "team/*", "tags": ["v*", "latest"], "except": ["latest"]}),
    )
    .await;
    let (_, other) = image(&s, "team/app", b"two").await;

    let res = s.put_manifest("team/app", "v1", OCI_MANIFEST, &other).await;
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(body.contains("DENIED"), "{body}");
    assert!(body.contains("tag v1 of team/app is immutable"), "{body}");
    assert!(body.contains(&format!("rule #{}", rule["id"])), "{body}");
    assert_eq!(
        resolve(&s, "team/app", "v1").await.as_deref(),
        Some(a.as_str()),
        "unchanged"
    );

    let res = s
        .put_manifest("team/app", "latest", OCI_MANIFEST, &other)
        .await;
    assert_eq!(res.status(), 201, "latest is excepted");

    let res = s.put_manifest("team/app", "v2", OCI_MANIFEST, &other).await;
    assert_eq!(res.status(), 201, "a new immutable tag can be created");
    s.push_image("other/app", "v1", b"one").await;
    let (_, other_app) = image(&s, "other/app", b"two").await;
    let res = s
        .put_manifest("other/app", "v1", OCI_MANIFEST, &other_app)
        .await;
    assert_eq!(res.status(), 201, "the rule does not cover other/*");
}

#[tokio::test]
async fn pushing_the_same_digest_again_is_a_no_op_success() {
    let s = secured();
    let (_, bytes) = s.push_image("team/app", "v1", b"one").await;
    add_rule(&s, json!({"repositories": "**"})).await;
    let res = s.put_manifest("team/app", "v1", OCI_MANIFEST, &bytes).await;
    assert_eq!(res.status(), 201, "CI re-runs must not fail");
    let h: Value = s
        .req(
            Method::GET,
            "/api/v1/tag-history?repository=team/app&tag=v1",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["events"].as_array().unwrap().len(), 1, "no move recorded");
}

#[tokio::test]
async fn immutable_tags_cannot_be_deleted() {
    let s = secured();
    let (digest, _) = s.push_image("team/app", "v1", b"one").await;
    add_rule(&s, json!({"repositories": "team/app", "tags": ["v*"]})).await;
    let res = s
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "DENIED");
    let res = s
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "nor taken along by deleting its manifest"
    );
    assert_eq!(
        resolve(&s, "team/app", "v1").await.as_deref(),
        Some(digest.as_str())
    );
}

#[tokio::test]
async fn removing_the_rule_makes_the_tag_mutable_again() {
    let s = secured();
    s.push_image("team/app", "v1", b"one").await;
    let rule = add_rule(&s, json!({"repositories": "team/*"})).await;
    let (b, other) = image(&s, "team/app", b"two").await;
    assert_eq!(
        s.put_manifest("team/app", "v1", OCI_MANIFEST, &other)
            .await
            .status(),
        403
    );
    let res = s
        .req(
            Method::DELETE,
            &format!("/api/v1/immutability-rules/{}", rule["id"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        s.put_manifest("team/app", "v1", OCI_MANIFEST, &other)
            .await
            .status(),
        201
    );
    assert_eq!(
        resolve(&s, "team/app", "v1").await.as_deref(),
        Some(b.as_str())
    );
}

#[tokio::test]
async fn rules_are_managed_by_maintainers_of_the_namespace_only() {
    let s = secured();
    let api = |user: &str, password: &str, path: &str, body: Value| {
        s.http
            .post(s.url(path))
            .basic_auth(user, Some(password))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let res = api(
        "admin",
        ADMIN_PASSWORD,
        "/api/v1/users",
        json!({"name": "mia", "password": "mia-pass-123"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let res = s
        .req(Method::PUT, "/api/v1/namespaces/team/members/mia")
        .body(json!({"role": "writer"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let rule = json!({"repositories": "team/*"});
    let res = api(
        "mia",
        "mia-pass-123",
        "/api/v1/immutability-rules",
        rule.clone(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "a writer may not");
    let res = s
        .req(Method::PUT, "/api/v1/namespaces/team/members/mia")
        .body(json!({"role": "maintainer"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = api("mia", "mia-pass-123", "/api/v1/immutability-rules", rule)
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "a maintainer may");
    let res = api(
        "mia",
        "mia-pass-123",
        "/api/v1/immutability-rules",
        json!({"repositories": "**"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "but not for other namespaces");
    let res = api(
        "admin",
        ADMIN_PASSWORD,
        "/api/v1/immutability-rules",
        json!({"repositories": "team/*", "tags": ["bad/tag"]}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_rules() {
    let s = secured();
    let run = |args: &[&str]| {
        let (ok, out, err) = admin_cli(&s, args);
        (ok, format!("{out}{err}"))
    };
    let (ok, out) = run(&[
        "immutable",
        "add",
        "payments/*",
        "--tags",
        "v*",
        "--except",
        "latest",
    ]);
    assert!(
        ok && out.contains("added rule #1: repositories payments/*, tags v*, except latest"),
        "{out}"
    );
    let (ok, out) = run(&["immutable", "list"]);
    assert!(ok && out.contains("rule #1"), "{out}");
    let (ok, out) = run(&["immutable", "remove", "1"]);
    assert!(ok, "{out}");
    let (_, out) = run(&["immutable", "list"]);
    assert!(!out.contains("rule #1"), "{out}");
    let (ok, out) = run(&["immutable", "remove", "1"]);
    assert!(!ok && out.contains("no immutability rule #1"), "{out}");
}
