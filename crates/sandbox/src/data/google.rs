//! Google Calendar v3: `users/me/calendarList` and `calendars/{calendarId}/events`.
//!
//! Three calendars: the primary one (its id is the account's address), a shared family
//! calendar and a read-only holiday calendar, hidden from the user's list as many are, each
//! with its own records and sync tokens.
//! `events.list` pages with `maxResults` (default 250, at most 2500) and `pageToken`, answers
//! `nextSyncToken` on the last page only, and with `syncToken` lists the events changed since,
//! deleted ones as `cancelled` tombstones. It refuses what Google refuses with a sync token
//! (`q`, `timeMin`, `orderBy`, `showDeleted=false`, ...) with 400, and answers an invalidated
//! or unreadable sync token with 410 `fullSyncRequired`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::calendar::{self, Event, Kind, Timing};
use super::seed::{self, Rng};
use super::token::{Kind as TokenKind, Token};
use super::{Answer, Data, Dataset, Position, Record, Request, Snap, page};
use crate::Account;

/// The calendars' salts, which make their events differ.
const SALT: u64 = 100;

/// Parameters Google refuses beside `syncToken`.
const NOT_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// A calendar: its id, summary and the person's access role.
struct CalendarInfo {
    id: String,
    summary: String,
    role: &'static str,
    color: (&'static str, &'static str),
    /// Hidden from the user's calendar list in Google's interface: `calendarList.list` leaves
    /// it out unless asked `showHidden=true`.
    hidden: bool,
}

fn calendars(data: &Data, account: &Account) -> [CalendarInfo; 3] {
    let mut rng = Rng::new(data.population.seed, SALT, 999, 0);
    [
        CalendarInfo {
            id: account.name.clone(),
            summary: account.name.clone(),
            role: "owner",
            color: ("14", "#9fe1e7"),
            hidden: false,
        },
        CalendarInfo {
            id: format!("c_{}@group.calendar.google.com", rng.hex(26)),
            summary: "Familie Müller-Łukasiewicz 👨‍👩‍👧".to_owned(),
            role: "owner",
            color: ("2", "#d06b64"),
            hidden: false,
        },
        CalendarInfo {
            id: "sv.swedish#holiday@group.v.calendar.google.com".to_owned(),
            summary: "Helgdagar i Sverige 🇸🇪".to_owned(),
            role: "reader",
            color: ("8", "#16a765"),
            hidden: true,
        },
    ]
}

/// The event id of record `ordinal` of calendar `calendar`.
pub(super) fn event_id(data: &Data, calendar: usize, ordinal: u64) -> String {
    let base = data.calendars[calendar].base();
    let kind = calendar::kind(ordinal, base);
    match calendar::master_of(ordinal, kind) {
        Some(master) => {
            let event = event(data, calendar, ordinal, 0, None);
            let original = event.original.map_or(event.timing, |(timing, _)| timing);
            format!("{}_{}", plain_id(calendar, master), instance_suffix(original))
        }
        None => plain_id(calendar, ordinal),
    }
}

/// Ids use Google's alphabet, base32hex (`a`–`v`, `0`–`9`).
fn plain_id(calendar: usize, ordinal: u64) -> String {
    format!("evt{calendar}n{ordinal:07}")
}

/// The part after `_` in an instance's id: its original start in UTC, or its date.
fn instance_suffix(original: Timing) -> String {
    if original.all_day {
        seed::ymd_compact(original.start.date())
    } else {
        let utc = original.start.to_offset(time::UtcOffset::UTC);
        format!(
            "{}T{:02}{:02}{:02}Z",
            seed::ymd_compact(utc.date()),
            utc.hour(),
            utc.minute(),
            utc.second()
        )
    }
}

/// The calendar and ordinal of an event id.
pub(super) fn ordinal_of(data: &Data, id: &str) -> Option<(usize, u64)> {
    let (plain, suffix) = match id.split_once('_') {
        Some((plain, suffix)) => (plain, Some(suffix)),
        None => (id, None),
    };
    let rest = plain.strip_prefix("evt")?;
    let calendar = usize::from(rest.as_bytes().first()?.checked_sub(b'0')?);
    let ordinal: u64 = rest.get(1..)?.strip_prefix('n')?.parse().ok()?;
    if calendar >= data.calendars.len() {
        return None;
    }
    match suffix {
        None => Some((calendar, ordinal)),
        Some(_) => calendar::series_members(ordinal, data.calendars[calendar].base())
            .into_iter()
            .find(|member| event_id(data, calendar, *member) == id)
            .map(|member| (calendar, member)),
    }
}

