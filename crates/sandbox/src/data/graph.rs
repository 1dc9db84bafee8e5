//! Microsoft Graph v1.0 delta queries: `me/calendarView/delta` and `me/contacts/delta`.
//!
//! A round starts with a plain request (for the calendar, with the `startDateTime` and
//! `endDateTime` window, required there and fixed for the whole lineage) and follows
//! `@odata.nextLink` (`$skiptoken`) until a page carries `@odata.deltaLink` (`$deltatoken`);
//! no page carries both. Links are absolute and carry everything, so clients follow them
//! verbatim. Page sizes follow `Prefer: odata.maxpagesize`. The calendar lists series masters,
//! their occurrences as the lightweight rows Graph sends, exceptions and single instances in
//! the window; a delta round lists changes, deleted records as `@removed`, and, as Graph
//! documents, records changed outside the window as `@removed` too. A dead delta token gets
//! 410 `SyncStateNotFound`, an unreadable one 400 `BadRequest`.

use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::Duration;

use super::calendar::{self, Event, Kind, Timing};
use super::seed::{self, ANCHOR, Rng};
use super::token::{Kind as TokenKind, Token};
use super::{Answer, Collection, Data, Dataset, Position, Record, Request, Snap, page};
use crate::Account;
use crate::account::graph_error;

const EVENT_SALT: u64 = 300;
const CONTACT_SALT: u64 = 400;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;
/// A window wide enough for every generated event.
const EVERYTHING: (i64, i64) = (-100_000_000_000, 100_000_000_000);

pub(super) fn event_id(_data: &Data, ordinal: u64) -> String {
    format!("AAMkADsbxEv{ordinal:08}AAA=")
}

fn occurrence_id(master: u64, k: u32) -> String {
    format!("AAMkADsbxEv{master:08}Oc{k:02}AAA=")
}

pub(super) fn contact_id(ordinal: u64) -> String {
    format!("AAMkADsbxCt{ordinal:08}AAA=")
}

pub(super) fn event_ordinal_of(_data: &Data, id: &str) -> Option<u64> {
    id.strip_prefix("AAMkADsbxEv")?.strip_suffix("AAA=")?.parse().ok()
}

pub(super) fn contact_ordinal_of(id: &str) -> Option<u64> {
    id.strip_prefix("AAMkADsbxCt")?.strip_suffix("AAA=")?.parse().ok()
}

fn removed(kind: &str, id: &str) -> Value {
    json!({ "@odata.type": format!("#microsoft.graph.{kind}"), "id": id, "@removed": { "reason": "deleted" } })
}

fn in_window(timing: Timing, window: (i64, i64)) -> bool {
    timing.start.unix_timestamp() < window.1 && timing.end.unix_timestamp() > window.0
}

fn when(at: time::OffsetDateTime) -> Value {
    json!({ "dateTime": seed::graph_time(at), "timeZone": "UTC" })
}

fn change_key(ordinal: u64, revision: u32) -> String {
    format!("sbxCK{ordinal:x}r{revision}")
}

/// The rows record `ordinal` contributes to a page of the calendar view.
fn event_rows(
    data: &Data,
    account: &Account,
    ordinal: u64,
    snap: Snap,
    window: (i64, i64),
    incremental: bool,
) -> Vec<Value> {
    let id = event_id(data, ordinal);
    let (revision, at_ms) = match snap {
        Snap::Absent => return Vec::new(),
        Snap::Deleted { .. } => {
            return if incremental { vec![removed("event", &id)] } else { Vec::new() };
        }
        Snap::Live { revision, at_ms } => (revision, at_ms),
    };
    let base = data.graph_events.base();
    let event = calendar::event(data.population.seed, EVENT_SALT, ordinal, base, revision, at_ms);
    let outside = || if incremental { vec![removed("event", &id)] } else { Vec::new() };
    match (event.kind, event.recurrence) {
        (Kind::Cancelled, _) => outside(),
        (Kind::Series | Kind::AllDaySeries, Some(recurrence)) => {
            let occurrences: Vec<Value> = (0..recurrence.count)
                .filter(|k| {
                    event.kind != Kind::Series
                        || (*k != calendar::MOVED_OCCURRENCE
                            && *k != calendar::CANCELLED_OCCURRENCE)
                })
                .map(|k| (k, recurrence.occurrence(event.timing, k)))
                .filter(|(_, timing)| in_window(*timing, window))
                .map(|(k, timing)| {
                    json!({
                        "@odata.type": "#microsoft.graph.event",
                        "@odata.etag": format!("W/\"{}\"", change_key(ordinal, revision)),
                        "id": occurrence_id(ordinal, k),
                        "seriesMasterId": id,
                        "type": "occurrence",
                        "start": when(timing.start),
                        "end": when(timing.end),
                    })
                })
                .collect();
            if occurrences.is_empty() {
                return outside();
            }
            let mut rows = vec![full(account, &event, &id, ordinal, "seriesMaster", None)];
            rows.extend(occurrences);
            rows
        }
        (Kind::Moved, _) => match event.original {
            Some((original, master)) if in_window(event.timing, window) => {
                let master_id = event_id(data, master);
                let occurrence = format!(
                    "OID.{master_id}.{}",
                    seed::ymd(original.start.to_offset(time::UtcOffset::UTC).date())
                );
                let mut row = full(account, &event, &id, ordinal, "exception", Some(&master_id));
                row["occurrenceId"] = json!(occurrence);
                vec![row]
            }
            _ => outside(),
        },
        _ if in_window(event.timing, window) => {
            vec![full(account, &event, &id, ordinal, "singleInstance", None)]
        }
        _ => outside(),
    }
}

