//! The one error type of this crate, shaped by what a caller decides next: retry later
//! ([`Error::is_retryable`]), fix a setting, ask an administrator, or give up.

use std::io;

use tokio_postgres::error::SqlState;

/// Why a database operation failed.
///
/// No variant carries a password: passwords are read from files straight into the driver's
/// configuration, whose `Debug` output redacts them, and connection strings that contain one
/// are refused before anything else happens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid. Permanent until the configuration changes.
    #[error("invalid setting `{key}`: {reason}")]
    Config {
        /// The configuration key at fault, such as `database.conninfo`.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The server could not be reached or is not accepting connections yet. Usually
    /// retryable.
    #[error("cannot reach PostgreSQL{}; check that the server is running", at(target))]
    Connect {
        /// The connection target without credentials (`host=... port=... user=...`), when
        /// known.
        target: Option<String>,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The TLS handshake failed: the server's certificate is not trusted or does not name
    /// the host. Permanent until the certificate or the TLS settings change.
    #[error(
        "TLS with PostgreSQL at `{target}` failed; check `database.tls_ca_file` and that the \
         server's certificate names the host in `database.conninfo`"
    )]
    Tls {
        /// The connection target without credentials.
        target: String,
        /// The handshake's failure.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The server refused to authenticate the role. Permanent until pg_hba.conf, the password
    /// file or the roles change.
    #[error(
        "PostgreSQL refused to let role `{user}` in; check pg_hba.conf (or pg_ident.conf), \
         the password file, and that `datapunk db init` has created the roles"
    )]
    Auth {
        /// The role that tried to connect.
        user: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The role lacks a privilege. Permanent: either the caller uses the wrong role or an
    /// administrator must act.
    #[error("permission denied: {reason}")]
    Permission {
        /// What was refused, and what to do about it when that is known.
        reason: String,
        /// The server's answer, when the server refused.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The database, the `datapunk` schema or one of its objects does not exist.
    #[error("the datapunk database is not set up; run `datapunk db init` as an administrator")]
    NotInitialized(#[source] tokio_postgres::Error),

    /// A PostgreSQL program exited unsuccessfully.
    #[error("`{program}` failed ({status}): {stderr_tail}")]
    Command {
        /// The program as it was run.
        program: String,
        /// Its exit status.
        status: String,
        /// The last lines it wrote to standard error (and, for `pg_ctl start`, of the server
        /// log).
        stderr_tail: String,
    },

    /// A PostgreSQL program could not be found.
    #[error(
        "cannot find the PostgreSQL program `{program}`; install PostgreSQL or set `database.pg_bin_dir`"
    )]
    BinaryNotFound {
        /// The program that was looked for.
        program: String,
    },

    /// The managed cluster was created by another major version of PostgreSQL.
    #[error(
        "the cluster in {data_dir} was created by PostgreSQL {cluster} but the programs are \
         PostgreSQL {programs}; upgrade the cluster with pg_upgrade or set `database.pg_bin_dir` \
         to PostgreSQL {cluster}'s programs"
    )]
    VersionMismatch {
        /// The data directory.
        data_dir: String,
        /// The major version in its `PG_VERSION` file.
        cluster: String,
        /// The major version of the programs found.
        programs: String,
    },

    /// A schema migration failed or the applied migrations disagree with this build.
    #[error("schema migration {version}: {reason}")]
    Migration {
        /// The migration's number.
        version: u32,
        /// What went wrong.
        reason: String,
        /// The server's answer, when the server refused.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// An audit event was refused before it reached the database.
    #[error("invalid audit event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },

    /// A sync stream moved to another round while a sync was writing to it: another sync
    /// restarted or completed the round. Nothing of the page was stored; read the stream's
    /// state again and continue from there.
    #[error(
        "the sync round of {integration}/{dataset} is no longer round {expected}; another sync \
         moved it on, so read the stream's state again"
    )]
    RoundChanged {
        /// The integration.
        integration: String,
        /// The dataset.
        dataset: String,
        /// The round the caller wrote for.
        expected: i64,
    },

    /// The integration was disconnected while a sync of it ran. Nothing of the page was
    /// stored; the sync must stop.
    #[error("{integration} was disconnected; its sync stops and stores nothing more")]
    Disconnected {
        /// The integration.
        integration: String,
    },

    /// Records handed to the store do not belong to the dataset they were written to. A bug in
    /// the caller: permanent.
    #[error("invalid records for dataset {dataset}: {reason}")]
    InvalidRecords {
        /// The dataset written to.
        dataset: String,
        /// What is wrong, without any value of a record.
        reason: String,
    },

    /// The database holds a value this build cannot read.
    #[error("unexpected data in the database: {reason}")]
    Data {
        /// Which value, and why.
        reason: String,
    },

    /// A query failed for a reason not covered by the other variants.
    #[error("database query failed")]
    Query(#[source] tokio_postgres::Error),

    /// A local file or directory operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path (`cannot write /var/lib/...`).
        context: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True when trying again later may succeed without anyone changing anything: the server
    /// was unreachable, starting up, shutting down or out of connection slots.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// Classifies a failure to open a connection to `target` as role `user`.
    pub(crate) fn connect(target: &str, user: &str, error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(code) if is_auth(code) => Self::Auth { user: user.to_owned(), source: error },
            Some(code) if is_unavailable(code) => {
                Self::Connect { target: Some(target.to_owned()), source: Box::new(error) }
            }
            Some(_) => Self::from(error),
            None if is_tls_failure(&error) => {
                Self::Tls { target: target.to_owned(), source: error }
            }
            // The driver's own authentication failures ("password missing", an unsupported
            // method) carry a cause that is not an I/O error; unreachable servers and
            // timeouts carry an I/O error or none.
            None if std::error::Error::source(&error).is_some() && !source_is_io(&error) => {
                Self::Auth { user: user.to_owned(), source: error }
            }
            None => Self::Connect { target: Some(target.to_owned()), source: Box::new(error) },
        }
    }

    /// An I/O failure while doing `context`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    /// A setting that is wrong.
    pub(crate) fn config(key: &str, reason: impl Into<String>) -> Self {
        Self::Config { key: key.to_owned(), reason: reason.into() }
    }
}

impl From<tokio_postgres::Error> for Error {
    /// Classifies a failure of a statement on an open connection.
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(code) = error.code() else {
            return if error.is_closed() || source_is_io(&error) {
                Self::Connect { target: None, source: Box::new(error) }
            } else {
                Self::Query(error)
            };
        };
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            let reason = "the database refused the statement for this role".to_owned();
            Self::Permission { reason, source: Some(error) }
        } else if is_missing(code) {
            Self::NotInitialized(error)
        } else if is_unavailable(code) {
            Self::Connect { target: None, source: Box::new(error) }
        } else {
            Self::Query(error)
        }
    }
}

fn at(target: &Option<String>) -> String {
    target.as_ref().map(|t| format!(" at `{t}`")).unwrap_or_default()
}

fn source_is_io(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|s| s.is::<io::Error>())
}

/// Whether a rustls error, possibly wrapped in an I/O error, is among the causes.
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let wrapped = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        if e.is::<rustls::Error>() || wrapped.is_some_and(|w| w.is::<rustls::Error>()) {
            return true;
        }
        cause = e.source();
    }
    false
}

fn is_auth(code: &SqlState) -> bool {
    code.code().starts_with("28")
}

/// Connection exceptions, and the server starting, stopping or out of slots.
fn is_unavailable(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

fn is_missing(code: &SqlState) -> bool {
    [
        SqlState::INVALID_CATALOG_NAME,
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_FUNCTION,
    ]
    .contains(code)
}
