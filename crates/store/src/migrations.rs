//! The schema migrations embedded in this build, and the schema version a database is at.
//!
//! Migrations live in `crates/store/migrations/NNNN_name.sql` and are append-only: once
//! released, a file never changes (its SHA-256 is recorded when it is applied and compared on
//! every later run). A change to the schema is a new file with the next number.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::Error;

/// One embedded migration.
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

impl Migration {
    /// The SHA-256 of the file, recorded when it is applied.
    pub(crate) fn checksum(&self) -> [u8; 32] {
        Sha256::digest(self.sql.as_bytes()).into()
    }
}

/// Every migration, in order; versions are 1, 2, 3, ... without gaps.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "audit", sql: include_str!("../migrations/0001_audit.sql") },
    Migration {
        version: 2,
        name: "audit_lock",
        sql: include_str!("../migrations/0002_audit_lock.sql"),
    },
    Migration { version: 3, name: "vault", sql: include_str!("../migrations/0003_vault.sql") },
    Migration {
        version: 4,
        name: "integrations",
        sql: include_str!("../migrations/0004_integrations.sql"),
    },
    Migration {
        version: 5,
        name: "datasets",
        sql: include_str!("../migrations/0005_datasets.sql"),
    },
    Migration {
        version: 6,
        name: "sealed_storage",
        sql: include_str!("../migrations/0006_sealed_storage.sql"),
    },
];

/// The newest schema version this build knows.
pub(crate) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The newest schema version this build ships: the version of a database it creates, and the
/// only one a backup's rows can be restored into.
pub fn latest_schema_version() -> u32 {
    latest()
}

/// Where a database's schema stands relative to this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchemaState {
    /// The newest migration applied to the database; 0 when none is.
    pub current: u32,
    /// The newest migration this build ships.
    pub latest: u32,
}

/// Reads the schema state as any role with `SELECT` on `datapunk.schema_migrations`.
pub(crate) async fn state(client: &Client) -> Result<SchemaState, Error> {
    let sql = "SELECT coalesce(max(version), 0) FROM datapunk.schema_migrations";
    let current = match client.query_one(sql, &[]).await {
        Ok(row) => row.get::<_, i32>(0),
        Err(e)
            if [SqlState::UNDEFINED_TABLE, SqlState::INVALID_SCHEMA_NAME]
                .iter()
                .any(|code| e.code() == Some(code)) =>
        {
            0
        }
        Err(e) => return Err(e.into()),
    };
    let current = u32::try_from(current).map_err(|_| Error::Data {
        reason: format!("datapunk.schema_migrations holds version {current}"),
    })?;
    Ok(SchemaState { current, latest: latest() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
    }

    #[test]
    fn every_file_in_the_migrations_directory_is_embedded_under_its_name() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the migrations directory exists")
            .map(|entry| entry.expect("the directory can be listed").file_name())
            .filter_map(|name| name.into_string().ok())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> =
            MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn migrations_run_as_the_owner_and_never_switch_roles() {
        for migration in MIGRATIONS {
            let sql = migration.sql.to_ascii_lowercase();
            for forbidden in ["set role", "reset role", "set session authorization"] {
                assert!(!sql.contains(forbidden), "{} contains {forbidden}", migration.name);
            }
        }
    }
}
