//! `lienthong publish`: send JSON events from a file or stdin through the producer SDK, as one
//! agency, and print one receipt per event.
//!
//! The JSON is the gateway's (`docs/gateway.md`): the same checker validates every event
//! against the topic's Avro schema first, so a bad event is reported by index and JSON path
//! and **nothing** is published. Valid events then go through [`lienthong_sdk::Publisher`]:
//! the agency's write rights, keys, idempotent `acks=all` production and receipts are the
//! SDK's.

use lienthong_telemetry::{say, say_err};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lienthong_contract::events::{
    AdminUnitRecord, CaseEvent, CitizenRecord, FeedbackEvent, ProcedureRecord,
};
use lienthong_contract::{AgencyKind, Catalog, Codec};
use lienthong_encode::Json as EventJson;
use lienthong_encode::TopicEncoder;
use lienthong_sdk::{Publisher, PublisherConfig, Receipt, SchemaIds, SdkError};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::config::Config;

/// Input larger than this is refused (split it into several runs).
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// `lienthong publish` options.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The catalog topic to publish to (e.g. hcm.case.events).
    #[arg(long)]
    pub topic: String,
    /// The publishing agency's unit code; every event must name it as its producer_unit.
    #[arg(long = "as", value_name = "UNIT")]
    pub agency: String,
    /// The agency's kind. Default: a code of digits is a ward, any other a department.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Take schema ids from this Confluent-compatible registry (token from
    /// LIENTHONG_REGISTRY_TOKEN); without it, the catalog's local ids are used.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Sign every record with the agency's key (`AGENCY.key` from `lienthong cert issue`),
    /// for sinks that require signatures (docs/signatures.md); needs --sign-certificate.
    #[arg(long, value_name = "KEY_FILE", requires = "sign_certificate")]
    pub sign_key: Option<PathBuf>,
    /// The agency's certificate (`AGENCY.crt`), with --sign-key.
    #[arg(long, value_name = "CERTIFICATE_FILE", requires = "sign_key")]
    pub sign_certificate: Option<PathBuf>,
    /// The events: one JSON object per line, or one JSON array. Stdin when absent or `-`.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// An agency kind on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// A ward, commune or special zone.
    Ward,
    /// A city department.
    Department,
}

impl From<Kind> for AgencyKind {
    fn from(kind: Kind) -> AgencyKind {
        match kind {
            Kind::Ward => AgencyKind::Ward,
            Kind::Department => AgencyKind::Department,
        }
    }
}

/// The events of `text`: a JSON array, or one JSON value per non-empty line. Read as the
/// gateway reads a body (an object that names a key twice is refused).
pub fn parse_events(text: &str) -> Result<Vec<EventJson<'_>>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match EventJson::parse(trimmed.as_bytes()) {
            Ok(EventJson::Array(events)) => Ok(events),
            Ok(_) => Err("expected a JSON array of events".into()),
            Err(e) => Err(format!("not a JSON array: {e}")),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            EventJson::parse(line.as_bytes()).map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect()
}

fn read_input(file: Option<&PathBuf>) -> Result<String, CliError> {
    let mut text = String::new();
    let (name, read) = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => (
            path.display().to_string(),
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_string(&mut text)),
        ),
        None => (
            "stdin".to_string(),
            std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_string(&mut text),
        ),
    };
    read.map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::Usage(format!(
            "{name}: more than {MAX_INPUT_BYTES} bytes; split the input"
        )));
    }
    Ok(text)
}

/// One validated event, typed for the SDK.
enum Typed {
    Case(CaseEvent),
    Citizen(CitizenRecord),
    Feedback(FeedbackEvent),
    Unit(AdminUnitRecord),
    Procedure(ProcedureRecord),
}

fn typed(topic: &str, codec: &Codec, value: &[u8]) -> Result<Typed, String> {
    let e = |e: lienthong_contract::ContractError| e.to_string();
    Ok(match topic {
        "hcm.case.events" => Typed::Case(codec.decode(value).map_err(e)?.1),
        "hcm.citizen.records" => Typed::Citizen(codec.decode(value).map_err(e)?.1),
        "hcm.feedback.events" => Typed::Feedback(codec.decode(value).map_err(e)?.1),
        "hcm.reference.units" => Typed::Unit(codec.decode(value).map_err(e)?.1),
        "hcm.reference.procedures" => Typed::Procedure(codec.decode(value).map_err(e)?.1),
        other => return Err(format!("the SDK has no event type for topic {other}")),
    })
}

