//! The loopback redirect listener of a native app (RFC 8252 §7.3).
//!
//! [`Loopback::bind`] listens on `127.0.0.1` at a port the system picks; the redirect URI is
//! `http://127.0.0.1:PORT/callback`. An IP literal rather than `localhost`: Spotify refuses
//! `localhost`, and a name could resolve elsewhere. [`Loopback::wait`] serves requests until
//! one reaches `/callback` with a query, answers it with a short plain page the person may
//! close, and returns the query; any other request (a browser's `/favicon.ico`) gets a 404 and
//! the wait goes on. It reads at most [`MAX_REQUEST`] bytes of a request and gives each
//! connection [`READ_TIMEOUT`], so a stray local client cannot hold the flow up.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::authorize::{Redirect, RedirectError};

/// The path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// The most of a request that is read.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long one connection may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

const PAGE: &str = "Datapunk received the provider's answer. You may close this tab and go \
                    back to the terminal.\n";

/// A bound loopback listener.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    redirect_uri: Url,
}

impl Loopback {
    /// Listens on `127.0.0.1` at a free port.
    ///
    /// # Errors
    ///
    /// When no socket can be bound.
    pub async fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let port = listener.local_addr()?.port();
        let redirect_uri = Url::parse(&format!("http://127.0.0.1:{port}{CALLBACK_PATH}"))
            .map_err(|err| io::Error::other(err.to_string()))?;
        Ok(Self { listener, redirect_uri })
    }

    /// The redirect URI to register with the authorization request.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Serves requests until the redirect arrives, and returns its query.
    ///
    /// # Errors
    ///
    /// [`RedirectError::Malformed`] when the redirect's query cannot be read (the browser is
    /// told so too); an I/O error of the listener is returned as [`RedirectError::Malformed`]
    /// naming it.
    pub async fn wait(&self) -> Result<Redirect, RedirectError> {
        loop {
            let (stream, _) = self.listener.accept().await.map_err(|err| {
                RedirectError::Malformed { reason: format!("the loopback listener failed: {err}") }
            })?;
            match tokio::time::timeout(READ_TIMEOUT, serve(stream)).await {
                Ok(Ok(Some(redirect))) => return redirect,
                Ok(Ok(None)) => {}
                Ok(Err(err)) => tracing::debug!(error = %err, "a loopback connection failed"),
                Err(_) => tracing::debug!("a loopback connection sent no request in time"),
            }
        }
    }
}

/// Answers one connection; `Some` when it was the redirect.
async fn serve(mut stream: TcpStream) -> io::Result<Option<Result<Redirect, RedirectError>>> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..read]);
        if request.len() > MAX_REQUEST {
            respond(&mut stream, "431 Request Header Fields Too Large", "request too large\n")
                .await?;
            return Ok(None);
        }
    }

    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != CALLBACK_PATH {
        respond(&mut stream, "404 Not Found", "not found\n").await?;
        return Ok(None);
    }

    let redirect = Redirect::from_query(query);
    match &redirect {
        Ok(_) => respond(&mut stream, "200 OK", PAGE).await?,
        Err(err) => respond(&mut stream, "400 Bad Request", &format!("{err}\n")).await?,
    }
    Ok(Some(redirect))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, target: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn other_requests_get_a_404_and_the_callback_ends_the_wait() {
        let loopback = Loopback::bind().await.expect("bind");
        let uri = loopback.redirect_uri().clone();
        assert_eq!(uri.host_str(), Some("127.0.0.1"));
        assert_eq!(uri.path(), CALLBACK_PATH);
        let port = uri.port().expect("a port");

        let browser = tokio::spawn(async move {
            let favicon = get(port, "/favicon.ico").await;
            let page = get(port, "/callback?code=c1&state=s1").await;
            (favicon, page)
        });
        let redirect = loopback.wait().await.expect("a redirect");
        let (favicon, page) = browser.await.expect("the browser task");

        assert!(favicon.starts_with("HTTP/1.1 404"), "{favicon}");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("You may close this tab"), "{page}");
        assert_eq!(redirect, Redirect::from_query("code=c1&state=s1").expect("a query"));
    }

    #[tokio::test]
    async fn a_silent_or_oversized_client_does_not_end_the_wait() {
        let loopback = Loopback::bind().await.expect("bind");
        let port = loopback.redirect_uri().port().expect("a port");

        let clients = tokio::spawn(async move {
            let mut big = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            let _ = big.write_all(&vec![b'a'; 2 * MAX_REQUEST]).await;
            let mut answer = String::new();
            let _ = big.read_to_string(&mut answer).await;
            let page = get(port, "/callback?code=c2&state=s2").await;
            (answer, page)
        });
        let redirect = loopback.wait().await.expect("a redirect");
        let (answer, page) = clients.await.expect("the client task");

        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert_eq!(redirect, Redirect::from_query("code=c2&state=s2").expect("a query"));
    }
}
