//! `datapunk keys` against the real GNOME Keyring and real gpg: keys are created, exported for
//! pgcrypto, backed up to GnuPG, destroyed and restored, and every step is audited without the
//! key in the row or the journal entry.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use datapunk_testkit::{SessionBus, journal};
use datapunk_tests::Setup;
use datapunk_vault::backend::{SecretServiceOptions, Vault};
use datapunk_vault::field;
use serde_json::Value;

/// One installation with its own keyring, and a GnuPG home for backups.
struct Keys {
    setup: Setup,
    bus: SessionBus,
    gnupg: PathBuf,
    /// The process id of every `datapunk` run, with its arguments.
    runs: Mutex<Vec<(u32, Vec<String>, bool)>>,
}

impl Keys {
    fn new() -> Self {
        let setup = Setup::external();
        assert!(setup.init().status.success());
        let bus = SessionBus::start();
        let gnupg = setup.path().join("gnupg");
        let keys = Self { setup, bus, gnupg, runs: Mutex::new(Vec::new()) };
        let made = keys.command("mkdir").args(["-m", "700"]).arg(&keys.gnupg).output();
        assert!(made.expect("mkdir").status.success());
        keys
    }

    /// A command run as the test account with the setup's environment, the keyring's bus and
    /// the GnuPG home.
    fn command(&self, program: &str) -> Command {
        let mut command = self.setup.command(program);
        command.env("DBUS_SESSION_BUS_ADDRESS", self.bus.address()).env("GNUPGHOME", &self.gnupg);
        command
    }

    fn datapunk(&self, args: &[&str]) -> Output {
        let child = self
            .command("datapunk")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run datapunk");
        let pid = child.id();
        let output = child.wait_with_output().expect("wait for datapunk");
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.runs.lock().expect("not poisoned").push((pid, args, output.status.success()));
        output
    }

    /// The process ids of the successful runs whose arguments start with `prefix`.
    fn pids(&self, prefix: &[&str]) -> Vec<u32> {
        let prefix: Vec<String> = prefix.iter().map(|arg| (*arg).to_owned()).collect();
        let runs = self.runs.lock().expect("not poisoned");
        runs.iter()
            .filter(|(_, args, success)| *success && args.starts_with(&prefix))
            .map(|(pid, ..)| *pid)
            .collect()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.datapunk(args);
        assert!(
            output.status.success(),
            "datapunk {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    fn gpg(&self, args: &[&str]) -> String {
        let output = self.command("gpg").args(args).output().expect("run gpg");
        assert!(
            output.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new OpenPGP key without a passphrase; returns its fingerprint.
    fn gpg_key(&self) -> String {
        self.gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Datapunk Recovery <recovery@datapunk.invalid>",
            "default",
            "default",
            "never",
        ]);
        let listing = self.gpg(&["--list-keys", "--with-colons"]);
        listing
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|field| !field.is_empty()))
            .expect("the new key's fingerprint")
            .to_owned()
    }

    /// The data key the vault holds for `integration`, read as the daemon reads it.
    async fn vault_key(&self, integration: &str) -> Option<datapunk_vault::key::DataKey> {
        let options = SecretServiceOptions { bus_address: Some(self.bus.address().to_owned()) };
        Vault::secret_service(options).data_key(integration).await.expect("read the key")
    }

    /// The audit rows of `datapunk audit --json` whose action starts with `key.`.
    fn key_events(&self) -> Vec<Value> {
        self.ok(&["audit", "--json"])
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
            .filter(|row| row["action"].as_str().is_some_and(|a| a.starts_with("key.")))
            .collect()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = self.command("gpgconf").args(["--kill", "gpg-agent"]).status();
    }
}

