//! Quotas per namespace: exact accounting with shared layers, refusal with a message a
//! person can act on, nothing half-written, and two pushes racing for the last bytes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{admin_cli, secured};
use crate::harness::*;

/// Pushes config + layers (each uploaded if missing) and the manifest under `tag`; the
/// manifest's digest and the PUT's answer.
async fn push(
    s: &Server,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> (String, u16, String) {
    let c = s.push_blob(repo, config).await;
    let mut refs = Vec::new();
    for l in layers {
        refs.push((s.push_blob(repo, l).await, l.len()));
    }
    let refs: Vec<(&str, usize)> = refs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let manifest = oci_manifest(&c, config.len(), &refs, None);
    let res = s.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    let status = res.status().as_u16();
    (sha256(&manifest), status, res.text().await.unwrap())
}

async fn usage(s: &Server, ns: &str) -> Value {
    let (status, v) = s
        .send_json(
            Method::GET,
            &format!("/api/v1/usage?namespace={ns}"),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn shared_layers_count_once_and_a_push_over_the_quota_changes_nothing() {
    let s = secured();
    let shared = random_bytes(1, 5000);
    let (l, m) = (random_bytes(2, 1000), random_bytes(3, 2000));
    let (c1, c2) = (b"{\"n\":1}".to_vec(), b"{\"n\":22}".to_vec());
    assert_eq!(push(&s, "pay/a", "v1", &c1, &[&l, &shared]).await.1, 201);
    assert_eq!(push(&s, "pay/b", "v1", &c2, &[&shared, &m]).await.1, 201);
    // Another namespace's images do not count.
    assert_eq!(push(&s, "other/x", "v1", b"{}", &[&shared]).await.1, 201);

    let used = (c1.len() + l.len() + shared.len() + c2.len() + m.len()) as u64;
    let u = usage(&s, "pay").await;
    assert_eq!(u["bytes"], used);
    let repos: Vec<(&str, u64)> = u["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        repos,
        [
            ("pay/a", (c1.len() + l.len() + shared.len()) as u64),
            ("pay/b", (c2.len() + shared.len() + m.len()) as u64)
        ]
    );

    // Room for 100 more bytes: a push needing 3000 + its config is refused.
    let (status, q) = s
        .send_json(
            Method::PUT,
            "/api/v1/quotas/pay",
            &json!({"limit": used + 100}),
        )
        .await;
    assert_eq!((status, q["bytes"].as_u64()), (200, Some(used)));
    let big = random_bytes(4, 3000);
    let config = b"{\"n\":333}";
    let (digest, status, body) = push(&s, "pay/a", "v2", config, &[&big, &shared]).await;
    assert_eq!(status, 403, "{body}");
    let needs = big.len() + config.len();
    let expected = format!(
        "quota exceeded for namespace pay: {} of {} used, this push needs {}",
        berth_registry::quota::format_size(used),
        berth_registry::quota::format_size(used + 100),
        berth_registry::quota::format_size(needs as u64)
    );
    assert!(
        body.contains("DENIED") && body.contains(&expected),
        "{body}\nexpected: {expected}"
    );
    // Nothing half-written: no tag, no manifest, usage unchanged.
    let res = s
        .req(Method::GET, "/v2/pay/a/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = s
        .req(Method::GET, &format!("/v2/pay/a/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(usage(&s, "pay").await["bytes"], used);

    // What the namespace already holds needs no room: a new tag of an existing image, and
    // an image made of referenced blobs only, fit even at the limit.
    assert_eq!(push(&s, "pay/b", "again", &c2, &[&shared, &m]).await.1, 201);
    assert_eq!(push(&s, "pay/b", "mix", &c1, &[&l, &m]).await.1, 201);
    // Pushing into another namespace is not limited by this one.
    assert_eq!(push(&s, "other/x", "v2", config, &[&big]).await.1, 201);
    // Without the quota the refused push goes through.
    let res = s
        .req(Method::DELETE, "/api/v1/quotas/pay")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        push(&s, "pay/a", "v2", config, &[&big, &shared]).await.1,
        201
    );
    assert_eq!(usage(&s, "pay").await["bytes"], used + needs as u64);
}

#[tokio::test]
async fn two_pushes_racing_for_the_last_bytes_cannot_both_win() {
    let s = secured();
    let (status, _) = s
        .send_json(
            Method::PUT,
            "/api/v1/quotas/race",
            &json!({"limit": "6KiB"}),
        )
        .await;
    assert_eq!(status, 200);
    // Each image needs about 4 KiB; there is room for one.
    let (a, b) = (random_bytes(10, 4000), random_bytes(11, 4000));
    let (ca, cb) = (
        s.push_blob("race/app", b"{\"a\":1}").await,
        s.push_blob("race/app", b"{\"b\":1}").await,
    );
    let (la, lb) = (
        s.push_blob("race/app", &a).await,
        s.push_blob("race/app", &b).await,
    );
    let ma = oci_manifest(&ca, 7, &[(&la, 4000)], None);
    let mb = oci_manifest(&cb, 7, &[(&lb, 4000)], None);
    let (ra, rb) = tokio::join!(
        s.put_manifest("race/app", "a", OCI_MANIFEST, &ma),
        s.put_manifest("race/app", "b", OCI_MANIFEST, &mb)
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 403]);
    assert_eq!(usage(&s, "race").await["bytes"], 4007);
}

#[tokio::test]
async fn the_cli_sets_quotas_and_shows_usage() {
    let s = secured();
    push(&s, "team/app", "v1", b"{}", &[&random_bytes(5, 2048)]).await;
    let (ok, out, err) = admin_cli(&s, &["quota", "set", "team", "1MiB"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("team") && out.contains("2.0 KiB of 1.0 MiB (0 %)"),
        "{out}"
    );
    let (ok, out, _) = admin_cli(&s, &["usage", "team"]);
    assert!(
        ok && out.contains("team/app") && out.contains("2.0 KiB"),
        "{out}"
    );
    let (ok, out, _) = admin_cli(&s, &["usage"]);
    assert!(
        ok && out.contains("team") && out.contains("of 1.0 MiB"),
        "{out}"
    );
    let (ok, _, err) = admin_cli(&s, &["quota", "set", "team", "10 parsecs"]);
    assert!(!ok && err.contains("unknown unit"), "{err}");
    let (ok, out, _) = admin_cli(&s, &["quota", "remove", "team"]);
    assert!(ok && out.contains("removed the quota of team"), "{out}");
}
