//! Synced records and the sync state of each stream.
//!
//! A dataset ([`Dataset`]) of an integration is synced as one or more streams ([`StreamKey`]),
//! each walked by a [`Cursor`] in rounds numbered 1, 2, 3, ... A sync reads the stream's state
//! with [`open_stream`], then writes each page the provider sent with [`apply_page`]: the
//! page's [`Row`]s, its removals and the cursor that follows commit in one transaction, so a
//! crash between pages resumes at the last page stored and never loses or doubles a record.
//!
//! The page that ends a round ([`Next::Done`]) stores the sync token for the next round in the
//! same transaction. When that round read the whole collection (a first sync, a resync, or any
//! round of a reconciled stream), the rows the round did not see are removed then, and only
//! then: a round cut short by a crash or by [`restart_round`] removes nothing.
//!
//! Rows arrive sealed: [`Row::sealed`] is one OpenPGP message of the record's personal fields
//! under the integration's data key, and [`Row::digest`] a keyed fingerprint of everything
//! stored for the record. Both are computed by the daemon; PostgreSQL never sees a key. A row
//! whose digest is unchanged is neither rewritten nor locked, so a sync that finds nothing new
//! writes no rows. `docs/data-model.md` lists what each table keeps in plaintext and why.
//!
//! [`status`] answers `datapunk status`; [`sealed_records`] lists a dataset's sealed rows.

mod copy;
mod rows;
mod status;

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio_postgres::{Client, Transaction};

use self::rows::{last_of_each_id, write_rows};
pub use self::status::{sealed_records, status};
use crate::Error;

/// A dataset, with the table that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// Calendar events (Google Calendar, Graph calendarView), in `datapunk.calendar_events`.
    Calendar,
    /// Contacts (Google People, Graph contacts), in `datapunk.contacts`.
    Contacts,
    /// Spotify's listening history, in `datapunk.plays`; append-only.
    RecentlyPlayed,
    /// Spotify's saved tracks, in `datapunk.saved_tracks`.
    SavedTracks,
    /// Spotify's playlists, in `datapunk.playlists`.
    Playlists,
}

impl Dataset {
    /// Every dataset.
    pub const ALL: [Self; 5] =
        [Self::Calendar, Self::Contacts, Self::RecentlyPlayed, Self::SavedTracks, Self::Playlists];

    /// The name used on the command line and in the database: `calendar`, `saved-tracks`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Calendar => "calendar",
            Self::Contacts => "contacts",
            Self::RecentlyPlayed => "recently-played",
            Self::SavedTracks => "saved-tracks",
            Self::Playlists => "playlists",
        }
    }

    /// The dataset called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dataset| dataset.name() == name)
    }

    /// The table, schema-qualified.
    const fn table(self) -> &'static str {
        match self {
            Self::Calendar => "datapunk.calendar_events",
            Self::Contacts => "datapunk.contacts",
            Self::RecentlyPlayed => "datapunk.plays",
            Self::SavedTracks => "datapunk.saved_tracks",
            Self::Playlists => "datapunk.playlists",
        }
    }

    /// Whether a completed full round removes the rows it did not see. Plays never go: the
    /// provider keeps only the newest, so a play it no longer lists is history, not a deletion.
    const fn sweeps(self) -> bool {
        !matches!(self, Self::RecentlyPlayed)
    }
}

/// One stream of one dataset of one integration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The integration's name.
    pub integration: String,
    /// The dataset.
    pub dataset: Dataset,
    /// The stream's stored name, or `""` for a dataset of one stream. The daemon stores a keyed
    /// fingerprint of the provider's id (a calendar id, often an e-mail address), never the id.
    pub stream: String,
}

impl StreamKey {
    /// The key of `stream` of `dataset` of `integration`.
    pub fn new(integration: &str, dataset: Dataset, stream: &str) -> Self {
        Self { integration: integration.to_owned(), dataset, stream: stream.to_owned() }
    }

    fn error_round_changed(&self, expected: i64) -> Error {
        Error::RoundChanged {
            integration: self.integration.clone(),
            dataset: self.dataset.name().to_owned(),
            expected,
        }
    }
}

/// Where a stream's round stands: what the next request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// No round under way and no sync token: the next round is a full one.
    Start,
    /// A round under way, at the provider's continuation.
    Page {
        /// The continuation, opaque to the store.
        continuation: String,
        /// Whether the round reads the whole collection.
        full: bool,
    },
    /// No round under way; the next one is incremental from this sync token.
    Synced(String),
}