fn is_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_created_exported_for_pgcrypto_and_destroyed_with_every_step_audited() {
    // Process ids are reused within a run: only entries written since the test began count.
    let since = std::time::SystemTime::now();
    let journal = journal();
    let keys = Keys::new();
    keys.ok(&["keys", "create", "google"]);
    keys.ok(&["keys", "create", "spotify"]);
    let again = keys.datapunk(&["keys", "create", "google"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a data key"));
    let listed = keys.ok(&["keys", "list"]);
    assert!(listed.contains("google") && listed.contains("spotify"), "{listed}");

    // Without a terminal to confirm on, an export needs --yes, and nothing is shown before.
    let refused = keys.datapunk(&["keys", "export", "google"]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "a key was printed without confirmation");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let exported = keys.datapunk(&["keys", "export", "google", "--yes"]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let google = String::from_utf8(exported.stdout).expect("UTF-8").trim().to_owned();
    assert!(is_key(&google), "{google}");
    assert!(String::from_utf8_lossy(&exported.stderr).contains("warning"));
    let spotify = keys.ok(&["keys", "export", "spotify", "--yes"]).trim().to_owned();

    // What the daemon encrypts under the vault's key, pgcrypto reads with the exported one.
    let admin = keys.setup.admin().await;
    admin
        .batch_execute("CREATE TABLE public.fields (integration text, value bytea)")
        .await
        .expect("a table");
    for integration in ["google", "spotify"] {
        let key = keys.vault_key(integration).await.expect("a key in the keyring");
        let value = field::encrypt_str(&key, &format!("{integration} secret event")).expect("enc");
        admin
            .execute("INSERT INTO public.fields VALUES ($1, $2)", &[&integration, &value])
            .await
            .expect("insert");
    }
    let decrypt = "SELECT convert_from(datapunk.pgp_sym_decrypt_bytea(value, $2), 'UTF8') \
                   FROM public.fields WHERE integration = $1";
    let plain: String =
        admin.query_one(decrypt, &[&"google", &google]).await.expect("pgcrypto").get(0);
    assert_eq!(plain, "google secret event");
    let wrong = admin.query_one(decrypt, &[&"google", &spotify]).await;
    assert!(wrong.is_err(), "spotify's key opened google's field");

    keys.ok(&["keys", "destroy", "google", "--yes"]);

    assert!(keys.vault_key("google").await.is_none());
    let gone = keys.datapunk(&["keys", "export", "google", "--yes"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("has no data key"));
    let row = admin
        .query_one("SELECT value FROM public.fields WHERE integration = 'google'", &[])
        .await
        .expect("the row is still there");
    let spotify_key = keys.vault_key("spotify").await.expect("spotify's key is kept");
    assert!(field::decrypt(&spotify_key, row.get(0)).is_err(), "another key opened it");
    // A new key for the integration does not bring the old rows back, in the daemon or in SQL.
    keys.ok(&["keys", "create", "google"]);
    let renewed = keys.vault_key("google").await.expect("the new key");
    assert!(field::decrypt(&renewed, row.get(0)).is_err(), "the new key opened an old row");
    let renewed_hex = keys.ok(&["keys", "export", "google", "--yes"]).trim().to_owned();
    assert_ne!(renewed_hex, google);
    let refused = admin.query_one(decrypt, &[&"google", &renewed_hex]).await;
    let error = refused.expect_err("pgcrypto decrypted with the new key");
    let message = error.as_db_error().map(|db| db.message().to_owned()).unwrap_or_default();
    assert_eq!(message, "Wrong key or corrupt data", "{error:?}");
    let plain: String =
        admin.query_one(decrypt, &[&"spotify", &spotify]).await.expect("pgcrypto").get(0);
    assert_eq!(plain, "spotify secret event", "other integrations still decrypt");

    let events = keys.key_events();
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|row| {
            (row["action"].as_str().unwrap_or(""), row["integration"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("key.created", "google"),
            ("key.created", "spotify"),
            ("key.exported", "google"),
            ("key.exported", "spotify"),
            ("key.destroyed", "google"),
            ("key.created", "google"),
            ("key.exported", "google"),
        ]
    );
    let text = serde_json::to_string(&events).expect("JSON");
    for key in [&google, &spotify, &renewed_hex] {
        assert!(!text.contains(key.as_str()), "a key in the audit rows");
    }
    // Each successful export wrote its journald entry from its own process.
    let exports = keys.pids(&["keys", "export"]);
    assert_eq!(exports.len(), 3);
    let mut entries = Vec::new();
    for pid in &exports {
        let pid = pid.to_string();
        let matches = [("_PID", pid.as_str()), ("DATAPUNK_ACTION", "key.exported")];
        entries.extend(journal.wait_for_since(&matches, since, 1, Duration::from_secs(10)));
    }
    let entries = format!("{entries:?}");
    for key in [&google, &spotify, &renewed_hex] {
        assert!(!entries.contains(key.as_str()), "a key in the journal");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gpg_backup_brings_a_destroyed_key_back() {
    let keys = Keys::new();
    let fingerprint = keys.gpg_key();
    keys.ok(&["keys", "create", "google"]);
    keys.ok(&["keys", "create", "microsoft"]);
    let google = keys.ok(&["keys", "export", "google", "--yes"]).trim().to_owned();
    let file = keys.setup.path().join("keys.gpg");
    let file_arg = file.to_str().expect("a UTF-8 path");

    let bad =
        keys.datapunk(&["keys", "backup", file_arg, "--recipient", "recovery@datapunk.invalid"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("full fingerprint"));
    assert!(!file.exists());

    let out = keys.ok(&["keys", "backup", file_arg, "--recipient", &fingerprint]);
    assert!(out.contains("2 data key(s)"), "{out}");
    let mode = fs::metadata(&file).expect("the backup").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let sealed = fs::read(&file).expect("read the backup");
    let sealed_text = String::from_utf8_lossy(&sealed).to_lowercase();
    assert!(!sealed_text.contains(&google), "the backup holds the key in clear");
    let opened = keys.gpg(&["--batch", "--quiet", "--decrypt", file_arg]);
    assert!(opened.contains(&google), "the backup opens with the recipient's key");
    let again = keys.datapunk(&["keys", "backup", file_arg, "--recipient", &fingerprint]);
    assert!(!again.status.success(), "an existing file is not overwritten");

    // A file merely wrapped in OpenPGP packets, not encrypted, could plant a key its maker
    // knows: it is refused.
    let planted = keys.setup.path().join("planted.json");
    let known = "ab".repeat(32);
    let bundle = format!(
        "{{\"format\":\"datapunk-key-backup\",\"version\":1,\
         \"created_at\":\"2026-12-03T10:00:00Z\",\"keys\":[{{\"integration\":\"zoom\",\
         \"key\":\"{known}\"}}]}}"
    );
    fs::write(&planted, bundle).expect("write the planted file");
    let wrapped = keys.setup.path().join("planted.gpg");
    let wrap = keys
        .command("gpg")
        .arg("--batch")
        .arg("--store")
        .arg("-o")
        .arg(&wrapped)
        .arg(&planted)
        .output();
    assert!(wrap.expect("gpg --store").status.success());
    let refused = keys.datapunk(&["keys", "restore", wrapped.to_str().expect("UTF-8"), "--yes"]);
    assert!(!refused.status.success(), "an unencrypted backup was restored");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not an encrypted key backup"));
    assert!(keys.vault_key("zoom").await.is_none(), "a planted key reached the vault");

    keys.ok(&["keys", "destroy", "google", "--yes"]);
    let unconfirmed = keys.datapunk(&["keys", "restore", file_arg]);
    assert!(!unconfirmed.status.success(), "restored without confirmation");
    assert!(keys.vault_key("google").await.is_none());
    let restored = keys.ok(&["keys", "restore", file_arg, "--yes"]);

    assert!(restored.contains("google: restored"), "{restored}");
    assert!(restored.contains("microsoft: the vault holds this key already"), "{restored}");
    let back = keys.ok(&["keys", "export", "google", "--yes"]).trim().to_owned();
    assert_eq!(back, google);
    let actions: Vec<String> = keys
        .key_events()
        .iter()
        .map(|row| row["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(actions.contains(&"key.backup".to_owned()), "{actions:?}");
    assert!(actions.contains(&"key.restored".to_owned()), "{actions:?}");
    let events = serde_json::to_string(&keys.key_events()).expect("JSON");
    assert!(events.contains(&fingerprint), "the backup row names its recipient");
    assert!(!events.contains(&google));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_is_not_created_or_destroyed_when_the_audit_trail_cannot_record_it() {
    let keys = Keys::new();
    keys.ok(&["keys", "create", "google"]);
    // An anchor naming a row that does not match: the chain was tampered with, as far as
    // Datapunk can tell, and nothing is appended past it.
    let anchor = keys.setup.state_dir().join("audit-head");
    let kept = fs::read(&anchor).expect("the anchor file");
    fs::write(&anchor, format!("1 {}\n", "0".repeat(64))).expect("break the anchor");

    for args in [&["keys", "destroy", "google", "--yes"][..], &["keys", "create", "zoom"]] {
        let output = keys.datapunk(args);
        assert!(!output.status.success(), "{args:?} went ahead");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("nothing was changed"), "{args:?}: {stderr}");
    }
    assert!(keys.vault_key("google").await.is_some(), "destroyed without a record");
    assert!(keys.vault_key("zoom").await.is_none(), "created without a record");

    fs::write(&anchor, kept).expect("restore the anchor");
    keys.ok(&["keys", "destroy", "google", "--yes"]);
    assert!(keys.vault_key("google").await.is_none());
}
