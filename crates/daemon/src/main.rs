//! `datapunkd`: the Datapunk daemon. See the `datapunk_daemon` library for what it does.

use std::process::ExitCode;

use clap::Parser;
use datapunk_daemon::args::Args;
use datapunk_daemon::logging;
use datapunk_daemon::{EXIT_NOPERM, process, service};

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
