//! `datapunk backup`: encrypted dumps of the database that are proven restorable.
//!
//! `create` runs `pg_dump -Fc` as `datapunk_backup` into `gpg --encrypt` to the configured
//! recipients, writes the result under a temporary name in the destination, and publishes it
//! as `datapunk-<UTC time>.dump.gpg` beside a [`Manifest`](files::Manifest) only when both programs succeeded
//! and the file is on disk. `list` and `verify` check what was written, `restore` brings a
//! backup back into an empty database, and `prune` removes old backups but never the newest
//! one that verifies.
//!
//! Every command records what it did in the audit trail (`backup.create`, `backup.verify`,
//! `backup.restore`, `backup.prune`), failures included; while the database cannot be reached
//! the row waits in the pending-audit spool for the next append. `report-failure` records
//! `backup.failed` for the systemd unit's `OnFailure=` hook. `restore` refuses to replace the
//! configured database while `datapunkd` runs. Data keys are never in a backup: the backup
//! role cannot read the vault table, and the secret store is outside the database.

mod check;
mod create;
mod files;
mod prune;
mod report;
mod restore;

use std::path::{Path, PathBuf};

use clap::Subcommand;
use datapunk_config::{Config, DatabaseMode};
use datapunk_daemon::audit::{Auditor, event};
use datapunk_daemon::database::{Database, DatabaseError};
use datapunk_store::Role;
use datapunk_store::audit::{Event, Outcome};
use datapunk_vault::backup::GpgOptions;

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Dump the database, encrypted to `backup.recipients`, into the backup directory.
    Create {
        /// Write into DIR instead of `backup.dir`.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// List the backups in the backup directory, newest first.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Look in DIR instead of `backup.dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check a backup against its manifest, its encryption and, when the decryption key is at
    /// hand, its content.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["file", "latest"])))]
    Verify {
        /// The backup file.
        file: Option<PathBuf>,
        /// Verify the newest backup in the backup directory.
        #[arg(long)]
        latest: bool,
        /// Look in DIR instead of `backup.dir` (with --latest).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Restore a backup into an empty database and compare it with its manifest.
    ///
    /// Without --into, the configured database is restored: in managed mode on the daemon's
    /// own cluster (stop datapunkd first), in external mode with --admin-url.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Restore into another database: an administrator's libpq connection string naming
        /// it (without a password), for a restore drill.
        #[arg(long, value_name = "CONNINFO", conflicts_with = "admin_url")]
        into: Option<String>,
        /// An administrator's connection string for the configured database's server
        /// (external mode), without a password.
        #[arg(long, value_name = "CONNINFO")]
        admin_url: Option<String>,
        /// Replace a database that is not empty (needed when standard input is not a
        /// terminal; on a terminal you are asked).
        #[arg(long)]
        yes: bool,
    },
    /// Record in the audit trail that a backup unit failed: run by the `OnFailure=` unit of
    /// datapunk-backup.service, also for failures before `backup create` ran.
    ///
    /// The failed run's result, exit code and status and invocation id come from the options
    /// or from what systemd sets for an `OnFailure=` unit ($MONITOR_SERVICE_RESULT,
    /// $MONITOR_EXIT_CODE, $MONITOR_EXIT_STATUS, $MONITOR_INVOCATION_ID). While the database
    /// cannot be reached, the event waits in the pending-audit spool.
    ReportFailure {
        /// The unit that failed, such as datapunk-backup.service.
        #[arg(long, value_name = "NAME")]
        unit: String,
        #[command(flatten)]
        monitor: report::Monitor,
    },
    /// Delete old backups; the newest backup that verifies is always kept.
    Prune {
        /// Keep the N newest backups.
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// Also keep every backup younger than this, such as `30d` or `12h`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        keep_within: Option<std::time::Duration>,
        /// Look in DIR instead of `backup.dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Say what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) async fn run(path: Option<&Path>, command: BackupCommand) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    match command {
        BackupCommand::Create { to } => create::run(&config, to.as_deref()).await,
        BackupCommand::List { json, dir } => check::list(&config, dir.as_deref(), json),
        BackupCommand::Verify { file, latest, dir } => {
            check::verify(&config, file.as_deref(), latest, dir.as_deref()).await
        }
        BackupCommand::Restore { file, into, admin_url, yes } => {
            let target = match (into, admin_url) {
                (Some(conninfo), _) => restore::Target::Other(conninfo),
                (None, admin_url) => restore::Target::Configured { admin_url },
            };
            restore::run(&config, &file, target, yes).await
        }
        BackupCommand::ReportFailure { unit, monitor } => {
            report::run(&config, &unit, &monitor).await
        }
        BackupCommand::Prune { keep_last, keep_within, dir, dry_run } => {
            let policy = prune::Policy { keep_last, keep_within };
            prune::run(&config, dir.as_deref(), &policy, dry_run).await
        }
    }
}

