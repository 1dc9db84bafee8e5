//! `datapunk backup list` and `datapunk backup verify`.
//!
//! Verification has three levels, each run when it can be:
//!
//! 1. the file matches its manifest (size and SHA-256): catches truncation and any changed
//!    byte without a key;
//! 2. gpg parses it as an OpenPGP message whose session key is encrypted to the manifest's
//!    recipients (`gpg --list-packets --list-only`, public keys only);
//! 3. when a secret key can decrypt it, the whole file is decrypted with its integrity check,
//!    `pg_restore --list` reads the dump, and its tables are the manifest's. A secret key
//!    under a passphrase is unlocked through gpg-agent's pinentry when verify runs on a
//!    terminal; elsewhere, or when the person does not unlock it, the content is not checked
//!    and verify says why, as without a key.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use datapunk_config::Config;
use datapunk_store::audit::Outcome;
use datapunk_vault::backup::GpgOptions;
use serde_json::json;

use super::Trail;
use super::create::failure;
use super::files::{self, Manifest};

pub(super) fn list(config: &Config, dir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let dir = super::backup_dir(config, dir);
    let entries = files::list(&dir)?;
    if !json && entries.is_empty() {
        println!("no backups in {}", dir.display());
        return Ok(());
    }
    if !json {
        println!("{:<44}  {:>12}  {:<8}  TABLES", "FILE", "BYTES", "MANIFEST");
    }
    for entry in &entries {
        let name = entry.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let manifest = files::read_manifest(&entry.manifest_path()).ok();
        let size = std::fs::metadata(&entry.path).map(|m| m.len()).unwrap_or(0);
        if json {
            let line = json!({
                "file": entry.path.display().to_string(),
                "created_at": entry.time.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                "size": size,
                "manifest": manifest.is_some(),
                "sha256": manifest.as_ref().map(|m| m.sha256.clone()),
                "recipients": manifest.as_ref().map(|m| m.recipients.clone()),
                "tables": manifest.as_ref().map(|m| m.tables.clone()),
            });
            println!("{line}");
        } else {
            let state = if manifest.is_some() { "yes" } else { "missing" };
            let tables = manifest.map_or(0, |m| m.tables.len());
            println!("{name:<44}  {size:>12}  {state:<8}  {tables}");
        }
    }
    Ok(())
}

pub(super) async fn verify(
    config: &Config,
    file: Option<&Path>,
    latest: bool,
    dir: Option<&Path>,
) -> anyhow::Result<()> {
    let file = match (file, latest) {
        (Some(file), _) => file.to_path_buf(),
        (None, _) => {
            let dir = super::backup_dir(config, dir);
            let newest = files::list(&dir)?.into_iter().next();
            newest
                .map(|entry| entry.path)
                .with_context(|| format!("there is no backup in {} to verify", dir.display()))?
        }
    };
    let gpg = super::gpg_options(config);
    if let Some(passphrase) = &config.backup.passphrase_file {
        super::private_passphrase(passphrase)?;
    }
    let result = verify_file(&gpg, config.backup.passphrase_file.as_deref(), &file).await;

    let (trail, _) = Trail::open(config).await?;
    let details = match &result {
        Ok(report) => json!({
            "file": file.display().to_string(),
            "content_checked": report.content_checked,
        }),
        Err(error) => json!({ "file": file.display().to_string(), "error": format!("{error:#}") }),
    };
    let outcome = if result.is_ok() { Outcome::Success } else { Outcome::Failure };
    trail.record("backup.verify", outcome, details).await;
    trail.close().await;

    let report = result.with_context(|| format!("{} does not verify", file.display()))?;
    println!("{}: the file matches its manifest", file.display());
    println!("{}: {}", file.display(), report.encryption);
    match &report.content_checked {
        true => println!(
            "{}: decrypted intact; pg_restore reads it and lists the manifest's {} tables",
            file.display(),
            report.tables
        ),
        false if report.locked => println!(
            "{}: not decrypted (its secret key is here, but locked, and its passphrase was not \
             given: gpg-agent asks for it when verify runs on a terminal); the content was not \
             checked",
            file.display()
        ),
        false => println!(
            "{}: not decrypted (no {} for it here); the content was not checked",
            file.display(),
            if report.symmetric { "backup.passphrase_file" } else { "secret key" }
        ),
    }
    Ok(())
}

/// What a verification found.
pub(super) struct Report {
    /// What the OpenPGP check said.
    encryption: String,
    /// Whether the content was decrypted and read by pg_restore.
    pub(super) content_checked: bool,
    /// Whether the secret key is here but its passphrase was not given.
    locked: bool,
    /// The number of tables compared.
    tables: usize,
    /// Whether a passphrase, not a key pair, protects the backup.
    symmetric: bool,
}

