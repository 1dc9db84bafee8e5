//! The providers' data APIs: Google Calendar and People, Microsoft Graph's calendar and
//! contacts delta queries, and Spotify's library, playlists and recently-played list.
//!
//! Every dataset is a [`Collection`] of records numbered by *ordinal*: ordinals below the
//! population's size are generated from the seed on demand ([`seed`]), later ones were added.
//! A mutation bumps one change sequence shared by all datasets and appends a [`Version`] to the
//! record's history, which is never pruned, so that the state of any record at any past
//! sequence can be told. That gives the providers' two promises cheaply:
//!
//! - a *round* (a listing followed page by page) is answered as of the sequence its first page
//!   saw, so that records changing while a client pages neither vanish nor appear twice;
//! - a sync token, delta link or cursor remembers the sequence it was issued at, and the next
//!   round lists exactly the records whose history has a version after it, deleted ones as the
//!   provider's tombstones.
//!
//! Tokens are opaque to clients ([`token`]) and bound to this sandbox by a keyed hash, so a
//! token edited by hand, or one from an earlier run, is a badly formed one.
//!
//! [`Fault`]s queued per provider make the next data requests misbehave, and every request is
//! written to a log ([`LoggedRequest`]).

pub(crate) mod admin;
mod calendar;
mod google;
pub(crate) mod graph;
mod people;
pub(crate) mod seed;
mod spotify;
mod token;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Shared};
use axum::http::{HeaderMap, HeaderName, Request as HttpRequest, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::account;
use crate::oauth::{Grant, Provider, Sandbox, State, lock};

/// A provider's dataset, as Datapunk names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// Google Calendar: three calendars and their events.
    GoogleCalendar,
    /// Google People: the person's contacts.
    GoogleContacts,
    /// Outlook calendar through Graph's `calendarView` delta query.
    MicrosoftCalendar,
    /// Outlook contacts through Graph's contacts delta query.
    MicrosoftContacts,
    /// Spotify's recently-played list: the last 50 plays.
    SpotifyRecentlyPlayed,
    /// Spotify's saved tracks.
    SpotifySavedTracks,
    /// Spotify's playlists.
    SpotifyPlaylists,
}

impl Dataset {
    /// Every dataset.
    pub const ALL: [Dataset; 7] = [
        Self::GoogleCalendar,
        Self::GoogleContacts,
        Self::MicrosoftCalendar,
        Self::MicrosoftContacts,
        Self::SpotifyRecentlyPlayed,
        Self::SpotifySavedTracks,
        Self::SpotifyPlaylists,
    ];

    /// The provider that holds it.
    pub const fn provider(self) -> Provider {
        match self {
            Self::GoogleCalendar | Self::GoogleContacts => Provider::Google,
            Self::MicrosoftCalendar | Self::MicrosoftContacts => Provider::Microsoft,
            Self::SpotifyRecentlyPlayed | Self::SpotifySavedTracks | Self::SpotifyPlaylists => {
                Provider::Spotify
            }
        }
    }

    /// Its name within the provider, as Datapunk's configuration spells it: `calendar`,
    /// `contacts`, `recently-played`, `saved-tracks`, `playlists`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GoogleCalendar | Self::MicrosoftCalendar => "calendar",
            Self::GoogleContacts | Self::MicrosoftContacts => "contacts",
            Self::SpotifyRecentlyPlayed => "recently-played",
            Self::SpotifySavedTracks => "saved-tracks",
            Self::SpotifyPlaylists => "playlists",
        }
    }

    /// The dataset `name` of `provider`.
    pub fn find(provider: Provider, name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.provider() == provider && d.name() == name)
    }

    /// The scopes a grant needs for it, any one of each inner list (a broader scope stands in
    /// for the read-only one), compared as the provider compares them.
    fn scopes(self) -> &'static [&'static [&'static str]] {
        match self {
            Self::GoogleCalendar => &[&[
                "https://www.googleapis.com/auth/calendar.readonly",
                "https://www.googleapis.com/auth/calendar",
            ]],
            Self::GoogleContacts => &[&[
                "https://www.googleapis.com/auth/contacts.readonly",
                "https://www.googleapis.com/auth/contacts",
            ]],
            Self::MicrosoftCalendar => &[&[
                "Calendars.Read",
                "Calendars.ReadWrite",
                "https://graph.microsoft.com/Calendars.Read",
            ]],
            Self::MicrosoftContacts => &[&[
                "Contacts.Read",
                "Contacts.ReadWrite",
                "https://graph.microsoft.com/Contacts.Read",
            ]],
            Self::SpotifyRecentlyPlayed => &[&["user-read-recently-played"]],
            Self::SpotifySavedTracks => &[&["user-library-read"]],
            Self::SpotifyPlaylists => &[&["playlist-read-private"]],
        }
    }

    /// Whether `grant` covers the dataset.
    fn granted(self, grant: &Grant) -> bool {
        let case_insensitive = self.provider() == Provider::Microsoft;
        self.scopes().iter().all(|any| {
            any.iter().any(|wanted| {
                grant.scopes.iter().any(|scope| {
                    if case_insensitive {
                        scope.eq_ignore_ascii_case(wanted)
                    } else {
                        scope == wanted
                    }
                })
            })
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::GoogleCalendar => 1,
            Self::GoogleContacts => 2,
            Self::MicrosoftCalendar => 3,
            Self::MicrosoftContacts => 4,
            Self::SpotifyRecentlyPlayed => 5,
            Self::SpotifySavedTracks => 6,
            Self::SpotifyPlaylists => 7,
        }
    }
}

