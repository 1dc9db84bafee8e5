//! The shipped backup units: `systemd-analyze verify` accepts them, the exposure of both
//! services in `systemd-analyze security` is at most 1.0, and the failure hook audits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] =
    ["datapunk-backup.service", "datapunk-backup.timer", "datapunk-backup-failed.service"];

/// The units copied into a directory, pointing at the `datapunk` just built instead of
/// `/usr/bin/datapunk`, so that verify finds the program.
fn units() -> (tempfile::TempDir, Vec<PathBuf>) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = tempfile::tempdir().expect("a directory");
    let built = datapunk_testkit::bin("datapunk");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(shipped.join(unit)).expect("read the unit");
        let text = text.replace("/usr/bin/datapunk ", &format!("{} ", built.display()));
        let path = dir.path().join(unit);
        fs::write(&path, text).expect("write the unit");
        paths.push(path);
    }
    (dir, paths)
}

fn analyze(args: &[&str], units: &[PathBuf]) -> (bool, String) {
    let output =
        Command::new("systemd-analyze").args(args).args(units).output().unwrap_or_else(|error| {
            panic!("NOT RUN: cannot run systemd-analyze ({error}); install systemd")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn systemd_analyze_verify_accepts_the_backup_units() {
    let (_dir, paths) = units();

    let (ok, text) = analyze(&["verify", "--man=no"], &paths);

    assert!(ok, "{text}");
    assert_eq!(text.trim(), "", "verify warns");
}

/// The overall exposure `systemd-analyze security --offline=true` gives the unit at `path`.
fn exposure(path: &Path) -> (f64, String) {
    let (_, text) = analyze(&["security", "--offline=true", "--no-pager"], &[path.to_path_buf()]);
    let name = path.file_name().expect("a unit file").to_string_lossy();
    let prefix = format!("Overall exposure level for {name}: ");
    let exposure = text
        .lines()
        .find_map(|line| line.split(&prefix).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    (exposure, text)
}

#[test]
fn the_backup_service_is_exposed_at_most_one_point_zero() {
    let (_dir, paths) = units();

    let (exposure, text) = exposure(&paths[0]);

    assert!(exposure <= 1.0, "exposure {exposure}:\n{text}");
}

#[test]
fn the_failure_hook_is_exposed_at_most_one_point_zero() {
    let (_dir, paths) = units();

    let (exposure, text) = exposure(&paths[2]);

    assert!(exposure <= 1.0, "exposure {exposure}:\n{text}");
}

#[test]
fn the_failure_hook_audits_after_it_has_logged_and_notified() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let hook = fs::read_to_string(shipped.join(UNITS[2])).expect("read the unit");
    let backup = fs::read_to_string(shipped.join(UNITS[0])).expect("read the unit");

    let starts: Vec<&str> =
        hook.lines().filter_map(|line| line.strip_prefix("ExecStart=")).collect();

    assert!(backup.contains("\nOnFailure=datapunk-backup-failed.service\n"), "{backup}");
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[0].starts_with("/usr/bin/logger "), "{starts:?}");
    assert!(starts[1].starts_with("-/usr/bin/notify-send "), "{starts:?}");
    // Not prefixed with `-`: a row that reached neither the table nor the spool fails the hook.
    assert_eq!(starts[2], "/usr/bin/datapunk backup report-failure --unit datapunk-backup.service");
    // The state directory (anchor and spool) is made and writable.
    assert!(hook.contains("\nReadWritePaths=%h/.local/state/datapunk "), "{hook}");
    assert!(hook.contains("\nExecStartPre=+/bin/mkdir -p -m 0700 %h/.local/state/datapunk\n"));
}
