//! Opening PostgreSQL as the configuration says.
//!
//! In managed mode the daemon owns a private cluster under its data directory: it creates it
//! on first start (`initdb`, then the roles, the database and the schema), starts it before it
//! reports ready and stops it on shutdown. In external mode it connects to an existing server
//! as `datapunk_app` and refuses to start until an administrator has run `datapunk db init`
//! and the schema is current.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datapunk_config::{Config, DatabaseMode};
use datapunk_store::audit::{Event, Outcome};
use datapunk_store::managed::{Cluster, ManagedOptions};
use datapunk_store::{ConnectOptions, Role, Store, Tls, admin};
use serde_json::json;

use crate::audit::{Auditor, event};
use crate::process;

/// An open database, and the managed cluster behind it when there is one.
pub struct Database {
    store: Store,
    cluster: tokio::sync::Mutex<Option<ClusterSession>>,
    mode: &'static str,
    name: String,
    init_report: Option<admin::InitReport>,
}

/// A managed cluster in use by this process.
///
/// Whoever holds the lock beside the data directory (`postgresql.lock` beside `postgresql`)
/// manages the cluster's life: the daemon for as long
/// as it runs, or a `datapunk` command while no daemon does. The holder starts the cluster if
/// needed and stops it when done (the daemon always; a command only if it started it). A
/// process that finds the lock taken uses the cluster as it is and never starts or stops it,
/// so a command can no longer stop the cluster under a running daemon, and a cluster left
/// running by a daemon that crashed is stopped by the next one.
pub struct ClusterSession {
    cluster: Cluster,
    /// The held lock, when this process manages the cluster.
    lock: Option<File>,
    stop_on_close: bool,
}

/// How long the daemon waits for a `datapunk` command to release the cluster.
const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(30);

impl ClusterSession {
    /// The daemon's session: waits for the lock, creates the cluster if it does not exist,
    /// starts it (or adopts one left running) and will stop it on close.
    ///
    /// # Errors
    ///
    /// When another process keeps the lock, or `initdb` or `pg_ctl` fail.
    pub async fn for_daemon(config: &Config, cluster: Cluster) -> Result<Self, DatabaseError> {
        let path = lock_path(config);
        let lock = acquire(&path, DAEMON_LOCK_WAIT)
            .await?
            .ok_or(DatabaseError::ClusterBusy { path: path.clone() })?;
        if cluster.initialize().await? {
            tracing::info!(data_dir = %cluster.data_dir().display(), "created the managed cluster");
        }
        cluster.start().await?;
        Ok(Self { cluster, lock: Some(lock), stop_on_close: true })
    }

    /// A command's session: manages the cluster if nobody else does (creating it only when
    /// `initialize` is set), else uses it as the daemon left it.
    ///
    /// # Errors
    ///
    /// When the cluster is managed by another process but is not running, or `initdb` or
    /// `pg_ctl` fail.
    pub async fn for_command(
        config: &Config,
        cluster: Cluster,
        initialize: bool,
    ) -> Result<Self, DatabaseError> {
        let path = lock_path(config);
        match acquire(&path, Duration::ZERO).await? {
            Some(lock) => {
                if initialize {
                    cluster.initialize().await?;
                }
                let started = cluster.start().await?;
                Ok(Self { cluster, lock: Some(lock), stop_on_close: started })
            }
            None if cluster.is_running().await? => {
                Ok(Self { cluster, lock: None, stop_on_close: false })
            }
            None => Err(DatabaseError::ClusterBusy { path }),
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// True when this process holds the cluster's lock: no daemon and no other command uses
    /// the cluster until the session is closed.
    pub fn manages(&self) -> bool {
        self.lock.is_some()
    }

    /// The lock file whose holder manages the cluster.
    pub fn lock_path(config: &Config) -> PathBuf {
        lock_path(config)
    }

    /// Stops the cluster if this session manages it and should, then releases the lock.
    pub async fn close(self) {
        if self.stop_on_close
            && let Err(error) = self.cluster.stop().await
        {
            tracing::error!(%error, "could not stop the managed cluster");
        }
        drop(self.lock);
    }
}

/// The lock beside the cluster's data directory: it belongs to the cluster, so that two
/// configurations sharing a data directory share it too, whatever their runtime directories.
fn lock_path(config: &Config) -> PathBuf {
    match &config.database.mode {
        DatabaseMode::Managed { data_dir, .. } => {
            let mut name = data_dir.file_name().unwrap_or("cluster".as_ref()).to_os_string();
            name.push(".lock");
            data_dir.parent().unwrap_or(Path::new("/")).join(name)
        }
        DatabaseMode::External { .. } => config.daemon.runtime_dir.join("cluster.lock"),
    }
}

/// Takes the exclusive lock at `path`, waiting up to `wait`; `None` when another process keeps
/// it that long.
async fn acquire(path: &Path, wait: Duration) -> Result<Option<File>, DatabaseError> {
    let io_error = |source| DatabaseError::Directory { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io_error)?;
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true).mode(0o600);
        options.open(path).map_err(io_error)?
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
    }
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// A directory for the cluster could not be prepared.
    #[error("cannot prepare {}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The user name for peer authentication could not be found.
    #[error("cannot find this user's name for peer authentication")]
    UserName(#[source] std::io::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] datapunk_store::Error),
    /// Another process manages the managed cluster and it is not running, or the daemon
    /// could not get the cluster from a running command in time.
    #[error(
        "the managed cluster is in use by another datapunkd or datapunk command (lock {}); \
         try again in a moment",
        path.display()
    )]
    ClusterBusy {
        /// The lock file.
        path: PathBuf,
    },
    /// The schema is older than this program.
    #[error(
        "the database schema is at version {current} but this datapunkd needs {latest}: \
         run `datapunk db migrate --admin-url CONNINFO`"
    )]
    SchemaBehind {
        /// The version in the database.
        current: u32,
        /// The version this program ships.
        latest: u32,
    },
    /// The schema is newer than this program.
    #[error(
        "the database schema is at version {current}, newer than this datapunkd knows \
         ({latest}): upgrade datapunk"
    )]
    SchemaAhead {
        /// The version in the database.
        current: u32,
        /// The version this program ships.
        latest: u32,
    },
}

