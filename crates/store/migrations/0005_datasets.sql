-- 0005: the synced datasets, and the sync state of each stream.
--
-- Runs as datapunk_owner inside one transaction. Migrations are append-only: never edit this
-- file after release; add the next number instead.
--
-- One table per dataset, keyed by (integration, stream, provider_id). A stream is what one
-- cursor walks: one per calendar for Google Calendar, '' for every other dataset. Plaintext
-- columns hold only what indexing and sync need (ids, times, status) and catalogue data (track,
-- artist and album names); everything about the person is in `sealed`, one OpenPGP message per
-- row that the daemon encrypts under the integration's data key. PostgreSQL never sees a key.
-- `digest` is a keyed fingerprint the daemon computes over everything stored for the row; a
-- row whose digest is unchanged is not rewritten. docs/data-model.md gives the policy per
-- column.
--
-- Privileges: the default privileges of 0001 apply (datapunk_app reads and writes without
-- TRUNCATE; the reader and the backup role read), except that plays are append-only for the
-- app (no UPDATE) and the reader has no use for the sweep's bookkeeping.

CREATE TABLE datapunk.sync_streams (
    integration      text        NOT NULL REFERENCES datapunk.integrations (name)
                                     ON DELETE CASCADE,
    dataset          text        NOT NULL CHECK (dataset IN (
                                     'calendar', 'contacts', 'recently-played', 'saved-tracks',
                                     'playlists')),
    stream           text        NOT NULL,
    -- The connectors' cursor: 'start' (the next round is full), 'page' (a round under way at
    -- the continuation in cursor_text; cursor_full when that round reads everything) or
    -- 'synced' (the next round is incremental from the sync token in cursor_text).
    cursor_kind      text        NOT NULL DEFAULT 'start'
                                     CHECK (cursor_kind IN ('start', 'page', 'synced')),
    cursor_text      text,
    cursor_full      boolean     NOT NULL DEFAULT false,
    -- The round under way or next; every round, completed or abandoned, has its own number.
    round            bigint      NOT NULL DEFAULT 1 CHECK (round > 0),
    round_started_at timestamptz,
    -- What the pages of the round under way have done so far.
    round_added      bigint      NOT NULL DEFAULT 0,
    round_updated    bigint      NOT NULL DEFAULT 0,
    round_deleted    bigint      NOT NULL DEFAULT 0,
    last_success_at  timestamptz,
    last_outcome     text        CHECK (last_outcome IN ('success', 'failure')),
    last_outcome_at  timestamptz,
    -- Words only: never a provider's value.
    last_error       text,
    -- What the last completed round did.
    last_added       bigint,
    last_updated     bigint,
    last_deleted     bigint,
    PRIMARY KEY (integration, dataset, stream),
    CHECK ((cursor_kind = 'start') = (cursor_text IS NULL)),
    CHECK (cursor_kind = 'page' OR NOT cursor_full)
);

COMMENT ON TABLE datapunk.sync_streams IS
    'Per stream of a dataset: its cursor, its round, and the outcome and counts of the last '
    'sync. Updated in the same transaction as the rows each page writes.';

-- The ids a full round saw without rewriting their row (the digest was unchanged). Rows the
-- round wrote carry its number in seen_round instead, so that a first sync writes nothing
-- here and a reconciled round that changes nothing leaves the dataset tables untouched.
-- Emptied when a round completes or restarts.
CREATE TABLE datapunk.round_seen (
    integration text   NOT NULL REFERENCES datapunk.integrations (name) ON DELETE CASCADE,
    dataset     text   NOT NULL,
    stream      text   NOT NULL,
    provider_id text   NOT NULL,
    round       bigint NOT NULL,
    PRIMARY KEY (integration, dataset, stream, provider_id)
);

COMMENT ON TABLE datapunk.round_seen IS
    'Ids seen unchanged by the full round under way; the sweep keeps these rows.';

CREATE TABLE datapunk.calendar_events (
    integration text        NOT NULL REFERENCES datapunk.integrations (name)
                                ON DELETE CASCADE,
    stream      text        NOT NULL,
    provider_id text        NOT NULL,
    starts_at   timestamptz,
    ends_at     timestamptz,
    all_day     boolean     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('confirmed', 'tentative', 'cancelled')),
    series_id   text,
    kind        text        NOT NULL
                                CHECK (kind IN ('single', 'master', 'occurrence', 'exception')),
    updated_at  timestamptz,
    sealed      bytea       NOT NULL,
    digest      bytea       NOT NULL,
    seen_round  bigint      NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, stream, provider_id)
);

