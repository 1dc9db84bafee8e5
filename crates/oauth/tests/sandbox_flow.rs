//! The whole authorization code flow against the provider sandbox, the test acting as the
//! browser: it opens the authorization URL, follows the redirect to the loopback listener, and
//! the client exchanges and refreshes the tokens.

use std::net::SocketAddr;

use datapunk_oauth::authorize::{Authorization, Granted};
use datapunk_oauth::grant::{Coverage, coverage};
use datapunk_oauth::loopback::Loopback;
use datapunk_oauth::provider::{Dataset, Endpoints, Provider};
use datapunk_oauth::token::{Credentials, TokenClient, TokenError, Tokens};
use datapunk_sandbox::{Failure, Sandbox};
use datapunk_vault::secret::SecretString;

async fn sandbox() -> Sandbox {
    Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("start the sandbox")
}

fn sandboxed(provider: Provider) -> datapunk_sandbox::Provider {
    match provider {
        Provider::Google => datapunk_sandbox::Provider::Google,
        Provider::Microsoft => datapunk_sandbox::Provider::Microsoft,
        Provider::Spotify => datapunk_sandbox::Provider::Spotify,
    }
}

fn endpoints(sandbox: &Sandbox, provider: Provider) -> Endpoints {
    let p = sandboxed(provider);
    Endpoints {
        authorize: sandbox.endpoint(p, "authorize"),
        token: sandbox.endpoint(p, "token"),
        revoke: (provider == Provider::Google).then(|| sandbox.endpoint(p, "revoke")),
        api_base: sandbox.base_url().to_owned(),
        people_api_base: None,
        account: sandbox.account_url(p),
    }
}

fn credentials(sandbox: &Sandbox, provider: Provider) -> Credentials {
    let client = sandbox.client(sandboxed(provider));
    Credentials { id: client.id, secret: client.secret.map(SecretString::new) }
}

fn datasets(provider: Provider, names: &[&str]) -> Vec<&'static Dataset> {
    names.iter().map(|name| provider.dataset(name).expect("a dataset")).collect()
}

/// A browser that does not follow redirects, so the test sees each hop.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a browser")
}

/// Runs the browser's part and the listener's, and returns the accepted redirect.
async fn authorize(sandbox: &Sandbox, provider: Provider, names: &[&str]) -> Granted {
    let loopback = Loopback::bind().await.expect("bind the loopback listener");
    let chosen = datasets(provider, names);
    let auth = Authorization::begin(
        provider,
        &endpoints(sandbox, provider),
        &credentials(sandbox, provider).id,
        loopback.redirect_uri(),
        &chosen,
    )
    .expect("begin");

    let url = auth.url().clone();
    let browse = async move {
        let browser = browser();
        let answer = browser.get(url).send().await.expect("open the authorization URL");
        assert_eq!(answer.status(), 302, "the sandbox redirects back");
        let location = answer.headers()["location"].to_str().expect("a location").to_owned();
        let page = browser.get(location).send().await.expect("follow to the listener");
        assert_eq!(page.status(), 200);
        page.text().await.expect("the page")
    };
    let (redirect, page) = tokio::join!(loopback.wait(), browse);
    assert!(page.contains("You may close this tab"), "{page}");
    auth.accept(&redirect.expect("a redirect")).expect("the redirect is accepted")
}

