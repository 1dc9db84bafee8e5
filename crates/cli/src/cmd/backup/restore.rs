//! `datapunk backup restore`: a backup back into an empty database, checked against its
//! manifest.
//!
//! The backup is decrypted and read first; only a backup that decrypts intact and holds the
//! manifest's tables may replace anything, and never a database other sessions use. The
//! target is then set up as `datapunk db init` would (roles, database, schema at this build's
//! version), and the dump's rows are loaded into it in one transaction. The vault table's rows
//! (the `encrypted-table` store) wait in a schema of their own meanwhile and come back. A backup therefore
//! restores with the Datapunk version whose schema it has; the manifest says which. The rows
//! of the vault table are never in a dump, and the data keys never: the restore names the
//! integrations whose keys the sealed fields need and says whether the secret store has them.
//!
//! The configured database is never replaced under a running daemon, which would go on writing
//! to it: restore refuses while a daemon answers on the control socket or, in managed mode,
//! while another process holds the cluster's lock, and records the refusal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use datapunk_config::{Config, DatabaseMode};
use datapunk_daemon::control::client::{self, ClientError};
use datapunk_daemon::control::proto::{Request, Response};
use datapunk_daemon::database::{ClusterSession, Database, managed_cluster};
use datapunk_store::audit::Outcome;
use datapunk_store::{ConnectOptions, admin};
use serde_json::json;

use super::Trail;
use super::create::{failure, quote};
use super::files::{self, Manifest};
use crate::cmd::db::with_param;

/// Where a backup is restored.
#[derive(Debug)]
pub(crate) enum Target {
    /// The configured database: on the managed cluster, or with an administrator's
    /// connection string to the external server.
    Configured {
        /// `--admin-url`, for external mode.
        admin_url: Option<String>,
    },
    /// Another database, named by an administrator's connection string (`--into`).
    Other(String),
}

/// What a restore found.
struct Restored {
    database: String,
    /// Per table: the manifest's count and the restored one.
    counts: Vec<(String, i64, i64)>,
}

pub(super) async fn run(
    config: &Config,
    file: &Path,
    target: Target,
    yes: bool,
) -> anyhow::Result<()> {
    // `--into` naming the configured database is a restore of it, with the same guards.
    let configured = match &target {
        Target::Configured { .. } => true,
        Target::Other(conninfo) => names_configured(config, conninfo),
    };
    if configured && let Some(reason) = running_daemon(config).await {
        return refuse(config, file, &reason).await;
    }
    let manifest = files::check_against_manifest(file)?;
    let latest = datapunk_store::latest_schema_version();
    if manifest.database.schema_version != latest {
        anyhow::bail!(
            "the backup has schema version {}, this Datapunk has {latest}: restore it with the \
             Datapunk release it was made with (its manifest names it: {}), then upgrade",
            manifest.database.schema_version,
            manifest.tools.datapunk
        );
    }

    let mut session = None;
    let (admin_conninfo, dbname) = match (target, &config.database.mode) {
        (Target::Other(conninfo), _) => {
            let parsed: tokio_postgres::Config =
                conninfo.parse().context("--into is not a libpq connection string")?;
            let dbname = parsed
                .get_dbname()
                .context("--into must name the database to restore into (dbname=...)")?
                .to_owned();
            (conninfo, dbname)
        }
        (Target::Configured { admin_url: Some(url) }, DatabaseMode::External { .. }) => {
            (url, config.database.name.clone())
        }
        (Target::Configured { admin_url: None }, DatabaseMode::External { .. }) => {
            anyhow::bail!(
                "restoring the configured database on an external server needs --admin-url \
                 CONNINFO (a superuser's connection string, without a password), or --into"
            )
        }
        (Target::Configured { admin_url: Some(_) }, DatabaseMode::Managed { .. }) => {
            anyhow::bail!(
                "--admin-url is for external mode; managed mode administers its own cluster"
            )
        }
        (Target::Configured { admin_url: None }, DatabaseMode::Managed { .. }) => {
            let cluster = managed_cluster(config)?.context("managed mode without a cluster")?;
            let opened = ClusterSession::for_command(config, cluster, true).await?;
            if !opened.manages() {
                // A daemon holds the lock from before it answers on the control socket until
                // it has stopped the cluster; a command holds it while it works.
                opened.close().await;
                let lock = ClusterSession::lock_path(config);
                let reason = format!(
                    "the managed cluster is in use by datapunkd or another datapunk command \
                     (lock {})",
                    lock.display()
                );
                return refuse(config, file, &reason).await;
            }
            let conninfo = opened.cluster().admin_conninfo(&config.database.name);
            session = Some(opened);
            (conninfo, config.database.name.clone())
        }
    };

    let result = restore(config, file, &manifest, &admin_conninfo, &dbname, yes).await;
    if let Some(session) = session {
        session.close().await;
    }

    if configured && result.is_ok() {
        set_anchor_aside(config)?;
    }
    let (trail, _) = Trail::open(config).await?;
    let details = match &result {
        Ok(restored) => json!({
            "file": file.display().to_string(),
            "database": restored.database,
            "tables": restored.counts.len(),
            "rows_match": restored.counts.iter().all(|(_, want, got)| want == got),
        }),
        Err(error) => json!({
            "file": file.display().to_string(),
            "database": dbname,
            "error": format!("{error:#}"),
        }),
    };
    let matched = result.as_ref().is_ok_and(|r| r.counts.iter().all(|(_, w, g)| w == g));
    let outcome = if matched { Outcome::Success } else { Outcome::Failure };
    trail.record("backup.restore", outcome, details).await;
    let restored = match result {
        Ok(restored) => restored,
        Err(error) => {
            // Closed first: a cluster the trail started for its row is stopped again.
            trail.close().await;
            return Err(error.context("restore failed"));
        }
    };
    let database = trail.database.as_ref();

    let keys = report_keys(config, database, &admin_conninfo, &dbname).await;
    // Printed once the trail is closed (and a cluster it started stopped): a reader that goes
    // away (`| head`) ends the command at the first line it misses.
    trail.close().await;
    println!("restored {} into database {}", file.display(), restored.database);
    println!("{:<40}  {:>10}  {:>10}", "TABLE", "MANIFEST", "RESTORED");
    for (table, want, got) in &restored.counts {
        let mark = if want == got { "" } else { "  differs" };
        println!("{table:<40}  {want:>10}  {got:>10}{mark}");
    }
    for line in keys {
        println!("{line}");
    }
    if !matched {
        anyhow::bail!("the restored row counts differ from the manifest's");
    }
    Ok(())
}

