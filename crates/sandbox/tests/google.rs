//! Google Calendar and People through HTTP: paging, sync tokens, tombstones, resync signals,
//! scopes, faults and the request log.

mod support;

use std::collections::BTreeSet;

use datapunk_sandbox::{Dataset, Fault, Provider, Sandbox};
use serde_json::Value;
use support::{CALENDAR, CONTACTS, access_token, get, sandbox, small};

fn events_url(sandbox: &Sandbox) -> String {
    format!("{}/calendar/v3/calendars/primary/events", sandbox.api_base(Provider::Google))
}

fn connections_url(sandbox: &Sandbox) -> String {
    format!("{}/v1/people/me/connections", sandbox.people_api_base())
}

/// Follows `nextPageToken` from a first request with `query`, asserting that only the last page
/// carries `nextSyncToken`; returns the items and the sync token.
async fn round(url: &str, token: &str, query: &[(&str, &str)], list: &str) -> (Vec<Value>, Value) {
    round_from(url, token, query, list, None).await
}

/// [`round`] from the page `page_token` on.
async fn round_from(
    url: &str,
    token: &str,
    query: &[(&str, &str)],
    list: &str,
    mut page_token: Option<String>,
) -> (Vec<Value>, Value) {
    let mut items = Vec::new();
    loop {
        let mut params = query.to_vec();
        if let Some(page) = &page_token {
            params.push(("pageToken", page));
        }
        let (status, body) = get(url, token, &params).await;
        assert_eq!(status, 200, "{body}");
        items.extend(body[list].as_array().cloned().unwrap_or_default());
        match body["nextPageToken"].as_str() {
            Some(next) => {
                assert!(body.get("nextSyncToken").is_none(), "a sync token before the last page");
                page_token = Some(next.to_owned());
            }
            None => return (items, body["nextSyncToken"].clone()),
        }
    }
}

fn ids(items: &[Value], key: &str) -> BTreeSet<String> {
    items.iter().map(|item| item[key].as_str().expect("an id").to_owned()).collect()
}

/// The ids of the primary calendar's events that are not cancelled occurrences.
fn live_events(sandbox: &Sandbox) -> Vec<String> {
    let records = sandbox.truth(Dataset::GoogleCalendar);
    let primary = records[0].calendar.clone();
    let live =
        |r: &datapunk_sandbox::Record| r.calendar == primary && r.json["status"] != "cancelled";
    records.into_iter().filter(live).map(|r| r.id).collect()
}

/// The ids of the primary calendar's events, cancelled occurrences of live series included.
fn primary_truth(sandbox: &Sandbox) -> BTreeSet<String> {
    let records = sandbox.truth(Dataset::GoogleCalendar);
    let primary = records[0].calendar.clone();
    records.into_iter().filter(|r| r.calendar == primary).map(|r| r.id).collect()
}

#[tokio::test]
async fn the_calendar_list_leaves_the_hidden_calendar_out_unless_asked_to_show_it() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let url = format!("{}/calendar/v3/users/me/calendarList", sandbox.api_base(Provider::Google));

    let (shown, _) = round(&url, &token, &[("maxResults", "2")], "items").await;
    let (all, _) =
        round(&url, &token, &[("maxResults", "2"), ("showHidden", "true")], "items").await;

    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|entry| entry.get("hidden").is_none()), "{shown:?}");
    assert_eq!(all.len(), 3);
    let hidden: Vec<&Value> = all.iter().filter(|entry| entry["hidden"] == true).collect();
    assert_eq!(hidden.len(), 1);
    assert!(!ids(&shown, "id").contains(hidden[0]["id"].as_str().expect("an id")));
    let truth: BTreeSet<String> = sandbox
        .truth(Dataset::GoogleCalendar)
        .into_iter()
        .filter_map(|record| record.calendar)
        .collect();
    assert_eq!(truth, ids(&all, "id"), "the truth holds events of every calendar, hidden too");
}

#[tokio::test]
async fn a_full_calendar_round_ends_with_a_sync_token_and_the_next_lists_only_changes() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let url = events_url(&sandbox);

    let full = [("maxResults", "7"), ("showDeleted", "true")];
    let (items, sync) = round(&url, &token, &full, "items").await;
    assert!(items.len() > 7, "more than one page");
    assert_eq!(ids(&items, "id"), primary_truth(&sandbox));
    let sync = sync.as_str().expect("a sync token on the last page").to_owned();

    let truth = live_events(&sandbox);
    let (changed, deleted) = (truth[5].clone(), truth[8].clone());
    sandbox.change(Dataset::GoogleCalendar, &changed).expect("change");
    sandbox.delete(Dataset::GoogleCalendar, &deleted).expect("delete");
    let added = sandbox.add(Dataset::GoogleCalendar);

    let (items, next) = round(&url, &token, &[("syncToken", &sync)], "items").await;
    let expected: BTreeSet<String> = [changed.clone(), deleted.clone(), added].into();
    assert_eq!(ids(&items, "id"), expected);
    let tombstone = items.iter().find(|i| i["id"] == deleted.as_str()).expect("the tombstone");
    assert_eq!(tombstone["status"], "cancelled");
    let updated = items.iter().find(|i| i["id"] == changed.as_str()).expect("the change");
    assert!(updated["summary"].as_str().expect("a summary").contains("v1"), "{updated}");

    let next = next.as_str().expect("a new sync token").to_owned();
    let (items, _) = round(&url, &token, &[("syncToken", &next)], "items").await;
    assert!(items.is_empty(), "nothing changed since: {items:?}");
}

