//! The daemon's own PostgreSQL cluster ("managed mode").
//!
//! [`Cluster`] drives `initdb` and `pg_ctl` for a cluster that listens on no TCP port, only on
//! a Unix socket in a private directory, and that lets in nobody but the daemon's own Unix
//! user, by peer authentication: no password exists anywhere. The settings that make it so
//! are (re)written by Datapunk on every start, so editing them by hand does not stick.
//!
//! PostgreSQL refuses to run as root; so does everything here.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;

use crate::{Error, Role};

/// The port, which only names the socket file (`.s.PGSQL.5432`): no TCP port is opened.
const PORT: u16 = 5432;

/// The longest Unix socket path (`sizeof(sun_path)` is 108 on Linux, with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The file, included from postgresql.conf, that holds Datapunk's settings.
const SETTINGS_FILE: &str = "datapunk.conf";

/// Where `pg_ctl` sends the server's output until the logging collector takes over.
const STARTUP_LOG: &str = "log/startup.log";

/// How many lines of a failed program's output an error quotes.
const TAIL_LINES: usize = 15;

/// Where and as whom the managed cluster runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedOptions {
    /// The cluster's data directory; created by `initdb` (its parent must exist).
    pub data_dir: PathBuf,
    /// The directory for the server's Unix socket; created with mode 0700 when missing. With
    /// the socket's name appended it must fit in a Unix socket path (at most 93 bytes).
    pub socket_dir: PathBuf,
    /// Where `initdb`, `pg_ctl` and `postgres` are; `None` searches `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The Unix user the daemon runs as: the only one peer authentication lets in.
    pub os_user: String,
}

/// A PostgreSQL cluster owned by the daemon.
#[derive(Clone, Debug)]
pub struct Cluster {
    options: ManagedOptions,
}

impl Cluster {
    /// The cluster described by `options`. Nothing is checked or touched yet.
    pub fn new(options: ManagedOptions) -> Self {
        Self { options }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.options.socket_dir
    }

    /// Creates the cluster unless its data directory already holds one, then (re)writes the
    /// authentication files and the include of Datapunk's settings. Returns whether the
    /// cluster was created.
    ///
    /// The cluster gets the superuser `postgres`, UTF-8 encoding, byte-order collation and
    /// data checksums. `pg_hba.conf` allows only local peer connections through the map
    /// `datapunk`, which `pg_ident.conf` fills with the daemon's Unix user and the roles it
    /// may act as.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unusable Unix user name; [`Error::BinaryNotFound`] or
    /// [`Error::Command`] when `initdb` cannot run or fails (as it does for root);
    /// [`Error::Io`] when a file cannot be written.
    pub async fn initialize(&self) -> Result<bool, Error> {
        check_os_user(&self.options.os_user)?;
        let settings = self.settings()?;
        let created = if self.has_cluster().await? {
            false
        } else {
            self.initdb().await?;
            tracing::debug!(data_dir = %self.data_dir().display(), "ran initdb");
            true
        };

        let data = self.data_dir();
        write_private(&data.join("pg_hba.conf"), &hba_conf()).await?;
        write_private(&data.join("pg_ident.conf"), &ident_conf(&self.options.os_user)).await?;
        write_private(&data.join(SETTINGS_FILE), &settings).await?;
        self.include_settings().await?;
        Ok(created)
    }

