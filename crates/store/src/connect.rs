//! Connecting: [`ConnectOptions`] turns a libpq-style connection string, a password file and
//! TLS settings into a driver configuration; [`Store`] is the daemon's connection pool.
//!
//! Passwords only ever come from files. A connection string that holds one is refused, so
//! that it cannot end up in a configuration file, a process listing or a log line.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use crate::{Error, SchemaState, migrations};

/// Where libpq looks for a Unix socket when no host is given; the same default here.
const DEFAULT_SOCKET_DIR: &str = "/run/postgresql";

/// How long to wait for a server to answer a new connection, unless the connection string
/// sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Store::client`] waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How to reach a database.
#[derive(Clone)]
pub struct ConnectOptions {
    /// A libpq-style connection string (`host=/run/datapunk user=datapunk_app
    /// dbname=datapunk`), or a `postgresql://` URL, without a password. When it names no
    /// host, the Unix socket directory `/run/postgresql` is used.
    pub conninfo: String,
    /// A file holding the password (one line), for servers that ask for one.
    pub password_file: Option<PathBuf>,
    /// The configuration key that named `password_file`, for errors about the file.
    pub password_setting: &'static str,
    /// TLS for TCP connections; `None` connects without TLS.
    pub tls: Option<Tls>,
    /// The most connections [`Store`] keeps open.
    pub pool_size: usize,
    /// Connects as this user instead of the connection string's, e.g. as `datapunk_reader`
    /// with the server details configured for `datapunk_app`.
    pub user: Option<String>,
    /// Connects to this database instead of the connection string's.
    pub dbname: Option<String>,
}

/// TLS settings. TLS is then required on every TCP connection, with the server's certificate
/// and name verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// A PEM file of CA certificates to trust. `None` trusts the built-in web roots.
    pub ca_file: Option<PathBuf>,
}

impl ConnectOptions {
    /// Options for `conninfo` with no password, no TLS and a pool of four connections.
    pub fn new(conninfo: impl Into<String>) -> Self {
        Self {
            conninfo: conninfo.into(),
            password_file: None,
            password_setting: "database.password_file",
            tls: None,
            pool_size: 4,
            user: None,
            dbname: None,
        }
    }

    /// Opens one connection outside any pool, for short administrative work.
    ///
    /// # Errors
    ///
    /// As [`Store::connect`].
    pub async fn connect_once(&self) -> Result<Client, Error> {
        self.resolve()?.connect_one().await
    }

    /// The password read from `password_file`, if one is set.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is empty, or other users can read it.
    pub fn password(&self) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        match &self.password_file {
            Some(path) => read_password_file(path, self.password_setting).map(Some),
            None => Ok(None),
        }
    }

    /// Builds the driver configuration and the TLS connector.
    pub(crate) fn resolve(&self) -> Result<Resolved, Error> {
        let mut config = parse_conninfo(&self.conninfo)?;
        if let Some(user) = &self.user {
            config.user(user);
        }
        if let Some(dbname) = &self.dbname {
            config.dbname(dbname);
        }
        if config.get_user().is_none() {
            let reason = "names no `user`; add one, such as `user=datapunk_app`";
            return Err(Error::config("database.conninfo", reason));
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            config.host_path(DEFAULT_SOCKET_DIR);
        }
        if config.get_application_name().is_none() {
            config.application_name("datapunk");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if let Some(password) = self.password()? {
            config.password(password.as_slice());
        }

        let tls = match &self.tls {
            None => {
                if config.get_ssl_mode() == SslMode::Require {
                    let reason = "asks for `sslmode=require` but TLS is not configured; \
                                  set `database.tls`";
                    return Err(Error::config("database.conninfo", reason));
                }
                None
            }
            Some(tls) => {
                check_tls_mode(&config)?;
                config.ssl_mode(SslMode::Require);
                Some(make_tls(tls)?)
            }
        };

        Ok(Resolved { target: describe(&config), config, tls })
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A connection string with a password is refused everywhere, but it must not be
        // printed on its way to being refused either.
        let holds_password = parse_conninfo(&self.conninfo).is_err();
        let conninfo = if holds_password { "<not shown>" } else { self.conninfo.as_str() };
        f.debug_struct("ConnectOptions")
            .field("conninfo", &conninfo)
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .finish()
    }
}

