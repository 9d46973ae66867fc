//! How every component reaches Kafka: one [`KafkaConfig`] (bootstrap servers and librdkafka
//! options, the `[kafka]` section of every config file), and the client profiles built from
//! it. No other crate creates a `ClientConfig`, so security options (`security.protocol`,
//! `sasl.*`, `ssl.*`) set once reach every client of every component.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// Bootstrap servers and librdkafka options. `Debug` redacts secret values.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub bootstrap: String,
    /// librdkafka settings passed through (e.g. `security.protocol`, `sasl.*`, `ssl.*`,
    /// `session.timeout.ms`, `linger.ms`). Each client takes those that apply to its kind:
    /// consumer-only settings are left out of producers, producer-only ones out of consumers,
    /// and both out of admin and watermark clients.
    pub options: BTreeMap<String, String>,
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

    /// The bootstrap servers, then `defaults`, then the options of the scopes in `keep`: an
    /// option always wins over a profile's default.
    fn build(&self, defaults: &[(&str, &str)], keep: &[Scope]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            if keep.contains(&scope(k)) {
                c.set(k, v);
            }
        }
        c
    }

    /// An idempotent producer that waits for every in-sync replica (`acks=all`).
    pub fn producer(&self) -> ClientConfig {
        self.producer_with(&[])
    }

    /// [`producer`](Self::producer) with a component's own `defaults` (e.g. `linger.ms`),
    /// which the options still override.
    pub fn producer_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut all = vec![("enable.idempotence", "true"), ("acks", "all")];
        all.extend_from_slice(defaults);
        self.build(&all, &[Scope::Any, Scope::Producer])
    }

    /// A transactional producer with `transactional_id` (idempotent, `acks=all`) and a
    /// component's own `defaults`.
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

    /// [`consumer`](Self::consumer) with a component's own `defaults`, which the options
    /// still override.
    pub fn consumer_with(&self, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut all = vec![
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("isolation.level", "read_committed"),
        ];
        all.extend_from_slice(defaults);
        self.build(&all, &[Scope::Any, Scope::Consumer])
    }

    /// An admin client (topics, configs, ACLs): connection and security settings only.
    pub fn admin(&self) -> ClientConfig {
        self.build(&[], &[Scope::Any])
    }

    /// A client outside any group for metadata and watermarks (lag, ends of the log):
    /// connection and security settings only.
    pub fn watermarks(&self) -> ClientConfig {
        self.build(&[], &[Scope::Any])
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
        // The options come after the profile's and the component's defaults.
        let acks = KafkaConfig::new("b").with_option("acks", "1");
        assert_eq!(acks.producer().get("acks"), Some("1"));
        let tuned = c.producer_with(&[("linger.ms", "5"), ("compression.type", "lz4")]);
        assert_eq!(tuned.get("linger.ms"), Some("20"));
        assert_eq!(tuned.get("compression.type"), Some("lz4"));
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
    }
}
