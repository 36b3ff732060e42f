//! The event commands (`berth tag pulls`, `berth audit`, `berth webhook …`) against a real
//! server, as an operator would type them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{admin, admin_cli, secured};
use crate::harness::*;

/// Runs `berth ARGS` as the admin and expects success; returns its standard output.
fn run(s: &Server, args: &[&str]) -> String {
    let (ok, out, err) = admin_cli(s, args);
    assert!(ok, "berth {args:?} failed: {err}");
    out
}

/// Runs `berth ARGS --json` as the admin; returns the parsed answer.
fn run_json(s: &Server, args: &[&str]) -> Value {
    let args = [args, &["--json"]].concat();
    let out = run(s, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("berth {args:?}: {e}: {out}"))
}

/// Pulls `repo:tag` by manifest GET from the loopback address `from`, as the admin.
async fn pull_from(s: &Server, from: Ipv4Addr, user_agent: &str, repo: &str, tag: &str) {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .user_agent(user_agent)
        .build()
        .unwrap();
    let res = client
        .get(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("authorization", admin())
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "pull from {from}");
}

/// An API time (`…T02:10:05.123Z`) to the second, as the human output shows it.
fn to_second(t: &Value) -> String {
    let t = t.as_str().expect("a time");
    let (head, tail) = t.split_once('.').expect("milliseconds");
    format!(
        "{head}{}",
        tail.trim_start_matches(|c: char| c.is_ascii_digit())
    )
}

