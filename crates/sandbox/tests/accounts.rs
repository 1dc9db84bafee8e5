//! The account endpoints, driven through HTTP as a client drives them: authorize with PKCE,
//! exchange the code, refresh, and ask whose the access token is.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use datapunk_sandbox::{Account, Failure, Provider, Sandbox};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const PROVIDERS: [Provider; 3] = [Provider::Google, Provider::Microsoft, Provider::Spotify];

/// A loopback redirect URI; nothing listens there, since the test reads the redirect itself.
const REDIRECT_URI: &str = "http://127.0.0.1:49152/";

const VERIFIER: &str = "sandbox-test-verifier-0123456789-abcdefghijklmnop";

async fn sandbox() -> Sandbox {
    Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("start the sandbox")
}

/// A client that does not follow redirects, so the test reads the code from `Location`.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// Scopes a client asks for, with what each account endpoint requires.
fn scopes(provider: Provider) -> &'static str {
    match provider {
        Provider::Google => "openid email https://www.googleapis.com/auth/calendar.readonly",
        Provider::Microsoft => "offline_access User.Read Calendars.Read",
        Provider::Spotify => "user-read-recently-played",
    }
}

/// A token endpoint's successful answer.
struct Tokens {
    access: String,
    refresh: Option<String>,
    expires_in: u64,
}

/// Authorizes `scope` at `provider` and exchanges the code.
async fn grant(sandbox: &Sandbox, provider: Provider, scope: &str) -> Tokens {
    let client = sandbox.client(provider);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let query = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", "xyz"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let answer = http()
        .get(sandbox.endpoint(provider, "authorize"))
        .query(&query)
        .send()
        .await
        .expect("the authorization request");
    assert_eq!(answer.status(), 302, "{provider:?}: the sandbox redirects back");
    let location = answer.headers()["location"].to_str().expect("a location");
    let location = url::Url::parse(location).expect("a URL");
    let (_, code) =
        location.query_pairs().find(|(name, _)| name == "code").expect("a code in the redirect");

    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.into_owned()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("code_verifier", VERIFIER.to_owned()),
    ];
    form.extend(credentials(sandbox, provider));
    tokens(post_token(sandbox, provider, &form).await).await
}

/// Refreshes with `refresh_token`, returning the raw answer.
async fn refresh(sandbox: &Sandbox, provider: Provider, refresh_token: &str) -> reqwest::Response {
    let mut form =
        vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", refresh_token.into())];
    form.extend(credentials(sandbox, provider));
    post_token(sandbox, provider, &form).await
}

fn credentials(sandbox: &Sandbox, provider: Provider) -> Vec<(&'static str, String)> {
    let client = sandbox.client(provider);
    let mut fields = vec![("client_id", client.id)];
    fields.extend(client.secret.map(|secret| ("client_secret", secret)));
    fields
}

async fn post_token(
    sandbox: &Sandbox,
    provider: Provider,
    form: &[(&str, String)],
) -> reqwest::Response {
    http()
        .post(sandbox.endpoint(provider, "token"))
        .form(form)
        .send()
        .await
        .expect("the token request")
}

async fn tokens(answer: reqwest::Response) -> Tokens {
    assert_eq!(answer.status(), 200, "the token endpoint answers");
    let body: Value = answer.json().await.expect("a JSON token response");
    Tokens {
        access: body["access_token"].as_str().expect("an access token").to_owned(),
        refresh: body["refresh_token"].as_str().map(str::to_owned),
        expires_in: body["expires_in"].as_u64().expect("expires_in"),
    }
}

/// What the account endpoint answered.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

async fn me(sandbox: &Sandbox, provider: Provider, token: Option<&str>) -> Answer {
    let mut request = http().get(sandbox.account_url(provider));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("the account request");
    let status = answer.status().as_u16();
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().expect("a text header").to_owned());
    let body = answer.json().await.expect("a JSON body");
    Answer { status, challenge, body }
}

/// The account's id and name as `provider`'s endpoint spells them.
fn identity(provider: Provider, body: &Value) -> Account {
    let (id, name) = match provider {
        Provider::Google => ("sub", "email"),
        Provider::Microsoft => ("id", "displayName"),
        Provider::Spotify => ("id", "display_name"),
    };
    let field = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}"));
    Account { id: field(id).to_owned(), name: field(name).to_owned() }
}

