//! The secret stores that keep each integration's OAuth token record and data key.
//!
//! A [`Vault`] is one of three backends, chosen by the configuration key `vault.backend`
//! ([`BackendKind`]):
//!
//! - `secret-service`, the default: the desktop's keyring (GNOME Keyring, KeePassXC) over the
//!   Secret Service D-Bus API, in the default collection, through a Diffie-Hellman encrypted
//!   session ([`SecretServiceOptions`]).
//! - `pass`: entries under `datapunk/` in the user's password store, through the `pass`
//!   program, with secrets only ever on its standard input and output ([`PassOptions`]).
//! - `encrypted-table`: OpenPGP messages in the PostgreSQL table `datapunk.vault_records`,
//!   sealed under a master key read from a file or a systemd credential, for headless servers
//!   and containers ([`MasterKeySource`]).
//!
//! Each integration has at most one item of each [`ItemKind`]: its token record (the JSON of
//! [`TokenRecord::to_json`]) and its data key (the 64 hexadecimal digits of
//! [`DataKey::export_passphrase`]). A token record is replaced in one write; a data key is never
//! replaced, since everything encrypted under the old one would become unreadable
//! ([`Error::KeyExists`]).
//!
//! Every operation has a time limit ([`Vault::with_timeout`]): a keyring may wait for a person
//! to answer a prompt, and Datapunk does not wait forever. [`Vault::state`] says whether the
//! store can be used right now ([`VaultState`]), so the daemon can report `keyring locked`
//! and carry on.
//!
//! No secret reaches an error, a log line or a `Debug` output: records travel in the wiping,
//! redacting types of [`crate::secret`], and errors name the backend, the kind of item and the
//! integration only.

mod error;
mod pass;
mod secret_service;
mod table;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use datapunk_store::Store;

pub use error::Error;
pub use pass::PassOptions;
pub use secret_service::SecretServiceOptions;
pub use table::MasterKeySource;

use crate::key::{DataKey, KEY_LEN, KeyPurpose};
use crate::secret::{SecretBytes, TokenRecord, TokenRecordError};

/// How long an operation may take by default: long enough for a person to answer a prompt
/// that some Secret Service providers show before giving out a secret, short enough that a
/// forgotten prompt does not hold a sync forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which secret store holds the tokens and data keys: the configuration key `vault.backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The desktop keyring over the Secret Service D-Bus API (`secret-service`).
    #[default]
    SecretService,
    /// The user's password store, through the `pass` program (`pass`).
    Pass,
    /// A PostgreSQL table sealed under a master key (`encrypted-table`).
    EncryptedTable,
}

impl BackendKind {
    /// Every backend, in the order the documentation lists them.
    pub const ALL: [BackendKind; 3] = [Self::SecretService, Self::Pass, Self::EncryptedTable];

    /// The name used in the configuration: `secret-service`, `pass` or `encrypted-table`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SecretService => "secret-service",
            Self::Pass => "pass",
            Self::EncryptedTable => "encrypted-table",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownBackend { name: name.to_owned() })
    }
}

/// A `vault.backend` value that names no backend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown vault backend {name:?}; use `secret-service`, `pass` or `encrypted-table`")]
pub struct UnknownBackend {
    /// The name given.
    pub name: String,
}

/// The two kinds of item a secret store keeps per integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    /// The OAuth token record.
    Token,
    /// The data key that encrypts the integration's personal fields.
    DataKey,
}

impl ItemKind {
    /// The stable name stored with the item: `token` or `data-key`. It is the `kind` attribute
    /// of a keyring item, the last part of a `pass` entry's name and the `kind` column of the
    /// encrypted table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::DataKey => "data-key",
        }
    }

    fn from_stored(name: &str) -> Option<Self> {
        [Self::Token, Self::DataKey].into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ItemKind {
    /// Words for messages and keyring labels: `token` or `data key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "token",
            Self::DataKey => "data key",
        })
    }
}

/// One item found by [`Vault::list`]; it names the item and holds nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoredItem {
    /// The integration it belongs to.
    pub integration: String,
    /// Token record or data key.
    pub kind: ItemKind,
}

/// Whether a secret store can be used right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultState {
    /// Items can be read and written.
    Ready,
    /// The store is there but locked: nothing can be read or written until the user unlocks
    /// it. Items can still be listed in a keyring, whose attributes are not secret.
    Locked,
    /// The store cannot be reached.
    Unavailable {
        /// What is missing and how to provide it.
        reason: String,
    },
}

