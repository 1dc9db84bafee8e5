//! `datapunk backup`: encrypted to a public key, written atomically and privately, failing
//! loudly with nothing left behind, verified, restorable into an empty database with every
//! row and sealed field intact, and pruned without losing the newest good copy.

mod sandboxed;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use datapunk_sandbox::{Dataset as Provided, Population, Sandbox};
use datapunk_store::datasets::{self, Dataset};
use datapunk_testkit::{Cluster, NotifySocket, SessionBus, account};
use datapunk_tests::Setup;
use datapunk_vault::field;
use sandboxed::{connected, vault};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An installation with a GnuPG home holding a backup key (secret part included, so that
/// verify and restore can decrypt), and `[backup]` configured to it.
struct Backups {
    setup: Setup,
    gnupg: PathBuf,
    fingerprint: String,
    /// The configuration before `[backup]`, to write variants of it.
    base: String,
}

impl Backups {
    fn new() -> Self {
        let setup = Setup::external();
        assert!(setup.init().status.success());
        Self::on(setup)
    }

    /// An installation on `cluster`, a cluster of the test's own that it may stop.
    fn on_own(cluster: &Cluster) -> Self {
        let db_name = cluster.unique_db_name("dp");
        let conninfo = cluster.conninfo("datapunk_app", &db_name);
        let setup = Setup::external_with(&db_name, &conninfo, "");
        let admin = cluster.conninfo("postgres", "postgres");
        let init = setup.cli(&["db", "init", "--admin-url", &admin]);
        assert!(init.status.success(), "{}", stderr(&init));
        Self::on(setup)
    }

    /// The pending-audit spool.
    fn spool(&self) -> PathBuf {
        self.setup.state_dir().join("audit-pending")
    }

    fn on(setup: Setup) -> Self {
        let gnupg = setup.path().join("gnupg");
        let made = setup.command("mkdir").args(["-m", "700"]).arg(&gnupg).output();
        assert!(made.expect("mkdir").status.success());
        let base = fs::read_to_string(&setup.config).expect("the configuration");
        let mut backups = Self { setup, gnupg, fingerprint: String::new(), base };
        backups.fingerprint = backups.new_key("Datapunk Backups <backups@datapunk.invalid>", "");
        backups.configure(&format!("recipients = [\"{}\"]\n", backups.fingerprint));
        backups
    }

    /// Replaces the `[backup]` table with `table`.
    fn configure(&self, table: &str) {
        self.setup.write_config(&format!("{}\n[backup]\n{table}", self.base));
    }

    fn command(&self, program: &str) -> Command {
        let mut command = self.setup.command(program);
        command.env("GNUPGHOME", &self.gnupg);
        command
    }

    fn datapunk(&self, args: &[&str]) -> Output {
        self.command("datapunk").args(args).output().expect("run datapunk")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.datapunk(args);
        assert!(
            output.status.success(),
            "datapunk {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn gpg(&self, args: &[&str]) -> Output {
        self.command("gpg").args(args).output().expect("run gpg")
    }

    /// Makes a key pair for `uid` (its secret part under `passphrase`, none when empty) and
    /// returns its fingerprint.
    fn new_key(&self, uid: &str, passphrase: &str) -> String {
        let made = self.gpg(&[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            uid,
            "default",
            "default",
            "never",
        ]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let listing = self.gpg(&["--list-keys", "--with-colons", uid]);
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|field| !field.is_empty()))
            .expect("the new key's fingerprint")
            .to_owned()
    }

    /// The default backup directory.
    fn dir(&self) -> PathBuf {
        self.setup.state_dir().join("backups")
    }

    /// The backups in `dir`, oldest first.
    fn backups_in(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| p.to_string_lossy().ends_with(".dump.gpg"));
        found.sort();
        found
    }

    /// Every file in `dir`, temporary ones included.
    fn everything_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The `backup.*` audit rows, oldest first.
    fn events(&self, action: &str) -> Vec<Value> {
        let rows = self.ok(&["audit", "--action", action, "--json"]);
        rows.lines().map(|line| serde_json::from_str(line).expect("a JSON row")).collect()
    }

    fn create(&self) -> PathBuf {
        let before = Self::backups_in(&self.dir());
        self.ok(&["backup", "create"]);
        let after = Self::backups_in(&self.dir());
        assert_eq!(after.len(), before.len() + 1, "one new backup");
        after.last().expect("a backup").clone()
    }
}

