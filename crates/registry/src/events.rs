//! The event stream: every push, pull, delete, tag change, policy denial and failed login
//! becomes an [`Event`]. Consumers: the audit log, the pull records behind `berth tag
//! pulls`, and the webhook outbox ([`crate::webhooks`]).
//!
//! Two paths, one table. Changes (manifest push, tag create / overwrite / delete, manifest
//! delete) are written by the metadata store in the same transaction as the change, so an
//! acknowledged change always has its event. Everything else (pulls, denials, failed logins)
//! goes through the [`EventBuffer`] and is written in one batch a second; pulls are counted
//! there, not written one row per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use berth_oci::{Digest, RepoName, Tag};

use crate::types::Actor;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A manifest was pushed.
    Push,
    /// A manifest was served (counted: one event per client and second).
    Pull,
    /// A manifest was deleted.
    Delete,
    /// A tag was created.
    TagCreated,
    /// An existing tag moved to a different digest: the event teams alert on.
    TagOverwritten,
    /// A tag was deleted (by tag, or with its manifest).
    TagDeleted,
    /// A request was refused by a rule: access control or an immutability rule.
    PolicyDenied,
    /// A login with wrong, unknown or expired credentials.
    LoginFailed,
}

impl EventKind {
    /// Every kind, in a stable order (for help texts and filters).
    pub const ALL: [EventKind; 8] = [
        EventKind::Push,
        EventKind::Pull,
        EventKind::Delete,
        EventKind::TagCreated,
        EventKind::TagOverwritten,
        EventKind::TagDeleted,
        EventKind::PolicyDenied,
        EventKind::LoginFailed,
    ];

    /// The kind's name in the API, the audit log and webhook payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Pull => "pull",
            EventKind::Delete => "delete",
            EventKind::TagCreated => "tag.created",
            EventKind::TagOverwritten => "tag.overwritten",
            EventKind::TagDeleted => "tag.deleted",
            EventKind::PolicyDenied => "policy.denied",
            EventKind::LoginFailed => "login.failed",
        }
    }

    /// Parses a kind's name; the error lists the valid ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event kind {s:?}; kinds are {}", names.join(", "))
            })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The repository concerned, if any (a failed login has none).
    pub repository: Option<String>,
    /// The tag concerned, if any.
    pub tag: Option<String>,
    /// The digest concerned (pushed, served, deleted; a tag's new digest).
    pub digest: Option<String>,
    /// A moved or deleted tag's digest before the change.
    pub previous_digest: Option<String>,
    /// The manifest's media type, when known.
    pub media_type: Option<String>,
    /// The manifest's size in bytes, when known.
    pub size: Option<i64>,
    /// Who.
    pub actor: Actor,
    /// How many times it happened (pulls are counted; everything else is 1).
    pub count: u64,
    /// A human-readable explanation (why a request was denied, which login failed).
    pub detail: Option<String>,
}

impl Event {
    /// An event of `kind` now, by `actor`, with nothing else filled in.
    pub fn new(kind: EventKind, actor: &Actor) -> Self {
        Event {
            kind,
            at_ms: crate::service::unix_now_ms(),
            repository: None,
            tag: None,
            digest: None,
            previous_digest: None,
            media_type: None,
            size: None,
            actor: actor.clone(),
            count: 1,
            detail: None,
        }
    }

    /// The namespace (first path segment) of the event's repository.
    pub fn namespace(&self) -> Option<&str> {
        self.repository
            .as_deref()
            .map(|r| r.split('/').next().unwrap_or(r))
    }
}

/// An event as stored: its id orders the stream (webhook cursors follow it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the stream; increases with every event written.
    pub id: i64,
    /// The event.
    pub event: Event,
}

/// Which audit events to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only events at or before this time (unix ms).
    pub until_ms: Option<i64>,
    /// Only events in this namespace.
    pub namespace: Option<String>,
    /// Only events of this repository.
    pub repository: Option<String>,
    /// Only events by this account.
    pub account: Option<String>,
    /// Only events of these kinds (empty: all).
    pub kinds: Vec<EventKind>,
    /// Only events older than this id (paging).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Pulls of one digest of a tag by one client within one minute: the unit of the pull
