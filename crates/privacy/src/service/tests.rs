use lienthong_contract::PersonalDataClass;

use super::*;
use crate::CitizenKeys;

type Service = KeyService<rdkafka::consumer::DefaultConsumerContext>;

fn grant(agency: &str, purpose: &str, expires_at_ms: i64) -> Grant {
    Grant {
        agency: agency.into(),
        topic: "hcm.citizen.records".into(),
        classes: [PersonalDataClass::Name].into_iter().collect(),
        purpose: purpose.into(),
        legal_basis: "Nghị định 118/2025/NĐ-CP".into(),
        expires_at_ms,
        granted_by: "SKHCN".into(),
        granted_at_ms: now_ms(),
    }
}

#[tokio::test]
async fn keys_are_released_only_under_a_live_grant_and_every_release_is_recorded() {
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let service = Arc::new(Service::in_memory(&master));
    let citizen = service
        .seal_key("CATP", "hcm.citizen.records", "079203001234")
        .await
        .unwrap();
    assert_eq!(service.access_records(), 1, "sealing is recorded");
    let p = citizen.pseudonym.clone();
    let topic = "hcm.citizen.records";

    // No grant: refused, and the reader's source masks.
    assert!(matches!(
        service.release("26734", topic, &p, "hồ sơ"),
        Err(PrivacyError::NotGranted(_))
    ));
    let reader = GrantedKeys::new(service.clone(), "26734".into(), "hồ sơ".into());
    assert!(reader.opening(topic, &p).await.unwrap().is_none());

    // A grant that is not complete, or already expired, is refused.
    let mut bad = grant("26734", "hồ sơ", now_ms() + 60_000);
    bad.legal_basis = " ".into();
    assert!(service.grant(&bad).await.is_err());
    assert!(
        service
            .grant(&grant("26734", "hồ sơ", now_ms() - 1))
            .await
            .is_err()
    );

    // Granted: the key, with the grant's classes; recorded.
    let id = service
        .grant(&grant("26734", "hồ sơ", now_ms() + 60_000))
        .await
        .unwrap();
    let opening = reader.opening(topic, &p).await.unwrap().unwrap();
    assert_eq!(opening.key.as_bytes(), citizen.key.as_bytes());
    assert_eq!(
        opening.classes,
        [PersonalDataClass::Name].into_iter().collect()
    );
    assert_eq!(service.access_records(), 2);
    reader.flush().await.unwrap();
    // Another purpose, another agency or another topic is not covered.
    assert!(service.release("26734", topic, &p, "thống kê").is_err());
    assert!(service.release("26740", topic, &p, "hồ sơ").is_err());
    assert!(
        service
            .release("26734", "hcm.case.events", &p, "hồ sơ")
            .is_err()
    );

    // Revoked: refused at the next fetch, without a restart.
    assert!(service.revoke(&id).await.unwrap());
    assert!(reader.opening(topic, &p).await.unwrap().is_none());
    assert!(!service.revoke(&id).await.unwrap());

    // Erased: nothing to release even under a grant; the erasure is recorded too.
    service
        .grant(&grant("26734", "hồ sơ", now_ms() + 60_000))
        .await
        .unwrap();
    assert!(service.erase("SKHCN", &p).await.unwrap());
    assert!(reader.opening(topic, &p).await.unwrap().is_none());
    assert_eq!(service.access_records(), 3, "sealed, released, erased");
}

#[test]
fn a_grant_record_under_another_grants_id_is_ignored() {
    let mut grants = Grants::default();
    let g = grant("26734", "hồ sơ", i64::MAX);
    let value = serde_json::to_vec(&g).unwrap();
    lienthong_bus::state_log::LogState::apply(&mut grants, b"g-0000", Some(&value));
    assert!(grants.live(&g.id(), 0).is_none());
    lienthong_bus::state_log::LogState::apply(&mut grants, g.id().as_bytes(), Some(&value));
    assert!(grants.live(&g.id(), 0).is_some());
    lienthong_bus::state_log::LogState::apply(&mut grants, g.id().as_bytes(), Some(b"{not json"));
    assert!(grants.live(&g.id(), 0).is_some(), "malformed: skipped");
    lienthong_bus::state_log::LogState::apply(&mut grants, g.id().as_bytes(), None);
    assert!(grants.live(&g.id(), 0).is_none());
}

