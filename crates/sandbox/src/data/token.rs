//! Page tokens, sync tokens and delta tokens: opaque to clients, meaningful to the sandbox.
//!
//! A [`Token`] says which dataset (and calendar) it belongs to, the epoch of the dataset's
//! tokens it was issued in, the sequence its round is answered at, the sequence changes are
//! counted from (none for a full round), where the next page starts, a hash of the request
//! parameters it must come back with, and Graph's window. It travels as URL-safe base64 of a
//! dotted text with a keyed SHA-256 tag, so that any edit makes it a badly formed token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::{Dataset, Position};

/// What a token continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The next page of a round.
    Page,
    /// The next round: a sync token, a delta link, a cursor.
    Sync,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) dataset: Dataset,
    /// Google Calendar: the calendar's index.
    pub(crate) scope: u8,
    pub(crate) epoch: u32,
    /// Changes after this sequence; none for a full round.
    pub(crate) since: Option<u64>,
    /// The sequence the round is answered at.
    pub(crate) at: u64,
    pub(crate) position: Position,
    pub(crate) params: u64,
    /// Graph's calendar window, Unix seconds.
    pub(crate) window: Option<(i64, i64)>,
}

impl Token {
    pub(crate) fn encode(&self, key: &[u8]) -> String {
        let optional = |value: Option<String>| value.unwrap_or_else(|| "n".to_owned());
        let (start, end) = match self.window {
            Some((start, end)) => (start.to_string(), end.to_string()),
            None => ("n".to_owned(), "n".to_owned()),
        };
        let text = format!(
            "1.{}.{}.{}.{}.{}.{}.{}.{}.{:x}.{start}.{end}",
            match self.kind {
                Kind::Page => "p",
                Kind::Sync => "s",
            },
            self.dataset.code(),
            self.scope,
            self.epoch,
            optional(self.since.map(|s| s.to_string())),
            self.at,
            self.position.ordinal,
            self.position.sub,
            self.params,
        );
        let tag = tag(key, &text);
        URL_SAFE_NO_PAD.encode(format!("{text}.{tag}"))
    }

    /// The token `text` encodes, when this sandbox issued it untouched.
    pub(crate) fn decode(key: &[u8], text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (body, given) = text.rsplit_once('.')?;
        if tag(key, body) != given {
            return None;
        }
        let fields: Vec<&str> = body.split('.').collect();
        let [version, kind, dataset, scope, epoch, since, at, ordinal, sub, params, start, end] =
            fields.as_slice()
        else {
            return None;
        };
        if *version != "1" {
            return None;
        }
        let optional = |text: &str| (text != "n").then(|| text.parse::<i64>().ok()).flatten();
        let window = optional(start).zip(optional(end));
        let code: u8 = dataset.parse().ok()?;
        Some(Self {
            kind: match *kind {
                "p" => Kind::Page,
                "s" => Kind::Sync,
                _ => return None,
            },
            dataset: Dataset::ALL.into_iter().find(|d| d.code() == code)?,
            scope: scope.parse().ok()?,
            epoch: epoch.parse().ok()?,
            since: if *since == "n" { None } else { Some(since.parse().ok()?) },
            at: at.parse().ok()?,
            position: Position { ordinal: ordinal.parse().ok()?, sub: sub.parse().ok()? },
            params: u64::from_str_radix(params, 16).ok()?,
            window,
        })
    }
}

fn tag(key: &[u8], text: &str) -> String {
    let digest = Sha256::new().chain_update(key).chain_update(text.as_bytes()).finalize();
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

/// A hash of `pairs`, which the caller sorts.
pub(crate) fn hash_params<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut hasher = Sha256::new();
    for (key, value) in pairs {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}
