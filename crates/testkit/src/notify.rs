//! A stand-in for systemd's notification socket, recording what a daemon reports.
//!
//! A service of `Type=notify` tells systemd about itself by sending datagrams such as
//! `READY=1` or `STATUS=syncing` to the Unix socket named in `$NOTIFY_SOCKET` (see
//! `sd_notify(3)`). [`NotifySocket`] binds such a socket in a directory of [`account()`],
//! lets the account send to it, and collects every datagram on a background thread; a test
//! starts the daemon with `NOTIFY_SOCKET` set to [`NotifySocket::path`].

use std::fs::{self, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::account::account;
use crate::dirs::{TempDir, tempdir};

/// How often the receiving thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// A notification socket and the messages received on it so far.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    received: Arc<Received>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

/// Messages in the order they arrived, and a signal for each arrival.
#[derive(Debug, Default)]
struct Received {
    messages: Mutex<Vec<String>>,
    arrived: Condvar,
}

impl NotifySocket {
    /// Binds a fresh notification socket that [`account()`] may send to, and starts
    /// collecting.
    ///
    /// # Panics
    ///
    /// Panics when the socket cannot be bound or handed to the account.
    pub fn new() -> NotifySocket {
        let dir = tempdir();
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|err| {
            panic!("datapunk-testkit: cannot bind {}: {err}", path.display())
        });
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap_or_else(|err| {
            panic!("datapunk-testkit: cannot set mode 600 on {}: {err}", path.display())
        });
        account().chown(&path);
        socket.set_read_timeout(Some(POLL)).unwrap_or_else(|err| {
            panic!("datapunk-testkit: cannot set a timeout on {}: {err}", path.display())
        });

        let received = Arc::new(Received::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("notify-socket".to_owned())
            .spawn({
                let received = Arc::clone(&received);
                let stop = Arc::clone(&stop);
                move || collect(&socket, &received, &stop)
            })
            .unwrap_or_else(|err| panic!("datapunk-testkit: cannot start a thread: {err}"));

        NotifySocket { path, received, stop, thread: Some(thread), _dir: dir }
    }

    /// The socket's path, the value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram received so far, in order, as text.
    pub fn messages(&self) -> Vec<String> {
        self.received.messages.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until `done` holds for the messages received so far, and returns them.
    ///
    /// # Panics
    ///
    /// Panics after `timeout`, listing the messages that did arrive.
    pub fn wait_for(&self, done: impl Fn(&[String]) -> bool, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut messages = self.received.messages.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&messages) {
                return messages.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "datapunk-testkit: the expected notification did not arrive on {} within \
                     {timeout:?}; received: {:?}",
                    self.path.display(),
                    *messages
                );
            }
            messages = self
                .received
                .arrived
                .wait_timeout(messages, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until some message carries the line `assignment` (such as `READY=1`; one datagram
    /// may hold several newline-separated assignments), and returns all messages.
    ///
    /// # Panics
    ///
    /// Panics after `timeout`, listing the messages that did arrive.
    pub fn wait_for_line(&self, assignment: &str, timeout: Duration) -> Vec<String> {
        self.wait_for(
            |messages| messages.iter().any(|m| m.lines().any(|line| line == assignment)),
            timeout,
        )
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        NotifySocket::new()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only records messages; a panic in it has nothing left to report.
            let _ = thread.join();
        }
    }
}

/// Receives datagrams until told to stop or the socket fails.
fn collect(socket: &UnixDatagram, received: &Received, stop: &AtomicBool) {
    // sd_notify messages are small; systemd itself accepts up to a page or so.
    let mut buf = vec![0_u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(len) => {
                let message = String::from_utf8_lossy(&buf[..len]).into_owned();
                received.messages.lock().unwrap_or_else(PoisonError::into_inner).push(message);
                received.arrived.notify_all();
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