/// How much data the sandbox generates, and from which seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    /// The seed: the same seed and sizes give the same records.
    pub seed: u64,
    /// Google Calendar events over three calendars (recurring series with exceptions, all-day
    /// events, single ones), and as many Outlook events.
    pub events: u64,
    /// Google contacts, and as many Outlook contacts.
    pub contacts: u64,
    /// Spotify saved tracks.
    pub saved_tracks: u64,
    /// Spotify playlists.
    pub playlists: u64,
    /// Spotify plays in the recently-played list, at most 50.
    pub plays: u64,
}

impl Default for Population {
    /// A few hundred records, enough for a demo: seed 1, 300 events, 120 contacts, 200 saved
    /// tracks, 12 playlists and 50 plays.
    fn default() -> Self {
        Self { seed: 1, events: 300, contacts: 120, saved_tracks: 200, playlists: 12, plays: 50 }
    }
}

/// How a data request misbehaves. [`Sandbox::inject`](crate::Sandbox::inject) queues them per
/// provider; each data request of that provider takes the first one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 429 in the provider's shape, with `Retry-After: SECONDS` when given.
    TooManyRequests {
        /// The `Retry-After` header's seconds; none leaves the header out.
        retry_after: Option<u32>,
    },
    /// Google's 403 `rateLimitExceeded` (domain `usageLimits`); a 429 elsewhere.
    RateLimitExceeded,
    /// Google's 403 `userRateLimitExceeded`; a 429 elsewhere.
    UserRateLimitExceeded,
    /// A server error with this status (500, 502, 503, 504) in the provider's shape.
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The right answer, after a wait; longer than the client's timeout, it is a timeout.
    Slow {
        /// How long to wait, in milliseconds.
        millis: u64,
    },
    /// The right status and headers, with the body cut off halfway.
    Truncated,
    /// The right answer with a value the provider does not document in a field it does: an
    /// event `status`, a Graph event `type`, a person's `objectType`, a track's `type`.
    UnknownValue,
    /// A page with no records that still links to the next one, as Google and Graph may
    /// answer; elsewhere the right answer.
    EmptyPage,
}

/// A request the sandbox answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters that steer paging and syncing, in the order sent.
    pub query: Vec<(String, String)>,
    /// When the answer was sent.
    #[serde(skip)]
    pub at: Instant,
    /// When the answer was sent, in milliseconds since the sandbox started.
    pub millis: u64,
    /// The status answered.
    pub status: u16,
}

/// A record as the provider serves it, with where it lives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// The provider's id: an event id, `people/c…`, a Graph id, a Spotify id; for a play, its
    /// `played_at`.
    pub id: String,
    /// Google Calendar only: the id of the calendar holding the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// The record in the provider's JSON, as a full listing serves it.
    pub json: Value,
}

/// Why a mutation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    /// No live record of the dataset has this id.
    #[error("{dataset:?} has no record {id:?}")]
    UnknownRecord {
        /// The dataset asked.
        dataset: Dataset,
        /// The id given.
        id: String,
    },
    /// The dataset does not change that way: plays are only ever added.
    #[error("{dataset:?} records cannot be {what}")]
    Unsupported {
        /// The dataset asked.
        dataset: Dataset,
        /// `changed` or `deleted`.
        what: &'static str,
    },
}

/// Which shape Spotify's playlists take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlaylistShape {
    /// The documented shape: `tracks: {href, total}`.
    #[default]
    Tracks,
    /// The 2026 development-mode shape: `items: {href, total}`.
    Items,
}

/// One state of a record: from `seq` on, `revision` (or deleted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Version {
    seq: u64,
    revision: u32,
    deleted: bool,
    /// Unix milliseconds of the mutation.
    at_ms: i64,
}

/// A record's state at some sequence.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Snap {
    /// Not created yet.
    Absent,
    /// Live at `revision`; `at_ms` is when it was last changed, none for a generated record.
    Live { revision: u32, at_ms: Option<i64> },
    /// Deleted at `at_ms`; `revision` is the last live one.
    Deleted { revision: u32, at_ms: i64 },
}

/// A dataset's records by ordinal, with the history of every changed one.
#[derive(Debug, Default)]
pub(crate) struct Collection {
    base: u64,
    added: u64,
    history: BTreeMap<u64, Vec<Version>>,
}

