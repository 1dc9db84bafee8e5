//! Field encryption: personal fields as OpenPGP messages that PostgreSQL stores but cannot read.
//!
//! [`encrypt`] turns a field into a binary OpenPGP message (RFC 4880) under a [`DataKey`], ready
//! to be stored in a `bytea` column; [`decrypt`] turns it back. Both run in the daemon, so the
//! key never reaches PostgreSQL. The format is the one pgcrypto reads, so that someone holding
//! the key (`datapunk keys export`) can still decrypt in SQL:
//!
//! ```sql
//! SELECT convert_from(pgp_sym_decrypt_bytea(col, $1), 'UTF8') FROM ...
//! ```
//!
//! Each message is:
//!
//! - a symmetric-key encrypted session key packet (SKESK, version 4) naming AES-256 and a
//!   **salted** string-to-key (S2K type 1) with SHA-256 and 8 random bytes of salt. The S2K
//!   applied to the data key's export passphrase gives the session key, so the packet carries
//!   no encrypted key, like pgcrypto's own messages. Not iterated: the passphrase is a random
//!   256-bit key, which key stretching cannot make any stronger, and iteration made
//!   pgcrypto's own encryption about 17 times slower;
//! - a symmetrically encrypted and integrity protected data packet (SEIPD version 1: AES-256
//!   in OpenPGP's CFB mode, a random prefix and a SHA-1 modification detection code);
//! - inside it, an uncompressed literal data packet in binary mode.
//!
//! A row's personal fields go into one message together ([`encrypt_fields`]), as a JSON object;
//! [`encrypt`] and [`encrypt_str`] seal a single value.
//!
//! A message that was tampered with, encrypted under another key, or is not such a message at
//! all fails to decrypt with an error, never a panic; what failed is not told apart beyond
//! [`FieldError`]'s variants, so that errors make no oracle.
//!
//! pgcrypto's `pgp_sym_decrypt` (the `text` variant) refuses binary literal data; use
//! `pgp_sym_decrypt_bytea` and `convert_from` as above. Messages written by pgcrypto's
//! `pgp_sym_encrypt_bytea(data, passphrase, 'cipher-algo=aes256')` decrypt here; those written
//! without integrity protection (`disable-mdc=1`) or with compression are refused.

use std::collections::BTreeMap;
use std::io::Read as _;

use pgp::bytes::Bytes;
use pgp::composed::Message;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{
    DataMode, LiteralDataHeader, PacketHeader, PacketTrait as _, SymKeyEncryptedSessionKey,
};
use pgp::ser::Serialize as _;
use pgp::types::{Password, StringToKey, Tag};
use rand::RngCore as _;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::key::DataKey;

/// The S2K hash. pgcrypto looks up the hash a message names in a table holding MD5, SHA-1,
/// RIPEMD-160 and SHA-256/384/512 (`digest_list` and `pgp_load_digest` in
/// contrib/pgcrypto/pgp.c), though its options offer only MD5 and SHA-1 for writing; PostgreSQL
/// 15.18 decrypts these messages (`tests/vault_pgcrypto.rs` checks it on every run). SHA-1 is
/// not an option here: RFC 9580 §9.5 forbids generating S2K with it.
const S2K_HASH: HashAlgorithm = HashAlgorithm::Sha256;

/// The cipher of the data.
const CIPHER: SymmetricKeyAlgorithm = SymmetricKeyAlgorithm::AES256;

/// The length of the SKESK body: version, cipher, S2K type, S2K hash, 8 bytes of salt.
const SKESK_BODY_LEN: u32 = 12;

/// The version of the SEIPD packet: 1, with a modification detection code (RFC 4880 §5.13).
const SEIPD_VERSION: u8 = 1;

