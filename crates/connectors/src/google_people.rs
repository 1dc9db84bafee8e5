//! Google People API v1: `people.connections.list` on `people/me`.
//!
//! Every request of a lineage carries the same `personFields`, `pageSize=1000` and
//! `requestSyncToken=true`, as Google requires for page and sync tokens; the last page of a
//! round carries `nextSyncToken`. An incremental round sends `syncToken`; a contact deleted
//! since comes back with `metadata.deleted` and is a removal. An answer without `connections`
//! (Google leaves empty lists out) is an empty page.
//!
//! Sync tokens expire seven days after the full sync. Google says so with the `ErrorInfo`
//! reason `EXPIRED_SYNC_TOKEN`, observed with 400 and documented with 410: either is
//! [`FetchError::ResyncRequired`].

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

use crate::fetch::{self, FetchError, Get, Refusal, TokenSource};
use crate::google_calendar::{Round, Tokens};
use crate::wire::{self, RawItems};
use crate::{Columns, Cursor, Next, Options, Page, Record};

const WHAT: &str = "contacts GET /v1/people/me/connections";

/// The fields read: everything the contacts table seals (the raw JSON keeps those without a
/// field of their own), and `metadata` for deletions.
const PERSON_FIELDS: &str = "names,nicknames,emailAddresses,phoneNumbers,addresses,birthdays,\
                             biographies,organizations,memberships,urls,relations,metadata";

/// The page of contacts that `cursor` calls for.
pub(crate) async fn fetch<T: TokenSource>(
    tokens: &T,
    base: &Url,
    options: &Options,
    cursor: &Cursor,
) -> Result<Page, FetchError> {
    let round = Round::from_cursor(cursor)?;

    let mut url = fetch::endpoint(base, &["v1", "people", "me", "connections"]);
    url.query_pairs_mut()
        .append_pair("personFields", PERSON_FIELDS)
        .append_pair("pageSize", "1000")
        .append_pair("requestSyncToken", "true");
    round.append(&mut url, "syncToken");
    let request = Get { what: WHAT, url, prefer: None };
    let body = fetch::get(tokens, &options.retry, &request, resync).await?;

    let (mut page, tokens) = parse_connections(&body)?;
    page.next = round.next(WHAT, tokens)?;
    Ok(page)
}

