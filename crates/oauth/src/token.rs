//! The token endpoint: exchanging a code, refreshing, and what each failure means.
//!
//! [`TokenClient`] is the one HTTP client for provider traffic: rustls, a 10 s connect and
//! 30 s overall timeout, redirects never followed (a token request answered with a redirect
//! is an error, not a reason to send the credentials elsewhere), and a `User-Agent` naming
//! Datapunk and its version. Endpoints must be `https`, except on the loopback interface where
//! the provider sandbox and test servers run.
//!
//! A response becomes a [`TokenRecord`] with the absolute expiry computed on receipt. A
//! refresh that comes back without a refresh token keeps the one that was used, as Google and
//! sometimes Spotify expect; one that comes back with a new one says so
//! ([`Tokens::rotated`]), and the caller saves it before it uses the new access token.
//!
//! Failures follow the caller's decision ([`TokenError::is_grant_gone`],
//! [`TokenError::is_retryable`]): `invalid_grant` and other 4xx answers except 429 mean the
//! grant is gone and the person must connect again; 429, 5xx, timeouts and unreadable bodies
//! are worth retrying later. No error carries a response body: a malformed one may hold a
//! token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use datapunk_vault::secret::{SecretString, TokenRecord};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RedirectUrl, RefreshToken, RequestTokenError, TokenResponse as _, TokenUrl,
};
use time::OffsetDateTime;
use url::Url;

use crate::authorize::Granted;
use crate::provider::{ClientAuth, Endpoints, Provider};

/// The overall time limit of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The time limit for connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client registered with a provider: its id, and its secret when it has one.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id, from the configuration.
    pub id: String,
    /// The client secret, read from a file or a systemd credential.
    pub secret: Option<SecretString>,
}

/// What the token endpoint gave.
#[derive(Debug)]
pub struct Tokens {
    /// The token record to store: access token, refresh token, absolute expiry, scopes.
    pub record: TokenRecord,
    /// The space-separated scopes the response listed, `None` when it listed none (granted as
    /// asked).
    pub granted_scopes: Option<String>,
    /// True when the response carried a refresh token other than the one that was used: the
    /// old one may be dead already, so the record must be saved before anything else.
    pub rotated: bool,
}

/// The one HTTP client for provider traffic; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
}

impl TokenClient {
    /// Builds the client.
    ///
    /// # Errors
    ///
    /// When the TLS backend cannot be set up.
    pub fn new() -> Result<Self, TokenError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("Datapunk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| TokenError::Setup)?;
        Ok(Self { http })
    }

    /// Exchanges the code of an accepted redirect for tokens.
    ///
    /// # Errors
    ///
    /// As described on [`TokenError`].
    pub async fn exchange(
        &self,
        provider: Provider,
        endpoints: &Endpoints,
        credentials: &Credentials,
        granted: Granted,
    ) -> Result<Tokens, TokenError> {
        let client = oauth_client(provider, endpoints, credentials)?
            .set_redirect_uri(RedirectUrl::from_url(granted.redirect_uri.clone()));

        let status = Arc::new(AtomicU16::new(0));
        let http = self.recording(&status);
        let result = client
            .exchange_code(granted.code)
            .set_pkce_verifier(granted.verifier)
            .request_async(&http)
            .await;
        let response = classify(result, status.load(Ordering::Relaxed))?;
        Ok(tokens(response, None, &granted.requested_scopes))
    }

    /// Refreshes `current`, keeping its refresh token when the response carries none.
    ///
    /// # Errors
    ///
    /// [`TokenError::NoRefreshToken`] when `current` has none; otherwise as described on
    /// [`TokenError`].
    pub async fn refresh(
        &self,
        provider: Provider,
        endpoints: &Endpoints,
        credentials: &Credentials,
        current: &TokenRecord,
    ) -> Result<Tokens, TokenError> {
        let Some(refresh_token) = &current.refresh_token else {
            return Err(TokenError::NoRefreshToken);
        };
        let client = oauth_client(provider, endpoints, credentials)?;

        let status = Arc::new(AtomicU16::new(0));
        let http = self.recording(&status);
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let result = client.exchange_refresh_token(&token).request_async(&http).await;
        let response = classify(result, status.load(Ordering::Relaxed))?;
        Ok(tokens(response, Some(refresh_token), &current.scopes))
    }

