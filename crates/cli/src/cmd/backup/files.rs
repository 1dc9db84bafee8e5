//! The backup directory: file names, the manifest beside each backup, and listing.
//!
//! A backup is `datapunk-<UTC time>.dump.gpg`; its manifest is the same name with
//! `.manifest.json` for `.dump.gpg`. Nothing else in the directory is a backup, so `prune`
//! never touches a file Datapunk did not name.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The `format` field of a manifest.
pub(crate) const MANIFEST_FORMAT: &str = "datapunk-backup-manifest";

/// The manifest version this build writes and reads.
pub(crate) const MANIFEST_VERSION: u32 = 1;

const PREFIX: &str = "datapunk-";
const SUFFIX: &str = ".dump.gpg";
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The time in a backup's name, to the millisecond so that two backups in one second keep
/// apart; it sorts as text in time order.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");

/// What is known of a backup when it is written: enough to check the file without opening it,
/// and to check a restore against the database it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub(crate) format: String,
    /// [`MANIFEST_VERSION`].
    pub(crate) version: u32,
    /// When the dump's snapshot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created_at: OffsetDateTime,
    /// The encrypted file's size in bytes.
    pub(crate) size: u64,
    /// The encrypted file's SHA-256, in hexadecimal.
    pub(crate) sha256: String,
    /// The fingerprints the file is encrypted to; empty for a passphrase.
    pub(crate) recipients: Vec<String>,
    /// Whether a passphrase (symmetric encryption) protects it instead.
    pub(crate) symmetric: bool,
    /// The database that was dumped.
    pub(crate) database: DatabaseFacts,
    /// The rows of each table, as `schema.table`, in the dump's snapshot.
    pub(crate) tables: BTreeMap<String, i64>,
    /// The programs that made it.
    pub(crate) tools: Tools,
}

/// The dumped database.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseFacts {
    /// Its name.
    pub(crate) name: String,
    /// `pg_database_size`, in bytes.
    pub(crate) size: i64,
    /// The schema version (the newest migration applied).
    pub(crate) schema_version: u32,
    /// The server's version.
    pub(crate) server_version: String,
}

/// The versions of the programs that made a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tools {
    /// Datapunk's.
    pub(crate) datapunk: String,
    /// `pg_dump --version`.
    pub(crate) pg_dump: String,
    /// The first line of `gpg --version`.
    pub(crate) gpg: String,
}

/// A backup found in a directory.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The encrypted file.
    pub(crate) path: PathBuf,
    /// The time in its name.
    pub(crate) time: OffsetDateTime,
}

impl Entry {
    /// The manifest that belongs to this backup.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        manifest_path(&self.path)
    }
}

/// The name of a backup made at `time`.
pub(crate) fn file_name(time: OffsetDateTime) -> anyhow::Result<String> {
    let stamp = time.format(STAMP).context("cannot format the backup's time")?;
    Ok(format!("{PREFIX}{stamp}{SUFFIX}"))
}

/// The manifest path of the backup at `path`.
pub(crate) fn manifest_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(SUFFIX).unwrap_or(&name);
    path.with_file_name(format!("{stem}{MANIFEST_SUFFIX}"))
}

/// The time in a backup's file name, if it is one.
fn parse_name(name: &str) -> Option<OffsetDateTime> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    time::PrimitiveDateTime::parse(stamp, STAMP).ok().map(|t| t.assume_utc())
}

/// The backups in `dir`, newest first. A missing directory holds none.
///
/// # Errors
///
/// When the directory cannot be read.
pub(crate) fn list(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(time) = name.to_str().and_then(parse_name) else { continue };
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            found.push(Entry { path: entry.path(), time });
        }
    }
    found.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.path.cmp(&a.path)));
    Ok(found)
}

/// Reads the manifest at `path`.
///
/// # Errors
///
/// When it is missing, unreadable or not a manifest this build reads.
pub(crate) fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text =
        fs::read(path).with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        anyhow::bail!("{} is not a backup manifest", path.display());
    }
    if manifest.version != MANIFEST_VERSION {
        anyhow::bail!(
            "the manifest {} has version {}, newer than this Datapunk reads; upgrade Datapunk",
            path.display(),
            manifest.version
        );
    }
    Ok(manifest)
}

/// The size and SHA-256 (hexadecimal) of the file at `path`.
///
/// # Errors
///
/// When it cannot be read.
pub(crate) fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read =
            file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Checks the backup at `path` against its manifest: present, same size, same SHA-256.
///
/// # Errors
///
/// A sentence naming the difference.
pub(crate) fn check_against_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let manifest = read_manifest(&manifest_path(path))?;
    let (size, sha256) = digest(path)?;
    if size != manifest.size {
        anyhow::bail!(
            "{} has {size} bytes but its manifest says {}: the file is truncated or was changed",
            path.display(),
            manifest.size
        );
    }
    if sha256 != manifest.sha256 {
        anyhow::bail!(
            "the SHA-256 of {} differs from its manifest's: the file was changed or damaged",
            path.display()
        );
    }
    Ok(manifest)
}

/// Creates `dir` with mode 0700 if it is missing. An existing directory must be ours; group
/// and other permissions are taken away from it, nothing is added (a directory the owner made
/// read-only stays so, and writing into it then fails).
///
/// # Errors
///
/// When it cannot be created, belongs to another user, or cannot be tightened.
pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let uid = datapunk_daemon::process::uid();
    if meta.uid() != uid {
        anyhow::bail!("{} belongs to uid {}, not to this user ({uid})", dir.display(), meta.uid());
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// Flushes `dir` itself, so that a rename inside it survives a crash.
///
/// # Errors
///
/// When the directory cannot be opened or synced.
pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot flush the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_time_and_sort_by_it() {
        let time = time::macros::datetime!(2026-12-04 10:23:34.512 UTC);
        let name = file_name(time).expect("a name");
        assert_eq!(name, "datapunk-20261204T102334.512Z.dump.gpg");
        assert_eq!(parse_name(&name), Some(time));
        assert_eq!(
            manifest_path(Path::new(&name)),
            PathBuf::from("datapunk-20261204T102334.512Z.manifest.json")
        );
        for other in ["datapunk-x.dump.gpg", "notes.txt", ".datapunk-1.partial", &name[1..]] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }
}
