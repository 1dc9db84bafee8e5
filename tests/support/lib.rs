//! What the workspace's integration tests (`tests/*.rs`) share: a throwaway Datapunk setup
//! with its configuration file, and the `datapunk` and `datapunkd` binaries run inside it as
//! the test account.
//!
//! This package carries only tests; the harness for real services is `datapunk-testkit`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use datapunk_testkit::{Cluster, NotifySocket, TempDir, account, bin, cluster};
use rustix::process::{Pid, Signal};
use tokio_postgres::Client;

/// The four roles `datapunk db init` creates.
pub const ROLES: [&str; 4] =
    ["datapunk_owner", "datapunk_app", "datapunk_reader", "datapunk_backup"];

/// One Datapunk installation in a temporary directory: a home with XDG directories, a
/// configuration file and a database.
pub struct Setup {
    dir: TempDir,
    /// The configuration file.
    pub config: PathBuf,
    /// The database's name.
    pub db_name: String,
    managed: bool,
}

impl Setup {
    /// A setup on the shared test cluster in external mode, with a database name of its own
    /// that does not exist yet (`datapunk db init` creates it).
    pub fn external() -> Self {
        let cluster = cluster();
        let db_name = cluster.unique_db_name("dp");
        let conninfo = cluster.conninfo("datapunk_app", &db_name);
        let database = format!(
            "[database]\nmode = \"external\"\nname = \"{db_name}\"\nconninfo = \"{conninfo}\"\n"
        );
        Self::with_database(db_name, &database, false)
    }

    /// A setup in external mode on a database `db_name` that `conninfo` reaches, with more
    /// `[database]` keys in `extra`.
    pub fn external_with(db_name: &str, conninfo: &str, extra: &str) -> Self {
        let database = format!(
            "[database]\nmode = \"external\"\nname = \"{db_name}\"\nconninfo = \"{conninfo}\"\n{extra}"
        );
        Self::with_database(db_name.to_owned(), &database, false)
    }