impl Collection {
    fn new(base: u64) -> Self {
        Self { base, added: 0, history: BTreeMap::new() }
    }

    /// How many ordinals there are, deleted ones included.
    pub(crate) fn len(&self) -> u64 {
        self.base + self.added
    }

    /// How many records were generated.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn state_at(&self, ordinal: u64, at: u64) -> Snap {
        let last = self.history.get(&ordinal).and_then(|h| h.iter().rev().find(|v| v.seq <= at));
        match last {
            Some(v) if v.deleted => Snap::Deleted { revision: v.revision, at_ms: v.at_ms },
            Some(v) => Snap::Live { revision: v.revision, at_ms: Some(v.at_ms) },
            None if ordinal < self.base => Snap::Live { revision: 0, at_ms: None },
            None => Snap::Absent,
        }
    }

    /// Ordinals from `from` on whose history has a version in `(since, at]`.
    fn changed(&self, since: u64, at: u64, from: u64) -> impl Iterator<Item = u64> + '_ {
        self.history
            .range(from..)
            .filter(move |(_, h)| h.iter().any(|v| v.seq > since && v.seq <= at))
            .map(|(ordinal, _)| *ordinal)
    }

    /// How many records are live at `at`.
    pub(crate) fn live_at(&self, at: u64) -> u64 {
        let mut live = self.base;
        for (ordinal, history) in &self.history {
            let was_base = *ordinal < self.base;
            let now_live = matches!(self.state_at(*ordinal, at), Snap::Live { .. });
            match (was_base, now_live) {
                (true, false) => live -= 1,
                (false, true) => live += 1,
                _ => {}
            }
            let _ = history;
        }
        live
    }

    fn is_live(&self, ordinal: u64, at: u64) -> bool {
        matches!(self.state_at(ordinal, at), Snap::Live { .. })
    }

    fn push(&mut self, ordinal: u64, version: Version) {
        self.history.entry(ordinal).or_default().push(version);
    }

    /// When an added record was created, in Unix milliseconds; none for generated ones.
    pub(crate) fn created_ms(&self, ordinal: u64) -> Option<i64> {
        if ordinal < self.base {
            return None;
        }
        self.history.get(&ordinal).and_then(|h| h.first()).map(|v| v.at_ms)
    }

    fn revision(&self, ordinal: u64) -> u32 {
        self.history.get(&ordinal).and_then(|h| h.last()).map_or(0, |v| v.revision)
    }
}

/// Where a page starts: the record's ordinal and how many of its rows were served already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) ordinal: u64,
    pub(crate) sub: u32,
}

/// Up to `limit` rows from `from` on: every record in order for a full round (`since` none),
/// else the records changed in `(since, at]`, each as `rows` renders it at `at`. Returns the
/// rows and where the next page starts, none when nothing is left.
pub(crate) fn page(
    collection: &Collection,
    since: Option<u64>,
    at: u64,
    from: Position,
    limit: usize,
    mut rows: impl FnMut(u64, Snap) -> Vec<Value>,
) -> (Vec<Value>, Option<Position>) {
    let ordinals: Box<dyn Iterator<Item = u64> + '_> = match since {
        None => Box::new(from.ordinal..collection.len()),
        Some(since) => Box::new(collection.changed(since, at, from.ordinal)),
    };
    let mut out = Vec::new();
    for ordinal in ordinals {
        let skip = if ordinal == from.ordinal { from.sub as usize } else { 0 };
        for (index, row) in rows(ordinal, collection.state_at(ordinal, at)).into_iter().enumerate()
        {
            if index < skip {
                continue;
            }
            if out.len() >= limit {
                let sub = u32::try_from(index).unwrap_or(u32::MAX);
                return (out, Some(Position { ordinal, sub }));
            }
            out.push(row);
        }
    }
    (out, None)
}

/// Whether tokens of a dataset are still honoured.
#[derive(Clone, Copy, Debug, Default)]
struct Lineage {
    /// Bumped by an invalidation: tokens of an older epoch are dead.
    epoch: u32,
    /// Incremental pages left to serve before the tokens are invalidated.
    countdown: Option<u32>,
}

/// An answer kept by [`Data::remember`]: what it depended on, its body and extra headers.
#[derive(Clone)]
struct Remembered {
    stamp: (u64, u32, usize, bool),
    body: Bytes,
    headers: Vec<(HeaderName, String)>,
}

/// A recently-played entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Play {
    pub(crate) played_at_ms: i64,
    /// The ordinal of the track, in the catalogue of played tracks.
    pub(crate) track: u64,
}

