//! The daemon under systemd's notify protocol: READY, STATUS, WATCHDOG, STOPPING, clean exit,
//! and its refusal to run as root.

use std::time::Duration;

use datapunk_testkit::{NotifySocket, bin, is_root};
use datapunk_tests::Setup;

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
    assert!(stderr.contains(&setup.db_name) || stderr.contains("database"), "{stderr}");
}
