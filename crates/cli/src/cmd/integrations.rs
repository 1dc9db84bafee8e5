//! `datapunk integrations [--json]`: the connected accounts, read from the database.
//!
//! It needs no keyring: the tokens stay where they are, and what is shown (provider, account,
//! datasets, state, the access token's expiry time, the last refresh and error) is in
//! PostgreSQL. It reads as `datapunk_reader`.

use std::path::Path;

use datapunk_daemon::database::Database;
use datapunk_store::Role;
use datapunk_store::integrations;
use time::format_description::well_known::Rfc3339;

pub(crate) async fn run(path: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let database = Database::open_as(&config, Role::Reader).await?;
    let listed = async {
        let client = database.store().client().await?;
        anyhow::Ok(integrations::list(&client).await?)
    }
    .await;
    database.close().await;
    let listed = listed?;

    if json {
        for integration in &listed {
            println!("{}", serde_json::to_string(integration)?);
        }
        return Ok(());
    }
    if listed.is_empty() {
        println!("no integrations; connect one with `datapunk connect PROVIDER --datasets ...`");
        return Ok(());
    }
    // To the second, so that every time is as wide as its column (`--json` keeps the rest).
    let time = |at: Option<time::OffsetDateTime>| {
        at.and_then(|at| at.replace_nanosecond(0).ok())
            .and_then(|at| at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok())
            .unwrap_or_else(|| "-".to_owned())
    };
    println!(
        "{:<16}  {:<10}  {:<14}  {:<20}  {:<20}  DATASETS",
        "NAME", "PROVIDER", "STATE", "TOKEN EXPIRES", "LAST REFRESH"
    );
    for integration in &listed {
        let datasets: Vec<String> = integration
            .datasets
            .iter()
            .map(|d| if d.granted { d.name.clone() } else { format!("{} (not granted)", d.name) })
            .collect();
        println!(
            "{:<16}  {:<10}  {:<14}  {:<20}  {:<20}  {}",
            integration.name,
            integration.provider,
            integration.state.as_str(),
            time(integration.token_expires_at),
            time(integration.last_refresh_at),
            datasets.join(", ")
        );
        let account = match (&integration.display_name, &integration.account_id) {
            (Some(name), Some(id)) if name != id => format!("{name} ({id})"),
            (_, Some(id)) => id.clone(),
            (Some(name), None) => name.clone(),
            (None, None) => "unknown".to_owned(),
        };
        println!("{:<16}  account: {account}", "");
        if let Some(error) = &integration.last_error {
            println!("{:<16}  last error: {error}", "");
        }
    }
    Ok(())
}
