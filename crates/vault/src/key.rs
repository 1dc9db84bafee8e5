//! Data keys: the random keys that encrypt personal fields.
//!
//! A [`DataKey`] is 256 bits from the operating system's random number generator, made for one
//! [`KeyPurpose`]: one integration's data, or the records of the encrypted-table secret store.
//! It lives only in the secret store and in this process, never in PostgreSQL, so destroying it
//! makes every copy of the data it encrypted unreadable: rows, WAL, file-system snapshots and
//! backups.
//!
//! pgcrypto reads Datapunk's encrypted fields too (see [`crate::field`]), but its
//! `pgp_sym_decrypt_bytea(data, psw text)` takes a text passphrase, not key bytes. The
//! passphrase of a data key is therefore defined as the lowercase hexadecimal form of its 32
//! bytes, 64 characters ([`DataKey::export_passphrase`]), and field encryption feeds exactly that
//! string to OpenPGP's string-to-key function. The passphrase carries the key's full 256 bits.

use std::fmt;

use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::secret::{REDACTED, SecretString};

/// The length of a data key in bytes.
pub const KEY_LEN: usize = 32;

/// The length of a data key's export passphrase: two hexadecimal digits per byte.
pub const PASSPHRASE_LEN: usize = 2 * KEY_LEN;

/// What a [`DataKey`] is for. Each purpose has its own key, so that destroying one shreds
/// exactly that data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// The personal fields of one integration, named as in the configuration (`spotify`,
    /// `google`): lowercase ASCII letters, digits, `-` and `_`, at most 64 characters.
    Integration(String),
    /// The records of the `encrypted-table` secret store, under its master key.
    SecretStoreMaster,
}

impl KeyPurpose {
    /// The purpose of the data key for the integration `name`.
    pub fn integration(name: impl Into<String>) -> Self {
        Self::Integration(name.into())
    }

    /// Checks that an integration's name is usable as a label in the secret store.
    fn validate(&self) -> Result<(), KeyError> {
        match self {
            Self::Integration(name) => {
                let allowed =
                    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
                if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
                    return Err(KeyError::InvalidIntegration(name.clone()));
                }
                Ok(())
            }
            Self::SecretStoreMaster => Ok(()),
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integration(name) => write!(f, "integration {name}"),
            Self::SecretStoreMaster => f.write_str("secret store master"),
        }
    }
}

/// A 256-bit key for field encryption; see the [module documentation](self).
///
/// The key and its passphrase are wiped from memory when the value is dropped. `Display`
/// prints [`REDACTED`] and `Debug` prints the purpose with the key material redacted. There is
/// no `Clone`: one key, one owner; and no `PartialEq`.
pub struct DataKey {
    purpose: KeyPurpose,
    // Boxed so that moving a `DataKey` moves a pointer, not a copy of the secret left behind on
    // the stack.
    key: Box<Zeroizing<[u8; KEY_LEN]>>,
    /// The export passphrase, kept because every encryption needs it.
    passphrase: Box<Zeroizing<[u8; PASSPHRASE_LEN]>>,
}

impl DataKey {
    /// A new random key for `purpose`, from the operating system's random number generator
    /// (`getrandom(2)` on Linux).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidIntegration`] for an integration name outside the allowed
    /// characters; [`KeyError::Random`] when the operating system has no randomness to give.
    pub fn generate(purpose: KeyPurpose) -> Result<Self, KeyError> {
        purpose.validate()?;

        let mut key = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        OsRng.try_fill_bytes(&mut key[..]).map_err(|err| KeyError::Random(err.to_string()))?;

        Ok(Self::with_key(purpose, key))
    }

    /// A key for `purpose` from its 32 bytes, as a secret store returns them.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidIntegration`] as for [`DataKey::generate`];
    /// [`KeyError::WrongLength`] when `bytes` is not 32 bytes long.
    pub fn from_bytes(purpose: KeyPurpose, bytes: &[u8]) -> Result<Self, KeyError> {
        purpose.validate()?;
        if bytes.len() != KEY_LEN {
            return Err(KeyError::WrongLength { purpose, len: bytes.len() });
        }

        let mut key = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        key.copy_from_slice(bytes);
        Ok(Self::with_key(purpose, key))
    }

    /// A key for `purpose` from its export passphrase (64 hexadecimal digits, either case), as
    /// [`DataKey::export_passphrase`] gave it.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidIntegration`] as for [`DataKey::generate`];
    /// [`KeyError::MalformedPassphrase`] when the text is not 64 hexadecimal digits.
    pub fn from_export_passphrase(
        purpose: KeyPurpose,
        passphrase: &SecretString,
    ) -> Result<Self, KeyError> {
        purpose.validate()?;

        let mut key = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        hex::decode_to_slice(passphrase.expose_secret().trim(), &mut key[..])
            .map_err(|_| KeyError::MalformedPassphrase { purpose: purpose.clone() })?;
        Ok(Self::with_key(purpose, key))
    }

    fn with_key(purpose: KeyPurpose, key: Box<Zeroizing<[u8; KEY_LEN]>>) -> Self {
        let mut passphrase = Box::new(Zeroizing::new([0u8; PASSPHRASE_LEN]));
        // The output buffer is exactly twice the input's length, which is all encoding needs.
        if hex::encode_to_slice(&key[..], &mut passphrase[..]).is_err() {
            unreachable!("a passphrase buffer of twice the key's length is too small");
        }
        Self { purpose, key, passphrase }
    }

