//! `datapunk keys` against the real GNOME Keyring and real gpg: keys are created, exported for
//! pgcrypto, backed up to GnuPG, destroyed and restored, and every step is audited without the
//! key in the row or the journal entry.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output};
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
}

impl Keys {
    fn new() -> Self {
        let setup = Setup::external();
        assert!(setup.init().status.success());
        let bus = SessionBus::start();
        let gnupg = setup.path().join("gnupg");
        let keys = Self { setup, bus, gnupg };
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
        self.command("datapunk").args(args).output().expect("run datapunk")
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
        ]
    );
    let text = serde_json::to_string(&events).expect("JSON");
    for key in [&google, &spotify] {
        assert!(!text.contains(key.as_str()), "a key in the audit rows");
    }
    let entries =
        journal.wait_for(&[("DATAPUNK_ACTION", "key.exported")], 2, Duration::from_secs(10));
    let entries = format!("{entries:?}");
    assert!(!entries.contains(&google) && !entries.contains(&spotify), "a key in the journal");
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

    keys.ok(&["keys", "destroy", "google", "--yes"]);
    let restored = keys.ok(&["keys", "restore", file_arg]);

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
