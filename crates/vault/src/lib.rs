//! Datapunk's vault: where secrets live and how personal fields are encrypted.
//!
//! - [`secret`]: [`SecretString`](secret::SecretString), [`SecretBytes`](secret::SecretBytes)
//!   and the OAuth [`TokenRecord`](secret::TokenRecord), wiped on drop and printed as
//!   `[REDACTED]`.
//! - [`key`]: [`DataKey`](key::DataKey), one random 256-bit key per integration, and its
//!   pgcrypto passphrase.
//! - [`field`]: personal fields as OpenPGP messages that pgcrypto can read but PostgreSQL never
//!   gets the key of.
//! - [`selftest`]: the check of field encryption the daemon runs before it starts.
//! - [`backend`]: the secret stores that keep token records and data keys.
//! - [`backup`]: the GnuPG-encrypted copy of every data key, for disaster recovery.

pub mod backend;
pub mod backup;
pub mod field;
pub mod key;
pub mod secret;
pub mod selftest;
