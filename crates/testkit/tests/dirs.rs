//! Temporary directories owned by the account.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use datapunk_testkit::{account, tempdir, tempdir_mode, tempdir_owned};

#[test]
fn tempdir_is_private_short_and_owned_by_the_account() {
    let dir = tempdir();

    let meta = fs::metadata(dir.path()).expect("the directory was just created");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!((meta.uid(), meta.gid()), (account().uid, account().gid));
    assert!(dir.path().starts_with("/tmp"));
    // Leaves room for socket names within the 107 bytes of sun_path.
    assert!(dir.path().as_os_str().len() <= 20, "{} is too long", dir.path().display());
}

#[test]
fn tempdir_is_removed_with_its_contents_on_drop() {
    let dir = tempdir();
    let sub = dir.create_dir("sub", 0o700);
    fs::write(sub.join("file"), b"x").expect("root or the owner can write into the directory");
    let path = dir.path().to_path_buf();

    drop(dir);

    assert!(!path.exists(), "{} survived its TempDir", path.display());
}

#[test]
fn the_account_can_write_into_its_tempdir() {
    let dir = tempdir();

    let status = account()
        .command("touch")
        .arg(dir.join("written-by-account"))
        .status()
        .expect("touch is part of coreutils");

    assert!(status.success());
    let meta = fs::metadata(dir.join("written-by-account")).expect("touch created the file");
    assert_eq!(meta.uid(), account().uid);
}

#[test]
fn tempdir_mode_and_owner_can_be_chosen() {
    let shared = tempdir_mode(0o755);
    let owned = tempdir_owned(account(), 0o750);

    let mode = |path| fs::metadata(path).expect("just created").permissions().mode() & 0o7777;
    assert_eq!(mode(shared.path()), 0o755);
    assert_eq!(mode(owned.path()), 0o750);
}
