//! Repositories are isolated namespaces over one content-addressed store: what is pushed to
//! one is not readable through another, but identical bytes are stored once.

use super::*;

/// A blob pushed to A is 404 through B, even though B exists and the bytes are on disk.
#[tokio::test]
async fn blob_of_one_repository_is_not_readable_through_another() {
    let s = Server::start();
    let bytes = random_bytes(1, 5000);
    let d = s.push_blob("team/a", &bytes).await;
    s.push_blob("team/b", b"b's own blob").await;
    let path = format!("/v2/team/b/blobs/{d}");
    expect_error(get(&s, &path).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(head(&s, &path).await.status(), 404);
    let res = s
        .req(Method::GET, &path)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    expect_error(delete(&s, &path).await, 404, "BLOB_UNKNOWN").await;
    // Nor through a prefix or extension of A's name.
    for other in ["team", "team/a/x"] {
        assert_eq!(
            get(&s, &format!("/v2/{other}/blobs/{d}")).await.status(),
            404
        );
    }
    assert_blob(&s, &format!("/v2/team/a/blobs/{d}"), &bytes).await;
}

/// The same content pushed to A and B is readable in both and stored once.
#[tokio::test]
async fn same_content_in_two_repositories_is_stored_once() {
    let s = Server::start();
    let bytes = random_bytes(2, 100_000);
    let d = s.push_blob("team/a", &bytes).await;
    s.push_blob("team/b", &bytes).await;
    let loc = start_upload(&s, "team/c").await;
    for (i, c) in bytes.chunks(30_000).enumerate() {
        assert_eq!(patch_at(&s, &loc, i as u64 * 30_000, c).await.status(), 202);
    }
    assert_eq!(close_upload(&s, &loc, &d, None).await.status(), 201);
    for repo in ["team/a", "team/b", "team/c"] {
        assert_blob(&s, &format!("/v2/{repo}/blobs/{d}"), &bytes).await;
    }
    assert_eq!(blob_files(&s.data, "sha256").len(), 1, "one copy on disk");
    // Deleting it from one repository leaves the others intact.
    assert_eq!(
        delete(&s, &format!("/v2/team/a/blobs/{d}")).await.status(),
        202
    );
    assert_eq!(
        get(&s, &format!("/v2/team/a/blobs/{d}")).await.status(),
        404
    );
    assert_blob(&s, &format!("/v2/team/b/blobs/{d}"), &bytes).await;
}

/// A manifest in B may not reference blobs (or child manifests) that only A holds.
#[tokio::test]
async fn manifests_cannot_reference_another_repositorys_content() {
    let s = Server::start();
    let p = push_parts(&s, "team/a", 3).await;
    s.push_blob("team/b", b"b").await;
    let m = p.oci(None);
    expect_error(
        s.put_manifest("team/b", "v1", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(
        s.put_manifest("team/a", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    let idx = index(OCI_INDEX, &[(OCI_MANIFEST, &sha256(&m), m.len())], None);
    expect_error(
        s.put_manifest("team/b", "multi", OCI_INDEX, &idx).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

/// Manifests and tags of A are invisible in B; B's same-named tag is its own.
#[tokio::test]
async fn manifests_and_tags_are_per_repository() {
    let s = Server::start();
    let (da, _) = push_manifest(&s, "team/a", "v1", 4).await;
    let (db, _) = push_manifest(&s, "team/b", "v1", 5).await;
    expect_error(
        get(&s, &format!("/v2/team/b/manifests/{da}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        get(&s, &format!("/v2/team/b/blobs/{da}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let res = get(&s, "/v2/team/b/manifests/v1").await;
    assert_eq!(header(&res, "docker-content-digest"), Some(db.clone()));
    // Deleting A's manifest does not touch B's tag.
    assert_eq!(delete(&s, "/v2/team/a/manifests/v1").await.status(), 202);
    assert_eq!(get(&s, "/v2/team/b/manifests/v1").await.status(), 200);
    expect_error(
        delete(&s, &format!("/v2/team/b/manifests/{da}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Referrers are per repository too.
    let list: Value = get(&s, &format!("/v2/team/b/referrers/{da}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["manifests"], json!([]));
}

/// An upload session belongs to its repository: through another repository's path it is
/// 404 `BLOB_UPLOAD_UNKNOWN` for every method, and stays intact for its owner.
#[tokio::test]
async fn upload_sessions_are_per_repository() {
    let s = Server::start();
    let bytes = random_bytes(6, 200);
    let loc = start_upload(&s, "team/a").await;
    assert_eq!(patch_at(&s, &loc, 0, &bytes[..100]).await.status(), 202);
    let foreign = loc.replace("/team/a/", "/team/b/");
    assert_ne!(foreign, loc);
    expect_error(get(&s, &foreign).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch_at(&s, &foreign, 100, &bytes[100..]).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        close_upload(&s, &foreign, &sha256(&bytes[..100]), None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(delete(&s, &foreign).await, 404, "BLOB_UPLOAD_UNKNOWN").await;

    let res = get(&s, &loc).await;
    assert_eq!(res.status(), 204);
    assert_eq!(range(&res).as_deref(), Some("0-99"));
    assert_eq!(patch_at(&s, &loc, 100, &bytes[100..]).await.status(), 202);
    assert_eq!(
        close_upload(&s, &loc, &sha256(&bytes), None).await.status(),
        201
    );
    assert_eq!(
        get(&s, &format!("/v2/team/b/blobs/{}", sha256(&bytes)))
            .await
            .status(),
        404
    );
}
