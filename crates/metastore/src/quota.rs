//! [`QuotaStore`] for [`SqliteMetaStore`], and the quota check of a manifest push.

use async_trait::async_trait;
use berth_registry::access::namespace_of;
use berth_registry::ports::StoreResult;
use berth_registry::quota::{NamespaceUsage, QuotaExceeded, RepoUsage};
use berth_registry::{NewManifest, QuotaStore};
use sqlx::{Row, SqliteConnection};

use crate::sqlite::{SqliteMetaStore, db_err, keep};
use crate::writer::Durability;

/// Repositories of namespace `$1` (alias `r`).
const IN_NAMESPACE: &str = "(r.name = $1 OR substr(r.name, 1, length($1) + 1) = $1 || '/')";

/// Blob digests the manifests of namespace `$1` reference.
fn referenced_in_namespace() -> String {
    format!(
        "SELECT mr.digest FROM manifest_refs mr JOIN manifests m ON m.id = mr.manifest_id
         JOIN repositories r ON r.id = m.repo_id WHERE mr.kind = 'blob' AND {IN_NAMESPACE}"
    )
}

async fn bytes_in(conn: &mut SqliteConnection, namespace: &str) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN ({})",
        referenced_in_namespace()
    );
    let total: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(namespace)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Inside a push's transaction: whether the manifest's blobs that its namespace does not
/// reference yet fit in the namespace's quota (no quota: they do). The limit is read in
/// the same transaction, so a quota set meanwhile applies.
pub(crate) async fn check_quota(
    conn: &mut SqliteConnection,
    m: &NewManifest,
) -> Result<Option<QuotaExceeded>, sqlx::Error> {
    if m.blob_refs.is_empty() {
        return Ok(None);
    }
    let namespace = namespace_of(&m.repo);
    let Some(row) = sqlx::query("SELECT limit_bytes FROM quotas WHERE namespace = $1")
        .bind(namespace)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let limit = u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0);
    let mut needs = 0u64;
    let mut seen = std::collections::HashSet::new();
    let known = format!(
        "SELECT 1 FROM manifest_refs mr JOIN manifests m ON m.id = mr.manifest_id
         JOIN repositories r ON r.id = m.repo_id
         WHERE mr.digest = $2 AND mr.kind = 'blob' AND {IN_NAMESPACE} LIMIT 1"
    );
    for (digest, size) in &m.blob_refs {
        if !seen.insert(digest) {
            continue;
        }
        let referenced = sqlx::query(sqlx::AssertSqlSafe(known.clone()))
            .bind(namespace)
            .bind(digest.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !referenced {
            needs += size;
        }
    }
    if needs == 0 {
        return Ok(None);
    }
    let used = bytes_in(conn, namespace).await?;
    if used.saturating_add(needs) <= limit {
        return Ok(None);
    }
    Ok(Some(QuotaExceeded {
        namespace: namespace.to_owned(),
        used,
        limit,
        needs,
    }))
}

#[async_trait]
impl QuotaStore for SqliteMetaStore {
    async fn set_quota(&self, namespace: &str, limit: u64) -> StoreResult<()> {
        let namespace = namespace.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO quotas (namespace, limit_bytes, updated_ms) VALUES ($1, $2, $3)
                         ON CONFLICT (namespace) DO UPDATE SET limit_bytes = excluded.limit_bytes,
                           updated_ms = excluded.updated_ms",
                    )
                    .bind(&namespace)
                    .bind(limit)
                    .bind(berth_registry::service::unix_now_ms())
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn remove_quota(&self, namespace: &str) -> StoreResult<bool> {
        let namespace = namespace.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let gone = sqlx::query("DELETE FROM quotas WHERE namespace = $1")
                        .bind(&namespace)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    Ok(gone > 0)
                })
            })
            .await
    }

    async fn quota(&self, namespace: &str) -> StoreResult<Option<u64>> {
        let row = sqlx::query("SELECT limit_bytes FROM quotas WHERE namespace = $1")
            .bind(namespace)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            r.try_get::<i64, _>(0)
                .map(|l| u64::try_from(l).unwrap_or(0))
        })
        .transpose()
        .map_err(db_err)
    }

    async fn namespace_bytes(&self, namespace: &str) -> StoreResult<u64> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        bytes_in(&mut conn, namespace).await.map_err(db_err)
    }

    async fn repository_bytes(&self, namespace: &str) -> StoreResult<Vec<RepoUsage>> {
        let sql = format!(
            "SELECT r.name, COALESCE((SELECT SUM(b.size) FROM blobs b WHERE b.digest IN (
                 SELECT mr.digest FROM manifest_refs mr JOIN manifests m ON m.id = mr.manifest_id
                 WHERE mr.kind = 'blob' AND m.repo_id = r.id)), 0)
             FROM repositories r WHERE {IN_NAMESPACE} ORDER BY r.name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(namespace)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let bytes: i64 = r.try_get(1).map_err(db_err)?;
                Ok(RepoUsage {
                    repository: r.try_get(0).map_err(db_err)?,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn all_namespace_usage(&self) -> StoreResult<Vec<NamespaceUsage>> {
        let rows = sqlx::query(
            "SELECT DISTINCT CASE WHEN instr(name, '/') > 0 THEN substr(name, 1, instr(name, '/') - 1)
                                  ELSE name END FROM repositories
             UNION SELECT namespace FROM quotas ORDER BY 1",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let namespace: String = r.try_get(0).map_err(db_err)?;
            out.push(NamespaceUsage {
                bytes: self.namespace_bytes(&namespace).await?,
                limit: self.quota(&namespace).await?,
                namespace,
            });
        }
        Ok(out)
    }
}
