//! The daemon's round of its integrations, once per `sync.interval`.
//!
//! Each round reads the integrations from the database (so that one connected or
//! disconnected by the CLI is seen without a restart) and, for every one whose state lets it
//! run, obtains an access token through the [`Keeper`] (refreshing it when it is due) and asks
//! the provider which account it belongs to. That call proves the connection works, and it is
//! the place where dataset syncing joins.
//!
//! An integration in `needs_reauth`, `revoked` or `paused` is left alone: no token request
//! and no API call until the person acts. One whose provider is unavailable (429, 5xx, no
//! answer) is tried again after a backoff that starts at [`RETRY_FIRST`], doubles, honours
//! the provider's `Retry-After`, and never exceeds the interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datapunk_store::integrations::{self, State};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::service::Shared;
use crate::tokens::{Keeper, TokenFailure};

/// The first wait after a failure worth retrying.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(30);

/// The longest the loop sleeps before looking for integrations again.
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// When an integration is next due, and how many rounds in a row failed.
#[derive(Clone, Copy)]
struct Schedule {
    due: Instant,
    failures: u32,
}

/// Runs rounds until `stop` turns true.
pub(crate) async fn run(
    shared: Arc<Shared>,
    keeper: Arc<Keeper>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut schedule: HashMap<String, Schedule> = HashMap::new();
    loop {
        let names = match due_integrations(&shared, &mut schedule).await {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(%error, "could not read the integrations; trying again shortly");
                Vec::new()
            }
        };
        let checked = !names.is_empty();
        for name in names {
            let check = keeper.account(&name);
            let result = tokio::select! {
                result = check => result,
                _ = stop.changed() => return,
            };
            let entry = schedule
                .entry(name.clone())
                .or_insert(Schedule { due: Instant::now(), failures: 0 });
            match result {
                Ok(account) => {
                    tracing::debug!(
                        integration = name.as_str(),
                        account = account.id.as_str(),
                        "integration checked"
                    );
                    *entry = Schedule { due: Instant::now() + interval, failures: 0 };
                }
                Err(failure) if failure.is_retryable() => {
                    entry.failures = entry.failures.saturating_add(1);
                    let wait = backoff(entry.failures, &failure, interval);
                    tracing::warn!(integration = name.as_str(), error = %failure,
                        retry_in_secs = wait.as_secs(), "integration check failed; retrying later");
                    entry.due = Instant::now() + wait;
                }
                Err(failure) => {
                    // needs_reauth and the like: the state keeps it out of later rounds; the
                    // schedule only spaces out what a person must fix anyway.
                    tracing::warn!(integration = name.as_str(), error = %failure,
                        "integration check failed");
                    *entry = Schedule { due: Instant::now() + interval, failures: 0 };
                }
            }
        }
        if checked {
            shared.publish_status().await;
        }
        let next = schedule.values().map(|s| s.due).min();
        let wait = next
            .map_or(LOOK_AGAIN, |due| due.saturating_duration_since(Instant::now()))
            .min(LOOK_AGAIN)
            .min(interval);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The names of the integrations that may run and are due; forgets the ones that are gone.
async fn due_integrations(
    shared: &Shared,
    schedule: &mut HashMap<String, Schedule>,
) -> Result<Vec<String>, datapunk_store::Error> {
    let client = shared.database().store().client().await?;
    let all = integrations::list(&client).await?;
    schedule.retain(|name, _| all.iter().any(|i| &i.name == name));
    let now = Instant::now();
    Ok(all
        .into_iter()
        .filter(|i| matches!(i.state, State::Active | State::KeyringLocked | State::TokenUnsaved))
        .filter(|i| schedule.get(&i.name).is_none_or(|s| s.due <= now))
        .map(|i| i.name)
        .collect())
}

/// The wait after `failures` failures in a row.
fn backoff(failures: u32, failure: &TokenFailure, interval: Duration) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let asked = match failure {
        TokenFailure::Retry { retry_after: Some(after), .. } => *after,
        _ => Duration::ZERO,
    };
    doubled.max(asked).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_honours_retry_after_and_stays_within_the_interval() {
        let plain = TokenFailure::Retry { reason: String::new(), retry_after: None };
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, &plain, hour), Duration::from_secs(30));
        assert_eq!(backoff(3, &plain, hour), Duration::from_secs(120));
        assert_eq!(backoff(40, &plain, hour), hour);
        let asked = TokenFailure::Retry { reason: String::new(), retry_after: Some(hour) };
        assert_eq!(backoff(1, &asked, Duration::from_secs(900)), Duration::from_secs(900));
        assert_eq!(backoff(1, &asked, 2 * hour), hour);
    }
}
