//! Read caches for the hot pull path: tag → digest, manifest bytes by digest, and
//! repository blob links, so a pull by tag costs no database round trip once warm.
//!
//! Exact within one process: only positive answers are cached, every write that can change
//! an answer invalidates it after its commit, and a generation counter stops a read that
//! raced such a write from caching the answer it read before the write.

use std::sync::Mutex;

use berth_oci::{Digest, RepoName, Tag};
use moka::sync::Cache;

use crate::types::StoredManifest;

/// Bytes of manifests kept in memory at most.
const MANIFEST_BYTES: u64 = 32 * 1024 * 1024;
/// Tag resolutions kept at most.
const TAG_ENTRIES: u64 = 100_000;
/// Blob links kept at most.
const LINK_ENTRIES: u64 = 100_000;

/// Counts a lookup as a hit or a miss (`berth_cache_lookups_total`).
fn counted<T>(cache: &'static str, found: Option<T>) -> Option<T> {
    let result = if found.is_some() { "hit" } else { "miss" };
    metrics::counter!("berth_cache_lookups_total", "cache" => cache, "result" => result)
        .increment(1);
    found
}

/// The caches and their write generation.
pub(crate) struct HotCache {
    tags: Cache<(RepoName, Tag), Digest>,
    manifests: Cache<(RepoName, Digest), StoredManifest>,
    links: Cache<(RepoName, Digest), u64>,
    /// Bumped by every invalidation; held while filling so fill and invalidate never interleave.
    generation: Mutex<u64>,
}

/// A generation observed before a database read, proving no write intervened.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl HotCache {
    pub fn new() -> Self {
        HotCache {
            tags: Cache::new(TAG_ENTRIES),
            manifests: Cache::builder()
                .max_capacity(MANIFEST_BYTES)
                .weigher(|_, m: &StoredManifest| m.bytes.len().try_into().unwrap_or(u32::MAX))
                .build(),
            links: Cache::new(LINK_ENTRIES),
            generation: Mutex::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take before reading the database for a value you may want to cache.
    pub fn ticket(&self) -> Ticket {
        Ticket(*self.lock())
    }

    fn fill(&self, ticket: Ticket, insert: impl FnOnce()) {
        let g = self.lock();
        if *g == ticket.0 {
            insert();
        }
    }

    fn invalidate(&self, remove: impl FnOnce()) {
        let mut g = self.lock();
        *g += 1;
        remove();
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        counted("tag", self.tags.get(&(repo.clone(), tag.clone())))
    }

    pub fn fill_tag(&self, ticket: Ticket, repo: &RepoName, tag: &Tag, digest: &Digest) {
        self.fill(ticket, || {
            self.tags
                .insert((repo.clone(), tag.clone()), digest.clone())
        });
    }

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Option<StoredManifest> {
        counted(
            "manifest",
            self.manifests.get(&(repo.clone(), digest.clone())),
        )
    }

    pub fn fill_manifest(&self, ticket: Ticket, repo: &RepoName, m: &StoredManifest) {
        self.fill(ticket, || {
            self.manifests
                .insert((repo.clone(), m.digest.clone()), m.clone())
        });
    }

    pub fn link(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        counted("link", self.links.get(&(repo.clone(), digest.clone())))
    }

    pub fn fill_link(&self, ticket: Ticket, repo: &RepoName, digest: &Digest, size: u64) {
        self.fill(ticket, || {
            self.links.insert((repo.clone(), digest.clone()), size)
        });
    }

    /// After tags of `repo` were moved or deleted.
    pub fn tags_changed(&self, repo: &RepoName, tags: &[Tag]) {
        self.invalidate(|| {
            for t in tags {
                self.tags.invalidate(&(repo.clone(), t.clone()));
            }
        });
    }

    /// After a manifest (and every tag pointing at it) was deleted.
    pub fn manifest_deleted(&self, repo: &RepoName, digest: &Digest) {
        self.invalidate(|| {
            self.manifests.invalidate(&(repo.clone(), digest.clone()));
            // Which tags pointed at it is not known here; deletions are rare.
            self.tags.invalidate_all();
        });
    }

    /// After a blob was unlinked from a repository.
    pub fn link_removed(&self, repo: &RepoName, digest: &Digest) {
        self.invalidate(|| self.links.invalidate(&(repo.clone(), digest.clone())));
    }
}
