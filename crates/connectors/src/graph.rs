//! Microsoft Graph v1.0: `calendarView/delta` and `contacts/delta` of `/me`.
//!
//! A full round starts at `/me/calendarView/delta` with a window (`startDateTime`,
//! `endDateTime`: [`Options::graph_window_past`] and [`Options::graph_window_future`] around
//! the day the round starts) or at `/me/contacts/delta`, then follows `@odata.nextLink` until
//! a page carries `@odata.deltaLink`; the next round starts from that link. Graph encodes the
//! whole query, window included, in both links, so they are stored and followed verbatim, and
//! the window stays fixed for the lineage. A link is followed only when it points below the
//! configured API base: the bearer token goes nowhere else. A stored link that does not (the
//! base was reconfigured) starts a full round at the new base.
//!
//! Items with `@removed` are removals. Calendar items are series masters, lightweight
//! occurrences (id, series, start and end only), exceptions and single instances; times come
//! as wall-clock `dateTime` with a `timeZone`, UTC unless a `Prefer: outlook.timezone` asks
//! otherwise, which Datapunk never sends.
//!
//! Graph says a delta token is gone with 410, or with the codes `syncStateNotFound` (spelled
//! `SyncStateNotFound` on the wire) or `resyncRequired`: [`FetchError::ResyncRequired`]. A
//! token it cannot parse is 400 `BadRequest` "Badly formed token", a refusal like any other
//! 400: the link came from Graph itself, so starting over would not make it parse.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::{OffsetDateTime, PrimitiveDateTime};
use url::Url;

use crate::fetch::{self, FetchError, Get, Refusal, TokenSource};
use crate::wire::{self, RawItems};
use crate::{Columns, Cursor, Next, Options, Page, Record};

/// The collection a Graph connector reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collection {
    /// `/me/calendarView/delta`.
    Calendar,
    /// `/me/contacts/delta`, the default contacts folder.
    Contacts,
}

impl Collection {
    fn what(self) -> &'static str {
        match self {
            Self::Calendar => "calendar GET /me/calendarView/delta",
            Self::Contacts => "contacts GET /me/contacts/delta",
        }
    }
}

/// The page of `collection` that `cursor` calls for.
pub(crate) async fn fetch<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
    collection: Collection,
    cursor: &Cursor,
) -> Result<Page, FetchError> {
    let (url, full) = match cursor {
        Cursor::Start => (initial(base, options, collection, OffsetDateTime::now_utc()), true),
        Cursor::Page { continuation, full } => (stored_link(base, continuation)?, *full),
        Cursor::Synced(delta_link) => (stored_link(base, delta_link)?, false),
    };
    let prefer = format!("odata.maxpagesize={}", options.graph_page_size.max(1));
    let request = Get { what: collection.what(), url, prefer: Some(prefer) };
    let body = fetch::get(tokens, &options.retry, &request, resync).await?;

    parse_page(base, collection, full, &body)
}

/// The first request of a full round, its window counted from the start of today (UTC).
fn initial(base: &Url, options: &Options, collection: Collection, now: OffsetDateTime) -> Url {
    match collection {
        Collection::Contacts => fetch::endpoint(base, &["me", "contacts", "delta"]),
        Collection::Calendar => {
            let today = now.date().midnight().assume_utc();
            let day = |at: OffsetDateTime| format!("{}T00:00:00Z", at.date());
            let mut url = fetch::endpoint(base, &["me", "calendarView", "delta"]);
            url.query_pairs_mut()
                .append_pair("startDateTime", &day(today - options.graph_window_past))
                .append_pair("endDateTime", &day(today + options.graph_window_future));
            url
        }
    }
}

fn stored_link(base: &Url, link: &str) -> Result<Url, FetchError> {
    Url::parse(link).ok().filter(|url| fetch::within(base, url)).ok_or_else(|| {
        FetchError::ResyncRequired { reason: "the stored link is not below the API base".into() }
    })
}

