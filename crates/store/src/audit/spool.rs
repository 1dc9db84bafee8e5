//! Audit events waiting for the database: the pending-audit spool.
//!
//! An event that cannot be appended because the database cannot be reached (the usual reason
//! a backup fails) is kept in a file beside the head anchor, and the next process that appends
//! successfully, the CLI or the daemon, appends the kept events first, oldest first.
//!
//! - [`Spool`] is the file; [`Spool::lock`] gives the [`SpoolLock`] through which it is read
//!   and written.
//! - [`Deferred`] is one kept event: a random id, the time it happened, and the [`Event`].
//!   [`Deferred::to_event`] is what is appended for it.
//! - [`appended_ids`] says which kept events the table holds already.
//!
//! The file holds one JSON object per line, is readable by its owner only (0600, in a 0700
//! directory) and holds what the rows would hold: ids, counts, paths, never a secret.
//!
//! Two rules keep the chain free of duplicates. Every process that writes or flushes the file
//! holds an exclusive lock on `<file>.lock` while it does, so two flushers never append the
//! same entry. And each row appended from the spool names its entry's id in
//! `details.deferred.id`, so that a flusher that stopped between appending and emptying the
//! file (a crash, a kill) leaves nothing for the next one to append twice: the next one skips
//! the ids the table holds.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Client;

use super::{Event, Outcome, check_event};
use crate::Error;

/// The most the file may hold. A database that stays away long enough to fill it loses the
/// later events to journald alone, rather than growing a file without bound.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// How often [`Spool::lock`] tries the lock again while another process holds it.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The file of events waiting for the database; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct Spool {
    path: PathBuf,
}

/// The spool, locked against every other process that reads or writes it. The lock is
/// released when this is dropped.
#[derive(Debug)]
pub struct SpoolLock<'a> {
    spool: &'a Spool,
    _lock: File,
}

/// An event kept for later.
#[derive(Clone, Debug, PartialEq)]
pub struct Deferred {
    /// 32 lowercase hex digits, random: names the entry in the row it becomes.
    pub id: String,
    /// When the event happened.
    pub recorded_at: OffsetDateTime,
    /// The event.
    pub event: Event,
}

/// What [`SpoolLock::entries`] read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entries {
    /// The events, oldest first.
    pub deferred: Vec<Deferred>,
    /// Lines that are not a valid entry, such as a line cut short by a crash while it was
    /// written. They are left out.
    pub unreadable: usize,
}

/// One line of the file. Fields a later version may add are ignored rather than refused, so
/// that its entries still reach the chain.
#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
    component: String,
    action: String,
    integration: Option<String>,
    dataset: Option<String>,
    outcome: String,
    details: serde_json::Value,
}

impl Deferred {
    /// The event as it is appended: its details with `deferred` added, an object holding the
    /// entry's `id` and the time it happened (`recorded_at`, RFC 3339). The row's own time is
    /// when it was appended.
    pub fn to_event(&self) -> Event {
        let mut event = self.event.clone();
        let recorded_at = self
            .recorded_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let deferred = serde_json::json!({ "id": self.id, "recorded_at": recorded_at });
        if let Some(details) = event.details.as_object_mut() {
            details.insert("deferred".to_owned(), deferred);
        }
        event
    }

    fn to_line(&self) -> Line {
        let event = &self.event;
        Line {
            id: self.id.clone(),
            recorded_at: self.recorded_at,
            component: event.component.clone(),
            action: event.action.clone(),
            integration: event.integration.clone(),
            dataset: event.dataset.clone(),
            outcome: event.outcome.as_str().to_owned(),
            details: event.details.clone(),
        }
    }

    fn from_line(line: Line) -> Option<Self> {
        let event = Event {
            component: line.component,
            action: line.action,
            integration: line.integration,
            dataset: line.dataset,
            outcome: Outcome::parse(&line.outcome)?,
            details: line.details,
        };
        let deferred = Self { id: line.id, recorded_at: line.recorded_at, event };
        deferred.check().ok()?;
        Some(deferred)
    }

