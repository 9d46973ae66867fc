//! The direct path: a request body's JSON bytes to Avro in one pass, for events that need no
//! diagnosis.
//!
//! Most requests are valid, with their keys in schema order and their text already NFC. For
//! them, building the JSON tree and then walking it is two passes where one does: this path
//! reads the bytes once against the compiled [`Plan`](super::Plan) and writes the Avro as it
//! goes. It *only* ever says "this body is valid, here are its records". At anything else — a
//! problem of any kind, a string with an escape, text not yet NFC, a key out of schema order or
//! unknown, a float, a map, bytes, a batch with a repeated event id, more than 64 nested objects
//! and arrays — it gives up, and the full walk ([`TopicEncoder::encode`]) runs on the same body
//! and says what the gateway answers. (A schema whose envelope's record type also stands
//! elsewhere is served by the walk alone, see `Plan::mark_capture`.) So every refusal and its
//! wording come from one place, and this path must never accept what the walk refuses nor
//! encode anything differently: `tests` check both on every sample, on every value of every
//! sample changed in turn, on damaged bodies and on the schemas a review found it wrong for.

use std::borrow::Cow;

use lienthong_contract::codec::write_header;
use lienthong_contract::write::{write_bytes, write_long};

use crate::plan::{Attrs, Node, RecordPlan, UnionPlan};
use crate::walk::{is_uuid, parse_date, parse_rfc3339, timestamp_in_unit};
use crate::{CAPTURE_EVENT_ID, CAPTURE_KEY, CAPTURE_PRODUCER, Encoded, EventKey, TopicEncoder};

impl TopicEncoder {
    /// Every event of `body` (a JSON array of events when `batch`, else one event object)
    /// checked and encoded in one pass, if each is valid and needs nothing that the direct path
    /// leaves to the walk; `None` otherwise (the caller then runs [`TopicEncoder::encode`] on
    /// each event, which says why). A batch must hold 1 to `max_events` events with distinct
    /// event ids.
    pub fn encode_direct(
        &self,
        body: &[u8],
        batch: bool,
        max_events: usize,
    ) -> Option<Vec<Encoded>> {
        if !self.direct {
            return None;
        }
        let mut cur = Cursor::new(std::str::from_utf8(body).ok()?);
        let mut events = Vec::new();
        if batch {
            cur.expect(b'[')?;
            loop {
                if events.len() >= max_events {
                    return None;
                }
                events.push(self.event(&mut cur, 1)?);
                match cur.next_token()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
        } else {
            events.push(self.event(&mut cur, 0)?);
        }
        cur.skip_ws();
        if cur.i != body.len() {
            return None;
        }
        if events.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity_and_hasher(
                events.len(),
                foldhash::fast::RandomState::default(),
            );
            if !events.iter().all(|e: &Encoded| seen.insert(e.event_key)) {
                return None;
            }
        }
        Some(events)
    }

    /// One event at `cur`, inside `depth` open arrays (the batch's, if any).
    fn event<'b>(&self, cur: &mut Cursor<'b>, depth: usize) -> Option<Encoded> {
        let mut direct = Direct {
            records: &self.plan.records,
            cur: Cursor {
                s: cur.s,
                b: cur.b,
                i: cur.i,
            },
            out: Vec::with_capacity(512),
            captured: [None; 3],
            depth,
        };
        write_header(self.schema_id, &mut direct.out);
        direct.value(&self.plan.root, Attrs::default(), 0)?;
        cur.i = direct.cur.i;
        let [key, event_id, producer_unit] = direct.captured;
        let (key, event_id, producer_unit) = (key?, event_id?, producer_unit?);
        if key.is_empty() {
            return None;
        }
        Some(Encoded {
            key: key.to_string(),
            event_key: EventKey::parse(event_id)?,
            event_id: event_id.to_string(),
            producer_unit: producer_unit.to_string(),
            value: direct.out,
        })
    }
}

/// A position in the body, which is valid UTF-8 as a whole (checked once, so that each
/// string is a slice of it with no check of its own).
struct Cursor<'b> {
    s: &'b str,
    b: &'b [u8],
    i: usize,
}

/// How [`Cursor::string`] sees each byte: 0 text, 1 the end of what it takes (the closing
/// quote, an escape, a control character), 2 part of a non-ASCII character.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 0x20 || i == b'"' as usize || i == b'\\' as usize {
            1
        } else if i >= 0x80 {
            2
        } else {
            0
        };
        i += 1;
    }
    t
};

impl<'b> Cursor<'b> {
    fn new(s: &'b str) -> Self {
        Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte that is not whitespace, without taking it.
    fn peek_token(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.i).copied()
    }

