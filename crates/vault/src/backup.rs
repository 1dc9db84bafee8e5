//! Disaster-recovery copies of the data keys: one file, encrypted with GnuPG to a person's key.
//!
//! The data keys live only in the secret store. Losing the store (a new laptop, a keyring
//! reset) would make every encrypted field unreadable, in the database and in its backups, so
//! [`write()`] puts all of them into one OpenPGP file that only the holder of the recipient's
//! secret key can open, and [`read()`] takes them back out.
//!
//! Inside the encryption the file holds JSON:
//!
//! ```json
//! {"format": "datapunk-key-backup", "version": 1, "created_at": "2026-12-03T10:00:00Z",
//!  "keys": [{"integration": "google", "key": "<64 hexadecimal digits>"}]}
//! ```
//!
//! gpg is run as `gpg --batch --encrypt --recipient FPR` (and `--decrypt` to read), with the
//! keys on its standard input and output only, never as an argument or in a temporary file,
//! and with a cleared environment holding what gpg and a pinentry need. The recipient must be
//! named by its full fingerprint: that is what says which key is meant, so gpg is told to trust
//! it (`--trust-model always`) instead of consulting the web of trust, which a short id or an
//! e-mail address could not make safe.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use zeroize::Zeroizing;

use crate::key::{DataKey, KeyPurpose};
use crate::secret::SecretString;

/// The `format` field of a backup.
const FORMAT: &str = "datapunk-key-backup";
/// The version this build writes and reads.
const VERSION: u32 = 1;

/// The environment variables gpg inherits, when set: its home, the locale, and what a pinentry
/// needs to ask for a passphrase.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "GPG_TTY",
    "GNUPGHOME",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
];

/// How many bytes of gpg's standard error go into an error.
const STDERR_TAIL: usize = 400;

/// How to run gpg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpgOptions {
    /// The program; default `gpg`, found on `PATH`.
    pub program: PathBuf,
    /// GnuPG's home directory; default `$GNUPGHOME`, else gpg's own default.
    pub gnupg_home: Option<PathBuf>,
}

impl Default for GpgOptions {
    fn default() -> Self {
        Self { program: PathBuf::from("gpg"), gnupg_home: None }
    }
}

/// The full fingerprint of an OpenPGP key: 40 hexadecimal digits (v4) or 64 (v6), spaces
/// allowed, kept in upper case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(String);

impl FromStr for Fingerprint {
    type Err = BackupError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        let digits = digits.strip_prefix("0x").unwrap_or(&digits).to_ascii_uppercase();
        if matches!(digits.len(), 40 | 64) && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(digits))
        } else {
            Err(BackupError::Recipient)
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backup as written, borrowing the keys' passphrases.
#[derive(Serialize)]
struct BundleOut<'a> {
    format: &'static str,
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    keys: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    integration: &'a str,
    key: &'a str,
}

/// A backup as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleIn {
    format: String,
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[allow(dead_code, reason = "read to check the format; restoring does not need it")]
    created_at: OffsetDateTime,
    keys: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    integration: String,
    key: String,
}

/// Encrypts `keys` to `recipient` and writes the OpenPGP message to `output`, a file the
/// caller created for it (empty, mode 0600). Only integrations' keys belong in a backup.
///
/// # Errors
///
/// [`BackupError::NotAnIntegrationKey`]; [`BackupError::Gpg`] when gpg cannot be run, does not
/// know the recipient or fails; [`BackupError::Io`] when the file cannot be written.
pub async fn write(
    gpg: &GpgOptions,
    recipient: &Fingerprint,
    keys: &[DataKey],
    output: std::fs::File,
) -> Result<(), BackupError> {
    let mut names = Vec::with_capacity(keys.len());
    for key in keys {
        let KeyPurpose::Integration(name) = key.purpose() else {
            return Err(BackupError::NotAnIntegrationKey);
        };
        names.push(name.as_str());
    }
    let passphrases: Vec<SecretString> = keys.iter().map(DataKey::export_passphrase).collect();
    let bundle = BundleOut {
        format: FORMAT,
        version: VERSION,
        created_at: OffsetDateTime::now_utc(),
        keys: names
            .iter()
            .zip(&passphrases)
            .map(|(integration, key)| EntryOut { integration, key: key.expose_secret() })
            .collect(),
    };
    // Reserved up front so that the buffer holding the keys is never reallocated, which would
    // leave an unwiped copy behind: per key its name, its 64 digits and the JSON around them.
    let size: usize = names.iter().map(|name| name.len() + 128).sum();
    let mut plaintext = Zeroizing::new(Vec::with_capacity(256 + size));
    serde_json::to_writer(&mut *plaintext, &bundle).map_err(|_| BackupError::Malformed)?;
    plaintext.push(b'\n');

    let args = [
        "--batch",
        "--no-tty",
        "--quiet",
        "--trust-model",
        "always",
        "--encrypt",
        "--recipient",
        &recipient.0,
        "--output",
        "-",
    ];
    let ciphertext = run(gpg, &args, Some(&plaintext), "encrypt the key backup").await?;
    let mut output = output;
    output.write_all(&ciphertext).map_err(BackupError::Io)?;
    output.sync_all().map_err(BackupError::Io)
}

