//! The throwaway PostgreSQL clusters.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use datapunk_testkit::{Cluster, account, cluster};

#[tokio::test]
async fn cluster_accepts_connections_as_superuser_over_the_socket() {
    let cluster = cluster();

    let client = cluster.admin_client("postgres").await;
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("the superuser can read pg_roles");

    assert_eq!(row.get::<_, String>(0), "postgres");
    assert!(row.get::<_, bool>(1));
    eprintln!("cluster started in {:?}", cluster.startup_time());
}

#[tokio::test]
async fn cluster_listens_on_its_socket_only_and_runs_fast_and_loose() {
    let client = cluster().admin_client("postgres").await;

    for (setting, expected) in [
        ("listen_addresses", ""),
        ("fsync", "off"),
        ("full_page_writes", "off"),
        ("synchronous_commit", "off"),
    ] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await.expect("SHOW works");
        assert_eq!(row.get::<_, String>(0), expected, "{setting}");
    }
}

#[test]
fn socket_directory_is_private_to_the_account() {
    let socket_dir = cluster().socket_dir();

    let meta = fs::metadata(socket_dir).expect("the socket directory exists while running");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), account().uid);
    let socket = socket_dir.join(format!(".s.PGSQL.{}", cluster().port()));
    assert!(socket.exists(), "{} is missing", socket.display());
}

#[test]
fn the_account_connects_with_psql_using_the_conninfo() {
    let cluster = cluster();

    let output = account()
        .command("psql")
        .arg(cluster.conninfo("postgres", "postgres"))
        .args(["--no-psqlrc", "--tuples-only", "--no-align", "--command", "SELECT 40 + 2"])
        .output()
        .expect("psql is installed with the PostgreSQL client");

    assert!(output.status.success(), "psql failed: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
}

#[tokio::test]
async fn created_databases_have_unique_plain_names() {
    let cluster = cluster();

    let first = cluster.create_database("Sync Test!").await;
    let second = cluster.create_database("Sync Test!").await;

    assert_ne!(first, second);
    for name in [&first, &second] {
        assert!(name.starts_with("sync_test_"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
    let client = cluster.admin_client(&first).await;
    let row = client.query_one("SELECT current_database()::text", &[]).await.expect("connected");
    assert_eq!(row.get::<_, String>(0), first);
    assert!(cluster.unique_db_name("9lives").starts_with("db_9lives_"));
}

#[tokio::test]
async fn a_cluster_with_settings_applies_them_and_is_removed_on_drop() {
    let cluster = Cluster::start_with(&[("log_statement", "all"), ("application_name", "it's")]);
    let data_dir = cluster.data_dir().to_path_buf();
    let pid = postmaster_pid(&data_dir);

    let client = cluster.admin_client("postgres").await;
    let row = client.query_one("SHOW log_statement", &[]).await.expect("SHOW works");
    assert_eq!(row.get::<_, String>(0), "all");
    client.batch_execute("SELECT 'datapunk-testkit-marker'").await.expect("SELECT works");
    assert!(cluster.log().contains("datapunk-testkit-marker"), "{}", cluster.log());
    drop(client);

    drop(cluster);

    assert!(!data_dir.exists(), "{} survived the cluster", data_dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
        "postgres {pid} runs on"
    );
}

#[test]
#[should_panic(expected = "invalid PostgreSQL setting name")]
fn a_setting_name_that_could_inject_configuration_is_refused() {
    Cluster::start_with(&[("fsync = on\nport", "1")]);
}

fn postmaster_pid(data_dir: &Path) -> u32 {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).expect("the server runs");
    text.lines().next().and_then(|line| line.parse().ok()).expect("the first line is the pid")
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}
