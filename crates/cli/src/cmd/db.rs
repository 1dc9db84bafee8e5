//! `datapunk db`: set up and inspect the database and its roles.

mod password;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use datapunk_config::{Config, DatabaseMode};
use datapunk_daemon::database::{self, ClusterSession, Database};
use datapunk_store::{ConnectOptions, Role, admin};

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Create the roles, the database and the schema (once, as an administrator).
    ///
    /// In managed mode this creates and initialises the daemon's own cluster; the daemon also
    /// does it on its first start. In external mode it needs --admin-url.
    Init(AdminArgs),
    /// Apply pending schema migrations as datapunk_owner.
    Migrate(AdminArgs),
    /// Print each role's effective privileges.
    Roles(AdminArgs),
    /// Set a login role's password from a file, for servers that authenticate with SCRAM.
    ///
    /// Only the SCRAM-SHA-256 verifier is sent, never the password; a role whose password
    /// already matches is left alone. Needs an administrator, as `init` does.
    Password(password::PasswordArgs),
    /// Open psql on the Datapunk database as one of its roles.
    Shell {
        /// The role to connect as.
        #[arg(long, value_enum, default_value_t = ShellRole::Reader)]
        role: ShellRole,
        /// Arguments passed on to psql, after `--`.
        #[arg(last = true)]
        psql_args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// A libpq connection string for an administrator (a superuser, or a role with CREATEROLE
    /// and CREATEDB) of an external server. It must not hold a password.
    #[arg(long, value_name = "CONNINFO")]
    admin_url: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ShellRole {
    /// Read-only access to the data (the default).
    Reader,
    /// The owner: schema changes. Managed mode only.
    Owner,
    /// What the daemon uses.
    App,
    /// What backups use.
    Backup,
}

pub(crate) async fn run(path: Option<&Path>, command: DbCommand) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    match command {
        DbCommand::Init(args) => init(&config, &args).await,
        DbCommand::Migrate(args) => migrate(&config, &args).await,
        DbCommand::Roles(args) => roles(&config, &args).await,
        DbCommand::Password(args) => password::run(&config, &args).await,
        DbCommand::Shell { role, psql_args } => shell(&config, role, &psql_args).await,
    }
}

/// The administrator's connection string for an external server. It may not hold a
/// password: argv is visible to every user of the machine.
fn admin_url<'a>(config: &Config, args: &'a AdminArgs, verb: &str) -> anyhow::Result<&'a str> {
    let Some(url) = &args.admin_url else {
        anyhow::bail!(
            "`datapunk db {verb}` on an external server needs --admin-url CONNINFO \
             (a superuser's connection string, without a password)"
        );
    };
    if let DatabaseMode::Managed { .. } = config.database.mode {
        anyhow::bail!("--admin-url is for external mode; managed mode administers its own cluster");
    }
    Ok(url)
}

/// A one-off administrator connection to the Datapunk database itself.
async fn admin_client(conninfo: &str, dbname: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut options = ConnectOptions::new(conninfo);
    options.dbname = Some(dbname.to_owned());
    Ok(options.connect_once().await?)
}

/// Runs `work` with the administrator's connection string: the managed cluster's (started
/// for the purpose and stopped after, if it was not running) or `--admin-url`.
async fn with_admin<T>(
    config: &Config,
    args: &AdminArgs,
    verb: &str,
    work: impl AsyncFnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = &config.database.name;
    match database::managed_cluster(config)? {
        Some(cluster) if args.admin_url.is_none() => {
            let session = ClusterSession::for_command(config, cluster, verb == "init").await?;
            let result = work(&session.cluster().admin_conninfo(name)).await;
            session.close().await;
            result
        }
        _ => work(admin_url(config, args, verb)?).await,
    }
}

async fn init(config: &Config, args: &AdminArgs) -> anyhow::Result<()> {
    let auditor = super::auditor(config)?;
    let name = &config.database.name;
    let report = with_admin(config, args, "init", async |conninfo| {
        let report = admin::init(conninfo, name).await?;
        let client = admin_client(conninfo, name).await?;
        for (event, message) in database::init_events("cli", &report) {
            auditor.record(&client, &event, message).await?;
        }
        Ok(report)
    })
    .await?;

    println!("database {} is initialised", report.database);
    if report.created_database {
        println!("  created the database");
    }
    if !report.created_roles.is_empty() {
        let roles: Vec<&str> = report.created_roles.iter().map(|r| r.name()).collect();
        println!("  created roles: {}", roles.join(", "));
    }
    for (version, name) in &report.migrations.applied {
        println!("  applied migration {version:04} {name}");
    }
    println!("  schema at version {}", report.migrations.current);
    Ok(())
}

