//! A real systemd-journald, written to over its native socket and read back with `journalctl`.
//!
//! [`journal`] makes sure a journald listens on `/run/systemd/journal/socket`, the socket that
//! `sd_journal_send` and `tracing-journald` write to. On a machine run by systemd that is the
//! system's own journald. Where nothing listens there (a container without systemd, as in CI)
//! and the tests run as root, the harness starts Debian's standalone
//! `/lib/systemd/systemd-journald`, which keeps a volatile journal under `/run/log/journal`. That
//! journald is detached into its own process group: it outlives the test binary and is reused
//! by the next one, as the system's journald would be.
//!
//! The journal keeps entries from earlier runs, so tests should match on something unique to
//! them, such as the `_PID` of the process they started or a field value they chose.
//!
//! [`Journal::entries`] runs `journalctl -o json`, which prints a field whose value is not
//! printable UTF-8 as an array of bytes and a field that occurs more than once as an array of
//! values. Byte arrays that hold valid UTF-8 are turned back into strings here.
//!
//! As a normal user, `journalctl` shows only the user's own entries unless the user is in the
//! `systemd-journal` group; that is enough to read back a daemon run as the same user.

use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::account::is_root;
use crate::process;

/// The socket of journald's native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Where Debian and most distributions install journald.
const JOURNALD: &[&str] = &["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"];

/// Held while checking for and starting a journald, so that two test processes do not both
/// start one.
const START_LOCK: &str = "/run/datapunk-testkit-journald.lock";

/// One journal entry: field names and values as `journalctl -o json` gives them, with byte
/// arrays that hold UTF-8 decoded to strings.
pub type JournalEntry = Map<String, Value>;

/// A journald that is listening; see the [module documentation](self).
#[derive(Debug)]
pub struct Journal {
    _private: (),
}

/// The journal, with a journald started first if none listens and the tests run as root.
///
/// # Panics
///
/// Panics when no journald listens and one cannot be started, explaining why.
pub fn journal() -> &'static Journal {
    static JOURNAL: OnceLock<Result<Journal, String>> = OnceLock::new();

    match JOURNAL.get_or_init(ensure_journald) {
        Ok(journal) => journal,
        Err(err) => panic!("datapunk-testkit: {err}"),
    }
}

impl Journal {
    /// The socket that programs log to, `/run/systemd/journal/socket`.
    pub fn socket_path(&self) -> &'static Path {
        Path::new(SOCKET)
    }

    /// All entries matching every `FIELD=VALUE` pair (a field given twice matches either
    /// value), oldest first.
    ///
    /// # Panics
    ///
    /// Panics when `journalctl` fails or prints something that is not JSON.
    pub fn entries(&self, matches: &[(&str, &str)]) -> Vec<JournalEntry> {
        let mut cmd = Command::new("journalctl");
        cmd.args(["--output=json", "--no-pager", "--all", "--quiet"]);
        cmd.args(matches.iter().map(|(field, value)| format!("{field}={value}")));
        let output =
            process::run(&mut cmd, None, "cannot read the journal").unwrap_or_else(|err| {
                let hint = if err.contains("insufficient permissions") {
                    "\nthis user may not read the journal the entries went to; add it to the \
                 systemd-journal group or run the tests as root"
                } else {
                    ""
                };
                panic!("datapunk-testkit: {err}{hint}")
            });

        output
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(entry)) => decode(entry),
                _ => panic!(
                    "datapunk-testkit: journalctl printed a line that is not an entry: {line}"
                ),
            })
            .collect()
    }

    /// As [`entries`](Self::entries), written at `since` or later. Process ids are reused
    /// within a test run, so an entry matched by `_PID` is that process's only when it is no
    /// older than the process.
    ///
    /// # Panics
    ///
    /// As [`entries`](Self::entries).
    pub fn entries_since(&self, matches: &[(&str, &str)], since: SystemTime) -> Vec<JournalEntry> {
        let floor = since.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let written = |entry: &JournalEntry| {
            entry
                .get("__REALTIME_TIMESTAMP")
                .and_then(Value::as_str)
                .and_then(|micros| micros.parse::<u128>().ok())
                .is_some_and(|micros| micros >= floor)
        };
        self.entries(matches).into_iter().filter(written).collect()
    }

    /// Waits until at least `at_least` entries match, then returns all matching entries.
    ///
    /// # Panics
    ///
    /// Panics after `timeout` with the entries found so far.
    pub fn wait_for(
        &self,
        matches: &[(&str, &str)],
        at_least: usize,
        timeout: Duration,
    ) -> Vec<JournalEntry> {
        self.wait_for_since(matches, SystemTime::UNIX_EPOCH, at_least, timeout)
    }

    /// As [`wait_for`](Self::wait_for), counting only entries written at `since` or later
    /// (see [`entries_since`](Self::entries_since)).
    ///
    /// # Panics
    ///
    /// Panics after `timeout` with the entries found so far.
    pub fn wait_for_since(
        &self,
        matches: &[(&str, &str)],
        since: SystemTime,
        at_least: usize,
        timeout: Duration,
    ) -> Vec<JournalEntry> {
        let found = process::poll(timeout, Duration::from_millis(50), || {
            let entries = self.entries_since(matches, since);
            (entries.len() >= at_least).then_some(entries)
        });

        found.unwrap_or_else(|| {
            let entries = self.entries_since(matches, since);
            panic!(
                "datapunk-testkit: expected at least {at_least} journal entries matching \
                 {matches:?} within {timeout:?}, found {}: {entries:#?}",
                entries.len()
            )
        })
    }
}

