//! "Pushing a blob in chunks": POST, PATCH…, PUT; upload status; cancel.

use super::*;

/// The headers every upload-session response carries: `Location`, `Range: 0-<end>` and
/// `Docker-Upload-UUID` (which the location contains).
fn assert_session(res: &Response, end: Option<u64>) {
    let loc = location(res);
    let uuid = header(res, "docker-upload-uuid").expect("Docker-Upload-UUID");
    assert!(loc.contains(&uuid), "{loc} should contain {uuid}");
    let want = match end {
        Some(e) => format!("0-{e}"),
        None => "0-0".to_owned(),
    };
    assert_eq!(range(res).as_deref(), Some(want.as_str()), "Range header");
}

/// POST (`Content-Length: 0`) → PATCHes with `Content-Range` → each 202 with `Location`
/// and `Range: 0-<end of chunk>`; GET status → 204 with the same; closing PUT without a body
/// → 201, and the blob is the concatenation of the chunks.
#[tokio::test]
async fn chunked_upload_in_order() {
    let s = Server::start();
    let bytes = random_bytes(11, 3000);
    let digest = sha256(&bytes);
    let mut loc = start_upload(&s, "team/app").await;
    for (i, chunk) in bytes.chunks(1000).enumerate() {
        let start = i as u64 * 1000;
        let res = patch_at(&s, &loc, start, chunk).await;
        assert_eq!(res.status(), 202, "chunk {i}");
        assert_session(&res, Some(start + chunk.len() as u64 - 1));
        loc = location(&res);

        let res = get(&s, &loc).await;
        assert_eq!(res.status(), 204, "upload status after chunk {i}");
        assert_session(&res, Some(start + chunk.len() as u64 - 1));
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let res = close_upload(&s, &loc, &digest, None).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    assert_blob(&s, &location(&res), &bytes).await;
    expect_error(get(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

/// A fresh session's status is 204 with `Range: 0-0` and the session headers.
#[tokio::test]
async fn status_of_a_fresh_upload() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    let res = get(&s, &loc).await;
    assert_eq!(res.status(), 204);
    assert_session(&res, None);
}

/// An out-of-order chunk is 416; the `Range` header (and a GET) tell the current offset, and
/// the upload stays usable from there.
#[tokio::test]
async fn out_of_order_chunk_is_416_and_upload_resumes() {
    let s = Server::start();
    let bytes = random_bytes(12, 300);
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, &bytes[..100]).await.status(), 202);

    // A gap (starts past the end) and an overlap (starts before it) are both out of order.
    for (start, end) in [(150usize, 199usize), (50, 149)] {
        let res = patch_at(&s, &loc, start as u64, &bytes[start..=end]).await;
        assert_eq!(res.status(), 416, "chunk {start}-{end}");
        assert_eq!(
            range(&res).as_deref(),
            Some("0-99"),
            "416 tells the current offset"
        );
        assert!(
            header(&res, "location").is_some(),
            "416 carries the upload location"
        );
        let res = get(&s, &loc).await;
        assert_eq!(res.status(), 204);
        assert_eq!(range(&res).as_deref(), Some("0-99"));
    }

    // A first chunk that does not start at 0 is out of order too.
    let fresh = start_upload(&s, "team/app").await;
    let res = patch_at(&s, &fresh, 5, &bytes[5..10]).await;
    assert_eq!(res.status(), 416);

    assert_eq!(patch_at(&s, &loc, 100, &bytes[100..]).await.status(), 202);
    let res = close_upload(&s, &loc, &sha256(&bytes), None).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// Sending the same chunk twice is 416 the second time and does not duplicate bytes.
#[tokio::test]
async fn repeated_chunk_is_416() {
    let s = Server::start();
    let bytes = random_bytes(13, 200);
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, &bytes[..100]).await.status(), 202);
    let res = patch_at(&s, &loc, 0, &bytes[..100]).await;
    assert_eq!(res.status(), 416);
    assert_eq!(range(&res).as_deref(), Some("0-99"));
    assert_eq!(patch_at(&s, &loc, 100, &bytes[100..]).await.status(), 202);
    let res = close_upload(&s, &loc, &sha256(&bytes), None).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// The final chunk may travel in the closing PUT, with its `Content-Range`.
#[tokio::test]
async fn final_chunk_in_closing_put() {
    let s = Server::start();
    let bytes = random_bytes(14, 2500);
    let loc = start_upload(&s, "team/app").await;
    let res = patch_at(&s, &loc, 0, &bytes[..2000]).await;
    assert_eq!(res.status(), 202);
    let loc = location(&res);
    let res = close_upload(
        &s,
        &loc,
        &sha256(&bytes),
        Some((&bytes[2000..], Some((2000, 2499)))),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// "If the final chunk is uploaded out of order, the registry MUST respond with 416"; the
/// session survives and can be closed correctly afterwards.
#[tokio::test]
async fn out_of_order_final_chunk_in_put_is_416() {
    let s = Server::start();
    let bytes = random_bytes(15, 300);
    let digest = sha256(&bytes);
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, &bytes[..100]).await.status(), 202);
    let res = close_upload(&s, &loc, &digest, Some((&bytes[200..], Some((200, 299))))).await;
    assert_eq!(res.status(), 416);
    assert_eq!(range(&res).as_deref(), Some("0-99"));
    let res = get(&s, &loc).await;
    assert_eq!(res.status(), 204);
    assert_eq!(range(&res).as_deref(), Some("0-99"));
    let res = close_upload(&s, &loc, &digest, Some((&bytes[100..], Some((100, 299))))).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// Docker's "stream" upload: PATCHes without `Content-Range` append to the session, also with
/// a chunked-encoded body of unknown length; the final PUT may then carry the rest with no
/// `Content-Range` either.
#[tokio::test]
async fn streamed_patches_without_content_range() {
    let s = Server::start();
    let bytes = random_bytes(16, 600_000);
    let loc = start_upload(&s, "team/app").await;
    let res = patch(&s, &loc, &bytes[..100_000], None).await;
    assert_eq!(res.status(), 202);
    assert_session(&res, Some(99_999));
    let res = s
        .req(Method::PATCH, &location(&res))
        .header("content-type", "application/octet-stream")
        .body(streamed(&bytes[100_000..500_000], 65_536))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_session(&res, Some(499_999));
    let res = close_upload(
        &s,
        &location(&res),
        &sha256(&bytes),
        Some((&bytes[500_000..], None)),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// The closing PUT without a digest is 400, whatever came before.
#[tokio::test]
async fn closing_put_without_digest_is_400() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, b"hello").await.status(), 202);
    let res = s
        .req(Method::PUT, &loc)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "DIGEST_INVALID").await;
    expect_error(
        get(&s, &format!("/v2/team/app/blobs/{}", sha256(b"hello"))).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

/// A chunked upload closed with the wrong digest is 400 `DIGEST_INVALID` and discarded.
#[tokio::test]
async fn chunked_upload_with_wrong_digest_is_discarded() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, b"hello").await.status(), 202);
    let res = close_upload(&s, &loc, &sha256(b"world"), None).await;
    expect_error(res, 400, "DIGEST_INVALID").await;
    expect_error(get(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(upload_files(&s.data), 0);
}

/// DELETE on the session is 204; afterwards every use of it is 404 `BLOB_UPLOAD_UNKNOWN` and
/// its bytes are gone.
#[tokio::test]
async fn cancel_upload() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, b"partial").await.status(), 202);
    assert_eq!(upload_files(&s.data), 1, "the partial upload is on disk");
    let res = s
        .req(Method::DELETE, &loc)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_error(get(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch_at(&s, &loc, 7, b"more").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        close_upload(&s, &loc, &sha256(b"partial"), None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(delete(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(upload_files(&s.data), 0);
}

/// Sessions that never existed are 404 `BLOB_UPLOAD_UNKNOWN` (well-formed UUID or not).
#[tokio::test]
async fn unknown_session_is_404() {
    let s = Server::start();
    s.push_blob("team/app", b"x").await;
    for id in ["6f1d3c2e-8a1b-4c3d-9e8f-0a1b2c3d4e5f", "not-a-session"] {
        let loc = format!("/v2/team/app/blobs/uploads/{id}");
        expect_error(get(&s, &loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        expect_error(
            patch_at(&s, &loc, 0, b"x").await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
        expect_error(
            close_upload(&s, &loc, &sha256(b"x"), Some((b"x", None))).await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
    }
}

/// A `Content-Range` that disagrees with the body's length is 400 and changes nothing: the
/// offset stays put and the upload continues correctly. Checked with a declared
/// `Content-Length` and with a chunked-encoded body whose length is only known at the end.
#[tokio::test]
async fn content_range_length_mismatch_is_400_and_changes_nothing() {
    let s = Server::start();
    let bytes = random_bytes(17, 400);
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, &bytes[..100]).await.status(), 202);

    // Content-Range says 100 bytes, Content-Length (and body) has 50.
    let res = patch(&s, &loc, &bytes[100..150], Some((100, 199))).await;
    let body = expect_error(res, 400, "SIZE_INVALID").await;
    assert!(body["errors"][0]["message"].as_str().is_some());
    let res = get(&s, &loc).await;
    assert_eq!(range(&res).as_deref(), Some("0-99"), "nothing was appended");

    // Same with a streamed body (no Content-Length): detected after reading, rolled back.
    let res = s
        .req(Method::PATCH, &loc)
        .header("content-range", "100-199")
        .body(streamed(&bytes[100..150], 16))
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "SIZE_INVALID").await;
    let res = get(&s, &loc).await;
    assert_eq!(range(&res).as_deref(), Some("0-99"), "nothing was appended");

    // Inverted range.
    let res = patch(&s, &loc, &bytes[100..150], Some((149, 100))).await;
    assert_eq!(
        res.status().as_u16() / 100,
        4,
        "inverted Content-Range is refused"
    );
    assert_eq!(range(&get(&s, &loc).await).as_deref(), Some("0-99"));

    assert_eq!(patch_at(&s, &loc, 100, &bytes[100..]).await.status(), 202);
    let res = close_upload(&s, &loc, &sha256(&bytes), None).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}

/// A malformed `Content-Range` (the spec requires `^[0-9]+-[0-9]+$`) is refused with a 4xx
/// and does not touch the session.
#[tokio::test]
async fn malformed_content_range_is_refused() {
    let s = Server::start();
    let loc = start_upload(&s, "team/app").await;
    assert_eq!(patch_at(&s, &loc, 0, b"0123456789").await.status(), 202);
    for bad in ["ten-twenty", "10", "-5", "a-b"] {
        let res = s
            .req(Method::PATCH, &loc)
            .header("content-range", bad)
            .body(b"abcde".to_vec())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(status == 400 || status == 416, "{bad}: {status}");
        check_error_body(&res.json().await.unwrap());
        assert_eq!(range(&get(&s, &loc).await).as_deref(), Some("0-9"), "{bad}");
    }
}

/// A large blob in several large chunks arrives intact.
#[tokio::test]
async fn large_chunked_upload() {
    let s = Server::start();
    let bytes = random_bytes(18, 6 * 1024 * 1024 + 17);
    let mut loc = start_upload(&s, "team/app").await;
    let mut offset = 0u64;
    for chunk in bytes.chunks(2 * 1024 * 1024) {
        let res = patch_at(&s, &loc, offset, chunk).await;
        assert_eq!(res.status(), 202);
        offset += chunk.len() as u64;
        assert_eq!(range(&res), Some(format!("0-{}", offset - 1)));
        loc = location(&res);
    }
    let res = close_upload(&s, &loc, &sha256(&bytes), None).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}
