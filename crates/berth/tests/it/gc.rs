//! Online garbage collection: what it removes, what it must never remove, and pushes that
//! race it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// `POST /api/v1/gc` with `body`; the report.
async fn gc(s: &Server, body: Value) -> Value {
    let (status, report) = s.send_json(Method::POST, "/api/v1/gc", &body).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Waits until the wall clock's second changes: berth records push and link times in whole
/// seconds, and even a zero grace period spares what happened in the current one.
async fn past_this_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let rest = std::time::Duration::from_millis(1000 - u64::from(now.subsec_millis()));
    tokio::time::sleep(rest + std::time::Duration::from_millis(20)).await;
}

async fn blob_status(s: &Server, repo: &str, digest: &str) -> u16 {
    s.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every blob file under the data directory, as `sha256:<hex>`.
fn stored_blobs(data: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let root = data.join("blobs").join("sha256");
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.insert(format!("sha256:{}", file.file_name().to_string_lossy()));
        }
    }
    found
}

/// The digests an OCI image manifest references (config and layers).
fn referenced(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn unreferenced_blobs_go_referenced_ones_stay_and_the_grace_period_protects() {
    let s = Server::start();
    let (_, manifest) = s.push_image("app", "v1", b"a layer in use").await;
    let orphan = random_bytes(7, 3000);
    let orphan_digest = s.push_blob("app", &orphan).await;

    // Within the default grace period (1 h) nothing is touched.
    let r = gc(&s, json!({})).await;
    assert_eq!(
        (r["blobs"].as_u64(), r["grace_secs"].as_u64()),
        (Some(0), Some(3600))
    );

    past_this_second().await;
    let dry = gc(&s, json!({"grace": "0s", "dry_run": true})).await;
    assert_eq!(
        (dry["blobs"].as_u64(), dry["bytes"].as_u64()),
        (Some(1), Some(3000))
    );
    assert_eq!(
        blob_status(&s, "app", &orphan_digest).await,
        200,
        "a dry run removes nothing"
    );

    let r = gc(&s, json!({"grace": "0s"})).await;
    assert_eq!(
        (r["blobs"].as_u64(), r["bytes"].as_u64()),
        (Some(1), Some(3000))
    );
    assert_eq!(blob_status(&s, "app", &orphan_digest).await, 404);
    let expected: BTreeSet<String> = referenced(&manifest).into_iter().collect();
    assert_eq!(
        stored_blobs(&s.data),
        expected,
        "only the image's blobs are left on disk"
    );
    for d in referenced(&manifest) {
        assert_eq!(blob_status(&s, "app", &d).await, 200);
    }
    // A second run finds nothing; pushing the orphan again works (GC left no row behind).
    let r = gc(&s, json!({"grace": "0s"})).await;
    assert_eq!(r["blobs"], 0);
    assert_eq!(s.push_blob("app", &orphan).await, orphan_digest);
    assert_eq!(blob_status(&s, "app", &orphan_digest).await, 200);
}

#[tokio::test]
async fn index_children_and_referrers_survive_delete_untagged() {
    let s = Server::start();
    // A two-platform index, tagged; its children are pushed untagged (by digest).
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (digest, bytes) = s.push_image("multi", "scratch", arch.as_bytes()).await;
        children.push((digest, bytes.len()));
    }
    let res = s
        .req(Method::DELETE, "/v2/multi/manifests/scratch")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "the children are now untagged");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().zip(["amd64", "arm64"]).map(|((d, n), arch)| json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": n,
            "platform": {"os": "linux", "architecture": arch}
        })).collect::<Vec<_>>(),
    });
    let index = serde_json::to_vec(&index).unwrap();
    assert_eq!(
        s.put_manifest("multi", "v1", OCI_INDEX, &index)
            .await
            .status(),
        201
    );

    // A signature of the index (a referrer), untagged, and a stray untagged image with a
    // referrer of its own.
    let (sig_config, sig_layer) = (b"{}".as_slice(), b"signature".as_slice());
    let c = s.push_blob("multi", sig_config).await;
    let l = s.push_blob("multi", sig_layer).await;
    let subject =
        |d: &str, n: usize| json!({"subject": {"mediaType": OCI_INDEX, "digest": d, "size": n}});
    let signature = oci_manifest(
        &c,
        2,
        &[(&l, 9)],
        Some(subject(&sha256(&index), index.len())),
    );
    let signature_digest = sha256(&signature);
    let res = s
        .put_manifest("multi", &signature_digest, OCI_MANIFEST, &signature)
        .await;
    assert_eq!(res.status(), 201);
    let (stray, stray_bytes) = s.push_image("multi", "tmp", b"stray").await;
    let res = s
        .req(Method::DELETE, "/v2/multi/manifests/tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let stray_sig = oci_manifest(
        &c,
        2,
        &[(&l, 9)],
        Some(
            json!({"subject": {"mediaType": OCI_MANIFEST, "digest": stray, "size": stray_bytes.len()}}),
        ),
    );
    let stray_sig_digest = sha256(&stray_sig);
    assert_eq!(
        s.put_manifest("multi", &stray_sig_digest, OCI_MANIFEST, &stray_sig)
            .await
            .status(),
        201
    );

    past_this_second().await;
    let dry = gc(
        &s,
        json!({"grace": "0s", "delete_untagged": true, "dry_run": true}),
    )
    .await;
    assert_eq!(
        dry["manifests"],
        json!([{"repository": "multi", "digest": stray}])
    );

    // The stray goes, then its referrer (its subject is gone); children and the index's
    // signature stay.
    let r = gc(&s, json!({"grace": "0s", "delete_untagged": true})).await;
    assert_eq!(
        r["manifests"],
        json!([{"repository": "multi", "digest": stray}, {"repository": "multi", "digest": stray_sig_digest}])
    );
    for (d, _) in &children {
        let res = s
            .req(Method::GET, &format!("/v2/multi/manifests/{d}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "an index child survives");
    }
    let referrers: Value = s
        .req(
            Method::GET,
            &format!("/v2/multi/referrers/{}", sha256(&index)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        referrers["manifests"][0]["digest"],
        signature_digest.as_str()
    );

    // Untag the index: it goes, then its children and its signature, then every blob.
    let res = s
        .req(Method::DELETE, "/v2/multi/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    past_this_second().await;
    let r = gc(&s, json!({"grace": "0s", "delete_untagged": true})).await;
    let removed: BTreeSet<String> = r["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = [
        sha256(&index),
        signature_digest.clone(),
        children[0].0.clone(),
        children[1].0.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(removed, expected);
    assert_eq!(
        stored_blobs(&s.data),
        BTreeSet::new(),
        "nothing is left on disk"
    );
}

/// One image a load-test client pushes: a config, shared layers and one of its own.
struct Image {
    repo: String,
    tag: String,
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn image(client: u64, n: u64, shared: &[Vec<u8>]) -> Image {
    let config = format!("{{\"client\":{client},\"n\":{n}}}").into_bytes();
    let own = random_bytes(client * 1000 + n, 2048 + (n as usize % 7) * 512);
    let mut blobs = vec![config, own];
    // Two shared layers, chosen so every pair of clients overlaps.
    blobs.push(shared[((client + n) % shared.len() as u64) as usize].clone());
    blobs.push(shared[((client * 3 + n) % shared.len() as u64) as usize].clone());
    blobs.dedup();
    let layers: Vec<(String, usize)> = blobs[1..].iter().map(|b| (sha256(b), b.len())).collect();
    let refs: Vec<(&str, usize)> = layers.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let manifest = oci_manifest(&sha256(&blobs[0]), blobs[0].len(), &refs, None);
    Image {
        repo: format!("load/c{}", client % 3),
        tag: format!("c{client}-n{n}"),
        blobs,
        manifest,
    }
}

/// Pushes `img` as docker does (HEAD each blob, upload the missing ones, PUT the manifest);
/// a manifest refused because GC removed a blob between the HEAD and the PUT is pushed
/// again with every blob uploaded. Returns how many retries it took.
async fn push_racing_gc(s: &Server, img: &Image) -> u64 {
    for attempt in 0..20 {
        for blob in &img.blobs {
            let digest = sha256(blob);
            let head = s
                .req(Method::HEAD, &format!("/v2/{}/blobs/{digest}", img.repo))
                .send()
                .await
                .unwrap();
            if attempt > 0 || head.status() != 200 {
                s.push_blob(&img.repo, blob).await;
            }
        }
        let res = s
            .put_manifest(&img.repo, &img.tag, OCI_MANIFEST, &img.manifest)
            .await;
        if res.status() == 201 {
            return attempt;
        }
        let code = error_code(res).await;
        assert_eq!(
            code, "MANIFEST_BLOB_UNKNOWN",
            "the only refusal a race with GC may cause"
        );
    }
    panic!(
        "{}:{} could not be pushed in 20 attempts",
        img.repo, img.tag
    );
}

#[tokio::test]
async fn gc_with_zero_grace_never_loses_an_acknowledged_image() {
    let s = Arc::new(Server::start());
    let shared: Vec<Vec<u8>> = (0..5).map(|i| random_bytes(900 + i, 4096)).collect();
    let (clients, per_client) = (8u64, 24u64);
    let done = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let collector = {
        let (s, done, passes) = (s.clone(), done.clone(), passes.clone());
        tokio::spawn(async move {
            let mut removed = 0;
            while !done.load(Ordering::Relaxed) {
                let r = gc(&s, json!({"grace": "0s"})).await;
                removed += r["blobs"].as_u64().unwrap();
                passes.fetch_add(1, Ordering::Relaxed);
            }
            removed
        })
    };
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (s, shared) = (s.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let (mut kept, mut retries, mut pushed) = (Vec::new(), 0, 0);
            for n in 0..per_client {
                pushed += 1;
                let img = image(client, n, &shared);
                retries += push_racing_gc(&s, &img).await;
                // Every third image is deleted again, leaving its blobs to the collector...
                if n % 3 == 2 {
                    let digest = sha256(&img.manifest);
                    let res = s
                        .req(
                            Method::DELETE,
                            &format!("/v2/{}/manifests/{digest}", img.repo),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 202);
                } else {
                    kept.push(img);
                }
                // ...and pushed again about a second later, when GC may be removing them.
                if n % 3 == 1 && n >= 7 {
                    let mut again = image(client, n - 5, &shared);
                    again.tag = format!("{}-again", again.tag);
                    retries += push_racing_gc(&s, &again).await;
                    pushed += 1;
                    kept.push(again);
                }
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
            (kept, retries, pushed)
        }));
    }
    let (mut kept, mut retries, mut pushed) = (Vec::new(), 0, 0);
    for t in tasks {
        let (k, r, p) = t.await.unwrap();
        kept.extend(k);
        retries += r;
        pushed += p;
    }
    done.store(true, Ordering::Relaxed);
    let removed_during = collector.await.unwrap();
    let passes = passes.load(Ordering::Relaxed);
    eprintln!(
        "gc under load: {pushed} images pushed, {} kept, {passes} GC passes removed {removed_during} blobs, {retries} pushes retried",
        kept.len()
    );
    assert!(passes >= 3, "GC ran while clients pushed ({passes} passes)");
    assert!(
        removed_during > 0,
        "GC removed deleted images' blobs while clients pushed"
    );

    // Every acknowledged image that was not deleted is whole, byte for byte.
    for img in &kept {
        let res = s
            .req(
                Method::GET,
                &format!("/v2/{}/manifests/{}", img.repo, img.tag),
            )
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}:{}", img.repo, img.tag);
        assert_eq!(res.bytes().await.unwrap(), img.manifest.as_slice());
        for blob in &img.blobs {
            let res = s
                .req(
                    Method::GET,
                    &format!("/v2/{}/blobs/{}", img.repo, sha256(blob)),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                200,
                "a blob of {}:{} is gone",
                img.repo,
                img.tag
            );
            assert_eq!(sha256(&res.bytes().await.unwrap()), sha256(blob));
        }
    }
    // A last pass, once the last deletions are out of the current second (always
    // spared), leaves exactly the blobs the kept images reference.
    past_this_second().await;
    gc(&s, json!({"grace": "0s"})).await;
    let expected: BTreeSet<String> = kept
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| sha256(b)))
        .collect();
    assert_eq!(stored_blobs(&s.data), expected);
}