/// An event with Graph's default properties.
fn full(
    account: &Account,
    event: &Event,
    id: &str,
    ordinal: u64,
    kind: &str,
    master: Option<&str>,
) -> Value {
    let key = change_key(ordinal, event.revision);
    let address = format!("{}@example.com", account.id);
    let recurrence = event.recurrence.filter(|_| kind == "seriesMaster").map(|r| {
        let first = event.timing.start.to_offset(time::UtcOffset::UTC);
        let pattern = match r.every_days {
            1 => json!({ "type": "daily", "interval": 1 }),
            7 => json!({
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": [first.weekday().to_string().to_lowercase()],
                "firstDayOfWeek": "sunday",
            }),
            _ => json!({
                "type": "absoluteYearly",
                "interval": 1,
                "dayOfMonth": first.day(),
                "month": u8::from(first.month()),
            }),
        };
        json!({
            "pattern": pattern,
            "range": {
                "type": "numbered",
                "startDate": seed::ymd(first.date()),
                "numberOfOccurrences": r.count,
                "recurrenceTimeZone": event.timing.windows_zone,
            },
        })
    });
    let attendees: Vec<Value> = event
        .attendees
        .iter()
        .map(|a| {
            let response = match a.response {
                "accepted" => "accepted",
                "declined" => "declined",
                "tentative" => "tentativelyAccepted",
                _ => "none",
            };
            json!({
                "type": if a.optional { "optional" } else { "required" },
                "status": { "response": response, "time": "0001-01-01T00:00:00Z" },
                "emailAddress": { "name": a.name, "address": a.email },
            })
        })
        .collect();
    let body = event.description.clone().unwrap_or_default();
    json!({
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": format!("W/\"{key}\""),
        "id": id,
        "createdDateTime": seed::rfc3339_millis(event.created),
        "lastModifiedDateTime": seed::rfc3339_millis(event.updated),
        "changeKey": key,
        "categories": [],
        "originalStartTimeZone": event.timing.windows_zone,
        "originalEndTimeZone": event.timing.windows_zone,
        "iCalUId": format!("040000008200E00074C5B7101A82E008{:032X}", ordinal),
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": !event.timing.all_day,
        "hasAttachments": false,
        "subject": event.summary,
        "bodyPreview": body.chars().take(255).collect::<String>(),
        "importance": "normal",
        "sensitivity": if event.flavour.is_multiple_of(7) { "private" } else { "normal" },
        "isAllDay": event.timing.all_day,
        "isCancelled": false,
        "isOrganizer": true,
        "responseRequested": true,
        "seriesMasterId": master,
        "showAs": if event.timing.all_day { "free" } else { "busy" },
        "type": kind,
        "webLink": format!("https://outlook.live.com/owa/?itemid={id}&exvsurl=1&path=/calendar/item"),
        "onlineMeetingUrl": null,
        "isOnlineMeeting": false,
        "onlineMeetingProvider": "unknown",
        "occurrenceId": null,
        "isDraft": false,
        "hideAttendees": false,
        "responseStatus": { "response": "organizer", "time": "0001-01-01T00:00:00Z" },
        "body": { "contentType": "text", "content": body },
        "start": when(event.timing.start),
        "end": when(event.timing.end),
        "location": {
            "displayName": event.location.clone().unwrap_or_default(),
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        },
        "locations": [],
        "recurrence": recurrence,
        "attendees": attendees,
        "organizer": { "emailAddress": { "name": account.name, "address": address } },
        "onlineMeeting": null,
    })
}