    /// Starts the cluster, or adopts it when it runs already. Returns whether this call
    /// started it (and so whether the caller should [`stop`](Self::stop) it).
    ///
    /// Datapunk's settings are rewritten first: no TCP listener, the socket (mode 0700) in the
    /// socket directory, bind parameters kept out of the server log, and the log in
    /// `log/` inside the data directory, rotated daily over a week. An adopted cluster is
    /// asked to reload them.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the socket directory is unusable (too long a path, or
    /// characters PostgreSQL cannot take) or the data directory holds no cluster
    /// ([`initialize`](Self::initialize) creates it); [`Error::VersionMismatch`] when the cluster
    /// was made by another major version; [`Error::Command`] with the server log's tail when
    /// the server does not start within a minute.
    pub async fn start(&self) -> Result<bool, Error> {
        let settings = self.settings()?;
        if !self.has_cluster().await? {
            let reason = format!(
                "{} holds no cluster; start the daemon once, which creates it",
                self.data_dir().display()
            );
            return Err(Error::config("database.data_dir", reason));
        }
        self.check_version().await?;

        let data = self.data_dir();
        write_private(&data.join(SETTINGS_FILE), &settings).await?;
        self.include_settings().await?;
        private_dir(&self.options.socket_dir).await?;

        if self.is_running().await? {
            self.pg_ctl(&["reload"]).await?;
            tracing::info!(data_dir = %data.display(), "adopted the running managed cluster");
            return Ok(false);
        }

        private_dir(&data.join("log")).await?;
        let log = data.join(STARTUP_LOG);
        let mut args: Vec<OsString> = vec!["-l".into(), log.clone().into()];
        args.extend(["-w", "-t", "60", "start"].map(OsString::from));
        if let Err(error) = self.pg_ctl_os(args).await {
            return Err(with_log_tail(error, &log).await);
        }
        tracing::info!(data_dir = %data.display(), "started the managed cluster");
        Ok(true)
    }

