//! Throwaway PostgreSQL clusters.
//!
//! [`cluster`] starts one cluster per test process on first use, shared by the tests of that
//! binary; each test makes its own database in it ([`Cluster::create_database`] or
//! [`Cluster::unique_db_name`]). [`Cluster::start_with`] starts a separate cluster with extra
//! server settings, such as `log_statement = 'all'`, stopped when dropped; a test can stop and
//! start such a cluster of its own ([`Cluster::stop_server`], [`Cluster::start_server`]) to
//! see what Datapunk does while the database is down.
//!
//! A cluster is made by `initdb` and run by `pg_ctl` as [`account()`], in a directory of its
//! own:
//!
//! ```text
//! /tmp/dpk-XXXXXX/          0700, the account's
//!     data/                 the data directory
//!     sock/                 0700, the Unix socket .s.PGSQL.5432
//!     postgres.log          the server log
//! ```
//!
//! The server listens on no TCP port (`listen_addresses = ''`), only on the Unix socket, and
//! trusts every local connection (`--auth-local=trust`): anyone who can open the socket may
//! connect as any role, the superuser `postgres` included. That is acceptable for tests only,
//! and only because the socket's directory is private to the account (root reaches it too).
//! Durability is switched off (`fsync`, `full_page_writes`, `synchronous_commit`) for speed.
//!
//! The server binaries are found on `PATH`, else through `pg_config --bindir`, else in the
//! newest `/usr/lib/postgresql/<version>/bin` (where Debian installs them).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::account::account;
use crate::dirs::tempdir;
use crate::process;
use crate::reaper::Reaper;

/// The port number in the socket's name; nothing listens on TCP.
const PORT: u16 = 5432;

/// Settings every cluster gets, before the caller's.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", ""),
    ("unix_socket_permissions", "0700"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// Stops the server (immediate shutdown) and removes the cluster's directory.
///
/// `$1` is the data directory, `$2` the cluster's directory.
const REAPER_SCRIPT: &str = r#"
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
stop "$pid" postgres QUIT
rm -rf -- "$2"
"#;

/// A running PostgreSQL cluster; see the [module documentation](self).
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    next_db: AtomicU32,
    startup: Duration,
    /// Stops the server and removes `dir` when dropped or when the test process exits.
    _reaper: Reaper,
}

/// The cluster shared by the tests of this test process, started on first use.
///
/// # Panics
///
/// Panics when the cluster cannot be started, with the reason and the end of the server log.
/// Once that has happened every later call panics at once with the same message.
pub fn cluster() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

    match SHARED.get_or_init(|| Cluster::try_start(&[])) {
        Ok(cluster) => cluster,
        Err(err) => panic!("datapunk-testkit: {err}"),
    }
}

impl Cluster {
    /// Starts a cluster of its own, with the default settings, stopped when dropped.
    ///
    /// # Panics
    ///
    /// Panics when the cluster cannot be started.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Starts a cluster of its own with extra server settings, given as `postgresql.conf`
    /// names and values (for instance `("log_statement", "all")`); it is stopped and removed
    /// when dropped.
    ///
    /// # Panics
    ///
    /// Panics when a setting's name is not a plain identifier, when a value spans lines, or
    /// when the cluster cannot be started, with the reason and the end of the server log.
    pub fn start_with(settings: &[(&str, &str)]) -> Cluster {
        Cluster::try_start(settings).unwrap_or_else(|err| panic!("datapunk-testkit: {err}"))
    }

