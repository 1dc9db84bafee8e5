//! `datapunk db password`: a login role gets a password that SCRAM authentication accepts,
//! while only its verifier reaches the server; running it again with the same password
//! changes and records nothing.

use datapunk_testkit::Cluster;
use datapunk_tests::Setup;

const PASSWORD: &str = "app-pw-9Vw3-not-for-logs";

async fn connects(server: &Cluster, db_name: &str, password: &str) -> bool {
    let mut config: tokio_postgres::Config =
        server.conninfo("datapunk_app", db_name).parse().expect("a connection string");
    config.password(password);
    match config.connect(tokio_postgres::NoTls).await {
        Ok((_, connection)) => {
            drop(connection);
            true
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn db_password_sets_a_scram_password_without_sending_it_and_only_once() {
    let (server, _hba) = datapunk_tests::scram_cluster(&[("log_statement", "all")]);
    let db_name = server.unique_db_name("scram");
    let setup = Setup::external_with(&db_name, &server.conninfo("datapunk_app", &db_name), "");
    let admin_url = server.conninfo("postgres", "postgres");
    setup.cli_ok(&["db", "init", "--admin-url", &admin_url]);
    let file = setup.write_file("app-password", format!("{PASSWORD}\n").as_bytes());
    let file = file.display().to_string();
    let args = ["db", "password", "app", "--password-file", &file, "--admin-url", &admin_url];

    let first = setup.cli_ok(&args);
    let second = setup.cli_ok(&args);

    assert_eq!(first.trim(), "set the password of datapunk_app");
    assert_eq!(second.trim(), "the password of datapunk_app is unchanged");
    assert!(connects(&server, &db_name, PASSWORD).await, "the password does not log in");
    assert!(!connects(&server, &db_name, "another").await, "another password logs in");
    let admin = server.admin_client(&db_name).await;
    let stored: String = admin
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'datapunk_app'", &[])
        .await
        .expect("read pg_authid")
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let recorded: i64 = admin
        .query_one("SELECT count(*) FROM datapunk.audit WHERE action = 'database.password'", &[])
        .await
        .expect("read the audit trail")
        .get(0);
    assert_eq!(recorded, 1, "one change, one audit row");
    let log = server.log();
    assert!(log.contains("ALTER ROLE datapunk_app PASSWORD 'SCRAM-SHA-256$"), "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the server log");
}
