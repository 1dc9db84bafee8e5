//! Recording what Datapunk does: one row in the hash-chained audit table and one journald
//! entry per event.
//!
//! [`Auditor::record`] appends through `datapunk.audit_append` (the only way in; see
//! `datapunk-store`), moves the chain's anchor file forward, and mirrors the event to journald
//! with stable fields:
//!
//! | field | value |
//! |---|---|
//! | `SYSLOG_IDENTIFIER` | `datapunkd` (for the CLI's events too: one identifier, one trail) |
//! | `DATAPUNK_AUDIT` | `1` |
//! | `DATAPUNK_ACTION` | e.g. `daemon.start` |
//! | `DATAPUNK_OUTCOME` | `success`, `failure` or `denied` |
//! | `DATAPUNK_INTEGRATION`, `DATAPUNK_DATASET` | when the event concerns one |
//! | `DATAPUNK_COMPONENT` | `daemon` or `cli` |
//! | `DATAPUNK_AUDIT_ID` | the row's id; absent when no database could be reached |
//! | `MESSAGE` | one readable sentence |
//!
//! Neither the row nor the entry ever holds personal data or a secret: details are ids,
//! counts and paths.
//!
//! When the database cannot be reached, [`Auditor::defer`] keeps the event in the
//! pending-audit spool beside the anchor (see `datapunk_store::audit::spool`) as well as in
//! journald; the next [`Auditor::record`], by whichever process, appends the kept events
//! first, in order, each with the time it happened and its spool id in `details.deferred`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datapunk_store::audit::spool::{self, Deferred, Spool};
use datapunk_store::audit::{self, AnchorCheck, Appended, Event, HeadAnchor};
use tokio_postgres::Client;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

use crate::logging;

/// The syslog identifier of every audit entry in journald.
pub const SYSLOG_IDENTIFIER: &str = "datapunkd";

/// How long a process waits for another to finish with the spool. A flush appends a few rows,
/// each waiting at most 2 s for the table's lock.
const SPOOL_WAIT: Duration = Duration::from_secs(5);

/// Appends audit events and mirrors them to journald.
pub struct Auditor {
    uid: u32,
    anchor: HeadAnchor,
    /// Set once this auditor has written the anchor: from then on a missing file means
    /// someone removed it.
    anchored: AtomicBool,
    journal: Option<Dispatch>,
    /// Where events wait while the database cannot be reached; `None` keeps them in journald
    /// only.
    spool: Option<Spool>,
}

/// Why an event could not be recorded in the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database refused or could not be reached.
    #[error("could not append to the audit table")]
    Append(#[source] datapunk_store::Error),
    /// The chain in the database does not reach the head anchored outside it: rows were
    /// removed or the chain was rebuilt. Appending would hide that, so nothing is appended.
    #[error(
        "the audit chain does not match its anchor file {}: {}; run `datapunk audit verify`, \
         and once you have looked into it, move the anchor file away to accept the chain",
        path.display(),
        describe(check)
    )]
    AnchorBroken {
        /// The anchor file.
        path: PathBuf,
        /// What the comparison found.
        check: AnchorCheck,
    },
    /// The pending-audit spool could not be read, written or emptied.
    #[error("could not use the pending-audit spool")]
    Spool(#[source] datapunk_store::Error),
    /// This auditor keeps no spool (see [`Auditor::spooling_to`]).
    #[error("no pending-audit spool is configured")]
    NoSpool,
}

impl AuditError {
    /// True when the append failed because the database could not be reached: the event is
    /// then worth keeping in the spool.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Append(error) if error.is_retryable())
    }
}

impl Auditor {
    /// An auditor acting as `uid`, anchoring the chain's head in the file `anchor`. The
    /// journald mirror is used when journald is reachable now.
    pub fn new(uid: u32, anchor: PathBuf) -> Self {
        let journal = logging::journald_layer(SYSLOG_IDENTIFIER)
            .map(|layer| Dispatch::new(tracing_subscriber::registry().with(layer)));
        Self {
            uid,
            anchor: HeadAnchor::new(anchor),
            anchored: AtomicBool::new(false),
            journal,
            spool: None,
        }
    }

