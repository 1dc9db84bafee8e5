//! `datapunk backup create`: `pg_dump -Fc` as `datapunk_backup`, through `gpg --encrypt`,
//! into a temporary file that becomes a backup only when every step succeeded.
//!
//! The pitfalls this avoids are those of the shell pipeline `pg_dump | gpg > file`: its status
//! is gpg's alone, so a failed dump still "succeeds" with a valid-looking encrypted file of
//! nothing; `>` truncates the previous good file first; the file is 0644 under the usual
//! umask. Here both programs' exit statuses are checked, the output goes to a temporary name
//! in the destination (removed on any failure), is flushed, renamed and the directory
//! flushed, and the process's umask is 077.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use anyhow::Context as _;
use datapunk_config::{Config, DatabaseMode, SecretRef};
use datapunk_daemon::database::{connect_options, managed_cluster};
use datapunk_store::audit::Outcome;
use datapunk_store::managed::Cluster;
use datapunk_store::{ConnectOptions, Role};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::files::{self, DatabaseFacts, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, Tools};
use super::{StepError, Trail};

/// The table whose rows never go into a dump: the `encrypted-table` vault's sealed secrets
/// (see migration 0003). `datapunk_backup` cannot read it anyway.
pub(super) const VAULT_TABLE: &str = "datapunk.vault_records";

/// How much of a program's messages goes into an error.
const STDERR_TAIL: usize = 600;

/// How the backup is encrypted.
#[derive(Clone, Debug)]
pub(super) enum Encryption {
    /// To these full fingerprints.
    Recipients(Vec<String>),
    /// With the passphrase in this file.
    Passphrase(PathBuf),
}

impl Encryption {
    pub(super) fn from_config(config: &Config) -> anyhow::Result<Self> {
        match (&config.backup.recipients[..], &config.backup.passphrase_file) {
            ([], None) => anyhow::bail!(
                "no backup key is configured: set `backup.recipients` to the full fingerprint \
                 of an OpenPGP key (`gpg --list-keys --with-colons` prints it after `fpr`), \
                 or `backup.passphrase_file`"
            ),
            ([], Some(file)) => {
                super::private_passphrase(file)?;
                Ok(Self::Passphrase(file.clone()))
            }
            (recipients, _) => Ok(Self::Recipients(recipients.to_vec())),
        }
    }

    /// gpg's arguments for this encryption, writing to standard output.
    fn gpg_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            ["--batch", "--no-tty", "--quiet", "--compress-algo", "none"]
                .iter()
                .map(Into::into)
                .collect();
        // The dump is compressed by pg_dump already; compressing it again costs time for
        // nothing.
        match self {
            Self::Recipients(recipients) => {
                // Named by full fingerprint, the keys are the ones meant: no web of trust is
                // consulted, and gpg.conf's `encrypt-to` adds no reader.
                for arg in ["--trust-model", "always", "--no-encrypt-to", "--encrypt"] {
                    args.push(arg.into());
                }
                for recipient in recipients {
                    args.push("--recipient".into());
                    args.push(recipient.into());
                }
            }
            Self::Passphrase(file) => {
                // The file's path is on the command line, never the passphrase.
                for arg in ["--symmetric", "--cipher-algo", "AES256", "--pinentry-mode"] {
                    args.push(arg.into());
                }
                args.push("loopback".into());
                args.push("--passphrase-file".into());
                args.push(file.into());
            }
        }
        args.push("--output".into());
        args.push("-".into());
        args
    }
}

/// A backup that was written.
struct Made {
    path: PathBuf,
    manifest: Manifest,
}