/// records, so a busy registry writes a row per client and minute, not per pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullCount {
    /// Repository.
    pub repository: String,
    /// The tag pulled; `None` for pulls by digest.
    pub tag: Option<String>,
    /// The digest served.
    pub digest: String,
    /// Client address.
    pub client: String,
    /// Account, when authenticated.
    pub account: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Start of the minute (unix ms, a multiple of 60,000).
    pub minute_ms: i64,
    /// Last pull within the minute (unix ms).
    pub last_ms: i64,
    /// Pulls.
    pub count: u64,
}

/// Pulls of one digest of a tag by one client over a time range (`berth tag pulls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPulls {
    /// The digest served.
    pub digest: String,
    /// Client address.
    pub client: String,
    /// Account last seen for this client, when authenticated.
    pub account: Option<String>,
    /// `User-Agent` last seen for this client.
    pub user_agent: Option<String>,
    /// Pulls in the range.
    pub count: u64,
    /// First pull in the range (unix ms, to the minute).
    pub first_ms: i64,
    /// Last pull in the range (unix ms).
    pub last_ms: i64,
}

/// The key pulls are counted under between two flushes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PullKey {
    repository: String,
    tag: Option<String>,
    digest: String,
    actor: Actor,
    minute_ms: i64,
}

/// Pulls of one key since the last flush.
#[derive(Clone, Debug)]
struct PullTally {
    media_type: String,
    size: i64,
    last_ms: i64,
    count: u64,
}

/// Events and pull counts waiting for the next batch write.
#[derive(Default)]
pub struct EventBuffer {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    pulls: HashMap<PullKey, PullTally>,
    /// A batch whose write failed, written again with the next one.
    carried: EventBatch,
}

/// Most events held between two flushes; beyond it new ones are dropped and counted
/// (a flood of denials must not grow memory without bound).
pub const MAX_BUFFERED_EVENTS: usize = 100_000;

/// What a flush writes: events (pull events already folded per client and second) and the
/// pull counts for the pull records.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// Events to append to the stream.
    pub events: Vec<Event>,
    /// Pull counts to add to the pull records.
    pub pulls: Vec<PullCount>,
}

impl EventBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.pulls.is_empty()
    }
}

impl EventBuffer {
    /// Queues an event for the next batch.
    pub fn emit(&self, event: Event) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.events.len() < MAX_BUFFERED_EVENTS {
            p.events.push(event);
        } else {
            metrics::counter!("berth_events_dropped_total").increment(1);
        }
    }

    /// Counts a pull of `digest` (through `tag`, when pulled by tag).
    pub fn pull(&self, repo: &RepoName, tag: Option<&Tag>, m: PulledManifest<'_>, actor: Actor) {
        self.pull_at(repo, tag, m, actor, crate::service::unix_now_ms());
    }

    /// [`EventBuffer::pull`] at a given time (unix ms).
    fn pull_at(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        m: PulledManifest<'_>,
        actor: Actor,
        now: i64,
    ) {
        let key = PullKey {
            repository: repo.as_str().to_owned(),
            tag: tag.map(|t| t.as_str().to_owned()),
            digest: m.digest.as_str().to_owned(),
            actor,
            minute_ms: now - now.rem_euclid(60_000),
        };
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = p.pulls.get_mut(&key) {
            t.count += 1;
            t.last_ms = now;
        } else if p.pulls.len() < MAX_BUFFERED_EVENTS {
            let tally = PullTally {
                media_type: m.media_type.to_owned(),
                size: m.size,
                last_ms: now,
                count: 1,
            };
            p.pulls.insert(key, tally);
        } else {
            metrics::counter!("berth_events_dropped_total").increment(1);
        }
    }

    /// Hands back a batch whose write failed: it is written with the next one (unless
    /// that would hold more than [`MAX_BUFFERED_EVENTS`], then it is dropped and counted).
    pub fn carry(&self, batch: EventBatch) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.carried.events.len() + batch.events.len() > MAX_BUFFERED_EVENTS {
            metrics::counter!("berth_events_dropped_total").increment(batch.events.len() as u64);
            return;
        }
        p.carried.events.extend(batch.events);
        p.carried.pulls.extend(batch.pulls);
    }

    /// Takes everything queued: the batch to write.
    pub fn drain(&self) -> EventBatch {
        let pending = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
        };
        let mut batch = pending.carried;
        batch.events.extend(pending.events);
        batch.pulls.reserve(pending.pulls.len());
        for (key, tally) in pending.pulls {
            let mut event = Event::new(EventKind::Pull, &key.actor);
            event.at_ms = tally.last_ms;
            event.repository = Some(key.repository.clone());
            event.tag = key.tag.clone();
            event.digest = Some(key.digest.clone());
            event.media_type = Some(tally.media_type);
            event.size = Some(tally.size);
            event.count = tally.count;
            batch.events.push(event);
            batch.pulls.push(PullCount {
                repository: key.repository,
                tag: key.tag,
                digest: key.digest,
                client: key.actor.client.unwrap_or_default(),
                account: key.actor.account,
                user_agent: key.actor.user_agent,
                minute_ms: key.minute_ms,
                last_ms: tally.last_ms,
                count: tally.count,
            });
        }
        batch.events.sort_by_key(|e| e.at_ms);
        batch
    }
}

