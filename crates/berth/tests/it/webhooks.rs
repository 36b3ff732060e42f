//! Webhooks against a real receiver: every event arrives, signed, in order; a receiver
//! that is down, with berth restarted meanwhile, still gets everything once it is back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::*;

/// Environment for fast retries (tests must not wait minutes for a backoff).
const FAST_RETRIES: [(&str, &str); 2] = [
    ("BERTH_WEBHOOK_FIRST_BACKOFF_MS", "100"),
    ("BERTH_WEBHOOK_MAX_BACKOFF_MS", "400"),
];

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver on loopback, recording every request; stopped on drop.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on `addr` (port 0 for a fresh one), keeping what `got` already holds.
    async fn start(addr: &str, got: Arc<Mutex<Vec<Received>>>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(got.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, got, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn received(&self, path: &str) -> Vec<Received> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Stops listening (connections are refused from now on).
    async fn stop(self) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
        self.task.abort();
        let _ = self.task.await;
        (self.addr, self.got)
    }
}

async fn record(
    State(got): State<Arc<Mutex<Vec<Received>>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().trim_start_matches('/').to_owned();
    got.lock().unwrap().push(Received {
        path,
        headers,
        body,
    });
    StatusCode::OK
}

/// HMAC-SHA256 (RFC 2104), written here from the definition so the test does not trust
/// berth's own signing code.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    // RFC 4231, test case 2.
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// Checks every delivery is signed with `secret` and labelled with its kind; returns the
/// berth payloads in arrival order.
fn verified(deliveries: &[Received], secret: &str) -> Vec<Value> {
    deliveries
        .iter()
        .map(|r| {
            let header = |name: &str| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            };
            assert_eq!(
                header("x-berth-signature-256"),
                hmac_sha256(secret.as_bytes(), &r.body)
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(header("x-berth-event"), v["kind"].as_str().unwrap());
            assert_eq!(header("content-type"), "application/json");
            v
        })
        .collect()
}

async fn subscribe(s: &Server, body: Value) -> Value {
    let (status, hook) = s.send_json(Method::POST, "/api/v1/webhooks", &body).await;
    assert_eq!(status, 201, "{hook}");
    hook
}

/// Waits up to 15 s for `path` to have received `n` requests.
async fn wait_for(r: &Receiver, path: &str, n: usize) -> Vec<Received> {
    for _ in 0..150 {
        let got = r.received(path);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} got {} of {n} deliveries", r.received(path).len());
}