/// Encrypts `plaintext` under `key` into a binary OpenPGP message; see the
/// [module documentation](self) for its format.
///
/// # Errors
///
/// [`FieldError::Random`] when no random bytes can be had; [`FieldError::TooLarge`] for a
/// plaintext of 4 GiB or more; [`FieldError::Encrypt`] when the `pgp` crate fails, which is a
/// bug.
pub fn encrypt(key: &DataKey, plaintext: &[u8]) -> Result<Vec<u8>, FieldError> {
    // Salt and prefix come from the thread's ChaCha generator, seeded and regularly reseeded
    // from the operating system: one `getrandom(2)` per field took a fifth of the time.
    let mut rng = rand::thread_rng();
    let mut salt = [0u8; 8];
    rng.try_fill_bytes(&mut salt).map_err(|err| FieldError::Random(err.to_string()))?;
    // The S2K output is the session key, as in the messages pgcrypto and GnuPG write by default
    // (RFC 4880 §5.3: an SKESK without an encrypted session key). The salt makes it unique per
    // message; should two salts ever meet (one chance in 2^64 per pair), the random prefix of
    // SEIPD still keeps the two messages' key streams apart.
    let session_key = salted_s2k(&salt, key.passphrase_bytes());
    let skesk = SymKeyEncryptedSessionKey::V4 {
        packet_header: PacketHeader::new_fixed(Tag::SymKeyEncryptedSessionKey, SKESK_BODY_LEN),
        sym_algorithm: CIPHER,
        s2k: StringToKey::Salted { hash_alg: S2K_HASH, salt },
        encrypted_key: Bytes::new(),
    };

    let literal = LiteralDataHeader::new(DataMode::Binary);
    let literal_len = literal.write_len() + plaintext.len();
    let literal_header = PacketHeader::new_fixed(Tag::LiteralData, packet_len(literal_len)?);
    // The literal packet is plaintext: it lives in a buffer sized once and wiped when dropped.
    let mut inner = Zeroizing::new(Vec::with_capacity(literal_header.write_len() + literal_len));
    literal_header.to_writer(&mut *inner).map_err(FieldError::Encrypt)?;
    literal.to_writer(&mut *inner).map_err(FieldError::Encrypt)?;
    inner.extend_from_slice(plaintext);
    // Random prefix, quick check, the data, the modification detection code, in CFB mode.
    let encrypted = CIPHER
        .encrypt_protected(&mut rng, &session_key[..], &inner)
        .map_err(FieldError::Encrypt)?;

    let seipd_header =
        PacketHeader::new_fixed(Tag::SymEncryptedProtectedData, packet_len(1 + encrypted.len())?);
    let mut message = Vec::with_capacity(
        skesk.write_len_with_header() + seipd_header.write_len() + 1 + encrypted.len(),
    );
    skesk.to_writer_with_header(&mut message).map_err(FieldError::Encrypt)?;
    seipd_header.to_writer(&mut message).map_err(FieldError::Encrypt)?;
    message.push(SEIPD_VERSION);
    message.extend_from_slice(&encrypted);
    Ok(message)
}

/// OpenPGP's salted S2K (RFC 4880 §3.7.1.2) for a 256-bit key: SHA-256 over the salt followed
/// by the passphrase. The digest is as long as the key, so one hash suffices. This is what
/// `StringToKey::derive_key` in the `pgp` crate computes (a test holds the two together),
/// without the allocations that made it about a fifth of the cost of a field.
fn salted_s2k(salt: &[u8; 8], passphrase: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    let hasher = Sha256::new().chain_update(salt).chain_update(passphrase);
    hasher.finalize_into(GenericArray::from_mut_slice(&mut key[..]));
    key
}

/// A packet body length, which OpenPGP caps at 4 GiB - 1 for a fixed-length packet.
fn packet_len(len: usize) -> Result<u32, FieldError> {
    u32::try_from(len).map_err(|_| FieldError::TooLarge { len })
}

/// Encrypts a text field; the message holds its UTF-8 bytes. See [`encrypt`].
///
/// # Errors
///
/// As [`encrypt`].
pub fn encrypt_str(key: &DataKey, plaintext: &str) -> Result<Vec<u8>, FieldError> {
    encrypt(key, plaintext.as_bytes())
}

/// The personal fields of one row, by name, as [`decrypt_fields`] returns them.
pub type Fields = BTreeMap<String, String>;

