//! The event stream over the admin API: pull records per digest and client, the audit log
//! (tag moves, pulls, policy denials, failed logins) and who may read it.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{add_user, admin, api, basic, secured, with_auth};
use crate::harness::*;

/// A client whose connections come from `source` (any 127.x address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().ok())
        .build()
        .unwrap()
}

/// Pulls `repo:tag` (GET of the manifest) from `source`; returns the digest served.
async fn pull_from(s: &Server, client: &reqwest::Client, repo: &str, tag: &str) -> String {
    let mut req = client
        .get(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .header("user-agent", "fleet-node/1.0");
    if let Some(a) = &s.authorization {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    header(&res, "docker-content-digest").unwrap()
}

async fn get_json(s: &Server, path: &str) -> Value {
    let res = s.req(Method::GET, path).send().await.unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Checks `path` is refused as a bad request whose message mentions `needle`.
async fn refused(s: &Server, path: &str, needle: &str) {
    let res = s.req(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(body.contains(needle), "{body}");
}

/// Polls `path` until `done` holds (events are written once a second); at most 10 s.
async fn poll(s: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let v = get_json(s, path).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never got there: {}", get_json(s, path).await);
}

#[tokio::test]
async fn pulls_of_two_digests_from_two_clients_are_shown_apart() {
    let s = secured();
    let (old, _) = s.push_image("payments/api", "latest", b"old code").await;
    let node2 = client_from("127.0.0.2");
    let node3 = client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(pull_from(&s, &node2, "payments/api", "latest").await, old);
    }
    let (new, _) = s.push_image("payments/api", "latest", b"new code").await;
    for _ in 0..2 {
        assert_eq!(pull_from(&s, &node3, "payments/api", "latest").await, new);
    }
    // A pull of another tag is not counted here.
    s.push_image("payments/api", "canary", b"canary").await;
    pull_from(&s, &node2, "payments/api", "canary").await;

    let path = "/api/v1/tag-pulls?repository=payments/api&tag=latest&since=1h";
    let v = poll(&s, path, |v| {
        v["digests"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    type Served = (String, u64, Vec<(String, u64)>);
    let summary: Vec<Served> = v["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let clients = d["clients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["client"].as_str().unwrap().to_owned(),
                        c["pulls"].as_u64().unwrap(),
                    )
                })
                .collect();
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["pulls"].as_u64().unwrap(),
                clients,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (new.clone(), 2, vec![("127.0.0.3".to_owned(), 2)]),
            (old.clone(), 3, vec![("127.0.0.2".to_owned(), 3)]),
        ],
        "newest digest first, each with its own client: {v}"
    );
    let c = &v["digests"][0]["clients"][0];
    assert_eq!(c["account"], "admin");
    assert_eq!(c["user_agent"], "fleet-node/1.0");

    // The same pulls in the audit log: one event per digest and client, counted.
    let pulls = get_json(&s, "/api/v1/audit?repository=payments/api&kind=pull").await;
    let mut seen: Vec<(String, String, u64)> = pulls["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["tag"].as_str().unwrap().to_owned(),
                e["actor"]["client"].as_str().unwrap().to_owned(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("canary".to_owned(), "127.0.0.2".to_owned(), 1),
            ("latest".to_owned(), "127.0.0.2".to_owned(), 3),
            ("latest".to_owned(), "127.0.0.3".to_owned(), 2),
        ]
    );

    // A `since` after the pulls shows none; a bad `since` is a clear 400.
    let v = get_json(
        &s,
        "/api/v1/tag-pulls?repository=payments/api&tag=latest&since=2100-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(v["digests"], json!([]));
    refused(
        &s,
        "/api/v1/tag-pulls?repository=payments/api&tag=latest&since=yesterday-ish",
        "RFC 3339",
    )
    .await;
}

#[tokio::test]
async fn the_audit_log_records_changes_in_order_with_their_actor() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "v1", b"first").await;
    let (b, _) = s.push_image("team/app", "v1", b"second").await;
    let res = s
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = s
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let v = get_json(&s, "/api/v1/audit?namespace=team").await;
    type Change<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let got: Vec<Change> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["tag"].as_str(),
                e["previous_digest"].as_str(),
                e["digest"].as_str(),
            )
        })
        .collect();
    let (a, b) = (Some(a.as_str()), Some(b.as_str()));
    assert_eq!(
        got,
        [
            ("delete", None, None, a),
            ("tag.deleted", Some("v1"), b, None),
            ("tag.overwritten", Some("v1"), a, b),
            ("push", Some("v1"), None, b),
            ("tag.created", Some("v1"), None, a),
            ("push", Some("v1"), None, a),
        ],
        "newest first"
    );
    for e in v["events"].as_array().unwrap() {
        assert_eq!(e["actor"]["account"], "admin");
        assert_eq!(e["actor"]["client"], "127.0.0.1");
        assert_eq!(e["namespace"], "team");
    }
    // Paging: two at a time, following next_before, gives the same six.
    let first = get_json(&s, "/api/v1/audit?namespace=team&limit=2").await;
    let before = first["next_before"].as_i64().unwrap();
    let second = get_json(
        &s,
        &format!("/api/v1/audit?namespace=team&limit=4&before={before}"),
    )
    .await;
    let ids = |v: &Value| -> Vec<i64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let all = ids(&v);
    assert_eq!([ids(&first), ids(&second)].concat(), all);
    assert_eq!(
        second["next_before"],
        Value::Null,
        "the last page offers no more"
    );
    // Filters combine: only moves.
    let moves = get_json(&s, "/api/v1/audit?namespace=team&kind=tag.overwritten").await;
    assert_eq!(moves["events"].as_array().unwrap().len(), 1);
    refused(&s, "/api/v1/audit?kind=tag.moved", "tag.overwritten").await;
}

