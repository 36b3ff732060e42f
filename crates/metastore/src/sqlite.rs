//! [`SqliteMetaStore`]: metadata in one SQLite file (WAL mode).
//!
//! Writes go through a single connection, so SQLite never sees two writers and never
//! answers `SQLITE_BUSY` to a transaction upgrade; reads use a separate pool and run in
//! parallel with the writer thanks to WAL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, RepoName, Tag};
use berth_registry::access::RepoPattern;
use berth_registry::events::{Event, EventKind};
use berth_registry::immutability::{ImmutabilityRule, TagPattern};
use berth_registry::ports::StoreResult;
use berth_registry::service::unix_now;
use berth_registry::{
    Actor, BlobUnlink, ManifestDeletion, ManifestRefusal, MetaStore, NewManifest, Page, Referrer,
    StorageError, StoredManifest, TagEvent, UploadId, UploadSession,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use crate::events::insert_event;
use crate::writer::{Durability, Writer};

pub(crate) fn db_err(e: sqlx::Error) -> StorageError {
    StorageError::Backend(format!("metadata database: {e}"))
}

pub(crate) fn parse_digest(s: &str) -> StoreResult<Digest> {
    s.parse()
        .map_err(|e| StorageError::Backend(format!("corrupt digest {s:?} in database: {e}")))
}

/// A repository name read back from the database.
pub(crate) fn parse_repo(s: &str) -> StoreResult<RepoName> {
    RepoName::parse(s).map_err(|e| {
        StorageError::Backend(format!("corrupt repository name {s:?} in database: {e}"))
    })
}

/// Metadata in an embedded SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteMetaStore {
    pub(crate) read: SqlitePool,
    pub(crate) writer: Writer,
}

impl SqliteMetaStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the client hears 201.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        crate::migrations::sqlite()
            .run(&write)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        let writer = Writer::start(write.acquire().await?.detach());
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteMetaStore { read, writer })
    }
}

async fn repo_id(conn: &mut SqliteConnection, repo: &RepoName) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo.as_str())
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT id FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)
}

