//! `datapunk generate`: the manual pages and shell completions packagers install are made from
//! the command definitions, so they name the commands that exist.

use std::process::Command;

use datapunk_testkit::{bin, tempdir};

#[test]
fn generate_man_writes_a_page_per_command_that_names_its_subcommands() {
    let dir = tempdir();
    let out = dir.join("man");

    let status = Command::new(bin("datapunk"))
        .args(["generate", "man"])
        .arg(&out)
        .status()
        .expect("run datapunk generate man");

    assert!(status.success());
    let page = std::fs::read_to_string(out.join("datapunk.1")).expect("datapunk.1 is written");
    assert!(page.contains(".TH datapunk 1"), "{page}");
    for command in ["status", "sync", "backup", "db", "audit"] {
        assert!(page.contains(&format!("datapunk\\-{command}(1)")), "no {command} in:\n{page}");
    }
    let backup = std::fs::read_to_string(out.join("datapunk-backup.1")).expect("a backup page");
    assert!(backup.contains("create") && backup.contains("prune"), "{backup}");
    assert!(out.join("datapunk-db-password.1").is_file());
    // The packagers' own command stays out of the manual.
    assert!(!out.join("datapunk-generate.1").exists());
}

#[test]
fn generate_man_writes_the_daemons_page_with_its_signals_exit_statuses_and_files() {
    let dir = tempdir();
    let out = dir.join("man");

    let status = Command::new(bin("datapunk"))
        .args(["generate", "man"])
        .arg(&out)
        .status()
        .expect("run datapunk generate man");

    assert!(status.success());
    let page = std::fs::read_to_string(out.join("datapunkd.1")).expect("datapunkd.1 is written");
    assert!(page.contains(".TH datapunkd 1"), "{page}");
    // The options come from the definition that parses them.
    assert!(page.contains("\\-\\-config") && page.contains("\\-\\-log\\-format"), "{page}");
    let at = |heading: &str| {
        page.find(&format!(".SH {heading}"))
            .unwrap_or_else(|| panic!("no {heading} section in:\n{page}"))
    };
    assert!(at("OPTIONS") < at("SIGNALS"));
    assert!(at("SIGNALS") < at("\"EXIT STATUS\"") && at("\"EXIT STATUS\"") < at("ENVIRONMENT"));
    assert!(at("FILES") < at("VERSION"));
    for term in ["SIGHUP", "78", "DATAPUNK_CONFIG", "control.sock"] {
        assert!(page.contains(term), "no {term} in:\n{page}");
    }
}

#[test]
fn generate_completions_bash_completes_the_real_subcommands() {
    let output = Command::new(bin("datapunk"))
        .args(["generate", "completions", "bash"])
        .output()
        .expect("run datapunk generate completions");

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let script = String::from_utf8(output.stdout).expect("a UTF-8 script");
    assert!(script.contains("complete -F _datapunk"), "{script}");
    let top = script
        .lines()
        .find(|line| line.contains("opts=\"") && line.contains(" status "))
        .unwrap_or_else(|| panic!("no top-level word list in:\n{script}"));
    for command in ["status", "sync", "backup", "db", "audit", "connect", "keys"] {
        assert!(top.contains(&format!(" {command} ")), "no {command} in: {top}");
    }
    assert!(script.contains("datapunk__subcmd__backup,create"), "no `backup create` in the script");
}
