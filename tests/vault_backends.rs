//! The three secret stores against the real thing: GNOME Keyring on a private session bus, the
//! `pass` program with a throwaway GnuPG home, and the encrypted PostgreSQL table.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datapunk_store::{ConnectOptions, Store};
use datapunk_testkit::{SessionBus, cluster, session_bus};
use datapunk_vault::backend::{
    Error, ItemKind, MasterKeySource, PassOptions, SecretServiceOptions, StoredItem, Vault,
    VaultState,
};
use datapunk_vault::key::{DataKey, KeyPurpose};
use datapunk_vault::secret::{SecretString, TokenRecord};
use time::macros::datetime;

/// Marks the child run of [`without_any_address_the_missing_session_bus_is_named`].
const NO_BUS_CHILD: &str = "DATAPUNK_TEST_NO_BUS_CHILD";

fn token(access: &str) -> TokenRecord {
    TokenRecord {
        access_token: SecretString::new(access.to_owned()),
        refresh_token: Some(SecretString::new(format!("{access}-REFRESH"))),
        expires_at: datetime!(2031-02-03 04:05:06 UTC),
        scopes: vec!["calendar.readonly".to_owned()],
    }
}

fn key(integration: &str) -> DataKey {
    DataKey::generate(KeyPurpose::integration(integration)).expect("generate a data key")
}

fn access(record: &Option<TokenRecord>) -> Option<&str> {
    record.as_ref().map(|record| record.access_token.expose_secret())
}

fn item(integration: &str, kind: ItemKind) -> StoredItem {
    StoredItem { integration: integration.to_owned(), kind }
}

fn keyring(bus: &SessionBus) -> Vault {
    let options = SecretServiceOptions { bus_address: Some(bus.address().to_owned()) };
    Vault::secret_service(options).with_timeout(Duration::from_secs(10))
}

