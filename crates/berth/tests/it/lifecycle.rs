//! Lifecycle policies in ECR's JSON over the admin API and the CLI: validation, read-back,
//! preview equal to what apply then expires, cascades, immutable tags, pull times.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{admin_cli, secured};
use crate::harness::*;

async fn put_policy(s: &Server, scope: &str, text: &str) -> (u16, String) {
    let res = s
        .req(Method::PUT, &format!("/api/v1/lifecycle?scope={scope}"))
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn evaluate(s: &Server, action: &str, scope: &str, at: &str) -> Value {
    let (status, v) = s
        .send_json(
            Method::POST,
            &format!("/api/v1/lifecycle/{action}?scope={scope}&at={at}"),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// RFC 3339 for `days` from now.
fn days_from_now(days: u64) -> String {
    let t = SystemTime::now() + Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn manifest_status(s: &Server, repo: &str, reference: &str) -> u16 {
    s.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sleeps past the current wall-clock second (push times are whole seconds).
async fn next_second() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1020 - u64::from(now.subsec_millis()))).await;
}

#[tokio::test]
async fn policies_are_validated_and_read_back_verbatim() {
    let s = secured();
    let bad = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
                            {"rulePriority":2,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":3},"action":{"type":"expire"}}]}"#;
    let (status, body) = put_policy(&s, "team", bad).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("rules[1] (rulePriority 2)") && body.contains("tagPrefixList"),
        "{body}"
    );
    let res = s
        .req(Method::GET, "/api/v1/lifecycle?scope=team")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "a refused policy stores nothing");

    let good = "{ \"rules\": [ {\"rulePriority\": 1, \"description\": \"old untagged\",\n  \"selection\": {\"tagStatus\": \"untagged\", \"countType\": \"sinceImagePushed\", \"countUnit\": \"days\", \"countNumber\": 14},\n  \"action\": {\"type\": \"expire\"}} ] }";
    let (status, body) = put_policy(&s, "team", good).await;
    assert_eq!(status, 200, "{body}");
    let res = s
        .req(Method::GET, "/api/v1/lifecycle?scope=team")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), good, "read back byte for byte");
    let res = s
        .req(Method::DELETE, "/api/v1/lifecycle?scope=team")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .req(Method::GET, "/api/v1/lifecycle?scope=team")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn preview_lists_exactly_what_apply_expires() {
    let s = secured();
    // release-1 (oldest, immutable) … release-4, one second apart.
    let mut release = Vec::new();
    for n in 1..=4 {
        let (d, _) = s
            .push_image(
                "app/api",
                &format!("release-{n}"),
                format!("release {n}").as_bytes(),
            )
            .await;
        release.push(d);
        next_second().await;
    }
    let (status, _) = s
        .send_json(
            Method::POST,
            "/api/v1/immutability-rules",
            &json!({"repositories": "app/api", "tags": ["release-1"]}),
        )
        .await;
    assert_eq!(status, 201);
    // Two untagged images.
    let mut untagged = Vec::new();
    for n in 1..=2 {
        let (d, _) = s
            .push_image("app/api", "tmp", format!("tmp {n}").as_bytes())
            .await;
        untagged.push(d);
    }
    let res = s
        .req(Method::DELETE, "/v2/app/api/manifests/tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    // A nightly multi-arch index whose children are untagged.
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (d, bytes) = s.push_image("app/api", "scratch", arch.as_bytes()).await;
        children.push((d, bytes.len()));
    }
    let res = s
        .req(Method::DELETE, "/v2/app/api/manifests/scratch")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(d, n)| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n})).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert_eq!(
        s.put_manifest("app/api", "nightly-1", OCI_INDEX, &index)
            .await
            .status(),
        201
    );
    let index_digest = sha256(&index);

    let policy = json!({"rules": [
        {"rulePriority": 1, "description": "keep 2 releases",
         "selection": {"tagStatus": "tagged", "tagPrefixList": ["release"], "countType": "imageCountMoreThan", "countNumber": 2},
         "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
         "action": {"type": "expire"}},
        {"rulePriority": 3, "selection": {"tagStatus": "tagged", "tagPatternList": ["nightly-*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7},
         "action": {"type": "expire"}}
    ]});
    // The namespace's policy governs app/api.
    let (status, body) = put_policy(&s, "app", &policy.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // Today only the release count applies: release-2 goes, release-1 is immutable.
    let today = evaluate(&s, "preview", "app", &days_from_now(0)).await;
    let digests = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(digests(&today, "expiries"), [release[1].clone()]);
    assert!(
        today["expiries"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("keeps 2"),
        "{today}"
    );

    // In 15 days: release-2, both untagged images, and the nightly index.
    let later = days_from_now(15);
    let preview = evaluate(&s, "preview", "app", &later).await;
    let mut expected = vec![release[1].clone(), index_digest.clone()];
    expected.extend(untagged.iter().cloned());
    expected.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(digests(&preview, "expiries")), expected, "{preview}");
    let children_listed = children
        .iter()
        .any(|(d, _)| digests(&preview, "expiries").contains(d));
    assert!(
        !children_listed,
        "index children are not images of their own"
    );

    let applied = evaluate(&s, "apply", "app", &later).await;
    assert_eq!(
        digests(&applied, "expired"),
        digests(&preview, "expiries"),
        "apply expires exactly the preview"
    );
    let nightly = applied["expired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == index_digest.as_str())
        .unwrap();
    let removed: Vec<&str> = nightly["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 3, "the index and both children: {nightly}");

    assert_eq!(manifest_status(&s, "app/api", "release-2").await, 404);
    for tag in ["release-1", "release-3", "release-4"] {
        assert_eq!(
            manifest_status(&s, "app/api", tag).await,
            200,
            "{tag} stays"
        );
    }
    for (d, _) in &children {
        assert_eq!(
            manifest_status(&s, "app/api", d).await,
            404,
            "children go with their index"
        );
    }
    for d in &untagged {
        assert_eq!(manifest_status(&s, "app/api", d).await, 404);
    }
    // Nothing more to do, and the expiries are in the audit log with their reason.
    assert_eq!(
        digests(&evaluate(&s, "preview", "app", &later).await, "expiries"),
        Vec::<String>::new()
    );
    let (_, audit) = s
        .send_json(
            Method::GET,
            "/api/v1/audit?repository=app/api&kind=delete",
            &Value::Null,
        )
        .await;
    let deletes = audit["events"].as_array().unwrap();
    assert_eq!(deletes.len(), 6, "{audit}");
    assert!(
        deletes
            .iter()
            .all(|e| e["detail"].as_str().unwrap().contains("lifecycle policy"))
    );
}

#[tokio::test]
async fn since_image_pulled_counts_from_the_last_pull() {
    let s = secured();
    let (pulled, _) = s.push_image("team/web", "a", b"pulled").await;
    let (never, _) = s.push_image("team/web", "b", b"never pulled").await;
    let res = s
        .req(Method::GET, "/v2/team/web/manifests/a")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(1300)).await; // pulls are written once a second
    let policy = json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 7}, "action": {"type": "expire"}}]});
    assert_eq!(put_policy(&s, "team/web", &policy.to_string()).await.0, 200);
    let v = evaluate(&s, "preview", "team/web", &days_from_now(8)).await;
    let reasons: Vec<(&str, &str)> = v["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["digest"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), 2, "{v}");
    for (digest, reason) in reasons {
        let never_pulled = reason.contains("never pulled");
        assert_eq!(never_pulled, digest == never, "{digest}: {reason}");
        assert!(digest == pulled || digest == never);
    }
    // A week from now nothing has gone unpulled for more than 7 days.
    let v = evaluate(&s, "preview", "team/web", &days_from_now(6)).await;
    assert_eq!(v["expiries"], json!([]));
}

