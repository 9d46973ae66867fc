//! `lienthong connect <config.toml>`: run one sink connector until SIGINT/SIGTERM (and `up`'s
//! `connectors = [...]`: several, beside the other components).
//!
//! The connector's TOML names its store (`[store] kind = "postgres"` or `"sqlite"`); this
//! module opens that store (waiting, with backoff, while it is unreachable), serves `/metrics`
//! if asked, and hands both to the runtime's loop (`lienthong_connect::run`).

use lienthong_telemetry::say;
use std::path::Path;
use std::sync::Arc;

use lienthong_connect::{ConnectError, ConnectorConfig};
use lienthong_contract::Catalog;
use lienthong_store::AnyStore;
use lienthong_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::CliError;

/// Load the connector's config from `path` and run it.
pub async fn run_file(path: &Path, shutdown: CancellationToken) -> Result<(), CliError> {
    let config = ConnectorConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    tracing::info!(?config, "connector configuration");
    run(config, shutdown).await.map_err(|e| match e {
        ConnectError::Config(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    })
}

/// Run a connector in this process until `shutdown` (used by the binary and by tests).
pub async fn run(config: ConnectorConfig, shutdown: CancellationToken) -> Result<(), ConnectError> {
    run_with(config, Telemetry::new("connector")?, shutdown).await
}

/// Run a connector recording into `telemetry` (the process's one registry, under `up`).
pub async fn run_with(
    config: ConnectorConfig,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let catalog = Arc::new(Catalog::load(&config.schemas.dir)?);
    if let Some(listen) = &config.metrics_listen {
        let addr = tokio::net::lookup_host(listen.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                ConnectError::Config(format!(
                    "metrics_listen {listen:?}: not an address (host:port)"
                ))
            })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ConnectError::Listen {
                addr: listen.clone(),
                source,
            })?;
        let router = lienthong_telemetry::router(telemetry.clone());
        let stop = shutdown.clone();
        tracing::info!(address = %listen, "serving /metrics");
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
    }
    let Some(sink) = AnyStore::open_retrying(&config.store, &config.retry, &shutdown).await? else {
        return Ok(());
    };
    lienthong_connect::run(config, catalog, sink, telemetry, shutdown).await
}

/// The connectors `up` runs.
pub struct Running {
    tasks: Vec<(String, tokio::task::JoinHandle<Result<(), ConnectError>>)>,
}

/// Load every connector config (a bad one stops `up` before anything runs).
pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<ConnectorConfig>, CliError> {
    paths
        .iter()
        .map(|p| ConnectorConfig::load(p).map_err(|e| CliError::Usage(e.to_string())))
        .collect()
}

/// Start the connectors. A connector that stops with an error stops the whole process
/// (`shutdown`), so a supervisor restarts it rather than leaving a store silently behind.
pub fn start_all(
    configs: Vec<ConnectorConfig>,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Running {
    let tasks = configs
        .into_iter()
        .map(|config| {
            let name = config.name.clone();
            say!("connector {name} running");
            let stop = shutdown.clone();
            let telemetry = Arc::clone(telemetry);
            let task = tokio::spawn(async move {
                let result = run_with(config, telemetry, stop.child_token()).await;
                if result.is_err() {
                    stop.cancel();
                }
                result
            });
            (name, task)
        })
        .collect();
    Running { tasks }
}

impl Running {
    /// Wait for every connector to stop; the first error, by connector name.
    pub async fn finish(self) -> Result<(), CliError> {
        let mut first = None;
        for (name, task) in self.tasks {
            let failure = match task.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => format!("connector {name}: {e}"),
                Err(e) => format!("connector {name}: the task failed: {e}"),
            };
            tracing::error!("{failure}");
            first.get_or_insert(failure);
        }
        match first {
            None => Ok(()),
            Some(f) => Err(CliError::Failed(f)),
        }
    }
}
