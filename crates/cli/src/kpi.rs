//! The KPI engine under `lienthong up`: run when the config has a `[kpi]` section (it may be
//! empty, or only `LIENTHONG__KPI__…` variables). It takes Kafka's address, its options and
//! the schemas folder from the rest of the config unless the section sets its own, and serves
//! the process's `/metrics` (with `/healthz`, `/readyz`) on `kpi.listen`.

use lienthong_telemetry::say;
use std::path::Path;
use std::sync::Arc;

use lienthong_kpi::KpiError;
use lienthong_telemetry::Telemetry;
use lienthong_telemetry::component::{Listener, Running};
use tokio_util::sync::CancellationToken;

use crate::{CliError, Config};

/// The engine, if it runs.
pub type Kpi = Option<Running<KpiError>>;

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
    shutdown: &CancellationToken,
) -> Result<Kpi, CliError> {
    let Some(kpi) = engine_config(config) else {
        return Ok(None);
    };
    let refused = |e: KpiError| match e {
        KpiError::Config(_) => CliError::Usage(format!("[kpi]: {e}")),
        other => CliError::Failed(format!("KPI engine: {other}")),
    };
    kpi.validate().map_err(refused)?;
    let listener = Listener::bind("kpi.listen", &kpi.listen).await?;
    say!("KPI engine metrics on http://{}/metrics", listener.addr());
    lienthong_kpi::start(kpi, listener, telemetry, shutdown)
        .map(Some)
        .map_err(refused)
}
