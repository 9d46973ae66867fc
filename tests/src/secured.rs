//! The suite's secured Apache Kafka (`ops/kafka.sh start --secured`, started by
//! `ops/services.sh up`): SASL_SSL with SCRAM-SHA-512 on the bootstrap port, mutual TLS on
//! another, the StandardAuthorizer refusing whatever no ACL grants, and certificates of the
//! city CA (`ops/city-ca.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use lienthong_bus::KafkaConfig;

use crate::*;

/// Its bootstrap list (SASL_SSL).
pub const ENV_KAFKA_SECURED: &str = "LIENTHONG_KAFKA_SECURED_BOOTSTRAP";
/// Its mTLS bootstrap list.
pub const ENV_KAFKA_SECURED_MTLS: &str = "LIENTHONG_KAFKA_SECURED_MTLS_BOOTSTRAP";
/// The city CA's certificate, which its brokers' certificates chain to.
pub const ENV_KAFKA_SECURED_CA: &str = "LIENTHONG_KAFKA_SECURED_CA";
/// The SCRAM secret of its super user, `lienthong-admin`.
pub const ENV_KAFKA_SECURED_ADMIN_SECRET: &str = "LIENTHONG_KAFKA_SECURED_ADMIN_SECRET";

/// The bus administrator's user name on a secured cluster.
pub const ADMIN_USER: &str = "lienthong-admin";

/// A client of any secured cluster at `bootstrap` (SASL_SSL, SCRAM-SHA-512), trusting `ca`.
pub fn scram_config(bootstrap: &str, ca: &Path, user: &str, secret: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap)
        .with_option("security.protocol", "SASL_SSL")
        .with_option("sasl.mechanism", "SCRAM-SHA-512")
        .with_option("sasl.username", user)
        .with_option("sasl.password", secret)
        .with_option("ssl.ca.location", &ca.display().to_string())
}

/// The secured node.
#[derive(Debug, Clone)]
pub struct SecuredKafka {
    /// SASL_SSL bootstrap list.
    pub bootstrap: String,
    /// mTLS bootstrap list.
    pub mtls_bootstrap: String,
    /// The city CA's certificate.
    pub ca: PathBuf,
    admin_secret: String,
}

/// Look up the secured node, without failing.
pub fn try_secured_kafka() -> Result<SecuredKafka, ServiceError> {
    let service = "The secured Apache Kafka node";
    let bootstrap = env_var(service, ENV_KAFKA_SECURED)?;
    check_reachable(service, &bootstrap)?;
    let mtls_bootstrap = env_var(service, ENV_KAFKA_SECURED_MTLS)?;
    let ca = PathBuf::from(env_var(service, ENV_KAFKA_SECURED_CA)?);
    let admin_secret = env_var(service, ENV_KAFKA_SECURED_ADMIN_SECRET)?;
    Ok(SecuredKafka {
        bootstrap,
        mtls_bootstrap,
        ca,
        admin_secret,
    })
}

/// The secured node; the test fails, naming the command to run, if it is not there.
pub fn secured_kafka() -> SecuredKafka {
    require(try_secured_kafka())
}

impl SecuredKafka {
    /// A client of `user` with SCRAM secret `secret`, over TLS.
    pub fn scram(&self, user: &str, secret: &str) -> KafkaConfig {
        scram_config(&self.bootstrap, &self.ca, user, secret)
    }

    /// The bus administrator (a super user).
    pub fn admin(&self) -> KafkaConfig {
        self.scram(ADMIN_USER, &self.admin_secret)
    }

    /// The admin's secret (for a config file a test writes).
    pub fn admin_secret(&self) -> &str {
        &self.admin_secret
    }

    /// A client authenticating with the certificate `ops/city-ca.sh issue NAME` made.
    pub fn mtls(&self, certificate_dir: &Path, name: &str) -> KafkaConfig {
        let file = |ext: &str| {
            certificate_dir
                .join(format!("{name}.{ext}"))
                .display()
                .to_string()
        };
        KafkaConfig::new(&self.mtls_bootstrap)
            .with_option("security.protocol", "SSL")
            .with_option("ssl.ca.location", &self.ca.display().to_string())
            .with_option("ssl.certificate.location", &file("crt"))
            .with_option("ssl.key.location", &file("key"))
    }

    /// Issue a client certificate of the city CA with common name `name` (principal
    /// `User:<name>`); returns its folder.
    pub fn issue_certificate(&self, name: &str) -> Result<PathBuf> {
        let out = Command::new(repo_root().join("ops/city-ca.sh"))
            .args(["issue", name])
            .output()
            .context("running ops/city-ca.sh")?;
        if !out.status.success() {
            bail!(
                "ops/city-ca.sh issue {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}
