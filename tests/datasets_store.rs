//! The dataset tables and the sync state of each stream, against a real PostgreSQL database
//! initialised by `datapunk db init`'s code: a page commits with its cursor or not at all, a
//! full round removes what it did not see only when it completes, an unchanged row is never
//! rewritten, and each role may do what the least-privilege model gives it.

use datapunk_store::admin;
use datapunk_store::datasets::{
    self, Columns, Counts, Cursor, Dataset, Next, Outcome, Page, Row, StreamKey, Track,
};
use datapunk_store::integrations::{self, Integration, State};
use datapunk_testkit::cluster;
use datapunk_vault::field;
use datapunk_vault::key::{DataKey, KeyPurpose};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_postgres::Client;

/// A database initialised as `datapunk db init` does, with the integrations `google` (calendar
/// and contacts consented) and `spotify`, and the app role's connection to it.
async fn database() -> (String, Client) {
    let cluster = cluster();
    let db = cluster.unique_db_name("datasets");
    admin::init(&cluster.conninfo("postgres", "postgres"), &db).await.expect("initialise");
    let mut app = connect(&db, "datapunk_app").await;
    for (name, provider, datasets) in [
        ("google", "google", &["calendar", "contacts"][..]),
        ("spotify", "spotify", &["recently-played", "saved-tracks", "playlists"][..]),
    ] {
        integrations::record_connected(&mut app, &integration(name, provider, datasets))
            .await
            .expect("record the integration");
    }
    (db, app)
}

