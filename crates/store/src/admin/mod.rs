//! Setting a database up, run with an administrator's connection (a superuser, such as
//! `postgres` in the managed cluster).
//!
//! - [`init`] creates the four [`Role`]s, the database and the `datapunk` schema, locks down
//!   `public`, and migrates. It is idempotent and re-asserts every attribute and grant it
//!   owns, so running it again repairs drift.
//! - [`migrate`] applies the embedded migrations as `datapunk_owner`.
//! - [`privileges`] reports what each role can effectively do, for `datapunk db roles`.
//!
//! Everything here needs PostgreSQL 14 or newer.

mod privileges;

use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::ident::{quote_ident, validate_dbname};
use crate::migrations::{self, MIGRATIONS};
use crate::{ConnectOptions, Error, Role};

pub use privileges::{
    DatabasePrivileges, FunctionPrivileges, PrivilegeTable, RolePrivileges, SchemaPrivileges,
    TablePrivileges, privileges,
};

/// Serialises concurrent [`init`] runs in one cluster (roles are cluster-wide). The key is
/// `dp-init!` in ASCII.
const INIT_LOCK: i64 = 7_237_334_532_031_607_841;

/// Serialises concurrent [`migrate`] runs on one database. The key is `dpmigrat` in ASCII.
const MIGRATE_LOCK: i64 = 7_237_404_900_658_930_036;

/// The database used for cluster-wide work when the connection string names none other than
/// the target.
const MAINTENANCE_DB: &str = "postgres";

/// What [`init`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InitReport {
    /// The database that was initialised.
    pub database: String,
    /// The roles that did not exist before.
    pub created_roles: Vec<Role>,
    /// Whether the database did not exist before.
    pub created_database: bool,
    /// What the migration step did.
    pub migrations: MigrateReport,
}

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// The migrations applied by this run, as (version, name), in order.
    pub applied: Vec<(u32, String)>,
    /// The schema version after this run.
    pub current: u32,
}

/// Creates or repairs the roles, the database `dbname` and its schema, then runs
/// [`migrate`].
///
/// `admin_conninfo` is a libpq-style connection string for a superuser, without a password
/// (use peer authentication). Its `dbname`, if any, is only used for the cluster-wide steps;
/// when it names `dbname` itself or nothing, `postgres` (or `template1`) is used instead,
/// since `dbname` may not exist yet. Safe to run concurrently and repeatedly; several
/// databases may be initialised in one cluster and share the roles.
///
/// # Errors
///
/// [`Error::Config`] for an invalid `dbname` or connection string; [`Error::Permission`]
/// when the administrator is not a superuser; [`Error::Migration`] as for [`migrate`];
/// connection errors as for [`Store::connect`](crate::Store::connect).
pub async fn init(admin_conninfo: &str, dbname: &str) -> Result<InitReport, Error> {
    validate_dbname(dbname)?;
    let admin = ConnectOptions::new(admin_conninfo);

    let client = connect_maintenance(&admin, dbname).await?;
    require_superuser(&client).await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&INIT_LOCK]).await?;

    let created_roles = assert_roles(&client).await?;
    let created_database = assert_database(&client, dbname).await?;

    let mut target = admin.resolve()?;
    target.config.dbname(dbname);
    let db_client = target.connect_one().await?;
    assert_schemas(&db_client).await?;
    drop(db_client);

    client.execute("SELECT pg_advisory_unlock($1)", &[&INIT_LOCK]).await?;
    drop(client);

    let migrations = migrate(admin_conninfo, dbname).await?;
    if created_database || !created_roles.is_empty() {
        tracing::info!(
            database = dbname,
            created_database,
            created_roles = created_roles.len(),
            "created the database or its roles"
        );
    }
    Ok(InitReport { database: dbname.to_owned(), created_roles, created_database, migrations })
}

