//! The domain's one error type; `berth-http` maps each variant to an OCI error code.

use berth_oci::{Digest, NameError};

use crate::ports::StorageError;

/// Everything a registry operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Repository name, tag or digest in the request breaks the spec grammar.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A digest parameter is malformed, uses an unknown algorithm, or does not match the content.
    #[error("{0}")]
    DigestInvalid(String),
    /// The repository does not exist.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(String),
    /// The blob is not readable through this repository.
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    /// The upload session does not exist (finished, cancelled, expired, or another repository's).
    #[error("upload session is not known; start a new upload with POST /v2/<name>/blobs/uploads/")]
    BlobUploadUnknown,
    /// The upload request is malformed or the body could not be received whole.
    #[error("{0}")]
    BlobUploadInvalid(String),
    /// A chunk does not start where the upload currently ends.
    #[error("chunk must start at offset {size}; the upload currently holds {size} bytes")]
    RangeInvalid {
        /// Bytes the session holds, so the client can resume.
        size: u64,
    },
    /// Declared and received lengths disagree.
    #[error("{0}")]
    SizeInvalid(String),
    /// The manifest (or the tag) does not exist in this repository.
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(String),
    /// The manifest is not valid.
    #[error("{0}")]
    ManifestInvalid(String),
    /// The manifest references a blob or manifest the repository does not hold.
    #[error("manifest references {0}, which this repository does not hold; push it first")]
    ManifestBlobUnknown(Digest),
    /// The manifest is larger than berth accepts.
    #[error("manifest exceeds the {limit} byte limit")]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Too many `tag` parameters on one manifest push.
    #[error("at most {limit} tags may be pushed in one request")]
    TooManyTags {
        /// The limit.
        limit: usize,
    },
    /// The operation is refused by design (schema 1, deleting something still in use, …).
    #[error("{0}")]
    Unsupported(String),
    /// A policy forbids the change (an immutable tag, …); the message names the rule.
    #[error("{0}")]
    Denied(String),
    /// An argument of an administrative request is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The account, namespace or rule named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A storage backend failed; the request changed nothing that was acknowledged.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
}

/// Shorthand for results of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