async fn connect(db: &str, role: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(&cluster().conninfo(role, db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{role} connects: {e}"));
    tokio::spawn(connection);
    client
}

fn integration(name: &str, provider: &str, datasets: &[&str]) -> Integration {
    Integration {
        name: name.to_owned(),
        provider: provider.to_owned(),
        account_id: None,
        display_name: None,
        requested_scopes: Vec::new(),
        granted_scopes: Vec::new(),
        state: State::Active,
        token_expires_at: None,
        last_refresh_at: None,
        last_error: None,
        datasets: datasets
            .iter()
            .map(|d| integrations::Dataset {
                name: (*d).to_owned(),
                consented: true,
                granted: true,
            })
            .collect(),
    }
}

fn calendar(stream: &str) -> StreamKey {
    StreamKey::new("google", Dataset::Calendar, stream)
}

/// An event whose content is summed up by `version`: same version, same digest. The sealed
/// bytes differ at every call, as a fresh encryption's do.
fn event(id: &str, version: u8) -> Row {
    static SALT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let salt = SALT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Row {
        provider_id: id.to_owned(),
        updated_at: Some(datetime!(2026-03-01 12:00 UTC)),
        columns: Columns::Event {
            starts_at: Some(datetime!(2026-03-02 09:00 UTC)),
            ends_at: Some(datetime!(2026-03-02 10:00 UTC)),
            all_day: false,
            status: "confirmed".to_owned(),
            series_id: None,
            kind: "single".to_owned(),
        },
        sealed: vec![version, salt],
        digest: vec![version; 32],
    }
}

fn more(continuation: &str, full: bool) -> Next {
    Next::More(Cursor::Page { continuation: continuation.to_owned(), full })
}

fn page(upserts: Vec<Row>, removals: &[&str], next: Next) -> Page {
    Page { upserts, removals: removals.iter().map(|id| (*id).to_owned()).collect(), next }
}

/// The ids stored for `stream`, sorted.
async fn ids(client: &Client, stream: &str) -> Vec<String> {
    client
        .query(
            "SELECT provider_id FROM datapunk.calendar_events
             WHERE integration = 'google' AND stream = $1 ORDER BY 1",
            &[&stream],
        )
        .await
        .expect("read the events")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Each stored event's id with the version of its row: its xmin, ctid and xmax.
async fn row_versions(client: &Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT provider_id, xmin::text || ctid::text || xmax::text
             FROM datapunk.calendar_events ORDER BY 1",
            &[],
        )
        .await
        .expect("read the row versions")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Completes a full round of `key` holding exactly `rows`, from the state it is in.
async fn full_round(client: &mut Client, key: &StreamKey, rows: Vec<Row>) -> Counts {
    let state = datasets::restart_round(client, key).await.expect("restart");
    let done = Next::Done { sync_token: Some("token".into()), full: true };
    datasets::apply_page(client, key, state.round, &page(rows, &[], done)).await.expect("page")
}

#[tokio::test]
async fn a_page_and_its_cursor_commit_together_or_not_at_all() {
    let (db, mut app) = database().await;
    let key = calendar("primary");
    let state = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!((state.cursor.clone(), state.round), (Cursor::Start, 1));
    datasets::apply_page(&mut app, &key, 1, &page(vec![event("a", 1)], &[], more("p1", true)))
        .await
        .expect("first page");

    // The cursor's statement comes after the rows' and fails.
    let admin = cluster().admin_client(&db).await;
    admin
        .batch_execute(
            "CREATE FUNCTION datapunk.explode() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.cursor_text = 'explode' THEN RAISE EXCEPTION 'planted failure'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER explode BEFORE UPDATE ON datapunk.sync_streams
                 FOR EACH ROW EXECUTE FUNCTION datapunk.explode();",
        )
        .await
        .expect("plant the failure");
    let failing = page(vec![event("b", 1), event("c", 1)], &["a"], more("explode", true));
    let err = datasets::apply_page(&mut app, &key, 1, &failing).await.expect_err("it fails");

    assert!(format!("{err:?}").contains("planted failure"), "{err:?}");
    assert_eq!(ids(&app, "primary").await, ["a"], "rows of the failed page landed");
    let after = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!(after.cursor, Cursor::Page { continuation: "p1".into(), full: true });
    assert_eq!(after.round, 1);

    admin.batch_execute("DROP TRIGGER explode ON datapunk.sync_streams").await.expect("drop");
    let retried = page(vec![event("b", 1), event("c", 1)], &["a"], more("p2", true));
    let counts = datasets::apply_page(&mut app, &key, 1, &retried).await.expect("retry");
    assert_eq!(ids(&app, "primary").await, ["b", "c"]);
    assert_eq!((counts.added, counts.updated, counts.deleted), (2, 0, 1));
    let after = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!(after.cursor, Cursor::Page { continuation: "p2".into(), full: true });
}

#[tokio::test]
async fn a_full_round_removes_what_it_did_not_see_only_when_it_completes() {
    let (_db, mut app) = database().await;
    let (key, other) = (calendar("work"), calendar("family"));
    full_round(&mut app, &other, vec![event("x", 1)]).await;
    let first = full_round(&mut app, &key, vec![event("a", 1), event("b", 1), event("c", 1)]).await;
    assert_eq!((first.added, first.deleted), (3, 0));
    assert_eq!(
        datasets::open_stream(&app, &key).await.expect("open").cursor,
        Cursor::Synced("token".into())
    );

    // An incremental round that does not mention b and c keeps them.
    let round = datasets::open_stream(&app, &key).await.expect("open").round;
    let done = Next::Done { sync_token: Some("token-2".into()), full: false };
    datasets::apply_page(&mut app, &key, round, &page(vec![event("a", 1)], &[], done))
        .await
        .expect("incremental");
    assert_eq!(ids(&app, "work").await, ["a", "b", "c"]);

    // A full round that sees a (unchanged) and d (new) but not b and c.
    let round = datasets::restart_round(&mut app, &key).await.expect("restart").round;
    let rows = vec![event("a", 1), event("d", 1)];
    let seen = datasets::apply_page(&mut app, &key, round, &page(rows, &[], more("p2", true)))
        .await
        .expect("page");
    assert_eq!((seen.added, seen.unchanged, seen.deleted), (1, 1, 0));
    assert_eq!(ids(&app, "work").await, ["a", "b", "c", "d"], "removed before the round ended");

    let counts =
        datasets::finish_round(&mut app, &key, round, Some("token-3"), true).await.expect("finish");

    assert_eq!(counts.deleted, 2);
    assert_eq!(ids(&app, "work").await, ["a", "d"]);
    assert_eq!(ids(&app, "family").await, ["x"], "another calendar's rows were swept");
    let state = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!((state.cursor, state.round), (Cursor::Synced("token-3".into()), round + 1));
    let status = datasets::status(&app, Some("google")).await.expect("status");
    let calendar = status.iter().find(|s| s.dataset == Dataset::Calendar).expect("calendar");
    assert_eq!(calendar.records, 3);
    assert_eq!(calendar.streams, 2);
    // The last rounds: work added d and deleted b and c, family added x.
    assert_eq!((calendar.last_round.added, calendar.last_round.deleted), (2, 2));
}

#[tokio::test]
async fn a_restarted_round_keeps_the_old_rows_until_it_completes() {
    let (db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("a", 1), event("b", 1), event("c", 1)]).await;

    // A resync reads a page, then the daemon dies.
    let round = datasets::restart_round(&mut app, &key).await.expect("restart").round;
    datasets::apply_page(&mut app, &key, round, &page(vec![event("a", 1)], &[], more("p", true)))
        .await
        .expect("page");
    drop(app);
    let mut app = connect(&db, "datapunk_app").await;

    let state = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!(
        (state.cursor, state.round),
        (Cursor::Page { continuation: "p".into(), full: true }, round)
    );
    assert!(state.round_started_at.is_some());
    assert_eq!(ids(&app, "primary").await, ["a", "b", "c"]);

    // The provider asks for a resync again: the old round's pages count for nothing.
    let restarted = datasets::restart_round(&mut app, &key).await.expect("restart");
    assert_eq!((restarted.cursor, restarted.round), (Cursor::Start, round + 1));
    let stale = page(vec![event("z", 1)], &[], more("q", true));
    let err = datasets::apply_page(&mut app, &key, round, &stale).await.expect_err("stale");
    assert!(
        matches!(err, datapunk_store::Error::RoundChanged { expected, .. } if expected == round)
    );
    assert_eq!(ids(&app, "primary").await, ["a", "b", "c"]);

    let done = Next::Done { sync_token: Some("t".into()), full: true };
    let rows = vec![event("b", 2), event("d", 1)];
    let counts = datasets::apply_page(&mut app, &key, round + 1, &page(rows, &[], done))
        .await
        .expect("last page");

    assert_eq!((counts.added, counts.updated, counts.deleted), (1, 1, 2));
    assert_eq!(ids(&app, "primary").await, ["b", "d"]);
    let seen: i64 =
        app.query_one("SELECT count(*) FROM datapunk.round_seen", &[]).await.expect("count").get(0);
    assert_eq!(seen, 0, "a completed round leaves its marks behind");
}

#[tokio::test]
async fn rows_whose_digest_is_unchanged_are_neither_rewritten_nor_locked() {
    let (_db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("a", 1), event("b", 1), event("c", 1)]).await;
    let before = row_versions(&app).await;
    let sealed_before =
        datasets::sealed_records(&app, "google", Dataset::Calendar).await.expect("sealed");

    // An incremental round and a full round that bring the same records, sealed anew.
    let round = datasets::open_stream(&app, &key).await.expect("open").round;
    let done = Next::Done { sync_token: Some("t2".into()), full: false };
    let rows = vec![event("a", 1), event("b", 1), event("c", 1)];
    let incremental = datasets::apply_page(&mut app, &key, round, &page(rows.clone(), &[], done))
        .await
        .expect("incremental");
    let full = full_round(&mut app, &key, rows).await;

    for counts in [incremental, full] {
        assert_eq!((counts.added, counts.updated, counts.deleted, counts.unchanged), (0, 0, 0, 3));
    }
    assert_eq!(row_versions(&app).await, before, "an unchanged row was written or locked");
    let sealed_after =
        datasets::sealed_records(&app, "google", Dataset::Calendar).await.expect("sealed");
    assert_eq!(sealed_after, sealed_before);

    let changed =
        full_round(&mut app, &key, vec![event("a", 1), event("b", 2), event("c", 1)]).await;

    assert_eq!((changed.updated, changed.unchanged), (1, 2));
    let after = row_versions(&app).await;
    for ((id, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old == new, id != "b", "{id}: {old} -> {new}");
    }
}

#[tokio::test]
async fn removals_are_applied_counted_and_kept_for_status() {
    let (_db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("a", 1), event("b", 1), event("c", 1)]).await;

    let round = datasets::open_stream(&app, &key).await.expect("open").round;
    let first = page(vec![event("d", 1)], &["b", "never-stored"], more("p", false));
    let counts = datasets::apply_page(&mut app, &key, round, &first).await.expect("page");
    assert_eq!((counts.added, counts.deleted), (1, 1));
    let last =
        page(vec![event("a", 2)], &["c"], Next::Done { sync_token: Some("t".into()), full: false });
    datasets::apply_page(&mut app, &key, round, &last).await.expect("last page");

    assert_eq!(ids(&app, "primary").await, ["a", "d"]);
    let status = datasets::status(&app, Some("google")).await.expect("status");
    let calendar = status.iter().find(|s| s.dataset == Dataset::Calendar).expect("calendar");
    assert_eq!(
        (calendar.last_round.added, calendar.last_round.updated, calendar.last_round.deleted),
        (1, 1, 2)
    );
    assert_eq!(calendar.last_outcome, Some(Outcome::Success));
    assert!(calendar.last_success_at.is_some());
    assert!(!calendar.syncing);
}

