//! What a connector hands over: records with the few plaintext columns that indexing and
//! sync need, and the personal fields the daemon seals with the integration's data key.
//!
//! The policy of which field goes where is in `docs/data-model.md`: catalogue data (track,
//! artist and album names) and sync data (ids, timestamps, status) stay readable; everything
//! about the person (titles, descriptions, locations, attendees, names, addresses, e-mail
//! addresses, phone numbers, notes, playlist names, and the provider's whole JSON) is sealed.

use time::OffsetDateTime;

/// One record of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The provider's id, unique within the stream: an event id, a People `resourceName`, a
    /// Graph id, a Spotify track or playlist id, or for a play `"<played_at ms>:<track id>"`.
    pub id: String,
    /// When the provider last changed it, where the provider says.
    pub updated_at: Option<OffsetDateTime>,
    /// The plaintext columns of the dataset's table.
    pub columns: Columns,
    /// The personal fields, sealed into one message per record by the daemon: name and text.
    /// Always holds `raw`, the provider's JSON of the record as received.
    pub personal: Vec<(&'static str, String)>,
}

/// The plaintext columns of each dataset's table.
#[derive(Debug, Clone, PartialEq)]
pub enum Columns {
    /// A calendar event (Google Calendar, Graph calendarView).
    Event {
        /// Start, in UTC; for all-day events midnight UTC of the start date.
        starts_at: Option<OffsetDateTime>,
        /// End, as `starts_at`.
        ends_at: Option<OffsetDateTime>,
        /// Whether the event lasts whole days.
        all_day: bool,
        /// `confirmed`, `tentative` or `cancelled` (a cancelled instance of a live series).
        status: String,
        /// The series this event is an instance or exception of.
        series_id: Option<String>,
        /// `single`, `master`, `occurrence` or `exception`.
        kind: String,
    },
    /// A contact (People, Graph contacts). Nothing about a contact is plaintext.
    Contact,
    /// A play (Spotify recently-played).
    Play {
        /// When the play ended.
        played_at: OffsetDateTime,
        /// The track.
        track: Track,
    },
    /// A saved track (Spotify).
    SavedTrack {
        /// When it was saved.
        added_at: OffsetDateTime,
        /// The track.
        track: Track,
    },
    /// A playlist (Spotify; both the legacy `tracks` and the 2026 `items` shapes).
    Playlist {
        /// Changes whenever the playlist does.
        snapshot_id: String,
        /// Number of entries.
        entries: i64,
        /// Public on the person's profile.
        public: Option<bool>,
        /// Others may edit it.
        collaborative: bool,
    },
}

/// Catalogue data of a track, the same for everyone who listens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Spotify's track id.
    pub id: String,
    /// Title.
    pub name: String,
    /// Artist names, in the provider's order.
    pub artists: Vec<String>,
    /// Album name.
    pub album: String,
    /// Length in milliseconds.
    pub duration_ms: i64,
}
