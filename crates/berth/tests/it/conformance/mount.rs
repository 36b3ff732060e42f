//! "Mounting a blob from another repository".

use super::*;

async fn mount(s: &Server, repo: &str, query: &str) -> Response {
    s.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?{query}"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap()
}

/// `?mount=<digest>&from=<repo>` of a blob in `from` is 201 with `Location` and
/// `Docker-Content-Digest`; the blob is then readable in the target, without a second copy.
#[tokio::test]
async fn mount_from_another_repository() {
    let s = Server::start();
    let bytes = random_bytes(31, 20_000);
    let d = s.push_blob("src/app", &bytes).await;
    let res = mount(&s, "dst/app", &format!("mount={d}&from=src/app")).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    let loc = location(&res);
    assert!(
        loc.contains("dst/app"),
        "Location points into the target: {loc}"
    );
    assert_blob(&s, &loc, &bytes).await;
    assert_blob(&s, &format!("/v2/dst/app/blobs/{d}"), &bytes).await;
    assert_eq!(blob_files(&s.data, "sha256").len(), 1);
    // The mounted blob can be used by manifests in the target.
    let c = s.push_blob("dst/app", b"{}").await;
    let m = oci_manifest(&c, 2, &[(&d, bytes.len())], None);
    assert_eq!(
        s.put_manifest("dst/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
}

/// When the blob is not in `from`, the registry falls back to an upload: 202 with a fresh
/// session `Location` that works like any other.
#[tokio::test]
async fn mount_of_missing_blob_starts_an_upload() {
    let s = Server::start();
    let bytes = random_bytes(32, 1000);
    let d = sha256(&bytes);
    s.push_blob("src/app", b"unrelated").await;
    // Present elsewhere (in "other/app") but not in `from`: still no mount.
    s.push_blob("other/app", &bytes).await;
    for query in [
        format!("mount={d}&from=src/app"),
        format!("mount={d}&from=never/pushed"),
        format!("mount={ABSENT}&from=src/app"),
    ] {
        let res = mount(&s, "dst/app", &query).await;
        assert_eq!(res.status(), 202, "{query}");
        assert!(header(&res, "docker-upload-uuid").is_some());
        assert_eq!(range(&res).as_deref(), Some("0-0"));
        let loc = location(&res);
        let st = get(&s, &loc).await;
        assert_eq!(st.status(), 204, "the fallback session exists");
    }
    expect_error(
        get(&s, &format!("/v2/dst/app/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;

    let res = mount(&s, "dst/app", &format!("mount={d}&from=src/app")).await;
    let res = close_upload(&s, &location(&res), &d, Some((&bytes, None))).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &format!("/v2/dst/app/blobs/{d}"), &bytes).await;
}

/// Without `from`, the registry MAY mount any blob it can find: berth does (201).
#[tokio::test]
async fn automatic_mount_without_from() {
    let s = Server::start();
    let bytes = random_bytes(33, 5000);
    let d = s.push_blob("src/app", &bytes).await;
    let res = mount(&s, "dst/app", &format!("mount={d}")).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        header(&res, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_blob(&s, &location(&res), &bytes).await;
    // Nothing to find: an upload session instead.
    let res = mount(&s, "dst/app", &format!("mount={ABSENT}")).await;
    assert_eq!(res.status(), 202);
    assert_eq!(get(&s, &location(&res)).await.status(), 204);
}

/// A mount of a sha512 blob works like a sha256 one.
#[tokio::test]
async fn mount_sha512_blob() {
    let s = Server::start();
    let bytes = random_bytes(34, 777);
    let d = sha512(&bytes);
    let res = s
        .req(
            Method::POST,
            &format!("/v2/src/app/blobs/uploads/?digest={d}"),
        )
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = mount(&s, "dst/app", &format!("mount={d}&from=src/app")).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &format!("/v2/dst/app/blobs/{d}"), &bytes).await;
}

/// A `from` that is not a valid repository name cannot be mounted from; like any other
/// impossible mount, that is a fallback upload session (202), not an error (Docker's spec:
/// "If a mount fails due to invalid repository or digest arguments, the registry will fall
/// back to the standard upload behavior").
#[tokio::test]
async fn mount_from_invalid_repository_name_falls_back_to_upload() {
    let s = Server::start();
    let bytes = random_bytes(35, 100);
    let d = s.push_blob("src/app", &bytes).await;
    for from in ["Src/App", "a..b", "-x"] {
        let res = mount(&s, "dst/app", &format!("mount={d}&from={from}")).await;
        assert_eq!(res.status(), 202, "from={from}");
        assert_eq!(get(&s, &location(&res)).await.status(), 204);
    }
    expect_error(
        get(&s, &format!("/v2/dst/app/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}
