//! Who may do what on the broker, derived from the catalog: the access control lists
//! `lienthong acl sync` keeps a secured cluster holding, and the SCRAM credentials
//! `lienthong agency add` issues.
//!
//! The rule is the catalog's ([`TopicSpec::may_publish`], [`TopicSpec::may_read`]), the same one
//! the SDK and the gateway apply, so the broker refuses what lienthong would have refused. Every
//! agency is the principal `User:<code>` (its SCRAM user name, or its certificate's common
//! name); the bus's own components have principals of their own ([`BusPrincipals`]); the bus's
//! administrator is a super user of the cluster and needs no ACL.
//!
//! What each principal is granted ([`desired`]):
//!
//! | principal | grant |
//! |---|---|
//! | agency | `WRITE`, `DESCRIBE` on each catalog topic it may publish |
//! | agency | `READ`, `DESCRIBE` on each catalog topic it may read |
//! | agency | on its own namespace, names starting `<code>.`: topics (`CREATE`, `WRITE`, `READ`, `DESCRIBE`: its dead-letter topic), consumer groups (`READ`, `DESCRIBE`: its connectors), transactional ids (`WRITE`, `DESCRIBE`) |
//! | gateway | `WRITE`, `READ`, `DESCRIBE` on every catalog topic (it publishes for agencies after the catalog's own check, and reads back for idempotency); transactional ids starting with its principal name |
//! | each component | `READ`, `DESCRIBE` on consumer groups starting with its principal name |
//! | registry | `CREATE`, `WRITE`, `READ`, `DESCRIBE`, `DESCRIBE_CONFIGS` on its schema log topic |
//! | KPI engine | `READ`, `DESCRIBE` on the case and feedback topics |

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use lienthong_contract::{AgencyKind, Catalog, TopicSpec};
use serde::Deserialize;

use crate::admin::Admin;
use crate::{BusError, KafkaConfig};

/// A kind of resource an ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
    /// The cluster itself.
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this name.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// What an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // Kafka's own operation names
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
}

/// One access control list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    /// The principal, `User:<name>`.
    pub principal: String,
    /// The kind of resource.
    pub resource: Resource,
    /// The resource's name (or prefix).
    pub name: String,
    /// Literal or prefixed.
    pub pattern: Pattern,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
    /// The client host, `*` for any.
    pub host: String,
}

impl Acl {
    fn allow(
        principal: &str,
        resource: Resource,
        name: &str,
        pattern: Pattern,
        op: Operation,
    ) -> Acl {
        Acl {
            principal: principal_of(principal),
            resource,
            name: name.to_string(),
            pattern,
            operation: op,
            permission: Permission::Allow,
            host: "*".into(),
        }
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = match self.pattern {
            Pattern::Literal => "",
            Pattern::Prefixed => "*",
        };
        write!(
            f,
            "{:?} {} {:?} on {:?} {}{pattern}",
            self.permission, self.principal, self.operation, self.resource, self.name
        )?;
        if self.host != "*" {
            write!(f, " from {}", self.host)?;
        }
        Ok(())
    }
}

/// The Kafka principal of a user name (a SCRAM user, a certificate's common name).
pub fn principal_of(name: &str) -> String {
    format!("User:{name}")
}

/// The principals of the bus's own components: their SASL user names, or the common names of
/// their certificates. Each component connects with its own (in its `[kafka] options`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusPrincipals {
    /// The HTTP gateway; its transactional ids must start with this name.
    pub gateway: String,
    /// The schema registry.
    pub registry: String,
    /// The KPI engine.
    pub kpi: String,
    /// The key service (personal data); its consumer groups start with this name.
    pub keys: String,
}

impl Default for BusPrincipals {
    fn default() -> BusPrincipals {
        BusPrincipals {
            gateway: "lienthong-gateway".into(),
            registry: "lienthong-registry".into(),
            kpi: "lienthong-kpi".into(),
            keys: "lienthong-keys".into(),
        }
    }
}

/// An agency as the broker knows it: its code (its principal's name) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyPrincipal {
    /// The agency's code, e.g. `26734` or `CATP`.
    pub code: String,
    /// Department or ward.
    pub kind: AgencyKind,
}

/// The prefix of an agency's own namespace: its topics, consumer groups and transactional
/// ids start with it.
pub fn namespace(code: &str) -> String {
    format!("{code}.")
}

