//! The start-up self-test of field encryption.
//!
//! [`run`] proves, on this machine and with this build, what field encryption promises: that a
//! fresh key comes from the operating system, that the ciphertext holds no plaintext, that the
//! key decrypts it, and that another key does not. The last check is the one that would have
//! caught pgcrypto's CVE-2026-14663, where an unavailable cipher silently produced unencrypted
//! output. The daemon refuses to start when the test fails.

use crate::field::{self, FieldError};
use crate::key::{DataKey, KeyError, KeyPurpose};

/// The text encrypted by the self-test; long enough that a stray copy cannot match by chance.
const CANARY: &[u8] = b"datapunk self-test canary: if you can read this, encryption failed";

/// The shortest run of canary bytes that must not appear in the ciphertext.
const WINDOW: usize = 8;

/// Encrypts a canary under a fresh key and checks the result; see the
/// [module documentation](self).
///
/// # Errors
///
/// A [`SelfTestError`] naming the check that failed.
pub fn run() -> Result<(), SelfTestError> {
    let key =
        DataKey::generate(KeyPurpose::integration("self-test")).map_err(SelfTestError::Key)?;
    let other =
        DataKey::generate(KeyPurpose::integration("self-test")).map_err(SelfTestError::Key)?;
    if key.expose_secret() == other.expose_secret() {
        return Err(SelfTestError::RepeatedKey);
    }

    let message = field::encrypt(&key, CANARY).map_err(SelfTestError::Encrypt)?;
    if shares_a_run(CANARY, &message) {
        return Err(SelfTestError::PlaintextInCiphertext);
    }
    match field::decrypt(&key, &message) {
        Ok(plaintext) if plaintext.as_slice() == CANARY => {}
        Ok(_) => return Err(SelfTestError::WrongPlaintext),
        Err(err) => return Err(SelfTestError::Decrypt(err)),
    }
    if field::decrypt(&other, &message).is_ok() {
        return Err(SelfTestError::WrongKeyDecrypts);
    }

    Ok(())
}

/// Whether `haystack` contains any [`WINDOW`] consecutive bytes of `needle`.
fn shares_a_run(needle: &[u8], haystack: &[u8]) -> bool {
    needle.windows(WINDOW).any(|run| haystack.windows(WINDOW).any(|w| w == run))
}

/// Which check of the self-test failed. Each one means this build or machine cannot be trusted
/// to encrypt; the daemon stops.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfTestError {
    /// No key could be generated.
    #[error("encryption self-test: cannot generate a key")]
    Key(#[source] KeyError),
    /// Two keys generated in a row were equal: the random number generator is broken.
    #[error(
        "encryption self-test: two generated keys are equal; the operating system's random \
         number generator is broken"
    )]
    RepeatedKey,
    /// The canary could not be encrypted.
    #[error("encryption self-test: cannot encrypt the canary")]
    Encrypt(#[source] FieldError),
    /// Part of the canary appeared in clear in the ciphertext.
    #[error("encryption self-test: the ciphertext contains the plaintext; encryption is broken")]
    PlaintextInCiphertext,
    /// The right key failed to decrypt the canary.
    #[error("encryption self-test: the canary does not decrypt with its key")]
    Decrypt(#[source] FieldError),
    /// The right key decrypted something other than the canary.
    #[error("encryption self-test: the canary decrypts to something else")]
    WrongPlaintext,
    /// Another key decrypted the canary.
    #[error("encryption self-test: the canary decrypts with the wrong key; encryption is broken")]
    WrongKeyDecrypts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_test_passes_on_a_working_build() {
        run().expect("self-test");
    }

    #[test]
    fn the_plaintext_check_finds_part_of_the_canary_in_an_unencrypted_message() {
        // A check that can never fire would pass unnoticed; this one must fire on clear text.
        let mut message = vec![0xD2, 0x40];
        message.extend_from_slice(&CANARY[10..10 + WINDOW]);

        assert!(shares_a_run(CANARY, &message));
        assert!(!shares_a_run(CANARY, &message[..message.len() - 1]));
    }
}