#[test]
fn a_report_holds_one_citizens_records_only() {
    let mut report = CitizenAccess::new("pn1_aa".into());
    let record = |p: &str| AccessRecord {
        at_ms: 1,
        agency: "26734".into(),
        pseudonym: p.into(),
        topic: "hcm.citizen.records".into(),
        purpose: "hồ sơ".into(),
        basis: "g-1".into(),
        action: "released".into(),
    };
    for (key, p) in [
        ("pn1_aa/01", "pn1_aa"),
        ("pn1_aab/02", "pn1_aab"),
        ("pn1_aa/03", "pn1_bb"),
    ] {
        let v = serde_json::to_vec(&record(p)).unwrap();
        lienthong_bus::state_log::LogState::apply(&mut report, key.as_bytes(), Some(&v));
    }
    assert_eq!(report.records, vec![record("pn1_aa")]);
}

/// A unit handling an open case of the citizen reads the citizen's record without a grant,
/// while the case is open there; recorded with the case as its basis.
#[tokio::test]
async fn a_unit_handling_an_open_case_of_the_citizen_gets_the_key_until_it_closes() {
    use lienthong_contract::events::{
        AssignmentKind, CaseAccepted, CaseAssigned, CaseEvent, CaseEventKind,
    };
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let service = Service::in_memory(&master);
    let pid = "079203001234";
    let citizen = service
        .seal_key("CATP", "hcm.citizen.records", pid)
        .await
        .unwrap();
    let topic = "hcm.citizen.records";
    let event = |kind: CaseEventKind| {
        let mut e: CaseEvent = lienthong_contract::samples::typical_case_submitted();
        e.envelope.aggregate_id = "HS-NTK-1".into();
        e.event = kind;
        e
    };
    // Filed at ward 26740 by a resident of another ward, in clear (the index pseudonymises).
    let mut submitted = lienthong_contract::samples::typical_case_submitted();
    submitted.envelope.aggregate_id = "HS-NTK-1".into();
    let CaseEventKind::CaseSubmitted(s) = &mut submitted.event else {
        unreachable!()
    };
    s.applicant_id = pid.into();
    s.receiving_unit = "26740".into();
    assert!(
        service
            .release("26740", topic, &citizen.pseudonym, "x")
            .is_err()
    );
    service.apply_case_event(&submitted);
    let released = service
        .release("26740", topic, &citizen.pseudonym, "x")
        .unwrap();
    assert_eq!(released.grant, "case:HS-NTK-1");
    assert!(released.classes.contains(&PersonalDataClass::Residence));
    assert_eq!(service.open_cases(), 1);
    // Not another ward, and not another topic.
    assert!(
        service
            .release("26734", topic, &citizen.pseudonym, "x")
            .is_err()
    );
    assert!(
        service
            .release("26740", "hcm.case.events", &citizen.pseudonym, "x")
            .is_err()
    );
    // Accepted by a department, then transferred away from the ward: the department reads,
    // the ward no longer does.
    service.apply_case_event(&event(CaseEventKind::CaseAccepted(CaseAccepted {
        processing_unit: "STP".into(),
    })));
    service.apply_case_event(&event(CaseEventKind::CaseAssigned(CaseAssigned {
        from_unit: "26740".into(),
        to_unit: "27259".into(),
        kind: AssignmentKind::Transferred,
        note: None,
    })));
    assert!(
        service
            .release("STP", topic, &citizen.pseudonym, "x")
            .is_ok()
    );
    assert!(
        service
            .release("27259", topic, &citizen.pseudonym, "x")
            .is_ok()
    );
    assert!(
        service
            .release("26740", topic, &citizen.pseudonym, "x")
            .is_err()
    );
    // Completed: closed for everyone.
    let completed = lienthong_contract::samples::case_lifecycle()
        .into_iter()
        .find_map(|e| match e.event {
            CaseEventKind::CaseCompleted(c) => Some(c),
            _ => None,
        })
        .unwrap();
    service.apply_case_event(&event(CaseEventKind::CaseCompleted(completed)));
    assert!(
        service
            .release("STP", topic, &citizen.pseudonym, "x")
            .is_err()
    );
    assert_eq!(service.open_cases(), 0);
}
