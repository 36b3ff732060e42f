//! "Pushing a blob monolithically": POST then PUT, and single POST.

use super::*;

/// Whether `s` contains a canonical hyphenated UUID.
fn contains_uuid(s: &str) -> bool {
    s.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|w| {
            let parts: Vec<&str> = w.split('-').collect();
            parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        })
}

/// POST answers 202 with a `Location` containing a UUID; PUT `<location>?digest=` with the
/// whole blob answers 201 with a `Location` that pulls the blob.
#[tokio::test]
async fn post_then_put() {
    let s = Server::start();
    let bytes = random_bytes(1, 50_000);
    let digest = sha256(&bytes);
    let res = s
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let loc = location(&res);
    assert!(contains_uuid(&loc), "upload location needs a UUID: {loc}");
    let uuid = header(&res, "docker-upload-uuid").expect("Docker-Upload-UUID");
    assert!(loc.contains(&uuid), "{loc} vs Docker-Upload-UUID {uuid}");
    assert_eq!(range(&res).as_deref(), Some("0-0"));

    let res = s
        .req(Method::PUT, &with_param(&loc, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = location(&res);
    assert_blob(&s, &blob_loc, &bytes).await;
    assert_blob(&s, &format!("/v2/team/app/blobs/{digest}"), &bytes).await;
    assert_eq!(
        upload_files(&s.data),
        0,
        "the finished upload's file is gone"
    );
}

/// Each POST opens a distinct session.
#[tokio::test]
async fn every_post_gets_its_own_session() {
    let s = Server::start();
    let a = start_upload(&s, "team/app").await;
    let b = start_upload(&s, "team/app").await;
    assert_ne!(a, b);
}

/// A single `POST ?digest=` with the whole blob is 201 with a pullable `Location`.
#[tokio::test]
async fn single_post_with_digest() {
    let s = Server::start();
    let bytes = random_bytes(2, 70_000);
    let digest = sha256(&bytes);
    let res = s
        .req(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    assert_blob(&s, &location(&res), &bytes).await;
}

/// A PUT whose digest does not match the content is 400 `DIGEST_INVALID`; nothing becomes
/// readable under either digest, and the session is gone (404 `BLOB_UPLOAD_UNKNOWN`).
#[tokio::test]
async fn put_with_wrong_digest_is_rejected_and_discarded() {
    let s = Server::start();
    let bytes = random_bytes(3, 10_000);
    let claimed = sha256(b"not these bytes");
    let loc = start_upload(&s, "team/app").await;
    let res = close_upload(&s, &loc, &claimed, Some((&bytes, None))).await;
    expect_error(res, 400, "DIGEST_INVALID").await;
    for d in [claimed, sha256(&bytes)] {
        expect_error(
            get(&s, &format!("/v2/team/app/blobs/{d}")).await,
            404,
            "BLOB_UNKNOWN",
        )
        .await;
    }
    expect_error(get(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(
        upload_files(&s.data),
        0,
        "the rejected upload's bytes are deleted"
    );
    assert!(blob_files(&s.data, "sha256").is_empty());
}

/// A single POST with a wrong digest is 400 `DIGEST_INVALID` and stores nothing.
#[tokio::test]
async fn single_post_with_wrong_digest_is_rejected() {
    let s = Server::start();
    let bytes = random_bytes(4, 10_000);
    let claimed = sha256(b"other");
    let res = s
        .req(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={claimed}"),
        )
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "DIGEST_INVALID").await;
    for d in [claimed, sha256(&bytes)] {
        expect_error(
            get(&s, &format!("/v2/team/app/blobs/{d}")).await,
            404,
            "BLOB_UNKNOWN",
        )
        .await;
    }
    assert_eq!(upload_files(&s.data), 0);
    assert!(blob_files(&s.data, "sha256").is_empty());
}

/// The closing PUT MUST carry the digest: without it, or with a malformed one, it is 400
/// `DIGEST_INVALID` and nothing is stored.
#[tokio::test]
async fn put_without_or_with_malformed_digest_is_400() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    let res = s
        .req(Method::PUT, &loc)
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "DIGEST_INVALID").await;
    for bad in ["sha256:xyz", "nope", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
        let loc = start_upload(&s, "team/app").await;
        let res = close_upload(&s, &loc, bad, Some((b"abc", None))).await;
        expect_error(res, 400, "DIGEST_INVALID").await;
    }
    expect_error(
        get(&s, &format!("/v2/team/app/blobs/{}", sha256(b"abc"))).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

/// A single POST with a malformed digest is 400 `DIGEST_INVALID`.
#[tokio::test]
async fn single_post_with_malformed_digest_is_400() {
    let s = Server::start();
    let res = s
        .req(
            Method::POST,
            "/v2/team/app/blobs/uploads/?digest=sha256:nothex",
        )
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "DIGEST_INVALID").await;
}

/// Pushing a blob that already exists is harmless: 201 again, same content, one copy.
#[tokio::test]
async fn pushing_an_existing_blob_again_succeeds() {
    let s = Server::start();
    let bytes = random_bytes(5, 4096);
    let d1 = s.push_blob("team/app", &bytes).await;
    let d2 = s.push_blob("team/app", &bytes).await;
    assert_eq!(d1, d2);
    assert_blob(&s, &format!("/v2/team/app/blobs/{d1}"), &bytes).await;
    assert_eq!(blob_files(&s.data, "sha256").len(), 1);
}
