//! Values that cross the ports: upload sessions, stored manifests, listings.

use std::fmt;

use berth_oci::{Algorithm, Digest, RepoName, Tag};
use bytes::Bytes;
use serde_json::{Map, Value};

/// Identifier of an upload session (a UUID, as clients expect in `Docker-Upload-UUID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn new() -> Self {
        UploadId(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts only canonical hyphenated UUIDs, so ids are always safe as file names.
    pub fn parse(s: &str) -> Option<Self> {
        let u = uuid::Uuid::try_parse(s).ok()?;
        let canonical = u.hyphenated().to_string();
        (canonical == s).then_some(UploadId(canonical))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An in-progress blob upload as recorded in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// Session id.
    pub id: UploadId,
    /// Repository the blob will be linked into.
    pub repo: RepoName,
    /// Hash algorithm chosen at POST (`digest-algorithm=`).
    pub algorithm: Algorithm,
    /// Bytes received so far.
    pub size: u64,
    /// Unix seconds when the session started.
    pub started_at: i64,
}

/// Where an upload session stands, for `Range`/`Location` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// Session id.
    pub id: UploadId,
    /// Bytes received so far.
    pub size: u64,
}

/// A manifest ready to be written, with everything the store must check atomically.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// Repository.
    pub repo: RepoName,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type answered on GET.
    pub media_type: String,
    /// The exact pushed bytes.
    pub bytes: Bytes,
    /// Referrers-API artifact type.
    pub artifact_type: Option<String>,
    /// Subject digest, if any.
    pub subject: Option<Digest>,
    /// Top-level annotations as JSON text, for referrers listings.
    pub annotations: Option<String>,
    /// Blobs (digest, declared size) that must be linked in the repository.
    pub blob_refs: Vec<(Digest, u64)>,
    /// Child manifests that must exist in the repository.
    pub manifest_refs: Vec<Digest>,
    /// Tags to point at this manifest.
    pub tags: Vec<Tag>,
    /// Unix seconds of the push.
    pub pushed_at: i64,
    /// Who pushed (recorded in the tag history).
    pub actor: Actor,
    /// Tags an immutability rule protects: refused (inside the transaction) if they
    /// already point to another digest.
    pub immutable_tags: Vec<Tag>,
}

/// Who made a change, for tag history and audit: recorded with the change itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actor {
    /// Account name (`None`: anonymous, or open mode).
    pub account: Option<String>,
    /// Client address.
    pub client: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// Where `Registry::restore_tag` moves a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// A given digest (a manifest still in the repository).
    Digest(Digest),
    /// The digest the tag pointed to before its latest change.
    Previous,
}

/// One recorded change of a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagEvent {
    /// The tag.
    pub tag: String,
    /// Digest before the change (`None`: the tag was created).
    pub previous: Option<Digest>,
    /// Digest after the change (`None`: the tag was deleted).
    pub new: Option<Digest>,
    /// Who.
    pub actor: Actor,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// Why the metadata store refused a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRefusal {
    /// A referenced blob or child manifest is missing from the repository.
    Missing(Digest),
    /// An immutable tag already points to another digest.
    ImmutableTag {
        /// The tag.
        tag: Tag,
        /// Where it points.
        current: Digest,
    },
    /// The namespace's quota has no room for the push's new blobs.
    QuotaExceeded(crate::quota::QuotaExceeded),
    /// A referenced blob exists but its size differs from the descriptor's.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size in the descriptor.
        declared: u64,
        /// Size stored.
        stored: u64,
    },
}

/// A stored manifest as served on GET.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The exact pushed bytes.
    pub bytes: Bytes,
}

/// One entry of a referrers listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// Media type of the referring manifest.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its artifact type (absent for indexes without one).
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<Map<String, Value>>,
}

/// Outcome of deleting a manifest by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDeletion {
    /// Deleted, with its tags.
    Deleted,
    /// No such manifest in the repository.
    NotFound,
    /// An index in the repository still lists it.
    ReferencedBy(Digest),
}

/// Outcome of unlinking a blob from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUnlink {
    /// The link is gone.
    Unlinked,
    /// The blob was not linked to the repository.
    NotLinked,
    /// A manifest in the repository still references it.
    ReferencedBy(Digest),
}

/// One page of a sorted listing (tags or repositories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Items in ASCII order.
    pub items: Vec<String>,
    /// Whether more items follow the last one.
    pub more: bool,
}

/// Outcome of `POST …/blobs/uploads/?mount=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// The blob is now linked into the repository.
    Mounted,
    /// It could not be mounted; an upload session was started instead.
    Started(UploadStatus),
}

/// A byte range of a blob, inclusive on both ends, already checked against the blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A manifest as lifecycle evaluation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredImage {
    /// Manifest digest.
    pub digest: Digest,
    /// Tags pointing at it, by name.
    pub tags: Vec<String>,
    /// Unix seconds of its push.
    pub pushed_at: i64,
    /// Unix milliseconds of its latest pull (by tag or digest), if any.
    pub last_pulled_ms: Option<i64>,
}
