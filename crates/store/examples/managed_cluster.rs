//! Exercises the whole store against a real managed cluster.
//!
//! ```text
//! cargo run -p datapunk-store --example managed_cluster -- DIR UNIX_USER [COMMAND]
//! ```
//!
//! COMMAND is one of:
//!
//! - `exercise` (the default): creates the cluster under DIR and starts it, initialises two
//!   databases, appends awkward audit events as `datapunk_app`, verifies the chain and its
//!   anchor, prints the roles' privileges, and leaves the cluster running;
//! - `verify`: verifies the chain and the anchor of database `datapunk`;
//! - `stop`: stops the cluster.
//!
//! Run it as an unprivileged user: PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use datapunk_store::audit::{self, Event, Filter, HeadAnchor, Outcome};
use datapunk_store::managed::{Cluster, ManagedOptions};
use datapunk_store::{ConnectOptions, Error, Role, Store, admin};
use serde_json::json;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(user)) = (args.first(), args.get(1)) else {
        eprintln!("usage: managed_cluster DIR UNIX_USER [exercise|verify|stop]");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let cluster = Cluster::new(ManagedOptions {
        data_dir: dir.join("data"),
        socket_dir: dir.join("socket"),
        bin_dir: None,
        os_user: user.clone(),
    });

    let result = match args.get(2).map_or("exercise", String::as_str) {
        "exercise" => exercise(&cluster, &dir).await,
        "verify" => verify(&cluster, &dir).await,
        "stop" => cluster.stop().await,
        other => {
            eprintln!("unknown command {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

async fn exercise(cluster: &Cluster, dir: &Path) -> Result<(), Error> {
    println!("postgres {}", cluster.version().await?);
    println!("initialize: created={}", cluster.initialize().await?);
    println!("initialize again: created={}", cluster.initialize().await?);
    println!("start: started={}", cluster.start().await?);
    println!("start again: started={}", cluster.start().await?);

    for db in ["datapunk", "datapunk_second"] {
        let report = admin::init(&cluster.admin_conninfo("postgres"), db).await?;
        println!("init {db}: {}", serde_json::to_string(&report).unwrap_or_default());
    }
    let report = admin::init(&cluster.admin_conninfo("datapunk"), "datapunk").await?;
    println!("init datapunk again: {}", serde_json::to_string(&report).unwrap_or_default());

    let mut options = ConnectOptions::new(cluster.conninfo(Role::App, "datapunk"));
    options.pool_size = 2;
    let store = Store::connect(&options).await?;
    println!("schema: {:?}", store.schema_state().await?);

    let client = store.client().await?;
    let anchor = anchor(dir);
    let awkward = [
        ("daemon.start", None, None, json!({})),
        (
            "sync.run",
            Some("google"),
            Some(""),
            json!({"rows": 3, "nested": {"b": [1, 2.50, null]}}),
        ),
        ("sync.run", Some(""), None, json!({"text": "line\nbreak \"quoted\" \\ tab\t", "ü": "€"})),
        ("audit.verify", None, Some("dataset:ä/1"), json!({"big": 12345678901234567890u64})),
    ];
    for (action, integration, dataset, details) in awkward {
        let event = Event {
            component: "example".into(),
            action: action.into(),
            integration: integration.map(Into::into),
            dataset: dataset.map(Into::into),
            outcome: Outcome::Success,
            details,
        };
        let appended = audit::append(&client, 1000, &event).await?;
        anchor.record(&appended).map_err(|e| Error::Io { context: "anchor".into(), source: e })?;
        println!("appended {} {}", appended.id, hex::encode(appended.hash));
    }

    for record in audit::list(&client, &Filter { limit: Some(2), ..Filter::default() }).await? {
        println!("record {}", serde_json::to_string(&record).unwrap_or_default());
    }
    verify(cluster, dir).await?;

    let reader = ConnectOptions::new(cluster.conninfo(Role::Reader, "datapunk"));
    let reader = Store::connect(&reader).await?.client().await?;
    let privileges = admin::privileges(&reader, "datapunk").await?;
    print!("{}", admin::PrivilegeTable(&privileges));
    Ok(())
}

async fn verify(cluster: &Cluster, dir: &Path) -> Result<(), Error> {
    cluster.start().await?;
    let options = ConnectOptions::new(cluster.conninfo(Role::Reader, "datapunk"));
    let client = Store::connect(&options).await?.client().await?;
    let verification = audit::verify(&client).await?;
    println!("verify: {}", serde_json::to_string(&verification).unwrap_or_default());
    println!("anchor: {:?}", anchor(dir).check(&client).await?);
    Ok(())
}

fn anchor(dir: &Path) -> HeadAnchor {
    HeadAnchor::new(dir.join("state").join("audit-head"))
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
