//! What field encryption costs at ingest: fields encrypted per second in memory, and the rate
//! of inserting rows into PostgreSQL with their four short fields encrypted, against the same
//! rows in plain text.
//!
//! Two ways of encrypting are measured: one OpenPGP message per field (four `bytea` columns),
//! and the way Datapunk stores rows, one message per row holding its four fields as a JSON
//! object (`field::encrypt_fields`, one `bytea` column).
//!
//! The target (encrypted ingest at least half as fast as plaintext) is judged on the upserts,
//! the statement sync writes with: rows are merged by their provider id, which `COPY` cannot
//! do (and `datapunk_app` may not create the temporary table a COPY-then-merge would need).
//! The COPY ratio is printed too, as the strictest bound: it leaves the encryption nothing to
//! hide behind.
//!
//! The inserts use binary `COPY ... FROM STDIN` through tokio-postgres, the fastest way in and
//! so the strictest baseline, and then batched upserts, the way a sync writes a page of
//! results; each into a fresh table of a throwaway cluster (from `datapunk-testkit`, so as root the cluster runs as
//! the unprivileged test account). The encrypted runs include the encryption: worker threads
//! encrypt batches of rows while the connection streams the previous ones. Each insert runs
//! five times, alternating, and the best run counts.
//!
//! Run with `cargo bench -p datapunk-vault`. It prints figures and asserts nothing.

use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use datapunk_testkit::Cluster;
use datapunk_vault::field;
use datapunk_vault::key::{DataKey, KeyPurpose};
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

const ROWS: usize = 100_000;
const FIELDS: usize = 4;
/// Rows per batch handed from the encryption threads to the connection.
const BATCH: usize = 1_000;
const RUNS: usize = 5;
/// The ratio of encrypted to plaintext insert rate Datapunk aims for.
const TARGET_RATIO: f64 = 0.5;

type Row = [String; FIELDS];
/// The encrypted columns of one row.
type EncryptedRow = Vec<Vec<u8>>;
/// The names of the four fields in a sealed row.
const NAMES: [&str; FIELDS] = ["summary", "location", "organizer", "description"];

