//! The daemon's syncing: every consented and granted dataset of every integration that may
//! run, once per interval (with jitter: its provider's `sync_interval_secs`, else
//! `sync.interval_secs`), and at once when `datapunk sync` asks.
//!
//! Each round reads the integrations from the database, so that one connected or
//! disconnected by the CLI is seen without a restart. A dataset's sync ([`dataset::sync`])
//! gets its access tokens through the [`Keeper`], which refreshes them when due; an
//! integration with no dataset to sync still has its token and account checked, so that a
//! gone grant is noticed.
//!
//! An integration in `needs_reauth`, `revoked` or `paused` is left alone: no token request
//! and no API call until the person acts; nothing runs on schedule while the vault is locked
//! or unreachable. A dataset whose provider is unavailable (429, 5xx,
//! no answer) is tried again after a backoff that starts at 30 s, doubles, honours the
//! provider's `Retry-After`, and otherwise never exceeds the interval. One dataset syncs at a
//! time.
//!
//! Every sync of a dataset is audited as `sync.run`, with counts (added, updated, deleted,
//! pages) and never contents.

pub mod dataset;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use datapunk_config::Config;
use datapunk_connectors::{Connector, FetchError, Options, TokenSource};
use datapunk_oauth::provider::Provider;
use datapunk_store::audit::Outcome;
use datapunk_store::integrations::{self, Integration, State};
use datapunk_vault::secret::SecretString;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::audit::event;
use crate::control::proto::{SyncProgress, SyncRun};
use crate::service::Shared;
use crate::tokens::{Keeper, TokenFailure};

/// The first wait after a failure worth retrying.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(30);

/// The longest the loop sleeps before looking for integrations again.
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// The least time between two passes of the schedule, whatever is due.
const SHORTEST_WAIT: Duration = Duration::from_millis(250);

/// States in which an integration is synced.
const RUNNABLE: [State; 3] = [State::Active, State::KeyringLocked, State::TokenUnsaved];

/// When something is next due, and how many tries in a row failed.
#[derive(Clone, Copy)]
struct Schedule {
    due: Instant,
    failures: u32,
}

/// What syncs: the token keeper, the connectors' options and the schedule's intervals.
pub(crate) struct Syncer {
    keeper: Arc<Keeper>,
    options: Options,
    /// Between two syncs of a dataset: `sync.interval_secs`, or its provider's own.
    interval: Duration,
    provider_intervals: HashMap<String, Duration>,
    /// Held while a dataset syncs: the loop and `datapunk sync` take turns.
    busy: tokio::sync::Mutex<()>,
    /// How long a sync asked for just after start-up waits for the vault's first answer: the
    /// vault's timeout, and a little more.
    first_vault_answer: Duration,
    /// When `datapunk sync` last synced each (integration, dataset) successfully, until the
    /// schedule takes note: it then counts the interval from there, so that a sync on request
    /// is not repeated straight after.
    synced: std::sync::Mutex<HashMap<(String, String), Instant>>,
}

