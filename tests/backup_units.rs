//! The shipped backup units: `systemd-analyze verify` accepts them, and the backup service's
//! exposure in `systemd-analyze security` is at most 1.0.

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

#[test]
fn the_backup_service_is_exposed_at_most_one_point_zero() {
    let (_dir, paths) = units();

    let (_, text) = analyze(&["security", "--offline=true", "--no-pager"], &paths[..1]);

    let exposure: f64 = text
        .lines()
        .find_map(|line| line.split("Overall exposure level for datapunk-backup.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    assert!(exposure <= 1.0, "exposure {exposure}:\n{text}");
}
