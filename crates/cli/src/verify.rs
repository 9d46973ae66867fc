//! `lienthong verify CONNECTOR_TOML` and `lienthong repair CONNECTOR_TOML`: is a live store in
//! sync with the log, and if not, put right only what differs (`lienthong_connect::verify`).
//! Both run beside the connector, which keeps running; both show a progress bar on a terminal
//! (a line per stage otherwise). `verify` exits 1 when the store differs; `repair` exits 1
//! when it still differs after the repair.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lienthong_connect::digest::MAX_BUCKETS;
use lienthong_connect::verify::{Progress, Verification};
use lienthong_connect::{ConnectorConfig, Sink, StoredOffset};
use lienthong_contract::Catalog;
use lienthong_store::AnyStore;
use lienthong_telemetry::{say, say_err};
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::connect::cli_error;

/// At most this many differing rows are printed (the count is always given).
const SHOWN: usize = 1_000;

/// What a check runs with: the connector's config (with its keys), its catalog, its store and
/// the digest buckets.
struct Check {
    config: ConnectorConfig,
    catalog: Arc<Catalog>,
    store: AnyStore,
    buckets: usize,
    progress: Progress,
}

impl Check {
    async fn open(path: &Path, buckets: Option<usize>) -> Result<Check, CliError> {
        let mut config = ConnectorConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
        crate::connect::with_keys(&mut config).map_err(cli_error)?;
        let buckets = buckets.unwrap_or(config.verify.buckets);
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(CliError::Usage(format!(
                "--buckets must be between 1 and {MAX_BUCKETS}"
            )));
        }
        let catalog =
            Catalog::load(&config.schemas.dir).map_err(|e| CliError::Usage(e.to_string()))?;
        let store = AnyStore::open(&config.store)
            .await
            .map_err(|e| CliError::Failed(format!("store: {e}")))?;
        Ok(Check {
            config,
            catalog: Arc::new(catalog),
            store,
            buckets,
            progress: Progress::default(),
        })
    }

    /// What `v` found, printed; the number of differing rows.
    fn report(&self, v: &Verification) -> usize {
        report(&self.config, self.store.kind(), v)
    }
}

/// Run `work` while drawing `progress` on stderr.
async fn showing<T>(progress: &Progress, work: impl std::future::Future<Output = T>) -> T {
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        None,
        if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut work = std::pin::pin!(work);
    let mut stage = "";
    loop {
        tokio::select! {
            out = &mut work => {
                bar.finish_and_clear();
                return out;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = progress.get();
                if now.stage != stage {
                    stage = now.stage;
                    if !terminal && !stage.is_empty() {
                        say_err!("{stage}…");
                    }
                    bar.set_message(stage);
                }
                bar.set_length(now.total.max(now.done));
                bar.set_position(now.done);
            }
        }
    }
}

fn offsets_line(offsets: &[StoredOffset]) -> String {
    if offsets.is_empty() {
        return "no offsets yet".into();
    }
    offsets
        .iter()
        .map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Print what `v` found; the number of differing rows.
fn report(config: &ConnectorConfig, kind: &str, v: &Verification) -> usize {
    say!(
        "connector {} ({kind} store), as of offsets {}",
        config.name,
        offsets_line(&v.offsets)
    );
    say!(
        "the store holds {} rows, the log says {}",
        v.store_rows,
        v.log_rows
    );
    if v.in_sync() {
        say!("in sync: all {} digest buckets match", v.buckets);
        return 0;
    }
    say!(
        "DIFFERS: {} row(s), in {} of {} digest buckets",
        v.divergences.len(),
        v.differing_buckets,
        v.buckets
    );
    for d in v.divergences.iter().take(SHOWN) {
        say!("  {d}");
    }
    if v.divergences.len() > SHOWN {
        say!("  … and {} more", v.divergences.len() - SHOWN);
    }
    v.divergences.len()
}

/// `lienthong verify`.
pub async fn verify_file(
    path: &Path,
    buckets: Option<usize>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let mut c = Check::open(path, buckets).await?;
    let work = lienthong_connect::verify(
        &c.config,
        &c.catalog,
        &mut c.store,
        c.buckets,
        &c.progress,
        &shutdown,
    );
    let verified = showing(&c.progress, work).await.map_err(cli_error)?;
    match c.report(&verified) {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "the store differs from the log in {n} row(s); `lienthong repair {}` puts them right",
            path.display()
        ))),
    }
}

/// `lienthong repair`.
pub async fn repair_file(
    path: &Path,
    buckets: Option<usize>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let mut c = Check::open(path, buckets).await?;
    let work = lienthong_connect::repair(
        &c.config,
        &c.catalog,
        &mut c.store,
        c.buckets,
        &c.progress,
        &shutdown,
    );
    let repaired = showing(&c.progress, work).await.map_err(cli_error)?;
    say!("before the repair:");
    let found = c.report(&repaired.before);
    if found > 0 {
        say!(
            "repaired {found} row(s) in one transaction: their rows removed, the log's {} written{}",
            repaired.rows_written,
            match repaired.retries {
                0 => String::new(),
                n => format!(" ({n} attempt(s) refused because the connector moved meanwhile)"),
            }
        );
    }
    say!("after the repair:");
    match c.report(&repaired.after) {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "the store still differs from the log in {n} row(s) after the repair"
        ))),
    }
}
