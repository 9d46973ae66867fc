//! `lienthong source <source.toml>`: run one source connector until SIGINT/SIGTERM: the rows an
//! agency's application writes to its PostgreSQL outbox, published through the gateway
//! (`lienthong_source`, docs/sources.md). Serves `/metrics`, `/healthz` and `/readyz` on
//! `metrics_listen` if it is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lienthong_source::{SourceConfig, SourceError};
use lienthong_telemetry::component::Running;
use lienthong_telemetry::{Telemetry, say};
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

/// Load every source config `up` runs (a bad one stops `up` before anything runs).
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<SourceConfig>, CliError> {
    paths
        .iter()
        .map(|p| SourceConfig::load(p).map_err(cli_error))
        .collect()
}

/// Start the sources `up` runs, recording into its `telemetry`.
pub async fn start_all(
    configs: Vec<SourceConfig>,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Vec<Running<SourceError>>, CliError> {
    let mut running = Vec::new();
    for config in configs {
        let name = config.name.clone();
        let source = lienthong_source::start(config, telemetry, shutdown)
            .await
            .map_err(|e| cli_error(e).context(&format!("source {name}")))?;
        say!("source {name} running");
        running.push(source);
    }
    Ok(running)
}

/// A configuration mistake is a usage error (exit 2); anything else, a failure (exit 1).
fn cli_error(e: SourceError) -> CliError {
    if e.is_config() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.to_string())
    }
}