async fn migrate(config: &Config, args: &AdminArgs) -> anyhow::Result<()> {
    let auditor = super::auditor(config)?;
    let name = &config.database.name;
    let report = with_admin(config, args, "migrate", async |conninfo| {
        let report = admin::migrate(conninfo, name).await?;
        if let Some((event, message)) = database::migrate_event("cli", &report) {
            let client = admin_client(conninfo, name).await?;
            auditor.record(&client, &event, message).await?;
        }
        Ok(report)
    })
    .await?;
    for (version, name) in &report.applied {
        println!("applied migration {version:04} {name}");
    }
    println!("schema at version {}", report.current);
    Ok(())
}

async fn roles(config: &Config, args: &AdminArgs) -> anyhow::Result<()> {
    let name = &config.database.name;
    let table = if args.admin_url.is_none()
        && !matches!(config.database.mode, DatabaseMode::Managed { .. })
    {
        // Any role may read the catalogue: the reader is enough for an external server.
        let db = Database::open_as(config, Role::Reader).await?;
        let result = async {
            Ok::<_, anyhow::Error>(admin::privileges(&*db.store().client().await?, name).await?)
        }
        .await;
        db.close().await;
        result?
    } else {
        with_admin(config, args, "roles", async |conninfo| {
            Ok(admin::privileges(&admin_client(conninfo, name).await?, name).await?)
        })
        .await?
    };
    print!("{}", admin::PrivilegeTable(&table));
    Ok(())
}

async fn shell(config: &Config, role: ShellRole, psql_args: &[String]) -> anyhow::Result<()> {
    let name = &config.database.name;
    let mut psql = Command::new("psql");
    match (&config.database.mode, database::managed_cluster(config)?) {
        (DatabaseMode::Managed { .. }, Some(cluster)) => {
            // psql replaces this process, so a cluster started here stays up after it: the
            // next datapunkd adopts it and stops it when it stops.
            let session = ClusterSession::for_command(config, cluster, false).await?;
            let cluster = session.cluster();
            let conninfo = match role {
                ShellRole::Owner => {
                    psql.env("PGOPTIONS", "-c role=datapunk_owner");
                    cluster.admin_conninfo(name)
                }
                other => cluster.conninfo(shell_role(other), name),
            };
            psql.arg(conninfo);
        }
        (DatabaseMode::External { conninfo, password, tls }, _) => {
            let role = match role {
                ShellRole::Owner => anyhow::bail!(
                    "the owner role cannot log in; on an external server connect as an \
                     administrator and `SET ROLE datapunk_owner`"
                ),
                other => shell_role(other),
            };
            psql.arg(external_conninfo(conninfo, tls, role));
            if password.is_some() {
                eprintln!("datapunk: psql will ask for the password of {}", role.name());
            }
        }
        (DatabaseMode::Managed { .. }, None) => {
            anyhow::bail!("managed mode without a cluster: the configuration is inconsistent")
        }
    }
    psql.args(["--set", "ON_ERROR_STOP=1"]).args(psql_args);
    let error = psql.exec();
    Err(error).context("failed to run psql (install the PostgreSQL client)")
}

fn shell_role(role: ShellRole) -> Role {
    match role {
        ShellRole::Reader | ShellRole::Owner => Role::Reader,
        ShellRole::App => Role::App,
        ShellRole::Backup => Role::Backup,
    }
}

/// The libpq connection string of `role` on an external server: the configured one (the app
/// role's) with the user replaced and TLS as strict as the daemon's.
pub(crate) fn external_conninfo(conninfo: &str, tls: &datapunk_config::Tls, role: Role) -> String {
    let mut conninfo = with_param(conninfo, "user", role.name());
    if tls.enabled {
        // As strict as the daemon: libpq's default `prefer` would accept a downgrade.
        conninfo = with_param(&conninfo, "sslmode", "verify-full");
        if let Some(ca) = &tls.ca_file {
            conninfo = with_param(&conninfo, "sslrootcert", &ca.display().to_string());
        }
    }
    conninfo
}

/// The configured connection string (the app role's) with `key` set to `value`. libpq takes
/// the last value of a repeated keyword, and a URI's query parameters after its other parts.
pub(crate) fn with_param(conninfo: &str, key: &str, value: &str) -> String {
    let is_uri = conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://");
    let quoted = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    match (is_uri, conninfo.contains('?')) {
        (true, true) => format!("{conninfo}&{key}={value}"),
        (true, false) => format!("{conninfo}?{key}={value}"),
        (false, _) => format!("{conninfo} {key}={quoted}"),
    }
}
