//! The shortest useful path: push an image, pull it back.

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn push_and_pull_an_image() {
    let s = Server::start();
    let res = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );

    let layer = random_bytes(1, 100_000);
    let (digest, manifest) = s.push_image("team/app", "v1", &layer).await;
    let res = s
        .req(Method::GET, "/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(header(&res, "content-type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(res.bytes().await.unwrap().as_ref(), manifest.as_slice());

    let l = sha256(&layer);
    let res = s
        .req(Method::GET, &format!("/v2/team/app/blobs/{l}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), layer.as_slice());
}

#[tokio::test]
async fn health_and_readiness_probes() {
    let s = Server::start();
    let res = s.req(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = s.req(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(res.status(), 200);
    // A blob store that lost its directory is not ready (and says why).
    std::fs::remove_dir_all(s.data.join("uploads")).unwrap();
    let res = s.req(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("not ready"));
    let res = s.req(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(res.status(), 200, "liveness does not depend on storage");
}

#[tokio::test]
async fn metrics_count_requests_bytes_cache_and_uploads() {
    let s = Server::start();
    let layer = random_bytes(9, 5000);
    s.push_image("metrics/app", "v1", &layer).await;
    for _ in 0..3 {
        let res = s
            .req(Method::GET, "/v2/metrics/app/manifests/v1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = s
        .req(
            Method::GET,
            &format!("/v2/metrics/app/blobs/{}", sha256(&layer)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().len(), 5000);
    let res = s
        .req(Method::GET, "/v2/metrics/app/manifests/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // One upload left open.
    let res = s
        .req(Method::POST, "/v2/metrics/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let res = s.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {needle} in:\n{text}"))
    };
    assert_eq!(
        value(r#"berth_http_requests_total{endpoint="manifest",method="GET",status="200"}"#),
        3.0
    );
    assert_eq!(
        value(r#"berth_http_requests_total{endpoint="manifest",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        value(r#"berth_http_requests_total{endpoint="manifest",method="PUT",status="201"}"#),
        1.0
    );
    assert!(
        value(
            r#"berth_http_request_duration_seconds_bucket{endpoint="manifest",method="GET",le="+Inf"}"#
        ) >= 4.0
    );
    assert!(value(r#"berth_http_response_body_bytes_total{endpoint="blob"}"#) >= 5000.0);
    assert!(value(r#"berth_http_request_body_bytes_total{endpoint="upload"}"#) >= 5000.0);
    // The first GET by tag misses the caches, the next two hit them.
    assert_eq!(
        value(r#"berth_cache_lookups_total{cache="tag",result="hit"}"#),
        2.0
    );
    assert_eq!(value("berth_upload_sessions_open"), 1.0);
}

#[tokio::test]
async fn access_log_is_one_structured_line_per_request_when_enabled() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn,berth::access=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let res = reqwest::get(format!("http://{addr}/v2/some/repo/tags/list"))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let entry = log
        .lines()
        .find(|l| l.contains("berth::access"))
        .unwrap_or_else(|| panic!("no access log line in:\n{log}"));
    for field in [
        "endpoint=\"tags\"",
        "method=GET",
        "path=/v2/some/repo/tags/list",
        "status=404",
        "micros=",
    ] {
        assert!(entry.contains(field), "{field} missing from {entry}");
    }
}
