//! Crash safety: `kill -9` during concurrent pushes loses nothing that was acknowledged,
//! leaves nothing partial visible, and interrupted pushes can be retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;

use crate::harness::*;

/// An image whose manifest PUT was answered 201.
#[derive(Clone, Debug)]
struct Acked {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

/// Pushes one image without panicking; `Ok` only once the manifest PUT returned 201.
async fn try_push(
    s: &ServerRef,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
) -> Result<Vec<u8>, String> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#).into_bytes();
    let c = try_blob(s, repo, &config).await?;
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        // Alternate monolithic and chunked uploads so both paths are interrupted.
        let d = if i % 2 == 0 {
            try_blob(s, repo, l).await?
        } else {
            try_chunked(s, repo, l).await?
        };
        descs.push((d, l.len()));
    }
    let refs: Vec<(&str, usize)> = descs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let manifest = oci_manifest(&c, config.len(), &refs, None);
    let res = s
        .http
        .put(format!("{}/v2/{repo}/manifests/{tag}", s.base))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(format!("manifest PUT {}", res.status()));
    }
    Ok(manifest)
}

/// The parts of a server the pushing tasks need.
#[derive(Clone)]
struct ServerRef {
    base: String,
    http: reqwest::Client,
}

async fn try_blob(s: &ServerRef, repo: &str, bytes: &[u8]) -> Result<String, String> {
    let digest = sha256(bytes);
    let res = s
        .http
        .post(format!(
            "{}/v2/{repo}/blobs/uploads/?digest={digest}",
            s.base
        ))
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(format!("blob POST {}", res.status()));
    }
    Ok(digest)
}

async fn try_chunked(s: &ServerRef, repo: &str, bytes: &[u8]) -> Result<String, String> {
    let digest = sha256(bytes);
    let res = s
        .http
        .post(format!("{}/v2/{repo}/blobs/uploads/", s.base))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 202 {
        return Err(format!("upload POST {}", res.status()));
    }
    let mut loc = location(&res);
    let mut offset = 0usize;
    for chunk in bytes.chunks(64 * 1024) {
        let end = offset + chunk.len() - 1;
        let res = s
            .http
            .patch(format!("{}{loc}", s.base))
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != 202 {
            return Err(format!("PATCH {}", res.status()));
        }
        loc = location(&res);
        offset = end + 1;
    }
    let res = s
        .http
        .put(format!("{}{loc}?digest={digest}", s.base))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != 201 {
        return Err(format!("upload PUT {}", res.status()));
    }
    Ok(digest)
}

fn layers_for(worker: u64, n: u64) -> Vec<Vec<u8>> {
    (0..3)
        .map(|i| {
            random_bytes(
                worker * 1_000_000 + n * 10 + i,
                4096 + ((worker * 7919 + n * 104_729 + i * 31) % (256 * 1024)) as usize,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged() {
    let server = Server::start();
    let s = ServerRef {
        base: server.base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (s, acked) = (s.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                // Workers share repositories so blob dedupe and links race too.
                let repo = format!("crash/repo{}", w % 3);
                let tag = format!("w{w}-n{n}");
                let layers = layers_for(w, n);
                match try_push(&s, &repo, &tag, &layers).await {
                    Ok(manifest) => acked.lock().unwrap().push(Acked {
                        repo,
                        tag,
                        manifest,
                        layers,
                    }),
                    Err(_) => return n,
                }
            }
            unreachable!()
        }));
    }
    // Let pushes get going, then pull the plug mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (data, _tmp) = server.kill9();
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 8,
        "too few pushes completed before the kill: {}",
        acked.len()
    );

    // A crash may leave orphans (a renamed blob whose row was never committed, an upload
    // file without its session) but never a corrupt or missing blob.
    let (_, report) = fsck(&data, false);
    assert!(!report.contains("corrupt:"), "fsck after crash:\n{report}");
    assert!(
        !report.contains("missing file"),
        "fsck after crash:\n{report}"
    );
    let (code, report) = fsck(&data, true);
    let ok = code == 0;
    assert!(ok, "fsck --repair failed:\n{report}");
    let (code, report) = fsck(&data, false);
    let ok = code == 0;
    assert!(
        ok && report.contains("clean"),
        "fsck not clean after repair:\n{report}"
    );

    let server = Server::start_on(&data, "127.0.0.1:0");
    for a in &acked {
        let res = server
            .req(Method::GET, &format!("/v2/{}/manifests/{}", a.repo, a.tag))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged {}:{} lost", a.repo, a.tag);
        assert_eq!(res.bytes().await.unwrap().as_ref(), a.manifest.as_slice());
        for l in &a.layers {
            let res = server
                .req(Method::GET, &format!("/v2/{}/blobs/{}", a.repo, sha256(l)))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(
                res.bytes().await.unwrap().as_ref(),
                l.as_slice(),
                "layer bytes differ"
            );
        }
    }

    // Every interrupted push can simply be retried.
    let s = ServerRef {
        base: server.base.clone(),
        http: s.http.clone(),
    };
    for w in 0..8u64 {
        let tag = format!("retry-w{w}");
        try_push(
            &s,
            &format!("crash/repo{}", w % 3),
            &tag,
            &layers_for(w, 999),
        )
        .await
        .expect("retried push");
    }
    eprintln!(
        "crash test: {} pushes acknowledged before kill -9, all intact",
        acked.len()
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let server = Server::start();
    let body = random_bytes(7, 4 * 1024 * 1024);
    let digest = sha256(&body);
    // A slow upload: 4 MiB in 16 pieces over ~1.6 s.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(pieces).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c
    });
    let url = server.url(&format!("/v2/slow/blobs/uploads/?digest={digest}"));
    let http = server.http.clone();
    let upload = tokio::spawn(async move {
        http.post(url)
            .header("content-length", body.len())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(upload.await.unwrap().expect("in-flight upload"), 201);
    // New connections are refused once the server is draining or gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = reqwest::Client::new().get(server.url("/v2/")).send().await;
    assert!(
        refused.is_err(),
        "server still accepted a new request after SIGTERM"
    );
}

use futures_util::StreamExt as _;
