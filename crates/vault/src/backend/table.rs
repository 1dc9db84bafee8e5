//! The `encrypted-table` backend: records in PostgreSQL, sealed under a master key.
//!
//! For headless servers and containers, where no keyring runs and no one types a passphrase,
//! the records live in `datapunk.vault_records` (migration 0003), one row per kind and
//! integration. Each row's `sealed` column is an OpenPGP message in the format of
//! [`crate::field`], encrypted in this process under the master key, so PostgreSQL never sees
//! a token, a data key or the master key. Only `datapunk_app` may touch the table: the reader
//! and backup roles get nothing, so a dump never carries key material and deleting a data key
//! here also shreds what older backups hold of the data it encrypted.
//!
//! The master key is 32 bytes read from a file when the vault is opened: the file named in the
//! configuration, or the systemd credential `datapunk-master-key`
//! (`$CREDENTIALS_DIRECTORY/datapunk-master-key`, as `LoadCredential=` or
//! `LoadCredentialEncrypted=` provide, or a Docker secret mounted there). The file holds the
//! 64 hexadecimal digits that `openssl rand -hex 32` prints, or the 32 raw bytes.
//!
//! A sealed record starts with a header naming its kind and integration, checked on reading,
//! so that someone who can write the table cannot move one integration's token to another's
//! row unnoticed.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use datapunk_store::Store;
use zeroize::Zeroizing;

use super::{BackendKind, Error, ItemId, ItemKind, StoredItem, VaultState, Write};
use crate::field::{self, FieldError};
use crate::key::{DataKey, KEY_LEN, KeyPurpose};
use crate::secret::SecretBytes;

const BACKEND: BackendKind = BackendKind::EncryptedTable;

/// The version line that starts every sealed record.
const HEADER: &str = "datapunk-vault-record 1";

/// A master key file larger than this is not a key file.
const MAX_KEY_FILE: u64 = 4096;

/// Where the master key of the `encrypted-table` backend is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file readable only by Datapunk's user.
    File(PathBuf),
    /// A credentials directory holding the file [`MasterKeySource::CREDENTIAL`], such as
    /// systemd's `$CREDENTIALS_DIRECTORY`.
    CredentialsDirectory(PathBuf),
}

impl MasterKeySource {
    /// The credential's name in a credentials directory.
    pub const CREDENTIAL: &str = "datapunk-master-key";

    /// The systemd credential, when the process runs with `$CREDENTIALS_DIRECTORY` set.
    pub fn from_environment() -> Option<Self> {
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|dir| !dir.is_empty())
            .map(|dir| Self::CredentialsDirectory(PathBuf::from(dir)))
    }

    /// The file the key is read from.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::File(path) => path.clone(),
            Self::CredentialsDirectory(dir) => dir.join(Self::CREDENTIAL),
        }
    }
}

/// The backend; see the [module documentation](self).
#[derive(Debug)]
pub(super) struct TableStore {
    store: Store,
    master: DataKey,
}

impl TableStore {
    pub(super) fn open(store: Store, source: &MasterKeySource) -> Result<Self, Error> {
        let master = read_master_key(&source.path())?;
        Ok(Self { store, master })
    }

    pub(super) async fn put(
        &self,
        item: ItemId<'_>,
        secret: &[u8],
        write: Write,
    ) -> Result<(), Error> {
        let sealed = self.seal(item, secret)?;
        let sql = match write {
            Write::Replace => {
                "INSERT INTO datapunk.vault_records (kind, integration, sealed) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, integration) \
                 DO UPDATE SET sealed = excluded.sealed, updated_at = now()"
            }
            Write::CreateOnly => {
                "INSERT INTO datapunk.vault_records (kind, integration, sealed) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, integration) DO NOTHING"
            }
        };

        let operation = format!("store the {item}");
        let client = self.store.client().await.map_err(|err| db_error(err, &operation))?;
        let written = client
            .execute(sql, &[&item.kind.as_str(), &item.integration, &sealed])
            .await
            .map_err(|err| db_error(err.into(), &operation))?;

        if written == 0 {
            return Err(Error::KeyExists {
                backend: BACKEND,
                integration: item.integration.into(),
            });
        }
        Ok(())
    }

