//! Per-session hash state and locks for uploads in progress.
//!
//! The hash of the bytes received so far is kept in memory so each chunk is hashed once,
//! as it streams to disk. The state is a cache: if it is missing (restart) or stale, the
//! registry rebuilds it from the upload file, so correctness never depends on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_oci::DigestHasher;

use crate::types::UploadId;

/// Hash of the first `offset` bytes of an upload.
#[derive(Debug, Clone)]
pub(crate) struct HashState {
    pub offset: u64,
    pub hasher: DigestHasher,
}

/// One lock per live session; holds the cached hash state.
pub(crate) type SessionSlot = Arc<tokio::sync::Mutex<Option<HashState>>>;

/// A held session lock.
pub(crate) type SessionGuard = tokio::sync::OwnedMutexGuard<Option<HashState>>;

/// The registry's table of live upload sessions.
#[derive(Default)]
pub(crate) struct UploadTable {
    slots: Mutex<HashMap<UploadId, SessionSlot>>,
}

impl UploadTable {
    /// The lock slot for `id`, created on first use.
    pub fn slot(&self, id: &UploadId) -> SessionSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id.clone()).or_default().clone()
    }

    /// Drops the slot of a finished or cancelled session.
    pub fn remove(&self, id: &UploadId) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(id);
    }
}
