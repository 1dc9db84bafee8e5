//! The CLI's side of the control socket.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proto::{MAX_LINE, Request, Response, SyncProgress};

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("datapunkd is not running (nothing listens on {})", path.display())]
    NotRunning {
        /// The socket's path.
        path: PathBuf,
    },
    /// The daemon closed the connection without answering: it refused us, or it stopped.
    #[error(
        "datapunkd closed the connection without answering: it serves only its own user, or it \
         stopped meanwhile (see journalctl -t datapunkd)"
    )]
    Refused,
    /// Reading or writing the socket failed.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The answer was not valid protocol.
    #[error("datapunkd sent an answer this datapunk does not understand: {0}")]
    Protocol(#[source] serde_json::Error),
}

/// Sends one request and reads its answer.
///
/// # Errors
///
/// [`ClientError::NotRunning`] when no daemon listens; the other variants when the
/// conversation fails.
pub async fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    request_with_progress(socket, request, |_| {}).await
}

/// Sends one request and reads its answer, handing each progress line that comes before it
/// to `progress`.
///
/// # Errors
///
/// As [`request`].
pub async fn request_with_progress(
    socket: &Path,
    request: &Request,
    mut progress: impl FnMut(&SyncProgress),
) -> Result<Response, ClientError> {
    let io_error = |source| ClientError::Io { path: socket.to_path_buf(), source };
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) =>
        {
            return Err(ClientError::NotRunning { path: socket.to_path_buf() });
        }
        Err(e) => return Err(io_error(e)),
    };
    let (read, mut write) = stream.into_split();

    let mut line = serde_json::to_string(request).map_err(ClientError::Protocol)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(io_error)?;

    let mut reader = BufReader::new(read);
    loop {
        let mut answer = String::new();
        // Each line is bounded on its own; a sync may send many.
        match (&mut reader).take(MAX_LINE as u64 * 16).read_line(&mut answer).await {
            Ok(0) => return Err(ClientError::Refused),
            Ok(_) => match serde_json::from_str(&answer).map_err(ClientError::Protocol)? {
                Response::Progress(update) => progress(&update),
                response => return Ok(response),
            },
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Refused);
            }
            Err(e) => return Err(io_error(e)),
        }
    }
}
