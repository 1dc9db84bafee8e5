//! `datapunk`: the command line in front of `datapunkd` and the Datapunk database.
//!
//! `status` and `sync` ask the running daemon over its control socket. `config` validates and
//! explains the configuration file. `db` sets up and inspects the database and its roles.
//! `audit` lists and verifies the audit trail. `keys` manages the per-integration data keys.
//! `backup` makes, checks, restores and prunes encrypted database backups.
//! `connect`, `check`, `integrations` and `disconnect` manage the connected accounts.
//! `generate` (hidden) writes the manual pages and shell completions for packagers.

mod cmd;
mod generate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when `datapunk status` finds no daemon (as `systemctl status` does).
const EXIT_NOT_RUNNING: u8 = 3;

/// Keeps your calendar, contacts and listening history in your own PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "datapunk", version, propagate_version = true)]
struct Args {
    /// Configuration file [default: $DATAPUNK_CONFIG, else $XDG_CONFIG_HOME/datapunk/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether datapunkd runs, and how it is doing.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate or explain the configuration file.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Set up and inspect the database.
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
    /// List or verify the audit trail.
    Audit(cmd::audit::AuditArgs),
    /// Grant Datapunk read access to a Google, Microsoft or Spotify account.
    Connect(cmd::connect::ConnectArgs),
    /// Check that an integration works: refresh its token if due, ask the provider who it is.
    Check(cmd::check::CheckArgs),
    /// Sync now: every consented dataset, or those of one integration or one dataset.
    Sync(cmd::sync::SyncArgs),
    /// End Datapunk's access to an account, revoking it where the provider allows.
    Disconnect(cmd::disconnect::DisconnectArgs),
    /// List the connected accounts, their datasets and states (no keyring needed).
    Integrations {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create, export, back up, restore or destroy the per-integration data keys.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Create, list, verify, restore and prune encrypted backups of the database.
    #[command(subcommand)]
    Backup(cmd::backup::BackupCommand),
    /// Write the manual pages or print shell completions (for packagers).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// A failure with its own exit status.
#[derive(Debug)]
pub(crate) struct Exit {
    code: u8,
    message: Option<String>,
}

impl Exit {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: Some(message.into()) }
    }

    /// Exit with `code` after the command has printed its own explanation.
    pub(crate) fn silent(code: u8) -> Self {
        Self { code, message: None }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or("failed"))
    }
}

impl std::error::Error for Exit {}

/// The status a shell gives a program killed by SIGPIPE.
const EXIT_CLOSED_PIPE: u8 = 128 + 13;

/// Whether a panic is `println!` finding standard output closed (`datapunk audit | head`).
fn is_closed_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

/// When the reader of standard output goes away, the failed print unwinds (so that what is
/// dropped on the way is cleaned up) without a panic message, and `main` ends with
/// [`EXIT_CLOSED_PIPE`].
fn quiet_about_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_pipe(info.payload()) {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    datapunk_daemon::process::restrict_umask();
    quiet_about_a_closed_pipe();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("datapunk: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = args.config;
    let run = std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            match args.command {
                Command::Status { json } => cmd::status::run(config.as_deref(), json).await,
                Command::Config(command) => cmd::config::run(config.as_deref(), command),
                Command::Db(command) => cmd::db::run(config.as_deref(), command).await,
                Command::Audit(audit) => cmd::audit::run(config.as_deref(), audit).await,
                Command::Keys(command) => cmd::keys::run(config.as_deref(), command).await,
                Command::Backup(command) => cmd::backup::run(config.as_deref(), command).await,
                Command::Integrations { json } => {
                    cmd::integrations::run(config.as_deref(), json).await
                }
                Command::Check(args) => cmd::check::run(config.as_deref(), args).await,
                Command::Sync(args) => cmd::sync::run(config.as_deref(), args).await,
                Command::Disconnect(args) => cmd::disconnect::run(config.as_deref(), args).await,
                Command::Connect(connect) => cmd::connect::run(config.as_deref(), connect).await,
                Command::Generate(command) => generate::run(command),
            }
        })
    });
    let result = match std::panic::catch_unwind(run) {
        Ok(result) => result,
        Err(payload) if is_closed_pipe(payload.as_ref()) => {
            return ExitCode::from(EXIT_CLOSED_PIPE);
        }
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<Exit>() {
            Some(exit) => {
                if let Some(message) = &exit.message {
                    eprintln!("datapunk: error: {message}");
                }
                ExitCode::from(exit.code)
            }
            None => {
                eprintln!("datapunk: error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
