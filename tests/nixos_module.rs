//! The Nix side, through `tests/nixos/run`: every `.nix` file parses, and, when `NIXPKGS_LIB`
//! names nixpkgs' lib directory, the NixOS module evaluates, its checks pass and notice a unit
//! losing `RequiresMountsFor=` or `LoadCredential=`, wrongly typed definitions fail, and its
//! units score within their bounds in `systemd-analyze security`.

use std::path::Path;
use std::process::{Command, Output};

/// The script's status when it skipped the evaluation for want of `NIXPKGS_LIB`.
const SKIPPED: i32 = 77;

fn run(step: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nixos/run");
    Command::new(&script)
        .arg(step)
        .output()
        .unwrap_or_else(|error| panic!("NOT RUN: cannot run {}: {error}", script.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_nix_file_in_the_repository_parses() {
    let output = run("parse");

    assert!(output.status.success(), "{}", text(&output));
}

#[test]
#[cfg_attr(
    not(nixpkgs_lib),
    ignore = "NIXPKGS_LIB is not set: the NixOS module was NOT evaluated (see docs/nixos.md)"
)]
fn with_nixpkgs_lib_the_nixos_module_evaluates_and_its_units_are_hardened() {
    let output = run("eval");

    assert_ne!(
        output.status.code(),
        Some(SKIPPED),
        "NIXPKGS_LIB was set when the tests were built but not when they ran:\n{}",
        text(&output)
    );
    assert!(output.status.success(), "{}", text(&output));
}