/// The bus's own topics, besides the catalog's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusTopics {
    /// The schema registry's log.
    pub schema_log: String,
    /// The key service's topics (wrapped keys, grants, access records); empty when the bus
    /// does not seal personal data.
    pub key_service: Vec<String>,
    /// The certificate log, which every agency and component may read (to verify
    /// signatures) and only the admins write; `None` without `[signing]`.
    pub certificates: Option<String>,
}

/// Every ACL the catalog, the agencies and the bus's components call for.
pub fn desired(
    catalog: &Catalog,
    agencies: &[AgencyPrincipal],
    bus: &BusPrincipals,
    topics: &BusTopics,
) -> BTreeSet<Acl> {
    let schema_log_topic = topics.schema_log.as_str();
    let key_topics = topics.key_service.as_slice();
    use Operation::*;
    use Pattern::*;
    use Resource::*;
    let mut acls = BTreeSet::new();
    for agency in agencies {
        acls.extend(agency_acls(catalog, agency));
    }
    for topic in catalog.topics() {
        for op in [Write, Read, Describe] {
            acls.insert(Acl::allow(&bus.gateway, Topic, &topic.name, Literal, op));
        }
    }
    for op in [Write, Describe] {
        acls.insert(Acl::allow(
            &bus.gateway,
            TransactionalId,
            &bus.gateway,
            Prefixed,
            op,
        ));
    }
    // The components read by assignment, not as a group, but librdkafka still looks up the
    // coordinator of the group id every consumer has: theirs start with their principal's name.
    for component in [&bus.gateway, &bus.registry, &bus.kpi, &bus.keys] {
        for op in [Read, Describe] {
            acls.insert(Acl::allow(component, Group, component, Prefixed, op));
        }
    }
    for op in [Create, Write, Read, Describe, DescribeConfigs] {
        acls.insert(Acl::allow(
            &bus.registry,
            Topic,
            schema_log_topic,
            Literal,
            op,
        ));
    }
    for topic in ["hcm.case.events", "hcm.feedback.events"] {
        if catalog.topic(topic).is_ok() {
            for op in [Read, Describe] {
                acls.insert(Acl::allow(&bus.kpi, Topic, topic, Literal, op));
            }
        }
    }
    // The key service keeps its state on its own topics and follows the case events (a unit
    // handling an open case may read the applicant's record).
    for topic in key_topics {
        for op in [Create, Write, Read, Describe, DescribeConfigs] {
            acls.insert(Acl::allow(&bus.keys, Topic, topic, Literal, op));
        }
    }
    if !key_topics.is_empty() && catalog.topic("hcm.case.events").is_ok() {
        for op in [Read, Describe] {
            acls.insert(Acl::allow(&bus.keys, Topic, "hcm.case.events", Literal, op));
        }
    }
    if let Some(certificates) = &topics.certificates {
        let readers = agencies
            .iter()
            .map(|a| a.code.as_str())
            .chain([&bus.gateway, &bus.registry, &bus.kpi, &bus.keys].map(String::as_str));
        for reader in readers {
            for op in [Read, Describe] {
                acls.insert(Acl::allow(reader, Topic, certificates, Literal, op));
            }
        }
    }
    acls
}

/// The ACLs of one agency (what `lienthong agency add` applies).
pub fn agency_acls(catalog: &Catalog, agency: &AgencyPrincipal) -> BTreeSet<Acl> {
    use Operation::*;
    use Pattern::*;
    use Resource::*;
    let mut acls = BTreeSet::new();
    let me = agency.code.as_str();
    let grant = |acls: &mut BTreeSet<Acl>, topic: &TopicSpec, ops: &[Operation]| {
        for op in ops {
            acls.insert(Acl::allow(me, Topic, &topic.name, Literal, *op));
        }
    };
    for topic in catalog.topics() {
        if topic.may_publish(me, agency.kind) {
            grant(&mut acls, topic, &[Write, Describe]);
        }
        if topic.may_read(me, agency.kind) {
            grant(&mut acls, topic, &[Read, Describe]);
        }
    }
    let own = namespace(me);
    for op in [Create, Write, Read, Describe] {
        acls.insert(Acl::allow(me, Topic, &own, Prefixed, op));
    }
    for op in [Read, Describe] {
        acls.insert(Acl::allow(me, Group, &own, Prefixed, op));
    }
    for op in [Write, Describe] {
        acls.insert(Acl::allow(me, TransactionalId, &own, Prefixed, op));
    }
    acls
}

