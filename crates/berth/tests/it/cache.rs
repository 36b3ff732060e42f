//! The pull-path caches never serve an answer a write has replaced.

use reqwest::Method;

use crate::harness::*;

async fn get_digest(s: &Server, path: &str) -> (u16, Option<String>) {
    let res = s.req(Method::GET, path).send().await.unwrap();
    (res.status().as_u16(), header(&res, "docker-content-digest"))
}

#[tokio::test]
async fn warm_answers_follow_tag_moves_and_deletes() {
    let s = Server::start();
    let (d1, _) = s.push_image("cache/app", "latest", b"layer one").await;
    let (d2, _) = s.push_image("cache/app", "other", b"layer two").await;
    for _ in 0..3 {
        assert_eq!(
            get_digest(&s, "/v2/cache/app/manifests/latest").await,
            (200, Some(d1.clone()))
        );
    }
    // Move the tag: the very next pull sees the new manifest.
    let (_, m2) = {
        let res = s
            .req(Method::GET, "/v2/cache/app/manifests/other")
            .send()
            .await
            .unwrap();
        (res.status(), res.bytes().await.unwrap())
    };
    assert_eq!(
        s.put_manifest("cache/app", "latest", OCI_MANIFEST, &m2)
            .await
            .status(),
        201
    );
    assert_eq!(
        get_digest(&s, "/v2/cache/app/manifests/latest").await,
        (200, Some(d2.clone()))
    );

    // Delete the tag: gone at once.
    let res = s
        .req(Method::DELETE, "/v2/cache/app/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(
        get_digest(&s, "/v2/cache/app/manifests/latest").await.0,
        404
    );

    // Delete a manifest by digest after warming both its tag and its digest.
    assert_eq!(get_digest(&s, "/v2/cache/app/manifests/other").await.0, 200);
    assert_eq!(
        get_digest(&s, &format!("/v2/cache/app/manifests/{d2}"))
            .await
            .0,
        200
    );
    let res = s
        .req(Method::DELETE, &format!("/v2/cache/app/manifests/{d2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(get_digest(&s, "/v2/cache/app/manifests/other").await.0, 404);
    assert_eq!(
        get_digest(&s, &format!("/v2/cache/app/manifests/{d2}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get_digest(&s, &format!("/v2/cache/app/manifests/{d1}"))
            .await
            .0,
        200
    );

    // Unlink a blob after warming its HEAD.
    let blob = s.push_blob("cache/app", b"loose blob").await;
    let head = |s: &Server| {
        s.req(Method::HEAD, &format!("/v2/cache/app/blobs/{blob}"))
            .send()
    };
    assert_eq!(head(&s).await.unwrap().status(), 200);
    let res = s
        .req(Method::DELETE, &format!("/v2/cache/app/blobs/{blob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(head(&s).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_tag_moves_end_on_the_last_write() {
    let s = Server::start();
    let mut manifests = Vec::new();
    for i in 0..10u8 {
        let (d, m) = s.push_image("cache/race", &format!("v{i}"), &[i; 64]).await;
        manifests.push((d, m));
    }
    let base = s.base.clone();
    let http = s.http.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (base, http, stop) = (base.clone(), http.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http
                    .get(format!("{base}/v2/cache/race/manifests/hot"))
                    .send()
                    .await;
            }
        }));
    }
    for round in 0..50 {
        let (_, m) = &manifests[round % manifests.len()];
        assert_eq!(
            s.put_manifest("cache/race", "hot", OCI_MANIFEST, m)
                .await
                .status(),
            201
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let expected = &manifests[49 % manifests.len()].0;
    for _ in 0..5 {
        assert_eq!(
            get_digest(&s, "/v2/cache/race/manifests/hot").await,
            (200, Some(expected.clone()))
        );
    }
}