/// Whether `conninfo` names the configured database: its name, on the configured server (the
/// managed cluster's socket, or the external connection string's first host and port).
fn names_configured(config: &Config, conninfo: &str) -> bool {
    let Ok(into) = conninfo.parse::<tokio_postgres::Config>() else { return false };
    let configured = match &config.database.mode {
        DatabaseMode::Managed { .. } => match managed_cluster(config) {
            Ok(Some(cluster)) => cluster.admin_conninfo(&config.database.name),
            _ => return false,
        },
        DatabaseMode::External { conninfo, .. } => conninfo.clone(),
    };
    let Ok(configured) = configured.parse::<tokio_postgres::Config>() else { return false };
    let server = |c: &tokio_postgres::Config| {
        let host = c.get_hosts().first().cloned();
        let port = c.get_ports().first().copied().unwrap_or(5432);
        host.map(|host| (format!("{host:?}"), port))
    };
    into.get_dbname() == Some(config.database.name.as_str())
        && server(&into).is_some()
        && server(&into) == server(&configured)
}

/// Why the configured database must not be replaced now: a daemon answers on this
/// configuration's control socket, and would go on writing to the database while it is
/// replaced. `None` when nothing listens there.
async fn running_daemon(config: &Config) -> Option<String> {
    let socket = config.daemon.control_socket();
    match client::request(&socket, &Request::Status).await {
        Err(ClientError::NotRunning { .. }) => None,
        Ok(Response::Status(status)) => Some(format!(
            "datapunkd (pid {}) is running for this configuration (it answers on {})",
            status.pid,
            socket.display()
        )),
        Ok(_) => Some(format!("a datapunkd answers on {}", socket.display())),
        Err(error) => Some(format!(
            "something listens on {}, so a datapunkd may be running ({error})",
            socket.display()
        )),
    }
}

/// Audits a restore refused before it touched anything, and returns the error saying why.
async fn refuse(config: &Config, file: &Path, reason: &str) -> anyhow::Result<()> {
    let (trail, _) = Trail::open(config).await?;
    let details = json!({
        "file": file.display().to_string(),
        "database": config.database.name,
        "error": reason,
    });
    trail.record("backup.restore", Outcome::Denied, details).await;
    trail.close().await;
    anyhow::bail!(
        "restore refused: {reason}; stop datapunkd first (systemctl --user stop datapunkd) and \
         let other datapunk commands finish; nothing was changed"
    )
}

