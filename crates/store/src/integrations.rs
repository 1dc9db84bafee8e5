//! Connected accounts: the rows of `datapunk.integrations` and their datasets.
//!
//! Nothing secret is stored here: the tokens are in the secret store. What is here lets
//! `datapunk integrations` answer while the keyring is locked, and lets sync know which
//! datasets it may read.

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::Error;

/// The state of an integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Connected and usable.
    Active,
    /// The grant is gone: the person must connect again.
    NeedsReauth,
    /// The keyring is locked, so the tokens cannot be read.
    KeyringLocked,
    /// Paused by the person.
    Paused,
    /// Disconnected and revoked.
    Revoked,
    /// A rotated refresh token could not be saved: nothing proceeds until it is.
    TokenUnsaved,
}

impl State {
    /// The name stored and shown: `active`, `needs_reauth`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
            Self::KeyringLocked => "keyring_locked",
            Self::Paused => "paused",
            Self::Revoked => "revoked",
            Self::TokenUnsaved => "token_unsaved",
        }
    }

    fn from_stored(name: &str) -> Result<Self, Error> {
        [
            Self::Active,
            Self::NeedsReauth,
            Self::KeyringLocked,
            Self::Paused,
            Self::Revoked,
            Self::TokenUnsaved,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
        .ok_or_else(|| Error::Data { reason: format!("unknown integration state {name:?}") })
    }
}

/// A dataset of an integration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Dataset {
    /// Its name: `calendar`, `saved-tracks`.
    pub name: String,
    /// The person chose it.
    pub consented: bool,
    /// The grant covers all of its scopes.
    pub granted: bool,
}

/// One connected account.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Integration {
    /// Its name, which also names its items in the secret store.
    pub name: String,
    /// `google`, `microsoft` or `spotify`.
    pub provider: String,
    /// The account's id at the provider, when it told.
    pub account_id: Option<String>,
    /// The account's display name, when the provider told.
    pub display_name: Option<String>,
    /// The scopes asked for.
    pub requested_scopes: Vec<String>,
    /// The scopes granted.
    pub granted_scopes: Vec<String>,
    /// Its state.
    pub state: State,
    /// When the stored access token expires.
    #[serde(with = "time::serde::rfc3339::option")]
    pub token_expires_at: Option<OffsetDateTime>,
    /// When the tokens were last refreshed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_refresh_at: Option<OffsetDateTime>,
    /// The last error, in words.
    pub last_error: Option<String>,
    /// Its datasets.
    pub datasets: Vec<Dataset>,
}

