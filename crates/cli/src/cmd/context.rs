//! The context of the commands that change secrets: the vault, the database and the auditor.

use anyhow::Context as _;
use datapunk_config::Config;
use datapunk_daemon::audit::Auditor;
use datapunk_daemon::database::Database;
use datapunk_store::Role;
use datapunk_store::audit::Event;
use datapunk_vault::backend::Vault;

/// What the commands that change secrets work with: the vault, the database as
/// `datapunk_app`, and the auditor.
pub(crate) struct Context {
    pub(crate) vault: std::sync::Arc<Vault>,
    pub(crate) database: Database,
    pub(crate) auditor: Auditor,
}

impl Context {
    pub(crate) async fn open(config: &Config) -> anyhow::Result<Self> {
        let auditor = super::auditor(config)?;
        let database = Database::open_as(config, Role::App).await?;
        match datapunk_daemon::vault::open(config, &database) {
            Ok(vault) => Ok(Self { vault: std::sync::Arc::new(vault), database, auditor }),
            Err(error) => {
                database.close().await;
                Err(error)
            }
        }
    }

    /// Checks that an event can be recorded, before a change that must be: the database is
    /// reachable and the audit chain still matches its anchor.
    pub(crate) async fn preflight(&self) -> anyhow::Result<()> {
        let client = self.database.store().client().await?;
        self.auditor
            .check_anchor(&client)
            .await
            .context("the audit trail cannot be written, so nothing was changed")?;
        Ok(())
    }

    /// Records `event` for something about to happen, which must not happen when this fails.
    pub(crate) async fn record_first(&self, event: &Event, message: &str) -> anyhow::Result<()> {
        let client = self.database.store().client().await?;
        self.auditor.record(&client, event, message).await?;
        Ok(())
    }

    /// Records `event` for something that happened. When the database cannot be reached the
    /// event waits in the spool for the next append; when it fails otherwise, the event still
    /// goes to journald, and the error is returned.
    pub(crate) async fn record(&self, event: &Event, message: &str) -> anyhow::Result<()> {
        let (error, unreachable) = match self.database.store().client().await {
            Ok(client) => match self.auditor.record(&client, event, message).await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    let unreachable = error.is_unreachable();
                    (anyhow::Error::from(error), unreachable)
                }
            },
            Err(error) => {
                let unreachable = error.is_retryable();
                (error.into(), unreachable)
            }
        };
        if super::keep(&self.auditor, event, message, unreachable).await {
            return Ok(());
        }
        Err(error)
    }
}

impl datapunk_daemon::tokens::Recorder for Context {
    fn record<'a>(
        &'a self,
        event: Event,
        message: &'static str,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        // A failure is in the journal already (see `record`); the refresh it describes went on.
        Box::pin(async move {
            if let Err(error) = Context::record(self, &event, message).await {
                eprintln!(
                    "warning: could not record {} in the audit trail: {error:#}",
                    event.action
                );
            }
        })
    }
}