fn kinds_and_tags(payloads: &[Value]) -> Vec<(String, Option<String>)> {
    payloads
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["tag"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_receiver_that_is_up_gets_every_event_signed_and_in_order() {
    let s = Server::start_with(&FAST_RETRIES);
    let r = Receiver::start("127.0.0.1:0", Arc::default()).await;
    let secret = "a-secret-of-some-length";
    let hook = subscribe(
        &s,
        json!({"url": r.url("team"), "namespace": "team", "secret": secret}),
    )
    .await;
    assert_eq!(hook["secret"], secret);
    let alerts = subscribe(
        &s,
        json!({"url": r.url("alerts"), "events": ["tag.overwritten"]}),
    )
    .await;
    let generated = alerts["secret"].as_str().unwrap().to_owned();
    assert!(
        generated.starts_with("whsec_") && generated.len() == 70,
        "{generated}"
    );
    let dist = subscribe(
        &s,
        json!({"url": r.url("dist"), "events": ["push", "pull"], "format": "distribution"}),
    )
    .await;

    let (a, _) = s.push_image("team/app", "v1", b"first").await;
    let (b, _) = s.push_image("team/app", "v1", b"second").await;
    s.push_image("other/app", "v1", b"elsewhere").await;
    let res = s
        .req(Method::DELETE, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = s
        .req(Method::GET, &format!("/v2/team/app/manifests/{b}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let team = verified(&wait_for(&r, "team", 6).await, secret);
    let t = |k: &str, tag: Option<&str>| (k.to_owned(), tag.map(str::to_owned));
    assert_eq!(
        kinds_and_tags(&team),
        [
            t("push", Some("v1")),
            t("tag.created", Some("v1")),
            t("push", Some("v1")),
            t("tag.overwritten", Some("v1")),
            t("tag.deleted", Some("v1")),
            t("pull", None),
        ],
        "only team's events, in order"
    );
    assert_eq!(team[3]["previous_digest"], a.as_str());
    assert_eq!(team[3]["digest"], b.as_str());
    assert_eq!(team[5]["digest"], b.as_str());
    assert_eq!(team[5]["actor"]["client"], "127.0.0.1");

    let alerts_got = verified(&wait_for(&r, "alerts", 1).await, &generated);
    assert_eq!(
        kinds_and_tags(&alerts_got),
        [t("tag.overwritten", Some("v1"))]
    );
    assert_eq!(alerts_got[0]["repository"], "team/app");

    // Distribution's envelope: its media type, its action names, signed the same way.
    let dist_got = wait_for(&r, "dist", 4).await;
    let mut actions = Vec::new();
    for d in &dist_got {
        assert_eq!(
            d.headers["content-type"],
            "application/vnd.docker.distribution.events.v2+json"
        );
        assert_eq!(
            d.headers["x-berth-signature-256"].to_str().unwrap(),
            hmac_sha256(dist["secret"].as_str().unwrap().as_bytes(), &d.body)
        );
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        let e = &v["events"][0];
        actions.push((
            e["action"].as_str().unwrap().to_owned(),
            e["target"]["repository"].as_str().unwrap().to_owned(),
        ));
        assert!(
            e["target"]["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
    let p = |a: &str, r: &str| (a.to_owned(), r.to_owned());
    assert_eq!(
        actions,
        [
            p("push", "team/app"),
            p("push", "team/app"),
            p("push", "other/app"),
            p("pull", "team/app")
        ]
    );

    // Nothing more arrives (no duplicates while the receiver is up), and the delivery
    // log shows one successful attempt per event.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.received("team").len(), 6);
    let log = s
        .req(
            Method::GET,
            &format!("/api/v1/webhooks/{}/deliveries", hook["id"]),
        )
        .send()
        .await
        .unwrap();
    let log: Value = log.json().await.unwrap();
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 6);
    assert!(
        log.iter()
            .all(|d| d["delivered"] == true && d["status"] == 200 && d["attempt"] == 1)
    );
}

#[tokio::test]
async fn a_receiver_down_across_a_berth_restart_misses_nothing() {
    let s = Server::start_with(&FAST_RETRIES);
    let r = Receiver::start("127.0.0.1:0", Arc::default()).await;
    let secret = "another-secret-of-length";
    let hook = subscribe(&s, json!({"url": r.url("hook"), "secret": secret})).await;
    s.push_image("app", "v1", b"one").await;
    wait_for(&r, "hook", 2).await;

    // The receiver goes away; pushes go on; berth is killed and started again.
    let (addr, got) = r.stop().await;
    let (b, _) = s.push_image("app", "v1", b"two").await;
    let (c, _) = s.push_image("app", "v2", b"three").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (data, tmp) = s.kill9();
    let s = Server::start_on_with(&data, "127.0.0.1:0", &FAST_RETRIES);
    let (d, _) = s.push_image("app", "v1", b"four").await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // While it was down, berth kept trying and logged why it failed.
    let log: Value = s
        .req(
            Method::GET,
            &format!("/api/v1/webhooks/{}/deliveries", hook["id"]),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failures: Vec<&Value> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["delivered"] == false)
        .collect();
    assert!(failures.len() >= 2, "{log}");
    assert!(
        failures
            .iter()
            .all(|d| d["status"].is_null() && d["error"].as_str().is_some_and(|e| !e.is_empty()))
    );
    let listed: Value = s
        .req(Method::GET, "/api/v1/webhooks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["webhooks"][0]["failures"].as_u64().unwrap() >= 1,
        "{listed}"
    );

    // Back on the same address: the backlog arrives, in order, each event once.
    let r = Receiver::start(&addr.to_string(), got).await;
    let all = verified(&wait_for(&r, "hook", 8).await, secret);
    let t = |k: &str, tag: &str| (k.to_owned(), Some(tag.to_owned()));
    assert_eq!(
        kinds_and_tags(&all),
        [
            t("push", "v1"),
            t("tag.created", "v1"),
            t("push", "v1"),
            t("tag.overwritten", "v1"),
            t("push", "v2"),
            t("tag.created", "v2"),
            t("push", "v1"),
            t("tag.overwritten", "v1"),
        ]
    );
    let digests: Vec<&str> = all
        .iter()
        .filter(|v| v["kind"] == "push")
        .map(|v| v["digest"].as_str().unwrap())
        .collect();
    assert_eq!(&digests[1..], [b.as_str(), c.as_str(), d.as_str()]);
    let ids: Vec<i64> = all.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "each event once, in order: {ids:?}"
    );
    drop(s);
    drop(tmp);
}
