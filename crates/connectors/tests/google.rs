//! Google Calendar and People connectors against a stand-in provider: paging, sync tokens,
//! resyncs, throttling, refreshes and unreadable answers.

mod common;

use std::time::{Duration, Instant};

use common::{Reply, Stand, Tokens, connector, quick};
use datapunk_connectors::{Cursor, FetchError, Next, RetryPolicy, Stream};
use datapunk_oauth::provider::Provider;

const EVENTS_PAGE_1: &str = r#"{"items": [{"id": "a", "status": "confirmed",
    "start": {"dateTime": "2026-05-04T10:00:00+02:00"}, "end": {"dateTime": "2026-05-04T11:00:00+02:00"}}],
    "nextPageToken": "pt-1"}"#;
const EVENTS_PAGE_2: &str = r#"{"items": [{"id": "b", "start": {"date": "2026-05-10"},
    "end": {"date": "2026-05-11"}}], "nextSyncToken": "st-1"}"#;
const GONE: &str = r#"{"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired",
    "message": "Sync token is no longer valid, a full sync is required."}], "code": 410}}"#;
const RATE_LIMITED: &str = r#"{"error": {"errors": [{"domain": "usageLimits",
    "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}], "code": 403}}"#;

fn calendar(id: &str) -> Stream {
    Stream { id: id.to_owned() }
}

