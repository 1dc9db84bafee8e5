//! `datapunk connect` against the provider sandbox, the test acting as the browser: it reads
//! the printed address, opens it, and follows the redirect to the CLI's loopback listener.

mod sandboxed;

use std::net::SocketAddr;

use datapunk_sandbox::{Provider, Sandbox};
use sandboxed::{authorization_url, browse, connect, connected, finish, setup, vault};

#[tokio::test(flavor = "multi_thread")]
async fn connecting_each_provider_stores_tokens_in_the_keyring_and_the_integration_in_postgresql() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");

    for (provider, name, datasets) in [
        (Provider::Google, "google", "calendar,contacts"),
        (Provider::Microsoft, "microsoft", "calendar"),
        (Provider::Spotify, "spotify", "recently-played,playlists"),
    ] {
        let mut child = connect(&setup, &bus, &[name, "--datasets", datasets, "--no-browser"]);
        let url = authorization_url(&mut child);
        let (status, page) = browse(&url).await;
        let (ok, stderr) = tokio::task::spawn_blocking(move || finish(child)).await.expect("join");

        assert!(ok, "{name}: {stderr}");
        assert_eq!(status, 200, "{page}");
        assert_eq!(sandbox.stats(provider).pkce_verified, 1, "{name}: the verifier matched");
        let vault = vault(&bus);
        let token = vault.token(name).await.expect("read the keyring").expect("a token");
        assert!(sandbox.issued_tokens().contains(&token.access_token.expose_secret().to_owned()));
        assert!(vault.data_key(name).await.expect("read the keyring").is_some(), "{name}");
    }

    let admin = setup.admin().await;
    let rows = admin
        .query(
            "SELECT i.name, i.provider, i.state, array_agg(d.dataset ORDER BY d.dataset),
                    bool_and(d.granted)
             FROM datapunk.integrations i JOIN datapunk.integration_datasets d
                  ON d.integration = i.name
             GROUP BY i.name, i.provider, i.state ORDER BY i.name",
            &[],
        )
        .await
        .expect("the integrations");
    let found: Vec<(String, String, String, Vec<String>, bool)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    let expected = |name: &str, datasets: &[&str]| {
        let datasets = datasets.iter().map(|d| (*d).to_owned()).collect();
        (name.to_owned(), name.to_owned(), "active".to_owned(), datasets, true)
    };
    assert_eq!(
        found,
        [
            expected("google", &["calendar", "contacts"]),
            expected("microsoft", &["calendar"]),
            expected("spotify", &["playlists", "recently-played"]),
        ]
    );

    // The list needs no keyring: it reads the database only.
    let listed = setup.cli_ok(&["integrations"]);
    assert!(listed.contains("contacts") && listed.contains("active"), "{listed}");
    // The columns line up: every row's datasets start under the header's DATASETS.
    let column = listed.lines().next().and_then(|h| h.find("DATASETS")).expect("a header");
    for (name, first) in [("google", "calendar"), ("microsoft", "calendar"), ("spotify", "")] {
        let row = listed.lines().find(|l| l.starts_with(name)).expect("a row per integration");
        let datasets = row.get(column..).unwrap_or_default();
        assert!(row[..column].ends_with("  ") && datasets.starts_with(first), "{listed}");
        assert!(!datasets.starts_with(' ') && !datasets.is_empty(), "{listed}");
    }
    for provider in [Provider::Google, Provider::Microsoft, Provider::Spotify] {
        let account = datapunk_sandbox::Account::builtin(provider);
        assert!(
            listed.contains(&format!("account: {} ({})", account.name, account.id)),
            "{listed}"
        );
    }
    let json = setup.cli_ok(&["integrations", "--json"]);
    assert_eq!(json.lines().count(), 3, "{json}");
    assert!(json.contains("\"token_expires_at\":\"20"), "{json}");

    // No token the sandbox issued reached the audit trail or the CLI's output.
    for token in sandbox.issued_tokens() {
        assert!(!listed.contains(&token) && !json.contains(&token), "a token in the output");
    }
    let audit = setup.cli_ok(&["audit", "--json"]);
    for token in sandbox.issued_tokens() {
        assert!(!audit.contains(&token), "a token in the audit trail");
    }
    assert!(audit.contains("integration.connected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_redirect_is_refused_and_audited_and_nothing_is_stored() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");
    let mut child =
        connect(&setup, &bus, &["spotify", "--datasets", "saved-tracks", "--no-browser"]);
    let url = authorization_url(&mut child);
    let redirect_uri = url::Url::parse(&url)
        .expect("a URL")
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .map(|(_, value)| value.into_owned())
        .expect("a redirect URI");

    let forged = format!("{redirect_uri}?code=stolen&state=forged");
    let answer = reqwest::get(&forged).await.expect("deliver the forged redirect");
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(child)).await.expect("join");

    assert_eq!(answer.status(), 200, "the listener answers the browser either way");
    assert!(!ok);
    assert!(stderr.contains("does not belong to this authorization"), "{stderr}");
    assert_eq!(sandbox.stats(Provider::Spotify).token_requests, 0, "no code was exchanged");
    let vault = vault(&bus);
    assert!(vault.token("spotify").await.expect("read").is_none());
    let refused = setup.cli_ok(&["audit", "--action", "integration.connect_refused", "--json"]);
    assert_eq!(refused.lines().count(), 1, "{refused}");
    assert!(refused.contains("\"denied\""), "{refused}");
    let admin = setup.admin().await;
    let count: i64 = admin
        .query_one("SELECT count(*) FROM datapunk.integrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0);
}