/// What a sync changes: the ACLs to create, and those the cluster holds that nobody declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclPlan {
    /// Declared, not on the cluster: created.
    pub missing: Vec<Acl>,
    /// On the cluster, not declared: reported, and deleted with `prune`.
    pub drift: Vec<Acl>,
    /// Declared and on the cluster.
    pub in_place: usize,
}

impl AclPlan {
    /// Compare what should be with what the cluster holds.
    pub fn new(desired: &BTreeSet<Acl>, actual: &[Acl]) -> AclPlan {
        let actual: BTreeSet<&Acl> = actual.iter().collect();
        AclPlan {
            missing: desired
                .iter()
                .filter(|a| !actual.contains(a))
                .cloned()
                .collect(),
            drift: actual
                .iter()
                .filter(|a| !desired.contains(**a))
                .map(|a| (*a).clone())
                .collect(),
            in_place: desired.iter().filter(|a| actual.contains(a)).count(),
        }
    }
}

/// The security administrator's view of a cluster, through `kafka` (which must carry a super
/// user's credentials). Blocking: call from a blocking thread.
pub struct SecurityAdmin {
    admin: Admin,
}

impl SecurityAdmin {
    /// Connect; `timeout` bounds each request.
    pub fn connect(kafka: &KafkaConfig, timeout: Duration) -> Result<SecurityAdmin, BusError> {
        Ok(SecurityAdmin {
            admin: Admin::new(kafka, timeout)?,
        })
    }

    /// Every ACL the cluster holds (of the kinds lienthong manages).
    pub fn acls(&mut self) -> Result<Vec<Acl>, BusError> {
        self.admin.describe_acls()
    }

    /// Compare `desired` with the cluster; unless `dry_run`, create what is missing and, with
    /// `prune`, delete the drift. Running it again changes nothing.
    pub fn sync(
        &mut self,
        desired: &BTreeSet<Acl>,
        dry_run: bool,
        prune: bool,
    ) -> Result<AclPlan, BusError> {
        let plan = AclPlan::new(desired, &self.acls()?);
        if !dry_run {
            self.admin.create_acls(&plan.missing)?;
            if prune {
                self.admin.delete_acls(&plan.drift)?;
            }
        }
        Ok(plan)
    }

    /// Create `acls` (those that exist are left as they are).
    pub fn grant(&mut self, acls: &BTreeSet<Acl>) -> Result<(), BusError> {
        let acls: Vec<Acl> = acls.iter().cloned().collect();
        self.admin.create_acls(&acls)
    }

    /// Set `user`'s SCRAM-SHA-512 secret (creating the user if new).
    pub fn set_scram_secret(&mut self, user: &str, secret: &str) -> Result<(), BusError> {
        self.admin.upsert_scram(user, secret, SCRAM_ITERATIONS)
    }

    /// Delete `user`'s SCRAM-SHA-512 credential: it can no longer authenticate.
    pub fn revoke_scram(&mut self, user: &str) -> Result<(), BusError> {
        self.admin.delete_scram(user)
    }
}

