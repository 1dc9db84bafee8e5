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

/// How many bytes of gpg's messages go into an error.
const STDERR_TAIL: usize = 400;

/// How much of gpg's standard error is kept: enough for the status lines of a decryption.
const STDERR_KEPT: usize = 16 * 1024;

/// The most gpg may write to standard output. A backup holds about 130 bytes per key, so this
/// is room for thousands; more is not a backup (a compressed file can expand without limit).
const MAX_OUTPUT: usize = 1024 * 1024;

/// How to run gpg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpgOptions {
    /// The program; default `gpg`, found on `PATH`.
    pub program: PathBuf,
    /// GnuPG's home directory; default `$GNUPGHOME`, else gpg's own default.
    pub gnupg_home: Option<PathBuf>,
}

impl GpgOptions {
    /// A command for gpg with a cleared environment holding only what gpg and a pinentry
    /// need, messages in English for the code that reads them, and the chosen home. Every
    /// caller that runs gpg goes through here, so that none passes it more than that.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.env_clear();
        for name in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("LC_MESSAGES", "C");
        // gpg's standard input is a pipe or nothing, so a terminal pinentry can find the
        // person's terminal only through GPG_TTY: lend it ours when the shell has not set it.
        if std::env::var_os("GPG_TTY").is_none()
            && let Some(tty) = terminal_of_stdin()
        {
            command.env("GPG_TTY", tty);
        }
        if let Some(home) = &self.gnupg_home {
            command.env("GNUPGHOME", home);
        }
        command
    }
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
        // Recipients that gpg.conf adds (`encrypt-to`, `default-recipient`) would be readers of
        // the backup nobody asked for.
        "--no-encrypt-to",
        "--encrypt",
        "--recipient",
        &recipient.0,
        "--output",
        "-",
    ];
    let ciphertext = run(gpg, &args, Some(&plaintext), "encrypt the key backup").await?.stdout;
    let mut output = output;
    output.write_all(&ciphertext).map_err(BackupError::Io)?;
    output.sync_all().map_err(BackupError::Io)
}

/// Decrypts the backup at `path` with gpg (which may ask for the secret key's passphrase) and
/// returns the keys it holds.
///
/// The file must be encrypted to a public key and pass its integrity check: gpg also "decrypts"
/// a file that was merely wrapped in OpenPGP packets, unencrypted, and such a file could plant
/// a key someone else knows. Anyone can still encrypt a file to the user's public key, so the
/// caller shows which keys would be restored before it restores them.
///
/// # Errors
///
/// [`BackupError::Gpg`] when gpg cannot decrypt it (no secret key, wrong passphrase, not an
/// OpenPGP file); [`BackupError::NotEncrypted`]; [`BackupError::TooLarge`] when it decrypts to
/// more than a backup could hold; [`BackupError::Malformed`], [`BackupError::InvalidEntry`] and
/// [`BackupError::DuplicateIntegration`] when what it holds is not a usable key backup.
pub async fn read(gpg: &GpgOptions, path: &Path) -> Result<Vec<DataKey>, BackupError> {
    let max = MAX_OUTPUT.to_string();
    // After `--`, a file name starting with `-` is not taken for an option. The status lines
    // on standard error say whether the file was really decrypted.
    let args: [&std::ffi::OsStr; 10] = [
        "--batch".as_ref(),
        "--no-tty".as_ref(),
        "--quiet".as_ref(),
        "--status-fd".as_ref(),
        "2".as_ref(),
        "--max-output".as_ref(),
        max.as_ref(),
        "--decrypt".as_ref(),
        "--".as_ref(),
        path.as_os_str(),
    ];
    let output = run(gpg, &args, None, "decrypt the key backup").await?;
    if !decrypted_with_secret_key(&output.stderr) {
        return Err(BackupError::NotEncrypted);
    }
    parse(&output.stdout)
}

/// Whether gpg's status lines show a decryption with one of the user's secret keys that passed
/// its integrity check. `ENC_TO` alone is not enough: it names any recipient, and a file may
/// also carry a passphrase-encrypted session key, which whoever made it knows.
fn decrypted_with_secret_key(stderr: &str) -> bool {
    let status: Vec<&str> =
        stderr.lines().filter_map(|line| line.strip_prefix("[GNUPG:] ")).collect();
    let has = |keyword: &str| status.iter().any(|line| line.split(' ').next() == Some(keyword));
    has("DECRYPTION_KEY")
        && has("DECRYPTION_OKAY")
        && !has("NEED_PASSPHRASE_SYM")
        && !has("DECRYPTION_FAILED")
        && !has("BADMDC")
}