#[tokio::test]
async fn a_failure_is_shown_and_the_stream_resumes_from_its_cursor() {
    let (_db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("a", 1)]).await;
    let round = datasets::open_stream(&app, &key).await.expect("open").round;
    datasets::apply_page(&mut app, &key, round, &page(vec![event("b", 1)], &[], more("p", false)))
        .await
        .expect("page");

    datasets::record_failure(&app, &key, "the provider sent truncated JSON").await.expect("fail");

    let state = datasets::open_stream(&app, &key).await.expect("open");
    assert_eq!(
        (state.cursor, state.round),
        (Cursor::Page { continuation: "p".into(), full: false }, round)
    );
    let status = datasets::status(&app, None).await.expect("status");
    let calendar = status
        .iter()
        .find(|s| s.integration == "google" && s.dataset == Dataset::Calendar)
        .expect("calendar");
    assert_eq!(calendar.last_outcome, Some(Outcome::Failure));
    assert_eq!(calendar.last_error.as_deref(), Some("the provider sent truncated JSON"));
    assert!(calendar.last_success_at.is_some(), "the last success is forgotten");
    assert!(calendar.syncing);
    assert_eq!(calendar.records, 2);
    // Consented but never synced: listed with nothing known.
    let contacts = status
        .iter()
        .find(|s| s.integration == "google" && s.dataset == Dataset::Contacts)
        .expect("contacts");
    assert_eq!((contacts.streams, contacts.records, contacts.last_outcome), (0, 0, None));
}