/// Flips one bit in the middle of `path`.
fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).expect("read the backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).expect("write it back");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_private_encrypted_to_the_key_and_holds_no_plaintext() {
    let backups = Backups::new();
    let marker = format!("DPMARK{:016x}", rand::random::<u64>());
    let admin = backups.setup.admin().await;
    admin
        .execute(
            "SELECT datapunk.audit_append(0, 'test', 'test.marker', NULL, NULL, 'success', $1)",
            &[&serde_json::json!({ "marker": marker })],
        )
        .await
        .expect("plant a marker");

    // A umask that would make files 0644 and directories 0755.
    let made = backups
        .command("sh")
        .args(["-c", "umask 022; exec \"$0\" backup create"])
        .arg(datapunk_testkit::bin("datapunk"))
        .output()
        .expect("run datapunk");
    assert!(made.status.success(), "{}", stderr(&made));

    let dir = backups.dir();
    let files = Backups::backups_in(&dir);
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let manifest_path =
        PathBuf::from(file.to_string_lossy().replace(".dump.gpg", ".manifest.json"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(file), 0o600);
    assert_eq!(mode(&manifest_path), 0o600);
    assert_eq!(Backups::everything_in(&dir).len(), 2, "no temporary file is left");

    let packets =
        backups.gpg(&["--batch", "--list-only", "--list-packets", &file.to_string_lossy()]);
    assert!(packets.status.success(), "{}", stderr(&packets));
    assert!(String::from_utf8_lossy(&packets.stdout).contains(":pubkey enc packet:"));
    let content = fs::read(file).expect("read the backup");
    assert!(memchr::memmem::find(&content, marker.as_bytes()).is_none(), "the marker in clear");
    assert!(memchr::memmem::find(&content, b"PGDMP").is_none(), "a dump in clear");

    let manifest: Value =
        serde_json::from_slice(&fs::read(&manifest_path).expect("the manifest")).expect("JSON");
    assert_eq!(manifest["size"], content.len());
    assert_eq!(manifest["recipients"][0], backups.fingerprint);
    assert!(manifest["tables"]["datapunk.audit"].as_i64().expect("a count") >= 1);
    assert!(manifest["tables"].get("datapunk.vault_records").is_none(), "{manifest}");
    assert!(manifest["tools"]["pg_dump"].as_str().expect("a version").contains("pg_dump"));
    assert!(manifest["database"]["size"].as_i64().expect("a size") > 0);

    let listed = backups.ok(&["backup", "list", "--json"]);
    assert!(listed.contains(&*file.to_string_lossy()), "{listed}");
    let verified = backups.ok(&["backup", "verify", "--latest"]);
    assert!(verified.contains("decrypted intact"), "{verified}");
    let created = backups.events("backup.create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["outcome"], "success");
    assert_eq!(created[0]["details"]["sha256"], manifest["sha256"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_a_flipped_byte_and_a_truncated_file() {
    let backups = Backups::new();
    let good = backups.create();
    let flipped = backups.create();
    let truncated = backups.create();
    flip_a_byte(&flipped);
    let length = fs::metadata(&truncated).expect("metadata").len();
    let handle = fs::OpenOptions::new().write(true).open(&truncated).expect("open");
    handle.set_len(length - 100).expect("truncate");

    backups.ok(&["backup", "verify", &good.to_string_lossy()]);
    for bad in [&flipped, &truncated] {
        let output = backups.datapunk(&["backup", "verify", &bad.to_string_lossy()]);
        assert!(!output.status.success(), "{} verified", bad.display());
        assert!(stderr(&output).contains("does not verify"), "{}", stderr(&output));
    }
    let outcomes: Vec<Value> =
        backups.events("backup.verify").iter().map(|row| row["outcome"].clone()).collect();
    assert_eq!(outcomes, ["success", "failure", "failure"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_made_with_a_passphrase_verifies_with_it_and_not_with_another() {
    let backups = Backups::new();
    let passphrase = backups.setup.write_file("passphrase", b"correct horse battery staple\n");
    backups.configure(&format!("passphrase_file = \"{}\"\n", passphrase.display()));
    let made = backups.create();

    let verified = backups.ok(&["backup", "verify", &made.to_string_lossy()]);
    assert!(verified.contains("decrypted intact"), "the content was not checked: {verified}");
    let admin_url = datapunk_testkit::cluster().conninfo("postgres", "postgres");
    let made_path = made.to_string_lossy();
    backups.ok(&["backup", "restore", &made_path, "--admin-url", &admin_url, "--yes"]);
    let outcomes: Vec<Value> =
        backups.events("backup.restore").iter().map(|row| row["outcome"].clone()).collect();
    assert_eq!(outcomes, ["success"]);

    backups.setup.write_file("passphrase", b"another passphrase\n");
    let output = backups.datapunk(&["backup", "verify", &made.to_string_lossy()]);
    assert!(!output.status.success(), "verified with the wrong passphrase");
    assert!(stderr(&output).contains("does not verify"), "{}", stderr(&output));

    // Elsewhere, without the passphrase: checked as far as it can be, as without a secret key.
    backups.configure(&format!("recipients = [\"{}\"]\n", backups.fingerprint));
    let unchecked = backups.ok(&["backup", "verify", &made.to_string_lossy()]);
    assert!(unchecked.contains("no backup.passphrase_file for it here"), "{unchecked}");

    // A passphrase others may read opens every backup made with it: refused.
    backups.configure(&format!("passphrase_file = \"{}\"\n", passphrase.display()));
    fs::set_permissions(&passphrase, fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = backups.datapunk(&["backup", "create"]);
    assert!(!output.status.success(), "a backup with a readable passphrase file");
    assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_key_under_a_passphrase_leaves_the_content_unchecked_not_failed() {
    let backups = Backups::new();
    // A second key, its secret part under a passphrase, as the setup guide makes one.
    let locked = backups
        .new_key("Locked Backups <locked@datapunk.invalid>", "a passphrase nobody types here");
    backups.configure(&format!("recipients = [\"{locked}\"]\n"));
    let file = backups.create();
    // Whatever the agent remembers from making the key goes with it.
    let killed = backups.command("gpgconf").args(["--kill", "gpg-agent"]).output();
    assert!(killed.expect("run gpgconf").status.success());

    // No terminal, so no one can be asked: the levels that need no passphrase still run.
    let verified = backups.ok(&["backup", "verify", &file.to_string_lossy()]);
    assert!(verified.contains("the file matches its manifest"), "{verified}");
    assert!(verified.contains("its secret key is here, but locked"), "{verified}");
    assert!(!verified.contains("decrypted intact"), "{verified}");
    let rows = backups.events("backup.verify");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "success", "{rows:?}");
    assert_eq!(rows[0]["details"]["content_checked"], false, "{rows:?}");

    // Damage is still damage.
    flip_a_byte(&file);
    let output = backups.datapunk(&["backup", "verify", &file.to_string_lossy()]);
    assert!(!output.status.success(), "a damaged backup verified");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_cut_short_inside_a_sound_encryption_is_refused_before_anything_changes() {
    use sha2::Digest as _;
    let backups = Backups::new();
    let file = backups.create();
    let admin_url = datapunk_testkit::cluster().conninfo("postgres", "postgres");
    // What a forger, or a dump cut short when it was made, gives: the archive's table of
    // contents and part of its data, encrypted to the right key, with a manifest to match.
    let plain = backups.setup.path().join("plain.dump");
    let decrypted = backups.gpg(&[
        "--batch",
        "--yes",
        "--output",
        &plain.to_string_lossy(),
        "--decrypt",
        &file.to_string_lossy(),
    ]);
    assert!(decrypted.status.success(), "{}", stderr(&decrypted));
    let whole = fs::read(&plain).expect("the dump");
    fs::write(&plain, &whole[..whole.len() * 2 / 3]).expect("cut it short");
    let encrypted = backups.gpg(&[
        "--batch",
        "--yes",
        "--trust-model",
        "always",
        "--recipient",
        &backups.fingerprint,
        "--output",
        &file.to_string_lossy(),
        "--encrypt",
        &plain.to_string_lossy(),
    ]);
    assert!(encrypted.status.success(), "{}", stderr(&encrypted));
    let content = fs::read(&file).expect("the forged backup");
    let manifest_path =
        PathBuf::from(file.to_string_lossy().replace(".dump.gpg", ".manifest.json"));
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(&manifest_path).expect("the manifest")).expect("JSON");
    manifest["size"] = content.len().into();
    manifest["sha256"] = hex::encode(sha2::Sha256::digest(&content)).into();
    fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("JSON")).expect("write it");

    let output = backups.datapunk(&[
        "backup",
        "restore",
        &file.to_string_lossy(),
        "--admin-url",
        &admin_url,
        "--yes",
    ]);
    assert!(!output.status.success(), "a dump cut short was restored");
    assert!(stderr(&output).contains("nothing was changed"), "{}", stderr(&output));
    let admin = backups.setup.admin().await;
    let rows: i64 =
        admin.query_one("SELECT count(*) FROM datapunk.audit", &[]).await.expect("count").get(0);
    assert!(rows > 0, "the database was emptied");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_killed_create_was_writing_is_removed_by_the_next_one() {
    let backups = Backups::new();
    backups.create();
    let dir = backups.dir();
    // A killed create's file is not locked any more; a new one is left alone.
    let stale = dir.join(".datapunk-killed.partial");
    let fresh = dir.join(".datapunk-starting.partial");
    let made = backups
        .setup
        .command("sh")
        .arg("-c")
        .arg("echo half > \"$0\" && touch -d '2 minutes ago' \"$0\" && echo new > \"$1\"")
        .arg(&stale)
        .arg(&fresh)
        .status();
    assert!(made.expect("make the partial files").success());

    backups.create();
    assert!(!stale.exists(), "the killed create's file is still there");
    assert!(fresh.exists(), "a file too new to be stale was removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_non_zero_leave_no_file_and_are_audited() {
    let backups = Backups::new();
    let dir = backups.dir();

    // gpg fails: a recipient nobody has the key of.
    backups.configure(&format!("recipients = [\"{}\"]\n", "A".repeat(40)));
    let output = backups.datapunk(&["backup", "create"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("gpg failed"), "{}", stderr(&output));
    assert_eq!(Backups::everything_in(&dir), Vec::<String>::new());

    // pg_dump fails half-way, after writing part of a dump: gpg alone would call that a
    // success, as the shell pipeline `pg_dump | gpg` does.
    backups.configure(&format!("recipients = [\"{}\"]\n", backups.fingerprint));
    let fake = backups.setup.path().join("fake-bin");
    fs::create_dir(&fake).expect("a directory");
    let script = "#!/bin/sh\ncase \"$1\" in --version) echo 'pg_dump (PostgreSQL) 15';; \
                  *) printf 'PGDMP partial'; echo 'pg_dump: error: connection lost' >&2; \
                  exit 1;; esac\n";
    fs::write(fake.join("pg_dump"), script).expect("the script");
    fs::set_permissions(fake.join("pg_dump"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{}", fake.display(), datapunk_tests::path_with_postgres());
    let output = backups.command("datapunk").args(["backup", "create"]).env("PATH", path).output();
    let output = output.expect("run datapunk");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("pg_dump failed"), "{}", stderr(&output));
    assert!(stderr(&output).contains("connection lost"), "{}", stderr(&output));
    assert_eq!(Backups::everything_in(&dir), Vec::<String>::new());

    // The destination cannot be written.
    let locked = backups.setup.path().join("locked");
    let made = backups.command("mkdir").args(["-m", "500"]).arg(&locked).output();
    assert!(made.expect("mkdir").status.success());
    let output = backups.datapunk(&["backup", "create", "--to", &locked.to_string_lossy()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("creating the temporary file failed"), "{}", stderr(&output));
    assert_eq!(Backups::everything_in(&locked), Vec::<String>::new());

    let failed: Vec<(String, String)> = backups
        .events("backup.create")
        .iter()
        .map(|row| {
            let step = row["details"]["step"].as_str().unwrap_or_default().to_owned();
            (row["outcome"].as_str().unwrap_or_default().to_owned(), step)
        })
        .collect();
    let expected =
        [("failure", "gpg"), ("failure", "pg_dump"), ("failure", "creating the temporary file")];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    assert_eq!(failed, expected);
}

/// The time of an audit row (`at`) or of a deferred event (`details.deferred.recorded_at`).
fn time_of(value: &Value) -> OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("no time in {value}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_database_stopped_create_fails_at_pg_dump_and_its_row_joins_the_trail_later() {
    let cluster = Cluster::start();
    let backups = Backups::on_own(&cluster);
    let dir = backups.dir();

    cluster.stop_server();
    let output = backups.datapunk(&["backup", "create"]);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("backup failed: pg_dump failed: cannot connect"), "{message}");
    assert!(message.contains("check that the server is running"), "{message}");
    assert!(message.contains("no backup file was left"), "{message}");
    assert_eq!(Backups::everything_in(&dir), Vec::<String>::new());
    // The row could not be written: it waits in the spool, privately, with its time.
    assert!(message.contains("backup.create waits in"), "{message}");
    let spool = backups.spool();
    assert_eq!(mode(&spool), 0o600);
    assert_eq!(mode(&backups.setup.state_dir()), 0o700);
    let kept: Vec<Value> = fs::read_to_string(&spool)
        .expect("the spool")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["action"], "backup.create");
    assert_eq!(kept[0]["outcome"], "failure");
    assert_eq!(kept[0]["details"]["step"], "pg_dump");
    let failed_at = time_of(&kept[0]["recorded_at"]);

    cluster.start_server();
    // Reading the trail appends nothing, and says what waits.
    let listed = backups.datapunk(&["audit", "--action", "backup.create", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(listed.stdout.is_empty(), "{}", String::from_utf8_lossy(&listed.stdout));
    assert!(
        stderr(&listed).contains("1 events recorded while the database"),
        "{}",
        stderr(&listed)
    );
    backups.create();

    let rows = backups.events("backup.create");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (deferred, made) = (&rows[0], &rows[1]);
    assert_eq!(deferred["outcome"], "failure");
    assert_eq!(deferred["details"]["step"], "pg_dump");
    assert_eq!(deferred["details"]["deferred"]["id"], kept[0]["id"]);
    assert_eq!(time_of(&deferred["details"]["deferred"]["recorded_at"]), failed_at);
    assert!(failed_at < time_of(&deferred["at"]), "{deferred}");
    assert_eq!(made["outcome"], "success");
    assert!(!spool.exists(), "the spool was emptied");
    let verified = backups.ok(&["audit", "verify"]);
    assert!(verified.contains("audit chain intact"), "{verified}");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_failure_records_how_the_failed_unit_ended() {
    let backups = Backups::new();
    let invocation = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

    let output = backups
        .command("datapunk")
        .args(["backup", "report-failure", "--unit", "datapunk-backup.service"])
        .env("MONITOR_SERVICE_RESULT", "exit-code")
        .env("MONITOR_EXIT_CODE", "exited")
        .env("MONITOR_EXIT_STATUS", "1")
        .env("MONITOR_INVOCATION_ID", invocation)
        .output()
        .expect("run datapunk");

    assert!(output.status.success(), "{}", stderr(&output));
    let rows = backups.events("backup.failed");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "failure");
    assert_eq!(rows[0]["component"], "cli");
    let details = &rows[0]["details"];
    assert_eq!(details["unit"], "datapunk-backup.service");
    assert_eq!(details["result"], "exit-code");
    assert_eq!(details["exit_code"], "exited");
    assert_eq!(details["exit_status"], "1");
    assert_eq!(details["invocation_id"], invocation);

    // Without systemd's variables (a unit that never started has no exit status) the row
    // says only which unit failed; what is not a unit name is refused and recorded nowhere.
    backups.ok(&["backup", "report-failure", "--unit", "datapunk-backup.service"]);
    let bad = backups.datapunk(&["backup", "report-failure", "--unit", "x; rm -rf ~"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("is not a systemd unit name"), "{}", stderr(&bad));
    let rows = backups.events("backup.failed");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["details"]["result"], Value::Null);
    backups.ok(&["audit", "verify"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_reported_while_the_database_is_down_is_appended_when_the_daemon_starts() {
    let cluster = Cluster::start();
    let backups = Backups::on_own(&cluster);

    cluster.stop_server();
    let output = backups
        .command("datapunk")
        .args(["backup", "report-failure", "--unit", "datapunk-backup.service"])
        .env("MONITOR_SERVICE_RESULT", "resources")
        .output()
        .expect("run datapunk");
    // Kept for later is not a failure: the hook has done its part.
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("backup.failed waits in"), "{}", stderr(&output));

    cluster.start_server();
    let notify = NotifySocket::new();
    let daemon = backups.setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    daemon.stop();

    let rows: Vec<Value> = backups
        .ok(&["audit", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON row"))
        .collect();
    let position = |action: &str| rows.iter().position(|row| row["action"] == action);
    let failed = position("backup.failed").unwrap_or_else(|| panic!("no backup.failed: {rows:?}"));
    assert_eq!(rows[failed]["details"]["result"], "resources");
    assert!(rows[failed]["details"]["deferred"]["recorded_at"].is_string(), "{}", rows[failed]);
    // The daemon's first append, `config.loaded`, came after it.
    assert!(position("config.loaded").is_some_and(|loaded| loaded > failed), "{rows:?}");
    assert!(!backups.spool().exists());
    backups.ok(&["audit", "verify"]);
}

/// A tmpfs of `size` mounted at `path` for the test account, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let options = format!("size={size},mode=0700,uid={}", account().uid);
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_backup_and_leaves_nothing() {
    let backups = Backups::new();
    // Rows that do not compress, so that the dump cannot fit in the file system.
    let admin = backups.setup.admin().await;
    admin
        .batch_execute(
            "SET ROLE datapunk_owner;
             CREATE TABLE datapunk.ballast AS
                 SELECT md5(random()::text) || md5(random()::text) AS filler
                   FROM generate_series(1, 20000);",
        )
        .await
        .expect("the ballast");
    let small = backups.setup.path().join("small");
    let tmpfs = Tmpfs::mount(&small, "256k").unwrap_or_else(|error| {
        panic!(
            "NOT RUN: cannot mount a tmpfs to fill ({error}); the disk-full case needs root to \
             mount one"
        )
    });

    let output = backups.datapunk(&["backup", "create", "--to", &small.to_string_lossy()]);

    assert!(!output.status.success(), "a backup fitted in 256 KiB");
    assert!(stderr(&output).contains("writing the backup failed"), "{}", stderr(&output));
    assert!(stderr(&output).contains("No space left"), "{}", stderr(&output));
    assert_eq!(Backups::everything_in(&small), Vec::<String>::new());
    let rows = backups.events("backup.create");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "failure");
    assert_eq!(rows[0]["details"]["step"], "writing the backup");
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_newest_and_the_newest_that_verifies() {
    let backups = Backups::new();
    let empty = backups.ok(&["backup", "prune", "--keep-last", "2"]);
    assert!(empty.contains("there is no backup in"), "{empty}");
    let made: Vec<PathBuf> = (0..5).map(|_| backups.create()).collect();
    // The two newest are damaged.
    flip_a_byte(&made[4]);
    flip_a_byte(&made[3]);

    let out = backups.ok(&["backup", "prune", "--keep-last", "2"]);

    let left = Backups::backups_in(&backups.dir());
    assert_eq!(left, [made[2].clone(), made[3].clone(), made[4].clone()], "{out}");
    assert!(out.contains("the newest backup that verifies"), "{out}");
    let manifests = Backups::everything_in(&backups.dir());
    assert_eq!(manifests.len(), 6, "each kept backup keeps its manifest: {manifests:?}");

    // With every backup sound, --keep-last 2 keeps exactly the two newest.
    let sound = backups.create();
    backups.ok(&["backup", "prune", "--keep-last", "2"]);
    assert_eq!(Backups::backups_in(&backups.dir()), [made[4].clone(), sound]);
    let rows = backups.events("backup.prune");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["details"]["deleted"].as_array().map(Vec::len), Some(2));

    // Its reader gone (`| head -1`), prune still deletes and records all it decided to.
    let newest = backups.create();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = backups
        .command("datapunk")
        .args(["backup", "prune", "--keep-last", "1"])
        .stdout(writer)
        .output()
        .expect("run datapunk");
    assert_eq!(output.status.code(), Some(141), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert_eq!(Backups::backups_in(&backups.dir()), [newest]);
    let rows = backups.events("backup.prune");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2]["details"]["deleted"].as_array().map(Vec::len), Some(2), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_a_database_that_is_not_empty_without_yes() {
    let backups = Backups::new();
    let file = backups.create();
    let admin_url = datapunk_testkit::cluster().conninfo("postgres", "postgres");

    let output = backups.datapunk(&[
        "backup",
        "restore",
        &file.to_string_lossy(),
        "--admin-url",
        &admin_url,
    ]);

    assert!(!output.status.success());
    assert!(stderr(&output).contains("is not empty"), "{}", stderr(&output));
    assert!(stderr(&output).contains("add --yes"), "{}", stderr(&output));
    let rows = backups.events("backup.restore");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_checks_the_backup_before_it_touches_the_target_and_keeps_the_vault_table() {
    let backups = Backups::new();
    let file = backups.create();
    let path = file.to_string_lossy().into_owned();
    let admin_url = datapunk_testkit::cluster().conninfo("postgres", "postgres");
    let restore = ["backup", "restore", path.as_str(), "--admin-url", admin_url.as_str(), "--yes"];
    let admin = backups.setup.admin().await;
    // The encrypted-table store's records: never in a dump, and the only copy of its keys.
    admin
        .batch_execute(
            "INSERT INTO datapunk.vault_records (kind, integration, sealed)
             VALUES ('data-key', 'google', '\\x0123')",
        )
        .await
        .expect("a vault record");
    let count = |sql: &'static str| {
        let admin = &admin;
        async move { admin.query_one(sql, &[]).await.expect("count").get::<_, i64>(0) }
    };
    let audit_before = count("SELECT count(*) FROM datapunk.audit").await;

    // A session on the target, as a running daemon keeps: refused, nothing changed.
    let output = backups.datapunk(&restore);
    assert!(!output.status.success(), "restored under another session");
    assert!(stderr(&output).contains("other session"), "{}", stderr(&output));
    drop(admin);

    // Elsewhere, without the secret key, the backup cannot be decrypted: refused before
    // anything changed.
    let keyless = backups.setup.path().join("keyless");
    let made = backups.setup.command("mkdir").args(["-m", "700"]).arg(&keyless).status();
    assert!(made.expect("mkdir").success());
    let output = backups
        .setup
        .command("datapunk")
        .args(restore)
        .env("GNUPGHOME", &keyless)
        .output()
        .expect("run datapunk");
    assert!(!output.status.success(), "restored what cannot be decrypted");
    assert!(stderr(&output).contains("cannot decrypt"), "{}", stderr(&output));
    let admin = backups.setup.admin().await;
    let audit_after: i64 =
        admin.query_one("SELECT count(*) FROM datapunk.audit", &[]).await.expect("count").get(0);
    assert!(audit_after >= audit_before, "the database was emptied before decrypting");
    drop(admin);

    // A restore killed mid-way leaves its private directory; the next one removes it.
    let left = backups.setup.state_dir().join(".datapunk-restore-killed");
    let made = backups
        .setup
        .command("sh")
        .arg("-c")
        .arg("mkdir -m 700 \"$0\" && echo 'PGDMP in clear' > \"$0/dump\" && : > \"$0/lock\"")
        .arg(&left)
        .status();
    assert!(made.expect("make a left-over directory").success());

    let output = backups.datapunk(&restore);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!left.exists(), "the killed restore's directory is still there");
    let admin = backups.setup.admin().await;
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM datapunk.vault_records WHERE integration = 'google'", &[])
        .await
        .expect("count the vault records")
        .get(0);
    assert_eq!(kept, 1, "the vault table's rows were lost");
    let side: Option<String> = admin
        .query_one("SELECT to_regnamespace('datapunk_restore_keep')::text", &[])
        .await
        .expect("look for the side schema")
        .get(0);
    assert_eq!(side, None, "the side schema was left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_while_the_daemon_runs_and_goes_ahead_once_it_stopped() {
    let backups = Backups::new();
    let file = backups.create();
    let admin_url = datapunk_testkit::cluster().conninfo("postgres", "postgres");
    let restore =
        ["backup", "restore", &file.to_string_lossy(), "--admin-url", &admin_url, "--yes"];
    let notify = NotifySocket::new();
    let daemon = backups.setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));

    let output = backups.datapunk(&restore);

    assert!(!output.status.success());
    let message = stderr(&output);
    let running = format!("restore refused: datapunkd (pid {}) is running", daemon.pid());
    assert!(message.contains(&running), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    let rows = backups.events("backup.restore");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "denied");
    // Nothing was replaced: the daemon's rows since the backup are still there, and the anchor
    // was not set aside.
    assert_eq!(backups.events("daemon.start").len(), 1);
    let state = Backups::everything_in(&backups.setup.state_dir());
    assert!(!state.iter().any(|name| name.contains("before-restore")), "{state:?}");
    // `--into` naming the configured database is the same restore, with the same guard.
    let into = datapunk_testkit::cluster().conninfo("postgres", &backups.setup.db_name);
    let output =
        backups.datapunk(&["backup", "restore", &file.to_string_lossy(), "--into", &into, "--yes"]);
    assert!(!output.status.success(), "restored into the live database under its daemon");
    assert!(stderr(&output).contains(&running), "{}", stderr(&output));

    daemon.stop();
    let output = backups.datapunk(&restore);

    assert!(output.status.success(), "{}", stderr(&output));
    let outcomes: Vec<Value> =
        backups.events("backup.restore").iter().map(|row| row["outcome"].clone()).collect();
    assert_eq!(outcomes, ["success"], "the restored trail ends at the backup, then the restore");
    backups.ok(&["audit", "verify"]);
}

/// Per table, its row count and a checksum over every column of every row; of the audit
/// table only the rows up to `audit_upto`.
async fn fingerprint(
    client: &tokio_postgres::Client,
    audit_upto: i64,
) -> BTreeMap<String, (i64, String)> {
    let tables = client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'datapunk' AND c.relkind = 'r' AND c.relname <> 'vault_records'
              ORDER BY 1",
            &[],
        )
        .await
        .expect("the tables");
    let mut sums = BTreeMap::new();
    for table in tables {
        let name: String = table.get(0);
        let only = if name == "audit" { format!("t.id <= {audit_upto}") } else { "true".into() };
        // The restore writes the migration history anew: the same migrations, applied now.
        let row = if name == "schema_migrations" { "(t.version, t.name, t.checksum)" } else { "t" };
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg({row}::text, E'\\n' ORDER BY {row}::text)), '')
               FROM datapunk.\"{name}\" t WHERE {only}"
        );
        let row = client.query_one(&sql, &[]).await.expect("a checksum");
        sums.insert(name, (row.get(0), row.get(1)));
    }
    sums
}

/// Every sealed field of every synced dataset, decrypted with the keyring's keys.
async fn opened(setup: &Setup, bus: &SessionBus) -> Vec<String> {
    let client = setup.admin().await;
    let mut all = Vec::new();
    for (name, dataset) in [
        ("google", Dataset::Calendar),
        ("google", Dataset::Contacts),
        ("spotify", Dataset::SavedTracks),
    ] {
        let key = vault(bus).data_key(name).await.expect("the keyring").expect("a data key");
        let rows = datasets::sealed_records(&client, name, dataset).await.expect("the rows");
        assert!(!rows.is_empty(), "{name}/{} synced nothing", dataset.name());
        for row in rows {
            let fields = field::decrypt_fields(&key, &row.sealed).expect("the key opens it");
            all.push(format!("{fields:?}"));
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synced_database_comes_back_whole_after_it_was_dropped() {
    let population = Population {
        seed: 11,
        events: 60,
        contacts: 40,
        saved_tracks: 50,
        playlists: 3,
        plays: 20,
    };
    let sandbox =
        Sandbox::start_with(([127, 0, 0, 1], 0).into(), population).await.expect("a sandbox");
    let marker = format!("DPMARK{:016x}", rand::random::<u64>());
    let id = sandbox.truth(Provided::GoogleContacts)[0].id.clone();
    sandbox.plant(Provided::GoogleContacts, &id, &marker).expect("plant a marker");
    let (setup, bus) = sandboxed::setup(&sandbox, "[sync]\ninterval_secs = 3600\n");
    connected(&setup, &bus, "google", "calendar,contacts").await;
    connected(&setup, &bus, "spotify", "saved-tracks").await;
    let daemon = setup.spawn_daemon(None, &[("DBUS_SESSION_BUS_ADDRESS", bus.address())]);
    let start = std::time::Instant::now();
    loop {
        let rows = setup.cli_ok(&["audit", "--action", "sync.run", "--json"]);
        if rows.lines().count() >= 3 {
            break;
        }
        assert!(start.elapsed().as_secs() < 120, "the first syncs did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    daemon.stop();

    let admin = setup.admin().await;
    let last: i64 =
        admin.query_one("SELECT max(id) FROM datapunk.audit", &[]).await.expect("ids").get(0);
    let before = fingerprint(&admin, last).await;
    let fields_before = opened(&setup, &bus).await;
    assert!(fields_before.iter().any(|f| f.contains(&marker)), "the marker was synced");
    let backups = Backups::on(setup);
    let file = backups.create();
    let content = fs::read(&file).expect("read the backup");
    assert!(memchr::memmem::find(&content, marker.as_bytes()).is_none(), "the marker in clear");

    let cluster = datapunk_testkit::cluster();
    let maintenance = cluster.admin_client("postgres").await;
    let drop = format!("DROP DATABASE \"{}\" WITH (FORCE)", backups.setup.db_name);
    maintenance.batch_execute(&drop).await.expect("drop the database");
    let admin_url = cluster.conninfo("postgres", "postgres");
    let restored = backups
        .command("datapunk")
        .args(["backup", "restore", &file.to_string_lossy(), "--admin-url", &admin_url])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .output()
        .expect("run datapunk");
    let out = String::from_utf8_lossy(&restored.stdout);
    assert!(restored.status.success(), "{out}\n{}", stderr(&restored));
    assert!(out.contains("google: the secret-service vault holds its key"), "{out}");

    let admin = backups.setup.admin().await;
    let after = fingerprint(&admin, last).await;
    assert_eq!(after, before);
    let total: i64 =
        admin.query_one("SELECT count(*) FROM datapunk.audit", &[]).await.expect("a count").get(0);
    assert_eq!(total, before["audit"].0 + 1, "the restore appends its own audit row");
    assert_eq!(opened(&backups.setup, &bus).await, fields_before);
    let verify = backups.ok(&["audit", "verify"]);
    assert!(!verify.is_empty());
}

/// With an external server that asks every role for its password (the NixOS module's
/// PostgreSQL container), `backup create` gives pg_dump `datapunk_backup`'s own password
/// through a private password file that is gone afterwards: never in pg_dump's arguments, its
/// environment or the server log. Without `backup.password_file`, datapunk_backup is refused.
#[tokio::test(flavor = "multi_thread")]
async fn with_password_logins_pg_dump_gets_the_backup_roles_own_password_from_a_private_file() {
    const APP: &str = "app-pw-Qx7-not-for-pg-dump";
    const BACKUP: &str = "backup:pw\\Rz4-only-for-pg-dump";
    let (server, _hba) =
        datapunk_tests::scram_cluster(&[("log_statement", "all"), ("log_connections", "on")]);
    let db_name = server.unique_db_name("pw");
    let admin = server.conninfo("postgres", "postgres");
    let setup = Setup::external_with(&db_name, &server.conninfo("datapunk_app", &db_name), "");
    let app_file = setup.write_file("app-password", format!("{APP}\n").as_bytes());
    let backup_file = setup.write_file("backup-password", format!("{BACKUP}\n").as_bytes());
    let config = fs::read_to_string(&setup.config).expect("the configuration");
    setup.write_config(&format!("{config}password_file = \"{}\"\n", app_file.display()));
    let init = setup.cli(&["db", "init", "--admin-url", &admin]);
    assert!(init.status.success(), "{}", stderr(&init));
    for (role, file) in [("app", &app_file), ("backup", &backup_file)] {
        let file = file.display().to_string();
        setup.cli_ok(&["db", "password", role, "--password-file", &file, "--admin-url", &admin]);
    }
    let backups = Backups::on(setup);
    let recipients = format!("recipients = [\"{}\"]\n", backups.fingerprint);

    // Without its own password, datapunk_backup offers the app's and is refused.
    let output = backups.datapunk(&["backup", "create"]);
    assert!(!output.status.success(), "a backup was made with the app role's password");
    assert!(stderr(&output).contains("datapunk_backup"), "{}", stderr(&output));
    assert!(Backups::backups_in(&backups.dir()).is_empty());

    // A pg_dump that records what it was given, then does its work.
    let fake = backups.setup.path().join("recording-bin");
    fs::create_dir(&fake).expect("a directory");
    let record = backups.setup.path().join("pg_dump-saw");
    let real_path = datapunk_tests::path_with_postgres();
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = --version ] || {{ printf '%s\\n' \"$@\" > '{record}.args'; \
         env > '{record}.env'; printf '%s\\n' \"$PGPASSFILE\" > '{record}.file'; \
         stat -c %a \"$PGPASSFILE\" > '{record}.mode'; }}\nPATH='{real_path}' exec pg_dump \"$@\"\n",
        record = record.display(),
    );
    fs::write(fake.join("pg_dump"), script).expect("the script");
    fs::set_permissions(fake.join("pg_dump"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{real_path}", fake.display());
    // What a killed `create` would have left behind, two minutes ago.
    let stale = backups.setup.runtime_dir().join(".datapunk-pgpass-killed");
    let runtime = backups.setup.runtime_dir();
    let made = backups.command("mkdir").args(["-p", "-m", "700"]).arg(&runtime).output();
    assert!(made.expect("mkdir").status.success());
    let planted = backups.command("touch").args(["-d", "2 minutes ago"]).arg(&stale).output();
    assert!(planted.expect("touch").status.success());
    backups.configure(&format!("{recipients}password_file = \"{}\"\n", backup_file.display()));
    let output = backups.command("datapunk").args(["backup", "create"]).env("PATH", path).output();
    let output = output.expect("run datapunk");
    assert!(output.status.success(), "{}", stderr(&output));
    let made = Backups::backups_in(&backups.dir());
    assert_eq!(made.len(), 1);
    backups.ok(&["backup", "verify", &made[0].to_string_lossy()]);

    let saw = |suffix: &str| {
        fs::read_to_string(format!("{}.{suffix}", record.display()))
            .unwrap_or_else(|e| panic!("pg_dump's {suffix} were not recorded: {e}"))
    };
    let password_file = PathBuf::from(saw("file").trim());
    assert!(password_file.starts_with(backups.setup.runtime_dir()), "{}", password_file.display());
    assert_eq!(saw("mode").trim(), "600");
    assert!(!password_file.exists(), "the password file outlived the backup");
    assert!(!stale.exists(), "a killed backup's password file was left in place");
    let (args, env, log) = (saw("args"), saw("env"), server.log());
    assert!(args.contains("--no-password"), "{args}");
    assert!(log.contains("user=datapunk_backup"), "pg_dump did not log in as datapunk_backup");
    for (what, text) in [("arguments", &args), ("environment", &env), ("server log", &log)] {
        for password in [APP, BACKUP, "Rz4-only"] {
            assert!(!text.contains(password), "a password is in pg_dump's {what}");
        }
    }
    assert!(!stderr(&output).contains("Rz4-only") && !stderr(&output).contains(APP));

    // As the NixOS module configures it: a systemd credential, looked up only by the command
    // that needs it.
    backups.configure(&format!("{recipients}password_credential = \"backup-pw\"\n"));
    let output = backups.datapunk(&["backup", "create"]);
    assert!(!output.status.success(), "a backup was made without the credential");
    assert!(stderr(&output).contains("CREDENTIALS_DIRECTORY"), "{}", stderr(&output));
    backups.ok(&["config", "check"]);
    let credentials = backups.setup.path().join("credentials");
    let made = backups.command("mkdir").args(["-m", "700"]).arg(&credentials).output();
    assert!(made.expect("mkdir").status.success());
    let copied =
        backups.command("cp").arg(&backup_file).arg(credentials.join("backup-pw")).output();
    assert!(copied.expect("cp").status.success());
    let mut create = backups.command("datapunk");
    create.args(["backup", "create"]).env("CREDENTIALS_DIRECTORY", &credentials);
    let output = create.output().expect("run datapunk");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(Backups::backups_in(&backups.dir()).len(), 2);
}
