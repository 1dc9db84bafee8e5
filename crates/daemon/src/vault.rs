//! The secret store as the daemon and the CLI use it: opened as `[vault]` says, and watched.
//!
//! [`open`] makes the [`Vault`] of the configuration. Opening connects to nothing: a keyring
//! that is locked or not there yet is not a reason to refuse to start. [`watch`] then asks the
//! store for its state, at once and every [`POLL_READY`] while it is usable, and with a
//! backoff from [`RETRY_FIRST`] to [`RETRY_MAX`] while it is not. Each change is reported in
//! `STATUS=`, in `datapunk status` and in the audit trail (`vault.state`), so that a keyring
//! locked in the middle of the day reads `keyring locked` instead of a crash, and the daemon
//! carries on by itself once the user unlocks it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use datapunk_config::{Config, VaultBackend};
use datapunk_store::audit::Outcome;
use datapunk_vault::backend::{
    BackendKind, MasterKeySource, PassOptions, SecretServiceOptions, Vault, VaultState,
};
use serde_json::json;
use tokio::sync::watch;

use crate::audit::event;
use crate::database::Database;
use crate::service::Shared;

/// How often a usable store is asked whether it still is.
pub const POLL_READY: Duration = Duration::from_secs(5);
/// The first wait before asking an unusable store again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts on an unusable store.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Makes the vault `config` names. The `encrypted-table` backend reads its master key now and
/// keeps its records in `database`.
///
/// # Errors
///
/// When the master key of the `encrypted-table` backend cannot be read.
pub fn open(config: &Config, database: &Database) -> anyhow::Result<Vault> {
    let vault = match &config.vault.backend {
        VaultBackend::SecretService => Vault::secret_service(SecretServiceOptions::default()),
        VaultBackend::Pass { store_dir, gnupg_home } => Vault::pass(PassOptions {
            store_dir: store_dir.clone(),
            gnupg_home: gnupg_home.clone(),
            ..PassOptions::default()
        }),
        VaultBackend::EncryptedTable { master_key } => {
            let env = datapunk_config::Environment::from_process();
            let path = master_key
                .path(env.credentials_directory.as_deref(), "vault.master_key_file")
                .map_err(|problem| {
                    anyhow::anyhow!("cannot open the encrypted-table vault: {problem}")
                })?;
            let source = MasterKeySource::File(path);
            Vault::encrypted_table(database.store().clone(), &source)
                .context("cannot open the encrypted-table vault")?
        }
    };
    Ok(vault.with_timeout(config.vault.timeout))
}

/// What a backend is called in a sentence: `keyring locked`, `password store ready`.
pub fn noun(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::SecretService => "keyring",
        BackendKind::Pass => "password store",
        BackendKind::EncryptedTable => "vault table",
    }
}

/// Watches the vault's state until `stop` turns true; see the [module documentation](self).
pub(crate) async fn watch(shared: Arc<Shared>, vault: Arc<Vault>, mut stop: watch::Receiver<bool>) {
    let mut retry = RETRY_FIRST;
    loop {
        let state = tokio::select! {
            state = vault.state() => state,
            _ = stop.changed() => return,
        };
        let wait = if state == VaultState::Ready {
            retry = RETRY_FIRST;
            POLL_READY
        } else {
            let wait = retry;
            retry = (retry * 2).min(RETRY_MAX);
            wait
        };
        observe(&shared, vault.kind(), state).await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Takes in a state found by [`watch`]: when it differs from the last one, updates the status
/// and records the change.
async fn observe(shared: &Shared, kind: BackendKind, state: VaultState) {
    let Some(previous) = shared.set_vault_state(&state).await else {
        return;
    };
    // One constant message per state; the backend and the reason are fields.
    let message = match state {
        VaultState::Ready => "vault ready",
        VaultState::Locked => "vault locked",
        VaultState::Unavailable { .. } => "vault unavailable",
    };
    match &state {
        VaultState::Ready => tracing::info!(backend = kind.as_str(), previous, "{message}"),
        VaultState::Locked => {
            tracing::warn!(backend = kind.as_str(), previous, "{message}; retrying with backoff");
        }
        VaultState::Unavailable { reason } => tracing::warn!(
            backend = kind.as_str(),
            previous,
            reason = reason.as_str(),
            "{message}; retrying with backoff"
        ),
    }
    let reason = match &state {
        VaultState::Unavailable { reason } => Some(reason.as_str()),
        _ => None,
    };
    let outcome = if state == VaultState::Ready { Outcome::Success } else { Outcome::Failure };
    let details = json!({
        "backend": kind.as_str(),
        "state": state.as_str(),
        "previous": previous,
        "reason": reason,
    });
    shared.record(&event("daemon", "vault.state", outcome, details), message).await;
}