/// The keys of a decrypted backup.
fn parse(plaintext: &[u8]) -> Result<Vec<DataKey>, BackupError> {
    let bundle: BundleIn = serde_json::from_slice(plaintext).map_err(|_| BackupError::Malformed)?;
    if bundle.format != FORMAT {
        return Err(BackupError::Malformed);
    }
    if bundle.version != VERSION {
        return Err(BackupError::UnsupportedVersion(bundle.version));
    }
    let mut keys: Vec<DataKey> = Vec::with_capacity(bundle.keys.len());
    for (index, entry) in bundle.keys.into_iter().enumerate() {
        let name = entry.integration;
        let seen =
            |key: &DataKey| matches!(key.purpose(), KeyPurpose::Integration(n) if *n == name);
        if keys.iter().any(seen) {
            return Err(BackupError::DuplicateIntegration(name));
        }
        let passphrase = SecretString::new(entry.key);
        let key =
            DataKey::from_export_passphrase(KeyPurpose::integration(name.clone()), &passphrase)
                .map_err(|err| BackupError::InvalidEntry {
                    number: index + 1,
                    reason: err.to_string(),
                })?;
        keys.push(key);
    }
    Ok(keys)
}

/// What gpg wrote.
struct Output {
    /// Standard output, capped at [`MAX_OUTPUT`].
    stdout: Zeroizing<Vec<u8>>,
    /// The end of standard error, status lines included.
    stderr: String,
}

/// Runs gpg with `args`, `stdin` as its standard input, and returns what it wrote. Standard
/// output is read into a buffer allocated once and wiped when dropped; a gpg that writes more
/// than [`MAX_OUTPUT`] is killed.
async fn run<S: AsRef<std::ffi::OsStr>>(
    gpg: &GpgOptions,
    args: &[S],
    stdin: Option<&[u8]>,
    operation: &'static str,
) -> Result<Output, BackupError> {
    use tokio::io::AsyncReadExt as _;

    let mut command = Command::from(gpg.command());
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
    let (input, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async {
        if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
            // A gpg that exits early closes the pipe; its status then tells why.
            let _ = pipe.write_all(bytes).await;
            let _ = pipe.shutdown().await;
        }
    };
    let read_stdout = async {
        let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT + 1));
        if let Some(pipe) = stdout {
            pipe.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buffer).await?;
        }
        Ok::<_, std::io::Error>(buffer)
    };
    let read_stderr = async {
        // All of it is read, so that gpg never blocks on a full pipe; only the end is kept.
        let mut tail = Vec::new();
        let mut chunk = [0u8; 4096];
        if let Some(mut pipe) = stderr {
            while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
                tail.extend_from_slice(&chunk[..read]);
                if tail.len() > STDERR_KEPT {
                    tail.drain(..tail.len() - STDERR_KEPT);
                }
            }
        }
        tail
    };
    let (stdout, stderr, ()) = tokio::join!(read_stdout, read_stderr, feed);
    let stdout = stdout.map_err(BackupError::Io)?;
    if stdout.len() > MAX_OUTPUT {
        // Dropping the child kills it.
        return Err(BackupError::TooLarge);
    }
    let status = child.wait().await.map_err(BackupError::Io)?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    if !status.success() {
        // The status lines are for this code; people get gpg's own messages.
        let messages: Vec<&str> =
            stderr.lines().filter(|line| !line.starts_with("[GNUPG:] ")).collect();
        let messages = messages.join("\n");
        let messages = messages.trim();
        let start = messages.len().saturating_sub(STDERR_TAIL);
        let start = (start..=messages.len()).find(|i| messages.is_char_boundary(*i)).unwrap_or(0);
        return Err(BackupError::Gpg {
            operation,
            reason: format!("gpg exited with {status}: {}", &messages[start..]),
        });
    }
    Ok(Output { stdout, stderr })
}