    /// The next byte that is not whitespace, taken.
    fn next_token(&mut self) -> Option<u8> {
        let c = self.peek_token()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next_token()? == c).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.skip_ws();
        let end = self.i.checked_add(word.len())?;
        if self.b.get(self.i..end)? != word {
            return None;
        }
        self.i = end;
        // `nulls` is not `null`: the word must end there.
        match self.b.get(self.i) {
            Some(c) if c.is_ascii_alphanumeric() => None,
            _ => Some(()),
        }
    }

    /// A string without escapes or control characters, and whether it is all ASCII.
    fn string(&mut self) -> Option<(&'b str, bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let mut ascii = true;
        let mut i = start;
        loop {
            match CLASS[usize::from(*self.b.get(i)?)] {
                0 => {}
                2 => ascii = false,
                _ => break,
            }
            i += 1;
        }
        if self.b[i] != b'"' {
            return None;
        }
        self.i = i + 1;
        // Both ends are ASCII quotes, so both are character boundaries.
        Some((self.s.get(start..i)?, ascii))
    }

    /// A JSON integer (no fraction, no exponent) that fits an `i64`.
    fn integer(&mut self) -> Option<i64> {
        self.skip_ws();
        let negative = self.b.get(self.i) == Some(&b'-');
        let start = self.i + usize::from(negative);
        let digits = self.b.get(start..)?;
        let len = digits
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        // No leading zeros, no "-0", and nothing that makes it a non-integer.
        if len == 0 || (digits[0] == b'0' && (len > 1 || negative)) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = digits.get(len) {
            return None;
        }
        let mut v: i64 = 0;
        for &d in &digits[..len] {
            let d = i64::from(d - b'0');
            v = v.checked_mul(10)?;
            v = if negative {
                v.checked_sub(d)?
            } else {
                v.checked_add(d)?
            };
        }
        self.i = start + len;
        Some(v)
    }
}

/// One event on the direct path.
struct Direct<'p, 'b> {
    records: &'p [RecordPlan],
    cur: Cursor<'b>,
    out: Vec<u8>,
    /// The key, event id and producer unit, as their fields are read.
    captured: [Option<&'b str>; 3],
    /// Objects and arrays open around the current value, the batch's own array included (a
    /// record that holds itself could nest as deep as the body goes).
    depth: usize,
}

/// How deep objects and arrays may nest on the direct path: well below the 128 at which the
/// walk's parser (serde_json) refuses a body, so that the direct path never takes one that the
/// walk would refuse for its depth. Deeper bodies go to the walk.
const MAX_DEPTH: usize = 64;

impl<'b> Direct<'_, 'b> {
    fn value(&mut self, node: &Node, attrs: Attrs, capture: u8) -> Option<()> {
        match node {
            Node::Null => self.cur.literal(b"null"),
            Node::Boolean => {
                let b = match self.cur.peek_token()? {
                    b't' => self.cur.literal(b"true").map(|()| 1),
                    b'f' => self.cur.literal(b"false").map(|()| 0),
                    _ => None,
                }?;
                self.out.push(b);
                Some(())
            }
            Node::Integer { min, max, .. } => self.int(attrs, *min, *max),
            Node::Date => {
                if self.cur.peek_token()? == b'"' {
                    let days = parse_date(self.text()?)?;
                    write_long(days, &mut self.out);
                    Some(())
                } else {
                    self.int(attrs, i32::MIN.into(), i32::MAX.into())
                }
            }
            Node::Timestamp { micros } => {
                if self.cur.peek_token()? == b'"' {
                    let (secs, nanos) = parse_rfc3339(self.text()?)?;
                    let v = timestamp_in_unit(secs, nanos, *micros).ok()?;
                    write_long(v, &mut self.out);
                    Some(())
                } else {
                    self.int(attrs, i64::MIN, i64::MAX)
                }
            }
            Node::String => {
                let s = self.text()?;
                if let Some(f) = attrs.format
                    && !f.accepts(s)
                {
                    return None;
                }
                self.keep(s, capture);
                Some(())
            }
            Node::Uuid => {
                let s = self.text()?;
                if !is_uuid(s) {
                    return None;
                }
                self.keep(s, capture);
                Some(())
            }
            Node::Enum(e) => {
                let s = self.text()?;
                let i = e.symbols.iter().position(|x| x == s)?;
                write_long(i as i64, &mut self.out);
                Some(())
            }
            Node::Array(items) => {
                self.enter()?;
                self.cur.expect(b'[')?;
                if self.cur.peek_token()? == b']' {
                    self.cur.i += 1;
                    self.out.push(0);
                    self.depth -= 1;
                    return Some(());
                }
                // Avro writes the count before the items: write them, then put it in front.
                let start = self.out.len();
                let mut count = 0i64;
                loop {
                    self.value(items, attrs, 0)?;
                    count += 1;
                    match self.cur.next_token()? {
                        b',' => {}
                        b']' => break,
                        _ => return None,
                    }
                }
                let mut head = Vec::with_capacity(10);
                write_long(count, &mut head);
                self.out.splice(start..start, head);
                self.out.push(0);
                self.depth -= 1;
                Some(())
            }
            Node::Union(u) => self.union(u, attrs, capture),
            Node::Record(id) => self.record(*id),
            // Left to the walk: floats (their text-to-number rules are serde_json's), bytes,
            // maps (keys to check for repeats), and what the gateway refuses anyway.
            Node::Float
            | Node::Double
            | Node::Bytes
            | Node::Fixed(_)
            | Node::Map(_)
            | Node::Unsupported
            | Node::Unknown(_) => None,
        }
    }

