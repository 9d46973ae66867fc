//! The KPI engine's configuration (the `[kpi]` section of `lienthong up`'s config).

use std::path::PathBuf;

use lienthong_bus::KafkaConfig;
use serde::Deserialize;

use crate::KpiError;
use crate::calendar::{Calendar, VIETNAM_2026};
use crate::reference::{ProcedureRef, Reference, ReferenceFile};

/// Where the engine reads, what it checks events against, and where it serves `/metrics`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// Address of the `/metrics` endpoint.
    pub listen: String,
    /// Kafka (`[kpi.kafka]`: `bootstrap` and `options`). Unset under `lienthong up`: the
    /// process's `[kafka]` section is used, security options included.
    pub kafka: Option<KafkaConfig>,
    /// The case events topic.
    pub case_topic: String,
    /// The feedback events topic.
    pub feedback_topic: String,
    /// The units reference topic, for the units' names (`lienthong_kpi_unit_info`); read if it
    /// exists when the engine starts, else the engine runs without names.
    pub units_topic: String,
    /// The procedures reference topic, for the top procedures' names
    /// (`lienthong_kpi_procedure_info`); read if it exists when the engine starts.
    pub procedures_topic: String,
    /// The schemas folder, for decoding with the catalog's local schema ids.
    pub schemas_dir: PathBuf,
    /// A Confluent-compatible schema registry to fetch writer schemas from by id; without it,
    /// the catalog's local ids are used (tests, the embedded demo).
    pub registry_url: Option<String>,
    /// The agency the engine reads the registry as (HTTP Basic user, the token as password);
    /// without it the token is sent as a bearer token.
    pub registry_agency: Option<String>,
    /// The registry token, inline (prefer `registry_token_file`). Redacted in logs.
    pub registry_token: Option<String>,
    /// A file holding the registry token.
    pub registry_token_file: Option<PathBuf>,
    /// A working-day calendar file (see `crates/kpi/calendars/vn-2026.toml`); without it, the
    /// built-in Viet Nam 2026 calendar.
    pub calendar_file: Option<PathBuf>,
    /// A reference file: `units = [...]` and `[[procedures]] code, level`.
    pub reference_file: Option<PathBuf>,
    /// Known unit codes, in addition to the reference file's.
    pub units: Vec<String>,
    /// Known procedures, in addition to the reference file's.
    pub procedures: Vec<ProcedureRef>,
    /// Procedures that get their own `procedure` label (at most 100); the rest are `other`.
    pub top_procedures: Vec<String>,
    /// How often the metrics are refreshed from the state (gauges depend on today's date).
    pub export_interval_ms: u64,
    /// Read the connectors' signed apply receipts (`[kpi.receipts]`, docs/signatures.md): the
    /// sync delay per agency and which agencies applied each event in `lienthong trace`.
    /// Unset: no receipts are read.
    pub receipts: Option<ReceiptsWatch>,
}

/// `[kpi.receipts]`: where the receipts are, and whose certificates sign them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsWatch {
    /// The certificates (PEM files) of the CAs whose agency certificates are taken: the city
    /// CA's `ca.crt`, and any national CA's.
    pub trusted_cas: Vec<PathBuf>,
    /// The receipts topic.
    #[serde(default = "default_receipts_topic")]
    pub topic: String,
    /// The certificate log.
    #[serde(default = "default_certificates_topic")]
    pub certificates_topic: String,
}

fn default_receipts_topic() -> String {
    lienthong_signing::RECEIPTS_TOPIC.into()
}

fn default_certificates_topic() -> String {
    lienthong_signing::CERTIFICATES_TOPIC.into()
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            listen: "127.0.0.1:9464".into(),
            kafka: None,
            case_topic: "hcm.case.events".into(),
            feedback_topic: "hcm.feedback.events".into(),
            units_topic: "hcm.reference.units".into(),
            procedures_topic: "hcm.reference.procedures".into(),
            schemas_dir: PathBuf::from("schemas"),
            registry_url: None,
            registry_agency: None,
            registry_token: None,
            registry_token_file: None,
            calendar_file: None,
            reference_file: None,
            units: Vec::new(),
            procedures: Vec::new(),
            top_procedures: Vec::new(),
            export_interval_ms: 1_000,
            receipts: None,
        }
    }
}

impl std::fmt::Debug for KpiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpiConfig")
            .field("listen", &self.listen)
            .field("kafka", &self.kafka)
            .field("case_topic", &self.case_topic)
            .field("feedback_topic", &self.feedback_topic)
            .field("units_topic", &self.units_topic)
            .field("procedures_topic", &self.procedures_topic)
            .field("schemas_dir", &self.schemas_dir)
            .field("registry_url", &self.registry_url)
            .field("registry_agency", &self.registry_agency)
            .field(
                "registry_token",
                &self.registry_token.as_ref().map(|_| "<redacted>"),
            )
            .field("registry_token_file", &self.registry_token_file)
            .field("calendar_file", &self.calendar_file)
            .field("reference_file", &self.reference_file)
            .field("units", &self.units.len())
            .field("procedures", &self.procedures.len())
            .field("top_procedures", &self.top_procedures)
            .field("export_interval_ms", &self.export_interval_ms)
            .field("receipts", &self.receipts)
            .finish()
    }
}

