//! The source connector's configuration: defaults, then the TOML file, then
//! `LIENTHONG_SOURCE__SECTION__KEY` environment variables (e.g.
//! `LIENTHONG_SOURCE__DATABASE__URL`, so that a password need not sit in the file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use lienthong_bus::RetryConfig;
use lienthong_registry::client::Credentials;
use serde::Deserialize;

use crate::error::SourceError;

/// Environment variables under this prefix override the file.
pub const ENV_PREFIX: &str = "LIENTHONG_SOURCE__";

/// One source connector.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source's name: its metrics' `source` label and its log's name.
    pub name: String,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`host:port`).
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// The agency's database and its outbox.
    pub database: DatabaseConfig,
    /// Where the rows go.
    pub gateway: GatewayTarget,
    /// How many rows at a time, and how often to look without a notification.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Backoff while the database or the gateway does not answer.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db` (or the key=value form).
    pub url: String,
    /// The outbox table, optionally schema-qualified (`app.lienthong_outbox`).
    #[serde(default = "default_outbox_table")]
    pub outbox_table: String,
    /// Where refused rows go, with the refusal.
    #[serde(default = "default_dead_letter_table")]
    pub dead_letter_table: String,
    /// Create the outbox (with its notify trigger) and the dead-letter table when they are
    /// missing. Turn off when the agency's migrations own them.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// The channel the outbox's trigger notifies on commit.
    #[serde(default = "default_channel")]
    pub channel: String,
}

/// `[gateway]`: the city's gateway, and the agency the source publishes as.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTarget {
    /// The gateway's base URL (`http://gateway:8080`).
    pub url: String,
    /// The agency's code, sent as the HTTP Basic user with the token.
    pub agency: String,
    /// The agency's token, inline (prefer `token_file` or the environment).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the agency's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How long one request may take before it counts as a transient failure (and is sent
    /// again: the gateway's idempotency makes that safe).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

/// `[batch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Rows read from the outbox, and sent in one gateway request, at most (the gateway's
    /// `max_batch_events`, 1000 by default, must not be lower).
    pub max_rows: usize,
    /// Without a notification, look at the outbox this often.
    pub poll_interval_ms: u64,
    /// Requests sent at once, each for other aggregates (1: one at a time). Rows of one
    /// aggregate always go in order, one request after the other.
    pub in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 500,
            poll_interval_ms: 1000,
            in_flight: 4,
        }
    }
}

fn default_outbox_table() -> String {
    "lienthong_outbox".into()
}
fn default_dead_letter_table() -> String {
    "lienthong_outbox_dead".into()
}
fn default_channel() -> String {
    "lienthong_outbox".into()
}
fn default_true() -> bool {
    true
}
fn default_request_timeout_secs() -> u64 {
    30
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("name", &self.name)
            .field("metrics_listen", &self.metrics_listen)
            .field("outbox_table", &self.database.outbox_table)
            .field("dead_letter_table", &self.database.dead_letter_table)
            .field("create_tables", &self.database.create_tables)
            .field("gateway", &self.gateway.url)
            .field("agency", &self.gateway.agency)
            .field("batch", &self.batch)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl SourceConfig {
    /// Read the file, let the environment override it, and check the result.
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        if !path.is_file() {
            return Err(SourceError::Config(format!(
                "{}: no such file",
                path.display()
            )));
        }
        Self::extract(
            Figment::new().merge(Toml::file(path)),
            &path.display().to_string(),
        )
    }

    /// Parse a TOML text (no environment): for tests.
    pub fn from_toml(text: &str) -> Result<Self, SourceError> {
        let config: SourceConfig = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| SourceError::Config(e.to_string()))?;
        config.validate().map_err(SourceError::Config)?;
        Ok(config)
    }

    fn extract(figment: Figment, what: &str) -> Result<Self, SourceError> {
        let config: SourceConfig = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|e| SourceError::Config(format!("{what}: {e}")))?;
        config
            .validate()
            .map_err(|e| SourceError::Config(format!("{what}: {e}")))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return Err(format!("invalid source name {:?}", self.name));
        }
        let d = &self.database;
        table_name(&d.outbox_table).map_err(|e| format!("database.outbox_table: {e}"))?;
        table_name(&d.dead_letter_table).map_err(|e| format!("database.dead_letter_table: {e}"))?;
        if d.outbox_table == d.dead_letter_table {
            return Err("database.dead_letter_table must differ from outbox_table".into());
        }
        identifier(&d.channel).map_err(|e| format!("database.channel: {e}"))?;
        d.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("database.url: {e}"))?;
        let g = &self.gateway;
        reqwest::Url::parse(&g.url)
            .map_err(|e| format!("gateway.url {:?}: {e}", g.url))
            .and_then(|u| match u.scheme() {
                "http" | "https" => Ok(()),
                other => Err(format!("gateway.url: scheme {other:?} is not http(s)")),
            })?;
        if g.agency.trim().is_empty() {
            return Err("gateway.agency is empty".into());
        }
        self.credentials().map_err(|e| e.to_string())?;
        if g.request_timeout_secs == 0 {
            return Err("gateway.request_timeout_secs must be at least 1".into());
        }
        if self.batch.max_rows == 0 {
            return Err("batch.max_rows must be at least 1".into());
        }
        if !(1..=64).contains(&self.batch.in_flight) {
            return Err("batch.in_flight must be between 1 and 64".into());
        }
        if self.batch.poll_interval_ms == 0 {
            return Err("batch.poll_interval_ms must be at least 1".into());
        }
        Ok(())
    }

    /// The agency's credential for the gateway (HTTP Basic: agency code and token).
    pub fn credentials(&self) -> Result<Credentials, SourceError> {
        let g = &self.gateway;
        if g.token.is_none() && g.token_file.is_none() {
            return Err(SourceError::Config(
                "gateway: set the agency's token (token_file, token, or LIENTHONG_SOURCE__GATEWAY__TOKEN)"
                    .into(),
            ));
        }
        Credentials::from_config(Some(&g.agency), g.token.as_deref(), g.token_file.as_deref())
            .map_err(|e| SourceError::Config(format!("gateway: {e}")))
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.batch.poll_interval_ms)
    }
}

