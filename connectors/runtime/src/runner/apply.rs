//! Applying a batch: its changes and offsets in one store transaction, started on its own task
//! while the loop reads on (pipelined), landed before the next; a batch that fails there is
//! applied again serially: retried with backoff while the store is away (consumption paused),
//! bisected to find the one record that breaks a constraint, re-positioned when another
//! instance moved the offsets; then the metrics and the lag.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::{ConnectError, StoreError};
use crate::sink::{Batch, OffsetUpdate, Sink};

use super::{InFlight, Joined};

use super::rebalance::{resume_paused, tpl_list};
use super::{Item, Runner, Tp};

impl<S: Sink> Runner<S> {
    /// Count and log one retry of a transient condition (`cause`: a store error class,
    /// `registry`), and show that the connector is waiting.
    pub(super) fn note_retry(&self, cause: &str, e: &dyn std::fmt::Display, attempt: u32) {
        self.metrics
            .retries
            .with_label_values(&[&self.config.name, cause])
            .inc();
        self.metrics
            .retrying
            .with_label_values(&[&self.config.name])
            .set(1);
        tracing::warn!(connector = %self.name(), cause, error = %e, attempt, "consumption paused, retrying");
    }

    /// Pause every assigned partition while the connector waits (for a store, the registry),
    /// so that memory holds little more than what was fetched already. A rebalance meanwhile
    /// lifts the pause before the new assignment (`resume_paused`); the next failed attempt
    /// pauses the new assignment again.
    pub(super) fn pause_consumption(&self) {
        let unpaused = self
            .paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if unpaused
            && let Ok(a) = self.consumer.assignment()
            && a.count() > 0
            && self.consumer.pause(&a).is_ok()
        {
            *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = tpl_list(&a);
        }
    }

    /// One failed attempt at something the connector cannot go on without (the registry, the
    /// key service): counted, consumption paused, the backoff waited out while rebalances are
    /// served. `false` if the connector is stopping: the record or batch is read again at the
    /// next start.
    pub(super) async fn back_off(
        &mut self,
        cause: &str,
        e: &(dyn std::fmt::Display + Sync),
        attempt: u32,
    ) -> Result<bool, ConnectError> {
        self.note_retry(cause, e, attempt);
        self.pause_consumption();
        if self.shutdown.is_cancelled() {
            return Ok(false);
        }
        self.wait_serving_rebalances(self.config.retry.backoff(attempt))
            .await?;
        Ok(true)
    }

    /// After attempts that [`Runner::back_off`] retried succeeded: consumption resumed and
    /// the connector no longer shown as waiting.
    pub(super) fn recovered(&self) {
        resume_paused(&self.consumer, &self.paused);
        self.metrics
            .retrying
            .with_label_values(&[&self.config.name])
            .set(0);
    }

