//! Writing encrypted fields leaves neither the data key nor the plaintext anywhere PostgreSQL
//! keeps things: not in a server log that records every statement with its parameters, not in
//! `pg_stat_statements` or `pg_stat_activity`, not in the data directory or its WAL.
//!
//! Every place is scanned twice: once for what must be absent, and once for a control marker and
//! a control key that the test deliberately sends in clear, which must be found. A scan that
//! looks in the wrong place, or cannot see through an encoding, fails the test instead of
//! passing it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use datapunk_testkit::Cluster;
use datapunk_tests::files_containing;
use datapunk_vault::field;
use datapunk_vault::key::{DataKey, KeyPurpose};
use tokio_postgres::Client;

const FIELDS: usize = 1_000;

/// A marker no earlier run can have left behind.
fn marker(kind: &str) -> String {
    format!("DPK-{kind}-MARKER-{:016x}", RandomState::new().hash_one(kind))
}

/// The forms a key could leak in: its raw bytes, hexadecimal in both cases, base64 in both
/// alphabets (without padding, so that padded text matches too).
fn key_forms(name: &str, key: &DataKey) -> Vec<(String, Vec<u8>)> {
    let raw = key.expose_secret();
    let hex = hex::encode(raw);
    vec![
        (format!("{name} key, raw"), raw.to_vec()),
        (format!("{name} key, lowercase hex"), hex.clone().into_bytes()),
        (format!("{name} key, uppercase hex"), hex.to_uppercase().into_bytes()),
        (format!("{name} key, base64"), STANDARD_NO_PAD.encode(raw).into_bytes()),
        (format!("{name} key, base64url"), URL_SAFE_NO_PAD.encode(raw).into_bytes()),
    ]
}

/// The names of the `needles` found in `haystack`.
fn found<'a>(haystack: &[u8], needles: &'a [(String, Vec<u8>)]) -> Vec<&'a str> {
    needles
        .iter()
        .filter(|(_, needle)| memchr::memmem::find(haystack, needle).is_some())
        .map(|(name, _)| name.as_str())
        .collect()
}

async fn texts(client: &Client, sql: &str) -> Vec<u8> {
    let rows = client.query(sql, &[]).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    let mut all = Vec::new();
    for row in rows {
        let text: Option<String> = row.get(0);
        all.extend_from_slice(text.unwrap_or_default().as_bytes());
        all.push(b'\n');
    }
    all
}

#[tokio::test]
async fn encrypted_fields_leave_no_key_or_plaintext_in_logs_statistics_or_files() {
    let cluster = Cluster::start_with(&[
        ("log_statement", "all"),
        ("log_min_duration_statement", "0"),
        ("log_parameter_max_length", "-1"),
        ("shared_preload_libraries", "pg_stat_statements"),
        ("pg_stat_statements.track", "all"),
    ]);
    let db = cluster.create_database("no_leak").await;
    let client = cluster.admin_client(&db).await;
    client
        .batch_execute(
            "CREATE EXTENSION pg_stat_statements;
             CREATE TABLE fields (id int PRIMARY KEY, value bytea NOT NULL);
             CREATE TABLE control (value text NOT NULL);",
        )
        .await
        .expect("create the tables");
    // The controls, sent first from a session of their own: a marker written in clear into
    // another table, as a literal in a utility statement (which pg_stat_statements keeps
    // verbatim) and in the session's last query; and a key in every text form looked for.
    let control = cluster.admin_client(&db).await;
    let control_marker = marker("CONTROL");
    let control_key = DataKey::generate(KeyPurpose::integration("control")).expect("a key");
    // Raw bytes reach the log only as hexadecimal, so the text forms are the controls.
    let control_forms: Vec<_> = key_forms("control", &control_key).into_iter().skip(1).collect();
    control
        .execute("INSERT INTO control (value) VALUES ($1)", &[&control_marker])
        .await
        .expect("insert the control marker");
    control
        .batch_execute(&format!("COMMENT ON TABLE control IS '{control_marker}'"))
        .await
        .expect("comment with the control marker");
    for (_, form) in &control_forms {
        let text = std::str::from_utf8(form).expect("text forms are ASCII");
        control.execute("SELECT $1::text", &[&text]).await.expect("send a control key form");
    }
    control
        .batch_execute(&format!("SELECT 1 AS \"{control_marker}\""))
        .await
        .expect("a last query holding the control marker");

    let key = DataKey::generate(KeyPurpose::integration("spotify")).expect("a data key");
    let secret_marker = marker("SECRET");
    for id in 0..FIELDS {
        let plaintext = format!("track {id} by {secret_marker}");
        let value = field::encrypt_str(&key, &plaintext).expect("encrypt");
        client
            .execute("INSERT INTO fields (id, value) VALUES ($1, $2)", &[&(id as i32), &value])
            .await
            .expect("insert an encrypted field");
    }
    let watcher = cluster.admin_client(&db).await;

    let mut secrets = key_forms("data", &key);
    secrets.push(("plaintext marker".to_owned(), secret_marker.clone().into_bytes()));
    // A bytea parameter is logged in hexadecimal.
    secrets.push(("plaintext marker, hex".to_owned(), hex::encode(&secret_marker).into_bytes()));
    let mut controls = control_forms;
    controls.push(("control marker".to_owned(), control_marker.clone().into_bytes()));

    // The server log: every statement and every parameter.
    let log = cluster.log();
    assert!(log.contains("INSERT INTO fields"), "the log records statements");
    assert_eq!(found(log.as_bytes(), &secrets), Vec::<&str>::new(), "in the server log");
    assert_eq!(found(log.as_bytes(), &controls).len(), controls.len(), "controls in the log");

    // pg_stat_statements: the text of every statement run.
    let statements = texts(&watcher, "SELECT query FROM pg_stat_statements").await;
    let control_marker_only = &controls[controls.len() - 1..];
    assert!(memchr::memmem::find(&statements, b"INSERT INTO fields").is_some());
    assert_eq!(found(&statements, &secrets), Vec::<&str>::new(), "in pg_stat_statements");
    assert_eq!(found(&statements, control_marker_only).len(), 1, "control in pg_stat_statements");

    // pg_stat_activity: each session's current or last query.
    let activity = texts(&watcher, "SELECT query FROM pg_stat_activity").await;
    assert!(memchr::memmem::find(&activity, b"INSERT INTO fields").is_some());
    assert_eq!(found(&activity, &secrets), Vec::<&str>::new(), "in pg_stat_activity");
    assert_eq!(found(&activity, control_marker_only).len(), 1, "control in pg_stat_activity");

    // The data directory, tables and WAL, once the buffers are on disk.
    watcher.batch_execute("CHECKPOINT").await.expect("checkpoint");
    let data = cluster.data_dir();
    let control_files = files_containing(data, control_marker.as_bytes());
    assert!(
        control_files.iter().any(|path| path.starts_with(data.join("base"))),
        "the control marker is in a table file: {control_files:?}"
    );
    assert!(
        control_files.iter().any(|path| path.starts_with(data.join("pg_wal"))),
        "the control marker is in the WAL: {control_files:?}"
    );
    for (name, secret) in &secrets {
        let files = files_containing(data, secret);
        assert!(files.is_empty(), "{name} found in the data directory: {files:?}");
    }
}
