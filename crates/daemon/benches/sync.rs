//! What syncing costs, end to end: the daemon's own sync of one dataset
//! (`sync::dataset::sync`) reading the provider sandbox and writing PostgreSQL as
//! `datapunk_app`.
//!
//! The full sync reads 100,000 Google Calendar events over three calendars, 20,000 Google
//! contacts and 50,000 Spotify saved tracks, and is reported in records per second; it runs
//! three times, each into accounts of its own. The sandbox shares the machine's CPUs with the
//! sync, and rendering the providers' JSON takes it about a third of them: work a real
//! provider does on its own machines. So it keeps its answers (`Sandbox::remember_answers`):
//! the first run has it render every page, the next two have it replay them, and the fastest
//! of those measures the sync itself. The first run's figure is printed too. Beside it stands its
//! ceiling: binary `COPY` of the very rows that run stored, sealed and digested, into new tables
//! shaped as the dataset tables are, indexes, storage settings and foreign keys included;
//! fastest of three too. The target is a full sync at least half as fast as that COPY. The
//! same COPY without the foreign keys, which no writer of the dataset tables can skip, is
//! printed beside it.
//!
//! The incremental sync changes one event in the sandbox and syncs the calendar again, three
//! times over; the median counts. It is reported as wall time, the SQL statements the daemon's
//! role sent (top-level entries of `pg_stat_statements`, transaction control included) and the
//! HTTP requests the sandbox logged: a `calendarList` and one `events` request per calendar.
//! The target is under 100 ms.
//!
//! Then the phases of the full sync are timed apart, one dataset at a time, to show where its
//! time goes: the connector reading every page (and within that, the sandbox building its
//! answers), sealing the records as the daemon does (one thread, then every CPU), and the time
//! PostgreSQL spent executing the sync's statements. The sync runs these one after the other,
//! so what they leave of its wall time is the client's side of the statements and the round
//! trips.
//!
//! The sandbox runs in this process and shares its CPUs with the sync, on a Tokio runtime of
//! two workers like the daemon's. The cluster comes from `datapunk-testkit`, with durability
//! off (`fsync`, `full_page_writes`, `synchronous_commit`) for the sync and the COPY alike; as
//! root the server runs as the unprivileged test account.
//!
//! Run with `cargo bench -p datapunk-daemon --bench sync`. It prints figures and asserts
//! nothing.

use std::io::Cursor as Chunk;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use datapunk_connectors::{
    Connector, Cursor, FetchError, Next, Options, Record, Stream, TokenSource,
};
use datapunk_daemon::sync::dataset::{self, Report};
use datapunk_oauth::authorize::{Authorization, Redirect};
use datapunk_oauth::provider::{Endpoints, Provider};
use datapunk_oauth::token::{Credentials, TokenClient};
use datapunk_sandbox::{Population, Sandbox};
use datapunk_store::integrations::{self, Integration, State};
use datapunk_store::{ConnectOptions, Store, admin};
use datapunk_testkit::Cluster;
use datapunk_vault::field;
use datapunk_vault::key::{DataKey, KeyPurpose};
use datapunk_vault::secret::SecretString;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_postgres::Client;

const EVENTS: u64 = 100_000;
const CONTACTS: u64 = 20_000;
const SAVED_TRACKS: u64 = 50_000;
const RUNS: usize = 3;
/// The share of the COPY rate a full sync should reach.
const TARGET_RATIO: f64 = 0.5;
/// The longest an incremental sync of one change should take.
const TARGET_INCREMENTAL: Duration = Duration::from_millis(100);
/// Where the sandbox sends the browser back. Nothing listens there: the bench reads the code
/// from the redirect itself, as a person pasting it would.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// The size of the pieces the COPY sends, about what a client's buffer holds.
const COPY_PIECE: usize = 1 << 20;

/// A dataset measured: its integration's provider, its name, and its table in `datapunk`.
struct Measured {
    provider: Provider,
    dataset: &'static str,
    table: &'static str,
}

