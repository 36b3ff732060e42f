//! The storage ports. Adapters (`berth-blobstore`, `berth-metastore`) implement them;
//! only the `berth` binary names concrete types.

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use futures_util::Stream;

use crate::access::{Role, Visibility};
use crate::accounts::{
    AccessTokenRecord, AccountRecord, NamespaceRecord, NewAccessToken, NewAccount,
};
use crate::events::{AuditQuery, ClientPulls, EventBatch, StoredEvent};
use crate::immutability::ImmutabilityRule;
use crate::quota::{NamespaceUsage, RepoUsage};
use crate::types::*;
use crate::webhooks::{DeliveryRecord, NewWebhook, Webhook};

/// A stream of bytes: request bodies in, blob contents out. Never collected whole.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A storage backend failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist in the backend.
    #[error("not found: {0}")]
    NotFound(String),
    /// The client's body stream failed (disconnect, framing error) while it was being stored.
    #[error("request body interrupted: {0}")]
    Body(io::Error),
    /// Any other backend failure (I/O, database).
    #[error("{0}")]
    Backend(String),
}

impl StorageError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// Result of a port call.
pub type StoreResult<T> = Result<T, StorageError>;

/// Content-addressed blob bytes and in-progress upload files.
///
/// Invariant: a blob is visible under its digest only once it is complete, verified by the
/// caller, durable (fsynced) and atomically renamed into place.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Creates an empty upload file.
    async fn create_upload(&self, id: &UploadId) -> StoreResult<()>;
    /// Appends `body` at `offset` (the current upload size), calling `inspect` on every
    /// chunk in order as it is written; returns bytes written. On error the caller truncates.
    async fn append_upload(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
        inspect: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> StoreResult<u64>;
    /// Cuts an upload back to `len` bytes (undoing a failed chunk).
    async fn truncate_upload(&self, id: &UploadId, len: u64) -> StoreResult<()>;
    /// Streams an upload's current bytes (to rebuild hash state after a restart).
    async fn read_upload(&self, id: &UploadId) -> StoreResult<ByteStream>;
    /// Makes a verified upload durable and visible as blob `digest`; the upload is consumed.
    async fn commit_upload(&self, id: &UploadId, digest: &Digest) -> StoreResult<()>;
    /// Removes an upload file; absent is fine.
    async fn delete_upload(&self, id: &UploadId) -> StoreResult<()>;
    /// Upload files present, with their last modification time (for sweeping).
    async fn list_uploads(&self) -> StoreResult<Vec<(UploadId, SystemTime)>>;
    /// Streams a blob, or the given inclusive range of it.
    async fn read_blob(&self, digest: &Digest, range: Option<ByteRange>)
    -> StoreResult<ByteStream>;
    /// Removes a blob; absent is fine.
    async fn delete_blob(&self, digest: &Digest) -> StoreResult<()>;
    /// Every stored blob digest (for `berth fsck`).
    async fn list_blobs(&self) -> StoreResult<Vec<Digest>>;
    /// Files under the blob tree that are not named like a blob (for `berth fsck`).
    async fn list_strays(&self) -> StoreResult<Vec<String>>;
    /// Removes a stray file reported by [`BlobStore::list_strays`].
    async fn delete_stray(&self, name: &str) -> StoreResult<()>;
}

/// Repositories, blob records and links, manifests, tags, referrers and upload sessions.
///
/// Invariant: every multi-row change is one transaction, so a crash leaves either the old
/// state or the new one.
#[async_trait]
pub trait MetaStore: EventStore + GcStore + LifecycleStore + QuotaStore + Send + Sync {
    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Records a new upload session.
    async fn create_upload(&self, session: &UploadSession) -> StoreResult<()>;
    /// Looks up an upload session.
    async fn get_upload(&self, id: &UploadId) -> StoreResult<Option<UploadSession>>;
    /// Records how many bytes an upload holds.
    async fn set_upload_size(&self, id: &UploadId, size: u64) -> StoreResult<()>;
    /// Forgets an upload session; absent is fine.
    async fn delete_upload(&self, id: &UploadId) -> StoreResult<()>;
    /// Ids of every recorded upload session.
    async fn upload_ids(&self) -> StoreResult<Vec<UploadId>>;
    /// Sessions that last received data (or started, if they never did) before `before`
    /// (unix seconds), for expiry.
    async fn uploads_idle_since(&self, before: i64) -> StoreResult<Vec<UploadId>>;

