//! Manifest parsing and validation for the four manifest kinds berth stores.
//!
//! The registry keeps the pushed bytes verbatim; this module only reads them to learn the
//! media type, what they reference, and what the referrers API needs.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::media_type::{self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

/// Largest manifest berth accepts; the spec asks registries to take at least 4 MB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A manifest format berth deliberately does not store (Docker schema 1).
    #[error("{0}")]
    Unsupported(String),
    /// The bytes are not a valid manifest of the declared type.
    #[error("{0}")]
    Invalid(String),
}

/// Whether a manifest describes one image/artifact or lists other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest: a config plus layers.
    Image,
    /// OCI image index or Docker manifest list: child manifests.
    Index,
}

/// A content descriptor as it appears inside a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Whether the content lives elsewhere (`urls` on a non-distributable layer).
    pub foreign: bool,
}

/// What berth learned from a valid manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The manifest's media type (what GET answers as Content-Type).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// Config blob of an image manifest.
    pub config: Option<Descriptor>,
    /// Layer blobs of an image manifest.
    pub layers: Vec<Descriptor>,
    /// Child manifests of an index.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for image manifests without one the config's media type.
    pub artifact_type: Option<String>,
    /// The manifest's top-level annotations, copied into referrers listings.
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<Value>,
    media_type: Option<Value>,
    config: Option<Value>,
    layers: Option<Value>,
    manifests: Option<Value>,
    subject: Option<Value>,
    artifact_type: Option<Value>,
    annotations: Option<Value>,
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

fn is_schema1(t: &str) -> bool {
    t == media_type::DOCKER_SCHEMA1 || t == media_type::DOCKER_SCHEMA1_SIGNED
}

fn schema1_error() -> ManifestError {
    ManifestError::Unsupported(
        "Docker schema 1 manifests are not accepted: push with a current client (docker 1.10+), which sends schema 2 or OCI manifests".into(),
    )
}

/// Parses and validates `bytes` pushed with the given `Content-Type` (parameters ignored).
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let header_type = content_type
        .map(media_type::essence)
        .filter(|t| !t.is_empty());
    if header_type.is_some_and(is_schema1) {
        return Err(schema1_error());
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not a valid JSON object: {e}")))?;

    let body_type = match &raw.media_type {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("manifest field mediaType must be a string")),
    };
    if body_type.is_some_and(is_schema1) || raw.schema_version == Some(Value::from(1)) {
        return Err(schema1_error());
    }
    if raw.schema_version != Some(Value::from(2)) {
        return Err(invalid("manifest field schemaVersion must be 2"));
    }

    let media_type = match (header_type, body_type) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(format!(
                "Content-Type {h:?} does not match the manifest's mediaType {b:?}"
            )));
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        // OCI allows omitting mediaType; infer it from the shape like Distribution does.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };

    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}: push one of {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"
            )));
        }
    };
    let is_oci = media_type == OCI_MANIFEST || media_type == OCI_INDEX;

    let artifact_type = match &raw.artifact_type {
        // The distribution spec treats an empty artifactType like a missing one.
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if is_oci && media_type::is_well_formed(s) => Some(s.clone()),
        Some(_) if !is_oci => return Err(invalid("artifactType is only valid in OCI manifests")),
        Some(_) => {
            return Err(invalid(
                "artifactType must be a media type like type/subtype",
            ));
        }
    };
    let annotations = match raw.annotations {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            if m.values().any(|v| !v.is_string()) {
                return Err(invalid("annotations values must be strings"));
            }
            Some(m)
        }
        Some(_) => return Err(invalid("annotations must be an object of strings")),
    };
    let subject = match &raw.subject {
        None | Some(Value::Null) => None,
        Some(_) if !is_oci => return Err(invalid("subject is only valid in OCI manifests")),
        Some(v) => Some(descriptor(v, "subject")?),
    };

    let mut parsed = ParsedManifest {
        media_type,
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
        artifact_type,
        annotations,
    };
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest must not have a manifests field"));
            }
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| invalid("image manifest has no config descriptor"))?;
            let config = descriptor(config, "config")?;
            parsed.layers = descriptor_list(raw.layers.as_ref(), "layers")?;
            if parsed.artifact_type.is_none() {
                parsed.artifact_type = Some(config.media_type.clone());
            }
            parsed.config = Some(config);
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index must not have config or layers fields"));
            }
            parsed.manifests = descriptor_list(raw.manifests.as_ref(), "manifests")?;
        }
    }
    Ok(parsed)
}

fn descriptor_list(v: Option<&Value>, field: &str) -> Result<Vec<Descriptor>, ManifestError> {
    let Some(Value::Array(items)) = v else {
        return Err(invalid(format!("manifest field {field} must be an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, d)| descriptor(d, &format!("{field}[{i}]")))
        .collect()
}

fn descriptor(v: &Value, at: &str) -> Result<Descriptor, ManifestError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(format!("{at} must be a descriptor object")))?;
    let media_type = obj
        .get("mediaType")
        .and_then(Value::as_str)
        .filter(|t| media_type::is_well_formed(t))
        .ok_or_else(|| {
            invalid(format!(
                "{at}.mediaType must be a media type like type/subtype"
            ))
        })?;
    let digest: Digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.digest is missing")))?
        .parse()
        .map_err(|e| invalid(format!("{at}.digest: {e}")))?;
    let size = obj
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{at}.size must be a non-negative integer")))?;
    let has_urls = obj
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    let foreign = has_urls && media_type::NON_DISTRIBUTABLE_LAYERS.contains(&media_type);
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        foreign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn oci_image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":10}}]{extra}}}"#
        )
    }

    #[test]
    fn parses_oci_image() {
        let m = parse(Some(OCI_MANIFEST), oci_image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 10);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn artifact_with_subject() {
        let extra = format!(
            r#","artifactType":"application/vnd.example.sbom","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}},"annotations":{{"a":"b"}}"#
        );
        let m = parse(Some(OCI_MANIFEST), oci_image(&extra).as_bytes()).unwrap();
        assert_eq!(m.subject.unwrap().digest.as_str(), D1);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn empty_artifact_type_falls_back_to_config_media_type() {
        let m = parse(
            Some(OCI_MANIFEST),
            oci_image(r#","artifactType":"""#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn content_type_must_match_body() {
        let e = parse(Some(OCI_INDEX), oci_image("").as_bytes()).unwrap_err();
        assert!(matches!(e, ManifestError::Invalid(m) if m.contains("does not match")));
    }

    #[test]
    fn infers_type_without_header() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3}}]}}"#
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, OCI_INDEX);
    }

    #[test]
    fn rejects_schema1() {
        let e = parse(Some(media_type::DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err();
        assert!(matches!(e, ManifestError::Unsupported(_)));
        let e = parse(None, br#"{"schemaVersion":1,"name":"x","tag":"y"}"#).unwrap_err();
        assert!(matches!(e, ManifestError::Unsupported(_)));
    }

    #[test]
    fn rejects_bad_shapes() {
        for body in [
            "not json".to_string(),
            "[]".to_string(),
            r#"{"schemaVersion":3}"#.to_string(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
            oci_image("").replace(D2, "sha256:xyz"),
            oci_image("").replace("\"size\":10", "\"size\":-1"),
            oci_image(r#","annotations":{"a":1}"#),
        ] {
            assert!(
                parse(None, body.as_bytes()).is_err(),
                "{body} should be rejected"
            );
        }
    }
}
