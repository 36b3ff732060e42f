//! The benchmark scenarios. Each runs against one target and returns one figure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest as _;

use crate::load;
use crate::stats::{ms, percentile};
use crate::target::Target;

const MIB: usize = 1024 * 1024;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How big each scenario is.
pub struct Sizes {
    blob_mib: usize,
    chunk_mib: usize,
    pull_clients: usize,
    storm_images: usize,
    storm_workers: usize,
    rate_secs: u64,
    rate_conns: usize,
    tags_big: usize,
    tags_small: usize,
    gc_blobs: usize,
    repeat: usize,
}

impl Sizes {
    /// The sizes the targets are stated for.
    pub fn full(rate_secs: u64, repeat: usize) -> Sizes {
        Sizes {
            blob_mib: 256,
            chunk_mib: 8,
            pull_clients: 4,
            storm_images: 500,
            storm_workers: 32,
            rate_secs,
            rate_conns: 64,
            tags_big: 10_000,
            tags_small: 100,
            gc_blobs: 100_000,
            repeat: repeat.max(1),
        }
    }

    /// Tiny sizes to check the program end to end.
    pub fn quick() -> Sizes {
        Sizes {
            blob_mib: 8,
            chunk_mib: 2,
            pull_clients: 2,
            storm_images: 20,
            storm_workers: 4,
            rate_secs: 1,
            rate_conns: 4,
            tags_big: 300,
            tags_small: 100,
            gc_blobs: 2_000,
            repeat: 1,
        }
    }
}

/// One measured figure.
pub struct Figure {
    value: f64,
    unit: &'static str,
    higher_is_better: bool,
    detail: String,
}

impl Figure {
    fn higher(value: f64, unit: &'static str, detail: String) -> Figure {
        Figure {
            value,
            unit,
            higher_is_better: true,
            detail,
        }
    }

    /// A figure where smaller is better (latency, memory).
    pub fn lower(value: f64, unit: &'static str) -> Figure {
        Figure {
            value,
            unit,
            higher_is_better: false,
            detail: String::new(),
        }
    }

    /// `value unit (detail)`.
    pub fn describe(&self) -> String {
        let v = if self.value >= 100.0 {
            format!("{:.0}", self.value)
        } else {
            format!("{:.2}", self.value)
        };
        if self.detail.is_empty() {
            format!("{v} {}", self.unit)
        } else {
            format!("{v} {} ({})", self.unit, self.detail)
        }
    }

    /// This figure divided by `base`'s, with a hint of which way is better.
    pub fn ratio_to(&self, base: &Figure) -> String {
        if base.value == 0.0 {
            return "n/a".into();
        }
        let r = self.value / base.value;
        let better = if self.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        format!("{r:.2}× ({better})")
    }
}

type Run = for<'a> fn(
    &'a mut Target,
    &'a Sizes,
) -> Pin<Box<dyn Future<Output = anyhow::Result<Figure>> + 'a>>;

/// A named scenario.
pub struct Scenario {
    /// Name in the output.
    pub name: &'static str,
    /// Runs it on one target.
    pub run: Run,
    /// Whether it leaves the target stopped (run after everything else and after the
    /// peak-RSS reading).
    pub stops_target: bool,
}

/// Every scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "blob push, monolithic",
        run: |t, s| Box::pin(push_throughput(t, s, false)),
        stops_target: false,
    },
    Scenario {
        name: "blob push, chunked PATCHes",
        run: |t, s| Box::pin(push_throughput(t, s, true)),
        stops_target: false,
    },
    Scenario {
        name: "blob pull, concurrent",
        run: |t, s| Box::pin(pull_throughput(t, s, false)),
        stops_target: false,
    },
    Scenario {
        name: "blob pull, concurrent, client hashing",
        run: |t, s| Box::pin(pull_throughput(t, s, true)),
        stops_target: false,
    },
    Scenario {
        name: "push storm",
        run: |t, s| Box::pin(push_storm(t, s)),
        stops_target: false,
    },
    Scenario {
        name: "manifest GET by tag",
        run: |t, s| Box::pin(manifest_get(t, s)),
        stops_target: false,
    },
    Scenario {
        name: "blob HEAD",
        run: |t, s| Box::pin(blob_head(t, s)),
        stops_target: false,
    },
    Scenario {
        name: "tag page n=100, big repository",
        run: |t, s| Box::pin(tag_pages(t, s, true)),
        stops_target: false,
    },
    Scenario {
        name: "tag page n=100, small repository",
        run: |t, s| Box::pin(tag_pages(t, s, false)),
        stops_target: false,
    },
    Scenario {
        name: "garbage collection",
        run: |t, s| Box::pin(gc_time(t, s)),
        stops_target: true,
    },
];