/// Records a newly connected integration, or a reconnection of the same one: everything but
/// the creation time is replaced, datasets included. The caller has checked that a
/// reconnection is to the same account.
///
/// # Errors
///
/// When the database refuses, such as for a name or dataset outside the rules.
pub async fn record_connected(client: &mut Client, integration: &Integration) -> Result<(), Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO datapunk.integrations (name, provider, account_id, display_name,
                 requested_scopes, granted_scopes, state, token_expires_at, last_refresh_at,
                 last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO UPDATE SET provider = excluded.provider,
                 account_id = excluded.account_id, display_name = excluded.display_name,
                 requested_scopes = excluded.requested_scopes,
                 granted_scopes = excluded.granted_scopes, state = excluded.state,
                 token_expires_at = excluded.token_expires_at,
                 last_refresh_at = excluded.last_refresh_at, last_error = excluded.last_error,
                 updated_at = now()",
            &[
                &integration.name,
                &integration.provider,
                &integration.account_id,
                &integration.display_name,
                &integration.requested_scopes,
                &integration.granted_scopes,
                &integration.state.as_str(),
                &integration.token_expires_at,
                &integration.last_refresh_at,
                &integration.last_error,
            ],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM datapunk.integration_datasets WHERE integration = $1",
            &[&integration.name],
        )
        .await?;
    for dataset in &integration.datasets {
        transaction
            .execute(
                "INSERT INTO datapunk.integration_datasets (integration, dataset, consented,
                     granted) VALUES ($1, $2, $3, $4)",
                &[&integration.name, &dataset.name, &dataset.consented, &dataset.granted],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// The integration called `name`, if there is one.
///
/// # Errors
///
/// When the database cannot be read.
pub async fn get(client: &Client, name: &str) -> Result<Option<Integration>, Error> {
    Ok(list_where(client, Some(name)).await?.into_iter().next())
}

/// Every integration, by name.
///
/// # Errors
///
/// When the database cannot be read.
pub async fn list(client: &Client) -> Result<Vec<Integration>, Error> {
    list_where(client, None).await
}

async fn list_where(client: &Client, name: Option<&str>) -> Result<Vec<Integration>, Error> {
    let rows = client
        .query(
            "SELECT name, provider, account_id, display_name, requested_scopes, granted_scopes,
                    state, token_expires_at, last_refresh_at, last_error
             FROM datapunk.integrations
             WHERE $1::text IS NULL OR name = $1
             ORDER BY name",
            &[&name],
        )
        .await?;
    let datasets = client
        .query(
            "SELECT integration, dataset, consented, granted FROM datapunk.integration_datasets
             WHERE $1::text IS NULL OR integration = $1
             ORDER BY integration, dataset",
            &[&name],
        )
        .await?;

    rows.iter()
        .map(|row| {
            let name: String = row.get(0);
            let datasets = datasets
                .iter()
                .filter(|d| d.get::<_, &str>(0) == name)
                .map(|d| Dataset { name: d.get(1), consented: d.get(2), granted: d.get(3) })
                .collect();
            Ok(Integration {
                provider: row.get(1),
                account_id: row.get(2),
                display_name: row.get(3),
                requested_scopes: row.get(4),
                granted_scopes: row.get(5),
                state: State::from_stored(row.get(6))?,
                token_expires_at: row.get(7),
                last_refresh_at: row.get(8),
                last_error: row.get(9),
                datasets,
                name,
            })
        })
        .collect()
}

/// Sets the state of `name`, with the error that led there (or `None`); `false` when there is
/// no such integration.
///
/// # Errors
///
/// When the database refuses.
pub async fn set_state(
    client: &Client,
    name: &str,
    state: State,
    last_error: Option<&str>,
) -> Result<bool, Error> {
    let updated = client
        .execute(
            "UPDATE datapunk.integrations SET state = $2, last_error = $3, updated_at = now()
             WHERE name = $1",
            &[&name, &state.as_str(), &last_error],
        )
        .await?;
    Ok(updated == 1)
}

/// Records a successful refresh of `name`'s tokens: the new expiry, now as the last refresh,
/// no error, and the state back to `active` unless the person or the provider put it
/// elsewhere (`paused`, `needs_reauth`, `revoked`) meanwhile.
///
/// # Errors
///
/// When the database refuses.
pub async fn record_refresh(
    client: &Client,
    name: &str,
    expires_at: OffsetDateTime,
) -> Result<(), Error> {
    client
        .execute(
            "UPDATE datapunk.integrations
             SET token_expires_at = $2, last_refresh_at = now(), last_error = NULL,
                 state = CASE WHEN state IN ('keyring_locked', 'token_unsaved') THEN 'active'
                              ELSE state END,
                 updated_at = now()
             WHERE name = $1",
            &[&name, &expires_at],
        )
        .await?;
    Ok(())
}

/// Moves `name` to `to` with `last_error`, but only from one of the states in `from`; `true`
/// when it moved. Concurrent callers cannot both move it: the row is updated once.
///
/// # Errors
///
/// When the database refuses.
pub async fn transition(
    client: &Client,
    name: &str,
    from: &[State],
    to: State,
    last_error: Option<&str>,
) -> Result<bool, Error> {
    let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
    let updated = client
        .execute(
            "UPDATE datapunk.integrations SET state = $3, last_error = $4, updated_at = now()
             WHERE name = $1 AND state = ANY($2)",
            &[&name, &from, &to.as_str(), &last_error],
        )
        .await?;
    Ok(updated == 1)
}

/// Notes `last_error` for `name` without changing its state, such as a provider that is
/// unavailable for now.
///
/// # Errors
///
/// When the database refuses.
pub async fn note_error(client: &Client, name: &str, last_error: &str) -> Result<(), Error> {
    client
        .execute(
            "UPDATE datapunk.integrations SET last_error = $2, updated_at = now()
             WHERE name = $1",
            &[&name, &last_error],
        )
        .await?;
    Ok(())
}

/// The advisory-lock class of token refreshes: the first key of the two-key lock, the second
/// being a hash of the integration's name.
const TOKEN_LOCK_CLASS: i32 = 0x4450_4b31;

/// Takes the lock that makes one refresh of `name`'s tokens at a time, across processes,
/// until `transaction` ends; waits at most `wait` for another holder.
///
/// The lock is transaction-scoped on purpose: a holder that dies or is cancelled cannot leave
/// it taken on a pooled connection, since the transaction ends with it.
///
/// # Errors
///
/// When the wait runs out (the error says the lock was busy) or the database refuses.
pub async fn lock_token_refresh(
    transaction: &tokio_postgres::Transaction<'_>,
    name: &str,
    wait: std::time::Duration,
) -> Result<(), Error> {
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1);
    // SET LOCAL takes no parameters; set_config(..., true) is its parameterized form.
    transaction
        .execute("SELECT set_config('lock_timeout', $1, true)", &[&format!("{millis}ms")])
        .await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&TOKEN_LOCK_CLASS, &name])
        .await?;
    Ok(())
}
