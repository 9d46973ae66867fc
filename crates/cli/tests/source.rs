//! `lienthong source` against real PostgreSQL, a real gateway and real Kafka: rows an agency's
//! application commits to its outbox reach the log once each by event id, in order per case;
//! rolled-back rows never do; refused rows land in the dead-letter table with the gateway's
//! reason and do not stop the source; the source SIGKILLed ten times during 50,000 rows, and
//! the database and the broker each gone for 20 seconds, lose and reorder nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_contract::events::CaseEvent;
use lienthong_contract::{AgencyKind, Catalog, repo_schemas_dir};
use lienthong_gateway::{Gateway, GatewayConfig, GatewayError, local_ids};
use lienthong_registry::AgencyCredential;
use lienthong_registry::auth::hash_token;
use lienthong_telemetry::component::{Listener, Running};
use lienthong_tests::{Kafka, kafka, postgres, unique_suffix};
use support::*;
use tokio_util::sync::CancellationToken;

const AGENCY: &str = "26734";
const CASES: &str = "hcm.case.events";

fn token(code: &str) -> String {
    format!("token-of-{code}")
}

/// The city's gateway, in this process, on `kafka`.
struct Gw {
    url: String,
    shutdown: CancellationToken,
    server: Option<Running<GatewayError>>,
    _gateway: Arc<Gateway>,
}

impl Gw {
    async fn start(kafka: &Kafka) -> Gw {
        kafka.ensure_catalog_topics().await.unwrap();
        let agencies = [AGENCY, "26737"]
            .iter()
            .map(|code| AgencyCredential {
                code: code.to_string(),
                kind: AgencyKind::Ward,
                token_sha256: hash_token(&token(code)),
                admin: false,
            })
            .collect();
        let config = GatewayConfig {
            agencies,
            transactional_id: format!("source-test-{}", unique_suffix()),
            idempotency_window_secs: 3600,
            ..GatewayConfig::default()
        };
        let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
        let shutdown = CancellationToken::new();
        let gateway = Gateway::start(
            config,
            kafka.config(),
            catalog.clone(),
            &local_ids(&catalog),
            None,
            lienthong_telemetry::Telemetry::new("gateway").unwrap(),
            shutdown.clone(),
        )
        .unwrap();
        let listener = Listener::bind("gateway.listen", "127.0.0.1:0")
            .await
            .unwrap();
        let url = format!("http://{}", listener.addr());
        let server = gateway.serve(listener, None, &shutdown);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = reqwest::get(format!("{url}/readyz"))
                .await
                .map(|r| r.status());
            if matches!(ready, Ok(s) if s.is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "gateway not ready: {ready:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Gw {
            url,
            shutdown,
            server: Some(server),
            _gateway: gateway,
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown.cancel();
        drop(self.server.take());
    }
}

/// The agency's database, as its application sees it.
struct AgencyDb {
    client: tokio_postgres::Client,
    /// The payload column's type.
    payload_type: &'static str,
}

impl AgencyDb {
    async fn open(url: &str, payload_type: &'static str) -> AgencyDb {
        let client = lienthong_tests::connect(url).await.unwrap();
        AgencyDb {
            client,
            payload_type,
        }
    }

    /// Commit `rows` (topic, payload) in one transaction, in order.
    async fn commit(&mut self, rows: &[(String, String)]) {
        let tx = self.client.transaction().await.unwrap();
        insert(&tx, rows, self.payload_type).await;
        tx.commit().await.unwrap();
    }