async fn insert_link(
    conn: &mut SqliteConnection,
    repo_id: i64,
    digest: &Digest,
) -> Result<(), sqlx::Error> {
    // A fresh link restarts the garbage collector's grace period for the blob.
    sqlx::query(
        "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES ($1, $2, $3)
         ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
    )
    .bind(repo_id)
    .bind(digest.as_str())
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn check_refs(
    conn: &mut SqliteConnection,
    repo_id: i64,
    m: &NewManifest,
) -> Result<Option<ManifestRefusal>, sqlx::Error> {
    for (digest, declared) in &m.blob_refs {
        let row = sqlx::query(
            "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo_id = $1 AND rb.digest = $2",
        )
        .bind(repo_id)
        .bind(digest.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(Some(ManifestRefusal::Missing(digest.clone())));
        };
        let stored = row.try_get::<i64, _>(0)? as u64;
        if stored != *declared {
            return Ok(Some(ManifestRefusal::SizeMismatch {
                digest: digest.clone(),
                declared: *declared,
                stored,
            }));
        }
    }
    for digest in &m.manifest_refs {
        let found = sqlx::query("SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Ok(Some(ManifestRefusal::Missing(digest.clone())));
        }
    }
    Ok(None)
}

/// One page of tags: an index range scan on `tags (repo_id, name)`, so its cost follows
/// the page size, not the repository size.
const LIST_TAGS: &str = "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id
     WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3";
/// One page of repositories: an index range scan on `repositories (name)`.
const LIST_REPOS: &str = "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2";

/// The body of a manifest write, run inside the writer's transaction.
async fn put_manifest_in(
    conn: &mut SqliteConnection,
    m: &NewManifest,
) -> Result<Result<(), ManifestRefusal>, sqlx::Error> {
    let repo = repo_id(conn, &m.repo).await?;
    if let Some(refusal) = check_refs(conn, repo, m).await? {
        return Ok(Err(refusal));
    }
    if let Some(exceeded) = crate::quota::check_quota(conn, m).await? {
        return Ok(Err(ManifestRefusal::QuotaExceeded(exceeded)));
    }
    sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, pushed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (repo_id, digest) DO NOTHING",
    )
    .bind(repo)
    .bind(m.digest.as_str())
    .bind(&m.media_type)
    .bind(m.artifact_type.as_deref())
    .bind(m.subject.as_ref().map(Digest::as_str))
    .bind(m.annotations.as_deref())
    .bind(m.bytes.len() as i64)
    .bind(m.bytes.as_ref())
    .bind(m.pushed_at)
    .execute(&mut *conn)
    .await?;
    let manifest_id: i64 =
        sqlx::query("SELECT id FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(repo)
            .bind(m.digest.as_str())
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
    let refs = m
        .blob_refs
        .iter()
        .map(|(d, _)| ("blob", d))
        .chain(m.manifest_refs.iter().map(|d| ("manifest", d)));
    for (kind, digest) in refs {
        sqlx::query("INSERT INTO manifest_refs (manifest_id, kind, digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(manifest_id)
            .bind(kind)
            .bind(digest.as_str())
            .execute(&mut *conn)
            .await?;
    }
    let mut push = Event::new(EventKind::Push, &m.actor);
    push.repository = Some(m.repo.as_str().to_owned());
    push.tag = m.tags.first().map(|t| t.as_str().to_owned());
    push.digest = Some(m.digest.as_str().to_owned());
    push.media_type = Some(m.media_type.clone());
    push.size = Some(m.bytes.len() as i64);
    insert_event(conn, &push).await?;
    // A refusal returned from this loop rolls the whole write back (the writer commits
    // only `Ok(Ok(()))`), so tags written before it do not stay.
    for tag in &m.tags {
        let previous = tagged_digest(conn, repo, tag.as_str()).await?;
        if previous.as_deref() != Some(m.digest.as_str()) {
            if let Some(current) = &previous
                && m.immutable_tags.contains(tag)
            {
                let current = current.parse().map_err(|e| {
                    sqlx::Error::Decode(format!("corrupt digest {current:?}: {e}").into())
                })?;
                return Ok(Err(ManifestRefusal::ImmutableTag {
                    tag: tag.clone(),
                    current,
                }));
            }
            let change = TagChange {
                repo_id: repo,
                repo: &m.repo,
                tag: tag.as_str(),
                previous: previous.as_deref(),
                new: Some(m.digest.as_str()),
            };
            record_tag_event(conn, &change, &m.actor).await?;
        }
        sqlx::query(
            "INSERT INTO tags (repo_id, name, manifest_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id, name) DO UPDATE SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(tag.as_str())
        .bind(manifest_id)
        .bind(m.pushed_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Ok(()))
}

/// The text column of the rows `sql` selects for the id bound to `$1` (e.g. the names of
/// a manifest's tags).
pub(crate) async fn texts_for(
    conn: &mut SqliteConnection,
    sql: &'static str,
    id: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(sql)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
}

/// The digest `tag` points to in repository `repo_id`.
async fn tagged_digest(
    conn: &mut SqliteConnection,
    repo_id: i64,
    tag: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repo_id = $1 AND t.name = $2",
    )
    .bind(repo_id)
    .bind(tag)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get(0))
    .transpose()
}

/// One change of a tag, for [`record_tag_event`].
pub(crate) struct TagChange<'a> {
    pub(crate) repo_id: i64,
    pub(crate) repo: &'a RepoName,
    pub(crate) tag: &'a str,
    pub(crate) previous: Option<&'a str>,
    pub(crate) new: Option<&'a str>,
}

/// Appends a tag event to the tag history and the event stream, in the caller's
/// transaction (the change and its record commit together or not at all).
pub(crate) async fn record_tag_event(
    conn: &mut SqliteConnection,
    change: &TagChange<'_>,
    actor: &Actor,
) -> Result<(), sqlx::Error> {
    let kind = match (change.previous, change.new) {
        (None, _) => EventKind::TagCreated,
        (Some(_), Some(_)) => EventKind::TagOverwritten,
        (Some(_), None) => EventKind::TagDeleted,
    };
    let mut event = Event::new(kind, actor);
    event.repository = Some(change.repo.as_str().to_owned());
    event.tag = Some(change.tag.to_owned());
    event.digest = change.new.map(str::to_owned);
    event.previous_digest = change.previous.map(str::to_owned);
    insert_event(conn, &event).await?;
    sqlx::query(
        "INSERT INTO tag_events (repo_id, tag, previous_digest, new_digest, account, client, user_agent, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(change.repo_id)
    .bind(change.tag)
    .bind(change.previous)
    .bind(change.new)
    .bind(actor.account.as_deref())
    .bind(actor.client.as_deref())
    .bind(actor.user_agent.as_deref())
    .bind(event.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `keep` for writes whose every result should be committed.
pub(crate) fn keep<T>(_: &T) -> bool {
    true
}

fn page(mut items: Vec<String>, limit: u32) -> Page {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Page { items, more }
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_upload(&self, s: &UploadSession) -> StoreResult<()> {
        let s = s.clone();
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO upload_sessions (id, repo, algorithm, size, started_at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(s.id.as_str())
                        .bind(s.repo.as_str())
                        .bind(s.algorithm.as_str())
                        .bind(s.size as i64)
                        .bind(s.started_at)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn get_upload(&self, id: &UploadId) -> StoreResult<Option<UploadSession>> {
        let row = sqlx::query(
            "SELECT repo, algorithm, size, started_at FROM upload_sessions WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let repo: String = row.try_get(0).map_err(db_err)?;
        let algorithm: String = row.try_get(1).map_err(db_err)?;
        Ok(Some(UploadSession {
            id: id.clone(),
            repo: RepoName::parse(&repo).map_err(StorageError::backend)?,
            algorithm: Algorithm::parse(&algorithm).map_err(StorageError::backend)?,
            size: row.try_get::<i64, _>(2).map_err(db_err)? as u64,
            started_at: row.try_get(3).map_err(db_err)?,
        }))
    }

    async fn set_upload_size(&self, id: &UploadId, size: u64) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE upload_sessions SET size = $1, touched_at = $3 WHERE id = $2",
                    )
                    .bind(size as i64)
                    .bind(id.as_str())
                    .bind(unix_now())
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn delete_upload(&self, id: &UploadId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(Durability::Relaxed, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
                        .bind(id.as_str())
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn upload_ids(&self) -> StoreResult<Vec<UploadId>> {
        let rows = sqlx::query("SELECT id FROM upload_sessions")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter_map(|s| UploadId::parse(&s))
            .collect())
    }

    async fn uploads_idle_since(&self, before: i64) -> StoreResult<Vec<UploadId>> {
        let rows = sqlx::query(
            "SELECT id FROM upload_sessions WHERE COALESCE(touched_at, started_at) < $1",
        )
        .bind(before)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter_map(|s| UploadId::parse(&s))
            .collect())
    }

    async fn record_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        finished: Option<&UploadId>,
    ) -> StoreResult<()> {
        let (repo, digest, finished) = (repo.clone(), digest.clone(), finished.cloned());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
                        .bind(digest.as_str())
                        .bind(size as i64)
                        .bind(unix_now())
                        .execute(&mut *conn)
                        .await?;
                    let id = repo_id(conn, &repo).await?;
                    insert_link(conn, id, &digest).await?;
                    if let Some(upload) = &finished {
                        sqlx::query("DELETE FROM upload_sessions WHERE id = $1")
                            .bind(upload.as_str())
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn linked_blob_size(&self, repo: &RepoName, digest: &Digest) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        row.map(|r| r.try_get::<i64, _>(0).map(|s| s as u64))
            .transpose()
            .map_err(db_err)
    }

    async fn repos_linking(&self, digest: &Digest, limit: u32) -> StoreResult<Vec<RepoName>> {
        let rows = sqlx::query(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest.as_str())
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter_map(|s| RepoName::parse(&s).ok())
            .collect())
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let id = repo_id(conn, &repo).await?;
                    insert_link(conn, id, &digest).await
                })
            })
            .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<BlobUnlink> {
        let (repo, digest) = (repo.clone(), digest.clone());
        // Err(referencing manifest) or Ok(whether a link was removed).
        let outcome: Result<bool, String> = self
            .writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let user = sqlx::query(
                        "SELECT m.digest FROM manifests m
                         JOIN repositories r ON r.id = m.repo_id
                         JOIN manifest_refs mr ON mr.manifest_id = m.id
                         WHERE r.name = $1 AND mr.kind = 'blob' AND mr.digest = $2 LIMIT 1",
                    )
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some(row) = user {
                        return Ok(Err(row.try_get::<String, _>(0)?));
                    }
                    let done = sqlx::query(
                        "DELETE FROM repo_blobs WHERE digest = $2
                         AND repo_id = (SELECT id FROM repositories WHERE name = $1)",
                    )
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .execute(&mut *conn)
                    .await?;
                    Ok(Ok(done.rows_affected() > 0))
                })
            })
            .await?;
        Ok(match outcome {
            Err(user) => BlobUnlink::ReferencedBy(parse_digest(&user)?),
            Ok(true) => BlobUnlink::Unlinked,
            Ok(false) => BlobUnlink::NotLinked,
        })
    }

    async fn all_blobs(&self) -> StoreResult<Vec<(Digest, u64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let d: String = r.try_get(0).map_err(db_err)?;
                let s: i64 = r.try_get(1).map_err(db_err)?;
                Ok((parse_digest(&d)?, s as u64))
            })
            .collect()
    }

    async fn forget_blob(&self, digest: &Digest) -> StoreResult<()> {
        let digest = digest.clone();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    for sql in [
                        "DELETE FROM repo_blobs WHERE digest = $1",
                        "DELETE FROM blobs WHERE digest = $1",
                    ] {
                        sqlx::query(sql)
                            .bind(digest.as_str())
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    async fn put_manifest(&self, m: &NewManifest) -> StoreResult<Result<(), ManifestRefusal>> {
        let m = m.clone();
        self.writer
            .write(Durability::Durable, Result::is_ok, move |conn| {
                Box::pin(async move { put_manifest_in(conn, &m).await })
            })
            .await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StoreResult<Option<StoredManifest>> {
        let row = sqlx::query(
            "SELECT m.media_type, m.content FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let content: Vec<u8> = row.try_get(1).map_err(db_err)?;
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            media_type: row.try_get(0).map_err(db_err)?,
            bytes: content.into(),
        }))
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        let row = sqlx::query(
            "SELECT m.digest FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN manifests m ON m.id = t.manifest_id
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        match row {
            Some(r) => Ok(Some(parse_digest(
                &r.try_get::<String, _>(0).map_err(db_err)?,
            )?)),
            None => Ok(None),
        }
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, actor: &Actor) -> StoreResult<bool> {
        let (repo, tag, actor) = (repo.clone(), tag.clone(), actor.clone());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let Some(row) = sqlx::query("SELECT id FROM repositories WHERE name = $1")
                        .bind(repo.as_str())
                        .fetch_optional(&mut *conn)
                        .await?
                    else {
                        return Ok(false);
                    };
                    let repo_id: i64 = row.try_get(0)?;
                    let Some(previous) = tagged_digest(conn, repo_id, tag.as_str()).await? else {
                        return Ok(false);
                    };
                    sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND name = $2")
                        .bind(repo_id)
                        .bind(tag.as_str())
                        .execute(&mut *conn)
                        .await?;
                    let change = TagChange {
                        repo_id,
                        repo: &repo,
                        tag: tag.as_str(),
                        previous: Some(&previous),
                        new: None,
                    };
                    record_tag_event(conn, &change, &actor).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> StoreResult<Vec<Tag>> {
        sqlx::query(
            "SELECT t.name FROM tags t JOIN manifests m ON m.id = t.manifest_id
             JOIN repositories r ON r.id = t.repo_id WHERE r.name = $1 AND m.digest = $2
             ORDER BY t.name",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| {
            let name: String = r.try_get(0).map_err(db_err)?;
            Tag::parse(&name)
                .map_err(|_| StorageError::Backend(format!("corrupt tag {name:?} in database")))
        })
        .collect()
    }

    async fn immutability_rules(&self) -> StoreResult<Vec<ImmutabilityRule>> {
        sqlx::query(
            "SELECT id, repositories, tags, except_tags FROM immutability_rules ORDER BY id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| {
            let corrupt = |what: &str, v: &str| {
                StorageError::Backend(format!("corrupt immutability rule {what} {v:?}"))
            };
            let patterns = |v: String| -> StoreResult<Vec<TagPattern>> {
                v.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| TagPattern::parse(p).map_err(|_| corrupt("tag pattern", p)))
                    .collect()
            };
            let repos: String = r.try_get(1).map_err(db_err)?;
            Ok(ImmutabilityRule {
                id: r.try_get(0).map_err(db_err)?,
                repositories: RepoPattern::parse(&repos)
                    .map_err(|_| corrupt("repository pattern", &repos))?,
                tags: patterns(r.try_get(2).map_err(db_err)?)?,
                except: patterns(r.try_get(3).map_err(db_err)?)?,
            })
        })
        .collect()
    }

    async fn add_immutability_rule(&self, rule: &ImmutabilityRule) -> StoreResult<i64> {
        let join = |v: &[TagPattern]| {
            v.iter()
                .map(TagPattern::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        let (repos, tags, except) = (
            rule.repositories.as_str().to_owned(),
            join(&rule.tags),
            join(&rule.except),
        );
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO immutability_rules (repositories, tags, except_tags, created_at)
                         VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(&repos)
                    .bind(&tags)
                    .bind(&except)
                    .bind(unix_now())
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)
                })
            })
            .await
    }

    async fn remove_immutability_rule(&self, id: i64) -> StoreResult<bool> {
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM immutability_rules WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        until_ms: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<TagEvent>> {
        let rows = sqlx::query(
            "SELECT e.tag, e.previous_digest, e.new_digest, e.account, e.client, e.user_agent, e.at_ms
             FROM tag_events e JOIN repositories r ON r.id = e.repo_id
             WHERE r.name = $1 AND e.tag = $2 AND e.at_ms <= $3
             ORDER BY e.at_ms DESC, e.id DESC LIMIT $4",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(until_ms.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let digest = |i: usize| -> StoreResult<Option<Digest>> {
                    r.try_get::<Option<String>, _>(i)
                        .map_err(db_err)?
                        .map(|d| parse_digest(&d))
                        .transpose()
                };
                Ok(TagEvent {
                    tag: r.try_get(0).map_err(db_err)?,
                    previous: digest(1)?,
                    new: digest(2)?,
                    actor: Actor {
                        account: r.try_get(3).map_err(db_err)?,
                        client: r.try_get(4).map_err(db_err)?,
                        user_agent: r.try_get(5).map_err(db_err)?,
                    },
                    at_ms: r.try_get(6).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        actor: &Actor,
    ) -> StoreResult<ManifestDeletion> {
        let (repo, digest, actor) = (repo.clone(), digest.clone(), actor.clone());
        // None: not found; Some(Err(index)): listed by an index; Some(Ok(())): deleted.
        let outcome: Option<Result<(), String>> = self
            .writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT m.id, m.repo_id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE r.name = $1 AND m.digest = $2",
                    )
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else { return Ok(None) };
                    let id: i64 = row.try_get(0)?;
                    let repo_id: i64 = row.try_get(1)?;
                    let parent = sqlx::query(
                        "SELECT m.digest FROM manifest_refs mr JOIN manifests m ON m.id = mr.manifest_id
                         WHERE mr.kind = 'manifest' AND mr.digest = $1 AND m.repo_id = $2 LIMIT 1",
                    )
                    .bind(digest.as_str())
                    .bind(repo_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some(p) = parent {
                        return Ok(Some(Err(p.try_get::<String, _>(0)?)));
                    }
                    let tags =
                        texts_for(conn, "SELECT name FROM tags WHERE manifest_id = $1", id).await?;
                    for tag in &tags {
                        let change = TagChange {
                            repo_id,
                            repo: &repo,
                            tag,
                            previous: Some(digest.as_str()),
                            new: None,
                        };
                        record_tag_event(conn, &change, &actor).await?;
                    }
                    let mut deleted = Event::new(EventKind::Delete, &actor);
                    deleted.repository = Some(repo.as_str().to_owned());
                    deleted.digest = Some(digest.as_str().to_owned());
                    insert_event(conn, &deleted).await?;
                    for sql in [
                        "DELETE FROM tags WHERE manifest_id = $1",
                        "DELETE FROM manifests WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
                    }
                    Ok(Some(Ok(())))
                })
            })
            .await?;
        Ok(match outcome {
            None => ManifestDeletion::NotFound,
            Some(Ok(())) => ManifestDeletion::Deleted,
            Some(Err(index)) => ManifestDeletion::ReferencedBy(parse_digest(&index)?),
        })
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page> {
        let rows = sqlx::query(LIST_TAGS)
            .bind(repo.as_str())
            .bind(last.unwrap_or(""))
            .bind(limit as i64 + 1)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let items = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        Ok(page(items, limit))
    }

    async fn list_repos(&self, last: Option<&str>, limit: u32) -> StoreResult<Page> {
        let rows = sqlx::query(LIST_REPOS)
            .bind(last.unwrap_or(""))
            .bind(limit as i64 + 1)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let items = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        Ok(page(items, limit))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> StoreResult<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.media_type, m.digest, m.size, m.artifact_type, m.annotations
             FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.subject = $2 AND ($3 IS NULL OR m.artifact_type = $3)
             ORDER BY m.pushed_at, m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(1).map_err(db_err)?;
                let annotations: Option<String> = r.try_get(4).map_err(db_err)?;
                Ok(Referrer {
                    media_type: r.try_get(0).map_err(db_err)?,
                    digest: parse_digest(&digest)?,
                    size: r.try_get::<i64, _>(2).map_err(db_err)? as u64,
                    artifact_type: r.try_get(3).map_err(db_err)?,
                    annotations: annotations.and_then(|a| serde_json_object(&a)),
                })
            })
            .collect()
    }
}