    /// Stops the cluster with a fast shutdown (sessions are ended, transactions rolled
    /// back), waiting up to a minute. Does nothing when it is not running.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when `pg_ctl` fails.
    pub async fn stop(&self) -> Result<(), Error> {
        if !self.is_running().await? {
            return Ok(());
        }
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]).await?;
        tracing::info!(data_dir = %self.data_dir().display(), "stopped the managed cluster");
        Ok(())
    }

    /// Whether a server is running on the data directory.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when `pg_ctl status` fails for another reason than "not running".
    pub async fn is_running(&self) -> Result<bool, Error> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir()).arg("status");
        let output = run_output(command, &self.program("pg_ctl")).await?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error(self.program("pg_ctl"), &output)),
        }
    }

    /// The connection string for the superuser `postgres` to `dbname`.
    pub fn admin_conninfo(&self, dbname: &str) -> String {
        self.conninfo_as("postgres", dbname)
    }

    /// The connection string for `role` to `dbname`. Peer authentication maps the daemon's
    /// Unix user to it; `datapunk_owner` cannot log in at all.
    pub fn conninfo(&self, role: Role, dbname: &str) -> String {
        self.conninfo_as(role.name(), dbname)
    }

    /// The version of the PostgreSQL programs, such as `15.18`.
    ///
    /// # Errors
    ///
    /// [`Error::BinaryNotFound`] or [`Error::Command`] when `postgres --version` fails.
    pub async fn version(&self) -> Result<String, Error> {
        let mut command = self.command("postgres");
        command.arg("--version");
        let output = run(command, self.program("postgres")).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)"
        let version = text.split_whitespace().nth(2).unwrap_or_default();
        Ok(version.to_owned())
    }

    fn conninfo_as(&self, user: &str, dbname: &str) -> String {
        let host = self.options.socket_dir.to_string_lossy();
        format!(
            "host={} port={PORT} user={} dbname={}",
            conninfo_value(&host),
            conninfo_value(user),
            conninfo_value(dbname)
        )
    }

    async fn has_cluster(&self) -> Result<bool, Error> {
        let path = self.data_dir().join("PG_VERSION");
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))
    }

    /// Runs `initdb`. When the data directory does not exist yet, in a directory beside it,
    /// renamed into place only once it succeeded: an `initdb` cut short (a stop that could not
    /// wait for it, a power cut) leaves nothing that looks like a cluster, and the next start
    /// begins again. A data directory that exists (empty, a symbolic link, a mount point) is
    /// initialised where it is, as it cannot be replaced.
    async fn initdb(&self) -> Result<(), Error> {
        let data = self.data_dir();
        let exists = tokio::fs::try_exists(data)
            .await
            .map_err(|e| Error::io(format!("cannot inspect {}", data.display()), e))?;
        let mut name = data.file_name().unwrap_or_default().to_os_string();
        name.push(".initdb-partial");
        let partial = data.with_file_name(name);
        let target = if exists { data.to_path_buf() } else { partial.clone() };
        match tokio::fs::remove_dir_all(&partial).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                let what = format!("cannot remove the unfinished cluster {}", partial.display());
                return Err(Error::io(what, e));
            }
            _ => {}
        }
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(&target)
            .args(["-U", "postgres", "--auth-local=peer", "--auth-host=reject"])
            .args(["--encoding=UTF8", "--locale=C", "--lc-ctype=C.UTF-8", "--data-checksums"])
            .arg("--no-instructions");
        run(command, self.program("initdb")).await?;
        if exists {
            return Ok(());
        }
        if let Err(e) = tokio::fs::rename(&partial, data).await {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            let what = format!("cannot move the new cluster into {}", data.display());
            return Err(Error::io(what, e));
        }
        Ok(())
    }

    /// Refuses to start a cluster made by another major version, which the server would
    /// refuse with a message only found in its log.
    async fn check_version(&self) -> Result<(), Error> {
        let path = self.data_dir().join("PG_VERSION");
        let cluster = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        let cluster = cluster.trim();
        let programs = self.version().await?;
        let major = programs.split('.').next().unwrap_or_default();
        if major == cluster || major.is_empty() {
            return Ok(());
        }
        Err(Error::VersionMismatch {
            data_dir: self.data_dir().display().to_string(),
            cluster: cluster.to_owned(),
            programs,
        })
    }

    /// Datapunk's settings, included last from postgresql.conf.
    fn settings(&self) -> Result<String, Error> {
        let socket_dir = check_socket_dir(&self.options.socket_dir)?;
        let mut text = String::from(
            "# Written by Datapunk on every start of the managed cluster; edits are lost.\n\
             # No TCP listener: the only way in is the Unix socket below, with peer\n\
             # authentication (pg_hba.conf).\n",
        );
        let settings = [
            ("listen_addresses", quote_setting("")),
            ("port", PORT.to_string()),
            ("unix_socket_directories", quote_setting(socket_dir)),
            ("unix_socket_permissions", "0700".to_owned()),
            // Keep bind parameters, which may carry key material, out of the log.
            ("log_parameter_max_length", "0".to_owned()),
            ("log_parameter_max_length_on_error", "0".to_owned()),
            ("logging_collector", "on".to_owned()),
            ("log_destination", quote_setting("stderr")),
            ("log_directory", quote_setting("log")),
            ("log_filename", quote_setting("postgresql-%a.log")),
            ("log_file_mode", "0600".to_owned()),
            ("log_rotation_age", quote_setting("1d")),
            ("log_truncate_on_rotation", "on".to_owned()),
        ];
        for (name, value) in settings {
            writeln!(text, "{name} = {value}").expect("writing to a String cannot fail");
        }
        Ok(text)
    }

    /// Appends the include of Datapunk's settings to postgresql.conf once.
    async fn include_settings(&self) -> Result<(), Error> {
        let path = self.data_dir().join("postgresql.conf");
        let shown = path.display();
        let include = format!("include_if_exists = '{SETTINGS_FILE}'");
        let mut text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
        if text.lines().any(|line| line.trim() == include) {
            return Ok(());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        writeln!(text, "\n# Datapunk's settings, last so that they take precedence.\n{include}")
            .expect("writing to a String cannot fail");
        write_private(&path, &text).await
    }

    fn program_path(&self, name: &str) -> PathBuf {
        match &self.options.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The program as messages show it.
    fn program(&self, name: &str) -> String {
        self.program_path(name).display().to_string()
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.program_path(name));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // A clean environment: nothing of ours (credentials, `NOTIFY_SOCKET`, whose
            // READY=1 from postgres would speak for the daemon, inherited PG* settings) may
            // reach the server.
            .env_clear()
            .env("LC_ALL", "C.UTF-8");
        for name in ["PATH", "TZ"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<Output, Error> {
        self.pg_ctl_os(args.iter().map(OsString::from).collect()).await
    }

    async fn pg_ctl_os(&self, args: Vec<OsString>) -> Result<Output, Error> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir()).args(args);
        run(command, self.program("pg_ctl")).await
    }
}

