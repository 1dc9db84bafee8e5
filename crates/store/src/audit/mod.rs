//! The tamper-evident audit log: table `datapunk.audit`, written only through the SQL
//! function `datapunk.audit_append` (see migration 0001).
//!
//! - [`append`] records an [`Event`] and returns the new row's id and hash ([`Appended`]).
//! - [`list`] reads [`Record`]s back, filtered by a [`Filter`].
//! - [`verify`] recomputes every hash in Rust, independently of the SQL function, and names
//!   the first row whose contents or link to its predecessor do not match ([`Verification`]).
//! - [`HeadAnchor`] keeps the newest (id, hash) in a file outside the database, so that a
//!   chain rebuilt by someone with superuser access is still detected.
//! - [`spool`] keeps the events that could not be appended while the database was unreachable,
//!   for the next append to add to the chain.
//!
//! Events hold no personal data and no secrets: details are ids, counts and paths.

mod anchor;
mod canonical;
pub mod spool;

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::Row;

use crate::Error;
use canonical::Fields;

pub use anchor::{AnchorCheck, HeadAnchor};

/// The `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// How many rows [`verify`] reads per query.
const VERIFY_PAGE: i64 = 1000;

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what was asked.
    Success,
    /// It was allowed but did not complete.
    Failure,
    /// It was refused.
    Denied,
}

impl Outcome {
    /// The value stored in the `outcome` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Success, Self::Failure, Self::Denied].into_iter().find(|o| o.as_str() == text)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Which part of Datapunk acted: `daemon`, `cli`, ...
    pub component: String,
    /// What happened, as dotted lowercase words: `daemon.start`, `sync.run`.
    pub action: String,
    /// The integration concerned, if any (`google`).
    pub integration: Option<String>,
    /// The dataset concerned, if any, as an opaque id.
    pub dataset: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// More facts as a JSON object: ids, counts, paths. Never personal data or secrets.
    pub details: serde_json::Value,
}

/// The row [`append`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The row's id.
    pub id: i64,
    /// The row's hash, the new head of the chain.
    pub hash: [u8; 32],
}

/// Which rows [`list`] returns. The default is every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only rows appended at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only rows with exactly this action.
    pub action: Option<String>,
    /// Only rows concerning this integration.
    pub integration: Option<String>,
    /// At most this many rows: the newest ones.
    pub limit: Option<i64>,
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// The row's id; ids grow with time but may have gaps.
    pub id: i64,
    /// When it was appended.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The Unix user id on whose behalf it was recorded.
    pub actor_uid: i64,
    /// Which part of Datapunk acted.
    pub component: String,
    /// What happened.
    pub action: String,
    /// The integration concerned, if any.
    pub integration: Option<String>,
    /// The dataset concerned, if any.
    pub dataset: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// More facts, as the JSON text PostgreSQL keeps.
    pub details: JsonText,
    /// The previous row's hash ([`GENESIS`] for the first row).
    #[serde(serialize_with = "as_hex")]
    pub prev_hash: [u8; 32],
    /// This row's hash.
    #[serde(serialize_with = "as_hex")]
    pub hash: [u8; 32],
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// How many rows were read.
    pub rows: u64,
    /// The last row's id and stored hash; `None` when the log is empty.
    #[serde(serialize_with = "head_as_hex")]
    pub head: Option<(i64, [u8; 32])>,
    /// The first row that does not verify; `None` when the whole chain is intact.
    pub broken: Option<Broken>,
}

impl Verification {
    /// True when every row verified.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// A row that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The row's id.
    pub id: i64,
    /// What is wrong with it.
    pub reason: BrokenReason,
}

/// What is wrong with a [`Broken`] row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BrokenReason {
    /// The stored hash is not the hash of the row's contents: the row was edited.
    HashMismatch,
    /// The row's `prev_hash` is not the previous row's hash: rows were inserted or removed
    /// before it (or, for the first row, it is not [`GENESIS`]).
    PrevHashMismatch,
}

impl fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HashMismatch => "its contents do not match its hash (the row was changed)",
            Self::PrevHashMismatch => {
                "it does not link to the previous row (rows were removed or inserted before it)"
            }
        })
    }
}