const DATASETS: [Measured; 3] = [
    Measured { provider: Provider::Google, dataset: "calendar", table: "calendar_events" },
    Measured { provider: Provider::Google, dataset: "contacts", table: "contacts" },
    Measured { provider: Provider::Spotify, dataset: "saved-tracks", table: "saved_tracks" },
];

fn main() {
    let settings =
        [("shared_preload_libraries", "pg_stat_statements"), ("pg_stat_statements.track", "all")];
    let Ok(cluster) = std::panic::catch_unwind(|| Cluster::start_with(&settings)) else {
        println!(
            "no PostgreSQL cluster could be started (reason above): install the PostgreSQL \
             server and run as root or a user that may run it"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(bench(&cluster));
}

/// One connected account: its name in the database, its data key and its access token.
struct Connected {
    provider: Provider,
    name: String,
    key: Arc<DataKey>,
    tokens: Tokens,
}

/// What one dataset's full sync did and took.
struct Full {
    report: Report,
    elapsed: Duration,
    /// The time PostgreSQL spent executing the sync's statements.
    executing: Duration,
    /// The statement that took most of it: its calls, its total time and its start.
    costliest: (i64, Duration, String),
}

async fn bench(cluster: &Cluster) {
    let db = cluster.unique_db_name("bench_sync");
    admin::init(&cluster.conninfo("postgres", "postgres"), &db)
        .await
        .expect("create the roles, the database and the schema");
    let mut superuser = cluster.admin_client(&db).await;
    superuser
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .expect("pg_stat_statements is preloaded");
    let version: String =
        superuser.query_one("SHOW server_version", &[]).await.expect("server version").get(0);
    let store = Store::connect(&ConnectOptions::new(cluster.conninfo("datapunk_app", &db)))
        .await
        .expect("connect as datapunk_app");

    let threads = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    println!(
        "datapunk-daemon sync: {threads} CPUs ({}), PostgreSQL {} (fsync off for the sync and \
         the COPY alike)",
        cpu_model(),
        version.split_whitespace().next().unwrap_or("?")
    );
    let started = Instant::now();
    let population = Population {
        seed: 1,
        events: EVENTS,
        contacts: CONTACTS,
        saved_tracks: SAVED_TRACKS,
        playlists: 1,
        plays: 1,
    };
    let sandbox = Sandbox::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), population)
        .await
        .expect("start the sandbox");
    sandbox.remember_answers();
    println!(
        "sandbox of {EVENTS} events, {CONTACTS} contacts and {SAVED_TRACKS} saved tracks \
         ready in {:.1} s",
        secs(started.elapsed())
    );
    let connector = |measured: &Measured| {
        let endpoints = endpoints(&sandbox, measured.provider);
        Connector::new(measured.provider, measured.dataset, &endpoints, &Options::default())
            .expect("a connector for a dataset of the provider")
    };

    // Each run syncs everything afresh into accounts of its own, beside the rows of the runs
    // before; the fastest run counts, as the fastest COPY does.
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let connected = [
            connect(&sandbox, &mut superuser, Provider::Google, &["calendar", "contacts"], run)
                .await,
            connect(&sandbox, &mut superuser, Provider::Spotify, &["saved-tracks"], run).await,
        ];
        let mut full = Vec::new();
        for measured in &DATASETS {
            let connected = by_provider(&connected, measured.provider);
            reset_statements(&superuser).await;
            let started = Instant::now();
            let report = sync(&store, &connector(measured), connected).await;
            let elapsed = started.elapsed();
            let executing = statements(&superuser).await.executing;
            let costliest = costliest(&superuser).await;
            full.push(Full { report, elapsed, executing, costliest });
        }
        let total: Duration = full.iter().map(|f| f.elapsed).sum();
        let how = if run == 0 { "rendering its answers" } else { "replaying them" };
        println!("  run {}, the sandbox {how}: {:.2} s", run + 1, secs(total));
        runs.push((total, connected, full));
    }
    let (cold, _, _) = runs.remove(0);
    runs.sort_by_key(|(total, _, _)| *total);
    let (_, connected, full) = runs.swap_remove(0);
    let connection = |provider| by_provider(&connected, provider);
    let (sync_ratio, copy_rate) = print_full(&superuser, &full, &connected).await;
    let records: u64 = full.iter().map(|f| f.report.records()).sum();
    let cold_ratio = records as f64 / secs(cold) / copy_rate;
    println!(
        "  with the sandbox rendering every answer on the same CPUs (run 1): {:.0} records/s, \
         {cold_ratio:.2} of the COPY rate",
        records as f64 / secs(cold)
    );

    let calendar = connector(&DATASETS[0]);
    let google = connection(Provider::Google);
    let incremental = incremental(&sandbox, &superuser, &store, &calendar, google).await;

    println!(
        "where the full sync's time goes: each phase timed alone, one dataset after the other"
    );
    println!(
        "  {:<13}{:>9}{:>16}{:>12}{:>13}{:>11}{:>10}{:>8}",
        "", "sync", "reading pages", "(sandbox)", "sealing, 1", threads, "SQL exec", "rest"
    );
    let mut pipelined = Duration::ZERO;
    for (measured, full) in DATASETS.iter().zip(&full) {
        let connected = connection(measured.provider);
        let phases = phases(&sandbox, &connector(measured), connected, threads).await;
        let rest = full
            .elapsed
            .saturating_sub(phases.reading)
            .saturating_sub(phases.sealing)
            .saturating_sub(full.executing);
        println!(
            "  {:<13}{:>7.2} s{:>14.2} s{:>10.2} s{:>11.2} s{:>9.2} s{:>8.2} s{:>6.2} s",
            measured.dataset,
            secs(full.elapsed),
            secs(phases.reading),
            secs(phases.answering),
            secs(phases.sealing),
            secs(phases.sealing_parallel),
            secs(full.executing),
            secs(rest)
        );
        pipelined += phases.reading.max(phases.sealing_parallel).max(full.executing + rest);
    }
    for (measured, full) in DATASETS.iter().zip(&full) {
        let (calls, time, query) = &full.costliest;
        println!(
            "  {:<13}most SQL time: {calls} calls, {:.2} s: {query}",
            measured.dataset,
            secs(*time)
        );
    }
    let records: u64 = full.iter().map(|f| f.report.records()).sum();
    println!(
        "  overlapped, the sync would take the longest phase of each dataset: {:.2} s, \
         {:.0} records/s (reading page n+1 while page n is sealed on {threads} threads and \
         stored)",
        secs(pipelined),
        records as f64 / secs(pipelined)
    );

    println!("targets");
    println!(
        "  full sync at least {TARGET_RATIO} of the COPY rate: {sync_ratio:.2}, {}",
        verdict(sync_ratio >= TARGET_RATIO)
    );
    println!(
        "  incremental sync under {} ms: {:.1} ms (median of {RUNS}), {}",
        TARGET_INCREMENTAL.as_millis(),
        millis(incremental),
        verdict(incremental < TARGET_INCREMENTAL)
    );
}

