//! `datapunk-sandbox`: runs the provider sandbox until it is stopped.
//!
//! The first line on standard output is the base URL it bound, so that a script or a test can
//! start it with `--listen 127.0.0.1:0` and read where it is.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Stands in for Google's, Microsoft's and Spotify's OAuth endpoints and data APIs.
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
    /// Seed of the generated data: the same seed and sizes give the same records.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Google Calendar events, over three calendars, and as many Outlook events.
    #[arg(long, default_value_t = 300)]
    events: u64,
    /// Google contacts, and as many Outlook contacts.
    #[arg(long, default_value_t = 120)]
    contacts: u64,
    /// Spotify saved tracks.
    #[arg(long, default_value_t = 200)]
    saved_tracks: u64,
    /// Spotify playlists.
    #[arg(long, default_value_t = 12)]
    playlists: u64,
    /// Spotify plays in the recently-played list.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=50))]
    plays: u64,
    /// Serve Spotify playlists in the 2026 development-mode shape (`items` for `tracks`).
    #[arg(long)]
    playlist_items: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let population = datapunk_sandbox::Population {
        seed: args.seed,
        events: args.events,
        contacts: args.contacts,
        saved_tracks: args.saved_tracks,
        playlists: args.playlists,
        plays: args.plays,
    };
    let sandbox = match datapunk_sandbox::Sandbox::start_with(args.listen, population).await {
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
    if args.playlist_items {
        sandbox.set_playlist_shape(datapunk_sandbox::PlaylistShape::Items);
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
