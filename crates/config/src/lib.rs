//! Datapunk's configuration: one TOML file, validated before anything acts on it.
//!
//! [`Config::load`] reads a file, refuses unknown keys and wrong types, applies defaults taken
//! from the XDG base directories, and returns a [`Config`] whose every field is settled.
//! [`locate`] picks the file the way every Datapunk program does: `--config`, else
//! `$DATAPUNK_CONFIG`, else `$XDG_CONFIG_HOME/datapunk/config.toml`.
//!
//! Secrets are never configuration values. A password is named by a file path or by the name
//! of a systemd credential ([`SecretSource`]); the configuration holds no secret itself, so it
//! can be printed, committed or shared. A value typed into the wrong key may still be one, so
//! [`ConfigError`] never repeats a value from the file.

mod error;
mod raw;

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Location};

/// The commented example printed by `datapunk config example`: every key at its default.
pub const EXAMPLE: &str = include_str!("example.toml");

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "DATAPUNK_CONFIG";

/// A validated configuration with every default applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from; `None` when no file exists and defaults apply.
    pub source: Option<PathBuf>,
    /// Where the daemon keeps its sockets and state.
    pub daemon: Daemon,
    /// Logging.
    pub log: Log,
    /// The PostgreSQL database.
    pub database: Database,
    /// Where OAuth tokens and data keys are kept.
    pub vault: Vault,
    /// When integrations are synced.
    pub sync: SyncSettings,
    /// The OAuth clients, by provider name (`google`, `microsoft`, `spotify`).
    pub providers: std::collections::BTreeMap<String, ProviderSettings>,
    /// Encrypted database backups.
    pub backup: BackupSettings,
}

/// The `[backup]` table: where `datapunk backup` writes and to whom it encrypts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSettings {
    /// The full fingerprints (40 or 64 hexadecimal digits, upper case) of the OpenPGP keys a
    /// backup is encrypted to. Public keys only: making a backup needs no secret.
    pub recipients: Vec<String>,
    /// The second choice, when no recipient is set: a file holding a passphrase for
    /// symmetric encryption.
    pub passphrase_file: Option<PathBuf>,
    /// Where backups are written. Default `$XDG_STATE_HOME/datapunk/backups`.
    pub dir: PathBuf,
    /// GnuPG's home directory. `None`: `$GNUPGHOME`, else gpg's default.
    pub gnupg_home: Option<PathBuf>,
    /// The password of `datapunk_backup`, for an external server that asks for one (such as
    /// the NixOS module's PostgreSQL container). `None`: `database.password_file`'s, if any.
    /// A credential is looked up only when `datapunk backup create` connects.
    pub password: Option<SecretRef>,
}

/// A `[providers.NAME]` table: the OAuth client registered with a provider, and endpoints that
/// replace the provider's documented ones (for the provider sandbox or a self-hosted service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    /// The OAuth client id.
    pub client_id: String,
    /// Where the client secret is read from, for clients that have one.
    pub client_secret: Option<SecretRef>,
    /// The authorization endpoint; `None` keeps the provider's.
    pub authorize_url: Option<String>,
    /// The token endpoint; `None` keeps the provider's.
    pub token_url: Option<String>,
    /// The revocation endpoint; `None` keeps the provider's (if it has one).
    pub revoke_url: Option<String>,
    /// The data API's base URL; `None` keeps the provider's.
    pub api_base: Option<String>,
    /// Google only: the People API's base URL, on a host of its own; `None` keeps Google's.
    pub people_api_base: Option<String>,
    /// The endpoint that says which account a token belongs to (Google's OpenID Connect
    /// userinfo, Graph's and Spotify's `/me`); `None` keeps the provider's.
    pub account_url: Option<String>,
    /// How often this provider's datasets are synced; `None` keeps `sync.interval_secs`.
    pub sync_interval: Option<Duration>,
}

/// The `[sync]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// How often each consented and granted dataset is synced (give or take a tenth), and an
    /// integration without one has its token and account checked. Default 15 minutes.
    pub interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(15 * 60) }
    }
}

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    /// Runtime files: the control socket and the managed cluster's socket. Default
    /// `$XDG_RUNTIME_DIR/datapunk`.
    pub runtime_dir: PathBuf,
    /// Small state kept outside the database, such as the audit chain's anchor. Default
    /// `$XDG_STATE_HOME/datapunk`.
    pub state_dir: PathBuf,
}

impl Daemon {
    /// The control socket the CLI talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join("control.sock")
    }

    /// The file that anchors the newest audit hash outside the database.
    pub fn audit_anchor(&self) -> PathBuf {
        self.state_dir.join("audit-head")
    }

    /// The file where audit events wait while the database cannot be reached.
    pub fn audit_spool(&self) -> PathBuf {
        self.state_dir.join("audit-pending")
    }
}

/// The `[log]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// The least severe level written: `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

