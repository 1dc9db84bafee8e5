//! The events both calendar providers serve, before either renders them: what kind each
//! record is, when it happens and what it says.
//!
//! Kinds follow the ordinal, in blocks of twenty: a recurring series (ten weekly or daily
//! occurrences), its moved third occurrence, its cancelled fifth occurrence, two all-day
//! events, a yearly all-day series, and fourteen single events. Records added later are single
//! events. A record's time comes from its first revision, so that changing an event never
//! moves an exception away from its series; its words come from its latest revision.

use time::{Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::seed::{self, ANCHOR, Rng};

/// What an event record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    AllDay,
    /// A timed series of ten occurrences.
    Series,
    /// A yearly all-day series of five occurrences.
    AllDaySeries,
    /// The third occurrence of the series at `ordinal - 1`, moved two hours later.
    Moved,
    /// The fifth occurrence of the series at `ordinal - 2`, cancelled.
    Cancelled,
}

/// Which occurrence of its series an exception replaces.
pub(crate) const MOVED_OCCURRENCE: u32 = 2;
pub(crate) const CANCELLED_OCCURRENCE: u32 = 4;

pub(crate) fn kind(ordinal: u64, base: u64) -> Kind {
    if ordinal >= base {
        return Kind::Single;
    }
    match ordinal % 20 {
        0 => Kind::Series,
        1 => Kind::Moved,
        2 => Kind::Cancelled,
        3 | 4 => Kind::AllDay,
        5 => Kind::AllDaySeries,
        _ => Kind::Single,
    }
}

/// The exceptions of the series at `ordinal`, if it is one.
pub(crate) fn series_members(ordinal: u64, base: u64) -> Vec<u64> {
    match kind(ordinal, base) {
        Kind::Series => vec![ordinal + 1, ordinal + 2],
        _ => Vec::new(),
    }
}

/// The master of an exception.
pub(crate) fn master_of(ordinal: u64, kind: Kind) -> Option<u64> {
    match kind {
        Kind::Moved => ordinal.checked_sub(1),
        Kind::Cancelled => ordinal.checked_sub(2),
        _ => None,
    }
}

/// Time zones without daylight saving time, so that offsets are right all year.
const ZONES: &[(&str, &str, i32)] = &[
    ("UTC", "UTC", 0),
    ("Asia/Tokyo", "Tokyo Standard Time", 9 * 60),
    ("Asia/Kolkata", "India Standard Time", 5 * 60 + 30),
    ("America/Sao_Paulo", "E. South America Standard Time", -3 * 60),
];

/// When an event (or a series' first occurrence) happens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// In the event's own offset; midnight UTC for all-day events.
    pub(crate) start: OffsetDateTime,
    pub(crate) end: OffsetDateTime,
    pub(crate) all_day: bool,
    /// The IANA name.
    pub(crate) zone: &'static str,
    /// The Windows name Graph uses.
    pub(crate) windows_zone: &'static str,
}

impl Timing {
    fn shifted(self, by: Duration) -> Self {
        Self { start: self.start + by, end: self.end + by, ..self }
    }
}

/// A series' recurrence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recurrence {
    /// 1 (daily), 7 (weekly) or 0 (yearly).
    pub(crate) every_days: i64,
    pub(crate) count: u32,
}

impl Recurrence {
    pub(crate) fn rrule(self) -> String {
        let freq = match self.every_days {
            1 => "DAILY",
            7 => "WEEKLY",
            _ => "YEARLY",
        };
        format!("RRULE:FREQ={freq};COUNT={}", self.count)
    }

    /// Occurrence `k` of a series starting at `first`.
    pub(crate) fn occurrence(self, first: Timing, k: u32) -> Timing {
        if self.every_days == 0 {
            let year = |at: OffsetDateTime| {
                at.replace_year(at.year() + i32::try_from(k).unwrap_or(0)).unwrap_or(at)
            };
            return Timing { start: year(first.start), end: year(first.end), ..first };
        }
        first.shifted(Duration::days(self.every_days * i64::from(k)))
    }
}

/// An attendee.
#[derive(Clone, Debug)]
pub(crate) struct Attendee {
    pub(crate) name: String,
    pub(crate) email: String,
    /// Google's `responseStatus` vocabulary.
    pub(crate) response: &'static str,
    pub(crate) optional: bool,
}

/// One revision of an event record.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) timing: Timing,
    /// For exceptions: the occurrence they replace, and the series' ordinal.
    pub(crate) original: Option<(Timing, u64)>,
    pub(crate) recurrence: Option<Recurrence>,
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) attendees: Vec<Attendee>,
    pub(crate) created: OffsetDateTime,
    pub(crate) updated: OffsetDateTime,
    pub(crate) revision: u32,
    /// 0–999: whatever else a renderer wants to vary (colours, reminders).
    pub(crate) flavour: u64,
}

