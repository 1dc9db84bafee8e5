//! The daemon's life: start, serve, stop.
//!
//! [`run`] loads the configuration, runs the field-encryption self-test, opens the database
//! and the vault, records `config.loaded` and `daemon.start`, binds the control socket and
//! only then tells systemd `READY=1`. The vault's state is watched from then on
//! ([`crate::vault`]): a locked keyring is reported, never fatal. It pings the watchdog at half of `$WATCHDOG_USEC`, reloads the
//! configuration on SIGHUP, and on SIGTERM or SIGINT sends `STOPPING=1`, records `daemon.stop`,
//! stops the managed cluster and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datapunk_config::{Config, Environment, locate};
use datapunk_store::audit::{Event, Outcome};
use datapunk_vault::backend::{BackendKind, VaultState};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, watch};

use crate::audit::{Auditor, event};
use crate::control::proto::{
    AuditStatus, DatabaseStatus, DatasetStatus, IntegrationStatus, State, Status, VaultStatus,
};
use crate::control::server;
use crate::database::{Database, DatabaseError};
use crate::logging::LevelHandle;
use crate::{EXIT_CONFIG, notify, process};

/// What the control socket and the main loop share.
pub(crate) struct Shared {
    pub(crate) uid: u32,
    auditor: Auditor,
    database: Database,
    started: Instant,
    started_at: OffsetDateTime,
    state: Mutex<State>,
    recorded: AtomicU64,
    head_id: Mutex<Option<i64>>,
    server_version: Option<String>,
    vault_kind: BackendKind,
    /// The vault's last known state and when it began; `None` until the first answer.
    vault_state: Mutex<Option<(VaultState, OffsetDateTime)>>,
    /// Becomes true with the vault's first answer.
    vault_answered: tokio::sync::watch::Sender<bool>,
    /// Woken when the vault's state changes, so that the schedule looks again at once.
    pub(crate) vault_changed: tokio::sync::Notify,
    /// What syncs; set once the token keeper is made.
    syncer: std::sync::OnceLock<Arc<crate::sync::Syncer>>,
}

