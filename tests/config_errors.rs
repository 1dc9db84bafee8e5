//! A bad configuration file stops the CLI and the daemon with exit status 78 and a message
//! pointing at the file, line and column, without echoing the value.

use std::time::Duration;

use datapunk_tests::Setup;

const SECRET: &str = "ya29.a0AfH6SMBx-not-a-real-token";

fn assert_rejected(output_code: Option<i32>, stderr: &str, location: &str) {
    assert_eq!(output_code, Some(78), "{stderr}");
    assert!(stderr.contains(location), "expected {location} in: {stderr}");
    assert!(!stderr.contains(SECRET), "the value leaked: {stderr}");
    assert!(!stderr.contains("ya29"), "part of the value leaked: {stderr}");
}

fn check_both(setup: &Setup, location: &str) {
    let output = setup.cli(&["config", "check"]);
    assert_rejected(output.status.code(), &String::from_utf8_lossy(&output.stderr), location);
    assert!(!String::from_utf8_lossy(&output.stdout).contains(SECRET));

    let daemon = setup.spawn_daemon(None, &[]);
    let (status, _, stderr) = daemon.wait(Duration::from_secs(10));
    assert_rejected(status.code(), &stderr, location);
}

#[test]
fn an_unknown_key_is_rejected_with_its_location() {
    let setup = Setup::external();
    let path = setup.config.display().to_string();
    setup.write_config(&format!("[database]\nmode = \"managed\"\n  token = \"{SECRET}\"\n"));
    check_both(&setup, &format!("{path}:3:3"));
    let stderr = String::from_utf8_lossy(&setup.cli(&["config", "check"]).stderr).into_owned();
    assert!(stderr.contains("database.token"), "{stderr}");
}

#[test]
fn a_wrong_type_is_rejected_with_its_location() {
    let setup = Setup::external();
    let path = setup.config.display().to_string();
    setup.write_config(&format!("[database]\npool_size = \"{SECRET}\"\n"));
    check_both(&setup, &format!("{path}:2:13"));
}

#[test]
fn a_missing_file_is_rejected() {
    let setup = Setup::external();
    let missing = setup.path().join("config/missing.toml");
    let output = setup
        .command("datapunk")
        .arg("--config")
        .arg(&missing)
        .args(["config", "check"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let output = setup.command("datapunkd").arg("--config").arg(&missing).output().expect("run");
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn the_example_is_valid_and_check_accepts_it() {
    let setup = Setup::external();
    let example = setup.cli_ok(&["config", "example"]);
    assert!(example.contains("mode = \"managed\""));
    setup.write_config(&example);
    let checked = setup.cli_ok(&["config", "check"]);
    assert!(checked.contains("valid"), "{checked}");
}

#[test]
fn check_shows_the_sync_interval_and_where_backups_go_and_to_whom() {
    let setup = Setup::external();
    let fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567";
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let extra = format!(
        "[sync]\ninterval_secs = 600\n[backup]\ndir = \"/srv/backups\"\nrecipients = [\"{fingerprint}\"]\n\
         [providers.spotify]\nclient_id = \"s-id\"\nsync_interval_secs = 300\n"
    );
    setup.write_config(&format!("{config}\n{extra}"));

    let checked = setup.cli_ok(&["config", "check"]);

    assert!(checked.contains("sync every    600 s"), "{checked}");
    let spotify = checked.lines().find(|l| l.trim_start().starts_with("spotify"));
    assert!(spotify.is_some_and(|l| l.ends_with(", sync every 300 s")), "{checked}");
    assert!(checked.contains(&format!("in /srv/backups, encrypted to {fingerprint}")), "{checked}");
}

#[test]
fn check_names_a_secret_file_that_cannot_be_read_and_fails() {
    let setup = Setup::external();
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let secret = setup.path().join("google-secret");
    setup.write_config(&format!(
        "{config}\n[providers.google]\nclient_id = \"g-id\"\nclient_secret_file = \"{}\"\n",
        secret.display()
    ));

    let output = setup.cli(&["config", "check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stdout}{stderr}");
    assert!(stdout.contains("names files that cannot be opened"), "{stdout}");
    assert!(!stdout.contains(": valid"), "{stdout}");
    let problem = format!("`providers.google.client_secret_file` names {}", secret.display());
    assert!(stdout.contains(&problem), "{stdout}");
    assert!(stdout.contains("No such file"), "{stdout}");
    assert!(stderr.contains("a file the configuration names cannot be read"), "{stderr}");

    std::fs::create_dir(&secret).expect("a directory where the file should be");
    let stdout = String::from_utf8_lossy(&setup.cli(&["config", "check"]).stdout).into_owned();
    assert!(stdout.contains("not a regular file"), "{stdout}");

    std::fs::remove_dir(&secret).expect("remove the directory");
    // A named pipe is not opened: that would wait for a writer that never comes.
    let made = std::process::Command::new("mkfifo").arg(&secret).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let mut check = setup.command("datapunk");
    let mut child = check
        .args(["config", "check"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start config check");
    let begin = std::time::Instant::now();
    while child.try_wait().expect("poll config check").is_none() {
        if begin.elapsed() > Duration::from_secs(20) {
            child.kill().expect("kill config check");
            panic!("config check waits on a named pipe");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("config check's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("not a regular file"), "{stdout}");

    std::fs::remove_file(&secret).expect("remove the pipe");
    setup.write_file("google-secret", b"client-secret\n");
    let checked = setup.cli_ok(&["config", "check"]);
    assert!(!checked.contains("problem"), "{checked}");
}

#[test]
fn the_daemon_exits_78_on_an_unreadable_client_secret_and_records_no_start() {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let secret = setup.path().join("google-secret");
    setup.write_config(&format!(
        "{config}\n[providers.google]\nclient_id = \"g-id\"\nclient_secret_file = \"{}\"\n",
        secret.display()
    ));

    let daemon = setup.spawn_daemon(None, &[]);
    let (status, _, stderr) = daemon.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(78), "a restart cannot fix a missing file: {stderr}");
    assert!(stderr.contains(&format!("cannot read the client secret file {}", secret.display())));
    // It never started, so the trail says nothing of a start or a stop.
    let audit = setup.cli_ok(&["audit", "--json"]);
    assert!(audit.contains("\"database.init\""), "{audit}");
    for action in ["config.loaded", "daemon.start", "daemon.stop"] {
        assert!(!audit.contains(&format!("\"{action}\"")), "{action}: {audit}");
    }
}

#[test]
fn a_runtime_directory_the_cluster_cannot_use_stops_the_daemon_with_78() {
    let setup = Setup::managed();
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    let runtime_dir = setup.runtime_dir().display().to_string();
    // PostgreSQL reads a comma in its socket directory setting as a list.
    let comma = format!("{runtime_dir},1");
    setup.write_config(&config.replace(&runtime_dir, &comma));

    let daemon = setup.spawn_daemon(None, &[]);
    let (status, _, stderr) = daemon.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(78), "a restart cannot fix the setting: {stderr}");
    assert!(stderr.contains("daemon.runtime_dir") && stderr.contains("comma"), "{stderr}");
}

#[test]
fn output_to_a_closed_pipe_ends_the_command_quietly() {
    let setup = Setup::external();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // Nobody reads: every write fails with EPIPE, as after `| head -1` has exited.
    drop(reader);
    let output = setup
        .command("datapunk")
        .args(["config", "check"])
        .stdout(writer)
        .output()
        .expect("run datapunk");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
