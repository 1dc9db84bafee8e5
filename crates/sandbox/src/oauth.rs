//! The OAuth endpoints (authorize, token, revoke) and the state every endpoint shares.
//!
//! [`State`] holds, per provider, the registered [`Client`], the [`Account`] that signs in, the
//! codes, refresh and access tokens issued, the queued [`Failure`]s and the [`Stats`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, State as Shared};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::account::Account;

/// How long a [`Failure::Slow`] answer waits.
pub(crate) const SLOW: Duration = Duration::from_secs(3);

/// How long an access token lives unless a test says otherwise, as all three providers issue
/// them.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A provider the sandbox stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Google: keeps the refresh token on refresh, has a revocation endpoint, needs the client
    /// secret even with PKCE (an "installed app" client).
    Google,
    /// Microsoft identity platform: a public client (PKCE, no secret) that gets a new refresh
    /// token on every refresh.
    Microsoft,
    /// Spotify: PKCE with `S256` only, no `localhost` redirect, the refresh token replaced (or
    /// left out) on refresh.
    Spotify,
}

impl Provider {
    pub(crate) const ALL: [Provider; 3] = [Self::Google, Self::Microsoft, Self::Spotify];

    /// The path segment and configuration name: `google`, `microsoft`, `spotify`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Microsoft => "microsoft",
            Self::Spotify => "spotify",
        }
    }

    pub(crate) fn from_path(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|provider| provider.as_str() == name)
    }
}

/// The client registered with a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client id.
    pub id: String,
    /// The client secret, for the providers whose clients have one.
    pub secret: Option<String>,
}

impl Client {
    /// The client the sandbox registers for `provider`: Google's has a secret, as Google's
    /// desktop clients do; Microsoft's and Spotify's are public PKCE clients.
    pub fn builtin(provider: Provider) -> Self {
        let id = format!("sandbox-{}-client", provider.as_str());
        let secret = (provider == Provider::Google).then(|| "sandbox-google-secret".to_owned());
        Self { id, secret }
    }
}

/// How the next token request fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 400 `invalid_grant`, as for an expired or revoked grant.
    InvalidGrant,
    /// 503 with an HTML body, as a provider's front end answers when overloaded.
    ServerError,
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// A correct answer after [`Sandbox::SLOW`](crate::Sandbox::SLOW).
    Slow,
    /// 200 with a body that is not JSON.
    Malformed,
}

/// What one provider's endpoints have seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Authorization requests answered with a code.
    pub authorizations: u64,
    /// Requests to the token endpoint, failed ones included.
    pub token_requests: u64,
    /// Code exchanges whose PKCE verifier matched the challenge.
    pub pkce_verified: u64,
    /// Code exchanges refused: unknown or reused code, wrong verifier or redirect URI.
    pub codes_refused: u64,
    /// Refreshes answered with a new access token.
    pub refreshes: u64,
    /// Tokens revoked.
    pub revocations: u64,
    /// Token requests with `grant_type=refresh_token`, failed ones included.
    pub refresh_requests: u64,
    /// Token requests with `grant_type=authorization_code`, failed ones included.
    pub code_requests: u64,
    /// Requests to the account endpoint.
    pub api_requests: u64,
    /// Requests to the account endpoint answered 401.
    pub api_unauthorized: u64,
}

/// What a grant carries from the code to the refresh and access tokens issued under it.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) scopes: Vec<String>,
    pub(crate) account: Account,
}

/// An access token issued.
pub(crate) struct Access {
    pub(crate) grant: Grant,
    /// `None` when the lifetime reaches past what an [`Instant`] can hold.
    pub(crate) expires: Option<Instant>,
}

impl Access {
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|expires| now >= expires)
    }
}

struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    grant: Grant,
}

pub(crate) struct ProviderState {
    pub(crate) client: Client,
    /// Who signs in at the next authorizations.
    pub(crate) account: Account,
    codes: HashMap<String, Code>,
    /// Live refresh tokens and the grants they carry.
    pub(crate) refresh: HashMap<String, Grant>,
    /// Every access token issued, expired ones included.
    pub(crate) access: HashMap<String, Access>,
    /// Whole seconds, at least one.
    pub(crate) access_lifetime: Duration,
    pub(crate) withheld: Vec<String>,
    pub(crate) failures: VecDeque<Failure>,
    pub(crate) stats: Stats,
}