impl Shared {
    /// Records an audit event, logging (not returning) a failure: an event that cannot be
    /// stored must not stop the daemon, and the log says so loudly. While the database cannot
    /// be reached the event waits in the spool for the next append.
    pub(crate) async fn record(&self, event: &Event, message: &str) {
        let client = match self.database.store().client().await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, action = event.action.as_str(),
                    "could not reach the database to record an audit event");
                self.keep(event, message, error.is_retryable()).await;
                return;
            }
        };
        match self.auditor.record(&client, event, message).await {
            Ok(appended) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
                *self.head_id.lock().await = Some(appended.id);
            }
            Err(error) => {
                tracing::error!(error = %error, action = event.action.as_str(),
                    "could not record an audit event");
                self.keep(event, message, error.is_unreachable()).await;
            }
        }
    }

    /// Keeps an event that could not be appended: in the spool when the database was
    /// `unreachable`, in journald alone otherwise.
    async fn keep(&self, event: &Event, message: &str, unreachable: bool) {
        if !unreachable {
            self.auditor.journal_only(event, message);
            return;
        }
        if let Err(error) = self.auditor.defer(event, message).await {
            tracing::error!(error = %error, source = ?std::error::Error::source(&error),
                action = event.action.as_str(), "could not keep an audit event for later");
        }
    }

    /// The database.
    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// A snapshot of the daemon's state.
    pub(crate) async fn status(&self) -> Status {
        let probe = self.database.store().client();
        let client = match tokio::time::timeout(std::time::Duration::from_secs(1), probe).await {
            Ok(Ok(client)) => Some(client),
            _ => None,
        };
        let reachable = client.is_some();
        let integrations = match &client {
            Some(client) => integration_status(client).await,
            None => Vec::new(),
        };
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            state: *self.state.lock().await,
            started_at: self.started_at.format(&Rfc3339).unwrap_or_default(),
            uptime_secs: self.started.elapsed().as_secs(),
            database: DatabaseStatus {
                mode: self.database.mode().to_owned(),
                name: self.database.name().to_owned(),
                reachable,
                server_version: self.server_version.clone(),
            },
            audit: AuditStatus {
                recorded_since_start: self.recorded.load(Ordering::Relaxed),
                head_id: *self.head_id.lock().await,
            },
            vault: self.vault_status().await,
            integrations,
        }
    }

    async fn vault_status(&self) -> VaultStatus {
        let observed = self.vault_state.lock().await;
        let (state, reason, since) = match &*observed {
            None => ("checking".to_owned(), None, None),
            Some((state, since)) => {
                let reason = match state {
                    VaultState::Unavailable { reason } => Some(reason.clone()),
                    _ => None,
                };
                (state.as_str().to_owned(), reason, since.format(&Rfc3339).ok())
            }
        };
        VaultStatus {
            backend: self.vault_kind.as_str().to_owned(),
            noun: crate::vault::noun(self.vault_kind).to_owned(),
            state,
            reason,
            since,
        }
    }

    /// Keeps `state` as the vault's state. When it differs from the one before, sends the new
    /// `STATUS=` line and returns the name of the previous state (`checking` at first).
    pub(crate) async fn set_vault_state(&self, state: &VaultState) -> Option<&'static str> {
        let previous = {
            let mut observed = self.vault_state.lock().await;
            let previous = match &*observed {
                Some((old, _)) if old == state => return None,
                Some((old, _)) => old.as_str(),
                None => "checking",
            };
            *observed = Some((state.clone(), OffsetDateTime::now_utc()));
            previous
        };
        self.vault_answered.send_replace(true);
        // One waiter, the schedule: a change while it is busy wakes its next sleep.
        self.vault_changed.notify_one();
        let status = self.status().await;
        if status.state != State::Stopping {
            notify::status(&status.summary());
        }
        Some(previous)
    }

    /// Waits, at most `within`, until the vault has answered once: just after start-up the
    /// first check may still be under way, and a sync asked for then should not be refused
    /// for that.
    pub(crate) async fn vault_answered(&self, within: std::time::Duration) {
        let mut answered = self.vault_answered.subscribe();
        let _ = tokio::time::timeout(within, answered.wait_for(|answered| *answered)).await;
    }

    /// Whether the vault was last seen ready: syncing waits for it, rather than failing once
    /// per dataset while the keyring is locked.
    pub(crate) async fn vault_ready(&self) -> bool {
        matches!(&*self.vault_state.lock().await, Some((VaultState::Ready, _)))
    }

    /// What syncs, once the daemon is running.
    pub(crate) fn syncer(&self) -> Option<&Arc<crate::sync::Syncer>> {
        self.syncer.get()
    }

    /// Sends the current summary as `STATUS=`, after something it counts may have changed.
    pub(crate) async fn publish_status(&self) {
        let status = self.status().await;
        if status.state == State::Running {
            notify::status(&status.summary());
        }
    }

    async fn set_state(&self, state: State) {
        *self.state.lock().await = state;
        let summary = self.status().await.summary();
        match state {
            State::Stopping => notify::stopping(&summary),
            _ => notify::status(&summary),
        }
    }
}

impl crate::tokens::Recorder for Shared {
    fn record<'a>(
        &'a self,
        event: Event,
        message: &'static str,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { Shared::record(self, &event, message).await })
    }
}

