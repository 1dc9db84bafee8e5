//! Process-wide safety: the file-creation mask, refusing root, and private directories.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::Mode;
use rustix::process::{geteuid, getuid};

/// Sets the file-creation mask to 077 so that every file is 0600 and every directory 0700,
/// whatever umask the process was started with. Call it first.
pub fn restrict_umask() {
    rustix::process::umask(Mode::from_raw_mode(0o077));
}

/// The real and effective user id of this process.
pub fn uid() -> u32 {
    getuid().as_raw()
}

/// Why the daemon will not run as root.
pub const ROOT_REFUSAL: &str = "datapunkd refuses to run as root: it keeps one person's data \
     and must run as that person (a systemd user service, or the dedicated account the NixOS \
     module creates)";

/// True when the real or effective user is root.
pub fn is_root() -> bool {
    getuid().is_root() || geteuid().is_root()
}

/// The name of the user this process runs as, for PostgreSQL's peer authentication map.
///
/// # Errors
///
/// When the user database has no entry for our uid.
pub fn user_name() -> io::Result<String> {
    let uid = nix::unistd::Uid::current();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.name),
        Ok(None) => Err(io::Error::other(format!("uid {uid} has no entry in the user database"))),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Creates `dir` and its missing parents with mode 0700, and makes sure `dir` itself is 0700
/// and owned by us, so that nobody else can reach what is put in it.
///
/// # Errors
///
/// When the directory cannot be created, or exists but belongs to another user.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.uid() != uid() {
        let message = format!("{} belongs to uid {}, not to us", dir.display(), meta.uid());
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
    }
    if meta.mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    }
    Ok(())
}