    /// Revokes `token` at the RFC 7009 endpoint `revoke_url` (`token=...` form-encoded, with
    /// the client's id, and its secret when it has one). Google answers 200 for a token it
    /// revoked and 400 `invalid_token` for one it does not know, which counts as revoked too:
    /// either way the token no longer works.
    ///
    /// # Errors
    ///
    /// [`TokenError::Endpoint`] for an unusable URL; [`TokenError::Retry`] when the endpoint
    /// cannot be reached or answers 429 or 5xx; [`TokenError::GrantGone`] for another refusal.
    pub async fn revoke(
        &self,
        revoke_url: &str,
        credentials: &Credentials,
        token: &SecretString,
    ) -> Result<(), TokenError> {
        let url = endpoint(revoke_url)?;
        let mut form = vec![
            ("token", token.expose_secret().to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
            ("client_id", credentials.id.clone()),
        ];
        if let Some(secret) = &credentials.secret {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self
            .http
            .post(url.url().clone())
            .form(&form)
            .send()
            .await
            .map_err(|_| TokenError::Retry { status: None })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        if status == 429 || status >= 500 {
            return Err(TokenError::Retry { status: Some(status) });
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match body.get("error").and_then(serde_json::Value::as_str) {
            Some("invalid_token") => Ok(()),
            Some(error) => Err(TokenError::GrantGone { error: printable(error), status }),
            None => Err(TokenError::GrantGone { error: "unreadable error".to_owned(), status }),
        }
    }

    /// The underlying HTTP client, for the provider's data APIs.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request function for oauth2 that sends through this client and notes the status,
    /// which oauth2's errors do not keep.
    fn recording(&self, status: &Arc<AtomicU16>) -> impl Fn(HttpRequest) -> Sent + use<> {
        let (http, status) = (self.http.clone(), Arc::clone(status));
        move |request: HttpRequest| {
            let (http, status) = (http.clone(), Arc::clone(&status));
            Box::pin(async move {
                let response = oauth2::AsyncHttpClient::call(&http, request).await?;
                status.store(response.status().as_u16(), Ordering::Relaxed);
                Ok(response)
            })
        }
    }
}

/// An oauth2 client for the token endpoint of `endpoints`, authenticating with `credentials`.
fn oauth_client(
    provider: Provider,
    endpoints: &Endpoints,
    credentials: &Credentials,
) -> Result<
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>,
    TokenError,
> {
    let client = BasicClient::new(ClientId::new(credentials.id.clone()))
        .set_token_uri(endpoint(&endpoints.token)?)
        .set_auth_type(auth_type(provider, credentials));
    Ok(match &credentials.secret {
        Some(secret) => {
            client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
        }
        None => client,
    })
}

/// A request sent through [`TokenClient::recording`].
type Sent = std::pin::Pin<
    Box<dyn Future<Output = Result<HttpResponse, oauth2::HttpClientError<reqwest::Error>>> + Send>,
>;

/// At most 64 printable characters of an error code from a provider.
fn printable(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
}

/// Where the client's credentials go: Spotify wants HTTP Basic when there is a secret; a
/// public client (no secret) sends its id in the body everywhere.
fn auth_type(provider: Provider, credentials: &Credentials) -> AuthType {
    match (provider.client_auth(), &credentials.secret) {
        (ClientAuth::BasicAuth, Some(_)) => AuthType::BasicAuth,
        _ => AuthType::RequestBody,
    }
}

/// A token endpoint URL, which must be `https` unless it is on the loopback interface.
fn endpoint(url: &str) -> Result<TokenUrl, TokenError> {
    let parsed = Url::parse(url).map_err(|_| TokenError::Endpoint { reason: "it is not a URL" })?;
    let parsed = checked_url(parsed.as_str())
        .ok_or(TokenError::Endpoint { reason: "it must use https (http only on 127.0.0.1)" })?;
    Ok(TokenUrl::from_url(parsed))
}

/// `url` when it is `https`, or plain `http` on the loopback interface where the provider
/// sandbox and test servers run; `None` otherwise.
pub(crate) fn checked_url(url: &str) -> Option<Url> {
    let parsed = Url::parse(url).ok()?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    (parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback)).then_some(parsed)
}

type OAuthResult = Result<
    BasicTokenResponse,
    RequestTokenError<
        oauth2::HttpClientError<reqwest::Error>,
        oauth2::StandardErrorResponse<BasicErrorResponseType>,
    >,
>;

/// Sorts a token endpoint's answer into tokens or a [`TokenError`].
fn classify(result: OAuthResult, status: u16) -> Result<BasicTokenResponse, TokenError> {
    let retry_status = status == 429 || status >= 500;
    match result {
        Ok(response) => Ok(response),
        Err(_) if retry_status => Err(TokenError::Retry { status: Some(status) }),
        Err(RequestTokenError::ServerResponse(response)) => {
            Err(TokenError::GrantGone { error: response.error().to_string(), status })
        }
        Err(RequestTokenError::Request(_)) => Err(TokenError::Retry { status: None }),
        Err(RequestTokenError::Parse(..)) if (400..500).contains(&status) => {
            Err(TokenError::GrantGone { error: "unreadable error".to_owned(), status })
        }
        Err(RequestTokenError::Parse(..)) => Err(TokenError::Malformed { status }),
        Err(RequestTokenError::Other(_)) => Err(TokenError::Malformed { status }),
    }
}

/// The record of a token response received now. `kept` is the refresh token used for a
/// refresh; `asked` the scopes asked for, standing in when the response lists none.
fn tokens(response: BasicTokenResponse, kept: Option<&SecretString>, asked: &[String]) -> Tokens {
    let received = OffsetDateTime::now_utc();
    let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3600));
    let expires_at = received + lifetime;
    let granted_scopes = response
        .scopes()
        .map(|scopes| scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    let scopes = match &granted_scopes {
        Some(granted) => granted.split_ascii_whitespace().map(str::to_owned).collect(),
        None => asked.to_vec(),
    };
    let new_refresh = response.refresh_token().map(|token| token.secret().clone());
    let rotated = match (&new_refresh, kept) {
        (Some(new), Some(old)) => new != old.expose_secret(),
        _ => false,
    };
    let refresh_token = match new_refresh {
        Some(new) => Some(SecretString::new(new)),
        None => kept.map(|old| SecretString::new(old.expose_secret().to_owned())),
    };
    let record = TokenRecord {
        access_token: SecretString::new(response.access_token().secret().clone()),
        refresh_token,
        expires_at,
        scopes,
    };
    Tokens { record, granted_scopes, rotated }
}

/// Why the token endpoint gave no tokens. No variant carries a token or a response body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Setup,
    /// The configured token endpoint is unusable.
    #[error("the provider's token endpoint is unusable: {reason}")]
    Endpoint {
        /// Why.
        reason: &'static str,
    },
    /// The grant is gone (`invalid_grant`, or another 4xx answer but 429): the person must
    /// connect the integration again.
    #[error(
        "the provider refused the grant ({error}, HTTP {status}); connect the integration again"
    )]
    GrantGone {
        /// The OAuth error code.
        error: String,
        /// The HTTP status.
        status: u16,
    },
    /// Worth trying again later: 429, 5xx, or no answer.
    #[error("the provider's token endpoint is unavailable{}; trying again later", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Retry {
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
    },
    /// The answer could not be read as a token response.
    #[error(
        "the provider's token endpoint answered something unreadable (HTTP {status}); trying again later"
    )]
    Malformed {
        /// The HTTP status.
        status: u16,
    },
    /// A refresh was asked for a record without a refresh token.
    #[error("there is no refresh token; connect the integration again")]
    NoRefreshToken,
}

impl TokenError {
    /// True when the person must connect the integration again.
    pub fn is_grant_gone(&self) -> bool {
        matches!(self, Self::GrantGone { .. } | Self::NoRefreshToken)
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Malformed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoints_must_be_https_except_on_loopback() {
        assert!(endpoint("https://oauth2.googleapis.com/token").is_ok());
        assert!(endpoint("http://127.0.0.1:4000/google/token").is_ok());
        for bad in ["http://oauth2.googleapis.com/token", "ftp://x/token", "not a url"] {
            assert!(matches!(endpoint(bad), Err(TokenError::Endpoint { .. })), "{bad}");
        }
    }
}