fn event(data: &Data, calendar: usize, ordinal: u64, revision: u32, at_ms: Option<i64>) -> Event {
    let base = data.calendars[calendar].base();
    let salt = SALT + calendar as u64;
    calendar::event(data.population.seed, salt, ordinal, base, revision, at_ms)
}

/// How a listing renders events.
struct View<'a> {
    data: &'a Data,
    calendar: usize,
    info: &'a CalendarInfo,
    account: &'a Account,
    /// Cancelled events and tombstones are listed: incremental rounds and `showDeleted`.
    deleted: bool,
    single_events: bool,
}

impl View<'_> {
    fn rows(&self, ordinal: u64, snap: Snap) -> Vec<Value> {
        let (revision, at_ms, deleted) = match snap {
            Snap::Absent => return Vec::new(),
            Snap::Live { revision, at_ms } => (revision, at_ms, false),
            Snap::Deleted { revision, at_ms } => (revision, Some(at_ms), true),
        };
        let event = event(self.data, self.calendar, ordinal, revision, at_ms);
        let id = event_id(self.data, self.calendar, ordinal);
        if deleted || event.kind == Kind::Cancelled {
            if !self.deleted {
                return Vec::new();
            }
            return vec![self.tombstone(&event, &id)];
        }
        match (event.recurrence, self.single_events) {
            (Some(recurrence), true) => (0..recurrence.count)
                .filter(|k| {
                    event.kind != Kind::Series
                        || (*k != calendar::MOVED_OCCURRENCE
                            && *k != calendar::CANCELLED_OCCURRENCE)
                })
                .map(|k| {
                    let timing = recurrence.occurrence(event.timing, k);
                    let mut row =
                        self.full(&event, &format!("{id}_{}", instance_suffix(timing)), &id);
                    row.insert("start".into(), when(timing, false));
                    row.insert("end".into(), when(timing, true));
                    row.remove("recurrence");
                    row.insert("recurringEventId".into(), json!(id));
                    row.insert("originalStartTime".into(), when(timing, false));
                    Value::Object(row)
                })
                .collect(),
            _ => {
                let series_id = match event.original {
                    Some((_, master)) => plain_id(self.calendar, master),
                    None => id.clone(),
                };
                vec![Value::Object(self.full(&event, &id, &series_id))]
            }
        }
    }

    /// A cancelled event: only the id for a deleted one; the series and original start too
    /// for a cancelled occurrence.
    fn tombstone(&self, event: &Event, id: &str) -> Value {
        let mut row = json!({
            "kind": "calendar#event",
            "etag": etag(event),
            "id": id,
            "status": "cancelled",
        });
        if let Some((original, master)) = event.original {
            row["recurringEventId"] = json!(plain_id(self.calendar, master));
            row["originalStartTime"] = when(original, false);
        }
        row
    }

    fn full(&self, event: &Event, id: &str, series_id: &str) -> Map<String, Value> {
        let Self { info, account, .. } = self;
        let eid = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            format!("{id} {}", info.id),
        );
        let mut row = Map::new();
        row.insert("kind".into(), json!("calendar#event"));
        row.insert("etag".into(), json!(etag(event)));
        row.insert("id".into(), json!(id));
        let status = if event.flavour.is_multiple_of(10) { "tentative" } else { "confirmed" };
        row.insert("status".into(), json!(status));
        row.insert(
            "htmlLink".into(),
            json!(format!("https://www.google.com/calendar/event?eid={eid}")),
        );
        row.insert("created".into(), json!(seed::rfc3339_millis(event.created)));
        row.insert("updated".into(), json!(seed::rfc3339_millis(event.updated)));
        row.insert("summary".into(), json!(event.summary));
        if let Some(description) = &event.description {
            row.insert("description".into(), json!(description));
        }
        if let Some(location) = &event.location {
            row.insert("location".into(), json!(location));
        }
        row.insert("creator".into(), json!({ "email": account.name, "self": true }));
        let organizer = if self.calendar == 0 {
            json!({ "email": info.id, "self": true })
        } else {
            json!({ "email": info.id, "displayName": info.summary })
        };
        row.insert("organizer".into(), organizer);
        row.insert("start".into(), when(event.timing, false));
        row.insert("end".into(), when(event.timing, true));
        if let Some(recurrence) = event.recurrence {
            row.insert("recurrence".into(), json!([recurrence.rrule()]));
        }
        if let Some((original, master)) = event.original {
            row.insert("recurringEventId".into(), json!(plain_id(self.calendar, master)));
            row.insert("originalStartTime".into(), when(original, false));
        }
        if event.timing.all_day {
            row.insert("transparency".into(), json!("transparent"));
        }
        row.insert("iCalUID".into(), json!(format!("{series_id}@google.com")));
        row.insert("sequence".into(), json!(event.revision));
        if !event.attendees.is_empty() {
            let mut attendees = vec![json!({
                "email": account.name, "organizer": true, "self": true, "responseStatus": "accepted",
            })];
            attendees.extend(event.attendees.iter().map(|a| {
                let mut attendee = json!({
                    "email": a.email, "displayName": a.name, "responseStatus": a.response,
                });
                if a.optional {
                    attendee["optional"] = json!(true);
                }
                attendee
            }));
            row.insert("attendees".into(), Value::Array(attendees));
        }
        let reminders = if event.flavour.is_multiple_of(3) {
            json!({ "useDefault": false, "overrides": [{ "method": "popup", "minutes": 10 }] })
        } else {
            json!({ "useDefault": true })
        };
        row.insert("reminders".into(), reminders);
        row.insert("eventType".into(), json!("default"));
        row
    }
}

