//! Webhooks: subscriptions to the event stream, delivered at least once.
//!
//! The outbox is the event stream itself. Each subscription keeps a cursor (the id of the
//! last event it has dealt with); [`deliver_due`] posts the next matching event after the
//! cursor and moves the cursor only once the receiver answered 2xx. A receiver that is down
//! keeps its cursor, and is retried with exponential backoff; events wait in the store, so
//! neither a restart of berth nor an hour-long outage of the receiver loses one. Events of
//! one subscription are delivered in order, one at a time.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::events::{EventKind, StoredEvent};
use crate::ports::{EventStore, StoreResult};
use crate::service::rfc3339_ms;

/// The media type of Distribution's notification envelope.
pub const DISTRIBUTION_EVENTS: &str = "application/vnd.docker.distribution.events.v2+json";

/// How a subscription's payloads are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// berth's own JSON: one event, every field berth records.
    Berth,
    /// Distribution's notification envelope, for receivers written for it.
    Distribution,
}

impl WebhookFormat {
    /// The format's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Berth => "berth",
            WebhookFormat::Distribution => "distribution",
        }
    }

    /// Parses a format's name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "berth" => Ok(WebhookFormat::Berth),
            "distribution" => Ok(WebhookFormat::Distribution),
            _ => Err(format!(
                "unknown webhook format {s:?}; formats are berth, distribution"
            )),
        }
    }
}

/// A subscription as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Identifier.
    pub id: i64,
    /// Where to post.
    pub url: String,
    /// Only events of this namespace; `None`: registry-wide.
    pub namespace: Option<String>,
    /// Only events of these kinds; empty: all kinds.
    pub kinds: Vec<EventKind>,
    /// Payload shape.
    pub format: WebhookFormat,
    /// HMAC-SHA256 key for the `X-Berth-Signature-256` header.
    pub secret: String,
    /// Unix milliseconds of creation.
    pub created_ms: i64,
    /// Id of the last event dealt with (delivered or not matching).
    pub cursor: i64,
    /// Failed attempts at the event after the cursor.
    pub failures: u32,
    /// Earliest next attempt (unix ms).
    pub next_attempt_ms: i64,
}

impl Webhook {
    /// Whether this subscription wants `event`.
    pub fn wants(&self, event: &StoredEvent) -> bool {
        let ns_ok = match &self.namespace {
            None => true,
            Some(ns) => event.event.namespace() == Some(ns.as_str()),
        };
        ns_ok && (self.kinds.is_empty() || self.kinds.contains(&event.event.kind))
    }
}

/// A subscription to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    /// Where to post (http or https).
    pub url: String,
    /// Only events of this namespace; `None`: registry-wide.
    pub namespace: Option<String>,
    /// Only these kinds; empty: all.
    pub kinds: Vec<EventKind>,
    /// Payload shape.
    pub format: WebhookFormat,
    /// Signing key.
    pub secret: String,
}

/// One attempt at delivering one event, for the per-subscription delivery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The subscription.
    pub webhook_id: i64,
    /// The event.
    pub event_id: i64,
    /// The event's kind.
    pub kind: EventKind,
    /// 1 for the first attempt at this event.
    pub attempt: u32,
    /// Unix milliseconds of the attempt.
    pub at_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed (connection refused, timeout, non-2xx).
    pub error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
}

/// One POST to a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Where.
    pub url: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (signed as is).
    pub body: Vec<u8>,
    /// Key for the HMAC-SHA256 signature header.
    pub secret: String,
    /// The event's kind (`X-Berth-Event`).
    pub kind: EventKind,
    /// Unique per subscription and event, stable across retries (`X-Berth-Delivery`), so
    /// receivers can drop duplicates.
    pub delivery_id: String,
}

/// The outbound port: posts a request, answering the receiver's status, or why there was
/// none.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Posts `req`; `Ok(status)` whatever the status, `Err` when no answer came.
    async fn post(&self, req: &WebhookRequest) -> Result<u16, String>;
}

