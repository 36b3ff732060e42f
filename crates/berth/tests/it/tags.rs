//! Tag history: every creation, move and deletion recorded with who, from where and when;
//! `--at` answers which digest a tag pointed to at a moment.

use reqwest::Method;
use serde_json::Value;

use crate::auth::{admin_cli, secured};
use crate::harness::*;

async fn history(s: &Server, query: &str) -> Value {
    let res = s
        .req(Method::GET, &format!("/api/v1/tag-history?{query}"))
        .header("user-agent", "history-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

#[tokio::test]
async fn every_tag_change_is_recorded_with_who_and_when() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "v1", b"first").await;
    pause().await;
    let (b, manifest_b) = s.push_image("team/app", "v1", b"second").await;
    pause().await;
    // The same digest again (a CI re-run) is not a move.
    let res = s
        .put_manifest("team/app", "v1", OCI_MANIFEST, &manifest_b)
        .await;
    assert_eq!(res.status(), 201);
    pause().await;
    let res = s
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    pause().await;
    s.push_image("team/app", "v1", b"first").await;

    let h = history(&s, "repository=team/app&tag=v1").await;
    let events = h["events"].as_array().unwrap();
    let changes: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e["previous"].as_str(), e["new"].as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            (None, Some(a.as_str())),
            (Some(b.as_str()), None),
            (Some(a.as_str()), Some(b.as_str())),
            (None, Some(a.as_str())),
        ],
        "newest first: recreated, deleted, moved, created"
    );
    for e in events {
        assert_eq!(e["account"], "admin");
        assert_eq!(e["client"], "127.0.0.1");
    }

    // `at` is inclusive of the event at that instant.
    let at = |i: usize| events[i]["at"].as_str().unwrap().to_owned();
    for (when, expected) in [
        ("2000-01-01T00:00:00Z".to_owned(), Value::Null),
        (at(3), Value::from(a.as_str())),
        (at(2), Value::from(b.as_str())),
        (at(1), Value::Null),
        (at(0), Value::from(a.as_str())),
    ] {
        let h = history(&s, &format!("repository=team/app&tag=v1&at={when}")).await;
        assert_eq!(h["digest"], expected, "at {when}");
    }
}

#[tokio::test]
async fn deleting_a_manifest_records_the_tags_it_took_along() {
    let s = secured();
    let (digest, bytes) = s.push_image("team/app", "v1", b"layer").await;
    // Tag `stable` as well, with the OCI `tag` parameter on a push by digest.
    let res = s
        .req(
            Method::PUT,
            &format!("/v2/team/app/manifests/{digest}?tag=stable"),
        )
        .header("content-type", OCI_MANIFEST)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = s
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for tag in ["v1", "stable"] {
        let h = history(&s, &format!("repository=team/app&tag={tag}")).await;
        let newest = &h["events"][0];
        assert_eq!(newest["previous"], digest.as_str(), "{tag}");
        assert!(newest["new"].is_null(), "{tag}");
    }
}

#[tokio::test]
async fn history_needs_pull_access_and_valid_input() {
    let s = secured();
    s.push_image("team/app", "v1", b"layer").await;
    let res = s
        .http
        .get(s.url("/api/v1/tag-history?repository=team/app&tag=v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "anonymous");
    let res = s
        .req(
            Method::GET,
            "/api/v1/tag-history?repository=team/app&tag=v1&at=yesterday",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("RFC 3339"));
    let res = s
        .req(
            Method::GET,
            "/api/v1/tag-history?repository=Team/App&tag=v1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_cli_shows_history_and_answers_at() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "latest", b"old").await;
    pause().await;
    let (b, _) = s.push_image("team/app", "latest", b"new").await;
    let run = |args: &[&str]| {
        let (ok, out, err) = admin_cli(&s, args);
        assert!(ok, "{err}");
        out
    };
    let out = run(&["tag", "history", "team/app", "latest"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].contains("moved") && lines[1].contains(&a[..19]) && lines[1].contains(&b[..19]),
        "{out}"
    );
    assert!(
        lines[2].contains("created")
            && lines[2].contains("admin")
            && lines[2].contains("127.0.0.1"),
        "{out}"
    );
    let out = run(&[
        "tag",
        "history",
        "team/app",
        "latest",
        "--at",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(out.contains("did not exist"), "{out}");
    let json: Value =
        serde_json::from_str(&run(&["tag", "history", "team/app", "latest", "--json"])).unwrap();
    let at = json["events"][1]["at"].as_str().unwrap().to_owned();
    let out = run(&["tag", "history", "team/app", "latest", "--at", &at]);
    assert!(out.contains(&format!("pointed to {a}")), "{out}");
}

#[tokio::test]
async fn restore_moves_a_tag_back_and_records_it() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "latest", b"good").await;
    pause().await;
    let (b, _) = s.push_image("team/app", "latest", b"bad").await;
    pause().await;
    let (ok, out, err) = admin_cli(&s, &["tag", "restore", "team/app", "latest", "--previous"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("now points to {a}")), "{out}");
    let h = history(&s, "repository=team/app&tag=latest").await;
    let newest = &h["events"][0];
    assert_eq!(newest["previous"], b.as_str());
    assert_eq!(newest["new"], a.as_str());
    assert_eq!(newest["account"], "admin", "recorded like any move");
    let (ok, _, err) = admin_cli(&s, &["tag", "restore", "team/app", "latest", "--to", &b]);
    assert!(ok, "{err}");
    let h = history(&s, "repository=team/app&tag=latest&at=2100-01-01T00:00:00Z").await;
    assert_eq!(h["digest"], b.as_str());
}

#[tokio::test]
async fn restore_is_refused_for_a_deleted_manifest_and_by_immutability() {
    let s = secured();
    let (a, _) = s.push_image("team/app", "v1", b"first").await;
    pause().await;
    s.push_image("team/app", "v1", b"second").await;
    let res = s
        .req(Method::DELETE, &format!("/v2/team/app/manifests/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let (ok, _, err) = admin_cli(&s, &["tag", "restore", "team/app", "v1", "--previous"]);
    assert!(!ok && err.contains("no longer in team/app"), "{err}");

    let (c, _) = s.push_image("team/app", "v2", b"third").await;
    pause().await;
    s.push_image("team/app", "v2", b"fourth").await;
    let (ok, _, err) = admin_cli(&s, &["immutable", "add", "team/*", "--tags", "v*"]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin_cli(&s, &["tag", "restore", "team/app", "v2", "--to", &c]);
    assert!(!ok && err.contains("immutable"), "{err}");
}
