//! The account endpoints: who an access token's person is, asked the way each provider asks.
//!
//! [`Account`] is the person who signs in at a provider's authorization endpoint; codes, refresh
//! and access tokens keep the account they were issued for. The endpoints stand in for Google's
//! OpenID Connect userinfo (`BASE/google/userinfo`), Graph's `/v1.0/me` (`BASE/microsoft/api/me`)
//! and Spotify's `/v1/me` (`BASE/spotify/api/me`), and authenticate with `Authorization: Bearer`:
//! a missing, unknown, other provider's or expired token gets a 401 in the provider's own shape.

use std::time::Instant;

use axum::Router;
use axum::extract::State as Shared;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngCore as _;
use serde_json::{Value, json};

use crate::oauth::{Grant, Provider, Sandbox, State, lock};

/// A person signed in at a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The provider's stable id: Google's `sub`, Graph's `id`, Spotify's user id.
    pub id: String,
    /// The display name; Google's account endpoint answers it as the email address.
    pub name: String,
}

impl Account {
    /// The person who signs in at `provider` until [`Sandbox::sign_in_as`] says otherwise.
    ///
    /// [`Sandbox::sign_in_as`]: crate::Sandbox::sign_in_as
    pub fn builtin(provider: Provider) -> Self {
        let (id, name) = match provider {
            Provider::Google => ("108395217432160591234", "sandbox.user@example.com"),
            Provider::Microsoft => ("6f1e2c3d-4b5a-4c7d-8e9f-0a1b2c3d4e5f", "Sandbox User"),
            Provider::Spotify => ("sandboxuser", "Sandbox User"),
        };
        Self { id: id.to_owned(), name: name.to_owned() }
    }
}

/// The account endpoint's path under the base URL.
pub(crate) const fn path(provider: Provider) -> &'static str {
    match provider {
        Provider::Google => "/google/userinfo",
        Provider::Microsoft => "/microsoft/api/me",
        Provider::Spotify => "/spotify/api/me",
    }
}

/// The account endpoint of every provider.
pub(crate) fn routes() -> Router<Sandbox> {
    Provider::ALL.into_iter().fold(Router::new(), |router, provider| {
        router.route(
            path(provider),
            get(move |Shared(state): Shared<Sandbox>, headers: HeaderMap| {
                me(state, provider, headers)
            }),
        )
    })
}

/// Why a request's bearer token is refused.
#[derive(Clone, Copy)]
enum Rejection {
    Missing,
    /// Never issued by this provider, which covers another provider's tokens.
    Unknown,
    Expired,
}

async fn me(state: Sandbox, provider: Provider, headers: HeaderMap) -> Response {
    let mut state = lock(&state);
    let base_url = state.base_url.clone();
    let grant = match authenticate(&mut state, provider, &headers) {
        Ok(grant) => grant,
        Err(refusal) => return refusal,
    };
    drop(state);

    if let Some(refusal) = refuse_scope(provider, &grant) {
        return refusal;
    }
    axum::Json(profile(provider, &grant.account, &base_url)).into_response()
}

/// The grant behind a request's bearer token, counted in the provider's [`Stats`]; a missing,
/// unknown, other provider's or expired token gets the provider's 401.
///
/// [`Stats`]: crate::Stats
pub(crate) fn authenticate(
    state: &mut State,
    provider: Provider,
    headers: &HeaderMap,
) -> Result<Grant, Response> {
    let provider_state = state.provider_mut(provider);
    provider_state.stats.api_requests += 1;
    let found = match bearer(headers) {
        None => Err(Rejection::Missing),
        Some(token) => match provider_state.access.get(token) {
            None => Err(Rejection::Unknown),
            Some(access) if access.expired(Instant::now()) => Err(Rejection::Expired),
            Some(access) => Ok(access.grant.clone()),
        },
    };
    found.map_err(|rejection| {
        provider_state.stats.api_unauthorized += 1;
        unauthorized(provider, rejection)
    })
}

/// The provider's 403 for a grant that lacks `scope`, which a data endpoint needs.
pub(crate) fn insufficient_scope(provider: Provider, scope: &str) -> Response {
    match provider {
        Provider::Google => {
            let challenge = format!(
                r#"Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="{scope}""#
            );
            let body = google_error(
                403,
                "Request had insufficient authentication scopes.",
                "PERMISSION_DENIED",
                json!({
                    "domain": "global",
                    "reason": "insufficientPermissions",
                    "message": "Insufficient Permission",
                }),
            );
            let headers = [(header::WWW_AUTHENTICATE, challenge)];
            (StatusCode::FORBIDDEN, headers, axum::Json(body)).into_response()
        }
        Provider::Microsoft => {
            let body = graph_error(
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            );
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
        }
        Provider::Spotify => {
            let body =
                json!({ "error": { "status": 403, "message": "Insufficient client scope" } });
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
        }
    }
}

