//! Spotify connectors against a stand-in provider: the `after` cursor of recently played,
//! offset paging of the reconciled lists, refreshes and Retry-After.

mod common;

use std::time::{Duration, Instant};

use common::{Reply, Stand, Tokens, connector, quick};
use datapunk_connectors::{Columns, Cursor, FetchError, Next, Stream};
use datapunk_oauth::provider::Provider;

fn one() -> Stream {
    Stream { id: String::new() }
}

const PLAY: &str = r#"{"track": {"id": "t1", "name": "Song", "duration_ms": 1000,
    "artists": [{"name": "Band"}], "album": {"name": "Album"}},
    "played_at": "2026-05-28T20:45:00.000Z", "context": null}"#;

/// A saved track, as `/me/tracks` lists it.
const SAVED: &str = r#"{"added_at": "2026-04-01T12:00:00Z", "track": {"id": "t1", "name": "Song",
    "duration_ms": 1000, "artists": [], "album": {"name": "Album"}}}"#;

/// A stand-in whose first answer to saved tracks is a page of one of 51, linking to the next.
async fn first_of_51_saved() -> Stand {
    let stand = Stand::start().await;
    stand.reply(Reply::json(format!(
        r#"{{"items": [{SAVED}], "next": "{}/v1/me/tracks?offset=50&limit=50", "total": 51}}"#,
        stand.base
    )));
    stand
}

#[tokio::test]
async fn recently_played_asks_after_the_stored_cursor_and_keeps_it_when_nothing_is_new() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "recently-played", &stand, &quick());
    stand.reply(Reply::json(format!(
        r#"{{"items": [{PLAY}], "next": null, "cursors": {{"after": "1780001100000",
            "before": "1780001100000"}}, "limit": 50}}"#
    )));
    stand.reply(Reply::json(r#"{"items": [], "next": null, "cursors": null, "limit": 50}"#));

    let first = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("first round");
    let Next::Done { sync_token: Some(after), full: false } = first.next else { panic!() };
    let second =
        connector.fetch(&tokens, &one(), &Cursor::Synced(after.clone())).await.expect("second");

    assert_eq!(first.upserts[0].id, "1780001100000:t1");
    assert_eq!(second.next, Next::Done { sync_token: Some(after), full: false });
    let asked = stand.asked();
    assert_eq!(asked[0].uri, "/v1/me/player/recently-played?limit=50");
    assert_eq!(asked[1].param("after").as_deref(), Some("1780001100000"));
    assert_eq!(asked[1].param("limit").as_deref(), Some("50"));
}

#[tokio::test]
async fn saved_tracks_follow_next_and_end_with_a_full_round() {
    let stand = first_of_51_saved().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "saved-tracks", &stand, &quick());
    stand.reply(Reply::json(format!(r#"{{"items": [{SAVED}], "next": null, "total": 51}}"#)));

    let first = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("page 1");
    let Next::More(cursor) = first.next else { panic!("another page") };
    let last = connector.fetch(&tokens, &one(), &cursor).await.expect("page 2");

    assert_eq!(last.next, Next::Done { sync_token: None, full: true });
    let asked = stand.asked();
    assert_eq!(asked[0].uri, "/v1/me/tracks?limit=50&offset=0");
    assert_eq!(asked[1].uri, "/v1/me/tracks?offset=50&limit=50");
}

#[tokio::test]
async fn a_saved_track_removed_while_the_round_reads_restarts_the_round() {
    let stand = first_of_51_saved().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "saved-tracks", &stand, &quick());
    // One of the first 50 went: the 51st moved to offset 49, and this page misses it.
    stand.reply(Reply::json(r#"{"items": [], "next": null, "total": 50}"#));

    let first = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("page 1");
    let Next::More(cursor) = first.next else { panic!("another page") };
    let second = connector.fetch(&tokens, &one(), &cursor).await;

    let Err(FetchError::ResyncRequired { reason }) = second else { panic!("{second:?}") };
    assert_eq!(reason, "the list changed while it was read (51 items, then 50)");
    assert_eq!(stand.asked()[1].uri, "/v1/me/tracks?offset=50&limit=50");
}

#[tokio::test]
async fn a_name_cut_between_the_halves_of_a_surrogate_pair_is_read_with_a_replacement() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "saved-tracks", &stand, &quick());
    let item = r#"{"added_at": "2026-04-01T12:00:00Z", "track": {"id": "t1",
        "name": "Song \ud83c", "duration_ms": 1000, "artists": [], "album": {"name": "\ud83c\udfb5"}}}"#;
    stand.reply(Reply::json(format!(r#"{{"items": [{item}], "next": null, "total": 1}}"#)));

    let page = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("the page is read");

    let Columns::SavedTrack { track, .. } = &page.upserts[0].columns else { panic!() };
    assert_eq!((track.name.as_str(), track.album.as_str()), ("Song \u{FFFD}", "\u{1F3B5}"));
    let raw = &page.upserts[0].personal[0].1;
    assert!(raw.contains(r"Song \uFFFD"), "{raw}");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_a_rate_limit_waited_out() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "playlists", &stand, &quick());
    stand.reply(Reply::status(
        401,
        r#"{"error": {"status": 401, "message": "The access token expired"}}"#,
    ));
    stand.reply(
        Reply::status(429, r#"{"error": {"status": 429, "message": "API rate limit exceeded"}}"#)
            .header("Retry-After", "1"),
    );
    stand.reply(Reply::json(
        r#"{"items": [{"id": "p1", "name": "Mine", "snapshot_id": "s",
        "collaborative": false, "public": true, "items": {"total": 3}}], "next": null}"#,
    ));

    let started = Instant::now();
    let page = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("the page");

    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(page.upserts[0].id, "p1");
    let asked = stand.asked();
    assert_eq!(asked[1].authorization, "Bearer token-2");
    assert_eq!(asked[2].authorization, "Bearer token-2");
}

#[tokio::test]
async fn an_unregistered_user_is_refused_and_a_truncated_page_is_malformed() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Spotify, "recently-played", &stand, &quick());
    stand.reply(Reply::status(
        403,
        r#"{"error": {"status": 403, "message": "Check settings on developer.spotify.com/dashboard, the user may not be registered."}}"#,
    ));
    stand.reply(Reply::json(format!(r#"{{"items": [{PLAY}, {{"track": "#)));

    let refused = connector.fetch(&tokens, &one(), &Cursor::Start).await;
    let truncated = connector.fetch(&tokens, &one(), &Cursor::Start).await;

    assert!(matches!(refused, Err(FetchError::Refused { status: 403, .. })), "{refused:?}");
    let Err(FetchError::Malformed { what, reason }) = truncated else { panic!("{truncated:?}") };
    assert_eq!(what, "recently-played GET /me/player/recently-played");
    assert!(reason.starts_with("truncated JSON"), "{reason}");
}

#[tokio::test]
async fn fetches_can_run_on_spawned_tasks() {
    let stand = Stand::start().await;
    let connector = connector(Provider::Spotify, "playlists", &stand, &quick());
    stand.reply(Reply::json(r#"{"items": [], "next": null}"#));

    let page = tokio::spawn(async move {
        let tokens = Tokens::new();
        connector.fetch(&tokens, &one(), &Cursor::Start).await
    })
    .await
    .expect("the task ends");

    assert_eq!(page.expect("the page").next, Next::Done { sync_token: None, full: true });
}