    /// This auditor, keeping the events it cannot append in the spool file `path` (see
    /// [`Auditor::defer`]) and appending that file's events before its own.
    pub fn spooling_to(mut self, path: PathBuf) -> Self {
        self.spool = Some(Spool::new(path));
        self
    }

    /// Compares the anchor file with the database: the row it names must still be there with
    /// the same hash. An auditor does this before every append, because an append moves the
    /// anchor forward and would otherwise bury a chain rebuilt since the last one. It is one
    /// indexed lookup.
    ///
    /// # Errors
    ///
    /// [`AuditError::AnchorBroken`] when rows the anchor knows of are gone or differ, or when
    /// the file this auditor wrote has disappeared.
    pub async fn check_anchor(&self, client: &Client) -> Result<(), AuditError> {
        match self.anchor.check(client).await.map_err(AuditError::Append)? {
            AnchorCheck::Matches { .. } => Ok(()),
            AnchorCheck::Missing if !self.anchored.load(Ordering::Acquire) => Ok(()),
            check => {
                let path = self.anchor.path().to_path_buf();
                tracing::error!(path = %path.display(), check = ?check,
                    "the audit chain no longer matches its anchor; refusing to append");
                Err(AuditError::AnchorBroken { path, check })
            }
        }
    }

    /// True when events also reach journald.
    pub fn mirrors_to_journald(&self) -> bool {
        self.journal.is_some()
    }

    /// Appends `event` to the audit table, anchors the new head outside the database, and
    /// writes the journald entry. `message` is the readable sentence of the entry.
    ///
    /// The events waiting in the spool are appended first, oldest first; when that fails they
    /// stay there for a later append, and `event` is appended all the same.
    ///
    /// # Errors
    ///
    /// When the anchor check fails or the row cannot be appended; then nothing is written to
    /// journald either, so that the two never disagree. A failure to update the anchor file is
    /// logged, not returned: the row is in the chain and `datapunk audit verify` will report the
    /// stale anchor.
    pub async fn record(
        &self,
        client: &Client,
        event: &Event,
        message: &str,
    ) -> Result<Appended, AuditError> {
        if let Err(error) = self.flush(client).await {
            tracing::warn!(error = %error, source = ?std::error::Error::source(&error),
                "could not append the deferred audit events; they stay in the spool");
        }
        let appended = self.append(client, event).await?;
        self.mirror(event, Some(appended.id), message);
        Ok(appended)
    }

    /// Keeps `event` for later, because the database cannot be reached: journald gets it now,
    /// and the spool keeps it for the next [`Auditor::record`] to append. Returns the spool
    /// file.
    ///
    /// # Errors
    ///
    /// [`AuditError::Spool`] when the spool cannot take the event, [`AuditError::NoSpool`]
    /// when there is none; journald has it then, and nothing else.
    pub async fn defer(&self, event: &Event, message: &str) -> Result<&Path, AuditError> {
        self.mirror(event, None, message);
        let Some(spool) = &self.spool else {
            return Err(AuditError::NoSpool);
        };
        let deferred = Deferred {
            id: format!("{:032x}", rand::random::<u128>()),
            recorded_at: time::OffsetDateTime::now_utc(),
            event: event.clone(),
        };
        let lock = spool.lock(SPOOL_WAIT).await.map_err(AuditError::Spool)?;
        lock.push(&deferred).map_err(AuditError::Spool)?;
        tracing::info!(action = event.action.as_str(), path = %spool.path().display(),
            "kept an audit event for when the database is back");
        Ok(spool.path())
    }