/// The account of `provider` among `connected`.
fn by_provider(connected: &[Connected], provider: Provider) -> &Connected {
    connected.iter().find(|c| c.provider == provider).expect("every provider is connected")
}

/// Prints the fastest full sync's figures and the COPY ceiling for its rows; returns the ratio
/// of their rates and the COPY's rate.
async fn print_full(superuser: &Client, full: &[Full], connected: &[Connected]) -> (f64, f64) {
    println!(
        "full sync (sync::dataset::sync, one dataset after the other), fastest of runs 2 to \
         {RUNS}"
    );
    for (measured, full) in DATASETS.iter().zip(full) {
        let records = full.report.records();
        println!(
            "  {:<13}{records:>8} records {:>5} pages {:>8.2} s {:>9.0} records/s",
            measured.dataset,
            full.report.pages,
            secs(full.elapsed),
            records as f64 / secs(full.elapsed)
        );
    }
    let records: u64 = full.iter().map(|f| f.report.records()).sum();
    let elapsed: Duration = full.iter().map(|f| f.elapsed).sum();
    let sync_rate = records as f64 / secs(elapsed);
    println!(
        "  {:<13}{records:>8} records {:>20.2} s {sync_rate:>9.0} records/s",
        "all",
        secs(elapsed)
    );

    println!(
        "binary COPY of the stored rows (sealed and digested) into new tables shaped as the \
         dataset tables, indexes, storage and foreign keys included, best of {RUNS}"
    );
    let (rows, copy_elapsed) = copy_ceiling(superuser, connected, true).await;
    let copy_rate = rows as f64 / secs(copy_elapsed);
    println!(
        "  {:<13}{rows:>8} rows {:>23.2} s {copy_rate:>9.0} rows/s",
        "all",
        secs(copy_elapsed)
    );
    let ratio = sync_rate / copy_rate;
    println!("  full sync / COPY rate {ratio:>45.2}");

    println!(
        "the same COPY without the foreign keys, which no writer of the dataset tables can skip"
    );
    let (rows, bare_elapsed) = copy_ceiling(superuser, connected, false).await;
    let bare_rate = rows as f64 / secs(bare_elapsed);
    println!(
        "  {:<13}{rows:>8} rows {:>23.2} s {bare_rate:>9.0} rows/s",
        "all",
        secs(bare_elapsed)
    );
    println!("  full sync / COPY rate {:>45.2}", sync_rate / bare_rate);
    (ratio, copy_rate)
}

