//! The shipped user unit for `datapunkd`: `systemd-analyze verify` accepts it, and its exposure
//! in `systemd-analyze security` is at most 2.0, the bound the NixOS module's unit meets too.
//!
//! The score counts what a user manager cannot apply against the unit, and takes it to run as
//! root, which a user manager never does: the bound holds with room to spare in practice.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = "datapunkd.service";

/// The unit copied into a directory, pointing at the `datapunkd` just built instead of
/// `/usr/bin/datapunkd`, so that verify finds the program.
fn unit() -> (tempfile::TempDir, PathBuf) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").join(UNIT);
    let text = fs::read_to_string(shipped).expect("read the unit");
    let built = datapunk_testkit::bin("datapunkd");
    let text = text.replace("=/usr/bin/datapunkd\n", &format!("={}\n", built.display()));
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join(UNIT);
    fs::write(&path, text).expect("write the unit");
    (dir, path)
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let output =
        Command::new("systemd-analyze").args(args).arg(unit).output().unwrap_or_else(|error| {
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
fn systemd_analyze_verify_accepts_the_daemon_unit() {
    let (_dir, path) = unit();

    let (ok, text) = analyze(&["verify", "--man=no"], &path);

    assert!(ok, "{text}");
    assert_eq!(text.trim(), "", "verify warns");
}

#[test]
fn the_daemon_unit_is_exposed_at_most_two_point_zero() {
    let (_dir, path) = unit();

    let (_, text) = analyze(&["security", "--offline=true", "--no-pager"], &path);

    let exposure: f64 = text
        .lines()
        .find_map(|line| line.split(&format!("Overall exposure level for {UNIT}: ")).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}
