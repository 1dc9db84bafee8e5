//! Access tokens on demand: refreshed before they expire, one refresh at a time.
//!
//! [`Keeper::access_token`] hands out the stored access token while it has more than
//! [`MARGIN`] left, and refreshes it otherwise; [`Keeper::after_unauthorized`] refreshes a
//! token an API refused with 401 even if it should still be good. A refresh follows these
//! rules, which together mean that no refresh token is ever lost:
//!
//! 1. **One at a time per integration**, across the daemon's tasks (an in-process lock) and
//!    every other process, the CLI included (a PostgreSQL advisory lock, held by a
//!    transaction so that it dies with its holder).
//! 2. **Re-read after the lock.** Whoever waited may find that the holder before it already
//!    refreshed, and then uses that token instead of spending the refresh token again (which
//!    Microsoft and Spotify have rotated, so the old one may be dead).
//! 3. **Save before use.** The new record, with a rotated refresh token, is written to the
//!    vault before the new access token is handed out. When that write fails the record is
//!    kept in memory, the integration goes to `token_unsaved`, and nothing proceeds until a
//!    later attempt saves it.
//! 4. **A gone grant stops everything.** `invalid_grant` (or another 4xx but 429) moves the
//!    integration to `needs_reauth` once: one audit row, one desktop notification, and no
//!    further token requests until the person connects again. 429, 5xx and timeouts are
//!    errors to retry later.
//!
//! Every refresh is audited: `token.refreshed` (with `rotated` and `rotation_saved`),
//! `token.refresh_failed`, `token.unsaved`, `integration.needs_reauth`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use datapunk_oauth::account::{Account, ApiError};
use datapunk_oauth::provider::Provider;
use datapunk_oauth::token::{TokenClient, TokenError};
use datapunk_store::Store;
use datapunk_store::audit::{Event, Outcome};
use datapunk_store::integrations::{self, Integration, State};
use datapunk_vault::backend::Vault;
use datapunk_vault::secret::{SecretString, TokenRecord};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::providers::ProviderClient;

/// How long before its expiry an access token is refreshed.
pub const MARGIN: Duration = Duration::from_secs(60);

/// How long a refresh waits for another process's refresh of the same integration.
pub const LOCK_WAIT: Duration = Duration::from_secs(45);

/// States in which tokens are handed out or refreshed.
const USABLE: [State; 3] = [State::Active, State::KeyringLocked, State::TokenUnsaved];

/// Where the keeper's audit events go: the daemon's auditor, or the CLI's.
pub trait Recorder: Send + Sync {
    /// Records `event` with the readable `message`; a failure is the recorder's to report.
    fn record<'a>(
        &'a self,
        event: Event,
        message: &'static str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A usable access token.
pub struct Access {
    /// The bearer token.
    pub token: SecretString,
    /// The integration's provider.
    pub provider: Provider,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// Why no access token was handed out. No variant carries a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFailure {
    /// There is no integration of that name.
    #[error("there is no integration `{name}`; see `datapunk integrations`")]
    NotConnected {
        /// The name asked for.
        name: String,
    },
    /// The integration is in a state that hands out no tokens.
    #[error("integration `{name}` is {}: {}", state.as_str(), advice(*state))]
    Unusable {
        /// Its name.
        name: String,
        /// Its state.
        state: State,
    },
    /// The grant is gone: connect again.
    #[error(
        "integration `{name}` needs to be connected again (`datapunk connect {provider}`): {reason}"
    )]
    GrantGone {
        /// Its name.
        name: String,
        /// Its provider.
        provider: Provider,
        /// What the provider said.
        reason: String,
    },
    /// Worth trying again later.
    #[error("{reason}")]
    Retry {
        /// What happened.
        reason: String,
        /// How long the provider asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// A refreshed record could not be saved; it is kept in memory until it can be.
    #[error(
        "the refreshed tokens of `{name}` could not be saved to the vault ({reason}); nothing \
         uses them until they are"
    )]
    Unsaved {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The vault could not be read.
    #[error(transparent)]
    Vault(#[from] datapunk_vault::backend::Error),
    /// The database could not be reached or refused.
    #[error(transparent)]
    Database(#[from] datapunk_store::Error),
    /// Something a person must fix in the configuration or the stored data.
    #[error("{0}")]
    Setup(String),
}

fn advice(state: State) -> &'static str {
    match state {
        State::NeedsReauth => "connect it again with `datapunk connect`",
        State::Revoked => "it was disconnected; connect it again to use it",
        State::Paused => "it is paused",
        State::KeyringLocked => "unlock the keyring",
        State::TokenUnsaved => "its refreshed tokens are not saved yet",
        State::Active => "it is active",
    }
}

impl TokenFailure {
    /// True when trying again later, without anyone acting, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Retry { .. } | Self::Unsaved { .. } | Self::Database(_) => true,
            Self::Vault(error) => error.is_retryable(),
            _ => false,
        }
    }
}

