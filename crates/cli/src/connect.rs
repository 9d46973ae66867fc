//! `lienthong connect <config.toml>`: run one sink connector until SIGINT/SIGTERM (and `up`'s
//! `connectors = [...]`: several, beside the other components).
//!
//! The connector's TOML names its store (`[store] kind = "postgres"` or `"sqlite"`); this
//! module hands the runtime (`lienthong_connect::start`) the one store opener
//! (`AnyStore::open_retrying`, which waits with backoff while the store is unreachable; the
//! runtime calls it twice when the connector checks its store on a schedule, `[verify]`). The
//! runtime serves `/metrics`, `/healthz` and `/readyz` on `metrics_listen` if it is set.

use lienthong_telemetry::say;
use std::path::Path;
use std::sync::Arc;

use lienthong_connect::{ConnectError, ConnectorConfig};
use lienthong_store::AnyStore;
use lienthong_telemetry::Telemetry;
use lienthong_telemetry::component::Running;
use tokio_util::sync::CancellationToken;

use crate::CliError;

/// Load the connector's config from `path` and run it until `shutdown`.
pub async fn run_file(path: &Path, shutdown: CancellationToken) -> Result<(), CliError> {
    let config = ConnectorConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    tracing::info!(?config, "connector configuration");
    run(config, shutdown).await.map_err(cli_error)
}

/// Run a connector in this process until `shutdown` (used by the binary, `replay` and tests).
pub async fn run(config: ConnectorConfig, shutdown: CancellationToken) -> Result<(), ConnectError> {
    let telemetry = Telemetry::new("connector")?;
    start(config, &telemetry, &shutdown).await?.wait().await
}

/// Start a connector recording into `telemetry` (the process's one registry, under `up`).
pub async fn start(
    mut config: ConnectorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Running<ConnectError>, ConnectError> {
    with_keys(&mut config)?;
    let store = config.store.clone();
    let retry = config.retry.clone();
    lienthong_connect::start(config, telemetry, shutdown, move |stop| {
        let (store, retry) = (store.clone(), retry.clone());
        async move { Ok(AnyStore::open_retrying(&store, &retry, &stop).await?) }
    })
    .await
}

/// Outside `up` (which hands its own key service), a connector that names the key service
/// asks it over HTTP for the keys its agency's grants allow.
pub fn with_keys(config: &mut ConnectorConfig) -> Result<(), ConnectError> {
    if config.keys.0.is_none()
        && let Some(who) = &config.privacy
        && let Some(url) = &who.key_service_url
    {
        let keys = lienthong_privacy::HttpKeys::new(url, who.credentials()?, who.purpose.clone())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        config.keys = lienthong_privacy::KeySource(Some(Arc::new(keys)));
    }
    Ok(())
}

/// A configuration mistake is a usage error (exit 2); anything else, a failure (exit 1).
pub fn cli_error(e: ConnectError) -> CliError {
    if e.is_config() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.to_string())
    }
}

/// Load every connector config (a bad one stops `up` before anything runs).
pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<ConnectorConfig>, CliError> {
    paths
        .iter()
        .map(|p| ConnectorConfig::load(p).map_err(|e| CliError::Usage(e.to_string())))
        .collect()
}

/// Start the connectors `up` runs.
pub async fn start_all(
    configs: Vec<ConnectorConfig>,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Vec<Running<ConnectError>>, CliError> {
    let mut running = Vec::new();
    for config in configs {
        let name = config.name.clone();
        let connector = start(config, telemetry, shutdown)
            .await
            .map_err(|e| cli_error(e).context(&format!("connector {name}")))?;
        say!("connector {name} running");
        running.push(connector);
    }
    Ok(running)
}