/// A stream's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// Where the stream stands.
    pub cursor: Cursor,
    /// The number of the round under way or next. Pages are written for this round; once it
    /// moves on, writes for the old number are refused.
    pub round: i64,
    /// When the round under way stored its first page.
    pub round_started_at: Option<OffsetDateTime>,
}

/// One record to store: its plaintext columns, its sealed personal fields and its digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The provider's id, unique within the stream.
    pub provider_id: String,
    /// When the provider last changed it; stored for events and contacts.
    pub updated_at: Option<OffsetDateTime>,
    /// The plaintext columns, whose variant must match the stream's dataset.
    pub columns: Columns,
    /// The personal fields as one OpenPGP message under the integration's data key.
    pub sealed: Vec<u8>,
    /// A keyed fingerprint of everything stored for the record, columns and personal fields:
    /// an equal digest means the row is not rewritten. Not stored for plays, which never
    /// change.
    pub digest: Vec<u8>,
}

/// The plaintext columns of each dataset's table.
#[derive(Clone, Debug, PartialEq)]
pub enum Columns {
    /// A calendar event.
    Event {
        /// Start, in UTC; for all-day events midnight UTC of the start date.
        starts_at: Option<OffsetDateTime>,
        /// End, as `starts_at`.
        ends_at: Option<OffsetDateTime>,
        /// Whether the event lasts whole days.
        all_day: bool,
        /// `confirmed`, `tentative` or `cancelled`.
        status: String,
        /// The series this event is an instance or exception of.
        series_id: Option<String>,
        /// `single`, `master`, `occurrence` or `exception`.
        kind: String,
    },
    /// A contact: nothing about it is plaintext.
    Contact,
    /// A play.
    Play {
        /// When the play ended.
        played_at: OffsetDateTime,
        /// The track.
        track: Track,
    },
    /// A saved track.
    SavedTrack {
        /// When it was saved.
        added_at: OffsetDateTime,
        /// The track.
        track: Track,
    },
    /// A playlist.
    Playlist {
        /// Changes whenever the playlist does.
        snapshot_id: String,
        /// Number of entries.
        entries: i64,
        /// Public on the person's profile, when the provider says.
        public: Option<bool>,
        /// Others may edit it.
        collaborative: bool,
    },
}

/// Catalogue data of a track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// The provider's track id.
    pub id: String,
    /// Title.
    pub name: String,
    /// Artist names, in the provider's order.
    pub artists: Vec<String>,
    /// Album name.
    pub album: String,
    /// Length in milliseconds.
    pub duration_ms: i64,
}

/// One page of a stream, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// New and changed records. When an id appears twice, the later row wins.
    pub upserts: Vec<Row>,
    /// Provider ids of records that are gone; applied after the upserts.
    pub removals: Vec<String>,
    /// What follows the page.
    pub next: Next,
}

impl Page {
    /// The page that stores what `self` and then `later`, the page after it in the same round,
    /// store: rows `later` removes are dropped from `self`'s upserts, removals `later` upserts
    /// again are dropped from `self`'s removals, and the cursor is `later`'s. Writing the
    /// result in one transaction costs one statement of each kind instead of one per page.
    #[must_use]
    pub fn then(mut self, later: Self) -> Self {
        if !later.removals.is_empty() {
            let removed: HashSet<&str> = later.removals.iter().map(String::as_str).collect();
            self.upserts.retain(|row| !removed.contains(row.provider_id.as_str()));
        }
        if !self.removals.is_empty() {
            let upserted: HashSet<&str> =
                later.upserts.iter().map(|row| row.provider_id.as_str()).collect();
            self.removals.retain(|id| !upserted.contains(id.as_str()));
        }
        self.upserts.extend(later.upserts);
        self.removals.extend(later.removals);
        Self { upserts: self.upserts, removals: self.removals, next: later.next }
    }
}

/// What follows a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// More pages in this round, from this cursor.
    More(Cursor),
    /// The round is complete.
    Done {
        /// The token the next round starts from; `None` makes the next round a full one.
        sync_token: Option<String>,
        /// The round read the whole collection, so the rows it did not see are removed.
        full: bool,
    },
}