/// Appends `event`, recorded on behalf of the Unix user `actor_uid`.
///
/// Run it inside a transaction (through `Transaction::client()`) to make the record part of
/// the change it describes; the chain is locked until that transaction ends. The transaction
/// must be at READ COMMITTED, PostgreSQL's default.
///
/// # Errors
///
/// [`Error::InvalidEvent`] when the action is not dotted lowercase words or the details are
/// not a JSON object; [`Error::Permission`] when the role may not append (only
/// `datapunk_app` may); connection errors otherwise.
pub async fn append(client: &Client, actor_uid: u32, event: &Event) -> Result<Appended, Error> {
    check_event(event)?;
    let row = client
        .query_one(
            "SELECT id, hash FROM datapunk.audit_append($1, $2, $3, $4, $5, $6, $7)",
            &[
                &i64::from(actor_uid),
                &event.component,
                &event.action,
                &event.integration,
                &event.dataset,
                &event.outcome.as_str(),
                &event.details,
            ],
        )
        .await?;
    let appended = Appended { id: row.get(0), hash: hash32(row.get(1), "hash")? };
    tracing::debug!(id = appended.id, action = %event.action, "appended audit event");
    Ok(appended)
}

/// Reads the rows that `filter` selects, oldest first (with a limit: the newest `limit`
/// rows, still oldest first).
///
/// # Errors
///
/// [`Error::Permission`] for a role without `SELECT` on the audit table; [`Error::Data`] for
/// a row this build cannot read.
pub async fn list(client: &Client, filter: &Filter) -> Result<Vec<Record>, Error> {
    let since_us = filter.since.map(micros).transpose()?;
    let rows = client
        .query(
            "SELECT id, at_us, actor_uid, actor_component, action, integration, dataset,
                    outcome, details::text, prev_hash, hash
             FROM datapunk.audit
             WHERE ($1::bigint IS NULL OR at_us >= $1)
               AND ($2::text IS NULL OR action = $2)
               AND ($3::text IS NULL OR integration = $3)
             ORDER BY id DESC
             LIMIT $4",
            &[&since_us, &filter.action, &filter.integration, &filter.limit],
        )
        .await?;
    let mut records = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    records.reverse();
    Ok(records)
}

/// Walks the whole chain in id order, recomputing each row's hash in Rust and checking that
/// each row links to the one before. Reports the first row that fails either check; the
/// count and head cover every row.
///
/// # Errors
///
/// Query errors only: a damaged chain is a result, not an error.
pub async fn verify(client: &Client) -> Result<Verification, Error> {
    let mut verification = Verification { rows: 0, head: None, broken: None };
    let mut previous = GENESIS.to_vec();
    let mut after = i64::MIN;
    loop {
        let rows = client
            .query(
                "SELECT id, at_us, actor_uid, actor_component, action, integration, dataset,
                        outcome, details::text, prev_hash, hash
                 FROM datapunk.audit WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &VERIFY_PAGE],
            )
            .await?;
        for row in &rows {
            let id: i64 = row.get(0);
            let prev_hash: Vec<u8> = row.get(9);
            let hash: Vec<u8> = row.get(10);
            let fields = Fields {
                id,
                at_us: row.get(1),
                actor_uid: row.get(2),
                actor_component: row.get(3),
                action: row.get(4),
                integration: row.get(5),
                dataset: row.get(6),
                outcome: row.get(7),
                details: row.get(8),
                prev_hash: &prev_hash,
            };

            let reason = if fields.hash()[..] != hash[..] {
                Some(BrokenReason::HashMismatch)
            } else if prev_hash != previous {
                Some(BrokenReason::PrevHashMismatch)
            } else {
                None
            };
            if let (Some(reason), None) = (reason, &verification.broken) {
                verification.broken = Some(Broken { id, reason });
            }

            verification.rows += 1;
            verification.head = Some((id, hash32(hash.clone(), "hash").unwrap_or_default()));
            previous = hash;
            after = id;
        }
        if rows.len() < VERIFY_PAGE as usize {
            return Ok(verification);
        }
    }
}

