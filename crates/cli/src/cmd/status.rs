//! `datapunk status`: asks the running daemon over its control socket.

use std::path::Path;

use datapunk_daemon::control::client::{self, ClientError};
use datapunk_daemon::control::proto::{DatasetStatus, Request, Response};

use crate::{EXIT_NOT_RUNNING, Exit};

pub(crate) async fn run(path: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let socket = config.daemon.control_socket();
    let status = match client::request(&socket, &Request::Status).await {
        Ok(Response::Status(status)) => status,
        Ok(Response::Error { message }) => anyhow::bail!("datapunkd answered: {message}"),
        Ok(other) => anyhow::bail!("datapunkd answered something unexpected: {other:?}"),
        Err(error @ ClientError::NotRunning { .. }) => {
            if json {
                println!("{}", serde_json::json!({ "state": "not_running" }));
            }
            return Err(Exit::new(EXIT_NOT_RUNNING, error.to_string()).into());
        }
        Err(error) => return Err(error.into()),
    };

    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let db = &status.database;
    println!("datapunkd {} (pid {})", status.state.as_str(), status.pid);
    println!("  version       {}", status.version);
    println!("  since         {} ({})", status.started_at, uptime(status.uptime_secs));
    let version = db.server_version.as_deref().map(|v| format!(", PostgreSQL {v}"));
    let reach = if db.reachable { "reachable" } else { "UNREACHABLE" };
    println!("  database      {} ({}{}) {reach}", db.name, db.mode, version.unwrap_or_default());
    let last = status.audit.head_id.map_or_else(|| "-".to_owned(), |id| format!("#{id}"));
    println!(
        "  audit         {} events recorded by datapunkd since start, its last {last}",
        status.audit.recorded_since_start
    );
    let vault = &status.vault;
    let since = vault.since.as_deref().map(|at| format!(" since {at}")).unwrap_or_default();
    println!("  vault         {} {}{since} ({})", vault.noun, vault.state, vault.backend);
    if let Some(reason) = &vault.reason {
        println!("                {reason}");
    }
    if status.integrations.is_empty() {
        println!("  integrations  none connected");
    }
    for integration in &status.integrations {
        println!("  integration   {} {}", integration.name, integration.state);
        for dataset in &integration.datasets {
            println!("    {:<16}{}", dataset.name, dataset_line(dataset));
        }
    }
    Ok(())
}

/// `1234 records; last sync 2026-12-04T10:00:00Z success (+12 ~3 -1)`.
fn dataset_line(dataset: &DatasetStatus) -> String {
    if !dataset.consented {
        return "not chosen".to_owned();
    }
    if !dataset.granted {
        return "not granted (connect again to grant it)".to_owned();
    }
    let mut line = format!("{} records", dataset.records);
    match (&dataset.last_sync_at, &dataset.outcome) {
        (Some(at), Some(outcome)) => {
            line.push_str(&format!("; last sync {at} {outcome}"));
            if outcome == "success" {
                let (added, updated, deleted) = (dataset.added, dataset.updated, dataset.deleted);
                line.push_str(&format!(" (+{added} ~{updated} -{deleted})"));
            }
        }
        _ => line.push_str("; not synced yet"),
    }
    if let Some(error) = &dataset.error {
        line.push_str(&format!(": {error}"));
    }
    line
}

fn uptime(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}
