//! One module per command group.

pub(crate) mod audit;
pub(crate) mod config;
pub(crate) mod db;
pub(crate) mod status;

use std::path::Path;

use datapunk_config::{Config, Environment, locate};
use datapunk_daemon::EXIT_CONFIG;

use crate::Exit;

/// Loads the configuration, turning a bad file into exit status 78.
pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let env = Environment::from_process();
    let located = locate(path, &env).map_err(|e| Exit::new(EXIT_CONFIG, e.to_string()))?;
    Config::load(&located, &env).map_err(|e| Exit::new(EXIT_CONFIG, e.to_string()).into())
}
