//! `datapunk connect PROVIDER --datasets a,b`: grant Datapunk read access to an account.
//!
//! The authorization code flow with PKCE through a loopback redirect (see `datapunk-oauth`):
//! the URL is printed, and opened with `xdg-open` unless `--no-browser`; the provider sends the
//! browser back to a listener on 127.0.0.1, or, on a machine whose browser cannot reach it, the
//! person pastes the address the browser ended on. The tokens go to the vault, the integration
//! (provider, scopes asked and granted, datasets) to PostgreSQL, and each step to the audit
//! trail. A redirect that does not belong to this attempt is refused and audited, and nothing
//! is stored.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use datapunk_daemon::audit::event;
use datapunk_daemon::providers::ProviderClient;
use datapunk_oauth::authorize::{Authorization, Redirect};
use datapunk_oauth::grant::coverage;
use datapunk_oauth::loopback::Loopback;
use datapunk_oauth::provider::{Dataset, Endpoints, Provider};
use datapunk_oauth::token::{Credentials, TokenClient};
use datapunk_store::audit::{Event, Outcome};
use datapunk_store::integrations::{self, Integration, State};
use datapunk_vault::key::{DataKey, KeyPurpose};
use serde_json::json;

/// How long the person has to answer at the provider.
const WAIT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// google, microsoft or spotify.
    provider: String,
    /// The datasets to grant, comma-separated (google: calendar,contacts; microsoft:
    /// calendar,contacts; spotify: recently-played,saved-tracks,playlists).
    #[arg(long, value_delimiter = ',', required = true)]
    datasets: Vec<String>,
    /// The integration's name [default: the provider's].
    #[arg(long)]
    name: Option<String>,
    /// Do not open a browser; print the URL, and also accept the address the browser ends on,
    /// pasted here.
    #[arg(long)]
    no_browser: bool,
}

pub(crate) async fn run(path: Option<&Path>, args: ConnectArgs) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let provider: Provider = args.provider.parse()?;
    let mut datasets: Vec<&'static Dataset> = Vec::new();
    for name in &args.datasets {
        let dataset = provider.dataset(name)?;
        if !datasets.contains(&dataset) {
            datasets.push(dataset);
        }
    }
    let name = args.name.clone().unwrap_or_else(|| provider.as_str().to_owned());
    let client = ProviderClient::configured(&config, provider)?;
    let (endpoints, credentials) = (client.endpoints, client.credentials);

    let context = super::Context::open(&config).await?;
    let result =
        connect(&context, provider, &name, &datasets, &endpoints, &credentials, &args).await;
    context.database.close().await;
    result
}

