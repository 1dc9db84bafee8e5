//! Datapunk's PostgreSQL layer.
//!
//! - [`Store`] is the connection pool the daemon and the CLI use, opened from
//!   [`ConnectOptions`] (a libpq-style connection string, a password file, TLS settings).
//! - [`managed::Cluster`] runs the daemon's own cluster: Unix socket only, peer
//!   authentication, no passwords.
//! - [`admin`] creates the [`Role`]s, the database and the schema, applies the embedded
//!   migrations, and reports what each role may do.
//! - [`audit`] appends to, lists and verifies the hash-chained audit log.
//! - [`integrations`] records connected accounts; [`datasets`] stores their synced records
//!   and the sync state of each stream, a page and its cursor in one transaction.
//!
//! Every fallible function returns [`Error`], whose variants say whether to retry, fix a
//! setting or ask an administrator. No SQL here is built from outside text except one
//! validated and quoted database name; every value travels as a bind parameter.

pub mod admin;
pub mod audit;
mod connect;
pub mod datasets;
mod error;
mod ident;
pub mod integrations;
pub mod managed;
mod migrations;
mod role;

pub use connect::{ConnectOptions, Store, Tls};
/// A connection lent by the [`Store`]'s pool ([`Store::client`]); it derefs to a
/// `tokio_postgres::Client` and goes back to the pool when dropped.
pub type PooledClient = deadpool_postgres::Object;
pub use error::Error;
pub use migrations::{SchemaState, latest_schema_version};
pub use role::Role;
