//! Rust types for the events in `schemas/`, for the typed codec path.
//!
//! Field names match the `.avsc` files exactly; Rust enums map to Avro unions (by record name)
//! and enums (by symbol). Optional fields are `Option` with `#[serde(default)]`, so a value
//! written with an older schema version, which lacks them, still decodes. The test
//! `events_match_schemas` in this crate round-trips a sample of every type through the
//! `.avsc` files so the two cannot drift apart.
//!
//! Timestamps are milliseconds since the Unix epoch (UTC), dates are days since the epoch, as in
//! Avro's `timestamp-millis` and `date` logical types.

use serde::{Deserialize, Serialize};

use crate::nfc::NormalizeText;

/// `NormalizeText` for a struct, by destructuring it: every field must be listed, so adding a
/// field without deciding about its text fails to compile.
macro_rules! normalize_fields {
    ($($t:ident { $($f:ident),* $(,)? })*) => {$(
        impl NormalizeText for $t {
            fn normalize_text(&mut self) {
                let $t { $($f),* } = self;
                $($f.normalize_text();)*
            }
        }
    )*};
}

/// `NormalizeText` for a union enum whose variants each hold one value.
macro_rules! normalize_variants {
    ($($t:ident { $($v:ident),* $(,)? })*) => {$(
        impl NormalizeText for $t {
            fn normalize_text(&mut self) {
                match self {
                    $($t::$v(inner) => inner.normalize_text(),)*
                }
            }
        }
    )*};
}

normalize_fields! {
    Envelope { event_id, occurred_at, producer_unit, aggregate_id, aggregate_version, correlation_id }
    CaseEvent { envelope, event }
    CaseSubmitted { procedure_code, receiving_unit, home_unit, channel, end_to_end_online, applicant_id, due_date, documents }
    Document { sha256, media_type, size_bytes, signature }
    Signature { signer_name, signer_unit, certificate_serial, issuer, algorithm, signed_at }
    CaseAccepted { processing_unit }
    CaseAssigned { from_unit, to_unit, kind, note }
    SupplementRequested { reason, requested_documents }
    SupplementReceived { documents }
    CaseCompleted { result, result_document }
    CaseRejected { reason }
    CaseWithdrawn { reason }
    ResultReturned { channel }
    CitizenRecord { envelope, profile }
    CitizenProfile { personal_id, full_name, birth_date, sex, permanent_unit, temporary_unit, address_line, phone, email }
    FeedbackEvent { envelope, event }
    FeedbackSubmitted { receiving_unit, channel, category, content, related_case_id, citizen_id }
    FeedbackAssigned { to_unit, due_date }
    FeedbackResolved { resolution, satisfaction }
    AdminUnitRecord { envelope, unit }
    AdminUnit { code, name, kind, valid_from, valid_to, replaces }
    ProcedureRecord { envelope, procedure }
    Procedure { code, name, owning_department, processing_days, level }
}

normalize_variants! {
    CaseEventKind { CaseSubmitted, CaseAccepted, CaseAssigned, SupplementRequested, SupplementReceived, CaseCompleted, CaseRejected, CaseWithdrawn, ResultReturned }
    FeedbackEventKind { FeedbackSubmitted, FeedbackAssigned, FeedbackResolved }
}

// Avro enums: their symbols are ASCII, nothing to normalise.
crate::nfc::no_text!(Channel, AssignmentKind, Sex, UnitKind, ServiceLevel);

/// The envelope every event carries; see `schemas/common/envelope.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of the event (UUID text), for deduplication.
    pub event_id: String,
    /// When it happened, milliseconds since the epoch (UTC).
    pub occurred_at: i64,
    /// Code of the publishing unit.
    pub producer_unit: String,
    /// Id of the case, citizen, feedback item or reference entry; the Kafka key.
    pub aggregate_id: String,
    /// Version of the aggregate after this event (1, 2, 3, …).
    pub aggregate_version: i64,
    /// Follows one case across agencies (UUID text).
    pub correlation_id: String,
}

