//! The Spotify Web API: `me/player/recently-played`, `me/tracks` and `me/playlists`.
//!
//! Recently-played is a ring of the last 50 plays, newest first, paged by millisecond
//! `after` and `before` cursors (never both); an empty answer has `cursors: null`. Saved
//! tracks (newest first) and playlists page by `offset` and `limit` (at most 50) over the
//! current state, with `next`, `previous` and `total`: Spotify has no change feed and no
//! snapshots. Playlists take the documented `tracks` shape or, by a switch, the 2026
//! development-mode `items` shape; collaborative ones are listed only to grants with
//! `playlist-read-collaborative`.

use std::collections::VecDeque;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::seed::{self, ANCHOR, Rng};
use super::{
    Answer, Collection, Data, Dataset, PLAYS_KEPT, Play, PlaylistShape, Population, Record,
    Request, Snap,
};
use crate::Account;

const SAVED_SALT: u64 = 500;
const PLAYED_SALT: u64 = 600;
const PLAYLIST_SALT: u64 = 700;
const CATALOGUE_SALT: u64 = 800;
const API: &str = "https://api.spotify.com/v1";

/// The plays a sandbox starts with: newest ten minutes before the anchor, three to five
/// minutes apart.
pub(super) fn initial_plays(population: &Population) -> VecDeque<Play> {
    let count = population.plays.min(PLAYS_KEPT as u64);
    let mut rng = Rng::new(population.seed, PLAYED_SALT, 0, 0);
    let mut at = ANCHOR.unix_timestamp() * 1000 - 600_000;
    (0..count)
        .map(|track| {
            let play = Play { played_at_ms: at, track };
            at -= rng.between(180_000, 300_000);
            play
        })
        .collect()
}

/// A play's `played_at`, which is also its id here.
pub(super) fn played_at(ms: i64) -> String {
    seed::rfc3339_millis(seed::from_unix_ms(ms))
}

/// A Spotify id: 22 base62 characters, the last ten the ordinal.
fn spotify_id(seed_value: u64, salt: u64, ordinal: u64) -> String {
    format!("{}{ordinal:010}", Rng::new(seed_value, salt, ordinal, 0).base62(12))
}

pub(super) fn id_of(data: &Data, dataset: Dataset, ordinal: u64, _account: &Account) -> String {
    let salt = if dataset == Dataset::SpotifyPlaylists { PLAYLIST_SALT } else { SAVED_SALT };
    spotify_id(data.population.seed, salt, ordinal)
}

pub(super) fn ordinal_of(data: &Data, dataset: Dataset, id: &str) -> Option<u64> {
    let ordinal: u64 = id.get(12..)?.parse().ok()?;
    (id_of(data, dataset, ordinal, &Account::builtin(crate::Provider::Spotify)) == id)
        .then_some(ordinal)
}

fn external(kind: &str, id: &str) -> Value {
    json!({ "spotify": format!("https://open.spotify.com/{kind}/{id}") })
}

/// Track `ordinal` of the catalogue `salt` names, at `revision` (which moves its popularity).
fn track(seed_value: u64, salt: u64, ordinal: u64, revision: u32) -> Value {
    let id = spotify_id(seed_value, salt, ordinal);
    let mut rng = Rng::new(seed_value, salt ^ CATALOGUE_SALT, ordinal, 0);
    let artist_index = rng.below(seed::ARTISTS.len() as u64);
    let artist_name = seed::ARTISTS[usize::try_from(artist_index).unwrap_or(0)];
    let artist_id = spotify_id(seed_value, CATALOGUE_SALT, artist_index);
    let album_id = spotify_id(seed_value, CATALOGUE_SALT + 1, ordinal / 4);
    let artist = json!({
        "external_urls": external("artist", &artist_id),
        "href": format!("{API}/artists/{artist_id}"),
        "id": artist_id,
        "name": artist_name,
        "type": "artist",
        "uri": format!("spotify:artist:{artist_id}"),
    });
    let release = seed::anchor_date(-rng.between(0, 365 * 40));
    let precision = rng.pick(&["day", "day", "day", "year"]);
    let release_date =
        if precision == "year" { release.year().to_string() } else { seed::ymd(release) };
    let name = format!("{} {}", rng.pick(seed::MUSIC_WORDS), rng.pick(seed::MUSIC_WORDS));
    let album_name = rng.pick(seed::MUSIC_WORDS);
    let popularity = Rng::new(seed_value, salt, ordinal, revision).below(101);
    json!({
        "album": {
            "album_type": rng.pick(&["album", "single", "compilation"]),
            "artists": [artist.clone()],
            "external_urls": external("album", &album_id),
            "href": format!("{API}/albums/{album_id}"),
            "id": album_id,
            "images": [
                { "height": 640, "width": 640, "url": format!("https://i.scdn.co/image/{album_id}640") },
                { "height": 64, "width": 64, "url": format!("https://i.scdn.co/image/{album_id}64") },
            ],
            "name": album_name,
            "release_date": release_date,
            "release_date_precision": precision,
            "total_tracks": 4,
            "type": "album",
            "uri": format!("spotify:album:{album_id}"),
        },
        "artists": [artist],
        "disc_number": 1,
        "duration_ms": rng.between(95_000, 420_000),
        "explicit": rng.chance(15),
        "external_ids": { "isrc": format!("XXA{:09}", rng.below(1_000_000_000)) },
        "external_urls": external("track", &id),
        "href": format!("{API}/tracks/{id}"),
        "id": id,
        "is_local": false,
        "name": name,
        "popularity": popularity,
        "preview_url": null,
        "track_number": ordinal % 4 + 1,
        "type": "track",
        "uri": format!("spotify:track:{id}"),
    })
}

