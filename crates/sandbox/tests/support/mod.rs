//! What the data API tests share: a sandbox, and an access token from the OAuth flow.

#![allow(dead_code, reason = "each test file uses its own part of the helpers")]

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use datapunk_sandbox::{Population, Provider, Sandbox};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const REDIRECT_URI: &str = "http://127.0.0.1:49152/";
const VERIFIER: &str = "sandbox-data-test-verifier-0123456789-abcdefghijkl";

pub(crate) const CALENDAR: &str = "https://www.googleapis.com/auth/calendar.readonly";
pub(crate) const CONTACTS: &str = "https://www.googleapis.com/auth/contacts.readonly";

/// A sandbox with a small population.
pub(crate) async fn sandbox(population: Population) -> Sandbox {
    Sandbox::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), population)
        .await
        .expect("start the sandbox")
}

pub(crate) fn small() -> Population {
    Population { seed: 7, events: 60, contacts: 25, saved_tracks: 45, playlists: 7, plays: 30 }
}

/// A client that does not follow redirects.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// An access token for `scope` at `provider`, through authorization and code exchange.
pub(crate) async fn access_token(sandbox: &Sandbox, provider: Provider, scope: &str) -> String {
    let client = sandbox.client(provider);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let query = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let answer = http()
        .get(sandbox.endpoint(provider, "authorize"))
        .query(&query)
        .send()
        .await
        .expect("the authorization request");
    let location = answer.headers()["location"].to_str().expect("a location").to_owned();
    let location = url::Url::parse(&location).expect("a URL");
    let (_, code) = location.query_pairs().find(|(name, _)| name == "code").expect("a code");
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.into_owned()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("code_verifier", VERIFIER.to_owned()),
        ("client_id", client.id.clone()),
    ];
    form.extend(client.secret.map(|secret| ("client_secret", secret)));
    let answer = http()
        .post(sandbox.endpoint(provider, "token"))
        .form(&form)
        .send()
        .await
        .expect("the token request");
    let body: Value = answer.json().await.expect("a token response");
    body["access_token"].as_str().expect("an access token").to_owned()
}

/// GETs `url` with `query` and the bearer `token`, returning the status, and the body as
/// JSON (`Value::Null` when it is not JSON).
pub(crate) async fn get(url: &str, token: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let answer = http().get(url).bearer_auth(token).query(query).send().await.expect("a request");
    let status = answer.status().as_u16();
    let text = answer.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