/// The `[database]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Database {
    /// The database's name. Default `datapunk`.
    pub name: String,
    /// Connections kept open by the daemon. Default 4.
    pub pool_size: usize,
    /// Whether the daemon runs its own cluster or uses an existing server.
    pub mode: DatabaseMode,
}

/// How Datapunk reaches PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseMode {
    /// The daemon runs a private cluster: no TCP, peer authentication, socket in the runtime
    /// directory.
    Managed {
        /// The cluster's data directory. Default `$XDG_DATA_HOME/datapunk/postgresql`.
        data_dir: PathBuf,
        /// Where `initdb`, `pg_ctl` and `postgres` are; `None` searches `PATH`.
        pg_bin_dir: Option<PathBuf>,
    },
    /// An existing server, reached with a libpq-style connection string as `datapunk_app`.
    External {
        /// The connection string, without a password.
        conninfo: String,
        /// Where the password is, if the server wants one.
        password: Option<SecretSource>,
        /// TLS for TCP connections.
        tls: Tls,
    },
}

/// The `[vault]` table: the secret store of tokens and data keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vault {
    /// Which secret store.
    pub backend: VaultBackend,
    /// How long one operation on the store may take before it is given up (a keyring may be
    /// waiting for someone to answer a prompt). Default 30 s.
    pub timeout: Duration,
}

/// The secret store named by `vault.backend`, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultBackend {
    /// `secret-service`, the default: the desktop keyring over D-Bus, reached through the
    /// session bus in `$DBUS_SESSION_BUS_ADDRESS`.
    SecretService,
    /// `pass`: the user's password store.
    Pass {
        /// The password store. `None`: `$PASSWORD_STORE_DIR`, else `~/.password-store`.
        store_dir: Option<PathBuf>,
        /// GnuPG's home directory. `None`: `$GNUPGHOME`, else gpg's default.
        gnupg_home: Option<PathBuf>,
    },
    /// `encrypted-table`: the PostgreSQL table sealed under a master key.
    EncryptedTable {
        /// Where the 256-bit master key is read from. Default: the systemd credential
        /// `datapunk-master-key`.
        master_key: SecretRef,
    },
}

impl VaultBackend {
    /// The name used in the file: `secret-service`, `pass` or `encrypted-table`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::SecretService => "secret-service",
            Self::Pass { .. } => "pass",
            Self::EncryptedTable { .. } => "encrypted-table",
        }
    }
}

/// The systemd credential that holds the `encrypted-table` master key by default.
pub const MASTER_KEY_CREDENTIAL: &str = "datapunk-master-key";

/// Where a secret that the configuration names is read from: the `encrypted-table` master key
/// or a provider's client secret.
///
/// A credential is looked up only when the secret is needed, in the `$CREDENTIALS_DIRECTORY`
/// of that moment: a unit with `LoadCredential=` has it, a shell does not, and commands that
/// need no such secret (`datapunk status`, `datapunk audit`) work in both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// A file readable only by Datapunk's user.
    File(PathBuf),
    /// A systemd credential by name.
    Credential(String),
}

impl SecretRef {
    /// The file to read now, given the process's `$CREDENTIALS_DIRECTORY`; `file_key` is the
    /// configuration key a person could use instead, for the message.
    ///
    /// # Errors
    ///
    /// A sentence saying what to do, when the secret is a credential and
    /// `credentials_directory` is `None`.
    pub fn path(
        &self,
        credentials_directory: Option<&Path>,
        file_key: &str,
    ) -> Result<PathBuf, String> {
        match (self, credentials_directory) {
            (Self::File(path), _) => Ok(path.clone()),
            (Self::Credential(name), Some(dir)) => Ok(dir.join(name)),
            (Self::Credential(name), None) => Err(format!(
                "the secret is the systemd credential `{name}`, but CREDENTIALS_DIRECTORY is not \
                 set: run this where the credential is loaded (the daemon's unit has \
                 `LoadCredential=`; for a command, `systemd-run --pipe -p LoadCredential=...`), \
                 or set `{file_key}`"
            )),
        }
    }
}

/// TLS settings for an external server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tls {
    /// Whether to require TLS (verifying the server's certificate and name).
    pub enabled: bool,
    /// A PEM file of CA certificates to trust instead of the built-in web roots.
    pub ca_file: Option<PathBuf>,
}

/// Where a secret is read from at run time. The configuration never holds the secret itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file readable only by the daemon's user.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY/NAME`.
    Credential {
        /// The credential's name.
        name: String,
        /// The resolved path inside the credentials directory.
        path: PathBuf,
    },
}

impl SecretSource {
    /// The file holding the secret.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(path) | Self::Credential { path, .. } => path,
        }
    }
}

/// The parts of the process environment that configuration depends on, captured once so
/// that loading is a pure function of the file and this value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`, set by systemd when a unit has `LoadCredential=`.
    pub credentials_directory: Option<PathBuf>,
    /// `$DATAPUNK_CONFIG`.
    pub datapunk_config: Option<PathBuf>,
}