async fn connect(sandbox: &Sandbox, provider: Provider, names: &[&str]) -> Tokens {
    let granted = authorize(sandbox, provider, names).await;
    TokenClient::new()
        .expect("a client")
        .exchange(provider, &endpoints(sandbox, provider), &credentials(sandbox, provider), granted)
        .await
        .expect("the code is exchanged")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_provider_connects_with_pkce_and_refreshes_as_it_documents() {
    let sandbox = sandbox().await;
    let client = TokenClient::new().expect("a client");

    for (provider, names) in [
        (Provider::Google, &["calendar", "contacts"][..]),
        (Provider::Microsoft, &["calendar"]),
        (Provider::Spotify, &["recently-played", "playlists"]),
    ] {
        let tokens = connect(&sandbox, provider, names).await;

        let stats = sandbox.stats(sandboxed(provider));
        assert_eq!(stats.pkce_verified, 1, "{provider}: the sandbox checked the verifier");
        let record = &tokens.record;
        let first_refresh = record.refresh_token.as_ref().expect("a refresh token").expose_secret();
        let lifetime = record.expires_at - time::OffsetDateTime::now_utc();
        assert!((3590..=3600).contains(&lifetime.whole_seconds()), "{provider}: {lifetime}");
        let coverage = coverage(&datasets(provider, names), tokens.granted_scopes.as_deref());
        assert!(coverage.iter().all(|c| c.granted), "{provider}: {coverage:?}");

        let refreshed = client
            .refresh(
                provider,
                &endpoints(&sandbox, provider),
                &credentials(&sandbox, provider),
                record,
            )
            .await
            .expect("a refresh");

        let new_refresh =
            refreshed.record.refresh_token.as_ref().expect("a refresh token").expose_secret();
        assert_ne!(
            refreshed.record.access_token.expose_secret(),
            record.access_token.expose_secret()
        );
        let p = sandboxed(provider);
        match provider {
            // Google keeps the refresh token: the record keeps the one it had.
            Provider::Google => {
                assert!(!refreshed.rotated);
                assert_eq!(new_refresh, first_refresh);
                assert!(sandbox.refresh_token_alive(p, first_refresh));
            }
            // Microsoft and Spotify replace it, and the old one is dead at once.
            Provider::Microsoft | Provider::Spotify => {
                assert!(refreshed.rotated, "{provider}");
                assert_ne!(new_refresh, first_refresh);
                assert!(!sandbox.refresh_token_alive(p, first_refresh), "{provider}");
                assert!(sandbox.refresh_token_alive(p, new_refresh), "{provider}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spotify_may_leave_out_the_refresh_token_and_the_old_one_is_kept() {
    let sandbox = sandbox().await;
    let tokens = connect(&sandbox, Provider::Spotify, &["saved-tracks"]).await;
    sandbox.spotify_omits_refresh_tokens(true);

    let refreshed = TokenClient::new()
        .expect("a client")
        .refresh(
            Provider::Spotify,
            &endpoints(&sandbox, Provider::Spotify),
            &credentials(&sandbox, Provider::Spotify),
            &tokens.record,
        )
        .await
        .expect("a refresh");

    assert!(!refreshed.rotated);
    let kept = refreshed.record.refresh_token.as_ref().expect("kept").expose_secret();
    assert_eq!(Some(kept), tokens.record.refresh_token.as_ref().map(SecretString::expose_secret));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_code_or_a_wrong_verifier_is_refused_by_the_token_endpoint() {
    let sandbox = sandbox().await;
    let provider = Provider::Microsoft;
    let granted = authorize(&sandbox, provider, &["contacts"]).await;
    let code = granted.code.secret().clone();
    let redirect_uri = granted.redirect_uri.to_string();
    let client_id = credentials(&sandbox, provider).id;
    let token_url = endpoints(&sandbox, provider).token;
    let post = |verifier: String| {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("client_id", client_id.clone()),
            ("code_verifier", verifier),
        ];
        let token_url = token_url.clone();
        async move { browser().post(token_url).form(&form).send().await.expect("post").status() }
    };

    // A wrong verifier uses the code up: codes are single-use whatever happens.
    assert_eq!(post("x".repeat(43)).await, 400);
    assert_eq!(post(granted.verifier.secret().clone()).await, 400, "the code was spent");
    assert_eq!(sandbox.stats(sandboxed(provider)).codes_refused, 2);
    assert_eq!(sandbox.stats(sandboxed(provider)).pkce_verified, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_failures_say_whether_to_retry_or_reconnect_and_show_no_body() {
    let sandbox = sandbox().await;
    let provider = Provider::Google;
    let tokens = connect(&sandbox, provider, &["calendar"]).await;
    let client = TokenClient::new().expect("a client");
    let (endpoints, credentials) = (endpoints(&sandbox, provider), credentials(&sandbox, provider));
    sandbox.fail_next(
        sandboxed(provider),
        &[
            Failure::ServerError,
            Failure::TooManyRequests,
            Failure::Malformed,
            Failure::InvalidGrant,
        ],
    );

    let mut errors: Vec<TokenError> = Vec::new();
    for _ in 0..4 {
        let result = client.refresh(provider, &endpoints, &credentials, &tokens.record).await;
        errors.push(result.expect_err("a failure"));
    }

    let kinds: Vec<(bool, bool)> =
        errors.iter().map(|e| (e.is_retryable(), e.is_grant_gone())).collect();
    assert_eq!(kinds, [(true, false), (true, false), (true, false), (false, true)], "{errors:?}");
    assert!(errors[3].to_string().contains("invalid_grant"), "{}", errors[3]);
    for error in &errors {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("access_tok") && !shown.contains("sbx-"), "{shown}");
    }
    // After the switches, the grant still works.
    client.refresh(provider, &endpoints, &credentials, &tokens.record).await.expect("refresh");
    assert_eq!(sandbox.stats(sandboxed(provider)).token_requests, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narrowed_grant_leaves_the_unticked_dataset_not_granted() {
    let sandbox = sandbox().await;
    let provider = Provider::Google;
    sandbox.withhold_scopes(
        sandboxed(provider),
        &["https://www.googleapis.com/auth/calendar.readonly"],
    );

    let tokens = connect(&sandbox, provider, &["calendar", "contacts"]).await;

    let coverage =
        coverage(&datasets(provider, &["calendar", "contacts"]), tokens.granted_scopes.as_deref());
    assert_eq!(
        coverage,
        [
            Coverage { dataset: "calendar", granted: false },
            Coverage { dataset: "contacts", granted: true },
        ]
    );
    assert_eq!(
        tokens.record.scopes,
        ["openid", "email", "https://www.googleapis.com/auth/contacts.readonly"],
        "the account scopes and the ticked dataset's"
    );
}
