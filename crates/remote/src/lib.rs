//! berth's outbound HTTP adapter: webhook delivery.
//!
//! [`HttpNotifier`] implements the registry's [`Notifier`] port with one shared reqwest
//! client: it POSTs a payload to a receiver, signs it with HMAC-SHA256 and answers the
//! receiver's status, or a readable reason when there was none. Retries, ordering and
//! cursors are the registry's business (`berth_registry::webhooks`), not this crate's.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use berth_registry::webhooks::{Notifier, WebhookRequest};

/// Longest a whole delivery (connect, send, answer headers) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the TCP (and TLS) connection to a receiver may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sent as `User-Agent`, so receivers can tell berth's deliveries apart.
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// Header naming the event's kind (`push`, `tag.overwritten`, …).
pub const EVENT_HEADER: &str = "X-Berth-Event";
/// Header carrying the delivery id, stable across retries so receivers can drop duplicates.
pub const DELIVERY_HEADER: &str = "X-Berth-Delivery";
/// Header carrying `sha256=<hex HMAC-SHA256(secret, body)>`, so receivers can trust the body.
pub const SIGNATURE_HEADER: &str = "X-Berth-Signature-256";

/// The value of [`SIGNATURE_HEADER`] for `body` signed with `secret`: `sha256=` and the
/// lowercase hex HMAC-SHA256; public so receivers' tests can check deliveries.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Delivers webhooks over HTTP(S); built once at start-up and shared by every delivery so
/// connections to a receiver are reused.
#[derive(Clone, Debug)]
pub struct HttpNotifier {
    client: reqwest::Client,
    timeout: Duration,
    connect_timeout: Duration,
}

impl HttpNotifier {
    /// A notifier with berth's delivery limits: 10 s per delivery, 5 s to connect, no
    /// redirects followed (a 3xx is the receiver's answer, and a failure).
    pub fn new() -> Result<HttpNotifier, reqwest::Error> {
        HttpNotifier::with_timeouts(TIMEOUT, CONNECT_TIMEOUT)
    }

    fn with_timeouts(
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<HttpNotifier, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()?;
        Ok(HttpNotifier {
            client,
            timeout,
            connect_timeout,
        })
    }

    /// Why a delivery got no answer, in words an operator reads in the delivery log. The
    /// URL is left out: it may carry a token, and the log already names the subscription.
    fn reason(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return if e.is_connect() {
                format!("connect timed out after {}", secs(self.connect_timeout))
            } else {
                format!("timed out after {}", secs(self.timeout))
            };
        }
        let mut causes: Vec<String> = Vec::new();
        let mut io_kind = None;
        let mut source = e.source();
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                io_kind.get_or_insert(io.kind());
            }
            let text = cause.to_string();
            // hyper-util's "client error (Connect)" only labels its cause; and wrappers
            // sometimes repeat their cause's message: say each thing once.
            if !text.starts_with("client error (") && causes.last() != Some(&text) {
                causes.push(text);
            }
            source = cause.source();
        }
        use std::io::ErrorKind;
        let what = match io_kind {
            Some(ErrorKind::ConnectionRefused) => "connection refused",
            Some(ErrorKind::ConnectionReset) => "connection reset",
            Some(ErrorKind::ConnectionAborted) => "connection aborted",
            Some(ErrorKind::TimedOut) => "timed out",
            _ if e.is_connect() => "could not connect",
            _ if e.is_builder() => "invalid request",
            _ if e.is_body() || e.is_decode() => "broken answer",
            _ => "request failed",
        };
        if causes.is_empty() {
            format!("{what}: {}", without_url(e))
        } else {
            format!("{what}: {}", causes.join(": "))
        }
    }
}

/// `10 s`, `250 ms`: durations as the delivery log shows them.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// reqwest's own message without the URL (which may hold a secret).
fn without_url(e: &reqwest::Error) -> String {
    let text = e.to_string();
    match e.url() {
        Some(url) => text.replace(url.as_str(), "<url>"),
        None => text,
    }
}