/// Asserts the 401 is `provider`'s own, with a challenge.
fn assert_unauthorized(provider: Provider, answer: &Answer) {
    assert_eq!(answer.status, 401, "{provider:?}: {}", answer.body);
    let challenge = answer.challenge.as_deref().expect("a WWW-Authenticate header");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let error = &answer.body["error"];
    match provider {
        Provider::Google => {
            assert_eq!(error["code"], 401);
            assert_eq!(error["errors"][0]["reason"], "authError");
        }
        Provider::Microsoft => assert_eq!(error["code"], "InvalidAuthenticationToken"),
        Provider::Spotify => assert_eq!(error["status"], 401),
    }
}

fn someone_else(provider: Provider) -> Account {
    match provider {
        Provider::Google => {
            Account { id: "200000000000000000001".into(), name: "b@example.com".into() }
        }
        Provider::Microsoft | Provider::Spotify => {
            Account { id: "someoneelse".into(), name: "Someone Else".into() }
        }
    }
}

#[tokio::test]
async fn each_account_endpoint_answers_the_account_signed_in_at_the_authorization() {
    let sandbox = sandbox().await;

    for provider in PROVIDERS {
        let tokens = grant(&sandbox, provider, scopes(provider)).await;
        let answer = me(&sandbox, provider, Some(&tokens.access)).await;

        assert_eq!(answer.status, 200, "{provider:?}: {}", answer.body);
        assert_eq!(identity(provider, &answer.body), Account::builtin(provider));
        let stats = sandbox.stats(provider);
        assert_eq!((stats.api_requests, stats.api_unauthorized), (1, 0), "{provider:?}");
    }

    let google = me(&sandbox, Provider::Google, None).await;
    assert_eq!(google.status, 401, "no token, no account");
    let microsoft = grant(&sandbox, Provider::Microsoft, scopes(Provider::Microsoft)).await;
    let graph = me(&sandbox, Provider::Microsoft, Some(&microsoft.access)).await.body;
    assert!(graph["@odata.context"].as_str().is_some_and(|c| c.ends_with("#users/$entity")));
    assert_eq!(graph["mail"], Value::Null);
    assert!(graph["userPrincipalName"].as_str().is_some_and(|upn| upn.ends_with("@example.com")));
    let spotify = grant(&sandbox, Provider::Spotify, scopes(Provider::Spotify)).await;
    let user = me(&sandbox, Provider::Spotify, Some(&spotify.access)).await.body;
    assert_eq!(user["uri"], "spotify:user:sandboxuser");
    assert_eq!(user["type"], "user");
    assert_eq!(user["followers"]["total"], 0);
}

#[tokio::test]
async fn a_new_sign_in_changes_the_account_of_new_grants_but_not_of_old_refresh_tokens() {
    let sandbox = sandbox().await;

    for provider in PROVIDERS {
        let first = grant(&sandbox, provider, scopes(provider)).await;
        sandbox.sign_in_as(provider, someone_else(provider));
        let second = grant(&sandbox, provider, scopes(provider)).await;

        let answer = me(&sandbox, provider, Some(&second.access)).await;
        assert_eq!(identity(provider, &answer.body), someone_else(provider), "{provider:?}");
        let old_refresh = first.refresh.expect("a refresh token from the code exchange");
        let refreshed = tokens(refresh(&sandbox, provider, &old_refresh).await).await;
        let answer = me(&sandbox, provider, Some(&refreshed.access)).await;
        assert_eq!(identity(provider, &answer.body), Account::builtin(provider), "{provider:?}");
        let answer = me(&sandbox, provider, Some(&first.access)).await;
        assert_eq!(identity(provider, &answer.body), Account::builtin(provider), "{provider:?}");
    }
}

#[tokio::test]
async fn a_missing_unknown_or_other_providers_token_gets_the_providers_401() {
    let sandbox = sandbox().await;
    let google = grant(&sandbox, Provider::Google, scopes(Provider::Google)).await;
    let spotify = grant(&sandbox, Provider::Spotify, scopes(Provider::Spotify)).await;

    for (provider, other) in [
        (Provider::Google, &spotify.access),
        (Provider::Microsoft, &google.access),
        (Provider::Spotify, &google.access),
    ] {
        for token in [None, Some("sbx-not-a-token"), Some(other.as_str())] {
            assert_unauthorized(provider, &me(&sandbox, provider, token).await);
        }
        let stats = sandbox.stats(provider);
        assert_eq!((stats.api_requests, stats.api_unauthorized), (3, 3), "{provider:?}");
    }

    let answer = me(&sandbox, Provider::Spotify, Some("sbx-not-a-token")).await;
    assert_eq!(answer.body["error"]["message"], "Invalid access token");
    let challenge = answer.challenge.expect("a challenge");
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
}

