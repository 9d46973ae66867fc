//! Digests of what a store holds: overall and per key-hash bucket, computed the same way for
//! every store kind and for a topic's records (folded by [`crate::memory::MemoryStore`]).
//!
//! **Canonical row encoding.** A row is its table name, its key (the aggregate id, or the event
//! id for history rows) and its non-NULL columns sorted by name. With `lp(b)` = the length of
//! `b` as 4 big-endian bytes followed by `b`:
//!
//! ```text
//! row   = lp(table) lp(key) { lp(column) cell }*      columns sorted by name, NULLs left out
//! cell  = 'b' 0|1  |  'i' i64 big-endian  |  'd' f64 bits big-endian (-0.0 as 0.0)  |  't' lp(utf8)
//! ```
//!
//! NULL columns are left out so that a store with an extra (evolved) column that is NULL holds
//! the same facts as one without it. Row hash = SHA-256(row). A row's bucket is the first two
//! bytes of SHA-256(`lp(table) lp(key)`), big-endian, modulo the bucket count. A bucket's digest
//! is SHA-256 of its row hashes sorted and concatenated; the overall digest is SHA-256 of every
//! bucket's index (4 bytes), row count (8 bytes) and digest, in bucket order. Equal digests mean
//! equal sets of rows, so the same facts.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::model::Cell;

/// Default number of buckets.
pub const DEFAULT_BUCKETS: usize = 64;

/// Most buckets a digest may have (a bucket is taken from two bytes of a hash).
pub const MAX_BUCKETS: usize = 65_536;

/// One row of a store, as the digest sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Table.
    pub table: String,
    /// Key: aggregate id, or event id for a history row.
    pub key: String,
    /// Non-NULL columns (NULLs may be present; they are skipped).
    pub cells: BTreeMap<String, Cell>,
}

fn lp(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

impl Row {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        lp(&mut out, self.table.as_bytes());
        lp(&mut out, self.key.as_bytes());
        for (name, cell) in &self.cells {
            if *cell == Cell::Null {
                continue;
            }
            lp(&mut out, name.as_bytes());
            match cell {
                Cell::Null => {}
                Cell::Bool(b) => {
                    out.push(b'b');
                    out.push(u8::from(*b));
                }
                Cell::Int(i) => {
                    out.push(b'i');
                    out.extend_from_slice(&i.to_be_bytes());
                }
                Cell::Double(d) => {
                    out.push(b'd');
                    let d = if *d == 0.0 { 0.0 } else { *d };
                    out.extend_from_slice(&d.to_bits().to_be_bytes());
                }
                Cell::Text(s) => {
                    out.push(b't');
                    lp(&mut out, s.as_bytes());
                }
            }
        }
        out
    }

    /// SHA-256 of the canonical encoding.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// The row's bucket among `buckets`.
    pub fn bucket(&self, buckets: usize) -> usize {
        bucket_of(&self.table, &self.key, buckets)
    }
}

/// The bucket of `(table, key)` among `buckets`.
pub fn bucket_of(table: &str, key: &str, buckets: usize) -> usize {
    let mut b = Vec::with_capacity(table.len() + key.len() + 8);
    lp(&mut b, table.as_bytes());
    lp(&mut b, key.as_bytes());
    let h = Sha256::digest(&b);
    usize::from(u16::from_be_bytes([h[0], h[1]])) % buckets.max(1)
}

/// One bucket's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketDigest {
    /// Rows in the bucket.
    pub rows: u64,
    /// Lower-case hex SHA-256.
    pub hash: String,
}

/// A store's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Rows in total.
    pub rows: u64,
    /// Lower-case hex SHA-256 over every bucket.
    pub overall: String,
    /// Per bucket, in bucket order.
    pub buckets: Vec<BucketDigest>,
}

/// A digest built one row at a time, keeping each row's hash (32 bytes), not the row: what a
/// store with a million rows can afford.
#[derive(Debug, Clone)]
pub struct DigestBuilder {
    hashes: Vec<Vec<[u8; 32]>>,
    total: u64,
}

impl DigestBuilder {
    /// An empty digest with `buckets` buckets.
    pub fn new(buckets: usize) -> Self {
        DigestBuilder {
            hashes: vec![Vec::new(); buckets.max(1)],
            total: 0,
        }
    }

    /// Add `row`.
    pub fn push(&mut self, row: &Row) {
        self.add(row);
    }

    /// Add `row`; returns its bucket.
    fn add(&mut self, row: &Row) -> usize {
        let bucket = row.bucket(self.hashes.len());
        self.hashes[bucket].push(row.hash());
        self.total += 1;
        bucket
    }