async fn connect(
    context: &super::Context,
    provider: Provider,
    name: &str,
    datasets: &[&'static Dataset],
    endpoints: &Endpoints,
    credentials: &Credentials,
    args: &ConnectArgs,
) -> anyhow::Result<()> {
    context.preflight().await?;
    let loopback = Loopback::bind().await.context("cannot listen for the provider's redirect")?;
    let authorization = Authorization::begin(
        provider,
        endpoints,
        &credentials.id,
        loopback.redirect_uri(),
        datasets,
    )?;

    println!("Open this address in a browser to grant Datapunk read access to {provider}:");
    println!("{}", authorization.url());
    if args.no_browser {
        println!(
            "Waiting for the provider. If the browser cannot reach this machine, paste the \
             address it ends on (starting with {}) here.",
            loopback.redirect_uri()
        );
    } else {
        open_browser(authorization.url().as_str());
    }
    std::io::stdout().flush().ok();

    let redirect_uri = loopback.redirect_uri().clone();
    let received = tokio::time::timeout(WAIT, async {
        if args.no_browser {
            tokio::select! {
                redirect = loopback.wait() => redirect,
                pasted = pasted_redirect(&redirect_uri) => pasted,
            }
        } else {
            loopback.wait().await
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!("no answer from the provider within 5 minutes; nothing was stored")
    })?;

    let requested: Vec<String> = authorization.scopes().to_vec();
    let granted = match received.and_then(|redirect| authorization.accept(&redirect)) {
        Ok(granted) => granted,
        Err(error) => {
            let details = json!({ "provider": provider.as_str(), "reason": error.to_string() });
            let outcome =
                if matches!(error, datapunk_oauth::authorize::RedirectError::StateMismatch) {
                    Outcome::Denied
                } else {
                    Outcome::Failure
                };
            let event = integration_event("integration.connect_refused", name, outcome, details);
            context.record(&event, "connection refused").await.ok();
            return Err(error.into());
        }
    };

    let client = TokenClient::new()?;
    let tokens = match client.exchange(provider, endpoints, credentials, granted).await {
        Ok(tokens) => tokens,
        Err(error) => {
            let details = json!({ "provider": provider.as_str(), "reason": error.to_string() });
            let event =
                integration_event("integration.connect_failed", name, Outcome::Failure, details);
            context.record(&event, "connection failed").await.ok();
            return Err(error.into());
        }
    };
    if tokens.record.refresh_token.is_none() {
        anyhow::bail!("{provider} issued no refresh token, so Datapunk could not stay connected");
    }

    // Which account was granted decides whether these tokens may replace the stored ones.
    let account = match client
        .account(provider, &endpoints.account, &tokens.record.access_token)
        .await
    {
        Ok(account) => account,
        Err(error) => {
            let details = json!({ "provider": provider.as_str(), "reason": error.to_string() });
            let event =
                integration_event("integration.connect_failed", name, Outcome::Failure, details);
            context.record(&event, "connection failed").await.ok();
            return Err(anyhow::Error::new(error).context(format!(
                "cannot learn which {provider} account was granted; nothing was stored"
            )));
        }
    };
    let existing = {
        let client = context.database.store().client().await?;
        integrations::get(&client, name).await?
    };
    if let Some(existing) = &existing
        && let Some(previous) = &existing.account_id
        && previous != &account.id
        && existing.state != State::Revoked
    {
        let details = json!({
            "provider": provider.as_str(),
            "reason": "a different account was granted",
        });
        let event =
            integration_event("integration.connect_refused", name, Outcome::Denied, details);
        context.record(&event, "connection refused").await.ok();
        let shown = existing.display_name.as_deref().unwrap_or(previous);
        anyhow::bail!(
            "integration `{name}` is connected to another {provider} account ({shown}); the \
             account just granted is a different one, so nothing was stored. Sign in to {shown} \
             at {provider}, or connect the new account under another name (`--name`)"
        );
    }

    context.vault.put_token(name, &tokens.record).await.context("cannot store the tokens")?;
    if context.vault.data_key(name).await?.is_none() {
        let key = DataKey::generate(KeyPurpose::integration(name))?;
        context.vault.put_data_key(&key).await?;
        let details = json!({ "backend": context.vault.kind().as_str() });
        let event = integration_event("key.created", name, Outcome::Success, details);
        context.record(&event, "data key created").await?;
    }

    let coverage = coverage(datasets, tokens.granted_scopes.as_deref());
    let integration = Integration {
        name: name.to_owned(),
        provider: provider.as_str().to_owned(),
        account_id: Some(account.id.clone()),
        display_name: account.display_name.clone(),
        requested_scopes: requested,
        granted_scopes: tokens.record.scopes.clone(),
        state: State::Active,
        token_expires_at: Some(tokens.record.expires_at),
        last_refresh_at: None,
        last_error: None,
        datasets: coverage
            .iter()
            .map(|c| integrations::Dataset {
                name: c.dataset.to_owned(),
                consented: true,
                granted: c.granted,
            })
            .collect(),
    };
    // A revoked integration reconnected to another account starts empty: what was kept of
    // the old account (`disconnect --keep-data`) and its sync tokens must not mix with the new.
    let other_account = existing.as_ref().is_some_and(|existing| {
        existing.account_id.as_deref().is_some_and(|previous| previous != account.id)
    });
    let removed = {
        let mut client = context.database.store().client().await?;
        let removed = if other_account {
            datapunk_store::datasets::remove_integration_data(&mut client, name).await?
        } else {
            0
        };
        integrations::record_connected(&mut client, &integration).await?;
        removed
    };

    let granted: Vec<&str> = coverage.iter().filter(|c| c.granted).map(|c| c.dataset).collect();
    let missing: Vec<&str> = coverage.iter().filter(|c| !c.granted).map(|c| c.dataset).collect();
    let details = json!({
        "provider": provider.as_str(),
        "granted": granted,
        "not_granted": missing,
        "previous_account_data_removed": removed,
    });
    let event = integration_event("integration.connected", name, Outcome::Success, details);
    context.record(&event, "integration connected").await?;
    if !missing.is_empty() {
        let details = json!({ "provider": provider.as_str(), "not_granted": missing });
        let event =
            integration_event("integration.grant_narrowed", name, Outcome::Success, details);
        context.record(&event, "grant narrowed").await?;
    }

    if removed > 0 {
        println!("removed {removed} records kept from the account {name} was connected to before");
    }
    let who = account.display_name.as_deref().unwrap_or(&account.id);
    println!("connected {name} ({provider}, {who}): {}", granted.join(", "));
    if !missing.is_empty() {
        println!(
            "not granted: {} (the permission was not given at {provider}; connect again to \
             grant it)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn integration_event(
    action: &str,
    name: &str,
    outcome: Outcome,
    details: serde_json::Value,
) -> Event {
    let mut event = event("cli", action, outcome, details);
    event.integration = Some(name.to_owned());
    event
}

/// Opens `url` with `xdg-open`; a failure only means the person opens it by hand.
fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        eprintln!("could not start a browser (xdg-open); open the address above by hand");
    }
}

/// A redirect address pasted on standard input; waits for ever when there is none.
///
/// Standard input is read on a thread of its own, not the runtime's blocking pool: when the
/// redirect comes through the listener instead, a read that never ends must not keep the
/// process from exiting.
async fn pasted_redirect(
    redirect_uri: &url::Url,
) -> Result<Redirect, datapunk_oauth::authorize::RedirectError> {
    let (sent, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if sent.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if !line.trim().is_empty() {
            return Redirect::from_pasted_url(&line, redirect_uri);
        }
    }
    std::future::pending().await
}
