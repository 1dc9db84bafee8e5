//! Shared services are cleaned up when the test process dies, however it dies.
//!
//! The test runs its own executable again as a child that starts the shared cluster and
//! session bus, reports where they are, and waits; the parent kills the child with `SIGKILL`
//! (no destructor, no exit handler runs) and checks that the reapers stopped every server and
//! removed every directory.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datapunk_testkit::{cluster, session_bus};

/// Set in the child's environment to make the test play the child.
const CHILD: &str = "DPK_TESTKIT_REAPING_CHILD";

/// Marks the lines of the child's report.
const REPORT: &str = "reaping-report: ";

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn shared_services_are_reaped_when_the_test_process_is_killed() {
    if std::env::var_os(CHILD).is_some() {
        return play_the_child();
    }

    let child = Command::new(std::env::current_exe().expect("the test executable exists"))
        .args(["shared_services_are_reaped_when_the_test_process_is_killed", "--exact"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test executable runs");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout was piped");
    let mut report = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the child prints text");
        // The test harness prints its own lines around the child's report.
        match line.split_once(REPORT) {
            Some((_, "ready")) => break,
            Some((_, item)) => report.push(item.to_owned()),
            None => {}
        }
    }
    assert_eq!(report.len(), 4, "the child did not report its services: {report:?}");

    child.0.kill().expect("the child is still running");
    child.0.wait().expect("the child was killed");

    let (dirs, pids) = report.split_at(2);
    for dir in dirs {
        assert!(eventually(|| !Path::new(dir).exists()), "{dir} was not removed");
    }
    for pid in pids {
        assert!(eventually(|| !running(pid)), "process {pid} was not stopped");
    }
}

/// Starts the shared services and prints their directories and server pids, then waits.
fn play_the_child() {
    let cluster = cluster();
    let bus = session_bus();
    let postmaster = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))
        .expect("the server runs");
    let bus_dir: PathBuf = bus.keyring_dir().ancestors().nth(2).expect("two deep").to_owned();
    let bus_pid = std::fs::read_to_string(bus_dir.join("bus.pid")).expect("the bus runs");

    let cluster_dir = cluster.data_dir().parent().expect("data sits in the cluster dir");
    println!("\n{REPORT}{}", cluster_dir.display());
    println!("{REPORT}{}", bus_dir.display());
    println!("{REPORT}{}", postmaster.lines().next().expect("the pid is the first line"));
    println!("{REPORT}{bus_pid}");
    println!("{REPORT}ready");
    std::thread::sleep(Duration::from_secs(60));
}

fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Whether a process runs; a zombie waiting for PID 1 to reap it does not.
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}
