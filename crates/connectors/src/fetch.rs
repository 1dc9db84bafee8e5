//! Requests to the providers' data APIs: the bearer token, the one retry after a 401, and
//! throttling, server errors and timeouts retried a bounded number of times.

use std::time::Duration;

use datapunk_vault::secret::SecretString;

/// Where a connector gets access tokens and its HTTP client: the daemon's token keeper.
pub trait TokenSource: Send + Sync {
    /// The client all provider traffic goes through (`datapunk_oauth::token::TokenClient`).
    fn http(&self) -> &reqwest::Client;

    /// The base URL of the provider's data API (the configured `api_base`).
    fn api_base(&self) -> &str;

    /// A current access token.
    fn access(&self) -> impl Future<Output = Result<SecretString, FetchError>> + Send;

    /// A new access token after the API refused `rejected` with 401.
    fn after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> impl Future<Output = Result<SecretString, FetchError>> + Send;
}

/// Why a request did not produce a page. Messages name the dataset, the request (never with
/// its query, which may hold a sync token) and what was wrong, never a token or a field value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider dropped the sync token (Calendar 410 `fullSyncRequired`, People 400
    /// `EXPIRED_SYNC_TOKEN`, Graph 410 `SyncStateNotFound`): start a full round.
    #[error("the provider needs a full sync: {reason}")]
    ResyncRequired {
        /// The provider's reason code.
        reason: String,
    },
    /// Still throttled (429, Google's 403 rate-limit reasons) after the retries allowed.
    #[error("throttled by the provider")]
    Throttled {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Server errors or timeouts after the retries allowed.
    #[error("the provider is unavailable: {reason}")]
    Unavailable {
        /// What happened last.
        reason: String,
    },
    /// The answer could not be read: truncated or malformed JSON, a missing or mistyped field,
    /// an unknown value. Nothing from the page may be stored.
    #[error("unreadable answer from {what}: {reason}")]
    Malformed {
        /// Which request (dataset and endpoint, no query).
        what: String,
        /// What was wrong and where (a JSON path), without values.
        reason: String,
    },
    /// A refusal that retrying will not change (400, 403 other than rate limits, 404).
    #[error("{what} refused the request ({status}): {reason}")]
    Refused {
        /// Which request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The provider's error code.
        reason: String,
    },
    /// No access token: the token keeper's failure, as it described it.
    #[error("{0}")]
    Token(Box<dyn std::error::Error + Send + Sync>),
}