/// How a citizen reached the administration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    /// The public-service portal.
    Online,
    /// A one-stop counter.
    Counter,
    /// By post.
    Postal,
}

/// A step in the life of a case (`hcm.case.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEvent {
    /// The envelope.
    pub envelope: Envelope,
    /// What happened.
    pub event: CaseEventKind,
}

/// The lifecycle steps of a case: the union in `case_event.avsc`. Variants are written by
/// record name and read by full name (the decoder reports `namespace.Name`), hence the aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum CaseEventKind {
    /// Filed.
    #[serde(alias = "vn.hcm.lienthong.case.CaseSubmitted")]
    CaseSubmitted(CaseSubmitted),
    /// Accepted for processing.
    #[serde(alias = "vn.hcm.lienthong.case.CaseAccepted")]
    CaseAccepted(CaseAccepted),
    /// Assigned or transferred to another unit.
    #[serde(alias = "vn.hcm.lienthong.case.CaseAssigned")]
    CaseAssigned(CaseAssigned),
    /// More documents requested; the clock pauses.
    #[serde(alias = "vn.hcm.lienthong.case.SupplementRequested")]
    SupplementRequested(SupplementRequested),
    /// Documents supplied; the clock runs again.
    #[serde(alias = "vn.hcm.lienthong.case.SupplementReceived")]
    SupplementReceived(SupplementReceived),
    /// Decided.
    #[serde(alias = "vn.hcm.lienthong.case.CaseCompleted")]
    CaseCompleted(CaseCompleted),
    /// Refused.
    #[serde(alias = "vn.hcm.lienthong.case.CaseRejected")]
    CaseRejected(CaseRejected),
    /// Withdrawn by the applicant.
    #[serde(alias = "vn.hcm.lienthong.case.CaseWithdrawn")]
    CaseWithdrawn(CaseWithdrawn),
    /// The result reached the applicant.
    #[serde(alias = "vn.hcm.lienthong.case.ResultReturned")]
    ResultReturned(ResultReturned),
}

/// A case was filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSubmitted {
    /// Procedure code.
    pub procedure_code: String,
    /// Unit where it was filed.
    pub receiving_unit: String,
    /// The applicant's home unit.
    pub home_unit: String,
    /// How it was filed.
    pub channel: Channel,
    /// Handled end to end online.
    pub end_to_end_online: bool,
    /// The applicant's 12-digit personal id.
    pub applicant_id: String,
    /// Legal due date, days since the epoch.
    pub due_date: i32,
    /// Attached documents.
    pub documents: Vec<Document>,
}

/// A document's fingerprint and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// IANA media type.
    pub media_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Digital signature, if signed.
    #[serde(default)]
    pub signature: Option<Signature>,
}

/// A digital signature's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Who signed.
    pub signer_name: String,
    /// The signing official's unit, if any.
    #[serde(default)]
    pub signer_unit: Option<String>,
    /// Certificate serial number.
    pub certificate_serial: String,
    /// Issuing certificate authority.
    pub issuer: String,
    /// Signature algorithm.
    pub algorithm: String,
    /// When signed, milliseconds since the epoch.
    pub signed_at: i64,
}

/// Accepted for processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAccepted {
    /// Unit that will process the case.
    pub processing_unit: String,
}

/// Assignment or transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentKind {
    /// Assigned within the processing chain.
    Assigned,
    /// Transferred to another competent unit.
    Transferred,
}

/// The case moved to another unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAssigned {
    /// From this unit.
    pub from_unit: String,
    /// To this unit.
    pub to_unit: String,
    /// Assignment or transfer.
    pub kind: AssignmentKind,
    /// A note.
    #[serde(default)]
    pub note: Option<String>,
}

/// More documents requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplementRequested {
    /// Why.
    pub reason: String,
    /// Which documents.
    #[serde(default)]
    pub requested_documents: Vec<String>,
}

