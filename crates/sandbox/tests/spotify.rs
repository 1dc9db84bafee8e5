//! Spotify through HTTP: recently-played cursors, offset paging, playlist shapes, scopes and
//! rate limits.

mod support;

use datapunk_sandbox::{Dataset, Fault, PlaylistShape, Provider, Sandbox};
use serde_json::Value;
use support::{access_token, get, http, sandbox, small};

const SCOPES: &str =
    "user-read-recently-played user-library-read playlist-read-private playlist-read-collaborative";

fn url(sandbox: &Sandbox, path: &str) -> String {
    format!("{}/me/{path}", sandbox.api_base(Provider::Spotify))
}

#[tokio::test]
async fn recently_played_pages_by_millisecond_cursors_newest_first() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Spotify, SCOPES).await;
    let played = url(&sandbox, "player/recently-played");

    let (status, _) = get(&played, &token, &[("after", "1"), ("before", "2")]).await;
    assert_eq!(status, 400, "after and before exclude each other");
    let (status, _) = get(&played, &token, &[("limit", "51")]).await;
    assert_eq!(status, 400);

    let (_, page) = get(&played, &token, &[("limit", "10")]).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 10);
    let times: Vec<&str> =
        items.iter().map(|i| i["played_at"].as_str().expect("played_at")).collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "newest first: {times:?}");
    let newest = page["cursors"]["after"].as_str().expect("an after cursor").to_owned();
    let before = page["cursors"]["before"].as_str().expect("a before cursor");
    assert!(page["next"].as_str().expect("a next page").contains(&format!("before={before}")));

    let mut total = 0;
    let mut next = page["next"].as_str().map(str::to_owned);
    while let Some(link) = next {
        let (_, page) = get(&link, &token, &[]).await;
        total += page["items"].as_array().map_or(0, Vec::len);
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(total + 10, 30, "every play, once");

    let (_, empty) = get(&played, &token, &[("after", &newest)]).await;
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0));
    assert!(empty["cursors"].is_null() && empty["next"].is_null());

    sandbox.add(Dataset::SpotifyRecentlyPlayed);
    sandbox.add(Dataset::SpotifyRecentlyPlayed);
    let (_, fresh) = get(&played, &token, &[("after", &newest)]).await;
    assert_eq!(fresh["items"].as_array().map(Vec::len), Some(2));
    for _ in 0..60 {
        sandbox.add(Dataset::SpotifyRecentlyPlayed);
    }
    assert_eq!(
        sandbox.truth(Dataset::SpotifyRecentlyPlayed).len(),
        50,
        "only the last 50 are kept"
    );
}

#[tokio::test]
async fn saved_tracks_and_playlists_page_by_offset() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Spotify, SCOPES).await;
    let tracks = url(&sandbox, "tracks");
    let (status, _) = get(&tracks, &token, &[("limit", "51")]).await;
    assert_eq!(status, 400);

    let mut seen = Vec::new();
    let mut next = Some(format!("{tracks}?limit=20"));
    let mut pages = 0;
    while let Some(link) = next {
        let (status, page) = get(&link, &token, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 45);
        assert_eq!(page["previous"].is_null(), pages == 0);
        seen.extend(page["items"].as_array().cloned().expect("items"));
        next = page["next"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(pages, 3);
    let truth = sandbox.truth_json(Dataset::SpotifySavedTracks);
    assert_eq!(seen, truth);
    let added: Vec<&str> = seen.iter().map(|i| i["added_at"].as_str().expect("added_at")).collect();
    assert!(added.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let new = sandbox.add(Dataset::SpotifySavedTracks);
    sandbox
        .delete(Dataset::SpotifySavedTracks, seen[4]["track"]["id"].as_str().expect("an id"))
        .expect("delete");
    let (_, first) = get(&tracks, &token, &[("limit", "2")]).await;
    assert_eq!(first["items"][0]["track"]["id"], new.as_str(), "a new save comes first");
    assert_eq!(first["total"], 45);

    let playlists = url(&sandbox, "playlists");
    let (_, page) = get(&playlists, &token, &[("limit", "50")]).await;
    assert!(page["items"].as_array().expect("items").iter().all(|p| p["tracks"]["total"].is_u64()));
    assert_eq!(page["total"], 7);
    sandbox.set_playlist_shape(PlaylistShape::Items);
    let (_, page) = get(&playlists, &token, &[]).await;
    let first = &page["items"][0];
    assert!(first["items"]["href"].as_str().expect("items").ends_with("/items"));
    assert!(first.get("tracks").is_none());

    let id = first["id"].as_str().expect("an id").to_owned();
    let snapshot = first["snapshot_id"].clone();
    sandbox.change(Dataset::SpotifyPlaylists, &id).expect("change");
    let (_, page) = get(&playlists, &token, &[]).await;
    assert_ne!(page["items"][0]["snapshot_id"], snapshot, "a change gives a new snapshot");
}

#[tokio::test]
async fn scopes_and_rate_limits_answer_in_spotifys_shape() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Spotify, "user-read-recently-played").await;
    let (status, body) = get(&url(&sandbox, "tracks"), &token, &[]).await;
    assert_eq!((status, body["error"]["status"].as_u64()), (403, Some(403)));

    sandbox.inject(Provider::Spotify, &[Fault::TooManyRequests { retry_after: Some(7) }]);
    let answer = http()
        .get(url(&sandbox, "player/recently-played"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("a request");
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "7");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["error"]["status"], 429);

    let log = sandbox.requests();
    let last = log.last().expect("logged");
    assert_eq!((last.path.as_str(), last.status), ("/spotify/api/me/player/recently-played", 429));
}

#[tokio::test]
async fn remembered_answers_are_sent_again_until_the_library_changes() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Spotify, SCOPES).await;
    let tracks = url(&sandbox, "tracks");
    sandbox.remember_answers();
    sandbox.clear_requests();

    let (_, first) = get(&tracks, &token, &[("limit", "5")]).await;
    let (_, again) = get(&tracks, &token, &[("limit", "5")]).await;
    assert_eq!(first, again);
    assert_eq!(sandbox.requests().len(), 2, "a remembered answer is still a logged request");

    let newest = sandbox.add(Dataset::SpotifySavedTracks);
    let (_, changed) = get(&tracks, &token, &[("limit", "5")]).await;
    assert_eq!(changed["items"][0]["track"]["id"], newest.as_str(), "{changed}");
    assert_eq!(changed["total"], first["total"].as_u64().expect("a total") + 1);

    sandbox.inject(Provider::Spotify, &[Fault::TooManyRequests { retry_after: Some(1) }]);
    let (status, _) = get(&tracks, &token, &[("limit", "5")]).await;
    assert_eq!(status, 429, "faults still come first");
}
