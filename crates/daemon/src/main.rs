//! `datapunkd`: the Datapunk daemon. See the `datapunk_daemon` library for what it does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use datapunk_daemon::logging::{self, LogFormat};
use datapunk_daemon::{EXIT_NOPERM, process, service};

/// Keeps your calendar, contacts and listening history in your own PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "datapunkd", version)]
struct Args {
    /// Configuration file [default: $DATAPUNK_CONFIG, else $XDG_CONFIG_HOME/datapunk/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Format of log lines on standard error, used when journald is not reachable.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    process::restrict_umask();
    let args = Args::parse();
    if process::is_root() {
        eprintln!("datapunkd: {}", process::ROOT_REFUSAL);
        return ExitCode::from(EXIT_NOPERM);
    }
    let (_, level) = logging::init("datapunkd", args.log_format);

    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("datapunkd: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
    runtime.block_on(service::run(args.config, level))
}
