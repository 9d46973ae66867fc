//! The demo's HTTP publisher: citizens' feedback arrives from the public service portal, a
//! system nobody here wrote, so it reaches the bus the way such systems do — as JSON over HTTP
//! through the gateway, with each unit's own bearer token.
//!
//! Events are sent in order: consecutive events of one unit go as one all-or-nothing batch,
//! and the next batch is sent only after Kafka acknowledged the previous one, so a feedback's
//! later steps never overtake its earlier ones.

use std::collections::{BTreeMap, HashMap};

use lienthong_contract::{Catalog, Codec};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::DemoError;
use crate::city::CityEvent;

/// What the portal got acknowledged, per topic.
pub type Counts = BTreeMap<String, u64>;

/// The gateway's JSON form of `event`: encoded with the catalog schema, decoded as a generic
/// Avro value and written as JSON the way `lienthong tail` prints it.
pub fn to_gateway_json(
    event: &CityEvent,
    catalog: &Catalog,
    codec: &Codec,
) -> Result<(&'static str, Json), DemoError> {
    let topic = event.topic();
    let bad = |m: String| DemoError::Startup(format!("portal: {topic}: {m}"));
    let id = catalog.local_id(topic).map_err(|e| bad(e.to_string()))?;
    let bytes = match event {
        CityEvent::Case(e) => codec.encode_to_vec(id, e),
        CityEvent::Feedback(e) => codec.encode_to_vec(id, e),
        CityEvent::Unit(e) => codec.encode_to_vec(id, e),
        CityEvent::Procedure(e) => codec.encode_to_vec(id, e),
    }
    .map_err(|e| bad(e.to_string()))?;
    let (_, value) = codec
        .decode_value(&bytes, None)
        .map_err(|e| bad(e.to_string()))?;
    let schema = &catalog.topic(topic).map_err(|e| bad(e.to_string()))?.schema;
    Ok((topic, lienthong_contract::json::to_json(&value, schema)))
}

/// Post what arrives on `events` to the gateway at `base` until the channel closes; return
/// how many events Kafka acknowledged per topic.
pub async fn run(
    mut events: mpsc::Receiver<CityEvent>,
    base: String,
    tokens: HashMap<&'static str, String>,
    catalog: std::sync::Arc<Catalog>,
) -> Result<Counts, DemoError> {
    let codec = Codec::from_catalog(&catalog).map_err(|e| DemoError::Startup(e.to_string()))?;
    let client = reqwest::Client::new();
    let mut counts = Counts::new();
    let mut waiting = Vec::new();
    while let Some(first) = events.recv().await {
        waiting.push(first);
        while let Ok(next) = events.try_recv() {
            waiting.push(next);
        }
        // Consecutive events of one unit and one topic make one batch.
        let mut start = 0;
        while start < waiting.len() {
            let unit = waiting[start].envelope().producer_unit.clone();
            let topic = waiting[start].topic();
            let end = waiting[start..]
                .iter()
                .position(|e| e.envelope().producer_unit != unit || e.topic() != topic)
                .map_or(waiting.len(), |n| start + n)
                .min(start + 500);
            let batch = waiting[start..end]
                .iter()
                .map(|e| to_gateway_json(e, &catalog, &codec).map(|(_, json)| json))
                .collect::<Result<Vec<_>, _>>()?;
            let token = tokens.get(unit.as_str()).ok_or_else(|| {
                DemoError::Startup(format!("portal: no gateway token for unit {unit}"))
            })?;
            let acknowledged = post(&client, &base, topic, token, &batch).await?;
            *counts.entry(topic.to_string()).or_insert(0) += acknowledged;
            start = end;
        }
        waiting.clear();
    }
    Ok(counts)
}

/// POST one batch; the number of receipts of a 201.
async fn post(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    token: &str,
    batch: &[Json],
) -> Result<u64, DemoError> {
    let url = format!("{base}/topics/{topic}/events:batch");
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(batch)
        .send()
        .await
        .map_err(|e| DemoError::Gateway(format!("POST {url}: {e}")))?;
    let status = response.status();
    let body: Json = response
        .json()
        .await
        .map_err(|e| DemoError::Gateway(format!("POST {url}: {status}, unreadable body: {e}")))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(DemoError::Gateway(format!("POST {url}: {status}: {body}")));
    }
    let receipts = body
        .get("receipts")
        .and_then(Json::as_array)
        .map_or(0, |r| r.len());
    if receipts != batch.len() {
        return Err(DemoError::Gateway(format!(
            "POST {url}: {} events sent, {receipts} receipts: {body}",
            batch.len()
        )));
    }
    Ok(receipts as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::city::Simulator;
    use lienthong_encode::TopicEncoder;

    /// Every event the simulated city publishes, in the JSON the portal sends, is one the
    /// gateway accepts (the SDK does not check formats such as UUIDs; the gateway does).
    #[test]
    fn every_simulated_event_passes_the_gateway_checks() {
        let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
        let codec = Codec::from_catalog(&catalog).unwrap();
        let encoders: HashMap<&str, TopicEncoder> = catalog
            .topics()
            .iter()
            .map(|t| {
                let id = catalog.local_id(&t.name).unwrap();
                (
                    t.name.as_str(),
                    TopicEncoder::new(id, &t.schema, &t.key_field).unwrap(),
                )
            })
            .collect();
        let mut sim = Simulator::new(7);
        let start = 1_764_288_000_000;
        let mut events = sim.reference_data(start);
        events.extend(sim.backlog(start, 3, 40));
        events.extend((0..5_000).map(|i| {
            // A publisher that acknowledges each event at once.
            let e = sim.step(start + i * 100);
            sim.acknowledged(&e.envelope().event_id);
            e
        }));
        let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
        for event in &events {
            let (topic, json) = to_gateway_json(event, &catalog, &codec).unwrap();
            if let Err(problems) =
                encoders[topic].encode(&mut lienthong_encode::Json::from_value(&json), None, 5)
            {
                panic!("{topic}: {problems:?}\n{json}");
            }
            *by_topic.entry(topic).or_insert(0) += 1;
        }
        assert_eq!(by_topic.len(), 4, "{by_topic:?}");
        assert!(by_topic["hcm.feedback.events"] > 50, "{by_topic:?}");
    }
}