/// The terminal this process reads from, if its standard input is one.
fn terminal_of_stdin() -> Option<PathBuf> {
    use std::io::IsTerminal as _;

    if !std::io::stdin().is_terminal() {
        return None;
    }
    std::fs::read_link("/proc/self/fd/0").ok().filter(|path| path.starts_with("/dev/"))
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
    /// The file was not encrypted to a public key with integrity protection, as every backup
    /// Datapunk writes is; its keys could be known to whoever made it.
    #[error(
        "the file is not an encrypted key backup (gpg did not decrypt it with a secret key and \
         an intact integrity check); nothing was restored"
    )]
    NotEncrypted,
    /// gpg wrote more than a backup can hold.
    #[error("the file decrypts to more than 1 MiB, which no key backup is; nothing was restored")]
    TooLarge,
    /// One entry cannot be a data key.
    #[error("entry {number} of the key backup is not usable: {reason}; nothing was restored")]
    InvalidEntry {
        /// Its position, from 1.
        number: usize,
        /// Why.
        reason: String,
    },
    /// Two entries are for the same integration.
    #[error("the key backup holds two keys for integration {0:?}; nothing was restored")]
    DuplicateIntegration(String),
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

    fn bundle(entries: &[(&str, &str)]) -> Vec<u8> {
        let keys: Vec<serde_json::Value> = entries
            .iter()
            .map(|(integration, key)| serde_json::json!({ "integration": integration, "key": key }))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "format": FORMAT, "version": VERSION, "created_at": "2026-12-03T10:00:00Z", "keys": keys,
        }))
        .expect("JSON")
    }

    #[test]
    fn a_backup_is_read_back_and_bad_entries_are_named_without_their_keys() {
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let keys = parse(&bundle(&[("google", &a), ("spotify", &b)])).expect("a backup");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].purpose(), &KeyPurpose::integration("spotify"));
        assert_eq!(keys[0].export_passphrase().expose_secret(), a);

        let err = parse(&bundle(&[("google", &a), ("google", &b)])).expect_err("twice");
        assert!(matches!(err, BackupError::DuplicateIntegration(ref n) if n == "google"), "{err}");
        let err = parse(&bundle(&[("google", &a), ("../Evil", &b)])).expect_err("bad name");
        assert!(matches!(err, BackupError::InvalidEntry { number: 2, .. }), "{err}");
        let err = parse(&bundle(&[("google", "0123")])).expect_err("short key");
        assert!(err.to_string().contains("entry 1"), "{err}");
        assert!(!err.to_string().contains("0123"), "{err}");
        assert!(matches!(parse(b"{\"format\": \"other\"}"), Err(BackupError::Malformed)));
        let newer = String::from_utf8(bundle(&[]))
            .expect("UTF-8")
            .replace(&format!("\"version\":{VERSION}"), "\"version\":99");
        assert!(matches!(parse(newer.as_bytes()), Err(BackupError::UnsupportedVersion(99))));
    }

    #[test]
    fn only_a_decryption_with_a_secret_key_counts() {
        let public_key = "[GNUPG:] ENC_TO 1122334455667788 1 0\n\
                          [GNUPG:] DECRYPTION_KEY AAAA BBBB u\n\
                          [GNUPG:] BEGIN_DECRYPTION\n\
                          [GNUPG:] DECRYPTION_INFO 2 9 0\n\
                          [GNUPG:] PLAINTEXT 62 0\n\
                          [GNUPG:] DECRYPTION_OKAY\n\
                          [GNUPG:] GOODMDC\n\
                          [GNUPG:] END_DECRYPTION\n";
        assert!(decrypted_with_secret_key(public_key));

        // A passphrase opened it, though it names a recipient too.
        let symmetric = format!("[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n{public_key}")
            .replace("[GNUPG:] DECRYPTION_KEY AAAA BBBB u\n", "");
        assert!(!decrypted_with_secret_key(&symmetric));
        let both = format!("[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n{public_key}");
        assert!(!decrypted_with_secret_key(&both));
        // Merely wrapped (`gpg --store`): no decryption at all.
        assert!(!decrypted_with_secret_key("[GNUPG:] PLAINTEXT 62 0\n"));
        let failed = public_key.replace("DECRYPTION_OKAY", "DECRYPTION_FAILED");
        assert!(!decrypted_with_secret_key(&failed));
        assert!(!decrypted_with_secret_key("gpg: DECRYPTION_KEY DECRYPTION_OKAY\n"));
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