fn resync(refusal: &Refusal) -> Option<String> {
    let code = ["syncStateNotFound", "resyncRequired"].into_iter().find(|c| refusal.has_code(c));
    match (refusal.status, code) {
        (_, Some(code)) => Some(code.to_owned()),
        (410, None) => Some(refusal.codes.first().cloned().unwrap_or_else(|| "gone".to_owned())),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: RawItems,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// What every item has: its id, and `@removed` when it is gone.
#[derive(Debug, Deserialize)]
struct Head {
    id: String,
    #[serde(rename = "@removed")]
    removed: Option<Removed>,
}

/// Why an item left the collection: deleted, or moved out of the window or folder. Either
/// way it is gone from what is synced; a reason Graph does not document is not understood.
#[derive(Debug, Deserialize)]
struct Removed {
    #[serde(rename = "reason")]
    _reason: RemovedReason,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum RemovedReason {
    Deleted,
    Changed,
}

fn parse_page(
    base: &Url,
    collection: Collection,
    full: bool,
    body: &[u8],
) -> Result<Page, FetchError> {
    let what = collection.what();
    let page: DeltaPage = fetch::parse(what, "", body)?;

    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    for (index, raw) in page.value.iter().enumerate() {
        let prefix = format!("value[{index}]");
        let json = raw.get().as_bytes();
        let head: Head = fetch::parse(what, &prefix, json)?;
        if head.removed.is_some() {
            removals.push(head.id);
            continue;
        }
        upserts.push(match collection {
            Collection::Calendar => event(fetch::parse(what, &prefix, json)?, raw, &prefix)?,
            Collection::Contacts => contact(fetch::parse(what, &prefix, json)?, raw),
        });
    }

    let next = match (page.next_link, page.delta_link) {
        (Some(link), None) => {
            Next::More(Cursor::Page { continuation: link_from(base, what, link)?, full })
        }
        (None, Some(link)) => Next::Done { sync_token: Some(link_from(base, what, link)?), full },
        (Some(_), Some(_)) => return Err(fetch::malformed(what, "both a next and a delta link")),
        (None, None) => return Err(fetch::malformed(what, "neither a next nor a delta link")),
    };
    Ok(Page { upserts, removals, next })
}

/// A link from an answer, kept only if it may be followed with the token.
fn link_from(base: &Url, what: &str, link: String) -> Result<String, FetchError> {
    match Url::parse(&link) {
        Ok(url) if fetch::within(base, &url) => Ok(link),
        _ => Err(fetch::malformed(what, "a link that is not below the API base")),
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum EventType {
    SingleInstance,
    Occurrence,
    Exception,
    SeriesMaster,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: EventType,
    series_master_id: Option<String>,
    start: Option<GraphTime>,
    end: Option<GraphTime>,
    #[serde(default)]
    is_all_day: bool,
    #[serde(default)]
    is_cancelled: bool,
    #[serde(default, deserialize_with = "wire::rfc3339")]
    last_modified_date_time: Option<OffsetDateTime>,
    subject: Option<String>,
    body: Option<ItemBody>,
    location: Option<Location>,
    organizer: Option<Box<RawValue>>,
    attendees: Option<Box<RawValue>>,
    recurrence: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphTime {
    #[serde(deserialize_with = "wire::wall_clock")]
    date_time: PrimitiveDateTime,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    display_name: Option<String>,
}

fn utc(time: Option<&GraphTime>, place: String) -> Result<Option<OffsetDateTime>, FetchError> {
    let Some(time) = time else { return Ok(None) };
    match time.time_zone.as_deref() {
        None | Some("UTC" | "Etc/UTC") => Ok(Some(time.date_time.assume_utc())),
        Some(_) => Err(fetch::malformed(
            Collection::Calendar.what(),
            format!("a time zone other than UTC at {place}.timeZone"),
        )),
    }
}

fn event(event: Event, raw: &RawValue, prefix: &str) -> Result<Record, FetchError> {
    let kind = match event.kind {
        EventType::SingleInstance => "single",
        EventType::Occurrence => "occurrence",
        EventType::Exception => "exception",
        EventType::SeriesMaster => "master",
    };
    let status = if event.is_cancelled { "cancelled" } else { "confirmed" };
    let columns = Columns::Event {
        starts_at: utc(event.start.as_ref(), format!("{prefix}.start"))?,
        ends_at: utc(event.end.as_ref(), format!("{prefix}.end"))?,
        all_day: event.is_all_day,
        status: status.to_owned(),
        series_id: event.series_master_id,
        kind: kind.to_owned(),
    };

    let non_empty = |text: Option<String>| text.filter(|text| !text.is_empty());
    let json = |value: Option<Box<RawValue>>| {
        value.map(|v| v.get().to_owned()).filter(|text| text != "[]" && text != "{}")
    };
    let fields = [
        ("summary", non_empty(event.subject)),
        ("description", non_empty(event.body.and_then(|body| body.content))),
        ("location", non_empty(event.location.and_then(|location| location.display_name))),
        ("organizer", json(event.organizer)),
        ("attendees", json(event.attendees)),
        ("recurrence", json(event.recurrence)),
    ];
    let mut personal: Vec<_> =
        fields.into_iter().filter_map(|(name, text)| Some((name, text?))).collect();
    personal.push(("raw", raw.get().to_owned()));

    Ok(Record { id: event.id, updated_at: event.last_modified_date_time, columns, personal })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contact {
    id: String,
    #[serde(default, deserialize_with = "wire::rfc3339")]
    last_modified_date_time: Option<OffsetDateTime>,
    display_name: Option<String>,
    given_name: Option<String>,
    middle_name: Option<String>,
    surname: Option<String>,
    nick_name: Option<String>,
    email_addresses: Option<Value>,
    business_phones: Option<Vec<String>>,
    home_phones: Option<Vec<String>>,
    mobile_phone: Option<String>,
    home_address: Option<Value>,
    business_address: Option<Value>,
    other_address: Option<Value>,
    birthday: Option<String>,
    personal_notes: Option<String>,
    company_name: Option<String>,
    job_title: Option<String>,
    department: Option<String>,
}

fn contact(contact: Contact, raw: &RawValue) -> Record {
    let text = |text: Option<String>| text.map_or(Value::Null, Value::String);
    let phones = |list: Option<Vec<String>>| {
        list.map_or(Value::Null, |list| list.into_iter().map(Value::String).collect())
    };
    let fields = [
        (
            "names",
            group([
                ("displayName", text(contact.display_name)),
                ("givenName", text(contact.given_name)),
                ("middleName", text(contact.middle_name)),
                ("surname", text(contact.surname)),
                ("nickName", text(contact.nick_name)),
            ]),
        ),
        ("emails", contact.email_addresses.filter(|v| !is_empty(v)).map(|v| v.to_string())),
        (
            "phones",
            group([
                ("mobilePhone", text(contact.mobile_phone)),
                ("businessPhones", phones(contact.business_phones)),
                ("homePhones", phones(contact.home_phones)),
            ]),
        ),
        (
            "addresses",
            group([
                ("homeAddress", contact.home_address.unwrap_or_default()),
                ("businessAddress", contact.business_address.unwrap_or_default()),
                ("otherAddress", contact.other_address.unwrap_or_default()),
            ]),
        ),
        ("birthday", contact.birthday.filter(|text| !text.is_empty())),
        ("notes", contact.personal_notes.filter(|text| !text.is_empty())),
        (
            "organizations",
            group([
                ("companyName", text(contact.company_name)),
                ("jobTitle", text(contact.job_title)),
                ("department", text(contact.department)),
            ]),
        ),
    ];
    let mut personal: Vec<_> =
        fields.into_iter().filter_map(|(name, text)| Some((name, text?))).collect();
    personal.push(("raw", raw.get().to_owned()));

    Record {
        id: contact.id,
        updated_at: contact.last_modified_date_time,
        columns: Columns::Contact,
        personal,
    }
}

/// Graph leaves unset strings `null` or `""` and unset addresses `{}`.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(members) => members.values().all(is_empty),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The set members of a group of contact fields as one JSON object, or nothing when none is.
fn group<const N: usize>(members: [(&str, Value); N]) -> Option<String> {
    let members: Map<String, Value> = members
        .into_iter()
        .filter(|(_, value)| !is_empty(value))
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    (!members.is_empty()).then(|| Value::Object(members).to_string())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const BASE: &str = "https://graph.example/v1.0";

    fn base() -> Url {
        Url::parse(BASE).expect("a URL")
    }

    fn personal<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        record.personal.iter().find(|(n, _)| *n == name).map(|(_, text)| text.as_str())
    }

    #[test]
    fn a_full_calendar_round_has_masters_occurrences_exceptions_and_a_delta_link() {
        let first = parse_page(
            &base(),
            Collection::Calendar,
            true,
            include_bytes!("../tests/fixtures/graph-calendar-initial-1.json"),
        )
        .expect("the page parses");
        let Next::More(Cursor::Page { continuation, full: true }) = &first.next else {
            panic!("another page: {:?}", first.next)
        };
        assert_eq!(continuation, "https://graph.example/v1.0/me/calendarView/delta?$skiptoken=s1");
        let [master, occurrence] = first.upserts.as_slice() else { panic!("two events") };
        assert_eq!(
            master.columns,
            Columns::Event {
                starts_at: Some(datetime!(2026-06-01 08:00 UTC)),
                ends_at: Some(datetime!(2026-06-01 08:15 UTC)),
                all_day: false,
                status: "confirmed".into(),
                series_id: None,
                kind: "master".into(),
            }
        );
        assert_eq!(master.updated_at, Some(datetime!(2026-05-20 10:00:00.1234567 UTC)));
        assert_eq!(personal(master, "summary"), Some("Daily check-in"));
        assert!(personal(master, "recurrence").expect("recurrence").contains("daily"));
        assert_eq!(personal(master, "location"), None, "an empty location is left out");
        let Columns::Event { kind, series_id, .. } = &occurrence.columns else { panic!() };
        assert_eq!((kind.as_str(), series_id.as_deref()), ("occurrence", Some("m-1")));
        assert_eq!(occurrence.personal.len(), 1, "only raw");

        let last = parse_page(
            &base(),
            Collection::Calendar,
            true,
            include_bytes!("../tests/fixtures/graph-calendar-initial-2.json"),
        )
        .expect("the page parses");
        let delta = "https://graph.example/v1.0/me/calendarView/delta?$deltatoken=d1";
        assert_eq!(last.next, Next::Done { sync_token: Some(delta.into()), full: true });
        let [exception, all_day] = last.upserts.as_slice() else { panic!("two events") };
        let Columns::Event { kind, status, .. } = &exception.columns else { panic!() };
        assert_eq!((kind.as_str(), status.as_str()), ("exception", "cancelled"));
        let Columns::Event { all_day, starts_at, .. } = &all_day.columns else { panic!() };
        assert!(*all_day);
        assert_eq!(*starts_at, Some(datetime!(2026-06-10 00:00 UTC)));
    }

    #[test]
    fn removed_items_are_removals_and_an_empty_page_may_carry_a_next_link() {
        let page = parse_page(
            &base(),
            Collection::Calendar,
            false,
            include_bytes!("../tests/fixtures/graph-calendar-incremental.json"),
        )
        .expect("the page parses");
        assert_eq!(page.removals, ["single-1"]);
        assert_eq!(page.upserts.len(), 1);
        assert!(matches!(page.next, Next::Done { full: false, .. }));

        let empty = br#"{"value": [], "@odata.nextLink": "https://graph.example/v1.0/me/calendarView/delta?$skiptoken=s2"}"#;
        let page = parse_page(&base(), Collection::Calendar, false, empty).expect("parses");
        assert!(page.upserts.is_empty() && matches!(page.next, Next::More(_)));
    }

    #[test]
    fn contacts_group_their_fields_and_leave_empty_ones_out() {
        let page = parse_page(
            &base(),
            Collection::Contacts,
            true,
            include_bytes!("../tests/fixtures/graph-contacts.json"),
        )
        .expect("the page parses");
        assert_eq!(page.removals, ["c-3"]);
        let [full, sparse] = page.upserts.as_slice() else { panic!("two contacts") };
        assert_eq!(full.columns, Columns::Contact);
        let names: Vec<_> = full.personal.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["names", "emails", "phones", "addresses", "birthday", "notes", "organizations", "raw"]
        );
        assert_eq!(
            personal(full, "names"),
            Some(r#"{"displayName":"Cleo Test","givenName":"Cleo","surname":"Test"}"#)
        );
        assert_eq!(
            personal(full, "phones"),
            Some(r#"{"businessPhones":["+44 20 0000 0000"],"mobilePhone":"+44 7000 000000"}"#)
        );
        let names: Vec<_> = sparse.personal.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["names", "raw"]);
    }

    #[test]
    fn links_outside_the_api_base_are_refused() {
        let foreign = br#"{"value": [], "@odata.deltaLink": "https://elsewhere.example/v1.0/me/contacts/delta?$deltatoken=x"}"#;
        let error = parse_page(&base(), Collection::Contacts, false, foreign);
        assert!(matches!(error, Err(FetchError::Malformed { .. })), "{error:?}");

        let stored = stored_link(&base(), "https://elsewhere.example/v1.0/me/contacts/delta");
        assert!(matches!(stored, Err(FetchError::ResyncRequired { .. })), "{stored:?}");
    }

    #[test]
    fn unknown_event_types_and_other_time_zones_are_malformed() {
        let unknown = br#"{"value": [{"id": "x", "type": "somethingNew"}], "@odata.deltaLink": "https://graph.example/v1.0/d"}"#;
        let Err(FetchError::Malformed { reason, .. }) =
            parse_page(&base(), Collection::Calendar, false, unknown)
        else {
            panic!("expected Malformed")
        };
        assert_eq!(reason, "unexpected type or value at value[0].type");

        let zoned = br#"{"value": [{"id": "x", "type": "singleInstance", "start": {"dateTime": "2026-06-01T08:00:00.0000000", "timeZone": "Pacific Standard Time"}}], "@odata.deltaLink": "https://graph.example/v1.0/d"}"#;
        let Err(FetchError::Malformed { reason, .. }) =
            parse_page(&base(), Collection::Calendar, false, zoned)
        else {
            panic!("expected Malformed")
        };
        assert_eq!(reason, "a time zone other than UTC at value[0].start.timeZone");
    }

    #[test]
    fn the_window_reaches_a_year_back_and_two_ahead_from_today() {
        let url = initial(
            &base(),
            &Options::default(),
            Collection::Calendar,
            datetime!(2026-03-28 15:30 UTC),
        );
        assert_eq!(
            url.as_str(),
            "https://graph.example/v1.0/me/calendarView/delta\
             ?startDateTime=2025-03-28T00%3A00%3A00Z&endDateTime=2028-03-27T00%3A00%3A00Z"
        );
    }

    #[test]
    fn sync_state_codes_and_410_resync_but_a_badly_formed_token_does_not() {
        let refusal = |status, code: &str| Refusal { status, codes: vec![code.to_owned()] };
        assert!(resync(&refusal(410, "SyncStateNotFound")).is_some());
        assert!(resync(&refusal(400, "syncStateNotFound")).is_some());
        assert!(resync(&refusal(400, "resyncRequired")).is_some());
        assert!(resync(&refusal(410, "somethingElse")).is_some());
        assert!(resync(&refusal(400, "BadRequest")).is_none());
    }
}
