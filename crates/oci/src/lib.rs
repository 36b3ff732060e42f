//! Pure OCI types for berth: digests, repository names, references, media types,
//! manifest parsing and validation, and the distribution-spec error-code table.
//!
//! Nothing here does I/O; everything here is safe to fuzz.

pub mod digest;
pub mod error_code;
pub mod manifest;
pub mod media_type;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use error_code::ErrorCode;
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use name::{NameError, Reference, RepoName, Tag};