/// What `secret-tool search --all application datapunk` prints, run as the account on `bus`.
fn secret_tool_search(bus: &SessionBus) -> String {
    let output = bus
        .command("secret-tool")
        .args(["search", "--all", "application", "datapunk"])
        .output()
        .expect("run secret-tool");
    // secret-tool exits 1 when nothing matches.
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Stores, reads, replaces and deletes one integration's items through `vault`, checking the
/// rules every backend shares.
async fn round_trip(vault: &Vault, integration: &str) {
    assert!(vault.token(integration).await.expect("look up").is_none());
    assert!(vault.data_key(integration).await.expect("look up").is_none());

    vault.put_token(integration, &token("first-ACCESS")).await.expect("store a token");
    vault.put_token(integration, &token("second-ACCESS")).await.expect("replace the token");
    let stored = vault.token(integration).await.expect("read the token");
    assert_eq!(access(&stored), Some("second-ACCESS"));
    let stored = stored.expect("a token is stored");
    let refresh = stored.refresh_token.as_ref().map(SecretString::expose_secret);
    assert_eq!(refresh, Some("second-ACCESS-REFRESH"));
    assert_eq!(stored.expires_at, datetime!(2031-02-03 04:05:06 UTC));

    let first = key(integration);
    vault.put_data_key(&first).await.expect("store a data key");
    let refused = vault.put_data_key(&key(integration)).await.expect_err("a second key");
    assert!(matches!(refused, Error::KeyExists { .. }), "{refused}");
    let stored = vault.data_key(integration).await.expect("read the key").expect("stored");
    assert_eq!(stored.expose_secret(), first.expose_secret(), "the first key was kept");
    assert_eq!(stored.purpose(), &KeyPurpose::integration(integration));

    let listed = vault.list().await.expect("list");
    assert!(listed.contains(&item(integration, ItemKind::Token)), "{listed:?}");
    assert!(listed.contains(&item(integration, ItemKind::DataKey)), "{listed:?}");

    assert!(vault.delete_token(integration).await.expect("delete the token"));
    assert!(!vault.delete_token(integration).await.expect("delete again"));
    assert!(vault.delete_data_key(integration).await.expect("delete the key"));
    assert!(vault.token(integration).await.expect("look up").is_none());
    assert!(vault.data_key(integration).await.expect("look up").is_none());
    let listed = vault.list().await.expect("list");
    assert!(!listed.iter().any(|item| item.integration == integration), "{listed:?}");
}

#[tokio::test]
async fn the_keyring_stores_replaces_and_deletes_items_that_secret_tool_sees() {
    let bus = session_bus();
    let vault = keyring(bus);
    assert_eq!(vault.state().await, VaultState::Ready);

    round_trip(&vault, "keyring-trip").await;

    // The same again, stopping half way to look at the items from outside.
    vault.put_token("keyring-seen", &token("seen-ACCESS")).await.expect("store a token");
    vault.put_data_key(&key("keyring-seen")).await.expect("store a key");
    let found = secret_tool_search(bus);
    for line in [
        "label = Datapunk: keyring-seen token",
        "label = Datapunk: keyring-seen data key",
        "attribute.kind = token",
        "attribute.kind = data-key",
        "attribute.integration = keyring-seen",
        "attribute.application = datapunk",
    ] {
        assert!(found.contains(line), "{line:?} missing from:\n{found}");
    }
    assert_eq!(found.matches("attribute.integration = keyring-seen").count(), 2, "{found}");

    vault.delete_token("keyring-seen").await.expect("delete the token");
    vault.delete_data_key("keyring-seen").await.expect("delete the key");
    let found = secret_tool_search(bus);
    assert!(!found.contains("keyring-seen"), "left after deletion:\n{found}");
}

#[tokio::test]
async fn a_locked_keyring_answers_locked_at_once_and_the_same_vault_works_after_unlocking() {
    let bus = SessionBus::start();
    let vault = keyring(&bus);
    vault.put_token("locked", &token("locked-ACCESS")).await.expect("store a token");
    vault.put_data_key(&key("locked")).await.expect("store a key");

    bus.lock_collection();

    let started = Instant::now();
    assert_eq!(vault.state().await, VaultState::Locked);
    let results = [
        vault.token("locked").await.map(|_| ()),
        vault.data_key("locked").await.map(|_| ()),
        vault.put_token("locked", &token("new-ACCESS")).await,
        vault.delete_token("locked").await.map(|_| ()),
    ];
    for result in results {
        let err = result.expect_err("the keyring is locked");
        assert!(matches!(err, Error::Locked { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(!format!("{err} {err:?}").contains("ACCESS"), "{err:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let listed = vault.list().await.expect("attributes stay readable while locked");
    assert!(listed.contains(&item("locked", ItemKind::Token)), "{listed:?}");

    // Unlocking replaces the keyring daemon; the vault notices and opens a new session.
    bus.unlock();

    assert_eq!(vault.state().await, VaultState::Ready);
    assert_eq!(access(&vault.token("locked").await.expect("read")), Some("locked-ACCESS"));
    vault.put_token("locked", &token("after-ACCESS")).await.expect("store after unlocking");
    assert_eq!(access(&vault.token("locked").await.expect("read")), Some("after-ACCESS"));
}

#[tokio::test]
async fn a_keyring_that_never_answers_times_out_instead_of_hanging() {
    let bus = SessionBus::start();
    let vault = keyring(&bus).with_timeout(Duration::from_secs(2));
    vault.put_token("stuck", &token("stuck-ACCESS")).await.expect("store a token");
    let keyring_pid = secrets_owner_pid(&bus);

    // A stopped daemon is what a prompt nobody answers looks like from the client.
    signal(keyring_pid, rustix::process::Signal::STOP);
    let started = Instant::now();
    let result = vault.token("stuck").await;
    let state = vault.state().await;
    signal(keyring_pid, rustix::process::Signal::CONT);

    let err = result.expect_err("the keyring is stopped");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(matches!(state, VaultState::Unavailable { .. }), "{state:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert_eq!(access(&vault.token("stuck").await.expect("read")), Some("stuck-ACCESS"));
}

#[tokio::test]
async fn a_bus_address_that_leads_nowhere_is_unavailable_naming_the_session_bus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("unix:path={}", dir.path().join("bus").display());
    let vault = Vault::secret_service(SecretServiceOptions { bus_address: Some(address.clone()) });

    let err = vault.token("google").await.expect_err("no bus there");
    let state = vault.state().await;

    let Error::Unavailable { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("session bus") && reason.contains(&address), "{reason}");
    assert!(err.is_retryable());
    let VaultState::Unavailable { reason } = state else { panic!("{state:?}") };
    assert!(reason.contains("session bus"), "{reason}");
}

#[test]
fn without_any_address_the_missing_session_bus_is_named() {
    // Run the test below in a child with an empty environment: no DBUS_SESSION_BUS_ADDRESS,
    // no XDG_RUNTIME_DIR. Setting variables in this process would race with other tests.
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "no_bus_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(NO_BUS_CHILD, "1")
        .output()
        .expect("run the test binary");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[tokio::test]
#[ignore = "run by without_any_address_the_missing_session_bus_is_named in an empty environment"]
async fn no_bus_child() {
    assert_eq!(std::env::var(NO_BUS_CHILD).as_deref(), Ok("1"), "run only as a child");
    let vault = Vault::secret_service(SecretServiceOptions::default());

    let err = vault.put_token("google", &token("nowhere-ACCESS")).await.expect_err("no bus");

    let Error::Unavailable { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("no D-Bus session bus"), "{reason}");
    assert!(reason.contains("DBUS_SESSION_BUS_ADDRESS"), "{reason}");
    assert!(!format!("{err:?}").contains("ACCESS"));
}

/// A password store with its own GnuPG home and an unprotected key, in a temporary
/// directory, and a `pass` wrapper that records every argument list it is given.
struct PassFixture {
    dir: tempfile::TempDir,
}

impl PassFixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("dpk-pass-").tempdir_in("/tmp").expect("dir");
        let fixture = Self { dir };
        for sub in ["gnupg", "store", "bin"] {
            fs::create_dir(fixture.path(sub)).expect("create a directory");
            fs::set_permissions(fixture.path(sub), fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }

        fixture.gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Datapunk Test <test@datapunk.invalid>",
            "default",
            "default",
            "never",
        ]);
        let keys = fixture.gpg(&["--list-keys", "--with-colons"]);
        let fingerprint = keys
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|field| !field.is_empty()))
            .expect("the new key's fingerprint")
            .to_owned();
        fixture.run(Command::new("pass").args(["init", &fingerprint]));

        let real = String::from_utf8(
            Command::new("sh").args(["-c", "command -v pass"]).output().expect("sh").stdout,
        )
        .expect("UTF-8 path");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            fixture.path("argv.log").display(),
            real.trim()
        );
        fs::write(fixture.path("bin/pass"), script).expect("write the wrapper");
        fs::set_permissions(fixture.path("bin/pass"), fs::Permissions::from_mode(0o700))
            .expect("chmod the wrapper");
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn options(&self, program: &Path) -> PassOptions {
        PassOptions {
            program: program.to_owned(),
            store_dir: Some(self.path("store")),
            gnupg_home: Some(self.path("gnupg")),
        }
    }

    fn gpg(&self, args: &[&str]) -> String {
        self.run(Command::new("gpg").args(args))
    }

    fn run(&self, command: &mut Command) -> String {
        let output = command
            .env("GNUPGHOME", self.path("gnupg"))
            .env("PASSWORD_STORE_DIR", self.path("store"))
            .output()
            .expect("run a command");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PassFixture {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.path("gnupg"))
            .status();
    }
}

#[tokio::test]
async fn pass_keeps_items_in_the_password_store_and_never_puts_a_secret_on_argv() {
    let fixture = PassFixture::new();
    let vault = Vault::pass(fixture.options(&fixture.path("bin/pass")));
    assert_eq!(vault.state().await, VaultState::Ready);

    round_trip(&vault, "google").await;
    vault.put_token("spotify", &token("kept-ACCESS")).await.expect("store a token");
    let key = key("spotify");
    vault.put_data_key(&key).await.expect("store a key");

    // The entries are where `pass` users expect them, encrypted.
    let token_file = fixture.path("store/datapunk/spotify/token.gpg");
    let sealed = fs::read(&token_file).expect("the token's entry exists");
    assert!(fixture.path("store/datapunk/spotify/data-key.gpg").is_file());
    let hex = key.export_passphrase();
    for secret in ["kept-ACCESS".as_bytes(), hex.expose_secret().as_bytes()] {
        assert!(!sealed.windows(secret.len()).any(|w| w == secret), "plaintext in the entry");
    }

    let argv = fs::read_to_string(fixture.path("argv.log")).expect("the wrapper ran");
    assert!(argv.contains("insert --multiline --force datapunk/spotify/token"), "{argv}");
    assert!(argv.contains("show datapunk/google/data-key"), "{argv}");
    assert!(argv.contains("rm --force datapunk/google/token"), "{argv}");
    // `state()` runs `pass version`; everything else names one entry and nothing more.
    for line in argv.lines().filter(|line| *line != "version") {
        let words: Vec<&str> = line.split(' ').collect();
        let name = words.last().copied().unwrap_or_default();
        assert!(name.starts_with("datapunk/"), "unexpected argv: {line}");
        assert!(!line.contains("ACCESS") && !line.contains(hex.expose_secret()), "{line}");
        assert!(words.len() <= 4, "unexpected argv: {line}");
    }
}

#[tokio::test]
async fn pass_without_an_initialised_store_or_program_is_unavailable_and_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PassOptions { store_dir: Some(dir.path().to_owned()), ..PassOptions::default() };
    let missing = PassOptions { program: dir.path().join("no-pass"), ..options.clone() };
    fs::write(dir.path().join(".gpg-id"), "test@datapunk.invalid\n").expect("write .gpg-id");
    let uninitialised = PassOptions { store_dir: Some(dir.path().join("empty")), ..options };

    let not_init = Vault::pass(uninitialised).put_token("google", &token("x-ACCESS")).await;
    let no_program = Vault::pass(missing).put_token("google", &token("x-ACCESS")).await;

    let err = not_init.expect_err("no store");
    assert!(matches!(&err, Error::Unavailable { reason, .. } if reason.contains("pass init")));
    let err = no_program.expect_err("no program");
    assert!(matches!(&err, Error::Unavailable { reason, .. } if reason.contains("not found")));
}

#[tokio::test]
async fn a_pass_that_hangs_is_stopped_with_everything_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join(".gpg-id"), "test@datapunk.invalid\n").expect("write .gpg-id");
    let pids = dir.path().join("pids");
    let script = format!(
        "#!/bin/sh\necho $$ >> '{0}'\nsleep 60 &\necho $! >> '{0}'\nwait\n",
        pids.display()
    );
    let program = dir.path().join("pass");
    fs::write(&program, script).expect("write the script");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o700)).expect("chmod");
    let options = PassOptions { program, store_dir: Some(dir.path().to_owned()), gnupg_home: None };
    let vault = Vault::pass(options).with_timeout(Duration::from_secs(1));

    let started = Instant::now();
    let err = vault.put_token("google", &token("hung-ACCESS")).await.expect_err("it hangs");

    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let pids = fs::read_to_string(&pids).expect("the script ran");
    for pid in pids.split_whitespace() {
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !is_running(pid)
        });
        assert!(gone, "process {pid} outlived the timeout");
    }
}

