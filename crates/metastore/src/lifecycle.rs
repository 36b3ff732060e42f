//! [`LifecycleStore`] for [`SqliteMetaStore`]: lifecycle policies, the images rules are
//! evaluated against, and expiring one image with what only it kept.

use std::collections::HashMap;

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use berth_registry::events::{Event, EventKind};
use berth_registry::ports::StoreResult;
use berth_registry::{Actor, LifecycleStore, StoredImage};
use sqlx::{Row, SqliteConnection};

use crate::events::insert_event;
use crate::sqlite::{
    SqliteMetaStore, TagChange, db_err, keep, parse_digest, parse_repo, record_tag_event, texts_for,
};
use crate::writer::Durability;

/// Whether an index of the manifest's repository lists it (`m` is the manifest's alias).
const LISTED: &str =
    "EXISTS (SELECT 1 FROM manifest_refs mr JOIN manifests p ON p.id = mr.manifest_id
    WHERE mr.kind = 'manifest' AND mr.digest = m.digest AND p.repo_id = m.repo_id)";

/// A manifest to delete while expiring an image.
struct Doomed {
    id: i64,
    digest: String,
}

/// Deletes one manifest with its tags (recording the tag and delete events) and returns
/// the untagged manifests that only it kept: children no other index lists, referrers.
async fn delete_one(
    conn: &mut SqliteConnection,
    repo: &RepoName,
    repo_id: i64,
    doomed: &Doomed,
    reason: &str,
    actor: &Actor,
) -> Result<Vec<Doomed>, sqlx::Error> {
    let children = texts_for(
        conn,
        "SELECT digest FROM manifest_refs WHERE manifest_id = $1 AND kind = 'manifest'",
        doomed.id,
    )
    .await?;
    let tags = texts_for(
        conn,
        "SELECT name FROM tags WHERE manifest_id = $1",
        doomed.id,
    )
    .await?;
    for tag in &tags {
        let change = TagChange {
            repo_id,
            repo,
            tag,
            previous: Some(&doomed.digest),
            new: None,
        };
        record_tag_event(conn, &change, actor).await?;
    }
    for sql in [
        "DELETE FROM tags WHERE manifest_id = $1",
        "DELETE FROM manifests WHERE id = $1",
    ] {
        sqlx::query(sql).bind(doomed.id).execute(&mut *conn).await?;
    }
    let mut event = Event::new(EventKind::Delete, actor);
    event.repository = Some(repo.as_str().to_owned());
    event.digest = Some(doomed.digest.clone());
    event.detail = Some(reason.to_owned());
    insert_event(conn, &event).await?;

    let mut next = Vec::new();
    for child in children {
        let sql = format!(
            "SELECT m.id, m.digest FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id) AND NOT {LISTED}"
        );
        if let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo_id)
            .bind(&child)
            .fetch_optional(&mut *conn)
            .await?
        {
            next.push(Doomed {
                id: r.try_get(0)?,
                digest: r.try_get(1)?,
            });
        }
    }
    let referrers = sqlx::query(
        "SELECT m.id, m.digest FROM manifests m WHERE m.repo_id = $1 AND m.subject = $2
           AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)",
    )
    .bind(repo_id)
    .bind(&doomed.digest)
    .fetch_all(&mut *conn)
    .await?;
    for r in referrers {
        next.push(Doomed {
            id: r.try_get(0)?,
            digest: r.try_get(1)?,
        });
    }
    Ok(next)
}

#[async_trait]
impl LifecycleStore for SqliteMetaStore {
    async fn put_lifecycle_policy(&self, scope: &str, json: &str, now_ms: i64) -> StoreResult<()> {
        let (scope, json) = (scope.to_owned(), json.to_owned());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO lifecycle_policies (scope, policy, updated_ms) VALUES ($1, $2, $3)
                         ON CONFLICT (scope) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms",
                    )
                    .bind(&scope)
                    .bind(&json)
                    .bind(now_ms)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn lifecycle_policy(&self, scope: &str) -> StoreResult<Option<String>> {
        sqlx::query("SELECT policy FROM lifecycle_policies WHERE scope = $1")
            .bind(scope)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(db_err)
    }

