//! `lienthong pii …`: the city's admins' side of personal data (docs/personal-data.md). Grants
//! are made and revoked, citizens erased, and access reported, on the key service's own
//! topics, with `[kafka]` (or `[privacy.kafka]`) and the master secret of `[privacy]`.

use std::collections::BTreeSet;
use std::sync::Arc;

use lienthong_bus::state_log::{StateLog, StateLogConfig};
use lienthong_contract::{Catalog, PersonalDataClass};
use lienthong_privacy::{CitizenAccess, Grant, KeyService, KeyServiceConfig, MasterKey, now_ms};
use lienthong_telemetry::say;
use rdkafka::consumer::DefaultConsumerContext;
use tokio_util::sync::CancellationToken;

use crate::{CliError, Config, PiiCommand};

type Service = KeyService<DefaultConsumerContext>;

/// The master secret of `[privacy]`: its file, else `LIENTHONG_MASTER_KEY`.
pub fn master_key(config: &crate::config::PrivacyConfig) -> Result<MasterKey, CliError> {
    let bad = |e: lienthong_privacy::PrivacyError| CliError::Usage(format!("privacy: {e}"));
    match &config.master_key_file {
        Some(path) => MasterKey::from_file(path).map_err(bad),
        None => MasterKey::from_env().map_err(bad)?.ok_or_else(|| {
            CliError::Usage(format!(
                "privacy: no master_key_file, and {} is not set",
                lienthong_privacy::MASTER_KEY_ENV
            ))
        }),
    }
}

/// The key service's topics and cluster, from `[privacy]`.
pub fn service_config(config: &Config, privacy: &crate::config::PrivacyConfig) -> KeyServiceConfig {
    let mut c = KeyServiceConfig::new(
        privacy
            .kafka
            .clone()
            .unwrap_or_else(|| config.kafka.clone()),
    );
    c.replication = privacy.replication;
    c.keys_topic = privacy.keys_topic.clone();
    c.grants_topic = privacy.grants_topic.clone();
    c.access_topic = privacy.access_topic.clone();
    // Its consumer groups start with its principal's name: what `acl sync` grants it.
    c.group_prefix = config.principals.keys.clone();
    c
}

fn privacy(config: &Config) -> Result<&crate::config::PrivacyConfig, CliError> {
    config.privacy.as_ref().ok_or_else(|| {
        CliError::Usage(
            "privacy: this needs a [privacy] section (see docs/personal-data.md)".into(),
        )
    })
}

