//! The KPI engine under `lienthong up`: run when the config has a `[kpi]` section (it may be
//! empty, or only `LIENTHONG__KPI__…` variables). It takes Kafka's address, its options and
//! the schemas folder from the rest of the config unless the section sets its own, and serves
//! the process's `/metrics` on `kpi.listen`.

use lienthong_telemetry::say;
use std::path::Path;
use std::sync::Arc;

use lienthong_kpi::KpiError;
use lienthong_telemetry::Telemetry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CliError, Config};

/// The engine's task, if it runs.
pub type KpiTask = Option<JoinHandle<Result<(), KpiError>>>;

/// The `[kpi]` section completed from the rest of the config, or `None` without one.
pub fn engine_config(config: &Config) -> Option<lienthong_kpi::KpiConfig> {
    let mut kpi = config.kpi.clone()?;
    if kpi.kafka.is_none() {
        kpi.kafka = Some(config.kafka.clone());
    }
    if kpi.schemas_dir == Path::new("schemas") {
        kpi.schemas_dir = config.schemas_dir.clone();
    }
    Some(kpi)
}

/// Check the section and start the engine; configuration errors are usage errors (exit 2).
pub async fn start(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<KpiTask, CliError> {
    let Some(kpi) = engine_config(config) else {
        return Ok(None);
    };
    kpi.validate()
        .map_err(|e| CliError::Usage(format!("[kpi]: {e}")))?;
    let listener = tokio::net::TcpListener::bind(&kpi.listen)
        .await
        .map_err(|e| CliError::Failed(format!("kpi.listen {}: {e}", kpi.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    say!("KPI engine metrics on http://{local}/metrics");
    Ok(Some(tokio::spawn(lienthong_kpi::run_with_listener(
        kpi,
        listener,
        Arc::clone(telemetry),
        shutdown,
    ))))
}

/// Wait for the engine to stop (after `shutdown`), reporting how it ended.
pub async fn finish(task: KpiTask) -> Result<(), CliError> {
    let Some(task) = task else {
        return Ok(());
    };
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::Failed(format!("KPI engine: {e}"))),
        Err(e) => Err(CliError::Failed(format!("KPI engine task: {e}"))),
    }
}