    /// Refuses what could never be appended, so that one bad entry cannot hold up the rest.
    fn check(&self) -> Result<(), Error> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if self.id.len() != 32 || !self.id.chars().all(hex) {
            let reason = format!("deferred id {:?} is not 32 lowercase hex digits", self.id);
            return Err(Error::InvalidEvent { reason });
        }
        check_event(&self.event)
    }
}

impl Spool {
    /// The spool kept in the file `path`. Nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when nothing waits: there is no file, or it is empty. Takes no lock, so an entry
    /// written at this moment may be missed; the next append finds it.
    pub fn is_empty(&self) -> bool {
        fs::metadata(&self.path).map_or(true, |meta| meta.len() == 0)
    }

    /// Takes the exclusive lock on `<file>.lock`, trying for up to `wait`. The directory is
    /// created (mode 0700) when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory or the lock file cannot be made, or when another
    /// process keeps the lock for longer than `wait` (kind [`io::ErrorKind::WouldBlock`]).
    pub async fn lock(&self, wait: Duration) -> Result<SpoolLock<'_>, Error> {
        let dir = self.dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let lock_path = self.lock_path();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("cannot open {}", lock_path.display()), e))?;

        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(SpoolLock { spool: self, _lock: lock }),
                Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(TryLockError::WouldBlock) => {
                    let context = format!(
                        "the audit spool {} stayed locked by another process for {wait:?}",
                        self.path.display()
                    );
                    return Err(Error::io(context, io::ErrorKind::WouldBlock.into()));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io(format!("cannot lock {}", lock_path.display()), e));
                }
            }
        }
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

impl SpoolLock<'_> {
    /// Adds `deferred` at the end of the file (created 0600 when missing) and flushes it to
    /// disk.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEvent`] for an entry that could never be appended to the table;
    /// [`Error::Io`] when the file cannot be written or would grow past [`MAX_BYTES`].
    pub fn push(&self, deferred: &Deferred) -> Result<(), Error> {
        deferred.check()?;
        let path = self.spool.path();
        let mut line = serde_json::to_vec(&deferred.to_line()).map_err(|e| Error::Data {
            reason: format!("cannot encode a deferred audit event: {e}"),
        })?;
        line.push(b'\n');

        let size = fs::metadata(path).map_or(0, |meta| meta.len());
        if size + line.len() as u64 > MAX_BYTES {
            let context = format!("the audit spool {} is full ({MAX_BYTES} bytes)", path.display());
            return Err(Error::io(context, io::Error::other("spool full")));
        }
        let created = size == 0;
        let write = || {
            let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
            file.write_all(&line)?;
            file.sync_all()?;
            if created {
                File::open(self.spool.dir())?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    /// The entries, oldest first; lines that are not valid entries are counted and left out.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file exists but cannot be read.
    pub fn entries(&self) -> Result<Entries, Error> {
        let path = self.spool.path();
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entries::default()),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let mut entries = Entries::default();
        for line in text.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            match serde_json::from_slice(line).ok().and_then(Deferred::from_line) {
                Some(deferred) => entries.deferred.push(deferred),
                None => entries.unreadable += 1,
            }
        }
        Ok(entries)
    }

    /// Removes the file, once its entries are in the table.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be removed.
    pub fn clear(&self) -> Result<(), Error> {
        let path = self.spool.path();
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
        let dir = self.spool.dir();
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(format!("cannot flush {}", dir.display()), e))
    }
}