#[tokio::test]
async fn calendars_are_streams_and_a_full_round_pages_to_the_sync_token() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::json(r#"{"items": [{"id": "me@example.test"}], "nextPageToken": "l1"}"#));
    stand.reply(Reply::json(r#"{"items": [{"id": "team#x@group.example"}]}"#));
    stand.reply(Reply::json(EVENTS_PAGE_1));
    stand.reply(Reply::json(EVENTS_PAGE_2));

    let streams = connector.streams(&tokens).await.expect("the streams");
    assert_eq!(streams, [calendar("me@example.test"), calendar("team#x@group.example")]);
    let first = connector.fetch(&tokens, &streams[1], &Cursor::Start).await.expect("the page");
    let Next::More(cursor) = first.next else { panic!("another page: {:?}", first.next) };
    let last = connector.fetch(&tokens, &streams[1], &cursor).await.expect("the page");

    assert_eq!(last.next, Next::Done { sync_token: Some("st-1".into()), full: true });
    assert_eq!((first.upserts[0].id.as_str(), last.upserts[0].id.as_str()), ("a", "b"));
    let asked = stand.asked();
    assert_eq!(asked[0].path(), "/calendar/v3/users/me/calendarList");
    for list in &asked[..2] {
        assert_eq!(list.param("showHidden").as_deref(), Some("true"), "hidden calendars too");
    }
    assert_eq!(asked[1].param("pageToken").as_deref(), Some("l1"));
    assert_eq!(asked[2].path(), "/calendar/v3/calendars/team%23x@group.example/events");
    for events in &asked[2..] {
        assert_eq!(events.param("singleEvents").as_deref(), Some("false"));
        assert_eq!(events.param("showDeleted").as_deref(), Some("true"));
        assert_eq!(events.param("maxResults").as_deref(), Some("2500"));
        assert_eq!(events.param("syncToken"), None);
        assert_eq!(events.authorization, "Bearer token-1");
    }
    assert_eq!(asked[3].param("pageToken").as_deref(), Some("pt-1"));
}

#[tokio::test]
async fn incremental_rounds_send_the_sync_token_on_every_page_and_no_restricted_parameter() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::json(r#"{"items": [], "nextPageToken": "pt-9"}"#));
    stand.reply(Reply::json(
        r#"{"items": [{"id": "gone", "status": "cancelled"}],
        "nextSyncToken": "st-2"}"#,
    ));

    let stream = calendar("primary");
    let first =
        connector.fetch(&tokens, &stream, &Cursor::Synced("st-1".into())).await.expect("the page");
    let Next::More(cursor) = first.next else { panic!("another page") };
    assert!(matches!(cursor, Cursor::Page { full: false, .. }));
    let last = connector.fetch(&tokens, &stream, &cursor).await.expect("the page");

    assert_eq!(last.removals, ["gone"]);
    assert_eq!(last.next, Next::Done { sync_token: Some("st-2".into()), full: false });
    for asked in stand.asked() {
        assert_eq!(asked.param("syncToken").as_deref(), Some("st-1"));
        for restricted in ["timeMin", "timeMax", "updatedMin", "orderBy", "q", "iCalUID"] {
            assert_eq!(asked.param(restricted), None, "{restricted}");
        }
        assert_eq!(asked.param("showDeleted").as_deref(), Some("true"));
    }
}

#[tokio::test]
async fn a_dead_sync_token_on_a_later_page_asks_for_a_full_round() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::json(r#"{"items": [], "nextPageToken": "pt-1"}"#));
    stand.reply(Reply::status(410, GONE));

    let stream = calendar("primary");
    let first =
        connector.fetch(&tokens, &stream, &Cursor::Synced("st-1".into())).await.expect("the page");
    let Next::More(cursor) = first.next else { panic!("another page") };
    let error = connector.fetch(&tokens, &stream, &cursor).await.expect_err("the fetch fails");

    let FetchError::ResyncRequired { reason } = &error else { panic!("{error:?}") };
    assert_eq!(reason, "fullSyncRequired");
    assert!(!error.to_string().contains("st-1"));
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_retries() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::status(401, r#"{"error": {"code": 401, "status": "UNAUTHENTICATED"}}"#));
    stand.reply(Reply::json(EVENTS_PAGE_2));
    stand.reply(Reply::status(401, "{}"));
    stand.reply(Reply::status(401, "{}"));

    let page =
        connector.fetch(&tokens, &calendar("primary"), &Cursor::Start).await.expect("the page");
    assert_eq!(page.upserts.len(), 1);
    assert_eq!(tokens.refreshes(), 1);
    let asked = stand.asked();
    assert_eq!(asked[0].authorization, "Bearer token-1");
    assert_eq!(asked[1].authorization, "Bearer token-2");

    let error = connector
        .fetch(&tokens, &calendar("primary"), &Cursor::Start)
        .await
        .expect_err("the fetch fails");
    assert!(matches!(error, FetchError::Refused { status: 401, .. }), "{error:?}");
    assert_eq!(tokens.refreshes(), 2, "one refresh per fetch");
    assert_eq!(stand.asked().len(), 4);
}

#[tokio::test]
async fn retry_after_is_waited_out_even_with_a_short_backoff() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::status(429, RATE_LIMITED).header("Retry-After", "1.2"));
    stand.reply(Reply::json(EVENTS_PAGE_2));

    let started = Instant::now();
    let page =
        connector.fetch(&tokens, &calendar("primary"), &Cursor::Start).await.expect("the page");

    assert!(started.elapsed() >= Duration::from_millis(1200), "{:?}", started.elapsed());
    assert_eq!(page.upserts.len(), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_longest_wait_is_handed_back_at_once() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::status(429, "{}").header("Retry-After", "3600"));

    let started = Instant::now();
    let error = connector
        .fetch(&tokens, &calendar("primary"), &Cursor::Start)
        .await
        .expect_err("the fetch fails");

    let FetchError::Throttled { retry_after } = error else { panic!("{error:?}") };
    assert_eq!(retry_after, Some(Duration::from_secs(3600)));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn google_rate_limit_403s_are_retried_and_end_throttled() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    for _ in 0..4 {
        stand.reply(Reply::status(403, RATE_LIMITED));
    }

    let error = connector
        .fetch(&tokens, &calendar("primary"), &Cursor::Start)
        .await
        .expect_err("the fetch fails");

    assert!(matches!(error, FetchError::Throttled { retry_after: None }), "{error:?}");
    assert_eq!(stand.asked().len(), RetryPolicy::default().attempts as usize);
}

