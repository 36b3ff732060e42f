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