/// Copies each dataset table's rows out, then times binary COPY of them into new tables of the
/// same shape; prints each table's best and returns the rows and the best total time.
async fn copy_ceiling(
    superuser: &Client,
    connected: &[Connected],
    foreign_keys: bool,
) -> (u64, Duration) {
    let mut data = Vec::new();
    for measured in &DATASETS {
        let sql = format!(
            "COPY (SELECT * FROM datapunk.{} WHERE integration = '{}') TO STDOUT (FORMAT binary)",
            measured.table,
            by_provider(connected, measured.provider).name
        );
        let mut out = pin!(superuser.copy_out(&sql).await.expect("start COPY TO"));
        let mut bytes = Vec::new();
        while let Some(chunk) = out.next().await {
            bytes.extend_from_slice(&chunk.expect("a chunk of COPY TO"));
        }
        data.push(bytes);
    }

    let mut best = vec![Duration::MAX; DATASETS.len()];
    let mut rows = vec![0; DATASETS.len()];
    let mut best_total = Duration::MAX;
    for run in 0..RUNS {
        let mut total = Duration::ZERO;
        for (i, measured) in DATASETS.iter().enumerate() {
            let target = format!("public.ceiling_{}_{run}_{foreign_keys}", measured.table);
            superuser
                .batch_execute(&format!(
                    "CREATE TABLE {target} (LIKE datapunk.{} INCLUDING ALL)",
                    measured.table
                ))
                .await
                .expect("create the COPY's table");
            // LIKE copies no foreign key; the dataset table's own are added as they are.
            let keys = if foreign_keys {
                let sql = "SELECT pg_get_constraintdef(oid) FROM pg_constraint
                           WHERE conrelid = $1::text::regclass AND contype = 'f'";
                let table = format!("datapunk.{}", measured.table);
                superuser.query(sql, &[&table]).await.expect("read the foreign keys")
            } else {
                Vec::new()
            };
            for key in keys {
                let definition: String = key.get(0);
                superuser
                    .batch_execute(&format!("ALTER TABLE {target} ADD {definition}"))
                    .await
                    .expect("add a foreign key");
            }
            let pieces: Vec<Vec<u8>> = data[i].chunks(COPY_PIECE).map(<[u8]>::to_vec).collect();

            let started = Instant::now();
            let sql = format!("COPY {target} FROM STDIN (FORMAT binary)");
            let mut sink = pin!(superuser.copy_in(&sql).await.expect("start COPY FROM"));
            for piece in pieces {
                sink.send(Chunk::new(piece)).await.expect("send a piece of COPY FROM");
            }
            rows[i] = sink.as_mut().finish().await.expect("finish COPY FROM");
            let elapsed = started.elapsed();

            best[i] = best[i].min(elapsed);
            total += elapsed;
        }
        best_total = best_total.min(total);
    }
    for (i, measured) in DATASETS.iter().enumerate() {
        println!(
            "  {:<13}{:>8} rows {:>23.2} s {:>9.0} rows/s  ({:.0} bytes per row)",
            measured.table,
            rows[i],
            secs(best[i]),
            rows[i] as f64 / secs(best[i]),
            data[i].len() as f64 / rows[i].max(1) as f64
        );
    }
    (rows.iter().sum(), best_total)
}

