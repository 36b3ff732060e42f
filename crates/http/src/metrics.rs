//! Request metrics (Prometheus names, recorded through the `metrics` facade) and `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{Method, header};
use axum::response::Response;

use crate::Endpoint;

/// Renders the process's metrics in Prometheus text format (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Histogram buckets for request latency, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Name of the latency histogram, for bucket configuration.
pub const LATENCY: &str = "berth_http_request_duration_seconds";

/// Low-cardinality class of an endpoint, the `endpoint` label.
pub fn class(e: Option<&Endpoint>) -> &'static str {
    match e {
        Some(Endpoint::Base) => "base",
        Some(Endpoint::Catalog) => "catalog",
        Some(Endpoint::Tags(..)) => "tags",
        Some(Endpoint::Manifest(..)) => "manifest",
        Some(Endpoint::Blob(..)) => "blob",
        Some(Endpoint::UploadStart(..)) | Some(Endpoint::Upload(..)) => "upload",
        Some(Endpoint::Referrers(..)) => "referrers",
        None => "invalid",
    }
}

/// Metric handles of one (endpoint, method, status), looked up once per thread.
#[derive(Clone)]
struct Handles {
    requests: metrics::Counter,
    latency: metrics::Histogram,
    bytes_out: metrics::Counter,
}

thread_local! {
    /// Building a metric key allocates; at tens of thousands of requests per second that
    /// showed in the benchmark, so each worker thread keeps the handles it has used.
    static HANDLES: std::cell::RefCell<std::collections::HashMap<(&'static str, &'static str, u16), Handles>> =
        std::cell::RefCell::default();
}

fn handles(endpoint: &'static str, method: &'static str, status: u16) -> Handles {
    HANDLES.with(|h| {
        h.borrow_mut()
            .entry((endpoint, method, status))
            .or_insert_with(|| Handles {
                requests: metrics::counter!("berth_http_requests_total", "endpoint" => endpoint, "method" => method, "status" => status.to_string()),
                latency: metrics::histogram!(LATENCY, "endpoint" => endpoint, "method" => method),
                bytes_out: metrics::counter!("berth_http_response_body_bytes_total", "endpoint" => endpoint),
            })
            .clone()
    })
}

/// Records one finished request: count by status, latency to response headers, bytes out.
pub fn record(endpoint: &'static str, method: &Method, started: Instant, res: &Response) {
    let method = method_label(method);
    let h = handles(endpoint, method, res.status().as_u16());
    h.requests.increment(1);
    h.latency.record(started.elapsed().as_secs_f64());
    if method != "HEAD"
        && let Some(len) = res
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        h.bytes_out.increment(len);
    }
}

/// Counts request body bytes as they stream in.
pub fn count_in(endpoint: &'static str, n: usize) {
    metrics::counter!("berth_http_request_body_bytes_total", "endpoint" => endpoint)
        .increment(n as u64);
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}
