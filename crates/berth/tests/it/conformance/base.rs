//! "Determining Support": `GET /v2/`.

use reqwest::Method;

use super::*;

/// `GET /v2/` answers 200 (the registry implements the spec) and carries
/// `Docker-Distribution-API-Version: registry/2.0`, which docker checks before anything else.
#[tokio::test]
async fn base_endpoint_is_200_with_api_version() {
    let s = Server::start();
    for path in ["/v2/", "/v2"] {
        let res = get(&s, path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        assert_eq!(
            header(&res, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0"),
            "GET {path}"
        );
    }
    let res = s.req(Method::HEAD, "/v2/").send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// Docker also reads the API-version header off error responses (e.g. a 404 from a
/// registry it probes), so every response carries it.
#[tokio::test]
async fn api_version_header_on_errors_too() {
    let s = Server::start();
    let res = get(&s, "/v2/nope/manifests/latest").await;
    assert_eq!(
        header(&res, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    expect_error(res, 404, "NAME_UNKNOWN").await;
}
