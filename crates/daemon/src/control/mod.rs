//! The control socket: how the `datapunk` CLI talks to the running daemon.
//!
//! The socket is `$XDG_RUNTIME_DIR/datapunk/control.sock` (directory 0700, socket 0600). On
//! every connection the daemon reads the peer's credentials (`SO_PEERCRED`) and serves only
//! its own uid; anyone else is refused and the refusal is audited. Requests and responses are
//! single lines of JSON ([`proto`]); [`client`] is the CLI's side.

pub mod client;
pub mod proto;
pub(crate) mod server;