impl DatabaseError {
    /// True when PostgreSQL could not be reached (stopped, starting, out of connection
    /// slots): trying later may work without anyone changing anything.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Store(error) if error.is_retryable())
    }
}

/// The managed cluster described by `config`, if the configuration asks for one.
pub fn managed_cluster(config: &Config) -> Result<Option<Cluster>, DatabaseError> {
    let DatabaseMode::Managed { data_dir, pg_bin_dir } = &config.database.mode else {
        return Ok(None);
    };
    let socket_dir = config.daemon.runtime_dir.join("postgresql");
    for dir in [&config.daemon.runtime_dir, &socket_dir] {
        process::private_dir(dir)
            .map_err(|source| DatabaseError::Directory { path: dir.clone(), source })?;
    }
    if let Some(parent) = data_dir.parent() {
        process::private_dir(parent)
            .map_err(|source| DatabaseError::Directory { path: parent.to_path_buf(), source })?;
    }
    let os_user = process::user_name().map_err(DatabaseError::UserName)?;
    Ok(Some(Cluster::new(ManagedOptions {
        data_dir: data_dir.clone(),
        socket_dir,
        bin_dir: pg_bin_dir.clone(),
        os_user,
    })))
}

/// How to connect as `role` to the configured database. In external mode the configured
/// connection string is the app role's; other roles use it with `user` replaced.
pub fn connect_options(config: &Config, cluster: Option<&Cluster>, role: Role) -> ConnectOptions {
    let name = &config.database.name;
    let mut options = match (&config.database.mode, cluster) {
        (DatabaseMode::External { conninfo, password, tls }, _) => {
            let mut options = ConnectOptions::new(conninfo.clone());
            options.password_file = password.as_ref().map(|p| p.path().to_path_buf());
            options.tls = tls.enabled.then(|| Tls { ca_file: tls.ca_file.clone() });
            if role != Role::App {
                options.user = Some(role.name().to_owned());
            }
            options
        }
        (DatabaseMode::Managed { .. }, Some(cluster)) => {
            ConnectOptions::new(cluster.conninfo(role, name))
        }
        (DatabaseMode::Managed { .. }, None) => ConnectOptions::new(String::new()),
    };
    options.pool_size = config.database.pool_size;
    options
}

impl Database {
    /// Opens the database for the daemon: in managed mode creates and starts the cluster,
    /// initialises or migrates it, and audits what it created; in external mode connects and
    /// checks the schema version.
    ///
    /// # Errors
    ///
    /// When PostgreSQL cannot be started or reached, or the schema is not current.
    pub async fn open_for_daemon(
        config: &Config,
        auditor: &Auditor,
    ) -> Result<Self, DatabaseError> {
        match managed_cluster(config)? {
            Some(cluster) => {
                let session = ClusterSession::for_daemon(config, cluster).await?;
                Self::open_managed(config, session, auditor, "daemon").await
            }
            None => Self::open_external(config, Role::App).await,
        }
    }

