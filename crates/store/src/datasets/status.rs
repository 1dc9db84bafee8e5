//! What `datapunk status` and the tests read: each dataset's sync state and record count, and
//! the sealed rows themselves. Everything here needs only `SELECT`.

use tokio_postgres::Client;

use super::{Counts, Dataset, DatasetStatus, Outcome, SealedRecord, unsigned};
use crate::Error;

/// The sync state of every consented or synced dataset of `integration`, or of every
/// integration, by integration and dataset. Needs only `SELECT`.
///
/// # Errors
///
/// [`Error::Data`] for a dataset this build does not know; otherwise when the database cannot
/// be read.
pub async fn status(
    client: &Client,
    integration: Option<&str>,
) -> Result<Vec<DatasetStatus>, Error> {
    let rows = client
        .query(
            "WITH wanted AS (
                 SELECT integration, dataset FROM datapunk.integration_datasets
                 WHERE consented AND ($1::text IS NULL OR integration = $1)
                 UNION
                 SELECT integration, dataset FROM datapunk.sync_streams
                 WHERE $1::text IS NULL OR integration = $1
             )
             SELECT w.integration, w.dataset, count(s.stream), max(s.last_success_at),
                    (array_agg(s.last_outcome ORDER BY s.last_outcome_at DESC NULLS LAST))[1],
                    max(s.last_outcome_at),
                    (array_agg(s.last_error ORDER BY s.last_outcome_at DESC NULLS LAST))[1],
                    coalesce(sum(s.last_added), 0)::bigint,
                    coalesce(sum(s.last_updated), 0)::bigint,
                    coalesce(sum(s.last_deleted), 0)::bigint,
                    coalesce(bool_or(s.cursor_kind = 'page'), false)
             FROM wanted w LEFT JOIN datapunk.sync_streams s USING (integration, dataset)
             GROUP BY w.integration, w.dataset
             ORDER BY w.integration, w.dataset",
            &[&integration],
        )
        .await?;
    let records = client
        .query(
            "SELECT integration, 'calendar', count(*) FROM datapunk.calendar_events
                 WHERE $1::text IS NULL OR integration = $1 GROUP BY integration
             UNION ALL
             SELECT integration, 'contacts', count(*) FROM datapunk.contacts
                 WHERE $1::text IS NULL OR integration = $1 GROUP BY integration
             UNION ALL
             SELECT integration, 'recently-played', count(*) FROM datapunk.plays
                 WHERE $1::text IS NULL OR integration = $1 GROUP BY integration
             UNION ALL
             SELECT integration, 'saved-tracks', count(*) FROM datapunk.saved_tracks
                 WHERE $1::text IS NULL OR integration = $1 GROUP BY integration
             UNION ALL
             SELECT integration, 'playlists', count(*) FROM datapunk.playlists
                 WHERE $1::text IS NULL OR integration = $1 GROUP BY integration",
            &[&integration],
        )
        .await?;

    rows.iter()
        .map(|row| {
            let integration: String = row.get(0);
            let name: &str = row.get(1);
            let dataset = Dataset::from_name(name)
                .ok_or_else(|| Error::Data { reason: format!("unknown dataset {name:?}") })?;
            let stored = records
                .iter()
                .find(|r| r.get::<_, &str>(0) == integration && r.get::<_, &str>(1) == name)
                .map_or(0, |r| r.get::<_, i64>(2));
            let last_outcome = match row.get::<_, Option<&str>>(4) {
                None => None,
                Some("success") => Some(Outcome::Success),
                Some("failure") => Some(Outcome::Failure),
                Some(other) => {
                    return Err(Error::Data { reason: format!("unknown sync outcome {other:?}") });
                }
            };
            Ok(DatasetStatus {
                dataset,
                streams: unsigned(row.get(2)),
                records: unsigned(stored),
                last_success_at: row.get(3),
                last_outcome,
                last_outcome_at: row.get(5),
                last_error: row.get(6),
                last_round: Counts {
                    added: unsigned(row.get(7)),
                    updated: unsigned(row.get(8)),
                    deleted: unsigned(row.get(9)),
                    unchanged: 0,
                },
                syncing: row.get(10),
                integration,
            })
        })
        .collect()
}

/// Every stored row of `dataset` of `integration` as its id and sealed message, by stream and
/// id. Needs only `SELECT`.
///
/// # Errors
///
/// When the database cannot be read.
pub async fn sealed_records(
    client: &Client,
    integration: &str,
    dataset: Dataset,
) -> Result<Vec<SealedRecord>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT stream, provider_id, sealed FROM {} WHERE integration = $1
                 ORDER BY stream, provider_id",
                dataset.table()
            ),
            &[&integration],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| SealedRecord { stream: row.get(0), provider_id: row.get(1), sealed: row.get(2) })
        .collect())
}
