//! Deterministic generation: a small random number generator keyed by the seed, the dataset,
//! the record and its revision, and the word pools records are drawn from.
//!
//! Nothing is stored per generated record: the same key always yields the same record, so a
//! sandbox with a hundred thousand events costs no more memory than one with ten.

use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The instant generated data is arranged around: a Monday, midnight UTC. Events spread about
/// a year either side of it; saved tracks and plays lie before it.
pub(crate) const ANCHOR: OffsetDateTime = time::macros::datetime!(2026-11-30 00:00 UTC);

/// SplitMix64: small, fast and good enough to pick words and times.
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator for one revision of one record of one dataset.
    pub(crate) fn new(seed: u64, salt: u64, ordinal: u64, revision: u32) -> Self {
        let mut rng = Self(seed ^ salt.rotate_left(17));
        let first = rng.next();
        let mut rng = Self(first ^ ordinal.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let second = rng.next();
        Self(second ^ u64::from(revision).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; `bound` must not be zero.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: i64, high: i64) -> i64 {
        let span = u64::try_from(high - low + 1).unwrap_or(1);
        low + i64::try_from(self.below(span)).unwrap_or(0)
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        let index = usize::try_from(self.below(words.len() as u64)).unwrap_or(0);
        words.get(index).copied().unwrap_or("")
    }

    /// `len` characters of lowercase hex.
    pub(crate) fn hex(&mut self, len: usize) -> String {
        let mut text = String::with_capacity(len + 16);
        while text.len() < len {
            text.push_str(&format!("{:016x}", self.next()));
        }
        text.truncate(len);
        text
    }

    /// `len` characters of base62, the alphabet of Spotify's ids.
    pub(crate) fn base62(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len).map(|_| char::from(ALPHABET[(self.next() % 62) as usize])).collect()
    }
}

/// Given names from many languages, so that every client meets combining marks, other
/// scripts and letters outside the Basic Multilingual Plane's Latin block.
pub(crate) const GIVEN_NAMES: &[&str] = &[
    "Zoë",
    "José",
    "Søren",
    "Łukasz",
    "Ólafur",
    "Chloé",
    "Ngọc Anh",
    "Αλέξανδρος",
    "Дмитрий",
    "美咲",
    "太郎",
    "محمد",
    "Ayşe",
    "Björk",
    "François",
    "İlkay",
    "Siobhán",
    "Jürgen",
    "Priyā",
    "Ana",
    "Mateus",
    "Ewa",
    "Dvořák",
    "Nadia",
    "Kwame",
    "Chidi",
    "Aroha",
    "Mikael",
    "Leilani",
    "Iñaki",
    "Göran",
    "Ханна",
    "지민",
    "Thảo",
    "Ines",
    "Zsófia",
];

/// Family names to go with [`GIVEN_NAMES`].
pub(crate) const FAMILY_NAMES: &[&str] = &[
    "Müller",
    "García Márquez",
    "Nguyễn",
    "Kowalczyk",
    "Ødegaard",
    "O'Brien",
    "van der Berg",
    "佐藤",
    "Παπαδόπουλος",
    "Иванова",
    "Al-Khwārizmī",
    "Yılmaz",
    "Þórsdóttir",
    "Dubois",
    "Šimková",
    "Mensah",
    "Okafor",
    "Ngata",
    "Kim",
    "Sørensen",
    "Łęcka",
    "Hernández",
    "Chen 陈",
    "Kuznetsov",
    "D'Angelo",
    "Ferreira",
    "Smith",
    "Jensen",
];

/// Event titles; `{}` is replaced by a person's given name.
pub(crate) const EVENT_TITLES: &[&str] = &[
    "☕ Koffie met {}",
    "Réunion d'équipe",
    "Zahnarzt – Kontrolle",
    "Пятничный созвон",
    "打ち合わせ: ロードマップ",
    "Standup 🧍",
    "1:1 with {}",
    "🎂 {}'s birthday dinner",
    "Yoga 🧘‍♀️",
    "Fika ☕🥐",
    "Elternabend",
    "Déjeuner avec {}",
    "Sprint review 🚀",
    "Παρουσίαση προϊόντος",
    "مراجعة الميزانية",
    "Book club: «Cien años de soledad»",
    "Tandarts 🦷",
    "Flight ✈️ AMS → NRT",
    "Ramen with {} 🍜",
    "Quarterly planning (Q1/Q2)",
];

