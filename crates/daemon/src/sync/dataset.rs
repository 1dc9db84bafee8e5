//! One dataset's sync: its streams, page by page, sealed and stored.
//!
//! For each stream the stored cursor says what to ask; each page the connector returns is
//! sealed (one OpenPGP message of the record's personal fields under the integration's data
//! key, and a keyed fingerprint of everything stored) and written with the cursor that follows
//! it in one transaction. A crash between pages resumes at the last page stored; a page the
//! provider sent malformed is refused whole and leaves the stored rows as they were.
//!
//! Stream names are stored as keyed fingerprints, not as the provider's ids: Google names a
//! person's calendars by e-mail addresses, which must not sit in a plaintext column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datapunk_connectors::{Connector, FetchError, Record, TokenSource};
use datapunk_store::datasets::{self, Dataset, StreamKey};
use datapunk_store::{PooledClient, Store};
use datapunk_vault::field;
use datapunk_vault::key::DataKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

/// How often a stream's round may start over after the provider dropped its sync token,
/// within one sync. A second drop in a row is an error, not a loop.
const RESYNCS: u32 = 1;

/// What one dataset's sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Records added.
    pub added: u64,
    /// Records changed.
    pub updated: u64,
    /// Records removed.
    pub deleted: u64,
    /// Records the provider sent unchanged.
    pub unchanged: u64,
    /// Pages read.
    pub pages: u64,
    /// Streams synced.
    pub streams: u64,
    /// Rounds started over because the provider dropped a sync token.
    pub resyncs: u64,
}

impl Report {
    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.added + self.updated + self.unchanged
    }
}

/// Why a dataset's sync stopped. Messages name the dataset and the request, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The provider's answer (or the token keeper's).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The database.
    #[error(transparent)]
    Store(#[from] datapunk_store::Error),
    /// Sealing a record failed.
    #[error("cannot encrypt a record: {0}")]
    Seal(#[from] field::FieldError),
    /// The connector names a dataset the store has no table for.
    #[error("no table for dataset {0:?}")]
    UnknownDataset(&'static str),
    /// Reading the provider's pages stopped without saying why.
    #[error("reading the provider's pages stopped unexpectedly")]
    Stopped,
}

impl SyncError {
    /// Whether trying again later may succeed, and how long the provider asked to wait.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Self::Fetch(FetchError::Throttled { retry_after }) => Some(*retry_after),
            Self::Store(datapunk_store::Error::Disconnected { .. }) => None,
            Self::Fetch(FetchError::Unavailable { .. }) | Self::Store(_) => Some(None),
            Self::Fetch(FetchError::Token(_)) => Some(None),
            _ => None,
        }
    }
}

