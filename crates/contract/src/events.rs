//! Rust types for the events in `schemas/`, for the typed codec path.
//!
//! Field names match the `.avsc` files exactly; Rust enums map to Avro unions (by record name)
//! and enums (by symbol). Optional fields are `Option` with a `None` default, so a value written
//! with an older schema version, which lacks them, still decodes. The test
//! `events_match_schemas` in this crate round-trips a sample of every type through the
//! `.avsc` files so the two cannot drift apart.
//!
//! Timestamps are milliseconds since the Unix epoch (UTC), dates are days since the epoch, as in
//! Avro's `timestamp-millis` and `date` logical types.
//!
//! Every type with text is generic over its string type `S`, `String` by default. Producers
//! build owned events (`CaseEvent`); a sink decodes **zero-copy** views (`CaseEvent<&str>`)
//! whose text borrows from the Kafka record, binds them straight into its statements, and
//! never allocates a string per field — decoding runs about 1.5 times as fast that way.

use serde::{Deserialize, Serialize};

use crate::nfc::NormalizeText;

/// `NormalizeText` and [`WriteAvro`](crate::write::WriteAvro) for a struct, from one list of
/// its fields in schema order. Both destructure it, so every field must be listed: adding a
/// field without deciding about its text fails to compile. The order is checked against the
/// writer schema before the SDK writes with it.
macro_rules! record_fields {
    ($($t:ident { $($f:ident),* $(,)? })*) => {
        $(
            impl NormalizeText for $t {
                fn normalize_text(&mut self) {
                    let $t { $($f),* } = self;
                    $($f.normalize_text();)*
                }
            }
        )*
        crate::write::write_fields! { $($t { $($f),* })* }
    };
}

/// `NormalizeText` and `WriteAvro` for a union enum whose variants each hold one record, listed
/// in the order of the union's branches.
macro_rules! union_variants {
    ($($t:ident { $($v:ident),* $(,)? })*) => {
        $(
            impl NormalizeText for $t {
                fn normalize_text(&mut self) {
                    match self {
                        $($t::$v(inner) => inner.normalize_text(),)*
                    }
                }
            }
        )*
        crate::write::write_variants! { $($t { $($v),* })* }
    };
}

/// `NormalizeText` (nothing: Avro symbols are ASCII) and `WriteAvro` for an Avro enum, its
/// variants in declaration order with their symbols.
macro_rules! enum_symbols {
    ($($t:ident { $($v:ident = $symbol:literal),* $(,)? })*) => {
        crate::nfc::no_text!($($t),*);
        crate::write::write_symbols! { $($t { $($v = $symbol),* })* }
    };
}

// Defaults for fields added to a schema after its first version (explicit functions rather than
// `#[serde(default)]`, which would demand `S: Default` of every string type).
fn none<T>() -> Option<T> {
    None
}

fn empty<T>() -> Vec<T> {
    Vec::new()
}

record_fields! {
    Envelope { event_id, occurred_at, producer_unit, aggregate_id, aggregate_version, correlation_id }
    CaseEvent { envelope, event }
    CaseSubmitted { procedure_code, receiving_unit, home_unit, channel, end_to_end_online, applicant_id, due_date, documents }
    Document { sha256, media_type, size_bytes, signature }
    Signature { signer_name, signer_unit, certificate_serial, issuer, algorithm, signed_at, value, signed_digest, certificate_id }
    CaseAccepted { processing_unit }
    CaseAssigned { from_unit, to_unit, kind, note }
    SupplementRequested { reason, requested_documents }
    SupplementReceived { documents }
    CaseCompleted { result, result_document }
    CaseRejected { reason }
    CaseWithdrawn { reason }
    ResultReturned { channel }
    CitizenRecord { envelope, profile, sealed }
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

union_variants! {
    CaseEventKind { CaseSubmitted, CaseAccepted, CaseAssigned, SupplementRequested, SupplementReceived, CaseCompleted, CaseRejected, CaseWithdrawn, ResultReturned }
    FeedbackEventKind { FeedbackSubmitted, FeedbackAssigned, FeedbackResolved }
}

enum_symbols! {
    Channel { Online = "ONLINE", Counter = "COUNTER", Postal = "POSTAL", Unknown = "UNKNOWN" }
    AssignmentKind { Assigned = "ASSIGNED", Transferred = "TRANSFERRED", Unknown = "UNKNOWN" }
    Sex { Female = "FEMALE", Male = "MALE", Unspecified = "UNSPECIFIED" }
    UnitKind { Department = "DEPARTMENT", Ward = "WARD", Commune = "COMMUNE", SpecialZone = "SPECIAL_ZONE", Unknown = "UNKNOWN" }
    ServiceLevel { Offline = "OFFLINE", PartialOnline = "PARTIAL_ONLINE", FullOnline = "FULL_ONLINE", Unknown = "UNKNOWN" }
}

/// The envelope every event carries; see `schemas/common/envelope.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<S = String> {
    /// Unique id of the event (UUID text), for deduplication.
    pub event_id: S,
    /// When it happened, milliseconds since the epoch (UTC).
    pub occurred_at: i64,
    /// Code of the publishing unit.
    pub producer_unit: S,
    /// Id of the case, citizen, feedback item or reference entry; the Kafka key.
    pub aggregate_id: S,
    /// Version of the aggregate after this event (1, 2, 3, …).
    pub aggregate_version: i64,
    /// Follows one case across agencies (UUID text).
    pub correlation_id: S,
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
    /// A value added to the schema after this code was written (the schema's default).
    /// Publishers never send it.
    #[serde(other)]
    Unknown,
}