pub(crate) struct State {
    pub(crate) base_url: String,
    providers: HashMap<Provider, ProviderState>,
    pub(crate) spotify_omits_refresh_tokens: bool,
    pub(crate) issued: Vec<String>,
    /// What the data APIs serve.
    pub(crate) data: crate::data::Data,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(base_url: &str, population: crate::data::Population) -> Self {
        let providers = Provider::ALL
            .into_iter()
            .map(|provider| {
                let state = ProviderState {
                    client: Client::builtin(provider),
                    account: Account::builtin(provider),
                    codes: HashMap::new(),
                    refresh: HashMap::new(),
                    access: HashMap::new(),
                    access_lifetime: ACCESS_TOKEN_LIFETIME,
                    withheld: Vec::new(),
                    failures: VecDeque::new(),
                    stats: Stats::default(),
                };
                (provider, state)
            })
            .collect();
        Self {
            base_url: base_url.to_owned(),
            providers,
            spotify_omits_refresh_tokens: false,
            issued: Vec::new(),
            data: crate::data::Data::new(population),
        }
    }

    pub(crate) fn provider(&self, provider: Provider) -> &ProviderState {
        &self.providers[&provider]
    }

    pub(crate) fn provider_mut(&mut self, provider: Provider) -> &mut ProviderState {
        self.providers.get_mut(&provider).expect("every provider has a state from the start")
    }

    fn issue(&mut self, kind: &str, provider: Provider) -> String {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = format!("sbx-{}-{kind}-{}", provider.as_str(), URL_SAFE_NO_PAD.encode(bytes));
        self.issued.push(token.clone());
        token
    }

    /// Issues an access token under `grant`, returning it and its lifetime in seconds.
    fn issue_access(&mut self, provider: Provider, grant: &Grant) -> (String, u64) {
        let token = self.issue("access", provider);
        let provider_state = self.provider_mut(provider);
        let lifetime = provider_state.access_lifetime;
        let access = Access { grant: grant.clone(), expires: Instant::now().checked_add(lifetime) };
        provider_state.access.insert(token.clone(), access);
        (token, lifetime.as_secs())
    }
}

/// The state as the handlers share it.
pub(crate) type Sandbox = Arc<Mutex<State>>;

/// The authorize, token and revoke endpoints of every provider.
pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/{provider}/authorize", get(authorize))
        .route("/{provider}/token", post(token))
        .route("/{provider}/revoke", post(revoke))
}

pub(crate) fn lock(state: &Sandbox) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({ "error": error, "error_description": description })))
        .into_response()
}

/// The authorization endpoint, with the person consenting at once.
async fn authorize(
    Shared(state): Shared<Sandbox>,
    Path(provider): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(provider) = Provider::from_path(&provider) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let mut state = lock(&state);

    // Problems with the client or the redirect URI are shown to the person, never redirected
    // (RFC 6749 §4.1.2.1).
    if param("client_id") != state.provider(provider).client.id {
        return (StatusCode::BAD_REQUEST, "unknown client_id\n").into_response();
    }
    let Some(redirect) = loopback_redirect(provider, param("redirect_uri")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not an allowed loopback URI\n")
            .into_response();
    };
    if param("response_type") != "code" {
        return redirect_error(redirect, "unsupported_response_type", param("state"));
    }
    if param("code_challenge").len() != 43 || param("code_challenge_method") != "S256" {
        return redirect_error(redirect, "invalid_request", param("state"));
    }

    let provider_state = state.provider(provider);
    let scopes: Vec<String> = param("scope")
        .split_ascii_whitespace()
        .filter(|scope| !provider_state.withheld.iter().any(|w| w == scope))
        .map(str::to_owned)
        .collect();
    let account = provider_state.account.clone();
    let code = state.issue("code", provider);
    let grant = Code {
        client_id: param("client_id").to_owned(),
        redirect_uri: param("redirect_uri").to_owned(),
        challenge: param("code_challenge").to_owned(),
        grant: Grant { scopes, account },
    };
    let provider_state = state.provider_mut(provider);
    provider_state.codes.insert(code.clone(), grant);
    provider_state.stats.authorizations += 1;

    let mut target = redirect;
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", param("state"));
    found(&target)
}

fn redirect_error(mut redirect: Url, error: &str, state: &str) -> Response {
    redirect.query_pairs_mut().append_pair("error", error).append_pair("state", state);
    found(&redirect)
}

/// A `302 Found` to `target`, as the providers' authorization endpoints answer.
fn found(target: &Url) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, target.as_str().to_owned())]).into_response()
}

/// The redirect URI when it is a loopback one the provider allows: `http` on `127.0.0.1` or
/// `[::1]` at any port; `localhost` too, except at Spotify, which refuses it.
fn loopback_redirect(provider: Provider, uri: &str) -> Option<Url> {
    let url = Url::parse(uri).ok()?;
    let allowed = match url.host_str()? {
        "127.0.0.1" | "[::1]" => true,
        "localhost" => provider != Provider::Spotify,
        _ => false,
    };
    (url.scheme() == "http" && allowed && url.fragment().is_none()).then_some(url)
}