/// Changes one event at a time and syncs the calendar again, printing each run; returns the
/// median time.
async fn incremental(
    sandbox: &Sandbox,
    superuser: &Client,
    store: &Store,
    connector: &Connector,
    connected: &Connected,
) -> Duration {
    // Plain events, neither a series nor part of one, spread over the calendars.
    let truth = sandbox.truth(datapunk_sandbox::Dataset::GoogleCalendar);
    let plain = |record: &&datapunk_sandbox::Record| {
        let json = &record.json;
        json.get("recurrence").is_none()
            && json.get("recurringEventId").is_none()
            && json.get("status").and_then(serde_json::Value::as_str) != Some("cancelled")
    };
    let step = truth.len() / RUNS;
    let chosen: Vec<String> = (0..RUNS)
        .filter_map(|run| truth[run * step..].iter().find(plain).map(|record| record.id.clone()))
        .collect();
    drop(truth);

    println!(
        "incremental sync of the calendar after one event changed, among {EVENTS} (sync::dataset::sync)"
    );
    let mut times = Vec::new();
    for id in &chosen {
        sandbox
            .change(datapunk_sandbox::Dataset::GoogleCalendar, id)
            .expect("the chosen event is live");
        sandbox.clear_requests();
        reset_statements(superuser).await;

        let started = Instant::now();
        let report = sync(store, connector, connected).await;
        let elapsed = started.elapsed();

        let counted = statements(superuser).await;
        println!(
            "  {:>6.1} ms  {:>3} SQL statements ({} with the ones they ran inside PostgreSQL, \
             {:.1} ms executing)  {:>2} HTTP requests  {} updated, {} added, {} deleted",
            millis(elapsed),
            counted.top_level,
            counted.all,
            millis(counted.executing),
            sandbox.requests().len(),
            report.updated,
            report.added,
            report.deleted
        );
        times.push(elapsed);
    }
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or(Duration::MAX)
}

/// The phases of one dataset's full sync, each timed alone.
struct Phases {
    /// The connector reading every page: request, answer, JSON decoding.
    reading: Duration,
    /// The part of `reading` from sending a request to the sandbox's answer being built.
    answering: Duration,
    /// Sealing every record on one thread, as the daemon does.
    sealing: Duration,
    /// Sealing every record across the given threads.
    sealing_parallel: Duration,
}

/// Reads every page of `connector`'s dataset from the start, sealing each page's records
/// after it arrives, and times the phases apart. Nothing is stored.
async fn phases(
    sandbox: &Sandbox,
    connector: &Connector,
    connected: &Connected,
    threads: usize,
) -> Phases {
    let mut phases = Phases {
        reading: Duration::ZERO,
        answering: Duration::ZERO,
        sealing: Duration::ZERO,
        sealing_parallel: Duration::ZERO,
    };
    let answered = |sent: Instant| {
        let log = sandbox.requests();
        log.last().map_or(Duration::ZERO, |request| request.at.saturating_duration_since(sent))
    };

    sandbox.clear_requests();
    let sent = Instant::now();
    let streams: Vec<Stream> =
        connector.streams(&connected.tokens).await.expect("the dataset's streams");
    phases.reading += sent.elapsed();
    if connector.dataset() == "calendar" {
        phases.answering += answered(sent);
    }

    for stream in &streams {
        let mut cursor = Cursor::Start;
        loop {
            sandbox.clear_requests();
            let sent = Instant::now();
            let page = connector.fetch(&connected.tokens, stream, &cursor).await.expect("a page");
            phases.reading += sent.elapsed();
            phases.answering += answered(sent);

            let started = Instant::now();
            std::hint::black_box(seal(&connected.key, &page.upserts));
            phases.sealing += started.elapsed();
            let started = Instant::now();
            let part = page.upserts.len().div_ceil(threads).max(1);
            thread::scope(|scope| {
                for records in page.upserts.chunks(part) {
                    scope.spawn(|| std::hint::black_box(seal(&connected.key, records)));
                }
            });
            phases.sealing_parallel += started.elapsed();

            match page.next {
                Next::More(next) => cursor = next,
                Next::Done { .. } => break,
            }
        }
    }
    phases
}

