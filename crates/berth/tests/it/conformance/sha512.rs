//! Digest algorithms other than sha256: `?digest-algorithm=sha512` and `sha512:` digests.

use super::*;

/// POST `?digest-algorithm=sha512`, chunks, PUT `?digest=sha512:…` → 201 with the sha512
/// digest; the blob is readable (GET and HEAD) by that digest and stored under `sha512/`.
#[tokio::test]
async fn sha512_chunked_upload() {
    let s = Server::start();
    let bytes = random_bytes(21, 5000);
    let digest = sha512(&bytes);
    let res = s
        .req(
            Method::POST,
            "/v2/team/app/blobs/uploads/?digest-algorithm=sha512",
        )
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let mut loc = location(&res);
    for (i, chunk) in bytes.chunks(2000).enumerate() {
        let res = patch_at(&s, &loc, i as u64 * 2000, chunk).await;
        assert_eq!(res.status(), 202);
        loc = location(&res);
    }
    let res = close_upload(&s, &loc, &digest, None).await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    assert_blob(&s, &location(&res), &bytes).await;

    let path = format!("/v2/team/app/blobs/{digest}");
    let res = get(&s, &path).await;
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let res = head(&s, &path).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-length").as_deref(), Some("5000"));
    assert_eq!(blob_files(&s.data, "sha512").len(), 1);
    // Not readable under its sha256 digest: that blob was never pushed.
    assert_eq!(
        get(&s, &format!("/v2/team/app/blobs/{}", sha256(&bytes)))
            .await
            .status(),
        404
    );
}

/// Monolithic pushes with a sha512 digest work too (POST+PUT and single POST).
#[tokio::test]
async fn sha512_monolithic_uploads() {
    let s = Server::start();
    let a = random_bytes(22, 3000);
    let loc = start_upload(&s, "team/app").await;
    let res = close_upload(&s, &loc, &sha512(&a), Some((&a, None))).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &format!("/v2/team/app/blobs/{}", sha512(&a)), &a).await;

    let b = random_bytes(23, 3000);
    let res = s
        .req(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={}", sha512(&b)),
        )
        .body(b.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &b).await;
}

/// A sha512 upload closed with the wrong sha512 digest is 400 `DIGEST_INVALID`.
#[tokio::test]
async fn sha512_wrong_digest_is_400() {
    let s = Server::start();
    let res = s
        .req(
            Method::POST,
            "/v2/team/app/blobs/uploads/?digest-algorithm=sha512",
        )
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let loc = location(&res);
    let res = close_upload(&s, &loc, &sha512(b"other"), Some((b"content", None))).await;
    expect_error(res, 400, "DIGEST_INVALID").await;
}

/// An unsupported algorithm (in `digest-algorithm`, `digest` or a path) is 400.
#[tokio::test]
async fn unsupported_algorithm_is_400() {
    let s = Server::start();
    for q in [
        "digest-algorithm=md5",
        "digest-algorithm=sha384",
        "digest-algorithm=",
    ] {
        let res = s
            .req(Method::POST, &format!("/v2/team/app/blobs/uploads/?{q}"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        expect_error(res, 400, "DIGEST_INVALID").await;
    }
    let sha384 = format!("sha384:{}", "a".repeat(96));
    let res = s
        .req(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={sha384}"),
        )
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "DIGEST_INVALID").await;
    let loc = start_upload(&s, "team/app").await;
    expect_error(
        close_upload(&s, &loc, &sha384, Some((b"x", None))).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    expect_error(
        get(&s, &format!("/v2/team/app/blobs/{sha384}")).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

/// A manifest PUT by a sha512 digest is verified with sha512, answered with that digest,
/// and pullable by it.
#[tokio::test]
async fn manifest_by_sha512_digest() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 24).await;
    let m = p.oci(None);
    let d = sha512(&m);
    let res = s.put_manifest("team/app", &d, OCI_MANIFEST, &m).await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let res = get(&s, &location(&res)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert!(res.bytes().await.unwrap().as_ref() == m.as_slice());
    let wrong = sha512(b"other");
    expect_error(
        s.put_manifest("team/app", &wrong, OCI_MANIFEST, &m).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}
