//! `datapunk keys`: the per-integration data keys in the vault.
//!
//! Every command that creates, reveals, copies or destroys a key is audited (`key.created`,
//! `key.exported`, `key.backup`, `key.restored`, `key.destroyed`); the rows and journal entries
//! name the integration, never the key. An export is recorded before the key is printed, so
//! that no key leaves unrecorded; the other changes first check that the audit trail can be
//! written, and an event that still fails to be recorded goes to journald.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use datapunk_daemon::audit::event;
use datapunk_store::audit::{Event, Outcome};
use datapunk_vault::backend::{BackendKind, ItemKind};
use datapunk_vault::backup::{self, Fingerprint, GpgOptions};
use datapunk_vault::key::{DataKey, KeyPurpose};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the integrations that have a data key or a token in the vault; reads no secret.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create an integration's data key (connecting an integration does this by itself).
    Create {
        /// The integration, e.g. google.
        integration: String,
    },
    /// Print an integration's data key, to decrypt its fields with pgcrypto.
    Export {
        /// The integration, e.g. google.
        integration: String,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Write every data key to a file encrypted with GnuPG, for disaster recovery.
    Backup {
        /// The file to create; it must not exist.
        file: PathBuf,
        /// The full fingerprint of the OpenPGP key that may open the file.
        #[arg(long, value_name = "FINGERPRINT")]
        recipient: String,
    },
    /// Put back the data keys of a backup that the vault lacks; keys it holds are kept.
    Restore {
        /// A file written by `datapunk keys backup`.
        file: PathBuf,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Destroy an integration's data key: its encrypted fields become unreadable for good, in
    /// the database and in every database backup.
    Destroy {
        /// The integration, e.g. google.
        integration: String,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) async fn run(path: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let context = super::Context::open(&config).await?;
    let result = match command {
        KeysCommand::List { json } => list(&context, json).await,
        KeysCommand::Create { integration } => create(&context, &integration).await,
        KeysCommand::Export { integration, yes } => export(&context, &integration, yes).await,
        KeysCommand::Backup { file, recipient } => {
            let recipient: Fingerprint = recipient.parse()?;
            backup(&context, &file, &recipient).await
        }
        KeysCommand::Restore { file, yes } => restore(&context, &file, yes).await,
        KeysCommand::Destroy { integration, yes } => destroy(&context, &integration, yes).await,
    };
    context.database.close().await;
    result
}

fn key_event(action: &str, integration: Option<&str>, details: serde_json::Value) -> Event {
    let mut event = event("cli", action, Outcome::Success, details);
    event.integration = integration.map(str::to_owned);
    event
}

async fn list(context: &super::Context, json: bool) -> anyhow::Result<()> {
    let items = context.vault.list().await?;
    let mut integrations: Vec<(&str, bool, bool)> = Vec::new();
    for item in &items {
        let position = match integrations.iter().position(|(name, ..)| *name == item.integration) {
            Some(position) => position,
            None => {
                integrations.push((&item.integration, false, false));
                integrations.len() - 1
            }
        };
        match item.kind {
            ItemKind::DataKey => integrations[position].1 = true,
            ItemKind::Token => integrations[position].2 = true,
        }
    }
    if json {
        for (name, key, token) in &integrations {
            println!("{}", json!({ "integration": name, "data_key": key, "token": token }));
        }
        return Ok(());
    }
    if integrations.is_empty() {
        println!("the {} vault holds no Datapunk items", context.vault.kind());
        return Ok(());
    }
    println!("{:<24}  {:<8}  TOKEN", "INTEGRATION", "DATA KEY");
    for (name, key, token) in &integrations {
        let yes_no = |b: &bool| if *b { "yes" } else { "no" };
        println!("{name:<24}  {:<8}  {}", yes_no(key), yes_no(token));
    }
    Ok(())
}

async fn create(context: &super::Context, integration: &str) -> anyhow::Result<()> {
    let key = DataKey::generate(KeyPurpose::integration(integration))?;
    context.preflight().await?;
    context.vault.put_data_key(&key).await?;
    let details = json!({ "backend": context.vault.kind().as_str() });
    context
        .record(&key_event("key.created", Some(integration), details), "data key created")
        .await
        .context("the key was created but the audit event could not be recorded")?;
    println!("created the data key of {integration} in the {} vault", context.vault.kind());
    Ok(())
}

async fn export(context: &super::Context, integration: &str, yes: bool) -> anyhow::Result<()> {
    let key = context
        .vault
        .data_key(integration)
        .await?
        .with_context(|| format!("integration `{integration}` has no data key"))?;
    eprintln!(
        "warning: this prints the data key of {integration}. Whoever holds it can read \
         {integration}'s encrypted fields in the database and in every backup of it, and \
         destroying the key will no longer shred what they copied. Keep it out of shell \
         history, logs and chats."
    );
    confirm(yes, integration, &format!("export the data key of {integration}"))?;

    // Recorded first: a key is never shown without a row saying so.
    let details = json!({ "backend": context.vault.kind().as_str(), "to": "stdout" });
    context
        .record_first(&key_event("key.exported", Some(integration), details), "data key exported")
        .await
        .context("the export could not be recorded in the audit trail, so the key is not shown")?;
    let passphrase = key.export_passphrase();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", passphrase.expose_secret()).context("cannot write the key")?;
    Ok(())
}

async fn backup(
    context: &super::Context,
    file: &Path,
    recipient: &Fingerprint,
) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for item in context.vault.list().await? {
        if item.kind == ItemKind::DataKey
            && let Some(key) = context.vault.data_key(&item.integration).await?
        {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        anyhow::bail!("the {} vault holds no data keys to back up", context.vault.kind());
    }
    context.preflight().await?;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {} (it must not exist yet)", file.display()))?;

    if let Err(error) = backup::write(&GpgOptions::default(), recipient, &keys, output).await {
        // Nothing half-written is left behind to be mistaken for a backup.
        let _ = std::fs::remove_file(file);
        return Err(error.into());
    }
    let integrations: Vec<String> = keys
        .iter()
        .filter_map(|key| match key.purpose() {
            KeyPurpose::Integration(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let details = json!({
        "file": absolute.display().to_string(),
        "recipient": recipient.to_string(),
        "integrations": integrations,
    });
    context
        .record(&key_event("key.backup", None, details), "data keys backed up")
        .await
        .context("the backup was written but could not be recorded in the audit trail")?;
    println!(
        "wrote {} data key(s) ({}) to {}, encrypted to {recipient}",
        integrations.len(),
        integrations.join(", "),
        file.display()
    );
    Ok(())
}

async fn restore(context: &super::Context, file: &Path, yes: bool) -> anyhow::Result<()> {
    let keys = backup::read(&GpgOptions::default(), file).await?;
    let names: Vec<&str> = keys
        .iter()
        .filter_map(|key| match key.purpose() {
            KeyPurpose::Integration(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    // Anyone can encrypt a file to your public key: say what it holds before taking it in.
    eprintln!(
        "the backup holds data keys for: {}. Restore only a backup you made yourself: data \
         encrypted under a key from someone else's file is readable by them.",
        names.join(", ")
    );
    confirm(yes, "restore", "restore these keys")?;
    context.preflight().await?;

    let file_name = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let file_name = file_name.display().to_string();
    let mut differing = Vec::new();
    // Said once every key is in place: a reader that goes away must not stop the restore.
    let mut said = Vec::new();
    for key in keys {
        let KeyPurpose::Integration(name) = key.purpose().clone() else { continue };
        match context.vault.data_key(&name).await? {
            Some(held) if held.expose_secret() == key.expose_secret() => {
                said.push(format!("{name}: the vault holds this key already"));
            }
            Some(_) => {
                said.push(format!("{name}: the vault holds a different key; kept it"));
                differing.push(name);
            }
            None => {
                context.vault.put_data_key(&key).await?;
                let details = json!({
                    "backend": context.vault.kind().as_str(),
                    "file": file_name,
                });
                context
                    .record(&key_event("key.restored", Some(&name), details), "data key restored")
                    .await
                    .context("the key was restored but could not be recorded")?;
                said.push(format!("{name}: restored"));
            }
        }
    }
    for line in said {
        println!("{line}");
    }
    if !differing.is_empty() {
        anyhow::bail!(
            "the backup's key differs from the vault's for: {}; the vault's keys were kept \
             (destroy one first to restore the backup's)",
            differing.join(", ")
        );
    }
    Ok(())
}

async fn destroy(context: &super::Context, integration: &str, yes: bool) -> anyhow::Result<()> {
    if context.vault.data_key(integration).await?.is_none() {
        anyhow::bail!("integration `{integration}` has no data key");
    }
    eprintln!(
        "warning: destroying the data key of {integration} makes its encrypted fields \
         unreadable for good, in the database and in every backup of it, unless a key backup \
         (`datapunk keys backup`) still holds the key."
    );
    match context.vault.kind() {
        BackendKind::SecretService => eprintln!(
            "note: copies of the keyring file (~/.local/share/keyrings/) in home-directory \
             backups or snapshots keep the key, protected by the keyring's password."
        ),
        BackendKind::Pass => eprintln!(
            "note: if your password store is a git repository, its history keeps the key \
             (encrypted to your GnuPG key) until you rewrite it."
        ),
        BackendKind::EncryptedTable => eprintln!(
            "note: copies of the vault table in PostgreSQL's WAL, base backups or file-system \
             snapshots keep the key, sealed under the master key; `pg_dump` backups made as \
             datapunk_backup do not hold it."
        ),
    }
    confirm(yes, integration, &format!("destroy the data key of {integration}"))?;
    context.preflight().await?;

    let destroyed = context.vault.delete_data_key(integration).await?;
    let details = json!({ "backend": context.vault.kind().as_str() });
    context
        .record(&key_event("key.destroyed", Some(integration), details), "data key destroyed")
        .await
        .context("the key was destroyed but the audit event could not be recorded")?;
    if destroyed {
        println!("destroyed the data key of {integration}");
    }
    Ok(())
}

/// Asks the person to type `word` to go on with `action`, unless `yes`; without a terminal to
/// ask on, `--yes` is required.
pub(crate) fn confirm(yes: bool, word: &str, action: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to {action} without a terminal to confirm on; add --yes");
    }
    eprint!("type `{word}` to {action}: ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("cannot read the answer")?;
    if answer.trim() != word {
        anyhow::bail!("not confirmed; nothing was done");
    }
    Ok(())
}
