//! Which account a token belongs to, and what an API's answer to a bearer token means.
//!
//! Each provider has an endpoint that describes the account behind an access token: Google's
//! OpenID Connect userinfo (`sub`, the stable id, and `email`), Microsoft Graph's `/me` (`id`,
//! `displayName`) and Spotify's `/me` (`id`, `display_name`). `datapunk connect` reads it to
//! record the account and to refuse reconnecting an integration to another one; the daemon
//! reads it to check that a connection still works.
//!
//! [`ApiError`] sorts a data API's answer the way every caller needs it sorted: 401 means
//! the access token is no longer good (refresh once and try again), 429 and 5xx mean later,
//! and anything else is a refusal to report. No error carries a response body.

use std::time::Duration;

use datapunk_vault::secret::SecretString;
use serde::Deserialize;

use crate::provider::Provider;
use crate::token::TokenClient;

/// The largest account description read; the real ones are well under 4 KiB.
const MAX_BODY: usize = 64 * 1024;

/// The account behind a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The provider's stable id of the account (Google's `sub`, not the address, which can
    /// change).
    pub id: String,
    /// What the person is called there: the address at Google, the display name elsewhere.
    pub display_name: Option<String>,
}

/// Why a data API call gave nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The configured URL is unusable.
    #[error(
        "the provider's {what} endpoint is unusable: it must be an https URL (http only on 127.0.0.1)"
    )]
    Endpoint {
        /// Which endpoint.
        what: &'static str,
    },
    /// 401: the access token is expired or revoked.
    #[error("the provider did not accept the access token (HTTP 401)")]
    Unauthorized,
    /// 429, 5xx or no answer: try again later, after `retry_after` when the provider said.
    #[error("the provider is unavailable{}; trying again later", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Retry {
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The provider's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// Another refusal, such as 403 for a scope that was not granted.
    #[error("the provider refused the request (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// A success whose body could not be read.
    #[error("the provider answered something unreadable: {reason}")]
    Malformed {
        /// What was wrong, never the body itself.
        reason: &'static str,
    },
}

impl TokenClient {
    /// Asks the provider's account endpoint `url` who `access_token` belongs to.
    ///
    /// # Errors
    ///
    /// As described on [`ApiError`].
    pub async fn account(
        &self,
        provider: Provider,
        url: &str,
        access_token: &SecretString,
    ) -> Result<Account, ApiError> {
        let url = crate::token::checked_url(url).ok_or(ApiError::Endpoint { what: "account" })?;
        let body = self.get_json(url, access_token).await?;
        parse(provider, &body)
    }

    /// GETs `url` with `access_token` as the bearer and returns the body of a success.
    async fn get_json(
        &self,
        url: url::Url,
        access_token: &SecretString,
    ) -> Result<Vec<u8>, ApiError> {
        let mut response = self
            .http()
            .get(url)
            .bearer_auth(access_token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|_| ApiError::Retry { status: None, retry_after: None })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            401 => return Err(ApiError::Unauthorized),
            429 | 500..=599 => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Err(ApiError::Retry { status: Some(status), retry_after });
            }
            _ => return Err(ApiError::Refused { status }),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| ApiError::Retry { status: Some(status), retry_after: None })?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::Malformed { reason: "the answer is too large" });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Deserialize)]
struct GoogleUserinfo {
    sub: String,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    display_name: Option<String>,
    user_principal_name: Option<String>,
}

#[derive(Deserialize)]
struct SpotifyUser {
    id: String,
    display_name: Option<String>,
}

/// Reads a provider's account description.
fn parse(provider: Provider, body: &[u8]) -> Result<Account, ApiError> {
    let unreadable = |_| ApiError::Malformed {
        reason: "the account description is not JSON of the documented shape",
    };
    let (id, display_name) = match provider {
        Provider::Google => {
            let user: GoogleUserinfo = serde_json::from_slice(body).map_err(unreadable)?;
            (user.sub, user.email)
        }
        Provider::Microsoft => {
            let user: GraphUser = serde_json::from_slice(body).map_err(unreadable)?;
            (user.id, user.display_name.or(user.user_principal_name))
        }
        Provider::Spotify => {
            let user: SpotifyUser = serde_json::from_slice(body).map_err(unreadable)?;
            (user.id, user.display_name)
        }
    };
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::Malformed {
            reason: "the account id is empty, too long or not text",
        });
    }
    let display_name = display_name
        .map(|name| name.chars().filter(|c| !c.is_control()).take(256).collect::<String>())
        .filter(|name| !name.is_empty());
    Ok(Account { id, display_name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_s_documented_shape_is_read() {
        let google = br#"{"sub":"1083","email":"a@example.com","email_verified":true}"#;
        assert_eq!(
            parse(Provider::Google, google),
            Ok(Account { id: "1083".into(), display_name: Some("a@example.com".into()) })
        );
        let graph = br#"{"@odata.context":"x","id":"6f1e","displayName":null,"userPrincipalName":"u@example.com"}"#;
        assert_eq!(
            parse(Provider::Microsoft, graph),
            Ok(Account { id: "6f1e".into(), display_name: Some("u@example.com".into()) })
        );
        let spotify = br#"{"id":"alice","display_name":"Alice\u0007","type":"user"}"#;
        assert_eq!(
            parse(Provider::Spotify, spotify),
            Ok(Account { id: "alice".into(), display_name: Some("Alice".into()) })
        );
    }

    #[test]
    fn bodies_without_an_id_are_refused_without_being_repeated() {
        for (provider, body) in [
            (Provider::Google, &br#"{"email":"secret-ish"}"#[..]),
            (Provider::Spotify, br#"{"id":""}"#),
            (Provider::Microsoft, b"<html>secret-ish</html>"),
        ] {
            let error = parse(provider, body).expect_err("no usable id");
            assert!(matches!(error, ApiError::Malformed { .. }), "{error:?}");
            assert!(!error.to_string().contains("secret-ish"), "{error}");
        }
    }
}
