//! `datapunk audit`: list the audit trail, or verify its hash chain.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use datapunk_daemon::database::Database;
use datapunk_store::Role;
use datapunk_store::audit::spool::Spool;
use datapunk_store::audit::{self, AnchorCheck, Filter, HeadAnchor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Exit;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only events newer than this: a duration ("2h", "7days") or a time
    /// ("2026-12-01T08:00:00Z", "2026-12-01").
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    since: Option<OffsetDateTime>,
    /// Only this action, e.g. daemon.start.
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Only events about this integration.
    #[arg(long, value_name = "NAME")]
    integration: Option<String>,
    /// At most this many of the newest events.
    #[arg(long, value_name = "N")]
    limit: Option<i64>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and compare its head with the anchor file; exit 1 at the first
    /// broken row.
    Verify,
}

pub(crate) async fn run(path: Option<&Path>, args: AuditArgs) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let db = Database::open_as(&config, Role::Reader).await?;
    let anchor = HeadAnchor::new(config.daemon.audit_anchor());
    let result = async {
        let client = db.store().client().await?;
        match args.command {
            Some(AuditCommand::Verify) => verify(&client, &anchor).await,
            None => list(&client, &args).await,
        }
    }
    .await;
    db.close().await;
    report_pending(&Spool::new(config.daemon.audit_spool())).await;
    result
}

/// Says on standard error how many events wait in the spool for the next append.
async fn report_pending(spool: &Spool) {
    if spool.is_empty() {
        return;
    }
    let entries = match spool.lock(Duration::from_secs(1)).await.and_then(|lock| lock.entries()) {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!("note: cannot read the pending-audit spool: {error}");
            return;
        }
    };
    if !entries.deferred.is_empty() {
        eprintln!(
            "note: {} events recorded while the database was unreachable wait in {}; the next \
             event recorded appends them",
            entries.deferred.len(),
            spool.path().display()
        );
    }
}

async fn list(client: &tokio_postgres::Client, args: &AuditArgs) -> anyhow::Result<()> {
    let filter = Filter {
        since: args.since,
        action: args.action.clone(),
        integration: args.integration.clone(),
        limit: args.limit,
    };
    let records = audit::list(client, &filter).await?;
    if args.json {
        for record in &records {
            println!("{}", serde_json::to_string(record)?);
        }
        return Ok(());
    }
    println!(
        "{:>6}  {:<20}  {:<27}  {:<8}  {:<7}  {:<12}  DETAILS",
        "ID", "TIME (UTC)", "ACTION", "OUTCOME", "BY", "INTEGRATION"
    );
    for r in &records {
        let at = r.at.format(&Rfc3339).unwrap_or_default();
        let at = at.get(..19).unwrap_or(&at);
        println!(
            "{:>6}  {:<20}  {:<27}  {:<8}  {:<7}  {:<12}  {}",
            r.id,
            at,
            r.action,
            r.outcome.as_str(),
            r.component,
            r.integration.as_deref().unwrap_or("-"),
            r.details,
        );
    }
    Ok(())
}

async fn verify(client: &tokio_postgres::Client, anchor: &HeadAnchor) -> anyhow::Result<()> {
    let verification = audit::verify(client).await?;
    if let Some(broken) = &verification.broken {
        println!("audit chain BROKEN at row #{}: {}", broken.id, broken.reason);
        println!(
            "rows before #{} are intact; this row and everything after it are suspect",
            broken.id
        );
        return Err(Exit::silent(1).into());
    }
    let anchor_check = anchor.check(client).await.context("failed to check the anchor file")?;
    let head = verification.head.map_or_else(
        || "empty".to_owned(),
        |(id, hash)| format!("head #{id} {}", hex::encode(&hash[..8])),
    );
    match anchor_check {
        AnchorCheck::Matches { id } => {
            println!(
                "audit chain intact: {} rows, {head}, anchor at #{id} matches",
                verification.rows
            );
            Ok(())
        }
        AnchorCheck::Missing => {
            println!(
                "audit chain intact: {} rows, {head}; no anchor file at {}",
                verification.rows,
                anchor.path().display()
            );
            Ok(())
        }
        AnchorCheck::RowMissing { id } => {
            println!(
                "audit chain BROKEN: the anchor file names row #{id}, which is gone (rows were deleted)"
            );
            Err(Exit::silent(1).into())
        }
        AnchorCheck::Mismatch { id } => {
            println!(
                "audit chain BROKEN at row #{id}: its hash differs from the anchor file (the chain was rebuilt)"
            );
            Err(Exit::silent(1).into())
        }
    }
}

fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(duration) = humantime::parse_duration(text) {
        let duration = time::Duration::try_from(duration).map_err(|e| e.to_string())?;
        return Ok(OffsetDateTime::now_utc() - duration);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        return Ok(date.midnight().assume_utc());
    }
    Err(format!(
        "`{text}` is neither a duration (2h, 7days) nor a time (2026-12-01T08:00:00Z, 2026-12-01)"
    ))
}
