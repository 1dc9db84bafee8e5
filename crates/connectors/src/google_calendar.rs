//! Google Calendar API v3: `calendarList.list` for the streams, `events.list` per calendar.
//!
//! Every round asks with the same parameters, so that the sync token's lineage stays valid:
//! `singleEvents=false` (recurring series come as a master with its `recurrence` and separate
//! exceptions), `showDeleted=true` (Google forces it with a sync token and refuses `false`
//! there) and `maxResults`. Page tokens repeat the query; `nextSyncToken` comes only on the last
//! page. An incremental round sends `syncToken` and none of the parameters Google refuses with
//! it (`timeMin`, `timeMax`, `updatedMin`, `orderBy`, `q`, `iCalUID`, extended properties).
//!
//! Google answers a dead sync token with 410 `fullSyncRequired`, possibly on a later page of
//! an incremental round: [`FetchError::ResyncRequired`].
//!
//! Cancelled events: an exception of a recurring series (it has `recurringEventId`) is an
//! instance removed from a live series and is kept, with status `cancelled`, so that the series
//! shows without it. Any other cancelled event is a deletion, and so is a cancelled exception
//! whose series is deleted in the same page.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::{Date, OffsetDateTime};
use url::Url;

use crate::fetch::{self, FetchError, Get, Refusal, TokenSource};
use crate::wire::{self, RawItems};
use crate::{Columns, Cursor, Next, Options, Page, Record, Stream};

const LIST_WHAT: &str = "calendar GET /calendar/v3/users/me/calendarList";
const EVENTS_WHAT: &str = "calendar GET /calendar/v3/calendars/{calendarId}/events";

/// At most this many pages of calendars are read: 250 a page.
const MAX_LIST_PAGES: usize = 40;

/// The calendars of the account, one stream each.
pub(crate) async fn streams<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
) -> Result<Vec<Stream>, FetchError> {
    let mut streams = Vec::new();
    let mut page_token: Option<String> = None;

    for _ in 0..MAX_LIST_PAGES {
        let mut url = fetch::endpoint(base, &["calendar", "v3", "users", "me", "calendarList"]);
        // Hiding a calendar in Google's interface is a display choice, not a deletion: its
        // events stay in the user's account and in Datapunk.
        url.query_pairs_mut().append_pair("maxResults", "250").append_pair("showHidden", "true");
        if let Some(token) = &page_token {
            url.query_pairs_mut().append_pair("pageToken", token);
        }
        let request = Get { what: LIST_WHAT, url, prefer: None };
        let body = fetch::get(tokens, &options.retry, &request, |_| None).await?;
        let list: CalendarList = fetch::parse(LIST_WHAT, "", &body)?;

        streams.extend(list.items.into_iter().map(|entry| Stream { id: entry.id }));
        match list.next_page_token {
            Some(token) => page_token = Some(token),
            None => return Ok(streams),
        }
    }
    Err(fetch::malformed(LIST_WHAT, "the calendar list does not end"))
}

/// The page of calendar `calendar` that `cursor` calls for.
pub(crate) async fn fetch<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
    calendar: &str,
    cursor: &Cursor,
) -> Result<Page, FetchError> {
    let round = Round::from_cursor(cursor)?;

    let mut url = fetch::endpoint(base, &["calendar", "v3", "calendars", calendar, "events"]);
    url.query_pairs_mut()
        .append_pair("singleEvents", "false")
        .append_pair("showDeleted", "true")
        .append_pair("maxResults", &options.calendar_page_size.clamp(1, 2500).to_string());
    round.append(&mut url, "syncToken");
    let request = Get { what: EVENTS_WHAT, url, prefer: None };
    let body = fetch::get(tokens, &options.retry, &request, resync).await?;

    let (mut page, tokens) = parse_events(&body)?;
    page.next = round.next(EVENTS_WHAT, tokens)?;
    Ok(page)
}

/// Any 410 on `events.list` means the sync token is gone (`fullSyncRequired`; a garbled token
/// is answered the same).
fn resync(refusal: &Refusal) -> Option<String> {
    (refusal.status == 410)
        .then(|| refusal.codes.first().cloned().unwrap_or_else(|| "gone".to_owned()))
}

/// Where a Google round stands, as kept in [`Cursor::Page`]'s continuation: the page token,
/// and the sync token the round repeats on every page when it is incremental.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Round {
    #[serde(skip)]
    full: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<String>,
}