/// Applies the embedded migrations that `dbname` lacks, each in its own transaction, as
/// `datapunk_owner`, and records them in `datapunk.schema_migrations`.
///
/// Concurrent runs on one database wait for each other.
///
/// # Errors
///
/// [`Error::Migration`] when a migration fails, when an applied migration's checksum differs
/// from the embedded file (migrations are append-only), or when the database is at a newer
/// version than this build; [`Error::NotInitialized`] when [`init`] never ran.
pub async fn migrate(admin_conninfo: &str, dbname: &str) -> Result<MigrateReport, Error> {
    validate_dbname(dbname)?;
    let mut target = ConnectOptions::new(admin_conninfo).resolve()?;
    target.config.dbname(dbname);
    let mut client = target.connect_one().await?;

    client.batch_execute("SET ROLE datapunk_owner").await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS datapunk.schema_migrations (
                 version    integer     PRIMARY KEY CHECK (version > 0),
                 name       text        NOT NULL,
                 checksum   bytea       NOT NULL CHECK (octet_length(checksum) = 32),
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             REVOKE ALL ON datapunk.schema_migrations
                 FROM PUBLIC, datapunk_app, datapunk_reader, datapunk_backup;
             GRANT SELECT ON datapunk.schema_migrations
                 TO datapunk_app, datapunk_reader, datapunk_backup;",
        )
        .await?;

    let applied = client
        .query("SELECT version, name, checksum FROM datapunk.schema_migrations ORDER BY 1", &[])
        .await?;
    let mut current = 0;
    for row in &applied {
        let version = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
        let name: String = row.get(1);
        let checksum: Vec<u8> = row.get(2);
        check_applied(version, &name, &checksum)?;
        current = current.max(version);
    }

    let mut report = MigrateReport { applied: Vec::new(), current };
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| Error::Migration {
            version: migration.version,
            reason: format!(
                "`{}` failed; the database is left at version {}",
                migration.name, report.current
            ),
            source: Some(source),
        };
        let transaction = client.transaction().await?;
        transaction.batch_execute(migration.sql).await.map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO datapunk.schema_migrations (version, name, checksum)
                 VALUES ($1, $2, $3)",
                &[&version_i32(migration.version), &migration.name, &&migration.checksum()[..]],
            )
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;

        tracing::info!(version = migration.version, name = migration.name, "applied migration");
        report.applied.push((migration.version, migration.name.to_owned()));
        report.current = migration.version;
    }

    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await?;
    Ok(report)
}

/// Connects for the cluster-wide steps: to the connection string's database unless that is
/// the target, else to `postgres`, else (on servers without it) to `template1`.
async fn connect_maintenance(admin: &ConnectOptions, dbname: &str) -> Result<Client, Error> {
    let mut maintenance = admin.resolve()?;
    if maintenance.config.get_dbname().is_some_and(|name| name != dbname) {
        return maintenance.connect_one().await;
    }
    maintenance.config.dbname(MAINTENANCE_DB);
    match maintenance.connect_one().await {
        Err(Error::NotInitialized(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            maintenance.config.dbname("template1");
            maintenance.connect_one().await
        }
        result => result,
    }
}

/// Checks one row of `schema_migrations` against the embedded migrations.
fn check_applied(version: u32, name: &str, checksum: &[u8]) -> Result<(), Error> {
    let Some(embedded) = MIGRATIONS.iter().find(|m| m.version == version) else {
        let reason = format!(
            "`{name}` is applied but unknown to this build, which knows up to version {}; \
             upgrade datapunk",
            migrations::latest()
        );
        return Err(Error::Migration { version, reason, source: None });
    };
    if checksum != embedded.checksum() {
        let reason = format!(
            "`{name}` differs from the migration applied to the database; migrations are \
             append-only, so restore the released file and add a new migration instead"
        );
        return Err(Error::Migration { version, reason, source: None });
    }
    Ok(())
}

fn version_i32(version: u32) -> i32 {
    i32::try_from(version).expect("migration numbers have four digits")
}

async fn require_superuser(client: &Client) -> Result<(), Error> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    if row.get::<_, bool>(1) {
        return Ok(());
    }
    let user: String = row.get(0);
    let reason = format!(
        "`{user}` is not a superuser; run the initialisation as one (for example with \
         `user=postgres` in the administrator connection string)"
    );
    Err(Error::Permission { reason, source: None })
}

/// Creates missing roles and re-asserts the attributes and memberships of all four.
async fn assert_roles(client: &Client) -> Result<Vec<Role>, Error> {
    let mut created = Vec::new();
    for role in Role::ALL {
        let name = quote_ident(role.name());
        let exists =
            client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role.name()]).await?;
        if exists.is_none() {
            client.batch_execute(&format!("CREATE ROLE {name} NOLOGIN")).await?;
            created.push(role);
        }
        let login = if role.can_login() { "LOGIN" } else { "NOLOGIN" };
        client
            .batch_execute(&format!(
                "ALTER ROLE {name} {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS INHERIT"
            ))
            .await?;
    }

    // No Datapunk role may belong to another role (pg_monitor, pg_read_all_data, ...):
    // membership would widen what it can see. From PostgreSQL 16 on, a membership granted by
    // someone else is only revoked when that grantor is named.
    client
        .batch_execute(
            "DO $$
             DECLARE
                 m record;
             BEGIN
                 FOR m IN
                     SELECT g.rolname AS grp, r.rolname AS member, gr.rolname AS grantor
                     FROM pg_auth_members a
                     JOIN pg_roles g ON g.oid = a.roleid
                     JOIN pg_roles r ON r.oid = a.member
                     JOIN pg_roles gr ON gr.oid = a.grantor
                     WHERE r.rolname IN ('datapunk_owner', 'datapunk_app', 'datapunk_reader',
                                         'datapunk_backup')
                 LOOP
                     IF current_setting('server_version_num')::int >= 160000 THEN
                         EXECUTE format('REVOKE %I FROM %I GRANTED BY %I',
                                        m.grp, m.member, m.grantor);
                     ELSE
                         EXECUTE format('REVOKE %I FROM %I', m.grp, m.member);
                     END IF;
                 END LOOP;
             END
             $$",
        )
        .await?;
    Ok(created)
}