/// Seals `records` the way the daemon does: one OpenPGP message of the personal fields and a
/// keyed fingerprint of them and the plaintext columns. Returns the bytes made.
fn seal(key: &DataKey, records: &[Record]) -> usize {
    records
        .iter()
        .map(|record| {
            let fields: Vec<(&str, &str)> =
                record.personal.iter().map(|(name, text)| (*name, text.as_str())).collect();
            let sealed = field::encrypt_fields(key, &fields).expect("seal a record");
            let columns = format!("{:?} {:?}", record.updated_at, record.columns);
            let mut covered = fields;
            covered.push(("\0columns", columns.as_str()));
            sealed.len() + field::fingerprint(key, &covered).len()
        })
        .sum()
}

/// Runs the daemon's sync of `connector`'s dataset for `connected`, as the schedule does: from
/// the stored cursors, a full round only where there is none.
async fn sync(store: &Store, connector: &Connector, connected: &Connected) -> Report {
    let mut quiet = |_: &Report| {};
    dataset::sync(
        store,
        connector,
        &connected.tokens,
        Arc::clone(&connected.key),
        &connected.name,
        false,
        &mut quiet,
    )
    .await
    .expect("the sandbox serves the whole dataset")
}

/// Connects `provider`'s `datasets` the way `datapunk connect` does (authorization with PKCE,
/// then the code exchanged at the token endpoint), and records the integration in the database.
async fn connect(
    sandbox: &Sandbox,
    superuser: &mut Client,
    provider: Provider,
    datasets: &[&str],
    run: usize,
) -> Connected {
    let endpoints = endpoints(sandbox, provider);
    let client = sandbox.client(sandboxed(provider));
    let credentials = Credentials { id: client.id, secret: client.secret.map(SecretString::new) };
    let chosen: Vec<_> = datasets
        .iter()
        .map(|name| provider.dataset(name).expect("a dataset of the provider"))
        .collect();
    let redirect_uri = reqwest::Url::parse(REDIRECT_URI).expect("a URL");
    let authorization =
        Authorization::begin(provider, &endpoints, &credentials.id, &redirect_uri, &chosen)
            .expect("an authorization URL");
    let token_client = TokenClient::new().expect("an HTTP client");

    // The client follows no redirect: the sandbox's answer names the redirect URI and the code.
    let answer = token_client
        .http()
        .get(authorization.url().clone())
        .send()
        .await
        .expect("the sandbox answers the authorization request");
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("the sandbox consents and redirects");
    let redirect = Redirect::from_pasted_url(location, &redirect_uri).expect("a redirect");
    let granted = authorization.accept(&redirect).expect("the redirect carries a code");
    let requested_scopes = granted.requested_scopes.clone();
    let tokens = token_client
        .exchange(provider, &endpoints, &credentials, granted)
        .await
        .expect("the code is exchanged");

    let name = format!("bench-{}-{run}", provider.as_str());
    let integration = Integration {
        name: name.clone(),
        provider: provider.as_str().to_owned(),
        account_id: None,
        display_name: None,
        granted_scopes: requested_scopes.clone(),
        requested_scopes,
        state: State::Active,
        token_expires_at: Some(tokens.record.expires_at),
        last_refresh_at: None,
        last_error: None,
        datasets: datasets
            .iter()
            .map(|name| integrations::Dataset {
                name: (*name).to_owned(),
                consented: true,
                granted: true,
            })
            .collect(),
    };
    integrations::record_connected(superuser, &integration).await.expect("record the integration");
    let key = DataKey::generate(KeyPurpose::integration(&name)).expect("a data key");

    Connected {
        provider,
        name,
        key: Arc::new(key),
        tokens: Tokens {
            http: token_client.http().clone(),
            access: tokens.record.access_token.clone(),
        },
    }
}

