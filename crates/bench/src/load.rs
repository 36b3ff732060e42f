//! A lean request-rate load loop: one HTTP/1.1 connection per worker, no pool, no
//! redirects, so the client spends as little of the shared CPU as possible.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::percentile;

/// What a load run measured.
pub struct LoadResult {
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Responses that were not the expected status.
    pub errors: u64,
}

/// One request of a load run, repeated.
#[derive(Clone)]
pub struct LoadRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `Accept` header.
    pub accept: String,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// Sends `req` over `conns` connections for `duration`.
pub async fn run(
    addr: &str,
    req: &LoadRequest,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, req) = (addr.to_owned(), req.clone());
        tasks.push(tokio::spawn(
            async move { worker(&addr, &req, deadline).await },
        ));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.context("load worker")??;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(LoadResult {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        errors,
    })
}

async fn worker(
    addr: &str,
    r: &LoadRequest,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    while Instant::now() < deadline {
        let mut req = Request::builder()
            .method(r.method.as_str())
            .uri(r.path.as_str())
            .header("host", addr)
            .header("accept", r.accept.as_str());
        if let Some(a) = &r.authorization {
            req = req.header("authorization", a.as_str());
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let t = Instant::now();
        let res = sender.send_request(req).await?;
        let ok = res.status().is_success();
        res.into_body().collect().await?;
        latencies.push(t.elapsed());
        if !ok {
            errors += 1;
        }
    }
    Ok((latencies, errors))
}