    /// Wait until `table` exists (the source creates its tables once it holds the outbox).
    async fn wait_for_table(&self, table: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            assert!(Instant::now() < deadline, "no table {table} after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Wait until the outbox is empty and the dead-letter table holds `dead` rows.
    async fn wait_drained(&self, dead: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (left, dead_now) = (
                self.count("lienthong_outbox").await,
                self.count("lienthong_outbox_dead").await,
            );
            if left == 0 && dead_now == dead {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {within:?}: {left} rows left in the outbox, {dead_now} dead-lettered (expected {dead})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[(String, String)],
    payload_type: &str,
) {
    let statement = tx
        .prepare(&format!(
            "INSERT INTO lienthong_outbox (topic, payload) VALUES ($1, $2::text::{payload_type})"
        ))
        .await
        .unwrap();
    for (topic, payload) in rows {
        tx.execute(&statement, &[topic, payload]).await.unwrap();
    }
}

fn case_rows(events: &[CaseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (CASES.to_string(), serde_json::to_string(e).unwrap()))
        .collect()
}

/// Per case, its event ids in the order they must be on the log.
fn expected_order(events: &[CaseEvent]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        m.entry(e.envelope.aggregate_id.clone())
            .or_default()
            .push(e.envelope.event_id.clone());
    }
    m
}

/// Per case whose id starts with `prefix`, the event ids committed to `hcm.case.events` since
/// `from`, in log order.
async fn log_order(
    kafka: &Kafka,
    from: &[(i32, i64)],
    prefix: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in kafka.read_since(CASES, from, true).await.unwrap() {
        let key = String::from_utf8(r.key.unwrap_or_default()).unwrap();
        if !key.starts_with(prefix) {
            continue;
        }
        let payload = r.payload.unwrap();
        let id = lienthong_gateway::replay::leading_event_id(&payload)
            .unwrap()
            .to_string();
        m.entry(key).or_default().push(id);
    }
    m
}

/// Every case's events on the log exactly once, in the order committed.
fn assert_same_order(
    log: &BTreeMap<String, Vec<String>>,
    expected: &BTreeMap<String, Vec<String>>,
) {
    assert_eq!(log.len(), expected.len(), "cases on the log");
    for (case, ids) in expected {
        assert_eq!(
            log.get(case),
            Some(ids),
            "events of {case}, in order, once each"
        );
    }
}

fn source_toml(name: &str, db: &str, gateway: &str, metrics_port: u16, extra: &str) -> String {
    format!(
        r#"name = "{name}"
metrics_listen = "127.0.0.1:{metrics_port}"

[database]
url = "{db}"

[gateway]
url = "{gateway}"
agency = "{AGENCY}"
token = "{token}"

[retry]
initial_ms = 100
max_ms = 1000
{extra}
"#,
        token = token(AGENCY)
    )
}

fn write_config(dir: &std::path::Path, toml: &str) -> PathBuf {
    let path = dir.join(format!("source-{}.toml", unique_suffix()));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Each series of `family` in a scrape, summed.
fn metric_sum(text: &str, family: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Scrape a source's `/metrics`, check that it counts `n` rows published, and return the
/// scrape and the source's label.
async fn scrape_published(port: u16, name: &str, n: usize) -> (String, String) {
    let metrics = metrics_text(port).await;
    let label = format!("source=\"{name}\"");
    assert_eq!(
        metric_sum(&metrics, "lienthong_source_rows_published_total", &label),
        n as f64,
        "{metrics}"
    );
    (metrics, label)
}

/// Committed rows reach the log once each, in order per case, woken by the outbox's
/// notification (the poll interval is a minute); a rolled-back transaction never does;
/// each kind of bad row is dead-lettered with the gateway's reason and the rows after it
/// still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_rows_reach_the_log_once_in_order_and_bad_rows_are_dead_lettered() {
    let kafka = kafka();
    let gw = Gw::start(&kafka).await;
    let url = postgres().fresh_database("source").await.unwrap();
    let mut db = AgencyDb::open(&url, "text").await;
    // The agency's own outbox, with a text payload so that a row need not even be JSON.
    db.client
        .batch_execute(
            "CREATE TABLE lienthong_outbox (id bigserial PRIMARY KEY, topic text NOT NULL,
             payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .unwrap();
    let from = kafka.end_offsets(CASES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("outbox-{}", unique_suffix());
    let port = lienthong_tests::free_port();
    let path = write_config(
        dir.path(),
        &source_toml(
            &name,
            &url,
            &gw.url,
            port,
            "[batch]\npoll_interval_ms = 60000\n",
        ),
    );
    let source = Process::start("source", &path, &log_path(&name, "source"));
    // The source creates the notify trigger and the dead-letter table once it holds the outbox.
    db.wait_for_table("lienthong_outbox_dead").await;

    // Every case of this test starts with `base`: the good ones, the rolled back, the bad.
    let base = format!("HS-{}-", unique_suffix());
    let prefix = format!("{base}OK-");
    let events = case_stream(&prefix, 60);
    let rows = case_rows(&events);
    let bad = case_stream(&format!("{base}BAD-"), 3);
    let mut posing = bad[0].clone();
    posing.envelope.producer_unit = "26737".into();
    let mut unknown_kind = serde_json::to_value(&bad[1]).unwrap();
    unknown_kind["event"] = serde_json::json!({"NoSuchEvent": {}});
    let bad_rows = [
        (CASES.to_string(), "{\"envelope\": not json".to_string()),
        (CASES.to_string(), unknown_kind.to_string()),
        (CASES.to_string(), serde_json::to_string(&posing).unwrap()),
        (
            "hcm.no.such.topic".to_string(),
            serde_json::to_string(&bad[2]).unwrap(),
        ),
    ];
    // Transactions of varied sizes, a bad row inside some of them, one rolled back.
    let mut chunks = rows.chunks(37);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let mut tx_rows = chunk.to_vec();
        if let Some(b) = bad_rows.get(i) {
            tx_rows.insert(tx_rows.len() / 2, b.clone());
        }
        db.commit(&tx_rows).await;
        if i == 2 {
            let rolled_back = case_rows(&case_stream(&format!("{base}ROLLED-BACK-"), 5));
            let tx = db.client.transaction().await.unwrap();
            insert(&tx, &rolled_back, "text").await;
            tx.rollback().await.unwrap();
        }
    }
    let started = Instant::now();
    db.wait_drained(4, Duration::from_secs(60)).await;
    eprintln!("drained {} rows in {:?}", rows.len() + 4, started.elapsed());

    let log = log_order(&kafka, &from, &base).await;
    let expected = expected_order(&events);
    assert!(
        log.keys().all(|k| k.starts_with(&prefix)),
        "only committed, valid rows are on the log (no rolled-back or bad case): {:?}",
        log.keys()
            .filter(|k| !k.starts_with(&prefix))
            .collect::<Vec<_>>()
    );
    assert_same_order(&log, &expected);

    let dead = db
        .client
        .query(
            "SELECT status, error, reason, payload FROM lienthong_outbox_dead ORDER BY outbox_id",
            &[],
        )
        .await
        .unwrap();
    let dead: Vec<(i32, String, String, String)> = dead
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expect = [
        (400, "malformed", "JSON"),
        (
            400,
            "invalid_event",
            "$[0].event: expected one of the union's branches",
        ),
        (403, "forbidden", "26737"),
        (404, "not_found", "hcm.no.such.topic"),
    ];
    assert_eq!(dead.len(), expect.len(), "{dead:?}");
    for ((status, error, reason, payload), (s, e, says)) in dead.iter().zip(expect) {
        assert_eq!((*status, error.as_str()), (s, e), "{reason}");
        assert!(
            reason.contains(says),
            "{e}: the reason {reason:?} names {says:?}"
        );
        assert!(
            bad_rows.iter().any(|(_, p)| p == payload),
            "the row is kept as written"
        );
    }

    let (metrics, label) = scrape_published(port, &name, rows.len()).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "lienthong_source_rows_dead_lettered_total",
            &label
        ),
        4.0
    );
    assert_eq!(metric_sum(&metrics, "lienthong_source_up", &label), 1.0);
    assert_eq!(
        metric_sum(&metrics, "lienthong_source_latency_seconds_count", &label),
        rows.len() as f64
    );
    source.stop();
}

/// 50,000 rows committed over about 30 seconds while the source is SIGKILLed ten times at
/// random moments: every row on the log exactly once by event id, in order per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_ten_times_during_fifty_thousand_rows_loses_duplicates_and_reorders_nothing() {
    let kafka = kafka();
    let gw = Gw::start(&kafka).await;
    let url = postgres().fresh_database("source").await.unwrap();
    let from = kafka.end_offsets(CASES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("outbox-kill-{}", unique_suffix());
    let path = write_config(
        dir.path(),
        &source_toml(&name, &url, &gw.url, lienthong_tests::free_port(), ""),
    );
    let log = log_path(&name, "source");
    let mut source = Process::start("source", &path, &log);
    let prefix = format!("HS-KILL-{}-", unique_suffix());
    let mut events = case_stream(&prefix, 12_000);
    events.truncate(50_000);
    let rows = case_rows(&events);
    // The table exists once the source holds the outbox.
    let mut db = AgencyDb::open(&url, "json").await;
    db.wait_for_table("lienthong_outbox").await;
    let writer = tokio::spawn(async move {
        let mut at = 0;
        while at < rows.len() {
            let n = fastrand::usize(1..=60).min(rows.len() - at);
            db.commit(&rows[at..at + n]).await;
            at += n;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=60))).await;
        }
        db
    });
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..=3000))).await;
        source.sigkill();
        source = Process::start("source", &path, &log);
    }
    let db = writer.await.unwrap();
    db.wait_drained(0, Duration::from_secs(180)).await;
    source.stop();
    let kills = std::fs::read_to_string(&log)
        .unwrap()
        .matches("publishing the outbox")
        .count();
    assert!(kills >= 10, "the source started publishing {kills} times");
    let on_log = log_order(&kafka, &from, &prefix).await;
    assert_same_order(&on_log, &expected_order(&events));
}

