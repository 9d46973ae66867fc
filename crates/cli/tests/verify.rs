//! `lienthong verify` and `lienthong repair` against real Kafka and real stores (PostgreSQL
//! and SQLite), while the connector runs and new cases keep arriving: a store in sync is found
//! in sync; rows changed, deleted and inserted by hand (with SQL, as an operator or a bad
//! script would) are each named with what differs, exit 1; the running connector's scheduled
//! check shows them on `lienthong_connector_divergent_rows`; `repair` puts exactly those right
//! in place, and the store ends equal, row by row, to the log folded in memory.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use lienthong_tests::{free_port, kafka, unique_suffix};
use support::*;

both_stores!(drift_made_by_hand_is_found_shown_and_repaired_while_the_connector_runs);

/// Run the CLI with `args`: (exit code, stdout, stderr).
fn lienthong(args: &[&str]) -> (i32, String, String) {
    let out = assert_cmd::Command::cargo_bin("lienthong")
        .unwrap()
        .env_remove("RUST_LOG")
        .args(args)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run SQL on the store by hand, as an operator would.
async fn by_hand(store: &Store, sql: &str) {
    match store {
        Store::Postgres { url } => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.batch_execute(sql).await.unwrap();
        }
        Store::Sqlite { path, .. } => {
            let path = path.clone();
            let sql = sql.to_string();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch(&sql).unwrap();
            })
            .await
            .unwrap();
        }
    }
}

/// The value of `lienthong_connector_divergent_rows` for `connector`, if it is set.
fn divergent_rows(metrics: &str, connector: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("lienthong_connector_divergent_rows{")
                && l.contains(&format!("connector=\"{connector}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait (at most 90 s) until the connector's scheduled check shows `rows` divergent rows.
async fn wait_divergent(port: u16, connector: &str, rows: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = metrics_text(port).await;
        if divergent_rows(&text, connector) == Some(rows) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lienthong_connector_divergent_rows of {connector} never showed {rows}:\n{}",
            text.lines()
                .filter(|l| l.contains("verif") || l.contains("divergent"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn drift_made_by_hand_is_found_shown_and_repaired_while_the_connector_runs(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("verify", 4, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("verify-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("VF-{}", unique_suffix());
    let events = case_stream(&prefix, 300);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    let name = format!("verify-{}", unique_suffix());
    let port = free_port();
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\n[verify]\ninterval_secs = 10\nbuckets = 32"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connector.toml");
    std::fs::write(&file, &toml).unwrap();
    let file = file.to_str().unwrap().to_string();
    let (token, task) = spawn(config(&toml));
    wait_caught_up(
        &store,
        &name,
        &topic,
        &end_offsets(&kafka, &topic).await,
        Duration::from_secs(120),
    )
    .await;

    // New cases keep arriving, and the connector keeps applying them, while everything below
    // runs.
    let arriving = tokio_util::sync::CancellationToken::new();
    let feeder = {
        let (kafka, topic, stop) = (kafka.clone(), topic.clone(), arriving.clone());
        let later = format!("{prefix}-LATER");
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let events = case_stream(&format!("{later}-{i}"), 3);
                produce(&kafka, &topic, &encode_cases(&events)).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            i
        })
    };

    let (code, out, err) = tokio::task::block_in_place(|| lienthong(&["verify", &file]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("in sync: all 32 digest buckets match"),
        "{out}"
    );
    wait_divergent(port, &name, 0.0).await;

    // By hand: a status changed, a case deleted, a history row that no event made.
    let (changed, deleted) = (case_id(&prefix, 7), case_id(&prefix, 42));
    by_hand(
        &store,
        &format!(
            "UPDATE cases SET status = 'edited by hand' WHERE id = '{changed}';\n\
             DELETE FROM cases WHERE id = '{deleted}';\n\
             INSERT INTO case_events (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) \
             VALUES ('forged-event', '{changed}', 99, 0, '26734', 'none', 'CaseCompleted', '{{}}');"
        ),
    )
    .await;

    let (code, out, err) = tokio::task::block_in_place(|| lienthong(&["verify", &file]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("DIFFERS: 3 row(s)"), "{out}");
    assert!(
        out.contains(&format!(
            "cases {changed}: status is \"edited by hand\" in the store, "
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("cases {deleted}: missing from the store")),
        "{out}"
    );
    assert!(
        out.contains("case_events forged-event: in the store but not in the log"),
        "{out}"
    );
    assert!(err.contains(&format!("`lienthong repair {file}`")), "{err}");
    // The running connector's own check sees the same three.
    wait_divergent(port, &name, 3.0).await;

    let (code, out, err) = tokio::task::block_in_place(|| lienthong(&["repair", &file]));
    eprintln!("lienthong repair:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("DIFFERS: 3 row(s)"), "{out}");
    assert!(
        out.contains(
            "repaired 3 row(s) in one transaction: their rows removed, the log's 2 written"
        ),
        "{out}"
    );
    let after = out.split("after the repair:").nth(1).unwrap();
    assert!(after.contains("in sync"), "{out}");
    wait_divergent(port, &name, 0.0).await;

    // Nothing else was touched: once the last arrivals are applied, the store is the log.
    arriving.cancel();
    let batches = feeder.await.unwrap();
    assert!(batches > 0);
    wait_caught_up(
        &store,
        &name,
        &topic,
        &end_offsets(&kafka, &topic).await,
        Duration::from_secs(120),
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
    let folded = fold_in_memory(&toml, &[&topic], &kafka).await;
    assert_same_rows(&store.rows().await, &folded, store.kind());

    // Misuse says what is wrong: a topic's options on a connector, a store that is not there.
    let (code, _, err) =
        tokio::task::block_in_place(|| lienthong(&["verify", &file, "--from", "beginning"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from and --registry are for"), "{err}");
    let broken = dir.path().join("broken.toml");
    let unreachable = match &store {
        Store::Postgres { .. } => {
            "[store]\nkind = \"postgres\"\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n"
                .to_string()
        }
        Store::Sqlite { .. } => {
            "[store]\nkind = \"sqlite\"\npath = \"/no/such/dir/ward.db\"\n".to_string()
        }
    };
    std::fs::write(&broken, toml.replace(&store.toml(), &unreachable)).unwrap();
    let (code, _, err) =
        tokio::task::block_in_place(|| lienthong(&["verify", broken.to_str().unwrap()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("store:"), "{err}");
}