/// Runs the daemon until SIGTERM or SIGINT and returns its exit status. The caller has set
/// the umask, refused root and installed logging.
pub async fn run(config_path: Option<PathBuf>, level: LevelHandle) -> ExitCode {
    let env = Environment::from_process();
    let uid = process::uid();

    // Until the configuration is read there is no anchor path; a refused configuration is
    // only mirrored to journald, so this one is never used for a row.
    let config = match load_config(config_path.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => {
            let auditor = Auditor::new(uid, PathBuf::new());
            let details = json!({ "error": error.to_string() });
            let event = event("daemon", "config.rejected", Outcome::Failure, details);
            auditor.journal_only(&event, "configuration rejected");
            tracing::error!(%error, "configuration rejected");
            eprintln!("datapunkd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    level.set(&config.log.level);

    match serve(config, config_path, env, uid, level).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<ConfigProblem>() => {
            // A restart cannot fix this: the unit's RestartPreventExitStatus= stops retries.
            tracing::error!(error = format!("{error:#}"), "datapunkd cannot start");
            notify::status(&format!("failed: {error}"));
            eprintln!("datapunkd: {error:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "datapunkd failed");
            notify::status(&format!("failed: {error}"));
            eprintln!("datapunkd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(
    path: Option<&std::path::Path>,
    env: &Environment,
) -> Result<Config, datapunk_config::ConfigError> {
    Config::load(&locate(path, env)?, env)
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    env: Environment,
    uid: u32,
    level: LevelHandle,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    // Signals are caught from here on: one that arrives while the database opens is acted on
    // as soon as it is open, instead of killing the process with the cluster half started.
    let mut signals = Signals::new().context("failed to install signal handlers")?;
    // Field encryption must visibly work before any data could be written with it: the
    // canary's ciphertext holds no plaintext, and a wrong key does not decrypt it.
    datapunk_vault::selftest::run()
        .context("the field-encryption self-test failed; refusing to start")?;
    notify::status("starting: opening the database");
    for dir in [&config.daemon.runtime_dir, &config.daemon.state_dir] {
        process::private_dir(dir)
            .with_context(|| format!("failed to prepare {}", dir.display()))?;
    }
    // A second daemon must leave before it touches the cluster or the audit trail.
    let socket = config.daemon.control_socket();
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        anyhow::bail!("another datapunkd is already running (it answers on {})", socket.display());
    }
    let auditor =
        Auditor::new(uid, config.daemon.audit_anchor()).spooling_to(config.daemon.audit_spool());
    if !auditor.mirrors_to_journald() {
        tracing::warn!("journald is not reachable: audit events go to the database only");
    }
    let database = match Database::open_for_daemon(&config, &auditor).await {
        Ok(database) => database,
        // A setting the database refuses stays refused until the file changes: exit 78.
        Err(DatabaseError::Store(error @ datapunk_store::Error::Config { .. })) => {
            return Err(ConfigProblem(format!("failed to open the database: {error}")).into());
        }
        Err(error) => return Err(error).context("failed to open the database"),
    };
    let server_version = match startup_checks(&database, &auditor).await {
        Ok(version) => version,
        Err(error) => {
            database.close().await;
            return Err(error);
        }
    };
    let vault = match crate::vault::open(&config, &database) {
        Ok(vault) => Arc::new(vault),
        Err(error) => {
            database.close().await;
            return Err(ConfigProblem(format!("{error:#}")).into());
        }
    };
    // The client secrets are read now, before the start is recorded: a daemon that cannot
    // read one never started.
    let clients = match provider_clients(&config) {
        Ok(clients) => clients,
        Err(error) => {
            database.close().await;
            return Err(ConfigProblem(format!("{error:#}")).into());
        }
    };
    // What opening the database recorded (a first start creates and migrates) counts too.
    let init_events = database
        .init_report()
        .map_or(0, |report| crate::database::init_events("daemon", report).len() as u64);
    let shared = Arc::new(Shared {
        uid,
        auditor,
        database,
        started: Instant::now(),
        started_at: OffsetDateTime::now_utc(),
        state: Mutex::new(State::Starting),
        recorded: AtomicU64::new(init_events),
        head_id: Mutex::new(None),
        server_version,
        vault_kind: vault.kind(),
        vault_state: Mutex::new(None),
        vault_answered: tokio::sync::watch::Sender::new(false),
        vault_changed: tokio::sync::Notify::new(),
        syncer: std::sync::OnceLock::new(),
    });
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    record_config(&shared, &config, "config.loaded", Outcome::Success, "configuration loaded")
        .await;
    let details = json!({ "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION") });
    shared
        .record(&event("daemon", "daemon.start", Outcome::Success, details), "datapunkd started")
        .await;

    let listener = match server::bind(&socket).await {
        Ok(listener) => listener,
        Err(error) => {
            shutdown(shared).await;
            return Err(error).context("failed to open the control socket");
        }
    };
    let (stop_server, stopped) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, Arc::clone(&shared), stopped.clone()));
    let vault_watch =
        tokio::spawn(crate::vault::watch(Arc::clone(&shared), Arc::clone(&vault), stopped.clone()));
    let rounds = match keeper(clients, &vault, &shared) {
        Ok(keeper) => {
            let syncer = crate::sync::Syncer::new(keeper, &config);
            let syncer = Arc::new(syncer);
            let _ = shared.syncer.set(Arc::clone(&syncer));
            tokio::spawn(crate::sync::run(Arc::clone(&shared), syncer, stopped))
        }
        Err(error) => {
            let _ = stop_server.send(true);
            let _ = server.await;
            vault_watch.abort();
            shutdown(shared).await;
            return Err(ConfigProblem(format!("{error:#}")).into());
        }
    };

    *shared.state.lock().await = State::Running;
    notify::ready(&shared.status().await.summary());
    tracing::info!(socket = %socket.display(), "datapunkd is ready");

    let mut config = config;
    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
            _ = signals.hangup.recv() => {
                config = reload(&shared, config, config_path.as_deref(), &env, &level).await;
            }
            _ = tick(&mut watchdog) => notify::watchdog(),
        }
    }

    shared.set_state(State::Stopping).await;
    // The watch channel is the server's only stop signal; a send error means it already ended.
    let _ = stop_server.send(true);
    if let Err(error) = server.await {
        tracing::error!(%error, "control socket task failed");
    }
    // The watcher leaves at its next await; one caught mid-append gets a moment to finish,
    // and is then cancelled, so that nothing is recorded after daemon.stop.
    let mut vault_watch = vault_watch;
    if tokio::time::timeout(VAULT_WATCH_BUDGET, &mut vault_watch).await.is_err() {
        tracing::warn!("the vault watcher did not stop in time");
        vault_watch.abort();
    }
    let mut rounds = rounds;
    if tokio::time::timeout(VAULT_WATCH_BUDGET, &mut rounds).await.is_err() {
        tracing::warn!("the integration rounds did not stop in time");
        rounds.abort();
    }
    if let Err(error) = std::fs::remove_file(&socket) {
        tracing::warn!(%error, "could not remove the control socket");
    }
    shutdown(shared).await;
    Ok(())
}

