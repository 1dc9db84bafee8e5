//! The daemon's side of the control socket.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datapunk_store::audit::Outcome;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::proto::{MAX_LINE, Request, Response};
use crate::audit::event;
use crate::service::Shared;

/// How long a client has to send its request line: an idle connection must not hold a task.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a line to a client may wait for the client to read it. A client that reads
/// nothing must not hold a task or a connection slot forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed at once. The CLI needs one.
const MAX_CONNECTIONS: usize = 32;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    /// Another daemon answers on the socket.
    #[error("another datapunkd is already running (it answers on {})", .0.display())]
    AlreadyRunning(PathBuf),
    /// Binding failed.
    #[error("cannot listen on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the socket at `path` with mode 0600, replacing a stale socket file left by a daemon
/// that died, but never one a live daemon answers on.
pub(crate) async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io_error = |source| BindError::Io { path: path.to_path_buf(), source };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::AlreadyRunning(path.to_path_buf()));
        }
        fs::remove_file(path).map_err(io_error)?;
    }
    // The umask is 077 already, so the socket is born 0600; set it anyway in case the
    // process was started differently.
    let listener = UnixListener::bind(path).map_err(io_error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    Ok(listener)
}

/// Serves connections until `shutdown` turns true, then waits for open ones to finish.
pub(crate) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                // Another user's connection is refused (and audited) before it can count
                // against the cap, so it cannot crowd out the owner.
                Ok((stream, _)) if !is_owner(&stream, &shared) => {
                    connections.spawn(refuse_peer(stream, Arc::clone(&shared)));
                }
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(connection(stream, Arc::clone(&shared)));
                }
                Ok((stream, _)) => {
                    tracing::warn!(open = connections.len(), "too many control connections");
                    tokio::spawn(busy(stream));
                }
                Err(error) => tracing::warn!(%error, "control socket accept failed"),
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

fn is_owner(stream: &UnixStream, shared: &Shared) -> bool {
    stream.peer_cred().is_ok_and(|cred| cred.uid() == shared.uid)
}

async fn refuse_peer(stream: UnixStream, shared: Arc<Shared>) {
    match stream.peer_cred() {
        Ok(cred) => refuse(&shared, cred.uid(), cred.pid()).await,
        Err(error) => tracing::warn!(%error, "could not read a peer's credentials; closing"),
    }
}

/// Tells an owner's client that the daemon is at its connection cap, then closes.
async fn busy(mut stream: UnixStream) {
    let answer = Response::Error { message: "busy: too many control connections".into() };
    if let Ok(mut line) = serde_json::to_string(&answer) {
        line.push('\n');
        let write = stream.write_all(line.as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE as u64 + 1));
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, lines.read_line(&mut line)).await;
    let Ok(read) = read else {
        tracing::debug!("control client sent no request in time; closing");
        return;
    };
    let response = match read {
        Ok(0) => return,
        Ok(n) if n > MAX_LINE || !line.ends_with('\n') => Response::Error {
            message: format!("request too long or unterminated (max {MAX_LINE} bytes)"),
        },
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Sync { integration, dataset, full }) => {
                let selection = (integration.as_deref(), dataset.as_deref());
                sync(&shared, selection, full, &mut write).await
            }
            Ok(request) => answer(&shared, request).await,
            Err(error) => {
                tracing::debug!(%error, "malformed control request");
                Response::Error { message: "malformed request: expected one JSON object such as {\"request\":\"status\"}".into() }
            }
        },
        Err(error) => {
            tracing::debug!(%error, "control socket read failed");
            return;
        }
    };
    let mut out = match serde_json::to_string(&response) {
        Ok(out) => out,
        Err(error) => {
            tracing::error!(%error, "could not encode a control response");
            return;
        }
    };
    out.push('\n');
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(out.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "control client went away before the answer"),
        Err(_) => tracing::debug!("control client read nothing; its answer is dropped"),
    }
}

/// Runs a sync for the CLI, sending a progress line after every page. The sync never waits for
/// the client: progress goes through a `watch` channel that keeps only the newest update, and
/// a client that reads nothing for [`WRITE_TIMEOUT`] or goes away gets no more lines. Either
/// way the sync ends as it would have, audited.
async fn sync(
    shared: &Shared,
    (integration, dataset): (Option<&str>, Option<&str>),
    full: bool,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Response {
    let Some(syncer) = shared.syncer() else {
        return Response::Error { message: "datapunkd is still starting".into() };
    };
    let (sender, mut updates) = tokio::sync::watch::channel(None);
    let work = async move {
        // Dropped when the sync ends, which ends the reporting below.
        let progress = move |update| {
            sender.send_replace(Some(update));
        };
        syncer.sync_now(shared, (integration, dataset), full, &progress).await
    };
    let report = async {
        let mut listening = true;
        while updates.changed().await.is_ok() {
            let update = updates.borrow_and_update().clone();
            let Some(update) = update.filter(|_| listening) else {
                continue;
            };
            let Ok(mut line) = serde_json::to_string(&Response::Progress(update)) else {
                continue;
            };
            line.push('\n');
            let written = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes()));
            listening = matches!(written.await, Ok(Ok(())));
        }
    };
    let (result, ()) = tokio::join!(work, report);

    match result {
        Ok(runs) => Response::Synced { runs },
        Err(message) => Response::Error { message },
    }
}

async fn answer(shared: &Shared, request: Request) -> Response {
    match request {
        Request::Status => Response::Status(Box::new(shared.status().await)),
        Request::Sync { .. } => unreachable!("sync requests are answered by `sync`"),
    }
}

async fn refuse(shared: &Shared, uid: u32, pid: Option<i32>) {
    tracing::warn!(
        peer_uid = uid,
        peer_pid = pid,
        "refused a control connection from another user"
    );
    let details = json!({ "peer_uid": uid, "peer_pid": pid });
    let event = event("daemon", "control.refused", Outcome::Denied, details);
    shared.record(&event, "control socket connection from another user refused").await;
}
