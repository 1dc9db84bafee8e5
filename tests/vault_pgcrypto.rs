//! Field encryption speaks pgcrypto's format: what the daemon encrypts, PostgreSQL decrypts with
//! the exported passphrase, and the other way round; destroying a data key leaves its rows
//! unreadable by both, while other integrations' rows still decrypt.

use datapunk_testkit::cluster;
use datapunk_vault::field::{self, FieldError};
use datapunk_vault::key::{DataKey, KeyPurpose};
use tokio_postgres::Client;

/// A fresh database with pgcrypto and a table of encrypted fields.
async fn database() -> Client {
    let cluster = cluster();
    let db = cluster.create_database("vault_pgcrypto").await;
    let client = cluster.admin_client(&db).await;
    client
        .batch_execute(
            "CREATE EXTENSION pgcrypto;
             CREATE TABLE fields (id serial PRIMARY KEY, integration text NOT NULL, value bytea);",
        )
        .await
        .expect("create pgcrypto and the table");
    client
}

fn key(integration: &str) -> DataKey {
    DataKey::generate(KeyPurpose::integration(integration)).expect("generate a data key")
}

async fn insert(client: &Client, integration: &str, value: &[u8]) -> i32 {
    client
        .query_one(
            "INSERT INTO fields (integration, value) VALUES ($1, $2) RETURNING id",
            &[&integration, &value],
        )
        .await
        .expect("insert an encrypted field")
        .get(0)
}

/// pgcrypto's decryption of row `id` with `key`'s exported passphrase, sent as a parameter.
async fn pgcrypto_decrypt(
    client: &Client,
    id: i32,
    key: &DataKey,
) -> Result<String, tokio_postgres::Error> {
    let passphrase = key.export_passphrase();
    client
        .query_one(
            "SELECT convert_from(pgp_sym_decrypt_bytea(value, $2), 'UTF8') FROM fields \
             WHERE id = $1",
            &[&id, &passphrase.expose_secret()],
        )
        .await
        .map(|row| row.get(0))
}

fn assert_wrong_key(result: Result<String, tokio_postgres::Error>) {
    let err = result.expect_err("pgcrypto decrypted with the wrong passphrase");
    let message = err.as_db_error().map(|db| db.message().to_owned()).unwrap_or_default();
    assert_eq!(message, "Wrong key or corrupt data", "{err}");
}

#[tokio::test]
async fn pgcrypto_reads_what_the_daemon_encrypted_with_the_exported_passphrase() {
    let client = database().await;
    let key = key("spotify");
    let long = "Ünïcödé ♫ ".repeat(1500);

    for plaintext in ["Bohemian Rhapsody", "", "O'Brien; DROP TABLE x; --", long.as_str()] {
        let id =
            insert(&client, "spotify", &field::encrypt_str(&key, plaintext).expect("enc")).await;

        let decrypted = pgcrypto_decrypt(&client, id, &key).await.expect("pgcrypto decrypts");

        assert_eq!(decrypted, plaintext);
    }
}

#[tokio::test]
async fn pgcrypto_refuses_another_integrations_passphrase() {
    let client = database().await;
    let (spotify, google) = (key("spotify"), key("google"));
    let id =
        insert(&client, "spotify", &field::encrypt_str(&spotify, "a track").expect("enc")).await;

    assert_wrong_key(pgcrypto_decrypt(&client, id, &google).await);
}

#[tokio::test]
async fn what_pgcrypto_encrypted_with_aes256_decrypts_in_the_daemon() {
    let client = database().await;
    let (key, other) = (key("google"), key("microsoft"));
    let passphrase = key.export_passphrase();

    for options in [
        "cipher-algo=aes256",
        "cipher-algo=aes256, s2k-mode=1",
        "cipher-algo=aes256, sess-key=1",
        "",
    ] {
        let message: Vec<u8> = client
            .query_one(
                "SELECT pgp_sym_encrypt_bytea(convert_to($1, 'UTF8'), $2, $3)",
                &[&"Dentist, 3pm", &passphrase.expose_secret(), &options],
            )
            .await
            .expect("pgcrypto encrypts")
            .get(0);

        let decrypted = field::decrypt_string(&key, &message).expect("the daemon decrypts");
        let wrong = field::decrypt(&other, &message).expect_err("another key decrypts");

        assert_eq!(decrypted.as_str(), "Dentist, 3pm", "options {options:?}");
        assert!(matches!(wrong, FieldError::Undecryptable), "options {options:?}: {wrong}");
    }
}