/// The integrations and their datasets with how each last synced; empty when the database
/// cannot say.
async fn integration_status(client: &tokio_postgres::Client) -> Vec<IntegrationStatus> {
    use datapunk_store::datasets::{self, Outcome as SyncOutcome};

    let Ok(all) = datapunk_store::integrations::list(client).await else {
        return Vec::new();
    };
    let synced = datasets::status(client, None).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "could not read the sync state");
        Vec::new()
    });
    let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
    all.into_iter()
        .map(|integration| {
            let datasets = integration
                .datasets
                .iter()
                .map(|set| {
                    let found = synced.iter().find(|s| {
                        s.integration == integration.name && s.dataset.name() == set.name
                    });
                    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    DatasetStatus {
                        name: set.name.clone(),
                        consented: set.consented,
                        granted: set.granted,
                        records: found.map_or(0, |s| as_i64(s.records)),
                        last_sync_at: found.and_then(|s| time(s.last_outcome_at)),
                        outcome: found.and_then(|s| s.last_outcome).map(|o| {
                            match o {
                                SyncOutcome::Success => "success",
                                SyncOutcome::Failure => "failure",
                            }
                            .to_owned()
                        }),
                        added: found.map_or(0, |s| as_i64(s.last_round.added)),
                        updated: found.map_or(0, |s| as_i64(s.last_round.updated)),
                        deleted: found.map_or(0, |s| as_i64(s.last_round.deleted)),
                        error: found.and_then(|s| s.last_error.clone()),
                    }
                })
                .collect();
            IntegrationStatus {
                name: integration.name,
                state: integration.state.as_str().to_owned(),
                datasets,
            }
        })
        .collect()
}