async fn restore(
    config: &Config,
    file: &Path,
    manifest: &Manifest,
    admin_conninfo: &str,
    dbname: &str,
    yes: bool,
) -> anyhow::Result<Restored> {
    let target = with_param(admin_conninfo, "dbname", dbname);

    // Everything that can be checked is checked before the target is touched: the backup
    // decrypts intact, pg_restore reads it, and its tables are the manifest's. The plaintext
    // dump lives only in a private directory for the time of the restore.
    datapunk_daemon::process::private_dir(&config.daemon.state_dir)
        .with_context(|| format!("cannot prepare {}", config.daemon.state_dir.display()))?;
    remove_stale_scratch(&config.daemon.state_dir);
    let scratch = tempfile::Builder::new()
        .prefix(SCRATCH_PREFIX)
        .tempdir_in(&config.daemon.state_dir)
        .context("cannot create a private directory for the decrypted dump")?;
    // Held until the restore ends: a later restore removes the directory only when it is not.
    let lock = std::fs::File::create(scratch.path().join("lock"))
        .and_then(|lock| lock.lock().map(|()| lock))
        .context("cannot lock the restore's private directory")?;
    let dump = scratch.path().join("dump");
    let passphrase = config.backup.passphrase_file.as_deref();
    if let Some(passphrase) = passphrase {
        super::private_passphrase(passphrase)?;
    }
    decrypt(&super::gpg_options(config), passphrase, file, &dump)?;
    let list = scratch.path().join("list");
    let tables = write_list(config, &dump, &list)?;
    let expected: std::collections::BTreeSet<&str> =
        manifest.tables.keys().map(String::as_str).collect();
    let found: std::collections::BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    if expected != found {
        anyhow::bail!(
            "the dump's tables differ from the manifest's; nothing was changed (run `datapunk \
             backup verify` on it)"
        );
    }
    read_whole(config, &dump)?;

    if holds_tables(admin_conninfo, dbname).await? {
        eprintln!(
            "database {dbname} is not empty: restoring replaces everything in its datapunk \
             schema with the backup of {}, except the vault table (the encrypted-table \
             store's keys and tokens), which is kept",
            manifest.created_at
        );
        // A daemon (this configuration's or another's) keeps sessions open on its database:
        // replacing the tables under it would lose what it writes next.
        let others = other_sessions(admin_conninfo, dbname).await?;
        if others > 0 {
            anyhow::bail!(
                "database {dbname} has {others} other session(s) open, such as a running \
                 datapunkd's; stop whatever uses it first; nothing was changed"
            );
        }
        crate::cmd::keys::confirm(yes, "replace", &format!("replace database {dbname}"))?;
        let client = ConnectOptions::new(target.clone()).connect_once().await?;
        // The vault table is never in a dump: its rows wait in a schema of their own (kept
        // there if a restore before this one was cut short) and come back after the load.
        client
            .batch_execute(&format!(
                "BEGIN;
                 CREATE SCHEMA IF NOT EXISTS {KEEP_SCHEMA};
                 REVOKE ALL ON SCHEMA {KEEP_SCHEMA} FROM PUBLIC;
                 DO $$ BEGIN
                   IF to_regclass('{KEEP_SCHEMA}.vault_records') IS NULL
                      AND to_regclass('datapunk.vault_records') IS NOT NULL THEN
                     ALTER TABLE datapunk.vault_records SET SCHEMA {KEEP_SCHEMA};
                   END IF;
                 END $$;
                 DROP SCHEMA datapunk CASCADE;
                 COMMIT;"
            ))
            .await
            .with_context(|| format!("cannot empty database {dbname}"))?;
    }

    admin::init(admin_conninfo, dbname)
        .await
        .with_context(|| format!("cannot set up database {dbname}"))?;
    let mut load = Command::new(super::pg_program(config, "pg_restore"));
    load.env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| name == "PATH" || name == "HOME"))
        .env("LC_MESSAGES", "C")
        .args(["--data-only", "--single-transaction", "--disable-triggers", "--exit-on-error"])
        .arg("--no-password")
        .arg("--use-list")
        .arg(&list)
        .arg(format!("--dbname={target}"))
        .arg(&dump)
        .stdin(Stdio::null());
    let output = load.output().context("cannot run pg_restore (install the PostgreSQL client)")?;
    let loaded = if output.status.success() {
        Ok(())
    } else {
        Err(failure("pg_restore", output.status, &String::from_utf8_lossy(&output.stderr)))
    };
    drop(scratch);
    drop(lock);

    let client = ConnectOptions::new(target).connect_once().await?;
    // The vault table's rows come back whether the load went through or not: they are the
    // only copy of the encrypted-table store's keys.
    let kept = client
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF to_regclass('{KEEP_SCHEMA}.vault_records') IS NOT NULL THEN
                 INSERT INTO datapunk.vault_records (kind, integration, sealed, updated_at)
                   SELECT kind, integration, sealed, updated_at
                     FROM {KEEP_SCHEMA}.vault_records
                   ON CONFLICT DO NOTHING;
               END IF;
             END $$;
             DROP SCHEMA IF EXISTS {KEEP_SCHEMA} CASCADE;"
        ))
        .await
        .with_context(|| {
            format!(
                "cannot bring the vault table's rows back; they wait in {dbname}'s schema \
                 {KEEP_SCHEMA}, and the next restore brings them back"
            )
        });
    loaded.with_context(|| {
        format!(
            "the rows could not be loaded: pg_restore's transaction was rolled back, and database \
             {dbname} now holds an empty schema (and the vault table's rows); restore a backup \
             that loads"
        )
    })?;
    kept?;
    let mut counts = Vec::new();
    for (table, want) in &manifest.tables {
        let (schema, name) = table.split_once('.').unwrap_or(("datapunk", table));
        let sql = format!("SELECT count(*) FROM {}.{}", quote(schema), quote(name));
        let got: i64 = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot count the rows of {table}"))?
            .get(0);
        counts.push((table.clone(), *want, got));
    }
    Ok(Restored { database: dbname.to_owned(), counts })
}

