//! The four database roles and what each may do.

use std::fmt;

/// A PostgreSQL role created by [`admin::init`](crate::admin::init).
///
/// Roles are cluster-wide, so every Datapunk database in one cluster shares them; their
/// privileges are granted per database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `datapunk_owner`: owns the schema and its objects and runs migrations. It cannot log
    /// in; an administrator switches to it with `SET ROLE`.
    Owner,
    /// `datapunk_app`: the daemon. Reads and writes data tables, appends to the audit log
    /// through `datapunk.audit_append`, and cannot change the schema.
    App,
    /// `datapunk_reader`: read-only access for the CLI and exports.
    Reader,
    /// `datapunk_backup`: reads every table for `pg_dump`, writes nothing.
    Backup,
}

impl Role {
    /// Every role, owner first.
    pub const ALL: [Self; 4] = [Self::Owner, Self::App, Self::Reader, Self::Backup];

    /// The role's name in PostgreSQL.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Owner => "datapunk_owner",
            Self::App => "datapunk_app",
            Self::Reader => "datapunk_reader",
            Self::Backup => "datapunk_backup",
        }
    }

    /// Whether the role may open connections.
    pub const fn can_login(self) -> bool {
        !matches!(self, Self::Owner)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}