/// Fast deterministic bytes (xorshift64), so generating data costs little.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Blob content with its digest, computed before any timing starts.
#[derive(Clone)]
struct Blob {
    bytes: Bytes,
    digest: String,
}

impl Blob {
    fn new(bytes: impl Into<Bytes>) -> Blob {
        let bytes = bytes.into();
        Blob {
            digest: sha256(&bytes),
            bytes,
        }
    }
}

fn location(res: &reqwest::Response) -> anyhow::Result<String> {
    Ok(res
        .headers()
        .get("location")
        .context("no Location header")?
        .to_str()?
        .to_owned())
}

fn with_query(loc: &str, q: &str) -> String {
    if loc.contains('?') {
        format!("{loc}&{q}")
    } else {
        format!("{loc}?{q}")
    }
}

/// POST + PUT of one blob.
async fn push_blob(t: &Target, repo: &str, blob: &Blob) -> anyhow::Result<String> {
    let (bytes, digest) = (blob.bytes.clone(), blob.digest.clone());
    let res = t
        .http
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await?;
    ensure!(res.status() == 202, "POST upload: {}", res.status());
    let loc = location(&res)?;
    let res = t
        .http
        .put(t.url(&with_query(&loc, &format!("digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await?;
    ensure!(res.status() == 201, "PUT upload: {}", res.status());
    Ok(digest)
}

/// POST, PATCH in chunks with Content-Range, PUT.
async fn push_blob_chunked(
    t: &Target,
    repo: &str,
    blob: &Blob,
    chunk: usize,
) -> anyhow::Result<String> {
    let (bytes, digest) = (&blob.bytes, blob.digest.clone());
    let res = t
        .http
        .post(t.url(&format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .send()
        .await?;
    ensure!(res.status() == 202, "POST upload: {}", res.status());
    let mut loc = location(&res)?;
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        let res = t
            .http
            .patch(t.url(&loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{}", end - 1))
            .body(bytes.slice(offset..end))
            .send()
            .await?;
        ensure!(res.status() == 202, "PATCH: {}", res.status());
        loc = location(&res)?;
        offset = end;
    }
    let res = t
        .http
        .put(t.url(&with_query(&loc, &format!("digest={digest}"))))
        .send()
        .await?;
    ensure!(res.status() == 201, "PUT upload: {}", res.status());
    Ok(digest)
}

/// A config + layers + OCI manifest; returns (manifest bytes, layer digests).
async fn push_image(
    t: &Target,
    repo: &str,
    tag: &str,
    seed: u64,
    layers: &[Blob],
) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let config = json!({"architecture": "amd64", "os": "linux", "seed": seed})
        .to_string()
        .into_bytes();
    let config_len = config.len();
    let c = push_blob(t, repo, &Blob::new(config)).await?;
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for l in layers {
        let d = push_blob(t, repo, l).await?;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": l.bytes.len()}));
        digests.push(d);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config_len},
        "layers": descs,
    }))?;
    put_manifest(t, repo, tag, &manifest).await?;
    Ok((manifest, digests))
}

async fn put_manifest(t: &Target, repo: &str, tag: &str, manifest: &[u8]) -> anyhow::Result<()> {
    let res = t
        .http
        .put(t.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_vec())
        .send()
        .await?;
    ensure!(
        res.status() == 201,
        "manifest PUT: {} {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Flushes every dirty page to disk (`sync`), so each timed push starts equal.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn push_throughput(t: &mut Target, s: &Sizes, chunked: bool) -> anyhow::Result<Figure> {
    let mut rates = Vec::new();
    for i in 0..s.repeat {
        // Fresh content each time so nothing is deduplicated.
        let blob = Blob::new(random_bytes(
            1000 + i as u64 + if chunked { 500 } else { 0 },
            s.blob_mib * MIB,
        ));
        // Start from a quiet disk: earlier runs' dirty pages must not slow this one.
        settle_disk();
        let started = Instant::now();
        if chunked {
            push_blob_chunked(t, "bench/push", &blob, s.chunk_mib * MIB).await?;
        } else {
            push_blob(t, "bench/push", &blob).await?;
        }
        rates.push((s.blob_mib * MIB) as f64 / 1e6 / started.elapsed().as_secs_f64());
    }
    let detail = format!(
        "{} MiB{}, median of {}",
        s.blob_mib,
        if chunked {
            format!(" in {} MiB chunks", s.chunk_mib)
        } else {
            String::new()
        },
        s.repeat
    );
    Ok(Figure::higher(median(rates), "MB/s", detail))
}

async fn pull_throughput(t: &mut Target, s: &Sizes, hashing: bool) -> anyhow::Result<Figure> {
    let blob = Blob::new(random_bytes(77, s.blob_mib * MIB));
    let digest = push_blob(t, "bench/pull", &blob).await?;
    let url = t.url(&format!("/v2/bench/pull/blobs/{digest}"));
    let mut rates = Vec::new();
    for _ in 0..s.repeat {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..s.pull_clients {
            let (http, url, digest) = (t.http.clone(), url.clone(), digest.clone());
            tasks.push(tokio::spawn(async move {
                let res = http.get(url).send().await?;
                ensure!(res.status() == 200, "GET blob: {}", res.status());
                let mut stream = res.bytes_stream();
                let mut hasher = sha2::Sha256::new();
                let mut n = 0usize;
                while let Some(c) = stream.next().await {
                    let c = c?;
                    n += c.len();
                    if hashing {
                        hasher.update(&c);
                    }
                }
                if hashing {
                    ensure!(
                        format!("sha256:{}", hex::encode(hasher.finalize())) == digest,
                        "pulled bytes do not match"
                    );
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        rates.push(total as f64 / 1e6 / started.elapsed().as_secs_f64());
    }
    let detail = format!(
        "{} × {} MiB, median of {}",
        s.pull_clients, s.blob_mib, s.repeat
    );
    Ok(Figure::higher(median(rates), "MB/s", detail))
}

async fn push_storm(t: &mut Target, s: &Sizes) -> anyhow::Result<Figure> {
    // Generate every image first, so the timed part is only the pushing.
    let images: Vec<Vec<Blob>> = (0..s.storm_images)
        .map(|i| {
            (0..3)
                .map(|j| {
                    let seed = (i * 3 + j) as u64 + 10_000;
                    let len = 4096
                        + (random_bytes(seed, 8)
                            .iter()
                            .fold(0usize, |a, b| a * 256 + *b as usize)
                            % (MIB - 4096));
                    Blob::new(random_bytes(seed, len))
                })
                .collect()
        })
        .collect();
    let images = Arc::new(images);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..s.storm_workers {
        let (images, next) = (images.clone(), next.clone());
        let t = t.worker();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(layers) = images.get(i) else { break };
                let one = Instant::now();
                push_image(
                    &t,
                    &format!("bench/storm{}", i % 16),
                    &format!("i{i}"),
                    i as u64,
                    layers,
                )
                .await?;
                latencies.push(one.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let detail = format!(
        "{} images × 3 layers of 4 KiB–1 MiB, {} clients, p50 {:.0} ms, p99 {:.0} ms",
        s.storm_images,
        s.storm_workers,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0))
    );
    Ok(Figure::higher(
        s.storm_images as f64 / elapsed.as_secs_f64(),
        "images/s",
        detail,
    ))
}

async fn hot_image(t: &Target) -> anyhow::Result<String> {
    let (_, layers) = push_image(
        t,
        "bench/hot",
        "latest",
        1,
        &[Blob::new(random_bytes(5, 2048))],
    )
    .await?;
    layers.into_iter().next().context("layer digest")
}

async fn rate(
    t: &Target,
    s: &Sizes,
    method: &str,
    path: &str,
    accept: &str,
) -> anyhow::Result<Figure> {
    let repo = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split_once("/manifests/").or(p.split_once("/blobs/")))
        .map_or("", |(repo, _)| repo);
    let req = load::LoadRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        accept: accept.to_owned(),
        authorization: t.bearer_for(&format!("repository:{repo}:pull")).await?,
    };
    // Warm up connections and caches, then measure.
    load::run(&t.addr, &req, s.rate_conns, Duration::from_millis(500)).await?;
    let r = load::run(
        &t.addr,
        &req,
        s.rate_conns,
        Duration::from_secs(s.rate_secs),
    )
    .await?;
    if r.errors > 0 {
        bail!("{} of the responses were errors", r.errors);
    }
    let detail = format!(
        "{} connections, p50 {:.2} ms, p99 {:.2} ms",
        s.rate_conns,
        ms(r.p50),
        ms(r.p99)
    );
    Ok(Figure::higher(r.rps, "req/s", detail))
}

async fn manifest_get(t: &mut Target, s: &Sizes) -> anyhow::Result<Figure> {
    hot_image(t).await?;
    rate(t, s, "GET", "/v2/bench/hot/manifests/latest", OCI_MANIFEST).await
}

async fn blob_head(t: &mut Target, s: &Sizes) -> anyhow::Result<Figure> {
    let layer = hot_image(t).await?;
    rate(t, s, "HEAD", &format!("/v2/bench/hot/blobs/{layer}"), "*/*").await
}

async fn tag_pages(t: &mut Target, s: &Sizes, big: bool) -> anyhow::Result<Figure> {
    let (repo, count) = if big {
        ("bench/tagsbig", s.tags_big)
    } else {
        ("bench/tagssmall", s.tags_small)
    };
    let (manifest, _) = push_image(t, repo, "t0", 2, &[Blob::new(random_bytes(9, 1024))]).await?;
    let manifest = Arc::new(manifest);
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (manifest, next) = (manifest.clone(), next.clone());
        let t = t.worker();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                put_manifest(&t, repo, &format!("t{i:05}"), &manifest).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Walk the pages (following Link) and time each request.
    let mut times = Vec::new();
    let mut items = 0usize;
    let mut path = format!("/v2/{repo}/tags/list?n=100");
    for _ in 0..100 {
        let started = Instant::now();
        let res = t.http.get(t.url(&path)).send().await?;
        ensure!(res.status() == 200, "tags list: {}", res.status());
        let link = res
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = res.json().await?;
        times.push(started.elapsed());
        items += body["tags"].as_array().map_or(0, Vec::len);
        // A small repository is one page: ask for it again. A big one: follow Link.
        match link
            .as_deref()
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, r)| r.split_once('>'))
        {
            Some((next, _)) if big => path = next.to_owned(),
            _ => {}
        }
    }
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let detail = format!(
        "{count} tags, {} requests, {:.0} tags per response",
        times.len(),
        items as f64 / times.len() as f64
    );
    Ok(Figure {
        value: ms(mean),
        unit: "ms/page",
        higher_is_better: false,
        detail,
    })
}

/// Layers per image in the garbage-collection scenario.
const GC_LAYERS: usize = 10;

/// Garbage collection of `gc_blobs` blobs of 1 KiB: half are layers of images (10 per
/// image), half are referenced by nothing. berth collects online (`POST /api/v1/gc`, zero
/// grace); Distribution's collector runs offline (`registry garbage-collect`), so its
/// server is stopped first. The figure is the collector's wall time.
async fn gc_time(t: &mut Target, s: &Sizes) -> anyhow::Result<Figure> {
    let images = s.gc_blobs / 2 / GC_LAYERS;
    let orphans = s.gc_blobs - images * GC_LAYERS;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (w, next) = (t.worker(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i < images {
                    let layers: Vec<Blob> = (0..GC_LAYERS)
                        .map(|l| Blob::new(random_bytes((i * GC_LAYERS + l) as u64 + 1, 1024)))
                        .collect();
                    push_image(&w, "bench/gc", &format!("i{i}"), i as u64, &layers).await?;
                } else if i < images + orphans {
                    let blob = Blob::new(random_bytes((1 << 40) + i as u64, 1024));
                    push_blob(&w, "bench/gc", &blob).await?;
                } else {
                    return anyhow::Ok(());
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    // berth spares what was stored in the current second, whatever the grace.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let removed = match t.distribution_gc_command() {
        Some(mut command) => {
            t.stop_server().await;
            let out = command
                .output()
                .await
                .context("running registry garbage-collect")?;
            ensure!(
                out.status.success(),
                "garbage-collect failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            orphans
        }
        None => {
            let res = t
                .http
                .post(t.url("/api/v1/gc"))
                .json(&json!({"grace": "0s"}))
                .send()
                .await?;
            ensure!(res.status() == 200, "POST /api/v1/gc: {}", res.status());
            let report: serde_json::Value = res.json().await?;
            let removed = report["blobs"].as_u64().unwrap_or(0) as usize;
            ensure!(
                removed == orphans,
                "berth removed {removed} blobs, expected {orphans}"
            );
            removed
        }
    };
    let elapsed = started.elapsed();
    Ok(Figure {
        value: elapsed.as_secs_f64(),
        unit: "s",
        higher_is_better: false,
        detail: format!(
            "{} blobs + {images} configs and manifests, {removed} unreferenced removed",
            images * GC_LAYERS + orphans
        ),
    })
}
