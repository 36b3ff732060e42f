//! Parsing `/v2/…` paths into an [`Endpoint`], from the right, because repository names
//! contain slashes (`/v2/team/app/blobs/uploads/<id>`).

use axum::http::Method;
use berth_oci::{Digest, Reference, RepoName};
use berth_registry::access::Action;
use berth_registry::{RegistryError, UploadId};
use percent_encoding::percent_decode_str;

use crate::auth::Required;

/// Every resource of the `/v2` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`: API version check.
    Base,
    /// `/v2/_catalog`: repository listing.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`: start an upload or mount.
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`: an upload session.
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(RepoName, Digest),
}

/// Why a path is not an endpoint.
#[derive(Debug)]
pub enum PathError {
    /// No endpoint has this shape.
    NotFound,
    /// The shape matched but a part is invalid.
    Invalid(RegistryError),
}

impl From<RegistryError> for PathError {
    fn from(e: RegistryError) -> Self {
        PathError::Invalid(e)
    }
}

fn name(parts: &[String]) -> Result<RepoName, PathError> {
    Ok(RepoName::parse(&parts.join("/")).map_err(RegistryError::from)?)
}

fn digest(s: &str) -> Result<Digest, PathError> {
    s.parse::<Digest>()
        .map_err(|e| PathError::Invalid(RegistryError::DigestInvalid(e.to_string())))
}

impl Endpoint {
    /// What a request to this endpoint needs; checked once, before any handler runs.
    pub fn required(&self, method: &Method) -> Required {
        let (name, action) = match self {
            Endpoint::Base => return Required::Authenticated,
            Endpoint::Catalog => return Required::Catalog,
            Endpoint::Tags(n) | Endpoint::Referrers(n, _) => (n, Action::Pull),
            Endpoint::Manifest(n, _) | Endpoint::Blob(n, _) => match *method {
                Method::GET | Method::HEAD => (n, Action::Pull),
                Method::DELETE => (n, Action::Delete),
                _ => (n, Action::Push),
            },
            Endpoint::UploadStart(n) | Endpoint::Upload(n, _) => (n, Action::Push),
        };
        Required::Repo(name.clone(), action)
    }

    /// Parses a request path (still percent-encoded) that starts with `/v2`.
    pub fn parse(path: &str) -> Result<Endpoint, PathError> {
        let rest = path.strip_prefix("/v2").ok_or(PathError::NotFound)?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let segs: Vec<String> = rest
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        // An encoded slash would let one path segment smuggle in a different repository
        // name than the path shows; names only ever use literal slashes.
        if let Some(bad) = segs.iter().find(|s| s.contains('/')) {
            return Err(PathError::Invalid(RegistryError::InvalidName(
                berth_oci::NameError::InvalidName(format!(
                    "{bad:?}: an encoded '/' is not allowed in a repository path"
                )),
            )));
        }
        let n = segs.len();
        let at = |i: usize| segs[n - i].as_str();
        // `<name>/blobs/uploads/` (trailing slash) and `<name>/blobs/uploads`.
        if n >= 4 && at(3) == "blobs" && at(2) == "uploads" && at(1).is_empty() {
            return Ok(Endpoint::UploadStart(name(&segs[..n - 3])?));
        }
        if n >= 3 && at(2) == "blobs" && at(1) == "uploads" {
            return Ok(Endpoint::UploadStart(name(&segs[..n - 2])?));
        }
        if n >= 4 && at(3) == "blobs" && at(2) == "uploads" {
            let id = UploadId::parse(at(1)).ok_or(RegistryError::BlobUploadUnknown)?;
            return Ok(Endpoint::Upload(name(&segs[..n - 3])?, id));
        }
        if n >= 3 && at(2) == "tags" && at(1) == "list" {
            return Ok(Endpoint::Tags(name(&segs[..n - 2])?));
        }
        if n >= 3 && at(2) == "manifests" {
            let reference = Reference::parse(at(1)).map_err(|e| match e {
                berth_oci::NameError::InvalidDigest(d) => {
                    RegistryError::DigestInvalid(d.to_string())
                }
                other => RegistryError::InvalidName(other),
            })?;
            return Ok(Endpoint::Manifest(name(&segs[..n - 2])?, reference));
        }
        if n >= 3 && at(2) == "blobs" {
            return Ok(Endpoint::Blob(name(&segs[..n - 2])?, digest(at(1))?));
        }
        if n >= 3 && at(2) == "referrers" {
            return Ok(Endpoint::Referrers(name(&segs[..n - 2])?, digest(at(1))?));
        }
        Err(PathError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(p: &str) -> Endpoint {
        match Endpoint::parse(p) {
            Ok(e) => e,
            Err(e) => panic!("{p}: {e:?}"),
        }
    }

    #[test]
    fn parses_from_the_right() {
        assert_eq!(ok("/v2/"), Endpoint::Base);
        assert_eq!(ok("/v2"), Endpoint::Base);
        assert_eq!(ok("/v2/_catalog"), Endpoint::Catalog);
        assert!(matches!(ok("/v2/a/b/c/tags/list"), Endpoint::Tags(n) if n.as_str() == "a/b/c"));
        assert!(
            matches!(ok("/v2/a/blobs/uploads/"), Endpoint::UploadStart(n) if n.as_str() == "a")
        );
        assert!(matches!(ok("/v2/a/blobs/uploads"), Endpoint::UploadStart(n) if n.as_str() == "a"));
        let id = UploadId::new();
        assert!(
            matches!(ok(&format!("/v2/x/blobs/uploads/{id}")), Endpoint::Upload(n, i) if n.as_str() == "x" && i == id)
        );
        // A repository may itself be called "blobs" or "manifests".
        assert!(
            matches!(ok(&format!("/v2/blobs/blobs/{D}")), Endpoint::Blob(n, _) if n.as_str() == "blobs")
        );
        assert!(
            matches!(ok("/v2/manifests/manifests/latest"), Endpoint::Manifest(n, _) if n.as_str() == "manifests")
        );
        assert!(matches!(
            ok(&format!("/v2/a/manifests/{}", D.replace(':', "%3A"))),
            Endpoint::Manifest(_, Reference::Digest(_))
        ));
        assert!(matches!(
            ok(&format!("/v2/a/referrers/{D}")),
            Endpoint::Referrers(..)
        ));
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            Endpoint::parse("/v2/a/unknown"),
            Err(PathError::NotFound)
        ));
        assert!(matches!(
            Endpoint::parse("/v2/A/tags/list"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/../etc/tags/list"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a/blobs/sha256:zz"),
            Err(PathError::Invalid(RegistryError::DigestInvalid(_)))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a/blobs/uploads/not-a-uuid"),
            Err(PathError::Invalid(RegistryError::BlobUploadUnknown))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a/manifests/bad%20tag"),
            Err(PathError::Invalid(_))
        ));
    }
}