/// The redirect the browser would be sent to, without following it.
async fn redirect_of(url: &str) -> url::Url {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a browser");
    let answer = browser.get(url).send().await.expect("open the address");
    assert_eq!(answer.status(), 302);
    let location = answer.headers()["location"].to_str().expect("a location");
    url::Url::parse(location).expect("a URL")
}

fn query(url: &url::Url, name: &str) -> String {
    url.query_pairs().find(|(key, _)| key == name).map(|(_, v)| v.into_owned()).expect(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_code_is_refused_by_the_provider_and_audited_and_nothing_is_stored() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");
    // A first connection goes through; its redirect (code and all) is kept.
    let mut first = connect(&setup, &bus, &["spotify", "--datasets", "playlists", "--no-browser"]);
    let used = redirect_of(&authorization_url(&mut first)).await;
    reqwest::get(used.as_str()).await.expect("deliver the redirect");
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(first)).await.expect("join");
    assert!(ok, "{stderr}");
    let exchanged = sandbox.stats(Provider::Spotify).token_requests;

    // Someone who saw it replays the code into a second attempt, with that attempt's state.
    let args = ["spotify", "--name", "second", "--datasets", "playlists", "--no-browser"];
    let mut second = connect(&setup, &bus, &args);
    let url = url::Url::parse(&authorization_url(&mut second)).expect("a URL");
    let mut replayed = url::Url::parse(&query(&url, "redirect_uri")).expect("a redirect URI");
    replayed
        .query_pairs_mut()
        .append_pair("code", &query(&used, "code"))
        .append_pair("state", &query(&url, "state"));
    reqwest::get(replayed.as_str()).await.expect("deliver the replayed redirect");
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(second)).await.expect("join");

    assert!(!ok, "a replayed code must not connect");
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    let stats = sandbox.stats(Provider::Spotify);
    assert_eq!(stats.token_requests, exchanged + 1, "the provider was asked, and refused");
    assert!(vault(&bus).token("second").await.expect("read").is_none(), "nothing stored");
    let failed = setup.cli_ok(&["audit", "--action", "integration.connect_failed", "--json"]);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(failed.contains("\"integration\":\"second\""), "{failed}");
    let listed = setup.cli_ok(&["integrations", "--json"]);
    assert_eq!(listed.lines().count(), 1, "only the first connection: {listed}");
    for token in sandbox.issued_tokens() {
        assert!(!stderr.contains(&token) && !failed.contains(&token), "a token in the output");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narrowed_grant_marks_the_missing_dataset_not_granted_and_says_so() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");
    sandbox
        .withhold_scopes(Provider::Google, &["https://www.googleapis.com/auth/calendar.readonly"]);

    let mut child =
        connect(&setup, &bus, &["google", "--datasets", "calendar,contacts", "--no-browser"]);
    let url = authorization_url(&mut child);
    browse(&url).await;
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(child)).await.expect("join");
    assert!(ok, "{stderr}");

    let listed = setup.cli_ok(&["integrations"]);
    assert!(listed.contains("calendar (not granted)"), "{listed}");
    assert!(!listed.contains("contacts (not granted)"), "{listed}");
    let narrowed = setup.cli_ok(&["audit", "--action", "integration.grant_narrowed", "--json"]);
    assert_eq!(narrowed.lines().count(), 1, "{narrowed}");
    assert!(narrowed.contains("calendar"), "{narrowed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_revokes_at_google_says_where_spotify_is_revoked_and_removes_the_secrets() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");
    connected(&setup, &bus, "google", "calendar").await;
    connected(&setup, &bus, "spotify", "saved-tracks").await;
    let vault = vault(&bus);
    let google = vault.token("google").await.expect("read").expect("a token");
    let refresh =
        google.refresh_token.as_ref().expect("a refresh token").expose_secret().to_owned();
    let run = |args: &[&str]| {
        setup
            .command("datapunk")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .output()
            .expect("run datapunk")
    };

    let refused = run(&["disconnect", "google"]);
    assert!(!refused.status.success(), "destroying data needs confirmation");
    assert!(vault.token("google").await.expect("read").is_some());

    let output = run(&["disconnect", "google", "--yes"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(sandbox.stats(Provider::Google).revocations, 1);
    assert!(!sandbox.refresh_token_alive(Provider::Google, &refresh), "revoked at Google");
    assert!(vault.token("google").await.expect("read").is_none());
    assert!(vault.data_key("google").await.expect("read").is_none());

    let output = run(&["disconnect", "spotify", "--keep-data"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("https://www.spotify.com/account/apps/"), "{stdout}");
    assert!(vault.token("spotify").await.expect("read").is_none());
    assert!(vault.data_key("spotify").await.expect("read").is_some(), "--keep-data keeps the key");

    let listed = setup.cli_ok(&["integrations", "--json"]);
    assert_eq!(listed.matches("\"state\":\"revoked\"").count(), 2, "{listed}");
    assert!(!listed.contains("\"active\""), "{listed}");
    let audit = setup.cli_ok(&["audit", "--json"]);
    assert_eq!(audit.matches("integration.disconnected").count(), 2);
    assert_eq!(audit.matches("integration.revoked").count(), 1);
    for token in sandbox.issued_tokens() {
        assert!(!audit.contains(&token) && !stdout.contains(&token), "a token in the output");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_browser_it_exits_once_connected_though_nothing_was_pasted() {
    let sandbox = Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox");
    let (setup, bus) = setup(&sandbox, "");
    // A terminal where nobody presses Enter: standard input open, and silent.
    let mut child = setup
        .command("datapunk")
        .args(["connect", "spotify", "--datasets", "playlists", "--no-browser"])
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start datapunk connect");
    let silent = child.stdin.take().expect("its standard input");
    let url = authorization_url(&mut child);
    browse(&url).await;

    let begin = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll datapunk connect") {
            break status;
        }
        if begin.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("datapunk connect still runs after connecting, reading standard input");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success());
    drop(silent);
    let listed = setup.cli_ok(&["integrations"]);
    assert!(listed.contains("spotify"), "{listed}");
}
