//! `datapunk disconnect INTEGRATION [--keep-data]`: end Datapunk's access to an account.
//!
//! The refresh token is revoked at the provider where it has an RFC 7009 endpoint (Google);
//! where it has none (Microsoft, Spotify), the command says where the person removes
//! Datapunk's access by hand. Then the token record leaves the vault, and, unless
//! `--keep-data`, the data key is destroyed with the integration's rows, which makes what was
//! synced unreadable everywhere. The integration stays listed as `revoked`.

use std::path::Path;

use anyhow::Context as _;
use datapunk_daemon::audit::event;
use datapunk_daemon::providers::ProviderClient;
use datapunk_daemon::tokens::LOCK_WAIT;
use datapunk_oauth::provider::Provider;
use datapunk_oauth::token::TokenClient;
use datapunk_store::audit::Outcome;
use datapunk_store::integrations::{self, State};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub(crate) struct DisconnectArgs {
    /// The integration, as `datapunk integrations` lists it.
    integration: String,
    /// Keep the synced data and its key; only the access ends.
    #[arg(long)]
    keep_data: bool,
    /// Do not ask before destroying the data (needed when standard input is not a terminal).
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn run(path: Option<&Path>, args: DisconnectArgs) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let context = super::Context::open(&config).await?;
    let result = disconnect(&context, &config, &args).await;
    context.database.close().await;
    result
}

async fn disconnect(
    context: &super::Context,
    config: &datapunk_config::Config,
    args: &DisconnectArgs,
) -> anyhow::Result<()> {
    let name = args.integration.as_str();
    let integration = {
        let client = context.database.store().client().await?;
        integrations::get(&client, name).await?
    }
    .with_context(|| format!("there is no integration `{name}`; see `datapunk integrations`"))?;
    let provider: Provider = integration.provider.parse()?;
    if !args.keep_data {
        eprintln!(
            "warning: this destroys the data key of {name}, which makes everything synced from \
             it unreadable for good; add --keep-data to keep it."
        );
        super::keys::confirm(args.yes, name, &format!("disconnect {name} and destroy its data"))?;
    }
    context.preflight().await?;

    // No refresh may run while the grant is taken apart: the daemon would find the tokens
    // gone and report the integration as needing reconnection.
    let mut lock_client = context.database.store().client().await?;
    let lock = lock_client.transaction().await?;
    integrations::lock_token_refresh(&lock, name, LOCK_WAIT)
        .await
        .context("another process is refreshing this integration's tokens; try again")?;

    let token = context.vault.token(name).await.context("cannot read the tokens")?;
    let client = config
        .providers
        .contains_key(provider.as_str())
        .then(|| ProviderClient::configured(config, provider))
        .transpose()?;
    let revoke_url = client.as_ref().and_then(|c| c.endpoints.revoke.clone());
    let refresh = token.as_ref().and_then(|t| t.refresh_token.as_ref());
    // Said once the disconnection is complete and recorded: a reader that goes away must not
    // leave it half done.
    let mut said = Vec::new();
    match (&revoke_url, refresh, &client) {
        (Some(url), Some(refresh), Some(client)) => {
            let revoked = TokenClient::new()?.revoke(url, &client.credentials, refresh).await;
            let (outcome, reason) = match &revoked {
                Ok(()) => (Outcome::Success, None),
                Err(error) => (Outcome::Failure, Some(error.to_string())),
            };
            let details = json!({ "provider": provider.as_str(), "reason": reason });
            let mut revoke_event = event("cli", "integration.revoked", outcome, details);
            revoke_event.integration = Some(name.to_owned());
            context.record(&revoke_event, "grant revoked at the provider").await?;
            match revoked {
                Ok(()) => said.push(format!("revoked Datapunk's access at {provider}")),
                Err(error) => eprintln!(
                    "warning: {provider} did not confirm the revocation ({error}); remove \
                     Datapunk's access at {}",
                    provider.manage_access_url()
                ),
            }
        }
        _ => said.push(format!(
            "{provider} offers no way for an app to give up its access; remove Datapunk at {}",
            provider.manage_access_url()
        )),
    }

    context.vault.delete_token(name).await.context("cannot delete the tokens")?;
    if !args.keep_data && context.vault.delete_data_key(name).await? {
        let details = json!({ "backend": context.vault.kind().as_str() });
        let mut key_event = event("cli", "key.destroyed", Outcome::Success, details);
        key_event.integration = Some(name.to_owned());
        context.record(&key_event, "data key destroyed").await?;
    }
    let removed = {
        let mut client = context.database.store().client().await?;
        integrations::set_state(&client, name, State::Revoked, None).await?;
        if args.keep_data {
            0
        } else {
            datapunk_store::datasets::remove_integration_data(&mut client, name).await?
        }
    };
    lock.commit().await?;
    let details =
        json!({ "provider": provider.as_str(), "kept_data": args.keep_data, "removed": removed });
    let mut done = event("cli", "integration.disconnected", Outcome::Success, details);
    done.integration = Some(name.to_owned());
    context.record(&done, "integration disconnected").await?;
    for line in said {
        println!("{line}");
    }
    println!("disconnected {name}{}", if args.keep_data { "; its data is kept" } else { "" });
    Ok(())
}