/// A database initialised by `datapunk db init`'s code, and the app role's pool on it.
async fn table_database() -> (String, Store) {
    let cluster = cluster();
    let db = cluster.unique_db_name("vault_table");
    datapunk_store::admin::init(&cluster.conninfo("postgres", "postgres"), &db)
        .await
        .expect("initialise the database");
    let store = Store::connect(&ConnectOptions::new(cluster.conninfo("datapunk_app", &db)))
        .await
        .expect("connect as the app role");
    (db, store)
}

/// A credentials directory holding a new random master key.
fn new_credentials() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = DataKey::generate(KeyPurpose::SecretStoreMaster).expect("a master key");
    let path = dir.path().join(MasterKeySource::CREDENTIAL);
    fs::write(&path, format!("{}\n", master.export_passphrase().expose_secret()))
        .expect("write the master key");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
    dir
}

#[tokio::test]
async fn the_encrypted_table_round_trips_under_a_master_key_from_a_credentials_directory() {
    let (db, store) = table_database().await;
    let credentials = new_credentials();
    let source = MasterKeySource::CredentialsDirectory(credentials.path().to_owned());
    let vault = Vault::encrypted_table(store.clone(), &source).expect("open the vault");
    assert_eq!(vault.state().await, VaultState::Ready);

    round_trip(&vault, "google").await;
    vault.put_token("spotify", &token("sealed-ACCESS")).await.expect("store a token");
    let key = key("spotify");
    vault.put_data_key(&key).await.expect("store a key");

    // PostgreSQL holds only ciphertext.
    let admin = cluster().admin_client(&db).await;
    let hex = key.export_passphrase();
    for row in admin.query("SELECT sealed FROM datapunk.vault_records", &[]).await.expect("rows") {
        let sealed: &[u8] = row.get(0);
        for secret in ["sealed-ACCESS".as_bytes(), hex.expose_secret().as_bytes()] {
            assert!(!sealed.windows(secret.len()).any(|w| w == secret), "plaintext in a row");
        }
    }

    // Another master key opens nothing, and says so without a panic or a secret.
    let other = new_credentials();
    let wrong = MasterKeySource::CredentialsDirectory(other.path().to_owned());
    let wrong = Vault::encrypted_table(store.clone(), &wrong).expect("open with another key");
    let err = wrong.token("spotify").await.expect_err("the wrong master key");
    assert!(matches!(err, Error::Undecryptable { .. }), "{err:?}");
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(!format!("{err} {err:?}").contains("ACCESS"), "{err:?}");
    let VaultState::Unavailable { reason } = wrong.state().await else { panic!("not ready") };
    assert!(reason.contains("master key"), "{reason}");

    // A record moved to another integration's row is refused.
    admin
        .batch_execute(
            "UPDATE datapunk.vault_records SET integration = 'moved' \
             WHERE kind = 'token' AND integration = 'spotify'",
        )
        .await
        .expect("move a row");
    let err = vault.token("moved").await.expect_err("a moved record");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn the_reader_and_backup_roles_cannot_read_the_vault_table() {
    let (db, _store) = table_database().await;

    for role in ["datapunk_reader", "datapunk_backup"] {
        let (client, connection) =
            tokio_postgres::connect(&cluster().conninfo(role, &db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|err| panic!("{role} logs in: {err}"));
        tokio::spawn(connection);

        let err = client
            .query("SELECT * FROM datapunk.vault_records", &[])
            .await
            .expect_err("the vault table is off limits");
        let message = err.as_db_error().map(|db| db.message().to_owned()).unwrap_or_default();
        assert!(message.contains("permission denied"), "{role}: {err}");
    }
}

#[tokio::test]
async fn the_encrypted_table_without_a_master_key_refuses_to_open_naming_the_file() {
    let (_db, store) = table_database().await;
    let empty = tempfile::tempdir().expect("tempdir");
    let source = MasterKeySource::CredentialsDirectory(empty.path().to_owned());

    let err = Vault::encrypted_table(store, &source).expect_err("no master key");

    assert!(matches!(&err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("datapunk-master-key"), "{err}");
}

/// The process id of the keyring daemon on `bus`.
fn secrets_owner_pid(bus: &SessionBus) -> u32 {
    let output = bus
        .command("dbus-send")
        .arg(format!("--bus={}", bus.address()))
        .args([
            "--dest=org.freedesktop.DBus",
            "--print-reply=literal",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            "string:org.freedesktop.secrets",
        ])
        .output()
        .expect("run dbus-send");
    let reply = String::from_utf8_lossy(&output.stdout);
    reply.split_whitespace().last().and_then(|pid| pid.parse().ok()).expect("a process id")
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signal the keyring daemon");
}

/// Whether `pid` names a process that has not exited (zombies count as exited).
fn is_running(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'),
        Err(_) => false,
    }
}
