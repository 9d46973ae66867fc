//! An event id as the gateway's idempotency index keys it, read by the encoder while it walks.

/// An event id as the index keys it. Every envelope's `event_id` is a UUID in its 36-character
/// text (the schema's logical type, checked by the encoder), so the key holds its 32
/// hexadecimal digits as 128 bits and, beside them, which digits were written in upper case:
/// two ids are one key exactly when their texts are equal, and the key is two machine words,
/// hashed and compared without touching the text again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey {
    digits: u128,
    upper: u32,
}

impl EventKey {
    /// The key of `id`, if it is a UUID's 8-4-4-4-12 hexadecimal text (either case).
    pub fn parse(id: &str) -> Option<EventKey> {
        let bytes = id.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let (mut digits, mut upper, mut n) = (0u128, 0u32, 0u32);
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => {
                    upper |= 1 << n;
                    c - b'A' + 10
                }
                _ => return None,
            };
            digits = digits << 4 | u128::from(v);
            n += 1;
        }
        Some(EventKey { digits, upper })
    }
}