/// Revision `revision` of Outlook contact `ordinal`.
fn contact(seed_value: u64, ordinal: u64, revision: u32, at_ms: Option<i64>) -> Value {
    let mut first = Rng::new(seed_value, CONTACT_SALT, ordinal, 0);
    let given = first.pick(seed::GIVEN_NAMES);
    let family = first.pick(seed::FAMILY_NAMES);
    let created = ANCHOR - Duration::seconds(first.between(86_400 * 30, 86_400 * 900));
    let mut rng = Rng::new(seed_value, CONTACT_SALT, ordinal, revision);
    let updated = at_ms.map_or(created + Duration::days(rng.between(0, 20)), seed::from_unix_ms);
    let key = change_key(ordinal, revision);
    let handle = seed::ascii_handle(given);
    let emails: Vec<Value> = (0..rng.between(1, 3))
        .map(|i| {
            let domain =
                ["example.com", "example.org", "mail.example.net"][usize::try_from(i).unwrap_or(0)];
            let address = format!("{handle}.{ordinal}@{domain}");
            json!({ "name": format!("{given} {family}"), "address": address })
        })
        .collect();
    let phone =
        |rng: &mut Rng| format!("+46 70 {} {}", rng.between(100, 999), rng.between(1000, 9999));
    let business: Vec<String> = (0..rng.below(2)).map(|_| phone(&mut rng)).collect();
    let mobile = rng.chance(70).then(|| phone(&mut rng));
    let birthday = rng.chance(40).then(|| {
        format!(
            "{}-{:02}-{:02}T11:59:00Z",
            rng.between(1950, 2010),
            rng.between(1, 12),
            rng.between(1, 28)
        )
    });
    let company = rng.chance(50).then(|| rng.pick(seed::COMPANIES).to_owned());
    let job =
        company.as_ref().map(|_| rng.pick(&["Ingenjör", "Directrice", "エンジニア", "Médica"]));
    let display = if revision > 0 {
        format!("{given} {family} ({revision})")
    } else {
        format!("{given} {family}")
    };
    json!({
        "@odata.etag": format!("W/\"{key}\""),
        "id": contact_id(ordinal),
        "createdDateTime": seed::rfc3339_seconds(created),
        "lastModifiedDateTime": seed::rfc3339_seconds(updated),
        "changeKey": key,
        "categories": [],
        "parentFolderId": "AAMkADsbxFolderContacts",
        "birthday": birthday,
        "fileAs": "",
        "displayName": display,
        "givenName": given,
        "initials": null,
        "middleName": null,
        "nickName": null,
        "surname": family,
        "title": null,
        "yomiGivenName": null,
        "yomiSurname": null,
        "yomiCompanyName": null,
        "generation": null,
        "imAddresses": [],
        "jobTitle": job,
        "companyName": company,
        "department": null,
        "officeLocation": null,
        "profession": null,
        "businessHomePage": null,
        "assistantName": null,
        "manager": null,
        "homePhones": [],
        "mobilePhone": mobile,
        "businessPhones": business,
        "spouseName": null,
        "personalNotes": rng.pick(seed::NOTES),
        "children": [],
        "emailAddresses": emails,
        "homeAddress": {},
        "businessAddress": {},
        "otherAddress": {},
    })
}

fn contact_rows(data: &Data, ordinal: u64, snap: Snap, incremental: bool) -> Vec<Value> {
    match snap {
        Snap::Absent => Vec::new(),
        Snap::Deleted { .. } if incremental => vec![removed("contact", &contact_id(ordinal))],
        Snap::Deleted { .. } => Vec::new(),
        Snap::Live { revision, at_ms } => {
            vec![contact(data.population.seed, ordinal, revision, at_ms)]
        }
    }
}

/// Which delta query a request is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Query {
    Events,
    Contacts,
}

impl Query {
    fn dataset(self) -> Dataset {
        match self {
            Self::Events => Dataset::MicrosoftCalendar,
            Self::Contacts => Dataset::MicrosoftContacts,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Events => "/microsoft/api/me/calendarView/delta",
            Self::Contacts => "/microsoft/api/me/contacts/delta",
        }
    }

    fn collection(self, data: &Data) -> &Collection {
        match self {
            Self::Events => &data.graph_events,
            Self::Contacts => &data.graph_contacts,
        }
    }
}

/// `GET /me/calendarView/delta`.
pub(super) fn calendar_view(data: &mut Data, request: &Request) -> Answer {
    delta(data, request, Query::Events)
}

/// `GET /me/contacts/delta`.
pub(super) fn contacts(data: &mut Data, request: &Request) -> Answer {
    delta(data, request, Query::Contacts)
}