fn play_item(data: &Data, play: Play) -> Value {
    let track = track(data.population.seed, PLAYED_SALT, play.track, 0);
    let context = match play.track % 3 {
        0 => Value::Null,
        1 => {
            let album = track["album"]["id"].as_str().unwrap_or_default().to_owned();
            json!({
                "type": "album",
                "href": format!("{API}/albums/{album}"),
                "external_urls": external("album", &album),
                "uri": format!("spotify:album:{album}"),
            })
        }
        _ => {
            let playlist = spotify_id(data.population.seed, PLAYLIST_SALT, play.track % 5);
            json!({
                "type": "playlist",
                "href": format!("{API}/playlists/{playlist}"),
                "external_urls": external("playlist", &playlist),
                "uri": format!("spotify:playlist:{playlist}"),
            })
        }
    };
    json!({ "track": track, "played_at": played_at(play.played_at_ms), "context": context })
}

fn saved_item(data: &Data, ordinal: u64, revision: u32) -> Value {
    let base = data.saved_tracks.base();
    let added_ms = data.saved_tracks.created_ms(ordinal).unwrap_or_else(|| {
        // Generated tracks were saved about a day apart, the last a day before the anchor.
        let back = i64::try_from(base - ordinal).unwrap_or(0);
        let jitter = Rng::new(data.population.seed, SAVED_SALT, ordinal, 0).between(0, 3_600);
        (ANCHOR.unix_timestamp() - back * 86_400 + jitter) * 1000
    });
    json!({
        "added_at": seed::rfc3339_seconds(seed::from_unix_ms(added_ms)),
        "track": track(data.population.seed, SAVED_SALT, ordinal, revision),
    })
}

fn playlist(data: &Data, ordinal: u64, revision: u32, account: &Account, base_url: &str) -> Value {
    let id = spotify_id(data.population.seed, PLAYLIST_SALT, ordinal);
    let mut first = Rng::new(data.population.seed, PLAYLIST_SALT, ordinal, 0);
    let collaborative = first.chance(20);
    let mut rng = Rng::new(data.population.seed, PLAYLIST_SALT, ordinal, revision);
    let name = format!(
        "{} {}",
        rng.pick(seed::MUSIC_WORDS),
        rng.pick(&["🎧", "mix", "för löprundan", "夜", "☀️"])
    );
    let snapshot = Rng::new(data.population.seed, PLAYLIST_SALT + 1, ordinal, revision).base62(32);
    let owner = &account.id;
    let (field, path) = match data.playlist_shape {
        PlaylistShape::Tracks => ("tracks", "tracks"),
        PlaylistShape::Items => ("items", "items"),
    };
    let _ = base_url;
    let mut playlist = json!({
        "collaborative": collaborative,
        "description": rng.pick(seed::NOTES),
        "external_urls": external("playlist", &id),
        "href": format!("{API}/playlists/{id}"),
        "id": id,
        "images": [{ "height": null, "url": format!("https://mosaic.scdn.co/640/{id}"), "width": null }],
        "name": name,
        "owner": {
            "display_name": account.name,
            "external_urls": external("user", owner),
            "href": format!("{API}/users/{owner}"),
            "id": owner,
            "type": "user",
            "uri": format!("spotify:user:{owner}"),
        },
        "primary_color": null,
        "public": !collaborative && rng.chance(50),
        "snapshot_id": snapshot,
        "type": "playlist",
        "uri": format!("spotify:playlist:{id}"),
    });
    playlist[field] =
        json!({ "href": format!("{API}/playlists/{id}/{path}"), "total": rng.below(120) });
    playlist
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "status": status.as_u16(), "message": message } })))
        .into_response()
}