/// The manifest a pull was served, for [`EventBuffer::pull`].
#[derive(Clone, Copy, Debug)]
pub struct PulledManifest<'a> {
    /// Its digest.
    pub digest: &'a Digest,
    /// Its media type.
    pub media_type: &'a str,
    /// Its size in bytes.
    pub size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(client: &str) -> Actor {
        Actor {
            account: None,
            client: Some(client.to_owned()),
            user_agent: Some("docker/27".to_owned()),
        }
    }

    #[test]
    fn kinds_round_trip_and_unknown_kinds_name_the_valid_ones() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Ok(k));
        }
        let err = EventKind::parse("tag.moved").unwrap_err();
        assert!(
            err.contains("tag.overwritten") && err.contains("login.failed"),
            "{err}"
        );
    }

    #[test]
    fn pulls_are_counted_per_digest_and_client_not_stored_per_request() {
        let buffer = EventBuffer::default();
        let repo = RepoName::parse("payments/api").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let (old, new) = (
            Digest::of(berth_oci::Algorithm::Sha256, b"old"),
            Digest::of(berth_oci::Algorithm::Sha256, b"new"),
        );
        let m = |d| PulledManifest {
            digest: d,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            size: 3,
        };
        let minute = 1_800_000_000_000; // a whole minute
        for i in 0..5 {
            buffer.pull_at(&repo, Some(&tag), m(&old), actor("127.0.0.2"), minute + i);
        }
        for i in 0..3 {
            buffer.pull_at(
                &repo,
                Some(&tag),
                m(&new),
                actor("127.0.0.3"),
                minute + 10 + i,
            );
        }
        // The next minute is another row.
        buffer.pull_at(
            &repo,
            Some(&tag),
            m(&old),
            actor("127.0.0.2"),
            minute + 60_000,
        );
        let batch = buffer.drain();
        let mut counts: Vec<(String, String, i64, u64, i64)> = batch
            .pulls
            .iter()
            .map(|p| {
                (
                    p.digest.clone(),
                    p.client.clone(),
                    p.minute_ms,
                    p.count,
                    p.last_ms,
                )
            })
            .collect();
        counts.sort();
        let mut expected = vec![
            (
                old.to_string(),
                "127.0.0.2".to_owned(),
                minute,
                5,
                minute + 4,
            ),
            (
                old.to_string(),
                "127.0.0.2".to_owned(),
                minute + 60_000,
                1,
                minute + 60_000,
            ),
            (
                new.to_string(),
                "127.0.0.3".to_owned(),
                minute,
                3,
                minute + 12,
            ),
        ];
        expected.sort();
        assert_eq!(counts, expected);
        let mut events: Vec<(i64, u64)> = batch.events.iter().map(|e| (e.at_ms, e.count)).collect();
        events.sort();
        assert_eq!(
            events,
            [(minute + 4, 5), (minute + 12, 3), (minute + 60_000, 1)]
        );
        assert!(batch.events.iter().all(|e| e.kind == EventKind::Pull
            && e.namespace() == Some("payments")
            && e.tag.as_deref() == Some("latest")));
        assert!(buffer.drain().is_empty(), "a drain empties the buffer");
    }

    #[test]
    fn a_batch_that_failed_to_write_is_written_with_the_next() {
        let buffer = EventBuffer::default();
        buffer.emit(Event::new(EventKind::LoginFailed, &actor("127.0.0.9")));
        let failed = buffer.drain();
        assert_eq!(failed.events.len(), 1);
        buffer.carry(failed);
        buffer.emit(Event::new(EventKind::PolicyDenied, &actor("127.0.0.9")));
        let kinds: Vec<EventKind> = buffer.drain().events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::LoginFailed, EventKind::PolicyDenied]);
    }
}