/// Verifies `file` at every level it can; `passphrase` is `backup.passphrase_file`, for a
/// backup encrypted with a passphrase.
///
/// # Errors
///
/// A sentence saying which check failed.
pub(super) async fn verify_file(
    gpg: &GpgOptions,
    passphrase: Option<&Path>,
    file: &Path,
) -> anyhow::Result<Report> {
    let manifest = files::check_against_manifest(file)?;
    let encryption = check_packets(gpg, file, &manifest)?;
    let (gpg, file_owned) = (gpg.clone(), file.to_path_buf());
    let passphrase = passphrase.map(Path::to_path_buf);
    // Without the passphrase there is nothing to decrypt with, as without a secret key.
    let content = if manifest.symmetric && passphrase.is_none() {
        None
    } else {
        tokio::task::spawn_blocking(move || read_content(&gpg, passphrase.as_deref(), &file_owned))
            .await
            .context("the content check stopped")??
    };
    let (content, locked) = match content {
        None => (None, false),
        Some(Content::Tables(tables)) => (Some(tables), false),
        Some(Content::Locked) => (None, true),
    };
    let content_checked = content.is_some();
    if let Some(tables) = content {
        let expected: BTreeSet<&str> = manifest.tables.keys().map(String::as_str).collect();
        let found: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
        if expected != found {
            let missing: Vec<&&str> = expected.difference(&found).collect();
            let extra: Vec<&&str> = found.difference(&expected).collect();
            anyhow::bail!(
                "the dump's tables differ from the manifest's (missing {missing:?}, not listed \
                 {extra:?})"
            );
        }
    }
    Ok(Report {
        encryption,
        content_checked,
        locked,
        tables: manifest.tables.len(),
        symmetric: manifest.symmetric,
    })
}