    /// The directory holding the server's Unix socket; use it as libpq's `host`.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The port number, which only names the socket file (`.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        PORT
    }

    /// A libpq connection string for `user` and `dbname`, such as
    /// `host=/tmp/dpk-Ab12Cd/sock port=5432 user=postgres dbname=postgres`.
    pub fn conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote_conninfo(&self.socket_dir.to_string_lossy()),
            PORT,
            quote_conninfo(user),
            quote_conninfo(dbname),
        )
    }

    /// A client connected to `dbname` as the superuser `postgres`; its connection is driven by
    /// a task spawned on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime or when the connection fails.
    pub async fn admin_client(&self, dbname: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(
            &self.conninfo("postgres", dbname),
            NoTls,
        )
        .await
        .unwrap_or_else(|err| {
            panic!(
                "datapunk-testkit: cannot connect to database {dbname:?} as postgres over {}: \
                     {err}",
                self.socket_dir.display()
            )
        });
        tokio::spawn(async move {
            // A broken connection surfaces as an error on the client's next call.
            let _ = connection.await;
        });
        client
    }

    /// Creates an empty database with a name made by [`Cluster::unique_db_name`] and returns
    /// that name.
    ///
    /// # Panics
    ///
    /// Panics outside a Tokio runtime or when the database cannot be created.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = self.unique_db_name(prefix);
        let client = self.admin_client("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|err| panic!("datapunk-testkit: cannot create database {name}: {err}"));
        name
    }

    /// A database name not used before in this cluster, made of `prefix` (lowercased, with
    /// every character outside `[a-z0-9_]` replaced by `_`, shortened to 40 bytes) and a
    /// counter, such as `sync_test_3`. The name needs no quoting in SQL.
    pub fn unique_db_name(&self, prefix: &str) -> String {
        let mut name: String = prefix
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' })
            .take(40)
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            name.insert_str(0, "db_");
        }
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let _ = write!(name, "_{n}");
        name
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// What the server has logged so far.
    ///
    /// # Panics
    ///
    /// Panics when the log cannot be read.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|err| {
            panic!("datapunk-testkit: cannot read {}: {err}", self.log_path.display())
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (`pg_ctl stop`, fast shutdown) and waits until it has gone, as an
    /// administrator stopping PostgreSQL would: connections fail from then on, until
    /// [`Cluster::start_server`]. Meant for a cluster of one test's own ([`Cluster::start`]),
    /// not the shared one.
    ///
    /// # Panics
    ///
    /// Panics when `pg_ctl` fails.
    pub fn stop_server(&self) {
        let stopped = bindir().and_then(|bindir| {
            let mut cmd = account().command(bindir.join("pg_ctl"));
            cmd.arg("stop").arg("--pgdata").arg(&self.data_dir);
            cmd.args(["--mode=fast", "--wait", "--timeout=60", "--silent"]);
            process::run(&mut cmd, None, "cannot stop PostgreSQL").map(drop)
        });
        stopped.unwrap_or_else(|err| panic!("datapunk-testkit: {err}"));
    }

    /// Starts the server again after [`Cluster::stop_server`], waiting until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// Panics when the server does not start, with the end of its log.
    pub fn start_server(&self) {
        let started = bindir().and_then(|bindir| self.pg_ctl_start(&bindir));
        started.unwrap_or_else(|err| panic!("datapunk-testkit: {err}"));
    }

    /// How long `initdb` and `pg_ctl start` took for this cluster.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Makes, configures and starts a cluster; on failure everything made so far is removed.
    fn try_start(settings: &[(&str, &str)]) -> Result<Cluster, String> {
        let started = Instant::now();
        for (name, value) in settings {
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
            if name.is_empty() || !name.chars().all(plain) {
                return Err(format!("invalid PostgreSQL setting name {name:?}"));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(format!("invalid value {value:?} for PostgreSQL setting {name}"));
            }
        }
        let bindir = bindir()?;

        let dir = tempdir();
        let socket_dir = dir.create_dir("sock", 0o700);
        let dir = dir.keep();
        let data_dir = dir.join("data");
        // From here on the reaper owns the directory: an early return drops it, which cleans up.
        let reaper = Reaper::spawn("postgres", REAPER_SCRIPT, [&data_dir, &dir])?;
        let mut cluster = Cluster {
            log_path: dir.join("postgres.log"),
            data_dir,
            socket_dir,
            next_db: AtomicU32::new(1),
            startup: Duration::ZERO,
            _reaper: reaper,
        };

        cluster.initdb(&bindir)?;
        cluster.configure(settings)?;
        cluster.pg_ctl_start(&bindir)?;

        cluster.startup = started.elapsed();
        Ok(cluster)
    }

    fn initdb(&self, bindir: &Path) -> Result<(), String> {
        let mut cmd = account().command(bindir.join("initdb"));
        cmd.arg("--pgdata")
            .arg(&self.data_dir)
            .args(["--username=postgres", "--auth-local=trust", "--auth-host=reject"])
            .args(["--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]);
        process::run(&mut cmd, None, "cannot create a PostgreSQL cluster").map(drop)
    }

    /// Appends the base settings and `settings` to `postgresql.conf`, where the last
    /// occurrence of a setting wins.
    fn configure(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let socket_dir = self.socket_dir.to_string_lossy();
        let port = PORT.to_string();
        let mut text = String::from("\n# Added by datapunk-testkit.\n");
        let fixed = [("port", port.as_str()), ("unix_socket_directories", &socket_dir)];
        for (name, value) in BASE_SETTINGS.iter().chain(&fixed).chain(settings) {
            let _ = writeln!(text, "{name} = '{}'", value.replace('\'', "''"));
        }

        let path = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|err| format!("cannot write {}: {err}", path.display()))
    }

    fn pg_ctl_start(&self, bindir: &Path) -> Result<(), String> {
        let mut cmd = account().command(bindir.join("pg_ctl"));
        cmd.arg("start")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_path)
            .args(["--wait", "--timeout=60", "--silent"]);
        process::run(&mut cmd, None, "cannot start PostgreSQL").map(drop).map_err(|err| {
            format!(
                "{err}\n--- end of {} ---\n{}",
                self.log_path.display(),
                process::log_tail(&self.log_path, 30)
            )
        })
    }
}

/// Quotes a libpq connection string value when it needs it.
fn quote_conninfo(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The directory holding `initdb` and `pg_ctl`.
fn bindir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();

    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_tools(dir))
    {
        return Ok(dir);
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .max_by_key(|(version, _)| *version);

    newest.map(|(_, dir)| dir).ok_or_else(|| {
        "cannot find the PostgreSQL server programs (initdb, pg_ctl) on PATH, through \
         `pg_config --bindir` or in /usr/lib/postgresql/*/bin; install the PostgreSQL server \
         (Debian: apt-get install postgresql)"
            .to_owned()
    })
}