/// The first occurrence's timing of record `ordinal`, which never changes.
fn timing(seed: u64, salt: u64, ordinal: u64, kind: Kind) -> Timing {
    let mut rng = Rng::new(seed, salt, ordinal, 0);
    let (zone, windows_zone, offset) = ZONES[(rng.below(ZONES.len() as u64)) as usize];
    let day = seed::anchor_date(rng.between(-380, 380));
    if matches!(kind, Kind::AllDay | Kind::AllDaySeries) {
        // No leap days, so that yearly occurrences exist every year.
        let day = if day.month() == time::Month::February && day.day() == 29 {
            day.previous_day().unwrap_or(day)
        } else {
            day
        };
        let start = PrimitiveDateTime::new(day, Time::MIDNIGHT).assume_utc();
        let days = if kind == Kind::AllDay { rng.between(1, 3) } else { 1 };
        return Timing {
            start,
            end: start + Duration::days(days),
            all_day: true,
            zone,
            windows_zone,
        };
    }
    let minutes = rng.between(7 * 4, 20 * 4) * 15;
    let offset = UtcOffset::from_whole_seconds(offset * 60).unwrap_or(UtcOffset::UTC);
    let start = PrimitiveDateTime::new(day, Time::MIDNIGHT).assume_offset(offset)
        + Duration::minutes(minutes);
    let length = [30, 45, 60, 90, 120][rng.below(5) as usize];
    Timing { start, end: start + Duration::minutes(length), all_day: false, zone, windows_zone }
}

fn recurrence(seed: u64, salt: u64, ordinal: u64, kind: Kind) -> Option<Recurrence> {
    match kind {
        Kind::Series => {
            let every_days = if Rng::new(seed, salt ^ 0x5e, ordinal, 0).chance(30) { 1 } else { 7 };
            Some(Recurrence { every_days, count: 10 })
        }
        Kind::AllDaySeries => Some(Recurrence { every_days: 0, count: 5 }),
        _ => None,
    }
}

/// Revision `revision` of record `ordinal` of a calendar with `base` generated records.
pub(crate) fn event(
    seed: u64,
    salt: u64,
    ordinal: u64,
    base: u64,
    revision: u32,
    changed_ms: Option<i64>,
) -> Event {
    let kind = kind(ordinal, base);
    let (timing, original, recurrence) = match master_of(ordinal, kind) {
        Some(master) => {
            let master_kind = self::kind(master, base);
            let first = self::timing(seed, salt, master, master_kind);
            let series = self::recurrence(seed, salt, master, master_kind)
                .unwrap_or(Recurrence { every_days: 7, count: 10 });
            let k = if kind == Kind::Moved { MOVED_OCCURRENCE } else { CANCELLED_OCCURRENCE };
            let original = series.occurrence(first, k);
            (original.shifted(Duration::hours(2)), Some((original, master)), None)
        }
        None => (
            self::timing(seed, salt, ordinal, kind),
            None,
            self::recurrence(seed, salt, ordinal, kind),
        ),
    };

    let mut rng = Rng::new(seed, salt, ordinal, revision);
    let friend = rng.pick(seed::GIVEN_NAMES);
    let mut summary = rng.pick(seed::EVENT_TITLES).replace("{}", friend);
    if kind == Kind::AllDay || kind == Kind::AllDaySeries {
        summary = format!(
            "🌴 {}",
            rng.pick(&["Urlaub", "Congé", "Festa junina", "お盆休み", "Midsommar"])
        );
    }
    if revision > 0 {
        summary.push_str(&format!(" · v{revision}"));
    }
    let description = rng.chance(60).then(|| rng.pick(seed::NOTES).to_owned());
    let location = rng.chance(50).then(|| rng.pick(seed::PLACES).to_owned());
    let attendees = (0..rng.below(4))
        .map(|_| {
            let given = rng.pick(seed::GIVEN_NAMES);
            let family = rng.pick(seed::FAMILY_NAMES);
            Attendee {
                name: format!("{given} {family}"),
                email: format!("{}.{}@example.org", seed::ascii_handle(given), rng.below(1000)),
                response: rng.pick(&["needsAction", "declined", "tentative", "accepted"]),
                optional: rng.chance(20),
            }
        })
        .collect();
    let created = ANCHOR - Duration::days(400) + Duration::minutes(rng.between(0, 300 * 24 * 60));
    let updated = match changed_ms {
        Some(ms) => seed::from_unix_ms(ms),
        None => created + Duration::seconds(rng.between(0, 86_400 * 30)),
    };
    let flavour = rng.below(1000);
    Event {
        kind,
        timing,
        original,
        recurrence,
        summary,
        description,
        location,
        attendees,
        created,
        updated,
        revision,
        flavour,
    }
}