#[tokio::test]
async fn tag_pulls_shows_which_clients_run_which_digest() {
    let s = secured();
    let (old, _) = s.push_image("team/app", "latest", b"old code").await;
    for _ in 0..2 {
        pull_from(
            &s,
            Ipv4Addr::new(127, 0, 0, 2),
            "fleet-a/1.0",
            "team/app",
            "latest",
        )
        .await;
    }
    let (new, _) = s.push_image("team/app", "latest", b"new code").await;
    for _ in 0..3 {
        pull_from(
            &s,
            Ipv4Addr::new(127, 0, 0, 3),
            "fleet-b/2.0",
            "team/app",
            "latest",
        )
        .await;
    }

    // Pull counts reach the store with the once-a-second flush.
    let started = Instant::now();
    let answer = loop {
        let a = run_json(&s, &["tag", "pulls", "team/app", "latest"]);
        let pulls: u64 = a["digests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["pulls"].as_u64().unwrap())
            .sum();
        if pulls == 5 {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "pulls not recorded within 5 s: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["repository"], "team/app");
    assert_eq!(answer["tag"], "latest");
    let digests = answer["digests"].as_array().unwrap();
    assert_eq!(digests.len(), 2, "{answer}");
    for (d, digest, client, agent, n) in [
        (&digests[0], &new, "127.0.0.3", "fleet-b/2.0", 3),
        (&digests[1], &old, "127.0.0.2", "fleet-a/1.0", 2),
    ] {
        assert_eq!(d["digest"], digest.as_str(), "newest pull first: {answer}");
        assert_eq!(d["pulls"], n, "{answer}");
        let clients = d["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 1, "{answer}");
        assert_eq!(clients[0]["client"], client);
        assert_eq!(clients[0]["pulls"], n);
        assert_eq!(clients[0]["account"], "admin");
        assert_eq!(clients[0]["user_agent"], agent);
        assert_eq!(clients[0]["last"], d["last"], "one client per digest");
        assert!(d["first"].as_str().unwrap() <= d["last"].as_str().unwrap());
    }
    // `first` is to the minute (pulls are counted per client and minute); `last` is exact.
    assert!(digests[1]["last"].as_str().unwrap() < digests[0]["last"].as_str().unwrap());

    let out = run(&s, &["tag", "pulls", "team/app", "latest"]);
    let last = |i: usize| to_second(&digests[i]["last"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("{new} 3 pulls, last {}", last(0)),
            format!(
                "  127.0.0.3  3 pulls  last {}  fleet-b/2.0 (admin)",
                last(0)
            ),
            format!("{old} 2 pulls, last {}", last(1)),
            format!(
                "  127.0.0.2  2 pulls  last {}  fleet-a/1.0 (admin)",
                last(1)
            ),
            "2 digests served: clients are running different images".to_owned(),
        ],
        "{out}"
    );

    // A window after the pulls, given as an RFC 3339 time, holds none.
    let out = run(
        &s,
        &[
            "tag",
            "pulls",
            "team/app",
            "latest",
            "--since",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert_eq!(
        out, "no pulls of team/app:latest since 2999-01-01T00:00:00Z\n",
        "{out}"
    );
    let (ok, _, err) = admin_cli(
        &s,
        &["tag", "pulls", "team/app", "latest", "--since", "soon"],
    );
    assert!(
        !ok,
        "a since that is neither a duration nor a time is refused"
    );
    assert!(
        err.starts_with("berth: since=\"soon\" is neither a duration") && err.contains("RFC 3339"),
        "the server's message: {err}"
    );
}

#[tokio::test]
async fn audit_lists_the_overwrite_and_pages() {
    let s = secured();
    let (old, _) = s.push_image("team/app", "latest", b"old code").await;
    let (new, _) = s.push_image("team/app", "latest", b"new code").await;

    let a = run_json(&s, &["audit", "--kind", "tag.overwritten"]);
    let events = a["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{a}");
    let e = &events[0];
    assert_eq!(e["kind"], "tag.overwritten");
    assert_eq!(e["namespace"], "team");
    assert_eq!(e["repository"], "team/app");
    assert_eq!(e["tag"], "latest");
    assert_eq!(e["previous_digest"], old.as_str());
    assert_eq!(e["digest"], new.as_str());
    assert_eq!(e["count"], 1);
    assert_eq!(e["actor"]["account"], "admin");
    assert_eq!(e["actor"]["client"], "127.0.0.1");
    assert_eq!(a["next_before"], Value::Null);

    let out = run(&s, &["audit", "--kind", "tag.overwritten"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let at = to_second(&e["at"]);
    assert_eq!(
        lines,
        [vec![
            at.as_str(),
            "tag.overwritten",
            "team/app:latest",
            &old[..19],
            "→",
            &new[..19],
            "admin",
            "127.0.0.1",
        ]],
        "{out}"
    );

    // Two pushes, one page each, newest first; the human output names the next page.
    let filters = ["audit", "--repository", "team/app", "--kind", "push"];
    let mut pushed = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut args = filters.to_vec();
        args.extend(["--limit", "1"]);
        if let Some(b) = &before {
            args.extend(["--before", b]);
        }
        let a = run_json(&s, &args);
        let events = a["events"].as_array().unwrap();
        assert!(events.len() <= 1, "{a}");
        pushed.extend(events.iter().map(|e| e["digest"].clone()));
        let out = run(&s, &args);
        match a["next_before"].as_i64() {
            Some(next) => {
                let more = format!(
                    "more: berth audit --repository team/app --kind push --limit 1 --before {next}"
                );
                assert_eq!(out.lines().last(), Some(more.as_str()), "{out}");
                before = Some(next.to_string());
            }
            None => {
                if events.is_empty() {
                    assert_eq!(out, "no events\n");
                } else {
                    assert!(!out.contains("more:"), "{out}");
                }
                break;
            }
        }
        assert!(pushed.len() <= 2, "paging does not end: {pushed:?}");
    }
    assert_eq!(pushed, [json!(new), json!(old)]);

    let (ok, _, err) = admin_cli(&s, &["audit", "--kind", "tag.moved"]);
    assert!(!ok, "an unknown kind is refused");
    assert!(
        err.starts_with("berth: unknown event kind \"tag.moved\""),
        "the server's message: {err}"
    );
}

#[tokio::test]
async fn webhooks_are_added_listed_and_removed() {
    let s = secured();
    let out = run(
        &s,
        &[
            "webhook",
            "add",
            "http://127.0.0.1:9/hook",
            "--namespace",
            "team",
            "--event",
            "tag.overwritten",
            "--event",
            "tag.deleted",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let id: i64 = lines[0]
        .strip_prefix("created webhook ")
        .and_then(|l| l.strip_suffix(" → http://127.0.0.1:9/hook"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let secret = lines[1]
        .strip_prefix("secret: ")
        .and_then(|l| l.split_once(' '))
        .map(|(secret, _)| secret)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(secret.starts_with("whsec_"), "{out}");
    assert!(lines[1].ends_with(
        " (shown once: configure your receiver to verify \
         X-Berth-Signature-256 = sha256=HMAC-SHA256(secret, body))"
    ));

    let listed = run_json(&s, &["webhook", "list"]);
    let hooks = listed["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{listed}");
    let h = &hooks[0];
    assert_eq!(h["id"], id);
    assert_eq!(h["url"], "http://127.0.0.1:9/hook");
    assert_eq!(h["namespace"], "team");
    assert_eq!(h["events"], json!(["tag.overwritten", "tag.deleted"]));
    assert_eq!(h["format"], "berth");
    assert_eq!(h["failures"], 0);
    assert_eq!(h["next_attempt"], Value::Null);
    assert!(
        !listed.to_string().contains(secret),
        "the secret is shown once: {listed}"
    );

    let out = run(&s, &["webhook", "list"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let id_text = id.to_string();
    assert_eq!(
        rows,
        [
            vec!["ID", "URL", "NAMESPACE", "EVENTS", "FORMAT", "STATE"],
            vec![
                id_text.as_str(),
                "http://127.0.0.1:9/hook",
                "team",
                "tag.overwritten,tag.deleted",
                "berth",
                "ok",
            ],
        ],
        "{out}"
    );

    let out = run(&s, &["webhook", "deliveries", &id_text]);
    assert_eq!(
        out, "TIME  EVENT  KIND  ATTEMPT  RESULT\n",
        "none yet: {out}"
    );

    let out = run(&s, &["webhook", "remove", &id_text]);
    assert_eq!(out, format!("removed webhook {id}\n"));
    let listed = run_json(&s, &["webhook", "list"]);
    assert_eq!(listed, json!({"webhooks": []}));
    let (ok, _, err) = admin_cli(&s, &["webhook", "remove", &id_text]);
    assert!(!ok, "removing it twice fails");
    assert_eq!(err, format!("berth: there is no webhook {id}\n"));

    // An all-events, all-namespaces webhook in the Distribution format.
    let out = run(
        &s,
        &[
            "webhook",
            "add",
            "https://hooks.example.com/berth",
            "--format",
            "distribution",
            "--secret",
            "whsec_chosen-by-me",
        ],
    );
    assert!(out.contains("secret: whsec_chosen-by-me "), "{out}");
    let out = run(&s, &["webhook", "list"]);
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[1..],
        [
            "https://hooks.example.com/berth",
            "*",
            "all",
            "distribution",
            "ok"
        ],
        "{out}"
    );
}

#[tokio::test]
async fn webhook_add_refuses_a_bad_url_with_the_servers_message() {
    let s = secured();
    let (ok, out, err) = admin_cli(&s, &["webhook", "add", "ftp://x"]);
    assert!(!ok, "{out}");
    assert_eq!(out, "", "nothing created");
    // The API's own error message, verbatim.
    let res = s
        .req(Method::POST, "/api/v1/webhooks")
        .header("content-type", "application/json")
        .body(json!({"url": "ftp://x", "namespace": null, "events": [], "format": "berth", "secret": null}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("\"ftp://x\"") && message.contains("http://"),
        "{message}"
    );
    assert_eq!(err, format!("berth: {message}\n"));
    let listed = run_json(&s, &["webhook", "list"]);
    assert_eq!(listed, json!({"webhooks": []}));
}

/// A webhook receiver on a random loopback port answering 200; sends each request's
/// headers (lowercase names) and body to the returned channel. Stops with the test's runtime.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<(String, String)>, Vec<u8>)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    while buf.len() < end + 4 + len {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    let _ = tx.send((headers, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// Polls `berth webhook deliveries ID --json` until it lists `n` attempts (at most 5 s).
async fn deliveries(s: &Server, id: &str, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let a = run_json(s, &["webhook", "deliveries", id]);
        if a["deliveries"].as_array().unwrap().len() >= n {
            return a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no {n} deliveries within 5 s: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn webhook_deliveries_show_successes_and_failures() {
    let mut s = Server::start_with(&[
        ("BERTH_ADMIN_PASSWORD", crate::auth::ADMIN_PASSWORD),
        // One failed attempt only, however long the test takes.
        ("BERTH_WEBHOOK_FIRST_BACKOFF_MS", "600000"),
        ("BERTH_WEBHOOK_MAX_BACKOFF_MS", "600000"),
    ]);
    s.authorization = Some(admin());
    let (url, mut received) = receiver().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let add = |url: &str| {
        let a = run_json(&s, &["webhook", "add", url, "--event", "tag.overwritten"]);
        (
            a["id"].to_string(),
            a["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (good, secret) = add(&url);
    let (bad, _) = add(&closed);

    let (old, _) = s.push_image("team/app", "latest", b"old code").await;
    let (new, _) = s.push_image("team/app", "latest", b"new code").await;
    let audit = run_json(&s, &["audit", "--kind", "tag.overwritten"]);
    let event_id = audit["events"][0]["id"].as_i64().unwrap();

    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("a delivery within 5 s")
        .unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("x-berth-signature-256"),
        Some(crate::webhooks::hmac_sha256(secret.as_bytes(), &body).as_str()),
        "the secret `webhook add` printed verifies the delivery"
    );
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        payload, audit["events"][0],
        "the event as the audit log shows it"
    );
    assert_eq!(payload["previous_digest"], old.as_str());
    assert_eq!(payload["digest"], new.as_str());

    let a = deliveries(&s, &good, 1).await;
    let d = &a["deliveries"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{a}");
    assert_eq!(d[0]["event_id"], event_id);
    assert_eq!(d[0]["kind"], "tag.overwritten");
    assert_eq!(d[0]["attempt"], 1);
    assert_eq!(d[0]["status"], 200);
    assert_eq!(d[0]["error"], Value::Null);
    assert_eq!(d[0]["delivered"], true);
    let out = run(&s, &["webhook", "deliveries", &good]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let at = to_second(&d[0]["at"]);
    let event_text = event_id.to_string();
    assert_eq!(
        rows,
        [
            vec!["TIME", "EVENT", "KIND", "ATTEMPT", "RESULT"],
            vec![
                at.as_str(),
                event_text.as_str(),
                "tag.overwritten",
                "1",
                "delivered",
                "200"
            ],
        ],
        "{out}"
    );

    let a = deliveries(&s, &bad, 1).await;
    let d = &a["deliveries"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{a}");
    assert_eq!(d[0]["event_id"], event_id);
    assert_eq!(d[0]["attempt"], 1);
    assert_eq!(d[0]["status"], Value::Null);
    assert_eq!(d[0]["delivered"], false);
    let error = d[0]["error"].as_str().unwrap();
    let out = run(&s, &["webhook", "deliveries", &bad]);
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(line.ends_with(&format!("  failed: {error}")), "{out}");

    let listed = run_json(&s, &["webhook", "list"]);
    let next = listed["webhooks"][1]["next_attempt"].clone();
    assert_eq!(listed["webhooks"][1]["failures"], 1, "{listed}");
    let out = run(&s, &["webhook", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with(&format!("{good} ")) && lines[1].ends_with("  ok"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("{bad} "))
            && lines[2].ends_with(&format!("  failing (1 attempt, next {})", to_second(&next))),
        "{out}"
    );
}