/// Everything the data APIs serve and remember.
pub(crate) struct Data {
    pub(crate) population: Population,
    /// The change sequence: the number of mutations so far.
    pub(crate) seq: u64,
    /// When the last mutation happened, in Unix milliseconds.
    last_ms: i64,
    pub(crate) calendars: [Collection; 3],
    pub(crate) contacts: Collection,
    pub(crate) graph_events: Collection,
    pub(crate) graph_contacts: Collection,
    pub(crate) saved_tracks: Collection,
    pub(crate) playlists: Collection,
    /// Newest first, at most 50.
    pub(crate) plays: VecDeque<Play>,
    /// The next track ordinal a new play takes.
    next_play_track: u64,
    pub(crate) playlist_shape: PlaylistShape,
    lineages: HashMap<Dataset, Lineage>,
    faults: HashMap<Provider, VecDeque<Fault>>,
    pub(crate) log: Vec<LoggedRequest>,
    /// Answers kept to be sent again, when [`Data::remember_answers`] turned that on.
    remembered: Option<HashMap<String, Remembered>>,
    /// Texts planted into records ([`Data::plant`]), by dataset and id.
    plants: HashMap<(Dataset, String), String>,
    started: Instant,
    /// The key binding tokens to this sandbox.
    salt: [u8; 16],
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// Most plays Spotify remembers.
pub(crate) const PLAYS_KEPT: usize = 50;

impl Data {
    pub(crate) fn new(population: Population) -> Self {
        let events = population.events;
        let calendars =
            [events * 6 / 10, events * 3 / 10, events - events * 6 / 10 - events * 3 / 10];
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut salt);
        let plays = spotify::initial_plays(&population);
        Self {
            calendars: calendars.map(Collection::new),
            contacts: Collection::new(population.contacts),
            graph_events: Collection::new(population.events),
            graph_contacts: Collection::new(population.contacts),
            saved_tracks: Collection::new(population.saved_tracks),
            playlists: Collection::new(population.playlists),
            next_play_track: plays.len() as u64,
            plays,
            playlist_shape: PlaylistShape::default(),
            seq: 0,
            last_ms: seed::ANCHOR.unix_timestamp() * 1000,
            lineages: HashMap::new(),
            faults: HashMap::new(),
            log: Vec::new(),
            remembered: None,
            plants: HashMap::new(),
            started: Instant::now(),
            salt,
            population,
        }
    }

    /// From now on, keeps each data answer and sends it again for the same request, as long as
    /// nothing it depends on changed: no mutation, no token invalidation, no plant, the same
    /// playlist shape. Rendering realistic JSON is the provider's work; a benchmark running
    /// the sandbox on the machine it measures uses this so that, from the second read of the
    /// same pages on, it measures the client rather than the stand-in for the provider.
    pub(crate) fn remember_answers(&mut self) {
        self.remembered.get_or_insert_with(HashMap::new);
    }

    /// What a remembered answer of `dataset` depends on, or `None` when answers are not kept
    /// (not asked for, or the dataset's tokens are counting down to their invalidation).
    fn answer_stamp(&self, dataset: Dataset) -> Option<(u64, u32, usize, bool)> {
        let lineage = self.lineage(dataset);
        (self.remembered.is_some() && lineage.countdown.is_none()).then(|| {
            let shape = self.playlist_shape == PlaylistShape::Items;
            (self.seq, lineage.epoch, self.plants.len(), shape)
        })
    }

    /// The remembered answer to the request `key` names, if it still holds.
    fn remembered(&self, key: &str, dataset: Dataset) -> Option<Remembered> {
        let stamp = self.answer_stamp(dataset)?;
        let remembered = self.remembered.as_ref()?.get(key)?;
        (remembered.stamp == stamp).then(|| remembered.clone())
    }

    /// Keeps `answer` to the request `key` names, when answers are kept.
    fn remember(
        &mut self,
        key: String,
        dataset: Dataset,
        body: Bytes,
        headers: &[(HeaderName, String)],
    ) {
        let Some(stamp) = self.answer_stamp(dataset) else {
            return;
        };
        if let Some(remembered) = &mut self.remembered {
            remembered.insert(key, Remembered { stamp, body, headers: headers.to_vec() });
        }
    }

