//! Datapunk's connectors: one module per provider API, each turning the provider's pages
//! into [`Page`]s of [`Record`]s that the daemon seals and stores.
//!
//! A connector knows the provider's paging, its sync tokens, its deleted-record shapes and its
//! errors; it knows nothing of PostgreSQL or of keys. The daemon drives it one request at a
//! time ([`Connector::fetch`]) and commits each page with the [`Cursor`] that follows from it
//! in one transaction, so that a crash between pages resumes where the last commit left off.
//!
//! A dataset is synced as one or more *streams* (Google Calendar: one per calendar; every other
//! dataset: one), each with its own cursor. A round of a stream starts from its stored
//! [`Cursor`], and ends when a page answers [`Next::Done`]:
//!
//! - **incremental** streams (Google Calendar and People sync tokens, Graph delta links,
//!   Spotify's recently-played `after` cursor) store the token of the last page and send it at
//!   the next round, which then returns only changes;
//! - **reconciled** streams (Spotify saved tracks and playlists, which have no change feed)
//!   read everything each round; the store removes what a completed round did not see;
//! - a full round of an incremental stream (the first, or after [`FetchError::ResyncRequired`])
//!   is reconciled too, so that records deleted while the token was dead go away.

pub mod datasets;
pub mod fetch;

pub use datasets::{Columns, Record};
pub use fetch::{FetchError, TokenSource};

/// Where a stream's round stands: what the next request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// No round under way and no sync token: the next request starts a full round.
    Start,
    /// A round under way: the provider's continuation (page token, `@odata.nextLink`, offset
    /// URL), opaque to everything but the connector. `full` says whether the round is a full
    /// one (reconciled when it completes).
    Page {
        /// The continuation, as the connector wrote it.
        continuation: String,
        /// Whether this round reads everything (and may then sweep what it did not see).
        full: bool,
    },
    /// No round under way; the next one is incremental from this sync token (Google's
    /// `nextSyncToken`, Graph's `@odata.deltaLink`, Spotify's `after` in milliseconds).
    Synced(String),
}

/// One page of a stream, as the provider sent it.
#[derive(Debug)]
pub struct Page {
    /// New and changed records.
    pub upserts: Vec<Record>,
    /// Provider ids of records the provider says are gone.
    pub removals: Vec<String>,
    /// What follows this page.
    pub next: Next,
}

/// What follows a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// More pages in this round: store this cursor with the page.
    More(Cursor),
    /// The round is complete. `sync_token` is what the next round starts from (`None` for a
    /// reconciled stream, whose next round reads everything again). `full` says whether this
    /// round read everything, so that the store may remove the records it did not see.
    Done {
        /// The token for the next round.
        sync_token: Option<String>,
        /// The round read the whole collection.
        full: bool,
    },
}

/// A stream of a dataset: Google Calendar has one per calendar, every other dataset one,
/// named `""`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stream {
    /// The provider's id of the stream (a calendar id), or `""`.
    pub id: String,
}

/// A connector for one dataset of one provider.
pub trait Connector: Send + Sync {
    /// The provider's dataset name, as in `datapunk_oauth::provider` (`calendar`, `contacts`,
    /// `recently-played`, `saved-tracks`, `playlists`).
    fn dataset(&self) -> &'static str;

    /// The streams of the dataset. Google Calendar asks `calendarList`; the others answer one
    /// stream without a request.
    fn streams<T: TokenSource>(
        &self,
        tokens: &T,
    ) -> impl Future<Output = Result<Vec<Stream>, FetchError>> + Send;

    /// Makes the one request that `cursor` calls for, with the retries [`fetch`] allows, and
    /// returns the page.
    fn fetch<T: TokenSource>(
        &self,
        tokens: &T,
        stream: &Stream,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<Page, FetchError>> + Send;
}