    /// What the key is for.
    pub fn purpose(&self) -> &KeyPurpose {
        &self.purpose
    }

    /// The key's 32 bytes, for the secret store to keep. Nothing else needs them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The key as the text passphrase pgcrypto takes: its 32 bytes in lowercase hexadecimal.
    ///
    /// Use it as a bind parameter (`pgp_sym_decrypt_bytea(col, $1)`), never in SQL text,
    /// and only with `log_parameter_max_length = 0`: PostgreSQL can log parameters.
    pub fn export_passphrase(&self) -> SecretString {
        let mut text = String::with_capacity(PASSPHRASE_LEN);
        // Hexadecimal digits are ASCII, hence one char each.
        text.extend(self.passphrase.iter().map(|&b| char::from(b)));
        SecretString::new(text)
    }

    /// The passphrase's bytes, the input of the OpenPGP string-to-key function.
    pub(crate) fn passphrase_bytes(&self) -> &[u8; PASSPHRASE_LEN] {
        &self.passphrase
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("purpose", &self.purpose)
            .field("key", &format_args!("{REDACTED}"))
            .finish()
    }
}

impl fmt::Display for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a data key could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random number generator failed; nothing was made.
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
    /// The integration's name is not usable as a key label.
    #[error(
        "invalid integration name {0:?}: use 1 to 64 lowercase ASCII letters, digits, '-' or '_'"
    )]
    InvalidIntegration(String),
    /// The stored key has the wrong length: it was damaged or is not a data key.
    #[error(
        "the data key for {purpose} is {len} bytes long instead of 32; restore it from a key \
         backup"
    )]
    WrongLength {
        /// What the key is for.
        purpose: KeyPurpose,
        /// The length found.
        len: usize,
    },
    /// The passphrase given is not an exported data key.
    #[error(
        "the passphrase for {purpose} is not a data key: expected 64 hexadecimal digits as \
         `datapunk keys export` prints them"
    )]
    MalformedPassphrase {
        /// What the key is for.
        purpose: KeyPurpose,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spotify() -> KeyPurpose {
        KeyPurpose::integration("spotify")
    }

    #[test]
    fn a_generated_key_prints_redacted_and_no_key_material() {
        let key = DataKey::generate(spotify()).expect("generate");
        let hex_lower = hex::encode(key.expose_secret());
        let hex_upper = hex_lower.to_uppercase();

        let debug = format!("{key:?}");
        let pretty = format!("{key:#?}");
        let display = format!("{key}");

        for shown in [&debug, &pretty, &display] {
            assert!(shown.contains(REDACTED), "{shown}");
            assert!(!shown.contains(&hex_lower[..16]), "{shown}");
            assert!(!shown.contains(&hex_upper[..16]), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &key.expose_secret()[..4])), "{shown}");
        }
        assert!(debug.contains("spotify"), "{debug}");
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = DataKey::generate(spotify()).expect("generate");
        let b = DataKey::generate(spotify()).expect("generate");

        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn the_export_passphrase_is_the_lowercase_hex_of_the_key() {
        let key = DataKey::from_bytes(spotify(), &[0xAB; KEY_LEN]).expect("from bytes");

        let passphrase = key.export_passphrase();

        assert_eq!(passphrase.expose_secret(), "ab".repeat(KEY_LEN));
        assert_eq!(key.passphrase_bytes(), "ab".repeat(KEY_LEN).as_bytes());
        assert_eq!(format!("{passphrase}"), REDACTED);
    }

    #[test]
    fn a_key_comes_back_from_its_bytes_and_from_its_passphrase() {
        let key = DataKey::generate(spotify()).expect("generate");

        let from_bytes = DataKey::from_bytes(spotify(), key.expose_secret()).expect("bytes");
        let upper = SecretString::new(key.export_passphrase().expose_secret().to_uppercase());
        let from_passphrase = DataKey::from_export_passphrase(spotify(), &upper).expect("hex");

        assert_eq!(from_bytes.expose_secret(), key.expose_secret());
        assert_eq!(from_passphrase.expose_secret(), key.expose_secret());
        assert_eq!(from_passphrase.passphrase_bytes(), key.passphrase_bytes());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        let err = DataKey::from_bytes(spotify(), &[7; 31]).expect_err("31 bytes");

        assert!(matches!(err, KeyError::WrongLength { len: 31, .. }), "{err}");
        assert!(err.to_string().contains("integration spotify"), "{err}");
    }

    #[test]
    fn a_malformed_passphrase_is_refused_without_repeating_it() {
        let passphrase = SecretString::new("zz".repeat(KEY_LEN));

        let err = DataKey::from_export_passphrase(spotify(), &passphrase).expect_err("not hex");

        assert!(matches!(err, KeyError::MalformedPassphrase { .. }), "{err}");
        assert!(!format!("{err} {err:?}").contains("zzzz"), "{err}");
    }

    #[test]
    fn an_integration_name_outside_the_allowed_characters_is_refused() {
        for name in ["", "Spotify", "spo tify", "a/b", &"x".repeat(65)] {
            let err = DataKey::generate(KeyPurpose::integration(name)).expect_err(name);

            assert!(matches!(err, KeyError::InvalidIntegration(_)), "{err}");
        }
        DataKey::generate(KeyPurpose::integration("google-2_x")).expect("allowed name");
        DataKey::generate(KeyPurpose::SecretStoreMaster).expect("master key");
    }
}
