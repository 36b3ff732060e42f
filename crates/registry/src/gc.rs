//! Online garbage collection: removes blobs no manifest references (and, when asked,
//! untagged manifests nothing depends on) while pushes and pulls go on.
//!
//! Safety rests on three things:
//! - a candidate is re-checked in the same transaction that removes its rows
//!   ([`crate::GcStore`]), and the store has one writer, so a manifest that committed
//!   first keeps its blobs, and one that commits after finds them gone and is refused with
//!   `MANIFEST_BLOB_UNKNOWN` (the client uploads them again);
//! - the file is deleted while the blob's [`DigestLocks`] stripe is held, and an upload of
//!   the same digest holds it from the rename of its file until its row is written, so a
//!   fresh upload is never deleted under a row that says it exists;
//! - a grace period: anything stored or linked into a repository more recently than
//!   `grace` ago is left alone, so a push in progress keeps its blobs.

use std::time::{Duration, Instant};

use berth_oci::{Digest, RepoName};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::service::{Registry, unix_now};
use crate::types::Actor;

/// What one garbage collection run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Leave alone anything stored, linked or pushed more recently than this.
    pub grace: Duration,
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Also remove untagged manifests that no index lists and that refer to no manifest
    /// still present (never children of an index, never signatures of a live image).
    pub delete_untagged: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
            delete_untagged: false,
        }
    }
}

/// What a garbage collection run removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Whether nothing was removed.
    pub dry_run: bool,
    /// Untagged manifests removed. A dry run lists those removable now; removing them can
    /// free more (children, referrers, blobs) that only a real run then finds.
    pub manifests: Vec<(RepoName, Digest)>,
    /// Blobs removed.
    pub blobs: u64,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Blobs looked at per store query.
const PAGE: u32 = 1000;
/// Blobs claimed per transaction (their digests' lock stripes are held meanwhile).
const CLAIM_BATCH: usize = 128;
/// Rounds of untagged-manifest removal (an index, then its children, then referrers).
const MAX_MANIFEST_ROUNDS: usize = 16;

/// Striped locks by digest: the garbage collector's deletion of a blob file and an
/// upload's commit of the same digest never interleave.
pub(crate) struct DigestLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for DigestLocks {
    fn default() -> Self {
        DigestLocks {
            stripes: (0..256).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl DigestLocks {
    fn stripe(digest: &Digest) -> usize {
        usize::from(u8::from_str_radix(digest.hex().get(..2).unwrap_or("00"), 16).unwrap_or(0))
    }

    /// Holds the stripe of `digest` until the guard is dropped.
    pub(crate) async fn lock(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        self.stripes[Self::stripe(digest)].lock().await
    }

    /// Holds the stripes of all `digests` (each once, in stripe order so two callers never
    /// deadlock) until the guards are dropped.
    pub(crate) async fn lock_all(&self, digests: &[Digest]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = digests.iter().map(Self::stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.stripes[s].lock().await);
        }
        guards
    }
}

impl Registry {
    /// One garbage collection run; runs one at a time (a second call waits for the first).
    pub async fn collect_garbage(&self, opts: &GcOptions, actor: &Actor) -> Result<GcReport> {
        let _one_at_a_time = self.gc_running.lock().await;
        let started = Instant::now();
        let cutoff = unix_now() - i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX);
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if opts.delete_untagged {
            self.remove_untagged(cutoff, opts.dry_run, actor, &mut report)
                .await?;
        }
        let mut after: Option<Digest> = None;
        loop {
            let page = self
                .meta
                .unreferenced_blobs(cutoff, after.as_ref(), PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            if opts.dry_run {
                report.blobs += page.len() as u64;
                report.bytes += page.iter().map(|(_, size)| size).sum::<u64>();
                continue;
            }
            for batch in page.chunks(CLAIM_BATCH) {
                let sizes: std::collections::HashMap<&Digest, u64> =
                    batch.iter().map(|(d, s)| (d, *s)).collect();
                for digest in self.remove_blobs(batch, cutoff).await? {
                    report.blobs += 1;
                    report.bytes += sizes.get(&digest).copied().unwrap_or(0);
                }
            }
        }
        report.elapsed = started.elapsed();
        metrics::counter!("berth_gc_blobs_removed_total").increment(if opts.dry_run {
            0
        } else {
            report.blobs
        });
        Ok(report)
    }

    async fn remove_untagged(
        &self,
        cutoff: i64,
        dry_run: bool,
        actor: &Actor,
        report: &mut GcReport,
    ) -> Result<()> {
        for _ in 0..MAX_MANIFEST_ROUNDS {
            let found = self.meta.untagged_manifests(cutoff).await?;
            if dry_run {
                report.manifests = found;
                return Ok(());
            }
            let mut removed = 0;
            for (repo, digest) in found {
                if self
                    .meta
                    .delete_untagged_manifest(&repo, &digest, cutoff, actor)
                    .await?
                {
                    self.cache.manifest_deleted(&repo, &digest);
                    report.manifests.push((repo, digest));
                    removed += 1;
                }
            }
            if removed == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Claims a batch of blobs' rows in one transaction and deletes their files, holding
    /// their digests' lock stripes throughout; returns the digests removed (those still
    /// candidates).
    async fn remove_blobs(&self, batch: &[(Digest, u64)], cutoff: i64) -> Result<Vec<Digest>> {
        let digests: Vec<Digest> = batch.iter().map(|(d, _)| d.clone()).collect();
        let _stripes = self.digest_locks.lock_all(&digests).await;
        let claimed = self.meta.claim_unreferenced_blobs(&digests, cutoff).await?;
        let mut removed = Vec::with_capacity(claimed.len());
        for (digest, repos) in claimed {
            for repo in &repos {
                self.cache.link_removed(repo, &digest);
            }
            match self.blobs.delete_blob(&digest).await {
                Ok(()) | Err(crate::StorageError::NotFound(_)) => {}
                // The rows are gone: the file is an orphan `berth fsck --repair` removes.
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "garbage collection could not delete a blob file");
                }
            }
            removed.push(digest);
        }
        Ok(removed)
    }
}
