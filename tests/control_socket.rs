//! The control socket serves only the daemon's own uid.

use std::time::Duration;

use datapunk_testkit::{NotifySocket, other_account, tempdir_owned};
use datapunk_tests::Setup;

#[tokio::test]
async fn a_connection_from_another_uid_is_refused_and_audited() {
    let other =
        other_account().expect("this test must run as root (as CI does) to use a second uid");
    let setup = Setup::external();
    assert!(setup.init().status.success());
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    // The daemon's own uid is served.
    let status = setup.cli_ok(&["status"]);
    assert!(status.contains("running"), "{status}");

    // Loosen what the file system guards so that only SO_PEERCRED stands in the way, as it
    // would if the directory were misconfigured.
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (setup.path().to_path_buf(), 0o711),
        (setup.path().join("run"), 0o711),
        (setup.runtime_dir(), 0o711),
        (setup.control_socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let other_dir = tempdir_owned(other, 0o700);
    let config = other_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nruntime_dir = \"{}\"\nstate_dir = \"{}\"\n",
            setup.runtime_dir().display(),
            other_dir.join("state").display()
        ),
    )
    .expect("write");
    other.chown(&config);
    let output = other
        .command(datapunk_testkit::bin("datapunk"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", other_dir.path())
        .args(["--config"])
        .arg(&config)
        .arg("status")
        .output()
        .expect("run datapunk status as another uid");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "another uid was served: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("without answering"), "{stderr}");

    let admin = setup.admin().await;
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused = admin
            .query(
                "SELECT outcome, (details->>'peer_uid')::bigint FROM datapunk.audit WHERE action = 'control.refused'",
                &[],
            )
            .await
            .expect("read audit");
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused.len(), 1, "exactly one refusal recorded");
    let (outcome, uid): (String, i64) = (refused[0].get(0), refused[0].get(1));
    assert_eq!(outcome, "denied");
    assert_eq!(uid, i64::from(other.uid));
    daemon.stop();
}
