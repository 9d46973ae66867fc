//! The receipts watcher: reads the connectors' signed apply receipts from the beginning of the
//! receipts topic, verifies each against the certificate log, and feeds the trace index (which
//! agency applied which offsets, when) and the sync delay per agency
//! (`lienthong_sync_delay_seconds`). A receipt that does not verify is counted and left out:
//! nothing an agency did not sign is shown as applied.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lienthong_signing::{CertificateLog, Receipt, RecordVerifier, Refusal};
use lienthong_telemetry::Telemetry;
use rdkafka::consumer::DefaultConsumerContext;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::ReceiptsWatch;
use crate::trace::TraceIndex;
use crate::{KpiConfig, KpiError};

/// Read receipts until `shutdown`.
pub(crate) async fn watch(
    config: &KpiConfig,
    receipts: &ReceiptsWatch,
    index: Arc<RwLock<TraceIndex>>,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), KpiError> {
    let consumer = crate::service::reader(config, telemetry)?;
    let kafka = config
        .kafka
        .as_ref()
        .ok_or_else(|| KpiError::Config("kafka is not set".into()))?;
    let log = loop {
        let opened = CertificateLog::open_trusting(
            kafka,
            &receipts.certificates_topic,
            &receipts.trusted_cas,
            "lienthong-kpi-certificates".into(),
            DefaultConsumerContext,
            shutdown.child_token(),
        )
        .await;
        match opened {
            Ok(log) => break log,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "the certificate log; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(KpiError::Config(format!("receipts: {e}"))),
        }
    };
    if crate::service::assign(&consumer, std::slice::from_ref(&receipts.topic), &shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let verifier = RecordVerifier::new();
    let counted = |outcome: &str| {
        telemetry.kpi.receipts.with_label_values(&[outcome]).inc();
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error (receipts)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut verified = Receipt::verify(&verifier, &log.read(), &message);
        // A certificate issued a moment ago may not have reached this reader yet.
        if let Err(Refusal::UnknownCertificate(_)) = verified
            && log.sync().await.is_ok()
        {
            verified = Receipt::verify(&verifier, &log.read(), &message);
        }
        match verified {
            Ok(receipt) => {
                counted("verified");
                for r in &receipt.ranges {
                    telemetry
                        .kpi
                        .sync_delay
                        .with_label_values(&[&receipt.agency])
                        .observe(
                            ((receipt.committed_ms - r.published_ms[0]).max(0) as f64) / 1000.0,
                        );
                }
                let gaps = index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .receipt(&receipt);
                if gaps > 0 {
                    tracing::warn!(connector = %receipt.connector, agency = %receipt.agency, offsets = gaps, "offsets no receipt covers: a receipt lost, or a store changed outside its connector");
                    telemetry
                        .kpi
                        .receipt_gaps
                        .with_label_values(&[&receipt.agency])
                        .inc_by(gaps);
                }
            }
            Err(refusal) => {
                counted("refused");
                tracing::warn!(partition = message.partition(), offset = message.offset(), reason = %refusal, "a receipt refused");
            }
        }
    }
}
