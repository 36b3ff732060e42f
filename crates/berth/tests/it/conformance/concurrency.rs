//! Concurrent clients: the same blob or manifest pushed at once by many.

use futures_util::future::join_all;

use super::*;

/// 16 concurrent pushes of the same blob to the same repository (half POST+PUT, half single
/// POST) all succeed; one file is stored and no upload is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_the_same_blob() {
    let s = Server::start();
    let bytes = random_bytes(1, 2 * 1024 * 1024);
    let d = sha256(&bytes);
    let pushes = (0..16).map(|i| {
        let (s, bytes, d) = (&s, bytes.clone(), d.clone());
        async move {
            if i % 2 == 0 {
                let loc = start_upload(s, "team/app").await;
                close_upload(s, &loc, &d, Some((&bytes, None)))
                    .await
                    .status()
                    .as_u16()
            } else {
                s.req(
                    Method::POST,
                    &format!("/v2/team/app/blobs/uploads/?digest={d}"),
                )
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
            }
        }
    });
    let statuses = join_all(pushes).await;
    assert!(statuses.iter().all(|&c| c == 201), "{statuses:?}");
    assert_eq!(blob_files(&s.data, "sha256").len(), 1);
    assert_eq!(upload_files(&s.data), 0);
    assert_blob(&s, &format!("/v2/team/app/blobs/{d}"), &bytes).await;
}

/// Concurrent pushes of the same blob to 8 different repositories: one copy, readable in each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_to_different_repositories() {
    let s = Server::start();
    let bytes = random_bytes(2, 512 * 1024);
    let d = sha256(&bytes);
    let pushes = (0..8).map(|i| {
        let (s, bytes) = (&s, bytes.clone());
        async move { s.push_blob(&format!("team/app{i}"), &bytes).await }
    });
    join_all(pushes).await;
    for i in 0..8 {
        assert_blob(&s, &format!("/v2/team/app{i}/blobs/{d}"), &bytes).await;
    }
    assert_eq!(blob_files(&s.data, "sha256").len(), 1);
}

/// Concurrent pushes of the same manifest (by the same tag, and by digest with the same
/// extra tag) all succeed with the same digest; the result is one manifest, one tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_the_same_manifest() {
    let s = Server::start();
    let p = push_parts(&s, "team/app", 3).await;
    let m = p.oci(None);
    let d = sha256(&m);
    let pushes = (0..16).map(|i| {
        let (s, m, d) = (&s, m.clone(), d.clone());
        async move {
            let reference = if i % 2 == 0 {
                "latest".to_owned()
            } else {
                format!("{d}?tag=latest")
            };
            let res = s
                .put_manifest("team/app", &reference, OCI_MANIFEST, &m)
                .await;
            (res.status().as_u16(), header(&res, "docker-content-digest"))
        }
    });
    for (status, digest) in join_all(pushes).await {
        assert_eq!(status, 201);
        assert_eq!(digest.as_deref(), Some(d.as_str()));
    }
    let res = get(&s, "/v2/team/app/manifests/latest").await;
    assert!(res.bytes().await.unwrap().as_ref() == m.as_slice());
    let tags: Value = get(&s, "/v2/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["latest"]));
}

/// Concurrent PATCHes of the same first chunk to one session: exactly one is accepted, the
/// others are 416 — the session never holds the bytes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunks_to_one_session() {
    let s = Server::start();
    let bytes = random_bytes(4, 256 * 1024);
    let loc = start_upload(&s, "team/app").await;
    let patches = (0..8).map(|_| patch_at(&s, &loc, 0, &bytes));
    let statuses: Vec<u16> = join_all(patches)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&c| c == 202 || c == 416),
        "{statuses:?}"
    );
    let end = bytes.len() - 1;
    assert_eq!(range(&get(&s, &loc).await), Some(format!("0-{end}")));
    let res = close_upload(&s, &loc, &sha256(&bytes), None).await;
    assert_eq!(res.status(), 201);
    assert_blob(&s, &location(&res), &bytes).await;
}