/// `limit`: 1–50, 20 when absent.
fn limit(request: &Request) -> Result<usize, Response> {
    match request.param("limit").map(str::parse::<usize>) {
        None => Ok(20),
        Some(Ok(n)) if (1..=50).contains(&n) => Ok(n),
        Some(_) => Err(error(StatusCode::BAD_REQUEST, "Invalid limit")),
    }
}

/// `GET /me/player/recently-played`.
pub(super) fn recently_played(data: &mut Data, request: &Request) -> Answer {
    let limit = limit(request)?;
    let cursor = |name| {
        request.param(name).map(|text| {
            text.parse::<i64>().map_err(|_| error(StatusCode::BAD_REQUEST, "Invalid cursor"))
        })
    };
    let (after, before) = (cursor("after").transpose()?, cursor("before").transpose()?);
    if after.is_some() && before.is_some() {
        return Err(error(StatusCode::BAD_REQUEST, "Only one of after and before may be given"));
    }

    // Newest first throughout; with `after`, the plays nearest the cursor, so that a client
    // polling with the last `cursors.after` misses none.
    let plays: Vec<Play> = match (after, before) {
        (Some(after), _) => {
            let newer: Vec<Play> =
                data.plays.iter().copied().filter(|p| p.played_at_ms > after).collect();
            newer[newer.len().saturating_sub(limit)..].to_vec()
        }
        (_, Some(before)) => {
            data.plays.iter().copied().filter(|p| p.played_at_ms < before).take(limit).collect()
        }
        (None, None) => data.plays.iter().copied().take(limit).collect(),
    };
    let url = |name: &str, at: i64| {
        format!(
            "{}/spotify/api/me/player/recently-played?{name}={at}&limit={limit}",
            request.base_url
        )
    };
    let (cursors, next) = match (plays.first(), plays.last()) {
        (Some(newest), Some(oldest)) => {
            let more = match after {
                Some(_) => data.plays.iter().any(|p| p.played_at_ms > newest.played_at_ms),
                None => data.plays.iter().any(|p| p.played_at_ms < oldest.played_at_ms),
            };
            let next = more.then(|| match after {
                Some(_) => url("after", newest.played_at_ms),
                None => url("before", oldest.played_at_ms),
            });
            let cursors = json!({
                "after": newest.played_at_ms.to_string(),
                "before": oldest.played_at_ms.to_string(),
            });
            (cursors, next)
        }
        _ => (Value::Null, None),
    };
    let items: Vec<Value> = plays.iter().map(|play| play_item(data, *play)).collect();
    let body = json!({
        "items": items,
        "next": next,
        "cursors": cursors,
        "limit": limit,
        "href": href(request, "/spotify/api/me/player/recently-played"),
    });
    Ok((body, Vec::new()))
}

/// The request's own URL.
fn href(request: &Request, path: &str) -> String {
    let query: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if query.is_empty() {
        format!("{}{path}", request.base_url)
    } else {
        format!("{}{path}?{}", request.base_url, query.join("&"))
    }
}

/// Live ordinals of `collection`, newest first.
fn newest_first(collection: &Collection, at: u64) -> Vec<(u64, u32)> {
    (0..collection.len())
        .rev()
        .filter_map(|ordinal| match collection.state_at(ordinal, at) {
            Snap::Live { revision, .. } => Some((ordinal, revision)),
            _ => None,
        })
        .collect()
}

/// Up to `limit` live ordinals of `collection` from the `offset`th on, newest first, with the
/// number of live ones. Only changed records have a history, so the walk costs the size of the
/// history and of the page, not of the collection: a library of 50,000 tracks read 50 at a time
/// would otherwise cost the square of its size.
fn newest_first_page(
    collection: &Collection,
    at: u64,
    offset: usize,
    limit: usize,
) -> (Vec<(u64, u32)>, usize) {
    let live = |ordinal: u64| match collection.state_at(ordinal, at) {
        Snap::Live { revision, .. } => Some(revision),
        _ => None,
    };
    // Every ordinal that is not live has a history: records are added and removed by mutations.
    let dead: Vec<u64> =
        collection.history.keys().rev().copied().filter(|o| live(*o).is_none()).collect();
    let len = collection.len();
    let total = usize::try_from(len).unwrap_or(usize::MAX).saturating_sub(dead.len());
    if offset >= total {
        return (Vec::new(), total);
    }

    // The ordinal at live index `offset`, counting down from the newest.
    let offset = offset as u64;
    let (mut passed, mut below) = (0, len);
    for &ordinal in &dead {
        let between = below - ordinal - 1;
        if passed + between > offset {
            break;
        }
        passed += between;
        below = ordinal;
    }
    let start = below - 1 - (offset - passed);

    let page = (0..=start)
        .rev()
        .filter_map(|ordinal| live(ordinal).map(|revision| (ordinal, revision)))
        .take(limit)
        .collect();
    (page, total)
}