/// A driver configuration ready to connect.
pub(crate) struct Resolved {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Option<MakeRustlsConnect>,
    /// The target for messages: hosts, port, user and database, never the password.
    pub(crate) target: String,
}

impl Resolved {
    fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// Opens one connection outside any pool, for administrative work. The connection is
    /// driven by a task that ends when the returned client is dropped.
    pub(crate) async fn connect_one(&self) -> Result<Client, Error> {
        let failed = |e| Error::connect(&self.target, self.user(), e);
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "database connection ended with an error");
    }
}

/// The connection pool to one database as one role.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    target: Arc<str>,
    user: Arc<str>,
}

impl Store {
    /// Builds a pool of up to `options.pool_size` connections and checks that one
    /// connection can be opened.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid connection string (or one holding a password), an
    /// unreadable password or CA file; [`Error::Connect`] when the server cannot be reached;
    /// [`Error::Auth`] when it refuses the role.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, Error> {
        if options.pool_size == 0 {
            return Err(Error::config("database.pool_size", "must be at least 1"));
        }
        let resolved = options.resolve()?;
        let user: Arc<str> = resolved.user().into();
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match resolved.tls {
            None => Manager::from_config(resolved.config, NoTls, manager_config),
            Some(tls) => Manager::from_config(resolved.config, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::config("database.pool_size", e.to_string()))?;

        let store = Self { pool, target: resolved.target.into(), user };
        drop(store.client().await?);
        tracing::debug!(target = %store.target, "connected to PostgreSQL");
        Ok(store)
    }

    /// A connection from the pool, returned to it when dropped. It dereferences to
    /// [`tokio_postgres::Client`], which is what the functions of this crate take.
    ///
    /// # Errors
    ///
    /// As [`Store::connect`] when a new connection must be opened; [`Error::Connect`] when
    /// no connection became free in time.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(e) => Error::connect(&self.target, &self.user, e),
            other => Error::Connect { target: Some(self.target.to_string()), source: other.into() },
        })
    }

    /// Closes the pool: connections in it are dropped at once, those in use when returned.
    /// Clones of this store are closed too.
    pub fn close(&self) {
        self.pool.close();
    }

    /// The schema version in the database and the newest this build knows. Works for every
    /// role that can log in. A database that was never migrated is at version 0.
    ///
    /// # Errors
    ///
    /// When no connection can be had or the role may not read `datapunk.schema_migrations`.
    pub async fn schema_state(&self) -> Result<SchemaState, Error> {
        let client = self.client().await?;
        migrations::state(&client).await
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("target", &self.target)
            .field("status", &self.pool.status())
            .finish()
    }
}

/// Parses a connection string, refusing one that holds a password.
fn parse_conninfo(conninfo: &str) -> Result<tokio_postgres::Config, Error> {
    let config = tokio_postgres::Config::from_str(conninfo).map_err(|e| {
        let detail = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        Error::config("database.conninfo", format!("cannot be parsed{detail}"))
    })?;
    if config.get_password().is_some() {
        let reason = "holds a password; remove it and put the password in a file named by \
                      `database.password_file`";
        return Err(Error::config("database.conninfo", reason));
    }
    Ok(config)
}

fn read_password_file(path: &Path, key: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
    if metadata.permissions().mode() & 0o007 != 0 {
        let reason = format!("{shown} can be read by other users; run `chmod o-rwx` on it");
        return Err(Error::config(key, reason));
    }
    let mut password = std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
    while password.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        password.pop();
    }
    if password.is_empty() {
        return Err(Error::config(key, format!("{shown} is empty")));
    }
    Ok(password)
}

/// TLS is for TCP; a Unix socket never negotiates it, and a mode that disables it
/// contradicts the TLS settings.
fn check_tls_mode(config: &tokio_postgres::Config) -> Result<(), Error> {
    if config.get_hosts().iter().any(|h| matches!(h, Host::Unix(_))) {
        let reason = "connects through a Unix socket, which never uses TLS; remove \
                      `database.tls` or connect over TCP";
        return Err(Error::config("database.conninfo", reason));
    }
    if config.get_ssl_mode() == SslMode::Disable {
        let reason = "sets `sslmode=disable` but `database.tls` is set; remove one of them";
        return Err(Error::config("database.conninfo", reason));
    }
    Ok(())
}

