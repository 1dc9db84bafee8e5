//! `datapunk backup prune`: deletes old backups by count and age, and never the newest one
//! that verifies.
//!
//! A backup verifies here when it matches its manifest and gpg reads it as encrypted to the
//! manifest's keys: what can be checked without a secret key, which the timer does not have.
//! If the newest backups are damaged, the newest good one is kept beyond the policy, and
//! when none verifies nothing is deleted at all.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use datapunk_config::Config;
use datapunk_store::audit::Outcome;
use serde_json::json;
use time::OffsetDateTime;

use super::Trail;
use super::files::{self, Entry};

/// What to keep.
#[derive(Debug)]
pub(crate) struct Policy {
    /// The newest this many.
    pub(crate) keep_last: usize,
    /// Every backup younger than this.
    pub(crate) keep_within: Option<Duration>,
}

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Last,
    Within,
    NewestVerified,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Last => "one of the newest kept by --keep-last",
            Self::Within => "younger than --keep-within",
            Self::NewestVerified => "the newest backup that verifies",
        }
    }
}

pub(super) async fn run(
    config: &Config,
    dir: Option<&Path>,
    policy: &Policy,
    dry_run: bool,
) -> anyhow::Result<()> {
    let dir = super::backup_dir(config, dir);
    let entries = files::list(&dir)?;
    if entries.is_empty() {
        // Nothing to keep and nothing to delete: not a failure, and nothing to record.
        println!("there is no backup in {}", dir.display());
        return Ok(());
    }
    let gpg = super::gpg_options(config);
    let verifies = |entry: &Entry| {
        files::check_against_manifest(&entry.path)
            .and_then(|manifest| super::check::check_packets(&gpg, &entry.path, &manifest))
    };
    let plan = plan(&entries, policy, OffsetDateTime::now_utc(), verifies);

    let (trail, _) = Trail::open(config).await?;
    let Some(plan) = plan else {
        let details = json!({ "dir": dir.display().to_string(), "deleted": [] });
        trail.record("backup.prune", Outcome::Failure, details).await;
        trail.close().await;
        anyhow::bail!(
            "no backup in {} verifies, so none is deleted; make a new one with `datapunk backup \
             create` and look at the others with `datapunk backup verify`",
            dir.display()
        );
    };

    // What is said is printed once the run is recorded: a reader that goes away (`| head`)
    // must not leave deletions unrecorded.
    let mut said = Vec::new();
    let mut deleted = Vec::new();
    let mut failed = None;
    for (entry, keep) in &plan {
        let name = entry.path.display();
        match keep {
            Some(reason) => said.push(format!("keep    {name} ({})", reason.as_str())),
            None if dry_run => said.push(format!("would delete {name}")),
            None => {
                let removed = std::fs::remove_file(&entry.path)
                    .with_context(|| format!("cannot delete {name}"))
                    .and_then(|()| match std::fs::remove_file(entry.manifest_path()) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(e).context("cannot delete its manifest"),
                    });
                match removed {
                    Ok(()) => {
                        said.push(format!("deleted {name}"));
                        deleted.push(entry.path.display().to_string());
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
        }
    }
    if !dry_run {
        let _ = files::sync_dir(&dir);
        let kept: Vec<String> = plan
            .iter()
            .filter(|(_, keep)| keep.is_some())
            .map(|(entry, _)| entry.path.display().to_string())
            .collect();
        let details = json!({
            "dir": dir.display().to_string(),
            "keep_last": policy.keep_last,
            "keep_within_secs": policy.keep_within.map(|d| d.as_secs()),
            "kept": kept,
            "deleted": deleted,
            "error": failed.as_ref().map(|e| format!("{e:#}")),
        });
        let outcome = if failed.is_none() { Outcome::Success } else { Outcome::Failure };
        trail.record("backup.prune", outcome, details).await;
    }
    trail.close().await;
    for line in said {
        println!("{line}");
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Decides, for each backup (newest first), whether it is kept and why; `None` when no backup
/// verifies and nothing may be deleted. `verifies` is asked from the newest down until one
/// passes.
fn plan<'a, E>(
    entries: &'a [Entry],
    policy: &Policy,
    now: OffsetDateTime,
    verifies: impl Fn(&Entry) -> Result<String, E>,
) -> Option<Vec<(&'a Entry, Option<Reason>)>> {
    let newest_verified = entries.iter().position(|entry| verifies(entry).is_ok())?;
    let plan = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let young = policy.keep_within.is_some_and(|within| now - entry.time < within);
            let keep = if index < policy.keep_last {
                Some(Reason::Last)
            } else if young {
                Some(Reason::Within)
            } else if index == newest_verified {
                Some(Reason::NewestVerified)
            } else {
                None
            };
            (entry, keep)
        })
        .collect();
    Some(plan)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use time::macros::datetime;

    use super::*;

    fn entries(days_old: &[i64], now: OffsetDateTime) -> Vec<Entry> {
        days_old
            .iter()
            .map(|days| Entry {
                path: PathBuf::from(format!("{days}")),
                time: now - time::Duration::days(*days),
            })
            .collect()
    }

    fn kept(plan: &[(&Entry, Option<Reason>)]) -> Vec<String> {
        plan.iter()
            .filter(|(_, keep)| keep.is_some())
            .map(|(e, _)| e.path.display().to_string())
            .collect()
    }

    #[test]
    fn the_newest_verified_backup_is_kept_beyond_the_policy() {
        let now = datetime!(2026-12-04 10:00 UTC);
        let all = entries(&[0, 1, 2, 3, 4], now);
        let policy = Policy { keep_last: 2, keep_within: None };
        let good = |e: &Entry| if e.path == Path::new("3") { Ok(String::new()) } else { Err(()) };

        let plan = plan(&all, &policy, now, good).expect("one verifies");
        assert_eq!(kept(&plan), ["0", "1", "3"]);
        assert_eq!(plan[3].1, Some(Reason::NewestVerified));

        let none = |_: &Entry| Err::<String, ()>(());
        assert!(super::plan(&all, &policy, now, none).is_none());

        let within =
            Policy { keep_last: 1, keep_within: Some(Duration::from_secs(3 * 86_400 - 1)) };
        let plan = super::plan(&all, &within, now, |_: &Entry| Ok::<_, ()>(String::new()))
            .expect("all verify");
        assert_eq!(kept(&plan), ["0", "1", "2"]);
    }
}
