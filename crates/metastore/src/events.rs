//! [`EventStore`] for [`SqliteMetaStore`]: the event stream (audit log and webhook outbox),
//! pull records, webhook subscriptions and their delivery log.

use async_trait::async_trait;
use berth_oci::{RepoName, Tag};
use berth_registry::events::{AuditQuery, ClientPulls, Event, EventBatch, EventKind, StoredEvent};
use berth_registry::ports::StoreResult;
use berth_registry::webhooks::{DeliveryRecord, NewWebhook, Webhook, WebhookFormat};
use berth_registry::{Actor, EventStore, StorageError};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row, SqliteConnection};

use crate::sqlite::{SqliteMetaStore, db_err, keep};
use crate::writer::Durability;

/// Appends `e` to the event stream, in the caller's transaction.
pub(crate) async fn insert_event(
    conn: &mut SqliteConnection,
    e: &Event,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (kind, at_ms, namespace, repository, tag, digest, previous_digest,
                             media_type, size, account, client, user_agent, count, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(e.kind.as_str())
    .bind(e.at_ms)
    .bind(e.namespace())
    .bind(e.repository.as_deref())
    .bind(e.tag.as_deref())
    .bind(e.digest.as_deref())
    .bind(e.previous_digest.as_deref())
    .bind(e.media_type.as_deref())
    .bind(e.size)
    .bind(e.actor.account.as_deref())
    .bind(e.actor.client.as_deref())
    .bind(e.actor.user_agent.as_deref())
    .bind(i64::try_from(e.count).unwrap_or(i64::MAX))
    .bind(e.detail.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::Backend(format!("corrupt {what} {value:?} in database"))
}

fn event_from(r: &SqliteRow) -> StoreResult<StoredEvent> {
    let kind: String = r.try_get("kind").map_err(db_err)?;
    let count: i64 = r.try_get("count").map_err(db_err)?;
    Ok(StoredEvent {
        id: r.try_get("id").map_err(db_err)?,
        event: Event {
            kind: EventKind::parse(&kind).map_err(|_| corrupt("event kind", &kind))?,
            at_ms: r.try_get("at_ms").map_err(db_err)?,
            repository: r.try_get("repository").map_err(db_err)?,
            tag: r.try_get("tag").map_err(db_err)?,
            digest: r.try_get("digest").map_err(db_err)?,
            previous_digest: r.try_get("previous_digest").map_err(db_err)?,
            media_type: r.try_get("media_type").map_err(db_err)?,
            size: r.try_get("size").map_err(db_err)?,
            actor: Actor {
                account: r.try_get("account").map_err(db_err)?,
                client: r.try_get("client").map_err(db_err)?,
                user_agent: r.try_get("user_agent").map_err(db_err)?,
            },
            count: u64::try_from(count).unwrap_or(0),
            detail: r.try_get("detail").map_err(db_err)?,
        },
    })
}

const EVENT_COLUMNS: &str =
    "SELECT id, kind, at_ms, repository, tag, digest, previous_digest, media_type, size,
        account, client, user_agent, count, detail FROM events";

fn kinds_text(kinds: &[EventKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn webhook_from(r: &SqliteRow) -> StoreResult<Webhook> {
    let kinds: String = r.try_get("kinds").map_err(db_err)?;
    let format: String = r.try_get("format").map_err(db_err)?;
    let failures: i64 = r.try_get("failures").map_err(db_err)?;
    Ok(Webhook {
        id: r.try_get("id").map_err(db_err)?,
        url: r.try_get("url").map_err(db_err)?,
        namespace: r.try_get("namespace").map_err(db_err)?,
        kinds: kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| EventKind::parse(k).map_err(|_| corrupt("event kind", k)))
            .collect::<StoreResult<_>>()?,
        format: WebhookFormat::parse(&format).map_err(|_| corrupt("webhook format", &format))?,
        secret: r.try_get("secret").map_err(db_err)?,
        created_ms: r.try_get("created_ms").map_err(db_err)?,
        cursor: r.try_get("cursor").map_err(db_err)?,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        next_attempt_ms: r.try_get("next_attempt_ms").map_err(db_err)?,
    })
}

#[async_trait]
impl EventStore for SqliteMetaStore {
    async fn record_events(&self, batch: &EventBatch) -> StoreResult<()> {
        let events = batch.events.clone();
        let pulls = batch.pulls.clone();
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    for e in &events {
                        insert_event(conn, e).await?;
                    }
                    for p in &pulls {
                        sqlx::query(
                            "INSERT INTO pull_records (repository, tag, minute_ms, digest, client, count, last_ms, account, user_agent)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                             ON CONFLICT (repository, tag, minute_ms, digest, client) DO UPDATE SET
                               count = pull_records.count + excluded.count,
                               last_ms = CASE WHEN excluded.last_ms > pull_records.last_ms
                                              THEN excluded.last_ms ELSE pull_records.last_ms END,
                               account = COALESCE(excluded.account, pull_records.account),
                               user_agent = COALESCE(excluded.user_agent, pull_records.user_agent)",
                        )
                        .bind(&p.repository)
                        .bind(p.tag.as_deref().unwrap_or(""))
                        .bind(p.minute_ms)
                        .bind(&p.digest)
                        .bind(&p.client)
                        .bind(i64::try_from(p.count).unwrap_or(i64::MAX))
                        .bind(p.last_ms)
                        .bind(p.account.as_deref())
                        .bind(p.user_agent.as_deref())
                        .execute(&mut *conn)
                        .await?;
                        sqlx::query(
                            "UPDATE manifests SET last_pulled_ms = $1
                             WHERE digest = $2
                               AND repo_id = (SELECT id FROM repositories WHERE name = $3)
                               AND (last_pulled_ms IS NULL OR last_pulled_ms < $1)",
                        )
                        .bind(p.last_ms)
                        .bind(&p.digest)
                        .bind(&p.repository)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn audit(&self, q: &AuditQuery) -> StoreResult<Vec<StoredEvent>> {
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(EVENT_COLUMNS);
        sql.push(" WHERE 1 = 1");
        if let Some(t) = q.since_ms {
            sql.push(" AND at_ms >= ").push_bind(t);
        }
        if let Some(t) = q.until_ms {
            sql.push(" AND at_ms <= ").push_bind(t);
        }
        if let Some(ns) = &q.namespace {
            sql.push(" AND namespace = ").push_bind(ns.clone());
        }
        if let Some(repo) = &q.repository {
            sql.push(" AND repository = ").push_bind(repo.clone());
        }
        if let Some(account) = &q.account {
            sql.push(" AND account = ").push_bind(account.clone());
        }
        if let Some(id) = q.before_id {
            sql.push(" AND id < ").push_bind(id);
        }
        if !q.kinds.is_empty() {
            sql.push(" AND kind IN (");
            let mut list = sql.separated(", ");
            for k in &q.kinds {
                list.push_bind(k.as_str());
            }
            sql.push(")");
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = sql.build().fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter().map(event_from).collect()
    }

    async fn events_after(
        &self,
        after: i64,
        namespace: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = match namespace {
            Some(_) => {
                format!("{EVENT_COLUMNS} WHERE id > $1 AND namespace = $3 ORDER BY id LIMIT $2")
            }
            None => format!("{EVENT_COLUMNS} WHERE id > $1 ORDER BY id LIMIT $2"),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit));
        if let Some(ns) = namespace {
            query = query.bind(ns.to_owned());
        }
        let rows = query.fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter().map(event_from).collect()
    }

    async fn prune_events(&self, before_ms: i64) -> StoreResult<u64> {
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    let deleted = sqlx::query(
                        "DELETE FROM events WHERE at_ms < $1
                           AND id <= (SELECT COALESCE(MIN(cursor), 9223372036854775807) FROM webhooks)",
                    )
                    .bind(before_ms)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    sqlx::query("DELETE FROM pull_records WHERE last_ms < $1")
                        .bind(before_ms)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("DELETE FROM webhook_deliveries WHERE at_ms < $1")
                        .bind(before_ms)
                        .execute(&mut *conn)
                        .await?;
                    Ok(deleted)
                })
            })
            .await
    }

    async fn tag_pulls(
        &self,
        repo: &RepoName,
        tag: &Tag,
        since_ms: i64,
    ) -> StoreResult<Vec<ClientPulls>> {
        let rows = sqlx::query(
            "SELECT digest, client, SUM(count), MIN(minute_ms), MAX(last_ms), MAX(account), MAX(user_agent)
             FROM pull_records
             WHERE repository = $1 AND tag = $2 AND minute_ms >= $3 AND last_ms >= $4
             GROUP BY digest, client ORDER BY MAX(last_ms) DESC, client",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(since_ms - 60_000)
        .bind(since_ms)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let count: i64 = r.try_get(2).map_err(db_err)?;
                let first: i64 = r.try_get(3).map_err(db_err)?;
                Ok(ClientPulls {
                    digest: r.try_get(0).map_err(db_err)?,
                    client: r.try_get(1).map_err(db_err)?,
                    count: u64::try_from(count).unwrap_or(0),
                    first_ms: first.max(since_ms),
                    last_ms: r.try_get(4).map_err(db_err)?,
                    account: r.try_get(5).map_err(db_err)?,
                    user_agent: r.try_get(6).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn add_webhook(&self, hook: &NewWebhook, created_ms: i64) -> StoreResult<Webhook> {
        let hook = hook.clone();
        let id: i64 = self
            .writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO webhooks (url, namespace, kinds, format, secret, created_ms, cursor)
                         VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(id), 0) FROM events))
                         RETURNING id",
                    )
                    .bind(&hook.url)
                    .bind(hook.namespace.as_deref())
                    .bind(kinds_text(&hook.kinds))
                    .bind(hook.format.as_str())
                    .bind(&hook.secret)
                    .bind(created_ms)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)
                })
            })
            .await?;
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_one(&self.read)
            .await
            .map_err(db_err)?;
        webhook_from(&row)
    }

    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let rows = sqlx::query("SELECT * FROM webhooks ORDER BY id")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(webhook_from).collect()
    }

    async fn remove_webhook(&self, id: i64) -> StoreResult<bool> {
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    let gone = sqlx::query("DELETE FROM webhooks WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok(gone > 0)
                })
            })
            .await
    }

    async fn webhook_advanced(&self, id: i64, cursor: i64) -> StoreResult<()> {
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE webhooks SET cursor = $2, failures = 0, next_attempt_ms = 0
                         WHERE id = $1 AND cursor < $2",
                    )
                    .bind(id)
                    .bind(cursor)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn webhook_failed(
        &self,
        id: i64,
        failures: u32,
        next_attempt_ms: i64,
    ) -> StoreResult<()> {
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE webhooks SET failures = $2, next_attempt_ms = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(i64::from(failures))
                    .bind(next_attempt_ms)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn record_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        let d = d.clone();
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (webhook_id, event_id, kind, attempt, at_ms, status, error, delivered)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(d.webhook_id)
                    .bind(d.event_id)
                    .bind(d.kind.as_str())
                    .bind(i64::from(d.attempt))
                    .bind(d.at_ms)
                    .bind(d.status.map(i64::from))
                    .bind(d.error.as_deref())
                    .bind(d.delivered)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn deliveries(&self, webhook_id: i64, limit: u32) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT webhook_id, event_id, kind, attempt, at_ms, status, error, delivered
             FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(webhook_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(2).map_err(db_err)?;
                let attempt: i64 = r.try_get(3).map_err(db_err)?;
                let status: Option<i64> = r.try_get(5).map_err(db_err)?;
                Ok(DeliveryRecord {
                    webhook_id: r.try_get(0).map_err(db_err)?,
                    event_id: r.try_get(1).map_err(db_err)?,
                    kind: EventKind::parse(&kind).map_err(|_| corrupt("event kind", &kind))?,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    at_ms: r.try_get(4).map_err(db_err)?,
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    error: r.try_get(6).map_err(db_err)?,
                    delivered: r.try_get(7).map_err(db_err)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use berth_registry::Actor;
    use berth_registry::EventStore;
    use berth_registry::events::{Event, EventBatch, EventKind};
    use berth_registry::webhooks::{NewWebhook, WebhookFormat};

    use crate::SqliteMetaStore;

    fn event_at(at_ms: i64) -> Event {
        let mut e = Event::new(EventKind::LoginFailed, &Actor::default());
        e.at_ms = at_ms;
        e
    }

    #[tokio::test]
    async fn pruning_keeps_what_a_webhook_has_yet_to_deliver() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let batch = |times: &[i64]| EventBatch {
            events: times.iter().map(|&t| event_at(t)).collect(),
            pulls: Vec::new(),
        };
        store.record_events(&batch(&[1_000, 2_000])).await.unwrap();
        let hook = NewWebhook {
            url: "http://127.0.0.1:9/".into(),
            namespace: None,
            kinds: Vec::new(),
            format: WebhookFormat::Berth,
            secret: "0123456789abcdef".into(),
        };
        let hook = store.add_webhook(&hook, 2_500).await.unwrap();
        assert_eq!(
            hook.cursor, 2,
            "a new subscription starts after the newest event"
        );
        store.record_events(&batch(&[3_000, 4_000])).await.unwrap();
        // Everything is older than the cut-off, but events 3 and 4 are not delivered yet.
        assert_eq!(store.prune_events(10_000).await.unwrap(), 2);
        let left: Vec<i64> = store
            .events_after(0, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, [3, 4]);
        store.webhook_advanced(hook.id, 4).await.unwrap();
        assert_eq!(
            store.prune_events(3_500).await.unwrap(),
            1,
            "only older than the cut-off"
        );
        let left: Vec<i64> = store
            .events_after(0, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, [4]);
        // Ids are never reused after pruning (webhook cursors point into them).
        store.record_events(&batch(&[5_000])).await.unwrap();
        let newest: Vec<i64> = store
            .events_after(4, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(newest, [5]);
    }
}