fn serde_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for `sql`, one line per step.
    async fn plan(store: &SqliteMetaStore, sql: &str) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let q = sqlx::query(sqlx::AssertSqlSafe(explain));
        let q = if sql.contains("$3") {
            q.bind("repo").bind("").bind(100i64)
        } else {
            q.bind("").bind(100i64)
        };
        let rows = q.fetch_all(&store.read).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn listing_pages_are_index_range_scans() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let tags = plan(&store, LIST_TAGS).await;
        assert!(tags.contains("(repo_id=? AND name>?)"), "{tags}");
        assert!(
            !tags.contains("TEMP B-TREE"),
            "tag pages must not sort: {tags}"
        );
        let repos = plan(&store, LIST_REPOS).await;
        assert!(
            repos.contains("INDEX") && repos.contains("(name>?)"),
            "{repos}"
        );
        assert!(
            !repos.contains("TEMP B-TREE"),
            "catalog pages must not sort: {repos}"
        );
    }

    fn manifest(repo: &RepoName, body: &str, tags: &[&Tag], immutable: &[&Tag]) -> NewManifest {
        NewManifest {
            repo: repo.clone(),
            digest: Digest::of(Algorithm::Sha256, body.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: body.as_bytes().to_vec().into(),
            artifact_type: None,
            subject: None,
            annotations: None,
            blob_refs: Vec::new(),
            manifest_refs: Vec::new(),
            tags: tags.iter().map(|&t| t.clone()).collect(),
            pushed_at: 1,
            actor: Actor::default(),
            immutable_tags: immutable.iter().map(|&t| t.clone()).collect(),
        }
    }

    #[tokio::test]
    async fn a_refused_immutable_tag_leaves_the_other_tags_of_the_push_unmoved() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let repo = RepoName::parse("app").unwrap();
        let (latest, v1) = (Tag::parse("latest").unwrap(), Tag::parse("v1").unwrap());
        let first = manifest(&repo, "{\"a\":1}", &[&latest, &v1], &[]);
        store.put_manifest(&first).await.unwrap().unwrap();
        // `latest` is written before `v1` is found protected: both must stay.
        let second = manifest(&repo, "{\"a\":2}", &[&latest, &v1], &[&v1]);
        let refusal = store.put_manifest(&second).await.unwrap().unwrap_err();
        assert_eq!(
            refusal,
            ManifestRefusal::ImmutableTag {
                tag: v1.clone(),
                current: first.digest.clone()
            }
        );
        for tag in [&latest, &v1] {
            assert_eq!(
                store.resolve_tag(&repo, tag).await.unwrap(),
                Some(first.digest.clone())
            );
            assert_eq!(
                store.tag_history(&repo, tag, None, 10).await.unwrap().len(),
                1
            );
        }
        assert!(
            store
                .get_manifest(&repo, &second.digest)
                .await
                .unwrap()
                .is_none()
        );
    }
}
