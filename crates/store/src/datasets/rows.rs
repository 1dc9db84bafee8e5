//! Writing a page's rows.
//!
//! Rows the table already holds go through one upsert statement per page, whose arrays
//! PostgreSQL unnests, upserts by provider id and compares by digest, so that an unchanged row
//! is neither rewritten nor locked. In a round that reads the whole collection, most rows are
//! new (a first sync, or a stream added): those go in by binary `COPY`, which PostgreSQL
//! inserts in batches and which costs about half of the upsert per row. The split is exact,
//! not a guess: the stream's row lock, held by the caller, keeps other writers out between the
//! lookup of the page's ids and the `COPY`.

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};

use super::copy::Copy;
use super::{Columns, Counts, Dataset, Row, StreamKey, Track, unsigned};
use crate::Error;

/// The rows of `rows`, keeping only the last of each provider id: one statement cannot write
/// the same row twice.
pub(super) fn last_of_each_id(rows: &[Row]) -> Vec<&Row> {
    let mut seen = HashSet::with_capacity(rows.len());
    let mut last: Vec<&Row> =
        rows.iter().rev().filter(|row| seen.insert(row.provider_id.as_str())).collect();
    last.reverse();
    last
}

/// Writes `rows`, which hold each provider id once; counts what was added, updated and left
/// unchanged. In a `full` round, rows the stream does not hold yet are copied in and the rest
/// upserted; otherwise everything is upserted with one statement.
pub(super) async fn write_rows(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    round: i64,
    full: bool,
    rows: &[&Row],
) -> Result<Counts, Error> {
    if rows.iter().any(|row| !belongs(&row.columns, key.dataset)) {
        return Err(mismatch(key.dataset));
    }
    if !full || rows.is_empty() || key.dataset == Dataset::RecentlyPlayed {
        return upsert_rows(transaction, key, round, full, rows).await;
    }

    let held = held_ids(transaction, key, rows).await?;
    let (stored, new): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|row| held.contains(row.provider_id.as_str()));
    let added = copy_rows(transaction, key, round, &new).await?;
    let mut counts = upsert_rows(transaction, key, round, full, &stored).await?;
    counts.added += added;
    Ok(counts)
}

/// The ids of `rows` that the stream already holds.
async fn held_ids(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    rows: &[&Row],
) -> Result<HashSet<String>, Error> {
    let ids: Vec<&str> = rows.iter().map(|row| row.provider_id.as_str()).collect();
    // One primary-key lookup per id, as in the upsert: a join or `= ANY` may be planned as a
    // scan of the stream's rows, which makes a long sync cost the square of its length.
    let sql = format!(
        "SELECT p.id FROM unnest($3::text[]) AS p (id)
         WHERE (SELECT true FROM {} t
                WHERE t.integration = $1 AND t.stream = $2 AND t.provider_id = p.id)",
        key.dataset.table()
    );
    let held = transaction.query(&sql, &[&key.integration, &key.stream, &ids]).await?;
    Ok(held.iter().map(|row| row.get(0)).collect())
}

/// Inserts `rows`, none of which the stream holds, by binary `COPY`; returns how many.
async fn copy_rows(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    round: i64,
    rows: &[&Row],
) -> Result<u64, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (columns, types) = copy_columns(key.dataset);
    let sql = format!(
        "COPY {} (integration, stream, provider_id, sealed, digest, seen_round, {columns})
         FROM STDIN (FORMAT binary)",
        key.dataset.table()
    );
    let types = [Type::TEXT, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BYTEA, Type::INT8]
        .into_iter()
        .chain(types.iter().cloned())
        .collect();
    let mut copy = Copy::new(transaction, sql, types);

    for row in rows {
        let common: [&(dyn ToSql + Sync); 6] =
            [&key.integration, &key.stream, &row.provider_id, &row.sealed, &row.digest, &round];
        let values: Vec<&(dyn ToSql + Sync)> = match &row.columns {
            Columns::Event { starts_at, ends_at, all_day, status, series_id, kind } => {
                let specific: [&(dyn ToSql + Sync); 7] =
                    [starts_at, ends_at, all_day, status, series_id, kind, &row.updated_at];
                common.iter().chain(&specific).copied().collect()
            }
            Columns::Contact => common.iter().copied().chain([&row.updated_at as _]).collect(),
            Columns::SavedTrack { added_at, track } => {
                let specific: [&(dyn ToSql + Sync); 6] = [
                    added_at,
                    &track.id,
                    &track.name,
                    &track.artists,
                    &track.album,
                    &track.duration_ms,
                ];
                common.iter().chain(&specific).copied().collect()
            }
            Columns::Playlist { snapshot_id, entries, public, collaborative } => {
                let specific: [&(dyn ToSql + Sync); 4] =
                    [snapshot_id, entries, public, collaborative];
                common.iter().chain(&specific).copied().collect()
            }
            // Plays are inserted by `upsert_rows`, which skips the ones already stored.
            Columns::Play { .. } => return Err(mismatch(key.dataset)),
        };
        copy.row(&values)?;
    }
    copy.finish().await
}

