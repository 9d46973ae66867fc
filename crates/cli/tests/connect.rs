//! Sink connector scenarios against real Kafka and real stores. Each scenario is written once,
//! as a function of the store, and run against PostgreSQL and SQLite.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use lienthong_connect::Digest;
use lienthong_tests::{kafka, unique_suffix};
use support::*;

both_stores!(
    a_stream_is_applied_exactly_and_a_replay_changes_nothing,
    poison_records_go_to_the_dead_letter_topic_and_the_rest_is_applied,
    a_ward_store_takes_its_own_cases_and_only_granted_citizens,
    a_new_optional_field_adds_a_column_and_an_incompatible_change_stops,
    replay_rebuilds_a_store_from_the_beginning_of_the_log,
);

/// 600 cases (about 2,700 events, some sent twice) over 4 partitions: the store holds exactly
/// what the log says (independent model, digest and row by row against the log folded in
/// memory); graceful shutdown stops in bounded time; offsets reset to 0 replay the whole log
/// and change nothing.
async fn a_stream_is_applied_exactly_and_a_replay_changes_nothing(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("sink-stream", 4, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let mut events = case_stream(&prefix, 600);
    // Duplicates: the same events delivered again later (a producer retry, a replayed outbox).
    let dups: Vec<_> = events.iter().step_by(37).cloned().collect();
    events.extend(dups);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    let ends = end_offsets(&kafka, &topic).await;

    let name = format!("stream-{}", unique_suffix());
    let metrics_port = lienthong_tests::free_port();
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;

    let metrics = metrics_text(metrics_port).await;
    assert!(
        metrics.contains(&format!(
            "lienthong_connector_events_consumed_total{{connector=\"{name}\",topic=\"{topic}\"}} {}",
            events.len()
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("lienthong_connector_up{{connector=\"{name}\"}} 1")));

    let stopping = Instant::now();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("shutdown within bounded time")
        .unwrap()
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(20));

    let rows = store.rows().await;
    check_cases(&rows, &expected_cases(&events));
    let folded = fold_in_memory(&toml, &[&topic], &kafka).await;
    assert_same_rows(&rows, &folded, store.kind());
    let digest = Digest::of(rows.clone(), 64);
    assert_eq!(digest, Digest::of(folded, 64));
    let dead = kafka
        .read_all(&dlq, 0, Duration::from_secs(2), Duration::ZERO)
        .await
        .unwrap();
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // Replay: forget the offsets, run again over the whole log: nothing changes.
    assert_eq!(store.forget_offsets(&name).await, 4);
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let replayed = store.rows().await;
    assert_eq!(
        Digest::of(replayed, 64),
        digest,
        "a replay changed the store"
    );
}

/// Not-Avro bytes, an unknown schema id, a record of another entity, a key that is not the
/// aggregate id, and a constraint violation (version 0) in the middle of a stream: each lands
/// in the DLQ once with its class and the original coordinates; everything else is applied.
async fn poison_records_go_to_the_dead_letter_topic_and_the_rest_is_applied(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("sink-poison", 2, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let events = case_stream(&prefix, 200);
    let mut records = encode_cases(&events);
    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let mut bad_version = lienthong_contract::samples::typical_case_submitted();
    bad_version.envelope.aggregate_id = format!("{prefix}-bad");
    bad_version.envelope.aggregate_version = 0;
    let citizen = lienthong_contract::samples::citizen_record();
    let mut mismatched = lienthong_contract::samples::typical_case_submitted();
    mismatched.envelope.aggregate_id = format!("{prefix}-other");
    let case_id = catalog.local_id("hcm.case.events").unwrap();
    let citizen_id = catalog.local_id("hcm.citizen.records").unwrap();
    let mut unknown = vec![0u8, 0, 0, 3, 231];
    unknown.extend_from_slice(&codec.encode_to_vec(case_id, &events[0]).unwrap()[5..]);
    let poison: Vec<(String, Option<Vec<u8>>, &str)> = vec![
        (
            format!("{prefix}-p1"),
            Some(b"{\"not\": \"avro\"}".to_vec()),
            "not_avro",
        ),
        (format!("{prefix}-p2"), Some(unknown), "unknown_schema"),
        (
            format!("{prefix}-p3"),
            Some(codec.encode_to_vec(citizen_id, &citizen).unwrap()),
            "incompatible_schema",
        ),
        (
            format!("{prefix}-p4"),
            Some(codec.encode_to_vec(case_id, &mismatched).unwrap()),
            "invalid",
        ),
        (
            bad_version.envelope.aggregate_id.clone(),
            Some(codec.encode_to_vec(case_id, &bad_version).unwrap()),
            "constraint",
        ),
    ];
    for (i, (k, v, _)) in poison.iter().enumerate() {
        records.insert(100 + i * 97, (k.clone(), v.clone()));
    }
    produce(&kafka, &topic, &records).await;
    let ends = end_offsets(&kafka, &topic).await;
    let name = format!("poison-{}", unique_suffix());
    let toml = config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, "");
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;
    token.cancel();
    task.await.unwrap().unwrap();

    let rows = store.rows().await;
    check_cases(&rows, &expected_cases(&events));
    let source = kafka
        .read_all(
            &topic,
            records.len(),
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let dead = kafka
        .read_all(
            &dlq,
            poison.len(),
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(
        dead.len(),
        poison.len(),
        "exactly the poison records: {dead:?}"
    );
    // Headers need the full message: read the DLQ again with a consumer that keeps them.
    let headers = dlq_headers(&kafka, &dlq, poison.len()).await;
    for (key, payload, class) in &poison {
        let (h, _) = headers
            .iter()
            .find(|(_, k)| k.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{class} record {key} not dead-lettered"));
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("header {n} missing"))
        };
        assert_eq!(get("lienthong.error.class"), *class, "{key}");
        assert_eq!(get("lienthong.original.topic"), topic);
        assert_eq!(get("lienthong.connector"), name);
        assert!(!get("lienthong.error.message").is_empty());
        let (p, o): (i32, i64) = (
            get("lienthong.original.partition").parse().unwrap(),
            get("lienthong.original.offset").parse().unwrap(),
        );
        let original = source
            .iter()
            .find(|r| r.partition == p && r.offset == o)
            .expect("the headers point at the original record");
        assert_eq!(original.payload, *payload, "{class}");
    }
    let folded = fold_in_memory(&toml, &[&topic], &kafka).await;
    assert_same_rows(&rows, &folded, store.kind());
}

/// A ward's store (unit 26737) takes the cases it receives, is home to, processes or gets
/// assigned — from the event that makes it relevant on, remembered across batches — and no
/// citizen record unless granted; a granted store applies citizen tombstones.
async fn a_ward_store_takes_its_own_cases_and_only_granted_citizens(store: Store) {
    let ward = "26737";
    let kafka = kafka();
    let topic = kafka.create_topic("sink-ward", 3, 1, &[]).await.unwrap();
    let citizens = kafka
        .create_topic("sink-citizens", 1, 1, &[])
        .await
        .unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let events = case_stream(&prefix, 300);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let citizen_id = catalog.local_id("hcm.citizen.records").unwrap();
    let mut people = Vec::new();
    for i in 0..10u64 {
        let mut c = lienthong_contract::samples::citizen_record();
        let pid = format!("0792{:08}", fastrand::u64(..100_000_000) + i);
        c.envelope.aggregate_id = pid.clone();
        c.envelope.event_id = lienthong_contract::samples::uuid_like(fastrand::u64(..));
        c.profile.personal_id = pid.clone();
        people.push((pid, Some(codec.encode_to_vec(citizen_id, &c).unwrap())));
    }
    let erased = people[3].0.clone();
    people.push((erased.clone(), None));
    produce(&kafka, &citizens, &people).await;

    let name = format!("ward-{}", unique_suffix());
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases"), (&citizens, "citizens")],
        &store,
        &dlq,
        "",
    )
    .replace(
        "[batch]",
        &format!("[filter]\nunits = [\"{ward}\"]\n[batch]"),
    );
    let (token, task) = spawn(config(&toml));
    wait_caught_up(
        &store,
        &name,
        &topic,
        &end_offsets(&kafka, &topic).await,
        Duration::from_secs(120),
    )
    .await;
    wait_caught_up(
        &store,
        &name,
        &citizens,
        &end_offsets(&kafka, &citizens).await,
        Duration::from_secs(60),
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();

    // Independent expectation: a case is the ward's from its first event naming the ward.
    let mut expected = std::collections::BTreeMap::new();
    let mut by_case: std::collections::BTreeMap<&str, Vec<&lienthong_contract::events::CaseEvent>> =
        Default::default();
    for e in &events {
        by_case.entry(&e.envelope.aggregate_id).or_default().push(e);
    }
    use lienthong_contract::events::CaseEventKind as K;
    for (id, evs) in &by_case {
        let first = evs.iter().position(|e| match &e.event {
            K::CaseSubmitted(s) => s.receiving_unit == ward || s.home_unit == ward,
            K::CaseAccepted(a) => a.processing_unit == ward,
            K::CaseAssigned(a) => a.to_unit == ward,
            _ => false,
        });
        if let Some(j) = first {
            let last = evs.last().unwrap();
            expected.insert(
                id.to_string(),
                (
                    last.envelope.aggregate_version,
                    status_of(&last.event).to_string(),
                    evs.len() - j,
                ),
            );
        }
    }
    assert!(
        expected.len() > 50 && expected.len() < 250,
        "{}",
        expected.len()
    );
    assert!(
        by_case
            .iter()
            .any(|(id, evs)| expected.get(*id).is_some_and(|e| e.2 < evs.len())),
        "the stream has cases that become the ward's only later"
    );
    let rows = store.rows().await;
    check_cases(&rows, &expected);
    assert!(
        rows.iter().all(|r| r.table != "citizens"),
        "citizens without a grant"
    );
    let folded = fold_in_memory(&toml, &[&topic, &citizens], &kafka).await;
    assert_same_rows(&rows, &folded, store.kind());

    // A granted connector on the same store: every citizen but the erased one.
    let granted = format!("granted-{}", unique_suffix());
    let toml = config_toml(
        &granted,
        &kafka,
        &[(&citizens, "citizens")],
        &store,
        &dlq,
        "",
    )
    .replace("[batch]", "[filter]\ncitizen_records = true\n[batch]");
    let (token, task) = spawn(config(&toml));
    wait_caught_up(
        &store,
        &granted,
        &citizens,
        &end_offsets(&kafka, &citizens).await,
        Duration::from_secs(60),
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
    let held: Vec<String> = store
        .rows()
        .await
        .into_iter()
        .filter(|r| r.table == "citizens")
        .map(|r| r.key)
        .collect();
    assert_eq!(held.len(), 9, "{held:?}");
    assert!(!held.contains(&erased), "the tombstone deleted the record");
}

/// A registry (a stub serving ids) holds the case schema (1), a newer one whose CaseAccepted
/// has a new optional `note` (2), and an incompatible one whose `processing_unit` is a number
/// (3). Records of 2 add a nullable column (recorded as a migration) and fill it; the first
/// record of 3 stops the connector with a clear error, before anything of it is applied.
async fn a_new_optional_field_adds_a_column_and_an_incompatible_change_stops(store: Store) {
    #[derive(serde::Serialize)]
    enum Kind3 {
        CaseAccepted { processing_unit: i64 },
    }
    #[derive(serde::Serialize)]
    struct Event3 {
        envelope: lienthong_contract::events::Envelope,
        event: Kind3,
    }
    let v1 = case_schema();
    let v2 = case_schema_with_note();
    let v3 = case_schema_with_accepted(&|fields| fields[0]["type"] = serde_json::json!("long"));
    let schemas = std::sync::Arc::new(vec![(1u32, v1.clone()), (2, v2.clone()), (3, v3.clone())]);
    let router = axum::Router::new().route(
        "/schemas/ids/{id}",
        axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<u32>| {
            let schemas = schemas.clone();
            async move {
                match schemas.iter().find(|(i, _)| *i == id) {
                    Some((_, s)) => axum::Json(serde_json::json!({"schema": s})).into_response(),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(
                            serde_json::json!({"error_code": 40403, "message": "Schema not found"}),
                        ),
                    )
                        .into_response(),
                }
            }
        }),
    );
    use axum::response::IntoResponse;
    let registry = lienthong_tests::serve(router).await.unwrap();

    let kafka = kafka();
    let topic = kafka.create_topic("sink-evolve", 1, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let codec = lienthong_contract::Codec::new();
    codec.insert(1, &v1).unwrap();
    codec.insert(2, &v2).unwrap();
    codec.insert(3, &v3).unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let mut records = Vec::new();
    for i in 0..20 {
        let id = case_id(&prefix, i);
        let mut submitted = lienthong_contract::samples::typical_case_submitted();
        submitted.envelope.aggregate_id = id.clone();
        submitted.envelope.event_id = lienthong_contract::samples::uuid_like(fastrand::u64(..));
        records.push((
            id.clone(),
            Some(codec.encode_to_vec(1, &submitted).unwrap()),
        ));
        let note = i.is_multiple_of(2).then(|| format!("ghi chú {i}"));
        records.push((
            id.clone(),
            Some(accepted_with_note(&codec, 2, &id, 2, note)),
        ));
    }
    produce(&kafka, &topic, &records).await;
    let ends = end_offsets(&kafka, &topic).await;
    let name = format!("evolve-{}", unique_suffix());
    let toml = with_registry(
        &config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, ""),
        &registry,
        "",
    );
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(60)).await;
    let rows = store.rows().await;
    let cases: Vec<_> = rows.iter().filter(|r| r.table == "cases").collect();
    assert_eq!(cases.len(), 20);
    for r in &cases {
        let i: usize = r.key.rsplit('-').next().unwrap().parse().unwrap();
        let note = r.cells.get("case_accepted__note");
        if i.is_multiple_of(2) {
            assert_eq!(
                note,
                Some(&lienthong_connect::model::Cell::Text(format!(
                    "ghi chú {i}"
                ))),
                "{r:?}"
            );
        } else {
            assert_eq!(note, None);
        }
        assert_eq!(r.cells["version"], lienthong_connect::model::Cell::Int(2));
    }

    // The incompatible writer: the connector stops, naming it, and applies nothing of it.
    let mut env = lienthong_contract::samples::envelope(7, "STP", &case_id(&prefix, 0), 3);
    env.event_id = lienthong_contract::samples::uuid_like(fastrand::u64(..));
    let bad = Event3 {
        envelope: env,
        event: Kind3::CaseAccepted {
            processing_unit: 42,
        },
    };
    produce(
        &kafka,
        &topic,
        &[(
            case_id(&prefix, 0),
            Some(codec.encode_to_vec(3, &bad).unwrap()),
        )],
    )
    .await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the connector stops by itself")
        .unwrap();
    token.cancel();
    let err = stopped
        .expect_err("an incompatible schema is an error")
        .to_string();
    assert!(err.contains("incompatible schema 3"), "{err}");
    assert!(err.contains("processing_unit"), "{err}");
    let held = store.offsets(&name).await;
    assert_eq!(
        held[0].next, ends[&0],
        "nothing of the incompatible record was applied"
    );
    let after = store.rows().await;
    assert_eq!(Digest::of(after, 16), Digest::of(rows, 16));
}