pub(super) async fn run(config: &Config, to: Option<&Path>) -> anyhow::Result<()> {
    let dir = super::backup_dir(config, to);
    let encryption = Encryption::from_config(config)?;
    let (trail, open_error) = Trail::open(config).await?;

    let result = match open_error {
        // A database that cannot be reached fails the dump, which says so; the audit event
        // waits in the spool.
        Some(error) if !trail.defers() => {
            Err(StepError::new("connecting to the database", anyhow::Error::from(error)))
        }
        _ => create(config, &dir, &encryption).await,
    };

    match &result {
        Ok(made) => {
            let details = json!({
                "file": made.path.display().to_string(),
                "size": made.manifest.size,
                "sha256": made.manifest.sha256,
                "recipients": made.manifest.recipients,
                "symmetric": made.manifest.symmetric,
                "tables": made.manifest.tables.len(),
            });
            trail.record("backup.create", Outcome::Success, details).await;
        }
        Err(failure) => {
            let details = json!({
                "dir": dir.display().to_string(),
                "step": failure.step,
                "error": format!("{:#}", failure.error),
            });
            trail.record("backup.create", Outcome::Failure, details).await;
        }
    }
    trail.close().await;

    let made = result.map_err(|failure| {
        anyhow::anyhow!("backup failed: {failure}; no backup file was left in {}", dir.display())
    })?;
    let rows: i64 = made.manifest.tables.values().sum();
    println!(
        "wrote {} ({} bytes, {} tables, {rows} rows), encrypted to {}",
        made.path.display(),
        made.manifest.size,
        made.manifest.tables.len(),
        match &encryption {
            Encryption::Recipients(recipients) => recipients.join(", "),
            Encryption::Passphrase(_) => "a passphrase".to_owned(),
        }
    );
    Ok(())
}

/// How to connect as `datapunk_backup`: with `backup.password_file` (or its credential) when
/// it is set, else as [`connect_options`] says.
fn backup_options(config: &Config, cluster: Option<&Cluster>) -> anyhow::Result<ConnectOptions> {
    let mut options = connect_options(config, cluster, Role::Backup);
    if let Some(password) = &config.backup.password {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let path = password.path(credentials.as_deref(), "backup.password_file");
        options.password_file = Some(path.map_err(anyhow::Error::msg)?);
        options.password_setting = match password {
            SecretRef::File(_) => "backup.password_file",
            SecretRef::Credential(_) => "backup.password_credential",
        };
    }
    Ok(options)
}

/// A private libpq password file (0600, in the runtime directory, removed when dropped)
/// holding the password `options` name, for any host, database and user: the only password
/// pg_dump may use. `None` when no password is configured.
fn password_file(
    config: &Config,
    options: &ConnectOptions,
) -> anyhow::Result<Option<tempfile::NamedTempFile>> {
    let Some(password) = options.password()? else {
        return Ok(None);
    };
    if password.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
        anyhow::bail!(
            "`{}` names a password with a line break or a NUL byte inside, which a libpq \
             password file cannot hold",
            options.password_setting
        );
    }
    // A libpq password file escapes `\` and `:` with a backslash.
    let mut line = Zeroizing::new(b"*:*:*:*:".to_vec());
    for byte in password.iter() {
        if matches!(byte, b'\\' | b':') {
            line.push(b'\\');
        }
        line.push(*byte);
    }
    line.push(b'\n');
    let dir = &config.daemon.runtime_dir;
    datapunk_daemon::process::private_dir(dir)
        .with_context(|| format!("cannot prepare {}", dir.display()))?;
    remove_stale_password_files(dir);
    let mut file = tempfile::Builder::new()
        .prefix(PASSWORD_FILE_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a password file in {}", dir.display()))?;
    file.write_all(&line)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write a password file in {}", dir.display()))?;
    Ok(Some(file))
}

const PASSWORD_FILE_PREFIX: &str = ".datapunk-pgpass-";

/// Removes the password files a `create` that was killed left in `dir`. pg_dump reads its
/// password file when it connects, at once, so a file older than a minute serves nobody.
fn remove_stale_password_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let ours = entry.file_name().to_string_lossy().starts_with(PASSWORD_FILE_PREFIX);
        let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if ours && age.is_some_and(|age| age > std::time::Duration::from_secs(60)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

const PARTIAL_PREFIX: &str = ".datapunk-";
const PARTIAL_SUFFIX: &str = ".partial";

/// A temporary file in `dir`, locked for as long as it is open: what a `create` writes before
/// it is complete.
fn locked_partial(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let partial = tempfile::Builder::new()
        .prefix(PARTIAL_PREFIX)
        .suffix(PARTIAL_SUFFIX)
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    partial.as_file().lock().with_context(|| format!("cannot lock a file in {}", dir.display()))?;
    Ok(partial)
}

/// Removes what a `create` that was killed was writing in `dir`: temporary files that no
/// process holds locked, older than a minute (a newer one may not be locked yet).
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(PARTIAL_PREFIX) && name.ends_with(PARTIAL_SUFFIX)) {
            continue;
        }
        let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_none_or(|age| age <= std::time::Duration::from_secs(60)) {
            continue;
        }
        let unheld = fs::File::open(entry.path()).is_ok_and(|file| file.try_lock().is_ok());
        if unheld && fs::remove_file(entry.path()).is_ok() {
            eprintln!(
                "note: removed {}, left by a backup that did not finish",
                entry.path().display()
            );
        }
    }
}