impl Next {
    /// Whether the page belongs to a round that reads the whole collection.
    fn is_full(&self) -> bool {
        match self {
            Self::More(Cursor::Page { full, .. }) | Self::Done { full, .. } => *full,
            Self::More(Cursor::Start | Cursor::Synced(_)) => false,
        }
    }
}

/// What a page, or a round, did to the stored rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Rows inserted.
    pub added: u64,
    /// Rows rewritten because their digest changed.
    pub updated: u64,
    /// Rows removed, by the provider's word or by the sweep of a completed full round.
    pub deleted: u64,
    /// Rows the page held whose digest was unchanged (and plays seen before); zero in a
    /// round's totals.
    #[serde(skip)]
    pub unchanged: u64,
}

/// How the last sync of a stream or dataset ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A round completed.
    Success,
    /// The sync failed; the stream resumes from its stored cursor.
    Failure,
}

/// The sync state of one dataset of one integration, summed over its streams.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DatasetStatus {
    /// The integration.
    pub integration: String,
    /// The dataset.
    pub dataset: Dataset,
    /// Number of streams (calendars) known.
    pub streams: u64,
    /// Number of records stored.
    pub records: u64,
    /// When a round of one of its streams last completed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// How the latest sync of one of its streams ended.
    pub last_outcome: Option<Outcome>,
    /// When that was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_outcome_at: Option<OffsetDateTime>,
    /// The error of that sync, when it failed.
    pub last_error: Option<String>,
    /// What the last completed round of each stream did, summed.
    pub last_round: Counts,
    /// A round is under way (and resumes after a crash).
    pub syncing: bool,
}

/// A stored row as the provider's id and its sealed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    /// The stream it belongs to.
    pub stream: String,
    /// The provider's id.
    pub provider_id: String,
    /// The OpenPGP message of its personal fields.
    pub sealed: Vec<u8>,
}

