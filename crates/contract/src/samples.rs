//! Deterministic sample events of every kind, for tests, golden vectors and benchmarks.
//!
//! `typical_case_submitted` is the benchmark's "typical case-submitted event": a birth
//! registration filed at a ward for a citizen of another ward, with two signed documents.

use crate::events::*;

const DAY_2026_11_02: i32 = 20_394; // days since 1970-01-01
const T0: i64 = 1_762_070_400_000; // 2025-11-02T08:00:00Z in milliseconds

/// An envelope for `aggregate_id` at `version`, with ids derived from `seed`.
pub fn envelope(seed: u64, producer_unit: &str, aggregate_id: &str, version: i64) -> Envelope {
    Envelope {
        event_id: uuid_like(seed),
        occurred_at: T0 + seed as i64 * 1_000,
        producer_unit: producer_unit.into(),
        aggregate_id: aggregate_id.into(),
        aggregate_version: version,
        correlation_id: uuid_like(seed ^ 0x5eed),
    }
}

/// A well-formed UUID text derived from `seed` (not random: samples are reproducible).
pub fn uuid_like(seed: u64) -> String {
    let a = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = a.rotate_left(17) ^ 0xA5A5_5A5A_F00D_BEEF;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 52) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn document(seed: u64, signed: bool) -> Document {
    Document {
        sha256: format!("{:016x}", seed).repeat(4),
        media_type: "application/pdf".into(),
        size_bytes: 180_000 + seed as i64,
        signature: signed.then(|| Signature {
            signer_name: "Trần Thị Bích Ngọc".into(),
            signer_unit: Some("26734".into()),
            certificate_serial: "540101010A2B3C4D".into(),
            issuer: "VNPT-CA".into(),
            algorithm: "RSA-SHA256".into(),
            signed_at: T0 - 3_600_000,
            value: None,
            signed_digest: None,
            certificate_id: None,
        }),
    }
}

/// The typical case-submitted event.
pub fn typical_case_submitted() -> CaseEvent {
    CaseEvent {
        envelope: envelope(1, "26734", "HS-26734-2025-000123", 1),
        event: CaseEventKind::CaseSubmitted(CaseSubmitted {
            procedure_code: "1.001193".into(),
            receiving_unit: "26734".into(),
            home_unit: "27004".into(),
            channel: Channel::Online,
            end_to_end_online: true,
            applicant_id: "079203001234".into(),
            due_date: DAY_2026_11_02 + 5,
            documents: vec![document(1, true), document(2, false)],
        }),
    }
}

/// One event of every case lifecycle step, in order, for one case.
pub fn case_lifecycle() -> Vec<CaseEvent> {
    let id = "HS-26734-2025-000123";
    let kinds = vec![
        typical_case_submitted().event,
        CaseEventKind::CaseAccepted(CaseAccepted {
            processing_unit: "STP".into(),
        }),
        CaseEventKind::CaseAssigned(CaseAssigned {
            from_unit: "26734".into(),
            to_unit: "STP".into(),
            kind: AssignmentKind::Transferred,
            note: Some("Chuyển Sở Tư pháp xử lý".into()),
        }),
        CaseEventKind::SupplementRequested(SupplementRequested {
            reason: "Thiếu giấy chứng sinh".into(),
            requested_documents: vec!["giấy chứng sinh".into()],
        }),
        CaseEventKind::SupplementReceived(SupplementReceived {
            documents: vec![document(3, false)],
        }),
        CaseEventKind::CaseCompleted(CaseCompleted {
            result: "Giấy khai sinh số 123/2025".into(),
            result_document: Some(document(4, true)),
        }),
        CaseEventKind::ResultReturned(ResultReturned {
            channel: Channel::Postal,
        }),
        CaseEventKind::CaseRejected(CaseRejected {
            reason: "Hồ sơ không hợp lệ".into(),
        }),
        CaseEventKind::CaseWithdrawn(CaseWithdrawn { reason: None }),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, event)| CaseEvent {
            envelope: envelope(
                10 + i as u64,
                if i == 0 { "26734" } else { "STP" },
                id,
                i as i64 + 1,
            ),
            event,
        })
        .collect()
}

/// A citizen profile.
pub fn citizen_record() -> CitizenRecord {
    CitizenRecord {
        envelope: envelope(100, "CATP", "079203001234", 3),
        profile: CitizenProfile {
            personal_id: "079203001234".into(),
            full_name: "Nguyễn Văn Hùng".into(),
            birth_date: 12_345,
            sex: Sex::Male,
            permanent_unit: "27004".into(),
            temporary_unit: Some("26734".into()),
            address_line: Some("12 Lê Lợi".into()),
            phone: Some("+84901234567".into()),
            email: None,
        },
        sealed: None,
    }
}

