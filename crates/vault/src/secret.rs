//! Secret-bearing types.
//!
//! - [`SecretString`] and [`SecretBytes`] hold a secret that is wiped from memory when dropped
//!   and never formatted: their `Debug` and `Display` print [`REDACTED`].
//! - [`TokenRecord`] is what a secret store keeps for one integration's OAuth grant: both
//!   tokens, their absolute expiry and the granted scopes, written and read as one small JSON
//!   document so that a refresh changes all of them in one write.
//!
//! None of these types implements `serde::Serialize`: a secret leaves its wrapper only through a
//! call whose name says so ([`SecretString::expose_secret`], [`TokenRecord::to_json`]), so it
//! cannot end up in a log line or an API response by deriving a trait on a larger struct.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// What every secret-bearing type prints instead of its content.
pub const REDACTED: &str = "[REDACTED]";

/// A secret text, such as an OAuth token or a key's export passphrase.
///
/// The text is wiped when the value is dropped. `Debug` and `Display` print [`REDACTED`];
/// [`SecretString::expose_secret`] is the only way to read it. There is no `PartialEq`, so that
/// no one compares secrets in variable time by accident.
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `secret`, taking ownership so that the only copy is the one wiped on drop.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret itself. Call it only where the secret goes to its one legitimate
    /// destination: a secret store, an HTTP `Authorization` header, the user's terminal.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Secret bytes, such as a decrypted field or a record read from a secret store.
///
/// The bytes are wiped when the value is dropped. `Debug` and `Display` print [`REDACTED`];
/// [`SecretBytes::expose_secret`] is the only way to read them.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `secret`, taking ownership so that the only copy is the one wiped on drop.
    pub fn new(secret: Vec<u8>) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret itself; see [`SecretString::expose_secret`] for where it may go.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(secret: Vec<u8>) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The version [`TokenRecord::to_json`] writes and [`TokenRecord::from_json`] accepts.
const TOKEN_RECORD_VERSION: u32 = 1;

/// One integration's OAuth grant, as a secret store keeps it.
///
/// `Debug` shows the expiry and the scopes but prints [`REDACTED`] for both tokens; `Display`
/// prints only [`REDACTED`]. The stored form is a JSON document:
///
/// ```json
/// {"version":1,"access_token":"…","refresh_token":"…","expires_at":"2030-01-01T00:00:00Z",
///  "scopes":["…"]}
/// ```
///
/// `refresh_token` is `null` when the provider granted none; `expires_at` is RFC 3339.
#[derive(Clone)]
pub struct TokenRecord {
    /// The bearer token sent with each API call.
    pub access_token: SecretString,
    /// The token that gets a new access token, when the provider granted one.
    pub refresh_token: Option<SecretString>,
    /// When the access token stops working: an absolute time, so that a record read back
    /// later needs no "issued at" to make sense of it.
    pub expires_at: OffsetDateTime,
    /// The scopes the user granted, which may be fewer than those asked for.
    pub scopes: Vec<String>,
}

/// The JSON form of a [`TokenRecord`], borrowing its secrets.
#[derive(Serialize)]
struct TokenRecordOut<'a> {
    version: u32,
    access_token: &'a str,
    refresh_token: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    scopes: &'a [String],
}

/// The JSON form of a [`TokenRecord`] as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecordIn {
    version: u32,
    access_token: String,
    refresh_token: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    scopes: Vec<String>,
}

impl TokenRecord {
    /// The record as the JSON document described [above](TokenRecord), for a secret store to
    /// keep as one item. The document holds both tokens, hence the [`SecretString`].
    pub fn to_json(&self) -> SecretString {
        let out = TokenRecordOut {
            version: TOKEN_RECORD_VERSION,
            access_token: self.access_token.expose_secret(),
            refresh_token: self.refresh_token.as_ref().map(SecretString::expose_secret),
            expires_at: self.expires_at,
            scopes: &self.scopes,
        };
        // Reserving enough up front keeps the buffer from being reallocated, which would leave
        // an unwiped copy of the tokens in freed memory. Escaping at most doubles a token
        // written by a provider (they are printable ASCII); the rest is small.
        let secrets = out.access_token.len() + out.refresh_token.map_or(0, str::len);
        let scopes: usize = self.scopes.iter().map(|s| s.len() + 3).sum();
        let mut json = Zeroizing::new(Vec::with_capacity(256 + 2 * (secrets + scopes)));

        // Writing plain structs of strings into a Vec cannot fail.
        if serde_json::to_writer(&mut *json, &out).is_err() {
            unreachable!("serialising a token record into memory failed");
        }
        match String::from_utf8(std::mem::take(&mut *json)) {
            Ok(json) => SecretString::new(json),
            Err(_) => unreachable!("serde_json wrote invalid UTF-8"),
        }
    }