/// An event's etag: Google's are quoted microsecond timestamps of the last change.
fn etag(event: &Event) -> String {
    let micros = event.updated.unix_timestamp_nanos() / 1000;
    format!("\"{micros}\"")
}

/// A start or end: `date` for all-day events (the end exclusive), else `dateTime` with the
/// event's offset and its zone.
fn when(timing: Timing, end: bool) -> Value {
    let at = if end { timing.end } else { timing.start };
    if timing.all_day {
        json!({ "date": seed::ymd(at.date()) })
    } else {
        json!({ "dateTime": seed::rfc3339_offset(at), "timeZone": timing.zone })
    }
}

/// `events.list`.
pub(super) fn events(data: &mut Data, request: &Request) -> Answer {
    let account = &request.grant.account;
    let infos = calendars(data, account);
    let wanted = request.path.as_deref().unwrap_or("");
    let Some(calendar) = infos
        .iter()
        .position(|info| info.id == wanted || (wanted == "primary" && info.id == account.name))
    else {
        return Err(error(StatusCode::NOT_FOUND, "Not Found", "global", "notFound", None));
    };
    let max_results = max_results(request)?;
    let single_events = request.param("singleEvents") == Some("true");
    let lineage = request.params_hash_of(&["singleEvents", "eventTypes"]);
    let epoch = data.epoch(Dataset::GoogleCalendar);

    if request.param("syncToken").is_some() {
        if let Some(name) = NOT_WITH_SYNC_TOKEN.iter().find(|name| request.param(name).is_some()) {
            let message = format!("{name} is not allowed with syncToken");
            return Err(error(StatusCode::BAD_REQUEST, &message, "global", "invalid", Some(name)));
        }
        if request.param("showDeleted") == Some("false") {
            let message = "showDeleted=false is not allowed with syncToken";
            return Err(error(
                StatusCode::BAD_REQUEST,
                message,
                "global",
                "invalid",
                Some("showDeleted"),
            ));
        }
    }
    if request.param("orderBy") == Some("startTime") && !single_events {
        let message = "orderBy=startTime requires singleEvents=true";
        return Err(error(
            StatusCode::BAD_REQUEST,
            message,
            "global",
            "badRequest",
            Some("orderBy"),
        ));
    }

    let (since, at, from) = if let Some(text) = request.param("pageToken") {
        let token = Token::decode(data.key(), text)
            .filter(|t| t.kind == TokenKind::Page && t.dataset == Dataset::GoogleCalendar)
            .filter(|t| usize::from(t.scope) == calendar);
        let Some(token) = token else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Invalid Value",
                "global",
                "invalid",
                Some("pageToken"),
            ));
        };
        if token.params != request.params_hash(&["pageToken"]) {
            let message = "The parameters of a page request must match the first request's.";
            return Err(error(StatusCode::BAD_REQUEST, message, "global", "badRequest", None));
        }
        if token.since.is_some() && token.epoch != epoch {
            return Err(full_sync_required());
        }
        (token.since, token.at, token.position)
    } else if let Some(text) = request.param("syncToken") {
        let token = Token::decode(data.key(), text)
            .filter(|t| t.kind == TokenKind::Sync && t.dataset == Dataset::GoogleCalendar)
            .filter(|t| usize::from(t.scope) == calendar && t.epoch == epoch);
        // A token Google cannot read gets the same 410 as an expired one [observed].
        let Some(token) = token else { return Err(full_sync_required()) };
        if token.params != lineage {
            let message =
                "singleEvents and eventTypes must match the request that gave the sync token.";
            return Err(error(
                StatusCode::BAD_REQUEST,
                message,
                "global",
                "invalid",
                Some("syncToken"),
            ));
        }
        (Some(token.at), data.seq, Position::default())
    } else {
        (None, data.seq, Position::default())
    };

    let view = View {
        data,
        calendar,
        info: &infos[calendar],
        account,
        deleted: since.is_some() || request.param("showDeleted") == Some("true"),
        single_events,
    };
    let collection = &data.calendars[calendar];
    let (items, next) = if request.empty_page {
        (Vec::new(), Some(from))
    } else {
        page(collection, since, at, from, max_results, |ordinal, snap| view.rows(ordinal, snap))
    };

    let info = &infos[calendar];
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"p3{at:013}\""),
        "summary": info.summary,
        "description": "",
        "updated": seed::rfc3339_millis(seed::from_unix_ms(data.last_ms)),
        "timeZone": "Europe/Stockholm",
        "accessRole": info.role,
        "defaultReminders": if info.role == "owner" { json!([{ "method": "popup", "minutes": 30 }]) } else { json!([]) },
    });
    let scope = u8::try_from(calendar).unwrap_or(0);
    match next {
        Some(position) => {
            let params = request.params_hash(&["pageToken"]);
            let token = Token {
                kind: TokenKind::Page,
                dataset: Dataset::GoogleCalendar,
                scope,
                epoch,
                since,
                at,
                position,
                params,
                window: None,
            };
            body["nextPageToken"] = json!(token.encode(data.key()));
        }
        None => {
            let token = Token {
                kind: TokenKind::Sync,
                dataset: Dataset::GoogleCalendar,
                scope,
                epoch,
                since: None,
                at,
                position: Position::default(),
                params: lineage,
                window: None,
            };
            body["nextSyncToken"] = json!(token.encode(data.key()));
        }
    }
    body["items"] = Value::Array(items);
    if since.is_some() {
        data.served_incremental(Dataset::GoogleCalendar);
    }
    Ok((body, Vec::new()))
}