fn delta(data: &mut Data, request: &Request, query: Query) -> Answer {
    let dataset = query.dataset();
    let epoch = data.epoch(dataset);
    let link_token = request
        .param("$skiptoken")
        .map(|t| (TokenKind::Page, t))
        .or_else(|| request.param("$deltatoken").map(|t| (TokenKind::Sync, t)));

    let (since, at, from, window) = match link_token {
        Some((kind, text)) => {
            let token =
                Token::decode(data.key(), text).filter(|t| t.kind == kind && t.dataset == dataset);
            let Some(token) = token else {
                return Err(error(StatusCode::BAD_REQUEST, "BadRequest", "Badly formed token."));
            };
            if (kind == TokenKind::Sync || token.since.is_some()) && token.epoch != epoch {
                return Err(sync_state_not_found(request, query, &token));
            }
            match kind {
                TokenKind::Page => (token.since, token.at, token.position, token.window),
                TokenKind::Sync => (Some(token.at), data.seq, Position::default(), token.window),
            }
        }
        None if query == Query::Events => {
            let window = request
                .param("startDateTime")
                .and_then(seed::parse_instant)
                .zip(request.param("endDateTime").and_then(seed::parse_instant));
            let Some((start, end)) = window else {
                let message = "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.";
                return Err(error(StatusCode::BAD_REQUEST, "ErrorInvalidParameter", message));
            };
            (
                None,
                data.seq,
                Position::default(),
                Some((start.unix_timestamp(), end.unix_timestamp())),
            )
        }
        None => (None, data.seq, Position::default(), None),
    };

    let preferred = request.max_page_size();
    let size = preferred.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let incremental = since.is_some();
    let account = request.grant.account.clone();
    let (items, next) = if request.empty_page {
        (Vec::new(), Some(from))
    } else {
        let collection = query.collection(data);
        page(collection, since, at, from, size, |ordinal, snap| match query {
            Query::Events => {
                event_rows(data, &account, ordinal, snap, window.unwrap_or(EVERYTHING), incremental)
            }
            Query::Contacts => contact_rows(data, ordinal, snap, incremental),
        })
    };

    let link = |kind, since, position, key: &[u8]| {
        let token =
            Token { kind, dataset, scope: 0, epoch, since, at, position, params: 0, window };
        let name = if kind == TokenKind::Page { "$skiptoken" } else { "$deltatoken" };
        format!("{}{}?{name}={}", request.base_url, query.path(), token.encode(key))
    };
    let entity = if query == Query::Events { "event" } else { "contact" };
    let mut body = json!({
        "@odata.context": format!("{}/microsoft/api/$metadata#Collection({entity})", request.base_url),
    });
    match next {
        Some(position) => {
            body["@odata.nextLink"] = json!(link(TokenKind::Page, since, position, data.key()))
        }
        None => {
            body["@odata.deltaLink"] =
                json!(link(TokenKind::Sync, None, Position::default(), data.key()))
        }
    }
    body["value"] = Value::Array(items);
    if incremental {
        data.served_incremental(dataset);
    }
    let headers = preferred
        .map(|n| (HeaderName::from_static("preference-applied"), format!("odata.maxpagesize={n}")))
        .into_iter()
        .collect();
    Ok((body, headers))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(graph_error(code, message))).into_response()
}

/// 410 for an evicted delta token, as captured from Graph [observed], with the documented
/// `Location` of a fresh initial request.
fn sync_state_not_found(request: &Request, query: Query, token: &Token) -> Response {
    let message = format!(
        "The sync state generation is not found; generation={};[highest={}].",
        token.epoch,
        token.epoch + 1
    );
    let mut location = format!("{}{}", request.base_url, query.path());
    if let Some((start, end)) = token.window {
        let instant = |at| {
            time::OffsetDateTime::from_unix_timestamp(at)
                .map(seed::rfc3339_seconds)
                .unwrap_or_default()
        };
        location.push_str(&format!(
            "?startDateTime={}&endDateTime={}",
            instant(start),
            instant(end)
        ));
    }
    let mut response = error(StatusCode::GONE, "SyncStateNotFound", &message);
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
    response
}

/// Every live Outlook event with its occurrences, whatever the window.
pub(super) fn event_truth(data: &Data, account: &Account) -> Vec<Record> {
    event_truth_in(data, account, EVERYTHING)
}

/// Every live Outlook event with its occurrences that a `calendarView` of `window` (Unix
/// seconds, start inclusive, end exclusive) lists.
pub(crate) fn event_truth_in(data: &Data, account: &Account, window: (i64, i64)) -> Vec<Record> {
    let (rows, _) =
        page(&data.graph_events, None, data.seq, Position::default(), usize::MAX, |o, s| {
            event_rows(data, account, o, s, window, false)
        });
    records(rows)
}

/// Every live Outlook contact.
pub(super) fn contact_truth(data: &Data) -> Vec<Record> {
    let (rows, _) =
        page(&data.graph_contacts, None, data.seq, Position::default(), usize::MAX, |o, s| {
            contact_rows(data, o, s, false)
        });
    records(rows)
}

fn records(rows: Vec<Value>) -> Vec<Record> {
    rows.into_iter()
        .map(|json| Record {
            id: json["id"].as_str().unwrap_or_default().to_owned(),
            calendar: None,
            json,
        })
        .collect()
}
