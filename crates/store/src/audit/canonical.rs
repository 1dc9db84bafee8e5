//! The canonical encoding of an audit row, version 1, implemented apart from the SQL in
//! migration 0001 so that verification does not trust the database's own function.
//!
//! ```text
//! "datapunk-audit-v1" LF
//! then for each of id, at_us, actor_uid, actor_component, action, integration, dataset,
//! outcome, details, prev_hash:
//!     NULL   -> "-" LF
//!     value  -> <length in octets, decimal> ":" <octets> LF
//! ```
//!
//! Integers are their decimal text, text is UTF-8, `details` is jsonb's own text form
//! (`details::text`) and `prev_hash` its 32 raw bytes. Nothing depends on a session setting.

use sha2::{Digest, Sha256};

/// The header that names the encoding's version.
const HEADER: &[u8] = b"datapunk-audit-v1\n";

/// The fields of one row, as they are hashed.
pub(crate) struct Fields<'a> {
    pub(crate) id: i64,
    pub(crate) at_us: i64,
    pub(crate) actor_uid: i64,
    pub(crate) actor_component: &'a str,
    pub(crate) action: &'a str,
    pub(crate) integration: Option<&'a str>,
    pub(crate) dataset: Option<&'a str>,
    pub(crate) outcome: &'a str,
    /// `details::text`.
    pub(crate) details: &'a str,
    pub(crate) prev_hash: &'a [u8],
}

impl Fields<'_> {
    /// The canonical encoding.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details.len());
        out.extend_from_slice(HEADER);
        field(&mut out, Some(self.id.to_string().as_bytes()));
        field(&mut out, Some(self.at_us.to_string().as_bytes()));
        field(&mut out, Some(self.actor_uid.to_string().as_bytes()));
        field(&mut out, Some(self.actor_component.as_bytes()));
        field(&mut out, Some(self.action.as_bytes()));
        field(&mut out, self.integration.map(str::as_bytes));
        field(&mut out, self.dataset.map(str::as_bytes));
        field(&mut out, Some(self.outcome.as_bytes()));
        field(&mut out, Some(self.details.as_bytes()));
        field(&mut out, Some(self.prev_hash));
        out
    }

    /// The SHA-256 of the canonical encoding: the row's `hash`.
    pub(crate) fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(b"-\n"),
        Some(bytes) => {
            out.extend_from_slice(bytes.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(bytes);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields<'static> {
        Fields {
            id: 1,
            at_us: 1_700_000_000_123_456,
            actor_uid: 1000,
            actor_component: "daemon",
            action: "daemon.start",
            integration: None,
            dataset: Some(""),
            outcome: "success",
            details: r#"{"n": 1, "é": "a\nb"}"#,
            prev_hash: &[0; 32],
        }
    }

    #[test]
    fn the_encoding_is_length_prefixed_and_tells_null_from_empty() {
        let mut expected = b"datapunk-audit-v1\n1:1\n16:1700000000123456\n4:1000\n6:daemon\n\
                             12:daemon.start\n-\n0:\n7:success\n"
            .to_vec();
        expected.extend_from_slice("22:{\"n\": 1, \"é\": \"a\\nb\"}\n".as_bytes());
        expected.extend_from_slice(b"32:");
        expected.extend_from_slice(&[0; 32]);
        expected.push(b'\n');
        assert_eq!(sample().encode(), expected);
    }

    #[test]
    fn shifting_bytes_between_fields_changes_the_hash() {
        let a = Fields { integration: Some("ab"), dataset: Some("c"), ..sample() };
        let b = Fields { integration: Some("a"), dataset: Some("bc"), ..sample() };
        let c = Fields { integration: None, dataset: Some("abc"), ..sample() };
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }

    /// The same row hashed by PostgreSQL 15's `datapunk.audit_canonical()` and `sha256()`:
    /// `SELECT encode(sha256(datapunk.audit_canonical(1, 1700000000123456, 1000, 'daemon',
    /// 'daemon.start', NULL, '', 'success', '{"é": "a\nb", "n": 1}', '\x00..00')), 'hex')`.
    #[test]
    fn the_hash_matches_the_one_postgresql_computes() {
        assert_eq!(hex::encode(sample().hash()), POSTGRESQL_HASH);
    }

    const POSTGRESQL_HASH: &str =
        "f36614aec2815021b407cc6564b437c5e385837fcd1821290ab58be02fe27377";
}