impl VaultState {
    /// A stable one-word name: `ready`, `locked` or `unavailable`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Locked => "locked",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

impl fmt::Display for VaultState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The secret store of a Datapunk installation; see the [module documentation](self).
///
/// Cloning is not offered: one `Vault` serialises its own operations where a backend needs it
/// (one keyring connection, one check-then-write of a data key at a time), so share it behind
/// an `Arc`.
#[derive(Debug)]
pub struct Vault {
    backend: Backend,
    timeout: Duration,
}

#[derive(Debug)]
enum Backend {
    SecretService(secret_service::SecretServiceStore),
    Pass(pass::PassStore),
    EncryptedTable(table::TableStore),
}

/// Whether a write may replace an item that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Replace,
    CreateOnly,
}

/// The kind and integration that name one item.
#[derive(Clone, Copy, Debug)]
struct ItemId<'a> {
    kind: ItemKind,
    integration: &'a str,
}

impl fmt::Display for ItemId<'_> {
    /// `google token`, `google data key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.integration, self.kind)
    }
}

impl Vault {
    /// The desktop keyring over the Secret Service API. Nothing is connected yet: the first
    /// operation connects, and a later one reconnects by itself when the keyring daemon was
    /// replaced or the connection broke, so a vault made while the keyring is unavailable
    /// starts working once it is there.
    pub fn secret_service(options: SecretServiceOptions) -> Self {
        Self::with_backend(Backend::SecretService(secret_service::SecretServiceStore::new(options)))
    }

    /// The user's password store through the `pass` program. Nothing is run yet.
    pub fn pass(options: PassOptions) -> Self {
        Self::with_backend(Backend::Pass(pass::PassStore::new(options)))
    }

    /// The table `datapunk.vault_records` reached through `store` (as `datapunk_app`), sealed
    /// under the master key read now from `master_key`.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the master key file cannot be read or does not hold a key
    /// (32 bytes, or 64 hexadecimal digits), naming the file but never its content.
    pub fn encrypted_table(store: Store, master_key: &MasterKeySource) -> Result<Self, Error> {
        let table = table::TableStore::open(store, master_key)?;
        Ok(Self::with_backend(Backend::EncryptedTable(table)))
    }

    fn with_backend(backend: Backend) -> Self {
        Self { backend, timeout: DEFAULT_TIMEOUT }
    }

