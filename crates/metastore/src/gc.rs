//! [`GcStore`] for [`SqliteMetaStore`]: finding and claiming what the garbage collector
//! may remove. Every claim re-checks its conditions in its own transaction; the single
//! writer orders it against pushes, so a manifest that committed first always wins.

use async_trait::async_trait;
use berth_oci::{Digest, RepoName};
use berth_registry::events::{Event, EventKind};
use berth_registry::ports::StoreResult;
use berth_registry::{Actor, GcStore};
use sqlx::{Row, SqliteConnection};

use crate::events::insert_event;
use crate::sqlite::{SqliteMetaStore, db_err, keep, parse_digest, parse_repo};
use crate::writer::Durability;

/// Blob candidates: no manifest references them and nothing stored or linked them in or
/// after the cut-off's second (`$1`; times are whole seconds, so even a zero grace period
/// spares what was linked this second). Used by the listing and re-checked by the claim.
const UNREFERENCED: &str = "b.created_at < $1
    AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.digest = b.digest AND r.kind = 'blob')
    AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest AND l.linked_at >= $1)";

/// Manifest candidates: pushed before `$1`'s second, untagged, not an index's child and not
/// the referrer of a manifest still present in the same repository.
const UNTAGGED: &str = "m.pushed_at < $1
    AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
    AND NOT EXISTS (SELECT 1 FROM manifest_refs mr JOIN manifests p ON p.id = mr.manifest_id
                    WHERE mr.kind = 'manifest' AND mr.digest = m.digest AND p.repo_id = m.repo_id)
    AND NOT EXISTS (SELECT 1 FROM manifests s WHERE m.subject IS NOT NULL
                    AND s.repo_id = m.repo_id AND s.digest = m.subject)";

async fn still_unreferenced(
    conn: &mut SqliteConnection,
    digest: &str,
    cutoff: i64,
) -> Result<bool, sqlx::Error> {
    let sql = format!("SELECT 1 FROM blobs b WHERE b.digest = $2 AND {UNREFERENCED}");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cutoff)
        .bind(digest)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

#[async_trait]
impl GcStore for SqliteMetaStore {
    async fn unreferenced_blobs(
        &self,
        cutoff: i64,
        after: Option<&Digest>,
        limit: u32,
    ) -> StoreResult<Vec<(Digest, u64)>> {
        let sql = format!(
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $2 AND {UNREFERENCED}
             ORDER BY b.digest LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .bind(after.map_or("", Digest::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0).map_err(db_err)?;
                let size: i64 = r.try_get(1).map_err(db_err)?;
                Ok((parse_digest(&digest)?, u64::try_from(size).unwrap_or(0)))
            })
            .collect()
    }

    async fn claim_unreferenced_blobs(
        &self,
        digests: &[Digest],
        cutoff: i64,
    ) -> StoreResult<Vec<(Digest, Vec<RepoName>)>> {
        let digests = digests.to_vec();
        let claimed: Vec<(String, Vec<String>)> = self
            .writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let mut claimed = Vec::new();
                    for digest in &digests {
                        if !still_unreferenced(conn, digest.as_str(), cutoff).await? {
                            continue;
                        }
                        let repos: Vec<String> = sqlx::query(
                            "SELECT r.name FROM repo_blobs l JOIN repositories r ON r.id = l.repo_id
                             WHERE l.digest = $1",
                        )
                        .bind(digest.as_str())
                        .fetch_all(&mut *conn)
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                        for sql in [
                            "DELETE FROM repo_blobs WHERE digest = $1",
                            "DELETE FROM blobs WHERE digest = $1",
                        ] {
                            sqlx::query(sql)
                                .bind(digest.as_str())
                                .execute(&mut *conn)
                                .await?;
                        }
                        claimed.push((digest.as_str().to_owned(), repos));
                    }
                    Ok(claimed)
                })
            })
            .await?;
        claimed
            .into_iter()
            .map(|(digest, names)| {
                let repos = names
                    .iter()
                    .map(|n| parse_repo(n))
                    .collect::<StoreResult<_>>()?;
                Ok((parse_digest(&digest)?, repos))
            })
            .collect()
    }

    async fn untagged_manifests(&self, cutoff: i64) -> StoreResult<Vec<(RepoName, Digest)>> {
        let sql = format!(
            "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE {UNTAGGED} ORDER BY r.name, m.digest"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(0).map_err(db_err)?;
                let digest: String = r.try_get(1).map_err(db_err)?;
                Ok((parse_repo(&name)?, parse_digest(&digest)?))
            })
            .collect()
    }

    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff: i64,
        actor: &Actor,
    ) -> StoreResult<bool> {
        let (repo, digest, actor) = (repo.clone(), digest.clone(), actor.clone());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT m.id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE r.name = $2 AND m.digest = $3 AND {UNTAGGED}"
                    );
                    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(cutoff)
                        .bind(repo.as_str())
                        .bind(digest.as_str())
                        .fetch_optional(&mut *conn)
                        .await?
                    else {
                        return Ok(false);
                    };
                    let id: i64 = row.try_get(0)?;
                    sqlx::query("DELETE FROM manifests WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    let mut deleted = Event::new(EventKind::Delete, &actor);
                    deleted.repository = Some(repo.as_str().to_owned());
                    deleted.digest = Some(digest.as_str().to_owned());
                    deleted.detail = Some("untagged manifest removed by garbage collection".into());
                    insert_event(conn, &deleted).await?;
                    Ok(true)
                })
            })
            .await
    }
}