fn resync(refusal: &Refusal) -> Option<String> {
    (matches!(refusal.status, 400 | 410) && refusal.has_code("EXPIRED_SYNC_TOKEN"))
        .then(|| "EXPIRED_SYNC_TOKEN".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionsPage {
    #[serde(default)]
    connections: RawItems,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Person {
    resource_name: String,
    #[serde(default)]
    metadata: PersonMetadata,
    names: Option<Box<RawValue>>,
    email_addresses: Option<Box<RawValue>>,
    phone_numbers: Option<Box<RawValue>>,
    addresses: Option<Box<RawValue>>,
    birthdays: Option<Box<RawValue>>,
    biographies: Option<Box<RawValue>>,
    organizations: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersonMetadata {
    #[serde(default)]
    deleted: bool,
    /// Read only to be checked: a value People does not document means the answer is not
    /// what this connector understands.
    #[serde(default, rename = "objectType")]
    _object_type: Option<ObjectType>,
    #[serde(default)]
    sources: Vec<Source>,
}

/// The kinds of person People documents.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum ObjectType {
    #[serde(rename = "OBJECT_TYPE_UNSPECIFIED")]
    Unspecified,
    Person,
    Page,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(default, deserialize_with = "wire::rfc3339")]
    update_time: Option<OffsetDateTime>,
}

fn parse_connections(body: &[u8]) -> Result<(Page, Tokens), FetchError> {
    let page: ConnectionsPage = fetch::parse(WHAT, "", body)?;

    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    for (index, raw) in page.connections.iter().enumerate() {
        let prefix = format!("connections[{index}]");
        let person: Person = fetch::parse(WHAT, &prefix, raw.get().as_bytes())?;
        if person.metadata.deleted {
            removals.push(person.resource_name);
        } else {
            upserts.push(record(person, raw));
        }
    }

    let tokens =
        Tokens { next_page_token: page.next_page_token, next_sync_token: page.next_sync_token };
    Ok((Page { upserts, removals, next: Next::Done { sync_token: None, full: false } }, tokens))
}

fn record(person: Person, raw: &RawValue) -> Record {
    // A contact merges several sources; it changed when the latest of them did.
    let updated_at = person.metadata.sources.iter().filter_map(|s| s.update_time).max();
    let fields = [
        ("names", person.names),
        ("emails", person.email_addresses),
        ("phones", person.phone_numbers),
        ("addresses", person.addresses),
        ("birthday", person.birthdays),
        ("notes", person.biographies),
        ("organizations", person.organizations),
    ];
    let mut personal: Vec<_> = fields
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?.get().to_owned())))
        .collect();
    personal.push(("raw", raw.get().to_owned()));

    Record { id: person.resource_name, updated_at, columns: Columns::Contact, personal }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn parse(body: &[u8], cursor: &Cursor) -> Page {
        let (mut page, tokens) = parse_connections(body).expect("the page parses");
        page.next = Round::from_cursor(cursor)
            .expect("a readable cursor")
            .next(WHAT, tokens)
            .expect("a next step");
        page
    }

    #[test]
    fn a_full_round_reads_contacts_page_by_page() {
        let first =
            parse(include_bytes!("../tests/fixtures/google-people-full-1.json"), &Cursor::Start);
        let Next::More(cursor) = &first.next else { panic!("another page: {:?}", first.next) };
        let [ada] = first.upserts.as_slice() else { panic!("one contact") };
        assert_eq!(ada.id, "people/c101");
        assert_eq!(ada.columns, Columns::Contact);
        assert_eq!(ada.updated_at, Some(datetime!(2026-03-02 10:00:00.25 UTC)));
        let names: Vec<_> = ada.personal.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["names", "emails", "phones", "birthday", "notes", "organizations", "raw"]
        );
        assert!(ada.personal[0].1.contains("Ada Sample"));

        let last = parse(include_bytes!("../tests/fixtures/google-people-full-2.json"), cursor);
        assert_eq!(last.next, Next::Done { sync_token: Some("people-sync-1".into()), full: true });
        assert_eq!(last.upserts.len(), 1);
    }

    #[test]
    fn deleted_contacts_are_removals() {
        let page = parse(
            include_bytes!("../tests/fixtures/google-people-incremental.json"),
            &Cursor::Synced("people-sync-1".into()),
        );
        assert_eq!(page.removals, ["people/c202"]);
        assert_eq!(page.upserts.len(), 1);
        assert_eq!(page.next, Next::Done { sync_token: Some("people-sync-2".into()), full: false });
    }

    #[test]
    fn an_answer_without_connections_is_an_empty_page() {
        let page = parse(br#"{"nextSyncToken": "people-sync-3"}"#, &Cursor::Synced("x".into()));
        assert!(page.upserts.is_empty() && page.removals.is_empty());
        assert_eq!(page.next, Next::Done { sync_token: Some("people-sync-3".into()), full: false });
    }

    #[test]
    fn a_person_without_resource_name_is_malformed() {
        let body = br#"{"connections": [{"etag": "e", "names": []}], "nextSyncToken": "s"}"#;
        let Err(FetchError::Malformed { reason, .. }) = parse_connections(body) else {
            panic!("expected Malformed")
        };
        assert_eq!(reason, "missing field `resourceName` at connections[0]");
    }

    #[test]
    fn only_the_expired_sync_token_reason_asks_for_a_resync() {
        let expired = |status| Refusal { status, codes: vec!["EXPIRED_SYNC_TOKEN".into()] };
        assert!(resync(&expired(400)).is_some());
        assert!(resync(&expired(410)).is_some());
        let other = Refusal { status: 400, codes: vec!["INVALID_ARGUMENT".into()] };
        assert!(resync(&other).is_none());
    }
}
