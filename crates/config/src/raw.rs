//! The file as written, and its validation into [`Config`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::sanitize;
use crate::{
    BackupSettings, Config, ConfigError, Daemon, Database, DatabaseMode, Environment, Location,
    Log, MASTER_KEY_CREDENTIAL, ProviderSettings, SecretRef, SecretSource, SyncSettings, Tls,
    Vault, VaultBackend, join,
};

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const MAX_POOL: u32 = 64;
const MAX_VAULT_TIMEOUT: u64 = 600;
/// A day: a longer interval lets refresh tokens lapse (Microsoft's after 90 days unused).
const MAX_SYNC_INTERVAL: u64 = 86_400;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    daemon: RawDaemon,
    log: RawLog,
    database: RawDatabase,
    vault: RawVault,
    sync: RawSync,
    providers: std::collections::BTreeMap<String, RawProvider>,
    backup: RawBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBackup {
    recipients: Option<Spanned<Vec<Spanned<String>>>>,
    passphrase_file: Option<Spanned<PathBuf>>,
    dir: Option<Spanned<PathBuf>>,
    gnupg_home: Option<Spanned<PathBuf>>,
    password_file: Option<Spanned<PathBuf>>,
    password_credential: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProvider {
    client_id: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    client_secret_credential: Option<Spanned<String>>,
    authorize_url: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    revoke_url: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    people_api_base: Option<Spanned<String>>,
    account_url: Option<Spanned<String>>,
    sync_interval_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    runtime_dir: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSync {
    interval_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawMode {
    #[default]
    Managed,
    External,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    mode: Option<Spanned<RawMode>>,
    name: Option<Spanned<String>>,
    pool_size: Option<Spanned<u32>>,
    data_dir: Option<Spanned<PathBuf>>,
    pg_bin_dir: Option<Spanned<PathBuf>>,
    conninfo: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_credential: Option<Spanned<String>>,
    tls: Option<Spanned<bool>>,
    tls_ca_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawBackend {
    #[default]
    SecretService,
    Pass,
    EncryptedTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVault {
    backend: Option<Spanned<RawBackend>>,
    timeout_secs: Option<Spanned<u64>>,
    pass_store_dir: Option<Spanned<PathBuf>>,
    gnupg_home: Option<Spanned<PathBuf>>,
    master_key_file: Option<Spanned<PathBuf>>,
    master_key_credential: Option<Spanned<String>>,
}

/// Carries what every validation error needs: the file and its text.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, key: Option<&str>, problem: String) -> ConfigError {
        let location = span.map(|s| Location::of_offset(self.text, s.start)).unwrap_or_default();
        let problem = match key {
            Some(key) => format!("`{key}`: {problem}"),
            None => problem,
        };
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            location,
            key: key.map(str::to_owned),
            problem,
        }
    }

    fn at<T>(&self, value: &Spanned<T>, key: &str, problem: impl Into<String>) -> ConfigError {
        self.error(Some(value.span()), Some(key), problem.into())
    }

    /// Relative paths are taken relative to the configuration file's directory.
    fn resolve(&self, value: &Spanned<PathBuf>, key: &str) -> Result<PathBuf, ConfigError> {
        let path = value.get_ref();
        if path.as_os_str().is_empty() {
            return Err(self.at(value, key, "must not be empty"));
        }
        if path.as_os_str().as_encoded_bytes().first() == Some(&b'~') {
            let problem = "`~` is not expanded here: write the full path, such as \
                           \"/home/alice/...\", or a path relative to this file";
            return Err(self.at(value, key, problem));
        }
        if path.is_absolute() {
            return Ok(path.clone());
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        Ok(base.join(path))
    }
}

pub(crate) fn parse(text: &str, path: &Path, env: &Environment) -> Result<Config, ConfigError> {
    let src = Source { text, path };
    let raw = deserialize(&src)?;

    let daemon = daemon(&src, &raw.daemon, env)?;
    let log = Log {
        level: match &raw.log.level {
            Some(level) if LEVELS.contains(&level.get_ref().as_str()) => level.get_ref().clone(),
            Some(level) => {
                let expected = format!("one of {}", LEVELS.join(", "));
                return Err(src.at(
                    level,
                    "log.level",
                    format!("unknown level: expected {expected}"),
                ));
            }
            None => "info".to_owned(),
        },
    };
    let database = database(&src, &raw.database, env)?;
    sockets_fit(&src, &raw.daemon, &daemon, &database)?;
    let vault = vault(&src, &raw.vault)?;
    let sync = sync(&src, &raw.sync)?;
    let mut providers = std::collections::BTreeMap::new();
    for (name, provider) in &raw.providers {
        providers.insert(name.clone(), self::provider(&src, name, provider)?);
    }

    let backup = backup(&src, &raw.backup, &database, env)?;

    Ok(Config {
        source: Some(path.to_path_buf()),
        daemon,
        log,
        database,
        vault,
        sync,
        providers,
        backup,
    })
}

fn deserialize(src: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(src.text)
        .map_err(|e| src.error(e.span(), None, sanitize(e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` adds a private segment of its own to the path; it is not a key.
        let key = e.path().to_string();
        // A name that does not look like a key (a pasted token, say) is not repeated.
        let key: Vec<&str> = key
            .split('.')
            .filter(|s| !s.is_empty() && !s.starts_with("$__"))
            .map(|s| if crate::error::plausible_key(s) { s } else { "<unshown>" })
            .collect();
        let key = key.join(".");
        let key = (!key.is_empty()).then_some(key);
        let inner = e.into_inner();
        src.error(inner.span(), key.as_deref(), sanitize(inner.message()))
    })
}

fn daemon(src: &Source<'_>, raw: &RawDaemon, env: &Environment) -> Result<Daemon, ConfigError> {
    let runtime_dir = match &raw.runtime_dir {
        Some(dir) => src.resolve(dir, "daemon.runtime_dir")?,
        None => match &env.xdg_runtime_dir {
            Some(dir) => join(dir.clone(), &["datapunk"]),
            None => {
                let problem = "XDG_RUNTIME_DIR is not set: set it (systemd does for user \
                               services) or set `daemon.runtime_dir`";
                return Err(src.error(None, None, problem.to_owned()));
            }
        },
    };
    let state_dir = match &raw.state_dir {
        Some(dir) => src.resolve(dir, "daemon.state_dir")?,
        None => default_dir(src, env, &env.xdg_state_home, ".local/state", "daemon.state_dir")?,
    };
    Ok(Daemon { runtime_dir, state_dir })
}

/// The most bytes a Unix socket's path may have (`sun_path` less its closing NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks that the sockets made in the runtime directory have paths short enough to bind:
/// the control socket, and in managed mode PostgreSQL's (`postgresql/.s.PGSQL.5432`).
fn sockets_fit(
    src: &Source<'_>,
    raw: &RawDaemon,
    daemon: &Daemon,
    database: &Database,
) -> Result<(), ConfigError> {
    let longest = match database.mode {
        DatabaseMode::Managed { .. } => "/postgresql/.s.PGSQL.5432",
        DatabaseMode::External { .. } => "/control.sock",
    };
    let dir = daemon.runtime_dir.as_os_str().len();
    if dir + longest.len() <= MAX_SOCKET_PATH {
        return Ok(());
    }
    let problem = format!(
        "{} is {dir} bytes long, too long for the path of the socket {} in it \
         ({MAX_SOCKET_PATH} bytes at most): choose a directory of at most {} bytes",
        daemon.runtime_dir.display(),
        longest.trim_start_matches('/'),
        MAX_SOCKET_PATH - longest.len()
    );
    match &raw.runtime_dir {
        Some(value) => Err(src.at(value, "daemon.runtime_dir", problem)),
        None => Err(src.error(None, Some("daemon.runtime_dir"), problem)),
    }
}

fn default_dir(
    src: &Source<'_>,
    env: &Environment,
    var: &Option<PathBuf>,
    fallback: &str,
    key: &str,
) -> Result<PathBuf, ConfigError> {
    match env.xdg(var, fallback) {
        Some(dir) => Ok(join(dir, &["datapunk"])),
        None => {
            let problem = format!("neither its XDG variable nor HOME is set: set `{key}`");
            Err(src.error(None, None, problem))
        }
    }
}

fn database(
    src: &Source<'_>,
    raw: &RawDatabase,
    env: &Environment,
) -> Result<Database, ConfigError> {
    let name = match &raw.name {
        Some(name) if valid_identifier(name.get_ref()) => name.get_ref().clone(),
        Some(name) => {
            let problem = "must be 1 to 63 characters of a-z, 0-9 and _, not starting with a digit";
            return Err(src.at(name, "database.name", problem));
        }
        None => "datapunk".to_owned(),
    };
    let pool_size = match &raw.pool_size {
        Some(size) if (1..=MAX_POOL).contains(size.get_ref()) => *size.get_ref() as usize,
        Some(size) => {
            return Err(src.at(size, "database.pool_size", format!("must be 1 to {MAX_POOL}")));
        }
        None => 4,
    };
    let mode = match raw.mode.as_ref().map(|m| *m.get_ref()).unwrap_or_default() {
        RawMode::Managed => managed(src, raw, env)?,
        RawMode::External => external(src, raw, env)?,
    };
    Ok(Database { name, pool_size, mode })
}

fn managed(
    src: &Source<'_>,
    raw: &RawDatabase,
    env: &Environment,
) -> Result<DatabaseMode, ConfigError> {
    let external_only = [
        ("database.conninfo", raw.conninfo.as_ref().map(Spanned::span)),
        ("database.password_file", raw.password_file.as_ref().map(Spanned::span)),
        ("database.password_credential", raw.password_credential.as_ref().map(Spanned::span)),
        ("database.tls", raw.tls.as_ref().map(Spanned::span)),
        ("database.tls_ca_file", raw.tls_ca_file.as_ref().map(Spanned::span)),
    ];
    if let Some((key, span)) = external_only.into_iter().find(|(_, span)| span.is_some()) {
        let problem = "is only used when `database.mode = \"external\"`".to_owned();
        return Err(src.error(span, Some(key), problem));
    }

    let data_dir = match &raw.data_dir {
        Some(dir) => src.resolve(dir, "database.data_dir")?,
        None => join(
            default_dir(src, env, &env.xdg_data_home, ".local/share", "database.data_dir")?,
            &["postgresql"],
        ),
    };
    let pg_bin_dir = match &raw.pg_bin_dir {
        Some(dir) => Some(src.resolve(dir, "database.pg_bin_dir")?),
        None => None,
    };
    Ok(DatabaseMode::Managed { data_dir, pg_bin_dir })
}

fn external(
    src: &Source<'_>,
    raw: &RawDatabase,
    env: &Environment,
) -> Result<DatabaseMode, ConfigError> {
    let managed_only = [
        ("database.data_dir", raw.data_dir.as_ref().map(Spanned::span)),
        ("database.pg_bin_dir", raw.pg_bin_dir.as_ref().map(Spanned::span)),
    ];
    if let Some((key, span)) = managed_only.into_iter().find(|(_, span)| span.is_some()) {
        let problem = "is only used when `database.mode = \"managed\"`".to_owned();
        return Err(src.error(span, Some(key), problem));
    }

    let Some(conninfo) = &raw.conninfo else {
        let span = raw.mode.as_ref().map(Spanned::span);
        let problem = "`database.mode = \"external\"` needs `database.conninfo`".to_owned();
        return Err(src.error(span, Some("database.conninfo"), problem));
    };
    if holds_password(conninfo.get_ref()) {
        let problem = "must not hold a password: put it in a file and set \
                       `database.password_file` (or `database.password_credential`)";
        return Err(src.at(conninfo, "database.conninfo", problem));
    }

    let password = match (&raw.password_file, &raw.password_credential) {
        (Some(_), Some(cred)) => {
            let problem = "set either `database.password_file` or this, not both";
            return Err(src.at(cred, "database.password_credential", problem));
        }
        (Some(file), None) => {
            Some(SecretSource::File(src.resolve(file, "database.password_file")?))
        }
        (None, Some(cred)) => Some(credential(src, cred, "database.password_credential", env)?),
        (None, None) => None,
    };
    let tls = Tls {
        enabled: raw.tls.as_ref().is_some_and(|t| *t.get_ref()),
        ca_file: match &raw.tls_ca_file {
            Some(file) => Some(src.resolve(file, "database.tls_ca_file")?),
            None => None,
        },
    };
    Ok(DatabaseMode::External { conninfo: conninfo.get_ref().clone(), password, tls })
}

fn vault(src: &Source<'_>, raw: &RawVault) -> Result<Vault, ConfigError> {
    let timeout = match &raw.timeout_secs {
        Some(secs) if (1..=MAX_VAULT_TIMEOUT).contains(secs.get_ref()) => {
            Duration::from_secs(*secs.get_ref())
        }
        Some(secs) => {
            let problem = format!("must be 1 to {MAX_VAULT_TIMEOUT} seconds");
            return Err(src.at(secs, "vault.timeout_secs", problem));
        }
        None => Duration::from_secs(30),
    };
    let kind = raw.backend.as_ref().map(|b| *b.get_ref()).unwrap_or_default();
    let only = |keys: &[(&str, Option<Range<usize>>)], backend: &str| match keys
        .iter()
        .find(|(_, span)| span.is_some())
    {
        Some((key, span)) => {
            let problem = format!("is only used when `vault.backend = \"{backend}\"`");
            Err(src.error(span.clone(), Some(key), problem))
        }
        None => Ok(()),
    };
    let pass_keys = [
        ("vault.pass_store_dir", raw.pass_store_dir.as_ref().map(Spanned::span)),
        ("vault.gnupg_home", raw.gnupg_home.as_ref().map(Spanned::span)),
    ];
    let table_keys = [
        ("vault.master_key_file", raw.master_key_file.as_ref().map(Spanned::span)),
        ("vault.master_key_credential", raw.master_key_credential.as_ref().map(Spanned::span)),
    ];
    if kind != RawBackend::Pass {
        only(&pass_keys, "pass")?;
    }
    if kind != RawBackend::EncryptedTable {
        only(&table_keys, "encrypted-table")?;
    }

    let backend = match kind {
        RawBackend::SecretService => VaultBackend::SecretService,
        RawBackend::Pass => VaultBackend::Pass {
            store_dir: match &raw.pass_store_dir {
                Some(dir) => Some(src.resolve(dir, "vault.pass_store_dir")?),
                None => None,
            },
            gnupg_home: match &raw.gnupg_home {
                Some(dir) => Some(src.resolve(dir, "vault.gnupg_home")?),
                None => None,
            },
        },
        RawBackend::EncryptedTable => {
            let master_key = match (&raw.master_key_file, &raw.master_key_credential) {
                (Some(_), Some(cred)) => {
                    let problem = "set either `vault.master_key_file` or this, not both";
                    return Err(src.at(cred, "vault.master_key_credential", problem));
                }
                (Some(file), None) => SecretRef::File(src.resolve(file, "vault.master_key_file")?),
                (None, Some(cred)) => SecretRef::Credential(credential_name(
                    src,
                    cred,
                    "vault.master_key_credential",
                )?),
                (None, None) => SecretRef::Credential(MASTER_KEY_CREDENTIAL.to_owned()),
            };
            VaultBackend::EncryptedTable { master_key }
        }
    };
    Ok(Vault { backend, timeout })
}

fn sync(src: &Source<'_>, raw: &RawSync) -> Result<SyncSettings, ConfigError> {
    let interval = match &raw.interval_secs {
        None => SyncSettings::default().interval,
        Some(secs) => interval(src, secs, "sync.interval_secs")?,
    };
    Ok(SyncSettings { interval })
}

/// A sync interval in seconds, at `key`.
fn interval(src: &Source<'_>, secs: &Spanned<u64>, key: &str) -> Result<Duration, ConfigError> {
    if (1..=MAX_SYNC_INTERVAL).contains(secs.get_ref()) {
        Ok(Duration::from_secs(*secs.get_ref()))
    } else {
        let problem = format!("must be between 1 and {MAX_SYNC_INTERVAL} seconds");
        Err(src.at(secs, key, problem))
    }
}

fn backup(
    src: &Source<'_>,
    raw: &RawBackup,
    database: &Database,
    env: &Environment,
) -> Result<BackupSettings, ConfigError> {
    let mut recipients = Vec::new();
    for recipient in raw.recipients.iter().flat_map(|list| list.get_ref()) {
        let digits: String = recipient.get_ref().chars().filter(|c| *c != ' ').collect();
        let digits = digits.strip_prefix("0x").unwrap_or(&digits).to_ascii_uppercase();
        if !matches!(digits.len(), 40 | 64) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            let problem = "must be the full fingerprint of an OpenPGP key (40 or 64 hexadecimal \
                           digits, as `gpg --list-keys --with-colons` prints after `fpr`)";
            return Err(src.at(recipient, "backup.recipients", problem));
        }
        if !recipients.contains(&digits) {
            recipients.push(digits);
        }
    }
    let passphrase_file = match &raw.passphrase_file {
        Some(file) if !recipients.is_empty() => {
            let problem = "set either `backup.recipients` or this, not both: a backup \
                           encrypted to a public key needs no passphrase";
            return Err(src.at(file, "backup.passphrase_file", problem));
        }
        Some(file) => Some(src.resolve(file, "backup.passphrase_file")?),
        None => None,
    };
    let dir = match &raw.dir {
        Some(dir) => src.resolve(dir, "backup.dir")?,
        None => join(
            default_dir(src, env, &env.xdg_state_home, ".local/state", "backup.dir")?,
            &["backups"],
        ),
    };
    let gnupg_home = match &raw.gnupg_home {
        Some(dir) => Some(src.resolve(dir, "backup.gnupg_home")?),
        None => None,
    };
    let password = match (&raw.password_file, &raw.password_credential) {
        (Some(_), Some(cred)) => {
            let problem = "set either `backup.password_file` or this, not both";
            return Err(src.at(cred, "backup.password_credential", problem));
        }
        (Some(file), None) => {
            let key = "backup.password_file";
            Some((file.span(), key, SecretRef::File(src.resolve(file, key)?)))
        }
        (None, Some(cred)) => {
            let key = "backup.password_credential";
            Some((cred.span(), key, SecretRef::Credential(credential_name(src, cred, key)?)))
        }
        (None, None) => None,
    };
    if let (Some((span, key, _)), DatabaseMode::Managed { .. }) = (&password, &database.mode) {
        let problem = "is for `database.mode = \"external\"`: the roles of the managed cluster \
                       log in by peer authentication, without passwords";
        return Err(src.error(Some(span.clone()), Some(key), problem.to_owned()));
    }
    let password = password.map(|(_, _, secret)| secret);
    Ok(BackupSettings { recipients, passphrase_file, dir, gnupg_home, password })
}

/// The providers Datapunk knows; `[providers.NAME]` must name one.
const PROVIDERS: [&str; 3] = ["google", "microsoft", "spotify"];

fn provider(
    src: &Source<'_>,
    name: &str,
    raw: &RawProvider,
) -> Result<ProviderSettings, ConfigError> {
    let table = format!("providers.{name}");
    if !PROVIDERS.contains(&name) {
        let shown = if crate::error::plausible_key(name) { name } else { "<unshown>" };
        let problem = format!("unknown provider `{shown}`: use google, microsoft or spotify");
        return Err(src.error(None, Some(&format!("providers.{shown}")), problem));
    }
    let Some(client_id) = &raw.client_id else {
        let problem = "needs `client_id`, the id of the OAuth client registered with the provider";
        return Err(src.error(None, Some(&format!("{table}.client_id")), problem.to_owned()));
    };
    let client_secret = match (&raw.client_secret_file, &raw.client_secret_credential) {
        (Some(_), Some(cred)) => {
            let problem = "set either `client_secret_file` or this, not both";
            return Err(src.at(cred, &format!("{table}.client_secret_credential"), problem));
        }
        (Some(file), None) => {
            Some(SecretRef::File(src.resolve(file, &format!("{table}.client_secret_file"))?))
        }
        (None, Some(cred)) => Some(SecretRef::Credential(credential_name(
            src,
            cred,
            &format!("{table}.client_secret_credential"),
        )?)),
        (None, None) => None,
    };
    if let Some(value) = &raw.people_api_base
        && table != "providers.google"
    {
        let problem = "only Google has a People API; this key belongs in `[providers.google]`";
        return Err(src.at(value, &format!("{table}.people_api_base"), problem));
    }
    let url = |value: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let text = value.get_ref();
        let loopback =
            ["http://127.0.0.1:", "http://127.0.0.1/", "http://[::1]:", "http://localhost:"];
        let plausible =
            text.starts_with("https://") || loopback.iter().any(|p| text.starts_with(p));
        if !plausible || text.chars().any(char::is_whitespace) {
            let problem = "must be an https:// URL (plain http only on 127.0.0.1, [::1] or \
                           localhost, where the provider sandbox runs)";
            return Err(src.at(value, &format!("{table}.{key}"), problem));
        }
        Ok(Some(text.clone()))
    };
    Ok(ProviderSettings {
        client_id: client_id.get_ref().clone(),
        client_secret,
        authorize_url: url(&raw.authorize_url, "authorize_url")?,
        token_url: url(&raw.token_url, "token_url")?,
        revoke_url: url(&raw.revoke_url, "revoke_url")?,
        api_base: url(&raw.api_base, "api_base")?,
        people_api_base: url(&raw.people_api_base, "people_api_base")?,
        account_url: url(&raw.account_url, "account_url")?,
        sync_interval: match &raw.sync_interval_secs {
            Some(secs) => Some(interval(src, secs, &format!("{table}.sync_interval_secs"))?),
            None => None,
        },
    })
}

/// Checks a credential's name: it becomes a file name inside the credentials directory.
fn credential_name(
    src: &Source<'_>,
    name: &Spanned<String>,
    key: &str,
) -> Result<String, ConfigError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let value = name.get_ref();
    if value.is_empty() || value.starts_with('.') || !value.chars().all(plain) {
        return Err(src.at(
            name,
            key,
            "must be a credential name (letters, digits, '-', '_', '.')",
        ));
    }
    Ok(value.clone())
}

fn credential(
    src: &Source<'_>,
    name: &Spanned<String>,
    key: &str,
    env: &Environment,
) -> Result<SecretSource, ConfigError> {
    let value = credential_name(src, name, key)?;
    let Some(dir) = &env.credentials_directory else {
        let file_key = key.replace("_credential", "_file");
        let problem = format!(
            "CREDENTIALS_DIRECTORY is not set: load the credential with systemd's \
             `LoadCredential=`, or use `{file_key}`"
        );
        return Err(src.at(name, key, problem));
    };
    Ok(SecretSource::Credential { path: dir.join(&value), name: value })
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A libpq keyword/value string or URI that carries a password.
fn holds_password(conninfo: &str) -> bool {
    let lower = conninfo.to_ascii_lowercase();
    if lower.contains("password") {
        return true;
    }
    let uri = lower.strip_prefix("postgresql://").or_else(|| lower.strip_prefix("postgres://"));
    uri.and_then(|rest| rest.split_once('@')).is_some_and(|(userinfo, _)| userinfo.contains(':'))
}
