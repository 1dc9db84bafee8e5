//! Test harness for Datapunk: the real services that its tests run against.
//!
//! Datapunk's tests use real parts, not mocks. This crate starts those parts, hands out their
//! addresses and cleans up after them:
//!
//! - [`mod@account`]: the unprivileged account that the services and the daemon run as. When the
//!   tests run as root (as they do in CI), that is the system user `datapunk-test`; otherwise it
//!   is the current user.
//! - [`mod@dirs`]: temporary directories with short paths, owned by that account.
//! - [`mod@bins`]: the workspace binaries (`datapunkd`, `datapunk`), copied where the account can
//!   execute them.
//! - [`mod@cluster`]: a throwaway PostgreSQL cluster, reached over a Unix socket.
//! - [`mod@journal`]: a systemd-journald to log to, read back with `journalctl`.
//! - [`mod@bus`]: a private D-Bus session bus with an unlocked GNOME Keyring on it.
//! - [`mod@notifications`]: a desktop notification daemon on such a bus, recording what it is
//!   sent.
//! - [`mod@notify`]: a socket that records what a daemon sends to `$NOTIFY_SOCKET`.
//!
//! # Failure
//!
//! Nothing is ever skipped. When a part cannot run on this machine, the function that needs it
//! panics with a message that says what is missing and how to provide it, so the test fails.
//!
//! # Cleanup
//!
//! Services shared by the tests of one binary live in statics, which Rust never drops. Each of
//! them is watched by a small reaper process that waits on a pipe whose other end only the test
//! process holds. When the test process exits for any reason, a panic with `panic = "abort"` or a
//! signal included, the kernel closes that pipe and the reaper stops the service and removes its
//! directory. Services owned by a single test are stopped when their value is dropped.

pub mod account;
pub mod bins;
pub mod bus;
pub mod cluster;
pub mod dirs;
pub mod journal;
pub mod notifications;
pub mod notify;

mod process;
mod reaper;

pub use account::{Account, account, is_root, other_account};
pub use bins::bin;
pub use bus::{SessionBus, session_bus};
pub use cluster::{Cluster, cluster};
pub use dirs::{TempDir, tempdir, tempdir_mode, tempdir_owned};
pub use journal::{Journal, JournalEntry, journal};
pub use notify::NotifySocket;