impl Syncer {
    pub(crate) fn new(keeper: Arc<Keeper>, config: &Config) -> Self {
        let provider_intervals = config
            .providers
            .keys()
            .map(|name| (name.clone(), config.sync_interval(name)))
            .collect();
        let vault_timeout = config.vault.timeout;
        Self {
            keeper,
            options: Options::default(),
            interval: config.sync.interval,
            provider_intervals,
            first_vault_answer: vault_timeout + Duration::from_secs(5),
            busy: tokio::sync::Mutex::new(()),
            synced: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// How long after a sync `provider`'s datasets are due again.
    fn interval_for(&self, provider: &str) -> Duration {
        self.provider_intervals.get(provider).copied().unwrap_or(self.interval)
    }

    /// Syncs now what `integration` and `dataset` select (everything when both are `None`),
    /// reporting progress to `progress`; one run per dataset, skipped ones included.
    pub(crate) async fn sync_now(
        &self,
        shared: &Shared,
        (integration, dataset): (Option<&str>, Option<&str>),
        full: bool,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<Vec<SyncRun>, String> {
        shared.vault_answered(self.first_vault_answer).await;
        if !shared.vault_ready().await {
            let vault = shared.status().await.vault;
            return Err(format!(
                "the {} is {}, so no token or data key can be read; sync again once it is ready",
                vault.noun, vault.state
            ));
        }
        let all = match list(shared).await {
            Ok(all) => all,
            Err(error) => {
                tracing::warn!(%error, "could not read the integrations");
                return Err("the database could not be read".to_owned());
            }
        };
        if let Some(name) = integration
            && !all.iter().any(|i| i.name == name)
        {
            return Err(format!("there is no integration `{name}`; see `datapunk integrations`"));
        }
        if let Some(wanted) = dataset {
            let chosen: Vec<&Integration> =
                all.iter().filter(|i| integration.is_none_or(|name| i.name == name)).collect();
            if !chosen.iter().any(|i| i.datasets.iter().any(|d| d.name == wanted)) {
                return Err(match (integration, chosen.as_slice()) {
                    (Some(name), [one]) => {
                        let names: Vec<&str> =
                            one.datasets.iter().map(|d| d.name.as_str()).collect();
                        format!(
                            "integration `{name}` has no dataset `{wanted}`; its datasets are {}",
                            names.join(", ")
                        )
                    }
                    _ => format!(
                        "no integration has a dataset `{wanted}`; see `datapunk integrations`"
                    ),
                });
            }
        }
        let mut runs = Vec::new();
        for candidate in all.iter().filter(|i| integration.is_none_or(|name| i.name == name)) {
            for set in candidate.datasets.iter().filter(|d| dataset.is_none_or(|n| d.name == n)) {
                let run = if !RUNNABLE.contains(&candidate.state) {
                    skipped(
                        candidate,
                        &set.name,
                        format!("integration is {}", candidate.state.as_str()),
                    )
                } else if !set.consented {
                    skipped(candidate, &set.name, "not consented".to_owned())
                } else if !set.granted {
                    skipped(candidate, &set.name, "not granted".to_owned())
                } else {
                    let run = self.run(shared, candidate, &set.name, full, progress).await.0;
                    if run.outcome == "success" {
                        let key = (candidate.name.clone(), set.name.clone());
                        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
                        synced.insert(key, Instant::now());
                    }
                    run
                };
                runs.push(run);
            }
        }
        if runs.iter().any(|run| run.outcome != "skipped") {
            shared.publish_status().await;
        }
        Ok(runs)
    }

    /// Syncs one dataset and audits it. Beside the run: for a failure worth retrying soon,
    /// how long the provider asked to wait (if it said).
    async fn run(
        &self,
        shared: &Shared,
        integration: &Integration,
        dataset: &str,
        full: bool,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> (SyncRun, Option<Option<Duration>>) {
        let _turn = self.busy.lock().await;
        let started = std::time::Instant::now();
        let name = integration.name.as_str();
        let result = self.sync_dataset(shared, integration, dataset, full, started, progress).await;
        let elapsed_ms = dataset::elapsed_ms(started);
        let (report, error, retry) = match &result {
            Ok(report) => (report.clone(), None, None),
            Err((report, error, retry)) => (report.clone(), Some(error.clone()), *retry),
        };
        let outcome = if error.is_some() { Outcome::Failure } else { Outcome::Success };
        let details = json!({
            "dataset": dataset,
            "added": report.added,
            "updated": report.updated,
            "deleted": report.deleted,
            "pages": report.pages,
            "resyncs": report.resyncs,
            "full": full,
            "elapsed_ms": elapsed_ms,
            "error": error,
        });
        let mut audited = event("sync", "sync.run", outcome, details);
        audited.integration = Some(name.to_owned());
        audited.dataset = Some(dataset.to_owned());
        let message = if error.is_some() { "sync failed" } else { "dataset synced" };
        shared.record(&audited, message).await;
        if let Some(error) = &error {
            tracing::warn!(integration = name, dataset, error = error.as_str(), "sync failed");
        } else {
            tracing::info!(
                integration = name,
                dataset,
                added = report.added,
                updated = report.updated,
                deleted = report.deleted,
                pages = report.pages,
                elapsed_ms,
                "dataset synced"
            );
        }
        let run = SyncRun {
            integration: name.to_owned(),
            dataset: dataset.to_owned(),
            outcome: if error.is_some() { "failure" } else { "success" }.to_owned(),
            added: report.added,
            updated: report.updated,
            deleted: report.deleted,
            pages: report.pages,
            elapsed_ms,
            error,
        };
        (run, retry)
    }

    async fn sync_dataset(
        &self,
        shared: &Shared,
        integration: &Integration,
        dataset: &str,
        full: bool,
        started: std::time::Instant,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
    ) -> Result<dataset::Report, Failed> {
        let name = integration.name.as_str();
        let (connector, key) = match self.prepare(integration, dataset).await {
            Ok(prepared) => prepared,
            Err(failed) => {
                // Recorded on the dataset's first stream, so that `datapunk status` shows it.
                if let Some(set) = datapunk_store::datasets::Dataset::from_name(dataset) {
                    let stream = datapunk_store::datasets::StreamKey::new(name, set, "");
                    let recorded = async {
                        let client = shared.database().store().client().await?;
                        datapunk_store::datasets::record_failure(&client, &stream, &failed.1).await
                    };
                    if let Err(error) = recorded.await {
                        tracing::warn!(%error, "could not record a sync failure");
                    }
                }
                return Err(failed);
            }
        };
        let tokens = KeeperTokens { keeper: &self.keeper, name };
        let on_page = |report: &dataset::Report| {
            progress(SyncProgress {
                integration: name.to_owned(),
                dataset: dataset.to_owned(),
                pages: report.pages,
                records: report.records(),
                elapsed_ms: dataset::elapsed_ms(started),
            });
        };
        let store = shared.database().store();
        let mut partial = dataset::Report::default();
        let mut tracked = |report: &dataset::Report| {
            partial = report.clone();
            on_page(report);
        };
        dataset::sync(store, &connector, &tokens, key, name, full, &mut tracked)
            .await
            .map_err(|error| (partial.clone(), error.to_string(), error.retry()))
    }

    /// The connector and the data key a dataset's sync needs.
    async fn prepare(
        &self,
        integration: &Integration,
        dataset: &str,
    ) -> Result<(Connector, Arc<datapunk_vault::key::DataKey>), Failed> {
        let empty = |error: String| (dataset::Report::default(), error, None);
        let name = integration.name.as_str();
        let provider: Provider = integration.provider.parse().map_err(|e| empty(format!("{e}")))?;
        let endpoints = self.keeper.endpoints(provider).ok_or_else(|| {
            empty(format!(
                "no OAuth client is configured for {provider}: add a `[providers.{provider}]` table"
            ))
        })?;
        let connector = Connector::new(provider, dataset, endpoints, &self.options)
            .map_err(|e| empty(e.to_string()))?;
        let key = match self.keeper.vault().data_key(name).await {
            Ok(Some(key)) => Arc::new(key),
            Ok(None) => {
                return Err(empty(format!(
                    "integration `{name}` has no data key, so nothing can be stored \
                     encrypted; restore it (`datapunk keys restore`) or connect again"
                )));
            }
            // A locked or unreachable vault: worth retrying once it is back.
            Err(error) => {
                return Err((
                    dataset::Report::default(),
                    format!("cannot read the data key: {error}"),
                    Some(None),
                ));
            }
        };
        Ok((connector, key))
    }
}

/// What the schedule runs for `integration`: each dataset chosen and granted, or when there is
/// none, `""`, the check of its token and account, so that a gone grant shows.
fn due_sets(integration: &Integration) -> Vec<&str> {
    let sets: Vec<&str> = integration
        .datasets
        .iter()
        .filter(|d| d.consented && d.granted)
        .map(|d| d.name.as_str())
        .collect();
    if sets.is_empty() { vec![""] } else { sets }
}

/// The wait after `failures` failures in a row: from [`RETRY_FIRST`], doubling up to the
/// `interval`, and never shorter than what the provider `asked` for, up to [`LONGEST_ASKED`].
fn retry_wait(failures: u32, asked: Option<Duration>, interval: Duration) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let asked = asked.unwrap_or(Duration::ZERO).min(LONGEST_ASKED);
    doubled.min(interval).max(asked)
}

/// The longest a provider's `Retry-After` holds a dataset back: a day, the longest interval.
/// Whatever a provider sends, the schedule's times stay representable.
const LONGEST_ASKED: Duration = Duration::from_secs(86_400);

/// A failed sync: what it did before failing, the failure in words (never a value), and for a
/// failure worth retrying soon how long the provider asked to wait.
type Failed = (dataset::Report, String, Option<Option<Duration>>);

fn skipped(integration: &Integration, dataset: &str, reason: String) -> SyncRun {
    SyncRun {
        integration: integration.name.clone(),
        dataset: dataset.to_owned(),
        outcome: "skipped".to_owned(),
        added: 0,
        updated: 0,
        deleted: 0,
        pages: 0,
        elapsed_ms: 0,
        error: Some(reason),
    }
}

/// The keeper's tokens for one integration, as the connectors ask for them.
struct KeeperTokens<'a> {
    keeper: &'a Keeper,
    name: &'a str,
}

impl TokenSource for KeeperTokens<'_> {
    fn http(&self) -> &reqwest::Client {
        self.keeper.http().http()
    }

    async fn access(&self) -> Result<SecretString, FetchError> {
        self.keeper
            .access_token(self.name)
            .await
            .map(|access| access.token)
            .map_err(|failure| FetchError::Token(Box::new(failure)))
    }

    async fn after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, FetchError> {
        self.keeper
            .after_unauthorized(self.name, rejected)
            .await
            .map(|access| access.token)
            .map_err(|failure| FetchError::Token(Box::new(failure)))
    }
}

async fn list(shared: &Shared) -> Result<Vec<Integration>, datapunk_store::Error> {
    let client = shared.database().store().client().await?;
    integrations::list(&client).await
}

/// Runs the schedule until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, syncer: Arc<Syncer>, mut stop: watch::Receiver<bool>) {
    let mut schedule: HashMap<(String, String), Schedule> = HashMap::new();
    let quiet = |_: SyncProgress| {};
    loop {
        let all = match list(&shared).await {
            Ok(all) => all,
            Err(error) => {
                // The schedule (backoffs, a provider's Retry-After) stays as it is.
                tracing::warn!(%error, "could not read the integrations; trying again shortly");
                tokio::select! {
                    () = tokio::time::sleep(LOOK_AGAIN) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // Forget what is gone or does not run now, so that an integration paused, revoked or
        // reconnected and then back starts afresh, due at once.
        schedule.retain(|(name, set), _| {
            all.iter()
                .filter(|i| RUNNABLE.contains(&i.state))
                .any(|i| &i.name == name && due_sets(i).contains(&set.as_str()))
        });
        let mut worked = false;
        let mut visited = Vec::new();
        // A locked or unreachable vault holds the tokens and keys: nothing can run until it is
        // back, which the vault watcher reports and audits.
        let runnable = if shared.vault_ready().await { all.as_slice() } else { &[] };
        for integration in runnable.iter().filter(|i| RUNNABLE.contains(&i.state)) {
            let interval = syncer.interval_for(&integration.provider);
            for set in due_sets(integration) {
                let key = (integration.name.clone(), set.to_owned());
                visited.push(key.clone());
                if schedule.get(&key).is_some_and(|s| s.due > Instant::now()) {
                    continue;
                }
                // Synced meanwhile on request: due an interval after that.
                let last =
                    syncer.synced.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                if let Some(last) = last
                    && last + interval > Instant::now()
                {
                    let due = last + jittered(interval);
                    schedule.insert(key, Schedule { due, failures: 0 });
                    continue;
                }
                worked = true;
                let attempt = async {
                    if set.is_empty() {
                        check_account(&syncer.keeper, &integration.name).await
                    } else {
                        let (run, retry) =
                            syncer.run(&shared, integration, set, false, &quiet).await;
                        run.error.map_or(Ok(()), |error| Err((error, retry)))
                    }
                };
                let result = tokio::select! {
                    result = attempt => result,
                    _ = stop.changed() => return,
                };
                let entry =
                    schedule.entry(key).or_insert(Schedule { due: Instant::now(), failures: 0 });
                match result {
                    Ok(()) => {
                        *entry = Schedule { due: Instant::now() + jittered(interval), failures: 0 };
                    }
                    Err((error, Some(asked))) => {
                        entry.failures = entry.failures.saturating_add(1);
                        let wait = retry_wait(entry.failures, asked, interval);
                        tracing::debug!(
                            integration = integration.name.as_str(),
                            dataset = set,
                            error = error.as_str(),
                            retry_in_secs = wait.as_secs(),
                            "retrying later"
                        );
                        entry.due = Instant::now() + wait;
                    }
                    Err((_, None)) => {
                        *entry = Schedule { due: Instant::now() + interval, failures: 0 };
                    }
                }
            }
        }
        if worked {
            shared.publish_status().await;
        }
        // Only what this pass could run says when to look again: while the vault is locked
        // the entries keep their backoff, but their due times, past or not, must not wake the
        // loop. The vault's return wakes it instead.
        let next = visited.iter().filter_map(|key| schedule.get(key)).map(|s| s.due).min();
        let wait = next
            .map_or(LOOK_AGAIN, |due| due.saturating_duration_since(Instant::now()))
            .clamp(SHORTEST_WAIT, LOOK_AGAIN);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.vault_changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// The interval, give or take a tenth, so that integrations do not all ask at once.
fn jittered(interval: Duration) -> Duration {
    let tenth = interval / 10;
    if tenth.is_zero() {
        return interval;
    }
    let offset = rand::thread_rng().gen_range(Duration::ZERO..=tenth * 2);
    interval - tenth + offset
}

/// Checks the token and account of an integration with nothing to sync.
async fn check_account(
    keeper: &Keeper,
    name: &str,
) -> Result<(), (String, Option<Option<Duration>>)> {
    match keeper.account(name).await {
        Ok(account) => {
            tracing::debug!(
                integration = name,
                account = account.id.as_str(),
                "integration checked"
            );
            Ok(())
        }
        Err(failure) => {
            let retry = match &failure {
                TokenFailure::Retry { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            tracing::warn!(integration = name, error = %failure, "integration check failed");
            Err((failure.to_string(), retry))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_interval_and_honour_retry_after() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_wait(1, None, hour), Duration::from_secs(30));
        assert_eq!(retry_wait(3, None, hour), Duration::from_secs(120));
        assert_eq!(retry_wait(40, None, hour), hour);
        assert_eq!(retry_wait(1, Some(Duration::from_secs(600)), hour), Duration::from_secs(600));
        assert_eq!(retry_wait(1, Some(2 * hour), hour), 2 * hour, "the provider's wait wins");
        let absurd = Some(Duration::from_secs(u64::MAX));
        assert_eq!(retry_wait(1, absurd, hour), 24 * hour, "up to a day");
        // The schedule adds the wait to the present, which must not overflow.
        assert!(Instant::now().checked_add(retry_wait(1, absurd, hour)).is_some());
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval() {
        let interval = Duration::from_secs(900);
        for _ in 0..200 {
            let wait = jittered(interval);
            assert!(
                wait >= Duration::from_secs(810) && wait <= Duration::from_secs(990),
                "{wait:?}"
            );
        }
        assert_eq!(jittered(Duration::from_nanos(5)), Duration::from_nanos(5));
    }
}