fn track(id: &str) -> Track {
    Track {
        id: id.to_owned(),
        name: format!("Song {id}"),
        artists: vec!["Ana".to_owned(), "Zoë, \"the\" band".to_owned()],
        album: "Album".to_owned(),
        duration_ms: 200_000,
    }
}

fn play(at: OffsetDateTime, track_id: &str) -> Row {
    Row {
        provider_id: format!("{}:{track_id}", at.unix_timestamp() * 1000),
        updated_at: None,
        columns: Columns::Play { played_at: at, track: track(track_id) },
        sealed: vec![1],
        digest: Vec::new(),
    }
}

#[tokio::test]
async fn plays_are_appended_once_and_never_swept_or_rewritten() {
    let (_db, mut app) = database().await;
    let key = StreamKey::new("spotify", Dataset::RecentlyPlayed, "");
    let (t1, t2) = (datetime!(2026-03-01 08:00 UTC), datetime!(2026-03-01 08:04 UTC));
    let state = datasets::open_stream(&app, &key).await.expect("open");
    let done = |token: &str| Next::Done { sync_token: Some(token.into()), full: true };
    let first = page(vec![play(t1, "t-1"), play(t2, "t-2")], &[], done("1"));
    let counts = datasets::apply_page(&mut app, &key, state.round, &first).await.expect("page");
    assert_eq!(counts.added, 2);

    let again = page(vec![play(t2, "t-2")], &[], done("2"));
    let counts = datasets::apply_page(&mut app, &key, state.round + 1, &again).await.expect("page");

    assert_eq!((counts.added, counts.unchanged, counts.deleted), (0, 1, 0));
    let rows = app
        .query("SELECT track_id, artists FROM datapunk.plays ORDER BY played_at", &[])
        .await
        .expect("plays");
    assert_eq!(rows.len(), 2, "a play missing from the newest page was swept");
    assert_eq!(rows[0].get::<_, Vec<String>>(1), track("t-1").artists);
    let err = app
        .batch_execute("UPDATE datapunk.plays SET track_name = 'x'")
        .await
        .expect_err("the app rewrote a play");
    assert!(err.as_db_error().is_some_and(|e| e.message().contains("permission denied")), "{err}");
}

