//! The daemon and its secret store: a keyring locked mid-run is reported, audited and waited
//! out; a missing session bus is named, not a crash.

use std::time::{Duration, Instant};

use datapunk_testkit::{NotifySocket, SessionBus};
use datapunk_tests::Setup;
use serde_json::Value;

/// `datapunk status --json`, parsed.
fn status(setup: &Setup) -> Value {
    let json = setup.cli_ok(&["status", "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("status is not JSON ({e}): {json}"))
}

/// Waits until `datapunk status` reports the vault in `state`, and returns that status.
fn wait_for_vault(setup: &Setup, state: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        let status = status(setup);
        if status["vault"]["state"] == state {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "the vault is not {state} after {timeout:?}: {}",
            status["vault"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `vault.state` audit rows, oldest first, as (state, outcome, reason).
fn vault_events(setup: &Setup) -> Vec<(String, String, Option<String>)> {
    let json = setup.cli_ok(&["audit", "--action", "vault.state", "--json"]);
    let mut events: Vec<(i64, String, String, Option<String>)> = json
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("an audit row as JSON");
            let details = &row["details"];
            (
                row["id"].as_i64().expect("an id"),
                details["state"].as_str().expect("a state").to_owned(),
                row["outcome"].as_str().expect("an outcome").to_owned(),
                details["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, state, outcome, reason)| (state, outcome, reason)).collect()
}

#[test]
fn a_keyring_locked_mid_run_is_reported_and_audited_and_work_resumes_after_unlocking() {
    let bus = SessionBus::start();
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[("DBUS_SESSION_BUS_ADDRESS", bus.address())]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    let ready = wait_for_vault(&setup, "ready", Duration::from_secs(20));
    assert_eq!(ready["vault"]["backend"], "secret-service");

    bus.lock_collection();

    let locked = wait_for_vault(&setup, "locked", Duration::from_secs(20));
    assert_eq!(locked["state"], "running", "the daemon keeps running: {locked}");
    assert_eq!(locked["pid"].as_u64(), Some(u64::from(daemon.pid())), "the same process");
    let text = setup.cli_ok(&["status"]);
    assert!(text.contains("keyring locked"), "{text}");
    notify.wait_for(
        |messages| messages.iter().any(|m| m.contains("STATUS=") && m.contains("keyring locked")),
        Duration::from_secs(5),
    );

    // Unlocking replaces the keyring daemon, as logging in does.
    bus.unlock();

    let resumed = wait_for_vault(&setup, "ready", Duration::from_secs(30));
    assert_eq!(resumed["pid"].as_u64(), Some(u64::from(daemon.pid())), "no restart");
    let events = vault_events(&setup);
    let states: Vec<(&str, &str)> =
        events.iter().map(|(state, outcome, _)| (state.as_str(), outcome.as_str())).collect();
    assert_eq!(
        states,
        [("ready", "success"), ("locked", "failure"), ("ready", "success")],
        "one audit row per change of state"
    );
    notify.wait_for(
        |messages| {
            let last = messages.iter().rev().find(|m| m.contains("STATUS="));
            last.is_some_and(|m| m.contains("keyring ready"))
        },
        Duration::from_secs(5),
    );

    let took = daemon.stop();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn without_a_session_bus_the_daemon_runs_and_names_the_missing_bus() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    // The setup's environment has no DBUS_SESSION_BUS_ADDRESS and no bus socket in
    // XDG_RUNTIME_DIR.
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    let status = wait_for_vault(&setup, "unavailable", Duration::from_secs(20));
    let reason = status["vault"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("no D-Bus session bus"), "{reason}");
    assert!(reason.contains("DBUS_SESSION_BUS_ADDRESS"), "{reason}");
    let text = setup.cli_ok(&["status"]);
    assert!(text.contains("keyring unavailable"), "{text}");
    assert!(text.contains("no D-Bus session bus"), "{text}");
    let events = vault_events(&setup);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("unavailable", "failure"));
    assert!(events[0].2.as_deref().is_some_and(|r| r.contains("session bus")), "{events:?}");

    // Retries with backoff do not add a row while nothing changes.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(vault_events(&setup).len(), 1);
    daemon.signal(rustix::process::Signal::TERM);
    let (exit, _, stderr) = daemon.wait(Duration::from_secs(5));
    assert!(exit.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_encrypted_table_vault_needs_its_master_key_to_start_and_then_reports_ready() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let key_file = setup.path().join("master-key");
    let config = std::fs::read_to_string(&setup.config).expect("read the configuration");
    setup.write_config(&format!(
        "{config}\n[vault]\nbackend = \"encrypted-table\"\nmaster_key_file = \"{}\"\n",
        key_file.display()
    ));
    // Commands that do not open the vault are not held up by it.
    assert_eq!(setup.cli(&["status"]).status.code(), Some(3), "no daemon runs yet");

    let daemon = setup.spawn_daemon(None, &[]);
    let (status, _, stderr) = daemon.wait(Duration::from_secs(30));

    assert_eq!(status.code(), Some(78), "a restart cannot fix a missing key: {stderr}");
    assert!(stderr.contains("master-key"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    setup.write_file("master-key", format!("{}\n", "5a".repeat(32)).as_bytes());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    let status = wait_for_vault(&setup, "ready", Duration::from_secs(20));
    assert_eq!(status["vault"]["backend"], "encrypted-table");
    assert!(setup.cli_ok(&["status"]).contains("vault table ready"));
    daemon.stop();
}

/// Just after start-up the vault's first check may still run; a `datapunk sync` asked for then
/// waits for its answer instead of being refused because the vault is "checking".
#[test]
fn a_sync_asked_for_while_the_vault_is_first_checked_waits_for_the_answer() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    // A `pass` that takes three seconds to answer, like a store on a slow disk.
    let real = std::process::Command::new("sh").args(["-c", "command -v pass"]).output();
    let real = String::from_utf8_lossy(&real.expect("sh").stdout).trim().to_owned();
    assert!(!real.is_empty(), "NOT RUN: `pass` is not installed");
    let bin = setup.path().join("slow-bin");
    let store = setup.path().join("store");
    for dir in [&bin, &store] {
        let made = setup.command("mkdir").args(["-m", "700"]).arg(dir).output();
        assert!(made.expect("mkdir").status.success());
    }
    setup.write_file("store/.gpg-id", b"0123456789ABCDEF0123456789ABCDEF01234567\n");
    setup.write_file(
        "slow-bin/pass",
        format!("#!/bin/sh\nsleep 3\nexec {real} \"$@\"\n").as_bytes(),
    );
    let made = setup.command("chmod").args(["700"]).arg(bin.join("pass")).output();
    assert!(made.expect("chmod").status.success());
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let vault = format!("[vault]\nbackend = \"pass\"\npass_store_dir = \"{}\"\n", store.display());
    setup.write_config(&format!("{config}\n{vault}"));

    let path = format!("{}:{}", bin.display(), datapunk_tests::path_with_postgres());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[("PATH", &path)]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    assert_eq!(status(&setup)["vault"]["state"], "checking", "the first check already ended");
    let output = setup.cli(&["sync"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("checking"),
        "the sync was refused while the vault was checked: {stderr}"
    );
    assert!(stderr.contains("no integration has a dataset to sync"), "{stderr}");
    assert_eq!(status(&setup)["vault"]["state"], "ready");
    daemon.stop();
}