#[tokio::test]
async fn pgcrypto_messages_without_integrity_protection_or_with_compression_are_refused() {
    let client = database().await;
    let key = key("google");
    let passphrase = key.export_passphrase();

    for (options, expected) in [
        ("cipher-algo=aes256, disable-mdc=1", "Undecryptable"),
        ("cipher-algo=aes256, compress-algo=1", "Unsupported"),
    ] {
        let message: Vec<u8> = client
            .query_one(
                "SELECT pgp_sym_encrypt_bytea(convert_to($1, 'UTF8'), $2, $3)",
                &[&"Dentist, 3pm", &passphrase.expose_secret(), &options],
            )
            .await
            .expect("pgcrypto encrypts")
            .get(0);

        let err = field::decrypt(&key, &message).expect_err(options);

        assert!(format!("{err:?}").starts_with(expected), "{options}: {err:?}");
    }
}

#[tokio::test]
async fn a_deleted_key_leaves_its_rows_unreadable_while_other_integrations_still_decrypt() {
    let client = database().await;
    let spotify = key("spotify");
    let google = key("google");
    let mut spotify_rows = Vec::new();
    let mut google_rows = Vec::new();
    for i in 0..20 {
        let track = format!("track {i}");
        let event = format!("event {i}");
        spotify_rows.push(
            insert(&client, "spotify", &field::encrypt_str(&spotify, &track).expect("enc")).await,
        );
        google_rows.push(
            insert(&client, "google", &field::encrypt_str(&google, &event).expect("enc")).await,
        );
    }
    for &id in &spotify_rows {
        assert!(pgcrypto_decrypt(&client, id, &spotify).await.is_ok(), "readable before deletion");
    }

    // Deleting the key from the secret store leaves this process holding no copy of it.
    drop(spotify);
    let spotify_again = key("spotify");

    for &id in &spotify_rows {
        let stored: Vec<u8> = client
            .query_one("SELECT value FROM fields WHERE id = $1", &[&id])
            .await
            .expect("read the row")
            .get(0);
        let err = field::decrypt(&spotify_again, &stored).expect_err("a new key decrypts");
        assert!(matches!(err, FieldError::Undecryptable), "{err}");
        assert_wrong_key(pgcrypto_decrypt(&client, id, &spotify_again).await);
        assert_wrong_key(pgcrypto_decrypt(&client, id, &google).await);
    }
    for (i, &id) in google_rows.iter().enumerate() {
        let stored: Vec<u8> = client
            .query_one("SELECT value FROM fields WHERE id = $1", &[&id])
            .await
            .expect("read the row")
            .get(0);
        let in_rust = field::decrypt_string(&google, &stored).expect("the daemon decrypts");
        let in_sql = pgcrypto_decrypt(&client, id, &google).await.expect("pgcrypto decrypts");
        assert_eq!(in_rust.as_str(), format!("event {i}"));
        assert_eq!(in_sql, format!("event {i}"));
    }
}

#[tokio::test]
async fn pgcryptos_text_variant_refuses_binary_data_so_the_bytea_variant_is_the_one_to_use() {
    let client = database().await;
    let key = key("spotify");
    let id = insert(&client, "spotify", &field::encrypt_str(&key, "a track").expect("enc")).await;
    let passphrase = key.export_passphrase();

    let err = client
        .query_one(
            "SELECT pgp_sym_decrypt(value, $2) FROM fields WHERE id = $1",
            &[&id, &passphrase.expose_secret()],
        )
        .await
        .expect_err("pgp_sym_decrypt reads binary literal data");

    let message = err.as_db_error().map(|db| db.message().to_owned()).unwrap_or_default();
    assert_eq!(message, "Not text data", "{err}");
    assert_eq!(pgcrypto_decrypt(&client, id, &key).await.expect("bytea variant"), "a track");
}

#[tokio::test]
async fn pgcrypto_reads_one_field_of_a_sealed_row_as_json() {
    let client = database().await;
    let key = key("google");
    let fields = [("summary", "Dentist \"Dr. Ö\""), ("location", "Main St. 1\nSpringfield")];
    let id = insert(&client, "google", &field::encrypt_fields(&key, &fields).expect("seal")).await;
    let passphrase = key.export_passphrase();

    let row = client
        .query_one(
            "SELECT convert_from(pgp_sym_decrypt_bytea(value, $2), 'UTF8')::jsonb ->> 'summary', \
                    convert_from(pgp_sym_decrypt_bytea(value, $2), 'UTF8')::jsonb ->> 'location' \
             FROM fields WHERE id = $1",
            &[&id, &passphrase.expose_secret()],
        )
        .await
        .expect("pgcrypto decrypts the row");

    assert_eq!(row.get::<_, String>(0), fields[0].1);
    assert_eq!(row.get::<_, String>(1), fields[1].1);
    assert_wrong_key(pgcrypto_decrypt(&client, id, &self::key("google")).await);
}