/// How many sessions other than this command's are connected to `dbname`.
async fn other_sessions(admin_conninfo: &str, dbname: &str) -> anyhow::Result<i64> {
    let mut maintenance = ConnectOptions::new(admin_conninfo);
    maintenance.dbname = Some("postgres".to_owned());
    let client = maintenance.connect_once().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether `dbname` exists and its `datapunk` schema holds a table.
async fn holds_tables(admin_conninfo: &str, dbname: &str) -> anyhow::Result<bool> {
    let mut maintenance = ConnectOptions::new(admin_conninfo);
    maintenance.dbname = Some("postgres".to_owned());
    let client = maintenance.connect_once().await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    let mut options = ConnectOptions::new(admin_conninfo);
    options.dbname = Some(dbname.to_owned());
    let client = options.connect_once().await?;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'datapunk' AND c.relkind IN ('r', 'p')",
            &[],
        )
        .await?
        .get(0);
    Ok(tables > 0)
}

/// Decrypts `file` into `out` (created 0600 under the process's umask), insisting on an
/// intact integrity check.
fn decrypt(
    gpg: &datapunk_vault::backup::GpgOptions,
    passphrase: Option<&Path>,
    file: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let output = gpg
        .command()
        .args(["--batch", "--no-tty", "--quiet", "--status-fd", "2"])
        .args(super::passphrase_args(passphrase, "default"))
        .arg("--output")
        .arg(out)
        .args(["--decrypt", "--"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("cannot run gpg")?;
    let messages = String::from_utf8_lossy(&output.stderr);
    let status: Vec<&str> =
        messages.lines().filter_map(|line| line.strip_prefix("[GNUPG:] ")).collect();
    let has = |keyword: &str| status.iter().any(|line| line.split(' ').next() == Some(keyword));
    if !output.status.success() || !has("DECRYPTION_OKAY") || has("BADMDC") {
        let hint = if has("NO_SECKEY") {
            "; no secret key for it is in this keyring (set GNUPGHOME or backup.gnupg_home)"
        } else {
            ""
        };
        return Err(failure("gpg", output.status, &messages)).with_context(|| {
            format!("cannot decrypt {}{hint}; nothing was changed", file.display())
        });
    }
    Ok(())
}

/// Where the vault table's rows wait while the `datapunk` schema is replaced.
const KEEP_SCHEMA: &str = "datapunk_restore_keep";

/// The name of a restore's private directory in the state directory.
const SCRATCH_PREFIX: &str = ".datapunk-restore-";

/// Removes the private directories of restores that were killed (the decrypted dump in clear):
/// those whose lock no process holds. One without a lock file yet is left alone for a minute,
/// in case another restore has only just made it.
fn remove_stale_scratch(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let held = match std::fs::File::open(dir.join("lock")) {
            Ok(lock) => lock.try_lock().is_err(),
            Err(_) => entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|made| made.elapsed().unwrap_or_default().as_secs() < 60),
        };
        if !held && std::fs::remove_dir_all(&dir).is_ok() {
            eprintln!("note: removed {}, left by a restore that did not finish", dir.display());
        }
    }
}

