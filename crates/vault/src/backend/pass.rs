//! The `pass` backend: entries in the user's password store, through the `pass` program.
//!
//! An integration's items are `datapunk/<integration>/token` and
//! `datapunk/<integration>/data-key`, each a GnuPG-encrypted file
//! (`<store>/datapunk/google/token.gpg`) that `pass` and gpg read and write:
//!
//! - writing runs `pass insert --multiline --force NAME` with the secret on standard input,
//!   which `pass` hands straight to `gpg --encrypt`;
//! - reading runs `pass show NAME` and takes the secret from standard output;
//! - deleting runs `pass rm --force NAME`.
//!
//! A secret is never an argument: argv is readable by every user through `/proc`. Whether an
//! item exists, and which items there are, is read from the store's directory, which holds
//! only names; that is also how `pass` itself decides.
//!
//! The child gets a cleared environment with only what `pass`, gpg and a pinentry need
//! ([`PASSED_THROUGH`]). Left out on purpose: `PASSWORD_STORE_ENABLE_EXTENSIONS` and
//! `PASSWORD_STORE_EXTENSIONS_DIR` (they run code), `PASSWORD_STORE_GPG_OPTS` (it changes how
//! secrets are encrypted), and everything else of the daemon's, credentials included.
//! `LC_MESSAGES=C` keeps gpg's messages in English, so that a cancelled pinentry or one that
//! cannot be shown is recognised.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::{BackendKind, Error, ItemId, ItemKind, StoredItem, VaultState, Write};
use crate::secret::SecretBytes;

const BACKEND: BackendKind = BackendKind::Pass;

/// The folder of the password store that holds Datapunk's entries.
const FOLDER: &str = "datapunk";

/// The environment variables a `pass` child inherits, when set. The pinentry that gpg-agent
/// may show needs the display variables and the session bus.
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
    "PASSWORD_STORE_DIR",
    "PASSWORD_STORE_UMASK",
    "PASSWORD_STORE_SIGNING_KEY",
];

/// How many bytes of a failed command's standard error go into an error.
const STDERR_TAIL: usize = 400;

/// How to run `pass`. Unset fields take the process's environment, as `pass` would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// The program to run; default `pass`, found on `PATH`.
    pub program: PathBuf,
    /// The password store; default `$PASSWORD_STORE_DIR`, else `~/.password-store`.
    pub store_dir: Option<PathBuf>,
    /// GnuPG's home directory; default `$GNUPGHOME`, else gpg's own default.
    pub gnupg_home: Option<PathBuf>,
}

impl Default for PassOptions {
    fn default() -> Self {
        Self { program: PathBuf::from("pass"), store_dir: None, gnupg_home: None }
    }
}

/// The backend; see the [module documentation](self).
#[derive(Debug)]
pub(super) struct PassStore {
    options: PassOptions,
    /// Serialises operations, so that checking for a data key and writing it cannot interleave
    /// with another write from this process.
    serial: tokio::sync::Mutex<()>,
}

impl PassStore {
    pub(super) fn new(options: PassOptions) -> Self {
        Self { options, serial: tokio::sync::Mutex::new(()) }
    }

    pub(super) async fn put(
        &self,
        item: ItemId<'_>,
        secret: &[u8],
        write: Write,
    ) -> Result<(), Error> {
        let _serial = self.serial.lock().await;
        let store = self.store_dir()?;

        if write == Write::CreateOnly && entry_file(&store, item).exists() {
            return Err(Error::KeyExists {
                backend: BACKEND,
                integration: item.integration.into(),
            });
        }
        // Without --force, pass would ask before overwriting, and on a standard input that is
        // not a terminal it takes that as yes; --force says what happens.
        let args = [OsStr::new("insert"), "--multiline".as_ref(), "--force".as_ref()];
        let operation = format!("store the {item}");
        self.run(&store, &args, item, Some(secret), &operation).await?;
        Ok(())
    }

    pub(super) async fn get(&self, item: ItemId<'_>) -> Result<Option<SecretBytes>, Error> {
        let _serial = self.serial.lock().await;
        let store = self.store_dir()?;

        if !entry_file(&store, item).exists() {
            return Ok(None);
        }
        let operation = format!("read the {item}");
        let stdout = self.run(&store, &[OsStr::new("show")], item, None, &operation).await?;
        Ok(Some(stdout))
    }

    pub(super) async fn delete(&self, item: ItemId<'_>) -> Result<bool, Error> {
        let _serial = self.serial.lock().await;
        let store = self.store_dir()?;

        if !entry_file(&store, item).exists() {
            return Ok(false);
        }
        let args = [OsStr::new("rm"), "--force".as_ref()];
        let operation = format!("delete the {item}");
        self.run(&store, &args, item, None, &operation).await?;
        Ok(true)
    }