/// A fresh signing secret: `whsec_` and 256 random bits in hex.
pub fn new_secret() -> Result<String, crate::RegistryError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        crate::RegistryError::Storage(crate::StorageError::backend(format!("randomness: {e}")))
    })?;
    Ok(format!(
        "whsec_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Retry policy: the wait after `failures` failed attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub first: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// `first × 2^(failures − 1)`, at most `max`.
    pub fn after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// Events read per subscription per round.
const EVENTS_PER_ROUND: u32 = 100;

/// One round of delivery: for every subscription whose retry time has come, posts the
/// matching events after its cursor, in order, until one fails or none are left. Returns
/// how many events were delivered.
pub async fn deliver_due(
    meta: &dyn EventStore,
    notifier: &dyn Notifier,
    backoff: Backoff,
    source: &str,
    now_ms: i64,
) -> StoreResult<usize> {
    let mut delivered = 0;
    for hook in meta.webhooks().await? {
        if hook.next_attempt_ms > now_ms {
            continue;
        }
        delivered += deliver_to(meta, notifier, backoff, source, hook).await?;
    }
    Ok(delivered)
}

async fn deliver_to(
    meta: &dyn EventStore,
    notifier: &dyn Notifier,
    backoff: Backoff,
    source: &str,
    mut hook: Webhook,
) -> StoreResult<usize> {
    let mut delivered = 0;
    loop {
        let events = meta
            .events_after(hook.cursor, hook.namespace.as_deref(), EVENTS_PER_ROUND)
            .await?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(delivered);
        };
        for event in &events {
            if !hook.wants(event) {
                continue;
            }
            let attempt = hook.failures + 1;
            let (content_type, body) = payload(hook.format, event, source);
            let req = WebhookRequest {
                url: hook.url.clone(),
                content_type,
                body,
                secret: hook.secret.clone(),
                kind: event.event.kind,
                delivery_id: format!("{}-{}", hook.id, event.id),
            };
            let result = notifier.post(&req).await;
            let at_ms = crate::service::unix_now_ms();
            let (status, error) = match result {
                Ok(s) if (200..300).contains(&s) => (Some(s), None),
                Ok(s) => (Some(s), Some(format!("receiver answered {s}"))),
                Err(e) => (None, Some(e)),
            };
            meta.record_delivery(&DeliveryRecord {
                webhook_id: hook.id,
                event_id: event.id,
                kind: event.event.kind,
                attempt,
                at_ms,
                status,
                delivered: error.is_none(),
                error: error.clone(),
            })
            .await?;
            if error.is_some() {
                let wait = i64::try_from(backoff.after(attempt).as_millis()).unwrap_or(i64::MAX);
                meta.webhook_failed(hook.id, attempt, at_ms.saturating_add(wait))
                    .await?;
                return Ok(delivered);
            }
            delivered += 1;
            hook.failures = 0;
            hook.cursor = event.id;
            meta.webhook_advanced(hook.id, event.id).await?;
        }
        if hook.cursor != last {
            // The rest of the page did not match: skip past it.
            hook.cursor = last;
            meta.webhook_advanced(hook.id, last).await?;
        }
    }
}

/// The body of a delivery and its content type.
pub fn payload(format: WebhookFormat, e: &StoredEvent, source: &str) -> (&'static str, Vec<u8>) {
    let body = match format {
        WebhookFormat::Berth => berth_payload(e),
        WebhookFormat::Distribution => json!({ "events": [distribution_event(e, source)] }),
    };
    let content_type = match format {
        WebhookFormat::Berth => "application/json",
        WebhookFormat::Distribution => DISTRIBUTION_EVENTS,
    };
    (content_type, body.to_string().into_bytes())
}

/// berth's own payload: the event as the audit log shows it.
pub fn berth_payload(e: &StoredEvent) -> Value {
    let ev = &e.event;
    json!({
        "id": e.id,
        "kind": ev.kind.as_str(),
        "at": rfc3339_ms(ev.at_ms),
        "namespace": ev.namespace(),
        "repository": ev.repository,
        "tag": ev.tag,
        "digest": ev.digest,
        "previous_digest": ev.previous_digest,
        "media_type": ev.media_type,
        "size": ev.size,
        "count": ev.count,
        "actor": {
            "account": ev.actor.account,
            "client": ev.actor.client,
            "user_agent": ev.actor.user_agent,
        },
        "detail": ev.detail,
    })
}

/// One event in Distribution's shape. Push, pull and delete keep Distribution's action
/// names; berth's other kinds (`tag.overwritten`, …) travel under their own names, which
/// receivers written for Distribution ignore.
fn distribution_event(e: &StoredEvent, source: &str) -> Value {
    let ev = &e.event;
    let mut target = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            target.insert(k.to_owned(), v);
        }
    };
    put("mediaType", json!(ev.media_type));
    put("digest", json!(ev.digest));
    put("size", json!(ev.size));
    put("length", json!(ev.size));
    put("repository", json!(ev.repository));
    put("tag", json!(ev.tag));
    if let (Some(repo), Some(digest)) = (&ev.repository, &ev.digest) {
        put(
            "url",
            json!(format!("{source}/v2/{repo}/manifests/{digest}")),
        );
    }
    let mut request = serde_json::Map::new();
    if let Some(addr) = &ev.actor.client {
        request.insert("addr".into(), json!(addr));
    }
    if let Some(ua) = &ev.actor.user_agent {
        request.insert("useragent".into(), json!(ua));
    }
    let mut actor = serde_json::Map::new();
    if let Some(name) = &ev.actor.account {
        actor.insert("name".into(), json!(name));
    }
    json!({
        "id": e.id.to_string(),
        "timestamp": rfc3339_ms(ev.at_ms),
        "action": ev.kind.as_str(),
        "target": target,
        "request": request,
        "actor": actor,
        "source": { "addr": source.trim_start_matches("http://").trim_start_matches("https://") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use crate::types::Actor;

    fn stored(kind: EventKind, repo: &str) -> StoredEvent {
        let mut event = Event::new(kind, &Actor::default());
        event.repository = Some(repo.to_owned());
        StoredEvent { id: 7, event }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = [1, 2, 3, 9, 10, 40].map(|f| b.after(f).as_secs()).to_vec();
        assert_eq!(secs, [1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn subscriptions_filter_by_namespace_and_kind() {
        let mut hook = Webhook {
            id: 1,
            url: "http://127.0.0.1:9/".into(),
            namespace: Some("payments".into()),
            kinds: vec![EventKind::TagOverwritten],
            format: WebhookFormat::Berth,
            secret: "s".into(),
            created_ms: 0,
            cursor: 0,
            failures: 0,
            next_attempt_ms: 0,
        };
        assert!(hook.wants(&stored(EventKind::TagOverwritten, "payments/api")));
        assert!(!hook.wants(&stored(EventKind::TagOverwritten, "paymentsx/api")));
        assert!(!hook.wants(&stored(EventKind::Push, "payments/api")));
        hook.kinds.clear();
        hook.namespace = None;
        assert!(hook.wants(&stored(EventKind::Push, "other")));
    }

    #[test]
    fn distribution_envelope_uses_distribution_action_names() {
        let mut e = stored(EventKind::Pull, "payments/api");
        e.event.digest = Some("sha256:abc".into());
        e.event.tag = Some("latest".into());
        e.event.size = Some(708);
        let (ct, body) = payload(WebhookFormat::Distribution, &e, "http://127.0.0.1:5000");
        assert_eq!(ct, DISTRIBUTION_EVENTS);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let ev = &v["events"][0];
        assert_eq!(ev["action"], "pull");
        assert_eq!(ev["id"], "7");
        assert_eq!(ev["target"]["repository"], "payments/api");
        assert_eq!(ev["target"]["tag"], "latest");
        assert_eq!(ev["target"]["size"], 708);
        assert_eq!(ev["target"]["length"], 708);
        assert_eq!(
            ev["target"]["url"],
            "http://127.0.0.1:5000/v2/payments/api/manifests/sha256:abc"
        );
        assert_eq!(ev["source"]["addr"], "127.0.0.1:5000");
    }
}