    /// The same vault with another time limit per operation (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match &self.backend {
            Backend::SecretService(_) => BackendKind::SecretService,
            Backend::Pass(_) => BackendKind::Pass,
            Backend::EncryptedTable(_) => BackendKind::EncryptedTable,
        }
    }

    /// Stores `token` as the token record of `integration`, replacing the one stored before.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIntegration`]; [`Error::Ambiguous`] when several records exist already
    /// (nothing is replaced then); otherwise as described on [`Error`].
    pub async fn put_token(&self, integration: &str, token: &TokenRecord) -> Result<(), Error> {
        let item = item(ItemKind::Token, integration)?;
        let json = token.to_json();

        let operation = format!("store the {item} record");
        self.run(&operation, self.put(item, json.expose_secret().as_bytes(), Write::Replace)).await
    }

    /// The token record of `integration`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the stored record is not a token record; otherwise as described
    /// on [`Error`].
    pub async fn token(&self, integration: &str) -> Result<Option<TokenRecord>, Error> {
        let item = item(ItemKind::Token, integration)?;

        let operation = format!("read the {item} record");
        let Some(json) = self.run(&operation, self.get(item)).await? else {
            return Ok(None);
        };
        TokenRecord::from_json(json.expose_secret())
            .map(Some)
            .map_err(|err| self.corrupt(item, token_problem(&err)))
    }

    /// Deletes the token record of `integration`; `false` when there was none.
    ///
    /// # Errors
    ///
    /// As described on [`Error`].
    pub async fn delete_token(&self, integration: &str) -> Result<bool, Error> {
        let item = item(ItemKind::Token, integration)?;

        let operation = format!("delete the {item} record");
        self.run(&operation, self.delete(item)).await
    }

    /// Stores `key` as the data key of the integration it was made for. A data key is never
    /// replaced: if one exists, nothing is written and [`Error::KeyExists`] says so.
    ///
    /// Two writers racing for the same integration cannot make one overwrite the other: the
    /// keyring then holds two items (reported as [`Error::Ambiguous`] on reading, with both
    /// keys kept), the table keeps the first, and `pass` is serialised within this process.
    ///
    /// # Errors
    ///
    /// [`Error::KeyExists`]; [`Error::InvalidIntegration`] when the key was not made for an
    /// integration (the encrypted-table master key is never stored in a secret store);
    /// otherwise as described on [`Error`].
    pub async fn put_data_key(&self, key: &DataKey) -> Result<(), Error> {
        let integration = match key.purpose() {
            KeyPurpose::Integration(name) => name.as_str(),
            other => return Err(Error::InvalidIntegration { name: other.to_string() }),
        };
        let item = item(ItemKind::DataKey, integration)?;
        let passphrase = key.export_passphrase();

        let operation = format!("store the {item}");
        let secret = passphrase.expose_secret().as_bytes();
        self.run(&operation, self.put(item, secret, Write::CreateOnly)).await
    }

    /// The data key of `integration`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the stored item is not 64 hexadecimal digits; otherwise as
    /// described on [`Error`].
    pub async fn data_key(&self, integration: &str) -> Result<Option<DataKey>, Error> {
        let item = item(ItemKind::DataKey, integration)?;

        let operation = format!("read the {item}");
        let Some(stored) = self.run(&operation, self.get(item)).await? else {
            return Ok(None);
        };
        decode_key(integration, stored.expose_secret()).map(Some).ok_or_else(|| {
            self.corrupt(item, "it is not a data key (64 hexadecimal digits)".to_owned())
        })
    }

    /// Deletes the data key of `integration`, which makes everything encrypted under it
    /// unreadable for good; `false` when there was none. The caller audits this.
    ///
    /// # Errors
    ///
    /// As described on [`Error`].
    pub async fn delete_data_key(&self, integration: &str) -> Result<bool, Error> {
        let item = item(ItemKind::DataKey, integration)?;

        let operation = format!("delete the {item}");
        self.run(&operation, self.delete(item)).await
    }

    /// Every item Datapunk keeps in this store, sorted by integration and kind. Nothing secret
    /// is read, so a locked keyring can still be listed.
    ///
    /// # Errors
    ///
    /// As described on [`Error`].
    pub async fn list(&self) -> Result<Vec<StoredItem>, Error> {
        let mut items = self
            .run("list the stored items", async {
                match &self.backend {
                    Backend::SecretService(store) => store.list().await,
                    Backend::Pass(store) => store.list().await,
                    Backend::EncryptedTable(store) => store.list().await,
                }
            })
            .await?;

        items.sort();
        items.dedup();
        Ok(items)
    }

    /// Whether the store can be used right now. Never fails: a failure to find out is itself
    /// [`VaultState::Unavailable`], with the reason.
    pub async fn state(&self) -> VaultState {
        let state = async {
            match &self.backend {
                Backend::SecretService(store) => store.state().await,
                Backend::Pass(store) => store.state().await,
                Backend::EncryptedTable(store) => store.state().await,
            }
        };

        match tokio::time::timeout(self.timeout, state).await {
            Ok(state) => state,
            Err(_) => VaultState::Unavailable {
                reason: format!("it did not answer within {} s", self.timeout.as_secs()),
            },
        }
    }

    /// Runs one operation under the time limit.
    async fn run<T>(
        &self,
        operation: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                backend: self.kind(),
                operation: operation.to_owned(),
                after: self.timeout,
            }),
        }
    }

    async fn put(&self, item: ItemId<'_>, secret: &[u8], write: Write) -> Result<(), Error> {
        match &self.backend {
            Backend::SecretService(store) => store.put(item, secret, write).await,
            Backend::Pass(store) => store.put(item, secret, write).await,
            Backend::EncryptedTable(store) => store.put(item, secret, write).await,
        }
    }

    async fn get(&self, item: ItemId<'_>) -> Result<Option<SecretBytes>, Error> {
        match &self.backend {
            Backend::SecretService(store) => store.get(item).await,
            Backend::Pass(store) => store.get(item).await,
            Backend::EncryptedTable(store) => store.get(item).await,
        }
    }

    async fn delete(&self, item: ItemId<'_>) -> Result<bool, Error> {
        match &self.backend {
            Backend::SecretService(store) => store.delete(item).await,
            Backend::Pass(store) => store.delete(item).await,
            Backend::EncryptedTable(store) => store.delete(item).await,
        }
    }

    fn corrupt(&self, item: ItemId<'_>, reason: String) -> Error {
        Error::Corrupt {
            backend: self.kind(),
            kind: item.kind,
            integration: item.integration.to_owned(),
            reason,
        }
    }
}

/// Names an item, checking the integration's name.
fn item(kind: ItemKind, integration: &str) -> Result<ItemId<'_>, Error> {
    if !is_integration_name(integration) {
        return Err(Error::InvalidIntegration { name: integration.to_owned() });
    }
    Ok(ItemId { kind, integration })
}

/// Whether `name` can name an integration: 1 to 64 lowercase ASCII letters, digits, `-` and
/// `_`, the rule of [`KeyPurpose::Integration`]. The name becomes part of a keyring attribute,
/// a path in the password store and a table key, so nothing else is let through: no `/`, no
/// `.`, no whitespace.
fn is_integration_name(name: &str) -> bool {
    let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_';
    (1..=64).contains(&name.len()) && name.bytes().all(allowed)
}

