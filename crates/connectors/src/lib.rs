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

//!
//! [`Connector::new`] picks the connector for a provider's dataset; the modules below hold one
//! provider API each, and [`fetch`] the request layer they share.

pub mod datasets;
pub mod fetch;
mod google_calendar;
mod google_people;
mod graph;
mod spotify;
mod wire;

use datapunk_oauth::provider::{Endpoints, Provider};
use url::Url;

pub use datasets::{Columns, Record, Track};
pub use fetch::{FetchError, RetryPolicy, TokenSource};

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

/// How the connectors ask: page sizes, Graph's calendar window and the retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Google Calendar's `maxResults` (at most 2500, which is the default).
    pub calendar_page_size: u32,
    /// Graph's `Prefer: odata.maxpagesize` (the server may send fewer).
    pub graph_page_size: u32,
    /// How far back Graph's calendar window reaches from the start of a full round. The window
    /// is fixed for the delta link's lineage: it moves only with the next full round.
    pub graph_window_past: time::Duration,
    /// How far ahead Graph's calendar window reaches from the start of a full round.
    pub graph_window_future: time::Duration,
    /// The retries of every request.
    pub retry: RetryPolicy,
}

impl Default for Options {
    /// Pages as large as the providers allow (Graph: 200), Graph's window from one year back
    /// to two years ahead, and the default [`RetryPolicy`].
    fn default() -> Self {
        Self {
            calendar_page_size: 2500,
            graph_page_size: 200,
            graph_window_past: time::Duration::days(365),
            graph_window_future: time::Duration::days(2 * 365),
            retry: RetryPolicy::default(),
        }
    }
}

/// Why no connector could be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The provider has no such dataset, or Datapunk has no connector for it.
    #[error("{provider} has no dataset {dataset:?}")]
    UnknownDataset {
        /// The provider.
        provider: Provider,
        /// The dataset asked for.
        dataset: String,
    },
    /// An API base URL of the endpoints is not an absolute `http(s)` URL.
    #[error("the {which} of {provider} is not an http(s) URL")]
    BadBase {
        /// The provider.
        provider: Provider,
        /// `api_base` or `people_api_base`.
        which: &'static str,
    },
}

/// The connector for one dataset of one provider; the daemon keeps one per integration and
/// dataset. See the [crate documentation](crate) for how it is driven.
#[derive(Clone, Debug)]
pub struct Connector {
    kind: Kind,
    base: Url,
    options: Options,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    GoogleCalendar,
    GooglePeople,
    GraphCalendar,
    GraphContacts,
    SpotifyPlays,
    SpotifySavedTracks,
    SpotifyPlaylists,
}

impl Connector {
    /// The connector for `provider`'s `dataset` (as named in `datapunk_oauth::provider`),
    /// reading the data API at `endpoints.api_base` (Google contacts: `people_api_base`).
    ///
    /// # Errors
    ///
    /// [`SetupError::UnknownDataset`] for a dataset the provider does not have,
    /// [`SetupError::BadBase`] when the base URL it needs is missing or not `http(s)`.
    pub fn new(
        provider: Provider,
        dataset: &str,
        endpoints: &Endpoints,
        options: &Options,
    ) -> Result<Self, SetupError> {
        let kind = match (provider, dataset) {
            (Provider::Google, "calendar") => Kind::GoogleCalendar,
            (Provider::Google, "contacts") => Kind::GooglePeople,
            (Provider::Microsoft, "calendar") => Kind::GraphCalendar,
            (Provider::Microsoft, "contacts") => Kind::GraphContacts,
            (Provider::Spotify, "recently-played") => Kind::SpotifyPlays,
            (Provider::Spotify, "saved-tracks") => Kind::SpotifySavedTracks,
            (Provider::Spotify, "playlists") => Kind::SpotifyPlaylists,
            _ => {
                return Err(SetupError::UnknownDataset { provider, dataset: dataset.to_owned() });
            }
        };
        let (which, base) = match kind {
            Kind::GooglePeople => ("people_api_base", endpoints.people_api_base.as_deref()),
            _ => ("api_base", Some(endpoints.api_base.as_str())),
        };
        let base = base
            .and_then(|base| Url::parse(base).ok())
            .filter(|base| matches!(base.scheme(), "http" | "https") && base.has_host())
            .ok_or(SetupError::BadBase { provider, which })?;

        Ok(Self { kind, base, options: options.clone() })
    }

    /// The provider's dataset name: `calendar`, `contacts`, `recently-played`,
    /// `saved-tracks` or `playlists`.
    pub fn dataset(&self) -> &'static str {
        match self.kind {
            Kind::GoogleCalendar | Kind::GraphCalendar => "calendar",
            Kind::GooglePeople | Kind::GraphContacts => "contacts",
            Kind::SpotifyPlays => "recently-played",
            Kind::SpotifySavedTracks => "saved-tracks",
            Kind::SpotifyPlaylists => "playlists",
        }
    }

    /// Whether the dataset has a change feed. A stream without one ([`Cursor::Synced`] never
    /// stored) reads everything every round and reconciles.
    pub fn is_incremental(&self) -> bool {
        !matches!(self.kind, Kind::SpotifySavedTracks | Kind::SpotifyPlaylists)
    }

    /// The streams of the dataset: Google Calendar's calendars from `calendarList`; one stream
    /// named `""` for every other dataset, without a request.
    ///
    /// # Errors
    ///
    /// As [`Connector::fetch`].
    pub async fn streams<T: TokenSource>(&self, tokens: &T) -> Result<Vec<Stream>, FetchError> {
        match self.kind {
            Kind::GoogleCalendar => {
                google_calendar::streams(tokens, &self.base, &self.options).await
            }
            _ => Ok(vec![Stream { id: String::new() }]),
        }
    }

    /// Makes the one request that `cursor` calls for in `stream`, with the retries
    /// [`Options::retry`] allows, and returns the page. The page is whole or not at all.
    ///
    /// # Errors
    ///
    /// [`FetchError::ResyncRequired`]: drop the partial round and the sync token, start again
    /// from [`Cursor::Start`]. [`FetchError::Throttled`] and [`FetchError::Unavailable`]: try
    /// the same cursor later. [`FetchError::Malformed`] and [`FetchError::Refused`]: the
    /// provider will answer the same again; [`FetchError::Token`]: the token keeper's failure.
    pub async fn fetch<T: TokenSource>(
        &self,
        tokens: &T,
        stream: &Stream,
        cursor: &Cursor,
    ) -> Result<Page, FetchError> {
        let (base, options) = (&self.base, &self.options);
        match self.kind {
            Kind::GoogleCalendar => {
                google_calendar::fetch(tokens, base, options, &stream.id, cursor).await
            }
            Kind::GooglePeople => google_people::fetch(tokens, base, options, cursor).await,
            Kind::GraphCalendar => {
                graph::fetch(tokens, base, options, graph::Collection::Calendar, cursor).await
            }
            Kind::GraphContacts => {
                graph::fetch(tokens, base, options, graph::Collection::Contacts, cursor).await
            }
            Kind::SpotifyPlays => spotify::recently_played(tokens, base, options, cursor).await,
            Kind::SpotifySavedTracks => {
                spotify::list(tokens, base, options, spotify::List::SavedTracks, cursor).await
            }
            Kind::SpotifyPlaylists => {
                spotify::list(tokens, base, options, spotify::List::Playlists, cursor).await
            }
        }
    }
}
