//! The account that services run as, and commands run as it.

use std::process::Command;

use datapunk_testkit::{account, is_root, other_account};

fn stdout(mut cmd: Command) -> String {
    let output = cmd.output().expect("`id` is part of coreutils and always runs");
    assert!(output.status.success(), "{cmd:?} failed: {output:?}");
    String::from_utf8(output.stdout).expect("`id` prints ASCII").trim().to_owned()
}

#[test]
fn account_is_unprivileged_and_is_the_current_user_unless_root() {
    let account = account();

    assert_ne!(account.uid, 0, "services must never run as root");
    if is_root() {
        assert_eq!(account.name, "datapunk-test");
        assert!(!account.is_current());
    } else {
        assert!(account.is_current());
        assert!(other_account().is_none());
    }
}

#[test]
fn commands_run_as_the_account_with_only_its_own_group() {
    let account = account();

    let mut id = account.command("id");
    id.args(["-u"]);
    assert_eq!(stdout(id), account.uid.to_string());

    let mut groups = account.command("id");
    groups.args(["-G"]);
    if is_root() {
        // Root's supplementary groups must not leak into the account's processes.
        assert_eq!(stdout(groups), account.gid.to_string());
    }
}

#[test]
fn commands_as_another_account_start_in_a_directory_it_can_enter() {
    let pwd = stdout(account().command("pwd"));

    if is_root() {
        assert_eq!(pwd, "/");
    }
}

#[test]
fn other_account_is_a_second_unprivileged_user_when_root() {
    let Some(other) = other_account() else {
        assert!(!is_root(), "root must always get a second account");
        return;
    };

    assert_eq!(other.name, "datapunk-other");
    assert_ne!(other.uid, 0);
    assert_ne!(other.uid, account().uid);
    let mut id = other.command("id");
    id.arg("-u");
    assert_eq!(stdout(id), other.uid.to_string());
}