    /// In one transaction: records the blob, links it into `repo` (creating the repository),
    /// and ends the upload session `finished`, if given.
    async fn record_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        finished: Option<&UploadId>,
    ) -> StoreResult<()>;
    /// Size of `digest` if it is linked into `repo`.
    async fn linked_blob_size(&self, repo: &RepoName, digest: &Digest) -> StoreResult<Option<u64>>;
    /// Repositories `digest` is linked into (at most `limit`), for automatic mounts.
    async fn repos_linking(&self, digest: &Digest, limit: u32) -> StoreResult<Vec<RepoName>>;
    /// Links an already recorded blob into `repo` (creating the repository).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<()>;
    /// Removes `digest`'s link from `repo` unless a manifest there references it.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StoreResult<BlobUnlink>;
    /// Every blob record (digest, size), for `berth fsck`.
    async fn all_blobs(&self) -> StoreResult<Vec<(Digest, u64)>>;
    /// Removes a blob record and all its links (fsck repair of a missing or corrupt blob).
    async fn forget_blob(&self, digest: &Digest) -> StoreResult<()>;

    /// Whether the repository exists.
    async fn repo_exists(&self, repo: &RepoName) -> StoreResult<bool>;
    /// Writes a manifest, its references and tags in one transaction, after checking that
    /// every referenced blob and child manifest is present (checked inside the transaction).
    async fn put_manifest(&self, m: &NewManifest) -> StoreResult<Result<(), ManifestRefusal>>;
    /// A manifest by digest.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StoreResult<Option<StoredManifest>>;
    /// The digest a tag points to.
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>>;
    /// Removes a tag, recording it in the tag history; false when it did not exist.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, actor: &Actor) -> StoreResult<bool>;
    /// Removes a manifest and the tags pointing at it (recording them in the tag history),
    /// unless an index still lists it.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        actor: &Actor,
    ) -> StoreResult<ManifestDeletion>;
    /// Tags in `repo` pointing at `digest`.
    async fn tags_of(&self, repo: &RepoName, digest: &Digest) -> StoreResult<Vec<Tag>>;
    /// Every immutability rule, oldest first.
    async fn immutability_rules(&self) -> StoreResult<Vec<ImmutabilityRule>>;
    /// Records a rule (its `id` is ignored); returns the new id.
    async fn add_immutability_rule(&self, rule: &ImmutabilityRule) -> StoreResult<i64>;
    /// Removes a rule; false when there is none with that id.
    async fn remove_immutability_rule(&self, id: i64) -> StoreResult<bool>;
    /// A tag's history, newest first, at most `limit` events, only those at or before
    /// `until_ms` (unix milliseconds) when given.
    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        until_ms: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<TagEvent>>;
    /// Tags after `last` in ASCII order, at most `limit`.
    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, limit: u32)
    -> StoreResult<Page>;
    /// Repositories after `last` in ASCII order, at most `limit`.
    async fn list_repos(&self, last: Option<&str>, limit: u32) -> StoreResult<Page>;
    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> StoreResult<Vec<Referrer>>;
}