/// Every configured provider's client, its secret read.
fn provider_clients(config: &Config) -> anyhow::Result<Vec<crate::providers::ProviderClient>> {
    datapunk_oauth::provider::Provider::ALL
        .into_iter()
        .filter(|provider| config.providers.contains_key(provider.as_str()))
        .map(|provider| crate::providers::ProviderClient::configured(config, provider))
        .collect()
}

/// The token keeper over `clients`.
fn keeper(
    clients: Vec<crate::providers::ProviderClient>,
    vault: &Arc<datapunk_vault::backend::Vault>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Arc<crate::tokens::Keeper>> {
    let recorder: Arc<dyn crate::tokens::Recorder> = Arc::clone(shared) as _;
    let keeper = crate::tokens::Keeper::new(
        Arc::clone(vault),
        shared.database.store().clone(),
        clients,
        "daemon",
        recorder,
    )?;
    Ok(Arc::new(keeper))
}

/// Checks the audit anchor before anything is appended, and reads the server's version.
async fn startup_checks(database: &Database, auditor: &Auditor) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;

    let client = database.store().client().await.context("failed to reach the database")?;
    auditor.check_anchor(&client).await.context("refusing to start")?;
    let version = client.query_one("SHOW server_version", &[]).await.ok().map(|row| row.get(0));
    Ok(version)
}

/// Records `daemon.stop` and closes the database.
///
/// Recording is bounded by [`STOP_RECORD_BUDGET`] (the append itself gives up waiting for the
/// audit lock after 2 s), so that whatever holds the database up, the cluster is still
/// stopped and the process exits within systemd's 5 s.
async fn shutdown(shared: Arc<Shared>) {
    let uptime = shared.started.elapsed().as_secs();
    let details = json!({ "uptime_secs": uptime });
    let event = event("daemon", "daemon.stop", Outcome::Success, details);
    let record = shared.record(&event, "datapunkd stopped");
    if tokio::time::timeout(STOP_RECORD_BUDGET, record).await.is_err() {
        tracing::error!("could not record daemon.stop in time");
        shared.auditor.journal_only(&event, "datapunkd stopped");
    }
    shared.database.close().await;
    tracing::info!(uptime_secs = uptime, "datapunkd stopped");
}

/// A problem with the configured environment that restarting will not fix, such as an
/// unreadable master key: the daemon exits with [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigProblem(String);

/// How long shutdown waits for the vault watcher to leave.
const VAULT_WATCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(1000);

/// How long shutdown waits to record `daemon.stop`.
const STOP_RECORD_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);

async fn record_config(
    shared: &Shared,
    config: &Config,
    action: &str,
    outcome: Outcome,
    message: &str,
) {
    let path = config.source.as_ref().map(|p| p.display().to_string());
    let details = json!({ "path": path });
    shared.record(&event("daemon", action, outcome, details), message).await;
}

/// Re-reads the configuration on SIGHUP. A bad file is refused and audited and the running
/// configuration stays; a good one applies its log level at once, and what runs becomes the
/// running configuration with that level. Other changes need a restart: the log says so at
/// each reload while the file differs from what runs, `[backup]` aside (only the CLI reads
/// it, afresh at every command).
async fn reload(
    shared: &Shared,
    current: Config,
    path: Option<&std::path::Path>,
    env: &Environment,
    level: &LevelHandle,
) -> Config {
    match load_config(path, env) {
        Ok(new) => {
            level.set(&new.log.level);
            let running = Config { log: new.log.clone(), ..current };
            let differs = Config {
                log: running.log.clone(),
                backup: running.backup.clone(),
                source: running.source.clone(),
                ..new.clone()
            };
            if differs != running {
                tracing::warn!("configuration changes outside [log] apply at the next restart");
            }
            record_config(
                shared,
                &new,
                "config.loaded",
                Outcome::Success,
                "configuration reloaded",
            )
            .await;
            running
        }
        Err(error) => {
            tracing::error!(%error, "configuration rejected; keeping the running one");
            let details = json!({ "error": error.to_string() });
            let event = event("daemon", "config.rejected", Outcome::Failure, details);
            shared.record(&event, "configuration rejected").await;
            current
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}