/// Places; some events have none.
pub(crate) const PLACES: &[&str] = &[
    "Café de Flore, Paris",
    "Zürich HB, Gleis 7",
    "東京駅 丸の内北口",
    "Kraków Główny",
    "Room «Ελιά», 3rd floor",
    "Sjöstugan, Göteborg",
    "https://meet.example.com/abc-defg-hij",
    "Praça do Comércio, Lisboa",
    "Café Ümit, Kreuzberg",
    "Ресторан «Пушкинъ»",
];

/// Describes events, contacts and playlists.
pub(crate) const NOTES: &[&str] = &[
    "Bring the slides 📎",
    "Agenda:\n• Status\n• Risiken\n• Nächste Schritte",
    "Don't forget the 🎁",
    "Parking is at the back – code 4711",
    "Nota: traer el pasaporte",
    "",
    "Emoji with skin tone 👋🏽 and a flag 🇳🇿",
    "Zero-width joiner family 👨‍👩‍👧 and a combining é",
];

/// Words for track, album and playlist names.
pub(crate) const MUSIC_WORDS: &[&str] = &[
    "Nocturne",
    "Sommarnatt",
    "Lüfte",
    "夜明け",
    "Ciudad",
    "Ωκεανός",
    "Ночь",
    "Saudade",
    "Déjà vu",
    "Blåbær",
    "Heartbeat",
    "Fuego",
    "Mañana",
    "Kaleidoscope",
    "Nebel",
    "ハナミズキ",
    "Pájaro",
    "Echoes",
    "Žalm",
    "Rêverie",
    "🌊 Waves",
    "Łąka",
    "Ø",
    "Velvet",
];

/// Artists.
pub(crate) const ARTISTS: &[&str] = &[
    "Sigur Rós",
    "Beyoncé",
    "Mø",
    "Rosalía",
    "宇多田ヒカル",
    "Motörhead",
    "Björk",
    "Ólafur Arnalds",
    "BTS (방탄소년단)",
    "Stromae",
    "Caetano Veloso",
    "Fela Kuti",
    "Kraftwerk",
    "Café Tacvba",
    "Amadou & Mariam",
    "Ásgeir",
    "Sofia Kourtesis",
    "Natalia Lafourcade",
];

/// Companies for contacts.
pub(crate) const COMPANIES: &[&str] = &[
    "Fjällräven AB",
    "Société Générale",
    "株式会社サンプル",
    "Müller & Söhne GmbH",
    "Ñandú Studio",
    "Ωmega Labs",
    "Example BV",
];

/// A date `days` after [`ANCHOR`]'s.
pub(crate) fn anchor_date(days: i64) -> Date {
    (ANCHOR + time::Duration::days(days)).date()
}

/// `at` in RFC 3339 with milliseconds and `Z`, as Google writes `updated`.
pub(crate) fn rfc3339_millis(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// `at` in RFC 3339 with whole seconds and `Z`.
pub(crate) fn rfc3339_seconds(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `date` as `YYYY-MM-DD`.
pub(crate) fn ymd(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// `date` as `YYYYMMDD`.
pub(crate) fn ymd_compact(date: Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day())
}

/// The ASCII letters of `name`, lowercased, for an e-mail address; `user` when it has none.
pub(crate) fn ascii_handle(name: &str) -> String {
    let handle: String =
        name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    if handle.is_empty() { "user".to_owned() } else { handle }
}

/// The instant `ms` Unix milliseconds stand for.
pub(crate) fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(ANCHOR)
}

/// `at` in RFC 3339 with its own offset, as Google writes `dateTime`.
pub(crate) fn rfc3339_offset(at: OffsetDateTime) -> String {
    let offset = at.offset();
    let (hours, minutes, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        hours.unsigned_abs(),
        minutes.unsigned_abs()
    )
}

/// `at` in UTC the way Graph writes event times: no offset, seven fractional digits.
pub(crate) fn graph_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.0000000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Parses an RFC 3339 instant, or an ISO 8601 one without offset taken as UTC, as Graph
/// accepts its window.
pub(crate) fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    let text = text.split('.').next()?;
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let short = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let day = time::macros::format_description!("[year]-[month]-[day]");
    PrimitiveDateTime::parse(text, format)
        .or_else(|_| PrimitiveDateTime::parse(text, short))
        .map(PrimitiveDateTime::assume_utc)
        .ok()
        .or_else(|| Date::parse(text, day).ok().map(|d| d.midnight().assume_utc()))
}
