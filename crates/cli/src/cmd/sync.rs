//! `datapunk sync`: asks the running daemon to sync now and shows how it goes.
//!
//! The daemon does the work (it holds the keys and the schedule); the CLI only asks and
//! watches. On a terminal a progress bar counts pages, records and time per dataset; otherwise
//! one summary line per dataset is printed when it ends, or with `--json` one JSON object per
//! dataset.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use datapunk_daemon::control::client::{self, ClientError};
use datapunk_daemon::control::proto::{Request, Response, SyncProgress, SyncRun};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{EXIT_NOT_RUNNING, Exit};

#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// Only this integration [default: every one].
    integration: Option<String>,
    /// Only this dataset (`calendar`, `contacts`, `recently-played`, `saved-tracks`,
    /// `playlists`).
    #[arg(long)]
    dataset: Option<String>,
    /// Read everything again instead of only what changed: sync tokens are dropped, and what
    /// the provider no longer has is removed once the full read completes.
    #[arg(long)]
    full: bool,
    /// Print one JSON object per dataset instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(path: Option<&Path>, args: SyncArgs) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let socket = config.daemon.control_socket();
    let request = Request::Sync {
        integration: args.integration.clone(),
        dataset: args.dataset,
        full: args.full,
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(progress_bar);
    let show = |update: &SyncProgress| {
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{}/{}: {} pages, {} records, {:.1} s",
                update.integration,
                update.dataset,
                update.pages,
                update.records,
                Duration::from_millis(update.elapsed_ms).as_secs_f64()
            ));
        }
    };
    let answer = client::request_with_progress(&socket, &request, show).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let runs = match answer {
        Ok(Response::Synced { runs }) => runs,
        Ok(Response::Error { message }) => anyhow::bail!("datapunkd answered: {message}"),
        Ok(other) => anyhow::bail!("datapunkd answered something unexpected: {other:?}"),
        Err(error @ ClientError::NotRunning { .. }) => {
            return Err(Exit::new(EXIT_NOT_RUNNING, error.to_string()).into());
        }
        Err(error) => return Err(error.into()),
    };

    if runs.is_empty() {
        let what = args.integration.map_or_else(
            || "no integration has a dataset to sync".to_owned(),
            |name| format!("integration `{name}` has no dataset to sync"),
        );
        anyhow::bail!("{what}; see `datapunk integrations`");
    }
    for run in &runs {
        if args.json {
            println!("{}", serde_json::to_string(run)?);
        } else {
            println!("{}", line(run));
        }
    }
    if runs.iter().any(|run| run.outcome == "failure") {
        return Err(Exit::silent(1).into());
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("asking datapunkd");
    bar
}

/// `google/calendar: success, 12 added, 3 changed, 1 removed (4 pages, 1.2 s)`.
fn line(run: &SyncRun) -> String {
    let took = Duration::from_millis(run.elapsed_ms);
    let mut text = format!("{}/{}: {}", run.integration, run.dataset, run.outcome);
    if run.outcome != "skipped" {
        text.push_str(&format!(
            ", {} added, {} changed, {} removed ({} page{}, {:.1} s)",
            run.added,
            run.updated,
            run.deleted,
            run.pages,
            if run.pages == 1 { "" } else { "s" },
            took.as_secs_f64()
        ));
    }
    if let Some(error) = &run.error {
        text.push_str(&format!(": {error}"));
    }
    text
}
