//! The one place where domain errors become OCI error responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorCode, NameError};
use berth_registry::RegistryError;
use serde_json::json;

/// An error answered with the spec's JSON body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OCI error code.
    pub code: ErrorCode,
    /// Human-readable message saying what to do.
    pub message: String,
    /// Extra headers (e.g. `Range` on a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let message = e.to_string();
        let code = match &e {
            RegistryError::InvalidName(NameError::InvalidName(_)) => ErrorCode::NameInvalid,
            RegistryError::InvalidName(NameError::InvalidTag(_)) => ErrorCode::ManifestInvalid,
            RegistryError::InvalidName(NameError::InvalidDigest(_)) => ErrorCode::DigestInvalid,
            RegistryError::DigestInvalid(_) => ErrorCode::DigestInvalid,
            RegistryError::NameUnknown(_) => ErrorCode::NameUnknown,
            RegistryError::BlobUnknown(_) => ErrorCode::BlobUnknown,
            RegistryError::BlobUploadUnknown => ErrorCode::BlobUploadUnknown,
            RegistryError::BlobUploadInvalid(_) => ErrorCode::BlobUploadInvalid,
            // 416 as the spec requires; the code comes from the spec's table (Docker's
            // RANGE_INVALID is not in it).
            RegistryError::RangeInvalid { .. } => {
                return ApiError::new(ErrorCode::BlobUploadInvalid, message)
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            }
            RegistryError::SizeInvalid(_) => ErrorCode::SizeInvalid,
            RegistryError::ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            RegistryError::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            RegistryError::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            RegistryError::ManifestTooLarge { .. } => {
                return ApiError::new(ErrorCode::ManifestInvalid, message)
                    .with_status(StatusCode::PAYLOAD_TOO_LARGE);
            }
            RegistryError::TooManyTags { .. } => {
                return ApiError::new(ErrorCode::Unsupported, message)
                    .with_status(StatusCode::URI_TOO_LONG);
            }
            RegistryError::Unsupported(_) => ErrorCode::Unsupported,
            RegistryError::Denied(_) => ErrorCode::Denied,
            // Administrative requests (accounts, namespaces): not part of the OCI table, so
            // the status carries the meaning and the code stays generic.
            RegistryError::InvalidArgument(_) => {
                return ApiError::new(ErrorCode::Unsupported, message)
                    .with_status(StatusCode::BAD_REQUEST);
            }
            RegistryError::AlreadyExists(_) => {
                return ApiError::new(ErrorCode::Unsupported, message)
                    .with_status(StatusCode::CONFLICT);
            }
            RegistryError::NotFound(_) => {
                return ApiError::new(ErrorCode::NameUnknown, message)
                    .with_status(StatusCode::NOT_FOUND);
            }
            RegistryError::Storage(err) => {
                tracing::error!(error = %err, "storage failure");
                ::metrics::counter!("berth_storage_errors_total").increment(1);
                return ApiError::new(
                    ErrorCode::Unknown,
                    "the registry's storage failed; nothing was acknowledged, retry the request",
                );
            }
        };
        ApiError::new(code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        let mut res = crate::json_response(self.status, body.to_string());
        for (k, v) in self.headers {
            res.headers_mut().append(k, v);
        }
        res
    }
}

/// Result of a handler.
pub type ApiResult<T = Response> = Result<T, ApiError>;