/// Creates the database if missing and re-asserts its owner, privileges and search path.
async fn assert_database(client: &Client, dbname: &str) -> Result<bool, Error> {
    let db = quote_ident(dbname);
    let existing = client
        .query_opt(
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = $1",
            &[&dbname],
        )
        .await?;
    let created = match existing {
        Some(row) => {
            let encoding: String = row.get(0);
            if encoding != "UTF8" {
                let reason = format!(
                    "database {dbname:?} uses encoding {encoding}, but the audit log's hashes \
                     need UTF8; choose another `database.name`"
                );
                return Err(Error::config("database.name", reason));
            }
            false
        }
        None => {
            // template0, so that nothing added to template1 on this server comes along.
            client
                .batch_execute(&format!(
                    "CREATE DATABASE {db} OWNER datapunk_owner ENCODING 'UTF8' TEMPLATE template0"
                ))
                .await?;
            true
        }
    };
    client
        .batch_execute(&format!(
            "ALTER DATABASE {db} OWNER TO datapunk_owner;
             REVOKE ALL ON DATABASE {db}
                 FROM PUBLIC, datapunk_app, datapunk_reader, datapunk_backup;
             GRANT CONNECT ON DATABASE {db} TO datapunk_app, datapunk_reader, datapunk_backup;
             ALTER DATABASE {db} SET search_path = datapunk;"
        ))
        .await?;
    Ok(created)
}

/// Inside the database: `public` closed to everybody, `datapunk` owned by the owner and
/// usable by the others, and pgcrypto installed in `datapunk`.
async fn assert_schemas(client: &Client) -> Result<(), Error> {
    client
        .batch_execute(
            "BEGIN;
             DO $$
             BEGIN
                 IF EXISTS (SELECT FROM pg_namespace WHERE nspname = 'public') THEN
                     -- Owned by pg_database_owner, public would be open to datapunk_owner.
                     ALTER SCHEMA public OWNER TO CURRENT_USER;
                     REVOKE ALL ON SCHEMA public
                         FROM PUBLIC, datapunk_owner, datapunk_app, datapunk_reader,
                              datapunk_backup;
                 END IF;
             END
             $$;
             -- Large objects are storage outside the schema that any role could otherwise
             -- create and fill; none of the roles has a use for them.
             REVOKE EXECUTE ON FUNCTION lo_creat(integer), lo_create(oid),
                 lo_from_bytea(oid, bytea), lo_put(oid, bigint, bytea), lo_unlink(oid)
                 FROM PUBLIC;
             CREATE SCHEMA IF NOT EXISTS datapunk AUTHORIZATION datapunk_owner;
             ALTER SCHEMA datapunk OWNER TO datapunk_owner;
             REVOKE ALL ON SCHEMA datapunk
                 FROM PUBLIC, datapunk_app, datapunk_reader, datapunk_backup;
             GRANT USAGE ON SCHEMA datapunk TO datapunk_app, datapunk_reader, datapunk_backup;
             DO $$
             BEGIN
                 IF EXISTS (SELECT FROM pg_extension e JOIN pg_namespace n
                            ON n.oid = e.extnamespace
                            WHERE e.extname = 'pgcrypto' AND n.nspname <> 'datapunk') THEN
                     ALTER EXTENSION pgcrypto SET SCHEMA datapunk;
                 END IF;
             END
             $$;
             CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA datapunk;
             COMMIT;",
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_migration_that_changed_is_refused() {
        let first = &MIGRATIONS[0];
        assert!(check_applied(first.version, first.name, &first.checksum()).is_ok());
        match check_applied(first.version, first.name, &[0; 32]) {
            Err(Error::Migration { version, reason, .. }) => {
                assert_eq!(version, first.version);
                assert!(reason.contains("append-only"), "{reason}");
            }
            other => panic!("expected a migration error, got {other:?}"),
        }
    }

    #[test]
    fn a_database_newer_than_this_build_is_refused() {
        let version = migrations::latest() + 1;
        match check_applied(version, "future", &[0; 32]) {
            Err(Error::Migration { reason, .. }) => assert!(reason.contains("upgrade"), "{reason}"),
            other => panic!("expected a migration error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_invalid_database_name_is_refused_before_connecting() {
        let error = init("host=/nonexistent user=postgres", "Robert'); DROP TABLE x;--")
            .await
            .expect_err("the name is invalid");
        assert!(matches!(error, Error::Config { ref key, .. } if key == "database.name"));
    }
}