/// Runs pg_restore with `args` on `dump`, which it only reads, and returns what it printed;
/// `failing` says what its failure means.
fn read_dump(
    config: &Config,
    dump: &Path,
    args: &[&str],
    failing: &'static str,
) -> anyhow::Result<String> {
    let output = Command::new(super::pg_program(config, "pg_restore"))
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| name == "PATH"))
        .env("LC_MESSAGES", "C")
        .args(args)
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .context("cannot run pg_restore (install the PostgreSQL client)")?;
    if !output.status.success() {
        return Err(failure("pg_restore", output.status, &String::from_utf8_lossy(&output.stderr)))
            .context(failing);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads the whole archive, as the load will: a dump cut short after its table of contents
/// fails here, before anything is replaced.
fn read_whole(config: &Config, dump: &Path) -> anyhow::Result<()> {
    let failing = "pg_restore cannot read the whole dump; nothing was changed";
    read_dump(config, dump, &["--data-only", "--file=/dev/null"], failing).map(drop)
}

/// Writes the `--use-list` of the dump's entries (the migration history aside, which the
/// restore writes anew) to `list`, and returns the tables whose data the dump holds.
fn write_list(config: &Config, dump: &Path, list: &Path) -> anyhow::Result<Vec<String>> {
    let failing = "pg_restore cannot read the decrypted dump; nothing was changed";
    let listing = read_dump(config, dump, &["--list"], failing)?;
    let kept: Vec<&str> = listing
        .lines()
        .filter(|line| !line.contains(" TABLE DATA datapunk schema_migrations "))
        .collect();
    std::fs::write(list, kept.join("\n") + "\n").context("cannot write the restore list")?;
    Ok(super::check::tables_in(&listing))
}

/// The restored chain ends where the backup did, before the anchor file's head: the anchor is
/// moved aside (kept for inspection), and the next event anchors the restored chain.
fn set_anchor_aside(config: &Config) -> anyhow::Result<()> {
    let anchor = config.daemon.audit_anchor();
    if !anchor.exists() {
        return Ok(());
    }
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = PathBuf::from(format!("{}.before-restore-{stamp}", anchor.display()));
    std::fs::rename(&anchor, &aside)
        .with_context(|| format!("cannot move the audit anchor {} aside", anchor.display()))?;
    eprintln!(
        "note: the audit anchor was moved to {}: the restored audit trail ends when the backup \
         was made",
        aside.display()
    );
    Ok(())
}

/// Names the integrations whose data keys the restored fields need, and whether the secret
/// store holds them, in lines to print.
async fn report_keys(
    config: &Config,
    database: Option<&Database>,
    admin: &str,
    dbname: &str,
) -> Vec<String> {
    let names = async {
        let mut options = ConnectOptions::new(admin);
        options.dbname = Some(dbname.to_owned());
        let client = options.connect_once().await?;
        let rows = client.query("SELECT name FROM datapunk.integrations ORDER BY 1", &[]).await?;
        Ok::<_, anyhow::Error>(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>())
    }
    .await;
    let names = match names {
        Ok(names) if names.is_empty() => return Vec::new(),
        Ok(names) => names,
        Err(error) => {
            eprintln!("warning: cannot list the restored integrations: {error:#}");
            return Vec::new();
        }
    };
    let mut lines = vec![format!(
        "the sealed fields need the data keys of: {} (keys are never in a backup)",
        names.join(", ")
    )];
    let vault = match database.map(|db| datapunk_daemon::vault::open(config, db)) {
        Some(Ok(vault)) => vault,
        Some(Err(error)) => {
            lines.push(format!("cannot open the secret store to check them: {error:#}"));
            return lines;
        }
        None => {
            lines.push("cannot open the configured database to check the secret store".into());
            return lines;
        }
    };
    for name in &names {
        lines.push(match vault.data_key(name).await {
            Ok(Some(_)) => format!("  {name}: the {} vault holds its key", vault.kind()),
            Ok(None) => format!(
                "  {name}: MISSING from the {} vault; restore it with `datapunk keys restore \
                 FILE` from a key backup, or its encrypted fields stay unreadable",
                vault.kind()
            ),
            Err(error) => format!("  {name}: cannot read the vault: {error}"),
        });
    }
    lines
}
