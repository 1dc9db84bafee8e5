//! The control protocol: one JSON object per line each way.
//!
//! A request is `{"request":"status"}`; the answer is `{"response":"status", ...}` or
//! `{"response":"error","message":"..."}`. A sync request is answered with any number of
//! `{"response":"progress", ...}` lines and then one `{"response":"synced", ...}`. Error messages sent to a peer are stable and reveal
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
    /// Sync now, for `datapunk sync`: every consented and granted dataset of the integration
    /// (or of every integration), or only `dataset`.
    Sync {
        /// Only this integration.
        #[serde(default)]
        integration: Option<String>,
        /// Only this dataset.
        #[serde(default)]
        dataset: Option<String>,
        /// Read everything again: drop the sync tokens and start full rounds, whose end
        /// removes what the provider no longer has.
        #[serde(default)]
        full: bool,
    },
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// The daemon's state.
    Status(Box<Status>),
    /// How a sync under way is doing; more lines follow.
    Progress(SyncProgress),
    /// The sync asked for has ended; one run per dataset.
    Synced {
        /// What each dataset's sync did.
        runs: Vec<SyncRun>,
    },
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

/// One connected account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationStatus {
    /// The integration's name.
    pub name: String,
    /// Its state in a word.
    pub state: String,
    /// Its datasets, with how their last sync went.
    #[serde(default)]
    pub datasets: Vec<DatasetStatus>,
}

/// One dataset of an integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetStatus {
    /// The dataset's name (`calendar`, `contacts`, `recently-played`, ...).
    pub name: String,
    /// The person chose it.
    pub consented: bool,
    /// The grant covers it.
    pub granted: bool,
    /// Records stored.
    pub records: i64,
    /// When its last sync ended, RFC 3339 in UTC.
    pub last_sync_at: Option<String>,
    /// How the last sync ended: `success` or `failure`.
    pub outcome: Option<String>,
    /// What the last successful sync added, changed and removed.
    pub added: i64,
    /// See `added`.
    pub updated: i64,
    /// See `added`.
    pub deleted: i64,
    /// Why the last sync failed.
    pub error: Option<String>,
}

/// A sync under way, as `datapunk sync` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// The integration.
    pub integration: String,
    /// The dataset.
    pub dataset: String,
    /// Pages read so far.
    pub pages: u64,
    /// Records read so far.
    pub records: u64,
    /// Milliseconds since the dataset's sync started.
    pub elapsed_ms: u64,
}

/// What one dataset's sync did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRun {
    /// The integration.
    pub integration: String,
    /// The dataset.
    pub dataset: String,
    /// `success`, `failure`, or `skipped` (not consented, not granted, or the integration
    /// cannot sync in its state).
    pub outcome: String,
    /// Records added.
    pub added: u64,
    /// Records changed.
    pub updated: u64,
    /// Records removed.
    pub deleted: u64,
    /// Pages read.
    pub pages: u64,
    /// Milliseconds it took.
    pub elapsed_ms: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

impl Status {
    /// The one-line summary sent as `STATUS=` and shown by `systemctl status`.
    pub fn summary(&self) -> String {
        let db = &self.database;
        let version = db.server_version.as_deref().map(|v| format!(", PostgreSQL {v}"));
        let reach = if db.reachable { "" } else { " unreachable" };
        // A revoked integration was ended on purpose: it needs no attention.
        let waiting =
            self.integrations.iter().filter(|i| !matches!(i.state.as_str(), "active" | "revoked"));
        let waiting = waiting.count();
        let attention = if waiting > 0 { format!(", {waiting} not active") } else { String::new() };
        let datasets: Vec<&DatasetStatus> = self
            .integrations
            .iter()
            .filter(|i| i.state != "revoked")
            .flat_map(|i| &i.datasets)
            .filter(|d| d.consented && d.granted)
            .collect();
        let synced = if datasets.is_empty() {
            String::new()
        } else {
            let last = datasets.iter().filter_map(|d| d.last_sync_at.as_deref()).max();
            let failing = datasets.iter().filter(|d| d.outcome.as_deref() == Some("failure"));
            let failing = match failing.count() {
                0 => String::new(),
                n => format!(", {n} failing"),
            };
            let count = datasets.len();
            let plural = if count == 1 { "" } else { "s" };
            format!(", {count} dataset{plural}, last sync {}{failing}", ago(last))
        };
        format!(
            "{}; database {}{reach} ({}{}); {} {}; {} integration{}{attention}{synced}",
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

/// How long ago `at` (RFC 3339) was, in the words of a status line: `never`, `just now`,
/// `5 min ago`, `3 h ago`, `2 days ago`.
fn ago(at: Option<&str>) -> String {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    let Some(at) = at.and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok()) else {
        return "never".to_owned();
    };
    let secs = (OffsetDateTime::now_utc() - at).whole_seconds().max(0);
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str, last: Option<&str>, outcome: Option<&str>) -> DatasetStatus {
        DatasetStatus {
            name: name.to_owned(),
            consented: true,
            granted: true,
            records: 10,
            last_sync_at: last.map(str::to_owned),
            outcome: outcome.map(str::to_owned),
            added: 0,
            updated: 0,
            deleted: 0,
            error: None,
        }
    }

    fn status(integrations: Vec<IntegrationStatus>) -> Status {
        Status {
            version: "0".to_owned(),
            pid: 1,
            state: State::Running,
            started_at: String::new(),
            uptime_secs: 0,
            database: DatabaseStatus {
                mode: "managed".to_owned(),
                name: "datapunk".to_owned(),
                reachable: true,
                server_version: None,
            },
            audit: AuditStatus { recorded_since_start: 0, head_id: None },
            vault: VaultStatus {
                backend: "secret-service".to_owned(),
                noun: "keyring".to_owned(),
                state: "ready".to_owned(),
                reason: None,
                since: None,
            },
            integrations,
        }
    }

    #[test]
    fn the_summary_counts_datasets_failures_and_the_last_sync() {
        let an_hour_ago = (time::OffsetDateTime::now_utc() - time::Duration::minutes(61))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time");
        let mut not_granted = dataset("contacts", None, None);
        not_granted.granted = false;
        let summary = status(vec![
            IntegrationStatus {
                name: "google".to_owned(),
                state: "active".to_owned(),
                datasets: vec![
                    dataset("calendar", Some(&an_hour_ago), Some("success")),
                    not_granted,
                ],
            },
            IntegrationStatus {
                name: "spotify".to_owned(),
                state: "needs_reauth".to_owned(),
                datasets: vec![dataset("playlists", Some("2020-01-01T00:00:00Z"), Some("failure"))],
            },
        ])
        .summary();
        assert!(
            summary.ends_with(
                "2 integrations, 1 not active, 2 datasets, last sync 1 h ago, 1 failing"
            ),
            "{summary}"
        );
        let none = status(Vec::new()).summary();
        assert!(none.ends_with("keyring ready; 0 integrations"), "{none}");
        let never = status(vec![IntegrationStatus {
            name: "google".to_owned(),
            state: "active".to_owned(),
            datasets: vec![dataset("calendar", None, None)],
        }])
        .summary();
        assert!(never.ends_with("1 integration, 1 dataset, last sync never"), "{never}");
    }
}
