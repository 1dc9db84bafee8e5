//! `datapunk backup report-failure`: the audit row of a backup unit that failed, for the
//! `OnFailure=` unit (`systemd/datapunk-backup-failed.service`).
//!
//! `datapunk backup create` audits its own failures, but a unit can fail before it runs (a
//! path in `ReadWritePaths=` missing, `ExecStartPre=` failing, a start limit hit) or be killed
//! while it runs. systemd starts the `OnFailure=` unit in each case, and tells it how the
//! failed unit ended in `$MONITOR_SERVICE_RESULT`, `$MONITOR_EXIT_CODE`,
//! `$MONITOR_EXIT_STATUS` and `$MONITOR_INVOCATION_ID` (systemd 251 and later; see
//! systemd.exec(5), "Environment Variables Set or Propagated by the Service Manager"). This
//! records them as a `backup.failed` row, or keeps it in the spool while the database cannot
//! be reached.

use datapunk_config::Config;
use datapunk_daemon::audit::event;
use datapunk_store::audit::Outcome;
use serde_json::json;

use super::{Kept, Trail};

/// The longest unit name systemd accepts (`UNIT_NAME_MAX`).
const UNIT_NAME_MAX: usize = 255;

/// How the failed unit ended, as systemd reports it.
#[derive(Debug, clap::Args)]
pub(crate) struct Monitor {
    /// How the unit ended, such as `exit-code`, `timeout` or `start-limit-hit`.
    #[arg(long, value_name = "RESULT", env = "MONITOR_SERVICE_RESULT")]
    result: Option<String>,
    /// How its main process ended: `exited`, `killed` or `dumped`.
    #[arg(long, value_name = "CODE", env = "MONITOR_EXIT_CODE")]
    exit_code: Option<String>,
    /// Its exit status or signal, such as `1` or `TERM`.
    #[arg(long, value_name = "STATUS", env = "MONITOR_EXIT_STATUS")]
    exit_status: Option<String>,
    /// The failed run's invocation id, to find its journal with `journalctl
    /// _SYSTEMD_INVOCATION_ID=ID`.
    #[arg(long, value_name = "ID", env = "MONITOR_INVOCATION_ID")]
    invocation_id: Option<String>,
}

pub(super) async fn run(config: &Config, unit: &str, monitor: &Monitor) -> anyhow::Result<()> {
    check_unit(unit)?;
    let details = json!({
        "unit": unit,
        "result": token("--result", monitor.result.as_deref())?,
        "exit_code": token("--exit-code", monitor.exit_code.as_deref())?,
        "exit_status": token("--exit-status", monitor.exit_status.as_deref())?,
        "invocation_id": token("--invocation-id", monitor.invocation_id.as_deref())?,
    });

    let (trail, _) = Trail::open(config).await?;
    let event = event("cli", "backup.failed", Outcome::Failure, details);
    let kept = trail.record_event(&event, "backup unit failed").await;
    trail.close().await;

    match kept {
        Kept::Appended => {
            println!("recorded backup.failed for {unit} in the audit trail");
            Ok(())
        }
        Kept::Deferred => Ok(()),
        Kept::JournalOnly => {
            anyhow::bail!("backup.failed for {unit} reached the journal only, not the audit trail")
        }
    }
}

/// Refuses what is not a systemd unit name (systemd.unit(5): letters, digits and `:-_.\@`,
/// with a type suffix), so that the row names a unit and nothing else.
fn check_unit(unit: &str) -> anyhow::Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
    let typed = unit.rsplit_once('.').is_some_and(|(name, kind)| {
        !name.is_empty() && !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase())
    });
    if unit.len() > UNIT_NAME_MAX || !unit.chars().all(allowed) || !typed {
        anyhow::bail!("{unit:?} is not a systemd unit name (such as datapunk-backup.service)");
    }
    Ok(())
}

/// A value systemd set, checked to be one short word; an empty one counts as unset.
fn token(flag: &str, value: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(value) = value.filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if value.len() > 64 || !value.chars().all(allowed) {
        anyhow::bail!("{flag} {value:?} is not one word of letters, digits and -_.:");
    }
    Ok(Some(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_checked() {
        for good in ["datapunk-backup.service", "datapunk-backup@home.service", "a.timer"] {
            assert!(check_unit(good).is_ok(), "{good}");
        }
        for bad in ["", "datapunk-backup", ".service", "a b.service", "x.service\n", "a.Service"] {
            assert!(check_unit(bad).is_err(), "{bad:?}");
        }
        assert!(check_unit(&format!("{}.service", "a".repeat(250))).is_err());
    }

    #[test]
    fn systemd_values_are_single_words_and_empty_is_unset() {
        assert_eq!(token("--result", Some("exit-code")).expect("a word"), Some("exit-code".into()));
        assert_eq!(token("--result", Some("")).expect("empty is unset"), None);
        assert_eq!(token("--result", None).expect("unset"), None);
        assert!(token("--result", Some("exit code")).is_err());
        assert!(token("--result", Some("{\"x\":1}")).is_err());
    }
}