/// A Google list answer's continuation tokens (Calendar and People spell them alike).
#[derive(Debug)]
pub(crate) struct Tokens {
    /// `nextPageToken`: more pages in this round.
    pub(crate) next_page_token: Option<String>,
    /// `nextSyncToken`: the round is complete.
    pub(crate) next_sync_token: Option<String>,
}

impl Round {
    /// The round `cursor` stands in. A continuation Datapunk cannot read (written by another
    /// version, or damaged) starts over with a full round.
    pub(crate) fn from_cursor(cursor: &Cursor) -> Result<Self, FetchError> {
        match cursor {
            Cursor::Start => Ok(Self { full: true, ..Self::default() }),
            Cursor::Synced(token) => Ok(Self { sync: Some(token.clone()), ..Self::default() }),
            Cursor::Page { continuation, full } => serde_json::from_str::<Self>(continuation)
                .ok()
                .filter(|round| round.page.is_some())
                .map(|round| Self { full: *full, ..round })
                .ok_or_else(|| FetchError::ResyncRequired { reason: "unreadable cursor".into() }),
        }
    }

    /// Adds the round's sync and page tokens to the query.
    pub(crate) fn append(&self, url: &mut Url, sync_name: &str) {
        let mut query = url.query_pairs_mut();
        if let Some(sync) = &self.sync {
            query.append_pair(sync_name, sync);
        }
        if let Some(page) = &self.page {
            query.append_pair("pageToken", page);
        }
    }