/// The agency's PostgreSQL stopped for 20 seconds, then the broker behind the gateway killed
/// for 20 seconds while rows keep being committed: the source says it is not publishing,
/// counts its retries, and once both are back every row is on the log once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_and_the_broker_each_gone_for_twenty_seconds_lose_nothing() {
    let instance = format!("source-outage-{}", unique_suffix());
    ops_output(&["start", "--name", &instance]);
    let _pg = OwnPostgres(instance.clone());
    let url = ops_output(&["createdb", "agency", "--name", &instance]);
    let url = url.lines().last().unwrap().to_string();
    let own = lienthong_tests::OwnKafka::start("source-outage").unwrap();
    let kafka = own.kafka();
    let gw = Gw::start(kafka).await;
    let from = kafka.end_offsets(CASES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("outbox-outage-{}", unique_suffix());
    let port = lienthong_tests::free_port();
    let path = write_config(dir.path(), &source_toml(&name, &url, &gw.url, port, ""));
    let source = Process::start("source", &path, &log_path(&name, "source"));
    let prefix = format!("HS-OUT-{}-", unique_suffix());
    let events = case_stream(&prefix, 900);
    let rows = case_rows(&events);
    let thirds: Vec<&[(String, String)]> = rows.chunks(rows.len().div_ceil(3)).collect();
    let label = format!("source=\"{name}\"");
    let mut db = AgencyDb::open(&url, "json").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(&metrics_text(port).await, "lienthong_source_up", &label) != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the source did not start publishing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for chunk in thirds[0].chunks(50) {
        db.commit(chunk).await;
    }
    db.wait_drained(0, Duration::from_secs(60)).await;

    ops_output(&["pause", "--name", &instance]);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = metrics_text(port).await;
    assert_eq!(
        metric_sum(&metrics, "lienthong_source_up", &label),
        0.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "lienthong_source_errors_total",
            "kind=\"database\""
        ) > 0.0,
        "{metrics}"
    );
    ops_output(&["resume", "--name", &instance]);
    let mut db = AgencyDb::open(&url, "json").await;
    for chunk in thirds[1].chunks(50) {
        db.commit(chunk).await;
    }
    db.wait_drained(0, Duration::from_secs(120)).await;

    own.kill().unwrap();
    for chunk in thirds[2].chunks(50) {
        db.commit(chunk).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = metrics_text(port).await;
    assert!(
        metric_sum(
            &metrics,
            "lienthong_source_errors_total",
            "kind=\"gateway\""
        ) > 0.0,
        "{metrics}"
    );
    assert!(
        db.count("lienthong_outbox").await > 0,
        "rows wait in the outbox while the broker is gone"
    );
    let lag = metric_sum(&metrics, "lienthong_source_lag_seconds", &label);
    assert!(lag > 10.0, "the lag grows while the rows wait: {lag} s");
    own.restart().unwrap();
    db.wait_drained(0, Duration::from_secs(180)).await;
    source.stop();
    let on_log = log_order(kafka, &from, &prefix).await;
    assert_same_order(&on_log, &expected_order(&events));
}