/// `lienthong replay` rebuilds an empty store from the beginning of the log, showing progress
/// and an ETA, and stops by itself once it holds the whole log: the same rows (by digest) as
/// the store the connector kept live and as the log folded in memory. Replaying a store that
/// is already whole changes nothing.
async fn replay_rebuilds_a_store_from_the_beginning_of_the_log(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("replay", 4, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("replay-dlq", 1, 1, &[]).await.unwrap();
    let events = case_stream(&format!("RP-{}", unique_suffix()), 300);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    let ends = end_offsets(&kafka, &topic).await;

    // The live store, kept by the connector.
    let name = format!("replay-{}", unique_suffix());
    let live_toml = config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, "");
    let (token, task) = spawn(config(&live_toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let live_rows = store.rows().await;
    let live = Digest::of(live_rows.clone(), 64);
    assert!(live.rows >= 300, "{live:?}");

    // An empty store of the same kind, rebuilt by `replay`.
    let fresh = match store {
        Store::Postgres { .. } => postgres_store().await,
        Store::Sqlite { .. } => sqlite_store().await,
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connector.toml");
    let fresh_toml = config_toml(&name, &kafka, &[(&topic, "cases")], &fresh, &dlq, "");
    std::fs::write(&file, &fresh_toml).unwrap();
    let replay = |file: &std::path::Path| {
        let out = assert_cmd::Command::cargo_bin("lienthong")
            .unwrap()
            .env_remove("RUST_LOG")
            .arg("replay")
            .arg(file)
            .timeout(Duration::from_secs(180))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| replay(&file));
    assert_eq!(code, 0, "{out}\n{err}");
    let total: i64 = ends.values().sum();
    assert!(
        err.contains(&format!("replaying {total} records of 4 partition(s)")),
        "{err}"
    );
    let last = err
        .lines()
        .rfind(|l| l.starts_with("replay: "))
        .expect("progress lines");
    assert!(
        last.contains(&format!("{total}/{total} records (100%), ETA")),
        "{err}"
    );
    let rebuilt = fresh.rows().await;
    assert_same_rows(&rebuilt, &live_rows, fresh.kind());
    // replayed <n> records in <t> s; the store holds <rows> rows, digest <hex>
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "replayed", "{out}");
    assert_eq!(words[1], total.to_string(), "{out}");
    assert_eq!(words[words.len() - 1], live.overall, "{out}");
    assert_eq!(Digest::of(rebuilt.clone(), 64), live);
    let folded = fold_in_memory(&fresh_toml, &[&topic], &kafka).await;
    assert_same_rows(&rebuilt, &folded, fresh.kind());

    // Again, over the whole store: nothing changes.
    let (code, out, err) = tokio::task::block_in_place(|| replay(&file));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.trim_end().ends_with(&live.overall), "{out}");
    assert_eq!(Digest::of(fresh.rows().await, 64), live);
    // The store's streamed digest is the digest of its rows, bucket by bucket.
    assert_eq!(fresh.digest(64).await, live);

    // A topic that does not exist, a broker that does not answer, a malformed file.
    let missing = config_toml(
        &name,
        &kafka,
        &[(&format!("no-such-topic-{}", unique_suffix()), "cases")],
        &fresh,
        &dlq,
        "",
    );
    std::fs::write(&file, missing).unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| replay(&file));
    assert_eq!(code, 1, "a state of the cluster, not bad input: {err}");
    assert!(err.contains("does not exist"), "{err}");
    std::fs::write(&file, fresh_toml.replace(kafka.bootstrap(), "127.0.0.1:1")).unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| replay(&file));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    std::fs::write(&file, "name = \"x\"\nnot toml at all [").unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| replay(&file));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connector.toml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
