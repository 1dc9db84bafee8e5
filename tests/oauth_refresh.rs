//! Refreshing tokens against the provider sandbox: rotation saved before use and surviving a
//! killed daemon, one token request for many concurrent callers, a 401 answered by one
//! refresh, a gone grant that stops everything after one audit row and one notification,
//! and a reconnection to another account refused. No token the sandbox issued may appear in
//! any output, log line, journal entry or audit row, and the client secret in no process's
//! command line or environment.

mod sandboxed;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datapunk_sandbox::{Account, Failure, Provider, Sandbox};
use datapunk_testkit::NotifySocket;
use datapunk_testkit::journal;
use datapunk_testkit::notifications::Notifications;
use datapunk_tests::Setup;
use rustix::process::Signal;
use sandboxed::{authorization_url, browse, connect, connected, finish, setup, vault};

async fn sandbox() -> Sandbox {
    Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox")
}

/// An access token lifetime under the 60 s refresh margin: every such token is due at once.
const DUE: Duration = Duration::from_secs(30);

/// Polls `datapunk audit --action ACTION --json` until it lists `count` rows.
async fn wait_for_rows(setup: &Setup, action: &str, count: usize) -> String {
    let start = Instant::now();
    loop {
        let rows = setup.cli_ok(&["audit", "--action", action, "--json"]);
        if rows.lines().count() >= count {
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "expected {count} `{action}` rows; found:\n{rows}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The state `datapunk integrations --json` shows for `name`.
fn state_of(setup: &Setup, name: &str) -> String {
    let listed = setup.cli_ok(&["integrations", "--json"]);
    listed
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .find(|row| row["name"] == name)
        .and_then(|row| row["state"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no integration {name}: {listed}"))
}

/// Asserts that no token `sandbox` issued is in `text`, naming `what` it is.
fn assert_no_tokens(sandbox: &Sandbox, text: &str, what: &str) {
    let issued = sandbox.issued_tokens();
    assert!(!issued.is_empty(), "the sandbox issued tokens, so the search means something");
    for token in issued {
        assert!(!text.contains(&token), "a token the sandbox issued is in {what}");
    }
}

/// Every journal entry of `pid`, as text.
fn journal_of(pid: u32) -> String {
    let entries = journal().entries(&[("_PID", &pid.to_string())]);
    entries.iter().map(|entry| serde_json::Value::Object(entry.clone()).to_string()).collect()
}

/// Reads every process's command line and environment, returning the pids where `secret`
/// occurs, and how many processes were read.
fn processes_holding(secret: &str) -> (Vec<u32>, usize) {
    let mut found = Vec::new();
    let mut read = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("a /proc entry");
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let mut any = false;
        for file in ["cmdline", "environ"] {
            // A process may exit while it is read.
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                any = true;
                if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                    found.push(pid);
                }
            }
        }
        read += usize::from(any);
    }
    (found, read)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_refresh_token_is_saved_before_use_and_survives_a_killed_daemon() {
    // Started before the daemon, so that the daemon logs to it.
    journal();
    let sandbox = sandbox().await;
    sandbox.set_access_token_lifetime(Provider::Microsoft, DUE);
    let (setup, bus) = setup(&sandbox, "");
    connected(&setup, &bus, "microsoft", "calendar").await;
    let vault = vault(&bus);
    let first = vault.token("microsoft").await.expect("read").expect("a token");
    let first_refresh = first.refresh_token.expect("a refresh token").expose_secret().to_owned();
    // The connected token is due at once; the refreshed one lasts, so that the daemon's sync
    // refreshes exactly once.
    sandbox.set_access_token_lifetime(Provider::Microsoft, Duration::from_secs(3600));

    let envs = [("DBUS_SESSION_BUS_ADDRESS", bus.address())];
    let daemon = setup.spawn_daemon(None, &envs);
    let first_pid = daemon.pid();
    wait_for_rows(&setup, "token.refreshed", 1).await;
    // Killed right after the refresh: nothing gets to run at exit.
    daemon.signal(Signal::KILL);
    let (_, _, first_stderr) = daemon.wait(Duration::from_secs(5));

    assert!(
        !sandbox.refresh_token_alive(Provider::Microsoft, &first_refresh),
        "Microsoft rotated the refresh token: the old one is dead"
    );
    let saved = vault.token("microsoft").await.expect("read").expect("a token");
    let saved_refresh = saved.refresh_token.expect("a refresh token").expose_secret().to_owned();
    assert_ne!(saved_refresh, first_refresh);
    assert!(sandbox.refresh_token_alive(Provider::Microsoft, &saved_refresh), "the new one saved");
    let refreshed = setup.cli_ok(&["audit", "--action", "token.refreshed", "--json"]);
    let row: serde_json::Value = serde_json::from_str(refreshed.trim()).expect("one JSON row");
    assert_eq!(row["details"]["rotated"], true, "{row}");
    assert_eq!(row["details"]["rotation_saved"], true, "{row}");

    // The restarted daemon refreshes with the saved token (the provider refuses the access
    // token it holds): no reconnection needed.
    sandbox.expire_access_tokens(Provider::Microsoft);
    let daemon = setup.spawn_daemon(None, &envs);
    let second_pid = daemon.pid();
    wait_for_rows(&setup, "token.refreshed", 2).await;
    daemon.stop();
    let stats = sandbox.stats(Provider::Microsoft);
    assert_eq!(stats.refreshes, 2, "{stats:?}");
    assert_eq!(state_of(&setup, "microsoft"), "active");
    let gone = setup.cli_ok(&["audit", "--action", "integration.needs_reauth", "--json"]);
    assert_eq!(gone, "", "the grant was never lost");

    assert_no_tokens(&sandbox, &first_stderr, "the daemon's standard error");
    assert_no_tokens(&sandbox, &setup.cli_ok(&["audit", "--json"]), "the audit trail");
    for pid in [first_pid, second_pid] {
        let entries = journal_of(pid);
        assert!(entries.contains("token.refreshed"), "the refresh is in journald");
        assert_no_tokens(&sandbox, &entries, "journald");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_callers_cause_one_refresh_and_a_401_causes_one_more() {
    let sandbox = sandbox().await;
    sandbox.set_access_token_lifetime(Provider::Google, DUE);
    let (setup, bus) = setup(&sandbox, "");
    connected(&setup, &bus, "google", "calendar").await;
    // The refresh gives an hour, so whoever comes after it finds a fresh token.
    sandbox.set_access_token_lifetime(Provider::Google, Duration::from_secs(3600));
    let before = sandbox.stats(Provider::Google);
    // The first refresh is slow, so that the other callers arrive while it runs.
    sandbox.fail_next(Provider::Google, &[Failure::Slow]);

    let checks: Vec<_> = (0..20)
        .map(|_| {
            setup
                .command("datapunk")
                .args(["check", "google", "--json"])
                .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start datapunk check")
        })
        .collect();
    let mut outputs = String::new();
    for check in checks {
        let output = check.wait_with_output().expect("datapunk check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("\"account_id\":\"108395217432160591234\""), "{stdout}");
        outputs.push_str(&stdout);
        outputs.push_str(&stderr);
    }
    let after = sandbox.stats(Provider::Google);
    assert_eq!(after.refresh_requests - before.refresh_requests, 1, "{after:?}");
    assert_eq!(after.api_requests - before.api_requests, 20, "{after:?}");
    assert_eq!(wait_for_rows(&setup, "token.refreshed", 1).await.lines().count(), 1);

    // An API that refuses a token before its expiry gets one refresh and one retry.
    sandbox.expire_access_tokens(Provider::Google);
    let output = setup
        .command("datapunk")
        .args(["check", "google"])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .output()
        .expect("datapunk check");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let last = sandbox.stats(Provider::Google);
    assert_eq!(last.refresh_requests - after.refresh_requests, 1, "{last:?}");
    assert_eq!(last.api_unauthorized - after.api_unauthorized, 1, "{last:?}");
    assert_eq!(last.api_requests - after.api_requests, 2, "{last:?}");

    outputs.push_str(&String::from_utf8_lossy(&output.stdout));
    assert_no_tokens(&sandbox, &outputs, "the CLI's output");
    assert_no_tokens(&sandbox, &setup.cli_ok(&["audit", "--json"]), "the audit trail");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_grant_is_audited_and_notified_once_and_then_left_alone() {
    // Started before the daemon, so that the daemon logs to it.
    journal();
    let sandbox = sandbox().await;
    sandbox.set_access_token_lifetime(Provider::Spotify, DUE);
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 1\n");
    connected(&setup, &bus, "spotify", "recently-played").await;
    sandbox.expire_refresh_tokens(Provider::Spotify);
    let notifications = Notifications::serve(bus.address()).await;

    let notify = NotifySocket::new();
    let envs = [("DBUS_SESSION_BUS_ADDRESS", bus.address())];
    let daemon = setup.spawn_daemon(Some(&notify), &envs);
    let pid = daemon.pid();
    let rows = wait_for_rows(&setup, "integration.needs_reauth", 1).await;
    // `systemctl status` shows that something needs the person.
    notify.wait_for(
        |messages| messages.iter().any(|m| m.contains("1 integration, 1 not active")),
        Duration::from_secs(10),
    );
    let requests = sandbox.stats(Provider::Spotify).refresh_requests;
    // Several sync intervals pass: no more token requests, rows or notifications.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = setup.cli_ok(&["status", "--json"]);
    daemon.stop();

    assert_eq!(requests, 1, "one refresh found the grant gone");
    assert_eq!(sandbox.stats(Provider::Spotify).refresh_requests, 1, "none after it");
    let rows_after = setup.cli_ok(&["audit", "--action", "integration.needs_reauth", "--json"]);
    assert_eq!(rows_after, rows);
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.contains("invalid_grant"), "{rows}");
    assert_eq!(state_of(&setup, "spotify"), "needs_reauth");
    let status: serde_json::Value = serde_json::from_str(&status).expect("the status as JSON");
    let shown = status["integrations"].as_array().expect("a list of integrations");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(
        (&shown[0]["name"], &shown[0]["state"]),
        (&serde_json::json!("spotify"), &serde_json::json!("needs_reauth"))
    );

    let received = notifications.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].summary.contains("spotify"), "{received:?}");
    assert!(received[0].body.contains("datapunk connect spotify"), "{received:?}");
    assert_eq!(received[0].urgency, Some(2), "critical: it needs the person");
    assert_no_tokens(&sandbox, &format!("{received:?}"), "the notification");

    // The CLI sees the same state and asks the provider nothing.
    let output = setup
        .command("datapunk")
        .args(["check", "spotify"])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .output()
        .expect("datapunk check");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs_reauth") && stderr.contains("datapunk connect"), "{stderr}");
    assert_eq!(sandbox.stats(Provider::Spotify).token_requests, 2, "the code, the one refresh");

    let entries = journal_of(pid);
    assert!(entries.contains("integration.needs_reauth"), "the event is in journald");
    assert_no_tokens(&sandbox, &entries, "journald");
    assert_no_tokens(&sandbox, &setup.cli_ok(&["audit", "--json"]), "the audit trail");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnecting_to_another_account_is_refused_and_the_client_secret_stays_out_of_proc() {
    let sandbox = sandbox().await;
    let (setup, bus) = setup(&sandbox, "");
    let secret = sandbox.client(Provider::Google).secret.expect("Google's client has a secret");
    connected(&setup, &bus, "google", "contacts").await;
    let listed = setup.cli_ok(&["integrations", "--json"]);
    assert!(listed.contains("\"account_id\":\"108395217432160591234\""), "{listed}");
    assert!(listed.contains("\"display_name\":\"sandbox.user@example.com\""), "{listed}");
    let before = vault(&bus).token("google").await.expect("read").expect("a token");

    // Someone else signs in at Google during the reconnection.
    sandbox.sign_in_as(
        Provider::Google,
        Account { id: "117000000000000000042".to_owned(), name: "mallory@example.com".to_owned() },
    );
    let daemon = setup.spawn_daemon(None, &[("DBUS_SESSION_BUS_ADDRESS", bus.address())]);
    let mut child = connect(&setup, &bus, &["google", "--datasets", "contacts", "--no-browser"]);
    let url = authorization_url(&mut child);
    // The CLI waits for the browser and the daemon runs, both holding the client secret.
    let (holding, read) = processes_holding(&secret);
    assert!(read > 3, "processes were read");
    assert!(holding.is_empty(), "the client secret is in the argv or environment of {holding:?}");
    browse(&url).await;
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(child)).await.expect("join");
    daemon.stop();

    assert!(!ok, "a different account must be refused");
    assert!(stderr.contains("another google account"), "{stderr}");
    let after = vault(&bus).token("google").await.expect("read").expect("a token");
    assert_eq!(
        after.refresh_token.expect("kept").expose_secret(),
        before.refresh_token.expect("kept").expose_secret(),
        "the stored tokens are the first account's still"
    );
    let listed = setup.cli_ok(&["integrations", "--json"]);
    assert!(listed.contains("\"account_id\":\"108395217432160591234\""), "{listed}");
    let refused = setup.cli_ok(&["audit", "--action", "integration.connect_refused", "--json"]);
    assert_eq!(refused.lines().count(), 1, "{refused}");
    assert!(refused.contains("different account"), "{refused}");
    assert_no_tokens(&sandbox, &stderr, "the CLI's output");
}

#[tokio::test(flavor = "multi_thread")]
async fn refreshed_tokens_that_cannot_be_saved_are_not_used_until_they_are() {
    let sandbox = sandbox().await;
    sandbox.set_access_token_lifetime(Provider::Microsoft, DUE);
    let (setup, bus) = setup(&sandbox, "[sync]\ninterval_secs = 1\n");
    connected(&setup, &bus, "microsoft", "calendar").await;
    let first = vault(&bus).token("microsoft").await.expect("read").expect("a token");
    let first_refresh = first.refresh_token.expect("a refresh token").expose_secret().to_owned();
    // The connected token is due at once; the refreshed one lasts, so one refresh serves the
    // whole sync once it is saved.
    sandbox.set_access_token_lifetime(Provider::Microsoft, Duration::from_secs(3600));
    // The refresh is slow, so that the keyring can be locked while it is under way.
    sandbox.fail_next(Provider::Microsoft, &[Failure::Slow]);
    let before = sandbox.stats(Provider::Microsoft);

    let daemon = setup.spawn_daemon(None, &[("DBUS_SESSION_BUS_ADDRESS", bus.address())]);
    let start = Instant::now();
    while sandbox.stats(Provider::Microsoft).refresh_requests == before.refresh_requests {
        assert!(start.elapsed() < Duration::from_secs(20), "the daemon never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.lock_collection();
    let unsaved = wait_for_rows(&setup, "token.unsaved", 1).await;
    let row: serde_json::Value = serde_json::from_str(unsaved.trim()).expect("one JSON row");
    assert_eq!(row["details"]["rotated"], true, "{row}");
    assert_eq!(state_of(&setup, "microsoft"), "token_unsaved");
    // Rounds go on every second: none may use the new access token, nor refresh again with
    // the rotated (dead) refresh token.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = sandbox.stats(Provider::Microsoft);
    assert_eq!(waiting.api_requests, before.api_requests, "an unsaved token was used");
    assert_eq!(waiting.refresh_requests, before.refresh_requests + 1, "{waiting:?}");
    assert!(!sandbox.refresh_token_alive(Provider::Microsoft, &first_refresh), "rotated");
    let rows = setup.cli_ok(&["audit", "--action", "token.unsaved", "--json"]);
    assert_eq!(rows.lines().count(), 1, "one row for the event, not one per attempt: {rows}");

    bus.unlock();
    wait_for_rows(&setup, "token.refreshed", 1).await;
    let start = Instant::now();
    while sandbox.stats(Provider::Microsoft).api_requests == before.api_requests {
        assert!(start.elapsed() < Duration::from_secs(20), "the saved token was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop();

    assert_eq!(state_of(&setup, "microsoft"), "active");
    let saved = vault(&bus).token("microsoft").await.expect("read").expect("a token");
    let saved_refresh = saved.refresh_token.expect("a refresh token").expose_secret().to_owned();
    assert!(sandbox.refresh_token_alive(Provider::Microsoft, &saved_refresh), "the kept one");
    let after = sandbox.stats(Provider::Microsoft);
    assert_eq!(after.refresh_requests, before.refresh_requests + 1, "saved, not refreshed again");
    assert_no_tokens(&sandbox, &setup.cli_ok(&["audit", "--json"]), "the audit trail");
}