/// Whether `columns` are those of `dataset`'s table.
fn belongs(columns: &Columns, dataset: Dataset) -> bool {
    matches!(
        (columns, dataset),
        (Columns::Event { .. }, Dataset::Calendar)
            | (Columns::Contact, Dataset::Contacts)
            | (Columns::Play { .. }, Dataset::RecentlyPlayed)
            | (Columns::SavedTrack { .. }, Dataset::SavedTracks)
            | (Columns::Playlist { .. }, Dataset::Playlists)
    )
}

fn mismatch(dataset: Dataset) -> Error {
    Error::InvalidRecords {
        dataset: dataset.name().to_owned(),
        reason: "a row's columns belong to another dataset".to_owned(),
    }
}

/// The dataset's own columns in a `COPY`, and their types.
fn copy_columns(dataset: Dataset) -> (&'static str, &'static [Type]) {
    match dataset {
        Dataset::Calendar => (
            "starts_at, ends_at, all_day, status, series_id, kind, updated_at",
            &[
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::BOOL,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
            ],
        ),
        Dataset::Contacts => ("updated_at", &[Type::TIMESTAMPTZ]),
        Dataset::SavedTracks => (
            "added_at, track_id, track_name, artists, album, duration_ms",
            &[Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TEXT_ARRAY, Type::TEXT, Type::INT8],
        ),
        Dataset::Playlists => (
            "snapshot_id, entries, public, collaborative",
            &[Type::TEXT, Type::INT8, Type::BOOL, Type::BOOL],
        ),
        Dataset::RecentlyPlayed => ("", &[]),
    }
}

/// Writes `rows` with one upsert statement; counts what was added, updated and left unchanged.
async fn upsert_rows(
    transaction: &Transaction<'_>,
    key: &StreamKey,
    round: i64,
    full: bool,
    rows: &[&Row],
) -> Result<Counts, Error> {
    if rows.is_empty() {
        return Ok(Counts::default());
    }
    let mismatch = || mismatch(key.dataset);
    let ids: Vec<&str> = rows.iter().map(|row| row.provider_id.as_str()).collect();
    let sealed: Vec<&[u8]> = rows.iter().map(|row| row.sealed.as_slice()).collect();
    let digests: Vec<&[u8]> = rows.iter().map(|row| row.digest.as_slice()).collect();
    let updated_at: Vec<Option<OffsetDateTime>> = rows.iter().map(|row| row.updated_at).collect();
    let common: [&(dyn ToSql + Sync); 7] =
        [&key.integration, &key.stream, &round, &full, &ids, &sealed, &digests];

    let (added, updated) = match key.dataset {
        Dataset::Calendar => {
            let mut columns = EventColumns::default();
            for row in rows {
                columns.push(&row.columns).ok_or_else(mismatch)?;
            }
            let specific: [&(dyn ToSql + Sync); 7] = [
                &columns.starts_at,
                &columns.ends_at,
                &columns.all_day,
                &columns.status,
                &columns.series_id,
                &columns.kind,
                &updated_at,
            ];
            upsert(transaction, &EVENTS, &common, &specific).await?
        }
        Dataset::Contacts => {
            if rows.iter().any(|row| row.columns != Columns::Contact) {
                return Err(mismatch());
            }
            upsert(transaction, &CONTACTS, &common, &[&updated_at]).await?
        }
        Dataset::SavedTracks => {
            let mut added_at = Vec::with_capacity(rows.len());
            let mut tracks = TrackColumns::default();
            for row in rows {
                let Columns::SavedTrack { added_at: at, track } = &row.columns else {
                    return Err(mismatch());
                };
                added_at.push(*at);
                tracks.push(track);
            }
            let specific: [&(dyn ToSql + Sync); 6] = [
                &added_at,
                &tracks.id,
                &tracks.name,
                &tracks.artists,
                &tracks.album,
                &tracks.duration_ms,
            ];
            upsert(transaction, &SAVED_TRACKS, &common, &specific).await?
        }
        Dataset::Playlists => {
            let (mut snapshot, mut entries, mut public, mut collaborative) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for row in rows {
                let Columns::Playlist { snapshot_id, entries: n, public: p, collaborative: c } =
                    &row.columns
                else {
                    return Err(mismatch());
                };
                snapshot.push(snapshot_id.as_str());
                entries.push(*n);
                public.push(*p);
                collaborative.push(*c);
            }
            let specific: [&(dyn ToSql + Sync); 4] = [&snapshot, &entries, &public, &collaborative];
            upsert(transaction, &PLAYLISTS, &common, &specific).await?
        }
        Dataset::RecentlyPlayed => {
            let mut played_at = Vec::with_capacity(rows.len());
            let mut tracks = TrackColumns::default();
            for row in rows {
                let Columns::Play { played_at: at, track } = &row.columns else {
                    return Err(mismatch());
                };
                played_at.push(*at);
                tracks.push(track);
            }
            let added = transaction
                .execute(
                    INSERT_PLAYS,
                    &[
                        &key.integration,
                        &key.stream,
                        &ids,
                        &sealed,
                        &played_at,
                        &tracks.id,
                        &tracks.name,
                        &tracks.artists,
                        &tracks.album,
                        &tracks.duration_ms,
                    ],
                )
                .await?;
            (added, 0)
        }
    };

    let written = added + updated;
    Ok(Counts {
        added,
        updated,
        deleted: 0,
        unchanged: (rows.len() as u64).saturating_sub(written),
    })
}

