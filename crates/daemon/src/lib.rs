//! The Datapunk daemon, `datapunkd`, and the pieces of it that the `datapunk` CLI shares.
//!
//! - [`args`] is `datapunkd`'s command line, shared with the CLI's manual page generator.
//! - [`service`] runs the daemon: it refuses root, opens the database, announces readiness to
//!   systemd, serves the control socket and shuts down cleanly on SIGTERM.
//! - [`database`] opens PostgreSQL as the configuration says: the daemon's own cluster
//!   (managed mode) or an existing server (external mode).
//! - [`audit`] records what Datapunk does, in the hash-chained audit table and in journald.
//! - [`control`] is the control socket: its protocol, its server and the client the CLI uses.
//! - [`logging`] sends logs to journald when it is there, else to standard error.
//! - [`vault`] opens the secret store the configuration names and watches its state.
//! - [`providers`] reads the configured OAuth clients; [`tokens`] hands out access tokens and
//!   refreshes them, one refresh at a time; [`desktop`] tells the person what needs them.
//! - [`process`] holds the process-wide safety checks: umask, root refusal, private directories.

pub mod args;
pub mod audit;
pub mod control;
pub mod database;
pub mod desktop;
pub mod logging;
mod notify;
pub mod process;
pub mod providers;
pub mod service;
pub mod sync;
pub mod tokens;
pub mod vault;

/// Exit status for a configuration problem (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit status when run with privileges it refuses (`EX_NOPERM` from sysexits.h).
pub const EXIT_NOPERM: u8 = 77;
