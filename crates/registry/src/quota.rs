//! Storage quotas per namespace: a byte limit over the unique blobs the namespace's
//! manifests reference (a layer shared by several images or repositories of the namespace
//! counts once). The metadata store reads the limit and checks it inside the manifest
//! push's transaction ([`crate::ManifestRefusal::QuotaExceeded`]), so two pushes racing
//! for the last bytes cannot both pass, and a refused push leaves nothing behind.

use std::fmt;

use crate::error::{RegistryError, Result};
use crate::service::Registry;

/// Why a push does not fit, as the metadata store measured it in the push's transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The namespace.
    pub namespace: String,
    /// Bytes referenced before the push.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// Bytes the push would add (its blobs the namespace does not reference yet).
    pub needs: u64,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quota exceeded for namespace {}: {} of {} used, this push needs {}",
            self.namespace,
            format_size(self.used),
            format_size(self.limit),
            format_size(self.needs)
        )
    }
}

/// Bytes in the largest binary unit that keeps the number at least 1, one decimal
/// (`9.8 GiB`, `412.0 MiB`, `512 B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a size: a number with an optional unit, binary (`KiB`, `MiB`, `GiB`, `TiB`) or
/// decimal (`KB`, `MB`, `GB`, `TB`), or plain bytes (`B` or none). `10GiB`, `1.5 TB`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() {
        return Err(format!("{text:?} is not a size, e.g. 10GiB or 500MB"));
    }
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000u64.pow(2),
        "gb" | "g" => 1000u64.pow(3),
        "tb" | "t" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size, e.g. 10GiB or 500MB"))?;
    let bytes = value * factor as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?}: a quota is at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// Bytes referenced by one repository (for `berth usage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoUsage {
    /// The repository.
    pub repository: String,
    /// Unique blob bytes its manifests reference.
    pub bytes: u64,
}

/// A namespace's usage and limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// The namespace.
    pub namespace: String,
    /// Unique blob bytes its manifests reference.
    pub bytes: u64,
    /// Its quota, if any.
    pub limit: Option<u64>,
}

impl Registry {
    /// Sets a namespace's quota (in bytes).
    pub async fn set_quota(&self, namespace: &str, limit: u64) -> Result<()> {
        check_namespace(namespace)?;
        Ok(self.meta.set_quota(namespace, limit).await?)
    }

    /// Removes a namespace's quota.
    pub async fn remove_quota(&self, namespace: &str) -> Result<()> {
        if self.meta.remove_quota(namespace).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "namespace {namespace} has no quota"
            )))
        }
    }

    /// A namespace's usage and quota.
    pub async fn namespace_usage(&self, namespace: &str) -> Result<NamespaceUsage> {
        check_namespace(namespace)?;
        Ok(NamespaceUsage {
            namespace: namespace.to_owned(),
            bytes: self.meta.namespace_bytes(namespace).await?,
            limit: self.meta.quota(namespace).await?,
        })
    }

    /// Unique blob bytes per repository of a namespace.
    pub async fn repository_usage(&self, namespace: &str) -> Result<Vec<RepoUsage>> {
        check_namespace(namespace)?;
        Ok(self.meta.repository_bytes(namespace).await?)
    }

    /// Usage of every namespace that has repositories or a quota.
    pub async fn all_usage(&self) -> Result<Vec<NamespaceUsage>> {
        Ok(self.meta.all_namespace_usage().await?)
    }
}

fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty()
        || namespace.contains('/')
        || berth_oci::RepoName::parse(namespace).is_err()
    {
        return Err(RegistryError::InvalidArgument(format!(
            "{namespace:?} is not a namespace (one path segment of a repository name, e.g. payments)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let parsed: Vec<u64> = ["512", "10GiB", "1.5 KiB", "2MB", "1 tb", "3G"]
            .iter()
            .map(|s| parse_size(s).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                512,
                10 << 30,
                1536,
                2_000_000,
                1_000_000_000_000,
                3_000_000_000
            ]
        );
        assert!(
            parse_size("10 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("0").unwrap_err().contains("at least 1 byte"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn the_refusal_reads_like_a_person_wrote_it() {
        let e = QuotaExceeded {
            namespace: "payments".into(),
            used: 9_800 * (1 << 20),
            limit: 10 << 30,
            needs: 412 << 20,
        };
        assert_eq!(
            e.to_string(),
            "quota exceeded for namespace payments: 9.6 GiB of 10.0 GiB used, this push needs 412.0 MiB"
        );
    }
}