/// `calendarList.list`: the three calendars, paged, with a sync token on the last page; the
/// hidden one only with `showHidden=true`. The calendars never change, so an incremental list
/// is empty.
pub(super) fn calendar_list(data: &mut Data, request: &Request) -> Answer {
    let show_hidden = request.param("showHidden") == Some("true");
    let infos: Vec<CalendarInfo> = calendars(data, &request.grant.account)
        .into_iter()
        .filter(|info| show_hidden || !info.hidden)
        .collect();
    let max_results = max_results(request)?;
    let epoch = data.epoch(Dataset::GoogleCalendar);
    let (start, incremental) = if let Some(text) = request.param("pageToken") {
        let token =
            Token::decode(data.key(), text).filter(|t| t.kind == TokenKind::Page && t.scope == 9);
        let Some(token) = token else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Invalid Value",
                "global",
                "invalid",
                Some("pageToken"),
            ));
        };
        (usize::try_from(token.position.ordinal).unwrap_or(usize::MAX), token.since.is_some())
    } else if let Some(text) = request.param("syncToken") {
        let token = Token::decode(data.key(), text)
            .filter(|t| t.kind == TokenKind::Sync && t.scope == 9 && t.epoch == epoch);
        if token.is_none() {
            return Err(full_sync_required());
        }
        (infos.len(), true)
    } else {
        (0, false)
    };

    let end = (start + max_results).min(infos.len());
    let items: Vec<Value> = infos.get(start..end).unwrap_or_default().iter().enumerate().map(|(i, info)| {
        let mut entry = json!({
            "kind": "calendar#calendarListEntry",
            "etag": format!("\"17000000000000{:02}\"", start + i),
            "id": info.id,
            "summary": info.summary,
            "timeZone": "Europe/Stockholm",
            "colorId": info.color.0,
            "backgroundColor": info.color.1,
            "foregroundColor": "#000000",
            "selected": true,
            "accessRole": info.role,
            "defaultReminders": if info.role == "owner" { json!([{ "method": "popup", "minutes": 30 }]) } else { json!([]) },
        });
        if start + i == 0 {
            entry["primary"] = json!(true);
        }
        if info.hidden {
            entry["hidden"] = json!(true);
        }
        entry
    }).collect();
    let mut body = json!({ "kind": "calendar#calendarList", "etag": "\"p32sandbox0001\"" });
    let since = incremental.then_some(0);
    let token = |kind, ordinal| Token {
        kind,
        dataset: Dataset::GoogleCalendar,
        scope: 9,
        epoch,
        since,
        at: 0,
        position: Position { ordinal, sub: 0 },
        params: 0,
        window: None,
    };
    if end < infos.len() {
        body["nextPageToken"] = json!(token(TokenKind::Page, end as u64).encode(data.key()));
    } else {
        body["nextSyncToken"] = json!(token(TokenKind::Sync, 0).encode(data.key()));
    }
    body["items"] = Value::Array(items);
    Ok((body, Vec::new()))
}