    /// The digest of the rows added.
    pub fn finish(self) -> Digest {
        let n = self.hashes.len();
        let mut overall = Sha256::new();
        let mut out = Vec::with_capacity(n);
        for (i, mut hs) in self.hashes.into_iter().enumerate() {
            hs.sort_unstable();
            let mut h = Sha256::new();
            for x in &hs {
                h.update(x);
            }
            let digest: [u8; 32] = h.finalize().into();
            overall.update(u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            overall.update((hs.len() as u64).to_be_bytes());
            overall.update(digest);
            out.push(BucketDigest {
                rows: hs.len() as u64,
                hash: hex::encode(digest),
            });
        }
        Digest {
            rows: self.total,
            overall: hex::encode(overall.finalize()),
            buckets: out,
        }
    }
}

/// A store read once for a check: its digest, and the rows of some buckets kept whole (the
/// ones an earlier digest found differing).
#[derive(Debug, Clone)]
pub struct Scan {
    digest: DigestBuilder,
    keep: Vec<bool>,
    rows: Vec<Row>,
    /// Only these tables (all when `None`).
    tables: Option<std::collections::HashSet<String>>,
}

impl Scan {
    /// A scan with `buckets` buckets keeping the rows of the buckets in `keep`.
    pub fn new(buckets: usize, keep: &[usize]) -> Scan {
        let digest = DigestBuilder::new(buckets);
        let mut kept = vec![false; digest.hashes.len()];
        for b in keep {
            if let Some(k) = kept.get_mut(*b) {
                *k = true;
            }
        }
        Scan {
            digest,
            keep: kept,
            rows: Vec::new(),
            tables: None,
        }
    }

    /// The same scan, taking only the rows of `tables` (a connector's own tables, when other
    /// connectors write other tables of the same store).
    pub fn only<'a>(mut self, tables: impl IntoIterator<Item = &'a str>) -> Scan {
        self.tables = Some(tables.into_iter().map(str::to_string).collect());
        self
    }

    /// Add `row` (ignored if its table is not taken).
    pub fn push(&mut self, row: Row) {
        if self
            .tables
            .as_ref()
            .is_some_and(|t| !t.contains(&row.table))
        {
            return;
        }
        let bucket = self.digest.add(&row);
        if self.keep[bucket] {
            self.rows.push(row);
        }
    }

    /// The digest, and the rows kept.
    pub fn finish(self) -> (Digest, Vec<Row>) {
        (self.digest.finish(), self.rows)
    }
}

impl Digest {
    /// The digest of `rows` with `buckets` buckets.
    pub fn of(rows: impl IntoIterator<Item = Row>, buckets: usize) -> Digest {
        let mut digest = DigestBuilder::new(buckets);
        for row in rows {
            digest.push(&row);
        }
        digest.finish()
    }

    /// Indices of the buckets that differ from `other`'s (all, if the bucket counts differ).
    pub fn differing_buckets(&self, other: &Digest) -> Vec<usize> {
        if self.buckets.len() != other.buckets.len() {
            return (0..self.buckets.len().max(other.buckets.len())).collect();
        }
        self.buckets
            .iter()
            .zip(&other.buckets)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(key: &str, cells: &[(&str, Cell)]) -> Row {
        Row {
            table: "cases".into(),
            key: key.into(),
            cells: cells
                .iter()
                .map(|(n, c)| (n.to_string(), c.clone()))
                .collect(),
        }
    }

    #[test]
    fn order_and_nulls_do_not_matter_values_do() {
        let a = vec![
            row("1", &[("v", Cell::Int(1)), ("n", Cell::Null)]),
            row("2", &[("t", Cell::Text("x".into()))]),
        ];
        let b = vec![
            row("2", &[("t", Cell::Text("x".into()))]),
            row("1", &[("v", Cell::Int(1))]),
        ];
        assert_eq!(Digest::of(a.clone(), 16), Digest::of(b, 16));
        let c = vec![
            row("1", &[("v", Cell::Int(2))]),
            row("2", &[("t", Cell::Text("x".into()))]),
        ];
        let (da, dc) = (Digest::of(a, 16), Digest::of(c, 16));
        assert_ne!(da.overall, dc.overall);
        assert_eq!(da.differing_buckets(&dc), vec![bucket_of("cases", "1", 16)]);
    }

    #[test]
    fn types_are_part_of_the_fact() {
        let i = Digest::of(vec![row("1", &[("v", Cell::Int(1))])], 4);
        let b = Digest::of(vec![row("1", &[("v", Cell::Bool(true))])], 4);
        let t = Digest::of(vec![row("1", &[("v", Cell::Text("1".into()))])], 4);
        assert_ne!(i, b);
        assert_ne!(i, t);
    }
}