fn main() {
    let rows = Arc::new(sample_rows());
    let key = Arc::new(DataKey::generate(KeyPurpose::integration("bench")).expect("a data key"));
    let threads = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let chars: usize = rows.iter().flatten().map(String::len).sum();

    println!(
        "datapunk-vault ingest: {ROWS} rows x {FIELDS} fields of 10-40 characters \
         (mean {:.1}), {threads} CPUs",
        chars as f64 / (ROWS * FIELDS) as f64
    );
    let single = best_of(|| encrypt_all(&rows, &key, 1, encrypt_row));
    let parallel = best_of(|| encrypt_all(&rows, &key, threads, encrypt_row));
    let sealed = best_of(|| encrypt_all(&rows, &key, 1, seal_row));
    let fields = (ROWS * FIELDS) as f64;
    println!("in memory, best of {RUNS}");
    println!("  (a) encryption, 1 thread       {:>10.0} fields/s", fields / secs(single));
    println!("      encryption, {threads} threads      {:>10.0} fields/s", fields / secs(parallel));
    println!(
        "      rows sealed, 1 thread      {:>10.0} fields/s  ({:.0} rows/s)",
        fields / secs(sealed),
        ROWS as f64 / secs(sealed)
    );

    let cluster = match std::panic::catch_unwind(Cluster::start) {
        Ok(cluster) => cluster,
        Err(_) => {
            println!(
                "no PostgreSQL cluster could be started (reason above); the insert figures need \
                 one: install the PostgreSQL server and run as root or a user that may run it"
            );
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(inserts(&cluster, rows, key, threads));
}

/// Times the plaintext and encrypted inserts and prints their rates and ratio.
async fn inserts(cluster: &Cluster, rows: Arc<Vec<Row>>, key: Arc<DataKey>, threads: usize) {
    let db = cluster.create_database("bench_ingest").await;
    let client = cluster.admin_client(&db).await;
    let version: String =
        client.query_one("SHOW server_version", &[]).await.expect("server version").get(0);
    let ready: Vec<EncryptedRow> = rows.iter().map(|row| encrypt_row(&key, row)).collect();
    let ready_sealed: Vec<EncryptedRow> = rows.iter().map(|row| seal_row(&key, row)).collect();
    let (mut plain, mut encrypted, mut prepared, mut row_sealed, mut prepared_sealed) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut bytes, mut sealed_bytes) = (0, 0);

    for run in 0..RUNS {
        plain = plain.min(copy_rows(&client, &format!("plain_{run}"), Type::TEXT, &rows).await);
        let table = format!("encrypted_{run}");
        let (elapsed, size) =
            copy_encrypted(&client, &table, FIELDS, &rows, &key, threads, encrypt_row).await;
        encrypted = encrypted.min(elapsed);
        bytes = size;
        prepared =
            prepared.min(copy_rows(&client, &format!("prepared_{run}"), Type::BYTEA, &ready).await);
        let table = format!("sealed_{run}");
        let (elapsed, size) =
            copy_encrypted(&client, &table, 1, &rows, &key, threads, seal_row).await;
        row_sealed = row_sealed.min(elapsed);
        sealed_bytes = size;
        let table = format!("prepared_sealed_{run}");
        prepared_sealed =
            prepared_sealed.min(copy_rows(&client, &table, Type::BYTEA, &ready_sealed).await);
    }

    let plain_rate = ROWS as f64 / secs(plain);
    let encrypted_rate = ROWS as f64 / secs(encrypted);
    let sealed_rate = ROWS as f64 / secs(row_sealed);
    let ratio = sealed_rate / plain_rate;
    println!(
        "PostgreSQL {version}, binary COPY into a new table (fsync off), best of {RUNS}",
        version = version.split_whitespace().next().unwrap_or("?")
    );
    println!("  (b) plaintext text columns     {plain_rate:>10.0} rows/s");
    println!(
        "  (c) encrypted bytea columns    {encrypted_rate:>10.0} rows/s  \
         (encryption on {threads} threads included; {:.0} bytes per field)",
        bytes as f64 / (ROWS * FIELDS) as f64
    );
    println!(
        "      the same, encrypted before {:>10.0} rows/s  (the cost of larger rows alone)",
        ROWS as f64 / secs(prepared)
    );
    println!(
        "  (d) one sealed bytea per row   {sealed_rate:>10.0} rows/s  \
         (encryption on {threads} threads included; {:.0} bytes per row)",
        sealed_bytes as f64 / ROWS as f64
    );
    println!(
        "      the same, encrypted before {:>10.0} rows/s",
        ROWS as f64 / secs(prepared_sealed)
    );
    println!("      (c)/(b) ratio              {:>10.2}", encrypted_rate / plain_rate);
    println!(
        "  (d)/(b) ratio                  {ratio:>10.2}   (the strictest bound: COPY cannot \
         merge rows, so sync does not use it)"
    );

    let (mut plain, mut sealed) = (Duration::MAX, Duration::MAX);
    for run in 0..RUNS {
        plain = plain.min(upsert(&client, &format!("upsert_plain_{run}"), &rows, None).await);
        let keyed = Some((&key, threads));
        sealed = sealed.min(upsert(&client, &format!("upsert_sealed_{run}"), &rows, keyed).await);
    }
    let (plain_rate, sealed_rate) = (ROWS as f64 / secs(plain), ROWS as f64 / secs(sealed));
    println!(
        "upserts of {BATCH} rows per statement (INSERT ... SELECT FROM unnest(...) ON CONFLICT \
         DO UPDATE, the way a sync writes a page), best of {RUNS}"
    );
    println!("  (e) plaintext text columns     {plain_rate:>10.0} rows/s");
    println!(
        "  (f) one sealed bytea per row   {sealed_rate:>10.0} rows/s  \
         (encryption on {threads} threads included)"
    );
    let ratio = sealed_rate / plain_rate;
    println!(
        "  (f)/(e) ratio                  {ratio:>10.2}   {} the target of {TARGET_RATIO}",
        verdict(ratio)
    );
}

fn verdict(ratio: f64) -> &'static str {
    if ratio >= TARGET_RATIO { "meets" } else { "misses" }
}

