//! "Content Management": deleting tags, manifests and blobs.

use super::*;

/// DELETE of a tag is 202; the tag is gone (404) and unlisted, the manifest stays readable by
/// digest and by its other tags.
#[tokio::test]
async fn delete_tag() {
    let s = Server::start();
    let (d, m) = push_manifest(&s, "team/app", "v1", 1).await;
    let res = s.put_manifest("team/app", "stable", OCI_MANIFEST, &m).await;
    assert_eq!(res.status(), 201);
    let res = delete(&s, "/v2/team/app/manifests/v1").await;
    assert_eq!(res.status(), 202);
    expect_error(
        get(&s, "/v2/team/app/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        get(&s, &format!("/v2/team/app/manifests/{d}"))
            .await
            .status(),
        200
    );
    assert_eq!(get(&s, "/v2/team/app/manifests/stable").await.status(), 200);
    let tags: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["stable"]));
}

/// DELETE of a manifest by digest is 202; afterwards GET/HEAD by digest and by each of its
/// tags is 404, and the tags are unlisted.
#[tokio::test]
async fn delete_manifest_by_digest() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 2).await;
    let m = p.oci(None);
    let d = sha256(&m);
    let res = s
        .put_manifest("team/app", &format!("{d}?tag=a&tag=b"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(res.status(), 201);
    let (keep, _) = push_manifest(&s, "team/app", "keep", 3).await;

    assert_eq!(
        delete(&s, &format!("/v2/team/app/manifests/{d}"))
            .await
            .status(),
        202
    );
    for r in [d.as_str(), "a", "b"] {
        let path = format!("/v2/team/app/manifests/{r}");
        expect_error(get(&s, &path).await, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(head(&s, &path).await.status(), 404);
    }
    let tags: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["keep"]));
    assert_eq!(
        get(&s, &format!("/v2/team/app/manifests/{keep}"))
            .await
            .status(),
        200
    );

    // Its blobs are no longer in use and may now be deleted.
    assert_eq!(
        delete(&s, &format!("/v2/team/app/blobs/{}", p.layer))
            .await
            .status(),
        202
    );
    // With its layer gone from the repository, the manifest cannot be pushed again.
    expect_error(
        s.put_manifest("team/app", "a", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

/// DELETE of a blob is 202; afterwards GET and HEAD are 404.
#[tokio::test]
async fn delete_blob() {
    let s = Server::start();
    let bytes = random_bytes(4, 1000);
    let d = s.push_blob("team/app", &bytes).await;
    let path = format!("/v2/team/app/blobs/{d}");
    assert_eq!(delete(&s, &path).await.status(), 202);
    expect_error(get(&s, &path).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(head(&s, &path).await.status(), 404);
    // Pushing it again works.
    s.push_blob("team/app", &bytes).await;
    assert_blob(&s, &path, &bytes).await;
}

/// Deleting what does not exist is 404 with the matching code.
#[tokio::test]
async fn delete_unknown_is_404() {
    let s = Server::start();
    push_manifest(&s, "team/app", "v1", 5).await;
    expect_error(
        delete(&s, "/v2/team/app/manifests/nope").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        delete(&s, &format!("/v2/team/app/manifests/{ABSENT}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        delete(&s, &format!("/v2/team/app/blobs/{ABSENT}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // "If the repository does not exist, the response MUST return 404 Not Found."
    expect_error(
        delete(&s, &format!("/v2/team/nope/manifests/{ABSENT}")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    expect_error(
        delete(&s, "/v2/team/nope/manifests/v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    assert_eq!(
        delete(&s, &format!("/v2/team/nope/blobs/{ABSENT}"))
            .await
            .status(),
        404
    );
    // Deleting twice: the second one finds nothing.
    assert_eq!(delete(&s, "/v2/team/app/manifests/v1").await.status(), 202);
    expect_error(
        delete(&s, "/v2/team/app/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// berth refuses deletes that would leave a dangling reference (a blob a manifest uses, a
/// manifest an index lists) with the spec's "deletion disabled" answer (400 or 405), and
/// changes nothing.
#[tokio::test]
async fn delete_of_referenced_content_is_refused() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 6).await;
    let m = p.oci(None);
    assert_eq!(
        s.put_manifest("team/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let d = sha256(&m);
    let idx = index(OCI_INDEX, &[(OCI_MANIFEST, &d, m.len())], None);
    assert_eq!(
        s.put_manifest("team/app", "multi", OCI_INDEX, &idx)
            .await
            .status(),
        201
    );

    let res = delete(&s, &format!("/v2/team/app/blobs/{}", p.layer)).await;
    let status = res.status().as_u16();
    assert!(status == 400 || status == 405, "{status}");
    expect_error(res, status, "UNSUPPORTED").await;
    assert_blob(
        &s,
        &format!("/v2/team/app/blobs/{}", p.layer),
        &p.layer_bytes,
    )
    .await;

    let res = delete(&s, &format!("/v2/team/app/manifests/{d}")).await;
    let status = res.status().as_u16();
    assert!(status == 400 || status == 405, "{status}");
    expect_error(res, status, "UNSUPPORTED").await;
    assert_eq!(get(&s, "/v2/team/app/manifests/v1").await.status(), 200);

    // Deleting the index first releases the child.
    assert_eq!(
        delete(&s, &format!("/v2/team/app/manifests/{}", sha256(&idx)))
            .await
            .status(),
        202
    );
    assert_eq!(
        delete(&s, &format!("/v2/team/app/manifests/{d}"))
            .await
            .status(),
        202
    );
}