#[tokio::test]
async fn every_dataset_round_trips_its_columns_and_refuses_another_datasets_rows() {
    let (_db, mut app) = database().await;
    let saved = StreamKey::new("spotify", Dataset::SavedTracks, "");
    let row = Row {
        provider_id: "t-1".into(),
        updated_at: None,
        columns: Columns::SavedTrack {
            added_at: datetime!(2025-12-24 18:00 UTC),
            track: track("t-1"),
        },
        sealed: vec![1],
        digest: vec![1; 32],
    };
    full_round(&mut app, &saved, vec![row]).await;
    let playlists = StreamKey::new("spotify", Dataset::Playlists, "");
    let playlist = Row {
        provider_id: "pl-1".into(),
        updated_at: None,
        columns: Columns::Playlist {
            snapshot_id: "snap".into(),
            entries: 12,
            public: None,
            collaborative: true,
        },
        sealed: vec![1],
        digest: vec![1; 32],
    };
    full_round(&mut app, &playlists, vec![playlist]).await;
    let contacts = StreamKey::new("google", Dataset::Contacts, "");
    let contact = Row {
        provider_id: "people/c1".into(),
        updated_at: Some(datetime!(2026-01-01 0:00 UTC)),
        columns: Columns::Contact,
        sealed: vec![1],
        digest: vec![1; 32],
    };
    full_round(&mut app, &contacts, vec![contact]).await;

    let stored = app
        .query_one(
            "SELECT s.track_name, s.artists, s.duration_ms, p.entries, p.public, p.collaborative,
                    c.updated_at
             FROM datapunk.saved_tracks s, datapunk.playlists p, datapunk.contacts c",
            &[],
        )
        .await
        .expect("read back");
    assert_eq!(stored.get::<_, String>(0), "Song t-1");
    assert_eq!(stored.get::<_, Vec<String>>(1), track("t-1").artists);
    assert_eq!(stored.get::<_, i64>(2), 200_000);
    assert_eq!(stored.get::<_, i64>(3), 12);
    assert_eq!(stored.get::<_, Option<bool>>(4), None);
    assert!(stored.get::<_, bool>(5));
    assert_eq!(stored.get::<_, OffsetDateTime>(6), datetime!(2026-01-01 0:00 UTC));

    let round = datasets::open_stream(&app, &contacts).await.expect("open").round;
    let wrong = page(vec![event("e", 1)], &[], more("p", false));
    let err = datasets::apply_page(&mut app, &contacts, round, &wrong).await.expect_err("wrong");
    assert!(matches!(err, datapunk_store::Error::InvalidRecords { .. }), "{err:?}");
    let state = datasets::open_stream(&app, &contacts).await.expect("open");
    assert_eq!(state.cursor, Cursor::Synced("token".into()));
}

