//! Repository names and tags must match the spec's grammars.

use super::*;

/// Invalid repository names are 400 `NAME_INVALID` on every endpoint shape.
#[tokio::test]
async fn invalid_repository_names_are_400_name_invalid() {
    let s = Server::start();
    let long = "a".repeat(256);
    let deep_long = format!("{}/{}", "b".repeat(128), "c".repeat(127));
    for name in [
        "Upper",
        "team/App",
        "a..b",
        "a._b",
        "a___b",
        "-a",
        "a-",
        "a_",
        long.as_str(),
        deep_long.as_str(),
        "a%20b",
    ] {
        for path in [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/blobs/{ABSENT}"),
            format!("/v2/{name}/referrers/{ABSENT}"),
        ] {
            expect_error(get(&s, &path).await, 400, "NAME_INVALID").await;
        }
        let res = s
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        expect_error(res, 400, "NAME_INVALID").await;
        let res = s.put_manifest(name, "latest", OCI_MANIFEST, b"{}").await;
        expect_error(res, 400, "NAME_INVALID").await;
    }
    let catalog: Value = get(&s, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(catalog["repositories"], json!([]), "nothing was created");
}

/// Dot segments and empty path components (which URL libraries would normalize away, so they
/// are sent raw) are invalid names, never a way out of the repository.
#[tokio::test]
async fn dot_dot_and_empty_components_are_name_invalid() {
    let s = Server::start();
    s.push_blob("a/b", b"x").await;
    for path in [
        "/v2/a/../b/tags/list",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/../b/tags/list",
        "/v2/a/./b/tags/list",
        "/v2/a//b/tags/list",
        "/v2/a/b/../../_catalog/tags/list",
    ] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.addr
        );
        let res = raw_request(&s, req.as_bytes()).await;
        assert_eq!(res.status, 400, "{path}");
        assert_eq!(res.error_code(), "NAME_INVALID", "{path}");
    }
}

/// The longest valid name (255 characters) works; one more is `NAME_INVALID`.
#[tokio::test]
async fn name_length_limit() {
    let s = Server::start();
    let name = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(name.len(), 255);
    let d = s.push_blob(&name, b"long").await;
    assert_blob(&s, &format!("/v2/{name}/blobs/{d}"), b"long").await;
    let too_long = format!("{name}c");
    expect_error(
        get(&s, &format!("/v2/{too_long}/blobs/{d}")).await,
        400,
        "NAME_INVALID",
    )
    .await;
}

/// Names using every separator the grammar allows are accepted.
#[tokio::test]
async fn valid_names_are_accepted() {
    let s = Server::start();
    for name in [
        "a",
        "a.b",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "0/1/2/3/4/5/6/7/8/9",
        "x.y_z-w/v__u",
    ] {
        let d = s.push_blob(name, name.as_bytes()).await;
        assert_blob(&s, &format!("/v2/{name}/blobs/{d}"), name.as_bytes()).await;
    }
}

/// Tags outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` are refused with 400, in the path and in
/// `?tag=`; the longest valid tag (128 characters) works.
#[tokio::test]
async fn invalid_tags_are_400() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 1).await;
    let m = p.oci(None);
    let long = "t".repeat(129);
    for tag in [
        ".hidden",
        "-dash",
        long.as_str(),
        "a%2Fb",
        "a%20b",
        "caf%C3%A9",
    ] {
        let path = format!("/v2/team/app/manifests/{tag}");
        let res = s
            .req(Method::PUT, &path)
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert_eq!(status, 400, "PUT {tag}");
        check_error_body(&res.json().await.unwrap());
        assert_eq!(get(&s, &path).await.status(), 400, "GET {tag}");

        let reference = format!("{}?tag={tag}", sha256(&m));
        let res = s
            .put_manifest("team/app", &reference, OCI_MANIFEST, &m)
            .await;
        assert_eq!(res.status(), 400, "?tag={tag}");
    }
    let tags: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]), "no tag was created");

    let ok = "T".repeat(128);
    assert_eq!(
        s.put_manifest("team/app", &ok, OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    assert_eq!(
        get(&s, &format!("/v2/team/app/manifests/{ok}"))
            .await
            .status(),
        200
    );
}