/// The citizen record of citizen number `n` (its personal id `0792` and `n` in 8 digits):
/// the envelope's event id, the name, birth date, sex, units, address and phone all differ
/// from citizen to citizen, as in a real register. Benchmarks use it so that a clear record
/// compresses the way a real one does, not like copies of [`citizen_record`].
pub fn citizen_record_of(n: u64) -> CitizenRecord {
    const FAMILY: [&str; 12] = [
        "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    ];
    const MIDDLE: [&str; 8] = ["Văn", "Thị", "Minh", "Ngọc", "Thanh", "Quốc", "Hoài", "Gia"];
    const GIVEN: [&str; 16] = [
        "Hùng", "Lan", "An", "Bình", "Châu", "Dũng", "Hạnh", "Khoa", "Linh", "Mai", "Nam", "Phúc",
        "Quân", "Thảo", "Trí", "Yến",
    ];
    const STREETS: [&str; 10] = [
        "Lê Lợi",
        "Nguyễn Huệ",
        "Hai Bà Trưng",
        "Điện Biên Phủ",
        "Cách Mạng Tháng Tám",
        "Võ Văn Tần",
        "Lý Tự Trọng",
        "Pasteur",
        "Nam Kỳ Khởi Nghĩa",
        "Trần Hưng Đạo",
    ];
    const UNITS: [&str; 6] = ["26734", "26740", "27004", "27259", "26743", "27007"];
    // A fixed mix of the number's bits, so that neighbours differ in every field.
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ n;
    let pick = |list: &[&'static str], shift: u32| list[((h >> shift) as usize) % list.len()];
    let personal_id = format!("0792{:08}", n % 100_000_000);
    CitizenRecord {
        envelope: envelope(n, "CATP", &personal_id, 1),
        profile: CitizenProfile {
            personal_id: personal_id.clone(),
            full_name: format!(
                "{} {} {}",
                pick(&FAMILY, 0),
                pick(&MIDDLE, 8),
                pick(&GIVEN, 16)
            ),
            birth_date: -7_000 + (h % 25_000) as i32,
            sex: if h & 1 == 0 { Sex::Female } else { Sex::Male },
            permanent_unit: pick(&UNITS, 24).into(),
            temporary_unit: (h & 6 == 0).then(|| pick(&UNITS, 32).into()),
            address_line: Some(format!("{} {}", 1 + (h >> 40) % 300, pick(&STREETS, 48))),
            phone: Some(format!("+849{:08}", (h >> 13) % 100_000_000)),
            email: None,
        },
        sealed: None,
    }
}

/// One event of every feedback step.
pub fn feedback_lifecycle() -> Vec<FeedbackEvent> {
    let id = "PA-2025-000042";
    vec![
        FeedbackEvent {
            envelope: envelope(200, "26734", id, 1),
            event: FeedbackEventKind::FeedbackSubmitted(FeedbackSubmitted {
                receiving_unit: "26734".into(),
                channel: Channel::Online,
                category: "trật tự đô thị".into(),
                content: "Vỉa hè đường Nguyễn Huệ bị lấn chiếm".into(),
                related_case_id: None,
                citizen_id: Some("079203001234".into()),
            }),
        },
        FeedbackEvent {
            envelope: envelope(201, "26734", id, 2),
            event: FeedbackEventKind::FeedbackAssigned(FeedbackAssigned {
                to_unit: "SXD".into(),
                due_date: DAY_2026_11_02 + 10,
            }),
        },
        FeedbackEvent {
            envelope: envelope(202, "SXD", id, 3),
            event: FeedbackEventKind::FeedbackResolved(FeedbackResolved {
                resolution: "Đã xử lý".into(),
                satisfaction: Some(4),
            }),
        },
    ]
}

/// An administrative unit created by the 2025 merger.
pub fn admin_unit() -> AdminUnitRecord {
    AdminUnitRecord {
        envelope: envelope(300, "SNV", "26734", 1),
        unit: AdminUnit {
            code: "26734".into(),
            name: "Phường Sài Gòn".into(),
            kind: UnitKind::Ward,
            valid_from: 20_270,
            valid_to: None,
            replaces: vec!["26737".into(), "26740".into()],
        },
    }
}

/// A procedure.
pub fn procedure() -> ProcedureRecord {
    ProcedureRecord {
        envelope: envelope(400, "SKHCN", "1.001193", 1),
        procedure: Procedure {
            code: "1.001193".into(),
            name: "Đăng ký khai sinh".into(),
            owning_department: "STP".into(),
            processing_days: 5,
            level: ServiceLevel::FullOnline,
        },
    }
}

/// `case_schema` (the catalog's case event schema, as JSON) with `edit` applied to the fields
/// of its `CaseAccepted` branch: a writer schema of another version, for evolution tests.
/// `None` when the schema does not have that shape.
pub fn case_schema_with_accepted(
    case_schema: &str,
    edit: &dyn Fn(&mut Vec<serde_json::Value>),
) -> Option<String> {
    let mut json: serde_json::Value = serde_json::from_str(case_schema).ok()?;
    let branches = json["fields"][1]["type"].as_array_mut()?;
    let accepted = branches.iter_mut().find(|b| b["name"] == "CaseAccepted")?;
    edit(accepted["fields"].as_array_mut()?);
    Some(json.to_string())
}

/// A compatible evolution of `case_schema`: `CaseAccepted` gains an optional `note`.
pub fn case_schema_with_note(case_schema: &str) -> Option<String> {
    case_schema_with_accepted(case_schema, &|fields| {
        fields.push(serde_json::json!({"name": "note", "type": ["null", "string"], "default": null, "lienthong.personal_data": "none"}))
    })
}

/// A `CaseAccepted` of case `case_id` at `version` by STP, with `note`, written with
/// [`case_schema_with_note`] registered as schema `id` in `codec`; its ids from `seed`.
pub fn accepted_with_note(
    codec: &crate::Codec,
    id: u32,
    seed: u64,
    case_id: &str,
    version: i64,
    note: Option<String>,
) -> crate::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    enum Kind {
        CaseAccepted {
            processing_unit: String,
            note: Option<String>,
        },
    }
    #[derive(serde::Serialize)]
    struct Event {
        envelope: Envelope,
        event: Kind,
    }
    let event = Event {
        envelope: envelope(seed, "STP", case_id, version),
        event: Kind::CaseAccepted {
            processing_unit: "STP".into(),
            note,
        },
    };
    codec.encode_to_vec(id, &event)
}