#[tokio::test]
async fn a_round_lists_the_collection_as_it_was_when_the_round_began() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let url = events_url(&sandbox);
    let before = primary_truth(&sandbox);

    let query = [("maxResults", "5"), ("showDeleted", "true")];
    let (status, first) = get(&url, &token, &query).await;
    assert_eq!(status, 200);
    let last = live_events(&sandbox).pop().expect("events");
    sandbox.delete(Dataset::GoogleCalendar, &last).expect("delete");
    sandbox.add(Dataset::GoogleCalendar);

    let mut items = first["items"].as_array().cloned().expect("items");
    let page = first["nextPageToken"].as_str().expect("a next page").to_owned();
    let (rest, _) = round_from(&url, &token, &query, "items", Some(page)).await;
    items.extend(rest);
    assert_eq!(ids(&items, "id"), before, "the round saw neither the deletion nor the addition");
    assert_ne!(primary_truth(&sandbox), before);
}

#[tokio::test]
async fn series_come_with_their_exceptions_and_all_day_events_with_dates() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let (items, _) =
        round(&events_url(&sandbox), &token, &[("showDeleted", "true")], "items").await;

    let master = items.iter().find(|i| i["recurrence"].is_array()).expect("a series");
    let master_id = master["id"].as_str().expect("an id");
    let moved = items
        .iter()
        .find(|i| i["recurringEventId"] == master_id && i["status"] == "confirmed")
        .expect("a moved occurrence");
    let moved_id = moved["id"].as_str().expect("an id");
    let suffix = moved_id.strip_prefix(&format!("{master_id}_")).expect("<master>_<start>");
    assert!(suffix.len() == 16 && suffix.ends_with('Z'), "{moved_id}");
    assert!(moved["originalStartTime"]["dateTime"].is_string());
    let cancelled = items
        .iter()
        .find(|i| i["recurringEventId"] == master_id && i["status"] == "cancelled")
        .expect("a cancelled occurrence, listed with showDeleted");
    assert!(cancelled.get("summary").is_none(), "a tombstone carries no details");
    assert!(items.iter().any(|i| i["start"]["date"].is_string()), "an all-day event");

    let (singles, _) =
        round(&events_url(&sandbox), &token, &[("singleEvents", "true")], "items").await;
    assert!(singles.iter().all(|i| i.get("recurrence").is_none()), "no masters");
    let instances = singles.iter().filter(|i| i["recurringEventId"] == master_id).count();
    assert_eq!(instances, 9, "ten occurrences, one cancelled");
}

#[tokio::test]
async fn dead_or_misused_sync_tokens_are_refused_as_google_refuses_them() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let url = events_url(&sandbox);
    let (_, sync) = round(&url, &token, &[], "items").await;
    let sync = sync.as_str().expect("a sync token").to_owned();

    let (status, body) =
        get(&url, &token, &[("syncToken", &sync), ("timeMin", "2026-01-01T00:00:00Z")]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&url, &token, &[("syncToken", &sync), ("showDeleted", "false")]).await;
    assert_eq!(status, 400);
    let (status, body) = get(&url, &token, &[("syncToken", "bm9uc2Vuc2U")]).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["errors"][0]["reason"], "fullSyncRequired");

    for id in primary_truth(&sandbox).into_iter().take(6) {
        sandbox.change(Dataset::GoogleCalendar, &id).expect("change");
    }
    sandbox.invalidate_sync_tokens_after(Dataset::GoogleCalendar, 1);
    let (status, first) = get(&url, &token, &[("syncToken", &sync), ("maxResults", "2")]).await;
    assert_eq!(status, 200, "the first page is served");
    let page = first["nextPageToken"].as_str().expect("more pages");
    let query = [("syncToken", sync.as_str()), ("maxResults", "2"), ("pageToken", page)];
    let (status, body) = get(&url, &token, &query).await;
    assert_eq!(status, 410, "the token died in the middle of the round: {body}");
    let (status, _) = get(&url, &token, &[("syncToken", &sync)]).await;
    assert_eq!(status, 410, "and stays dead");
    let (status, _) = get(&url, &token, &[]).await;
    assert_eq!(status, 200, "a full sync works");
}