fn make_tls(tls: &Tls) -> Result<MakeRustlsConnect, Error> {
    const KEY: &str = "database.tls_ca_file";
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::config(KEY, format!("cannot read {shown}: {e}")))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(KEY, format!("{shown} holds no usable certificate")));
            }
        }
    }

    // The provider is named explicitly so that the result does not depend on which rustls
    // features other crates in the build enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("database.tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `host=... port=... user=... dbname=...`, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let mut parts = Vec::new();
    if !hosts.is_empty() {
        parts.push(format!("host={}", hosts.join(",")));
    }
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn config_error(options: &ConnectOptions) -> (String, String) {
        match options.resolve() {
            Err(Error::Config { key, reason }) => (key, reason),
            Err(other) => panic!("expected a config error, got {other:?}"),
            Ok(_) => panic!("expected a config error, got a configuration"),
        }
    }

    #[test]
    fn a_conninfo_with_a_password_is_refused_without_repeating_it() {
        for conninfo in [
            "host=/run/x user=datapunk_app password=hunter2-secret",
            "postgresql://datapunk_app:hunter2-secret@db.example/datapunk",
        ] {
            let options = ConnectOptions::new(conninfo);
            let (key, reason) = config_error(&options);
            assert_eq!(key, "database.conninfo");
            assert!(reason.contains("password_file"), "{reason}");

            let error = options.resolve().err().map(|e| format!("{e} {e:?}")).unwrap_or_default();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(!format!("{options:?}").contains("hunter2"));
        }
    }

    #[test]
    fn the_password_file_supplies_the_password_and_is_not_debug_printed() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("password");
        let mut file = std::fs::File::create(&path).expect("the file can be created");
        file.write_all(b"s3cret-from-file\n").expect("the file can be written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("permissions can be set");

        let mut options = ConnectOptions::new("host=db.example user=datapunk_app");
        options.password_file = Some(path.clone());
        let resolved = options.resolve().expect("the options are valid");
        assert_eq!(resolved.config.get_password(), Some(&b"s3cret-from-file"[..]));
        assert!(!format!("{:?}", resolved.config).contains("s3cret"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604))
            .expect("permissions can be set");
        let (key, _) = config_error(&options);
        assert_eq!(key, "database.password_file");
    }

    #[test]
    fn a_conninfo_without_host_uses_the_default_socket_directory() {
        let resolved = ConnectOptions::new("user=datapunk_app dbname=datapunk")
            .resolve()
            .expect("the options are valid");
        assert_eq!(resolved.config.get_hosts(), [Host::Unix(DEFAULT_SOCKET_DIR.into())]);
        assert_eq!(resolved.target, "host=/run/postgresql user=datapunk_app dbname=datapunk");
        assert!(resolved.tls.is_none());
    }

    #[test]
    fn a_conninfo_without_user_is_refused() {
        let (key, reason) = config_error(&ConnectOptions::new("host=/run/x dbname=datapunk"));
        assert_eq!(key, "database.conninfo");
        assert!(reason.contains("user"), "{reason}");
    }

    #[test]
    fn an_unparsable_conninfo_names_the_key() {
        let (key, reason) = config_error(&ConnectOptions::new("host='/run/x user=a"));
        assert_eq!(key, "database.conninfo");
        assert!(reason.contains("unterminated"), "{reason}");
    }

    #[test]
    fn tls_is_required_over_tcp_and_refused_over_a_unix_socket() {
        let mut options = ConnectOptions::new("host=db.example user=datapunk_app");
        options.tls = Some(Tls::default());
        let resolved = options.resolve().expect("the options are valid");
        assert_eq!(resolved.config.get_ssl_mode(), SslMode::Require);
        assert!(resolved.tls.is_some());

        options.conninfo = "host=/run/postgresql user=datapunk_app".into();
        assert_eq!(config_error(&options).0, "database.conninfo");

        options.conninfo = "host=db.example user=datapunk_app sslmode=disable".into();
        assert_eq!(config_error(&options).0, "database.conninfo");

        options.tls = None;
        options.conninfo = "host=db.example user=datapunk_app sslmode=require".into();
        assert_eq!(config_error(&options).0, "database.conninfo");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("the file can be written");
        let mut options = ConnectOptions::new("host=db.example user=datapunk_app");
        options.tls = Some(Tls { ca_file: Some(path) });
        assert_eq!(config_error(&options).0, "database.tls_ca_file");
    }
}
