//! "Pull" / "Pulling blobs" and "Checking if content exists in the registry".

use super::*;

/// A GET of an existing blob is 200 with the exact bytes, `Docker-Content-Digest` matching
/// the body, and `Content-Length`.
#[tokio::test]
async fn blob_get_returns_bytes_digest_and_length() {
    let s = Server::start();
    let bytes = random_bytes(7, 300_000);
    let d = s.push_blob("lib/app", &bytes).await;
    let res = get(&s, &format!("/v2/lib/app/blobs/{d}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        header(&res, "content-length").as_deref(),
        Some(bytes.len().to_string().as_str())
    );
    let body = res.bytes().await.unwrap();
    assert_eq!(
        sha256(&body),
        d,
        "Docker-Content-Digest must match the body"
    );
    assert!(body.as_ref() == bytes.as_slice());
}

/// A HEAD of an existing blob is 200 with `Docker-Content-Digest` and the blob's size in
/// `Content-Length`, and no body.
#[tokio::test]
async fn blob_head_has_length_and_digest_without_body() {
    let s = Server::start();
    let bytes = random_bytes(8, 12_345);
    let d = s.push_blob("lib/app", &bytes).await;
    let res = head(&s, &format!("/v2/lib/app/blobs/{d}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(header(&res, "content-length").as_deref(), Some("12345"));
    assert!(
        res.bytes().await.unwrap().is_empty(),
        "HEAD must have no body"
    );
}

/// An unknown blob is 404 `BLOB_UNKNOWN`, both in an existing repository and in one that
/// does not exist; HEAD is 404 too.
#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let s = Server::start();
    s.push_blob("lib/app", b"something").await;
    let other = sha256(b"something else");
    expect_error(
        get(&s, &format!("/v2/lib/app/blobs/{other}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        get(&s, &format!("/v2/no/such/blobs/{other}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        head(&s, &format!("/v2/lib/app/blobs/{other}"))
            .await
            .status(),
        404
    );
}

/// `Range` requests (RFC 9110 §14, which the spec says registries SHOULD support): 206 with
/// `Content-Range`, the right `Content-Length` and exactly the requested bytes.
#[tokio::test]
async fn blob_range_request_is_206_with_the_right_bytes() {
    let s = Server::start();
    let bytes = random_bytes(9, 1000);
    let d = s.push_blob("lib/app", &bytes).await;
    let path = format!("/v2/lib/app/blobs/{d}");
    for (spec, a, b) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=500-5000", 500, 999),
    ] {
        let res = s
            .req(Method::GET, &path)
            .header("range", spec)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206, "{spec}");
        assert_eq!(
            header(&res, "content-range").as_deref(),
            Some(format!("bytes {a}-{b}/1000").as_str()),
            "{spec}"
        );
        assert_eq!(
            header(&res, "content-length").as_deref(),
            Some((b - a + 1).to_string().as_str()),
            "{spec}"
        );
        let body = res.bytes().await.unwrap();
        assert!(body.as_ref() == &bytes[a..=b], "{spec}: wrong bytes");
    }
}

/// A range entirely outside the blob is 416 with `Content-Range: bytes */<size>`.
#[tokio::test]
async fn blob_unsatisfiable_range_is_416() {
    let s = Server::start();
    let bytes = random_bytes(10, 100);
    let d = s.push_blob("lib/app", &bytes).await;
    for spec in ["bytes=100-", "bytes=200-300"] {
        let res = s
            .req(Method::GET, &format!("/v2/lib/app/blobs/{d}"))
            .header("range", spec)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 416, "{spec}");
        assert_eq!(
            header(&res, "content-range").as_deref(),
            Some("bytes */100")
        );
    }
}

/// A malformed digest (or an unsupported algorithm) in the blob path is 400 `DIGEST_INVALID`.
#[tokio::test]
async fn invalid_digest_in_blob_path_is_400() {
    let s = Server::start();
    s.push_blob("lib/app", b"x").await;
    let upper = sha256(b"x").to_uppercase().replace("SHA256", "sha256");
    for bad in [
        "sha256:zz".to_owned(),
        "sha256:abc".to_owned(),
        "nocolon".to_owned(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        upper,
    ] {
        expect_error(
            get(&s, &format!("/v2/lib/app/blobs/{bad}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
}

/// Blobs are immutable, so conditional requests work: `ETag` on GET and 304 for a matching
/// `If-None-Match`.
#[tokio::test]
async fn blob_etag_and_if_none_match_304() {
    let s = Server::start();
    let d = s.push_blob("lib/app", b"cache me").await;
    let path = format!("/v2/lib/app/blobs/{d}");
    let res = get(&s, &path).await;
    let etag = header(&res, "etag").expect("ETag on blob GET");
    let res = s
        .req(Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = s
        .req(Method::GET, &path)
        .header("if-none-match", "\"sha256:other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"cache me");
}

/// An empty blob (a valid, if unusual, layer) round-trips with `Content-Length: 0`.
#[tokio::test]
async fn empty_blob_round_trips() {
    let s = Server::start();
    let d = s.push_blob("lib/app", b"").await;
    let res = get(&s, &format!("/v2/lib/app/blobs/{d}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-length").as_deref(), Some("0"));
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert!(res.bytes().await.unwrap().is_empty());
}