/// Hands out access tokens, refreshing them as described in the [module documentation](self).
pub struct Keeper {
    vault: Arc<Vault>,
    store: Store,
    http: TokenClient,
    clients: HashMap<Provider, ProviderClient>,
    component: &'static str,
    recorder: Arc<dyn Recorder>,
    locks: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    unsaved: tokio::sync::Mutex<HashMap<String, TokenRecord>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("component", &self.component).finish_non_exhaustive()
    }
}

impl Keeper {
    /// A keeper over `vault` and `store`, with the configured `clients`; `component` names
    /// the process in audit events (`daemon`, `cli`).
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be set up.
    pub fn new(
        vault: Arc<Vault>,
        store: Store,
        clients: Vec<ProviderClient>,
        component: &'static str,
        recorder: Arc<dyn Recorder>,
    ) -> Result<Self, TokenError> {
        Ok(Self {
            vault,
            store,
            http: TokenClient::new()?,
            clients: clients.into_iter().map(|client| (client.provider, client)).collect(),
            component,
            recorder,
            locks: StdMutex::new(HashMap::new()),
            unsaved: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The one HTTP client for provider traffic.
    pub fn http(&self) -> &TokenClient {
        &self.http
    }

    /// The endpoints configured for `provider`, if it has a client.
    pub fn endpoints(&self, provider: Provider) -> Option<&datapunk_oauth::provider::Endpoints> {
        self.clients.get(&provider).map(|client| &client.endpoints)
    }

    /// The vault the tokens (and the data keys) are in.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// An access token of `name` with more than [`MARGIN`] left, refreshed first if need be.
    ///
    /// # Errors
    ///
    /// As described on [`TokenFailure`].
    pub async fn access_token(&self, name: &str) -> Result<Access, TokenFailure> {
        self.obtain(name, None).await
    }

    /// A new access token of `name` after an API answered 401 to `rejected`: refreshed unless
    /// another caller already replaced that token.
    ///
    /// # Errors
    ///
    /// As described on [`TokenFailure`].
    pub async fn after_unauthorized(
        &self,
        name: &str,
        rejected: &SecretString,
    ) -> Result<Access, TokenFailure> {
        self.obtain(name, Some(rejected)).await
    }

    /// Asks the provider which account `name` is connected to, refreshing the token when it
    /// is due or refused once.
    ///
    /// # Errors
    ///
    /// As described on [`TokenFailure`]; an API refusal other than 401 is [`TokenFailure::Retry`]
    /// for 429 and 5xx and [`TokenFailure::Setup`] otherwise.
    pub async fn account(&self, name: &str) -> Result<Account, TokenFailure> {
        let access = self.access_token(name).await?;
        let url = &self.client(access.provider)?.endpoints.account;
        match self.http.account(access.provider, url, &access.token).await {
            Err(ApiError::Unauthorized) => {
                let access = self.after_unauthorized(name, &access.token).await?;
                self.http.account(access.provider, url, &access.token).await.map_err(api_failure)
            }
            result => result.map_err(api_failure),
        }
    }

    fn client(&self, provider: Provider) -> Result<&ProviderClient, TokenFailure> {
        self.clients.get(&provider).ok_or_else(|| {
            TokenFailure::Setup(format!(
                "no OAuth client is configured for {provider}: add a `[providers.{provider}]` \
                 table"
            ))
        })
    }

    async fn obtain(
        &self,
        name: &str,
        rejected: Option<&SecretString>,
    ) -> Result<Access, TokenFailure> {
        let integration = self.integration(name).await?;
        let provider = provider_of(&integration)?;
        if !self.unsaved.lock().await.contains_key(name) {
            let record = self.stored(&integration).await?;
            if fresh(&record, rejected) {
                if integration.state == State::KeyringLocked {
                    self.unlocked(name).await?;
                }
                return Ok(Access { token: record.access_token, provider });
            }
        }

        let lock = self.lock_for(name);
        let _in_process = lock.lock().await;
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(datapunk_store::Error::from)?;
        integrations::lock_token_refresh(&transaction, name, LOCK_WAIT).await.map_err(|_| {
            TokenFailure::Retry {
                reason: format!("another process is refreshing the tokens of `{name}`"),
                retry_after: None,
            }
        })?;

        // Whoever held the lock before may have refreshed, or found the grant gone.
        let integration = self.integration(name).await?;
        // Taken out first: `save` locks the map again when the vault still refuses.
        let pending = self.unsaved.lock().await.remove(name);
        if let Some(pending) = pending {
            return self.save(&integration, provider, pending, true).await;
        }
        let record = self.stored(&integration).await?;
        if fresh(&record, rejected) {
            return Ok(Access { token: record.access_token, provider });
        }

        let client = self.client(provider)?;
        let result =
            self.http.refresh(provider, &client.endpoints, &client.credentials, &record).await;
        let access = match result {
            Ok(tokens) => self.save(&integration, provider, tokens.record, tokens.rotated).await,
            Err(error) if error.is_grant_gone() => {
                Err(self.grant_gone(&integration, provider, &error).await)
            }
            Err(error) => Err(self.refresh_failed(&integration, &error).await),
        };
        // Ending the transaction releases the advisory lock; a failed commit ends it too.
        let _ = transaction.commit().await;
        access
    }

    async fn integration(&self, name: &str) -> Result<Integration, TokenFailure> {
        let client = self.store.client().await?;
        let integration = integrations::get(&client, name)
            .await?
            .ok_or_else(|| TokenFailure::NotConnected { name: name.to_owned() })?;
        if USABLE.contains(&integration.state) {
            Ok(integration)
        } else {
            Err(TokenFailure::Unusable { name: name.to_owned(), state: integration.state })
        }
    }

    /// The stored token record; a locked keyring marks the integration `keyring_locked`, and a
    /// missing record means it must be connected again.
    async fn stored(&self, integration: &Integration) -> Result<TokenRecord, TokenFailure> {
        match self.vault.token(&integration.name).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => {
                let provider = provider_of(integration)?;
                let error = TokenError::NoRefreshToken;
                Err(self.grant_gone(integration, provider, &error).await)
            }
            Err(error @ datapunk_vault::backend::Error::Locked { .. }) => {
                let client = self.store.client().await?;
                integrations::transition(
                    &client,
                    &integration.name,
                    &[State::Active],
                    State::KeyringLocked,
                    Some("the keyring is locked"),
                )
                .await?;
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn unlocked(&self, name: &str) -> Result<(), TokenFailure> {
        let client = self.store.client().await?;
        integrations::transition(&client, name, &[State::KeyringLocked], State::Active, None)
            .await?;
        Ok(())
    }

    /// Saves `record` before its access token is used; see the [module documentation](self).
    async fn save(
        &self,
        integration: &Integration,
        provider: Provider,
        record: TokenRecord,
        rotated: bool,
    ) -> Result<Access, TokenFailure> {
        let name = integration.name.as_str();
        let client = self.store.client().await?;
        if let Err(error) = self.vault.put_token(name, &record).await {
            let reason = error.to_string();
            self.unsaved.lock().await.insert(name.to_owned(), record);
            let moved = integrations::transition(
                &client,
                name,
                &[State::Active, State::KeyringLocked],
                State::TokenUnsaved,
                Some(&reason),
            )
            .await?;
            // Audited when it happens, not at every later attempt that finds it still so.
            if moved {
                let details =
                    json!({ "provider": provider.as_str(), "rotated": rotated, "reason": reason });
                self.audit(
                    name,
                    "token.unsaved",
                    Outcome::Failure,
                    details,
                    "refreshed tokens not saved",
                )
                .await;
            }
            return Err(TokenFailure::Unsaved { name: name.to_owned(), reason });
        }
        integrations::record_refresh(&client, name, record.expires_at).await?;
        let details = json!({
            "provider": provider.as_str(),
            "rotated": rotated,
            "rotation_saved": rotated,
            "expires_at": record.expires_at.format(&Rfc3339).ok(),
        });
        self.audit(name, "token.refreshed", Outcome::Success, details, "tokens refreshed").await;
        Ok(Access { token: record.access_token, provider })
    }

    /// Moves the integration to `needs_reauth`; the first caller to do so audits it and tells
    /// the person.
    async fn grant_gone(
        &self,
        integration: &Integration,
        provider: Provider,
        error: &TokenError,
    ) -> TokenFailure {
        let name = integration.name.as_str();
        let reason = error.to_string();
        let moved = match self.store.client().await {
            Ok(client) => {
                integrations::transition(&client, name, &USABLE, State::NeedsReauth, Some(&reason))
                    .await
            }
            Err(error) => Err(error),
        };
        match moved {
            Ok(true) => {
                tracing::warn!(
                    integration = name,
                    provider = provider.as_str(),
                    reason = reason.as_str(),
                    "the grant is gone; the integration needs connecting again"
                );
                let details = json!({ "provider": provider.as_str(), "reason": reason });
                self.audit(
                    name,
                    "integration.needs_reauth",
                    Outcome::Failure,
                    details,
                    "integration needs connecting again",
                )
                .await;
                let summary = format!("Datapunk: reconnect {name}");
                let body = format!(
                    "{provider} no longer accepts Datapunk's access to `{name}`, so it is not \
                     synced. Run: datapunk connect {provider} --name {name}"
                );
                crate::desktop::notify(&summary, &body).await;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, integration = name, "could not mark the integration as needing reconnection");
            }
        }
        TokenFailure::GrantGone { name: name.to_owned(), provider, reason }
    }

    async fn refresh_failed(&self, integration: &Integration, error: &TokenError) -> TokenFailure {
        let name = integration.name.as_str();
        let reason = error.to_string();
        tracing::warn!(integration = name, reason = reason.as_str(), "token refresh failed");
        if let Ok(client) = self.store.client().await {
            integrations::note_error(&client, name, &reason).await.ok();
        }
        let details = json!({ "provider": integration.provider, "reason": reason });
        self.audit(name, "token.refresh_failed", Outcome::Failure, details, "token refresh failed")
            .await;
        if error.is_retryable() {
            TokenFailure::Retry { reason, retry_after: None }
        } else {
            TokenFailure::Setup(reason)
        }
    }

    async fn audit(
        &self,
        name: &str,
        action: &str,
        outcome: Outcome,
        details: serde_json::Value,
        message: &'static str,
    ) {
        let mut event = crate::audit::event(self.component, action, outcome, details);
        event.integration = Some(name.to_owned());
        self.recorder.record(event, message).await;
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }
}

/// True when `record`'s access token has more than [`MARGIN`] left and is not the one an API
/// just refused.
fn fresh(record: &TokenRecord, rejected: Option<&SecretString>) -> bool {
    let refused =
        rejected.is_some_and(|r| r.expose_secret() == record.access_token.expose_secret());
    record.expires_at - MARGIN > OffsetDateTime::now_utc() && !refused
}

fn provider_of(integration: &Integration) -> Result<Provider, TokenFailure> {
    integration.provider.parse().map_err(|_| {
        TokenFailure::Setup(format!(
            "integration `{}` names an unknown provider {:?}",
            integration.name, integration.provider
        ))
    })
}

fn api_failure(error: ApiError) -> TokenFailure {
    match error {
        ApiError::Retry { retry_after, .. } => {
            TokenFailure::Retry { reason: error.to_string(), retry_after }
        }
        ApiError::Unauthorized => TokenFailure::Retry {
            reason: "the provider refused a freshly refreshed access token (HTTP 401)".to_owned(),
            retry_after: None,
        },
        other => TokenFailure::Setup(other.to_string()),
    }
}