/// `lienthong up` with `sources = [...]` runs the source beside its own gateway: committed rows
/// reach the log in order, the source is on `/metrics`, and SIGINT stops everything cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_runs_a_source_beside_its_gateway() {
    let kafka = kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let url = postgres().fresh_database("source").await.unwrap();
    let from = kafka.end_offsets(CASES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let suffix = unique_suffix();
    let (gateway_port, metrics_port) = (lienthong_tests::free_port(), lienthong_tests::free_port());
    let name = format!("up-outbox-{suffix}");
    let source = write_config(
        dir.path(),
        &source_toml(
            &name,
            &url,
            &format!("http://127.0.0.1:{gateway_port}"),
            metrics_port,
            "",
        ),
    );
    let config = dir.path().join("lienthong.toml");
    std::fs::write(
        &config,
        format!(
            "sources = [\"{}\"]\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{suffix}\"\n\
             [[registry.agencies]]\ncode = \"{AGENCY}\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n\
             [gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\ntransactional_id = \"up-source-{suffix}\"\n",
            source.display(),
            hash_token(&token(AGENCY)),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(log_path(&name, "up")).unwrap();
    let mut up = lienthong_tests::ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_lienthong"))
            .current_dir(lienthong_tests::repo_root())
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .env("RUST_LOG", "info,apache_avro=warn")
            .arg("--config")
            .arg(&config)
            .arg("up")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut db = AgencyDb::open(&url, "json").await;
    db.wait_for_table("lienthong_outbox").await;
    let prefix = format!("HS-UP-{suffix}-");
    let events = case_stream(&prefix, 50);
    for chunk in case_rows(&events).chunks(20) {
        db.commit(chunk).await;
    }
    db.wait_drained(0, Duration::from_secs(90)).await;
    let (metrics, _) = scrape_published(metrics_port, &name, events.len()).await;
    assert!(
        metrics.contains("lienthong_gateway_requests_total"),
        "one registry for the whole process: the gateway's families are on the source's /metrics"
    );
    let status = lienthong_tests::interrupt_and_wait(&mut up, Duration::from_secs(30));
    assert!(status.success(), "up exited with {status}");
    let on_log = log_order(&kafka, &from, &prefix).await;
    assert_same_order(&on_log, &expected_order(&events));
}