/// The client id and secret a token request authenticates with: HTTP Basic, else the body.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    if let Some(pair) = basic
        && let Some((id, secret)) = pair.split_once(':')
    {
        return (Some(id.to_owned()), Some(secret.to_owned()));
    }
    (form.get("client_id").cloned(), form.get("client_secret").cloned())
}

async fn token(
    Shared(state): Shared<Sandbox>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(provider) = Provider::from_path(&provider) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let failure = {
        let mut state = lock(&state);
        let stats = &mut state.provider_mut(provider).stats;
        stats.token_requests += 1;
        // Counted before a queued failure answers, so that a test sees what was asked.
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => stats.code_requests += 1,
            Some("refresh_token") => stats.refresh_requests += 1,
            _ => {}
        }
        state.provider_mut(provider).failures.pop_front()
    };
    match failure {
        Some(Failure::InvalidGrant) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Token has been expired or revoked.",
            );
        }
        Some(Failure::ServerError) => {
            let body = "<html><body>Service Unavailable</body></html>";
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html")], body)
                .into_response();
        }
        Some(Failure::TooManyRequests) => {
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "")
                .into_response();
        }
        Some(Failure::Malformed) => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"access_tok")
                .into_response();
        }
        Some(Failure::Slow) => tokio::time::sleep(SLOW).await,
        None => {}
    }

    let mut state = lock(&state);
    let client = state.provider(provider).client.clone();
    let (id, secret) = client_credentials(&headers, &form);
    let secret_ok = match (&client.secret, &secret) {
        (Some(expected), Some(given)) => expected == given,
        (Some(_), None) => false,
        (None, None) => true,
        (None, Some(_)) => false,
    };
    if id.as_deref() != Some(client.id.as_str()) || !secret_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    }

    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => exchange_code(&mut state, provider, &client, &form),
        Some("refresh_token") => refresh(&mut state, provider, &form),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant type.",
        ),
    }
}

fn exchange_code(
    state: &mut State,
    provider: Provider,
    client: &Client,
    form: &HashMap<String, String>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    // A code is usable once: it is removed whatever happens next (RFC 6749 §4.1.2).
    let grant = state.provider_mut(provider).codes.remove(field("code"));
    let verified = grant.as_ref().is_some_and(|grant| {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
        grant.client_id == client.id
            && grant.redirect_uri == field("redirect_uri")
            && grant.challenge == challenge
    });
    let Some(Code { grant, .. }) = grant.filter(|_| verified) else {
        state.provider_mut(provider).stats.codes_refused += 1;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid authorization code.",
        );
    };

    state.provider_mut(provider).stats.pkce_verified += 1;
    let (access, expires_in) = state.issue_access(provider, &grant);
    let refresh = state.issue("refresh", provider);
    let scopes = grant.scopes.join(" ");
    state.provider_mut(provider).refresh.insert(refresh.clone(), grant);
    token_response(&access, expires_in, Some(&refresh), &scopes)
}

fn refresh(state: &mut State, provider: Provider, form: &HashMap<String, String>) -> Response {
    let old = form.get("refresh_token").cloned().unwrap_or_default();
    let Some(grant) = state.provider(provider).refresh.get(&old).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid refresh token.");
    };

    // The account is the refresh token's, whoever signs in at the authorization endpoint now.
    let (access, expires_in) = state.issue_access(provider, &grant);
    // Google keeps the refresh token; Microsoft rotates it every time; Spotify replaces it
    // (a PKCE refresh token is single-use) or may leave it out, and then the old one stays.
    let new_refresh = match provider {
        Provider::Google => None,
        Provider::Spotify if state.spotify_omits_refresh_tokens => None,
        Provider::Microsoft | Provider::Spotify => {
            let new = state.issue("refresh", provider);
            let provider_state = state.provider_mut(provider);
            provider_state.refresh.remove(&old);
            provider_state.refresh.insert(new.clone(), grant.clone());
            Some(new)
        }
    };
    state.provider_mut(provider).stats.refreshes += 1;
    token_response(&access, expires_in, new_refresh.as_deref(), &grant.scopes.join(" "))
}

fn token_response(access: &str, expires_in: u64, refresh: Option<&str>, scope: &str) -> Response {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// RFC 7009 revocation, which only Google offers.
async fn revoke(
    Shared(state): Shared<Sandbox>,
    Path(provider): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if Provider::from_path(&provider) != Some(Provider::Google) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut state = lock(&state);
    let token = form.get("token").cloned().unwrap_or_default();
    let google = state.provider_mut(Provider::Google);
    if google.refresh.remove(&token).is_none() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_token", "Token is not valid.");
    }
    google.stats.revocations += 1;
    StatusCode::OK.into_response()
}