/// A step in the life of a case (`hcm.case.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEvent<S = String> {
    /// The envelope.
    pub envelope: Envelope<S>,
    /// What happened.
    pub event: CaseEventKind<S>,
}

/// The lifecycle steps of a case: the union in `case_event.avsc`. Variants are written by
/// record name and read by full name (the decoder reports `namespace.Name`), hence the aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum CaseEventKind<S = String> {
    /// Filed.
    #[serde(alias = "vn.hcm.lienthong.case.CaseSubmitted")]
    CaseSubmitted(CaseSubmitted<S>),
    /// Accepted for processing.
    #[serde(alias = "vn.hcm.lienthong.case.CaseAccepted")]
    CaseAccepted(CaseAccepted<S>),
    /// Assigned or transferred to another unit.
    #[serde(alias = "vn.hcm.lienthong.case.CaseAssigned")]
    CaseAssigned(CaseAssigned<S>),
    /// More documents requested; the clock pauses.
    #[serde(alias = "vn.hcm.lienthong.case.SupplementRequested")]
    SupplementRequested(SupplementRequested<S>),
    /// Documents supplied; the clock runs again.
    #[serde(alias = "vn.hcm.lienthong.case.SupplementReceived")]
    SupplementReceived(SupplementReceived<S>),
    /// Decided.
    #[serde(alias = "vn.hcm.lienthong.case.CaseCompleted")]
    CaseCompleted(CaseCompleted<S>),
    /// Refused.
    #[serde(alias = "vn.hcm.lienthong.case.CaseRejected")]
    CaseRejected(CaseRejected<S>),
    /// Withdrawn by the applicant.
    #[serde(alias = "vn.hcm.lienthong.case.CaseWithdrawn")]
    CaseWithdrawn(CaseWithdrawn<S>),
    /// The result reached the applicant.
    #[serde(alias = "vn.hcm.lienthong.case.ResultReturned")]
    ResultReturned(ResultReturned),
}

/// A case was filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSubmitted<S = String> {
    /// Procedure code.
    pub procedure_code: S,
    /// Unit where it was filed.
    pub receiving_unit: S,
    /// The applicant's home unit.
    pub home_unit: S,
    /// How it was filed.
    pub channel: Channel,
    /// Handled end to end online.
    pub end_to_end_online: bool,
    /// The applicant's 12-digit personal id.
    pub applicant_id: S,
    /// Legal due date, days since the epoch.
    pub due_date: i32,
    /// Attached documents.
    pub documents: Vec<Document<S>>,
}

/// A document's fingerprint and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document<S = String> {
    /// Lower-case hex SHA-256 of the content.
    pub sha256: S,
    /// IANA media type.
    pub media_type: S,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Digital signature, if signed.
    #[serde(default = "none")]
    pub signature: Option<Signature<S>>,
}

/// A digital signature's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature<S = String> {
    /// Who signed.
    pub signer_name: S,
    /// The signing official's unit, if any.
    #[serde(default = "none")]
    pub signer_unit: Option<S>,
    /// Certificate serial number.
    pub certificate_serial: S,
    /// Issuing certificate authority.
    pub issuer: S,
    /// Signature algorithm.
    pub algorithm: S,
    /// When signed, milliseconds since the epoch.
    pub signed_at: i64,
    /// The signature (base64 of its DER) over `lienthong.document.v1` and the 32 bytes of
    /// `signed_digest`, when made with a certificate on the certificate log; `None` when only
    /// the metadata is carried.
    #[serde(default = "none")]
    pub value: Option<S>,
    /// Lower-case hex SHA-256 of what was signed: the document's `sha256`.
    #[serde(default = "none")]
    pub signed_digest: Option<S>,
    /// The signing certificate's id on the certificate log.
    #[serde(default = "none")]
    pub certificate_id: Option<S>,
}

/// Accepted for processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAccepted<S = String> {
    /// Unit that will process the case.
    pub processing_unit: S,
}

/// Assignment or transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentKind {
    /// Assigned within the processing chain.
    Assigned,
    /// Transferred to another competent unit.
    Transferred,
    /// A value added to the schema after this code was written (the schema's default).
    /// Publishers never send it.
    #[serde(other)]
    Unknown,
}

/// The case moved to another unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAssigned<S = String> {
    /// From this unit.
    pub from_unit: S,
    /// To this unit.
    pub to_unit: S,
    /// Assignment or transfer.
    pub kind: AssignmentKind,
    /// A note.
    #[serde(default = "none")]
    pub note: Option<S>,
}