/// The event stream, pull records and webhook subscriptions.
///
/// Invariants: event ids increase in commit order (webhook cursors rely on it); events of
/// changes are written by [`MetaStore`] in the change's own transaction; a batch of
/// [`EventBatch`] is written in one transaction.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends buffered events and adds pull counts to the pull records, in one transaction.
    async fn record_events(&self, batch: &EventBatch) -> StoreResult<()>;
    /// Audit events matching `q`, newest first.
    async fn audit(&self, q: &AuditQuery) -> StoreResult<Vec<StoredEvent>>;
    /// Events after id `after`, oldest first, at most `limit`; only of `namespace` when given.
    async fn events_after(
        &self,
        after: i64,
        namespace: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// Deletes events older than `before_ms` that no subscription still has to deliver,
    /// and pull records and delivery records older than `before_ms`; returns the events
    /// deleted.
    async fn prune_events(&self, before_ms: i64) -> StoreResult<u64>;
    /// Pulls of `repo:tag` since `since_ms`, per digest and client.
    async fn tag_pulls(
        &self,
        repo: &RepoName,
        tag: &Tag,
        since_ms: i64,
    ) -> StoreResult<Vec<ClientPulls>>;
    /// Creates a subscription whose cursor starts at the newest event.
    async fn add_webhook(&self, hook: &NewWebhook, created_ms: i64) -> StoreResult<Webhook>;
    /// Every subscription, oldest first.
    async fn webhooks(&self) -> StoreResult<Vec<Webhook>>;
    /// Removes a subscription and its delivery log; false when there is none with that id.
    async fn remove_webhook(&self, id: i64) -> StoreResult<bool>;
    /// Moves a subscription's cursor to `cursor` and clears its failures.
    async fn webhook_advanced(&self, id: i64, cursor: i64) -> StoreResult<()>;
    /// Records `failures` failed attempts at the next event; retry at `next_attempt_ms`.
    async fn webhook_failed(&self, id: i64, failures: u32, next_attempt_ms: i64)
    -> StoreResult<()>;
    /// Appends to a subscription's delivery log.
    async fn record_delivery(&self, d: &DeliveryRecord) -> StoreResult<()>;
    /// A subscription's delivery log, newest first.
    async fn deliveries(&self, webhook_id: i64, limit: u32) -> StoreResult<Vec<DeliveryRecord>>;
}

/// What the garbage collector asks of the metadata store.
///
/// Invariant: a claim re-checks, inside its own transaction, everything that made a blob
/// or manifest a candidate, so a push that committed in between always wins.
#[async_trait]
pub trait GcStore: Send + Sync {
    /// Blobs after `after` (digest order), at most `limit`, that no manifest references and
    /// that were stored and last linked into a repository before `cutoff` (unix seconds).
    async fn unreferenced_blobs(
        &self,
        cutoff: i64,
        after: Option<&Digest>,
        limit: u32,
    ) -> StoreResult<Vec<(Digest, u64)>>;
    /// Removes the rows and links of those of `digests` that are still candidates, in one
    /// transaction; each removed blob with the repositories it was linked into (for cache
    /// invalidation).
    async fn claim_unreferenced_blobs(
        &self,
        digests: &[Digest],
        cutoff: i64,
    ) -> StoreResult<Vec<(Digest, Vec<RepoName>)>>;
    /// Manifests pushed before `cutoff` with no tag, not listed by an index of their
    /// repository and not a referrer of a manifest still present there.
    async fn untagged_manifests(&self, cutoff: i64) -> StoreResult<Vec<(RepoName, Digest)>>;
    /// Deletes such a manifest if it still is one (recording a `delete` event by `actor`);
    /// false when it changed meanwhile (tagged, listed, or gone).
    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff: i64,
        actor: &Actor,
    ) -> StoreResult<bool>;
}

/// Lifecycle policies and what evaluating them needs.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Stores (or replaces) the policy of a repository or namespace, verbatim.
    async fn put_lifecycle_policy(&self, scope: &str, json: &str, now_ms: i64) -> StoreResult<()>;
    /// The policy stored for exactly this scope.
    async fn lifecycle_policy(&self, scope: &str) -> StoreResult<Option<String>>;
    /// Every stored policy, by scope.
    async fn lifecycle_policies(&self) -> StoreResult<Vec<(String, String)>>;
    /// Removes a scope's policy; false when it had none.
    async fn remove_lifecycle_policy(&self, scope: &str) -> StoreResult<bool>;
    /// Repositories named `scope` or inside it (`scope/…`), by name.
    async fn repos_within(&self, scope: &str) -> StoreResult<Vec<RepoName>>;
    /// The images of a repository as lifecycle rules see them: its manifests except index
    /// children and referrers of a present subject (they go with their parent).
    async fn lifecycle_images(&self, repo: &RepoName) -> StoreResult<Vec<StoredImage>>;
    /// Deletes an expired image if its tags are still exactly `tags` (recording its tag
    /// and delete events with `reason`), then the untagged manifests that only it kept:
    /// children no other index lists, and referrers of anything deleted. Returns the
    /// digests deleted, the image's first; empty when it changed meanwhile.
    async fn expire_image(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[String],
        reason: &str,
        actor: &Actor,
    ) -> StoreResult<Vec<Digest>>;
}