/// A plain SQL identifier: what the source will put, quoted, into its statements.
fn identifier(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a plain identifier (lower-case letters, digits and _, at most 63)"
        ))
    }
}

/// A table name, optionally schema-qualified, as the quoted SQL the statements use.
pub fn table_name(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        return Err(format!("{s:?}: at most schema.table"));
    }
    for p in &parts {
        identifier(p)?;
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "stp-outbox"
[database]
url = "postgres://stp@127.0.0.1:5432/stp"
[gateway]
url = "http://127.0.0.1:8080"
agency = "STP"
token = "secret"
"#;

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c = SourceConfig::from_toml(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.database.outbox_table, "lienthong_outbox");
        assert_eq!(c.database.dead_letter_table, "lienthong_outbox_dead");
        assert!(c.database.create_tables);
        assert_eq!(c.batch.max_rows, 500);
        assert!(
            !format!("{c:?}").contains("secret"),
            "the token is not logged"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (GOOD.replace("stp-outbox", ""), "invalid source name"),
            (
                GOOD.replace("[gateway]", "[database2]\n[gateway]"),
                "unknown field",
            ),
            (
                GOOD.replace("url = \"http://127.0.0.1:8080\"", "url = \"ftp://x\""),
                "not http(s)",
            ),
            (
                GOOD.replace("token = \"secret\"", ""),
                "set the agency's token",
            ),
            (
                GOOD.replace("[gateway]", "outbox_table = \"x; drop table y\"\n[gateway]"),
                "not a plain identifier",
            ),
            (
                GOOD.replace("[gateway]", "outbox_table = \"a.b.c\"\n[gateway]"),
                "at most schema.table",
            ),
            (
                GOOD.replace(
                    "[gateway]",
                    "dead_letter_table = \"lienthong_outbox\"\n[gateway]",
                ),
                "must differ",
            ),
            (
                format!("{GOOD}[batch]\nmax_rows = 0\n"),
                "max_rows must be at least 1",
            ),
        ];
        for (text, expected) in cases {
            let e = SourceConfig::from_toml(&text).map(|_| ()).unwrap_err();
            assert!(e.is_config(), "{e}");
            assert!(
                e.to_string().contains(expected),
                "{e} should name {expected:?}"
            );
        }
    }

    #[test]
    fn table_names_are_quoted_per_part() {
        assert_eq!(table_name("app.outbox"), Ok("\"app\".\"outbox\"".into()));
        assert!(table_name("Outbox").is_err());
        assert!(table_name("").is_err());
    }
}
