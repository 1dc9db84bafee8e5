//! What field encryption costs at ingest: fields encrypted per second in memory, and the rate
//! of inserting rows into PostgreSQL with their four short fields encrypted, against the same
//! rows in plain text.
//!
//! Both inserts use one method, binary `COPY ... FROM STDIN` through tokio-postgres, into a
//! fresh table of a throwaway cluster (from `datapunk-testkit`, so as root the cluster runs as
//! the unprivileged test account). The encrypted run includes the encryption: worker threads
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
type EncryptedRow = [Vec<u8>; FIELDS];

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
    let single = best_of(|| encrypt_all(&rows, &key, 1));
    let parallel = best_of(|| encrypt_all(&rows, &key, threads));
    let fields = (ROWS * FIELDS) as f64;
    println!("in memory, best of {RUNS}");
    println!("  (a) encryption, 1 thread       {:>10.0} fields/s", fields / secs(single));
    println!("      encryption, {threads} threads      {:>10.0} fields/s", fields / secs(parallel));

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
    let (mut plain, mut encrypted, mut prepared, mut bytes) =
        (Duration::MAX, Duration::MAX, Duration::MAX, 0);

    for run in 0..RUNS {
        plain = plain.min(copy_rows(&client, &format!("plain_{run}"), Type::TEXT, &rows).await);
        let (elapsed, size) = copy_encrypted(&client, run, &rows, &key, threads).await;
        encrypted = encrypted.min(elapsed);
        bytes = size;
        prepared =
            prepared.min(copy_rows(&client, &format!("prepared_{run}"), Type::BYTEA, &ready).await);
    }

    let plain_rate = ROWS as f64 / secs(plain);
    let encrypted_rate = ROWS as f64 / secs(encrypted);
    let ratio = encrypted_rate / plain_rate;
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
    let verdict = if ratio >= TARGET_RATIO { "meets" } else { "misses" };
    println!(
        "  (c)/(b) ratio                  {ratio:>10.2}   {verdict} the target of {TARGET_RATIO}"
    );
}

/// Inserts `rows` into a new table `name` whose four columns have `column`'s type, with binary
/// COPY; returns the time the COPY took.
async fn copy_rows<T: ToSql + Sync>(
    client: &Client,
    name: &str,
    column: Type,
    rows: &[[T; FIELDS]],
) -> Duration {
    let sql_type = if column == Type::BYTEA { "bytea" } else { "text" };
    client
        .batch_execute(&format!(
            "CREATE TABLE {name} (a {sql_type}, b {sql_type}, c {sql_type}, d {sql_type})"
        ))
        .await
        .expect("create the table");

    let started = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {name} FROM STDIN (FORMAT binary)"))
        .await
        .expect("start COPY");
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &std::array::from_fn::<_, FIELDS, _>(|_| column.clone())
    ));
    for [a, b, c, d] in rows {
        writer.as_mut().write(&[a, b, c, d]).await.expect("write a row");
    }
    let written = writer.finish().await.expect("finish COPY");
    let elapsed = started.elapsed();

    assert_eq!(written, ROWS as u64);
    elapsed
}

/// Encrypts the rows on `threads` threads while inserting them into `encrypted_<run>`; returns
/// the time taken and the bytes of ciphertext written.
async fn copy_encrypted(
    client: &Client,
    run: usize,
    rows: &Arc<Vec<Row>>,
    key: &Arc<DataKey>,
    threads: usize,
) -> (Duration, usize) {
    let table = format!("encrypted_{run}");
    client
        .batch_execute(&format!("CREATE TABLE {table} (a bytea, b bytea, c bytea, d bytea)"))
        .await
        .expect("create the encrypted table");

    let started = Instant::now();
    let (sender, mut batches) = mpsc::channel::<Vec<EncryptedRow>>(2 * threads);
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            let (rows, key, sender) = (Arc::clone(rows), Arc::clone(key), sender.clone());
            thread::spawn(move || {
                for chunk in rows.chunks(BATCH).skip(worker).step_by(threads) {
                    let batch = chunk.iter().map(|row| encrypt_row(&key, row)).collect();
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
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &[Type::BYTEA; FIELDS]));
    let mut bytes = 0;
    while let Some(batch) = batches.recv().await {
        for [a, b, c, d] in &batch {
            bytes += a.len() + b.len() + c.len() + d.len();
            writer.as_mut().write(&[a, b, c, d]).await.expect("write a row");
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

fn encrypt_row(key: &DataKey, row: &Row) -> EncryptedRow {
    row.each_ref().map(|field| field::encrypt_str(key, field).expect("encrypt a field"))
}

/// Encrypts every field on `threads` threads and returns the time taken.
fn encrypt_all(rows: &Arc<Vec<Row>>, key: &Arc<DataKey>, threads: usize) -> Duration {
    let started = Instant::now();
    thread::scope(|scope| {
        for part in rows.chunks(rows.len().div_ceil(threads)) {
            scope.spawn(|| {
                let bytes: usize = part
                    .iter()
                    .map(|row| encrypt_row(key, row).iter().map(Vec::len).sum::<usize>())
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