#[tokio::test]
async fn the_reader_reads_the_status_and_sealed_rows_but_writes_nothing() {
    let (db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("a", 1)]).await;
    let mut reader = connect(&db, "datapunk_reader").await;

    let status = datasets::status(&reader, Some("google")).await.expect("the reader reads");
    let sealed =
        datasets::sealed_records(&reader, "google", Dataset::Calendar).await.expect("rows");
    let err = datasets::apply_page(&mut reader, &key, 1, &page(vec![], &[], more("p", false)))
        .await
        .expect_err("the reader wrote");

    assert_eq!(status.iter().map(|s| s.records).sum::<u64>(), 1);
    assert_eq!(sealed.len(), 1);
    assert!(matches!(err, datapunk_store::Error::Permission { .. }), "{err:?}");
    for sql in [
        "INSERT INTO datapunk.contacts (integration, stream, provider_id, sealed, digest,
             seen_round) VALUES ('google', '', 'x', '\\x00', '\\x00', 1)",
        "UPDATE datapunk.calendar_events SET status = 'cancelled'",
        "DELETE FROM datapunk.saved_tracks",
        "UPDATE datapunk.sync_streams SET round = 1",
        "SELECT * FROM datapunk.round_seen",
    ] {
        let err = reader.batch_execute(sql).await.expect_err(sql);
        let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
        assert!(message.contains("permission denied"), "{sql}: {message}");
    }
}

#[tokio::test]
async fn each_role_has_exactly_its_rights_on_the_dataset_tables() {
    let (db, _app) = database().await;
    let admin = cluster().admin_client(&db).await;

    let report = admin::privileges(&admin, &db).await.expect("privileges");

    let rights = |role: &str, table: &str| {
        let role = report.iter().find(|r| r.role.name() == role).expect("the role");
        let t = role.tables.iter().find(|t| t.table == table).expect("the table");
        [t.select, t.insert, t.update, t.delete, t.truncate]
    };
    let (all, read, none) =
        ([true, true, true, true, false], [true, false, false, false, false], [false; 5]);
    for table in ["calendar_events", "contacts", "saved_tracks", "playlists", "sync_streams"] {
        let table = format!("datapunk.{table}");
        assert_eq!(rights("datapunk_app", &table), all, "{table}");
        assert_eq!(rights("datapunk_reader", &table), read, "{table}");
        assert_eq!(rights("datapunk_backup", &table), read, "{table}");
    }
    assert_eq!(rights("datapunk_app", "datapunk.plays"), [true, true, false, true, false]);
    assert_eq!(rights("datapunk_reader", "datapunk.plays"), read);
    assert_eq!(rights("datapunk_app", "datapunk.round_seen"), all);
    assert_eq!(rights("datapunk_reader", "datapunk.round_seen"), none);
    assert_eq!(rights("datapunk_backup", "datapunk.round_seen"), read);
}