#[async_trait]
impl Notifier for HttpNotifier {
    async fn post(&self, req: &WebhookRequest) -> Result<u16, String> {
        let sent = self
            .client
            .post(&req.url)
            .header(reqwest::header::CONTENT_TYPE, req.content_type)
            .header(EVENT_HEADER, req.kind.as_str())
            .header(DELIVERY_HEADER, &req.delivery_id)
            .header(
                SIGNATURE_HEADER,
                signature(req.secret.as_bytes(), &req.body),
            )
            .body(req.body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                tracing::debug!(delivery = %req.delivery_id, status, "webhook answered");
                Ok(status)
            }
            Err(e) => {
                let reason = self.reason(&e);
                tracing::debug!(delivery = %req.delivery_id, %reason, "webhook not answered");
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};
    use berth_registry::events::EventKind;
    use tokio::sync::Mutex;

    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn request(url: String) -> WebhookRequest {
        WebhookRequest {
            url,
            content_type: "application/json",
            body: br#"{"kind":"push"}"#.to_vec(),
            secret: "s3cret".into(),
            kind: EventKind::Push,
            delivery_id: "3-41".into(),
        }
    }

    type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

    /// A receiver on a random loopback port answering every POST with `status` (plus a
    /// `Location` header, so redirects could be followed if the client wanted to).
    async fn receiver(status: StatusCode, delay: Duration) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    log.lock().await.push((headers, body.to_vec()));
                    tokio::time::sleep(delay).await;
                    (status, [("location", "/elsewhere")], "")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), seen)
    }

    #[tokio::test]
    async fn post_sends_signed_body_and_headers_and_returns_status() {
        let (url, seen) = receiver(StatusCode::ACCEPTED, Duration::ZERO).await;
        let req = request(url);
        let notifier = HttpNotifier::new().unwrap();
        assert_eq!(notifier.post(&req).await, Ok(202));

        let seen = seen.lock().await;
        assert_eq!(seen.len(), 1);
        let (headers, body) = &seen[0];
        assert_eq!(body, &req.body);
        let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("x-berth-event"), "push");
        assert_eq!(h("x-berth-delivery"), "3-41");
        assert_eq!(h("x-berth-signature-256"), signature(b"s3cret", body));
        assert!(h("user-agent").starts_with("berth/"));
    }

    #[tokio::test]
    async fn error_statuses_and_redirects_are_answers_not_followed() {
        let notifier = HttpNotifier::new().unwrap();
        let (url, _) = receiver(StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
        assert_eq!(notifier.post(&request(url)).await, Ok(500));
        let (url, seen) = receiver(StatusCode::FOUND, Duration::ZERO).await;
        assert_eq!(notifier.post(&request(url)).await, Ok(302));
        assert_eq!(seen.lock().await.len(), 1, "the redirect was not followed");
    }

    #[tokio::test]
    async fn closed_port_is_an_error_saying_connection_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let notifier = HttpNotifier::new().unwrap();
        let err = notifier
            .post(&request(format!("http://{addr}/hook?token=abc")))
            .await
            .unwrap_err();
        assert!(err.starts_with("connection refused"), "{err}");
        assert!(!err.contains("token=abc"), "the URL stays out: {err}");
    }

    #[tokio::test]
    async fn slow_receiver_times_out() {
        let (url, _) = receiver(StatusCode::OK, Duration::from_secs(5)).await;
        let notifier =
            HttpNotifier::with_timeouts(Duration::from_millis(200), CONNECT_TIMEOUT).unwrap();
        let err = notifier.post(&request(url)).await.unwrap_err();
        assert_eq!(err, "timed out after 200 ms");
    }

    #[tokio::test]
    async fn bad_url_is_an_error() {
        let notifier = HttpNotifier::new().unwrap();
        let err = notifier
            .post(&request("not a url".into()))
            .await
            .unwrap_err();
        assert!(err.starts_with("invalid request"), "{err}");
    }
}
