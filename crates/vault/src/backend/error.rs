//! The error of every secret-store operation, shaped by what the caller does next.

use std::time::Duration;

use super::{BackendKind, ItemKind};

/// Why a secret-store operation failed.
///
/// The variants follow the caller's decision: [`Error::Unavailable`], [`Error::Locked`] and
/// [`Error::Timeout`] are worth retrying later without anyone changing anything
/// ([`Error::is_retryable`]); [`Error::PromptDismissed`] means the person said no;
/// [`Error::Corrupt`], [`Error::Undecryptable`] and [`Error::Ambiguous`] need a person to look
/// at the store; [`Error::KeyExists`] and [`Error::InvalidIntegration`] are the caller's own
/// mistakes.
///
/// No variant carries a secret: messages name the backend, the kind of item and the
/// integration, never a token, a key or the text of a stored record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret store cannot be reached: no session bus, no Secret Service provider, no
    /// default keyring, no `pass` program or password store, no database or master key.
    #[error("the {backend} secret store is unavailable: {reason}")]
    Unavailable {
        /// The backend that was asked.
        backend: BackendKind,
        /// What is missing and how to provide it.
        reason: String,
    },

    /// The keyring (or the GnuPG key that opens the password store) is locked. Retry once the
    /// user has unlocked it; Datapunk never unlocks it by itself.
    #[error(
        "the {backend} secret store is locked; unlock the keyring (or the GnuPG key of the \
         password store) and Datapunk carries on by itself"
    )]
    Locked {
        /// The backend that was asked.
        backend: BackendKind,
    },

    /// A prompt asking the user to unlock or to allow access was dismissed.
    #[error("the {backend} secret store's prompt was dismissed; answer it to go on")]
    PromptDismissed {
        /// The backend that was asked.
        backend: BackendKind,
    },

    /// The store did not answer in time, for instance because a prompt is waiting for a person.
    #[error(
        "the {backend} secret store did not answer within {} s while trying to {operation}",
        after.as_secs()
    )]
    Timeout {
        /// The backend that was asked.
        backend: BackendKind,
        /// What was being done, such as `read the google token`.
        operation: String,
        /// How long Datapunk waited.
        after: Duration,
    },

    /// A stored record cannot be read: it was damaged, or written by something else.
    #[error(
        "the stored {kind} of integration `{integration}` in the {backend} secret store is \
         unreadable: {reason}"
    )]
    Corrupt {
        /// The backend that holds it.
        backend: BackendKind,
        /// Token record or data key.
        kind: ItemKind,
        /// The integration it belongs to.
        integration: String,
        /// What is wrong with it, never its content.
        reason: String,
    },

    /// A record of the `encrypted-table` store does not decrypt: the master key is not the one
    /// that sealed it, or the record was altered.
    #[error(
        "cannot decrypt the stored {kind} of integration `{integration}`: the master key differs \
         from the one that sealed it, or the record was altered; check the master key file"
    )]
    Undecryptable {
        /// Token record or data key.
        kind: ItemKind,
        /// The integration it belongs to.
        integration: String,
    },

    /// More than one item matches one kind and integration, so which one holds the secret is
    /// unknown. Nothing was read or replaced.
    #[error(
        "the {backend} secret store holds {count} items for the {kind} of integration \
         `{integration}`; remove the extra ones (for a keyring: `secret-tool search --all \
         application datapunk`)"
    )]
    Ambiguous {
        /// The backend that holds them.
        backend: BackendKind,
        /// Token record or data key.
        kind: ItemKind,
        /// The integration they belong to.
        integration: String,
        /// How many matched.
        count: usize,
    },

    /// A data key is stored already. Replacing it would make everything encrypted under it
    /// unreadable, so it is refused; delete the old key deliberately first.
    #[error(
        "integration `{integration}` already has a data key in the {backend} secret store; \
         replacing it would make its encrypted data unreadable"
    )]
    KeyExists {
        /// The backend that holds it.
        backend: BackendKind,
        /// The integration.
        integration: String,
    },

    /// The integration's name cannot name an item.
    #[error(
        "invalid integration name {name:?}: use 1 to 64 lowercase ASCII letters, digits, '-' \
         or '_'"
    )]
    InvalidIntegration {
        /// The name given.
        name: String,
    },

    /// The store failed for a reason the other variants do not cover.
    #[error("the {backend} secret store failed to {operation}")]
    Backend {
        /// The backend that failed.
        backend: BackendKind,
        /// What was being done, such as `store the google token`.
        operation: String,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True when trying again later may succeed without anyone changing anything: the store is
    /// unreachable, locked, or slow to answer.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Locked { .. } | Self::Timeout { .. })
    }

    pub(crate) fn unavailable(backend: BackendKind, reason: impl Into<String>) -> Self {
        Self::Unavailable { backend, reason: reason.into() }
    }

    pub(crate) fn backend(
        backend: BackendKind,
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend { backend, operation: operation.into(), source: source.into() }
    }
}