/// Which of `ids` name a row of the audit table already (in `details.deferred.id`).
///
/// It reads the whole table, which happens only when the spool holds something.
///
/// # Errors
///
/// Query errors.
pub async fn appended_ids(client: &Client, ids: &[&str]) -> Result<HashSet<String>, Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = client
        .query(
            "SELECT details->'deferred'->>'id' FROM datapunk.audit
              WHERE details->'deferred'->>'id' = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use serde_json::json;

    use super::*;

    fn deferred(n: u8) -> Deferred {
        Deferred {
            id: format!("{n:032x}"),
            recorded_at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(n))
                .expect("the time is valid"),
            event: Event {
                component: "cli".into(),
                action: "backup.create".into(),
                integration: None,
                dataset: Some("calendar".into()),
                outcome: Outcome::Failure,
                details: json!({ "step": "pg_dump", "n": n }),
            },
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("the path exists").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn entries_come_back_in_order_from_a_private_file() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = Spool::new(dir.path().join("state").join("audit-pending"));
        assert!(spool.is_empty());

        let lock = spool.lock(Duration::ZERO).await.expect("the lock is free");
        for n in 1..=3 {
            lock.push(&deferred(n)).expect("the entry is written");
        }

        assert!(!spool.is_empty());
        let entries = lock.entries().expect("the file is readable");
        assert_eq!(entries.deferred, [deferred(1), deferred(2), deferred(3)]);
        assert_eq!(entries.unreadable, 0);
        assert_eq!(mode(spool.path()), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);

        lock.clear().expect("the file is removed");
        assert!(spool.is_empty());
        assert_eq!(lock.entries().expect("no file is no entries"), Entries::default());
    }

    #[tokio::test]
    async fn a_line_cut_short_is_left_out_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = Spool::new(dir.path().join("audit-pending"));
        let lock = spool.lock(Duration::ZERO).await.expect("the lock is free");
        lock.push(&deferred(1)).expect("the entry is written");
        let mut text = fs::read(spool.path()).expect("the file exists");
        let whole = text.clone();
        text.extend_from_slice(&whole[..whole.len() / 2]);
        text.push(b'\n');
        text.extend_from_slice(&whole);
        fs::write(spool.path(), text).expect("the file can be written");

        let entries = lock.entries().expect("the file is readable");

        assert_eq!(entries.deferred, [deferred(1), deferred(1)]);
        assert_eq!(entries.unreadable, 1);
    }

    #[tokio::test]
    async fn entries_that_could_never_be_appended_are_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = Spool::new(dir.path().join("audit-pending"));
        let lock = spool.lock(Duration::ZERO).await.expect("the lock is free");

        let bad_id = Deferred { id: "not-hex".into(), ..deferred(1) };
        let mut bad_action = deferred(2);
        bad_action.event.action = "Backup Create".into();
        for bad in [bad_id, bad_action] {
            assert!(matches!(lock.push(&bad), Err(Error::InvalidEvent { .. })));
        }
        assert!(spool.is_empty());
    }

    #[tokio::test]
    async fn a_second_process_waits_for_the_lock_and_then_gives_up() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = Spool::new(dir.path().join("audit-pending"));
        let held = spool.lock(Duration::ZERO).await.expect("the lock is free");

        // Another open file description contends like another process would.
        let error = spool.lock(Duration::from_millis(120)).await.expect_err("the lock is held");
        assert!(
            matches!(&error, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
        );
        assert!(error.to_string().contains("audit-pending"), "{error}");

        drop(held);
        spool.lock(Duration::ZERO).await.expect("the lock is free again");
    }

    #[tokio::test]
    async fn the_spool_refuses_to_grow_past_its_limit() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = Spool::new(dir.path().join("audit-pending"));
        let lock = spool.lock(Duration::ZERO).await.expect("the lock is free");
        let mut big = deferred(1);
        big.event.details = json!({ "error": "x".repeat(MAX_BYTES as usize / 2) });

        lock.push(&big).expect("the first half fits");
        assert!(matches!(lock.push(&big), Err(Error::Io { .. })));
        assert_eq!(lock.entries().expect("readable").deferred.len(), 1);
    }

    #[test]
    fn an_appended_event_names_its_entry_and_keeps_its_time() {
        let event = deferred(7).to_event();

        assert_eq!(event.details["step"], "pg_dump");
        assert_eq!(event.details["deferred"]["id"], format!("{:032x}", 7));
        assert_eq!(event.details["deferred"]["recorded_at"], "2023-11-14T22:13:27Z");
        assert_eq!(event.action, "backup.create");
    }
}
