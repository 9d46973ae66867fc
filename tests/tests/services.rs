//! The other real services the suite depends on: PostgreSQL gives each test its own database,
//! and the Python environment's `confluent-kafka` (a client nobody here wrote) talks to our broker.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lienthong_tests::{connect, kafka, postgres, python};

#[tokio::test]
async fn each_test_gets_its_own_postgres_database() -> Result<()> {
    let pg = postgres();
    let a = pg.fresh_database("iso").await?;
    let b = pg.fresh_database("iso").await?;
    assert_ne!(a, b);

    let ca = connect(&a).await?;
    ca.batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
        .await?;
    let n: i64 = ca.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(n, 2);

    let cb = connect(&b).await?;
    let seen = cb
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 't'", &[])
        .await?;
    assert!(seen.is_none(), "database {b} sees a table created in {a}");
    let version: String = cb.query_one("SHOW server_version", &[]).await?.get(0);
    eprintln!("real PostgreSQL {version}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_produces_and_rust_reads_it() -> Result<()> {
    let kafka = kafka();
    let topic = kafka.create_topic("py-interop", 1, 1, &[]).await?;
    let script = r#"
import sys, confluent_kafka
p = confluent_kafka.Producer({"bootstrap.servers": sys.argv[1], "enable.idempotence": True})
for i in range(100):
    p.produce(sys.argv[2], key=f"k{i % 7}", value=f"py-{i}")
left = p.flush(30)
assert left == 0, f"{left} records not delivered"
print(confluent_kafka.version()[0], confluent_kafka.libversion()[0])
"#;
    let out = Command::new(python())
        .args(["-c", script, kafka.bootstrap(), &topic])
        .output()
        .context("running the venv's python")?;
    ensure!(
        out.status.success(),
        "python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "confluent-kafka / librdkafka: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    let records = kafka
        .read_all(&topic, 100, Duration::from_secs(30), Duration::from_secs(1))
        .await?;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let want: Vec<String> = (0..100).map(|i| format!("py-{i}")).collect();
    assert_eq!(values, want, "one partition: same records, same order");
    Ok(())
}
