//! `lienthong source <source.toml>`: run one source connector until SIGINT/SIGTERM: the rows an
//! agency's application writes to its PostgreSQL outbox, published through the gateway
//! (`lienthong_source`, docs/sources.md). Serves `/metrics`, `/healthz` and `/readyz` on
//! `metrics_listen` if it is set.

use std::path::Path;

use lienthong_source::{SourceConfig, SourceError};
use lienthong_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::CliError;

/// Load the source's config from `path` (and `LIENTHONG_SOURCE__…` variables) and run it
/// until `shutdown`.
pub async fn run_file(path: &Path, shutdown: CancellationToken) -> Result<(), CliError> {
    let config = SourceConfig::load(path).map_err(cli_error)?;
    tracing::info!(?config, "source configuration");
    let telemetry = Telemetry::new("source").map_err(|e| CliError::Failed(e.to_string()))?;
    lienthong_source::start(config, &telemetry, &shutdown)
        .await
        .map_err(cli_error)?
        .wait()
        .await
        .map_err(cli_error)
}

/// A configuration mistake is a usage error (exit 2); anything else, a failure (exit 1).
fn cli_error(e: SourceError) -> CliError {
    if e.is_config() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.to_string())
    }
}