async fn create(config: &Config, dir: &Path, encryption: &Encryption) -> Result<Made, StepError> {
    files::prepare_dir(dir).map_err(|e| StepError::new("preparing the destination", e))?;
    let gpg = super::gpg_options(config);
    let pg_dump = super::pg_program(config, "pg_dump");
    let tools = Tools {
        datapunk: env!("CARGO_PKG_VERSION").to_owned(),
        pg_dump: version(Command::new(&pg_dump).arg("--version"))
            .map_err(|e| StepError::new("running pg_dump", e))?,
        gpg: version(gpg.command().arg("--version"))
            .map_err(|e| StepError::new("running gpg", e))?,
    };

    // One snapshot for the dump and the row counts, so the manifest describes the dump.
    let cluster = managed_cluster(config).map_err(|e| StepError::new("reading the database", e))?;
    // pg_dump reads the database through the snapshot this connection exports, so a database
    // that cannot be reached fails pg_dump's step.
    let options = backup_options(config, cluster.as_ref())
        .map_err(|e| StepError::new("connecting as datapunk_backup", e))?;
    let client = options
        .connect_once()
        .await
        .context("cannot connect as datapunk_backup to dump the database")
        .map_err(|e| StepError::new("pg_dump", e))?;
    let (snapshot, database) = snapshot(&client, &config.database.name)
        .await
        .map_err(|e| StepError::new("reading the database", e))?;
    let conninfo = match (&config.database.mode, &cluster) {
        (DatabaseMode::External { conninfo, tls, .. }, _) => {
            super::super::db::external_conninfo(conninfo, tls, Role::Backup)
        }
        (DatabaseMode::Managed { .. }, Some(cluster)) => {
            cluster.conninfo(Role::Backup, &config.database.name)
        }
        (DatabaseMode::Managed { .. }, None) => {
            return Err(StepError::new("reading the database", anyhow::anyhow!("no cluster")));
        }
    };

    let created_at = OffsetDateTime::now_utc();
    let name = files::file_name(created_at).map_err(|e| StepError::new("naming the file", e))?;
    let final_path = dir.join(&name);
    remove_stale_partials(dir);
    let partial =
        locked_partial(dir).map_err(|e| StepError::new("creating the temporary file", e))?;

    // The password, if the server asks for one, reaches pg_dump in a password file of its
    // own that lives as long as the dump: never in its arguments or its environment.
    let password_file = password_file(config, &options)
        .map_err(|e| StepError::new("connecting as datapunk_backup", e))?;
    let mut dump = Command::new(&pg_dump);
    dump.env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| name == "PATH" || name == "HOME"))
        .envs(password_file.as_ref().map(|file| ("PGPASSFILE", file.path())))
        .env("LC_MESSAGES", "C")
        .args(["--format=custom", "--no-password", "--schema=datapunk"])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--exclude-table={VAULT_TABLE}"))
        .arg(format!("--dbname={conninfo}"));
    let mut encrypt = gpg.command();
    encrypt.args(encryption.gpg_args());
    let progress = progress_bar();
    let (file, written) = {
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let mut partial = partial;
            let written = pipeline(dump, encrypt, partial.as_file_mut(), &progress)?;
            partial
                .as_file()
                .sync_all()
                .context("cannot flush the backup to disk")
                .map_err(|e| StepError::new("writing the backup", e))?;
            Ok::<_, StepError>((partial, written))
        })
        .await
        .map_err(|e| StepError::new("writing the backup", e))??
    };
    progress.finish_and_clear();
    // The snapshot was needed until pg_dump was done with it.
    drop(client);
    drop(password_file);

    let (size, sha256) = written;
    let recipients = match encryption {
        Encryption::Recipients(recipients) => recipients.clone(),
        Encryption::Passphrase(_) => Vec::new(),
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        version: MANIFEST_VERSION,
        created_at,
        size,
        sha256,
        recipients,
        symmetric: matches!(encryption, Encryption::Passphrase(_)),
        database: database.facts,
        tables: database.tables,
        tools,
    };

    // The manifest is written first under its temporary name, so that a published backup
    // never lacks one for long; a backup is published without clobbering anything.
    let manifest_partial = write_manifest_partial(dir, &manifest)
        .map_err(|e| StepError::new("writing the manifest", e))?;
    file.persist_noclobber(&final_path)
        .map_err(|e| StepError::new("publishing the backup", e.error))?;
    let published = manifest_partial
        .persist_noclobber(files::manifest_path(&final_path))
        .map_err(|e| e.error)
        .context("cannot publish the manifest")
        .and_then(|_| files::sync_dir(dir));
    if let Err(error) = published {
        let _ = fs::remove_file(&final_path);
        let _ = fs::remove_file(files::manifest_path(&final_path));
        return Err(StepError::new("publishing the manifest", error));
    }
    Ok(Made { path: final_path, manifest })
}