#[tokio::test]
async fn a_one_second_access_token_lifetime_is_announced_and_enforced() {
    let sandbox = sandbox().await;
    let mut issued = Vec::new();
    for provider in PROVIDERS {
        sandbox.set_access_token_lifetime(provider, Duration::from_secs(1));
        let tokens = grant(&sandbox, provider, scopes(provider)).await;
        assert_eq!(tokens.expires_in, 1, "{provider:?}: expires_in follows the lifetime");
        issued.push((provider, tokens.access));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;

    for (provider, access) in &issued {
        let answer = me(&sandbox, *provider, Some(access)).await;
        assert_unauthorized(*provider, &answer);
        if *provider == Provider::Spotify {
            assert_eq!(answer.body["error"]["message"], "The access token expired");
        }
    }
    sandbox.set_access_token_lifetime(Provider::Google, Duration::from_secs(3600));
    assert_eq!(grant(&sandbox, Provider::Google, scopes(Provider::Google)).await.expires_in, 3600);
}

#[tokio::test]
async fn expiring_access_tokens_refuses_them_at_once_while_a_refresh_gets_a_working_one() {
    let sandbox = sandbox().await;

    for provider in PROVIDERS {
        let tokens = grant(&sandbox, provider, scopes(provider)).await;
        assert_eq!(tokens.expires_in, 3600, "{provider:?}: the default lifetime");
        sandbox.expire_access_tokens(provider);

        assert_unauthorized(provider, &me(&sandbox, provider, Some(&tokens.access)).await);
        let refresh_token = tokens.refresh.expect("a refresh token");
        let refreshed = tokens_of(refresh(&sandbox, provider, &refresh_token).await).await;
        assert_eq!(me(&sandbox, provider, Some(&refreshed)).await.status, 200, "{provider:?}");
    }
}

async fn tokens_of(answer: reqwest::Response) -> String {
    tokens(answer).await.access
}

#[tokio::test]
async fn the_account_endpoints_refuse_grants_without_the_scope_the_provider_requires() {
    let sandbox = sandbox().await;

    let google = grant(&sandbox, Provider::Google, "email").await;
    let answer = me(&sandbox, Provider::Google, Some(&google.access)).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["error"]["status"], "PERMISSION_DENIED");
    sandbox.withhold_scopes(Provider::Google, &["openid"]);
    let unticked = grant(&sandbox, Provider::Google, scopes(Provider::Google)).await;
    let answer = me(&sandbox, Provider::Google, Some(&unticked.access)).await;
    assert_eq!(answer.status, 403, "the person unticked openid: {}", answer.body);

    let microsoft = grant(&sandbox, Provider::Microsoft, "offline_access Calendars.Read").await;
    let answer = me(&sandbox, Provider::Microsoft, Some(&microsoft.access)).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "Authorization_RequestDenied");
    assert_eq!(
        answer.body["error"]["message"],
        "Insufficient privileges to complete the operation."
    );

    let spotify = grant(&sandbox, Provider::Spotify, "").await;
    assert_eq!(me(&sandbox, Provider::Spotify, Some(&spotify.access)).await.status, 200);
    assert_eq!(sandbox.stats(Provider::Google).api_unauthorized, 0, "a 403 is not a 401");
}

#[tokio::test]
async fn stats_count_token_requests_by_grant_type_even_when_a_failure_answers_them() {
    let sandbox = sandbox().await;
    let provider = Provider::Microsoft;
    let tokens = grant(&sandbox, provider, scopes(provider)).await;
    let refresh_token = tokens.refresh.expect("a refresh token");

    sandbox.fail_next(provider, &[Failure::InvalidGrant]);
    let failed = refresh(&sandbox, provider, &refresh_token).await;
    assert_eq!(failed.status(), 400, "the queued failure answers");
    let stats = sandbox.stats(provider);
    assert_eq!((stats.refresh_requests, stats.refreshes), (1, 0));
    let refreshed = tokens_of(refresh(&sandbox, provider, &refresh_token).await).await;
    me(&sandbox, provider, Some(&refreshed)).await;
    me(&sandbox, provider, None).await;

    let stats = sandbox.stats(provider);
    assert_eq!(stats.token_requests, 3);
    assert_eq!(stats.code_requests, 1);
    assert_eq!((stats.refresh_requests, stats.refreshes), (2, 1));
    assert_eq!((stats.api_requests, stats.api_unauthorized), (2, 1));
}