/// An integration's access token, lent to the connectors the way the daemon's token keeper
/// lends them. It lives an hour, longer than the bench.
struct Tokens {
    http: reqwest::Client,
    access: SecretString,
}

impl TokenSource for Tokens {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn access(&self) -> Result<SecretString, FetchError> {
        Ok(self.access.clone())
    }

    async fn after_unauthorized(&self, _: &SecretString) -> Result<SecretString, FetchError> {
        Err(FetchError::Token("the bench's access token was refused".into()))
    }
}

/// The sandbox's endpoints for `provider`, as `datapunk-sandbox --write-config` gives them.
fn endpoints(sandbox: &Sandbox, provider: Provider) -> Endpoints {
    let sandboxed = sandboxed(provider);
    Endpoints {
        authorize: sandbox.endpoint(sandboxed, "authorize"),
        token: sandbox.endpoint(sandboxed, "token"),
        revoke: (provider == Provider::Google).then(|| sandbox.endpoint(sandboxed, "revoke")),
        api_base: sandbox.api_base(sandboxed),
        people_api_base: Some(sandbox.people_api_base()),
        account: sandbox.account_url(sandboxed),
    }
}

fn sandboxed(provider: Provider) -> datapunk_sandbox::Provider {
    match provider {
        Provider::Google => datapunk_sandbox::Provider::Google,
        Provider::Microsoft => datapunk_sandbox::Provider::Microsoft,
        Provider::Spotify => datapunk_sandbox::Provider::Spotify,
    }
}

async fn reset_statements(superuser: &Client) {
    superuser
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .expect("reset pg_stat_statements");
}

/// What `datapunk_app` ran since the last reset.
struct Statements {
    /// Statements the daemon sent.
    top_level: i64,
    /// Those and the statements they ran inside PostgreSQL (functions, triggers).
    all: i64,
    /// The time PostgreSQL spent executing the statements the daemon sent.
    executing: Duration,
}

async fn statements(superuser: &Client) -> Statements {
    let row = superuser
        .query_one(
            "SELECT coalesce(sum(calls) FILTER (WHERE toplevel), 0)::bigint,
                    coalesce(sum(calls), 0)::bigint,
                    coalesce(sum(total_exec_time) FILTER (WHERE toplevel), 0)::float8
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname = 'datapunk_app'
               AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("read pg_stat_statements");
    Statements {
        top_level: row.get(0),
        all: row.get(1),
        executing: Duration::from_secs_f64(row.get::<_, f64>(2) / 1000.0),
    }
}

/// The top-level statement of `datapunk_app` that took the most execution time since the last
/// reset: its calls, that time, and the start of its text (placeholders, never values).
async fn costliest(superuser: &Client) -> (i64, Duration, String) {
    let row = superuser
        .query_opt(
            "SELECT calls, total_exec_time, regexp_replace(left(query, 2000), '\\s+', ' ', 'g')
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname = 'datapunk_app' AND toplevel
               AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY total_exec_time DESC LIMIT 1",
            &[],
        )
        .await
        .expect("read pg_stat_statements");
    row.map_or((0, Duration::ZERO, String::new()), |row| {
        let text: String = row.get(2);
        let time = Duration::from_secs_f64(row.get::<_, f64>(1) / 1000.0);
        (row.get(0), time, text.chars().take(70).collect())
    })
}

/// The processor's name as the kernel reports it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown model".to_owned())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