/// What the snapshot says of the database.
struct Snapshot {
    facts: DatabaseFacts,
    tables: std::collections::BTreeMap<String, i64>,
}

/// Opens a repeatable-read transaction on `client`, exports its snapshot for pg_dump, and
/// counts every table's rows in it. The transaction must stay open until pg_dump is done.
async fn snapshot(
    client: &tokio_postgres::Client,
    name: &str,
) -> anyhow::Result<(String, Snapshot)> {
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    let id: String = client.query_one("SELECT pg_export_snapshot()", &[]).await?.get(0);
    let row = client
        .query_one(
            "SELECT pg_database_size(current_database()), current_setting('server_version'),
                    (SELECT coalesce(max(version), 0) FROM datapunk.schema_migrations)",
            &[],
        )
        .await?;
    let schema_version: i32 = row.get(2);
    let facts = DatabaseFacts {
        name: name.to_owned(),
        size: row.get(0),
        schema_version: u32::try_from(schema_version).context("a negative schema version")?,
        server_version: row.get(1),
    };
    let tables = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'datapunk' AND c.relkind IN ('r', 'p')
              ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut counts = std::collections::BTreeMap::new();
    for table in tables {
        let (schema, table): (String, String) = (table.get(0), table.get(1));
        let qualified = format!("{schema}.{table}");
        if qualified == VAULT_TABLE {
            continue;
        }
        let sql = format!("SELECT count(*) FROM {}.{}", quote(&schema), quote(&table));
        counts.insert(qualified, client.query_one(&sql, &[]).await?.get(0));
    }
    Ok((id, Snapshot { facts, tables: counts }))
}