#[tokio::test]
async fn denials_and_failed_logins_are_audited() {
    let s = secured();
    s.push_image("team/app", "v1", b"first").await;
    let rule = api(
        &s,
        Method::POST,
        "/api/v1/immutability-rules",
        &admin(),
        json!({"repositories": "team/*"}),
    )
    .await;
    assert_eq!(rule.status(), 201);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let c = s.push_blob("team/app", config).await;
    let manifest = oci_manifest(&c, config.len(), &[], None);
    let res = s
        .put_manifest("team/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(res.status(), 403);

    add_user(&s, "ann", "ann-pass-123").await;
    let ann = basic("ann", "ann-pass-123");
    let res = with_auth(&s, Method::GET, "/v2/", &basic("ann", "wrong-password")).await;
    assert_eq!(res.status(), 401);
    // ann has no role in team: deleting there is denied, and audited too.
    let res = with_auth(&s, Method::DELETE, "/v2/team/app/manifests/v1", &ann).await;
    assert_eq!(res.status(), 403);

    let v = poll(&s, "/api/v1/audit?kind=policy.denied,login.failed", |v| {
        v["events"].as_array().is_some_and(|e| e.len() == 3)
    })
    .await;
    let events = v["events"].as_array().unwrap();
    let mut kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["actor"]["account"].as_str().unwrap(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("login.failed", "ann"),
            ("policy.denied", "admin"),
            ("policy.denied", "ann")
        ]
    );
    let immutable = events
        .iter()
        .find(|e| e["actor"]["account"] == "admin")
        .unwrap();
    assert_eq!(immutable["tag"], "v1");
    assert!(
        immutable["detail"].as_str().unwrap().contains("immutable"),
        "{immutable}"
    );

    // The audit log is for registry admins, and for maintainers of the namespace asked about.
    let res = with_auth(&s, Method::GET, "/api/v1/audit", &ann).await;
    assert_eq!(res.status(), 403);
    let res = with_auth(&s, Method::GET, "/api/v1/audit?namespace=team", &ann).await;
    assert_eq!(res.status(), 403);
    crate::auth::add_member(&s, "team", "ann", "maintainer").await;
    let res = with_auth(&s, Method::GET, "/api/v1/audit?namespace=team", &ann).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["namespace"] == "team")
    );
}

#[tokio::test]
async fn pulls_counted_just_before_a_graceful_stop_are_not_lost() {
    let s = Server::start();
    s.push_image("app", "v1", b"layer").await;
    // A burst of pulls, then SIGTERM at once: the last second of counts is only in memory
    // and is written by the stop.
    for _ in 0..20 {
        let res = s
            .req(Method::GET, "/v2/app/manifests/v1")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let (data, tmp) = s.terminate();
    let s = Server::start_on(&data, "127.0.0.1:0");
    let v = get_json(&s, "/api/v1/tag-pulls?repository=app&tag=v1&since=1h").await;
    assert_eq!(v["digests"][0]["pulls"], 20, "{v}");
    drop(s);
    drop(tmp);
}
