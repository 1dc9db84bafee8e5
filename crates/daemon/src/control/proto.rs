//! The control protocol: one JSON object per line each way.
//!
//! A request is `{"request":"status"}`; the answer is `{"response":"status", ...}` or
//! `{"response":"error","message":"..."}`. Error messages sent to a peer are stable and reveal
//! nothing beyond what the request was missing; details go to the daemon's log.

use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads; longer ones are refused.
pub const MAX_LINE: usize = 64 * 1024;

/// What the CLI asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// The daemon's state, for `datapunk status`.
    Status,
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// The daemon's state.
    Status(Box<Status>),
    /// The request could not be served.
    Error {
        /// A stable, non-revealing reason.
        message: String,
    },
}

/// The daemon's state as `datapunk status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// What it is doing.
    pub state: State,
    /// When it started, RFC 3339 in UTC.
    pub started_at: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// The database.
    pub database: DatabaseStatus,
    /// The audit trail.
    pub audit: AuditStatus,
    /// The secret store of tokens and data keys.
    pub vault: VaultStatus,
    /// Connected accounts. Empty until integrations exist.
    pub integrations: Vec<IntegrationStatus>,
}

/// The daemon's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opening the database.
    Starting,
    /// Ready and serving.
    Running,
    /// Shutting down.
    Stopping,
}

impl State {
    /// The word shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
        }
    }
}

/// The database part of [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// `managed` or `external`.
    pub mode: String,
    /// The database's name.
    pub name: String,
    /// Whether the last check reached it.
    pub reachable: bool,
    /// The server's version string, when known.
    pub server_version: Option<String>,
}

/// The audit part of [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Events this daemon has recorded since it started.
    pub recorded_since_start: u64,
    /// The newest row's id, when known.
    pub head_id: Option<i64>,
}

/// The vault part of [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultStatus {
    /// `secret-service`, `pass` or `encrypted-table`.
    pub backend: String,
    /// What the backend is called in a sentence: `keyring`, `password store`, `vault table`.
    pub noun: String,
    /// `checking` until the first answer, then `ready`, `locked` or `unavailable`.
    pub state: String,
    /// Why it is unavailable.
    pub reason: Option<String>,
    /// When it entered this state, RFC 3339 in UTC.
    pub since: Option<String>,
}

/// One connected account. Filled in once integrations exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationStatus {
    /// The integration's name.
    pub name: String,
    /// Its state in a word.
    pub state: String,
}

impl Status {
    /// The one-line summary sent as `STATUS=` and shown by `systemctl status`.
    pub fn summary(&self) -> String {
        let db = &self.database;
        let version = db.server_version.as_deref().map(|v| format!(", PostgreSQL {v}"));
        let reach = if db.reachable { "" } else { " unreachable" };
        let waiting = self.integrations.iter().filter(|i| i.state != "active").count();
        let attention = if waiting > 0 { format!(", {waiting} not active") } else { String::new() };
        format!(
            "{}; database {}{reach} ({}{}); {} {}; {} integration{}{attention}",
            self.state.as_str(),
            db.name,
            db.mode,
            version.unwrap_or_default(),
            self.vault.noun,
            self.vault.state,
            self.integrations.len(),
            if self.integrations.len() == 1 { "" } else { "s" },
        )
    }
}
