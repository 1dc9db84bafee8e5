//! The daemon under systemd's notify protocol: READY, STATUS, WATCHDOG, STOPPING, clean exit,
//! and its refusal to run as root.

use std::time::Duration;

use datapunk_testkit::{NotifySocket, bin, is_root};
use datapunk_tests::Setup;
use rustix::process::Signal;

fn lines(messages: &[String]) -> Vec<String> {
    messages.iter().flat_map(|m| m.lines().map(str::to_owned)).collect()
}

#[test]
fn it_sends_ready_then_status_then_watchdog_pings_and_stops_cleanly_on_sigterm() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    // 300 ms: the daemon must ping every 150 ms.
    let daemon = setup.spawn_daemon(Some(&notify), &[("WATCHDOG_USEC", "300000")]);

    notify.wait_for_line("READY=1", Duration::from_secs(30));
    let messages = notify.wait_for(
        |m| lines(m).iter().filter(|l| *l == "WATCHDOG=1").count() >= 4,
        Duration::from_secs(10),
    );
    let lines = lines(&messages);
    let ready = lines.iter().position(|l| l == "READY=1").expect("READY=1 was sent");
    let status = lines.iter().skip(ready).position(|l| l.starts_with("STATUS=")).map(|i| i + ready);
    let status = status.expect("a STATUS= line comes with or after READY=1");
    assert!(lines[status].contains("running"), "{}", lines[status]);
    assert!(lines[status].contains(&setup.db_name), "{}", lines[status]);
    let first_ping = lines.iter().position(|l| l == "WATCHDOG=1").expect("pinged");
    assert!(first_ping > ready, "watchdog pings start after READY=1: {lines:?}");

    let took = daemon.stop();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let all = notify.messages().join("\n");
    assert!(all.lines().any(|l| l == "STOPPING=1"), "no STOPPING=1 in {all}");
}

#[test]
fn without_a_watchdog_it_sends_no_pings() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    daemon.stop();
    let all = notify.messages().join("\n");
    assert!(!all.lines().any(|l| l == "WATCHDOG=1"), "unexpected pings: {all}");
}

#[test]
fn as_root_it_exits_non_zero_naming_the_reason() {
    assert!(is_root(), "this test must run as root (as CI does) to start datapunkd as root");
    let output = std::process::Command::new(bin("datapunkd"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run datapunkd as root");
    assert!(!output.status.success());
    assert_eq!(output.status.code(), Some(77));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refuses to run as root"), "{stderr}");
}

#[test]
fn the_cli_reports_a_missing_daemon_with_exit_status_3() {
    let setup = Setup::external();
    let output = setup.cli(&["status"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not running"), "{stderr}");
}

#[test]
fn an_external_database_without_the_schema_is_refused_with_a_hint() {
    let setup = Setup::external();
    // No `db init`: the database does not even exist.
    let daemon = setup.spawn_daemon(None, &[]);
    let (status, _, stderr) = daemon.wait(Duration::from_secs(30));
    assert!(!status.success());
    // Which is missing first depends on what other tests created in the shared cluster: the
    // roles (then the hint is `datapunk db init`) or the database (then it is named).
    let hint = stderr.contains(&setup.db_name) || stderr.contains("datapunk db init");
    assert!(hint, "the error must name the database or point at `datapunk db init`: {stderr}");
}

#[test]
fn at_debug_level_the_database_driver_does_not_log_bind_parameters() {
    let journal = datapunk_testkit::journal();
    // Process ids are reused within a run: only entries written since the test began count.
    let since = std::time::SystemTime::now();
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let config = std::fs::read_to_string(&setup.config).expect("read config");
    setup.write_config(&format!("[log]\nlevel = \"debug\"\n\n{config}"));
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    let pid = daemon.pid().to_string();
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    daemon.stop();

    let entries = journal.wait_for_since(&[("_PID", &pid)], since, 1, Duration::from_secs(10));
    let messages: Vec<&str> =
        entries.iter().filter_map(|e| e.get("MESSAGE").and_then(|m| m.as_str())).collect();
    assert!(messages.iter().any(|m| m.contains("ready")), "the daemon logged: {messages:?}");
    let leaked: Vec<&&str> = messages.iter().filter(|m| m.contains("parameters")).collect();
    assert!(leaked.is_empty(), "bind parameters reached the journal: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_holding_the_audit_lock_does_not_hold_up_shutdown() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    // An app-role session appends and keeps its transaction open, holding the audit lock.
    let app = setup.connect_as("datapunk_app").await.expect("app logs in");
    app.batch_execute(
        "BEGIN; SELECT datapunk.audit_append(1, 'test', 'test.hold', NULL, NULL, 'success', '{}')",
    )
    .await
    .expect("append inside an open transaction");

    let took = daemon.stop();
    assert!(took < Duration::from_secs(5), "shutdown waited on the lock for {took:?}");
    app.batch_execute("ROLLBACK").await.expect("rollback");
}

#[test]
fn a_reload_warns_of_a_restart_while_the_file_differs_from_what_runs() {
    let journal = datapunk_testkit::journal();
    let since = std::time::SystemTime::now();
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    let pid = daemon.pid().to_string();
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    // Each reload is audited after its warning, if any, from the same thread: once the nth
    // `config.loaded` is in the journal, so is everything the reload logged before it.
    let mut loads = 1;
    let mut reload = |text: &str| {
        setup.write_config(text);
        daemon.signal(Signal::HUP);
        loads += 1;
        let wanted = [("_PID", pid.as_str()), ("DATAPUNK_ACTION", "config.loaded")];
        journal.wait_for_since(&wanted, since, loads, Duration::from_secs(10));
        journal
            .entries_since(&[("_PID", pid.as_str())], since)
            .iter()
            .filter_map(|e| e.get("MESSAGE").and_then(|m| m.as_str()))
            .filter(|m| m.contains("apply at the next restart"))
            .count()
    };

    let running = std::fs::read_to_string(&setup.config).expect("read config");
    let changed = format!("[sync]\ninterval_secs = 1234\n\n{running}");
    assert_eq!(reload(&changed), 1, "a changed interval needs a restart");
    assert_eq!(reload(&changed), 2, "and still does at the next reload");
    assert_eq!(reload(&running), 2, "the file is back to what runs");
    let level = format!("[log]\nlevel = \"debug\"\n\n{running}");
    assert_eq!(reload(&level), 2, "the log level applies at once");
    let backup = format!("{level}\n[backup]\ndir = \"/nonexistent/backups\"\n");
    assert_eq!(reload(&backup), 2, "only the CLI reads [backup], afresh at every command");
    daemon.stop();
}