#[tokio::test]
async fn the_cli_puts_previews_and_applies() {
    let s = secured();
    let (older, _) = s.push_image("ci/app", "tmp", b"scratch build").await;
    let res = s
        .req(Method::DELETE, "/v2/ci/app/manifests/tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, r#"{"rules":[{"rulePriority":1,"description":"no untagged","selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#).unwrap();
    let (ok, out, err) = admin_cli(&s, &["lifecycle", "put", "ci", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("untagged"), "{out}");
    let (ok, out, _) = admin_cli(&s, &["lifecycle", "get", "ci"]);
    assert!(ok && out.contains("no untagged"), "{out}");
    let (ok, out, _) = admin_cli(&s, &["lifecycle", "preview", "ci", "--json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["expiries"],
        json!([]),
        "one untagged image is within the count"
    );

    // A second untagged build a second later: the older one is beyond the count.
    next_second().await;
    let (newer, _) = s.push_image("ci/app", "tmp", b"next scratch build").await;
    let res = s
        .req(Method::DELETE, "/v2/ci/app/manifests/tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let (ok, out, _) = admin_cli(&s, &["lifecycle", "preview", "ci"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!("would expire ci/app@{older} (untagged): rule 1")),
        "{out}"
    );
    assert!(out.contains("1 image would expire in ci"), "{out}");
    let (ok, out, _) = admin_cli(&s, &["lifecycle", "apply", "ci"]);
    assert!(
        ok && out.starts_with(&format!("expired ci/app@{older} (untagged)")),
        "{out}"
    );
    assert_eq!(manifest_status(&s, "ci/app", &older).await, 404);
    assert_eq!(manifest_status(&s, "ci/app", &newer).await, 200);

    std::fs::write(&file, r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}"#).unwrap();
    let (ok, _, err) = admin_cli(&s, &["lifecycle", "put", "ci", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("rules[0] (rulePriority 1)") && err.contains("countNumber"),
        "{err}"
    );
    let (ok, out, _) = admin_cli(&s, &["lifecycle", "remove", "ci"]);
    assert!(
        ok && out.contains("removed the lifecycle policy of ci"),
        "{out}"
    );
    let (ok, _, err) = admin_cli(&s, &["lifecycle", "get", "ci"]);
    assert!(!ok && err.contains("ci has no lifecycle policy"), "{err}");
}
