//! How every component reaches Kafka: one [`KafkaConfig`] (bootstrap servers and librdkafka
//! options, the `[kafka]` section of every config file), and the client profiles built from
//! it. No other crate creates a `ClientConfig`, so security options (`security.protocol`,
//! `sasl.*`, `ssl.*`) set once reach every client of every component.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// Bootstrap servers and librdkafka options. `Debug` redacts secret values. An option the bus
/// sets itself on every client of a kind ([`RESERVED`]) is refused by name when the config is
/// read.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "KafkaToml")]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub bootstrap: String,
    /// librdkafka settings passed through (e.g. `security.protocol`, `sasl.*`, `ssl.*`,
    /// `session.timeout.ms`, `linger.ms`). Each client takes those that apply to its kind:
    /// consumer-only settings are left out of producers, producer-only ones out of consumers,
    /// and both out of admin and watermark clients.
    pub options: BTreeMap<String, String>,
}

/// Options the bus sets itself, whatever the config says: which group a consumer is in and
/// that it commits nothing by itself and reads only committed records, that a producer is
/// idempotent and waits for every in-sync replica, and which transactional id a producer has.
/// Letting a config change them would let it lose or duplicate data silently.
pub const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "transactional.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

/// `[kafka]` as written, before its options are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct KafkaToml {
    bootstrap: String,
    options: BTreeMap<String, String>,
}

impl Default for KafkaToml {
    fn default() -> Self {
        let KafkaConfig { bootstrap, options } = KafkaConfig::default();
        KafkaToml { bootstrap, options }
    }
}

impl TryFrom<KafkaToml> for KafkaConfig {
    type Error = String;

    fn try_from(t: KafkaToml) -> Result<Self, String> {
        if t.bootstrap.trim().is_empty() {
            return Err("kafka.bootstrap is empty".into());
        }
        if let Some(k) = t.options.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(format!(
                "kafka.options: {k:?} is set by lienthong itself and cannot be configured"
            ));
        }
        Ok(KafkaConfig {
            bootstrap: t.bootstrap,
            options: t.options,
        })
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig::new("127.0.0.1:9092")
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("options", &options)
            .finish()
    }
}

/// Whether an option's value is a secret, never to be shown.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| k.contains(s))
}

/// The kind of client an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Connection, security and protocol settings: every client.
    Any,
    /// Only consumers.
    Consumer,
    /// Only producers.
    Producer,
}

fn scope(key: &str) -> Scope {
    const CONSUMER: &[&str] = &[
        "group.",
        "session.",
        "heartbeat.",
        "max.poll",
        "fetch.",
        "auto.",
        "enable.auto",
        "partition.assignment",
        "isolation.",
        "queued.",
        "enable.partition.eof",
        "check.crcs",
        "consume.",
        "coordinator.",
    ];
    const PRODUCER: &[&str] = &[
        "acks",
        "request.required.acks",
        "linger.ms",
        "queue.buffering.",
        "batch.",
        "compression.",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "transactional.id",
        "transaction.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "message.send.max.retries",
        "retries",
        "partitioner",
        "sticky.partitioning",
    ];
    if CONSUMER.iter().any(|p| key.starts_with(p)) {
        Scope::Consumer
    } else if PRODUCER.iter().any(|p| key.starts_with(p)) {
        Scope::Producer
    } else {
        Scope::Any
    }
}

