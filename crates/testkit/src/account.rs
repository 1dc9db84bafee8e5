//! The unprivileged account that services and the daemon under test run as.
//!
//! PostgreSQL refuses to run as root, and so does `datapunkd`. When the tests run as root, as
//! they do in CI, [`account`] is the system user `datapunk-test`, created on first use, and
//! every service the harness starts runs as that user; [`other_account`] is a second system
//! user, `datapunk-other`, for tests that check one user cannot reach another's files or
//! sockets. When the tests run as a normal user, [`account`] is that user and there is no
//! second account, because only root can switch users.
//!
//! [`Account::command`] builds a [`Command`] that runs as the account.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process;

/// Name of the system user that tests run services as when they run as root.
pub const ACCOUNT_NAME: &str = "datapunk-test";

/// Name of the second system user, for tests about access by another user.
pub const OTHER_ACCOUNT_NAME: &str = "datapunk-other";

/// A Unix user account, as found in the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory, as recorded in the user database; it may not exist.
    pub home: PathBuf,
}

/// Whether the test process runs as root (effective user id 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The account that services and the daemon run as: `datapunk-test` when the tests run as root,
/// otherwise the current user.
///
/// # Panics
///
/// Panics when running as root and the system user can neither be found nor created with
/// `useradd`, or when the current user cannot be determined.
pub fn account() -> &'static Account {
    static ACCOUNT: OnceLock<Account> = OnceLock::new();

    ACCOUNT.get_or_init(|| {
        let found = if is_root() { ensure_system_user(ACCOUNT_NAME) } else { current_user() };
        found.unwrap_or_else(|err| panic!("datapunk-testkit: {err}"))
    })
}

/// A second unprivileged account, different from [`account`], when running as root; `None`
/// otherwise.
///
/// # Panics
///
/// Panics when running as root and the system user `datapunk-other` can neither be found nor
/// created.
pub fn other_account() -> Option<&'static Account> {
    static OTHER: OnceLock<Option<Account>> = OnceLock::new();

    OTHER
        .get_or_init(|| {
            is_root().then(|| {
                ensure_system_user(OTHER_ACCOUNT_NAME)
                    .unwrap_or_else(|err| panic!("datapunk-testkit: {err}"))
            })
        })
        .as_ref()
}

impl Account {
    /// Whether this account is the one the test process runs as.
    pub fn is_current(&self) -> bool {
        self.uid == rustix::process::geteuid().as_raw()
    }

    /// A command that runs `program` as this account.
    ///
    /// For the current user this is a plain [`Command::new`]. For another account (only possible
    /// as root) the command switches user and group ids, which also drops root's supplementary
    /// groups, sets `USER`, `LOGNAME` and `HOME` to the account's, and starts in `/`, since the
    /// test's working directory may be one the account cannot enter. The caller may override any
    /// of these.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        if !self.is_current() {
            cmd.uid(self.uid)
                .gid(self.gid)
                .current_dir("/")
                .env("USER", &self.name)
                .env("LOGNAME", &self.name)
                .env("HOME", &self.home);
        }
        cmd
    }

    /// Makes this account the owner of `path` (user and primary group) when running as root;
    /// does nothing otherwise, since everything a normal user creates is already theirs.
    ///
    /// # Panics
    ///
    /// Panics when the ownership cannot be changed.
    pub fn chown(&self, path: &Path) {
        if is_root() {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap_or_else(|err| {
                panic!("datapunk-testkit: cannot chown {} to {}: {err}", path.display(), self.name)
            });
        }
    }
}

/// Finds the system user `name`, creating it if needed.
///
/// Another test process may be creating the same user at the same moment, so `useradd` failing
/// because the name is taken or the user database is locked is not an error: the user is looked
/// up again until it appears.
fn ensure_system_user(name: &str) -> Result<Account, String> {
    let mut last_error = String::new();
    for _ in 0..50 {
        if let Some(found) = lookup(name)? {
            return Ok(found);
        }
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]);
        let what = format!("cannot create the system user {name}");
        if let Err(err) = process::run(&mut useradd, None, &what) {
            last_error = err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last_error)
}

/// The user the test process runs as.
fn current_user() -> Result<Account, String> {
    let uid = rustix::process::geteuid().as_raw();
    if let Some(found) = lookup(&uid.to_string())? {
        return Ok(found);
    }

    // Not in the user database (some containers): fall back on the environment.
    Ok(Account {
        name: std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
        uid,
        gid: rustix::process::getegid().as_raw(),
        home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
    })
}

/// Looks up a user by name or numeric id with `getent passwd`; `None` if there is no such user.
fn lookup(key: &str) -> Result<Option<Account>, String> {
    let what = format!("cannot look up the user {key}");
    let output = Command::new("getent")
        .args(["passwd", key])
        .output()
        .map_err(|err| format!("{what}: cannot run getent: {err}"))?;
    // getent exits with 2 when the key is not found.
    if output.status.code() == Some(2) {
        return Ok(None);
    }
    if !output.status.success() {
        return Err(format!("{what}: getent failed with {}", output.status));
    }

    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    match fields.as_slice() {
        [name, _, uid, gid, _, home, ..] => Ok(Some(Account {
            name: (*name).to_owned(),
            uid: uid.parse().map_err(|_| format!("{what}: bad uid in {line:?}"))?,
            gid: gid.parse().map_err(|_| format!("{what}: bad gid in {line:?}"))?,
            home: PathBuf::from(home),
        })),
        _ => Err(format!("{what}: unexpected getent output {line:?}")),
    }
}
