//! The main job end to end: datapunkd syncs every dataset of the three providers from the
//! sandbox into PostgreSQL, sealed under each integration's data key, and keeps it equal to
//! the provider's truth through changes, expired sync tokens, throttling and bad answers.

mod sandboxed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datapunk_sandbox::{Dataset as Provided, Fault, Population, Provider, Sandbox};
use datapunk_store::datasets::{self, Dataset};
use datapunk_testkit::{NotifySocket, SessionBus};
use datapunk_tests::{Daemon, Setup};
use datapunk_vault::field;
use sandboxed::{connected, setup, vault};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Every dataset, as the sandbox and as Datapunk name it, with its integration.
const ALL: [(Provided, &str, Dataset); 7] = [
    (Provided::GoogleCalendar, "google", Dataset::Calendar),
    (Provided::GoogleContacts, "google", Dataset::Contacts),
    (Provided::MicrosoftCalendar, "microsoft", Dataset::Calendar),
    (Provided::MicrosoftContacts, "microsoft", Dataset::Contacts),
    (Provided::SpotifyRecentlyPlayed, "spotify", Dataset::RecentlyPlayed),
    (Provided::SpotifySavedTracks, "spotify", Dataset::SavedTracks),
    (Provided::SpotifyPlaylists, "spotify", Dataset::Playlists),
];

async fn sandbox(population: Population) -> Sandbox {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    Sandbox::start_with(addr, population).await.expect("the sandbox")
}

/// An installation wired to `sandbox`, all three providers connected with every dataset, and
/// the daemon started and through its first sync of every dataset.
async fn synced(sandbox: &Sandbox, extra: &str) -> (Setup, SessionBus, Daemon) {
    synced_reporting(sandbox, extra, None).await
}

/// As [`synced`], the daemon reporting to `notify`.
async fn synced_reporting(
    sandbox: &Sandbox,
    extra: &str,
    notify: Option<&NotifySocket>,
) -> (Setup, SessionBus, Daemon) {
    let config = format!("[sync]\ninterval_secs = 3600\n{extra}");
    let (setup, bus) = setup(sandbox, &config);
    connected(&setup, &bus, "google", "calendar,contacts").await;
    connected(&setup, &bus, "microsoft", "calendar,contacts").await;
    connected(&setup, &bus, "spotify", "recently-played,saved-tracks,playlists").await;
    let daemon = start_reporting(&setup, &bus, notify).await;
    wait_for_syncs(&setup, ALL.len()).await;
    (setup, bus, daemon)
}

/// Starts the daemon and waits until it answers on its control socket.
async fn start(setup: &Setup, bus: &SessionBus) -> Daemon {
    start_reporting(setup, bus, None).await
}

