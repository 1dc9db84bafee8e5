//! Graph's calendar and contacts delta queries through HTTP: links, windows, tombstones,
//! eviction and throttling.

mod support;

use std::collections::BTreeSet;

use datapunk_sandbox::{Dataset, Fault, Provider, Sandbox};
use serde_json::Value;
use support::{access_token, http, sandbox, small};

const WINDOW: [(&str, &str); 2] =
    [("startDateTime", "2026-01-01T00:00:00Z"), ("endDateTime", "2027-06-01T00:00:00Z")];

/// GETs `url` verbatim with `Prefer: odata.maxpagesize=size`.
async fn get(url: &str, token: &str, size: usize) -> (u16, reqwest::header::HeaderMap, Value) {
    let answer = http()
        .get(url)
        .bearer_auth(token)
        .header("Prefer", format!("odata.maxpagesize={size}"))
        .send()
        .await
        .expect("a request");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Follows next links from `url` to the delta link, asserting never both; returns the rows and
/// the delta link.
async fn round(url: &str, token: &str, size: usize) -> (Vec<Value>, String) {
    let mut rows = Vec::new();
    let mut url = url.to_owned();
    loop {
        let (status, _, body) = get(&url, token, size).await;
        assert_eq!(status, 200, "{body}");
        rows.extend(body["value"].as_array().cloned().expect("value"));
        let next = body["@odata.nextLink"].as_str();
        let delta = body["@odata.deltaLink"].as_str();
        match (next, delta) {
            (Some(next), None) => url = next.to_owned(),
            (None, Some(delta)) => return (rows, delta.to_owned()),
            _ => panic!("exactly one link: {body}"),
        }
    }
}

fn calendar_url(sandbox: &Sandbox) -> String {
    let query: Vec<String> = WINDOW.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}/me/calendarView/delta?{}", sandbox.api_base(Provider::Microsoft), query.join("&"))
}

fn ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|r| r["id"].as_str().expect("an id").to_owned()).collect()
}

#[tokio::test]
async fn the_calendar_view_needs_a_window_and_lists_series_occurrences_and_exceptions() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Microsoft, "Calendars.Read").await;
    let bare = format!("{}/me/calendarView/delta", sandbox.api_base(Provider::Microsoft));
    let (status, _, body) = get(&bare, &token, 10).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("ErrorInvalidParameter")));

    let (status, headers, _) = get(&calendar_url(&sandbox), &token, 4).await;
    assert_eq!(status, 200);
    assert_eq!(headers["preference-applied"], "odata.maxpagesize=4");
    let (rows, delta) = round(&calendar_url(&sandbox), &token, 4).await;
    assert!(delta.starts_with(sandbox.base_url()) && delta.contains("$deltatoken="), "{delta}");
    assert!(
        rows.iter()
            .all(|r| r["start"]["dateTime"].as_str().is_some_and(|t| t.ends_with(".0000000")))
    );
    let master = rows.iter().find(|r| r["type"] == "seriesMaster").expect("a series master");
    let occurrence = rows
        .iter()
        .find(|r| r["type"] == "occurrence" && r["seriesMasterId"] == master["id"])
        .expect("an occurrence");
    let keys: BTreeSet<&str> =
        occurrence.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 7, "a lightweight occurrence row: {keys:?}");
    let exception = rows.iter().find(|r| r["type"] == "exception").expect("an exception");
    let master_id = exception["seriesMasterId"].as_str().expect("its series");
    assert!(
        exception["occurrenceId"]
            .as_str()
            .expect("an occurrence id")
            .starts_with(&format!("OID.{master_id}."))
    );
    assert!(rows.iter().any(|r| r["type"] == "singleInstance" && r["isAllDay"] == true));
}

#[tokio::test]
async fn a_delta_link_lists_changes_and_removals_and_nothing_when_unchanged() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Microsoft, "Calendars.Read Contacts.Read").await;
    let url = format!("{}/me/contacts/delta", sandbox.api_base(Provider::Microsoft));
    let (rows, delta) = round(&url, &token, 10).await;
    let truth: Vec<String> =
        sandbox.truth(Dataset::MicrosoftContacts).into_iter().map(|r| r.id).collect();
    assert_eq!(ids(&rows), truth.iter().cloned().collect());

    sandbox.change(Dataset::MicrosoftContacts, &truth[1]).expect("change");
    sandbox.delete(Dataset::MicrosoftContacts, &truth[2]).expect("delete");
    let (rows, next) = round(&delta, &token, 10).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let gone = rows.iter().find(|r| r["id"] == truth[2].as_str()).expect("the removal");
    assert_eq!(gone["@removed"]["reason"], "deleted");
    let changed = rows.iter().find(|r| r["id"] == truth[1].as_str()).expect("the change");
    assert!(changed["displayName"].as_str().expect("a name").ends_with("(1)"));

    let (rows, _) = round(&next, &token, 10).await;
    assert!(rows.is_empty());

    // A change outside the window comes back as a removal, as Graph documents.
    let outside = sandbox
        .truth(Dataset::MicrosoftCalendar)
        .into_iter()
        .find(|r| {
            r.json["type"] == "singleInstance"
                && r.json["start"]["dateTime"].as_str().is_some_and(|t| t < "2025-12-31")
        })
        .expect("an event before the window");
    let (_, delta) = round(&calendar_url(&sandbox), &token, 50).await;
    sandbox.change(Dataset::MicrosoftCalendar, &outside.id).expect("change");
    let (rows, _) = round(&delta, &token, 50).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["@removed"]["reason"], "deleted");
}

#[tokio::test]
async fn evicted_and_garbled_tokens_and_throttling_answer_as_graph_does() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Microsoft, "Contacts.Read").await;
    let url = format!("{}/me/contacts/delta", sandbox.api_base(Provider::Microsoft));
    let (_, delta) = round(&url, &token, 100).await;

    let garbled = format!("{url}?$deltatoken=garbage");
    let (status, _, body) = get(&garbled, &token, 10).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BadRequest")));

    sandbox.inject(
        Provider::Microsoft,
        &[Fault::TooManyRequests { retry_after: Some(3) }, Fault::EmptyPage],
    );
    let (status, headers, body) = get(&delta, &token, 10).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("TooManyRequests")));
    assert_eq!(headers["retry-after"], "3");
    let (status, _, body) = get(&url, &token, 10).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(0));
    assert!(body["@odata.nextLink"].is_string() && body.get("@odata.deltaLink").is_none());

    sandbox.invalidate_sync_tokens(Dataset::MicrosoftContacts);
    let (status, _, body) = get(&delta, &token, 10).await;
    assert_eq!((status, body["error"]["code"].as_str()), (410, Some("SyncStateNotFound")));
    let (status, _, _) = get(&url, &token, 10).await;
    assert_eq!(status, 200, "a fresh initial round works");

    let (status, _, body) = get(&calendar_url(&sandbox), &token, 10).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("ErrorAccessDenied")),
        "no Calendars.Read"
    );
}