/// An SQL identifier, quoted.
pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Runs `dump | encrypt`, copying gpg's output into `file` while hashing it. Returns the
/// size and SHA-256 of what was written.
fn pipeline(
    mut dump: Command,
    mut encrypt: Command,
    file: &mut fs::File,
    progress: &ProgressBar,
) -> Result<(u64, String), StepError> {
    let mut dump = dump
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run pg_dump (install the PostgreSQL client)")
        .map_err(|e| StepError::new("running pg_dump", e))?;
    let dump_stderr = tail_of(dump.stderr.take());
    let Some(dump_stdout) = dump.stdout.take() else {
        return Err(StepError::new("running pg_dump", anyhow::anyhow!("no output pipe")));
    };
    let spawned = encrypt
        .stdin(Stdio::from(dump_stdout))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // The command holds a copy of pg_dump's pipe; without dropping it gpg never sees the end.
    drop(encrypt);
    let mut gpg = match spawned {
        Ok(gpg) => gpg,
        Err(error) => {
            stop(&mut dump);
            return Err(StepError::new("running gpg", anyhow::anyhow!("cannot run gpg: {error}")));
        }
    };
    let gpg_stderr = tail_of(gpg.stderr.take());

    let copied = copy(&mut gpg, file, progress);
    if copied.is_err() {
        stop(&mut gpg);
        stop(&mut dump);
    }
    let dump_status = dump.wait();
    let gpg_status = gpg.wait();
    let dump_messages = join(dump_stderr);
    let gpg_messages = join(gpg_stderr);

    // gpg's failure comes first: it makes pg_dump fail too, on a broken pipe. A failed
    // pg_dump, on the other hand, leaves gpg content with what little it got.
    let gpg_status =
        gpg_status.context("cannot wait for gpg").map_err(|e| StepError::new("gpg", e))?;
    if !gpg_status.success() && copied.is_ok() {
        return Err(StepError::new("gpg", failure("gpg", gpg_status, &gpg_messages)));
    }
    let written = copied?;
    let dump_status =
        dump_status.context("cannot wait for pg_dump").map_err(|e| StepError::new("pg_dump", e))?;
    if !dump_status.success() {
        return Err(StepError::new("pg_dump", failure("pg_dump", dump_status, &dump_messages)));
    }
    if !gpg_status.success() {
        return Err(StepError::new("gpg", failure("gpg", gpg_status, &gpg_messages)));
    }
    if written.0 == 0 {
        return Err(StepError::new("gpg", anyhow::anyhow!("gpg wrote nothing")));
    }
    Ok(written)
}

/// Copies gpg's standard output into `file`, hashing and counting it.
fn copy(
    gpg: &mut Child,
    file: &mut fs::File,
    progress: &ProgressBar,
) -> Result<(u64, String), StepError> {
    let Some(mut output) = gpg.stdout.take() else {
        return Err(StepError::new("gpg", anyhow::anyhow!("no output pipe")));
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = output
            .read(&mut buffer)
            .context("cannot read gpg's output")
            .map_err(|e| StepError::new("gpg", e))?;
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read])
            .context("cannot write the backup")
            .map_err(|e| StepError::new("writing the backup", e))?;
        hasher.update(&buffer[..read]);
        size += read as u64;
        progress.set_position(size);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Kills `child` if it still runs; its status is collected by the caller.
fn stop(child: &mut Child) {
    let _ = child.kill();
}

/// A thread that reads `pipe` to its end and keeps the end of it.
fn tail_of(pipe: Option<impl std::io::Read + Send + 'static>) -> Option<JoinHandle<String>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    }))
}

fn join(handle: Option<JoinHandle<String>>) -> String {
    handle.and_then(|handle| handle.join().ok()).unwrap_or_default()
}

/// The error of a program that failed: its status and the end of its messages.
pub(super) fn failure(program: &str, status: ExitStatus, messages: &str) -> anyhow::Error {
    let messages: Vec<&str> =
        messages.lines().filter(|line| !line.starts_with("[GNUPG:] ")).collect();
    let messages = messages.join("\n");
    let messages = messages.trim();
    let start = messages.len().saturating_sub(STDERR_TAIL);
    let start = (start..=messages.len()).find(|i| messages.is_char_boundary(*i)).unwrap_or(0);
    let status = match status.signal() {
        Some(signal) => format!("was killed by signal {signal}"),
        None => format!("exited with {status}"),
    };
    anyhow::anyhow!("{program} {status}: {}", &messages[start..])
}

/// The first line of a program's `--version`.
fn version(command: &mut Command) -> anyhow::Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output =
        command.stdin(Stdio::null()).output().with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        anyhow::bail!("`{program} --version` exited with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Writes `manifest` under a temporary name in `dir`, flushed.
fn write_manifest_partial(
    dir: &Path,
    manifest: &Manifest,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut partial = locked_partial(dir)?;
    let mut text = serde_json::to_vec_pretty(manifest).context("cannot encode the manifest")?;
    text.push(b'\n');
    partial.write_all(&text).context("cannot write the manifest")?;
    partial.as_file().sync_all().context("cannot flush the manifest")?;
    Ok(partial)
}

/// Bytes written so far, on a terminal; nothing otherwise.
fn progress_bar() -> ProgressBar {
    use std::io::IsTerminal as _;

    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    let style =
        ProgressStyle::with_template("{spinner} {binary_bytes} written ({binary_bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