/// An offset page over `all`: the paging object with `next`, `previous` and `total`.
fn offset_page(
    request: &Request,
    path: &str,
    all: &[Value],
    max_offset: usize,
) -> Result<Value, Response> {
    let offset: usize = request.param("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let limit = limit(request)?;
    let items = all.get(offset..).unwrap_or_default().iter().take(limit).cloned().collect();
    paging(request, path, items, all.len(), max_offset)
}

/// The paging object of the request's `offset` and `limit` over a list of `total` entries, of
/// which `items` are the page.
fn paging(
    request: &Request,
    path: &str,
    items: Vec<Value>,
    total: usize,
    max_offset: usize,
) -> Result<Value, Response> {
    let limit = limit(request)?;
    let offset = match request.param("offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= max_offset => n,
        Some(_) => return Err(error(StatusCode::BAD_REQUEST, "Invalid offset")),
    };
    let url = |offset: usize| format!("{}{path}?offset={offset}&limit={limit}", request.base_url);
    let next = (offset + limit < total).then(|| url(offset + limit));
    let previous = (offset > 0).then(|| url(offset.saturating_sub(limit)));
    Ok(json!({
        "href": url(offset),
        "items": items,
        "limit": limit,
        "next": next,
        "offset": offset,
        "previous": previous,
        "total": total,
    }))
}

/// `GET /me/tracks`.
pub(super) fn saved_tracks(data: &mut Data, request: &Request) -> Answer {
    let limit = limit(request)?;
    let offset: usize = request.param("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let (page, total) = newest_first_page(&data.saved_tracks, data.seq, offset, limit);
    let items = page.into_iter().map(|(ordinal, revision)| saved_item(data, ordinal, revision));
    let body = paging(request, "/spotify/api/me/tracks", items.collect(), total, usize::MAX)?;
    Ok((body, Vec::new()))
}

/// `GET /me/playlists`.
pub(super) fn playlists(data: &mut Data, request: &Request) -> Answer {
    let collaborative = request.grant.scopes.iter().any(|s| s == "playlist-read-collaborative");
    let all: Vec<Value> = newest_first(&data.playlists, data.seq)
        .into_iter()
        .map(|(ordinal, revision)| {
            playlist(data, ordinal, revision, &request.grant.account, &request.base_url)
        })
        .filter(|p| collaborative || p["collaborative"] != true)
        .collect();
    Ok((offset_page(request, "/spotify/api/me/playlists", &all, 100_000)?, Vec::new()))
}

/// The live records of a Spotify dataset.
pub(super) fn truth(
    data: &Data,
    dataset: Dataset,
    account: &Account,
    base_url: &str,
) -> Vec<Record> {
    let record = |id: String, json| Record { id, calendar: None, json };
    match dataset {
        Dataset::SpotifyRecentlyPlayed => data
            .plays
            .iter()
            .map(|play| record(played_at(play.played_at_ms), play_item(data, *play)))
            .collect(),
        Dataset::SpotifySavedTracks => newest_first(&data.saved_tracks, data.seq)
            .into_iter()
            .map(|(ordinal, revision)| {
                let item = saved_item(data, ordinal, revision);
                record(item["track"]["id"].as_str().unwrap_or_default().to_owned(), item)
            })
            .collect(),
        _ => newest_first(&data.playlists, data.seq)
            .into_iter()
            .map(|(ordinal, revision)| {
                let item = playlist(data, ordinal, revision, account, base_url);
                record(item["id"].as_str().unwrap_or_default().to_owned(), item)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Version;
    use super::*;

    #[test]
    fn a_page_of_the_library_equals_the_same_slice_of_the_whole_listing() {
        let version = |seq, revision, deleted| Version { seq, revision, deleted, at_ms: 0 };
        let mut library = Collection::new(12);
        library.push(11, version(1, 1, true));
        library.push(4, version(2, 1, false));
        library.push(3, version(3, 1, true));
        library.push(0, version(4, 1, true));
        library.added = 2;
        library.push(12, version(5, 0, false));
        library.push(13, version(6, 0, false));
        library.push(12, version(7, 1, true));

        for at in 0..=7 {
            let whole = newest_first(&library, at);
            for offset in 0..=whole.len() + 1 {
                for limit in 1..=4 {
                    let (page, total) = newest_first_page(&library, at, offset, limit);
                    let expected: Vec<_> = whole.iter().skip(offset).take(limit).copied().collect();
                    assert_eq!(page, expected, "at {at}, offset {offset}, limit {limit}");
                    assert_eq!(total, whole.len(), "at {at}");
                }
            }
        }
    }
}