/// Whether a journald accepts datagrams on its socket.
fn listening() -> bool {
    UnixDatagram::unbound().and_then(|socket| socket.connect(SOCKET)).is_ok()
}

/// Finds a listening journald, or starts one when running as root.
fn ensure_journald() -> Result<Journal, String> {
    if listening() {
        return Ok(Journal { _private: () });
    }
    if !is_root() {
        return Err(format!(
            "no journald listens on {SOCKET}; the tests read their logs back from a real \
             systemd-journald: run them on a system booted with systemd, or as root so that the \
             harness can start {} itself",
            JOURNALD[0]
        ));
    }

    let lock = File::create(START_LOCK)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|err| format!("cannot lock {START_LOCK}: {err}"))?;
    if !listening() {
        start_journald()?;
    }
    drop(lock);

    Ok(Journal { _private: () })
}

/// Starts a detached journald and waits until its socket accepts datagrams.
fn start_journald() -> Result<(), String> {
    let program = JOURNALD.iter().find(|path| Path::new(path).is_file()).ok_or_else(|| {
        format!(
            "no journald listens on {SOCKET} and systemd-journald is not installed at any of \
             {JOURNALD:?}; install it (Debian: apt-get install systemd)"
        )
    })?;
    // journald makes its runtime directories itself, but not always their parent.
    fs::create_dir_all("/run/systemd/journal")
        .map_err(|err| format!("cannot create /run/systemd/journal: {err}"))?;

    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child =
        cmd.spawn().map_err(|err| process::spawn_error(&cmd, "cannot start journald", &err))?;

    let ready = process::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        if listening() {
            return Some(Ok(()));
        }
        match child.try_wait() {
            Ok(Some(status)) => Some(Err(format!("{program} exited at once with {status}"))),
            _ => None,
        }
    });
    ready.unwrap_or_else(|| Err(format!("{program} did not open {SOCKET} within 10 s")))
}

/// Turns byte-array values holding UTF-8 back into strings, in single and repeated fields.
fn decode(entry: JournalEntry) -> JournalEntry {
    entry.into_iter().map(|(field, value)| (field, decode_value(value))).collect()
}

fn decode_value(value: Value) -> Value {
    let Value::Array(items) = value else {
        return value;
    };
    let bytes: Option<Vec<u8>> =
        items.iter().map(|item| item.as_u64().and_then(|n| u8::try_from(n).ok())).collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(text)) if !items.is_empty() => Value::String(text),
        Some(_) => Value::Array(items),
        None => Value::Array(items.into_iter().map(decode_value).collect()),
    }
}