/// The token of an `Authorization: Bearer` header; the scheme is case-insensitive (RFC 7235
/// §2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The account as the provider's endpoint shows it.
fn profile(provider: Provider, account: &Account, base_url: &str) -> Value {
    let Account { id, name } = account;
    match provider {
        Provider::Google => json!({ "sub": id, "email": name, "email_verified": true }),
        // Graph's default property set for a user; a personal account has no `mail`.
        Provider::Microsoft => json!({
            "@odata.context": format!("{base_url}/microsoft/api/$metadata#users/$entity"),
            "businessPhones": [],
            "displayName": name,
            "givenName": null,
            "jobTitle": null,
            "mail": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "surname": null,
            "userPrincipalName": format!("{id}@example.com"),
            "id": id,
        }),
        Provider::Spotify => json!({
            "id": id,
            "display_name": name,
            "type": "user",
            "uri": format!("spotify:user:{id}"),
            "href": format!("{base_url}/spotify/api/users/{id}"),
            "external_urls": { "spotify": format!("https://open.spotify.com/user/{id}") },
            "followers": { "href": null, "total": 0 },
            "images": [],
        }),
    }
}

/// The provider's 401, with the body and `WWW-Authenticate` header its documentation shows. A
/// request without a token gets no `error` in the challenge (RFC 6750 §3.1).
fn unauthorized(provider: Provider, rejection: Rejection) -> Response {
    let (challenge, body) = match provider {
        Provider::Google => {
            let realm = r#"Bearer realm="https://accounts.google.com/""#;
            let challenge = match rejection {
                Rejection::Missing => realm.to_owned(),
                Rejection::Unknown | Rejection::Expired => {
                    format!(r#"{realm}, error="invalid_token""#)
                }
            };
            let body = google_error(
                401,
                "Invalid Credentials",
                "UNAUTHENTICATED",
                json!({
                    "domain": "global",
                    "reason": "authError",
                    "message": "Invalid Credentials",
                    "locationType": "header",
                    "location": "Authorization",
                }),
            );
            (challenge, body)
        }
        Provider::Microsoft => {
            let challenge = concat!(
                r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", "#,
                r#"client_id="00000003-0000-0000-c000-000000000000""#,
            );
            let message = match rejection {
                Rejection::Missing => "Access token is empty.",
                Rejection::Unknown => "Access token validation failure.",
                Rejection::Expired => "Lifetime validation failed, the token is expired.",
            };
            (challenge.to_owned(), graph_error("InvalidAuthenticationToken", message))
        }
        Provider::Spotify => {
            let realm = r#"Bearer realm="spotify""#;
            let (challenge, message) = match rejection {
                Rejection::Missing => (realm.to_owned(), "No token provided"),
                Rejection::Unknown => (
                    format!(
                        r#"{realm}, error="invalid_token", error_description="Invalid access token""#
                    ),
                    "Invalid access token",
                ),
                Rejection::Expired => (
                    format!(
                        r#"{realm}, error="invalid_token", error_description="The access token expired""#
                    ),
                    "The access token expired",
                ),
            };
            (challenge, json!({ "error": { "status": 401, "message": message } }))
        }
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], axum::Json(body))
        .into_response()
}

/// The provider's 403 when the token lacks the scope its account endpoint needs. Google's
/// userinfo answers only tokens granted `openid`; Graph's `/me` needs `User.Read`, short or as a
/// resource URL, compared ignoring case as Microsoft compares scopes; Spotify's `/me` needs none
/// for the fields given here.
fn refuse_scope(provider: Provider, grant: &Grant) -> Option<Response> {
    let has = |wanted: &str| grant.scopes.iter().any(|scope| scope.eq_ignore_ascii_case(wanted));
    match provider {
        Provider::Google if !grant.scopes.iter().any(|scope| scope == "openid") => {
            let challenge = concat!(
                r#"Bearer realm="https://accounts.google.com/", error="insufficient_scope", "#,
                r#"scope="openid""#,
            );
            let body = google_error(
                403,
                "Request had insufficient authentication scopes.",
                "PERMISSION_DENIED",
                json!({
                    "domain": "global",
                    "reason": "insufficientPermissions",
                    "message": "Insufficient Permission",
                }),
            );
            let headers = [(header::WWW_AUTHENTICATE, challenge)];
            Some((StatusCode::FORBIDDEN, headers, axum::Json(body)).into_response())
        }
        Provider::Microsoft
            if !has("User.Read") && !has("https://graph.microsoft.com/User.Read") =>
        {
            let message = "Insufficient privileges to complete the operation.";
            let body = graph_error("Authorization_RequestDenied", message);
            Some((StatusCode::FORBIDDEN, axum::Json(body)).into_response())
        }
        Provider::Google | Provider::Microsoft | Provider::Spotify => None,
    }
}

/// Google's error envelope, the legacy `errors` list beside the newer `status`.
fn google_error(code: u16, message: &str, status: &str, error: Value) -> Value {
    json!({ "error": { "errors": [error], "code": code, "message": message, "status": status } })
}

/// Graph's OData error, with the `innerError` that Graph adds to every one.
pub(crate) fn graph_error(code: &str, message: &str) -> Value {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let date = time::OffsetDateTime::now_utc().format(format).unwrap_or_default();
    let request_id = request_id();
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": date,
                "request-id": request_id,
                "client-request-id": request_id,
            },
        },
    })
}

/// A random id in the UUID form Graph gives its request ids.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}