/// The parts of one dataset's upsert statement.
struct Upsert {
    /// The table.
    table: &'static str,
    /// The dataset's name in `round_seen`.
    dataset: &'static str,
    /// The unnest arguments and names of the columns after the seven common parameters.
    unnest: &'static str,
    /// The columns the table takes from the page, after the common ones.
    columns: &'static str,
    /// The expressions over the page's columns (`p.`) that fill `columns`.
    values: &'static str,
}

const EVENTS: Upsert = Upsert {
    table: "datapunk.calendar_events",
    dataset: "calendar",
    unnest: "$8::timestamptz[], $9::timestamptz[], $10::boolean[], $11::text[], $12::text[],
             $13::text[], $14::timestamptz[]) AS p (provider_id, sealed, digest, starts_at,
             ends_at, all_day, status, series_id, kind, updated_at",
    columns: "starts_at, ends_at, all_day, status, series_id, kind, updated_at",
    values: "p.starts_at, p.ends_at, p.all_day, p.status, p.series_id, p.kind, p.updated_at",
};

const CONTACTS: Upsert = Upsert {
    table: "datapunk.contacts",
    dataset: "contacts",
    unnest: "$8::timestamptz[]) AS p (provider_id, sealed, digest, updated_at",
    columns: "updated_at",
    values: "p.updated_at",
};

const SAVED_TRACKS: Upsert = Upsert {
    table: "datapunk.saved_tracks",
    dataset: "saved-tracks",
    unnest: "$8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[],
             $13::bigint[]) AS p (provider_id, sealed, digest, added_at, track_id, track_name,
             artists, album, duration_ms",
    columns: "added_at, track_id, track_name, artists, album, duration_ms",
    values: "p.added_at, p.track_id, p.track_name,
             ARRAY(SELECT jsonb_array_elements_text(p.artists::jsonb)), p.album, p.duration_ms",
};

const PLAYLISTS: Upsert = Upsert {
    table: "datapunk.playlists",
    dataset: "playlists",
    unnest: "$8::text[], $9::bigint[], $10::boolean[], $11::boolean[]) AS p (provider_id,
             sealed, digest, snapshot_id, entries, public, collaborative",
    columns: "snapshot_id, entries, public, collaborative",
    values: "p.snapshot_id, p.entries, p.public, p.collaborative",
};

