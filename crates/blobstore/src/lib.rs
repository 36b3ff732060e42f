//! Blob storage adapters for berth. Today: [`FsBlobStore`], the local filesystem.
//!
//! This crate is the only code that knows storage keys (`blobs/sha256/ab/ab…`,
//! `uploads/<uuid>`).

mod fs;
mod io;

pub use fs::FsBlobStore;