#[tokio::test]
async fn pgcrypto_reads_a_field_of_a_stored_event_with_the_exported_key() {
    let (db, mut app) = database().await;
    let key = DataKey::generate(KeyPurpose::integration("google")).expect("a data key");
    let fields = [("summary", "Dentist, Dr. Ö"), ("location", "Main St. 1"), ("raw", "{}")];
    let mut row = event("a", 1);
    row.sealed = field::encrypt_fields(&key, &fields).expect("seal");
    row.digest = field::fingerprint(&key, &fields).to_vec();
    full_round(&mut app, &calendar("primary"), vec![row]).await;
    let reader = connect(&db, "datapunk_reader").await;

    let passphrase = key.export_passphrase();
    let summary: String = reader
        .query_one(
            "SELECT convert_from(datapunk.pgp_sym_decrypt_bytea(sealed, $1), 'UTF8')::jsonb
                    ->> 'summary'
             FROM datapunk.calendar_events WHERE provider_id = 'a'",
            &[&passphrase.expose_secret()],
        )
        .await
        .expect("pgcrypto decrypts")
        .get(0);

    assert_eq!(summary, "Dentist, Dr. Ö");
}

#[tokio::test]
async fn removing_an_integration_or_a_stream_removes_its_rows_and_state() {
    let (_db, mut app) = database().await;
    let (work, family) = (calendar("work"), calendar("family"));
    full_round(&mut app, &work, vec![event("a", 1), event("b", 1)]).await;
    full_round(&mut app, &family, vec![event("c", 1)]).await;
    assert_eq!(
        datasets::streams(&app, "google", Dataset::Calendar).await.expect("streams"),
        ["family", "work"]
    );

    let removed = datasets::remove_stream(&mut app, &work).await.expect("remove the stream");

    assert_eq!(removed, 2);
    assert_eq!(datasets::streams(&app, "google", Dataset::Calendar).await.expect("s"), ["family"]);
    app.execute("DELETE FROM datapunk.integrations WHERE name = 'google'", &[])
        .await
        .expect("delete the integration");
    let left: i64 = app
        .query_one(
            "SELECT (SELECT count(*) FROM datapunk.calendar_events)
                    + (SELECT count(*) FROM datapunk.sync_streams)",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
}

/// Every column of a table but the time of writing, per row, as text.
async fn stored_rows(client: &Client, table: &str, stream: &str) -> Vec<String> {
    client
        .query(
            &format!(
                "SELECT (to_jsonb(t) - 'synced_at' - 'stream' - 'seen_round')::text
                 FROM datapunk.{table} t WHERE stream = $1 ORDER BY provider_id"
            ),
            &[&stream],
        )
        .await
        .expect("read the rows")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn rows_new_to_a_full_round_are_copied_in_exactly_as_an_incremental_round_writes_them() {
    let (_db, mut app) = database().await;
    let mut series = event("occurrence", 3);
    series.columns = Columns::Event {
        starts_at: None,
        ends_at: Some(datetime!(2026-03-03 00:00 UTC)),
        all_day: true,
        status: "cancelled".to_owned(),
        series_id: Some("master".to_owned()),
        kind: "exception".to_owned(),
    };
    series.updated_at = None;
    let saved = Row {
        provider_id: "t-9".into(),
        updated_at: None,
        columns: Columns::SavedTrack {
            added_at: datetime!(2025-12-24 18:00:00.123 UTC),
            track: track("t-9"),
        },
        sealed: vec![0, 159, 255],
        digest: vec![7; 32],
    };
    let playlist = |public| Row {
        provider_id: format!("pl-{public:?}"),
        updated_at: None,
        columns: Columns::Playlist {
            snapshot_id: "snap ☀️".into(),
            entries: 0,
            public,
            collaborative: false,
        },
        sealed: vec![1],
        digest: vec![2; 32],
    };
    let contact = Row {
        provider_id: "people/c1".into(),
        updated_at: Some(datetime!(2026-01-01 0:00:00.000001 UTC)),
        columns: Columns::Contact,
        sealed: vec![3; 5000],
        digest: vec![3; 32],
    };
    let cases = [
        (Dataset::Calendar, "google", "calendar_events", vec![event("single", 1), series]),
        (Dataset::Contacts, "google", "contacts", vec![contact]),
        (Dataset::SavedTracks, "spotify", "saved_tracks", vec![saved]),
        (Dataset::Playlists, "spotify", "playlists", vec![playlist(None), playlist(Some(true))]),
    ];

    for (dataset, integration, table, rows) in cases {
        // "copied": a full round over an empty stream. "upserted": an incremental round.
        let copied = StreamKey::new(integration, dataset, "copied");
        let counts = full_round(&mut app, &copied, rows.clone()).await;
        assert_eq!(counts.added, rows.len() as u64, "{table}");
        let upserted = StreamKey::new(integration, dataset, "upserted");
        let round = datasets::open_stream(&app, &upserted).await.expect("open").round;
        let done = Next::Done { sync_token: Some("t".into()), full: false };
        datasets::apply_page(&mut app, &upserted, round, &page(rows.clone(), &[], done))
            .await
            .expect("an incremental page");

        let by_copy = stored_rows(&app, table, "copied").await;
        assert_eq!(by_copy.len(), rows.len(), "{table}");
        assert_eq!(by_copy, stored_rows(&app, table, "upserted").await, "{table}");
    }
}

#[tokio::test]
async fn a_full_round_copies_new_rows_and_upserts_known_ones_in_the_same_page() {
    let (_db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("known", 1), event("same", 1)]).await;

    let counts =
        full_round(&mut app, &key, vec![event("known", 2), event("same", 1), event("new", 1)])
            .await;

    assert_eq!((counts.added, counts.updated, counts.unchanged), (1, 1, 1));
    assert_eq!(ids(&app, "primary").await, ["known", "new", "same"]);
    let digests: Vec<(String, Vec<u8>)> = app
        .query("SELECT provider_id, digest FROM datapunk.calendar_events ORDER BY provider_id", &[])
        .await
        .expect("read")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(digests[0], ("known".to_owned(), vec![2; 32]));
}

#[tokio::test]
async fn a_disconnect_during_a_page_leaves_none_of_it_behind_and_refuses_the_next() {
    let (db, mut app) = database().await;
    let key = calendar("primary");
    full_round(&mut app, &key, vec![event("old", 1)]).await;
    // The page in flight takes a second to write its rows.
    let admin = cluster().admin_client(&db).await;
    admin
        .batch_execute(
            "CREATE FUNCTION datapunk.slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
             CREATE TRIGGER slow AFTER INSERT ON datapunk.calendar_events
                 FOR EACH STATEMENT EXECUTE FUNCTION datapunk.slow();",
        )
        .await
        .expect("slow the writes down");
    let round = datasets::open_stream(&app, &key).await.expect("open").round;
    let mut syncing = connect(&db, "datapunk_app").await;
    let in_flight = tokio::spawn(async move {
        let next = Next::More(Cursor::Synced("t".into()));
        let rows = vec![event("in-flight", 1)];
        datasets::apply_page(&mut syncing, &calendar("primary"), round, &page(rows, &[], next))
            .await
            .map(|_| syncing)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // What `datapunk disconnect` does: revoke, then remove the data.
    integrations::set_state(&app, "google", State::Revoked, None).await.expect("revoke");
    let removed = datasets::remove_integration_data(&mut app, "google").await.expect("remove");

    let mut syncing = in_flight.await.expect("the task").expect("the page began first");
    assert_eq!(removed, 2, "the old row and the page in flight");
    let left: i64 = app
        .query_one("SELECT count(*) FROM datapunk.calendar_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "a page in flight was left behind");
    let state = datasets::open_stream(&syncing, &key).await.expect("open").round;
    let next = Next::More(Cursor::Synced("t".into()));
    let err =
        datasets::apply_page(&mut syncing, &key, state, &page(vec![event("late", 1)], &[], next))
            .await
            .expect_err("a revoked integration takes no page");
    assert!(matches!(err, datapunk_store::Error::Disconnected { .. }), "{err:?}");
    assert!(ids(&app, "primary").await.is_empty());
}