/// As [`start`], reporting to `notify` as to systemd.
async fn start_reporting(setup: &Setup, bus: &SessionBus, notify: Option<&NotifySocket>) -> Daemon {
    let daemon = setup.spawn_daemon(notify, &[("DBUS_SESSION_BUS_ADDRESS", bus.address())]);
    let begin = Instant::now();
    while !setup.cli(&["status"]).status.success() {
        assert!(begin.elapsed() < Duration::from_secs(30), "datapunkd never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon
}

/// The CPU time process `pid` has used, user and system, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let field = |i: usize| fields[i].parse::<u64>().expect("a number of ticks");
    field(11) + field(12)
}

/// The ids of the records of `dataset` that a person can change or delete: not the
/// occurrences a series expands to, nor its cancelled occurrences.
fn mutable(sandbox: &Sandbox, dataset: Provided) -> Vec<String> {
    let records = sandbox.truth(dataset);
    let plain = |json: &Value| json["type"] != "occurrence" && json["status"] != "cancelled";
    records.into_iter().filter(|r| plain(&r.json)).map(|r| r.id).collect()
}

/// Waits until `count` `sync.run` rows exist, and returns them.
async fn wait_for_syncs(setup: &Setup, count: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let rows = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]);
        let rows: Vec<Value> =
            rows.lines().map(|line| serde_json::from_str(line).expect("a JSON row")).collect();
        if rows.len() >= count {
            return rows;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{} of {count} syncs", rows.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `datapunk disconnect NAME --yes`, which must succeed.
fn disconnect(setup: &Setup, bus: &SessionBus, name: &str) {
    let output = setup
        .command("datapunk")
        .args(["disconnect", name, "--yes"])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .output()
        .expect("run datapunk disconnect");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `datapunk sync ARGS --json`: one run per dataset.
fn sync(setup: &Setup, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["sync", "--json"];
    all.extend_from_slice(args);
    let output = setup.cli(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let runs: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON run")).collect();
    assert!(!runs.is_empty(), "no runs: {}", String::from_utf8_lossy(&output.stderr));
    runs
}

/// A checksum of one record's JSON, with its keys in order.
fn checksum(json: &Value) -> String {
    let canonical = serde_json::to_string(json).expect("JSON");
    Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The provider's truth of a dataset: how many of each checksum. Outlook's calendar is what
/// the connector's window lists: a year back and two ahead of the day its full round began.
fn truth(sandbox: &Sandbox, dataset: Provided) -> BTreeMap<String, usize> {
    let records = if dataset == Provided::MicrosoftCalendar {
        let today = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
        let window = (today - time::Duration::days(365), today + time::Duration::days(730));
        sandbox.outlook_truth_in(window.0, window.1)
    } else {
        sandbox.truth(dataset)
    };
    let mut sums = BTreeMap::new();
    for json in records.into_iter().map(|record| record.json) {
        *sums.entry(checksum(&json)).or_insert(0) += 1;
    }
    sums
}

/// What Datapunk holds of a dataset, decrypted with the integration's key: how many of each
/// checksum over the provider's JSON sealed in each row.
async fn stored(
    setup: &Setup,
    bus: &SessionBus,
    name: &str,
    dataset: Dataset,
) -> BTreeMap<String, usize> {
    let key = vault(bus).data_key(name).await.expect("the keyring").expect("a data key");
    let client = setup.admin().await;
    let rows = datasets::sealed_records(&client, name, dataset).await.expect("the rows");
    let mut sums = BTreeMap::new();
    for row in rows {
        let fields = field::decrypt_fields(&key, &row.sealed).expect("the daemon's key opens it");
        let raw = fields.get("raw").expect("the provider's JSON is sealed with the row");
        let json: Value = serde_json::from_str(raw).expect("JSON");
        *sums.entry(checksum(&json)).or_insert(0) += 1;
    }
    sums
}

async fn assert_equals_truth(sandbox: &Sandbox, setup: &Setup, bus: &SessionBus) {
    for (provided, name, dataset) in ALL {
        let truth = truth(sandbox, provided);
        let stored = stored(setup, bus, name, dataset).await;
        assert!(!truth.is_empty(), "{provided:?}: the sandbox holds records");
        if dataset == Dataset::RecentlyPlayed {
            // Spotify lists only the newest 50 plays; Datapunk keeps the history: every play
            // listed is stored, once.
            let missing = truth.keys().filter(|sum| !stored.contains_key(*sum)).count();
            assert_eq!(missing, 0, "{name}/{}: plays missing", dataset.name());
            assert!(stored.values().all(|n| *n == 1), "{name}/{}: a play twice", dataset.name());
            continue;
        }
        let (t, s): (usize, usize) = (truth.values().sum(), stored.values().sum());
        assert_eq!(s, t, "{name}/{}: record count", dataset.name());
        let missing = truth.keys().filter(|sum| !stored.contains_key(*sum)).count();
        assert_eq!(missing, 0, "{name}/{}: records differ from the provider's", dataset.name());
        assert_eq!(stored, truth, "{name}/{}", dataset.name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_sync_equals_the_truth_and_a_second_one_writes_nothing_and_asks_once() {
    let population = Population {
        seed: 7,
        events: 5000,
        contacts: 1000,
        saved_tracks: 2000,
        playlists: 20,
        plays: 50,
    };
    let sandbox = sandbox(population).await;
    let notify = NotifySocket::new();
    let (setup, bus, daemon) = synced_reporting(&sandbox, "", Some(&notify)).await;

    let first = wait_for_syncs(&setup, ALL.len()).await;
    for row in &first {
        assert_eq!(row["outcome"], "success", "{row}");
    }
    assert_equals_truth(&sandbox, &setup, &bus).await;

    // Nothing changed at the provider: nothing is written, and each dataset costs one request
    // (the reconciled Spotify lists page through, and Google asks for the calendar list).
    sandbox.clear_requests();
    let runs = sync(&setup, &[]);
    assert_eq!(runs.len(), ALL.len(), "{runs:?}");
    for run in &runs {
        assert_eq!(run["outcome"], "success", "{run}");
        let changed = (&run["added"], &run["updated"], &run["deleted"]);
        assert_eq!(changed, (&Value::from(0), &Value::from(0), &Value::from(0)), "{run}");
    }
    let requests = sandbox.requests();
    let count = |part: &str| requests.iter().filter(|r| r.path.contains(part)).count();
    assert_eq!(count("/calendarList"), 1, "{requests:?}");
    assert_eq!(count("/events"), 3, "one per calendar: {requests:?}");
    assert_eq!(count("/connections"), 1);
    assert_eq!(count("/calendarView/delta"), 1);
    assert_eq!(count("/contacts/delta"), 1);
    assert_eq!(count("/recently-played"), 1);
    assert_eq!(count("/me/tracks"), 2000 / 50, "saved tracks page through, 50 at a time");
    assert_eq!(count("/me/playlists"), 1);

    // `systemctl status` sums it up, and `datapunk status` counts the records.
    notify.wait_for(
        |messages| {
            messages.iter().any(|m| m.contains("3 integrations, 7 datasets, last sync just now"))
        },
        Duration::from_secs(10),
    );
    let status = setup.cli_ok(&["status"]);
    assert!(status.contains("saved-tracks"), "{status}");
    assert!(status.contains("2000 records"), "{status}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_arrive_incrementally_and_expired_sync_tokens_resync_without_duplicates() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus, daemon) = synced(&sandbox, "").await;

    // An addition, a change and a deletion in every dataset that has them.
    for (provided, _, _) in ALL {
        let ids = mutable(&sandbox, provided);
        sandbox.add(provided);
        if provided != Provided::SpotifyRecentlyPlayed {
            sandbox.change(provided, &ids[1]).expect("change a record");
            sandbox.delete(provided, &ids[2]).expect("delete a record");
        }
    }
    let runs = sync(&setup, &[]);
    for run in &runs {
        assert_eq!(run["outcome"], "success", "{run}");
        assert!(run["added"].as_u64() >= Some(1), "{run}");
    }
    assert_equals_truth(&sandbox, &setup, &bus).await;

    // Each provider drops its sync tokens: Calendar 410, People 400 EXPIRED_SYNC_TOKEN, Graph
    // 410 SyncStateNotFound. Changes made meanwhile still arrive, nothing twice.
    for dataset in [
        Provided::GoogleCalendar,
        Provided::GoogleContacts,
        Provided::MicrosoftCalendar,
        Provided::MicrosoftContacts,
    ] {
        let id = mutable(&sandbox, dataset)[3].clone();
        sandbox.delete(dataset, &id).expect("delete a record");
        sandbox.add(dataset);
        sandbox.invalidate_sync_tokens(dataset);
    }
    let runs = sync(&setup, &[]);
    for run in &runs {
        assert_eq!(run["outcome"], "success", "{run}");
    }
    assert_equals_truth(&sandbox, &setup, &bus).await;
    let audit = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]);
    let resyncs: u64 = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .filter_map(|row| row["details"]["resyncs"].as_u64())
        .sum();
    // One per dropped token: Google Calendar keeps one per calendar, of which there are three.
    assert_eq!(resyncs, 3 + 1 + 1 + 1, "one resync per dropped token: {audit}");

    // Asked to, it reads everything again; records gone meanwhile go, nothing doubles.
    let id = mutable(&sandbox, Provided::MicrosoftContacts)[4].clone();
    sandbox.delete(Provided::MicrosoftContacts, &id).expect("delete a record");
    let runs = sync(&setup, &["microsoft", "--dataset", "contacts", "--full"]);
    assert_eq!(runs[0]["outcome"], "success", "{runs:?}");
    assert_eq!(runs[0]["deleted"], 1, "{runs:?}");
    assert_eq!(
        stored(&setup, &bus, "microsoft", Dataset::Contacts).await,
        truth(&sandbox, Provided::MicrosoftContacts)
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_is_waited_out_and_a_bad_page_is_refused_and_audited() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus, daemon) = synced(&sandbox, "").await;

    sandbox.add(Provided::SpotifySavedTracks);
    sandbox.clear_requests();
    sandbox.inject(Provider::Spotify, &[Fault::TooManyRequests { retry_after: Some(2) }]);
    let runs = sync(&setup, &["spotify", "--dataset", "saved-tracks"]);
    assert_eq!(runs[0]["outcome"], "success", "{runs:?}");
    let requests = sandbox.requests();
    let throttled = requests.iter().position(|r| r.status == 429).expect("the 429 was served");
    let next = requests.get(throttled + 1).expect("a request after the 429");
    let waited = next.millis - requests[throttled].millis;
    assert!(waited >= 2000, "the next request came {waited} ms after the 429");

    // A page cut off halfway, and a value the provider does not document in a field it
    // does: the sync fails with an audited error naming the dataset, and what was stored
    // stays as it was.
    let cases = ALL.iter().map(|case| (Fault::UnknownValue, *case));
    let cases = cases.chain([(Fault::Truncated, ALL[1]), (Fault::Truncated, ALL[5])]);
    let mut failed = 0;
    for (fault, (provided, name, dataset)) in cases {
        let before = stored(&setup, &bus, name, dataset).await;
        sandbox.add(provided);
        // Google Calendar asks for the calendar list first; the fault is for the events.
        let mut faults = vec![fault.clone()];
        if provided == Provided::GoogleCalendar {
            faults.insert(0, Fault::Slow { millis: 0 });
        }
        sandbox.inject(provided.provider(), &faults);
        let runs = sync(&setup, &[name, "--dataset", dataset.name()]);
        let what = format!("{fault:?} in {name}/{}", dataset.name());
        assert_eq!(runs[0]["outcome"], "failure", "{what}: {runs:?}");
        let error = runs[0]["error"].as_str().expect("an error");
        assert!(error.contains("unreadable answer"), "{what}: {error}");
        assert_eq!(stored(&setup, &bus, name, dataset).await, before, "{what}");
        failed += 1;
    }
    let audit = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]);
    assert_eq!(audit.matches("\"outcome\":\"failure\"").count(), failed, "{audit}");
    // Once the providers behave, the next sync catches up.
    for run in sync(&setup, &[]) {
        assert_eq!(run["outcome"], "success", "{run}");
    }
    assert_equals_truth(&sandbox, &setup, &bus).await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn datasets_not_consented_or_not_granted_are_never_requested() {
    let sandbox = sandbox(Population::default()).await;
    sandbox.withhold_scopes(Provider::Spotify, &["user-library-read"]);
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    // Contacts not chosen; saved tracks chosen but not granted.
    connected(&setup, &bus, "google", "calendar").await;
    connected(&setup, &bus, "spotify", "recently-played,saved-tracks").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 2).await;
    let runs = sync(&setup, &[]);
    let outcome = |name: &str, set: &str| {
        runs.iter()
            .find(|r| r["integration"] == name && r["dataset"] == set)
            .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(outcome("google", "calendar").as_deref(), Some("success"));
    assert_eq!(outcome("spotify", "saved-tracks").as_deref(), Some("skipped"));
    assert_eq!(outcome("google", "contacts"), None, "not chosen, not listed");
    let wrong = setup.cli(&["sync", "spotify", "--dataset", "calendar"]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("integration `spotify` has no dataset `calendar`"), "{stderr}");
    assert!(stderr.contains("recently-played") && stderr.contains("saved-tracks"), "{stderr}");

    let requests = sandbox.requests();
    assert!(requests.iter().any(|r| r.path.contains("/events")), "the chosen ones were asked");
    for forbidden in ["/connections", "/me/tracks"] {
        assert!(
            !requests.iter().any(|r| r.path.contains(forbidden)),
            "{forbidden} was requested: {requests:?}"
        );
    }

    // Disconnecting without --keep-data removes what was synced; the other account keeps its.
    let count = |name: &'static str| {
        let setup = &setup;
        async move {
            let admin = setup.admin().await;
            let row = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM datapunk.calendar_events WHERE integration = $1)
                          + (SELECT count(*) FROM datapunk.plays WHERE integration = $1)",
                    &[&name],
                )
                .await
                .expect("count the rows");
            row.get::<_, i64>(0)
        }
    };
    assert!(count("google").await > 0 && count("spotify").await > 0);
    disconnect(&setup, &bus, "google");
    assert_eq!(count("google").await, 0, "the synced rows went with the integration");
    assert!(count("spotify").await > 0);

    // Without its data key nothing can be stored: the sync fails, and status shows it.
    let output = setup
        .command("datapunk")
        .args(["keys", "destroy", "spotify", "--yes"])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .output()
        .expect("run datapunk keys destroy");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let runs = sync(&setup, &["spotify", "--dataset", "recently-played"]);
    assert_eq!(runs[0]["outcome"], "failure", "{runs:?}");
    assert!(runs[0]["error"].as_str().is_some_and(|e| e.contains("no data key")), "{runs:?}");
    let status: Value =
        serde_json::from_str(&setup.cli_ok(&["status", "--json"])).expect("the status");
    let spotify = status["integrations"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == "spotify"))
        .expect("spotify in the status");
    let played = spotify["datasets"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == "recently-played"))
        .expect("recently-played in the status");
    assert_eq!(played["outcome"], "failure", "{played}");
    assert!(played["error"].as_str().is_some_and(|e| e.contains("no data key")), "{played}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_syncs_while_the_keyring_is_locked_and_syncing_resumes_after_unlocking() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 1\n");
    connected(&setup, &bus, "spotify", "playlists").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 2).await;

    bus.lock_collection();
    let begin = Instant::now();
    loop {
        let status: Value =
            serde_json::from_str(&setup.cli_ok(&["status", "--json"])).expect("the status");
        if status["vault"]["state"] == "locked" {
            break;
        }
        assert!(begin.elapsed() < Duration::from_secs(20), "the lock was never noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]).lines().count();
    sandbox.clear_requests();
    // The datasets fall due while the keyring is locked: the daemon must idle, not spin on
    // a schedule it cannot run.
    let spent = cpu_ticks(daemon.pid());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let spent = cpu_ticks(daemon.pid()) - spent;
    assert!(spent < 20, "the daemon spent {spent} clock ticks of CPU in 4 s doing nothing");
    assert!(sandbox.requests().is_empty(), "{:?}", sandbox.requests());
    let after = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]).lines().count();
    assert_eq!(after, before, "no sync ran, and none failed, while the keyring was locked");
    let refused = setup.cli(&["sync"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("keyring is locked"), "{stderr}");

    bus.unlock();
    wait_for_syncs(&setup, after + 1).await;
    assert!(!sandbox.requests().is_empty(), "syncing resumed");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_its_own_interval_syncs_on_it_and_the_others_keep_the_common_one() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    assert!(config.contains("[providers.spotify]\n"), "{config}");
    setup.write_config(
        &config.replace("[providers.spotify]\n", "[providers.spotify]\nsync_interval_secs = 1\n"),
    );
    connected(&setup, &bus, "google", "contacts").await;
    connected(&setup, &bus, "spotify", "playlists").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 2).await;

    let runs_of = |name: &str| {
        setup
            .cli_ok(&["audit", "--action", "sync.run", "--integration", name, "--json"])
            .lines()
            .count()
    };
    let google = runs_of("google");
    let spotify = runs_of("spotify");
    sandbox.clear_requests();
    let begin = Instant::now();
    while runs_of("spotify") < spotify + 2 {
        assert!(begin.elapsed() < Duration::from_secs(60), "Spotify never synced on its own 1 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(runs_of("google"), google, "Google's contacts wait for the common hour");
    let requests = sandbox.requests();
    assert!(requests.iter().any(|r| r.path.contains("/me/playlists")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.path.contains("/connections")), "{requests:?}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_integration_disconnected_and_connected_again_syncs_at_once_not_an_interval_later() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    connected(&setup, &bus, "spotify", "playlists").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 1).await;

    disconnect(&setup, &bus, "spotify");
    // Long enough for the schedule to look at the integrations while it is disconnected.
    tokio::time::sleep(Duration::from_secs(12)).await;
    connected(&setup, &bus, "spotify", "playlists").await;
    // Picked up like any new integration, not an hour after the sync before the disconnect.
    let connected_at = Instant::now();
    let runs = wait_for_syncs(&setup, 2).await;
    assert!(connected_at.elapsed() < Duration::from_secs(30), "{runs:?}");
    assert_eq!(runs[1]["outcome"], "success", "{runs:?}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_of_a_full_sync_and_a_resync_it_converges_to_the_truth() {
    use rand::Rng as _;
    use rustix::process::Signal;

    let population = Population {
        seed: 11,
        events: 3000,
        contacts: 1500,
        saved_tracks: 1500,
        playlists: 20,
        plays: 50,
    };
    let sandbox = sandbox(population).await;
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    connected(&setup, &bus, "google", "calendar,contacts").await;
    connected(&setup, &bus, "microsoft", "calendar,contacts").await;
    connected(&setup, &bus, "spotify", "recently-played,saved-tracks,playlists").await;
    let envs = [("DBUS_SESSION_BUS_ADDRESS", bus.address())];
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    for phase in ["full sync", "resync"] {
        if phase == "resync" {
            // Everything synced once; then every token dies and the data moves on, so the
            // next rounds read everything again.
            let daemon = start(&setup, &bus).await;
            sync(&setup, &[]);
            daemon.stop();
            for (provided, _, _) in ALL {
                if provided != Provided::SpotifyRecentlyPlayed {
                    let id = mutable(&sandbox, provided)[5].clone();
                    sandbox.delete(provided, &id).expect("delete a record");
                }
                sandbox.add(provided);
                sandbox.invalidate_sync_tokens(provided);
            }
        }
        for _ in 0..5 {
            let daemon = setup.spawn_daemon(None, &envs);
            // Somewhere in the first seconds, which is where the rounds are.
            let wait = Duration::from_millis(rng.gen_range(300..2500));
            tokio::time::sleep(wait).await;
            daemon.signal(Signal::KILL);
            let (status, _, _) = daemon.wait(Duration::from_secs(5));
            assert!(!status.success(), "{phase}: killed, not stopped");
            kills += 1;
        }
        // A daemon that is left alone, and a sync that completes.
        let daemon = start(&setup, &bus).await;
        let runs = sync(&setup, &[]);
        for run in &runs {
            assert_eq!(run["outcome"], "success", "{phase}: {run}");
        }
        assert_equals_truth(&sandbox, &setup, &bus).await;
        daemon.stop();
    }
    assert_eq!(kills, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_markers_reach_no_table_file_no_wal_and_no_server_log() {
    use datapunk_testkit::Cluster;
    use datapunk_tests::files_containing;

    // A server that logs every statement with its parameters in full.
    let cluster = Cluster::start_with(&[
        ("log_statement", "all"),
        ("log_min_duration_statement", "0"),
        ("log_parameter_max_length", "-1"),
    ]);
    let db = cluster.unique_db_name("markers");
    let setup = Setup::external_with(&db, &cluster.conninfo("datapunk_app", &db), "");
    let admin_url = cluster.conninfo("postgres", "postgres");
    let init = setup.cli(&["db", "init", "--admin-url", &admin_url]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus) = sandboxed::setup_on(setup, &sandbox, "[sync]\ninterval_secs = 3600\n");
    connected(&setup, &bus, "google", "calendar,contacts").await;
    connected(&setup, &bus, "microsoft", "calendar,contacts").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 4).await;

    // Markers in event titles and descriptions, contact e-mail addresses and phone numbers.
    let tag: u64 = rand::random();
    let mut markers = Vec::new();
    for (provided, name, dataset) in &ALL[..4] {
        let marker = format!("DPMARK{tag:016x}{}", markers.len());
        let id = mutable(&sandbox, *provided)[0].clone();
        sandbox.plant(*provided, &id, &marker).expect("plant a marker");
        markers.push((marker, *name, *dataset));
    }
    for run in sync(&setup, &[]) {
        assert_eq!(run["outcome"], "success", "{run}");
    }

    let admin = cluster.admin_client(&db).await;
    for (marker, name, dataset) in &markers {
        // The control: the daemon stored the marker, sealed.
        let key = vault(&bus).data_key(name).await.expect("the keyring").expect("a key");
        let rows = datasets::sealed_records(&admin, name, *dataset).await.expect("the rows");
        let holding = rows
            .iter()
            .map(|row| field::decrypt_fields(&key, &row.sealed).expect("decrypt"))
            .filter(|fields| fields.values().any(|text| text.contains(marker.as_str())))
            .count();
        assert_eq!(holding, 1, "{name}/{}: the marker is stored, sealed", dataset.name());
    }
    // A marker written in clear must be found by the same search, once it is on disk.
    let control = format!("DPCONTROL{tag:016x}");
    admin
        .batch_execute(&format!(
            "CREATE TABLE control (value text); INSERT INTO control VALUES ('{control}');"
        ))
        .await
        .expect("the control table");
    admin.batch_execute("CHECKPOINT").await.expect("flush everything to the files");
    daemon.stop();

    let data = cluster.data_dir();
    assert!(!files_containing(data, control.as_bytes()).is_empty(), "the search finds clear text");
    let log = cluster.log();
    assert!(log.contains("statement:") || log.contains("execute"), "the server logged statements");
    for (marker, name, dataset) in &markers {
        let files = files_containing(data, marker.as_bytes());
        assert!(files.is_empty(), "{name}/{}: the marker is in {files:?}", dataset.name());
        assert!(
            !log.contains(marker.as_str()),
            "{name}/{}: the marker is in the log",
            dataset.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_graph_delta_token_is_refused_not_taken_for_an_expired_one() {
    let sandbox = sandbox(Population::default()).await;
    let (setup, bus, daemon) = synced(&sandbox, "").await;
    let before = stored(&setup, &bus, "microsoft", Dataset::Contacts).await;

    // The stored delta link with its token mangled, as a damaged link would be.
    let admin = setup.admin().await;
    let changed = admin
        .execute(
            "UPDATE datapunk.sync_streams
             SET cursor_text = regexp_replace(cursor_text, '(deltatoken=)[^&]*', '\\1garbled')
             WHERE integration = 'microsoft' AND dataset = 'contacts'",
            &[],
        )
        .await
        .expect("mangle the delta link");
    assert_eq!(changed, 1);
    let runs = sync(&setup, &["microsoft", "--dataset", "contacts"]);
    assert_eq!(runs[0]["outcome"], "failure", "{runs:?}");
    let error = runs[0]["error"].as_str().expect("an error");
    assert!(error.contains("400"), "{error}");
    let audit =
        setup.cli_ok(&["audit", "--action", "sync.run", "--integration", "microsoft", "--json"]);
    let last: Value = serde_json::from_str(audit.lines().last().expect("a row")).expect("JSON");
    assert_eq!(last["details"]["resyncs"], 0, "no full resync: {last}");
    assert_eq!(stored(&setup, &bus, "microsoft", Dataset::Contacts).await, before);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_client_that_stops_reading_does_not_stall_the_sync() {
    // A library long enough that its progress lines overflow the control socket's buffer.
    let population = Population { saved_tracks: 50_000, ..Population::default() };
    let sandbox = sandbox(population).await;
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    connected(&setup, &bus, "spotify", "saved-tracks").await;
    let daemon = start(&setup, &bus).await;
    wait_for_syncs(&setup, 1).await;

    // `datapunk sync` suspended (Ctrl-Z) once its sync is under way: it reads nothing more.
    sandbox.clear_requests();
    let mut client = setup
        .command("datapunk")
        .args(["sync", "spotify", "--dataset", "saved-tracks", "--full", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start datapunk sync");
    let begin = Instant::now();
    while !sandbox.requests().iter().any(|r| r.path.contains("/me/tracks")) {
        assert!(begin.elapsed() < Duration::from_secs(30), "the sync never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = client.id().to_string();
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stopped.expect("kill").success());

    // The sync still reads every page and ends, audited, while the client sleeps.
    let rows = wait_for_syncs(&setup, 2).await;
    assert_eq!(rows.iter().filter(|r| r["outcome"] == "success").count(), 2, "{rows:?}");
    let pages = sandbox.requests().iter().filter(|r| r.path.contains("/me/tracks")).count();
    assert_eq!(pages, 50_000 / 50, "every page of the library was read");

    let resumed = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    assert!(resumed.expect("kill").success());
    client.wait().expect("datapunk sync ends");
    daemon.stop();
}
