use crate::apply::*;
use lienthong_connect::model::{HISTORY_COLUMNS, HistoryRow};

/// Split binary COPY data into its rows' fields, checking the framing on the way.
fn fields(data: &[u8]) -> Vec<Vec<Vec<u8>>> {
    assert_eq!(&data[..11], b"PGCOPY\n\xff\r\n\0", "signature");
    assert_eq!(&data[11..19], &[0; 8], "flags and header extension");
    let mut at = 19;
    let mut rows = Vec::new();
    loop {
        let n = i16::from_be_bytes([data[at], data[at + 1]]);
        at += 2;
        if n == -1 {
            assert_eq!(at, data.len(), "nothing after the trailer");
            return rows;
        }
        let mut row = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            at += 4;
            let len = usize::try_from(len).expect("no NULL in a history row");
            row.push(data[at..at + len].to_vec());
            at += len;
        }
        rows.push(row);
    }
}

#[test]
fn history_copy_data_sends_every_column_in_the_order_named() {
    let row = HistoryRow {
        event_id: "e-1".into(),
        id: "HCM-1".into(),
        version: 3,
        occurred_at: 1_700_000_000_123,
        producer_unit: "phuong-ben-thanh".into(),
        correlation_id: "c-9".into(),
        kind: "case_accepted".into(),
        body: r#"{"ghi_chú":"Nguyễn"}"#.into(),
    };
    let data = history_copy_data(&[&row, &row]).unwrap();
    let rows = fields(&data);
    assert_eq!(rows.len(), 2);
    let value = |name: &str| -> Vec<u8> {
        match name {
            "event_id" => row.event_id.clone().into_bytes(),
            "id" => row.id.clone().into_bytes(),
            "version" => row.version.to_be_bytes().to_vec(),
            "occurred_at" => row.occurred_at.to_be_bytes().to_vec(),
            "producer_unit" => row.producer_unit.clone().into_bytes(),
            "correlation_id" => row.correlation_id.clone().into_bytes(),
            "kind" => row.kind.clone().into_bytes(),
            "body" => row.body.clone().into_bytes(),
            other => panic!("a history column the test does not know: {other}"),
        }
    };
    let expected: Vec<Vec<u8>> = history_columns().split(", ").map(value).collect();
    assert_eq!(expected.len(), 1 + HISTORY_COLUMNS.len());
    assert_eq!(rows[0], expected);
    assert_eq!(rows[1], expected);
}
