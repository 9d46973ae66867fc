#![allow(clippy::unwrap_used)]

use super::layout::*;
use super::*;

fn change(key: &str, version: i64, cols: &[(&str, i64)], rel: Relevance) -> Op {
    Op::Upsert(Change {
        entity: Entity::Cases,
        key: key.into(),
        version,
        cells: cols
            .iter()
            .map(|(n, v)| {
                (
                    Column {
                        name: Arc::from(*n),
                        ty: SqlType::Int,
                    },
                    Cell::Int(*v),
                )
            })
            .collect(),
        history: Some(HistoryRow {
            event_id: format!("{key}-{version}"),
            id: key.into(),
            version,
            occurred_at: 0,
            producer_unit: "u".into(),
            correlation_id: "c".into(),
            kind: "k".into(),
            body: "{}".into(),
        }),
        relevance: rel,
    })
}

#[test]
fn a_batch_merges_deltas_and_skips_what_the_store_has() {
    let held: HashMap<_, _> = [((Entity::Cases, "a".to_string()), 2)].into();
    let ops = vec![
        change("a", 1, &[("x", 1)], Relevance::Always),
        change("a", 2, &[("y", 2)], Relevance::Always),
        change("a", 3, &[("z", 3)], Relevance::Always),
        change("b", 1, &[("x", 10)], Relevance::IfHeld),
        change("c", 1, &[("x", 5)], Relevance::Always),
        change("c", 2, &[("x", 6), ("y", 7)], Relevance::IfHeld),
    ];
    let p = plan(ops, &held);
    assert_eq!((p.applied, p.stale, p.filtered), (3, 2, 1));
    assert_eq!(p.upserts.len(), 2);
    let a = &p.upserts[0];
    assert_eq!((a.key.as_str(), a.version, a.cells.len()), ("a", 3, 1));
    assert!(a.updates_held_row, "a's row is held at version 2");
    let c = &p.upserts[1];
    assert_eq!(c.version, 2);
    assert!(!c.updates_held_row, "no row of c is held");
    assert_eq!(
        c.cells.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        vec![Cell::Int(6), Cell::Int(7)]
    );
    assert_eq!(p.history.len(), 5, "filtered events have no history");
    // a's version 3 is newer than the row the store held; c had no row, so none of its
    // events can be stored yet.
    let newer: Vec<_> = p
        .history
        .iter()
        .map(|h| (h.row.id.as_str(), h.row.version, h.newer_than_store))
        .collect();
    assert_eq!(
        newer,
        [
            ("a", 1, false),
            ("a", 2, false),
            ("a", 3, true),
            ("c", 1, true),
            ("c", 2, true)
        ]
    );
}

#[test]
fn an_event_at_the_held_version_is_not_newer_than_the_store() {
    let held: HashMap<_, _> = [
        ((Entity::Cases, "a".to_string()), 2),
        ((Entity::Cases, "b".to_string()), 1),
    ]
    .into();
    let ops = vec![
        // The held version again (a duplicate or a conflicting event): stale, looked up.
        change("a", 2, &[("x", 1)], Relevance::Always),
        // A filtered store takes b's event, newer than its held row, in place.
        change("b", 2, &[("x", 2)], Relevance::IfHeld),
        // c is not held: filtered out, no history.
        change("c", 1, &[("x", 3)], Relevance::IfHeld),
    ];
    let p = plan(ops, &held);
    assert_eq!((p.applied, p.stale, p.filtered), (1, 1, 1));
    let newer: Vec<_> = p
        .history
        .iter()
        .map(|h| (h.row.id.as_str(), h.newer_than_store))
        .collect();
    assert_eq!(newer, [("a", false), ("b", true)]);
    assert_eq!(p.upserts.len(), 1);
    assert!(p.upserts[0].updates_held_row);
}

#[test]
fn a_delete_drops_pending_rows_and_lets_later_versions_in() {
    let held: HashMap<_, _> = [((Entity::Cases, "a".to_string()), 5)].into();
    let ops = vec![
        change("a", 6, &[("x", 1)], Relevance::Always),
        Op::Delete {
            entity: Entity::Cases,
            key: "a".into(),
        },
        change("a", 1, &[("x", 2)], Relevance::Always),
    ];
    let p = plan(ops, &held);
    assert_eq!(p.deletes.len(), 1);
    assert_eq!(p.upserts.len(), 1);
    assert_eq!(p.upserts[0].version, 1);
    assert!(
        !p.upserts[0].updates_held_row,
        "the tombstone deletes the held row before the upsert"
    );
    // Newer than the stored row is judged against the store before the batch: version 1,
    // after the delete, may be an old event the store has in its history.
    let newer: Vec<_> = p.history.iter().map(|h| h.newer_than_store).collect();
    assert_eq!(newer, [true, false]);
}

#[test]
fn names_are_snake_and_bounded() {
    assert_eq!(snake("CaseSubmitted"), "case_submitted");
    let long = column_name(&["a".repeat(40).as_str(), "b".repeat(40).as_str()]);
    assert_eq!(long.len(), MAX_IDENT);
    assert_eq!(
        long,
        column_name(&["a".repeat(40).as_str(), "b".repeat(40).as_str()])
    );
}
