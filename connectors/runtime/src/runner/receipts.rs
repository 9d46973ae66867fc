//! Apply receipts (`[receipts]`, docs/signatures.md): after each committed batch, what it
//! applied, signed by the connector's agency, on the receipts topic. A receipt is handed to the
//! producer without waiting for the broker (the batch is committed already, and the next one
//! should not wait); one that cannot be delivered is logged and counted
//! (`lienthong_connector_receipts_total{outcome="failed"}`), and shows as a gap in the chain of
//! the connector's ranges.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lienthong_signing::{AgencySigner, Receipt, ReceiptRange, StoreDigest};
use lienthong_telemetry::ConnectorMetrics;
use rdkafka::producer::FutureRecord;

use crate::config::ReceiptsConfig;
use crate::digest::DEFAULT_BUCKETS;
use crate::error::ConnectError;
use crate::sink::{Applied, OffsetUpdate, Sink};

use super::{Item, Runner};

/// What a connector signs its receipts with, and when it last took the store's digest.
pub(super) struct Receipts {
    signer: AgencySigner,
    topic: String,
    digest_every: Duration,
    last_digest: Option<Instant>,
}

impl Receipts {
    pub(super) fn open(config: &ReceiptsConfig) -> Result<Receipts, ConnectError> {
        let signer = AgencySigner::load(&config.key_file, &config.certificate_file)
            .map_err(|e| ConnectError::Config(format!("receipts: {e}")))?;
        Ok(Receipts {
            signer,
            topic: config.topic.clone(),
            digest_every: Duration::from_secs(config.store_digest_every_secs),
            last_digest: None,
        })
    }

    /// The agency that signs.
    pub(super) fn agency(&self) -> &str {
        self.signer.certificate().agency()
    }

    fn digest_due(&self) -> bool {
        self.last_digest
            .is_none_or(|t| t.elapsed() >= self.digest_every)
    }
}

/// Per partition of `batch`, what its `items` read of it.
fn ranges(offsets: &[OffsetUpdate], items: &[Item]) -> Vec<ReceiptRange> {
    let mut seen: HashMap<(&str, i32), (i64, u64, i64, i64)> = HashMap::new();
    for i in items {
        let e = seen
            .entry((&*i.tp.0, i.tp.1))
            .or_insert((i.offset, 0, i64::MAX, i64::MIN));
        e.0 = e.0.min(i.offset);
        e.1 += 1;
        e.2 = e.2.min(i.published_ms);
        e.3 = e.3.max(i.published_ms);
    }
    offsets
        .iter()
        .map(|o| {
            let (first, records, oldest, newest) = seen
                .get(&(o.topic.as_str(), o.partition))
                .copied()
                .unwrap_or((o.next, 0, 0, 0));
            ReceiptRange {
                topic: o.topic.clone(),
                partition: o.partition,
                from: o.expected.unwrap_or(first),
                to: o.next,
                records,
                published_ms: [oldest, newest],
            }
        })
        .collect()
}

/// A receipt that did not reach the receipts topic: logged and counted.
fn not_sent(metrics: &ConnectorMetrics, connector: &str, why: &dyn std::fmt::Display) {
    tracing::warn!(connector, error = %why, "a receipt was not sent");
    metrics
        .receipts
        .with_label_values(&[connector, "failed"])
        .inc();
}

impl<S: Sink> Runner<S> {
    /// After a batch (of `items`, taking its partitions to `offsets`) committed with
    /// `applied`: its receipt, with the store's digest when one is due, signed and handed to
    /// the producer.
    pub(super) async fn send_receipt(
        &mut self,
        offsets: &[OffsetUpdate],
        items: &[Item],
        applied: Applied,
    ) {
        let Some(due) = self.receipts.as_ref().map(Receipts::digest_due) else {
            return;
        };
        // The next batch is started only after this one is landed, so this is the store as
        // the batch left it, plus whatever another instance of the connector sharing the
        // store committed for its own partitions meanwhile.
        let store_digest = if due {
            let digest = match self.sink_mut() {
                Ok(sink) => sink
                    .digest(DEFAULT_BUCKETS)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match digest {
                Ok(d) => Some(StoreDigest {
                    rows: d.rows,
                    overall: d.overall,
                }),
                Err(e) => {
                    tracing::warn!(connector = %self.name(), error = %e, "the store's digest for a receipt");
                    None
                }
            }
        } else {
            None
        };
        let Some(receipts) = self.receipts.as_mut() else {
            return;
        };
        if store_digest.is_some() {
            receipts.last_digest = Some(Instant::now());
        }
        let mut receipt = Receipt::new(&self.config.name, receipts.agency(), self.kind);
        receipt.ranges = ranges(offsets, items);
        receipt.applied = applied.applied as u64;
        receipt.filtered = applied.filtered as u64;
        receipt.stale = applied.stale as u64;
        receipt.committed_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        receipt.store_digest = store_digest;
        let metrics = self.metrics.clone();
        let name = self.config.name.clone();
        let (key, value, headers) = match receipt.sign(&receipts.signer, &receipts.topic) {
            Ok(signed) => signed,
            Err(e) => return not_sent(&metrics, &name, &e),
        };
        let record = FutureRecord::to(&receipts.topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => metrics
                            .receipts
                            .with_label_values(&[&name, "delivered"])
                            .inc(),
                        Ok(Err((e, _))) => not_sent(&metrics, &name, &e),
                        Err(_) => not_sent(&metrics, &name, &"the producer was dropped"),
                    }
                });
            }
            Err((e, _)) => not_sent(&metrics, &name, &e),
        }
    }
}