    /// Reads a record written by [`TokenRecord::to_json`].
    ///
    /// # Errors
    ///
    /// [`TokenRecordError::Malformed`] when `json` is not such a document, naming the line and
    /// column but never repeating the content; [`TokenRecordError::UnsupportedVersion`] when it
    /// was written by a newer Datapunk.
    pub fn from_json(json: &[u8]) -> Result<Self, TokenRecordError> {
        let record: TokenRecordIn = serde_json::from_slice(json).map_err(|err| {
            // serde_json's message may quote the input, and the input holds tokens: keep only
            // where the problem is.
            TokenRecordError::Malformed { line: err.line(), column: err.column() }
        })?;
        if record.version != TOKEN_RECORD_VERSION {
            return Err(TokenRecordError::UnsupportedVersion(record.version));
        }

        Ok(Self {
            access_token: SecretString::new(record.access_token),
            refresh_token: record.refresh_token.map(SecretString::new),
            expires_at: record.expires_at,
            scopes: record.scopes,
        })
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl fmt::Display for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a stored token record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRecordError {
    /// The item is not a token record; it was damaged or written by something else.
    #[error(
        "the stored token record is malformed (line {line}, column {column}); reconnect the \
         integration to store a new one"
    )]
    Malformed {
        /// The line of the first problem, from 1.
        line: usize,
        /// The column of the first problem, from 1.
        column: usize,
    },
    /// The record was written by a newer Datapunk.
    #[error(
        "the stored token record has version {0}, this Datapunk reads version 1; upgrade \
         Datapunk or reconnect the integration"
    )]
    UnsupportedVersion(u32),
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const ACCESS: &str = "ya29.access-TOKEN-1234567890";
    const REFRESH: &str = "1//refresh-TOKEN-0987654321";

    fn record() -> TokenRecord {
        TokenRecord {
            access_token: SecretString::new(ACCESS.to_owned()),
            refresh_token: Some(SecretString::new(REFRESH.to_owned())),
            expires_at: datetime!(2030-01-02 03:04:05 UTC),
            scopes: vec!["calendar.readonly".to_owned(), "contacts.readonly".to_owned()],
        }
    }

    #[test]
    fn secret_string_and_bytes_print_redacted_in_debug_and_display() {
        let string = SecretString::new(ACCESS.to_owned());
        let bytes = SecretBytes::new(ACCESS.as_bytes().to_vec());

        for shown in [
            format!("{string:?}"),
            format!("{string}"),
            format!("{string:#?}"),
            format!("{bytes:?}"),
            format!("{bytes}"),
            format!("{:?}", Some(&string)),
        ] {
            assert!(shown.contains(REDACTED), "{shown}");
            assert!(!shown.contains("TOKEN"), "{shown}");
        }
        assert_eq!(string.expose_secret(), ACCESS);
        assert_eq!(bytes.expose_secret(), ACCESS.as_bytes());
    }

    #[test]
    fn a_token_record_prints_neither_token_but_shows_expiry_and_scopes() {
        let record = record();

        let debug = format!("{record:?}");
        let pretty = format!("{record:#?}");
        let display = format!("{record}");

        for shown in [&debug, &pretty, &display] {
            assert!(shown.contains(REDACTED), "{shown}");
            assert!(!shown.contains("TOKEN"), "{shown}");
        }
        assert!(debug.contains("calendar.readonly"), "{debug}");
        assert!(debug.contains("2030"), "{debug}");
    }

    #[test]
    fn a_token_record_round_trips_through_json() {
        let json = record().to_json();
        let back = TokenRecord::from_json(json.expose_secret().as_bytes()).expect("read back");

        assert_eq!(back.access_token.expose_secret(), ACCESS);
        assert_eq!(back.refresh_token.as_ref().map(SecretString::expose_secret), Some(REFRESH));
        assert_eq!(back.expires_at, datetime!(2030-01-02 03:04:05 UTC));
        assert_eq!(back.scopes, record().scopes);
        assert!(json.expose_secret().contains(r#""expires_at":"2030-01-02T03:04:05Z""#));
    }

    #[test]
    fn a_token_record_without_refresh_token_stores_null() {
        let mut record = record();
        record.refresh_token = None;

        let json = record.to_json();
        let back = TokenRecord::from_json(json.expose_secret().as_bytes()).expect("read back");

        assert!(json.expose_secret().contains(r#""refresh_token":null"#));
        assert!(back.refresh_token.is_none());
    }

    #[test]
    fn a_malformed_record_is_refused_without_repeating_its_content() {
        let bad = [
            format!(r#"{{"version":1,"access_token":{ACCESS}}}"#),
            format!(r#"{{"version":1,"access_token":"{ACCESS}","refresh_token":7}}"#),
            format!(
                r#"{{"version":1,"access_token":"{ACCESS}","refresh_token":null,
                "expires_at":"{REFRESH}","scopes":[]}}"#
            ),
            format!(r#"{{"version":1,"{ACCESS}":1}}"#),
            String::from("\u{0}"),
        ];

        for json in bad {
            let err = TokenRecord::from_json(json.as_bytes()).expect_err(&json);
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, TokenRecordError::Malformed { .. }), "{shown}");
            assert!(!shown.contains("TOKEN"), "{shown}");
        }
    }

    #[test]
    fn a_record_from_a_newer_version_is_refused() {
        let json = record().to_json().expose_secret().replace(r#""version":1"#, r#""version":2"#);

        let err = TokenRecord::from_json(json.as_bytes()).expect_err("version 2");

        assert!(matches!(err, TokenRecordError::UnsupportedVersion(2)), "{err}");
    }
}