/// Namespace quotas and what they count.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Sets (or replaces) a namespace's limit in bytes.
    async fn set_quota(&self, namespace: &str, limit: u64) -> StoreResult<()>;
    /// Removes a namespace's limit; false when it had none.
    async fn remove_quota(&self, namespace: &str) -> StoreResult<bool>;
    /// A namespace's limit.
    async fn quota(&self, namespace: &str) -> StoreResult<Option<u64>>;
    /// Unique blob bytes the namespace's manifests reference.
    async fn namespace_bytes(&self, namespace: &str) -> StoreResult<u64>;
    /// Unique blob bytes per repository of a namespace, by name.
    async fn repository_bytes(&self, namespace: &str) -> StoreResult<Vec<RepoUsage>>;
    /// Every namespace with repositories or a quota, by name.
    async fn all_namespace_usage(&self) -> StoreResult<Vec<NamespaceUsage>>;
}

/// Accounts, namespaces and memberships (access control's tables).
///
/// Invariant: an account name is unique; a robot's grants are written with it, in one
/// transaction.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// How many accounts exist (revoked ones included).
    async fn account_count(&self) -> StoreResult<u64>;
    /// Creates an account with its grants; `None` when the name is taken.
    async fn create_account(&self, account: &NewAccount) -> StoreResult<Option<i64>>;
    /// An account (with a robot's grants) by name.
    async fn account_by_name(&self, name: &str) -> StoreResult<Option<AccountRecord>>;
    /// Every account, by name (grants included).
    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>>;
    /// Marks an account revoked at `at`; false when there is no such account.
    async fn revoke_account(&self, name: &str, at: i64) -> StoreResult<bool>;
    /// Replaces an account's secret hash; false when there is no such account.
    async fn set_secret(&self, name: &str, secret_hash: &str) -> StoreResult<bool>;
    /// Deletes an account with its grants and memberships; false when absent.
    async fn delete_account(&self, name: &str) -> StoreResult<bool>;
    /// Every namespace that was set up, by name.
    async fn list_namespaces(&self) -> StoreResult<Vec<NamespaceRecord>>;
    /// Members of a namespace: (account name, role), by name.
    async fn members(&self, namespace: &str) -> StoreResult<Vec<(String, Role)>>;
    /// Removes an account from a namespace; false when it was not a member.
    async fn remove_member(&self, namespace: &str, account_id: i64) -> StoreResult<bool>;
    /// Records a personal access token; `None` when the account has one of that name.
    async fn create_access_token(&self, token: &NewAccessToken) -> StoreResult<Option<i64>>;
    /// An account's access tokens (revoked and expired ones included), by name.
    async fn access_tokens(&self, account_id: i64) -> StoreResult<Vec<AccessTokenRecord>>;
    /// Marks an access token revoked; false when there is no such live token.
    async fn revoke_access_token(&self, account_id: i64, name: &str, at: i64) -> StoreResult<bool>;
    /// A namespace's settings, if it was set up.
    async fn namespace(&self, name: &str) -> StoreResult<Option<NamespaceRecord>>;
    /// Creates a namespace or changes its visibility.
    async fn put_namespace(&self, name: &str, visibility: Visibility) -> StoreResult<()>;
    /// Sets an account's role in a namespace (which must exist).
    async fn set_member(&self, namespace: &str, account_id: i64, role: Role) -> StoreResult<()>;
    /// An account's role in a namespace.
    async fn role_of(&self, namespace: &str, account_id: i64) -> StoreResult<Option<Role>>;
}