impl Environment {
    /// Reads the variables from this process. Empty and relative values count as unset, as
    /// the XDG base directory specification asks.
    pub fn from_process() -> Self {
        let path = |name: &str| {
            env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Self {
            home: path("HOME"),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            xdg_state_home: path("XDG_STATE_HOME"),
            xdg_runtime_dir: path("XDG_RUNTIME_DIR"),
            credentials_directory: path("CREDENTIALS_DIRECTORY"),
            datapunk_config: env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }

    fn xdg(&self, var: &Option<PathBuf>, fallback: &str) -> Option<PathBuf> {
        var.clone().or_else(|| self.home.as_ref().map(|home| home.join(fallback)))
    }
}

/// Which configuration file to read, and whether it must exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The path.
    pub path: PathBuf,
    /// True when the user named it (`--config` or `$DATAPUNK_CONFIG`): then a missing file is
    /// an error. A missing file at the default location means "use the defaults".
    pub explicit: bool,
}

/// Picks the configuration file: `cli` (from `--config`), else `$DATAPUNK_CONFIG`, else
/// `$XDG_CONFIG_HOME/datapunk/config.toml` (`~/.config/...` when unset).
///
/// # Errors
///
/// [`ConfigError::NoPath`] when nothing is given and neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn locate(cli: Option<&Path>, env: &Environment) -> Result<Located, ConfigError> {
    if let Some(path) = cli.map(Path::to_path_buf).or_else(|| env.datapunk_config.clone()) {
        return Ok(Located { path, explicit: true });
    }
    let dir = env.xdg(&env.xdg_config_home, ".config").ok_or(ConfigError::NoPath)?;
    Ok(Located { path: dir.join("datapunk").join("config.toml"), explicit: false })
}

/// The most a configuration file may hold; ours are a few kilobytes.
const MAX_FILE: u64 = 1024 * 1024;

/// Reads the configuration file at `path`: a regular file (a named pipe would keep a reload
/// waiting for a writer) of at most [`MAX_FILE`] bytes.
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read as _};
    if !fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a regular file"));
    }
    let mut text = String::new();
    fs::File::open(path)?.take(MAX_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(Error::new(ErrorKind::InvalidData, "it is larger than 1 MiB"));
    }
    Ok(text)
}

impl Config {
    /// Reads and validates the located file, or returns the defaults when the file is at the
    /// default location and does not exist.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when an explicit file is missing or unreadable,
    /// [`ConfigError::Invalid`] when its content is not valid configuration,
    /// [`ConfigError::Defaults`] when there is no file and the environment lacks what the
    /// defaults are made of.
    pub fn load(located: &Located, env: &Environment) -> Result<Self, ConfigError> {
        match read_file(&located.path) {
            Ok(text) => Self::parse(&text, &located.path, env),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !located.explicit => {
                let mut config = Self::parse("", &located.path, env).map_err(|e| match e {
                    // No line of a file that does not exist is at fault.
                    ConfigError::Invalid { path, problem, .. } => {
                        ConfigError::Defaults { path, problem }
                    }
                    other => other,
                })?;
                config.source = None;
                Ok(config)
            }
            Err(source) => Err(ConfigError::Read { path: located.path.clone(), source }),
        }
    }

    /// Validates `text` as if it were the content of the file at `path`. Relative paths in
    /// the file are taken relative to the file's directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the line, column and key at fault.
    pub fn parse(text: &str, path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        raw::parse(text, path, env)
    }

    /// How often the datasets of `provider`'s integrations are synced: its own
    /// `sync_interval_secs` when it has one, else `sync.interval_secs`.
    pub fn sync_interval(&self, provider: &str) -> Duration {
        self.providers
            .get(provider)
            .and_then(|settings| settings.sync_interval)
            .unwrap_or(self.sync.interval)
    }

    /// What is valid but probably not what the person wants, in sentences.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(spotify) = self.providers.get("spotify") {
            let (key, interval) = match spotify.sync_interval {
                Some(interval) => ("providers.spotify.sync_interval_secs", interval),
                None => ("sync.interval_secs", self.sync.interval),
            };
            if interval > SPOTIFY_PLAYS_SPAN {
                warnings.push(format!(
                    "{key} is {}: Spotify lists only the last 50 plays (about two and a half \
                     hours of listening), so plays may be lost between syncs; {} or less keeps \
                     them all",
                    interval.as_secs(),
                    SPOTIFY_PLAYS_SPAN.as_secs()
                ));
            }
        }
        warnings
    }
}

/// The longest sync interval that cannot lose Spotify plays: 50 plays of three minutes.
const SPOTIFY_PLAYS_SPAN: Duration = Duration::from_secs(2 * 3600);

/// Appends `parts` to a path held as an `OsString`; a small helper for defaults.
fn join(base: PathBuf, parts: &[&str]) -> PathBuf {
    let mut path = base;
    for part in parts {
        path.push(OsString::from(part));
    }
    path
}