    pub(super) async fn get(&self, item: ItemId<'_>) -> Result<Option<SecretBytes>, Error> {
        let sql = "SELECT sealed FROM datapunk.vault_records WHERE kind = $1 AND integration = $2";

        let operation = format!("read the {item}");
        let client = self.store.client().await.map_err(|err| db_error(err, &operation))?;
        let row = client
            .query_opt(sql, &[&item.kind.as_str(), &item.integration])
            .await
            .map_err(|err| db_error(err.into(), &operation))?;

        let Some(row) = row else { return Ok(None) };
        let sealed: &[u8] = row.get(0);
        self.unseal(item, sealed).map(Some)
    }

    pub(super) async fn delete(&self, item: ItemId<'_>) -> Result<bool, Error> {
        let sql = "DELETE FROM datapunk.vault_records WHERE kind = $1 AND integration = $2";

        let operation = format!("delete the {item}");
        let client = self.store.client().await.map_err(|err| db_error(err, &operation))?;
        let deleted = client
            .execute(sql, &[&item.kind.as_str(), &item.integration])
            .await
            .map_err(|err| db_error(err.into(), &operation))?;
        Ok(deleted > 0)
    }

    pub(super) async fn list(&self) -> Result<Vec<StoredItem>, Error> {
        let operation = "list the stored items";
        let client = self.store.client().await.map_err(|err| db_error(err, operation))?;
        let rows = client
            .query("SELECT kind, integration FROM datapunk.vault_records", &[])
            .await
            .map_err(|err| db_error(err.into(), operation))?;

        let items = rows.iter().filter_map(|row| {
            let kind = ItemKind::from_stored(row.get(0))?;
            Some(StoredItem { integration: row.get(1), kind })
        });
        Ok(items.collect())
    }

    /// `Ready` when the table can be read and the master key opens its oldest record.
    pub(super) async fn state(&self) -> VaultState {
        let sql = "SELECT kind, integration, sealed FROM datapunk.vault_records \
                   ORDER BY updated_at LIMIT 1";
        let operation = "read the stored items";

        let row = match self.store.client().await {
            Ok(client) => client.query_opt(sql, &[]).await.map_err(|err| err.into()),
            Err(err) => Err(err),
        };
        let row = match row {
            Ok(row) => row,
            Err(err) => return unavailable(db_error(err, operation)),
        };

        let Some(row) = row else { return VaultState::Ready };
        let Some(kind) = ItemKind::from_stored(row.get(0)) else { return VaultState::Ready };
        let item = ItemId { kind, integration: row.get(1) };
        match self.unseal(item, row.get(2)) {
            Ok(_) => VaultState::Ready,
            Err(err) => unavailable(err),
        }
    }

    /// The OpenPGP message of a record: the header, then the secret.
    fn seal(&self, item: ItemId<'_>, secret: &[u8]) -> Result<Vec<u8>, Error> {
        let header = header(item);
        let mut plaintext = Zeroizing::new(Vec::with_capacity(header.len() + secret.len()));
        plaintext.extend_from_slice(header.as_bytes());
        plaintext.extend_from_slice(secret);

        field::encrypt(&self.master, &plaintext)
            .map_err(|err| Error::backend(BACKEND, format!("seal the {item}"), err))
    }

    /// The secret of a record, after checking that it was sealed for this kind and integration.
    fn unseal(&self, item: ItemId<'_>, sealed: &[u8]) -> Result<SecretBytes, Error> {
        let plaintext = match field::decrypt(&self.master, sealed) {
            Ok(plaintext) => plaintext,
            Err(FieldError::Undecryptable) => {
                return Err(Error::Undecryptable {
                    kind: item.kind,
                    integration: item.integration.to_owned(),
                });
            }
            Err(err) => return Err(corrupt(item, &err.to_string())),
        };

        match plaintext.strip_prefix(header(item).as_bytes()) {
            Some(secret) => Ok(SecretBytes::new(secret.to_vec())),
            None => Err(corrupt(item, "it was sealed for another item or by another version")),
        }
    }
}

/// `datapunk-vault-record 1`, the kind and the integration, one per line.
fn header(item: ItemId<'_>) -> String {
    format!("{HEADER}\n{}\n{}\n", item.kind.as_str(), item.integration)
}