/// Upserts `rows` into a new table `name` in statements of [`BATCH`] rows, each with its own
/// primary key: in plain text, or sealed as in (d) on the given threads while the previous
/// batches are written. Returns the time taken.
async fn upsert(
    client: &Client,
    name: &str,
    rows: &Arc<Vec<Row>>,
    sealed: Option<(&Arc<DataKey>, usize)>,
) -> Duration {
    let (definition, sql) = match sealed {
        None => (
            "id text PRIMARY KEY, c0 text, c1 text, c2 text, c3 text",
            format!(
                "INSERT INTO {name} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::text[]) AS u ON CONFLICT (id) DO UPDATE SET c0 = excluded.c0, \
                 c1 = excluded.c1, c2 = excluded.c2, c3 = excluded.c3"
            ),
        ),
        Some(_) => (
            "id text PRIMARY KEY, sealed bytea",
            format!(
                "INSERT INTO {name} SELECT * FROM unnest($1::text[], $2::bytea[]) AS u \
                 ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed"
            ),
        ),
    };
    client
        .batch_execute(&format!("CREATE TABLE {name} ({definition})"))
        .await
        .expect("create the table");
    let statement = client.prepare(&sql).await.expect("prepare the upsert");
    let ids: Vec<String> = (0..rows.len()).map(|i| format!("event-{i:08}")).collect();

    let started = Instant::now();
    let mut written = 0;
    match sealed {
        None => {
            for (chunk, ids) in rows.chunks(BATCH).zip(ids.chunks(BATCH)) {
                let columns: [Vec<&str>; FIELDS] =
                    std::array::from_fn(|i| chunk.iter().map(|row| row[i].as_str()).collect());
                let [a, b, c, d] = &columns;
                written +=
                    client.execute(&statement, &[&ids, a, b, c, d]).await.expect("upsert a batch");
            }
        }
        Some((key, threads)) => {
            let (sender, mut batches) = mpsc::channel::<(usize, Vec<Vec<u8>>)>(2 * threads);
            let workers: Vec<_> = (0..threads)
                .map(|worker| {
                    let (rows, key, sender) = (Arc::clone(rows), Arc::clone(key), sender.clone());
                    thread::spawn(move || {
                        let chunks = rows.chunks(BATCH).enumerate().skip(worker).step_by(threads);
                        for (index, chunk) in chunks {
                            let batch = chunk.iter().flat_map(|row| seal_row(&key, row)).collect();
                            if sender.blocking_send((index, batch)).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            drop(sender);
            while let Some((index, batch)) = batches.recv().await {
                let ids = &ids[index * BATCH..(index * BATCH + batch.len())];
                written +=
                    client.execute(&statement, &[&ids, &batch]).await.expect("upsert a batch");
            }
            for worker in workers {
                worker.join().expect("an encryption thread panicked");
            }
        }
    }
    let elapsed = started.elapsed();

    assert_eq!(written, ROWS as u64);
    elapsed
}

/// Inserts `rows` into a new table `name` with as many columns of `column`'s type as a row has
/// values, with binary COPY; returns the time the COPY took.
async fn copy_rows<T: ToSql + Sync, R: AsRef<[T]>>(
    client: &Client,
    name: &str,
    column: Type,
    rows: &[R],
) -> Duration {
    let sql_type = if column == Type::BYTEA { "bytea" } else { "text" };
    let columns = rows.first().map_or(0, |row| row.as_ref().len());
    let definition: Vec<String> = (0..columns).map(|i| format!("c{i} {sql_type}")).collect();
    client
        .batch_execute(&format!("CREATE TABLE {name} ({})", definition.join(", ")))
        .await
        .expect("create the table");

    let started = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {name} FROM STDIN (FORMAT binary)"))
        .await
        .expect("start COPY");
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &vec![column; columns]));
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> =
            row.as_ref().iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&values).await.expect("write a row");
    }
    let written = writer.finish().await.expect("finish COPY");
    let elapsed = started.elapsed();

    assert_eq!(written, ROWS as u64);
    elapsed
}

/// Encrypts the rows with `encode` on `threads` threads while inserting them into a new table
/// of `columns` `bytea` columns; returns the time taken and the bytes of ciphertext written.
async fn copy_encrypted(
    client: &Client,
    table: &str,
    columns: usize,
    rows: &Arc<Vec<Row>>,
    key: &Arc<DataKey>,
    threads: usize,
    encode: fn(&DataKey, &Row) -> EncryptedRow,
) -> (Duration, usize) {
    let definition: Vec<String> = (0..columns).map(|i| format!("c{i} bytea")).collect();
    client
        .batch_execute(&format!("CREATE TABLE {table} ({})", definition.join(", ")))
        .await
        .expect("create the encrypted table");

    let started = Instant::now();
    let (sender, mut batches) = mpsc::channel::<Vec<EncryptedRow>>(2 * threads);
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            let (rows, key, sender) = (Arc::clone(rows), Arc::clone(key), sender.clone());
            thread::spawn(move || {
                for chunk in rows.chunks(BATCH).skip(worker).step_by(threads) {
                    let batch = chunk.iter().map(|row| encode(&key, row)).collect();
                    if sender.blocking_send(batch).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(sender);

    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
        .await
        .expect("start COPY");
    let types = vec![Type::BYTEA; columns];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut bytes = 0;
    while let Some(batch) = batches.recv().await {
        for row in &batch {
            bytes += row.iter().map(Vec::len).sum::<usize>();
            let values: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&values).await.expect("write a row");
        }
    }
    let written = writer.finish().await.expect("finish COPY");
    let elapsed = started.elapsed();

    for worker in workers {
        worker.join().expect("an encryption thread panicked");
    }
    assert_eq!(written, ROWS as u64);
    (elapsed, bytes)
}

/// One message per field.
fn encrypt_row(key: &DataKey, row: &Row) -> EncryptedRow {
    row.iter().map(|field| field::encrypt_str(key, field).expect("encrypt a field")).collect()
}

/// One message per row, as Datapunk stores rows.
fn seal_row(key: &DataKey, row: &Row) -> EncryptedRow {
    let fields: [(&str, &str); FIELDS] = std::array::from_fn(|i| (NAMES[i], row[i].as_str()));
    vec![field::encrypt_fields(key, &fields).expect("seal a row")]
}

/// Encrypts every row with `encode` on `threads` threads and returns the time taken.
fn encrypt_all(
    rows: &Arc<Vec<Row>>,
    key: &Arc<DataKey>,
    threads: usize,
    encode: fn(&DataKey, &Row) -> EncryptedRow,
) -> Duration {
    let started = Instant::now();
    thread::scope(|scope| {
        for part in rows.chunks(rows.len().div_ceil(threads)) {
            scope.spawn(|| {
                let bytes: usize = part
                    .iter()
                    .map(|row| encode(key, row).iter().map(Vec::len).sum::<usize>())
                    .sum();
                std::hint::black_box(bytes);
            });
        }
    });
    started.elapsed()
}

fn best_of(mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| run()).min().unwrap_or(Duration::MAX)
}

/// Rows of four alphanumeric strings of 10 to 40 characters, the same on every run.
fn sample_rows() -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(0x0da7_a9a0_c0de);
    (0..ROWS)
        .map(|_| {
            std::array::from_fn(|_| {
                let len = rng.gen_range(10..=40);
                Alphanumeric.sample_string(&mut rng, len)
            })
        })
        .collect()
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
