//! The source connector's one error type, with transient failures (retried after a backoff)
//! told apart from permanent ones (the source stops and says why).

/// What can stop or pause a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configuration is wrong: fix it and start again.
    #[error("invalid source configuration: {0}")]
    Config(String),
    /// The agency's database did not answer, or lost the connection: retried.
    #[error("database: {0}")]
    Database(String),
    /// The database answered with something only a person can fix (a missing table or column,
    /// no privilege on the outbox).
    #[error("database refused: {0}")]
    DatabaseRefused(String),
    /// The gateway did not answer, or answered 429 or 5xx: retried.
    #[error("gateway: {0}")]
    Gateway(String),
    /// The gateway does not accept this agency's credentials (401).
    #[error("the gateway refused the source's credentials: {0}")]
    Unauthenticated(String),
    /// `/metrics` could not be served.
    #[error(transparent)]
    Telemetry(#[from] lienthong_telemetry::TelemetryError),
}

impl SourceError {
    /// Worth retrying after a backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Database(_) | SourceError::Gateway(_))
    }

    /// A mistake in the configuration, or in the database it names (a missing table or
    /// column, a privilege not granted): exit 2 rather than 1.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            SourceError::Config(_) | SourceError::DatabaseRefused(_)
        )
    }
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Class 42 (syntax error or access rule violation: an undefined table or column, no
        // privilege) and 22 (data exception) will not go away by waiting; anything else
        // (connection lost, server shutting down, serialization failure, I/O) may.
        let permanent = e
            .code()
            .map(|c| c.code().starts_with("42") || c.code().starts_with("22"))
            .unwrap_or(false);
        let text = describe(&e);
        if permanent {
            SourceError::DatabaseRefused(text)
        } else {
            SourceError::Database(text)
        }
    }
}

/// What PostgreSQL said, or the chain of causes of a client error ("error connecting to
/// server" alone does not say that the connection was refused).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => with_causes(e),
    }
}

/// An error and each of its causes, joined by ": ".
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