/// Encrypts the personal fields of one row together into one message, whose plaintext is a
/// JSON object from each field's name to its text: `{"summary":"Dentist","location":"..."}`.
///
/// This is how Datapunk stores what it syncs: one sealed column per row rather than one
/// message per field. The per-message costs (key derivation, key schedule, headers, the 70
/// bytes every message adds) are paid once per row, only the row's total length shows, and
/// pgcrypto still reads any field in one call:
///
/// ```sql
/// SELECT convert_from(pgp_sym_decrypt_bytea(sealed, $1), 'UTF8')::jsonb ->> 'summary' FROM ...
/// ```
///
/// # Errors
///
/// [`FieldError::DuplicateName`] when two fields share a name; [`FieldError::Nul`] when a name
/// or a text holds U+0000, which PostgreSQL's text and JSON types refuse (a connector strips
/// it first); otherwise as [`encrypt`].
pub fn encrypt_fields(key: &DataKey, fields: &[(&str, &str)]) -> Result<Vec<u8>, FieldError> {
    for (i, (name, text)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(other, _)| other == name) {
            return Err(FieldError::DuplicateName((*name).to_owned()));
        }
        // PostgreSQL's text and JSON types cannot hold U+0000, so SQL could not read the row.
        if name.contains('\0') || text.contains('\0') {
            return Err(FieldError::Nul((*name).replace('\0', "\\0")));
        }
    }
    // Sized once, so that no reallocation leaves a copy of the plaintext behind: each field
    // adds its quotes, colon and comma, and an escaped byte (a quote, a backslash, a control
    // character) at most five more bytes.
    let size: usize = fields
        .iter()
        .flat_map(|(name, text)| [name, text])
        .map(|part| part.len() + 5 * part.bytes().filter(|b| needs_escape(*b)).count() + 3)
        .sum();
    let mut json = Zeroizing::new(Vec::with_capacity(size + 2));
    let object = ObjectOf(fields);
    if serde_json::to_writer(&mut *json, &object).is_err() {
        unreachable!("serialising strings into memory failed");
    }
    debug_assert!(json.len() <= size + 2, "the JSON of a row outgrew its buffer");
    encrypt(key, &json)
}

/// A keyed fingerprint of a row's fields: HMAC-SHA-256, under a key derived from the data key,
/// over each name and text with their lengths.
///
/// The sealed message of a row differs at every encryption (random salt and prefix), so it
/// cannot tell whether a row changed; this can, and a sync rewrites only rows whose
/// fingerprint moved. Keyed, it tells someone without the data key nothing about the fields:
/// equal fingerprints across integrations mean nothing, and guessing a field's text needs the
/// key.
pub fn fingerprint(key: &DataKey, fields: &[(&str, &str)]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    let mut derivation = Sha256::new();
    derivation.update(b"datapunk row fingerprint v1\0");
    derivation.update(key.expose_secret());
    let subkey = Zeroizing::new(<[u8; 32]>::from(derivation.finalize()));
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&*subkey) else {
        unreachable!("HMAC takes keys of any length");
    };
    for (name, text) in fields {
        for part in [name.as_bytes(), text.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
    }
    mac.finalize().into_bytes().into()
}

/// Whether JSON writes `byte` as an escape sequence.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Serialises field pairs as one JSON object, in their order.
struct ObjectOf<'a>(&'a [(&'a str, &'a str)]);

impl serde::Serialize for ObjectOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

/// Decrypts a row's fields written by [`encrypt_fields`].
///
/// # Errors
///
/// As [`decrypt`], and [`FieldError::NotFields`] when the plaintext is not a JSON object of
/// text fields.
pub fn decrypt_fields(key: &DataKey, message: &[u8]) -> Result<Fields, FieldError> {
    let json = decrypt(key, message)?;
    serde_json::from_slice(&json).map_err(|_| FieldError::NotFields)
}

/// Decrypts a message written by [`encrypt`] (or by pgcrypto in the same format) with `key`.
///
/// # Errors
///
/// [`FieldError::NotOpenPgp`] when `message` is not an OpenPGP message;
/// [`FieldError::Undecryptable`] when it is one but `key` does not open it or it was altered;
/// [`FieldError::Unsupported`] when it decrypts to something other than plain literal data
/// (compressed or signed).
pub fn decrypt(key: &DataKey, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, FieldError> {
    let parsed = Message::from_bytes(message).map_err(|_| FieldError::NotOpenPgp)?;
    if !parsed.is_encrypted() {
        return Err(FieldError::NotOpenPgp);
    }
    let password = Password::from(&key.passphrase_bytes()[..]);

    let mut inner =
        parsed.decrypt_with_password(&password).map_err(|_| FieldError::Undecryptable)?;
    if !inner.is_literal() {
        return Err(FieldError::Unsupported);
    }
    let mut plaintext = Zeroizing::new(Vec::with_capacity(message.len()));
    inner.read_to_end(&mut plaintext).map_err(|_| FieldError::Undecryptable)?;

    Ok(plaintext)
}

/// Decrypts a text field written by [`encrypt_str`]. See [`decrypt`].
///
/// # Errors
///
/// As [`decrypt`], and [`FieldError::NotText`] when the plaintext is not UTF-8.
pub fn decrypt_string(key: &DataKey, message: &[u8]) -> Result<Zeroizing<String>, FieldError> {
    let mut bytes = decrypt(key, message)?;
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            // Wipe the bytes that came back inside the error.
            drop(Zeroizing::new(err.into_bytes()));
            Err(FieldError::NotText)
        }
    }
}

