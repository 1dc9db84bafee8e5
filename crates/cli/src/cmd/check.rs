//! `datapunk check INTEGRATION [--json]`: make sure an integration still works.
//!
//! It obtains an access token the way the daemon does (refreshed when it has less than a
//! minute left, one refresh at a time across every process) and asks the provider which
//! account it belongs to. A grant the provider no longer accepts moves the integration to
//! `needs_reauth`, as the daemon would.

use std::path::Path;
use std::sync::Arc;

use datapunk_daemon::providers::ProviderClient;
use datapunk_daemon::tokens::{Keeper, Recorder};
use datapunk_oauth::provider::Provider;
use datapunk_store::integrations;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The integration, as `datapunk integrations` lists it.
    integration: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(path: Option<&Path>, args: CheckArgs) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let mut clients = Vec::new();
    for provider in Provider::ALL {
        if config.providers.contains_key(provider.as_str()) {
            clients.push(ProviderClient::configured(&config, provider)?);
        }
    }
    let context = Arc::new(super::Context::open(&config).await?);
    let result = check(&context, clients, &args).await;
    context.database.close().await;
    result
}

async fn check(
    context: &Arc<super::Context>,
    clients: Vec<ProviderClient>,
    args: &CheckArgs,
) -> anyhow::Result<()> {
    let recorder: Arc<dyn Recorder> = Arc::clone(context) as _;
    let keeper = Keeper::new(
        Arc::clone(&context.vault),
        context.database.store().clone(),
        clients,
        "cli",
        recorder,
    )?;
    let name = args.integration.as_str();
    let account = keeper.account(name).await?;
    let integration = {
        let client = context.database.store().client().await?;
        integrations::get(&client, name).await?
    };
    let expires = integration
        .as_ref()
        .and_then(|i| i.token_expires_at)
        .and_then(|at| at.format(&Rfc3339).ok());
    if args.json {
        let shown = json!({
            "integration": name,
            "provider": integration.as_ref().map(|i| i.provider.clone()),
            "account_id": account.id,
            "display_name": account.display_name,
            "state": integration.as_ref().map(|i| i.state.as_str()),
            "token_expires_at": expires,
        });
        println!("{shown}");
        return Ok(());
    }
    let who = account.display_name.as_deref().unwrap_or(&account.id);
    println!(
        "{name}: works; account {who} (id {}); access token valid until {}",
        account.id,
        expires.as_deref().unwrap_or("unknown")
    );
    Ok(())
}