    /// Starts a mutation: the new sequence and its time, never before the last one's.
    fn bump(&mut self) -> (u64, i64) {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        )
        .unwrap_or(i64::MAX);
        self.seq += 1;
        self.last_ms = now.max(self.last_ms + 1);
        (self.seq, self.last_ms)
    }

    fn lineage(&self, dataset: Dataset) -> Lineage {
        self.lineages.get(&dataset).copied().unwrap_or_default()
    }

    /// The current epoch of `dataset`'s tokens.
    pub(crate) fn epoch(&self, dataset: Dataset) -> u32 {
        self.lineage(dataset).epoch
    }

    /// Kills `dataset`'s tokens now, or after `pages` more incremental pages.
    pub(crate) fn invalidate(&mut self, dataset: Dataset, pages: u32) {
        let lineage = self.lineages.entry(dataset).or_default();
        if pages == 0 {
            lineage.epoch += 1;
            lineage.countdown = None;
        } else {
            lineage.countdown = Some(pages);
        }
    }

    /// Counts an incremental page served, invalidating the tokens when the countdown ends.
    pub(crate) fn served_incremental(&mut self, dataset: Dataset) {
        let lineage = self.lineages.entry(dataset).or_default();
        if let Some(left) = lineage.countdown {
            if left <= 1 {
                lineage.epoch += 1;
                lineage.countdown = None;
            } else {
                lineage.countdown = Some(left - 1);
            }
        }
    }

    pub(crate) fn inject(&mut self, provider: Provider, faults: &[Fault]) {
        self.faults.entry(provider).or_default().extend(faults.iter().cloned());
    }

    fn collection_mut(&mut self, dataset: Dataset, calendar: usize) -> Option<&mut Collection> {
        match dataset {
            Dataset::GoogleCalendar => self.calendars.get_mut(calendar),
            Dataset::GoogleContacts => Some(&mut self.contacts),
            Dataset::MicrosoftCalendar => Some(&mut self.graph_events),
            Dataset::MicrosoftContacts => Some(&mut self.graph_contacts),
            Dataset::SpotifySavedTracks => Some(&mut self.saved_tracks),
            Dataset::SpotifyPlaylists => Some(&mut self.playlists),
            Dataset::SpotifyRecentlyPlayed => None,
        }
    }

    /// Adds a record (to the primary calendar for Google Calendar; a play of a new track for
    /// recently-played), returning its id.
    pub(crate) fn add(&mut self, dataset: Dataset, account: &crate::Account) -> String {
        let (seq, at_ms) = self.bump();
        if dataset == Dataset::SpotifyRecentlyPlayed {
            let newest = self.plays.front().map_or(at_ms, |p| p.played_at_ms);
            let play = Play { played_at_ms: at_ms.max(newest + 1), track: self.next_play_track };
            self.next_play_track += 1;
            self.plays.push_front(play);
            self.plays.truncate(PLAYS_KEPT);
            return spotify::played_at(play.played_at_ms);
        }
        let Some(collection) = self.collection_mut(dataset, 0) else {
            return String::new();
        };
        let ordinal = collection.len();
        collection.added += 1;
        collection.push(ordinal, Version { seq, revision: 0, deleted: false, at_ms });
        self.id_of(dataset, 0, ordinal, account)
    }

    /// Changes (`delete` false) or deletes a live record.
    /// Changes the record `id` of `dataset` so that its personal fields hold `marker`: an
    /// event's title and description, a contact's first e-mail address and phone number.
    pub(crate) fn plant(
        &mut self,
        dataset: Dataset,
        id: &str,
        marker: &str,
    ) -> Result<(), MutateError> {
        if !matches!(
            dataset,
            Dataset::GoogleCalendar
                | Dataset::GoogleContacts
                | Dataset::MicrosoftCalendar
                | Dataset::MicrosoftContacts
        ) {
            return Err(MutateError::Unsupported { dataset, what: "planted" });
        }
        self.mutate(dataset, id, false)?;
        self.plants.insert((dataset, id.to_owned()), marker.to_owned());
        Ok(())
    }

    /// Writes the planted texts into the records of a page or listing.
    pub(crate) fn apply_plants(&self, dataset: Dataset, records: &mut [Value]) {
        if self.plants.is_empty() {
            return;
        }
        for record in records {
            let id = record
                .get("id")
                .or_else(|| record.get("resourceName"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some(marker) = self.plants.get(&(dataset, id)) else { continue };
            let mut set = |pointer: &str, text: String| {
                if let Some(value) = record.pointer_mut(pointer) {
                    *value = Value::String(text);
                } else if let (Some(key), Some(object)) =
                    (pointer.strip_prefix('/'), record.as_object_mut())
                    && !key.contains('/')
                {
                    object.insert(key.to_owned(), Value::String(text));
                }
            };
            match dataset {
                Dataset::GoogleCalendar => {
                    set("/summary", format!("{marker} title"));
                    set("/description", format!("{marker} description"));
                }
                Dataset::MicrosoftCalendar => {
                    set("/subject", format!("{marker} title"));
                    set("/body/content", format!("{marker} description"));
                }
                Dataset::GoogleContacts => {
                    set("/emailAddresses/0/value", format!("{marker}@example.org"));
                    set("/phoneNumbers/0/value", format!("+1 {marker}"));
                }
                Dataset::MicrosoftContacts => {
                    set("/emailAddresses/0/address", format!("{marker}@example.org"));
                    set("/mobilePhone", format!("+1 {marker}"));
                }
                _ => {}
            }
        }
    }

    pub(crate) fn mutate(
        &mut self,
        dataset: Dataset,
        id: &str,
        delete: bool,
    ) -> Result<(), MutateError> {
        let unknown = || MutateError::UnknownRecord { dataset, id: id.to_owned() };
        if dataset == Dataset::SpotifyRecentlyPlayed {
            let what = if delete { "deleted" } else { "changed" };
            return Err(MutateError::Unsupported { dataset, what });
        }
        let (calendar, ordinal) = self.ordinal_of(dataset, id).ok_or_else(unknown)?;
        let seq_now = self.seq;
        let collection = self.collection_mut(dataset, calendar).ok_or_else(unknown)?;
        if ordinal >= collection.len() || !collection.is_live(ordinal, seq_now) {
            return Err(unknown());
        }

        let (seq, at_ms) = self.bump();
        let Some(collection) = self.collection_mut(dataset, calendar) else {
            return Err(unknown());
        };
        let series = match dataset {
            Dataset::GoogleCalendar | Dataset::MicrosoftCalendar => {
                calendar::series_members(ordinal, collection.base())
            }
            _ => Vec::new(),
        };
        let revision = collection.revision(ordinal) + u32::from(!delete);
        collection.push(ordinal, Version { seq, revision, deleted: delete, at_ms });
        // Deleting a series deletes its exceptions with it, as both providers do.
        if delete {
            let base = collection.base();
            for member in series.into_iter().filter(|m| *m < base) {
                if collection.is_live(member, seq - 1) {
                    let revision = collection.revision(member);
                    collection.push(member, Version { seq, revision, deleted: true, at_ms });
                }
            }
        }
        Ok(())
    }

    /// The calendar index and ordinal an id names.
    fn ordinal_of(&self, dataset: Dataset, id: &str) -> Option<(usize, u64)> {
        match dataset {
            Dataset::GoogleCalendar => google::ordinal_of(self, id),
            Dataset::GoogleContacts => people::ordinal_of(id).map(|o| (0, o)),
            Dataset::MicrosoftCalendar => graph::event_ordinal_of(self, id).map(|o| (0, o)),
            Dataset::MicrosoftContacts => graph::contact_ordinal_of(id).map(|o| (0, o)),
            Dataset::SpotifySavedTracks | Dataset::SpotifyPlaylists => {
                spotify::ordinal_of(self, dataset, id).map(|o| (0, o))
            }
            Dataset::SpotifyRecentlyPlayed => None,
        }
    }

    fn id_of(
        &self,
        dataset: Dataset,
        calendar: usize,
        ordinal: u64,
        account: &crate::Account,
    ) -> String {
        match dataset {
            Dataset::GoogleCalendar => google::event_id(self, calendar, ordinal),
            Dataset::GoogleContacts => people::resource_name(ordinal),
            Dataset::MicrosoftCalendar => graph::event_id(self, ordinal),
            Dataset::MicrosoftContacts => graph::contact_id(ordinal),
            Dataset::SpotifySavedTracks | Dataset::SpotifyPlaylists => {
                spotify::id_of(self, dataset, ordinal, account)
            }
            Dataset::SpotifyRecentlyPlayed => String::new(),
        }
    }

    /// The live records of `dataset` as its provider serves them in a full listing.
    pub(crate) fn truth(
        &self,
        dataset: Dataset,
        account: &crate::Account,
        base_url: &str,
    ) -> Vec<Record> {
        match dataset {
            Dataset::GoogleCalendar => google::truth(self, account),
            Dataset::GoogleContacts => people::truth(self),
            Dataset::MicrosoftCalendar => graph::event_truth(self, account),
            Dataset::MicrosoftContacts => graph::contact_truth(self),
            Dataset::SpotifyRecentlyPlayed
            | Dataset::SpotifySavedTracks
            | Dataset::SpotifyPlaylists => spotify::truth(self, dataset, account, base_url),
        }
    }

    /// The key binding tokens to this sandbox.
    pub(crate) fn key(&self) -> &[u8] {
        &self.salt
    }

    fn millis_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a data endpoint is asked, once authenticated.
pub(crate) struct Request {
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) base_url: String,
    pub(crate) grant: Grant,
    /// A path parameter: Google's calendar id.
    pub(crate) path: Option<String>,
    /// Whether to answer an empty page that links to the next.
    pub(crate) empty_page: bool,
}

impl Request {
    /// The first value of query parameter `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Every parameter but those in `except`, sorted, hashed: what a page token pins.
    pub(crate) fn params_hash(&self, except: &[&str]) -> u64 {
        let mut pairs: Vec<_> =
            self.query.iter().filter(|(key, _)| !except.contains(&key.as_str())).collect();
        pairs.sort();
        token::hash_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Only the parameters in `names`, hashed: what a sync token pins for its lineage.
    pub(crate) fn params_hash_of(&self, names: &[&str]) -> u64 {
        let mut pairs: Vec<_> =
            self.query.iter().filter(|(key, _)| names.contains(&key.as_str())).collect();
        pairs.sort();
        token::hash_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The `Prefer: odata.maxpagesize=N` Graph clients send.
    pub(crate) fn max_page_size(&self) -> Option<usize> {
        self.headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.split(',').find_map(|part| {
                part.trim().strip_prefix("odata.maxpagesize=").and_then(|n| n.trim().parse().ok())
            })
        })
    }
}

/// A data endpoint's answer: the JSON body and extra headers, or an error response.
pub(crate) type Answer = Result<(Value, Vec<(HeaderName, String)>), Response>;

/// The data endpoints.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    CalendarList,
    Events,
    Connections,
    CalendarView,
    Contacts,
    RecentlyPlayed,
    SavedTracks,
    Playlists,
}

