//! Google People v1: `people/me/connections`.
//!
//! `personFields` is required; `pageSize` defaults to 100 and may not pass 1000; a page token
//! must come back with the same parameters as the first page; the last page carries
//! `nextSyncToken` only when `requestSyncToken=true` was asked. With `syncToken`, the answer
//! lists the contacts changed since, deleted ones as `metadata.deleted` tombstones, and an
//! unchanged collection answers with the next token alone. A dead token is answered the way
//! the API answers an expired one: 400 `FAILED_PRECONDITION` with `EXPIRED_SYNC_TOKEN`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde_json::{Map, Value, json};

use super::seed::{self, ANCHOR, Rng};
use super::token::{Kind as TokenKind, Token};
use super::{Answer, Data, Dataset, Position, Record, Request, Snap, page};

const SALT: u64 = 200;
const RESOURCE_BASE: u64 = 3_000_000_000_000_000_000;

/// The fields a person has here, in the order Google lists them.
const FIELDS: &[&str] = &[
    "names",
    "nicknames",
    "emailAddresses",
    "phoneNumbers",
    "birthdays",
    "organizations",
    "memberships",
];

pub(super) fn resource_name(ordinal: u64) -> String {
    format!("people/c{}", RESOURCE_BASE + ordinal)
}

pub(super) fn ordinal_of(id: &str) -> Option<u64> {
    id.strip_prefix("people/c")?.parse::<u64>().ok()?.checked_sub(RESOURCE_BASE)
}

/// Every field of revision `revision` of contact `ordinal`, with its metadata.
fn person(seed_value: u64, ordinal: u64, revision: u32, at_ms: Option<i64>) -> Map<String, Value> {
    let mut first = Rng::new(seed_value, SALT, ordinal, 0);
    let given = first.pick(seed::GIVEN_NAMES);
    let family = first.pick(seed::FAMILY_NAMES);
    let source_id = first.hex(16);
    let mut rng = Rng::new(seed_value, SALT, ordinal, revision);
    let updated = match at_ms {
        Some(ms) => seed::from_unix_ms(ms),
        None => ANCHOR - time::Duration::seconds(rng.between(86_400, 86_400 * 700)),
    };
    let source = json!({ "type": "CONTACT", "id": source_id });
    let field_meta = |primary: bool| {
        let mut meta = json!({ "source": source });
        if primary {
            meta["primary"] = json!(true);
        }
        meta
    };

    let mut person = Map::new();
    person.insert("resourceName".into(), json!(resource_name(ordinal)));
    person.insert("etag".into(), json!(etag(ordinal, revision)));
    person.insert(
        "metadata".into(),
        json!({
            "sources": [{
                "type": "CONTACT",
                "id": source_id,
                "etag": format!("#{}", STANDARD_NO_PAD.encode(format!("{ordinal}:{revision}"))),
                "updateTime": seed::rfc3339_millis(updated),
            }],
            "objectType": "PERSON",
        }),
    );
    let mut name = json!({
        "metadata": { "primary": true, "source": source, "sourcePrimary": true },
        "displayName": format!("{given} {family}"),
        "familyName": family,
        "givenName": given,
        "displayNameLastFirst": format!("{family}, {given}"),
        "unstructuredName": format!("{given} {family}"),
    });
    if revision > 0 {
        name["middleName"] = json!(format!("R{revision}"));
        name["displayName"] = json!(format!("{given} R{revision} {family}"));
    }
    person.insert("names".into(), json!([name]));
    if rng.chance(25) || revision > 0 {
        let nickname = format!("{} ✨{revision}", rng.pick(seed::MUSIC_WORDS));
        person.insert(
            "nicknames".into(),
            json!([{ "metadata": field_meta(true), "value": nickname }]),
        );
    }
    let handle = seed::ascii_handle(given);
    let emails: Vec<Value> = (0..rng.between(1, 3))
        .map(|i| {
            let (kind, formatted, domain) = [
                ("home", "Home", "example.com"),
                ("work", "Work", "example.org"),
                ("other", "Other", "mail.example.net"),
            ][usize::try_from(i).unwrap_or(0)];
            json!({
                "metadata": field_meta(i == 0),
                "value": format!("{handle}.{ordinal}@{domain}"),
                "type": kind,
                "formattedType": formatted,
            })
        })
        .collect();
    person.insert("emailAddresses".into(), Value::Array(emails));
    let phones: Vec<Value> = (0..rng.between(1, 2))
        .map(|i| {
            let (country, spaced) = [("+31", "6"), ("+46", "70"), ("+81", "90"), ("+55", "11")]
                [usize::try_from(rng.below(4)).unwrap_or(0)];
            let (a, b) = (rng.between(1000, 9999), rng.between(1000, 9999));
            let (kind, formatted) = if i == 0 { ("mobile", "Mobile") } else { ("work", "Work") };
            json!({
                "metadata": field_meta(i == 0),
                "value": format!("{country} {spaced} {a} {b}"),
                "canonicalForm": format!("{country}{spaced}{a}{b}"),
                "type": kind,
                "formattedType": formatted,
            })
        })
        .collect();
    person.insert("phoneNumbers".into(), Value::Array(phones));
    if rng.chance(40) {
        let mut date = json!({ "month": rng.between(1, 12), "day": rng.between(1, 28) });
        if rng.chance(50) {
            date["year"] = json!(rng.between(1950, 2010));
        }
        person.insert("birthdays".into(), json!([{ "metadata": field_meta(true), "date": date }]));
    }
    if rng.chance(50) {
        let title = rng.pick(&["Ingenjör", "Directrice", "エンジニア", "Product Owner", "Médica"]);
        person.insert(
            "organizations".into(),
            json!([{ "metadata": field_meta(true), "name": rng.pick(seed::COMPANIES), "title": title }]),
        );
    }
    person.insert(
        "memberships".into(),
        json!([{
            "metadata": { "source": source },
            "contactGroupMembership": {
                "contactGroupId": "myContacts",
                "contactGroupResourceName": "contactGroups/myContacts",
            },
        }]),
    );
    person
}

