//! `berth fsck`: verify every stored blob against its digest and reconcile the blob store
//! with the metadata store.

use std::collections::HashMap;

use berth_oci::{Digest, DigestHasher};
use futures_util::StreamExt;

use crate::error::Result;
use crate::ports::StorageError;
use crate::service::Registry;

/// What a consistency check found (and, with repair, removed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    /// Blob files whose bytes were hashed.
    pub blobs_verified: usize,
    /// Total bytes hashed.
    pub bytes_verified: u64,
    /// Files whose content does not match their digest (or recorded size).
    pub corrupt: Vec<Digest>,
    /// Blob records with no file behind them.
    pub missing: Vec<Digest>,
    /// Blob files with no record (a crash between rename and commit, or a deleted record).
    pub orphans: Vec<Digest>,
    /// Files in the blob tree that are not named like a blob.
    pub strays: Vec<String>,
    /// Upload files or sessions with no counterpart.
    pub dangling_uploads: usize,
    /// Whether problems were removed.
    pub repaired: bool,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.orphans.is_empty()
            && self.strays.is_empty()
            && self.dangling_uploads == 0
    }
}

/// Checks every blob; with `repair`, removes corrupt, missing, orphaned and stray entries.
pub async fn fsck(registry: &Registry, repair: bool) -> Result<FsckReport> {
    let blobs = registry.blob_store();
    let meta = registry.meta_store();
    let mut report = FsckReport {
        repaired: repair,
        ..FsckReport::default()
    };
    let mut recorded: HashMap<Digest, u64> = meta.all_blobs().await?.into_iter().collect();

    for digest in blobs.list_blobs().await? {
        let Some(size) = recorded.remove(&digest) else {
            report.orphans.push(digest);
            continue;
        };
        let (actual, n) = hash_blob(registry, &digest).await?;
        report.blobs_verified += 1;
        report.bytes_verified += n;
        if actual != digest || n != size {
            report.corrupt.push(digest);
        }
    }
    report.missing = recorded.into_keys().collect();
    report.missing.sort();
    report.strays = blobs.list_strays().await?;

    let sessions: std::collections::HashSet<_> = meta.upload_ids().await?.into_iter().collect();
    let files: std::collections::HashSet<_> = blobs
        .list_uploads()
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let dangling_files: Vec<_> = files.difference(&sessions).cloned().collect();
    let dangling_sessions: Vec<_> = sessions.difference(&files).cloned().collect();
    report.dangling_uploads = dangling_files.len() + dangling_sessions.len();

    if repair {
        for d in report.corrupt.iter().chain(report.missing.iter()) {
            meta.forget_blob(d).await?;
            blobs.delete_blob(d).await?;
        }
        for d in &report.orphans {
            blobs.delete_blob(d).await?;
        }
        for s in &report.strays {
            blobs.delete_stray(s).await?;
        }
        for id in &dangling_files {
            blobs.delete_upload(id).await?;
        }
        for id in &dangling_sessions {
            meta.delete_upload(id).await?;
        }
    }
    Ok(report)
}

async fn hash_blob(registry: &Registry, digest: &Digest) -> Result<(Digest, u64)> {
    let mut stream = registry.blob_store().read_blob(digest, None).await?;
    let mut hasher = DigestHasher::new(digest.algorithm());
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(StorageError::backend)?;
        hasher.update(&chunk);
        n += chunk.len() as u64;
    }
    Ok((hasher.finalize(), n))
}