    pub(super) fn store_class(e: &StoreError) -> &'static str {
        match e {
            StoreError::Transient { class, .. } => class,
            _ => "store_unavailable",
        }
    }

    /// The batch for `items`: their ops, and per partition the offset after the last one.
    pub(super) fn build(&self, items: &[Item]) -> Batch {
        let mut next: Vec<(Tp, i64)> = Vec::new();
        let mut ops = Vec::new();
        for i in items {
            if !self.positions.contains_key(&i.tp) {
                continue;
            }
            match next.iter_mut().find(|(tp, _)| *tp == i.tp) {
                Some(slot) => slot.1 = slot.1.max(i.offset + 1),
                None => next.push((i.tp.clone(), i.offset + 1)),
            }
            if let Some(op) = &i.op {
                ops.push(op.clone());
            }
        }
        Batch {
            connector: self.config.name.clone(),
            ops,
            offsets: next
                .into_iter()
                .map(|(tp, n)| OffsetUpdate {
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    expected: self.positions.get(&tp).copied().flatten(),
                    next: n,
                })
                .collect(),
        }
    }

    /// Before a batch opened with citizens' keys is applied, the key service's records of
    /// those keys are on its access log: no row is opened with a key whose release is not
    /// recorded. Retried like a store that does not answer; `false` if stopped meanwhile (the
    /// batch is read again at the next start).
    async fn keys_recorded(&mut self) -> Result<bool, ConnectError> {
        let Some(keys) = self.config.keys.0.clone() else {
            return Ok(true);
        };
        let mut attempt = 0;
        while let Err(e) = keys.flush().await {
            attempt += 1;
            if !self.back_off("key_service", &e, attempt).await? {
                return Ok(false);
            }
        }
        if attempt > 0 {
            self.recovered();
        }
        Ok(true)
    }

    /// Hand the waiting batch to the store. The batch before it is landed first (its result
    /// handled, so that the offsets this batch expects are the ones the store holds); then
    /// this batch's transaction runs on its own task while the loop reads and decodes the
    /// next batch (pipelining). A batch that fails there is applied again by
    /// [`Runner::apply_serially`], with its retries, bisection and fencing.
    pub(super) async fn flush(&mut self) -> Result<(), ConnectError> {
        self.land().await?;
        if self.batch.is_empty() {
            self.batch_since = None;
            return Ok(());
        }
        if !self.keys_recorded().await? {
            return Ok(());
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_since = None;
        let batch = self.build(&items);
        if batch.offsets.is_empty() {
            return Ok(());
        }
        let offsets = batch.offsets.clone();
        let ops = batch.ops.len();
        let mut sink = self.take_sink()?;
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let result = sink.apply(batch).await;
            (sink, result)
        });
        self.in_flight = Some(InFlight {
            items,
            offsets,
            ops,
            started,
            task,
        });
        Ok(())
    }

    /// Wait for the batch whose transaction is running, if any, and handle its result.
    pub(super) async fn land(&mut self) -> Result<(), ConnectError> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let joined = (&mut in_flight.task).await;
        self.landed(joined).await
    }

    /// Handle the result of the batch in flight (`joined`, its task's outcome): the store
    /// back with the loop, then the commit's metrics, offsets and receipt, or, when the
    /// transaction failed, the batch applied again serially.
    pub(super) async fn landed(&mut self, joined: Joined<S>) -> Result<(), ConnectError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let (sink, result) = joined.map_err(|e| {
            ConnectError::Internal(format!(
                "the task applying a batch to the store failed: {e}"
            ))
        })?;
        self.sink = Some(sink);
        match result {
            Ok(applied) => {
                let InFlight {
                    items,
                    offsets,
                    ops,
                    started,
                    ..
                } = in_flight;
                self.committed(&offsets, ops, &items, applied, started);
                self.send_receipt(&offsets, &items, applied).await;
                Ok(())
            }
            Err(e) => {
                let mut items = in_flight.items;
                self.apply_serially(&mut items, e).await
            }
        }
    }

    /// The store, when no batch holds it.
    pub(super) fn sink_mut(&mut self) -> Result<&mut S, ConnectError> {
        self.sink.as_mut().ok_or_else(store_held)
    }

    fn take_sink(&mut self) -> Result<S, ConnectError> {
        self.sink.take().ok_or_else(store_held)
    }

    /// Apply `items`, whose pipelined transaction failed with `failed`, waiting for each
    /// attempt: retry transient errors with consumption paused, bisect constraint
    /// violations, re-position on fencing.
    async fn apply_serially(
        &mut self,
        items: &mut [Item],
        failed: StoreError,
    ) -> Result<(), ConnectError> {
        // The pipelined attempt counts as the first.
        let mut failed = Some(Err(failed));
        let mut queue: VecDeque<(usize, usize)> = VecDeque::from([(0, items.len())]);
        let mut retried = false;
        let result = 'outer: loop {
            let Some((lo, hi)) = queue.pop_front() else {
                break Ok(());
            };
            let mut attempt = 0u32;
            loop {
                // Records of partitions revoked meanwhile are no longer ours to apply.
                items[lo..hi]
                    .iter_mut()
                    .filter(|i| !self.positions.contains_key(&i.tp))
                    .for_each(|i| i.op = None);
                let batch = self.build(&items[lo..hi]);
                if batch.offsets.is_empty() {
                    break;
                }
                let offsets = batch.offsets.clone();
                let ops = batch.ops.len();
                let started = Instant::now();
                let result = match failed.take() {
                    Some(result) => result,
                    None => self.sink_mut()?.apply(batch).await,
                };
                match result {
                    Ok(applied) => {
                        self.committed(&offsets, ops, &items[lo..hi], applied, started);
                        self.send_receipt(&offsets, &items[lo..hi], applied).await;
                        break;
                    }
                    Err(e @ StoreError::Transient { .. }) => {
                        attempt += 1;
                        self.note_retry(Self::store_class(&e), &e, attempt);
                        retried = true;
                        self.pause_consumption();
                        if self.shutdown.is_cancelled() && self.shutdown_deadline.is_none() {
                            self.shutdown_deadline = Some(
                                Instant::now()
                                    + Duration::from_secs(self.config.shutdown_timeout_secs),
                            );
                        }
                        if self.shutdown_expired() {
                            tracing::warn!(connector = %self.name(), "shutdown time is up: abandoning the in-flight batch (it will be read again)");
                            break 'outer Ok(());
                        }
                        self.wait_serving_rebalances(self.config.retry.backoff(attempt))
                            .await?;
                    }
                    Err(StoreError::Constraint(message)) => {
                        let with_ops: Vec<usize> =
                            (lo..hi).filter(|&i| items[i].op.is_some()).collect();
                        match with_ops.as_slice() {
                            [] => {
                                break 'outer Err(ConnectError::Store(StoreError::Fatal(format!(
                                    "a batch without changes violated a constraint: {message}"
                                ))));
                            }
                            [one] => {
                                let one = *one;
                                self.dead_letter(&items[one], "constraint", &message)
                                    .await?;
                                items[one].op = None;
                            }
                            _ => {
                                let mid = with_ops[with_ops.len() / 2];
                                queue.push_front((mid, hi));
                                queue.push_front((lo, mid));
                                break;
                            }
                        }
                    }
                    Err(StoreError::Fenced { topic, partition }) => {
                        tracing::warn!(connector = %self.name(), topic, partition, "another instance moved the offsets; re-reading from the store");
                        let all: Vec<(String, i32)> = self
                            .positions
                            .keys()
                            .map(|(t, p)| (t.to_string(), *p))
                            .collect();
                        self.positions.clear();
                        self.seen.clear();
                        self.batch.clear();
                        self.held_back.clear();
                        self.position(all).await?;
                        break 'outer Ok(());
                    }
                    Err(e) => break 'outer Err(ConnectError::Store(e)),
                }
            }
        };
        resume_paused(&self.consumer, &self.paused);
        if retried {
            self.metrics
                .retrying
                .with_label_values(&[&self.config.name])
                .set(0);
        }
        result
    }

    pub(super) fn committed(
        &mut self,
        offsets: &[OffsetUpdate],
        ops: usize,
        items: &[Item],
        applied: crate::sink::Applied,
        started: Instant,
    ) {
        let name = &self.config.name;
        self.metrics
            .batch_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .batch_size
            .with_label_values(&[name])
            .observe(ops as f64);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.metrics
            .applied_timestamp
            .with_label_values(&[name])
            .set(now_ms / 1000);
        let mut per_topic: HashMap<&str, u64> = HashMap::new();
        for i in items.iter().filter(|i| i.op.is_some()) {
            *per_topic.entry(&i.tp.0).or_default() += 1;
            if let Some(at) = i.occurred_at {
                self.metrics
                    .end_to_end_latency
                    .with_label_values(&[name.as_str(), &*i.tp.0])
                    .observe(((now_ms - at).max(0) as f64) / 1000.0);
            }
        }
        for (topic, n) in per_topic {
            self.metrics
                .applied
                .with_label_values(&[name, topic])
                .inc_by(n);
        }
        // Filtered changes are counted under the batch's first topic: in practice a filtered
        // store consumes one topic of deltas.
        if applied.filtered > 0
            && let Some(i) = items.first()
        {
            self.metrics
                .filtered
                .with_label_values(&[name.as_str(), &*i.tp.0])
                .inc_by(applied.filtered as u64);
        }
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            let tp = (self.topic_arc(&o.topic), o.partition);
            // A partition forgotten while its batch was in flight stays forgotten.
            if let Some(position) = self.positions.get_mut(&tp) {
                *position = Some(o.next);
            }
            let _ = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next));
        }
        if self.folding.is_some() {
            let reached: Vec<(Tp, i64)> = offsets
                .iter()
                .map(|o| ((self.topic_arc(&o.topic), o.partition), o.next))
                .collect();
            if let Some(folding) = &mut self.folding {
                for (tp, next) in &reached {
                    folding.reached(tp, *next);
                }
            }
            return;
        }
        // For lag visibility only; the store's offsets are the truth.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets to Kafka (lag visibility only)");
        }
        self.update_lag();
    }

    /// At most every [`super::LAG_INTERVAL`], set the lag gauge (high watermark minus the
    /// store's offset) from a client outside the group, on a blocking thread. A call within
    /// the interval marks the gauge stale; the loop sets it once the interval is up.
    pub(super) fn update_lag(&mut self) {
        if self
            .lag_updated
            .is_some_and(|t| t.elapsed() < super::LAG_INTERVAL)
        {
            self.lag_stale = true;
            return;
        }
        self.lag_updated = Some(Instant::now());
        self.lag_stale = false;
        let positions: Vec<(String, i32, i64)> = self
            .positions
            .iter()
            .filter_map(|((t, p), o)| o.map(|o| (t.to_string(), *p, o)))
            .collect();
        let client = self.watermarks.clone();
        let gauge = self.metrics.consumer_lag.clone();
        let name = self.config.name.clone();
        tokio::task::spawn_blocking(move || {
            for (topic, partition, next) in positions {
                if let Ok((_, high)) =
                    client.fetch_watermarks(&topic, partition, Duration::from_secs(5))
                {
                    gauge
                        .with_label_values(&[name.as_str(), &topic, &partition.to_string()])
                        .set((high - next).max(0));
                }
            }
        });
    }
}

/// The loop asked for the store while a batch's transaction held it: a bug in the loop.
fn store_held() -> ConnectError {
    ConnectError::Internal("the store was used while a batch held it".into())
}