impl KafkaConfig {
    /// Just a bootstrap list, no options.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            options: BTreeMap::new(),
        }
    }

    /// The same, with `key = value` added to the options.
    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        self.options.insert(key.to_string(), value.to_string());
        self
    }

    /// The bootstrap servers, then `defaults`, then the options of the scopes in `keep`, then
    /// `fixed`: an option wins over a default, never over what the profile fixes. A component
    /// that needs a setting of its own whatever the options say sets it on the result.
    fn build(
        &self,
        defaults: &[(&str, &str)],
        keep: &[Scope],
        fixed: &[(&str, &str)],
    ) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            if keep.contains(&scope(k)) && !RESERVED.contains(&k.as_str()) {
                c.set(k, v);
            }
        }
        for (k, v) in fixed {
            c.set(*k, *v);
        }
        c
    }

    /// An idempotent producer that waits for every in-sync replica (`acks=all`).
    pub fn producer(&self) -> ClientConfig {
        self.producer_with(&[])
    }

    /// [`producer`](Self::producer) with a component's own tuning `defaults` (e.g.
    /// `linger.ms`), which the options still override.
    pub fn producer_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.build(
            defaults,
            &[Scope::Any, Scope::Producer],
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
    }

    /// A transactional producer with `transactional_id` (idempotent, `acks=all`) and a
    /// component's own tuning `defaults`.
    pub fn transactional_producer(
        &self,
        transactional_id: &str,
        defaults: &[(&str, &str)],
    ) -> ClientConfig {
        let mut c = self.producer_with(defaults);
        c.set("transactional.id", transactional_id);
        c
    }

    /// A consumer in `group` that commits nothing by itself, reads only committed records
    /// (`read_committed`) and starts at the beginning of a partition it has no offset for.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        self.consumer_with(group, &[])
    }

    /// [`consumer`](Self::consumer) with a component's own tuning `defaults` (e.g. how much
    /// it prefetches), which the options still override.
    pub fn consumer_with(&self, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut all = vec![("enable.partition.eof", "false")];
        all.extend_from_slice(defaults);
        self.build(
            &all,
            &[Scope::Any, Scope::Consumer],
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
            ],
        )
    }

    /// An admin client (topics, configs, ACLs): connection and security settings only.
    pub fn admin(&self) -> ClientConfig {
        self.build(&[], &[Scope::Any], &[])
    }

    /// A client outside any group for metadata and watermarks (lag, ends of the log):
    /// connection and security settings only.
    pub fn watermarks(&self) -> ClientConfig {
        self.build(&[], &[Scope::Any], &[])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig::new("b:9092")
            .with_option("security.protocol", "SASL_SSL")
            .with_option("sasl.password", "hunter2")
            .with_option("session.timeout.ms", "6000")
            .with_option("linger.ms", "20")
    }

    #[test]
    fn every_profile_carries_the_security_options_and_only_its_own_kind() {
        let c = config();
        for (name, client) in [
            ("producer", c.producer()),
            ("transactional", c.transactional_producer("t", &[])),
            ("consumer", c.consumer("g")),
            ("admin", c.admin()),
            ("watermarks", c.watermarks()),
        ] {
            assert_eq!(client.get("bootstrap.servers"), Some("b:9092"), "{name}");
            assert_eq!(client.get("security.protocol"), Some("SASL_SSL"), "{name}");
            assert_eq!(client.get("sasl.password"), Some("hunter2"), "{name}");
            let producer = name == "producer" || name == "transactional";
            assert_eq!(
                client.get("linger.ms").is_some(),
                producer,
                "{name}: linger.ms"
            );
            assert_eq!(
                client.get("session.timeout.ms").is_some(),
                name == "consumer",
                "{name}: session.timeout.ms"
            );
        }
        assert_eq!(c.producer().get("enable.idempotence"), Some("true"));
        assert_eq!(
            c.consumer("g").get("isolation.level"),
            Some("read_committed")
        );
        assert_eq!(
            c.transactional_producer("t", &[]).get("transactional.id"),
            Some("t")
        );
        // The options come after the component's tuning defaults, never over what a profile
        // fixes.
        let tuned = c.producer_with(&[("linger.ms", "5"), ("compression.type", "lz4")]);
        assert_eq!(tuned.get("linger.ms"), Some("20"));
        assert_eq!(tuned.get("compression.type"), Some("lz4"));
        let forced = KafkaConfig::new("b")
            .with_option("acks", "1")
            .with_option("isolation.level", "read_uncommitted")
            .with_option("group.id", "other");
        assert_eq!(forced.producer().get("acks"), Some("all"));
        let consumer = forced.consumer("g");
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }

    #[test]
    fn debug_redacts_secrets_and_unknown_keys_are_refused() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"), "{shown}");
        let e = toml::from_str::<KafkaConfig>("bootstrap = \"x\"\nboostrap = \"y\"").unwrap_err();
        assert!(e.to_string().contains("boostrap"), "{e}");
        let c: KafkaConfig = toml::from_str("options = { \"client.id\" = \"a\" }").unwrap();
        assert_eq!(c.bootstrap, "127.0.0.1:9092");
        for key in ["transactional.id", "isolation.level", "acks", "group.id"] {
            let e = toml::from_str::<KafkaConfig>(&format!("options = {{ {key:?} = \"x\" }}"))
                .unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        assert!(toml::from_str::<KafkaConfig>("bootstrap = \" \"").is_err());
    }
}
