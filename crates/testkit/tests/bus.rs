//! The private session bus and its GNOME Keyring.

use std::io::Write as _;
use std::process::{Output, Stdio};

use datapunk_testkit::{SessionBus, session_bus};

fn secret_tool(bus: &SessionBus, args: &[&str], input: Option<&str>) -> Output {
    let mut child = bus
        .command("secret-tool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("secret-tool is in libsecret-tools");
    let mut stdin = child.stdin.take().expect("stdin was piped");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("secret-tool store reads the secret");
    }
    drop(stdin);
    child.wait_with_output().expect("secret-tool ran")
}

#[test]
fn keyring_stores_looks_up_and_clears_a_secret_through_the_private_bus() {
    let bus = session_bus();
    let attrs = ["app", "datapunk-testkit", "case", "store-lookup-clear"];

    let store = [&["store", "--label=datapunk-testkit"][..], &attrs].concat();
    let stored = secret_tool(bus, &store, Some("s3cret value"));
    assert!(stored.status.success(), "store failed: {stored:?}");

    let lookup = [&["lookup"][..], &attrs].concat();
    let found = secret_tool(bus, &lookup, None);
    assert!(found.status.success(), "lookup failed: {found:?}");
    assert_eq!(String::from_utf8_lossy(&found.stdout), "s3cret value");

    let clear = [&["clear"][..], &attrs].concat();
    assert!(secret_tool(bus, &clear, None).status.success());
    let gone = secret_tool(bus, &lookup, None);
    assert!(!gone.status.success(), "the secret is still there: {gone:?}");
    assert!(gone.stdout.is_empty());
}

#[test]
fn a_locked_collection_refuses_lookups_until_unlocked_and_keeps_its_items() {
    let bus = SessionBus::start();
    let attrs = ["app", "datapunk-testkit", "case", "lock-unlock"];
    let store = [&["store", "--label=datapunk-testkit"][..], &attrs].concat();
    let lookup = [&["lookup"][..], &attrs].concat();
    assert!(secret_tool(&bus, &store, Some("kept")).status.success());
    assert!(!bus.is_locked());

    bus.lock_collection();

    assert!(bus.is_locked());
    let refused = secret_tool(&bus, &lookup, None);
    assert!(!refused.status.success(), "a locked collection gave out {refused:?}");

    bus.unlock();

    let found = secret_tool(&bus, &lookup, None);
    assert!(found.status.success(), "lookup after unlock failed: {found:?}");
    assert_eq!(String::from_utf8_lossy(&found.stdout), "kept");
    assert!(bus.keyring_dir().join("login.keyring").exists());
}

#[test]
fn the_bus_environment_names_the_private_bus_and_no_display() {
    let bus = session_bus();

    let cmd = bus.command("env");
    let removed: Vec<_> = cmd.get_envs().filter(|(_, value)| value.is_none()).collect();
    let output = bus.command("env").output().expect("env is part of coreutils");
    let env = String::from_utf8_lossy(&output.stdout);

    assert!(env.contains(&format!("DBUS_SESSION_BUS_ADDRESS={}", bus.address())), "{env}");
    assert!(bus.address().starts_with("unix:path=/tmp/dpk-"), "{}", bus.address());
    assert!(!env.contains("DISPLAY="), "{env}");
    for name in ["DISPLAY", "WAYLAND_DISPLAY"] {
        assert!(removed.iter().any(|(key, _)| *key == name), "{name} is not removed");
    }
}

#[test]
fn a_bus_of_its_own_is_stopped_and_removed_on_drop() {
    let bus = SessionBus::start();
    let dir = bus.keyring_dir();
    let root =
        dir.parent().and_then(|data| data.parent()).expect("keyrings sits two deep").to_owned();

    drop(bus);

    assert!(!root.exists(), "{} survived the bus", root.display());
}
