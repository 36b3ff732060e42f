//! `berth fsck`: corrupt, missing and orphaned blobs are found, and repaired on request.

use reqwest::Method;

use crate::harness::*;

fn blob_file(data: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    data.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[tokio::test]
async fn finds_and_repairs_corrupt_missing_and_orphaned_blobs() {
    let s = Server::start();
    let good = s.push_blob("fsck/repo", b"good content").await;
    let corrupt = s.push_blob("fsck/repo", b"content that will rot").await;
    let missing = s.push_blob("fsck/repo", b"content that will vanish").await;
    let (data, _tmp) = s.kill9();

    let (code, out) = fsck(&data, false);
    assert_eq!(code, 0, "fresh registry should be clean:\n{out}");
    assert!(out.contains("verified 3 blobs"), "{out}");

    std::fs::write(blob_file(&data, &corrupt), b"content that will ROT").unwrap();
    std::fs::remove_file(blob_file(&data, &missing)).unwrap();
    let orphan = sha256(b"orphan");
    std::fs::create_dir_all(blob_file(&data, &orphan).parent().unwrap()).unwrap();
    std::fs::write(blob_file(&data, &orphan), b"orphan").unwrap();

    let (code, out) = fsck(&data, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("corrupt: {corrupt} (found)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("missing file for recorded blob: {missing}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("orphaned blob file: {orphan}")),
        "{out}"
    );
    assert!(
        !out.contains(&good),
        "the good blob is not a finding:\n{out}"
    );
    // Without --repair nothing changes.
    assert!(blob_file(&data, &corrupt).exists() && blob_file(&data, &orphan).exists());

    let (code, out) = fsck(&data, true);
    assert_eq!(code, 0, "{out}");
    let (code, out) = fsck(&data, false);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("clean") && out.contains("verified 1 blobs"),
        "{out}"
    );

    // The corrupt blob is no longer served (a client re-pushes it); the good one still is.
    let s = Server::start_on(&data, "127.0.0.1:0");
    let res = s
        .req(Method::GET, &format!("/v2/fsck/repo/blobs/{corrupt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = s
        .req(Method::GET, &format!("/v2/fsck/repo/blobs/{good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"good content");
    s.push_blob("fsck/repo", b"content that will rot").await;
    let res = s
        .req(Method::GET, &format!("/v2/fsck/repo/blobs/{corrupt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        b"content that will rot"
    );
}