impl Endpoint {
    const ALL: [(Endpoint, &'static str); 8] = [
        (Self::CalendarList, "/google/api/calendar/v3/users/me/calendarList"),
        (Self::Events, "/google/api/calendar/v3/calendars/{calendar}/events"),
        (Self::Connections, "/google/people/v1/people/me/connections"),
        (Self::CalendarView, "/microsoft/api/me/calendarView/delta"),
        (Self::Contacts, "/microsoft/api/me/contacts/delta"),
        (Self::RecentlyPlayed, "/spotify/api/me/player/recently-played"),
        (Self::SavedTracks, "/spotify/api/me/tracks"),
        (Self::Playlists, "/spotify/api/me/playlists"),
    ];

    fn dataset(self) -> Dataset {
        match self {
            Self::CalendarList | Self::Events => Dataset::GoogleCalendar,
            Self::Connections => Dataset::GoogleContacts,
            Self::CalendarView => Dataset::MicrosoftCalendar,
            Self::Contacts => Dataset::MicrosoftContacts,
            Self::RecentlyPlayed => Dataset::SpotifyRecentlyPlayed,
            Self::SavedTracks => Dataset::SpotifySavedTracks,
            Self::Playlists => Dataset::SpotifyPlaylists,
        }
    }

    fn answer(self, data: &mut Data, request: &Request) -> Answer {
        match self {
            Self::CalendarList => google::calendar_list(data, request),
            Self::Events => google::events(data, request),
            Self::Connections => people::connections(data, request),
            Self::CalendarView => graph::calendar_view(data, request),
            Self::Contacts => graph::contacts(data, request),
            Self::RecentlyPlayed => spotify::recently_played(data, request),
            Self::SavedTracks => spotify::saved_tracks(data, request),
            Self::Playlists => spotify::playlists(data, request),
        }
    }
}

/// The data endpoints of every provider.
pub(crate) fn routes() -> Router<Sandbox> {
    Endpoint::ALL.into_iter().fold(Router::new(), |router, (endpoint, path)| {
        router.route(
            path,
            get(
                move |Shared(state): Shared<Sandbox>,
                      calendar: Option<Path<String>>,
                      headers: HeaderMap,
                      RawQuery(query): RawQuery| {
                    let calendar = calendar.map(|Path(calendar)| calendar);
                    serve(state, endpoint, calendar, headers, query)
                },
            ),
        )
    })
}

async fn serve(
    shared: Sandbox,
    endpoint: Endpoint,
    path: Option<String>,
    headers: HeaderMap,
    query: Option<String>,
) -> Response {
    let dataset = endpoint.dataset();
    let provider = dataset.provider();
    let (grant, base_url, fault) = {
        let mut state = lock(&shared);
        let grant = match account::authenticate(&mut state, provider, &headers) {
            Ok(grant) => grant,
            Err(refusal) => return refusal,
        };
        if !dataset.granted(&grant) {
            return account::insufficient_scope(provider, dataset.scopes()[0][0]);
        }
        let fault = state.data.faults.get_mut(&provider).and_then(VecDeque::pop_front);
        (grant, state.base_url.clone(), fault)
    };

    match &fault {
        Some(Fault::Slow { millis }) => tokio::time::sleep(Duration::from_millis(*millis)).await,
        Some(
            fault @ (Fault::TooManyRequests { .. }
            | Fault::RateLimitExceeded
            | Fault::UserRateLimitExceeded
            | Fault::ServerError { .. }),
        ) => return fault_response(dataset, fault),
        _ => {}
    }

    let query: Vec<(String, String)> = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    // The answer depends on the request and on who asks; the remembered one on nothing else.
    let key = format!("{endpoint:?} {path:?} {query:?} {} {:?}", grant.account.id, grant.scopes);
    let remembered =
        if fault.is_none() { lock(&shared).data.remembered(&key, dataset) } else { None };
    if let Some(remembered) = remembered {
        return json_response(remembered.body, &remembered.headers);
    }
    let request = Request {
        query,
        headers,
        base_url,
        grant,
        path,
        empty_page: fault == Some(Fault::EmptyPage),
    };
    let answer = {
        let mut state = lock(&shared);
        let mut answer = endpoint.answer(&mut state.data, &request);
        if let Ok((body, _)) = &mut answer {
            let list = match dataset {
                Dataset::GoogleCalendar => "items",
                Dataset::GoogleContacts => "connections",
                _ => "value",
            };
            if let Some(Value::Array(records)) = body.get_mut(list) {
                state.data.apply_plants(dataset, records);
            }
        }
        answer
    };
    let (mut body, extra) = match answer {
        Ok(answer) => answer,
        Err(response) => return response,
    };

    if fault == Some(Fault::UnknownValue) {
        unknown_value(dataset, &mut body);
    }
    let mut response = if fault == Some(Fault::Truncated) {
        let text = body.to_string();
        let cut = text.char_indices().map(|(i, _)| i).find(|i| *i >= text.len() / 2);
        let text = text[..cut.unwrap_or(0)].to_owned();
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json; charset=UTF-8")], text)
            .into_response()
    } else if fault.is_none() {
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        lock(&shared).data.remember(key, dataset, bytes.clone(), &extra);
        json_response(bytes, &[])
    } else {
        axum::Json(body).into_response()
    };
    for (name, value) in extra {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A JSON answer of `body`, with `headers` besides its content type.
fn json_response(body: Bytes, headers: &[(HeaderName, String)]) -> Response {
    let mut response =
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

/// Puts a value the provider does not document into a known field of the first record.
fn unknown_value(dataset: Dataset, body: &mut Value) {
    let (list, field) = match dataset {
        Dataset::GoogleCalendar => ("items", "/status"),
        Dataset::GoogleContacts => ("connections", "/metadata/objectType"),
        Dataset::MicrosoftCalendar => ("value", "/type"),
        Dataset::MicrosoftContacts => ("value", "/@removed"),
        Dataset::SpotifyRecentlyPlayed | Dataset::SpotifySavedTracks => ("items", "/track/type"),
        Dataset::SpotifyPlaylists => ("items", "/type"),
    };
    let Some(first) = body.get_mut(list).and_then(|items| items.get_mut(0)) else {
        return;
    };
    if dataset == Dataset::MicrosoftContacts {
        first["@removed"] = serde_json::json!({ "reason": "sandboxUnknownReason" });
    } else if let Some(value) = first.pointer_mut(field) {
        *value = Value::String("sandbox_unknown_value".to_owned());
    }
}

/// The answer a status fault gives, in the provider's shape.
fn fault_response(dataset: Dataset, fault: &Fault) -> Response {
    let provider = dataset.provider();
    let (status, retry_after) = match fault {
        Fault::TooManyRequests { retry_after } => (StatusCode::TOO_MANY_REQUESTS, *retry_after),
        Fault::RateLimitExceeded | Fault::UserRateLimitExceeded => {
            if provider == Provider::Google {
                let user = *fault == Fault::UserRateLimitExceeded;
                return google::rate_limit_403(user);
            }
            (StatusCode::TOO_MANY_REQUESTS, Some(1))
        }
        Fault::ServerError { status } => {
            (StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), None)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let body = match (provider, status) {
        (Provider::Google, StatusCode::TOO_MANY_REQUESTS) if dataset == Dataset::GoogleContacts => {
            people::quota_error()
        }
        (Provider::Google, StatusCode::TOO_MANY_REQUESTS) => google::error_body(
            429,
            "Rate Limit Exceeded",
            Some("RESOURCE_EXHAUSTED"),
            "usageLimits",
            "rateLimitExceeded",
            None,
        ),
        (Provider::Google, _) => google::error_body(
            status.as_u16(),
            "Backend Error",
            Some("UNAVAILABLE"),
            "global",
            "backendError",
            None,
        ),
        (Provider::Microsoft, StatusCode::TOO_MANY_REQUESTS) => {
            account::graph_error("TooManyRequests", "Please retry again later.")
        }
        (Provider::Microsoft, _) => account::graph_error(
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        (Provider::Spotify, StatusCode::TOO_MANY_REQUESTS) => {
            serde_json::json!({ "error": { "status": 429, "message": "API rate limit exceeded" } })
        }
        (Provider::Spotify, _) => serde_json::json!({
            "error": { "status": status.as_u16(), "message": "Service unavailable" }
        }),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

/// Query parameters worth logging: the ones that steer paging and syncing.
const LOGGED_KEYS: &[&str] = &[
    "maxResults",
    "pageToken",
    "syncToken",
    "showDeleted",
    "showHidden",
    "singleEvents",
    "timeMin",
    "timeMax",
    "pageSize",
    "personFields",
    "requestSyncToken",
    "startDateTime",
    "endDateTime",
    "$skiptoken",
    "$deltatoken",
    "limit",
    "offset",
    "after",
    "before",
];

/// Writes every request but the admin API's to the log, with the status answered.
pub(crate) async fn log_request(
    Shared(shared): Shared<Sandbox>,
    request: HttpRequest<Body>,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let response = next.run(request).await;
    if path.starts_with("/_admin") {
        return response;
    }

    let at = Instant::now();
    let query = query.into_iter().filter(|(key, _)| LOGGED_KEYS.contains(&key.as_str())).collect();
    let mut state: std::sync::MutexGuard<'_, State> = lock(&shared);
    let millis = state.data.millis_since_start(at);
    let status = response.status().as_u16();
    state.data.log.push(LoggedRequest { method, path, query, at, millis, status });
    response
}