/// Plays never change: a play seen again is skipped.
const INSERT_PLAYS: &str = "INSERT INTO datapunk.plays (integration, stream, provider_id, sealed,
         played_at, track_id, track_name, artists, album, duration_ms)
     SELECT $1::text, $2::text, p.provider_id, p.sealed, p.played_at, p.track_id, p.track_name,
            ARRAY(SELECT jsonb_array_elements_text(p.artists::jsonb)), p.album, p.duration_ms
     FROM unnest($3::text[], $4::bytea[], $5::timestamptz[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::bigint[])
          AS p (provider_id, sealed, played_at, track_id, track_name, artists, album,
                duration_ms)
     ON CONFLICT DO NOTHING";

/// Runs one dataset's upsert: `common` are the integration, the stream, the round, whether it
/// is full, and the ids, sealed messages and digests; `specific` the dataset's columns.
/// Returns the rows added and updated.
///
/// Rows whose stored digest equals the page's are not touched, not even locked; in a full
/// round their ids go to `round_seen` instead, in the same statement.
async fn upsert(
    transaction: &Transaction<'_>,
    upsert: &Upsert,
    common: &[&(dyn ToSql + Sync); 7],
    specific: &[&(dyn ToSql + Sync)],
) -> Result<(u64, u64), Error> {
    let Upsert { table, dataset, unnest, columns, values } = upsert;
    let set: Vec<String> = columns
        .split(',')
        .map(str::trim)
        .chain(["sealed", "digest", "seen_round"])
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    let sql = format!(
        "WITH page AS (
             SELECT * FROM unnest($5::text[], $6::bytea[], $7::bytea[], {unnest})
         ), known AS (
             -- One primary-key lookup per row of the page, whatever the planner believes of
             -- the table's size: a join here may be planned as a scan of the whole table,
             -- which makes a long sync cost the square of its length.
             SELECT p.provider_id,
                    (SELECT t.digest FROM {table} t
                     WHERE t.integration = $1 AND t.stream = $2
                       AND t.provider_id = p.provider_id) = p.digest AS unchanged
             FROM page p
         ), written AS (
             INSERT INTO {table} AS t (integration, stream, provider_id, sealed, digest,
                                       seen_round, {columns})
             SELECT $1::text, $2::text, p.provider_id, p.sealed, p.digest, $3::bigint, {values}
             FROM page p JOIN known k USING (provider_id)
             WHERE k.unchanged IS NOT TRUE
             ON CONFLICT (integration, stream, provider_id) DO UPDATE
                 SET {set}, synced_at = now()
                 WHERE t.digest <> excluded.digest
             RETURNING t.xmax = 0 AS inserted
         ), seen AS (
             INSERT INTO datapunk.round_seen (integration, dataset, stream, provider_id, round)
             SELECT $1::text, '{dataset}', $2::text, k.provider_id, $3::bigint FROM known k
             WHERE $4::boolean AND k.unchanged
             ON CONFLICT (integration, dataset, stream, provider_id) DO UPDATE
                 SET round = excluded.round WHERE round_seen.round <> excluded.round
         )
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
         FROM written",
        set = set.join(", ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = common.iter().chain(specific).copied().collect();

    let row = transaction.query_one(&sql, &params).await?;
    Ok((unsigned(row.get(0)), unsigned(row.get(1))))
}

/// The event columns of a page, one vector per column.
#[derive(Default)]
struct EventColumns<'a> {
    starts_at: Vec<Option<OffsetDateTime>>,
    ends_at: Vec<Option<OffsetDateTime>>,
    all_day: Vec<bool>,
    status: Vec<&'a str>,
    series_id: Vec<Option<&'a str>>,
    kind: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// Adds an event's columns; `None` when they are another dataset's.
    fn push(&mut self, columns: &'a Columns) -> Option<()> {
        let Columns::Event { starts_at, ends_at, all_day, status, series_id, kind } = columns
        else {
            return None;
        };
        self.starts_at.push(*starts_at);
        self.ends_at.push(*ends_at);
        self.all_day.push(*all_day);
        self.status.push(status);
        self.series_id.push(series_id.as_deref());
        self.kind.push(kind);
        Some(())
    }
}

/// The track columns of a page; artists as one JSON array per track, since PostgreSQL cannot
/// unnest an array of arrays of different lengths.
#[derive(Default)]
struct TrackColumns<'a> {
    id: Vec<&'a str>,
    name: Vec<&'a str>,
    artists: Vec<String>,
    album: Vec<&'a str>,
    duration_ms: Vec<i64>,
}

impl<'a> TrackColumns<'a> {
    fn push(&mut self, track: &'a Track) {
        self.id.push(&track.id);
        self.name.push(&track.name);
        self.artists.push(serde_json::Value::from(track.artists.as_slice()).to_string());
        self.album.push(&track.album);
        self.duration_ms.push(track.duration_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, digest: u8) -> Row {
        Row {
            provider_id: id.to_owned(),
            updated_at: None,
            columns: Columns::Contact,
            sealed: vec![digest],
            digest: vec![digest],
        }
    }

    #[test]
    fn a_page_keeps_the_last_row_of_each_id_in_order() {
        let rows = [row("a", 1), row("b", 1), row("a", 2), row("c", 1)];

        let kept = last_of_each_id(&rows);

        let kept: Vec<(&str, u8)> =
            kept.iter().map(|r| (r.provider_id.as_str(), r.digest[0])).collect();
        assert_eq!(kept, [("b", 1), ("a", 2), ("c", 1)]);
    }
}
