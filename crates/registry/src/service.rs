//! [`Registry`]: every OCI operation, expressed against the two storage ports.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_oci::manifest::{self, MAX_MANIFEST_BYTES, ManifestError, ManifestKind};
use berth_oci::{Algorithm, Digest, DigestHasher, Reference, RepoName, Tag};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::cache::HotCache;
use crate::error::{RegistryError, Result};
use crate::events::{
    AuditQuery, ClientPulls, Event, EventBuffer, EventKind, PulledManifest, StoredEvent,
};
use crate::gc::DigestLocks;
use crate::immutability::{ImmutabilityRule, protecting};
use crate::ports::{BlobStore, ByteStream, MetaStore, StorageError};
use crate::types::*;
use crate::uploads::{HashState, SessionGuard, UploadTable};
use crate::webhooks::{Backoff, DeliveryRecord, NewWebhook, Notifier, Webhook, deliver_due};

/// Most tags one manifest push may set with `?tag=`.
pub const MAX_TAGS_PER_PUSH: usize = 100;
/// Largest page of tags or repositories served at once.
pub const MAX_PAGE: u32 = 1000;
/// How many repositories holding a blob are considered for an automatic mount.
const AUTO_MOUNT_CANDIDATES: u32 = 50;

/// A chunk of an upload: its declared `Content-Range` (if any) and its bytes.
pub struct Chunk {
    /// Inclusive `start-end` the client declared, if it sent `Content-Range`.
    pub range: Option<(u64, u64)>,
    /// The chunk's bytes.
    pub body: ByteStream,
}

/// What a manifest push produced.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// Digest of the pushed bytes.
    pub digest: Digest,
    /// Subject digest, when the manifest had one (answered as `OCI-Subject`).
    pub subject: Option<Digest>,
    /// Tags that now point at the manifest.
    pub tags: Vec<Tag>,
}

/// Size and digest of a blob readable in a repository.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Set when the "blob" is really a manifest of the repository (Distribution serves those too).
    pub manifest: Option<StoredManifest>,
}

/// The registry service shared by every request.
pub struct Registry {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) meta: Arc<dyn MetaStore>,
    uploads: UploadTable,
    pub(crate) cache: HotCache,
    events: Arc<EventBuffer>,
    /// Held by a blob's commit and by the garbage collector's deletion of it.
    pub(crate) digest_locks: DigestLocks,
    /// One garbage collection at a time.
    pub(crate) gc_running: tokio::sync::Mutex<()>,
}

/// Most bytes of a refused chunk read and thrown away, so the client can read the refusal.
const DISCARD_LIMIT: usize = 16 * 1024 * 1024;

