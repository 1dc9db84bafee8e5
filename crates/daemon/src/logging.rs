//! Logging: to journald with structured fields when it is reachable, else to standard error.
//!
//! In journald every field of an event becomes `DATAPUNK_<NAME>` (upper case), next to the
//! standard `MESSAGE`, `PRIORITY` and `SYSLOG_IDENTIFIER`, so `journalctl
//! DATAPUNK_ACTION=daemon.start` finds what it should. The field names are listed in
//! `docs/operations.md`. Messages are constant; ids, counts and durations are fields; secrets
//! and personal data are never logged.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The prefix of every Datapunk field in journald.
pub const FIELD_PREFIX: &str = "DATAPUNK";

/// How to write log lines when journald is not reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journald,
    /// Standard error.
    Stderr,
}

/// Targets held back whatever level is asked for: at debug, the PostgreSQL driver logs every
/// statement's bind parameters, which will hold tokens and personal data; at info it repeats
/// the server's notices ("already exists, skipping"), which say nothing to an operator.
const CAPPED: &str = "tokio_postgres=warn,deadpool_postgres=info,deadpool=info";

/// The filter for `directive` with [`CAPPED`] appended, so that it wins over a broader
/// directive such as `debug`.
fn filter(directive: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{directive},{CAPPED}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CAPPED}")))
}

/// Changes the level after the configuration is read.
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Applies `level` (`error` ... `trace`). `$DATAPUNK_LOG`, when set, wins: it is how a
    /// developer turns on debug output for one module.
    pub fn set(&self, level: &str) {
        if std::env::var_os("DATAPUNK_LOG").is_some() {
            return;
        }
        if let Err(error) = self.0.reload(filter(level)) {
            tracing::warn!(%error, "could not change the log level");
        }
    }
}

/// Opens a journald layer named `identifier`, or `None` when no journald listens.
pub fn journald_layer(identifier: &str) -> Option<tracing_journald::Layer> {
    let layer = tracing_journald::layer().ok()?;
    Some(
        layer
            .with_field_prefix(Some(FIELD_PREFIX.to_owned()))
            .with_syslog_identifier(identifier.to_owned()),
    )
}

/// Installs the global logger and returns where it writes and a handle to change its level.
/// `$DATAPUNK_LOG` (an `EnvFilter` directive) overrides the initial `info`.
pub fn init(identifier: &str, format: LogFormat) -> (Sink, LevelHandle) {
    let directive = std::env::var("DATAPUNK_LOG").unwrap_or_else(|_| "info".to_owned());
    let (filter, handle) = reload::Layer::new(filter(&directive));
    let registry = tracing_subscriber::registry().with(filter);

    // Under systemd, standard error goes to the journal too, but without our fields.
    let journald = journald_layer(identifier);
    let sink = if journald.is_some() { Sink::Journald } else { Sink::Stderr };
    let stderr = journald.is_none().then(|| {
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match format {
            LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
            LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        }
    });
    registry.with(journald).with(stderr).init();
    (sink, LevelHandle(handle))
}
