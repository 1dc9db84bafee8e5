//! What the daemon tells systemd (`sd_notify(3)`): readiness, a status line, watchdog pings.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op. Failures to
//! notify are logged and otherwise ignored: systemd acts on the missing message itself.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify the service manager");
    }
}

/// `READY=1` together with the first status line.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=`: the one line `systemctl status` shows.
pub(crate) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`.
pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `STOPPING=1` with a last status line.
pub(crate) fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// advises, or `None` when no watchdog is armed for this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|usec| usec / 2).filter(|d| !d.is_zero())
}