    /// Appends the spool's events, oldest first, skipping those a crashed flush appended
    /// already, then empties it.
    async fn flush(&self, client: &Client) -> Result<(), AuditError> {
        let Some(spool) = self.spool.as_ref().filter(|spool| !spool.is_empty()) else {
            return Ok(());
        };
        let lock = spool.lock(SPOOL_WAIT).await.map_err(AuditError::Spool)?;
        let entries = lock.entries().map_err(AuditError::Spool)?;
        if entries.unreadable > 0 {
            // Each was mirrored to journald when it was kept.
            tracing::error!(count = entries.unreadable, path = %spool.path().display(),
                "left out unreadable lines of the audit spool");
        }
        let ids: Vec<&str> = entries.deferred.iter().map(|d| d.id.as_str()).collect();
        let mut done = spool::appended_ids(client, &ids).await.map_err(AuditError::Append)?;

        for deferred in &entries.deferred {
            if !done.insert(deferred.id.clone()) {
                continue;
            }
            let row = self.append(client, &deferred.to_event()).await?;
            tracing::info!(
                action = deferred.event.action.as_str(),
                audit_id = row.id,
                deferred_id = deferred.id.as_str(),
                "appended a deferred audit event"
            );
        }
        lock.clear().map_err(AuditError::Spool)
    }

    /// Appends one row and moves the anchor to it.
    async fn append(&self, client: &Client, event: &Event) -> Result<Appended, AuditError> {
        // The append and the anchor check form one transaction: the append takes the audit
        // table's lock (held to the commit), and the check then runs with nobody able to
        // rewrite the chain in between. Checking first and appending after would let a
        // rebuild slip between the two and be buried under the new row.
        client.batch_execute("BEGIN").await.map_err(|e| AuditError::Append(e.into()))?;
        let appended = async {
            let appended =
                audit::append(client, self.uid, event).await.map_err(AuditError::Append)?;
            self.check_anchor(client).await?;
            client.batch_execute("COMMIT").await.map_err(|e| AuditError::Append(e.into()))?;
            Ok(appended)
        }
        .await;
        let appended = match appended {
            Ok(appended) => appended,
            Err(error) => {
                // A failed ROLLBACK leaves nothing to undo: the connection is then broken and
                // the server drops the transaction with it.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
        };

        match self.anchor.record(&appended) {
            Ok(_) => self.anchored.store(true, Ordering::Release),
            Err(error) => tracing::error!(%error, path = %self.anchor.path().display(),
                "could not update the audit anchor file"),
        }
        Ok(appended)
    }

    /// Writes an event to journald only, for what happens before any database can be reached
    /// (a configuration refused at start).
    pub fn journal_only(&self, event: &Event, message: &str) {
        self.mirror(event, None, message);
    }

    fn mirror(&self, event: &Event, id: Option<i64>, message: &str) {
        let emit = || {
            tracing::info!(
                target: "datapunk::audit",
                audit = 1u8,
                action = event.action.as_str(),
                outcome = event.outcome.as_str(),
                component = event.component.as_str(),
                integration = event.integration.as_deref(),
                dataset = event.dataset.as_deref(),
                audit_id = id,
                "{message}"
            );
        };
        match &self.journal {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, emit),
            None => emit(),
        }
    }
}

fn describe(check: &AnchorCheck) -> String {
    match check {
        AnchorCheck::Matches { id } => format!("row #{id} matches"),
        AnchorCheck::Missing => "the anchor file was removed".to_owned(),
        AnchorCheck::RowMissing { id } => format!("row #{id}, which it names, is gone"),
        AnchorCheck::Mismatch { id } => format!("row #{id} is not the row it names"),
    }
}

/// Shorthand for an event with no integration or dataset.
pub fn event(
    component: &str,
    action: &str,
    outcome: audit::Outcome,
    details: serde_json::Value,
) -> Event {
    Event {
        component: component.to_owned(),
        action: action.to_owned(),
        integration: None,
        dataset: None,
        outcome,
        details,
    }
}