/// Why a field could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The operating system's random number generator failed; try again later.
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
    /// The field is 4 GiB or larger, more than one OpenPGP packet holds.
    #[error("cannot encrypt a field of {len} bytes with its headers: the limit is 4 GiB")]
    TooLarge {
        /// The length of the packet that would hold the field.
        len: usize,
    },
    /// The OpenPGP library failed to encrypt, which is a bug in Datapunk.
    #[error("cannot encrypt the field; this is a bug, please report it")]
    Encrypt(#[source] pgp::errors::Error),
    /// The stored value is not an encrypted OpenPGP message.
    #[error("the stored value is not an encrypted OpenPGP message; it was not written by Datapunk")]
    NotOpenPgp,
    /// The key does not open the message, or the message was altered. The two cannot be told
    /// apart: an altered message fails its integrity check either way.
    #[error(
        "the stored value cannot be decrypted: it was encrypted under another key, or it was \
         altered"
    )]
    Undecryptable,
    /// The message decrypted, but holds compressed or signed data, which Datapunk never writes.
    #[error("the stored value holds compressed or signed data, which Datapunk does not write")]
    Unsupported,
    /// The message holds bytes, not UTF-8 text.
    #[error("the stored value is not UTF-8 text")]
    NotText,
    /// Two fields of one row were given the same name.
    #[error("two fields are named {0:?}; a row's fields need distinct names")]
    DuplicateName(String),
    /// A field's name or text holds U+0000, which PostgreSQL's text and JSON cannot store.
    #[error("field {0:?} holds a NUL character, which PostgreSQL's text cannot store")]
    Nul(String),
    /// The message decrypted, but not to a JSON object of text fields.
    #[error("the stored value is not a row's fields (a JSON object of text)")]
    NotFields,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPurpose;

    fn key(name: &str) -> DataKey {
        DataKey::generate(KeyPurpose::integration(name)).expect("generate")
    }

    #[test]
    fn fingerprints_follow_the_fields_and_the_key() {
        let (one, other) = (key("one"), key("other"));
        let fields = [("summary", "Dentist"), ("location", "Main St")];
        let same = fingerprint(&one, &fields);
        assert_eq!(same, fingerprint(&one, &fields));
        assert_ne!(same, fingerprint(&one, &[("summary", "Dentist"), ("location", "Main St.")]));
        assert_ne!(same, fingerprint(&other, &fields), "another key, another fingerprint");
        // Lengths are part of the input: moving a boundary changes it.
        let moved = fingerprint(&one, &[("summary", "DentistMain"), ("location", " St")]);
        assert_ne!(fingerprint(&one, &[("summary", "Dentist"), ("location", "Main St")]), moved);
        assert_ne!(
            fingerprint(&one, &[("ab", "c")]),
            fingerprint(&one, &[("a", "bc")]),
            "names and texts are framed"
        );
    }

    #[test]
    fn a_field_round_trips() {
        let key = key("spotify");

        for plaintext in ["", "x", "Bohemian Rhapsody", &"ü".repeat(5000)] {
            let message = encrypt_str(&key, plaintext).expect("encrypt");
            let back = decrypt_string(&key, &message).expect("decrypt");

            assert_eq!(back.as_str(), plaintext);
        }
    }

    #[test]
    fn the_message_has_the_documented_shape() {
        let key = key("spotify");

        let message = encrypt(&key, b"marker").expect("encrypt");

        // SKESK: new-format tag 3, length 12: version 4, AES-256 (9), salted S2K (1) with
        // SHA-256 (8), 8 bytes of salt, no encrypted session key.
        assert_eq!(&message[..6], &[0xC3, 12, 4, 9, 1, 8]);
        // SEIPD: new-format tag 18, a one-byte length, version 1, then 16 + 2 bytes of prefix,
        // the literal packet (2 + 6 + 6) and the MDC packet (22).
        assert_eq!(&message[14..17], &[0xD2, 1 + 18 + 14 + 22, 1]);
        assert_eq!(message.len(), 17 + 18 + 14 + 22);
    }

    #[test]
    fn the_salted_s2k_matches_the_pgp_crates() {
        let key = key("spotify");
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let s2k = StringToKey::Salted { hash_alg: S2K_HASH, salt };

        let theirs = s2k.derive_key(key.passphrase_bytes(), CIPHER.key_size()).expect("derive");

        assert_eq!(&salted_s2k(&salt, key.passphrase_bytes())[..], theirs.as_ref());
    }

    #[test]
    fn two_encryptions_of_one_field_differ() {
        let key = key("spotify");

        let a = encrypt(&key, b"same").expect("encrypt");
        let b = encrypt(&key, b"same").expect("encrypt");

        assert_ne!(a, b);
    }

    #[test]
    fn another_integrations_key_does_not_decrypt() {
        let (spotify, google) = (key("spotify"), key("google"));
        let message = encrypt(&spotify, b"a track").expect("encrypt");

        let err = decrypt(&google, &message).expect_err("wrong key");

        assert!(matches!(err, FieldError::Undecryptable), "{err}");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let key = key("spotify");
        let message = encrypt(&key, b"a short field").expect("encrypt");

        for i in 0..message.len() * 8 {
            let mut altered = message.clone();
            altered[i / 8] ^= 1 << (i % 8);

            let result = decrypt(&key, &altered);

            assert!(result.is_err(), "flipping bit {i} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let key = key("spotify");
        let message = encrypt(&key, b"a short field").expect("encrypt");

        for len in 0..message.len() {
            assert!(decrypt(&key, &message[..len]).is_err(), "truncated to {len} bytes");
        }
    }

    #[test]
    fn a_blob_that_is_not_openpgp_is_refused() {
        let key = key("spotify");

        for blob in [&b""[..], b"plain text", &[0xFF; 64], &[0x00; 3]] {
            let err = decrypt(&key, blob).expect_err("not a message");

            assert!(matches!(err, FieldError::NotOpenPgp), "{err}");
        }
    }

    #[test]
    fn random_blobs_that_look_like_packets_are_refused_without_panicking() {
        use rand::{Rng as _, SeedableRng as _};

        let key = key("spotify");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);

        for _ in 0..5_000 {
            let mut blob = vec![0u8; rng.gen_range(1..160)];
            rng.fill_bytes(&mut blob);
            // Start with a packet tag a field could begin with: SKESK, SEIPD, literal, old SKESK.
            blob[0] = [0xC3, 0xD2, 0xCB, 0x8C][rng.gen_range(0..4)];

            assert!(decrypt(&key, &blob).is_err());
        }
    }

    #[test]
    fn a_rows_fields_round_trip_in_one_message() {
        let key = key("google");
        let fields =
            [("summary", "Dentist \"Dr. Ö\"\n"), ("location", ""), ("notes", "\u{1}\u{7f}")];

        let message = encrypt_fields(&key, &fields).expect("encrypt");
        let back = decrypt_fields(&key, &message).expect("decrypt");
        let worst = [("\"\\", "\u{1}\u{1f}\u{2}\"\\\n")];
        let worst_back = decrypt_fields(&key, &encrypt_fields(&key, &worst).expect("encrypt"));
        assert_eq!(worst_back.expect("decrypt")["\"\\"], worst[0].1);

        let expected: Fields =
            fields.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())).collect();
        assert_eq!(back, expected);
        let json = decrypt_string(&key, &message).expect("the plaintext is text");
        assert!(json.starts_with("{\"summary\":"), "{}", json.as_str());
        let other = super::tests::key("other");
        assert!(matches!(decrypt_fields(&other, &message), Err(FieldError::Undecryptable)));
    }

    #[test]
    fn fields_with_one_name_twice_or_a_message_of_other_text_are_refused() {
        let key = key("google");

        let err = encrypt_fields(&key, &[("a", "1"), ("b", "2"), ("a", "3")]).expect_err("dup");
        assert!(matches!(err, FieldError::DuplicateName(ref name) if name == "a"), "{err}");
        let err = encrypt_fields(&key, &[("notes", "a\0SECRET")]).expect_err("NUL");
        assert!(matches!(err, FieldError::Nul(ref name) if name == "notes"), "{err}");
        assert!(!err.to_string().contains("SECRET"), "{err}");
        for text in ["plain", "[1]", "{\"a\": 1}"] {
            let message = encrypt_str(&key, text).expect("encrypt");
            let err = decrypt_fields(&key, &message).expect_err("not fields");
            assert!(matches!(err, FieldError::NotFields), "{text}: {err}");
        }
    }

    #[test]
    fn non_utf8_bytes_are_not_returned_as_text() {
        let key = key("spotify");
        let message = encrypt(&key, &[0xFF, 0xFE]).expect("encrypt");

        let err = decrypt_string(&key, &message).expect_err("not text");

        assert!(matches!(err, FieldError::NotText), "{err}");
    }
}
