//! `datapunk-sandbox`: runs the provider sandbox until it is stopped.
//!
//! The first line on standard output is the base URL it bound, so that a script or a test can
//! start it with `--listen 127.0.0.1:0` and read where it is.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Stands in for Google's, Microsoft's and Spotify's OAuth endpoints.
#[derive(Debug, Parser)]
#[command(name = "datapunk-sandbox", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also write the `[providers.*]` configuration pointing at this sandbox to FILE (and the
    /// client secrets beside it); neither may exist yet.
    #[arg(long, value_name = "FILE")]
    config_out: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let sandbox = match datapunk_sandbox::Sandbox::start(args.listen).await {
        Ok(sandbox) => sandbox,
        Err(error) => {
            eprintln!("datapunk-sandbox: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.config_out
        && let Err(error) = sandbox.write_config(path)
    {
        eprintln!("datapunk-sandbox: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", sandbox.base_url());
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("datapunk-sandbox: cannot wait for a signal: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
