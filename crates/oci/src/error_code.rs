//! The distribution-spec error codes and the HTTP status each is answered with.

/// One code of the OCI distribution spec's error table (plus `UNKNOWN` for 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// code-1: blob unknown to registry.
    BlobUnknown,
    /// code-2: blob upload invalid.
    BlobUploadInvalid,
    /// code-3: blob upload unknown to registry.
    BlobUploadUnknown,
    /// code-4: provided digest did not match uploaded content.
    DigestInvalid,
    /// code-5: manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// code-6: manifest invalid.
    ManifestInvalid,
    /// code-7: manifest unknown to registry.
    ManifestUnknown,
    /// code-8: invalid repository name.
    NameInvalid,
    /// code-9: repository name not known to registry.
    NameUnknown,
    /// code-10: provided length did not match content length.
    SizeInvalid,
    /// code-11: authentication required.
    Unauthorized,
    /// code-12: requested access to the resource is denied.
    Denied,
    /// code-13: the operation is unsupported.
    Unsupported,
    /// code-14: too many requests.
    TooManyRequests,
    /// Distribution's `UNKNOWN`, for server-side failures (5xx; the spec's table covers 4xx).
    Unknown,
}

impl ErrorCode {
    /// The identifier that goes in the JSON body's `code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status Distribution and the spec's endpoint table use for this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unknown => 500,
        }
    }
}
