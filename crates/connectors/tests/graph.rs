//! Graph calendar and contacts connectors against a stand-in provider: the window, links
//! followed verbatim and only below the API base, resyncs and refusals, Retry-After.

mod common;

use std::time::{Duration, Instant};

use common::{Reply, Stand, Tokens, connector, quick};
use datapunk_connectors::{Cursor, FetchError, Next, Stream};
use datapunk_oauth::provider::Provider;

fn one() -> Stream {
    Stream { id: String::new() }
}

#[tokio::test]
async fn a_calendar_round_sends_the_window_once_then_follows_the_links_verbatim() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "calendar", &stand, &quick());
    let base = &stand.base;
    stand.reply(Reply::json(format!(
        r#"{{"value": [], "@odata.nextLink": "{base}/v1.0/me/calendarView/delta?$skiptoken=s%2B1"}}"#
    )));
    stand.reply(Reply::json(format!(
        r#"{{"value": [{{"id": "e1", "type": "singleInstance",
            "start": {{"dateTime": "2026-06-01T08:00:00.0000000", "timeZone": "UTC"}}}}],
            "@odata.deltaLink": "{base}/v1.0/me/calendarView/delta?$deltatoken=d1"}}"#
    )));
    stand.reply(Reply::json(format!(
        r#"{{"value": [{{"id": "e1", "@removed": {{"reason": "deleted"}}}}],
            "@odata.deltaLink": "{base}/v1.0/me/calendarView/delta?$deltatoken=d2"}}"#
    )));

    let first = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("page 1");
    let Next::More(cursor) = first.next else { panic!("another page") };
    let last = connector.fetch(&tokens, &one(), &cursor).await.expect("page 2");
    let Next::Done { sync_token: Some(delta), full: true } = last.next else { panic!() };
    let changes = connector.fetch(&tokens, &one(), &Cursor::Synced(delta)).await.expect("delta");

    assert_eq!(last.upserts[0].id, "e1");
    assert_eq!(changes.removals, ["e1"]);
    let asked = stand.asked();
    assert_eq!(asked[0].path(), "/v1.0/me/calendarView/delta");
    assert!(asked[0].param("startDateTime").is_some() && asked[0].param("endDateTime").is_some());
    assert_eq!(asked[1].uri, "/v1.0/me/calendarView/delta?$skiptoken=s%2B1");
    assert_eq!(asked[2].uri, "/v1.0/me/calendarView/delta?$deltatoken=d1");
    for request in &asked {
        assert_eq!(request.prefer.as_deref(), Some("odata.maxpagesize=200"));
    }
}

#[tokio::test]
async fn contacts_start_at_the_default_folder_delta() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "contacts", &stand, &quick());
    stand.reply(Reply::json(format!(
        r#"{{"value": [{{"id": "c1", "displayName": "Cleo"}}],
            "@odata.deltaLink": "{}/v1.0/me/contacts/delta?$deltatoken=c1"}}"#,
        stand.base
    )));

    let page = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("the page");

    assert_eq!(page.upserts[0].id, "c1");
    assert_eq!(stand.asked()[0].uri, "/v1.0/me/contacts/delta");
}

#[tokio::test]
async fn an_evicted_delta_token_asks_for_a_full_round() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "calendar", &stand, &quick());
    stand.reply(Reply::status(
        410,
        r#"{"error": {"code": "SyncStateNotFound", "message": "The sync state generation is not found"}}"#,
    ));
    let delta = format!("{}/v1.0/me/calendarView/delta?$deltatoken=old", stand.base);

    let error = connector.fetch(&tokens, &one(), &Cursor::Synced(delta)).await;

    let Err(FetchError::ResyncRequired { reason }) = error else { panic!("{error:?}") };
    assert_eq!(reason, "syncStateNotFound");
}

#[tokio::test]
async fn a_badly_formed_token_is_refused_not_resynced() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "contacts", &stand, &quick());
    stand.reply(Reply::status(
        400,
        r#"{"error": {"code": "BadRequest", "message": "Badly formed token."}}"#,
    ));
    let delta = format!("{}/v1.0/me/contacts/delta?$deltatoken=bad", stand.base);

    let error = connector.fetch(&tokens, &one(), &Cursor::Synced(delta)).await;

    let Err(FetchError::Refused { status: 400, reason, .. }) = error else { panic!("{error:?}") };
    assert_eq!(reason, "BadRequest");
}

#[tokio::test]
async fn a_stored_link_to_another_origin_is_never_requested() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "contacts", &stand, &quick());
    let elsewhere = "https://graph.microsoft.com/v1.0/me/contacts/delta?$deltatoken=x".to_owned();

    let error = connector.fetch(&tokens, &one(), &Cursor::Synced(elsewhere)).await;

    assert!(matches!(error, Err(FetchError::ResyncRequired { .. })), "{error:?}");
    assert!(stand.asked().is_empty());
}

#[tokio::test]
async fn a_fractional_retry_after_is_waited_out() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Microsoft, "contacts", &stand, &quick());
    stand.reply(
        Reply::status(429, r#"{"error": {"code": "TooManyRequests"}}"#)
            .header("Retry-After", "1.1"),
    );
    stand.reply(Reply::json(format!(
        r#"{{"value": [], "@odata.deltaLink": "{}/v1.0/me/contacts/delta?$deltatoken=c"}}"#,
        stand.base
    )));

    let started = Instant::now();
    let page = connector.fetch(&tokens, &one(), &Cursor::Start).await.expect("the page");

    assert!(started.elapsed() >= Duration::from_millis(1100), "{:?}", started.elapsed());
    assert!(matches!(page.next, Next::Done { full: true, .. }));
}