    /// What follows a page with `tokens`: the next page of this round, or its end with the
    /// sync token of the next.
    pub(crate) fn next(&self, what: &str, tokens: Tokens) -> Result<Next, FetchError> {
        if let Some(page) = tokens.next_page_token {
            let round = Self { full: self.full, page: Some(page), sync: self.sync.clone() };
            let continuation = serde_json::to_string(&round)
                .map_err(|_| fetch::malformed(what, "the page token cannot be kept"))?;
            return Ok(Next::More(Cursor::Page { continuation, full: self.full }));
        }
        match tokens.next_sync_token {
            Some(sync) => Ok(Next::Done { sync_token: Some(sync), full: self.full }),
            None => Err(fetch::malformed(what, "the last page has no nextSyncToken")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarList {
    #[serde(default)]
    items: Vec<CalendarEntry>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CalendarEntry {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsPage {
    #[serde(default)]
    items: RawItems,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    #[default]
    Confirmed,
    Tentative,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Tentative => "tentative",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    id: String,
    #[serde(default)]
    status: Status,
    #[serde(default, deserialize_with = "wire::rfc3339")]
    updated: Option<OffsetDateTime>,
    summary: Option<String>,
    description: Option<String>,
    location: Option<String>,
    organizer: Option<Box<RawValue>>,
    attendees: Option<Box<RawValue>>,
    recurrence: Option<Vec<String>>,
    recurring_event_id: Option<String>,
    start: Option<When>,
    end: Option<When>,
    original_start_time: Option<When>,
}

/// `{"date": "2026-04-10"}` for an all-day event, `{"dateTime": "...+02:00"}` otherwise.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct When {
    #[serde(default, deserialize_with = "wire::date")]
    date: Option<Date>,
    #[serde(default, deserialize_with = "wire::rfc3339")]
    date_time: Option<OffsetDateTime>,
}

impl When {
    fn utc(&self) -> Option<OffsetDateTime> {
        self.date_time
            .map(|at| at.to_offset(time::UtcOffset::UTC))
            .or_else(|| self.date.map(|date| date.midnight().assume_utc()))
    }
}

/// The records and removals of an `events.list` answer, and its tokens for the caller to
/// decide `next` with.
fn parse_events(body: &[u8]) -> Result<(Page, Tokens), FetchError> {
    let page: EventsPage = fetch::parse(EVENTS_WHAT, "", body)?;
    let mut events = Vec::with_capacity(page.items.len());
    for (index, raw) in page.items.iter().enumerate() {
        let event: Event =
            fetch::parse(EVENTS_WHAT, &format!("items[{index}]"), raw.get().as_bytes())?;
        events.push((event, raw));
    }

    let deleted: HashSet<&str> = events
        .iter()
        .filter(|(event, _)| {
            event.status == Status::Cancelled && event.recurring_event_id.is_none()
        })
        .map(|(event, _)| event.id.as_str())
        .collect();
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    for (event, raw) in &events {
        let series_deleted =
            event.recurring_event_id.as_deref().is_some_and(|series| deleted.contains(series));
        if event.status == Status::Cancelled
            && (event.recurring_event_id.is_none() || series_deleted)
        {
            removals.push(event.id.clone());
        } else {
            upserts.push(record(event, raw));
        }
    }

    let tokens =
        Tokens { next_page_token: page.next_page_token, next_sync_token: page.next_sync_token };
    Ok((Page { upserts, removals, next: Next::Done { sync_token: None, full: false } }, tokens))
}

fn record(event: &Event, raw: &RawValue) -> Record {
    let kind = if event.recurrence.is_some() {
        "master"
    } else if event.recurring_event_id.is_some() {
        "exception"
    } else {
        "single"
    };
    // A cancelled exception carries only its original start: that is the instance it removes.
    let start = event.start.as_ref().or(event.original_start_time.as_ref());

    let mut personal = Vec::new();
    let texts = [
        ("summary", event.summary.clone()),
        ("description", event.description.clone()),
        ("location", event.location.clone()),
        ("organizer", event.organizer.as_ref().map(|v| v.get().to_owned())),
        ("attendees", event.attendees.as_ref().map(|v| v.get().to_owned())),
        ("recurrence", event.recurrence.as_ref().map(|lines| lines.join("\n"))),
    ];
    personal.extend(texts.into_iter().filter_map(|(name, text)| Some((name, text?))));
    personal.push(("raw", raw.get().to_owned()));

    Record {
        id: event.id.clone(),
        updated_at: event.updated,
        columns: Columns::Event {
            starts_at: start.and_then(When::utc),
            ends_at: event.end.as_ref().and_then(When::utc),
            all_day: start.is_some_and(|when| when.date.is_some()),
            status: event.status.as_str().to_owned(),
            series_id: event.recurring_event_id.clone(),
            kind: kind.to_owned(),
        },
        personal,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn fixture(name: &str) -> &'static [u8] {
        match name {
            "full1" => include_bytes!("../tests/fixtures/google-calendar-events-full-1.json"),
            "full2" => include_bytes!("../tests/fixtures/google-calendar-events-full-2.json"),
            "incremental" => {
                include_bytes!("../tests/fixtures/google-calendar-events-incremental.json")
            }
            _ => panic!("no fixture {name}"),
        }
    }

    fn personal<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        record.personal.iter().find(|(n, _)| *n == name).map(|(_, text)| text.as_str())
    }

    #[test]
    fn a_full_first_page_has_timed_and_all_day_events_and_a_page_token() {
        let body = fixture("full1");
        let (page, tokens) = parse_events(body).expect("the page parses");
        let next = Round::from_cursor(&Cursor::Start)
            .expect("a readable cursor")
            .next(EVENTS_WHAT, tokens)
            .expect("a next step");

        let Next::More(Cursor::Page { continuation, full: true }) = next else {
            panic!("expected another page of a full round, got {next:?}");
        };
        assert_eq!(continuation, r#"{"page":"pt-1"}"#);
        assert!(page.removals.is_empty());
        let [timed, all_day] = page.upserts.as_slice() else { panic!("two events") };
        assert_eq!(timed.id, "ev-timed");
        assert_eq!(
            timed.columns,
            Columns::Event {
                starts_at: Some(datetime!(2026-05-04 08:00 UTC)),
                ends_at: Some(datetime!(2026-05-04 09:00 UTC)),
                all_day: false,
                status: "confirmed".into(),
                series_id: None,
                kind: "single".into(),
            }
        );
        assert_eq!(timed.updated_at, Some(datetime!(2026-04-01 09:30:00.5 UTC)));
        assert_eq!(personal(timed, "summary"), Some("Dentist"));
        assert_eq!(personal(timed, "location"), Some("Main Street 1"));
        assert!(personal(timed, "attendees").expect("attendees").contains("someone@example.test"));
        let raw = personal(timed, "raw").expect("raw");
        assert!(raw.starts_with('{') && raw.contains("\"someNewField\""), "{raw}");

        let Columns::Event { all_day, starts_at, ends_at, .. } = &all_day.columns else {
            panic!("an event")
        };
        assert!(all_day);
        assert_eq!(*starts_at, Some(datetime!(2026-05-10 00:00 UTC)));
        assert_eq!(*ends_at, Some(datetime!(2026-05-11 00:00 UTC)));
    }

    #[test]
    fn the_last_page_has_the_sync_token_a_master_and_its_exception() {
        let body = fixture("full2");
        let (page, tokens) = parse_events(body).expect("the page parses");
        let round = Round::from_cursor(&Cursor::Page {
            continuation: r#"{"page":"pt-1"}"#.into(),
            full: true,
        })
        .expect("a readable cursor");
        let next = round.next(EVENTS_WHAT, tokens).expect("a next step");
        assert_eq!(next, Next::Done { sync_token: Some("st-1".into()), full: true });

        let [master, exception] = page.upserts.as_slice() else { panic!("two events") };
        let Columns::Event { kind, series_id, .. } = &master.columns else { panic!() };
        assert_eq!((kind.as_str(), series_id), ("master", &None));
        assert_eq!(
            personal(master, "recurrence"),
            Some("RRULE:FREQ=WEEKLY;COUNT=4\nEXDATE:20260512T070000Z")
        );
        let Columns::Event { kind, series_id, .. } = &exception.columns else { panic!() };
        assert_eq!(kind, "exception");
        assert_eq!(series_id.as_deref(), Some("ev-weekly"));
    }

    #[test]
    fn incremental_pages_keep_cancelled_exceptions_and_remove_other_cancelled_events() {
        let body = fixture("incremental");
        let (page, tokens) = parse_events(body).expect("the page parses");
        let round = Round::from_cursor(&Cursor::Synced("st-1".into())).expect("a readable cursor");
        let next = round.next(EVENTS_WHAT, tokens).expect("a next step");
        assert_eq!(next, Next::Done { sync_token: Some("st-2".into()), full: false });

        assert_eq!(page.removals, ["ev-gone"]);
        let [updated, cancelled] = page.upserts.as_slice() else { panic!("two events") };
        assert_eq!(updated.id, "ev-timed");
        assert_eq!(cancelled.id, "ev-weekly_20260519T070000Z");
        let Columns::Event { status, series_id, kind, starts_at, .. } = &cancelled.columns else {
            panic!()
        };
        assert_eq!(status, "cancelled");
        assert_eq!(kind, "exception");
        assert_eq!(series_id.as_deref(), Some("ev-weekly"));
        assert_eq!(*starts_at, Some(datetime!(2026-05-19 07:00 UTC)));
        assert_eq!(cancelled.personal.len(), 1, "only raw");
    }

    #[test]
    fn a_cancelled_exception_of_a_deleted_series_is_removed_too() {
        let body = br#"{"items": [
            {"id": "m", "status": "cancelled"},
            {"id": "m_20260101", "status": "cancelled", "recurringEventId": "m"}
        ], "nextSyncToken": "s"}"#;
        let (page, _) = parse_events(body).expect("the page parses");
        assert_eq!(page.removals, ["m", "m_20260101"]);
        assert!(page.upserts.is_empty());
    }

    #[test]
    fn a_missing_items_list_is_an_empty_page() {
        let (page, _) = parse_events(br#"{"nextSyncToken": "s"}"#).expect("the page parses");
        assert!(page.upserts.is_empty() && page.removals.is_empty());
    }

    #[test]
    fn an_unknown_status_spoils_the_whole_page_without_naming_the_value() {
        let body = br#"{"items": [{"id": "a"}, {"id": "b", "status": "postponed"}]}"#;
        let Err(FetchError::Malformed { what, reason }) = parse_events(body) else {
            panic!("expected Malformed")
        };
        assert_eq!(what, EVENTS_WHAT);
        assert!(reason.contains("items[1]") && reason.contains("status"), "{reason}");
        assert!(!reason.contains("postponed"));
    }

    #[test]
    fn the_last_page_without_a_sync_token_is_malformed() {
        let round = Round::from_cursor(&Cursor::Start).expect("a readable cursor");
        let (_, tokens) = parse_events(br#"{"items": []}"#).expect("the page parses");
        assert!(matches!(round.next(EVENTS_WHAT, tokens), Err(FetchError::Malformed { .. })));
    }

    #[test]
    fn an_unreadable_continuation_restarts_the_round() {
        let cursor = Cursor::Page { continuation: "garbage".into(), full: false };
        assert!(matches!(Round::from_cursor(&cursor), Err(FetchError::ResyncRequired { .. })));
    }

    #[test]
    fn calendar_lists_give_one_stream_per_calendar() {
        let list: CalendarList = fetch::parse(
            LIST_WHAT,
            "",
            include_bytes!("../tests/fixtures/google-calendar-list.json"),
        )
        .expect("the list parses");
        let ids: Vec<_> = list.items.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(ids, ["me@example.test", "team#shared@group.calendar.example"]);
        assert!(list.next_page_token.is_none());
    }
}
