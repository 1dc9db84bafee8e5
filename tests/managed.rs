//! Managed mode: the daemon creates, starts and stops its own cluster, and everything it
//! creates is private.

use std::time::Duration;

use datapunk_testkit::NotifySocket;
use datapunk_tests::{Setup, loose_modes};

#[test]
fn a_managed_daemon_runs_its_own_cluster_keeps_its_files_private_and_stops_it() {
    let setup = Setup::managed();
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon_with_umask("022", &notify);
    notify.wait_for_line("READY=1", Duration::from_secs(90));

    let status: serde_json::Value =
        serde_json::from_str(&setup.cli_ok(&["status", "--json"])).expect("status is JSON");
    assert_eq!(status["state"], "running");
    assert_eq!(status["database"]["mode"], "managed");
    assert_eq!(status["database"]["reachable"], true);
    let text = setup.cli_ok(&["status"]);
    assert!(text.contains("datapunkd running"), "{text}");

    let trail = setup.cli_ok(&["audit"]);
    for action in ["database.init", "database.migrate", "config.loaded", "daemon.start"] {
        assert_eq!(trail.matches(action).count(), 1, "{action} once in:\n{trail}");
    }

    let postmaster = setup.data_dir().join("postmaster.pid");
    assert!(postmaster.exists(), "the cluster runs while the daemon does");
    for dir in [setup.runtime_dir(), setup.state_dir(), setup.data_dir()] {
        let loose = loose_modes(&dir);
        assert!(
            loose.is_empty(),
            "files not 0600 / directories not 0700 under {}: {loose:?}",
            dir.display()
        );
    }

    let took = daemon.stop();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(!postmaster.exists(), "the daemon stops the cluster it started");
    assert!(!setup.control_socket().exists(), "the control socket is removed");

    // The CLI starts the stopped cluster for as long as it needs it.
    let verified = setup.cli_ok(&["audit", "verify"]);
    assert!(verified.contains("intact") && verified.contains("matches"), "{verified}");
    assert!(!postmaster.exists(), "the CLI stops the cluster it started");
}

#[test]
fn a_cluster_left_running_by_a_killed_daemon_is_stopped_by_the_next_one() {
    let setup = Setup::managed();
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(90));
    daemon.signal(rustix::process::Signal::KILL);
    let _ = daemon.wait(Duration::from_secs(5));
    let postmaster = setup.data_dir().join("postmaster.pid");
    assert!(postmaster.exists(), "a killed daemon leaves its cluster running");

    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(60));
    daemon.stop();
    assert!(!postmaster.exists(), "the next daemon adopts the cluster and stops it");
}

#[test]
fn sigterm_while_the_cluster_is_being_created_still_ends_cleanly() {
    let setup = Setup::managed();
    let daemon = setup.spawn_daemon(None, &[]);
    std::thread::sleep(Duration::from_millis(300));
    // The signal is acted on once the cluster is up: how long that takes depends on the
    // machine's load, so the wait is generous and only the clean end is asserted.
    daemon.signal(rustix::process::Signal::TERM);
    let (status, took, stderr) = daemon.wait(Duration::from_secs(60));
    assert!(status.success(), "datapunkd exited with {status} after {took:?}: {stderr}");
    assert!(!setup.data_dir().join("postmaster.pid").exists(), "the cluster was left running");
}

#[test]
fn an_initdb_cut_short_leaves_no_cluster_behind_and_the_next_start_begins_again() {
    let setup = Setup::managed();
    let daemon = setup.spawn_daemon(None, &[]);
    let data = setup.data_dir();
    let partial = data.with_file_name("postgresql.initdb-partial");
    let started = std::time::Instant::now();
    while !partial.join("PG_VERSION").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "initdb never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // As systemd ends a unit that does not stop in time: everything in it at once.
    daemon.signal(rustix::process::Signal::KILL);
    let _ = daemon.wait(Duration::from_secs(5));
    let pattern = format!("initdb -D {}", partial.display());
    let killed = std::process::Command::new("pkill").args(["-KILL", "-f", &pattern]).status();
    assert!(killed.expect("pkill").success(), "initdb had already finished");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!data.exists(), "a cut-short initdb left a directory that looks like a cluster");

    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(90));
    assert!(data.join("PG_VERSION").exists() && !partial.exists());
    let status = setup.cli_ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["database"]["reachable"], true, "{status}");
    daemon.stop();
}

#[test]
fn a_second_daemon_on_the_same_cluster_leaves_it_running_for_the_first() {
    let setup = Setup::managed();
    let notify = NotifySocket::new();
    let first = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(90));

    // The same data directory, another runtime directory: another control socket, so only
    // the cluster's own lock can tell that the cluster is taken.
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let runtime_dir = setup.runtime_dir().display().to_string();
    let other = config.replace(&runtime_dir, &format!("{runtime_dir}-other"));
    assert_ne!(other, config, "{config}");
    let other = setup.write_file("other.toml", other.as_bytes());
    let other = other.to_string_lossy().into_owned();
    let second = setup.spawn_daemon(None, &[("DATAPUNK_CONFIG", other.as_str())]);
    let (status, _, stderr) = second.wait(Duration::from_secs(60));
    assert!(!status.success(), "a second daemon ran on the same cluster: {stderr}");
    assert!(stderr.contains("in use by another datapunkd"), "{stderr}");

    let status: serde_json::Value =
        serde_json::from_str(&setup.cli_ok(&["status", "--json"])).expect("status is JSON");
    assert_eq!(status["database"]["reachable"], true, "the first daemon lost its cluster");
    assert!(setup.data_dir().join("postmaster.pid").exists());
    first.stop();
}
