//! `datapunk db password ROLE --password-file FILE`: give a login role the password that a
//! server authenticating with SCRAM asks for, such as PostgreSQL in a rootless container,
//! where peer authentication cannot see who connects.
//!
//! Only the SCRAM-SHA-256 verifier reaches the server (RFC 5802 section 3 with SHA-256, RFC
//! 7677; PostgreSQL's `rolpassword` format), computed here as psql's `\password` does. The
//! password itself is never part of a statement, so it cannot end up in the server log,
//! `pg_stat_activity` or `pg_stat_statements`. A role whose stored verifier already matches the
//! password is left alone: run at every boot, the command changes and records nothing.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::ValueEnum;
use datapunk_config::Config;
use datapunk_daemon::audit::event;
use datapunk_store::Role;
use datapunk_store::audit::Outcome;
use hmac::{Hmac, Mac as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The roles that log in, and so may have a password.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LoginRole {
    /// datapunk_app, the daemon's role.
    App,
    /// datapunk_reader, for read-only commands and `db shell`.
    Reader,
    /// datapunk_backup, for `backup create`.
    Backup,
}

impl LoginRole {
    fn role(self) -> Role {
        match self {
            Self::App => Role::App,
            Self::Reader => Role::Reader,
            Self::Backup => Role::Backup,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct PasswordArgs {
    /// The role whose password to set.
    #[arg(value_enum)]
    role: LoginRole,
    /// A file holding the password on its first line, readable by no other user, such as
    /// `$CREDENTIALS_DIRECTORY/NAME` in a unit that loads it with `LoadCredential=`.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    #[command(flatten)]
    admin: super::AdminArgs,
}

pub(super) async fn run(config: &Config, args: &PasswordArgs) -> anyhow::Result<()> {
    let role = args.role.role();
    let password = read_password(&args.password_file)?;
    let auditor = super::super::auditor(config)?;
    let name = &config.database.name;

    let changed = super::with_admin(config, &args.admin, "password", async |conninfo| {
        let client = super::admin_client(conninfo, name).await?;
        let stored = client
            .query_opt("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&role.name()])
            .await;
        match stored {
            Ok(None) => anyhow::bail!("role {role} does not exist: run `datapunk db init` first"),
            Ok(Some(row)) => {
                let verifier: Option<String> = row.get(0);
                if verifier.is_some_and(|v| verifies(&v, &password)) {
                    return Ok(false);
                }
            }
            // Only a superuser reads pg_authid; another administrator sets it every time.
            Err(_) => {}
        }

        let verifier = postgres_protocol::password::scram_sha_256(&password);
        // Base64, digits and `$:`: nothing that could end the literal.
        debug_assert!(verifier.chars().all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c)));
        client
            .batch_execute(&format!("ALTER ROLE {role} PASSWORD '{verifier}'"))
            .await
            .with_context(|| format!("failed to set the password of {role}"))?;
        let details = json!({ "role": role.name() });
        let event = event("cli", "database.password", Outcome::Success, details);
        auditor.record(&client, &event, "database role password set").await?;
        Ok(true)
    })
    .await?;

    if changed {
        println!("set the password of {role}");
    } else {
        println!("the password of {role} is unchanged");
    }
    Ok(())
}

/// The password in `path`, without its line ending; as strict as the daemon is with
/// `database.password_file`.
fn read_password(path: &Path) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {shown}"))?;
    if metadata.permissions().mode() & 0o007 != 0 {
        anyhow::bail!("{shown} can be read by other users; run `chmod o-rwx` on it");
    }
    let mut password = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    while password.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        password.pop();
    }
    if password.is_empty() {
        anyhow::bail!("{shown} is empty");
    }
    Ok(password)
}

/// Whether `verifier` (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) was made
/// from `password`. The password is compared as bytes, without SASLprep: a password that
/// SASLprep would change is then set again, which is harmless.
fn verifies(verifier: &str, password: &[u8]) -> bool {
    let parts = verifier
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|rest| rest.split_once('$'))
        .and_then(|(params, keys)| Some((params.split_once(':')?, keys.split_once(':')?)));
    let Some(((iterations, salt), (stored_key, _))) = parts else { return false };
    let (Ok(iterations), Ok(salt), Ok(stored_key)) =
        (iterations.parse::<u32>(), STANDARD.decode(salt), STANDARD.decode(stored_key))
    else {
        return false;
    };
    // PostgreSQL writes 4096 by default; far more would only make this check slow.
    if !(1..=1_000_000).contains(&iterations) {
        return false;
    }

    // SaltedPassword := Hi(password, salt, i), PBKDF2 with HMAC-SHA-256 and one block.
    let mut u = hmac(password, &[&salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        salted.iter_mut().zip(u).for_each(|(s, b)| *s ^= b);
    }
    let client_key = hmac(&salted, &[b"Client Key"]);

    Sha256::digest(client_key).as_slice() == stored_key.as_slice()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::verifies;

    #[test]
    fn a_verifier_matches_the_password_it_was_made_from_and_no_other() {
        let verifier = postgres_protocol::password::scram_sha_256(b"correct horse");

        assert!(verifies(&verifier, b"correct horse"));
        assert!(!verifies(&verifier, b"correct horse "));
        assert!(!verifies("md5d41d8cd98f00b204e9800998ecf8427e", b"correct horse"));
        assert!(!verifies("SCRAM-SHA-256$4096:bm90IGJhc2U2NA", b"correct horse"));
    }
}