/// `maxResults`: default 250; more than 2500 is served as 2500, as Google caps it.
fn max_results(request: &Request) -> Result<usize, Response> {
    match request.param("maxResults") {
        None => Ok(250),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(2500)),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "Invalid value for: maxResults",
                "global",
                "invalid",
                Some("maxResults"),
            )),
        },
    }
}

/// Every live event of every calendar, as a full listing with `showDeleted=true` serves it,
/// less the tombstones of deleted events: the cancelled occurrences of live series stay, as a
/// client keeps them for as long as their series lives.
pub(super) fn truth(data: &Data, account: &Account) -> Vec<Record> {
    let infos = calendars(data, account);
    let mut records = Vec::new();
    for (calendar, info) in infos.iter().enumerate() {
        let view = View { data, calendar, info, account, deleted: true, single_events: false };
        let (rows, _) = page(
            &data.calendars[calendar],
            None,
            data.seq,
            Position::default(),
            usize::MAX,
            |o, s| view.rows(o, s),
        );
        let tombstone =
            |json: &Value| json["status"] == "cancelled" && json.get("recurringEventId").is_none();
        records.extend(rows.into_iter().filter(|json| !tombstone(json)).map(|json| Record {
            id: json["id"].as_str().unwrap_or_default().to_owned(),
            calendar: Some(info.id.clone()),
            json,
        }));
    }
    records
}

/// Google's error envelope: the legacy `errors` list, and `status` when given.
pub(super) fn error_body(
    code: u16,
    message: &str,
    status: Option<&str>,
    domain: &str,
    reason: &str,
    location: Option<&str>,
) -> Value {
    let mut detail = json!({ "domain": domain, "reason": reason, "message": message });
    if let Some(location) = location {
        detail["locationType"] = json!("parameter");
        detail["location"] = json!(location);
    }
    let mut error = json!({ "errors": [detail], "code": code, "message": message });
    if let Some(status) = status {
        error["status"] = json!(status);
    }
    json!({ "error": error })
}

fn error(
    status: StatusCode,
    message: &str,
    domain: &str,
    reason: &str,
    location: Option<&str>,
) -> Response {
    let body = error_body(status.as_u16(), message, None, domain, reason, location);
    (status, axum::Json(body)).into_response()
}

/// 410 `fullSyncRequired`: the sync token is dead; the client wipes and syncs in full.
fn full_sync_required() -> Response {
    let message = "Sync token is no longer valid, a full sync is required.";
    error(StatusCode::GONE, message, "calendar", "fullSyncRequired", Some("syncToken"))
}

/// 403 `rateLimitExceeded` or `userRateLimitExceeded` in the `usageLimits` domain.
pub(super) fn rate_limit_403(user: bool) -> Response {
    let (reason, message) = if user {
        ("userRateLimitExceeded", "User Rate Limit Exceeded")
    } else {
        ("rateLimitExceeded", "Rate Limit Exceeded")
    };
    error(StatusCode::FORBIDDEN, message, "usageLimits", reason, None)
}