/// Refuses events that the SQL function would refuse, or that break the conventions.
fn check_event(event: &Event) -> Result<(), Error> {
    let word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase())
            && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !event.action.split('.').all(word) {
        let reason = format!("action {:?} must be dotted lowercase words", event.action);
        return Err(Error::InvalidEvent { reason });
    }
    if event.component.is_empty() {
        return Err(Error::InvalidEvent { reason: "component is empty".to_owned() });
    }
    if !event.details.is_object() {
        let reason = format!("details must be a JSON object, not {}", event.details);
        return Err(Error::InvalidEvent { reason });
    }
    Ok(())
}

/// JSON text passed through as stored. Parsing it into values would make one row with a
/// number no `f64` holds (such as `1e400`, which `jsonb` keeps exactly) unreadable, and with it
/// the whole listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(pub String);

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.clone())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

fn record(row: &Row) -> Result<Record, Error> {
    let id: i64 = row.get(0);
    let at_us: i64 = row.get(1);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_us) * 1000)
        .map_err(|_| Error::Data { reason: format!("audit row {id} has time {at_us}") })?;
    let outcome: String = row.get(7);
    let outcome = Outcome::parse(&outcome)
        .ok_or_else(|| Error::Data { reason: format!("audit row {id} has outcome {outcome:?}") })?;
    let details = JsonText(row.get(8));
    Ok(Record {
        id,
        at,
        actor_uid: row.get(2),
        component: row.get(3),
        action: row.get(4),
        integration: row.get(5),
        dataset: row.get(6),
        outcome,
        details,
        prev_hash: hash32(row.get(9), "prev_hash")?,
        hash: hash32(row.get(10), "hash")?,
    })
}

fn micros(at: OffsetDateTime) -> Result<i64, Error> {
    i64::try_from(at.unix_timestamp_nanos() / 1000)
        .map_err(|_| Error::InvalidEvent { reason: format!("{at} is out of range") })
}

fn hash32(bytes: Vec<u8>, column: &str) -> Result<[u8; 32], Error> {
    <[u8; 32]>::try_from(bytes).map_err(|bytes| Error::Data {
        reason: format!("audit {column} has {} bytes instead of 32", bytes.len()),
    })
}

fn as_hex<S: serde::Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(hash))
}

fn head_as_hex<S: serde::Serializer>(
    head: &Option<(i64, [u8; 32])>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    head.map(|(id, hash)| (id, hex::encode(hash))).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(action: &str, details: serde_json::Value) -> Event {
        Event {
            component: "daemon".into(),
            action: action.into(),
            integration: None,
            dataset: None,
            outcome: Outcome::Success,
            details,
        }
    }

    #[test]
    fn events_with_dotted_actions_and_object_details_are_accepted() {
        assert!(check_event(&event("daemon.start", json!({}))).is_ok());
        assert!(check_event(&event("sync.run_2", json!({"rows": 3}))).is_ok());
    }

    #[test]
    fn malformed_events_are_refused_before_reaching_the_database() {
        for (action, details) in [
            ("", json!({})),
            ("Daemon.Start", json!({})),
            ("daemon..start", json!({})),
            ("daemon.start", json!([1])),
            ("daemon.start", json!(null)),
        ] {
            assert!(matches!(
                check_event(&event(action, details)),
                Err(Error::InvalidEvent { .. })
            ));
        }
    }

    #[test]
    fn a_record_serialises_with_rfc3339_time_and_hex_hashes() {
        let record = Record {
            id: 7,
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("the time is valid"),
            actor_uid: 1000,
            component: "cli".into(),
            action: "audit.verify".into(),
            integration: None,
            dataset: None,
            outcome: Outcome::Denied,
            details: JsonText("{\"n\": 1e400}".into()),
            prev_hash: GENESIS,
            hash: [0xab; 32],
        };
        // A number no f64 holds passes through as PostgreSQL stored it.
        let text = serde_json::to_string(&record).expect("a record serialises");
        assert!(text.contains(r#""details":{"n": 1e400}"#), "{text}");
        let record = Record { details: JsonText("{}".into()), ..record };
        let value = serde_json::to_value(&record).expect("a record serialises");
        assert_eq!(value["at"], "2023-11-14T22:13:20Z");
        assert_eq!(value["outcome"], "denied");
        assert_eq!(value["hash"], "ab".repeat(32));
    }
}