    /// Open an object or array, if the depth allows (closing one is `self.depth -= 1`).
    fn enter(&mut self) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        Some(())
    }

    fn int(&mut self, attrs: Attrs, min: i64, max: i64) -> Option<()> {
        let v = self.cur.integer()?;
        let (lo, hi) = attrs.range.unwrap_or((min, max));
        if v < min || v > max || v < lo || v > hi {
            return None;
        }
        write_long(v, &mut self.out);
        Some(())
    }

    /// A string value that is already NFC, so that it is the text the walk would check after
    /// normalising (the walk normalises the others; keys it does not normalise, nor does this).
    fn text(&mut self) -> Option<&'b str> {
        let (s, ascii) = self.cur.string()?;
        if ascii {
            return Some(s);
        }
        match lienthong_contract::nfc::normalize(s) {
            Cow::Borrowed(_) => Some(s),
            Cow::Owned(_) => None,
        }
    }

    /// Write a string, and keep it if its field is one the request needs.
    fn keep(&mut self, s: &'b str, capture: u8) {
        write_bytes(s.as_bytes(), &mut self.out);
        for (i, flag) in [CAPTURE_KEY, CAPTURE_EVENT_ID, CAPTURE_PRODUCER]
            .into_iter()
            .enumerate()
        {
            if capture & flag != 0 {
                self.captured[i] = Some(s);
            }
        }
    }

    fn union(&mut self, u: &UnionPlan, attrs: Attrs, capture: u8) -> Option<()> {
        match self.cur.peek_token()? {
            b'n' if u.null.is_some() => {
                self.cur.literal(b"null")?;
                write_long(u.null? as i64, &mut self.out);
                return Some(());
            }
            b'{' => {
                // {"<branch>": value} when the object's only key names a branch, as the walk
                // decides; a bare record of the only branch when its first key names none.
                let at = self.cur.i;
                self.cur.i += 1;
                let (tag, _) = self.cur.string()?;
                if let Some(i) = u
                    .branches
                    .iter()
                    .position(|b| b.short == tag || b.full.as_deref() == Some(tag))
                {
                    // More keys after a branch's name: the walk's to judge (reading the object
                    // again as a bare record could double the work at every level of a
                    // schema that holds itself).
                    self.enter()?;
                    self.cur.expect(b':')?;
                    write_long(i as i64, &mut self.out);
                    self.value(&u.branches[i].node, attrs, capture)?;
                    self.cur.expect(b'}')?;
                    self.depth -= 1;
                    return Some(());
                }
                // Only the key was read: nothing written, nothing kept.
                self.cur.i = at;
            }
            _ => {}
        }
        let only = u.only_non_null?;
        write_long(only as i64, &mut self.out);
        self.value(&u.branches[only].node, attrs, capture)
    }

    fn record(&mut self, id: usize) -> Option<()> {
        let records = self.records;
        let r = records.get(id)?;
        self.enter()?;
        self.cur.expect(b'{')?;
        let mut next = 0;
        if self.cur.peek_token()? == b'}' {
            self.cur.i += 1;
        } else {
            loop {
                let (key, _) = self.cur.string()?;
                // The key names this field or a later one; the fields passed over take their
                // defaults. A key named before (a repeat) or not at all is the walk's to judge.
                let at = next + r.fields[next..].iter().position(|f| f.name == key)?;
                for skipped in &r.fields[next..at] {
                    self.out
                        .extend_from_slice(skipped.default_bytes.as_deref()?);
                }
                self.cur.expect(b':')?;
                let field = &r.fields[at];
                self.value(&field.node, field.attrs, field.capture)?;
                next = at + 1;
                match self.cur.next_token()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        for missing in &r.fields[next..] {
            self.out
                .extend_from_slice(missing.default_bytes.as_deref()?);
        }
        self.depth -= 1;
        Some(())
    }
}

#[cfg(test)]
mod tests;