/// Runs `command` and requires success.
async fn run(command: Command, program: String) -> Result<Output, Error> {
    let output = run_output(command, &program).await?;
    if output.status.success() { Ok(output) } else { Err(command_error(program, &output)) }
}

/// Runs `command` and returns its output whatever its exit status.
async fn run_output(mut command: Command, program: &str) -> Result<Output, Error> {
    tracing::debug!(?command, "running a PostgreSQL program");
    command.output().await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::BinaryNotFound { program: program.to_owned() },
        _ => Error::io(format!("cannot run {program}"), e),
    })
}

fn command_error(program: String, output: &Output) -> Error {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    Error::Command { program, status: output.status.to_string(), stderr_tail: tail(&text) }
}

/// Adds the end of the startup log to a failed `pg_ctl start`, which only says "examine the
/// log output".
async fn with_log_tail(error: Error, log: &Path) -> Error {
    let Error::Command { program, status, mut stderr_tail } = error else {
        return error;
    };
    if let Ok(text) = tokio::fs::read_to_string(log).await {
        stderr_tail.push_str(&format!("\n{}:\n{}", log.display(), tail(&text)));
    }
    Error::Command { program, status, stderr_tail }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn hba_conf() -> String {
    "# Written by Datapunk; edits are lost. Local peer connections only, mapped through\n\
     # pg_ident.conf; no TCP, no passwords.\n\
     local all all peer map=datapunk\n"
        .to_owned()
}

fn ident_conf(os_user: &str) -> String {
    let mut text = String::from(
        "# Written by Datapunk; edits are lost. The daemon's Unix user may connect as the\n\
         # cluster's superuser and as the Datapunk roles that can log in.\n\
         # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n",
    );
    let roles = Role::ALL.into_iter().filter(|r| r.can_login()).map(Role::name);
    for role in std::iter::once("postgres").chain(roles) {
        writeln!(text, "datapunk  {os_user}  {role}").expect("writing to a String cannot fail");
    }
    text
}

/// A Unix user name that can stand unquoted in pg_ident.conf.
fn check_os_user(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    let reason = format!("the Unix user name {name:?} cannot be used for peer authentication");
    Err(Error::config("database.os_user", reason))
}

/// Checks that the socket directory is absolute, short enough for a socket path, and free of
/// characters that PostgreSQL's list syntax or the settings file would misread.
fn check_socket_dir(dir: &Path) -> Result<&str, Error> {
    const KEY: &str = "daemon.runtime_dir";
    let shown = dir.display();
    let Some(text) = dir.to_str().filter(|_| dir.is_absolute()) else {
        return Err(Error::config(KEY, format!("socket directory {shown} must be absolute UTF-8")));
    };
    let socket_len = dir.as_os_str().as_bytes().len() + format!("/.s.PGSQL.{PORT}").len();
    if socket_len > MAX_SOCKET_PATH {
        let max = MAX_SOCKET_PATH - (socket_len - text.len());
        let reason = format!(
            "socket directory {shown} is {} bytes long, but a Unix socket path allows {max} \
             for the directory; choose a shorter directory",
            text.len()
        );
        return Err(Error::config(KEY, reason));
    }
    if text.chars().any(|c| c.is_control() || matches!(c, ',' | '"' | '\'' | '\\')) {
        let reason = format!(
            "socket directory {shown} contains a comma, quote, backslash or control character"
        );
        return Err(Error::config(KEY, reason));
    }
    Ok(text)
}

/// A string value for postgresql.conf.
fn quote_setting(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A value for a libpq-style connection string, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Creates `dir` with mode 0700, or tightens an existing one to 0700.
async fn private_dir(dir: &Path) -> Result<(), Error> {
    let shown = dir.display();
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .map_err(|e| Error::io(format!("cannot create {shown}"), e))?;

    let metadata = tokio::fs::metadata(dir)
        .await
        .map_err(|e| Error::io(format!("cannot inspect {shown}"), e))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|e| Error::io(format!("cannot make {shown} private"), e))?;
    }
    Ok(())
}