    pub(super) async fn list(&self) -> Result<Vec<StoredItem>, Error> {
        let store = self.store_dir()?;
        let folder = store.join(FOLDER);

        let mut entries = match tokio::fs::read_dir(&folder).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(format!("list {}", folder.display()), err)),
        };
        let mut items = Vec::new();
        while let Some(entry) =
            entries.next_entry().await.map_err(|err| io_error("list the entries", err))?
        {
            let Some(integration) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !super::is_integration_name(&integration) {
                continue;
            }
            for kind in [ItemKind::Token, ItemKind::DataKey] {
                if entry_file(&store, ItemId { kind, integration: &integration }).exists() {
                    items.push(StoredItem { integration: integration.clone(), kind });
                }
            }
        }
        Ok(items)
    }

    /// `Ready` when the store is initialised and `pass` runs. Whether gpg-agent still holds
    /// the passphrase of the store's key cannot be asked without decrypting something, so a
    /// key that needs unlocking shows up as [`Error::Locked`] on the first read instead.
    pub(super) async fn state(&self) -> VaultState {
        let store = match self.store_dir() {
            Ok(store) => store,
            Err(err) => return VaultState::Unavailable { reason: err.to_string() },
        };
        if let Err(err) = check_initialised(&store) {
            return VaultState::Unavailable { reason: err.to_string() };
        }

        let mut command = self.command(&store);
        command.arg("version").stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        match command.status().await {
            Ok(status) if status.success() => VaultState::Ready,
            Ok(status) => VaultState::Unavailable { reason: format!("`pass version` {status}") },
            Err(err) => VaultState::Unavailable { reason: spawn_problem(&self.options, &err) },
        }
    }

    /// The password store's directory.
    fn store_dir(&self) -> Result<PathBuf, Error> {
        if let Some(dir) = &self.options.store_dir {
            return Ok(dir.clone());
        }
        if let Some(dir) = std::env::var_os("PASSWORD_STORE_DIR").filter(|dir| !dir.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
            Some(home) => Ok(Path::new(&home).join(".password-store")),
            None => Err(Error::unavailable(
                BACKEND,
                "cannot find the password store: neither PASSWORD_STORE_DIR nor HOME is set",
            )),
        }
    }

    /// A `pass` command with the environment described in the [module documentation](self).
    fn command(&self, store: &Path) -> Command {
        let mut command = Command::new(&self.options.program);
        command.env_clear();
        for name in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("PASSWORD_STORE_DIR", store).env("LC_MESSAGES", "C");
        if let Some(home) = &self.options.gnupg_home {
            command.env("GNUPGHOME", home);
        }
        command
    }

    /// Runs `pass ARGS datapunk/<integration>/<kind>`, with `stdin` as its standard input, and
    /// returns its standard output.
    async fn run(
        &self,
        store: &Path,
        args: &[&OsStr],
        item: ItemId<'_>,
        stdin: Option<&[u8]>,
        operation: &str,
    ) -> Result<SecretBytes, Error> {
        check_initialised(store)?;
        let mut command = self.command(store);
        command
            .args(args)
            .arg(entry_name(item))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // gpg runs as a child of pass: a group of their own lets a timeout stop both.
            .process_group(0);

        let mut child = command
            .spawn()
            .map_err(|err| Error::unavailable(BACKEND, spawn_problem(&self.options, &err)))?;
        let mut group = GroupGuard::new(child.id());
        let input = child.stdin.take();
        let feed = async {
            if let (Some(mut pipe), Some(secret)) = (input, stdin) {
                // A child that exits early closes the pipe; its status then tells why.
                let _ = pipe.write_all(secret).await;
                let _ = pipe.shutdown().await;
            }
        };
        let (output, ()) = tokio::join!(child.wait_with_output(), feed);
        group.disarm();
        let output =
            output.map_err(|err| io_error(format!("wait for `pass` to {operation}"), err))?;

        let stdout = SecretBytes::new(output.stdout);
        if !output.status.success() {
            return Err(failure(output.status, &output.stderr, operation));
        }
        Ok(stdout)
    }
}

/// Kills a child's process group when dropped while armed, so that a cancelled operation (a
/// timeout drops the future) leaves neither `pass` nor the gpg it started behind.
///
/// It is disarmed once the leader has been waited for. Until then the leader is at least a
/// zombie, so the group's id cannot have been given to anyone else.
struct GroupGuard {
    leader: Option<rustix::process::Pid>,
}

impl GroupGuard {
    fn new(leader: Option<u32>) -> Self {
        let leader = leader.and_then(|id| i32::try_from(id).ok());
        Self { leader: leader.and_then(rustix::process::Pid::from_raw) }
    }

    fn disarm(&mut self) {
        self.leader = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(leader) = self.leader {
            // Failing means the group is gone already.
            let _ = rustix::process::kill_process_group(leader, rustix::process::Signal::KILL);
        }
    }
}

/// `datapunk/<integration>/<kind>`, the entry's name for `pass`.
fn entry_name(item: ItemId<'_>) -> String {
    format!("{FOLDER}/{}/{}", item.integration, item.kind.as_str())
}

