//! Spotify Web API: recently played tracks, saved tracks and playlists.
//!
//! Recently played is incremental after its own fashion: Spotify keeps only the last 50 plays,
//! newest first, and `after=<ms>` returns those played since. Every round is one request of
//! `limit=50`; its `cursors.after` (the newest play, in milliseconds) is the next round's
//! token, and an empty answer (`cursors: null`) keeps the old one. A full page after a token
//! means more than 50 plays happened since the last round and the older ones are out of reach:
//! a warning says so. Plays are never swept: a round that reads "everything" still reads only
//! the last 50.
//!
//! Saved tracks and playlists have no change feed. Every round reads everything with offset
//! paging (`limit=50`, following `next` as sent, below the API base only) and ends with
//! [`Next::Done`] `full`, so that the store removes what the round did not see. An item
//! removed while a round reads the list moves every later item one place up, so the page after
//! it would skip one, which the sweep would then remove: the round remembers the list's
//! `total` from its first page and starts over when a later page reports another. Playlists come
//! in the legacy shape (`tracks: {total}`) and the 2026 development-mode shape
//! (`items: {total}`).

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

use crate::datasets::Track;
use crate::fetch::{self, FetchError, Get, TokenSource};
use crate::wire::{self, RawItems};
use crate::{Columns, Cursor, Next, Options, Page, Record};

const PLAYS_WHAT: &str = "recently-played GET /me/player/recently-played";

/// The most items Spotify gives in one page.
const LIMIT: usize = 50;

/// A dataset read whole every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum List {
    /// `/me/tracks`.
    SavedTracks,
    /// `/me/playlists`.
    Playlists,
}

impl List {
    fn what(self) -> &'static str {
        match self {
            Self::SavedTracks => "saved-tracks GET /me/tracks",
            Self::Playlists => "playlists GET /me/playlists",
        }
    }
}

/// The plays since the stored `after`, or the last 50 on a first round.
pub(crate) async fn recently_played<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
    cursor: &Cursor,
) -> Result<Page, FetchError> {
    let after = match cursor {
        Cursor::Synced(after) if !after.is_empty() && after.bytes().all(|b| b.is_ascii_digit()) => {
            Some(after.as_str())
        }
        Cursor::Synced(_) => {
            return Err(FetchError::ResyncRequired { reason: "unreadable cursor".into() });
        }
        Cursor::Start | Cursor::Page { .. } => None,
    };

    let mut url = fetch::endpoint(base, &["me", "player", "recently-played"]);
    url.query_pairs_mut().append_pair("limit", &LIMIT.to_string());
    if let Some(after) = after {
        url.query_pairs_mut().append_pair("after", after);
    }
    let request = Get { what: PLAYS_WHAT, url, prefer: None };
    let body = fetch::get(tokens, &options.retry, &request, |_| None).await?;

    parse_plays(&body, after)
}

/// The page of `list` that `cursor` calls for.
pub(crate) async fn list<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
    list: List,
    cursor: &Cursor,
) -> Result<Page, FetchError> {
    let (url, total) = match cursor {
        Cursor::Page { continuation, .. } => {
            let (total, link) = split_continuation(continuation);
            let url = Url::parse(link)
                .ok()
                .filter(|url| fetch::within(base, url))
                .ok_or_else(|| FetchError::ResyncRequired { reason: "unreadable cursor".into() })?;
            (url, total)
        }
        // A reconciled list never stores a sync token; one found is read as a new round.
        Cursor::Start | Cursor::Synced(_) => {
            let path = match list {
                List::SavedTracks => ["me", "tracks"],
                List::Playlists => ["me", "playlists"],
            };
            let mut url = fetch::endpoint(base, &path);
            url.query_pairs_mut()
                .append_pair("limit", &LIMIT.to_string())
                .append_pair("offset", "0");
            (url, None)
        }
    };
    let request = Get { what: list.what(), url, prefer: None };
    let body = fetch::get(tokens, &options.retry, &request, |_| None).await?;

    parse_list(base, list, total, &body)
}