/// Replaces `path` atomically with `text`, readable by the owner only.
async fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    let path = path.to_path_buf();
    let text = text.to_owned();
    let shown = path.display().to_string();
    let result = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new().prefix(".datapunk.").tempfile_in(dir)?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    result.map_err(|e| Error::io(format!("cannot write {shown}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(socket_dir: &str) -> Cluster {
        Cluster::new(ManagedOptions {
            data_dir: "/var/lib/datapunk/postgresql".into(),
            socket_dir: socket_dir.into(),
            bin_dir: None,
            os_user: "datapunk".into(),
        })
    }

    #[test]
    fn conninfo_names_the_socket_role_and_database() {
        let cluster = cluster("/run/datapunk/postgresql");
        assert_eq!(
            cluster.conninfo(Role::App, "datapunk"),
            "host=/run/datapunk/postgresql port=5432 user=datapunk_app dbname=datapunk"
        );
        assert_eq!(
            cluster.admin_conninfo("postgres"),
            "host=/run/datapunk/postgresql port=5432 user=postgres dbname=postgres"
        );
    }

    #[test]
    fn conninfo_quotes_a_socket_directory_with_spaces() {
        let conninfo = cluster("/run/my data").conninfo(Role::Reader, "datapunk");
        assert!(conninfo.starts_with("host='/run/my data' "), "{conninfo}");
        let config: tokio_postgres::Config = conninfo.parse().expect("the conninfo parses");
        assert_eq!(config.get_hosts(), [tokio_postgres::config::Host::Unix("/run/my data".into())]);
    }

    #[test]
    fn settings_close_tcp_and_keep_parameters_out_of_the_log() {
        let settings = cluster("/run/datapunk/postgresql").settings().expect("the settings");
        for line in [
            "listen_addresses = ''",
            "unix_socket_directories = '/run/datapunk/postgresql'",
            "unix_socket_permissions = 0700",
            "log_parameter_max_length = 0",
            "log_parameter_max_length_on_error = 0",
            "port = 5432",
        ] {
            assert!(settings.lines().any(|l| l == line), "missing {line:?} in\n{settings}");
        }
    }

    #[test]
    fn a_socket_directory_too_long_for_a_socket_path_is_refused() {
        let fits = format!("/{}", "d".repeat(92));
        assert!(cluster(&fits).settings().is_ok());
        let too_long = format!("/{}", "d".repeat(93));
        match cluster(&too_long).settings() {
            Err(Error::Config { reason, .. }) => assert!(reason.contains("93"), "{reason}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn socket_directories_that_postgresql_would_misread_are_refused() {
        for dir in ["relative/dir", "/run/a,b", "/run/a'b", "/run/a\nb"] {
            assert!(cluster(dir).settings().is_err(), "{dir:?}");
        }
    }

    #[test]
    fn peer_authentication_maps_only_the_daemon_user() {
        assert_eq!(hba_conf().lines().filter(|l| !l.starts_with('#')).count(), 1);
        let ident = ident_conf("datapunk");
        let entries: Vec<&str> = ident.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            entries,
            [
                "datapunk  datapunk  postgres",
                "datapunk  datapunk  datapunk_app",
                "datapunk  datapunk  datapunk_reader",
                "datapunk  datapunk  datapunk_backup",
            ]
        );
        for bad in ["", "a b", "-x", "a#b", "a\"b"] {
            assert!(check_os_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failed_program_reports_the_tail_of_its_output() {
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let tail = tail(&text);
        assert!(tail.starts_with("line 26\n") && tail.ends_with("line 40"), "{tail}");
    }

    #[tokio::test]
    async fn a_missing_program_names_the_setting_to_fix() {
        let mut cluster = cluster("/run/datapunk");
        cluster.options.bin_dir = Some("/nonexistent/bin".into());
        match cluster.version().await {
            Err(error @ Error::BinaryNotFound { .. }) => {
                let message = error.to_string();
                assert!(message.contains("/nonexistent/bin/postgres"), "{message}");
                assert!(message.contains("database.pg_bin_dir"), "{message}");
            }
            other => panic!("expected BinaryNotFound, got {other:?}"),
        }
    }
}