/// The file `pass` keeps the entry in.
fn entry_file(store: &Path, item: ItemId<'_>) -> PathBuf {
    store.join(FOLDER).join(item.integration).join(format!("{}.gpg", item.kind.as_str()))
}

/// `pass` refuses to write into a store without a `.gpg-id`; saying so before running it
/// gives a better message.
fn check_initialised(store: &Path) -> Result<(), Error> {
    if store.join(".gpg-id").is_file() {
        return Ok(());
    }
    Err(Error::unavailable(
        BACKEND,
        format!(
            "the password store {} is not initialised; run `pass init GPG-KEY-ID` first",
            store.display()
        ),
    ))
}

fn spawn_problem(options: &PassOptions, err: &io::Error) -> String {
    let program = options.program.display();
    if err.kind() == io::ErrorKind::NotFound {
        format!("cannot run `{program}`: not found; install pass or choose another backend")
    } else {
        format!("cannot run `{program}`: {err}")
    }
}

/// Classifies a failed run of `pass` by what gpg wrote.
fn failure(status: ExitStatus, stderr: &[u8], operation: &str) -> Error {
    let text = String::from_utf8_lossy(stderr);
    if text.contains("Operation cancelled") {
        return Error::PromptDismissed { backend: BACKEND };
    }
    // gpg-agent needs the key's passphrase and has no way to ask for it.
    if ["No pinentry", "Inappropriate ioctl for device", "Timeout"]
        .iter()
        .any(|sign| text.contains(sign))
    {
        return Error::Locked { backend: BACKEND };
    }

    Error::backend(BACKEND, operation, CommandFailed { status, stderr: tail(&text) })
}

/// The end of a child's standard error, on one line and bounded.
fn tail(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = joined.len().saturating_sub(STDERR_TAIL);
    let start = (start..joined.len()).find(|&i| joined.is_char_boundary(i)).unwrap_or(start);
    joined[start..].to_owned()
}

/// `pass` exited unsuccessfully. Its standard error names entries and keys, never secrets.
#[derive(Debug, thiserror::Error)]
#[error("`pass` {status}: {stderr}")]
struct CommandFailed {
    status: ExitStatus,
    stderr: String,
}

fn io_error(what: impl Into<String>, err: io::Error) -> Error {
    Error::backend(BACKEND, what, err)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn item(kind: ItemKind) -> ItemId<'static> {
        ItemId { kind, integration: "google" }
    }

    #[test]
    fn entries_live_under_the_datapunk_folder() {
        let store = Path::new("/store");

        assert_eq!(entry_name(item(ItemKind::Token)), "datapunk/google/token");
        assert_eq!(entry_name(item(ItemKind::DataKey)), "datapunk/google/data-key");
        assert_eq!(
            entry_file(store, item(ItemKind::DataKey)),
            Path::new("/store/datapunk/google/data-key.gpg")
        );
    }

    #[test]
    fn the_child_environment_holds_only_what_pass_and_gpg_need() {
        let store = PassStore::new(PassOptions {
            gnupg_home: Some(PathBuf::from("/gnupg")),
            ..PassOptions::default()
        });

        let command = store.command(Path::new("/store"));

        let std = command.as_std();
        let set: Vec<(OsString, OsString)> = std
            .get_envs()
            .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
            .collect();
        for (name, _) in &set {
            let name = name.to_str().expect("UTF-8 name");
            assert!(
                PASSED_THROUGH.contains(&name) || name == "LC_MESSAGES",
                "{name} must not reach pass"
            );
        }
        assert!(set.contains(&("PASSWORD_STORE_DIR".into(), "/store".into())));
        assert!(set.contains(&("GNUPGHOME".into(), "/gnupg".into())));
        assert_eq!(std.get_args().count(), 0);
    }

    #[test]
    fn a_cancelled_or_impossible_pinentry_is_told_apart_from_other_failures() {
        let status = std::process::Command::new("false").status().expect("run false");

        let cancelled = failure(status, b"gpg: decryption failed: Operation cancelled\n", "x");
        let no_pinentry = failure(status, b"gpg: public key decryption failed: No pinentry", "x");
        let other = failure(status, b"Error: datapunk/google/token is not in the store.", "x");

        assert!(matches!(cancelled, Error::PromptDismissed { .. }), "{cancelled}");
        assert!(matches!(no_pinentry, Error::Locked { .. }), "{no_pinentry}");
        let Error::Backend { source, .. } = &other else { panic!("{other:?}") };
        assert!(source.to_string().contains("not in the store"), "{source}");
    }

    #[test]
    fn a_long_standard_error_is_cut_to_its_end_on_one_line() {
        let long = format!("{}\nlast words", "é".repeat(STDERR_TAIL));

        let cut = tail(&long);

        assert!(cut.ends_with("é last words"), "{cut}");
        assert!(cut.len() <= STDERR_TAIL, "{}", cut.len());
    }
}