fn corrupt(item: ItemId<'_>, reason: &str) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        kind: item.kind,
        integration: item.integration.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Reads the master key: 32 raw bytes, or 64 hexadecimal digits with optional whitespace
/// around them. Errors name the file, never what it holds.
fn read_master_key(path: &Path) -> Result<DataKey, Error> {
    let problem = |what: String| Error::unavailable(BACKEND, what);
    let mut file = std::fs::File::open(path).map_err(|err| {
        problem(format!(
            "cannot open the master key file {}: {err}; create it with \
             `openssl rand -hex 32 > FILE` (mode 0600) or load it as the systemd credential \
             `{}`",
            path.display(),
            MasterKeySource::CREDENTIAL
        ))
    })?;
    let metadata = file.metadata().map_err(|err| {
        problem(format!("cannot read the master key file {}: {err}", path.display()))
    })?;
    if metadata.len() > MAX_KEY_FILE {
        return Err(problem(format!("{} is too large to be a master key file", path.display())));
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the master key file can be read by other users"
        );
    }

    let mut content = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
    file.read_to_end(&mut content).map_err(|err| {
        problem(format!("cannot read the master key file {}: {err}", path.display()))
    })?;
    parse_master_key(&content).ok_or_else(|| {
        problem(format!(
            "the master key file {} holds no key: expected 64 hexadecimal digits (as \
             `openssl rand -hex 32` prints them) or 32 raw bytes",
            path.display()
        ))
    })
}

fn parse_master_key(content: &[u8]) -> Option<DataKey> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    if content.len() == KEY_LEN {
        bytes.copy_from_slice(content);
    } else {
        hex::decode_to_slice(content.trim_ascii(), &mut bytes[..]).ok()?;
    }
    DataKey::from_bytes(KeyPurpose::SecretStoreMaster, &bytes[..]).ok()
}

/// Classifies a database failure: a server that cannot be reached or a schema that is not
/// there yet makes the store unavailable; the rest is a failure of the store.
fn db_error(err: datapunk_store::Error, operation: &str) -> Error {
    if err.is_retryable() || matches!(err, datapunk_store::Error::NotInitialized(_)) {
        return Error::unavailable(BACKEND, err.to_string());
    }
    Error::backend(BACKEND, operation, err)
}

fn unavailable(err: Error) -> VaultState {
    let reason = match err {
        Error::Unavailable { reason, .. } => reason,
        Error::Undecryptable { .. } => {
            "the master key does not open the stored records; it is not the key they were \
             sealed with"
                .to_owned()
        }
        other => {
            let mut reason = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(err) = cause {
                reason = format!("{reason}: {err}");
                cause = err.source();
            }
            reason
        }
    };
    VaultState::Unavailable { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_is_read_from_hex_digits_or_raw_bytes_and_nothing_else() {
        let hex_key = format!("{}\n", "0f".repeat(KEY_LEN));

        let from_hex = parse_master_key(hex_key.as_bytes()).expect("hex");
        let from_raw = parse_master_key(&[0x0f; KEY_LEN]).expect("raw");

        assert_eq!(from_hex.expose_secret(), &[0x0f; KEY_LEN]);
        assert_eq!(from_raw.expose_secret(), &[0x0f; KEY_LEN]);
        assert_eq!(from_hex.purpose(), &KeyPurpose::SecretStoreMaster);
        for bad in [&b""[..], b"0f0f", &[0u8; KEY_LEN + 1], "zz".repeat(KEY_LEN).as_bytes()] {
            assert!(parse_master_key(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_or_bad_master_key_file_is_named_and_its_content_is_not_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = MasterKeySource::CredentialsDirectory(dir.path().to_owned());

        let missing = read_master_key(&source.path()).expect_err("no file");
        std::fs::write(source.path(), "not-a-key-SECRET").expect("write");
        let bad = read_master_key(&source.path()).expect_err("not a key");

        for err in [missing, bad] {
            let text = err.to_string();
            assert!(matches!(err, Error::Unavailable { .. }), "{text}");
            assert!(text.contains("datapunk-master-key"), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn a_sealed_record_names_its_kind_and_integration_in_its_header() {
        let item = ItemId { kind: ItemKind::DataKey, integration: "google" };

        assert_eq!(header(item), "datapunk-vault-record 1\ndata-key\ngoogle\n");
    }
}