/// PBKDF2 iterations of a SCRAM credential (Kafka's minimum is 4096).
pub const SCRAM_ITERATIONS: i32 = 8192;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap()
    }

    fn agency(code: &str, kind: AgencyKind) -> AgencyPrincipal {
        AgencyPrincipal {
            code: code.into(),
            kind,
        }
    }

    fn has(acls: &BTreeSet<Acl>, who: &str, op: Operation, topic: &str) -> bool {
        acls.iter().any(|a| {
            a.principal == principal_of(who)
                && a.operation == op
                && a.resource == Resource::Topic
                && a.name == topic
                && a.permission == Permission::Allow
        })
    }

    #[test]
    fn only_the_police_may_write_citizen_records_and_wards_write_cases() {
        let c = catalog();
        let police = agency_acls(&c, &agency("CATP", AgencyKind::Department));
        let transport = agency_acls(&c, &agency("SGTVT", AgencyKind::Department));
        let ward = agency_acls(&c, &agency("26734", AgencyKind::Ward));
        assert!(has(
            &police,
            "CATP",
            Operation::Write,
            "hcm.citizen.records"
        ));
        assert!(!has(
            &transport,
            "SGTVT",
            Operation::Write,
            "hcm.citizen.records"
        ));
        assert!(!has(
            &ward,
            "26734",
            Operation::Write,
            "hcm.citizen.records"
        ));
        assert!(has(&ward, "26734", Operation::Write, "hcm.case.events"));
        assert!(!has(
            &ward,
            "26734",
            Operation::Write,
            "hcm.reference.units"
        ));
        assert!(has(&ward, "26734", Operation::Read, "hcm.reference.units"));
        // Its own namespace, and nobody else's.
        assert!(ward.iter().any(|a| a.resource == Resource::Group
            && a.name == "26734."
            && a.pattern == Pattern::Prefixed));
        assert!(ward.iter().all(|a| a.principal == "User:26734"));
        assert!(ward.iter().all(|a| a.operation != Operation::All
            && a.operation != Operation::Alter
            && a.operation != Operation::Delete));
    }

    #[test]
    fn the_plan_creates_what_is_missing_and_reports_what_nobody_declared() {
        let c = catalog();
        let agencies = [agency("26734", AgencyKind::Ward)];
        let want = desired(
            &c,
            &agencies,
            &BusPrincipals::default(),
            &BusTopics {
                schema_log: "_lienthong_schemas".into(),
                ..BusTopics::default()
            },
        );
        let mut held: Vec<Acl> = want.iter().skip(3).cloned().collect();
        let stranger = Acl::allow(
            "mallory",
            Resource::Topic,
            "hcm.citizen.records",
            Pattern::Literal,
            Operation::Read,
        );
        held.push(stranger.clone());
        let plan = AclPlan::new(&want, &held);
        assert_eq!(
            plan.missing,
            want.iter().take(3).cloned().collect::<Vec<_>>()
        );
        assert_eq!(plan.drift, vec![stranger]);
        assert_eq!(plan.in_place, want.len() - 3);
        let done: Vec<Acl> = want.iter().cloned().collect();
        assert_eq!(
            AclPlan::new(&want, &done),
            AclPlan {
                in_place: want.len(),
                ..AclPlan::default()
            }
        );
    }

    #[test]
    fn the_components_get_what_they_use_and_no_more() {
        let c = catalog();
        let bus = BusPrincipals::default();
        let key_topics = ["_lienthong_citizen_keys".to_string()];
        let topics = BusTopics {
            schema_log: "_lienthong_schemas".into(),
            key_service: key_topics.to_vec(),
            certificates: Some("_lienthong_certificates".into()),
        };
        let want = desired(&c, &[agency("26734", AgencyKind::Ward)], &bus, &topics);
        // Every agency and component reads the certificate log; nobody but the admin writes it.
        for reader in ["26734", "lienthong-gateway", "lienthong-keys"] {
            assert!(has(
                &want,
                reader,
                Operation::Read,
                "_lienthong_certificates"
            ));
            assert!(!has(
                &want,
                reader,
                Operation::Write,
                "_lienthong_certificates"
            ));
        }
        assert!(has(
            &want,
            "lienthong-keys",
            Operation::Write,
            "_lienthong_citizen_keys"
        ));
        assert!(has(
            &want,
            "lienthong-keys",
            Operation::Read,
            "hcm.case.events"
        ));
        assert!(!has(
            &want,
            "lienthong-keys",
            Operation::Read,
            "hcm.citizen.records"
        ));
        assert!(!has(
            &want,
            "lienthong-gateway",
            Operation::Read,
            "_lienthong_citizen_keys"
        ));
        assert!(
            !desired(
                &c,
                &[],
                &bus,
                &BusTopics {
                    schema_log: "_lienthong_schemas".into(),
                    ..BusTopics::default()
                }
            )
            .iter()
            .any(|a| a.principal == "User:lienthong-keys" && a.resource == Resource::Topic),
            "no key service, no grants for it"
        );
        assert!(has(
            &want,
            "lienthong-gateway",
            Operation::Write,
            "hcm.citizen.records"
        ));
        assert!(has(
            &want,
            "lienthong-kpi",
            Operation::Read,
            "hcm.case.events"
        ));
        assert!(!has(
            &want,
            "lienthong-kpi",
            Operation::Read,
            "hcm.citizen.records"
        ));
        assert!(has(
            &want,
            "lienthong-registry",
            Operation::Write,
            "_lienthong_schemas"
        ));
        assert!(!has(
            &want,
            "lienthong-registry",
            Operation::Read,
            "hcm.case.events"
        ));
    }
}
