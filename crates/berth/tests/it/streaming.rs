//! Streaming: a 2 GiB blob is pushed and pulled without the server's memory growing.

use futures_util::StreamExt;
use reqwest::Method;
use sha2::Digest as _;

use crate::harness::*;

const MIB: usize = 1024 * 1024;

/// Peak resident set size (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Chunk `i` of the big blob: 1 MiB of a fixed pattern stamped with its index.
fn chunk(pattern: &[u8], i: usize) -> Vec<u8> {
    let mut c = pattern.to_vec();
    c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_push_and_pull_keep_server_memory_flat() {
    let mib: usize = std::env::var("BERTH_TEST_BIG_BLOB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let s = Server::start();
    // Warm up every code path on a small blob so the baseline includes them.
    s.push_image("big/warm", "v1", &random_bytes(3, 3 * MIB))
        .await;
    let baseline = vm_hwm_kib(s.pid());

    let pattern = random_bytes(11, MIB);
    let mut hasher = sha2::Sha256::new();
    for i in 0..mib {
        hasher.update(chunk(&pattern, i));
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));

    let res = s
        .req(Method::POST, "/v2/big/blob/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let loc = location(&res);
    let pat = pattern.clone();
    let body =
        futures_util::stream::iter(0..mib).map(move |i| Ok::<_, std::io::Error>(chunk(&pat, i)));
    let res = s
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(header(&res, "range"), Some(format!("0-{}", mib * MIB - 1)));
    let res = s
        .req(Method::PUT, &format!("{}?digest={digest}", location(&res)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let after_push = vm_hwm_kib(s.pid());

    let res = s
        .req(Method::GET, &format!("/v2/big/blob/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "content-length"),
        Some((mib * MIB).to_string())
    );
    let mut stream = res.bytes_stream();
    let mut pulled = sha2::Sha256::new();
    let mut n = 0usize;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        n += c.len();
        pulled.update(&c);
    }
    assert_eq!(n, mib * MIB);
    assert_eq!(format!("sha256:{}", hex::encode(pulled.finalize())), digest);
    let after_pull = vm_hwm_kib(s.pid());

    eprintln!(
        "streaming {mib} MiB: server peak RSS {} MiB after warm-up, {} MiB after push, {} MiB after pull",
        baseline / 1024,
        after_push / 1024,
        after_pull / 1024
    );
    // Flat: the peak may not grow by more than a few buffers, whatever the blob size.
    assert!(
        after_pull.saturating_sub(baseline) < 48 * 1024,
        "server memory grew from {baseline} KiB to {after_pull} KiB while streaming {mib} MiB"
    );
}
