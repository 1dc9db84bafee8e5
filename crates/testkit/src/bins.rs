//! The workspace's binaries, `datapunkd` and `datapunk`, ready to run as the account.
//!
//! Cargo builds an integration test's own package's binaries before running it, but not those
//! of other packages, so the tests use the binaries that `cargo build --workspace --bins` left
//! next to the test executable: a test runs as `target/<profile>/deps/<test>-<hash>` and the
//! binaries sit in `target/<profile>/`.
//!
//! The checkout may lie under a directory the unprivileged account cannot enter (root's home, for
//! one), so [`bin`] copies each binary, once per test process, into a directory of mode 0755
//! under `/tmp` that the test process owns. The copy also keeps a concurrent rebuild from
//! changing a binary in the middle of a test. A reaper removes the directory when the test
//! process exits.

use std::collections::HashMap;
use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::reaper::Reaper;

/// Binaries copied so far by this process.
#[derive(Debug)]
struct Copies {
    dir: PathBuf,
    paths: HashMap<String, PathBuf>,
    _reaper: Reaper,
}

static COPIES: Mutex<Option<Copies>> = Mutex::new(None);

/// The path of the workspace binary `name`, executable by [`account()`](crate::account()).
///
/// # Panics
///
/// Panics when the binary has not been built, telling how to build it, or when it cannot be
/// copied.
pub fn bin(name: &str) -> PathBuf {
    let source = build_dir().join(name);
    if !source.is_file() {
        panic!(
            "datapunk-testkit: the binary {name:?} is not at {}; build them first with \
             `cargo build --workspace --bins{}` (the profile of the tests or benchmarks)",
            source.display(),
            if source.components().any(|c| c.as_os_str() == "release") { " --release" } else { "" }
        );
    }

    // A panic while holding the lock leaves the map consistent: entries are added last.
    let mut copies = COPIES.lock().unwrap_or_else(PoisonError::into_inner);
    let copies = copies.get_or_insert_with(new_copies);
    if let Some(path) = copies.paths.get(name) {
        return path.clone();
    }

    let target = copies.dir.join(name);
    fs::copy(&source, &target).unwrap_or_else(|err| {
        panic!("datapunk-testkit: cannot copy {} to {}: {err}", source.display(), target.display())
    });
    fs::set_permissions(&target, Permissions::from_mode(0o755)).unwrap_or_else(|err| {
        panic!("datapunk-testkit: cannot make {} executable: {err}", target.display())
    });
    copies.paths.insert(name.to_owned(), target.clone());
    target
}

/// The directory holding the binaries of the profile the running test was built with.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|err| panic!("datapunk-testkit: cannot find the test executable: {err}"));
    let dir = exe.parent().unwrap_or(Path::new("/"));
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// Creates the directory the binaries are copied to, and its reaper.
fn new_copies() -> Copies {
    let dir = tempfile::Builder::new()
        .prefix("dpk-bin-")
        .rand_bytes(6)
        .tempdir_in("/tmp")
        .unwrap_or_else(|err| panic!("datapunk-testkit: cannot create a directory in /tmp: {err}"))
        .keep();
    let reaper = Reaper::spawn("bins", r#"rm -rf -- "$1""#, [&dir])
        .unwrap_or_else(|err| panic!("datapunk-testkit: {err}"));
    fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap_or_else(|err| {
        panic!("datapunk-testkit: cannot set mode 755 on {}: {err}", dir.display())
    });

    Copies { dir, paths: HashMap::new(), _reaper: reaper }
}