#[tokio::test]
async fn data_endpoints_want_the_datasets_scope_and_a_live_token() {
    let sandbox = sandbox(small()).await;
    let contacts_only = access_token(&sandbox, Provider::Google, CONTACTS).await;
    let (status, body) = get(&events_url(&sandbox), &contacts_only, &[]).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["errors"][0]["reason"], "insufficientPermissions");
    let query = [("personFields", "names")];
    let (status, _) = get(&connections_url(&sandbox), &contacts_only, &query).await;
    assert_eq!(status, 200);

    let (status, body) = get(&events_url(&sandbox), "not-a-token", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
    sandbox.expire_access_tokens(Provider::Google);
    let (status, _) = get(&connections_url(&sandbox), &contacts_only, &query).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn people_pages_sync_tokens_tombstones_and_expiry() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CONTACTS).await;
    let url = connections_url(&sandbox);

    let (status, body) = get(&url, &token, &[]).await;
    assert_eq!((status, body["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    let fields = "names,emailAddresses,phoneNumbers,metadata";
    let query = [("personFields", fields), ("pageSize", "10")];
    let (_, unrequested) = round(&url, &token, &query, "connections").await;
    assert!(unrequested.is_null(), "no sync token unless requested");

    let query = [("personFields", fields), ("pageSize", "10"), ("requestSyncToken", "true")];
    let (status, first) = get(&url, &token, &query).await;
    assert_eq!(status, 200);
    let page = first["nextPageToken"].as_str().expect("a next page");
    let (status, _) =
        get(&url, &token, &[("personFields", "names"), ("pageSize", "10"), ("pageToken", page)])
            .await;
    assert_eq!(status, 400, "other parameters than the first page's");

    let (people, sync) = round(&url, &token, &query, "connections").await;
    assert_eq!(people.len(), 25);
    assert!(people.iter().all(|p| p["emailAddresses"].is_array() && p.get("birthdays").is_none()));
    let sync = sync.as_str().expect("a sync token").to_owned();

    let gone = people[3]["resourceName"].as_str().expect("a name").to_owned();
    sandbox.delete(Dataset::GoogleContacts, &gone).expect("delete");
    let incremental =
        [("personFields", fields), ("requestSyncToken", "true"), ("syncToken", &sync)];
    let (status, body) = get(&url, &token, &incremental).await;
    assert_eq!(status, 200);
    let changed = body["connections"].as_array().expect("the change");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["resourceName"], gone.as_str());
    assert_eq!(changed[0]["metadata"]["deleted"], true);

    let next = body["nextSyncToken"].as_str().expect("a sync token").to_owned();
    let unchanged = [("personFields", fields), ("requestSyncToken", "true"), ("syncToken", &next)];
    let (_, body) = get(&url, &token, &unchanged).await;
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["nextSyncToken"], "an unchanged collection: the token alone");

    sandbox.invalidate_sync_tokens(Dataset::GoogleContacts);
    let (status, body) = get(&url, &token, &unchanged).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    assert_eq!(body["error"]["details"][0]["reason"], "EXPIRED_SYNC_TOKEN");
}

#[tokio::test]
async fn injected_faults_are_served_in_order_and_logged() {
    let sandbox = sandbox(small()).await;
    let token = access_token(&sandbox, Provider::Google, CALENDAR).await;
    let url = events_url(&sandbox);
    sandbox.clear_requests();
    sandbox.inject(
        Provider::Google,
        &[
            Fault::TooManyRequests { retry_after: None },
            Fault::UserRateLimitExceeded,
            Fault::ServerError { status: 503 },
            Fault::Truncated,
            Fault::UnknownValue,
            Fault::EmptyPage,
        ],
    );

    let (status, body) = get(&url, &token, &[("maxResults", "3")]).await;
    assert_eq!((status, body["error"]["status"].as_str()), (429, Some("RESOURCE_EXHAUSTED")));
    let (status, body) = get(&url, &token, &[]).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["errors"][0]["reason"], "userRateLimitExceeded");
    let (status, _) = get(&url, &token, &[]).await;
    assert_eq!(status, 503);
    let (status, body) = get(&url, &token, &[]).await;
    assert_eq!((status, body), (200, Value::Null), "a cut-off body is not JSON");
    let (_, body) = get(&url, &token, &[]).await;
    assert_eq!(body["items"][0]["status"], "sandbox_unknown_value");
    let (_, body) = get(&url, &token, &[]).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0));
    assert!(body["nextPageToken"].is_string(), "an empty page still links on");
    let (status, _) = get(&url, &token, &[]).await;
    assert_eq!(status, 200, "the queue is empty");

    let log = sandbox.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 403, 503, 200, 200, 200, 200]);
    assert!(log.iter().all(|r| r.path == "/google/api/calendar/v3/calendars/primary/events"));
    assert_eq!(log[0].query, [("maxResults".to_owned(), "3".to_owned())]);
    assert!(log.windows(2).all(|w| w[0].millis <= w[1].millis && w[0].at <= w[1].at));
}