fn etag(ordinal: u64, revision: u32) -> String {
    format!("%Eg{}", STANDARD_NO_PAD.encode(format!("sbx/{ordinal}/{revision}")))
}

/// The person as `personFields` asks for it; a deleted one as a tombstone.
fn rows(data: &Data, ordinal: u64, snap: Snap, fields: &[&str], deleted: bool) -> Vec<Value> {
    match snap {
        Snap::Absent => Vec::new(),
        Snap::Deleted { revision, at_ms } => {
            if !deleted {
                return Vec::new();
            }
            let full = person(data.population.seed, ordinal, revision + 1, Some(at_ms));
            let mut metadata = full.get("metadata").cloned().unwrap_or_default();
            metadata["deleted"] = json!(true);
            vec![json!({
                "resourceName": resource_name(ordinal),
                "etag": etag(ordinal, revision + 1),
                "metadata": metadata,
            })]
        }
        Snap::Live { revision, at_ms } => {
            let mut full = person(data.population.seed, ordinal, revision, at_ms);
            full.retain(|key, _| {
                key == "resourceName" || key == "etag" || fields.contains(&key.as_str())
            });
            vec![Value::Object(full)]
        }
    }
}

/// `people.connections.list`.
pub(super) fn connections(data: &mut Data, request: &Request) -> Answer {
    let Some(person_fields) = request.param("personFields").filter(|f| !f.is_empty()) else {
        let message = "personFields mask is required. Please specify one or more valid paths. Valid paths are documented at https://developers.google.com/people/api/rest/v1/people.connections/list.";
        return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
    };
    let fields: Vec<&str> = person_fields.split(',').map(str::trim).collect();
    let page_size = match request.param("pageSize").map(str::parse::<i64>) {
        None | Some(Ok(0)) => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => usize::try_from(n).unwrap_or(100),
        Some(_) => {
            let message = "Invalid pageSize: it must be between 1 and 1000.";
            return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
        }
    };
    let wants_token = request.param("requestSyncToken") == Some("true");
    let lineage = request.params_hash_of(&["personFields", "sources", "sources[]"]);
    let epoch = data.epoch(Dataset::GoogleContacts);

    let (since, at, from) = if let Some(text) = request.param("pageToken") {
        let token = Token::decode(data.key(), text)
            .filter(|t| t.kind == TokenKind::Page && t.dataset == Dataset::GoogleContacts);
        let Some(token) = token else {
            let message = "Page token is not valid.";
            return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
        };
        if token.params != request.params_hash(&["pageToken"]) {
            let message = "Parameters provided to connections.list must match the call that provided the page token.";
            return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
        }
        if token.since.is_some() && token.epoch != epoch {
            return Err(expired());
        }
        (token.since, token.at, token.position)
    } else if let Some(text) = request.param("syncToken") {
        let token = Token::decode(data.key(), text)
            .filter(|t| t.kind == TokenKind::Sync && t.dataset == Dataset::GoogleContacts);
        let Some(token) = token else {
            let message = "Sync token is not valid.";
            return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
        };
        if token.epoch != epoch {
            return Err(expired());
        }
        if token.params != lineage {
            let message =
                "Parameters provided with a sync token must match the call that provided it.";
            return Err(error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None));
        }
        (Some(token.at), data.seq, Position::default())
    } else {
        (None, data.seq, Position::default())
    };

    let incremental = since.is_some();
    let (items, next) = if request.empty_page {
        (Vec::new(), Some(from))
    } else {
        page(&data.contacts, since, at, from, page_size, |ordinal, snap| {
            rows(data, ordinal, snap, &fields, incremental)
        })
    };

    let mut body = Map::new();
    if !items.is_empty() {
        let total = data.contacts.live_at(at);
        body.insert("connections".into(), Value::Array(items));
        body.insert("totalPeople".into(), json!(total));
        body.insert("totalItems".into(), json!(total));
    }
    match next {
        Some(position) => {
            let params = request.params_hash(&["pageToken"]);
            let token = Token {
                kind: TokenKind::Page,
                dataset: Dataset::GoogleContacts,
                scope: 0,
                epoch,
                since,
                at,
                position,
                params,
                window: None,
            };
            body.insert("nextPageToken".into(), json!(token.encode(data.key())));
        }
        None if wants_token => {
            let token = Token {
                kind: TokenKind::Sync,
                dataset: Dataset::GoogleContacts,
                scope: 0,
                epoch,
                since: None,
                at,
                position: Position::default(),
                params: lineage,
                window: None,
            };
            body.insert("nextSyncToken".into(), json!(token.encode(data.key())));
        }
        None => {}
    }
    if incremental {
        data.served_incremental(Dataset::GoogleContacts);
    }
    Ok((Value::Object(body), Vec::new()))
}