    /// Writes `content` to the file `name` in the setup's directory, 0600 and owned by the
    /// test account, and returns its path.
    pub fn write_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the file");
        account().chown(&path);
        path
    }

    /// A setup whose daemon runs its own cluster under the setup's data directory.
    pub fn managed() -> Self {
        Self::with_database("datapunk".to_owned(), "[database]\nmode = \"managed\"\n", true)
    }

    fn with_database(db_name: String, database: &str, managed: bool) -> Self {
        let dir = datapunk_testkit::tempdir();
        for sub in ["home", "run", "config"] {
            dir.create_dir(sub, 0o700);
        }
        let config = dir.join("config/config.toml");
        let text = format!(
            "[daemon]\nruntime_dir = \"{}\"\n\n{database}",
            dir.join("run/datapunk").display()
        );
        write_as_account(&config, &text);
        Self { dir, config, db_name, managed }
    }

    /// The setup's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the daemon keeps state (the audit anchor).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("home/.local/state/datapunk")
    }

    /// The managed cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("home/.local/share/datapunk/postgresql")
    }

    /// The runtime directory holding the control socket.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run/datapunk")
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir().join("control.sock")
    }

    /// Replaces the configuration file's content.
    pub fn write_config(&self, text: &str) {
        write_as_account(&self.config, text);
    }

    /// A command for `program` (`datapunk` or `datapunkd`) as the test account, with a clean
    /// environment pointing at this setup.
    pub fn command(&self, program: &str) -> Command {
        let program = if program.starts_with("datapunk") { bin(program) } else { program.into() };
        let mut cmd = account().command(program);
        cmd.env_clear()
            .env("PATH", path_with_postgres())
            .env("HOME", self.dir.join("home"))
            .env("LANG", "C.UTF-8")
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("DATAPUNK_CONFIG", &self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `datapunk ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command("datapunk")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run datapunk {args:?}: {e}"))
    }

    /// Runs `datapunk ARGS` and insists on success, returning standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "datapunk {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `datapunk db init` as the test cluster's superuser (external mode) or on the managed
    /// cluster.
    pub fn init(&self) -> Output {
        if self.managed {
            return self.cli(&["db", "init"]);
        }
        let admin = cluster().conninfo("postgres", "postgres");
        self.cli(&["db", "init", "--admin-url", &admin])
    }

    /// Starts `datapunkd`, reporting to `notify` when given, with extra environment.
    pub fn spawn_daemon(&self, notify: Option<&NotifySocket>, envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.command("datapunkd");
        if let Some(notify) = notify {
            cmd.env("NOTIFY_SOCKET", notify.path());
        }
        cmd.envs(envs.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start datapunkd: {e}"));
        Daemon { child: Some(child) }
    }

    /// Starts `datapunkd` from a shell that first sets `umask`, to show the daemon's own mask
    /// wins.
    pub fn spawn_daemon_with_umask(&self, umask: &str, notify: &NotifySocket) -> Daemon {
        let mut cmd = self.command("sh");
        cmd.arg("-c").arg(format!("umask {umask}; exec \"$0\"")).arg(bin("datapunkd"));
        cmd.env("NOTIFY_SOCKET", notify.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start datapunkd: {e}"));
        Daemon { child: Some(child) }
    }

    /// A superuser connection to this setup's database on the shared test cluster.
    pub async fn admin(&self) -> Client {
        assert!(!self.managed, "admin connections are for setups on the shared test cluster");
        cluster().admin_client(&self.db_name).await
    }

    /// Connects to this setup's database as `user` on the shared test cluster.
    ///
    /// # Errors
    ///
    /// The server's refusal, for tests that expect one.
    pub async fn connect_as(&self, user: &str) -> Result<Client, tokio_postgres::Error> {
        let conninfo = cluster().conninfo(user, &self.db_name);
        let (client, connection) =
            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// A running `datapunkd`, killed if a test forgets it.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid() as i32).expect("a child's pid is positive");
        rustix::process::kill_process(pid, signal).expect("the daemon can be signalled");
    }

    /// Waits for the daemon to exit on its own within `timeout`; returns its status, how long
    /// it took, and what it wrote to standard error.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, Duration, String) {
        let mut child = self.child.take().expect("a daemon is waited for once");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on the daemon") {
                let output = child.wait_with_output().expect("collect the daemon's output");
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                return (status, start.elapsed(), stderr);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let output = child.wait_with_output().expect("collect the daemon's output");
                panic!(
                    "datapunkd did not exit within {timeout:?}; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to 5 s for exit status 0.
    pub fn stop(self) -> Duration {
        self.signal(Signal::TERM);
        let (status, took, stderr) = self.wait(Duration::from_secs(5));
        assert!(status.success(), "datapunkd exited with {status} on SIGTERM; stderr:\n{stderr}");
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster of its own on which every role but `postgres` logs in with a SCRAM password, as
/// on the NixOS module's PostgreSQL container; `settings` adds server settings. The directory
/// holding its `pg_hba.conf` comes with it and must live as long.
pub fn scram_cluster(settings: &[(&str, &str)]) -> (Cluster, TempDir) {
    let dir = datapunk_testkit::tempdir();
    let hba = dir.join("pg_hba.conf");
    fs::write(&hba, "local all postgres trust\nlocal all all scram-sha-256\n")
        .expect("write pg_hba.conf");
    account().chown(&hba);
    let hba_file = hba.display().to_string();
    let mut all = vec![("hba_file", hba_file.as_str()), ("password_encryption", "scram-sha-256")];
    all.extend_from_slice(settings);
    (Cluster::start_with(&all), dir)
}

/// `PATH` with PostgreSQL's server binaries, which Debian keeps out of it.
pub fn path_with_postgres() -> String {
    let mut path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        dirs.sort();
        if let Some(newest) = dirs.iter().rev().find(|d| d.join("initdb").exists()) {
            path = format!("{path}:{}", newest.display());
        }
    }
    path
}

fn write_as_account(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod the file");
    account().chown(path);
}

/// Every file and directory under `root` whose mode is not 0600 (files) or 0700
/// (directories), skipping sockets and symlinks.
pub fn loose_modes(root: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::FileTypeExt;
    let mut loose = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
            let kind = meta.file_type();
            let mode = meta.permissions().mode() & 0o777;
            if kind.is_dir() {
                if mode != 0o700 {
                    loose.push((entry.path(), mode));
                }
                stack.push(entry.path());
            } else if (kind.is_file() && mode != 0o600) || (kind.is_socket() && mode & 0o077 != 0) {
                loose.push((entry.path(), mode));
            }
        }
    }
    loose
}

/// Every file under `dir` whose content holds `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let kind = fs::symlink_metadata(&path).map(|meta| meta.file_type());
            match kind {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => match fs::read(&path) {
                    Ok(content) if memchr::memmem::find(&content, needle).is_some() => {
                        hits.push(path);
                    }
                    Ok(_) => {}
                    // The server removes temporary files as it likes.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => panic!("cannot read {}: {err}", path.display()),
                },
                _ => {}
            }
        }
    }
    hits
}
