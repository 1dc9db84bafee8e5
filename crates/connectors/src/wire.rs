//! Shapes shared by the providers' JSON: times in their several spellings, and each item's
//! text kept as received for the sealed `raw` field.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// A page's items, each kept as the text the provider sent.
pub(crate) type RawItems = Vec<Box<RawValue>>;

/// An optional RFC 3339 instant (`2026-03-18T14:41:14.687Z`, `2026-04-03T10:00:00+02:00`).
pub(crate) fn rfc3339<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| OffsetDateTime::parse(&text, &Rfc3339))
        .transpose()
        .map_err(|_| serde::de::Error::custom("not an RFC 3339 time"))
}

/// A required RFC 3339 instant.
pub(crate) fn rfc3339_required<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OffsetDateTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    OffsetDateTime::parse(&text, &Rfc3339)
        .map_err(|_| serde::de::Error::custom("not an RFC 3339 time"))
}

/// An optional calendar date, `YYYY-MM-DD`.
pub(crate) fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Date>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| Date::parse(&text, format_description!("[year]-[month]-[day]")))
        .transpose()
        .map_err(|_| serde::de::Error::custom("not a date"))
}

/// Graph's wall-clock time without an offset, `2026-04-06T07:00:00.0000000`.
pub(crate) fn wall_clock<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<PrimitiveDateTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    PrimitiveDateTime::parse(
        &text,
        format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        ),
    )
    .map_err(|_| serde::de::Error::custom("not a date and time"))
}

/// Milliseconds since the Unix epoch, as Spotify's cursors count.
pub(crate) fn unix_ms(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wall(#[serde(deserialize_with = "wall_clock")] PrimitiveDateTime);

    #[test]
    fn graph_wall_clock_times_parse_with_and_without_fractions() {
        let wall: Wall = serde_json::from_str(r#""2026-04-06T07:00:00.1234567""#).expect("parses");
        assert_eq!(wall.0.to_string(), "2026-04-06 7:00:00.1234567");
        let whole: Wall = serde_json::from_str(r#""2026-04-06T07:00:00""#).expect("parses");
        assert_eq!(whole.0.to_string(), "2026-04-06 7:00:00.0");
        assert!(serde_json::from_str::<Wall>(r#""2026-04-06T07:00:00Z""#).is_err());
    }

    #[derive(Deserialize)]
    struct Times {
        #[serde(default, deserialize_with = "rfc3339")]
        google: Option<OffsetDateTime>,
    }

    #[test]
    fn rfc3339_times_parse_with_their_fractions() {
        let times: Times =
            serde_json::from_str(r#"{"google": "2026-03-18T07:46:27.5509919Z"}"#).expect("parses");
        assert_eq!(times.google.expect("a time").unix_timestamp_nanos(), 1_773_819_987_550_991_900);
        let none: Times = serde_json::from_str("{}").expect("parses");
        assert!(none.google.is_none());
    }
}
