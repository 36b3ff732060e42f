//! The registry domain: the rules of push, pull, uploads, tags and referrers, written
//! against two ports ([`BlobStore`] for bytes, [`MetaStore`] for metadata).
//!
//! No HTTP, SQL or filesystem types appear here; adapters implement the ports and the
//! `http` crate turns [`RegistryError`] into OCI error responses.

pub mod access;
pub mod accounts;
mod cache;
pub mod error;
pub mod events;
pub mod fsck;
pub mod gc;
pub mod immutability;
pub mod lifecycle;
pub mod ports;
pub mod quota;
pub mod retention;
pub mod service;
pub mod types;
mod uploads;
pub mod webhooks;

pub use error::RegistryError;
pub use ports::{
    AccountStore, BlobStore, ByteStream, EventStore, GcStore, LifecycleStore, MetaStore,
    QuotaStore, StorageError,
};
pub use service::Registry;
pub use types::*;