CREATE INDEX calendar_events_time ON datapunk.calendar_events (integration, starts_at, ends_at);
CREATE INDEX calendar_events_series ON datapunk.calendar_events (integration, stream, series_id)
    WHERE series_id IS NOT NULL;

COMMENT ON TABLE datapunk.calendar_events IS
    'Calendar events; sealed holds summary, description, location, organizer, attendees, raw.';

CREATE TABLE datapunk.contacts (
    integration text        NOT NULL REFERENCES datapunk.integrations (name)
                                ON DELETE CASCADE,
    stream      text        NOT NULL,
    provider_id text        NOT NULL,
    updated_at  timestamptz,
    sealed      bytea       NOT NULL,
    digest      bytea       NOT NULL,
    seen_round  bigint      NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, stream, provider_id)
);

COMMENT ON TABLE datapunk.contacts IS
    'Contacts; nothing about a person is plaintext: sealed holds names, emails, phones, '
    'addresses, birthday, notes, raw.';

CREATE TABLE datapunk.plays (
    integration text        NOT NULL REFERENCES datapunk.integrations (name)
                                ON DELETE CASCADE,
    stream      text        NOT NULL,
    provider_id text        NOT NULL,
    played_at   timestamptz NOT NULL,
    track_id    text        NOT NULL,
    track_name  text        NOT NULL,
    artists     text[]      NOT NULL,
    album       text        NOT NULL,
    duration_ms bigint      NOT NULL,
    sealed      bytea       NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, stream, provider_id),
    -- A play is one track ending at one time; a play seen again is the same play.
    UNIQUE (integration, played_at, track_id)
);

COMMENT ON TABLE datapunk.plays IS
    'Listening history, append-only; sealed holds context, raw.';

CREATE TABLE datapunk.saved_tracks (
    integration text        NOT NULL REFERENCES datapunk.integrations (name)
                                ON DELETE CASCADE,
    stream      text        NOT NULL,
    provider_id text        NOT NULL,
    added_at    timestamptz NOT NULL,
    track_id    text        NOT NULL,
    track_name  text        NOT NULL,
    artists     text[]      NOT NULL,
    album       text        NOT NULL,
    duration_ms bigint      NOT NULL,
    sealed      bytea       NOT NULL,
    digest      bytea       NOT NULL,
    seen_round  bigint      NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, stream, provider_id)
);

CREATE INDEX saved_tracks_added ON datapunk.saved_tracks (integration, added_at);

COMMENT ON TABLE datapunk.saved_tracks IS
    'Saved tracks (the library), reconciled each round; sealed holds raw.';

CREATE TABLE datapunk.playlists (
    integration   text        NOT NULL REFERENCES datapunk.integrations (name)
                                  ON DELETE CASCADE,
    stream        text        NOT NULL,
    provider_id   text        NOT NULL,
    snapshot_id   text        NOT NULL,
    entries       bigint      NOT NULL CHECK (entries >= 0),
    public        boolean,
    collaborative boolean     NOT NULL,
    sealed        bytea       NOT NULL,
    digest        bytea       NOT NULL,
    seen_round    bigint      NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, stream, provider_id)
);

COMMENT ON TABLE datapunk.playlists IS
    'Playlists, reconciled each round; sealed holds name, description, owner, raw.';

COMMENT ON COLUMN datapunk.calendar_events.sealed IS
    'OpenPGP message under the integration''s data key: a JSON object of the personal fields.';
COMMENT ON COLUMN datapunk.calendar_events.digest IS
    'Keyed fingerprint of the stored record, computed by the daemon; equal means unchanged.';
COMMENT ON COLUMN datapunk.calendar_events.seen_round IS
    'The sync round that last wrote the row.';

-- Plays are history: a play never changes, so the app may add and remove but not rewrite.
REVOKE UPDATE ON TABLE datapunk.plays FROM datapunk_app;
REVOKE ALL ON TABLE datapunk.round_seen FROM datapunk_reader;
