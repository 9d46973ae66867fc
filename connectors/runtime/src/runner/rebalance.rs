//! Rebalances: the consumer context records them for the loop, and the loop positions newly
//! assigned partitions at the offsets the store holds (never at Kafka's committed offsets).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_telemetry::KafkaClientContext;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::ConnectError;
use crate::sink::Sink;

use super::{Runner, Tp};

#[derive(Debug)]
pub(super) enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// The consumer context: records rebalances for the loop, and lifts the loop's pause before
/// the group's assignment changes.
pub(super) struct Ctx {
    pub(super) events: Arc<Mutex<Vec<RebalanceEvent>>>,
    /// Wakes the loop to position newly assigned partitions.
    pub(super) wake: Arc<tokio::sync::Notify>,
    /// Partitions the loop paused while a store was away.
    pub(super) paused: Arc<Mutex<Vec<(String, i32)>>>,
    /// Counts the client's errors.
    pub(super) kafka: KafkaClientContext,
}

impl ClientContext for Ctx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.kafka.count(&error, reason);
    }
}

pub(super) fn tpl_list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Resume every partition the loop paused. It runs before any assignment is made, by the
/// group or by the loop: a partition still paused when it is assigned again can stay paused
/// for good, its records never fetched (librdkafka issues #5591 and #2190; seen here as a
/// demo store that never received one partition after a pause in the rebalance callback).
pub(super) fn resume_paused(consumer: &impl Consumer<Ctx>, paused: &Mutex<Vec<(String, i32)>>) {
    let tps = std::mem::take(&mut *paused.lock().unwrap_or_else(|p| p.into_inner()));
    if tps.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &tps {
        tpl.add_partition(t, *p);
    }
    if let Err(e) = consumer.resume(&tpl) {
        tracing::warn!(error = %e, "resuming paused partitions");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        resume_paused(consumer, &self.paused);
        if let Rebalance::Revoke(tpl) = rebalance {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(RebalanceEvent::Revoked(tpl_list(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(RebalanceEvent::Assigned(tpl_list(tpl)));
            self.wake.notify_one();
        }
    }
}

impl<S: Sink> Runner<S> {
    /// Process rebalance events: forget revoked partitions (and their waiting records), and
    /// position newly assigned ones at the store's offsets.
    pub(super) async fn handle_rebalances(&mut self) -> Result<(), ConnectError> {
        let pending = !self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if pending {
            // The batch in flight commits before its partitions are forgotten or positioned
            // again (one that lost them meanwhile is fenced by the store, not applied twice).
            self.land().await?;
        }
        let events: Vec<RebalanceEvent> =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        let mut to_assign: Option<Vec<(String, i32)>> = None;
        for ev in events {
            match ev {
                RebalanceEvent::Revoked(tps) => {
                    tracing::info!(connector = %self.name(), partitions = tps.len(), "partitions revoked");
                    self.forget(&tps);
                    if let Some(pending) = &mut to_assign {
                        pending.retain(|tp| !tps.contains(tp));
                    }
                }
                RebalanceEvent::Assigned(tps) => {
                    tracing::info!(connector = %self.name(), partitions = tps.len(), "partitions assigned");
                    to_assign.get_or_insert_with(Vec::new).extend(tps);
                }
            }
        }
        if let Some(tps) = to_assign {
            self.position(tps).await?;
        }
        Ok(())
    }

    pub(super) fn forget(&mut self, tps: &[(String, i32)]) {
        let gone = |tp: &Tp| tps.iter().any(|(t, p)| **t == *tp.0 && *p == tp.1);
        self.positions.retain(|tp, _| !gone(tp));
        self.seen.retain(|tp, _| !gone(tp));
        self.batch.retain(|i| !gone(&i.tp));
        self.held_back.retain(|m| {
            !tps.iter()
                .any(|(t, p)| t == m.topic() && *p == m.partition())
        });
        if self.batch.is_empty() {
            self.batch_since = None;
        }
    }

    /// Read the store's offsets and (re)assign `tps` at them. `tps` is the whole assignment.
    pub(super) async fn position(&mut self, tps: Vec<(String, i32)>) -> Result<(), ConnectError> {
        if tps.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        let stored = loop {
            let name = self.config.name.clone();
            match self.sink_mut()?.offsets(&name).await {
                Ok(s) => break s,
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    self.note_retry(Self::store_class(&e), &e, attempt);
                    if self.shutdown.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(self.config.retry.backoff(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.metrics
            .retrying
            .with_label_values(&[&self.config.name])
            .set(0);
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &tps {
            let next = stored
                .iter()
                .find(|s| s.topic == *t && s.partition == *p)
                .map(|s| s.next);
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(t, *p, offset)?;
            let tp = (self.topic_arc(t), *p);
            self.positions.insert(tp.clone(), next);
            self.seen.remove(&tp);
        }
        // Records of these partitions read before this point came from elsewhere.
        self.forget_batch_of(&tps);
        resume_paused(&self.consumer, &self.paused);
        self.consumer.assign(&tpl)?;
        tracing::info!(connector = %self.name(), partitions = tps.len(), "positioned at the store's offsets");
        Ok(())
    }

    pub(super) fn forget_batch_of(&mut self, tps: &[(String, i32)]) {
        self.batch
            .retain(|i| !tps.iter().any(|(t, p)| **t == *i.tp.0 && *p == i.tp.1));
        self.held_back.retain(|m| {
            !tps.iter()
                .any(|(t, p)| t == m.topic() && *p == m.partition())
        });
        if self.batch.is_empty() {
            self.batch_since = None;
        }
    }

    /// Sleep `d` while serving the consumer (rebalance callbacks run inside `recv`); records
    /// that still arrive are held back for later.
    pub(super) async fn wait_serving_rebalances(
        &mut self,
        d: Duration,
    ) -> Result<(), ConnectError> {
        let until = tokio::time::Instant::now() + d;
        loop {
            let watch_shutdown = !self.shutdown.is_cancelled();
            let got = tokio::select! {
                _ = tokio::time::sleep_until(until) => None,
                _ = self.shutdown.cancelled(), if watch_shutdown => return Ok(()),
                m = self.consumer.recv() => Some(m.map(|m| m.detach())),
            };
            match got {
                None => break,
                // Only positioned partitions' records are kept (the others would be dropped
                // when taken), and those are paused: while the store is away, memory holds
                // little more than what was fetched before the pause.
                Some(Ok(m)) => {
                    let tp = (self.topic_arc(m.topic()), m.partition());
                    if self.positions.contains_key(&tp) {
                        self.held_back.push_back(m);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error while paused"),
            }
            let events: Vec<RebalanceEvent> =
                std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
            for ev in events {
                match ev {
                    RebalanceEvent::Revoked(tps) => {
                        tracing::info!(connector = %self.name(), "partitions revoked while retrying: their records are abandoned");
                        self.forget(&tps);
                    }
                    RebalanceEvent::Assigned(tps) => {
                        // Positioned after the retry: put the event back for the loop.
                        self.events
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(RebalanceEvent::Assigned(tps));
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