/// More documents requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplementRequested<S = String> {
    /// Why.
    pub reason: S,
    /// Which documents.
    #[serde(default = "empty")]
    pub requested_documents: Vec<S>,
}

/// Documents supplied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplementReceived<S = String> {
    /// The documents.
    #[serde(default = "empty")]
    pub documents: Vec<Document<S>>,
}

/// Decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseCompleted<S = String> {
    /// The outcome.
    pub result: S,
    /// The result document, if any.
    #[serde(default = "none")]
    pub result_document: Option<Document<S>>,
}

/// Refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRejected<S = String> {
    /// Why.
    pub reason: S,
}

/// Withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseWithdrawn<S = String> {
    /// Why, if said.
    #[serde(default = "none")]
    pub reason: Option<S>,
}

/// Result returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReturned {
    /// How.
    pub channel: Channel,
}

/// A citizen's profile (`hcm.citizen.records`); a tombstone (no value) erases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenRecord<S = String> {
    /// The envelope.
    pub envelope: Envelope<S>,
    /// The profile.
    pub profile: CitizenProfile<S>,
    /// The profile's personal fields, sealed under the citizen's data key
    /// (`lienthong_privacy`); `None` when published in clear.
    #[serde(default = "none")]
    pub sealed: Option<S>,
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
pub struct CitizenProfile<S = String> {
    /// 12-digit personal id.
    pub personal_id: S,
    /// Full name.
    pub full_name: S,
    /// Birth date, days since the epoch.
    pub birth_date: i32,
    /// Sex.
    pub sex: Sex,
    /// Permanent residence unit.
    pub permanent_unit: S,
    /// Temporary residence unit.
    #[serde(default = "none")]
    pub temporary_unit: Option<S>,
    /// Street address.
    #[serde(default = "none")]
    pub address_line: Option<S>,
    /// Phone.
    #[serde(default = "none")]
    pub phone: Option<S>,
    /// E-mail.
    #[serde(default = "none")]
    pub email: Option<S>,
}

/// A step of a feedback item (`hcm.feedback.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackEvent<S = String> {
    /// The envelope.
    pub envelope: Envelope<S>,
    /// What happened.
    pub event: FeedbackEventKind<S>,
}

/// The union in `feedback_event.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedbackEventKind<S = String> {
    /// Submitted.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackSubmitted")]
    FeedbackSubmitted(FeedbackSubmitted<S>),
    /// Assigned to a unit.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackAssigned")]
    FeedbackAssigned(FeedbackAssigned<S>),
    /// Resolved.
    #[serde(alias = "vn.hcm.lienthong.feedback.FeedbackResolved")]
    FeedbackResolved(FeedbackResolved<S>),
}

/// A citizen's feedback arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackSubmitted<S = String> {
    /// Receiving unit.
    pub receiving_unit: S,
    /// Channel.
    pub channel: Channel,
    /// Category.
    pub category: S,
    /// The citizen's text.
    pub content: S,
    /// The case it is about, if any.
    #[serde(default = "none")]
    pub related_case_id: Option<S>,
    /// The citizen, unless anonymous.
    #[serde(default = "none")]
    pub citizen_id: Option<S>,
}

/// Assigned to a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackAssigned<S = String> {
    /// The unit.
    pub to_unit: S,
    /// Due date, days since the epoch.
    pub due_date: i32,
}

/// Resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackResolved<S = String> {
    /// The answer.
    pub resolution: S,
    /// Rating 1–5, if given.
    #[serde(default = "none")]
    pub satisfaction: Option<i32>,
}

/// An administrative unit (`hcm.reference.units`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUnitRecord<S = String> {
    /// The envelope.
    pub envelope: Envelope<S>,
    /// The unit.
    pub unit: AdminUnit<S>,
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
    /// A value added to the schema after this code was written (the schema's default).
    /// Publishers never send it.
    #[serde(other)]
    Unknown,
}

/// One unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUnit<S = String> {
    /// Code.
    pub code: S,
    /// Name.
    pub name: S,
    /// Kind.
    pub kind: UnitKind,
    /// First valid day, days since the epoch.
    pub valid_from: i32,
    /// Last valid day, if ended.
    #[serde(default = "none")]
    pub valid_to: Option<i32>,
    /// Codes merged into it.
    #[serde(default = "empty")]
    pub replaces: Vec<S>,
}

/// A procedure (`hcm.reference.procedures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureRecord<S = String> {
    /// The envelope.
    pub envelope: Envelope<S>,
    /// The procedure.
    pub procedure: Procedure<S>,
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
    /// A value added to the schema after this code was written (the schema's default).
    /// Publishers never send it.
    #[serde(other)]
    Unknown,
}

/// One procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Procedure<S = String> {
    /// Code.
    pub code: S,
    /// Name.
    pub name: S,
    /// Owning department's code.
    pub owning_department: S,
    /// Legal processing time, working days.
    pub processing_days: i32,
    /// Online level.
    pub level: ServiceLevel,
}
