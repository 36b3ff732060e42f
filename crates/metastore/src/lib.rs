//! Metadata store adapters for berth. Today: [`SqliteMetaStore`], the embedded default.
//!
//! Queries use the SQL subset SQLite and PostgreSQL share (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`), so the PostgreSQL adapter can reuse them.

mod accounts;
mod events;
mod gc;
mod lifecycle;
mod migrations;
mod quota;
mod sqlite;
mod writer;

pub use sqlite::SqliteMetaStore;
