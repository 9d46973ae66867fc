//! The gateway against real Kafka: every event type arrives decodable, every error class,
//! all-or-nothing batches, idempotency (also across a restart), authorisation, NFC, the broker
//! going away and coming back, and graceful shutdown.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use lienthong_contract::events::*;
use lienthong_contract::{AgencyKind, Catalog, Codec, repo_schemas_dir, samples};
use lienthong_gateway::{Gateway, GatewayConfig, local_ids};
use lienthong_registry::auth::hash_token;
use lienthong_registry::{Agencies, AgencyCredential, Registry};
use lienthong_telemetry::component::{Listener, Running};
use lienthong_tests::{Kafka, OwnKafka, kafka, now_ms, unique_suffix};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

const DEPARTMENTS: &[&str] = &["STP", "CATP", "SNV", "SKHCN", "SXD"];
const WARDS: &[&str] = &["26734", "26737"];

fn token(code: &str) -> String {
    format!("token-of-{code}")
}

fn credentials() -> Vec<AgencyCredential> {
    DEPARTMENTS
        .iter()
        .map(|c| (c, AgencyKind::Department))
        .chain(WARDS.iter().map(|c| (c, AgencyKind::Ward)))
        .map(|(code, kind)| AgencyCredential {
            code: code.to_string(),
            kind,
            token_sha256: hash_token(&token(code)),
            admin: false,
        })
        .collect()
}

struct Gw {
    url: String,
    http: reqwest::Client,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    server: Running<lienthong_gateway::GatewayError>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Json,
}

async fn start(kafka: &Kafka, tweak: impl FnOnce(&mut GatewayConfig)) -> Gw {
    start_with(kafka, &format!("gw-test-{}", unique_suffix()), tweak).await
}

