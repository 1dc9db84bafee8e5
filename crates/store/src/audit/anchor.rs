//! The head of the audit chain, kept in a file outside the database.
//!
//! Whoever can act as a superuser can disable the triggers, rewrite rows and recompute every
//! hash after them: the chain then verifies. The anchor file, written by the daemon after
//! each append, still holds the old (id, hash), so [`HeadAnchor::check`] reports the rebuilt
//! chain (or the deleted rows).
//!
//! The file holds one line, `<id> <hash in hex>`, is replaced atomically, is readable by its
//! owner only, and only ever moves forward.
//!
//! Moving forward also buries the evidence: once a rebuilt chain has been appended to and the
//! anchor moved past it, the anchor matches again. A process should therefore
//! [`check`](HeadAnchor::check) the anchor before its first append (the daemon at start),
//! besides `datapunk audit verify` doing so.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use super::Appended;
use crate::Error;

/// The file that anchors the audit chain's head.
#[derive(Clone, Debug)]
pub struct HeadAnchor {
    path: PathBuf,
}

/// How the anchored head compares with the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AnchorCheck {
    /// The anchored row exists and has the anchored hash.
    Matches {
        /// The anchored row's id.
        id: i64,
    },
    /// There is no anchor file yet.
    Missing,
    /// The anchored row is gone: rows were deleted.
    RowMissing {
        /// The anchored row's id.
        id: i64,
    },
    /// The anchored row has another hash: the chain was rebuilt.
    Mismatch {
        /// The anchored row's id.
        id: i64,
    },
}

impl HeadAnchor {
    /// The anchor kept in the file `path`. Nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The anchor file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the anchor to `appended`, unless it already anchors that row or a later one.
    /// Returns whether the file changed.
    ///
    /// The write is atomic (a private temporary file in the same directory, renamed over the
    /// anchor) and concurrent writers are serialised by an exclusive lock on
    /// `<file>.lock`. The directory is created (mode 0700) when missing.
    ///
    /// # Errors
    ///
    /// When the directory, the lock or the file cannot be written, or the present file is
    /// malformed.
    pub fn record(&self, appended: &Appended) -> io::Result<bool> {
        let dir = self.dir();
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock_path())?;
        lock.lock()?;

        if self.load()?.is_some_and(|(id, _)| id >= appended.id) {
            return Ok(false);
        }
        let mut file = tempfile::Builder::new().prefix(".audit-head.").tempfile_in(dir)?;
        writeln!(file, "{} {}", appended.id, hex::encode(appended.hash))?;
        file.as_file().sync_all()?;
        file.persist(&self.path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()?;
        Ok(true)
        // The lock is released when `lock` is dropped.
    }

    /// The anchored (id, hash), or `None` when there is no file yet.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a single `<id> <hex hash>` line.
    pub fn load(&self) -> io::Result<Option<(i64, [u8; 32])>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        parse(&text).map(Some).ok_or_else(|| {
            let message = format!(
                "{} is not an audit anchor (`<id> <sha256 hex>`); move it away and let the \
                 daemon write a new one",
                self.path.display()
            );
            io::Error::new(io::ErrorKind::InvalidData, message)
        })
    }

    /// Compares the anchored head with the database.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; query errors otherwise.
    pub async fn check(&self, client: &Client) -> Result<AnchorCheck, Error> {
        let shown = self.path.display();
        let Some((id, hash)) =
            self.load().map_err(|e| Error::io(format!("cannot read {shown}"), e))?
        else {
            return Ok(AnchorCheck::Missing);
        };
        let row = client.query_opt("SELECT hash FROM datapunk.audit WHERE id = $1", &[&id]).await?;
        Ok(match row {
            None => AnchorCheck::RowMissing { id },
            Some(row) if row.get::<_, &[u8]>(0) == hash => AnchorCheck::Matches { id },
            Some(_) => AnchorCheck::Mismatch { id },
        })
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        self.path.with_file_name(name)
    }
}

fn parse(text: &str) -> Option<(i64, [u8; 32])> {
    let line = text.strip_suffix('\n')?;
    let (id, hash) = line.split_once(' ')?;
    let id = id.parse().ok()?;
    let mut bytes = [0; 32];
    hex::decode_to_slice(hash, &mut bytes).ok()?;
    Some((id, bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn appended(id: i64, byte: u8) -> Appended {
        Appended { id, hash: [byte; 32] }
    }

    #[test]
    fn a_missing_file_loads_as_none() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let anchor = HeadAnchor::new(dir.path().join("audit-head"));
        assert_eq!(anchor.load().expect("a missing file is not an error"), None);
    }

    #[test]
    fn the_anchor_is_one_private_line_and_round_trips() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let anchor = HeadAnchor::new(dir.path().join("state").join("audit-head"));

        assert!(anchor.record(&appended(3, 0xab)).expect("the anchor can be written"));

        let text = fs::read_to_string(anchor.path()).expect("the file exists");
        assert_eq!(text, format!("3 {}\n", "ab".repeat(32)));
        let mode = fs::metadata(anchor.path()).expect("the file exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.path().join("state")).expect("the dir exists");
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
        assert_eq!(anchor.load().expect("the file is readable"), Some((3, [0xab; 32])));
    }

    #[test]
    fn the_anchor_only_moves_forward() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let anchor = HeadAnchor::new(dir.path().join("audit-head"));

        assert!(anchor.record(&appended(5, 1)).expect("the anchor can be written"));
        assert!(!anchor.record(&appended(4, 2)).expect("an older row is ignored"));
        assert!(!anchor.record(&appended(5, 3)).expect("the same row is ignored"));
        assert_eq!(anchor.load().expect("the file is readable"), Some((5, [1; 32])));

        assert!(anchor.record(&appended(6, 4)).expect("a newer row moves the anchor"));
        assert_eq!(anchor.load().expect("the file is readable"), Some((6, [4; 32])));
    }

    #[test]
    fn no_temporary_files_are_left_behind() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let anchor = HeadAnchor::new(dir.path().join("audit-head"));
        for id in 1..=3 {
            anchor.record(&appended(id, 7)).expect("the anchor can be written");
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("the directory can be listed")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit-head", "audit-head.lock"]);
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let anchor = HeadAnchor::new(dir.path().join("audit-head"));
        for text in ["", "12\n", "x abab\n", &format!("1 {}", "ab".repeat(32))] {
            fs::write(anchor.path(), text).expect("the file can be written");
            let error = anchor.load().expect_err("the file is malformed");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(error.to_string().contains("audit-head"));
            assert!(anchor.record(&appended(1, 1)).is_err());
        }
    }
}
