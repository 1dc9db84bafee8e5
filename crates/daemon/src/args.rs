//! `datapunkd`'s command line. It lives in the library so that `datapunk generate man` makes
//! the daemon's manual page from the same definition that parses its arguments.

use std::path::PathBuf;

use clap::Parser;

use crate::logging::LogFormat;

/// Keeps your calendar, contacts and listening history in your own PostgreSQL database.
///
/// datapunkd syncs the integrations connected with `datapunk connect` on a schedule, keeps
/// their tokens and data keys in the secret store the configuration names, and writes every
/// record's personal fields encrypted under its integration's key. It runs as a systemd user
/// service of the person whose data it keeps (datapunkd.service, or datapunk.service under
/// the NixOS module; Type=notify, with a watchdog) and refuses to run as root. The `datapunk`
/// command talks to it over a control socket that only the same user may use.
#[derive(Debug, Parser)]
#[command(name = "datapunkd", version)]
pub struct Args {
    /// Configuration file [default: $DATAPUNK_CONFIG, else $XDG_CONFIG_HOME/datapunk/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Format of log lines on standard error, used when journald is not reachable.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The manual page's sections beyond the options, as (heading, entries); an entry is a term
/// and what it means.
pub const MANUAL_SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT",
                "Stop: tell systemd STOPPING=1, record daemon.stop in the audit log, stop the \
                 managed PostgreSQL cluster and exit 0.",
            ),
            (
                "SIGHUP",
                "Read the configuration again. A file that is not valid is refused and audited, \
                 and the running configuration stays. The log level applies at once; other \
                 changes apply at the next start, as the log says.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "Stopped by a signal."),
            ("1", "Failed; the journal says why."),
            ("77", "Started as root."),
            (
                "78",
                "The configuration file is missing (when named) or not valid, the defaults \
                 cannot apply (XDG_RUNTIME_DIR unset), an encrypted-table master key or a \
                 provider's client secret cannot be read, or a database setting cannot work \
                 (a runtime directory the managed cluster cannot use, an unreadable TLS CA \
                 file). The unit does not restart on 77 or 78.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            ("DATAPUNK_CONFIG", "The configuration file, when --config is not given."),
            (
                "DATAPUNK_LOG",
                "A tracing filter directive (such as debug or datapunk_daemon::sync=trace) \
                 that overrides log.level.",
            ),
            (
                "XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR",
                "Where the default paths below are; HOME stands in for the first three when \
                 they are unset.",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "Set by systemd for LoadCredential=; the *_credential configuration keys name \
                 files in it.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "Set by systemd; datapunkd reports readiness and status and pings the watchdog.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            (
                "$XDG_CONFIG_HOME/datapunk/config.toml",
                "The configuration (datapunk config example).",
            ),
            ("$XDG_RUNTIME_DIR/datapunk/control.sock", "The control socket."),
            (
                "$XDG_DATA_HOME/datapunk/postgresql",
                "The managed PostgreSQL cluster's data directory.",
            ),
            (
                "$XDG_STATE_HOME/datapunk",
                "The audit log's anchor and the audit events waiting for the database.",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[(
            "datapunk(1), systemctl(1), journalctl(1)",
            "journalctl --user -u datapunkd (-u datapunk under the NixOS module) shows what it did.",
        )],
    ),
];