/// Decrypts the backup at `path` with gpg (which may ask for the secret key's passphrase) and
/// returns the keys it holds.
///
/// # Errors
///
/// [`BackupError::Gpg`] when gpg cannot decrypt it (no secret key, wrong passphrase, not an
/// OpenPGP file); [`BackupError::Malformed`] when what it decrypts to is not a key backup.
pub async fn read(gpg: &GpgOptions, path: &Path) -> Result<Vec<DataKey>, BackupError> {
    // After `--`, a file name starting with `-` is not taken for an option.
    let args: [&std::ffi::OsStr; 6] = [
        "--batch".as_ref(),
        "--no-tty".as_ref(),
        "--quiet".as_ref(),
        "--decrypt".as_ref(),
        "--".as_ref(),
        path.as_os_str(),
    ];
    let plaintext = run(gpg, &args, None, "decrypt the key backup").await?;
    let bundle: BundleIn =
        serde_json::from_slice(&plaintext).map_err(|_| BackupError::Malformed)?;
    if bundle.format != FORMAT {
        return Err(BackupError::Malformed);
    }
    if bundle.version != VERSION {
        return Err(BackupError::UnsupportedVersion(bundle.version));
    }
    bundle
        .keys
        .into_iter()
        .map(|entry| {
            let purpose = KeyPurpose::integration(entry.integration);
            let key = SecretString::new(entry.key);
            DataKey::from_export_passphrase(purpose, &key).map_err(|_| BackupError::Malformed)
        })
        .collect()
}

/// Runs gpg with `args`, `stdin` as its standard input, and returns its standard output.
async fn run<S: AsRef<std::ffi::OsStr>>(
    gpg: &GpgOptions,
    args: &[S],
    stdin: Option<&[u8]>,
    operation: &'static str,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let mut command = Command::new(&gpg.program);
    command.env_clear();
    for name in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env("LC_MESSAGES", "C");
    if let Some(home) = &gpg.gnupg_home {
        command.env("GNUPGHOME", home);
    }
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let mut child = command.spawn().map_err(|err| BackupError::Gpg {
        operation,
        reason: format!("cannot run {}: {err}", gpg.program.display()),
    })?;
    let input = child.stdin.take();
    let feed = async {
        if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
            // A gpg that exits early closes the pipe; its status then tells why.
            let _ = pipe.write_all(bytes).await;
            let _ = pipe.shutdown().await;
        }
    };
    let (output, ()) = tokio::join!(child.wait_with_output(), feed);
    let output = output.map_err(BackupError::Io)?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let start = stderr.len().saturating_sub(STDERR_TAIL);
        let start = (start..=stderr.len()).find(|i| stderr.is_char_boundary(*i)).unwrap_or(0);
        return Err(BackupError::Gpg {
            operation,
            reason: format!("gpg exited with {}: {}", output.status, &stderr[start..]),
        });
    }
    Ok(stdout)
}

/// Why a key backup could not be written or read. No variant carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The recipient is not a full fingerprint.
    #[error(
        "the recipient must be the full fingerprint of an OpenPGP key (40 or 64 hexadecimal \
         digits, as `gpg --list-keys --with-colons` prints after `fpr`)"
    )]
    Recipient,
    /// A key that belongs to no integration was given.
    #[error("only integrations' data keys go into a key backup")]
    NotAnIntegrationKey,
    /// gpg failed.
    #[error("cannot {operation}: {reason}")]
    Gpg {
        /// What was being done.
        operation: &'static str,
        /// gpg's exit status and the end of its messages.
        reason: String,
    },
    /// The decrypted content is not a Datapunk key backup.
    #[error("the file decrypts, but not to a Datapunk key backup")]
    Malformed,
    /// The backup was written by a newer Datapunk.
    #[error("the key backup has version {0}, newer than this Datapunk reads; upgrade Datapunk")]
    UnsupportedVersion(u32),
    /// Reading or writing a file failed.
    #[error("cannot write the key backup: {0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_fingerprints_name_a_recipient() {
        let v4 = "0123 4567 89ab CDEF 0123  4567 89AB cdef 0123 4567";
        assert_eq!(
            v4.parse::<Fingerprint>().expect("a v4 fingerprint").to_string(),
            "0123456789ABCDEF0123456789ABCDEF01234567"
        );
        assert!(format!("0x{}", "a".repeat(64)).parse::<Fingerprint>().is_ok());
        for bad in ["", "89ABCDEF01234567", "alice@example.org", &"g".repeat(40), &"a".repeat(41)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_backup_refuses_keys_that_belong_to_no_integration() {
        let master = DataKey::generate(KeyPurpose::SecretStoreMaster).expect("a key");
        let file = tempfile::tempfile().expect("a file");
        let recipient: Fingerprint = "A".repeat(40).parse().expect("a fingerprint");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");

        let err = runtime
            .block_on(write(&GpgOptions::default(), &recipient, &[master], file))
            .expect_err("a master key is not backed up");

        assert!(matches!(err, BackupError::NotAnIntegrationKey), "{err}");
    }
}