    /// Opens the database as `role` for a short-lived command, starting the managed cluster
    /// if it is not running (and stopping it again on [`Database::close`]).
    ///
    /// # Errors
    ///
    /// As [`Database::open_for_daemon`]; a managed cluster that was never created is an error
    /// here (`datapunk db init` or the daemon's first start creates it).
    pub async fn open_as(config: &Config, role: Role) -> Result<Self, DatabaseError> {
        match managed_cluster(config)? {
            Some(cluster) => {
                let session = ClusterSession::for_command(config, cluster, false).await?;
                let options = connect_options(config, Some(session.cluster()), role);
                let store = match Store::connect(&options).await {
                    Ok(store) => store,
                    Err(e) => {
                        session.close().await;
                        return Err(e.into());
                    }
                };
                Ok(Self {
                    store,
                    cluster: tokio::sync::Mutex::new(Some(session)),
                    mode: "managed",
                    name: config.database.name.clone(),
                    init_report: None,
                })
            }
            None => Self::open_external(config, role).await,
        }
    }

    /// Initialises and migrates the cluster of `session`, auditing each step that changed
    /// something; `component` names who did it.
    ///
    /// # Errors
    ///
    /// When the initialisation fails; the session is closed then.
    pub async fn open_managed(
        config: &Config,
        session: ClusterSession,
        auditor: &Auditor,
        component: &str,
    ) -> Result<Self, DatabaseError> {
        let guard = session;
        let name = &config.database.name;
        let result = async {
            let report = admin::init(&guard.cluster().admin_conninfo(name), name).await?;
            // The cluster is Datapunk's alone: its other databases are closed to the roles.
            ConnectOptions::new(guard.cluster().admin_conninfo("postgres"))
                .connect_once()
                .await?
                .batch_execute(
                    "REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC",
                )
                .await
                .map_err(datapunk_store::Error::from)?;
            let options = connect_options(config, Some(guard.cluster()), Role::App);
            let store = Store::connect(&options).await?;
            record_init(&store, auditor, component, &report).await;
            Ok::<_, DatabaseError>((store, report))
        }
        .await;

        match result {
            Ok((store, report)) => Ok(Self {
                store,
                cluster: tokio::sync::Mutex::new(Some(guard)),
                mode: "managed",
                name: name.clone(),
                init_report: Some(report),
            }),
            Err(e) => {
                guard.close().await;
                Err(e)
            }
        }
    }

    async fn open_external(config: &Config, role: Role) -> Result<Self, DatabaseError> {
        let store = Store::connect(&connect_options(config, None, role)).await?;
        let state = store.schema_state().await?;
        if state.current < state.latest {
            return Err(DatabaseError::SchemaBehind {
                current: state.current,
                latest: state.latest,
            });
        }
        if state.current > state.latest {
            return Err(DatabaseError::SchemaAhead {
                current: state.current,
                latest: state.latest,
            });
        }
        Ok(Self {
            store,
            cluster: tokio::sync::Mutex::new(None),
            mode: "external",
            name: config.database.name.clone(),
            init_report: None,
        })
    }

    /// What the managed initialisation did, when this opened a managed cluster.
    pub fn init_report(&self) -> Option<&admin::InitReport> {
        self.init_report.as_ref()
    }

    /// The connection pool.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `managed` or `external`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the pool and ends the cluster session (stopping the cluster if this process
    /// manages it).
    /// Safe to call more than once; later calls do nothing.
    pub async fn close(&self) {
        self.store.close();
        if let Some(session) = self.cluster.lock().await.take() {
            session.close().await;
        }
    }
}

/// The audit events an initialisation calls for: `database.init` when roles or the
/// database were created, `database.migrate` when migrations were applied; none when
/// nothing changed.
pub fn init_events(component: &str, report: &admin::InitReport) -> Vec<(Event, &'static str)> {
    let mut events = Vec::new();
    if report.created_database || !report.created_roles.is_empty() {
        let details = json!({
            "database": report.database,
            "created_database": report.created_database,
            "created_roles": report.created_roles,
        });
        let event = event(component, "database.init", Outcome::Success, details);
        events.push((event, "database initialised"));
    }
    events.extend(migrate_event(component, &report.migrations));
    events
}

/// The `database.migrate` event for a migration run that applied something.
pub fn migrate_event(
    component: &str,
    report: &admin::MigrateReport,
) -> Option<(Event, &'static str)> {
    if report.applied.is_empty() {
        return None;
    }
    let versions: Vec<u32> = report.applied.iter().map(|(v, _)| *v).collect();
    let details = json!({ "applied": versions, "current": report.current });
    Some((
        event(component, "database.migrate", Outcome::Success, details),
        "database schema migrated",
    ))
}

async fn record_init(
    store: &Store,
    auditor: &Auditor,
    component: &str,
    report: &admin::InitReport,
) {
    let client = match store.client().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "could not audit the database initialisation");
            return;
        }
    };
    for (event, message) in init_events(component, report) {
        if let Err(error) = auditor.record(&client, &event, message).await {
            tracing::error!(error = %error, "could not audit the database initialisation");
        }
    }
}