/// How gpg is run for backups: `backup.gnupg_home`, else `$GNUPGHOME`.
fn gpg_options(config: &Config) -> GpgOptions {
    GpgOptions { gnupg_home: config.backup.gnupg_home.clone(), ..GpgOptions::default() }
}

/// Refuses `backup.passphrase_file` when other users may read it: whoever reads it opens
/// every backup made with it.
fn private_passphrase(file: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(file)
        .with_context(|| format!("cannot read backup.passphrase_file {}", file.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "backup.passphrase_file {} can be read or written by other users; run `chmod 600` \
             on it",
            file.display()
        );
    }
    Ok(())
}

/// gpg's pinentry arguments for decrypting a backup: with a passphrase file (a backup made
/// with `backup.passphrase_file`) its path, never the passphrase, read without asking; else
/// the pinentry `mode` (`error` where no one may be asked, `default`).
fn passphrase_args(passphrase: Option<&Path>, mode: &str) -> Vec<std::ffi::OsString> {
    match passphrase {
        Some(file) => vec![
            "--pinentry-mode".into(),
            "loopback".into(),
            "--passphrase-file".into(),
            file.into(),
        ],
        None => vec!["--pinentry-mode".into(), mode.into()],
    }
}

/// The backup directory: `dir` when given, else `backup.dir`.
fn backup_dir(config: &Config, dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| config.backup.dir.clone(), Path::to_path_buf)
}

/// Where a server program such as `pg_dump` is: the managed cluster's binaries when
/// configured, else `PATH`.
fn pg_program(config: &Config, name: &str) -> PathBuf {
    match &config.database.mode {
        DatabaseMode::Managed { pg_bin_dir: Some(dir), .. } => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// The audit trail as the backup commands use it: the configured database as `datapunk_app`
/// when it can be opened; when it cannot be reached (the database may be what failed), the
/// pending-audit spool and journald; journald alone when it fails otherwise.
pub(crate) struct Trail {
    auditor: Auditor,
    database: Option<Database>,
    /// Whether the database could not be opened because it could not be reached.
    unreachable: bool,
}

impl Trail {
    /// Opens the database for auditing; a failure to do so is kept for [`Trail::record`] to
    /// report.
    async fn open(config: &Config) -> anyhow::Result<(Self, Option<DatabaseError>)> {
        let auditor = super::auditor(config)?;
        match Database::open_as(config, Role::App).await {
            Ok(database) => {
                Ok((Self { auditor, database: Some(database), unreachable: false }, None))
            }
            Err(error) => {
                let unreachable = error.is_unreachable();
                Ok((Self { auditor, database: None, unreachable }, Some(error)))
            }
        }
    }

    /// Whether events go to the spool because the database could not be reached.
    fn defers(&self) -> bool {
        self.unreachable
    }

    /// Records `action` with `outcome`; when the database cannot take it, the event waits in
    /// the spool (database unreachable) or goes to journald, and a line on standard error says
    /// which.
    async fn record(&self, action: &str, outcome: Outcome, details: serde_json::Value) -> Kept {
        let message = match outcome {
            Outcome::Success => "backup command succeeded",
            _ => "backup command failed",
        };
        self.record_event(&event("cli", action, outcome, details), message).await
    }

    /// Records `event`, as [`Trail::record`] does, with `message` for journald.
    async fn record_event(&self, event: &Event, message: &str) -> Kept {
        let action = &event.action;
        let (error, unreachable) = match &self.database {
            Some(database) => match database.store().client().await {
                Ok(client) => match self.auditor.record(&client, event, message).await {
                    Ok(_) => return Kept::Appended,
                    Err(error) => {
                        let unreachable = error.is_unreachable();
                        (anyhow::Error::from(error).context("cannot append the event"), unreachable)
                    }
                },
                Err(error) => {
                    let unreachable = error.is_retryable();
                    (error.into(), unreachable)
                }
            },
            None => (anyhow::anyhow!("the database could not be opened"), self.unreachable),
        };
        if super::keep(&self.auditor, event, message, unreachable).await {
            return Kept::Deferred;
        }
        eprintln!(
            "warning: could not record {action} in the audit trail ({error:#}); it went to the \
             journal only"
        );
        Kept::JournalOnly
    }

    /// Closes the database (stopping a managed cluster this command started).
    async fn close(self) {
        if let Some(database) = self.database {
            database.close().await;
        }
    }
}

/// Where [`Trail::record`] put an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// In the audit table.
    Appended,
    /// In the spool, for the next append; and in journald.
    Deferred,
    /// In journald alone.
    JournalOnly,
}

/// A failure of one named step, for the message and the audit row.
#[derive(Debug)]
pub(crate) struct StepError {
    step: &'static str,
    error: anyhow::Error,
}

impl StepError {
    fn new(step: &'static str, error: impl Into<anyhow::Error>) -> Self {
        Self { step, error: error.into() }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {:#}", self.step, self.error)
    }
}

impl std::error::Error for StepError {}