/// Every live contact with every field.
pub(super) fn truth(data: &Data) -> Vec<Record> {
    let (rows, _) =
        page(&data.contacts, None, data.seq, Position::default(), usize::MAX, |o, s| {
            rows(
                data,
                o,
                s,
                FIELDS.iter().copied().chain(["metadata"]).collect::<Vec<_>>().as_slice(),
                false,
            )
        });
    rows.into_iter()
        .map(|json| Record {
            id: json["resourceName"].as_str().unwrap_or_default().to_owned(),
            calendar: None,
            json,
        })
        .collect()
}

/// The AIP-193 error envelope, with an `ErrorInfo` when there is a reason.
fn error(status: StatusCode, message: &str, code: &str, reason: Option<&str>) -> Response {
    let mut error = json!({ "code": status.as_u16(), "message": message, "status": code });
    if let Some(reason) = reason {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "people.googleapis.com",
        }]);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// The answer to an expired sync token, in the form captured from the API [observed]; the
/// reason is what clients should key on.
fn expired() -> Response {
    let message = "Sync token is expired. Clear local cache and retry call without the sync token.";
    error(StatusCode::BAD_REQUEST, message, "FAILED_PRECONDITION", Some("EXPIRED_SYNC_TOKEN"))
}

/// The per-user read quota's 429.
pub(super) fn quota_error() -> Value {
    json!({
        "error": {
            "code": 429,
            "message": "Quota exceeded for quota metric 'Critical read requests (Contact and Profile Reads)' and limit 'Critical read requests (Contact and Profile Reads) per minute per user' of service 'people.googleapis.com' for consumer 'project_number:000000000000'.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": { "service": "people.googleapis.com", "consumer": "projects/000000000000" },
            }],
        },
    })
}