    async fn lifecycle_policies(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT scope, policy FROM lifecycle_policies ORDER BY scope")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?)))
            .collect()
    }

    async fn remove_lifecycle_policy(&self, scope: &str) -> StoreResult<bool> {
        let scope = scope.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let gone = sqlx::query("DELETE FROM lifecycle_policies WHERE scope = $1")
                        .bind(&scope)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok(gone > 0)
                })
            })
            .await
    }

    async fn repos_within(&self, scope: &str) -> StoreResult<Vec<RepoName>> {
        let rows = sqlx::query(
            "SELECT name FROM repositories
             WHERE name = $1 OR substr(name, 1, length($1) + 1) = $1 || '/' ORDER BY name",
        )
        .bind(scope)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| parse_repo(&r.try_get::<String, _>(0).map_err(db_err)?))
            .collect()
    }

    async fn lifecycle_images(&self, repo: &RepoName) -> StoreResult<Vec<StoredImage>> {
        let sql = format!(
            "SELECT m.id, m.digest, m.pushed_at, m.last_pulled_ms FROM manifests m
             WHERE m.repo_id = (SELECT id FROM repositories WHERE name = $1) AND NOT {LISTED}
               AND NOT EXISTS (SELECT 1 FROM manifests s WHERE m.subject IS NOT NULL
                               AND s.repo_id = m.repo_id AND s.digest = m.subject)
             ORDER BY m.digest"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.as_str())
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let tag_rows = sqlx::query(
            "SELECT t.manifest_id, t.name FROM tags t
             WHERE t.repo_id = (SELECT id FROM repositories WHERE name = $1) ORDER BY t.name",
        )
        .bind(repo.as_str())
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        let mut tags: HashMap<i64, Vec<String>> = HashMap::new();
        for r in &tag_rows {
            tags.entry(r.try_get(0).map_err(db_err)?)
                .or_default()
                .push(r.try_get(1).map_err(db_err)?);
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(db_err)?;
                Ok(StoredImage {
                    digest: parse_digest(&r.try_get::<String, _>(1).map_err(db_err)?)?,
                    tags: tags.remove(&id).unwrap_or_default(),
                    pushed_at: r.try_get(2).map_err(db_err)?,
                    last_pulled_ms: r.try_get(3).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn expire_image(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
        reason: &str,
        actor: &Actor,
    ) -> StoreResult<Vec<Digest>> {
        let (repo, digest, actor, reason) = (
            repo.clone(),
            digest.clone(),
            actor.clone(),
            reason.to_owned(),
        );
        let mut expected: Vec<String> = tags.to_vec();
        expected.sort();
        let deleted: Vec<String> = self
            .writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT m.id, m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE r.name = $1 AND m.digest = $2 AND NOT {LISTED}"
                    );
                    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(repo.as_str())
                        .bind(digest.as_str())
                        .fetch_optional(&mut *conn)
                        .await?
                    else {
                        return Ok(Vec::new());
                    };
                    let (id, repo_id): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                    let current = texts_for(
                        conn,
                        "SELECT name FROM tags WHERE manifest_id = $1 ORDER BY name",
                        id,
                    )
                    .await?;
                    if current != expected {
                        return Ok(Vec::new());
                    }
                    let mut deleted = Vec::new();
                    let mut work = vec![Doomed {
                        id,
                        digest: digest.as_str().to_owned(),
                    }];
                    while let Some(doomed) = work.pop() {
                        if deleted.contains(&doomed.digest) {
                            continue;
                        }
                        let why = if deleted.is_empty() {
                            reason.clone()
                        } else {
                            format!("kept only by {digest}, which expired: {reason}")
                        };
                        let next = delete_one(conn, &repo, repo_id, &doomed, &why, &actor).await?;
                        deleted.push(doomed.digest);
                        work.extend(next);
                    }
                    Ok(deleted)
                })
            })
            .await?;
        deleted.iter().map(|d| parse_digest(d)).collect()
    }
}