/// The continuation of a reconciled list's round: the `total` its first page reported, a
/// space, and the `next` link as Spotify sent it (a URL holds no bare space).
fn continuation(total: Option<u64>, next: &str) -> String {
    match total {
        Some(total) => format!("{total} {next}"),
        None => next.to_owned(),
    }
}

/// The total and the link of a [`continuation`]; one stored as a bare link has no total.
fn split_continuation(continuation: &str) -> (Option<u64>, &str) {
    match continuation.split_once(' ') {
        Some((total, link)) => match total.parse() {
            Ok(total) => (Some(total), link),
            Err(_) => (None, continuation),
        },
        None => (None, continuation),
    }
}

#[derive(Debug, Deserialize)]
struct PlaysPage {
    items: RawItems,
    cursors: Option<Cursors>,
}

#[derive(Debug, Deserialize)]
struct Cursors {
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Play {
    track: TrackJson,
    #[serde(deserialize_with = "wire::rfc3339_required")]
    played_at: OffsetDateTime,
    context: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
struct TrackJson {
    /// Checked only: `track`, or `episode` for a podcast episode.
    #[serde(rename = "type", default)]
    _kind: Option<TrackKind>,
    id: Option<String>,
    uri: Option<String>,
    name: String,
    #[serde(default)]
    artists: Vec<Named>,
    album: Option<Named>,
    duration_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TrackKind {
    Track,
    Episode,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

impl TrackJson {
    /// The track; a local file has no id, only its `spotify:local:` URI.
    fn into_track(self, what: &str, place: &str) -> Result<Track, FetchError> {
        let id = self.id.or(self.uri).ok_or_else(|| {
            fetch::malformed(what, format!("a track without id or uri at {place}.track"))
        })?;
        Ok(Track {
            id,
            name: self.name,
            artists: self.artists.into_iter().map(|artist| artist.name).collect(),
            album: self.album.map(|album| album.name).unwrap_or_default(),
            duration_ms: self.duration_ms,
        })
    }
}

fn parse_plays(body: &[u8], after: Option<&str>) -> Result<Page, FetchError> {
    let page: PlaysPage = fetch::parse(PLAYS_WHAT, "", body)?;

    let mut upserts = Vec::with_capacity(page.items.len());
    for (index, raw) in page.items.iter().enumerate() {
        let place = format!("items[{index}]");
        let play: Play = fetch::parse(PLAYS_WHAT, &place, raw.get().as_bytes())?;
        let track = play.track.into_track(PLAYS_WHAT, &place)?;
        let mut personal = Vec::new();
        personal.extend(play.context.map(|context| ("context", context.get().to_owned())));
        personal.push(("raw", raw.get().to_owned()));
        upserts.push(Record {
            id: format!("{}:{}", wire::unix_ms(play.played_at), track.id),
            updated_at: Some(play.played_at),
            columns: Columns::Play { played_at: play.played_at, track },
            personal,
        });
    }

    if upserts.len() >= LIMIT {
        if after.is_some() {
            tracing::warn!(
                plays = upserts.len(),
                "more plays since the last round than Spotify lists; older ones may be lost: \
                 sync recently-played more often"
            );
        } else {
            tracing::debug!(plays = upserts.len(), "first round read the plays Spotify keeps");
        }
    }
    let sync_token = page.cursors.and_then(|cursors| cursors.after).or(after.map(str::to_owned));
    Ok(Page { upserts, removals: Vec::new(), next: Next::Done { sync_token, full: false } })
}

#[derive(Debug, Deserialize)]
struct ListPage {
    items: RawItems,
    next: Option<String>,
    /// How many items the whole list holds now.
    total: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Saved {
    #[serde(deserialize_with = "wire::rfc3339_required")]
    added_at: OffsetDateTime,
    track: TrackJson,
}

#[derive(Debug, Deserialize)]
struct Playlist {
    /// Checked only: always `playlist`.
    #[serde(rename = "type", default)]
    _kind: Option<PlaylistKind>,
    id: String,
    name: String,
    description: Option<String>,
    owner: Option<Box<RawValue>>,
    public: Option<bool>,
    #[serde(default)]
    collaborative: bool,
    snapshot_id: String,
    tracks: Option<Entries>,
    items: Option<Entries>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PlaylistKind {
    Playlist,
}

#[derive(Debug, Deserialize)]
struct Entries {
    total: i64,
}

/// A page of `list`; `total` is what the round's first page said the list holds (`None` on
/// the first page).
fn parse_list(base: &Url, list: List, total: Option<u64>, body: &[u8]) -> Result<Page, FetchError> {
    let what = list.what();
    let page: ListPage = fetch::parse(what, "", body)?;
    if let (Some(before), Some(now)) = (total, page.total)
        && before != now
    {
        // Offsets shifted under the round: a page may have skipped an item, which the sweep
        // would remove.
        let reason = format!("the list changed while it was read ({before} items, then {now})");
        return Err(FetchError::ResyncRequired { reason });
    }

    let mut upserts = Vec::with_capacity(page.items.len());
    for (index, raw) in page.items.iter().enumerate() {
        let place = format!("items[{index}]");
        let json = raw.get().as_bytes();
        upserts.push(match list {
            List::SavedTracks => saved(fetch::parse(what, &place, json)?, raw, &place)?,
            List::Playlists => playlist(fetch::parse(what, &place, json)?, raw, &place)?,
        });
    }

    let next = match page.next {
        Some(next) => match Url::parse(&next) {
            Ok(url) if fetch::within(base, &url) => {
                let continuation = continuation(total.or(page.total), &next);
                Next::More(Cursor::Page { continuation, full: true })
            }
            _ => return Err(fetch::malformed(what, "a next link that is not below the API base")),
        },
        None => Next::Done { sync_token: None, full: true },
    };
    Ok(Page { upserts, removals: Vec::new(), next })
}

fn saved(saved: Saved, raw: &RawValue, place: &str) -> Result<Record, FetchError> {
    let track = saved.track.into_track(List::SavedTracks.what(), place)?;
    Ok(Record {
        id: track.id.clone(),
        updated_at: Some(saved.added_at),
        columns: Columns::SavedTrack { added_at: saved.added_at, track },
        personal: vec![("raw", raw.get().to_owned())],
    })
}

fn playlist(playlist: Playlist, raw: &RawValue, place: &str) -> Result<Record, FetchError> {
    let entries =
        playlist.tracks.or(playlist.items).map(|entries| entries.total).ok_or_else(|| {
            fetch::malformed(
                List::Playlists.what(),
                format!("missing field `tracks` or `items` at {place}"),
            )
        })?;
    let mut personal = vec![("name", playlist.name)];
    personal.extend(playlist.description.filter(|d| !d.is_empty()).map(|d| ("description", d)));
    personal.extend(playlist.owner.map(|owner| ("owner", owner.get().to_owned())));
    personal.push(("raw", raw.get().to_owned()));

    Ok(Record {
        id: playlist.id,
        updated_at: None,
        columns: Columns::Playlist {
            snapshot_id: playlist.snapshot_id,
            entries,
            public: playlist.public,
            collaborative: playlist.collaborative,
        },
        personal,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn base() -> Url {
        Url::parse("https://api.spotify.example/v1").expect("a URL")
    }

    #[test]
    fn plays_are_keyed_by_time_and_track_and_the_newest_is_the_next_token() {
        let page = parse_plays(
            include_bytes!("../tests/fixtures/spotify-recently-played.json"),
            Some("1780000000000"),
        )
        .expect("the page parses");

        assert_eq!(page.next, Next::Done { sync_token: Some("1780001100000".into()), full: false });
        let [newest, local] = page.upserts.as_slice() else { panic!("two plays") };
        assert_eq!(newest.id, "1780001100000:trk1");
        let Columns::Play { played_at, track } = &newest.columns else { panic!("a play") };
        assert_eq!(*played_at, datetime!(2026-05-28 20:45 UTC));
        assert_eq!(
            *track,
            Track {
                id: "trk1".into(),
                name: "Song One".into(),
                artists: vec!["Band A".into(), "Band B".into()],
                album: "Record One".into(),
                duration_ms: 180_000,
            }
        );
        assert_eq!(newest.personal[0].0, "context");
        assert_eq!(local.id, "1780000900123:spotify:local:Band:Album:Demo:200");
        assert_eq!(local.personal.len(), 1, "no context, only raw");
    }

    #[test]
    fn an_empty_answer_keeps_the_old_token() {
        let body = br#"{"items": [], "next": null, "cursors": null, "limit": 50}"#;
        let page = parse_plays(body, Some("1780000000000")).expect("parses");
        assert!(page.upserts.is_empty());
        assert_eq!(page.next, Next::Done { sync_token: Some("1780000000000".into()), full: false });
    }

    #[test]
    fn saved_tracks_page_on_and_end_with_a_full_round() {
        let page = parse_list(
            &base(),
            List::SavedTracks,
            None,
            include_bytes!("../tests/fixtures/spotify-saved-tracks.json"),
        )
        .expect("the page parses");
        let next = "2 https://api.spotify.example/v1/me/tracks?offset=1&limit=1";
        assert_eq!(page.next, Next::More(Cursor::Page { continuation: next.into(), full: true }));
        let [saved] = page.upserts.as_slice() else { panic!("one track") };
        assert_eq!(saved.id, "trk2");
        let Columns::SavedTrack { added_at, .. } = &saved.columns else { panic!() };
        assert_eq!(*added_at, datetime!(2026-04-01 12:00 UTC));

        let last = br#"{"items": [], "next": null, "total": 2}"#;
        let page = parse_list(&base(), List::SavedTracks, Some(2), last).expect("parses");
        assert_eq!(page.next, Next::Done { sync_token: None, full: true });
    }

    #[test]
    fn a_round_starts_over_when_the_list_changes_under_it() {
        let shrunk = br#"{"items": [], "next": null, "total": 1}"#;
        let Err(FetchError::ResyncRequired { reason }) =
            parse_list(&base(), List::SavedTracks, Some(2), shrunk)
        else {
            panic!("expected ResyncRequired")
        };
        assert_eq!(reason, "the list changed while it was read (2 items, then 1)");

        let link = "https://api.spotify.example/v1/me/tracks?offset=50&limit=50";
        assert_eq!(split_continuation(&continuation(Some(51), link)), (Some(51), link));
        assert_eq!(split_continuation(link), (None, link), "a cursor stored without a total");
    }

    #[test]
    fn playlists_are_read_in_both_shapes() {
        let page = parse_list(
            &base(),
            List::Playlists,
            None,
            include_bytes!("../tests/fixtures/spotify-playlists.json"),
        )
        .expect("the page parses");
        let [legacy, current] = page.upserts.as_slice() else { panic!("two playlists") };
        assert_eq!(
            legacy.columns,
            Columns::Playlist {
                snapshot_id: "snap-1".into(),
                entries: 12,
                public: Some(false),
                collaborative: true,
            }
        );
        let names: Vec<_> = legacy.personal.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["name", "description", "owner", "raw"]);
        let Columns::Playlist { entries, public, .. } = &current.columns else { panic!() };
        assert_eq!((*entries, *public), (0, None));

        let neither = br#"{"items": [{"id": "p", "name": "n", "snapshot_id": "s"}], "next": null}"#;
        let Err(FetchError::Malformed { reason, .. }) =
            parse_list(&base(), List::Playlists, None, neither)
        else {
            panic!("expected Malformed")
        };
        assert_eq!(reason, "missing field `tracks` or `items` at items[0]");
    }
}
