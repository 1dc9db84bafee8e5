//! `datapunk config check` and `datapunk config example`.

use std::path::Path;

use clap::Subcommand;
use datapunk_config::{Config, DatabaseMode, EXAMPLE, SecretRef, SecretSource, VaultBackend};
use datapunk_daemon::EXIT_CONFIG;

use crate::Exit;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate the configuration file and print what it resolves to.
    Check,
    /// Print a commented example with every key at its default.
    Example,
}

pub(crate) fn run(path: Option<&Path>, command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            Ok(())
        }
        ConfigCommand::Check => {
            let config = super::load_config(path)?;
            let problems = unreadable_files(&config);
            match (&config.source, problems.is_empty()) {
                (Some(source), true) => println!("{}: valid", source.display()),
                (Some(source), false) => println!(
                    "{}: well formed, but it names files that cannot be opened (below)",
                    source.display()
                ),
                (None, _) => println!("no configuration file; the defaults apply"),
            }
            for warning in config.warnings() {
                println!("  warning: {warning}");
            }
            println!("  runtime_dir   {}", config.daemon.runtime_dir.display());
            println!("  state_dir     {}", config.daemon.state_dir.display());
            println!("  log.level     {}", config.log.level);
            println!(
                "  database      {} (pool of {})",
                config.database.name, config.database.pool_size
            );
            match &config.database.mode {
                DatabaseMode::Managed { data_dir, pg_bin_dir } => {
                    println!("  mode          managed, data in {}", data_dir.display());
                    if let Some(bin) = pg_bin_dir {
                        println!("  pg_bin_dir    {}", bin.display());
                    }
                }
                DatabaseMode::External { password, tls, .. } => {
                    // The connection string is not printed: it names hosts and users that a
                    // pasted `config check` output need not reveal.
                    println!("  mode          external");
                    if let Some(source) = password {
                        println!("  password from {}", source.path().display());
                    }
                    println!("  tls           {}", if tls.enabled { "required" } else { "off" });
                }
            }
            let vault = &config.vault;
            println!(
                "  vault         {} (timeout {} s)",
                vault.backend.name(),
                vault.timeout.as_secs()
            );
            match &vault.backend {
                VaultBackend::SecretService => {}
                VaultBackend::Pass { store_dir, gnupg_home } => {
                    let or_default = |dir: &Option<std::path::PathBuf>, default: &str| {
                        dir.as_ref().map_or(default.to_owned(), |d| d.display().to_string())
                    };
                    let store = or_default(store_dir, "$PASSWORD_STORE_DIR or ~/.password-store");
                    println!("  pass store    {store}");
                    println!(
                        "  gnupg home    {}",
                        or_default(gnupg_home, "$GNUPGHOME or ~/.gnupg")
                    );
                }
                VaultBackend::EncryptedTable { master_key } => match master_key {
                    SecretRef::File(path) => println!("  master key    {}", path.display()),
                    SecretRef::Credential(name) => {
                        println!("  master key    systemd credential {name}");
                    }
                },
            }
            for (name, provider) in &config.providers {
                let secret = match &provider.client_secret {
                    None => "no client secret".to_owned(),
                    Some(SecretRef::File(path)) => format!("secret in {}", path.display()),
                    Some(SecretRef::Credential(name)) => format!("secret in credential {name}"),
                };
                let custom = [
                    &provider.authorize_url,
                    &provider.token_url,
                    &provider.revoke_url,
                    &provider.api_base,
                    &provider.people_api_base,
                    &provider.account_url,
                ]
                .iter()
                .any(|url| url.is_some());
                let endpoints = if custom { "own endpoints" } else { "the provider's endpoints" };
                let own = provider.sync_interval.map_or_else(String::new, |interval| {
                    format!(", sync every {} s", interval.as_secs())
                });
                println!("  {name:<13} client {}, {secret}, {endpoints}{own}", provider.client_id);
            }
            println!("  sync every    {} s", config.sync.interval.as_secs());
            let backup = &config.backup;
            let encryption = match (&backup.recipients[..], &backup.passphrase_file) {
                ([], None) => "no key to encrypt to yet (set backup.recipients)".to_owned(),
                ([], Some(file)) => format!("encrypted with the passphrase in {}", file.display()),
                (recipients, _) => format!("encrypted to {}", recipients.join(", ")),
            };
            println!("  backups       in {}, {encryption}", backup.dir.display());
            match &backup.password {
                Some(SecretRef::File(path)) => {
                    println!("  backup login  password in {}", path.display())
                }
                Some(SecretRef::Credential(name)) => {
                    println!("  backup login  password in credential {name}");
                }
                None => {}
            }
            for problem in &problems {
                println!("  problem: {problem}");
            }
            match problems.len() {
                0 => Ok(()),
                1 => {
                    Err(Exit::new(EXIT_CONFIG, "a file the configuration names cannot be read")
                        .into())
                }
                n => Err(Exit::new(
                    EXIT_CONFIG,
                    format!("{n} files the configuration names cannot be read"),
                )
                .into()),
            }
        }
    }
}

/// The files the configuration names that cannot be read now, each as a sentence with its key.
/// Only files are opened (never read): systemd credentials exist only inside the unit that
/// loads them.
fn unreadable_files(config: &Config) -> Vec<String> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let DatabaseMode::External { password, tls, .. } = &config.database.mode {
        if let Some(SecretSource::File(path)) = password {
            files.push(("database.password_file".to_owned(), path));
        }
        if let Some(path) = &tls.ca_file {
            files.push(("database.tls_ca_file".to_owned(), path));
        }
    }
    if let VaultBackend::EncryptedTable { master_key: SecretRef::File(path) } =
        &config.vault.backend
    {
        files.push(("vault.master_key_file".to_owned(), path));
    }
    for (name, provider) in &config.providers {
        if let Some(SecretRef::File(path)) = &provider.client_secret {
            files.push((format!("providers.{name}.client_secret_file"), path));
        }
    }
    if let Some(SecretRef::File(path)) = &config.backup.password {
        files.push(("backup.password_file".to_owned(), path));
    }
    if let Some(path) = &config.backup.passphrase_file {
        files.push(("backup.passphrase_file".to_owned(), path));
    }
    files
        .into_iter()
        .filter_map(|(key, path)| {
            // The type first: opening a named pipe would wait for a writer.
            let opened = std::fs::metadata(path).and_then(|metadata| {
                if metadata.is_file() { std::fs::File::open(path).map(Some) } else { Ok(None) }
            });
            let problem = match opened {
                Ok(Some(_)) => return None,
                Ok(None) => "it is not a regular file".to_owned(),
                Err(error) => error.to_string(),
            };
            Some(format!("`{key}` names {}: {problem}", path.display()))
        })
        .collect()
}