/// Checks the OpenPGP packets of `file` against the manifest's encryption, without a secret
/// key, and returns a sentence for the person.
pub(super) fn check_packets(
    gpg: &GpgOptions,
    file: &Path,
    manifest: &Manifest,
) -> anyhow::Result<String> {
    let output = gpg
        .command()
        .args(["--batch", "--no-tty", "--list-only", "--list-packets", "--"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("cannot run gpg")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let key_ids: BTreeSet<String> = listing
        .lines()
        .filter(|line| line.starts_with(":pubkey enc packet:"))
        .filter_map(|line| line.split("keyid ").nth(1))
        .map(|id| id.trim().to_ascii_uppercase())
        .collect();
    let symmetric = listing.lines().any(|line| line.starts_with(":symkey enc packet:"));
    let data = listing
        .lines()
        .any(|line| line.starts_with(":encrypted data packet:") || line.starts_with(":aead"));
    if !data || (key_ids.is_empty() && !symmetric) {
        anyhow::bail!("gpg does not read it as an encrypted OpenPGP message");
    }
    if manifest.symmetric {
        if !symmetric || !key_ids.is_empty() {
            anyhow::bail!("the manifest says passphrase, but the file is encrypted otherwise");
        }
        return Ok("an OpenPGP message encrypted with a passphrase".to_owned());
    }
    if symmetric {
        anyhow::bail!("the file can also be opened with a passphrase, which Datapunk never adds");
    }
    // Which key ids the manifest's recipients have; only keys in the keyring can be looked up.
    let mut expected = BTreeSet::new();
    let mut unknown = Vec::new();
    for recipient in &manifest.recipients {
        let ids = key_ids_of(gpg, recipient)?;
        if ids.is_empty() {
            unknown.push(recipient.as_str());
        }
        expected.extend(ids);
    }
    let strangers: Vec<&String> = key_ids.iter().filter(|id| !expected.contains(*id)).collect();
    if unknown.is_empty() && !strangers.is_empty() {
        anyhow::bail!(
            "the file is encrypted to keys the manifest does not name: {}",
            strangers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !unknown.is_empty() {
        return Ok(format!(
            "an OpenPGP message encrypted to {} key(s); {} not in this keyring, so which keys \
             could not be checked",
            key_ids.len(),
            unknown.join(", ")
        ));
    }
    Ok(format!("an OpenPGP message encrypted to {}", manifest.recipients.join(", ")))
}

/// The long key ids (of the primary key and its subkeys) of the key `fingerprint`; none when
/// the keyring lacks it.
fn key_ids_of(gpg: &GpgOptions, fingerprint: &str) -> anyhow::Result<BTreeSet<String>> {
    let output = gpg
        .command()
        .args(["--batch", "--no-tty", "--with-colons", "--list-keys", "--", fingerprint])
        .stdin(Stdio::null())
        .output()
        .context("cannot run gpg")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(listing
        .lines()
        .filter(|line| line.starts_with("pub:") || line.starts_with("sub:"))
        .filter_map(|line| line.split(':').nth(4))
        .map(str::to_ascii_uppercase)
        .collect())
}

/// What decrypting a backup found, when a secret key for it is here.
enum Content {
    /// The tables whose data the dump holds.
    Tables(Vec<String>),
    /// The secret key is here, but under a passphrase no one gave.
    Locked,
}

/// Decrypts `file` whole (so that its integrity check runs) into `pg_restore --list`, and
/// says what it holds; `None` when no secret key here opens it. gpg-agent may ask for the
/// secret key's passphrase only when standard input is a terminal.
fn read_content(
    gpg: &GpgOptions,
    passphrase: Option<&Path>,
    file: &Path,
) -> anyhow::Result<Option<Content>> {
    use std::io::IsTerminal as _;
    let pinentry = if std::io::stdin().is_terminal() { "default" } else { "error" };
    let mut decrypt = gpg
        .command()
        .args(["--batch", "--no-tty", "--quiet", "--status-fd", "2"])
        .args(super::passphrase_args(passphrase, pinentry))
        .args(["--decrypt", "--"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run gpg")?;
    let mut list = std::process::Command::new("pg_restore")
        .arg("--list")
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| name == "PATH"))
        .env("LC_MESSAGES", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run pg_restore (install the PostgreSQL client)")?;

    let gpg_stderr = decrypt.stderr.take();
    let gpg_messages = std::thread::spawn(move || read_all(gpg_stderr));
    let listing = list.stdout.take();
    let listing = std::thread::spawn(move || read_all(listing));
    let list_stderr = list.stderr.take();
    let list_messages = std::thread::spawn(move || read_all(list_stderr));

    // Everything is read, also after pg_restore has what it needs, so that gpg reaches the
    // end of the message and its integrity check.
    let mut plain = decrypt.stdout.take().context("no output pipe")?;
    let mut into = list.stdin.take();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = plain.read(&mut buffer).context("cannot read gpg's output")?;
        if read == 0 {
            break;
        }
        if let Some(pipe) = &mut into
            && pipe.write_all(&buffer[..read]).is_err()
        {
            into = None;
        }
    }
    drop(into);
    let gpg_status = decrypt.wait().context("cannot wait for gpg")?;
    let list_status = list.wait().context("cannot wait for pg_restore")?;
    let gpg_messages = gpg_messages.join().unwrap_or_default();
    let listing = listing.join().unwrap_or_default();
    let list_messages = list_messages.join().unwrap_or_default();

    let status: Vec<&str> =
        gpg_messages.lines().filter_map(|line| line.strip_prefix("[GNUPG:] ")).collect();
    let has = |keyword: &str| status.iter().any(|line| line.split(' ').next() == Some(keyword));
    if has("NO_SECKEY") && !has("DECRYPTION_OKAY") {
        return Ok(None);
    }
    // gpg found the secret key (it says which it considered, and not that one is missing)
    // yet never got the session key out of it (no DECRYPTION_KEY, nothing decrypted): its
    // passphrase was not given. A file damaged after that point says more, and fails below.
    let no_session_key = ["DECRYPTION_KEY", "DECRYPTION_INFO", "PLAINTEXT", "BADMDC"]
        .iter()
        .all(|keyword| !has(keyword));
    if passphrase.is_none()
        && has("KEY_CONSIDERED")
        && has("DECRYPTION_FAILED")
        && !has("DECRYPTION_OKAY")
        && no_session_key
    {
        return Ok(Some(Content::Locked));
    }
    if !gpg_status.success() || !has("DECRYPTION_OKAY") || has("BADMDC") {
        return Err(failure("gpg", gpg_status, &gpg_messages))
            .context("the file does not decrypt intact");
    }
    if !list_status.success() {
        return Err(failure("pg_restore", list_status, &list_messages))
            .context("pg_restore cannot read the decrypted dump");
    }
    Ok(Some(Content::Tables(tables_in(&listing))))
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut all = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut all);
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The `schema.table` of every `TABLE DATA` entry in a `pg_restore --list`.
pub(super) fn tables_in(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|line| !line.starts_with(';'))
        .filter_map(|line| line.split_once(" TABLE DATA "))
        .filter_map(|(_, rest)| {
            let mut words = rest.split_whitespace();
            Some(format!("{}.{}", words.next()?, words.next()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_list_is_read_from_pg_restore() {
        let listing = ";\n; Archive created at 2026-12-04\n;\n\
            3345; 0 16390 TABLE DATA datapunk audit datapunk_owner\n\
            3346; 0 16400 TABLE DATA datapunk schema_migrations datapunk_owner\n\
            214; 1259 16390 TABLE datapunk audit datapunk_owner\n";
        assert_eq!(tables_in(listing), ["datapunk.audit", "datapunk.schema_migrations"]);
    }
}