impl KpiConfig {
    /// The calendar: the file's, or the built-in Viet Nam 2026 one.
    pub fn calendar(&self) -> Result<Calendar, KpiError> {
        match &self.calendar_file {
            None => Calendar::from_toml(VIETNAM_2026, "built-in vn-2026.toml"),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| KpiError::Io {
                    path: path.clone(),
                    source,
                })?;
                Calendar::from_toml(&text, &path.display().to_string())
            }
        }
    }

    /// The reference lists: the file's and the inline ones. At least one unit and one
    /// procedure must be known, or every event would be an anomaly.
    pub fn reference(&self) -> Result<Reference, KpiError> {
        let mut files = Vec::new();
        if let Some(path) = &self.reference_file {
            files.push(ReferenceFile::load(path)?);
        }
        files.push(ReferenceFile {
            units: self.units.clone(),
            procedures: self.procedures.clone(),
        });
        let units: usize = files.iter().map(|f| f.units.len()).sum();
        let procedures: usize = files.iter().map(|f| f.procedures.len()).sum();
        if units == 0 || procedures == 0 {
            return Err(KpiError::Config(
                "no known units or procedures: set reference_file (or units and procedures)".into(),
            ));
        }
        Reference::new(files, &self.top_procedures)
    }

    /// Check what can be checked without the network.
    pub fn validate(&self) -> Result<(), KpiError> {
        match &self.kafka {
            None => return Err(KpiError::Config("kafka is not set".into())),
            Some(k) if k.bootstrap.trim().is_empty() => {
                return Err(KpiError::Config("kafka.bootstrap is empty".into()));
            }
            Some(_) => {}
        }
        if self.case_topic.is_empty() || self.feedback_topic.is_empty() {
            return Err(KpiError::Config(
                "case_topic and feedback_topic are required".into(),
            ));
        }
        if self.case_topic == self.feedback_topic {
            return Err(KpiError::Config(
                "case_topic and feedback_topic must differ".into(),
            ));
        }
        for (name, topic) in [
            ("units_topic", &self.units_topic),
            ("procedures_topic", &self.procedures_topic),
        ] {
            if *topic == self.case_topic || *topic == self.feedback_topic {
                return Err(KpiError::Config(format!(
                    "{name} must differ from case_topic and feedback_topic"
                )));
            }
        }
        if !self.units_topic.is_empty() && self.units_topic == self.procedures_topic {
            return Err(KpiError::Config(
                "units_topic and procedures_topic must differ".into(),
            ));
        }
        match &self.registry_url {
            Some(_) => {
                lienthong_registry::client::Credentials::from_config(
                    self.registry_agency.as_deref(),
                    self.registry_token.as_deref(),
                    self.registry_token_file.as_deref(),
                )
                .map_err(|e| KpiError::Config(e.to_string()))?;
            }
            None if self.registry_agency.is_some()
                || self.registry_token.is_some()
                || self.registry_token_file.is_some() =>
            {
                return Err(KpiError::Config(
                    "a registry credential is set but registry_url is not".into(),
                ));
            }
            None => {}
        }
        if self.export_interval_ms == 0 {
            return Err(KpiError::Config(
                "export_interval_ms must be positive".into(),
            ));
        }
        self.calendar()?;
        self.reference()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn good() -> KpiConfig {
        toml::from_str(
            r#"
            units = ["W1"]
            top_procedures = ["P1"]
            [kafka]
            bootstrap = "127.0.0.1:9092"
            options = { "sasl.password" = "hunter2", "client.id" = "kpi" }
            [[procedures]]
            code = "P1"
            level = "PARTIAL_ONLINE"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_good_config_validates_and_hides_secrets() {
        let c = good();
        c.validate().unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("client.id"));
        assert!(c.calendar().unwrap().name().contains("2026"));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let mut c = good();
        c.units.clear();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("no known units")
        );
        let mut c = good();
        c.registry_token = Some("t".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("registry_url is not")
        );
        c.registry_url = Some("http://r:8081".into());
        c.registry_token_file = Some("/no/such/token".into());
        assert!(c.validate().unwrap_err().to_string().contains("not both"));
        let mut c = good();
        c.kafka = None;
        assert!(c.validate().unwrap_err().to_string().contains("kafka"));
        let mut c = good();
        c.feedback_topic = c.case_topic.clone();
        assert!(c.validate().is_err());
        let mut c = good();
        c.calendar_file = Some("/nonexistent/calendar.toml".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
        let mut c = good();
        c.top_procedures = vec!["nope".into()];
        assert!(c.validate().is_err());
        let err = toml::from_str::<KpiConfig>("listen_addr = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