/// The reason for [`Error::Corrupt`] when a token record does not parse; the record's own
/// error never repeats its content.
fn token_problem(err: &TokenRecordError) -> String {
    match err {
        TokenRecordError::Malformed { line, column } => {
            format!(
                "it is not a token record (line {line}, column {column}); reconnect the integration"
            )
        }
        TokenRecordError::UnsupportedVersion(version) => {
            format!("it was written by a newer Datapunk (version {version}); upgrade Datapunk")
        }
    }
}

/// Reads a data key stored as 64 hexadecimal digits, ignoring surrounding whitespace.
fn decode_key(integration: &str, stored: &[u8]) -> Option<DataKey> {
    let digits = stored.trim_ascii();
    let mut bytes = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(digits, &mut bytes[..]).ok()?;
    DataKey::from_bytes(KeyPurpose::integration(integration), &bytes[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip_and_the_default_is_the_keyring() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(BackendKind::default(), BackendKind::SecretService);

        let err = "keyring".parse::<BackendKind>().expect_err("not a backend");
        assert!(err.to_string().contains("\"keyring\""), "{err}");
        assert!(err.to_string().contains("encrypted-table"), "{err}");
    }

    #[test]
    fn integration_names_outside_the_rule_are_refused_before_any_store_is_asked() {
        for name in ["", "Google", "a/b", "..", "a.b", "a b", "-\n", &"x".repeat(65), "é"] {
            let err = item(ItemKind::Token, name).expect_err(name);
            assert!(matches!(err, Error::InvalidIntegration { .. }), "{err}");
        }
        for name in ["google", "google-work_2", "0", &"x".repeat(64)] {
            item(ItemKind::DataKey, name).unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }

    #[test]
    fn item_kinds_have_stable_stored_names_and_readable_words() {
        assert_eq!(ItemKind::Token.as_str(), "token");
        assert_eq!(ItemKind::DataKey.as_str(), "data-key");
        assert_eq!(ItemKind::from_stored("data-key"), Some(ItemKind::DataKey));
        assert_eq!(ItemKind::from_stored("password"), None);
        let id = ItemId { kind: ItemKind::DataKey, integration: "google" };
        assert_eq!(id.to_string(), "google data key");
    }

    #[test]
    fn a_data_key_is_read_back_from_its_hex_form_and_anything_else_is_refused() {
        let key = DataKey::generate(KeyPurpose::integration("spotify")).expect("generate");
        let stored = format!("{}\n", key.export_passphrase().expose_secret());

        let back = decode_key("spotify", stored.as_bytes()).expect("decodes");

        assert_eq!(back.expose_secret(), key.expose_secret());
        assert_eq!(back.purpose(), &KeyPurpose::integration("spotify"));
        for bad in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
            assert!(decode_key("spotify", bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_broken_token_record_is_described_without_its_content() {
        let err = TokenRecord::from_json(br#"{"access_token": "SECRET-VALUE"#).expect_err("bad");

        let reason = token_problem(&err);

        assert!(reason.contains("not a token record"), "{reason}");
        assert!(!reason.contains("SECRET"), "{reason}");
    }

    #[test]
    fn a_vault_and_its_operations_can_move_between_threads() {
        fn shared<T: Send + Sync>(_: &T) {}
        fn sent<T: Send>(_: T) {}
        let token = TokenRecord::from_json(
            br#"{"version":1,"access_token":"a","refresh_token":null,
                 "expires_at":"2030-01-01T00:00:00Z","scopes":[]}"#,
        )
        .expect("a token record");
        let key = DataKey::generate(KeyPurpose::integration("google")).expect("generate");

        for vault in [
            Vault::secret_service(SecretServiceOptions::default()),
            Vault::pass(PassOptions::default()),
        ] {
            shared(&vault);
            sent(vault.put_token("google", &token));
            sent(vault.token("google"));
            sent(vault.delete_token("google"));
            sent(vault.put_data_key(&key));
            sent(vault.data_key("google"));
            sent(vault.delete_data_key("google"));
            sent(vault.list());
            sent(vault.state());
        }
    }

    #[test]
    fn states_have_stable_names_and_an_unavailable_state_says_why() {
        assert_eq!(VaultState::Ready.to_string(), "ready");
        assert_eq!(VaultState::Locked.to_string(), "locked");
        let state = VaultState::Unavailable { reason: "no session bus".to_owned() };
        assert_eq!(state.as_str(), "unavailable");
        assert_eq!(state.to_string(), "unavailable: no session bus");
    }
}