/// Syncs `connector`'s dataset of `integration` into `store`, sealing with `key`, and calls
/// `progress` after every page. With `full`, every stream starts a full round first (its sync
/// token dropped), whose completion removes what the provider no longer has.
///
/// # Errors
///
/// As [`SyncError`]; what was stored before the error stays, with its cursor, and the failure
/// is recorded on the stream.
pub async fn sync(
    store: &Store,
    connector: &Connector,
    tokens: &impl TokenSource,
    key: Arc<DataKey>,
    integration: &str,
    full: bool,
    progress: &mut (dyn FnMut(&Report) + Send),
) -> Result<Report, SyncError> {
    let name = connector.dataset();
    let dataset = Dataset::from_name(name).ok_or(SyncError::UnknownDataset(name))?;
    let mut report = Report::default();

    let streams = match connector.streams(tokens).await {
        Ok(streams) => streams,
        Err(error) => {
            let whole = StreamKey::new(integration, dataset, "");
            fail(store, &whole, &error.to_string()).await;
            return Err(error.into());
        }
    };
    let labelled: Vec<(String, _)> =
        streams.into_iter().map(|stream| (label(&key, &stream.id), stream)).collect();

    // A stream the provider no longer lists (a calendar removed or unshared) takes its rows.
    {
        let mut client = store.client().await?;
        let known = datasets::streams(&client, integration, dataset).await?;
        for gone in known.iter().filter(|s| !labelled.iter().any(|(label, _)| label == *s)) {
            let key = StreamKey::new(integration, dataset, gone);
            report.deleted += datasets::remove_stream(&mut client, &key).await?;
        }
    }

    let mut first_error = None;
    for (label, stream) in &labelled {
        let stream_key = StreamKey::new(integration, dataset, label);
        if full {
            let mut client = store.client().await?;
            datasets::open_stream(&client, &stream_key).await?;
            datasets::restart_round(&mut client, &stream_key).await?;
        }
        let result =
            sync_stream(store, connector, tokens, &key, &stream_key, stream, &mut report, progress)
                .await;
        // One calendar that fails does not hold the others back; the run fails at the end.
        match result {
            Ok(()) => report.streams += 1,
            // A disconnected integration's state is gone; recording the failure would bring
            // a stream of it back.
            Err(error @ SyncError::Store(datapunk_store::Error::Disconnected { .. })) => {
                return Err(error);
            }
            Err(error) => {
                fail(store, &stream_key, &error.to_string()).await;
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// Syncs one stream page by page, in three overlapping stages: the provider's pages are read
/// one after the other, each is sealed on a blocking thread as soon as it arrives, and the
/// database stores them in order, each with the cursor that follows it. Pages that are sealed
/// and waiting when the database is free again are stored together in one transaction, with
/// the cursor of the last: a slow database writes fewer, larger transactions, a slow provider
/// gets each page stored as it comes. A crash or a refusal never skips a page, since a cursor
/// is only stored with the pages before it.
#[allow(clippy::too_many_arguments)]
async fn sync_stream(
    store: &Store,
    connector: &Connector,
    tokens: &impl TokenSource,
    key: &Arc<DataKey>,
    stream_key: &StreamKey,
    stream: &datapunk_connectors::Stream,
    report: &mut Report,
    progress: &mut (dyn FnMut(&Report) + Send),
) -> Result<(), SyncError> {
    let mut client = store.client().await?;
    loop {
        let state = datasets::open_stream(&client, stream_key).await?;
        let (sender, receiver) = mpsc::channel(STEPS);
        let (reports, mut reported) = watch::channel(report.clone());
        let read =
            read(connector, tokens, Arc::clone(key), stream, to_connector(&state.cursor), sender);
        // The database stage is a task of its own, so that decoding a page on this one never
        // holds a statement back.
        let stored = report.clone();
        let writing =
            tokio::spawn(write(client, stream_key.clone(), state.round, receiver, stored, reports));
        let relay = async {
            while reported.changed().await.is_ok() {
                let snapshot = reported.borrow_and_update().clone();
                progress(&snapshot);
            }
        };
        let ((), (), written) = tokio::join!(read, relay, writing);
        let (returned, result, after) = match written {
            Ok(written) => written,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        (client, *report) = (returned, after);

        match result {
            // Another sync of the same stream moved the round on: start from what it left.
            Err(SyncError::Store(datapunk_store::Error::RoundChanged { .. })) => continue,
            result => return result,
        }
    }
}

/// How many records may be read and sealed ahead of the database.
const AHEAD: u32 = 5_000;
/// How many steps may wait for the database, whatever their size.
const STEPS: usize = 64;

/// What the reading stage hands the database stage.
enum Step {
    /// A page, being sealed; `ahead` holds its share of [`AHEAD`] until it is stored.
    Page { sealing: JoinHandle<Result<datasets::Page, SyncError>>, ahead: OwnedSemaphorePermit },
    /// The provider dropped the sync token, or a reconciled list changed while it was read:
    /// the round starts over, from the start.
    Restart { reason: String },
    /// Reading failed; what came before is stored, then the sync stops with this.
    Failed(SyncError),
}

/// Reads the stream's pages from `cursor` on and hands each to `steps`, sealing, until the
/// round's last page, a failure, or the database stage stops listening.
async fn read(
    connector: &Connector,
    tokens: &impl TokenSource,
    key: Arc<DataKey>,
    stream: &datapunk_connectors::Stream,
    mut cursor: datapunk_connectors::Cursor,
    steps: mpsc::Sender<Step>,
) {
    let ahead = Arc::new(Semaphore::new(AHEAD as usize));
    let mut resyncs = 0;
    loop {
        let page = match connector.fetch(tokens, stream, &cursor).await {
            Ok(page) => page,
            Err(FetchError::ResyncRequired { reason }) if resyncs < RESYNCS => {
                resyncs += 1;
                if steps.send(Step::Restart { reason }).await.is_err() {
                    return;
                }
                cursor = datapunk_connectors::Cursor::Start;
                continue;
            }
            Err(error) => {
                // Nobody listens only when the database stage stopped first, with its error.
                let _ = steps.send(Step::Failed(error.into())).await;
                return;
            }
        };
        let next = match &page.next {
            datapunk_connectors::Next::More(cursor) => Some(cursor.clone()),
            datapunk_connectors::Next::Done { .. } => None,
        };
        let share = u32::try_from(page.upserts.len()).unwrap_or(AHEAD).clamp(1, AHEAD);
        let Ok(permit) = Arc::clone(&ahead).acquire_many_owned(share).await else {
            return;
        };
        let key = Arc::clone(&key);
        let sealing = tokio::task::spawn_blocking(move || seal(&key, page));
        if steps.send(Step::Page { sealing, ahead: permit }).await.is_err() {
            return;
        }
        match next {
            Some(next) => cursor = next,
            None => return,
        }
    }
}

/// Stores the pages `steps` brings in order, joining those already sealed and waiting, until
/// the round's last page is stored or a step fails; `report` adds up what was stored, and each
/// update goes to `reports`. Gives back the connection, the outcome and the report.
async fn write(
    mut client: PooledClient,
    stream_key: StreamKey,
    round: i64,
    steps: mpsc::Receiver<Step>,
    mut report: Report,
    reports: watch::Sender<Report>,
) -> (PooledClient, Result<(), SyncError>, Report) {
    let result = store_pages(&mut client, &stream_key, round, steps, &mut report, &reports).await;
    (client, result, report)
}

async fn store_pages(
    client: &mut tokio_postgres::Client,
    stream_key: &StreamKey,
    mut round: i64,
    mut steps: mpsc::Receiver<Step>,
    report: &mut Report,
    reports: &watch::Sender<Report>,
) -> Result<(), SyncError> {
    let mut waiting = None;
    loop {
        let step = match waiting.take() {
            Some(step) => step,
            // The reading stage always ends with a last page or a failure; ending without
            // one means it panicked, which the join re-raises.
            None => steps.recv().await.ok_or(SyncError::Stopped)?,
        };
        let mut held = Vec::new();
        let mut page = match step {
            Step::Page { sealing, ahead } => {
                held.push(ahead);
                sealed(sealing).await?
            }
            Step::Restart { reason } => {
                tracing::info!(
                    integration = stream_key.integration.as_str(),
                    dataset = stream_key.dataset.name(),
                    reason = reason.as_str(),
                    "the round starts over, reading everything again"
                );
                report.resyncs += 1;
                round = datasets::restart_round(client, stream_key).await?.round;
                continue;
            }
            Step::Failed(error) => return Err(error),
        };
        while page.upserts.len() < AHEAD as usize && matches!(page.next, datasets::Next::More(_)) {
            match steps.try_recv() {
                Ok(Step::Page { sealing, ahead }) if sealing.is_finished() => {
                    held.push(ahead);
                    page = page.then(sealed(sealing).await?);
                }
                Ok(step) => {
                    waiting = Some(step);
                    break;
                }
                Err(_) => break,
            }
        }

        let last = matches!(page.next, datasets::Next::Done { .. });
        let counts = datasets::apply_page(client, stream_key, round, &page).await?;
        report.added += counts.added;
        report.updated += counts.updated;
        report.deleted += counts.deleted;
        report.unchanged += counts.unchanged;
        report.pages += held.len() as u64;
        drop(held);
        reports.send_replace(report.clone());
        if last {
            return Ok(());
        }
    }
}

/// The outcome of a page's sealing; a panic there is re-raised here.
async fn sealed(
    sealing: JoinHandle<Result<datasets::Page, SyncError>>,
) -> Result<datasets::Page, SyncError> {
    match sealing.await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Records a failure on `key`'s stream; a database that cannot take it is logged instead.
async fn fail(store: &Store, key: &StreamKey, error: &str) {
    let recorded = async {
        let client = store.client().await?;
        datasets::record_failure(&client, key, error).await
    };
    if let Err(failure) = recorded.await {
        tracing::warn!(error = %failure, "could not record a sync failure");
    }
}

/// The stored name of the stream the provider calls `id`: `""` stays `""`, anything else
/// becomes a keyed fingerprint that says nothing without the data key.
fn label(key: &DataKey, id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    let digest = field::fingerprint(key, &[("stream", id)]);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals a page's records: encryption is the CPU-heavy part of a sync, so this runs on a
/// blocking thread.
fn seal(key: &DataKey, page: datapunk_connectors::Page) -> Result<datasets::Page, SyncError> {
    let upserts = page
        .upserts
        .into_iter()
        .map(|record| seal_record(key, record))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(datasets::Page { upserts, removals: page.removals, next: to_store_next(page.next) })
}

fn seal_record(key: &DataKey, mut record: Record) -> Result<datasets::Row, SyncError> {
    // PostgreSQL's text and JSON types cannot hold U+0000, which a provider may send (an
    // invitation's title, a tag of a local file): one such record must not block its stream.
    for (_, text) in &mut record.personal {
        without_nul(text);
    }
    let fields: Vec<(&str, &str)> =
        record.personal.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let sealed = field::encrypt_fields(key, &fields)?;
    // The fingerprint covers the plaintext columns too, so a change to either rewrites the row.
    let columns = format!("{:?} {:?}", record.updated_at, record.columns);
    let mut covered = fields;
    covered.push(("\0columns", columns.as_str()));
    let digest = field::fingerprint(key, &covered).to_vec();
    Ok(datasets::Row {
        provider_id: record.id,
        updated_at: record.updated_at,
        columns: to_store_columns(record.columns),
        sealed,
        digest,
    })
}

fn to_connector(cursor: &datasets::Cursor) -> datapunk_connectors::Cursor {
    match cursor {
        datasets::Cursor::Start => datapunk_connectors::Cursor::Start,
        datasets::Cursor::Page { continuation, full } => {
            datapunk_connectors::Cursor::Page { continuation: continuation.clone(), full: *full }
        }
        datasets::Cursor::Synced(token) => datapunk_connectors::Cursor::Synced(token.clone()),
    }
}

fn to_store_cursor(cursor: datapunk_connectors::Cursor) -> datasets::Cursor {
    match cursor {
        datapunk_connectors::Cursor::Start => datasets::Cursor::Start,
        datapunk_connectors::Cursor::Page { continuation, full } => {
            datasets::Cursor::Page { continuation, full }
        }
        datapunk_connectors::Cursor::Synced(token) => datasets::Cursor::Synced(token),
    }
}

fn to_store_next(next: datapunk_connectors::Next) -> datasets::Next {
    match next {
        datapunk_connectors::Next::More(cursor) => datasets::Next::More(to_store_cursor(cursor)),
        datapunk_connectors::Next::Done { sync_token, full } => {
            datasets::Next::Done { sync_token, full }
        }
    }
}

fn to_store_track(mut track: datapunk_connectors::Track) -> datasets::Track {
    for text in
        [&mut track.id, &mut track.name, &mut track.album].into_iter().chain(&mut track.artists)
    {
        without_nul(text);
    }
    datasets::Track {
        id: track.id,
        name: track.name,
        artists: track.artists,
        album: track.album,
        duration_ms: track.duration_ms,
    }
}

/// Replaces U+0000 with U+FFFD, the replacement character.
fn without_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

fn to_store_columns(columns: datapunk_connectors::Columns) -> datasets::Columns {
    use datapunk_connectors::Columns as C;
    match columns {
        C::Event { starts_at, ends_at, all_day, status, series_id, kind } => {
            datasets::Columns::Event { starts_at, ends_at, all_day, status, series_id, kind }
        }
        C::Contact => datasets::Columns::Contact,
        C::Play { played_at, track } => {
            datasets::Columns::Play { played_at, track: to_store_track(track) }
        }
        C::SavedTrack { added_at, track } => {
            datasets::Columns::SavedTrack { added_at, track: to_store_track(track) }
        }
        C::Playlist { snapshot_id, entries, public, collaborative } => {
            datasets::Columns::Playlist { snapshot_id, entries, public, collaborative }
        }
    }
}

/// Milliseconds since `since`, for reports.
pub(crate) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