#[tokio::test]
async fn other_403s_are_refusals_and_server_errors_end_unavailable() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::status(
        403,
        r#"{"error": {"errors": [{"reason": "insufficientPermissions"}], "code": 403}}"#,
    ));
    for _ in 0..4 {
        stand.reply(Reply::status(503, r#"{"error": {"errors": [{"reason": "backendError"}]}}"#));
    }

    let refused = connector.fetch(&tokens, &calendar("primary"), &Cursor::Start).await;
    let unavailable = connector.fetch(&tokens, &calendar("primary"), &Cursor::Start).await;

    let Err(FetchError::Refused { status: 403, reason, .. }) = refused else { panic!() };
    assert_eq!(reason, "insufficientPermissions");
    assert!(matches!(unavailable, Err(FetchError::Unavailable { .. })), "{unavailable:?}");
    assert_eq!(stand.asked().len(), 5);
}

#[tokio::test]
async fn a_truncated_page_is_malformed_and_yields_nothing() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "calendar", &stand, &quick());
    stand.reply(Reply::json(&EVENTS_PAGE_1[..EVENTS_PAGE_1.len() / 2]));

    let error = connector
        .fetch(&tokens, &calendar("primary"), &Cursor::Start)
        .await
        .expect_err("the fetch fails");

    let FetchError::Malformed { what, reason } = &error else { panic!("{error:?}") };
    assert_eq!(what, "calendar GET /calendar/v3/calendars/{calendarId}/events");
    assert!(reason.starts_with("truncated JSON"), "{reason}");
    assert_eq!(stand.asked().len(), 1, "not retried");
}

#[tokio::test]
async fn people_repeats_its_parameters_and_resyncs_on_an_expired_token() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "contacts", &stand, &quick());
    stand.reply(Reply::json(
        r#"{"connections": [{"resourceName": "people/c1"}],
        "nextPageToken": "pp-1"}"#,
    ));
    stand.reply(Reply::json(r#"{"nextSyncToken": "ps-1"}"#));
    stand.reply(Reply::status(
        400,
        r#"{"error": {"code": 400, "status": "FAILED_PRECONDITION", "details": [{"@type":
        "type.googleapis.com/google.rpc.ErrorInfo", "reason": "EXPIRED_SYNC_TOKEN"}]}}"#,
    ));

    let stream = &connector.streams(&tokens).await.expect("the streams")[0];
    let first = connector.fetch(&tokens, stream, &Cursor::Start).await.expect("the page");
    let Next::More(cursor) = first.next else { panic!("another page") };
    let last = connector.fetch(&tokens, stream, &cursor).await.expect("the page");
    assert_eq!(last.next, Next::Done { sync_token: Some("ps-1".into()), full: true });
    let expired = connector.fetch(&tokens, stream, &Cursor::Synced("ps-1".into())).await;

    assert!(matches!(expired, Err(FetchError::ResyncRequired { .. })), "{expired:?}");
    let asked = stand.asked();
    for request in &asked {
        assert_eq!(request.path(), "/v1/people/me/connections");
        assert_eq!(
            request.param("personFields").as_deref(),
            Some(
                "names,nicknames,emailAddresses,phoneNumbers,addresses,birthdays,biographies,\
                 organizations,memberships,urls,relations,metadata"
            )
        );
        assert_eq!(request.param("pageSize").as_deref(), Some("1000"));
        assert_eq!(request.param("requestSyncToken").as_deref(), Some("true"));
    }
    assert_eq!(asked[1].param("pageToken").as_deref(), Some("pp-1"));
    assert_eq!(asked[2].param("syncToken").as_deref(), Some("ps-1"));
}

#[tokio::test]
async fn a_bad_request_to_people_is_a_refusal_not_a_resync() {
    let stand = Stand::start().await;
    let tokens = Tokens::new();
    let connector = connector(Provider::Google, "contacts", &stand, &quick());
    stand.reply(Reply::status(400, r#"{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}"#));

    let error = connector.fetch(&tokens, &Stream { id: String::new() }, &Cursor::Start).await;

    assert!(matches!(error, Err(FetchError::Refused { status: 400, .. })), "{error:?}");
}
