//! `lienthong acl sync` and `lienthong agency add|revoke`: a secured cluster's ACLs and SCRAM
//! credentials, from the catalog (who may publish and read what) and the config's agencies
//! (`[[registry.agencies]]`: code and kind). Both connect with `[kafka]` as the bus's admin, a
//! super user of the cluster. The rules are in `lienthong_bus::acl`; docs/security.md says how
//! credentials are issued, rotated and revoked.

use std::collections::BTreeSet;
use std::time::Duration;

use lienthong_bus::BusError;
use lienthong_bus::acl::{self, Acl, AclPlan, AgencyPrincipal, SecurityAdmin};
use lienthong_contract::{AgencyKind, Catalog};
use lienthong_telemetry::say;

use crate::{CliError, Config};

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `acl sync`: what the catalog and the agencies call for, against what the cluster holds.
pub async fn acl_sync(
    config: &Config,
    catalog: &Catalog,
    dry_run: bool,
    prune: bool,
) -> Result<(), CliError> {
    let topics = acl::BusTopics {
        schema_log: config.registry.topic.clone(),
        key_service: config
            .privacy
            .as_ref()
            .map(|p| {
                vec![
                    p.keys_topic.clone(),
                    p.grants_topic.clone(),
                    p.access_topic.clone(),
                ]
            })
            .unwrap_or_default(),
        certificates: config.signing.as_ref().map(|s| s.topic.clone()),
    };
    let desired = acl::desired(catalog, &agencies(config), &config.principals, &topics);
    let kafka = config.kafka.clone();
    let plan = blocking(move || {
        SecurityAdmin::connect(&kafka, ADMIN_TIMEOUT)?.sync(&desired, dry_run, prune)
    })
    .await?;
    print_plan(&plan, dry_run, prune);
    if !plan.drift.is_empty() && !prune {
        return Err(CliError::Failed(format!(
            "{} ACL(s) on the cluster that nobody declared (drift, above); remove them with --prune, or declare them",
            plan.drift.len()
        )));
    }
    Ok(())
}

fn print_plan(plan: &AclPlan, dry_run: bool, prune: bool) {
    let (create, delete) = if dry_run {
        ("would create", "would delete")
    } else {
        ("created", "deleted")
    };
    for a in &plan.missing {
        say!("+ {a}\t({create})");
    }
    for a in &plan.drift {
        if prune {
            say!("- {a}\t({delete})");
        } else {
            say!("! {a}\t(drift: on the cluster, declared nowhere)");
        }
    }
    say!(
        "{} in place, {} {create}, {} drift{}",
        plan.in_place,
        plan.missing.len(),
        plan.drift.len(),
        if prune && !plan.drift.is_empty() {
            format!(" {delete}")
        } else {
            String::new()
        }
    );
}

/// `agency add CODE --kind K`: a new SCRAM secret for the agency (printed once) and its ACLs.
/// For an agency that exists, the secret is replaced: that is how a secret is rotated.
pub async fn agency_add(
    config: &Config,
    catalog: &Catalog,
    code: &str,
    kind: AgencyKind,
) -> Result<(), CliError> {
    if !lienthong_contract::catalog::FieldFormat::UnitCode.accepts(code) {
        return Err(CliError::Usage(format!(
            "agency code {code:?} is not {}",
            lienthong_contract::catalog::FieldFormat::UnitCode.describe()
        )));
    }
    let agency = AgencyPrincipal {
        code: code.to_string(),
        kind,
    };
    let acls: BTreeSet<Acl> = acl::agency_acls(catalog, &agency);
    let secret = new_secret()?;
    let kafka = config.kafka.clone();
    let (user, key) = (code.to_string(), secret.clone());
    let granted = acls.clone();
    blocking(move || {
        let mut admin = SecurityAdmin::connect(&kafka, ADMIN_TIMEOUT)?;
        admin.set_scram_secret(&user, &key)?;
        admin.grant(&granted)
    })
    .await?;
    for a in &acls {
        say!("+ {a}");
    }
    say!(
        "agency {code} ({kind}): SCRAM-SHA-512 user {code:?}, {} ACLs",
        acls.len()
    );
    say!("secret (shown once; give it to the agency over a trusted channel): {secret}");
    say!("its clients connect with:");
    say!("  security.protocol = \"SASL_SSL\"");
    say!("  sasl.mechanism = \"SCRAM-SHA-512\"");
    say!("  sasl.username = \"{code}\"");
    say!("  sasl.password = \"<the secret>\"");
    say!("  ssl.ca.location = \"<the city CA certificate>\"");
    if !agencies(config).iter().any(|a| a.code == code) {
        say!(
            "note: {code} is not in [[registry.agencies]]; add it there (code, kind, token_sha256) so that `acl sync` keeps its ACLs instead of reporting them as drift"
        );
    }
    Ok(())
}

/// `component add NAME`: a new SCRAM secret for the component's principal, printed once.
pub async fn component_add(config: &Config, user: &str) -> Result<(), CliError> {
    let secret = new_secret()?;
    let kafka = config.kafka.clone();
    let (name, key) = (user.to_string(), secret.clone());
    blocking(move || SecurityAdmin::connect(&kafka, ADMIN_TIMEOUT)?.set_scram_secret(&name, &key))
        .await?;
    say!(
        "component principal User:{user}: SCRAM-SHA-512 secret set; its ACLs come from `lienthong acl sync`"
    );
    say!(
        "secret (shown once; put it in that component's [kafka] options as sasl.password): {secret}"
    );
    Ok(())
}

/// `agency revoke CODE`: delete the agency's SCRAM credential; it can no longer authenticate.
pub async fn agency_revoke(config: &Config, code: &str) -> Result<(), CliError> {
    let kafka = config.kafka.clone();
    let user = code.to_string();
    blocking(move || SecurityAdmin::connect(&kafka, ADMIN_TIMEOUT)?.revoke_scram(&user)).await?;
    say!(
        "agency {code}: SCRAM credential deleted; remove it from [[registry.agencies]] and run `lienthong acl sync --prune` to remove its ACLs"
    );
    Ok(())
}

fn agencies(config: &Config) -> Vec<AgencyPrincipal> {
    config
        .registry
        .agencies
        .iter()
        .map(|a| AgencyPrincipal {
            code: a.code.clone(),
            kind: a.kind,
        })
        .collect()
}

/// 32 random bytes from the operating system, as hex.
fn new_secret() -> Result<String, CliError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| CliError::Failed(format!("no randomness from the operating system: {e}")))?;
    Ok(hex::encode(bytes))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CliError::Failed(format!("the admin task failed: {e}")))?
        .map_err(|e| match e {
            BusError::Invalid(m) => CliError::Usage(m),
            other => CliError::Failed(other.to_string()),
        })
}
