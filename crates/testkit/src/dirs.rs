//! Temporary directories for tests and services, owned by the [`account`](crate::account()).
//!
//! Every directory sits directly under `/tmp` with a name like `/tmp/dpk-Ab12Cd`, whatever
//! `TMPDIR` says: Unix socket paths are limited to 107 bytes, and the sockets of PostgreSQL,
//! D-Bus and the daemon live in these directories. A [`TempDir`] is removed with everything in
//! it when dropped.

use std::fs::{self, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::account::{Account, account};

/// Where temporary directories are made; short on purpose, see the module documentation.
const BASE: &str = "/tmp";

/// A temporary directory, removed with its contents when dropped.
#[derive(Debug)]
pub struct TempDir {
    inner: tempfile::TempDir,
    owner: Account,
}

/// A fresh directory with mode 0700, owned by [`account()`].
///
/// # Panics
///
/// Panics when the directory cannot be created or handed to the account.
pub fn tempdir() -> TempDir {
    tempdir_owned(account(), 0o700)
}

/// A fresh directory with the given mode, owned by [`account()`].
///
/// # Panics
///
/// Panics when the directory cannot be created or handed to the account.
pub fn tempdir_mode(mode: u32) -> TempDir {
    tempdir_owned(account(), mode)
}

/// A fresh directory with the given mode, owned by `owner`, for instance
/// [`other_account()`](crate::other_account()).
///
/// # Panics
///
/// Panics when the directory cannot be created, or cannot be given to `owner` (only root can
/// give it to another user).
pub fn tempdir_owned(owner: &Account, mode: u32) -> TempDir {
    let inner =
        tempfile::Builder::new().prefix("dpk-").rand_bytes(6).tempdir_in(BASE).unwrap_or_else(
            |err| panic!("datapunk-testkit: cannot create a directory in {BASE}: {err}"),
        );
    set_mode(inner.path(), mode);
    owner.chown(inner.path());

    TempDir { inner, owner: owner.clone() }
}

impl TempDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.inner.path().join(name)
    }

    /// Creates the subdirectory `name` with the given mode, owned by this directory's owner, and
    /// returns its path.
    ///
    /// # Panics
    ///
    /// Panics when the subdirectory cannot be created.
    pub fn create_dir(&self, name: impl AsRef<Path>, mode: u32) -> PathBuf {
        let path = self.join(name);
        fs::DirBuilder::new().mode(mode).create(&path).unwrap_or_else(|err| {
            panic!("datapunk-testkit: cannot create directory {}: {err}", path.display())
        });
        set_mode(&path, mode);
        self.owner.chown(&path);
        path
    }

    /// Keeps the directory on disk and returns its path; whoever calls this removes it.
    pub fn keep(self) -> PathBuf {
        self.inner.keep()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// Sets the mode of `path` exactly, regardless of the umask.
fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap_or_else(|err| {
        panic!("datapunk-testkit: cannot set mode {mode:o} on {}: {err}", path.display())
    });
}