async fn open(config: &Config, shutdown: &CancellationToken) -> Result<Service, CliError> {
    let p = privacy(config)?;
    let master = master_key(p)?;
    KeyService::open(
        &service_config(config, p),
        &master,
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .map_err(|e| CliError::Failed(e.to_string()))
}

fn date_ms(date: &str) -> Result<i64, CliError> {
    let days = lienthong_contract::json::parse_date(date)
        .ok_or_else(|| CliError::Usage(format!("--until {date:?}: a date YYYY-MM-DD")))?;
    // The whole day: until midnight after it, Vietnam time (UTC+7).
    Ok((days + 1) * 86_400_000 - 7 * 3_600_000)
}

/// Run one `pii` command.
pub async fn run(config: &Config, catalog: &Catalog, command: PiiCommand) -> Result<(), CliError> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    match command {
        PiiCommand::NewMasterKey => {
            let secret = MasterKey::generate().map_err(|e| CliError::Failed(e.to_string()))?;
            say!("{secret}");
            Ok(())
        }
        PiiCommand::Grant {
            agency,
            topic,
            classes,
            purpose,
            legal_basis,
            until,
            by,
        } => {
            catalog
                .topic(&topic)
                .map_err(|e| CliError::Usage(format!("--topic: {e}")))?;
            let classes: BTreeSet<PersonalDataClass> = classes
                .split(',')
                .map(|c| {
                    PersonalDataClass::parse(c.trim()).ok_or_else(|| {
                        CliError::Usage(format!("--classes: {c:?} is not a personal-data class"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let grant = Grant {
                agency,
                topic,
                classes,
                purpose,
                legal_basis,
                expires_at_ms: date_ms(&until)?,
                granted_by: by,
                granted_at_ms: now_ms(),
            };
            grant
                .check(now_ms())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let service = open(config, &shutdown).await?;
            let id = service
                .grant(&grant)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            crate::cert::audit(
                config,
                &grant.granted_by,
                "pii.grant",
                &id,
                &format!(
                    "{} may read {} of {} for {:?} on {:?} until {until}",
                    grant.agency,
                    class_names(&grant.classes),
                    grant.topic,
                    grant.purpose,
                    grant.legal_basis
                ),
            )
            .await?;
            say!(
                "granted {id}: {} may read {} of {} for {:?} until {until}",
                grant.agency,
                class_names(&grant.classes),
                grant.topic,
                grant.purpose
            );
            say!("{id}");
            Ok(())
        }
        PiiCommand::Revoke { id, by } => {
            let service = open(config, &shutdown).await?;
            let had = service
                .revoke(&id)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if had {
                crate::cert::audit(config, &by, "pii.revoke", &id, "").await?;
                say!("revoked {id}");
                Ok(())
            } else {
                Err(CliError::Failed(format!("no grant {id}")))
            }
        }
        PiiCommand::Grants => {
            let service = open(config, &shutdown).await?;
            let now = now_ms();
            for (id, g) in service.grants() {
                say!(
                    "{id}\t{}\t{}\t{}\t{:?}\t{:?}\t{}",
                    g.agency,
                    g.topic,
                    class_names(&g.classes),
                    g.purpose,
                    g.legal_basis,
                    if g.expires_at_ms > now {
                        "live"
                    } else {
                        "expired"
                    }
                );
            }
            Ok(())
        }
        PiiCommand::Erase { personal_id, by } => {
            if !lienthong_contract::catalog::FieldFormat::PersonalId.accepts(&personal_id) {
                return Err(CliError::Usage(format!(
                    "{personal_id:?} is not a 12-digit personal id"
                )));
            }
            let service = Arc::new(open(config, &shutdown).await?);
            let pseudonym = service.pseudonym(&personal_id);
            let had = service
                .erase(&by, &pseudonym)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            erase_rows(config, &pseudonym).await?;
            // The trail names the pseudonym, never the personal id.
            crate::cert::audit(
                config,
                &by,
                "pii.erase",
                &pseudonym,
                if had {
                    "data key destroyed"
                } else {
                    "no data key"
                },
            )
            .await?;
            say!(
                "erased {pseudonym}: {}; a tombstone on hcm.citizen.records removes the stores' rows",
                if had {
                    "its data key is destroyed"
                } else {
                    "it had no data key"
                }
            );
            Ok(())
        }
        PiiCommand::Report { citizen } => {
            let p = privacy(config)?;
            let master = master_key(p)?;
            let pseudonym = master.pseudonyms().of(&citizen);
            let sc = service_config(config, p);
            let log = StateLog::open(
                "access log",
                &StateLogConfig {
                    kafka: sc.kafka.clone(),
                    topic: sc.access_topic.clone(),
                    replication: sc.replication,
                    topic_config: Vec::new(),
                    group: format!("{}-report-{}", sc.group_prefix, std::process::id()),
                },
                CitizenAccess::new(pseudonym.clone()),
                DefaultConsumerContext,
                shutdown.child_token(),
            )
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
            let records = log.read().records.clone();
            say!("# citizen {pseudonym}: {} access record(s)", records.len());
            say!("when (UTC)\tagency\taction\ttopic\tpurpose\tbasis");
            for r in records {
                say!(
                    "{}\t{}\t{}\t{}\t{:?}\t{}",
                    lienthong_contract::json::format_timestamp_micros(r.at_ms * 1000, 3),
                    r.agency,
                    r.action,
                    r.topic,
                    r.purpose,
                    r.basis
                );
            }
            Ok(())
        }
    }
}

/// The tombstone that removes the citizen's rows from every store.
async fn erase_rows(config: &Config, pseudonym: &str) -> Result<(), CliError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = config
        .kafka
        .producer()
        .create()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    producer
        .send(
            FutureRecord::<str, [u8]>::to("hcm.citizen.records").key(pseudonym),
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| CliError::Failed(format!("the tombstone on hcm.citizen.records: {e}")))?;
    Ok(())
}

/// `name,residence`: the classes as the catalog spells them.
fn class_names(classes: &BTreeSet<PersonalDataClass>) -> String {
    classes
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join(",")
}
