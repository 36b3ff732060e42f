//! Schema migrations, embedded in the binary so `berth serve` needs no files beside it.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The SQLite schema history, oldest first.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../migrations/sqlite/0001_core.sql"),
    ),
    (
        2,
        "accounts",
        include_str!("../migrations/sqlite/0002_accounts.sql"),
    ),
    (
        3,
        "access tokens",
        include_str!("../migrations/sqlite/0003_access_tokens.sql"),
    ),
    (
        4,
        "tag events",
        include_str!("../migrations/sqlite/0004_tag_events.sql"),
    ),
    (
        5,
        "immutability rules",
        include_str!("../migrations/sqlite/0005_immutability_rules.sql"),
    ),
    (
        6,
        "events",
        include_str!("../migrations/sqlite/0006_events.sql"),
    ),
    (
        7,
        "lifecycle",
        include_str!("../migrations/sqlite/0007_lifecycle.sql"),
    ),
    (
        8,
        "quotas",
        include_str!("../migrations/sqlite/0008_quotas.sql"),
    ),
    (
        9,
        "upload activity",
        include_str!("../migrations/sqlite/0009_upload_activity.sql"),
    ),
];

/// A migrator for the SQLite schema.
pub fn sqlite() -> Migrator {
    let migrations = SQLITE
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}