/// Starts an upload session in `repo`; its location.
async fn start_upload(s: &Server, repo: &str) -> String {
    let res = s
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    location(&res)
}

/// Sends one chunk to an upload session; the status.
async fn patch(s: &Server, location: &str, chunk: &[u8]) -> u16 {
    s.req(Method::PATCH, location)
        .header("content-type", "application/octet-stream")
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn idle_uploads_expire_and_busy_ones_do_not() {
    let s = Server::start_with(&[("BERTH_UPLOAD_IDLE_TIMEOUT", "2s")]);
    let idle = start_upload(&s, "app").await;
    assert_eq!(patch(&s, &idle, b"abandoned half").await, 202);
    let idle_id = idle
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    assert!(s.data.join("uploads").join(&idle_id).exists());

    // A slow but steady client: a chunk every 700 ms for 4 s keeps its session alive.
    let busy = start_upload(&s, "app").await;
    let mut sent = Vec::new();
    for i in 0..6u8 {
        let chunk = vec![i; 1000];
        assert_eq!(patch(&s, &busy, &chunk).await, 202, "chunk {i}");
        sent.extend(chunk);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }

    let res = s.req(Method::GET, &idle).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "BLOB_UPLOAD_UNKNOWN");
    assert!(
        !s.data.join("uploads").join(&idle_id).exists(),
        "its data is removed"
    );

    let digest = sha256(&sent);
    let sep = if busy.contains('?') { '&' } else { '?' };
    let res = s
        .req(Method::PUT, &format!("{busy}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(blob_status(&s, "app", &digest).await, 200);
}

#[tokio::test]
async fn delete_with_cascade_takes_the_referrers_along() {
    let s = crate::auth::secured();
    let c = s.push_blob("signed/app", b"{}").await;
    let l = s.push_blob("signed/app", b"signature").await;
    // signature_of: an untagged referrer of `subject`.
    let signature_of = |subject: &str, n: usize| {
        oci_manifest(
            &c,
            2,
            &[(&l, 9)],
            Some(json!({"subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": n}})),
        )
    };
    let mut images = Vec::new();
    for name in ["plain", "cascade"] {
        let (digest, bytes) = s.push_image("signed/app", name, name.as_bytes()).await;
        let sig = signature_of(&digest, bytes.len());
        let sig_digest = sha256(&sig);
        assert_eq!(
            s.put_manifest("signed/app", &sig_digest, OCI_MANIFEST, &sig)
                .await
                .status(),
            201
        );
        images.push((digest, sig_digest));
    }
    let status = |d: String| {
        let s = &s;
        async move {
            s.req(Method::GET, &format!("/v2/signed/app/manifests/{d}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    // A plain delete leaves the signature behind.
    let (plain, plain_sig) = images[0].clone();
    let (code, v) = s
        .send_json(
            Method::DELETE,
            &format!("/api/v1/manifests?repository=signed/app&digest={plain}"),
            &Value::Null,
        )
        .await;
    assert_eq!((code, v["removed"].clone()), (200, json!([plain])));
    assert_eq!(status(plain_sig).await, 200);

    // --cascade, from the CLI: the image and its signature.
    let (with, with_sig) = images[1].clone();
    let (ok, out, err) =
        crate::auth::admin_cli(&s, &["delete", &format!("signed/app@{with}"), "--cascade"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("deleted signed/app@{with}"),
            format!("deleted signed/app@{with_sig}")
        ]
    );
    assert_eq!(status(with.clone()).await, 404);
    assert_eq!(status(with_sig).await, 404);
    let res = s
        .req(Method::GET, "/v2/signed/app/manifests/cascade")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "its tag went with it");

    // An immutable tag refuses a cascade like any delete.
    let (kept, _) = s.push_image("signed/app", "v1", b"kept").await;
    let (code, _) = s
        .send_json(
            Method::POST,
            "/api/v1/immutability-rules",
            &json!({"repositories": "signed/*", "tags": ["v1"]}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, v) = s
        .send_json(
            Method::DELETE,
            &format!("/api/v1/manifests?repository=signed/app&digest={kept}&cascade=true"),
            &Value::Null,
        )
        .await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(status(kept).await, 200);
}

#[tokio::test]
async fn the_schedule_applies_lifecycle_policies_then_collects_garbage() {
    let s = Server::start_with(&[("BERTH_GC_INTERVAL", "1s"), ("BERTH_GC_GRACE", "0s")]);
    let (older, older_manifest) = s.push_image("sched", "tmp", b"first build").await;
    past_this_second().await;
    let (newer, newer_manifest) = s.push_image("sched", "tmp", b"second build").await;
    let res = s
        .req(Method::DELETE, "/v2/sched/manifests/tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let orphan = s.push_blob("sched", &random_bytes(99, 4000)).await;
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let res = s
        .req(Method::PUT, "/api/v1/lifecycle?scope=sched")
        .body(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Without any request from us: the older untagged build expires, then its own layer
    // and the orphan are collected.
    let older_layer = referenced(&older_manifest)[1].clone();
    let mut gone = false;
    for _ in 0..80 {
        let manifest = s
            .req(Method::GET, &format!("/v2/sched/manifests/{older}"))
            .send()
            .await
            .unwrap();
        if manifest.status() == 404
            && blob_status(&s, "sched", &older_layer).await == 404
            && blob_status(&s, "sched", &orphan).await == 404
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the scheduled run did not expire and collect within 8 s"
    );
    let res = s
        .req(Method::GET, &format!("/v2/sched/manifests/{newer}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the newest untagged build is within the count"
    );
    for d in referenced(&newer_manifest) {
        assert_eq!(blob_status(&s, "sched", &d).await, 200);
    }
    let (_, audit) = s
        .send_json(
            Method::GET,
            "/api/v1/audit?repository=sched&kind=delete",
            &Value::Null,
        )
        .await;
    let deletes: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["digest"].as_str().unwrap(),
                e["actor"]["account"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(deletes, [(older.as_str(), "berth-gc")]);
}
