//! One module per command group.

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod connect;
mod context;
pub(crate) mod db;
pub(crate) mod disconnect;
pub(crate) mod integrations;
pub(crate) mod keys;
pub(crate) mod status;
pub(crate) mod sync;

use std::path::Path;

use anyhow::Context as _;
use datapunk_config::{Config, Environment, locate};
use datapunk_daemon::audit::Auditor;
use datapunk_daemon::{EXIT_CONFIG, process};
use datapunk_store::audit::Event;

use crate::Exit;

pub(crate) use context::Context;

/// Loads the configuration, turning a bad file into exit status 78.
pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let env = Environment::from_process();
    let located = locate(path, &env).map_err(|e| Exit::new(EXIT_CONFIG, e.to_string()))?;
    Config::load(&located, &env).map_err(|e| Exit::new(EXIT_CONFIG, e.to_string()).into())
}

/// The auditor of the CLI's events, with the state directory (where the anchor and the
/// spool live) ready.
pub(crate) fn auditor(config: &Config) -> anyhow::Result<Auditor> {
    let dir = &config.daemon.state_dir;
    process::private_dir(dir).with_context(|| format!("failed to prepare {}", dir.display()))?;
    let auditor = Auditor::new(process::uid(), config.daemon.audit_anchor());
    Ok(auditor.spooling_to(config.daemon.audit_spool()))
}

/// Keeps an event that the database did not take: in the spool when the database was
/// `unreachable`, saying so on standard error, else in journald alone. Returns whether the
/// event is in the spool, to join the audit trail at the next append.
pub(crate) async fn keep(
    auditor: &Auditor,
    event: &Event,
    message: &str,
    unreachable: bool,
) -> bool {
    if !unreachable {
        auditor.journal_only(event, message);
        return false;
    }
    match auditor.defer(event, message).await {
        Ok(spool) => {
            eprintln!(
                "note: the database cannot be reached, so {} waits in {} and joins the audit \
                 trail with the next event recorded",
                event.action,
                spool.display()
            );
            true
        }
        Err(error) => {
            let error = anyhow::Error::from(error);
            eprintln!("warning: could not keep {} for the audit trail: {error:#}", event.action);
            false
        }
    }
}