/// Documents supplied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplementReceived {
    /// The documents.
    #[serde(default)]
    pub documents: Vec<Document>,
}

/// Decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseCompleted {
    /// The outcome.
    pub result: String,
    /// The result document, if any.
    #[serde(default)]
    pub result_document: Option<Document>,
}

/// Refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRejected {
    /// Why.
    pub reason: String,
}

/// Withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseWithdrawn {
    /// Why, if said.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Result returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReturned {
    /// How.
    pub channel: Channel,
}

/// A citizen's profile (`hcm.citizen.records`); a tombstone (no value) erases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenRecord {
    /// The envelope.
    pub envelope: Envelope,
    /// The profile.
    pub profile: CitizenProfile,
}

/// Sex as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Not specified.
    Unspecified,
}

/// The profile fields; every one is personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenProfile {
    /// 12-digit personal id.
    pub personal_id: String,
    /// Full name.
    pub full_name: String,
    /// Birth date, days since the epoch.
    pub birth_date: i32,
    /// Sex.
    pub sex: Sex,
    /// Permanent residence unit.
    pub permanent_unit: String,
    /// Temporary residence unit.
    #[serde(default)]
    pub temporary_unit: Option<String>,
    /// Street address.
    #[serde(default)]
    pub address_line: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
}

/// A step of a feedback item (`hcm.feedback.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    /// The envelope.
    pub envelope: Envelope,
    /// What happened.
    pub event: FeedbackEventKind,
}

/// The union in `feedback_event.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedbackEventKind {
    /// Submitted.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackSubmitted")]
    FeedbackSubmitted(FeedbackSubmitted),
    /// Assigned to a unit.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackAssigned")]
    FeedbackAssigned(FeedbackAssigned),
    /// Resolved.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackResolved")]
    FeedbackResolved(FeedbackResolved),
}

/// A citizen's feedback arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackSubmitted {
    /// Receiving unit.
    pub receiving_unit: String,
    /// Channel.
    pub channel: Channel,
    /// Category.
    pub category: String,
    /// The citizen's text.
    pub content: String,
    /// The case it is about, if any.
    #[serde(default)]
    pub related_case_id: Option<String>,
    /// The citizen, unless anonymous.
    #[serde(default)]
    pub citizen_id: Option<String>,
}

/// Assigned to a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackAssigned {
    /// The unit.
    pub to_unit: String,
    /// Due date, days since the epoch.
    pub due_date: i32,
}

/// Resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackResolved {
    /// The answer.
    pub resolution: String,
    /// Rating 1–5, if given.
    #[serde(default)]
    pub satisfaction: Option<i32>,
}

/// An administrative unit (`hcm.reference.units`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUnitRecord {
    /// The envelope.
    pub envelope: Envelope,
    /// The unit.
    pub unit: AdminUnit,
}

/// Kind of unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnitKind {
    /// City department.
    Department,
    /// Ward (phường).
    Ward,
    /// Commune (xã).
    Commune,
    /// Special zone (đặc khu).
    SpecialZone,
}

/// One unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUnit {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: UnitKind,
    /// First valid day, days since the epoch.
    pub valid_from: i32,
    /// Last valid day, if ended.
    #[serde(default)]
    pub valid_to: Option<i32>,
    /// Codes merged into it.
    #[serde(default)]
    pub replaces: Vec<String>,
}

/// A procedure (`hcm.reference.procedures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    /// The envelope.
    pub envelope: Envelope,
    /// The procedure.
    pub procedure: Procedure,
}

/// How far a procedure can be done online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceLevel {
    /// Not online.
    Offline,
    /// Partly online.
    PartialOnline,
    /// End to end online.
    FullOnline,
}

/// One procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Procedure {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Owning department's code.
    pub owning_department: String,
    /// Legal processing time, working days.
    pub processing_days: i32,
    /// Online level.
    pub level: ServiceLevel,
}