/// Run `publish`.
pub async fn publish(
    config: &Config,
    catalog: Catalog,
    args: PublishArgs,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let spec = catalog.topic(&args.topic).map_err(|_| {
        let known: Vec<&str> = catalog.topics().iter().map(|t| t.name.as_str()).collect();
        CliError::Usage(format!(
            "unknown topic {:?}; the catalog has {}",
            args.topic,
            known.join(", ")
        ))
    })?;
    let kind = match args.kind {
        Some(kind) => kind.into(),
        None if args.agency.chars().all(|c| c.is_ascii_digit()) => AgencyKind::Ward,
        None => AgencyKind::Department,
    };
    spec.check_publisher(&args.agency, kind)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let text = read_input(args.file.as_ref())?;
    let mut events = parse_events(&text).map_err(CliError::Usage)?;
    if events.is_empty() {
        return Err(CliError::Usage("no events in the input".into()));
    }

    // Check every event before publishing any.
    let failed = |e: String| CliError::Failed(e);
    let local_id = catalog
        .local_id(&spec.name)
        .map_err(|e| failed(e.to_string()))?;
    let encoder = TopicEncoder::new(local_id, &spec.schema, &spec.key_field).map_err(failed)?;
    let codec = Codec::from_catalog(&catalog).map_err(|e| failed(e.to_string()))?;
    let mut problems = Vec::new();
    let mut valid = Vec::with_capacity(events.len());
    for (i, event) in events.iter_mut().enumerate() {
        match encoder.encode(event, None, 20) {
            Err(found) => problems.extend(found.into_iter().map(|mut p| {
                p.index = Some(i);
                p
            })),
            Ok(encoded) => {
                if encoded.producer_unit != args.agency {
                    problems.push(lienthong_encode::Problem {
                        index: Some(i),
                        path: "$.envelope.producer_unit".into(),
                        problem: format!(
                            "{:?} publishes only as itself, not as {:?}",
                            args.agency, encoded.producer_unit
                        ),
                    });
                    continue;
                }
                match typed(&spec.name, &codec, &encoded.value) {
                    Ok(t) => valid.push(t),
                    Err(e) => return Err(failed(e)),
                }
            }
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            say_err!(
                "event {}: {}: {}",
                p.index.map_or_else(|| "?".into(), |i| i.to_string()),
                p.path,
                p.problem
            );
        }
        return Err(CliError::Usage(format!(
            "{} problem(s) in {} event(s); nothing was published",
            problems.len(),
            events.len()
        )));
    }

    let registry = match &args.registry {
        Some(url) => Some(crate::registry_client(url, None)?),
        None => None,
    };
    let ids = match &registry {
        Some(client) => SchemaIds::Registry(client),
        None => SchemaIds::Local,
    };
    // The key is checked before anything connects: a wrong file publishes nothing.
    let signer = match (&args.sign_key, &args.sign_certificate) {
        (Some(key), Some(certificate)) => Some(
            lienthong_signing::AgencySigner::load(key, certificate).map_err(|e| {
                CliError::Usage(format!(
                    "{} with {}: {e}",
                    key.display(),
                    certificate.display()
                ))
            })?,
        ),
        _ => None,
    };
    let publisher_config = PublisherConfig::new(&args.agency, kind, config.kafka.clone());
    let in_flight = publisher_config.max_in_flight.max(1);
    let publisher = Publisher::connect(publisher_config, Arc::new(catalog.clone()), ids)
        .await
        .map_err(sdk_error)?;
    let publisher = Arc::new(match signer {
        Some(signer) => publisher
            .with_signer(signer)
            .map_err(|e| CliError::Usage(e.to_string()))?,
        None => publisher,
    });
    // At most `max_in_flight` events are handed to the SDK at a time (so memory stays bounded
    // and Ctrl-C takes effect); after Ctrl-C, events not yet handed over are not sent, and
    // those already with Kafka are waited for.
    let total = valid.len();
    drop(events);
    drop(text);
    let mut pending = futures::stream::iter(valid)
        .map(|event| {
            let (p, stop) = (Arc::clone(&publisher), shutdown.clone());
            async move {
                if stop.is_cancelled() {
                    return None;
                }
                Some(match event {
                    Typed::Case(e) => p.publish(e).await,
                    Typed::Citizen(e) => p.publish(e).await,
                    Typed::Feedback(e) => p.publish(e).await,
                    Typed::Unit(e) => p.publish(e).await,
                    Typed::Procedure(e) => p.publish(e).await,
                })
            }
        })
        .buffered(in_flight);
    let (mut index, mut published, mut not_sent) = (0usize, 0usize, 0usize);
    let mut first_error = None;
    while let Some(result) = pending.next().await {
        match result {
            None => not_sent += 1,
            Some(Ok(receipt)) => {
                published += 1;
                say!("{}", receipt_json(&receipt));
            }
            Some(Err(e)) => {
                say_err!("event {index}: {e}");
                first_error.get_or_insert(e);
            }
        }
        index += 1;
    }
    publisher
        .flush(Duration::from_secs(30))
        .await
        .map_err(sdk_error)?;
    say_err!("published {published} of {total} event(s) to {}", spec.name);
    if let Some(e) = first_error {
        return Err(CliError::Failed(format!(
            "publishing to {} on Kafka at {} failed ({e}); the receipts printed are the events Kafka has",
            spec.name, config.kafka.bootstrap
        )));
    }
    if not_sent > 0 {
        return Err(CliError::Failed(format!(
            "interrupted: {not_sent} event(s) were not sent"
        )));
    }
    Ok(())
}

fn sdk_error(e: SdkError) -> CliError {
    if e.is_transient() {
        CliError::Failed(e.to_string())
    } else {
        CliError::Usage(e.to_string())
    }
}

fn receipt_json(r: &Receipt) -> Json {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "event_id": r.event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_as_lines_or_as_an_array() {
        let (a, b) = (json!({"a": 1}), json!({"a": 2}));
        let want = vec![EventJson::from_value(&a), EventJson::from_value(&b)];
        assert_eq!(parse_events("{\"a\":1}\n\n{\"a\":2}\n").unwrap(), want);
        assert_eq!(parse_events("  [{\"a\":1},{\"a\":2}]").unwrap(), want);
        let e = parse_events("{\"a\":1, \"a\":2}\n").unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let e = parse_events("{\"a\":1}\n{oops}\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_events("[1,").is_err());
        assert!(parse_events("").unwrap().is_empty());
    }
}