async fn start_with(kafka: &Kafka, txn_id: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> Gw {
    kafka.ensure_catalog_topics().await.unwrap();
    let mut config = GatewayConfig {
        agencies: credentials(),
        transactional_id: txn_id.to_string(),
        idempotency_window_secs: 120,
        ..GatewayConfig::default()
    };
    tweak(&mut config);
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let ids = local_ids(&catalog);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(
        config,
        kafka.config(),
        catalog.clone(),
        &ids,
        None,
        lienthong_telemetry::Telemetry::new("gateway").unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    let registry = Registry::in_memory(catalog, Agencies::new(&credentials()).unwrap());
    let listener = Listener::bind("gateway.listen", "127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("http://{}", listener.addr());
    let server = gateway.serve(
        listener,
        Some(lienthong_registry::api::router(Arc::new(registry))),
        &shutdown,
    );
    let gw = Gw {
        url,
        http: reqwest::Client::new(),
        gateway,
        shutdown,
        server,
    };
    gw.wait_ready(Duration::from_secs(90)).await;
    gw
}

impl Gw {
    /// Wait until `/readyz` answers 200; the test fails after `within`.
    async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self.get("/readyz").await;
            if r.status == StatusCode::OK {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway not ready within {within:?}: {}",
                r.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, path: &str) -> Answer {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    async fn raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        answer(req.send().await.unwrap()).await
    }

    /// POST `body` as JSON to a topic's single-event route, as agency `agency`.
    async fn post(&self, topic: &str, agency: &str, body: &Json) -> Answer {
        self.raw(
            &format!("/topics/{topic}/events"),
            Some(&token(agency)),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    async fn post_batch(&self, topic: &str, agency: &str, events: &[Json]) -> Answer {
        self.raw(
            &format!("/topics/{topic}/events:batch"),
            Some(&token(agency)),
            Some("application/json"),
            Json::Array(events.to_vec()).to_string(),
        )
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.server.wait())
            .await
            .expect("server stops within 30 s")
            .unwrap();
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Json::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `event` as JSON with a fresh event id and aggregate id `aggregate`.
fn fresh<T: Serialize>(event: &T, aggregate: &str) -> Json {
    let mut json = serde_json::to_value(event).unwrap();
    json["envelope"]["event_id"] = new_id().into();
    json["envelope"]["aggregate_id"] = aggregate.into();
    json
}

fn producer_of(json: &Json) -> String {
    json["envelope"]["producer_unit"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Post each event (as its producer unit), then read each back from its receipt's place and
/// decode it with the contract codec.
async fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    gw: &Gw,
    kafka: &Kafka,
    topic: &str,
    events: Vec<Json>,
) {
    let codec = Codec::from_catalog(&Catalog::load(repo_schemas_dir()).unwrap()).unwrap();
    for json in events {
        let a = gw.post(topic, &producer_of(&json), &json).await;
        assert_eq!(a.status, StatusCode::CREATED, "{topic}: {}", a.body);
        assert_eq!(a.body["topic"], topic);
        assert_eq!(a.body["event_id"], json["envelope"]["event_id"]);
        assert_eq!(a.body["duplicate"], false);
        let record = kafka
            .read_at(
                topic,
                a.body["partition"].as_i64().unwrap() as i32,
                a.body["offset"].as_i64().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            record.key.as_deref(),
            json["envelope"]["aggregate_id"].as_str().map(str::as_bytes),
            "keyed by the catalog's key field"
        );
        let (_, got): (u32, T) = codec.decode(record.payload.as_deref().unwrap()).unwrap();
        let sent: T = serde_json::from_value(json).unwrap();
        assert_eq!(got, sent, "{topic}");
    }
}

fn digits12() -> String {
    let n = u64::from_str_radix(&unique_suffix()[..10], 16).unwrap() % 100_000_000_000;
    format!("0{n:011}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_arrives_on_kafka_decodable() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let case = format!("HS-GW-{}", unique_suffix());
    let cases = samples::case_lifecycle()
        .iter()
        .map(|e| fresh(e, &case))
        .collect();
    round_trip::<CaseEvent>(&gw, &kafka, "hcm.case.events", cases).await;
    let pid = digits12();
    let mut citizen = fresh(&samples::citizen_record(), &pid);
    citizen["profile"]["personal_id"] = pid.clone().into();
    round_trip::<CitizenRecord>(&gw, &kafka, "hcm.citizen.records", vec![citizen]).await;
    let fb = format!("PA-GW-{}", unique_suffix());
    let feedback = samples::feedback_lifecycle()
        .iter()
        .map(|e| fresh(e, &fb))
        .collect();
    round_trip::<FeedbackEvent>(&gw, &kafka, "hcm.feedback.events", feedback).await;
    let unit = fresh(&samples::admin_unit(), &format!("U{}", unique_suffix()));
    round_trip::<AdminUnitRecord>(&gw, &kafka, "hcm.reference.units", vec![unit]).await;
    let procedure = fresh(&samples::procedure(), &format!("P{}", unique_suffix()));
    round_trip::<ProcedureRecord>(&gw, &kafka, "hcm.reference.procedures", vec![procedure]).await;

    // Dates and timestamps may also come as strings.
    let mut e = fresh(&samples::typical_case_submitted(), &case);
    e["envelope"]["occurred_at"] = "2025-11-02T15:00:00.250+07:00".into();
    e["event"]["CaseSubmitted"]["due_date"] = "2025-11-09".into();
    let a = gw.post("hcm.case.events", "26734", &e).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let record = kafka
        .read_at(
            "hcm.case.events",
            a.body["partition"].as_i64().unwrap() as i32,
            a.body["offset"].as_i64().unwrap(),
        )
        .await
        .unwrap();
    let codec = Codec::from_catalog(&Catalog::load(repo_schemas_dir()).unwrap()).unwrap();
    let (_, got): (u32, CaseEvent) = codec.decode(record.payload.as_deref().unwrap()).unwrap();
    assert_eq!(got.envelope.occurred_at, 1_762_070_400_250);
    let CaseEventKind::CaseSubmitted(s) = got.event else {
        panic!("submitted")
    };
    assert_eq!(s.due_date, 20_401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_400_naming_the_path_never_500() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let topic = "hcm.case.events";
    let mut e = fresh(&samples::typical_case_submitted(), "HS-BAD");
    e["event"]["CaseSubmitted"]["home_unit"] = "phuong 1".into();
    e["event"]["CaseSubmitted"]["applicant_id"] = "0792".into();
    e["event"]["CaseSubmitted"]["channel"] = "FAX".into();
    e["envelope"]["occurred_at"] = "yesterday".into();
    e["event"]["CaseSubmitted"]["documents"][1]["sha256"] = "ABC".into();
    let a = gw.post(topic, "26734", &e).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["error"], "invalid_event");
    let paths: HashSet<&str> = a.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for want in [
        "$.event.CaseSubmitted.home_unit",
        "$.event.CaseSubmitted.applicant_id",
        "$.event.CaseSubmitted.channel",
        "$.envelope.occurred_at",
        "$.event.CaseSubmitted.documents[1].sha256",
    ] {
        assert!(paths.contains(want), "{want} missing from {}", a.body);
    }
    assert!(
        a.body["problems"][0]["problem"].as_str().unwrap().len() > 5,
        "says what is wrong"
    );

    // Range of a lienthong.range field, a missing required field, an unknown union branch.
    let mut fb = fresh(&samples::feedback_lifecycle()[2], "PA-BAD");
    fb["event"]["FeedbackResolved"]["satisfaction"] = 9.into();
    let a = gw.post("hcm.feedback.events", "SXD", &fb).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body["problems"][0]["path"],
        "$.event.FeedbackResolved.satisfaction"
    );
    let mut c = fresh(&samples::typical_case_submitted(), "HS-BAD");
    c["envelope"]
        .as_object_mut()
        .unwrap()
        .remove("correlation_id");
    c["event"] = json!({"CaseExploded": {}});
    let a = gw.post(topic, "26734", &c).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body["problems"].as_array().unwrap().len(),
        2,
        "{}",
        a.body
    );

    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let hostile: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"null".to_vec(),
        b"[1, 2]".to_vec(),
        b"{\"envelope\": 1e99999}".to_vec(),
        b"{\"envelope\": {\"aggregate_version\": 123456789012345678901234567890}}".to_vec(),
        vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        deep.into_bytes(),
        "{\"envelope\": \"\u{0}\"}".as_bytes().to_vec(),
    ];
    for body in hostile {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let a = gw
            .raw(
                &format!("/topics/{topic}/events"),
                Some(&token("26734")),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{shown}: {}", a.body);
        assert!(a.body["message"].is_string());
    }
    // A key named twice is ambiguous (JSON libraries differ on which one wins): refused.
    let valid = serde_json::to_string(&e).unwrap();
    let twice = format!("{{\"envelope\": {{}}, {}", &valid[1..]);
    let a = gw
        .raw(
            &format!("/topics/{topic}/events"),
            Some(&token("26734")),
            Some("application/json"),
            twice,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"envelope\" appears twice"), "{}", a.body);
    for body in ["{}", "[]", "[1]"] {
        let a = gw
            .raw(
                &format!("/topics/{topic}/events:batch"),
                Some(&token("26734")),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "batch {body}: {}",
            a.body
        );
    }
    let a = gw.post("hcm.nope", "26734", &e).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"], "not_found");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_agencies_publish_and_only_as_themselves() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let topic = "hcm.case.events";
    let case = format!("HS-AUTH-{}", unique_suffix());
    let e = fresh(&samples::typical_case_submitted(), &case);
    let path = format!("/topics/{topic}/events");
    let a = gw
        .raw(&path, None, Some("application/json"), e.to_string())
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body["error"], "unauthenticated");
    assert!(a.headers.contains_key("www-authenticate"));
    let a = gw
        .raw(
            &path,
            Some("stolen"),
            Some("application/json"),
            e.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // A ward may not write citizen records.
    let pid = digits12();
    let mut citizen = fresh(&samples::citizen_record(), &pid);
    citizen["envelope"]["producer_unit"] = "26734".into();
    let a = gw.post("hcm.citizen.records", "26734", &citizen).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.body["error"], "forbidden");
    // Nor may a department other than the police (the catalog names CATP alone).
    citizen["envelope"]["producer_unit"] = "STP".into();
    let a = gw.post("hcm.citizen.records", "STP", &citizen).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().contains("only CATP"),
        "{}",
        a.body
    );
    // A ward posing as another ward, or as a department (wrong-agency token).
    let a = gw.post(topic, "26737", &e).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains("26734"));
    let mut as_dept = e.clone();
    as_dept["envelope"]["producer_unit"] = "STP".into();
    let a = gw.post(topic, "26734", &as_dept).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // One posing event in a batch refuses the batch.
    let before = kafka.end_offsets(topic).unwrap();
    let mut batch: Vec<Json> = (0..3)
        .map(|_| fresh(&samples::typical_case_submitted(), &case))
        .collect();
    batch[2]["envelope"]["producer_unit"] = "26737".into();
    let a = gw.post_batch(topic, "26734", &batch).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body["message"].as_str().unwrap().contains("[2]"));
    // The real owner succeeds; nothing of the refused requests is on the topic.
    let a = gw.post(topic, "26734", &e).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mine: Vec<_> = kafka
        .read_since(topic, &before, false)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(case.as_bytes()))
        .collect();
    assert_eq!(mine.len(), 1, "only the allowed event was produced");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_are_413_wrong_types_415() {
    let kafka = kafka();
    let gw = start(&kafka, |c| {
        c.max_body_bytes = 16 * 1024;
        c.max_batch_events = 5;
    })
    .await;
    let topic = "hcm.case.events";
    let case = format!("HS-LIM-{}", unique_suffix());
    let mut big = fresh(&samples::typical_case_submitted(), &case);
    big["event"]["CaseSubmitted"]["procedure_code"] = "x".repeat(20 * 1024).into();
    let a = gw.post(topic, "26734", &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["error"], "too_large");
    // Chunked, without Content-Length.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = gw.url.trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /topics/{topic}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            token("26734")
        );
        let _ = s.write_all(head.as_bytes()).await;
        for _ in 0..40 {
            let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
            if s.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut response = vec![0u8; 64];
        let n = s.read(&mut response).await.unwrap();
        let line = String::from_utf8_lossy(&response[..n]).into_owned();
        assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    }
    let six: Vec<Json> = (0..6)
        .map(|_| fresh(&samples::typical_case_submitted(), &case))
        .collect();
    let a = gw.post_batch(topic, "26734", &six).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    let a = gw.post_batch(topic, "26734", &six[..5]).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["receipts"].as_array().unwrap().len(), 5);

    let e = fresh(&samples::typical_case_submitted(), &case).to_string();
    for ct in [Some("text/plain"), None, Some("application/xml")] {
        let a = gw
            .raw(
                &format!("/topics/{topic}/events"),
                Some(&token("26734")),
                ct,
                e.clone(),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(a.body["error"], "unsupported_media_type");
    }
    let a = gw
        .raw(
            &format!("/topics/{topic}/events"),
            Some(&token("26734")),
            Some("application/json; charset=utf-8"),
            e,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_event_produces_nothing() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let topic = "hcm.case.events";
    let before = kafka.end_offsets(topic).unwrap();
    let keys: Vec<String> = (0..10)
        .map(|i| format!("HS-ALL-{i}-{}", unique_suffix()))
        .collect();
    let mut batch: Vec<Json> = keys
        .iter()
        .map(|k| fresh(&samples::typical_case_submitted(), k))
        .collect();
    batch[7]["event"]["CaseSubmitted"]["applicant_id"] = "not-an-id".into();
    let a = gw.post_batch(topic, "26734", &batch).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let problems = a.body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["index"], 7);
    assert_eq!(problems[0]["path"], "$[7].event.CaseSubmitted.applicant_id");
    // A good batch after it: its records are visible, the bad batch's are not, committed or
    // not.
    batch[7]["event"]["CaseSubmitted"]["applicant_id"] = "079203001234".into();
    for e in &mut batch {
        e["envelope"]["event_id"] = new_id().into();
    }
    let good: Vec<Json> = batch[..3].to_vec();
    let a = gw.post_batch(topic, "26734", &good).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let receipts: HashSet<(i64, i64)> = a.body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    for committed_only in [true, false] {
        let mine: Vec<_> = kafka
            .read_since(topic, &before, committed_only)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| keys.iter().any(|k| r.key.as_deref() == Some(k.as_bytes())))
            .collect();
        let at: HashSet<(i64, i64)> = mine
            .iter()
            .map(|r| (i64::from(r.partition), r.offset))
            .collect();
        assert_eq!(
            at, receipts,
            "exactly the good batch, at its receipts' offsets"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_id_is_published_once_even_across_a_restart() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let topic = "hcm.feedback.events";
    let before = kafka.end_offsets(topic).unwrap();
    let key = format!("PA-DUP-{}", unique_suffix());
    let e = fresh(&samples::feedback_lifecycle()[0], &key);
    let first = gw.post(topic, "26734", &e).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = gw.post(topic, "26734", &e).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["offset"], first.body["offset"]);
    assert_eq!(again.body["partition"], first.body["partition"]);
    // The same text in NFD is the same event.
    let mut nfd = e.clone();
    nfd["event"]["FeedbackSubmitted"]["content"] =
        "Vi\u{309}a he\u{300} \u{111}\u{1b0}\u{1a1}\u{300}ng Nguye\u{302}\u{303}n Hue\u{302}\u{323} bi\u{323} la\u{302}\u{301}n chie\u{302}\u{301}m".into();
    let a = gw.post(topic, "26734", &nfd).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // The same id for different content is a conflict.
    let mut other = e.clone();
    other["event"]["FeedbackSubmitted"]["category"] = "khác".into();
    let a = gw.post(topic, "26734", &other).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.body["error"], "event_id_conflict");
    // Concurrent retries of a new event: one is produced, all get its receipt.
    let e2 = fresh(&samples::feedback_lifecycle()[0], &key);
    let answers = futures::future::join_all((0..8).map(|_| gw.post(topic, "26734", &e2))).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "exactly one of the concurrent retries produces");
    let offsets: HashSet<String> = answers
        .iter()
        .map(|a| {
            assert!(a.status.is_success(), "{}", a.body);
            a.body["offset"].to_string()
        })
        .collect();
    assert_eq!(offsets.len(), 1, "every retry gets the same receipt");
    // A batch mixing a known event and a new one: only the new one is produced.
    let e3 = fresh(&samples::feedback_lifecycle()[0], &key);
    let a = gw
        .post_batch(topic, "26734", &[e.clone(), e3.clone()])
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["receipts"][0]["duplicate"], true);
    assert_eq!(a.body["receipts"][0]["offset"], first.body["offset"]);
    assert_eq!(a.body["receipts"][1]["duplicate"], false);
    gw.stop().await;

    // A new instance learns the ids from the log.
    let gw = start(&kafka, |_| {}).await;
    let a = gw.post(topic, "26734", &e).await;
    assert_eq!(a.status, StatusCode::OK, "after a restart: {}", a.body);
    assert_eq!(a.body["offset"], first.body["offset"]);
    let a = gw.post(topic, "26734", &other).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    gw.stop().await;

    let mine: Vec<_> = kafka
        .read_since(topic, &before, false)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .collect();
    assert_eq!(mine.len(), 3, "e, e2 and e3 once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vietnamese_text_in_nfd_arrives_nfc() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    let pid = digits12();
    let mut c = fresh(&samples::citizen_record(), &pid);
    c["profile"]["personal_id"] = pid.clone().into();
    c["profile"]["full_name"] = "Nguye\u{302}\u{303}n Va\u{306}n Hu\u{300}ng".into();
    c["profile"]["address_line"] = "12 Le\u{302} Lo\u{31b}\u{323}i".into();
    let a = gw.post("hcm.citizen.records", "CATP", &c).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let record = kafka
        .read_at(
            "hcm.citizen.records",
            a.body["partition"].as_i64().unwrap() as i32,
            a.body["offset"].as_i64().unwrap(),
        )
        .await
        .unwrap();
    let codec = Codec::from_catalog(&Catalog::load(repo_schemas_dir()).unwrap()).unwrap();
    let (_, got): (u32, CitizenRecord) = codec.decode(record.payload.as_deref().unwrap()).unwrap();
    assert_eq!(got.profile.full_name, "Nguyễn Văn Hùng");
    assert_eq!(got.profile.address_line.as_deref(), Some("12 Lê Lợi"));
    assert_eq!(record.key.as_deref(), Some(pid.as_bytes()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_health_and_the_mounted_registry() {
    let kafka = kafka();
    let gw = start(&kafka, |_| {}).await;
    assert_eq!(gw.get("/healthz").await.status, StatusCode::OK);
    let ready = gw.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
    let doc = gw.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/topics/{topic}/events",
        "/topics/{topic}/events:batch",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} in the document"
        );
    }
    for path in ["/topics/{topic}/events", "/topics/{topic}/events:batch"] {
        let responses = &doc.body["paths"][path]["post"]["responses"];
        for status in [
            "200", "201", "400", "401", "403", "404", "409", "413", "415", "503",
        ] {
            assert!(
                responses[status]["description"].is_string(),
                "{path} documents {status}: {responses}"
            );
        }
        assert_eq!(
            responses["503"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
    let schemas = &doc.body["components"]["schemas"];
    for s in ["ErrorBody", "Receipt", "BatchReceipts"] {
        assert!(schemas[s].is_object(), "{s}");
    }
    let case = &schemas["event.hcm.case.events"];
    assert_eq!(
        case["properties"]["envelope"]["properties"]["event_id"]["format"],
        "uuid"
    );
    let a = gw
        .http
        .get(format!("{}/registry/subjects", gw.url))
        .bearer_auth(token("STP"))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let a = gw.get("/no/such/route").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"], "not_found");
    let metrics = gw.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("lienthong_gateway_requests_total{route=\"/readyz\",status=\"200\"}"),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let kafka = kafka();
    // A long group-commit wait keeps the first request in flight when shutdown starts.
    let gw = start(&kafka, |c| c.group_commit_ms = 1_500).await;
    let case = format!("HS-STOP-{}", unique_suffix());
    let e = fresh(&samples::typical_case_submitted(), &case);
    let http = gw.http.clone();
    let url = format!("{}/topics/hcm.case.events/events", gw.url);
    let in_flight = tokio::spawn({
        let body = e.to_string();
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .bearer_auth(token("26734"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = http
        .post(&url)
        .bearer_auth(token("26734"))
        .header("content-type", "application/json")
        .body(fresh(&samples::typical_case_submitted(), &case).to_string())
        .send()
        .await;
    match late {
        Ok(r) => assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE),
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
    }
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        StatusCode::CREATED,
        "the in-flight request finished"
    );
    tokio::time::timeout(Duration::from_secs(30), gw.server.wait())
        .await
        .expect("server stops")
        .unwrap();
    assert!(gw.gateway.ready().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_is_503_with_retry_after_then_recovers_and_nothing_partial_is_visible() {
    let own = OwnKafka::start("gw-fault").unwrap();
    let kafka = own.kafka().clone();
    let gw = Arc::new(
        start(&kafka, |c| {
            c.kafka_timeout_ms = 3_000;
            c.health_interval_ms = 200;
        })
        .await,
    );
    let topic = "hcm.case.events";
    // Load: several clients posting batches all along.
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    for c in 0..3 {
        let (gw, stop) = (gw.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut refused_keys = Vec::new();
            let mut maybe = Vec::new();
            let mut unavailable = 0usize;
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let key = format!("HS-FAULT-{c}-{n}");
                let batch: Vec<Json> = (0..20)
                    .map(|_| fresh(&samples::typical_case_submitted(), &key))
                    .collect();
                let a = gw.post_batch(topic, "26734", &batch).await;
                match a.status {
                    StatusCode::CREATED => {
                        receipts.extend(a.body["receipts"].as_array().unwrap().iter().map(|r| {
                            (
                                r["partition"].as_i64().unwrap(),
                                r["offset"].as_i64().unwrap(),
                            )
                        }))
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(a.headers.contains_key("retry-after"), "{}", a.body);
                        unavailable += 1;
                        // "outcome_unknown": Kafka died between commit and confirmation; such
                        // a batch may be on the log. "unavailable": it is not.
                        if a.body["error"] == "unavailable" {
                            refused_keys.push(key);
                        } else {
                            assert_eq!(a.body["error"], "outcome_unknown", "{}", a.body);
                            maybe.push(key);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("unexpected {other}: {}", a.body),
                }
            }
            (receipts, refused_keys, maybe, unavailable)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    own.kill().unwrap();
    // While it is down: 503 with Retry-After, quickly once the probe noticed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probe = fresh(&samples::typical_case_submitted(), "HS-FAULT-PROBE");
    let a = gw.post(topic, "26734", &probe).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(
        gw.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    own.restart().unwrap();
    // Back: the same gateway recovers, no restart. Once `/readyz` says ready, a publish
    // succeeds at its first attempt (the producer was made again before, not by it).
    gw.wait_ready(Duration::from_secs(120)).await;
    let recovered = gw.post(topic, "26734", &probe).await;
    assert!(
        recovered.status.is_success(),
        "the first publish after /readyz said ready: {} {}",
        recovered.status,
        recovered.body
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut accepted: HashSet<(i64, i64)> = HashSet::new();
    let mut refused = Vec::new();
    let mut maybe: HashSet<String> = HashSet::new();
    let mut unavailable = 0;
    for c in clients {
        let (r, k, m, u) = c.await.unwrap();
        accepted.extend(r);
        refused.extend(k);
        maybe.extend(m);
        unavailable += u;
    }
    accepted.insert((
        recovered.body["partition"].as_i64().unwrap(),
        recovered.body["offset"].as_i64().unwrap(),
    ));
    // (The load clients' requests in flight at the kill wait for the outcome of their
    // transaction, so they may see 201 or 503; the probe above saw the fast 503.)
    // What read_committed consumers see is exactly what was acknowledged: every 201's records
    // at their receipts' offsets, nothing of a 503.
    let committed: Vec<_> = kafka
        .read_since(topic, &[], true)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| !maybe.contains(std::str::from_utf8(r.key.as_deref().unwrap()).unwrap()))
        .collect();
    eprintln!(
        "{unavailable} answers 503: {} batches refused, {} with outcome unknown; {} records acknowledged",
        refused.len(),
        maybe.len(),
        accepted.len()
    );
    let seen: HashSet<(i64, i64)> = committed
        .iter()
        .map(|r| (i64::from(r.partition), r.offset))
        .collect();
    assert_eq!(seen.len(), committed.len());
    assert_eq!(seen, accepted, "committed records == acknowledged receipts");
    let refused: HashSet<&str> = refused.iter().map(String::as_str).collect();
    assert!(
        committed
            .iter()
            .all(|r| !refused.contains(std::str::from_utf8(r.key.as_deref().unwrap()).unwrap())),
        "nothing of a refused batch is visible"
    );
    let gw = Arc::try_unwrap(gw).ok().unwrap();
    gw.stop().await;
    drop(own);
}

/// Closing the gateway stops the gateway, not the process: the token it was started with (under
/// `lienthong up`, the whole process's) stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_gateway_leaves_the_callers_token_alone() {
    let gw = start(&kafka(), |_| {}).await;
    gw.gateway.close().await;
    assert!(
        !gw.shutdown.is_cancelled(),
        "the gateway cancelled the token it was given"
    );
    assert!(
        gw.gateway.ready().is_err(),
        "a closed gateway takes no events"
    );
}

/// One broker of three down: every partition keeps a leader and two in-sync replicas, so the
/// gateway stays ready and publishes (a replica that is down is not a reason to say not ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_of_three_down_leaves_the_gateway_ready() {
    let own = OwnKafka::start_with("gw-three", &["--brokers", "3"]).unwrap();
    let kafka = own.kafka().clone();
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    lienthong_bus::create_catalog_topics(&kafka.config(), &catalog, 3)
        .await
        .unwrap();
    let gw = start(&kafka, |c| c.health_interval_ms = 200).await;
    kafka.kill_broker(3).unwrap();
    // The controllers fence it after 4 s; its partitions get new leaders.
    tokio::time::sleep(Duration::from_secs(6)).await;
    gw.wait_ready(Duration::from_secs(30)).await;
    let case = fresh(
        &samples::typical_case_submitted(),
        &format!("HS-THREE-{}", unique_suffix()),
    );
    let a = gw.post("hcm.case.events", "26734", &case).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    kafka.restart_broker(3).unwrap();
    gw.stop().await;
}

/// With `signing_keys_dir`, the gateway signs each request's records with the posting
/// agency's key (one signature over the batch, each record's path in its header): every record
/// read back from Kafka verifies alone and names the ward; an agency whose key the gateway does
/// not hold is refused with 403, and nothing of it reaches Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_gateway_signs_each_record_as_the_posting_agency() {
    use rdkafka::Message;
    let kafka = kafka();
    let keys = tempfile::tempdir().unwrap();
    let ca = lienthong_signing::CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let issued = ca.issue("26734", 7).unwrap();
    std::fs::write(keys.path().join("26734.key"), &issued.key_pem).unwrap();
    std::fs::write(keys.path().join("26734.crt"), issued.certificate.pem()).unwrap();
    let log =
        lienthong_signing::CertificateLog::<rdkafka::consumer::DefaultConsumerContext>::in_memory(
            vec![ca.certificate().clone()],
        );
    log.publish(&issued.certificate, "admin").await.unwrap();
    let dir = keys.path().to_path_buf();
    let gw = start(&kafka, move |c| c.signing_keys_dir = Some(dir)).await;
    let topic = "hcm.case.events";
    let case = format!("HS-SIGNED-{}", unique_suffix());
    let batch: Vec<Json> = samples::case_lifecycle()
        .iter()
        .take(3)
        .map(|e| {
            let mut json = fresh(e, &case);
            json["envelope"]["producer_unit"] = "26734".into();
            json
        })
        .collect();
    let a = gw.post_batch(topic, "26734", &batch).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let receipts: Vec<(i32, i64)> = a.body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    let verifier = lienthong_signing::RecordVerifier::new();
    for (partition, offset) in &receipts {
        let m = kafka.message_at(topic, *partition, *offset).await.unwrap();
        assert_eq!((m.partition(), m.offset()), (*partition, *offset));
        let signer = verifier
            .verify_message(&log.read(), &m)
            .map(|c| c.agency().to_string());
        assert_eq!(signer.as_deref(), Ok("26734"), "record at {offset}");
        // The batch size is in bytes 21..25 of the header: one signature for the request.
        let header = lienthong_signing::signature_header(m.headers()).unwrap();
        assert_eq!(u32::from_be_bytes(header[21..25].try_into().unwrap()), 3);
    }
    // STP has no key at this gateway.
    let since = kafka.offsets_at_time(topic, now_ms() - 1_000).unwrap();
    let stp_case = format!("{case}-STP");
    let mut submitted = fresh(&samples::typical_case_submitted(), &stp_case);
    submitted["envelope"]["producer_unit"] = "STP".into();
    let a = gw.post(topic, "STP", &submitted).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body.to_string().contains("no signing key for STP"),
        "{}",
        a.body
    );
    // A ward's event after it, so that reading up to it covers the refused one's moment.
    let a = gw
        .post(
            topic,
            "26734",
            &fresh(&samples::typical_case_submitted(), &case),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let records = kafka.read_since(topic, &since, false).await.unwrap();
    assert!(
        !records
            .iter()
            .any(|r| r.key.as_deref() == Some(stp_case.as_bytes())),
        "a refused event reached Kafka"
    );
    gw.stop().await;
}

/// With document checks on (`check_document_signatures`, the certificate log of `[signing]`
/// under `lienthong up`), a case event whose signed document verifies is published; one whose
/// signature is of another document, or was made with another key, is refused with 400 naming
/// the event and the document, and a batch holding one such event publishes nothing. A
/// signature that carries only metadata (no value: made outside the bus) is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_checking_documents_refuses_a_document_signature_that_does_not_verify() {
    use lienthong_contract::events::CaseEventKind;
    let kafka = kafka();
    let ca = lienthong_signing::CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let ward = ca.issue("26734", 7).unwrap();
    let other = ca.issue("STP", 7).unwrap();
    let log =
        lienthong_signing::CertificateLog::<rdkafka::consumer::DefaultConsumerContext>::in_memory(
            vec![ca.certificate().clone()],
        );
    log.publish(&ward.certificate, "admin").await.unwrap();
    log.publish(&other.certificate, "admin").await.unwrap();
    let signer =
        lienthong_signing::AgencySigner::from_pem(&ward.key_pem, ward.certificate.clone()).unwrap();
    let stp = lienthong_signing::AgencySigner::from_pem(&other.key_pem, other.certificate.clone())
        .unwrap();
    let gw = start(&kafka, |_| {}).await;
    gw.gateway.check_document_signatures(Arc::new(log)).unwrap();
    let topic = "hcm.case.events";
    let since = kafka.offsets_at_time(topic, now_ms() - 1_000).unwrap();
    let run = unique_suffix();
    // A submission whose second document (unsigned in the sample) `sign` changes.
    let case = |name: &str, sign: &dyn Fn(&mut lienthong_contract::events::Document)| {
        let mut e = samples::typical_case_submitted();
        let CaseEventKind::CaseSubmitted(s) = &mut e.event else {
            unreachable!("the sample is a submission")
        };
        sign(&mut s.documents[1]);
        fresh(&e, &format!("HS-DOC-{run}-{name}"))
    };
    let signed = |by: &lienthong_signing::AgencySigner, digest: &str| {
        lienthong_signing::sign_document(by, "Nguyễn Văn An", digest, now_ms() - 1_000).unwrap()
    };
    let good = case("good", &|d| d.signature = Some(signed(&signer, &d.sha256)));
    let metadata_only = case("metadata", &|_| {});
    let other_document = case("other-document", &|d| {
        d.signature = Some(signed(&signer, &"ab".repeat(32)))
    });
    let wrong_key = case("wrong-key", &|d| {
        let mut s = signed(&signer, &d.sha256);
        s.value = signed(&stp, &d.sha256).value;
        d.signature = Some(s);
    });
    for ok in [&good, &metadata_only] {
        let a = gw.post(topic, "26734", ok).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    for (bad, why) in [
        (&other_document, "not the document's"),
        (&wrong_key, "does not verify"),
    ] {
        let a = gw.post(topic, "26734", bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        let text = a.body.to_string();
        assert!(text.contains("document 1") && text.contains(why), "{text}");
    }
    let batch_good = case("batch-good", &|d| {
        d.signature = Some(signed(&signer, &d.sha256))
    });
    let a = gw
        .post_batch(topic, "26734", &[batch_good.clone(), wrong_key.clone()])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.to_string().contains("$[1].event"), "{}", a.body);
    // Only the two accepted events reached Kafka.
    let a = gw.post(topic, "26734", &case("last", &|_| {})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let records = kafka.read_since(topic, &since, false).await.unwrap();
    let ours: Vec<String> = records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| k.starts_with(&format!("HS-DOC-{run}-")))
        .collect();
    let mut expected: Vec<String> = ["good", "metadata", "last"]
        .iter()
        .map(|n| format!("HS-DOC-{run}-{n}"))
        .collect();
    let mut ours = ours;
    ours.sort();
    expected.sort();
    assert_eq!(ours, expected);
    gw.stop().await;
}
