//! The audit trail: one row and one journald entry per action, a chain `datapunk audit verify`
//! checks, and edits by an administrator that it catches.

use std::collections::BTreeMap;
use std::time::Duration;

use datapunk_testkit::{NotifySocket, journal};
use datapunk_tests::Setup;
use rustix::process::Signal;
use serde_json::Value;

/// `(id, action, component, outcome, integration)` for every row, oldest first.
async fn rows(setup: &Setup) -> Vec<(i64, String, String, String, Option<String>)> {
    let admin = setup.admin().await;
    admin
        .query("SELECT id, action, actor_component, outcome, integration FROM datapunk.audit ORDER BY id", &[])
        .await
        .expect("read the audit table")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn field<'a>(entry: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

fn connect_and_get_refused(setup: &Setup) {
    // The test runs as root, a uid other than the daemon's: the daemon must close the
    // connection without answering.
    use std::io::{Read, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(setup.control_socket()).expect("connect as root");
    let _ = stream.write_all(b"{\"request\":\"status\"}\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(answer, "", "a refused peer must get no answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_leaves_exactly_one_row_and_one_journal_entry() {
    // Process ids are reused within a run: only entries written since the test began count.
    let since = std::time::SystemTime::now();
    assert!(datapunk_testkit::is_root(), "this test needs root to connect as a second uid");
    let journal = journal();
    let setup = Setup::external();

    let init = setup
        .command("datapunk")
        .args(["db", "init", "--admin-url"])
        .arg(datapunk_testkit::cluster().conninfo("postgres", "postgres"))
        .spawn()
        .expect("start db init");
    let cli_pid = init.id();
    assert!(init.wait_with_output().expect("db init").status.success());

    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    let daemon_pid = daemon.pid();
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    connect_and_get_refused(&setup);

    let good = std::fs::read_to_string(&setup.config).expect("read config");
    setup.write_config(&format!("{good}\n[nonsense]\nkey = 1\n"));
    daemon.signal(Signal::HUP);
    wait_for_action(&setup, "config.rejected").await;
    setup.write_config(&good);
    daemon.signal(Signal::HUP);
    wait_for_count(&setup, "config.loaded", 2).await;
    daemon.stop();

    let rows = rows(&setup).await;
    // The vault's first state (unavailable: this daemon has no session bus) is found while
    // the daemon serves, so its row lands anywhere after daemon.start.
    let start = rows.iter().position(|r| r.1 == "daemon.start").expect("daemon.start");
    let vault: Vec<usize> =
        rows.iter().enumerate().filter(|(_, r)| r.1 == "vault.state").map(|(i, _)| i).collect();
    assert_eq!(vault.len(), 1, "one vault.state row: {rows:?}");
    assert!(vault[0] > start, "{rows:?}");
    assert_eq!(rows[vault[0]].3, "failure");
    let actions: Vec<&str> =
        rows.iter().map(|r| r.1.as_str()).filter(|a| *a != "vault.state").collect();
    assert_eq!(
        actions,
        [
            "database.init",
            "database.migrate",
            "config.loaded",
            "daemon.start",
            "control.refused",
            "config.rejected",
            "config.loaded",
            "daemon.stop",
        ],
        "the audit rows"
    );

    let mut entries = BTreeMap::new();
    for (pid, expected) in [(cli_pid, 2), (daemon_pid, rows.len() - 2)] {
        let pid = pid.to_string();
        let found = journal.wait_for_since(
            &[("_PID", &pid), ("DATAPUNK_AUDIT", "1")],
            since,
            expected,
            Duration::from_secs(10),
        );
        assert_eq!(found.len(), expected, "journal entries of pid {pid}: {found:#?}");
        for entry in found {
            let id: i64 = field(&entry, "DATAPUNK_AUDIT_ID")
                .expect("an audit id")
                .parse()
                .expect("numeric id");
            assert!(entries.insert(id, entry).is_none(), "two journal entries for row {id}");
        }
    }
    for (id, action, component, outcome, integration) in &rows {
        let entry =
            entries.get(id).unwrap_or_else(|| panic!("no journal entry for row {id} ({action})"));
        assert_eq!(field(entry, "SYSLOG_IDENTIFIER"), Some("datapunkd"));
        assert_eq!(field(entry, "DATAPUNK_ACTION"), Some(action.as_str()));
        assert_eq!(field(entry, "DATAPUNK_OUTCOME"), Some(outcome.as_str()));
        assert_eq!(field(entry, "DATAPUNK_COMPONENT"), Some(component.as_str()));
        assert_eq!(field(entry, "DATAPUNK_INTEGRATION"), integration.as_deref());
        let message = field(entry, "MESSAGE").unwrap_or_default();
        assert!(!message.is_empty(), "row {id} has no readable MESSAGE");
    }
    let refused = rows.iter().find(|r| r.1 == "control.refused").expect("control.refused");
    assert_eq!(refused.3, "denied", "the refusal is recorded as denied");
}

#[test]
fn a_configuration_refused_at_start_reaches_journald() {
    let journal = journal();
    let since = std::time::SystemTime::now();
    let setup = Setup::external();
    setup.write_config("[database]\nmystery = 1\n");
    let daemon = setup.spawn_daemon(None, &[]);
    let pid = daemon.pid().to_string();
    let (status, _, _) = daemon.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78));
    let entries = journal.wait_for_since(
        &[("_PID", &pid), ("DATAPUNK_ACTION", "config.rejected")],
        since,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(entries.len(), 1);
    assert_eq!(field(&entries[0], "DATAPUNK_AUDIT"), Some("1"));
    assert_eq!(field(&entries[0], "DATAPUNK_OUTCOME"), Some("failure"));
}

async fn wait_for_count(setup: &Setup, action: &str, count: usize) {
    for _ in 0..200 {
        if rows(setup).await.iter().filter(|r| r.1 == action).count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {count} rows of {action} within 10 s");
}

async fn wait_for_action(setup: &Setup, action: &str) {
    wait_for_count(setup, action, 1).await;
}

#[tokio::test]
async fn verify_passes_on_an_untouched_chain_and_names_the_row_an_administrator_edited() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let daemon = setup.spawn_daemon(None, &[]);
    wait_for_action(&setup, "daemon.start").await;
    daemon.stop();

    let verified = setup.cli_ok(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
    let listed = setup.cli_ok(&["audit", "--action", "daemon.start"]);
    assert!(listed.contains("daemon.start") && !listed.contains("daemon.stop"), "{listed}");
    let json = setup.cli_ok(&["audit", "--json", "--since", "1h"]);
    assert_eq!(json.lines().count(), rows(&setup).await.len(), "{json}");

    let admin = setup.admin().await;
    admin
        .batch_execute(
            "ALTER TABLE datapunk.audit DISABLE TRIGGER USER; \
             UPDATE datapunk.audit SET details = '{\"edited\": true}' WHERE id = 2; \
             ALTER TABLE datapunk.audit ENABLE TRIGGER USER;",
        )
        .await
        .expect("a superuser can edit with triggers disabled");
    let output = setup.cli(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("#2"), "verify must name row 2: {stdout}");
}

#[tokio::test]
async fn a_chain_cut_short_by_an_administrator_is_caught_by_the_anchor_file() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let daemon = setup.spawn_daemon(None, &[]);
    wait_for_action(&setup, "daemon.start").await;
    daemon.stop();
    setup.cli_ok(&["audit", "verify"]);

    // Removing the newest row leaves a chain that is internally consistent.
    let admin = setup.admin().await;
    admin
        .batch_execute(
            "ALTER TABLE datapunk.audit DISABLE TRIGGER USER; \
             DELETE FROM datapunk.audit WHERE id = (SELECT max(id) FROM datapunk.audit); \
             ALTER TABLE datapunk.audit ENABLE TRIGGER USER;",
        )
        .await
        .expect("a superuser can delete with triggers disabled");
    let output = setup.cli(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Rewrites row 2 and recomputes every hash after it, as a superuser could.
const REBUILD: &str = "
    ALTER TABLE datapunk.audit DISABLE TRIGGER USER;
    UPDATE datapunk.audit SET details = '{\"rewritten\": true}' WHERE id = 2;
    DO $$
    DECLARE
        r record;
        prev bytea := decode(repeat('00', 32), 'hex');
        h bytea;
    BEGIN
        FOR r IN SELECT * FROM datapunk.audit ORDER BY id LOOP
            h := sha256(datapunk.audit_canonical(r.id, r.at_us, r.actor_uid, r.actor_component,
                r.action, r.integration, r.dataset, r.outcome, r.details, prev));
            UPDATE datapunk.audit SET prev_hash = prev, hash = h WHERE id = r.id;
            prev := h;
        END LOOP;
    END $$;
    ALTER TABLE datapunk.audit ENABLE TRIGGER USER;";

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_refuses_to_append_past_a_rebuilt_chain() {
    let since = std::time::SystemTime::now();
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    setup.admin().await.batch_execute(REBUILD).await.expect("a superuser rebuilds the chain");
    let output = setup.cli(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));

    // The reload would append `config.loaded` and move the anchor past the evidence. Refused,
    // the event still reaches journald, without a row id: wait for that, so the row count
    // below is read after the daemon has acted.
    let before = rows(&setup).await.len();
    daemon.signal(Signal::HUP);
    let pid = daemon.pid().to_string();
    let reloads = [("_PID", pid.as_str()), ("DATAPUNK_ACTION", "config.loaded")];
    let entries = journal().wait_for_since(&reloads, since, 2, Duration::from_secs(10));
    assert!(
        entries.iter().any(|e| !e.contains_key("DATAPUNK_AUDIT_ID")),
        "the refused reload is in journald without a row: {entries:#?}"
    );
    assert_eq!(rows(&setup).await.len(), before, "the daemon appended to a rebuilt chain");
    let output = setup.cli(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1), "the evidence must survive the reload");
    daemon.stop();
}

/// `datapunk backup report-failure` for `unit`, with `status` as the failed run's exit status:
/// the cheapest audited command that needs no key.
fn report_failure(setup: &Setup, unit: &str, status: u32) -> std::process::Command {
    let mut command = setup.command("datapunk");
    command.args([
        "backup",
        "report-failure",
        "--unit",
        unit,
        "--exit-status",
        &status.to_string(),
    ]);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn events_kept_while_the_database_was_down_join_the_chain_once_in_order() {
    let cluster = datapunk_testkit::Cluster::start();
    let db_name = cluster.unique_db_name("dp");
    let setup = Setup::external_with(&db_name, &cluster.conninfo("datapunk_app", &db_name), "");
    let admin = cluster.conninfo("postgres", "postgres");
    assert!(setup.cli(&["db", "init", "--admin-url", &admin]).status.success());
    let spool = setup.state_dir().join("audit-pending");

    cluster.stop_server();
    for status in 1..=5 {
        let output = report_failure(&setup, "down.service", status).output().expect("run");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let kept = std::fs::read(&spool).expect("the spool");
    assert_eq!(kept.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 5);

    // Four commands at once, each finding the spool full: one of them appends it.
    cluster.start_server();
    let racing: Vec<_> = (0..4)
        .map(|n| report_failure(&setup, "up.service", 10 + n).spawn().expect("start datapunk"))
        .collect();
    for child in racing {
        let output = child.wait_with_output().expect("datapunk");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(!spool.exists(), "the spool was emptied");

    // A flusher killed after its appends, before it emptied the spool, leaves it as it was:
    // the next append must find those entries in the chain already.
    std::fs::write(&spool, &kept).expect("put the spool back");
    datapunk_testkit::account().chown(&spool);
    let output = report_failure(&setup, "up.service", 20).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!spool.exists(), "the spool was emptied");

    let rows: Vec<Value> = setup
        .cli_ok(&["audit", "--action", "backup.failed", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON row"))
        .collect();
    let statuses: Vec<&str> =
        rows.iter().map(|row| row["details"]["exit_status"].as_str().unwrap_or("")).collect();
    assert_eq!(rows.len(), 10, "{statuses:?}");
    assert_eq!(statuses[..5], ["1", "2", "3", "4", "5"], "the kept ones first, in order");
    let mut ids: Vec<&str> = rows[..5]
        .iter()
        .map(|row| row["details"]["deferred"]["id"].as_str().expect("a deferred id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each kept event once");
    assert!(rows[5..].iter().all(|row| row["details"].get("deferred").is_none()), "{rows:?}");
    let verified = setup.cli_ok(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
}