/// Reads and drops up to [`DISCARD_LIMIT`] bytes of a body the registry refused: a server
/// that answers without reading the body makes HTTP/1.1 clients that are still sending it
/// lose the answer. Past the limit the connection is simply closed.
async fn discard_body(mut body: ByteStream) {
    let mut seen = 0;
    while seen < DISCARD_LIMIT {
        match body.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}

/// Current time in unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `t` in unix milliseconds (0 before 1970): the clock of tag history, pulls and audit.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Current time in unix milliseconds.
pub fn unix_now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, as the API and payloads show times.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

impl Registry {
    /// Builds a registry over the given stores.
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetaStore>) -> Self {
        Registry {
            blobs,
            meta,
            uploads: UploadTable::default(),
            cache: HotCache::new(),
            events: Arc::default(),
            digest_locks: DigestLocks::default(),
            gc_running: tokio::sync::Mutex::new(()),
        }
    }

    /// The blob store (for maintenance commands).
    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The metadata store (for maintenance commands).
    pub fn meta_store(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// Number of upload sessions in progress (for the open-uploads gauge).
    pub async fn open_uploads(&self) -> Result<usize> {
        Ok(self.meta.upload_ids().await?.len())
    }

    /// Whether both stores answer, for readiness probes.
    pub async fn ready(&self) -> Result<()> {
        self.blobs.ping().await?;
        self.meta.ping().await?;
        Ok(())
    }

    // ---------------------------------------------------------------- blobs

    /// Size and digest of a blob readable through `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobInfo> {
        let cached = self.cache.link(repo, digest);
        let linked = match cached {
            Some(size) => Some(size),
            None => {
                let ticket = self.cache.ticket();
                let size = self.meta.linked_blob_size(repo, digest).await?;
                if let Some(size) = size {
                    self.cache.fill_link(ticket, repo, digest, size);
                }
                size
            }
        };
        if let Some(size) = linked {
            return Ok(BlobInfo {
                digest: digest.clone(),
                size,
                manifest: None,
            });
        }
        match self.meta.get_manifest(repo, digest).await? {
            Some(m) => Ok(BlobInfo {
                digest: digest.clone(),
                size: m.bytes.len() as u64,
                manifest: Some(m),
            }),
            None => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// Streams a blob already located with [`Registry::stat_blob`].
    pub async fn read_blob(&self, info: &BlobInfo, range: Option<ByteRange>) -> Result<ByteStream> {
        if let Some(m) = &info.manifest {
            let bytes = match range {
                Some(r) => m.bytes.slice(r.start as usize..=r.end as usize),
                None => m.bytes.clone(),
            };
            return Ok(Box::pin(futures_util::stream::once(
                async move { Ok(bytes) },
            )));
        }
        match self.blobs.read_blob(&info.digest, range).await {
            Ok(s) => Ok(s),
            Err(StorageError::NotFound(_)) => {
                tracing::error!(digest = %info.digest, "blob recorded but missing from the blob store; run `berth fsck`");
                Err(RegistryError::BlobUnknown(info.digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unlinks a blob from a repository (the bytes stay until garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        match self.meta.unlink_blob(repo, digest).await? {
            BlobUnlink::Unlinked => {
                self.cache.link_removed(repo, digest);
                Ok(())
            }
            BlobUnlink::NotLinked => Err(RegistryError::BlobUnknown(digest.clone())),
            BlobUnlink::ReferencedBy(m) => Err(RegistryError::Unsupported(format!(
                "blob {digest} is referenced by manifest {m} in {repo}; delete that manifest first"
            ))),
        }
    }

    // -------------------------------------------------------------- uploads

    /// Starts an upload session (`POST …/blobs/uploads/`).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<UploadStatus> {
        let session = UploadSession {
            id: UploadId::new(),
            repo: repo.clone(),
            algorithm,
            size: 0,
            started_at: unix_now(),
        };
        self.blobs.create_upload(&session.id).await?;
        if let Err(e) = self.meta.create_upload(&session).await {
            let _ = self.blobs.delete_upload(&session.id).await;
            return Err(e.into());
        }
        Ok(UploadStatus {
            id: session.id,
            size: 0,
        })
    }

    /// Mounts a blob from `from` (or, without `from`, from any repository `can_read`
    /// allows), or starts an upload session when it cannot.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        can_read: &(dyn Fn(&RepoName) -> bool + Send + Sync),
    ) -> Result<MountOutcome> {
        let source_linked = match from {
            Some(from) => {
                can_read(from) && self.meta.linked_blob_size(from, digest).await?.is_some()
            }
            None => self
                .meta
                .repos_linking(digest, AUTO_MOUNT_CANDIDATES)
                .await?
                .iter()
                .any(|r| r == repo || can_read(r)),
        };
        if source_linked {
            self.meta.link_blob(repo, digest).await?;
            return Ok(MountOutcome::Mounted);
        }
        let status = self.start_upload(repo, digest.algorithm()).await?;
        Ok(MountOutcome::Started(status))
    }

    /// Where an upload stands (`GET <location>`).
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadStatus> {
        let session = self.session(repo, id).await?;
        Ok(UploadStatus {
            id: session.id,
            size: session.size,
        })
    }

    /// Appends one chunk (`PATCH <location>`).
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: Chunk,
    ) -> Result<UploadStatus> {
        let (mut state, session) = self.lock_session(repo, id).await?;
        let hs = self.append_locked(&session, &mut state, chunk).await?;
        Ok(UploadStatus {
            id: session.id,
            size: hs.offset,
        })
    }

    /// Completes an upload (`PUT <location>?digest=`), with an optional final chunk.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<Chunk>,
    ) -> Result<u64> {
        let (mut state, session) = self.lock_session(repo, id).await?;
        let hs = match last_chunk {
            Some(chunk) => self.append_locked(&session, &mut state, chunk).await?,
            None => self.hash_state(&session, &mut state).await?,
        };
        let computed = if hs.hasher.algorithm() == digest.algorithm() {
            hs.hasher.finalize()
        } else {
            self.rehash(id, digest.algorithm()).await?.hasher.finalize()
        };
        if &computed != digest {
            self.discard(&session.id).await;
            *state = None;
            return Err(RegistryError::DigestInvalid(format!(
                "uploaded content has digest {computed}, not {digest}; the upload was discarded"
            )));
        }
        {
            // From the file's rename to its row, the garbage collector keeps off this digest.
            let _digest = self.digest_locks.lock(digest).await;
            self.blobs.commit_upload(id, digest).await?;
            self.meta
                .record_blob(repo, digest, hs.offset, Some(id))
                .await?;
        }
        *state = None;
        drop(state);
        self.uploads.remove(id);
        Ok(hs.offset)
    }

    /// Pushes a whole blob in one request (`POST …/blobs/uploads/?digest=`).
    pub async fn push_blob(&self, repo: &RepoName, digest: &Digest, body: Chunk) -> Result<u64> {
        let status = self.start_upload(repo, digest.algorithm()).await?;
        let result = self
            .finish_upload(repo, &status.id, digest, Some(body))
            .await;
        if result.is_err() {
            self.discard(&status.id).await;
        }
        result
    }

    /// Cancels an upload (`DELETE <location>`).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let (mut state, session) = self.lock_session(repo, id).await?;
        self.discard(&session.id).await;
        *state = None;
        Ok(())
    }

    /// Removes sessions idle since before `before` (unix seconds: no data received since),
    /// and upload files no session owns that were last written before then (younger ones
    /// may be sessions being created).
    pub async fn expire_uploads(&self, before: i64) -> Result<usize> {
        let mut removed = 0;
        for id in self.meta.uploads_idle_since(before).await? {
            self.discard(&id).await;
            removed += 1;
        }
        let live: std::collections::HashSet<UploadId> =
            self.meta.upload_ids().await?.into_iter().collect();
        let cutoff = UNIX_EPOCH + std::time::Duration::from_secs(before.max(0) as u64);
        for (id, modified) in self.blobs.list_uploads().await? {
            if !live.contains(&id) && modified < cutoff {
                self.blobs.delete_upload(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadSession> {
        match self.meta.get_upload(id).await? {
            Some(s) if &s.repo == repo => Ok(s),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    /// Takes the session's lock, then reads the session under it.
    async fn lock_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<(SessionGuard, UploadSession)> {
        let guard = self.uploads.slot(id).lock_owned().await;
        match self.meta.get_upload(id).await? {
            Some(s) if &s.repo == repo => Ok((guard, s)),
            Some(_) => Err(RegistryError::BlobUploadUnknown),
            None => {
                // No such session: drop the slot this request created, so unknown ids
                // cannot grow the table.
                drop(guard);
                self.uploads.remove(id);
                Err(RegistryError::BlobUploadUnknown)
            }
        }
    }

    async fn discard(&self, id: &UploadId) {
        if let Err(e) = self.blobs.delete_upload(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload file");
        }
        if let Err(e) = self.meta.delete_upload(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload session");
        }
        self.uploads.remove(id);
    }

    /// The hash of the session's bytes so far, from the cache or rebuilt from the file.
    async fn hash_state(
        &self,
        session: &UploadSession,
        cached: &mut Option<HashState>,
    ) -> Result<HashState> {
        if let Some(hs) = cached.as_ref()
            && hs.offset == session.size
            && hs.hasher.algorithm() == session.algorithm
        {
            return Ok(hs.clone());
        }
        let hs = self.rehash(&session.id, session.algorithm).await?;
        if hs.offset != session.size {
            // The file holds bytes of a chunk whose completion was never recorded.
            self.blobs
                .truncate_upload(&session.id, session.size)
                .await?;
            return Box::pin(self.rehash(&session.id, session.algorithm)).await;
        }
        *cached = Some(hs.clone());
        Ok(hs)
    }

    async fn rehash(&self, id: &UploadId, algorithm: Algorithm) -> Result<HashState> {
        let mut stream = self.blobs.read_upload(id).await?;
        let mut hasher = DigestHasher::new(algorithm);
        let mut offset = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(StorageError::backend)?;
            hasher.update(&chunk);
            offset += chunk.len() as u64;
        }
        Ok(HashState { offset, hasher })
    }

    async fn append_locked(
        &self,
        session: &UploadSession,
        cached: &mut Option<HashState>,
        chunk: Chunk,
    ) -> Result<HashState> {
        let base = self.hash_state(session, cached).await?;
        if let Some((start, end)) = chunk.range
            && (start != base.offset || end < start)
        {
            discard_body(chunk.body).await;
            return Err(RegistryError::RangeInvalid { size: base.offset });
        }
        let mut hasher = base.hasher.clone();
        let written = self
            .blobs
            .append_upload(&session.id, base.offset, chunk.body, &mut |b| {
                hasher.update(b)
            })
            .await;
        let mismatch = match (&written, chunk.range) {
            (Ok(n), Some((start, end))) if *n != end - start + 1 => Some(*n),
            _ => None,
        };
        if written.is_err() || mismatch.is_some() {
            self.blobs.truncate_upload(&session.id, base.offset).await?;
        }
        let written = match written {
            Ok(n) => n,
            Err(StorageError::Body(e)) => {
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "the chunk was not received whole ({e}); the upload still holds {} bytes, resume from there",
                    base.offset
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some(n), Some((start, end))) = (mismatch, chunk.range) {
            return Err(RegistryError::SizeInvalid(format!(
                "Content-Range {start}-{end} declares {} bytes but the body had {n}",
                end - start + 1
            )));
        }
        let hs = HashState {
            offset: base.offset + written,
            hasher,
        };
        self.meta.set_upload_size(&session.id, hs.offset).await?;
        *cached = Some(hs.clone());
        Ok(hs)
    }

    // ------------------------------------------------------------ manifests

    /// Stores a manifest (`PUT …/manifests/<reference>[?tag=…]`).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        extra_tags: Vec<Tag>,
        actor: &Actor,
    ) -> Result<PushedManifest> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge {
                limit: MAX_MANIFEST_BYTES,
            });
        }
        if extra_tags.len() > MAX_TAGS_PER_PUSH {
            return Err(RegistryError::TooManyTags {
                limit: MAX_TAGS_PER_PUSH,
            });
        }
        let parsed = manifest::parse(content_type, &bytes).map_err(|e| match e {
            ManifestError::Unsupported(m) => RegistryError::Unsupported(m),
            ManifestError::Invalid(m) => RegistryError::ManifestInvalid(m),
        })?;
        let (digest, mut tags) = match reference {
            Reference::Digest(d) => {
                let computed = Digest::of(d.algorithm(), &bytes);
                if &computed != d {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest body has digest {computed}, not {d}"
                    )));
                }
                (computed, Vec::new())
            }
            Reference::Tag(t) => (Digest::of(Algorithm::Sha256, &bytes), vec![t.clone()]),
        };
        for t in extra_tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let blob_refs = match parsed.kind {
            ManifestKind::Image => parsed
                .config
                .iter()
                .chain(parsed.layers.iter())
                .filter(|d| !d.foreign)
                .map(|d| (d.digest.clone(), d.size))
                .collect(),
            ManifestKind::Index => Vec::new(),
        };
        let manifest_refs = parsed.manifests.iter().map(|d| d.digest.clone()).collect();
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let rules = self.meta.immutability_rules().await?;
        let immutable_tags = tags
            .iter()
            .filter(|t| protecting(&rules, repo, t).is_some())
            .cloned()
            .collect();
        let new = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            bytes,
            artifact_type: parsed.artifact_type,
            subject: subject.clone(),
            annotations: parsed
                .annotations
                .map(|a| serde_json::Value::Object(a).to_string()),
            blob_refs,
            manifest_refs,
            tags: tags.clone(),
            pushed_at: unix_now(),
            actor: actor.clone(),
            immutable_tags,
        };
        match self.meta.put_manifest(&new).await? {
            Ok(()) => {
                self.cache.tags_changed(repo, &tags);
                Ok(PushedManifest {
                    digest,
                    subject,
                    tags,
                })
            }
            Err(ManifestRefusal::Missing(d)) => Err(RegistryError::ManifestBlobUnknown(d)),
            Err(ManifestRefusal::ImmutableTag { tag, current }) => {
                let rule = protecting(&rules, repo, &tag)
                    .map_or_else(|| "an immutability rule".to_owned(), ToString::to_string);
                let message = format!(
                    "tag {tag} of {repo} is immutable ({rule}): it points to {current}; push under a new tag"
                );
                self.deny(repo, Some(&tag), Some(&digest), &message, actor);
                Err(RegistryError::Denied(message))
            }
            Err(ManifestRefusal::QuotaExceeded(exceeded)) => {
                let message = exceeded.to_string();
                self.deny(repo, tags.first(), Some(&digest), &message, actor);
                Err(RegistryError::Denied(message))
            }
            Err(ManifestRefusal::SizeMismatch {
                digest,
                declared,
                stored,
            }) => Err(RegistryError::ManifestInvalid(format!(
                "descriptor for {digest} declares size {declared} but the blob holds {stored} bytes"
            ))),
        }
    }

    /// Fetches a manifest by tag or digest.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let digest = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(t) => match self.cache.tag(repo, t) {
                Some(d) => Some(d),
                None => {
                    let ticket = self.cache.ticket();
                    let d = self.meta.resolve_tag(repo, t).await?;
                    if let Some(d) = &d {
                        self.cache.fill_tag(ticket, repo, t, d);
                    }
                    d
                }
            },
        };
        let Some(digest) = digest else {
            return Err(self.manifest_miss(repo, reference).await);
        };
        if let Some(m) = self.cache.manifest(repo, &digest) {
            return Ok(m);
        }
        let ticket = self.cache.ticket();
        match self.meta.get_manifest(repo, &digest).await? {
            Some(m) => {
                self.cache.fill_manifest(ticket, repo, &m);
                Ok(m)
            }
            None => Err(self.manifest_miss(repo, reference).await),
        }
    }

    /// Deletes a tag (by tag) or a manifest and its tags (by digest).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        actor: &Actor,
    ) -> Result<()> {
        let rules = self.meta.immutability_rules().await?;
        let protected: Vec<Tag> = match reference {
            Reference::Tag(t) => vec![t.clone()],
            Reference::Digest(d) if !rules.is_empty() => self.meta.tags_of(repo, d).await?,
            Reference::Digest(_) => Vec::new(),
        };
        for tag in &protected {
            if let Some(rule) = protecting(&rules, repo, tag) {
                let message =
                    format!("tag {tag} of {repo} is immutable ({rule}) and cannot be deleted");
                self.deny(repo, Some(tag), None, &message, actor);
                return Err(RegistryError::Denied(message));
            }
        }
        let deleted = match reference {
            Reference::Tag(t) => {
                let deleted = self.meta.delete_tag(repo, t, actor).await?;
                self.cache.tags_changed(repo, std::slice::from_ref(t));
                deleted
            }
            Reference::Digest(d) => match self.meta.delete_manifest(repo, d, actor).await? {
                ManifestDeletion::Deleted => {
                    self.cache.manifest_deleted(repo, d);
                    true
                }
                ManifestDeletion::NotFound => false,
                ManifestDeletion::ReferencedBy(index) => {
                    return Err(RegistryError::Unsupported(format!(
                        "manifest {d} is listed by index {index} in {repo}; delete the index first"
                    )));
                }
            },
        };
        if deleted {
            Ok(())
        } else {
            Err(self.manifest_miss(repo, reference).await)
        }
    }

    /// Moves `tag` back to an earlier digest in one step, recorded in the tag history like
    /// any other move (and refused by immutability rules like any other move). Returns the
    /// digest the tag now points to.
    pub async fn restore_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        target: RestoreTarget,
        actor: &Actor,
    ) -> Result<Digest> {
        let digest = match target {
            RestoreTarget::Digest(d) => d,
            RestoreTarget::Previous => self.previous_digest(repo, tag).await?,
        };
        let stored = self
            .meta
            .get_manifest(repo, &digest)
            .await?
            .ok_or_else(|| {
                RegistryError::ManifestUnknown(format!(
                    "{digest} (it is no longer in {repo}, so {tag} cannot be restored to it)"
                ))
            })?;
        let pushed = self
            .put_manifest(
                repo,
                &Reference::Tag(tag.clone()),
                Some(&stored.media_type),
                stored.bytes,
                Vec::new(),
                actor,
            )
            .await?;
        Ok(pushed.digest)
    }

    /// The digest `tag` pointed to before its current one (or before it was deleted).
    async fn previous_digest(&self, repo: &RepoName, tag: &Tag) -> Result<Digest> {
        let history = self.meta.tag_history(repo, tag, None, 1).await?;
        let Some(latest) = history.first() else {
            return Err(RegistryError::NotFound(format!(
                "{repo}:{tag} has no history to restore from"
            )));
        };
        // The latest event's `previous` is what a deleted tag pointed to, or what a live
        // one pointed to before it moved to its current digest.
        latest.previous.clone().ok_or_else(|| {
            RegistryError::NotFound(format!(
                "{repo}:{tag} has no previous digest (it was created with its current one)"
            ))
        })
    }

    // ------------------------------------------------------------ events

    /// The buffer for events that are not written with a change (denials, failed logins),
    /// shared with whoever reports them.
    pub fn events(&self) -> &Arc<EventBuffer> {
        &self.events
    }

    /// Records a pull of `m` through `reference` (counted, written with the next flush).
    pub fn record_pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
        m: &StoredManifest,
        actor: Actor,
    ) {
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let pulled = PulledManifest {
            digest: &m.digest,
            media_type: &m.media_type,
            size: m.bytes.len() as i64,
        };
        self.events.pull(repo, tag, pulled, actor);
    }

    /// Queues a `policy.denied` event for a request refused by a rule.
    pub fn deny(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        digest: Option<&Digest>,
        why: &str,
        actor: &Actor,
    ) {
        let mut event = Event::new(EventKind::PolicyDenied, actor);
        event.repository = Some(repo.as_str().to_owned());
        event.tag = tag.map(|t| t.as_str().to_owned());
        event.digest = digest.map(|d| d.as_str().to_owned());
        event.detail = Some(why.to_owned());
        self.events.emit(event);
    }

    /// Writes everything buffered since the last flush in one transaction; returns how many
    /// events were written. Run once a second and at shutdown.
    pub async fn flush_events(&self) -> Result<usize> {
        let batch = self.events.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.meta.record_events(&batch).await {
            Ok(()) => Ok(batch.events.len()),
            Err(e) => {
                self.events.carry(batch);
                Err(e.into())
            }
        }
    }

    /// Audit events matching `q`, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<StoredEvent>> {
        Ok(self.meta.audit(q).await?)
    }

    /// Pulls of `repo:tag` since `since_ms`, per digest and client.
    pub async fn tag_pulls(
        &self,
        repo: &RepoName,
        tag: &Tag,
        since_ms: i64,
    ) -> Result<Vec<ClientPulls>> {
        Ok(self.meta.tag_pulls(repo, tag, since_ms).await?)
    }

    /// Deletes audit events, pull records and delivery records older than `before_ms`
    /// (events a webhook has yet to deliver are kept).
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64> {
        Ok(self.meta.prune_events(before_ms).await?)
    }

    // ------------------------------------------------------------ webhooks

    /// Creates a webhook subscription; it receives events from now on.
    pub async fn add_webhook(&self, hook: &NewWebhook) -> Result<Webhook> {
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            return Err(RegistryError::InvalidArgument(format!(
                "webhook url {:?} must start with http:// or https://",
                hook.url
            )));
        }
        if hook.secret.len() < 16 {
            return Err(RegistryError::InvalidArgument(
                "a webhook secret must be at least 16 bytes".to_owned(),
            ));
        }
        Ok(self.meta.add_webhook(hook, unix_now_ms()).await?)
    }

    /// Every webhook subscription.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(self.meta.webhooks().await?)
    }

    /// Removes a webhook subscription and its delivery log.
    pub async fn remove_webhook(&self, id: i64) -> Result<()> {
        if self.meta.remove_webhook(id).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!("there is no webhook {id}")))
        }
    }

    /// A webhook's delivery log, newest first.
    pub async fn webhook_deliveries(&self, id: i64, limit: u32) -> Result<Vec<DeliveryRecord>> {
        Ok(self.meta.deliveries(id, limit).await?)
    }

    /// One delivery round over every subscription (see [`crate::webhooks::deliver_due`]);
    /// `source` is this registry's base URL, for Distribution payloads.
    pub async fn deliver_webhooks(
        &self,
        notifier: &dyn Notifier,
        backoff: Backoff,
        source: &str,
    ) -> Result<usize> {
        let store: &dyn crate::ports::EventStore = self.meta.as_ref();
        Ok(deliver_due(store, notifier, backoff, source, unix_now_ms()).await?)
    }

    /// Every immutability rule.
    pub async fn immutability_rules(&self) -> Result<Vec<ImmutabilityRule>> {
        Ok(self.meta.immutability_rules().await?)
    }

    /// Adds an immutability rule; returns it with its id.
    pub async fn add_immutability_rule(
        &self,
        mut rule: ImmutabilityRule,
    ) -> Result<ImmutabilityRule> {
        rule.id = self.meta.add_immutability_rule(&rule).await?;
        Ok(rule)
    }

    /// Removes an immutability rule.
    pub async fn remove_immutability_rule(&self, id: i64) -> Result<()> {
        if self.meta.remove_immutability_rule(id).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "no immutability rule #{id}"
            )))
        }
    }

    /// A tag's history, newest first (at most `limit` events).
    pub async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        limit: u32,
    ) -> Result<Vec<TagEvent>> {
        Ok(self.meta.tag_history(repo, tag, None, limit).await?)
    }

    /// Which digest `tag` pointed to at `at_ms` (unix milliseconds): `Ok(None)` when the
    /// tag did not exist then, whether not yet created or deleted.
    pub async fn tag_at(&self, repo: &RepoName, tag: &Tag, at_ms: i64) -> Result<Option<Digest>> {
        let latest = self.meta.tag_history(repo, tag, Some(at_ms), 1).await?;
        Ok(latest.into_iter().next().and_then(|e| e.new))
    }

    async fn manifest_miss(&self, repo: &RepoName, reference: &Reference) -> RegistryError {
        match self.meta.repo_exists(repo).await {
            Ok(false) => RegistryError::NameUnknown(repo.to_string()),
            Ok(true) => RegistryError::ManifestUnknown(reference.to_string()),
            Err(e) => e.into(),
        }
    }

    // ------------------------------------------------------------ discovery

    /// One page of a repository's tags.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
    ) -> Result<Page> {
        if !self.meta.repo_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        Ok(self.meta.list_tags(repo, last, limit).await?)
    }

    /// One page of the repository catalog.
    pub async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        Ok(self.meta.list_repos(last, limit).await?)
    }

    /// Manifests in `repo` whose `subject` is `digest`.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Ok(self.meta.referrers(repo, digest, artifact_type).await?)
    }
}
