//! External mode over TCP: TLS verified against a CA the configuration names, a password read
//! from a file, and neither the password nor a wrong CA getting through silently.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use datapunk_testkit::{Cluster, NotifySocket, account, tempdir};
use datapunk_tests::Setup;

const PASSWORD: &str = "app-pw-7Hq2-not-for-logs";

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (install the openssl package)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for `localhost` signed by it, plus an unrelated CA.
fn certificates(dir: &Path) {
    let ca = "/CN=datapunk test CA";
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", ca, "-keyout",
            "ca.key", "-out", "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            ca,
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    for file in ["server.key", "server.pem", "ca.pem", "other.pem"] {
        account().chown(&dir.join(file));
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_reaches_an_external_server_over_verified_tls_with_a_password_file() {
    let certs = tempdir();
    certificates(certs.path());
    let hba = certs.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\n\
         hostssl all datapunk_reader 127.0.0.1/32 trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .expect("write pg_hba.conf");
    account().chown(&hba);

    let port = free_port().to_string();
    let path = |name: &str| certs.join(name).display().to_string();
    let (cert, key, hba_file) = (path("server.pem"), path("server.key"), hba.display().to_string());
    let server = Cluster::start_with(&[
        ("listen_addresses", "127.0.0.1"),
        ("port", &port),
        ("ssl", "on"),
        ("ssl_cert_file", &cert),
        ("ssl_key_file", &key),
        ("hba_file", &hba_file),
        ("password_encryption", "scram-sha-256"),
    ]);
    let socket = server.socket_dir().display().to_string();
    let admin_url = format!("host={socket} port={port} user=postgres dbname=postgres");
    let db_name = server.unique_db_name("tls");

    let tcp = format!("host=localhost port={port} user=datapunk_app dbname={db_name}");
    let setup = Setup::external_with(&db_name, &tcp, "");
    let password_file = setup.write_file("db-password", PASSWORD.as_bytes());
    let ca = setup.write_file("ca.pem", &std::fs::read(certs.join("ca.pem")).expect("ca"));
    let other_ca =
        setup.write_file("other.pem", &std::fs::read(certs.join("other.pem")).expect("ca"));
    let config = |ca: &Path, tls: bool| {
        format!(
            "[daemon]\nruntime_dir = \"{}\"\n\n[database]\nmode = \"external\"\nname = \"{db_name}\"\n\
             conninfo = \"{tcp}\"\npassword_file = \"{}\"\ntls = {tls}\ntls_ca_file = \"{}\"\n",
            setup.runtime_dir().display(),
            password_file.display(),
            ca.display()
        )
    };

    let init = setup.cli(&["db", "init", "--admin-url", &admin_url]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // The cluster's own helper assumes the default port; this one listens on another.
    let (admin, connection) = tokio_postgres::connect(
        &format!("host={socket} port={port} user=postgres dbname={db_name}"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect as the administrator");
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("ALTER ROLE datapunk_app PASSWORD '{PASSWORD}'"))
        .await
        .expect("set the app role's password");

    // The right CA: the daemon starts, and its connections are encrypted.
    setup.write_config(&config(&ca, true));
    let notify = NotifySocket::new();
    let daemon = setup.spawn_daemon(Some(&notify), &[]);
    notify.wait_for_line("READY=1", Duration::from_secs(30));
    let encrypted: Vec<bool> = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = 'datapunk_app'",
            &[],
        )
        .await
        .expect("read pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|e| *e),
        "app connections: {encrypted:?}"
    );
    daemon.stop();

    // `db shell` is as strict as the daemon: verified TLS, not libpq's downgradable default.
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let shell = setup.cli_ok(&["db", "shell", "--", "-At", "-c", ssl]);
    assert_eq!(shell.trim(), "t", "db shell over TLS: {shell}");

    // Another CA: the server is not trusted, and the daemon says so.
    setup.write_config(&config(&other_ca, true));
    let (status, _, stderr) = setup.spawn_daemon(None, &[]).wait(Duration::from_secs(30));
    assert!(!status.success(), "a server signed by an unknown CA was accepted");
    assert!(stderr.to_lowercase().contains("tls") || stderr.contains("certificate"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    let shell = setup.cli(&["db", "shell", "--", "-At", "-c", ssl]);
    assert!(!shell.status.success(), "db shell trusted a server signed by an unknown CA");

    // No TLS: the server only accepts TLS from TCP clients.
    setup.write_config(
        &config(&ca, false).replace(&format!("tls_ca_file = \"{}\"\n", ca.display()), ""),
    );
    let (status, _, stderr) = setup.spawn_daemon(None, &[]).wait(Duration::from_secs(30));
    assert!(!status.success(), "a plain-text connection was accepted");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    assert!(!server.log().contains(PASSWORD), "the password reached the server log");
}