/// The state of `key`, which starts at [`Cursor::Start`] in round 1 when it is new.
///
/// # Errors
///
/// When the database refuses, such as for an unknown integration.
pub async fn open_stream(client: &Client, key: &StreamKey) -> Result<StreamState, Error> {
    client
        .execute(
            "INSERT INTO datapunk.sync_streams (integration, dataset, stream) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT cursor_kind, cursor_text, cursor_full, round, round_started_at
             FROM datapunk.sync_streams WHERE integration = $1 AND dataset = $2 AND stream = $3",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;

    let text: Option<String> = row.get(1);
    let cursor = match (row.get::<_, &str>(0), text) {
        ("start", None) => Cursor::Start,
        ("page", Some(continuation)) => Cursor::Page { continuation, full: row.get(2) },
        ("synced", Some(token)) => Cursor::Synced(token),
        (kind, _) => {
            return Err(Error::Data { reason: format!("unknown sync cursor kind {kind:?}") });
        }
    };
    Ok(StreamState { cursor, round: row.get(3), round_started_at: row.get(4) })
}

/// Stores one page of round `round` of `key` in one transaction: its rows (a row whose digest
/// is unchanged is left alone), its removals, and the cursor that follows. A page ending a
/// round completes it as [`finish_round`] does, in the same transaction.
///
/// In a full round, every row the page holds is marked as seen by the round, written or not.
///
/// # Errors
///
/// [`Error::RoundChanged`] when the stream is no longer at `round`; [`Error::Disconnected`]
/// when the integration was revoked;
/// [`Error::InvalidRecords`] when a row's columns belong to another dataset; otherwise when
/// the database refuses. Nothing of the page is stored then.
pub async fn apply_page(
    client: &mut Client,
    key: &StreamKey,
    round: i64,
    page: &Page,
) -> Result<Counts, Error> {
    let rows = last_of_each_id(&page.upserts);
    let full = page.next.is_full();

    let transaction = client.transaction().await?;
    lock_round(&transaction, key, round).await?;
    let mut counts = write_rows(&transaction, key, round, full, &rows).await?;
    counts.deleted = remove(&transaction, key, &page.removals).await?;
    match &page.next {
        Next::More(cursor) => store_cursor(&transaction, key, cursor, counts).await?,
        Next::Done { sync_token, full } => {
            counts.deleted +=
                complete(&transaction, key, round, sync_token.as_deref(), *full, counts).await?;
        }
    }
    transaction.commit().await?;

    Ok(counts)
}

/// Completes round `round` of `key`, as a last page without records would: stores
/// `sync_token` for the next round (or [`Cursor::Start`] when there is none), removes the rows
/// a `full` round did not see, records the success and the round's counts, and moves the
/// stream to the next round. Returns what the sweep removed.
///
/// # Errors
///
/// As for [`apply_page`].
pub async fn finish_round(
    client: &mut Client,
    key: &StreamKey,
    round: i64,
    sync_token: Option<&str>,
    full: bool,
) -> Result<Counts, Error> {
    let transaction = client.transaction().await?;
    lock_round(&transaction, key, round).await?;
    let deleted = complete(&transaction, key, round, sync_token, full, Counts::default()).await?;
    transaction.commit().await?;

    Ok(Counts { deleted, ..Counts::default() })
}

/// Abandons the round under way of `key`, if any, and starts a new full one: the cursor goes
/// back to [`Cursor::Start`] under a new round number. No row is removed until that round
/// completes. Used when the provider requires a full resync.
///
/// # Errors
///
/// When the database refuses.
pub async fn restart_round(client: &mut Client, key: &StreamKey) -> Result<StreamState, Error> {
    let transaction = client.transaction().await?;
    let row = transaction
        .query_one(
            "INSERT INTO datapunk.sync_streams AS s (integration, dataset, stream)
             VALUES ($1, $2, $3)
             ON CONFLICT (integration, dataset, stream) DO UPDATE SET
                 cursor_kind = 'start', cursor_text = NULL, cursor_full = false,
                 round = s.round + 1, round_started_at = NULL,
                 round_added = 0, round_updated = 0, round_deleted = 0
             RETURNING round",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;
    clear_seen(&transaction, key).await?;
    transaction.commit().await?;

    Ok(StreamState { cursor: Cursor::Start, round: row.get(0), round_started_at: None })
}

/// Records that a sync of `key` failed with `error`, which must name what went wrong in words
/// and never hold a provider's value. The cursor stays: the next sync resumes from it.
///
/// # Errors
///
/// When the database refuses.
pub async fn record_failure(client: &Client, key: &StreamKey, error: &str) -> Result<(), Error> {
    client
        .execute(
            "INSERT INTO datapunk.sync_streams AS s (integration, dataset, stream,
                 last_outcome, last_outcome_at, last_error)
             VALUES ($1, $2, $3, 'failure', now(), $4)
             ON CONFLICT (integration, dataset, stream) DO UPDATE SET
                 last_outcome = 'failure', last_outcome_at = now(), last_error = $4",
            &[&key.integration, &key.dataset.name(), &key.stream, &error],
        )
        .await?;
    Ok(())
}

/// The streams of `dataset` of `integration` that have a stored state, by id.
///
/// # Errors
///
/// When the database cannot be read.
pub async fn streams(
    client: &Client,
    integration: &str,
    dataset: Dataset,
) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT stream FROM datapunk.sync_streams WHERE integration = $1 AND dataset = $2
             ORDER BY stream",
            &[&integration, &dataset.name()],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Removes a stream the provider no longer has (a deleted or unsubscribed calendar): its rows
/// and its state, in one transaction. Returns the number of rows removed.
///
/// # Errors
///
/// When the database refuses.
pub async fn remove_stream(client: &mut Client, key: &StreamKey) -> Result<u64, Error> {
    let transaction = client.transaction().await?;
    let removed = transaction
        .execute(
            &format!("DELETE FROM {} WHERE integration = $1 AND stream = $2", key.dataset.table()),
            &[&key.integration, &key.stream],
        )
        .await?;
    clear_seen(&transaction, key).await?;
    transaction
        .execute(
            "DELETE FROM datapunk.sync_streams
             WHERE integration = $1 AND dataset = $2 AND stream = $3",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;
    transaction.commit().await?;

    Ok(removed)
}

/// Removes everything synced for `integration`: the rows of every dataset and the sync state,
/// in one transaction. Returns the number of rows removed. The integration itself stays.
///
/// Mark the integration revoked first: pages are refused from then on, and this waits for the
/// one being written, if any, so that nothing of a running sync is left behind.
///
/// # Errors
///
/// When the database refuses.
pub async fn remove_integration_data(client: &mut Client, integration: &str) -> Result<u64, Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT FROM datapunk.integrations WHERE name = $1 FOR UPDATE", &[&integration])
        .await?;
    let mut removed = 0;
    for dataset in Dataset::ALL {
        let sql = format!("DELETE FROM {} WHERE integration = $1", dataset.table());
        removed += transaction.execute(&sql, &[&integration]).await?;
    }
    transaction
        .execute("DELETE FROM datapunk.round_seen WHERE integration = $1", &[&integration])
        .await?;
    transaction
        .execute("DELETE FROM datapunk.sync_streams WHERE integration = $1", &[&integration])
        .await?;
    transaction.commit().await?;
    Ok(removed)
}

/// Takes the stream's row lock until the transaction ends, so that one sync at a time writes
/// to a stream, and checks that it is still at `round`.
///
/// The integration's row is share-locked too and must not be revoked: `datapunk disconnect`
/// marks it revoked before it removes the data, so its update waits for a page being written
/// and every later page is refused. Without that, a page in flight when the data was removed
/// would be left behind.
async fn lock_round(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    round: i64,
) -> Result<(), Error> {
    let stored = transaction
        .query_opt(
            "SELECT s.round, i.state = 'revoked'
             FROM datapunk.sync_streams s JOIN datapunk.integrations i ON i.name = s.integration
             WHERE s.integration = $1 AND s.dataset = $2 AND s.stream = $3
             FOR UPDATE OF s FOR SHARE OF i",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;
    match stored {
        Some(row) if row.get::<_, bool>(1) => {
            Err(Error::Disconnected { integration: key.integration.clone() })
        }
        Some(row) if row.get::<_, i64>(0) == round => Ok(()),
        _ => Err(key.error_round_changed(round)),
    }
}

/// Removes the rows with the ids in `removals`; returns how many there were.
async fn remove(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    removals: &[String],
) -> Result<u64, Error> {
    if removals.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM {} WHERE integration = $1 AND stream = $2 AND provider_id = ANY($3)",
        key.dataset.table()
    );
    Ok(transaction.execute(&sql, &[&key.integration, &key.stream, &removals]).await?)
}

/// Stores the cursor of a round under way and adds a page's counts to the round's.
async fn store_cursor(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    cursor: &Cursor,
    counts: Counts,
) -> Result<(), Error> {
    let (kind, text, full) = match cursor {
        Cursor::Start => ("start", None, false),
        Cursor::Page { continuation, full } => ("page", Some(continuation.as_str()), *full),
        Cursor::Synced(token) => ("synced", Some(token.as_str()), false),
    };
    transaction
        .execute(
            "UPDATE datapunk.sync_streams SET cursor_kind = $4, cursor_text = $5,
                 cursor_full = $6, round_started_at = coalesce(round_started_at, now()),
                 round_added = round_added + $7, round_updated = round_updated + $8,
                 round_deleted = round_deleted + $9
             WHERE integration = $1 AND dataset = $2 AND stream = $3",
            &[
                &key.integration,
                &key.dataset.name(),
                &key.stream,
                &kind,
                &text,
                &full,
                &signed(counts.added),
                &signed(counts.updated),
                &signed(counts.deleted),
            ],
        )
        .await?;
    Ok(())
}

/// Completes round `round` after its last page, whose counts are `last`: the sweep when the
/// round was full, the token, the success and the round's totals, and the next round number.
/// Returns what the sweep removed.
async fn complete(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    round: i64,
    sync_token: Option<&str>,
    full: bool,
    last: Counts,
) -> Result<u64, Error> {
    let mut swept = 0;
    if full && key.dataset.sweeps() {
        // Kept: rows this round wrote (seen_round) and rows it saw unchanged (round_seen).
        // One primary-key lookup in round_seen per row, whatever the planner believes: as an
        // anti-join, tables it has no statistics for yet were planned as a scan of every seen
        // id per row, which made reconciling a library of 50,000 tracks take the better part
        // of an hour.
        let sql = format!(
            "DELETE FROM {} AS t
             WHERE t.integration = $1 AND t.stream = $2 AND t.seen_round < $3
               AND (SELECT s.round FROM datapunk.round_seen s
                    WHERE s.integration = $1 AND s.dataset = $4 AND s.stream = $2
                      AND s.provider_id = t.provider_id) IS DISTINCT FROM $3",
            key.dataset.table()
        );
        swept = transaction
            .execute(&sql, &[&key.integration, &key.stream, &round, &key.dataset.name()])
            .await?;
    }
    clear_seen(transaction, key).await?;

    transaction
        .execute(
            "UPDATE datapunk.sync_streams SET
                 cursor_kind = CASE WHEN $4::text IS NULL THEN 'start' ELSE 'synced' END,
                 cursor_text = $4, cursor_full = false, round = round + 1,
                 round_started_at = NULL, last_success_at = now(), last_outcome = 'success',
                 last_outcome_at = now(), last_error = NULL,
                 last_added = round_added + $5, last_updated = round_updated + $6,
                 last_deleted = round_deleted + $7,
                 round_added = 0, round_updated = 0, round_deleted = 0
             WHERE integration = $1 AND dataset = $2 AND stream = $3",
            &[
                &key.integration,
                &key.dataset.name(),
                &key.stream,
                &sync_token,
                &signed(last.added),
                &signed(last.updated),
                &signed(last.deleted + swept),
            ],
        )
        .await?;
    Ok(swept)
}

/// Forgets which rows the stream's round saw unchanged.
async fn clear_seen(transaction: &Transaction<'_>, key: &StreamKey) -> Result<(), Error> {
    transaction
        .execute(
            "DELETE FROM datapunk.round_seen
             WHERE integration = $1 AND dataset = $2 AND stream = $3",
            &[&key.integration, &key.dataset.name(), &key.stream],
        )
        .await?;
    Ok(())
}

/// A count from PostgreSQL, which is never negative.
fn unsigned(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// A count for PostgreSQL; no count comes near `i64::MAX`.
fn signed(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_round_trip_and_match_the_connect_flow() {
        for dataset in Dataset::ALL {
            assert_eq!(Dataset::from_name(dataset.name()), Some(dataset));
        }
        let json = serde_json::to_string(&Dataset::SavedTracks).expect("serialise");
        assert_eq!(json, "\"saved-tracks\"");
        assert_eq!(Dataset::from_name("events"), None);
    }

    #[test]
    fn only_pages_of_full_rounds_mark_what_they_see() {
        let page = |full| Next::More(Cursor::Page { continuation: "x".into(), full });
        assert!(page(true).is_full());
        assert!(!page(false).is_full());
        assert!(Next::Done { sync_token: None, full: true }.is_full());
        assert!(!Next::Done { sync_token: Some("t".into()), full: false }.is_full());
        assert!(!Next::More(Cursor::Synced("t".into())).is_full());
    }

    #[test]
    fn pages_joined_store_what_they_store_one_after_the_other() {
        let row = |id: &str, version: u8| Row {
            provider_id: id.to_owned(),
            updated_at: None,
            columns: Columns::Contact,
            sealed: vec![version],
            digest: vec![version],
        };
        let page = |upserts, removals: &[&str], next| Page {
            upserts,
            removals: removals.iter().map(|id| (*id).to_owned()).collect(),
            next,
        };
        let more = Next::More(Cursor::Page { continuation: "2".into(), full: false });
        let done = Next::Done { sync_token: Some("t".into()), full: false };
        // Upserted then removed, removed then upserted, changed twice, untouched.
        let first = page(vec![row("gone", 1), row("twice", 1), row("kept", 1)], &["back"], more);
        let second = page(vec![row("back", 2), row("twice", 2)], &["gone", "elsewhere"], done);

        let joined = first.then(second);

        let upserts: Vec<(&str, u8)> =
            joined.upserts.iter().map(|r| (r.provider_id.as_str(), r.digest[0])).collect();
        assert_eq!(upserts, [("twice", 1), ("kept", 1), ("back", 2), ("twice", 2)]);
        let last: Vec<&str> =
            last_of_each_id(&joined.upserts).iter().map(|r| r.provider_id.as_str()).collect();
        assert_eq!(last, ["kept", "back", "twice"]);
        assert_eq!(joined.removals, ["gone", "elsewhere"]);
        assert_eq!(joined.next, Next::Done { sync_token: Some("t".into()), full: false });
    }

    #[test]
    fn plays_are_never_swept() {
        let sweeping: Vec<Dataset> = Dataset::ALL.into_iter().filter(|d| d.sweeps()).collect();
        assert!(!sweeping.contains(&Dataset::RecentlyPlayed));
        assert_eq!(sweeping.len(), 4);
    }
}
