//! A single-pass reader for the common shape of an event, tried before the
//! general JSON decoder.
//!
//! Why: events are small objects of short, unescaped strings and integers,
//! and the general decoder spends most of its time on that structure (field
//! matching through serde, per-string UTF-8 checks, a separate nesting-depth
//! pass), not on bytes. Measured on the load generator's events
//! (`bench-results/loadgen/NOTES.md`), the SIMD parsers sonic-rs and
//! simd-json were no faster than serde_json for this shape; reading the
//! known fields directly is.
//!
//! The contract: [`scan_event`] either returns exactly what `serde_json`
//! would decode into [`RawEvent`], or `None`, and then the caller runs
//! `serde_json`, which also produces every error message. It says `None` to
//! anything outside a strict subset: escapes, `null`, fractions and
//! exponents, unknown or repeated fields, nesting other than the event's
//! own. Its nesting is at most three levels, below [`crate::MAX_EVENT_DEPTH`],
//! so an event it reads needs no depth check. The equivalence is tested
//! against `serde_json` on mutated events.

use std::borrow::Cow;

use crate::MAX_ITEMS_PER_EVENT;
use crate::event::{BoundedItems, RawConsent, RawEvent, RawItem, Scalar};

/// The event in `text` if it has the common shape, else `None` (decode it
/// with `serde_json`, which gives the same result or the error). Text is
/// checked for UTF-8 by the caller, once per body where it can.
pub(crate) fn scan_event(text: &str) -> Option<RawEvent<'_>> {
    let mut reader = Reader { text, at: 0 };
    let event = reader.event()?;
    reader.skip_space();
    (reader.at == text.len()).then_some(event)
}

/// Fields of an event, one bit each (each accepted spelling is a field of
/// its own, as in [`RawEvent`]).
#[derive(Clone, Copy)]
enum Field {
    Kind,
    EventId,
    EventIdCamel,
    CustomerId,
    CustomerIdCamel,
    UserId,
    UserIdCamel,
    OrderId,
    OrderIdCamel,
    Timestamp,
    Currency,
    Items,
    Products,
    Revenue,
    Amount,
    Channels,
}

fn event_field(key: &str) -> Option<Field> {
    Some(match key {
        "type" => Field::Kind,
        "event_id" => Field::EventId,
        "eventId" => Field::EventIdCamel,
        "customer_id" => Field::CustomerId,
        "customerId" => Field::CustomerIdCamel,
        "user_id" => Field::UserId,
        "userId" => Field::UserIdCamel,
        "order_id" => Field::OrderId,
        "orderId" => Field::OrderIdCamel,
        "timestamp" => Field::Timestamp,
        "currency" => Field::Currency,
        "items" => Field::Items,
        "products" => Field::Products,
        "revenue" => Field::Revenue,
        "amount" => Field::Amount,
        "channels" => Field::Channels,
        _ => return None,
    })
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON whitespace only (space, tab, line feed, carriage return).
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips whitespace, then consumes `byte`.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// Skips whitespace, then consumes `byte` if it is next.
    fn accept(&mut self, byte: u8) -> bool {
        self.expect(byte).is_some()
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        let s = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(s)
    }

    /// A string, or an integer that `serde_json` reads as a 64-bit integer
    /// (no fraction, no exponent, no leading zero, not `-0`).
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        self.skip_space();
        if self.peek() == Some(b'"') {
            return Some(Scalar { text: Cow::Borrowed(self.string()?), is_string: true, int: None });
        }
        let bytes = self.text.as_bytes();
        let negative = self.peek() == Some(b'-');
        let start = self.at + usize::from(negative);
        let digits = bytes[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        // Eighteen digits fit in both i64 and u64; longer numbers go to serde_json.
        if digits == 0 || digits > 18 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        let end = start + digits;
        if matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let magnitude: i128 = self.text[start..end].parse().ok()?;
        if negative && magnitude == 0 {
            return None;
        }
        self.at = end;
        Some(Scalar {
            text: Cow::Borrowed(""),
            is_string: false,
            int: Some(if negative { -magnitude } else { magnitude }),
        })
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let (value, len) = if rest.starts_with("true") {
            (true, 4)
        } else if rest.starts_with("false") {
            (false, 5)
        } else {
            return None;
        };
        self.at += len;
        Some(value)
    }

    /// The members of an object: `each(reader, key)` reads a value; an
    /// empty object is fine.
    fn members(&mut self, mut each: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.accept(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            each(self, key)?;
            if self.accept(b'}') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    fn event(&mut self) -> Option<RawEvent<'a>> {
        let mut event = RawEvent {
            kind: None,
            event_id: None,
            event_id_camel: None,
            customer_id: None,
            customer_id_camel: None,
            user_id: None,
            user_id_camel: None,
            order_id: None,
            order_id_camel: None,
            timestamp: None,
            currency: None,
            items: None,
            products: None,
            revenue: None,
            amount: None,
            channels: None,
            email: None,
            sms: None,
            push: None,
            acquisition_cost: None,
            acquisition_channel: None,
            campaign_id: None,
            campaign_id_camel: None,
            response: None,
        };
        let mut seen = 0u16;
        self.members(|reader, key| {
            let field = event_field(key)?;
            let bit = 1 << field as u16;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match field {
                Field::Kind => event.kind = Some(reader.scalar()?),
                Field::EventId => event.event_id = Some(reader.scalar()?),
                Field::EventIdCamel => event.event_id_camel = Some(reader.scalar()?),
                Field::CustomerId => event.customer_id = Some(reader.scalar()?),
                Field::CustomerIdCamel => event.customer_id_camel = Some(reader.scalar()?),
                Field::UserId => event.user_id = Some(reader.scalar()?),
                Field::UserIdCamel => event.user_id_camel = Some(reader.scalar()?),
                Field::OrderId => event.order_id = Some(reader.scalar()?),
                Field::OrderIdCamel => event.order_id_camel = Some(reader.scalar()?),
                Field::Timestamp => event.timestamp = Some(reader.scalar()?),
                Field::Currency => event.currency = Some(reader.scalar()?),
                Field::Revenue => event.revenue = Some(reader.scalar()?),
                Field::Amount => event.amount = Some(reader.scalar()?),
                Field::Items => event.items = Some(reader.items()?),
                Field::Products => event.products = Some(reader.items()?),
                Field::Channels => event.channels = Some(reader.channels()?),
            }
            Some(())
        })?;
        Some(event)
    }

    fn items(&mut self) -> Option<BoundedItems<'a>> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.accept(b']') {
            return Some(BoundedItems(items));
        }
        loop {
            if items.len() == MAX_ITEMS_PER_EVENT {
                return None;
            }
            items.push(self.item()?);
            if self.accept(b']') {
                return Some(BoundedItems(items));
            }
            self.expect(b',')?;
        }
    }

    fn item(&mut self) -> Option<RawItem<'a>> {
        let mut item = RawItem {
            product_id: None,
            product_id_camel: None,
            item_id: None,
            sku: None,
            category: None,
            quantity: None,
            price: None,
        };
        self.members(|reader, key| {
            let slot = match key {
                "product_id" => &mut item.product_id,
                "productId" => &mut item.product_id_camel,
                "item_id" => &mut item.item_id,
                "sku" => &mut item.sku,
                "category" => &mut item.category,
                "quantity" => &mut item.quantity,
                "price" => &mut item.price,
                _ => return None,
            };
            fill_once(slot, reader.scalar())
        })?;
        Some(item)
    }

    /// The channels of a consent event, when each is one of the three
    /// channels, sent once, as a boolean (words and other channels go to serde_json).
    fn channels(&mut self) -> Option<std::collections::BTreeMap<Cow<'a, str>, RawConsent<'a>>> {
        let mut channels = std::collections::BTreeMap::new();
        self.members(|reader, key| {
            if !matches!(key, "email" | "sms" | "push") || channels.contains_key(key) {
                return None;
            }
            channels.insert(Cow::Borrowed(key), RawConsent::Flag(reader.boolean()?));
            Some(())
        })?;
        Some(channels)
    }
}

/// Fills a field read once; a repeated field (or no value) is `None`, left to serde_json.
fn fill_once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn serde(json: &[u8]) -> Option<RawEvent<'_>> {
        serde_json::from_slice(json).ok()
    }

    /// The reader on bytes, as a body's line reaches it when the body is UTF-8.
    fn scan(json: &[u8]) -> Option<RawEvent<'_>> {
        std::str::from_utf8(json).ok().and_then(scan_event)
    }

    const SHAPES: [&str; 9] = [
        r#"{"type":"purchase","event_id":"o1","customer_id":"c1","timestamp":"2025-01-01T00:00:00Z","revenue":"5"}"#,
        r#"{"type":"purchase","event_id":"lg-1-o0","customer_id":"lg-1-c622317","timestamp":1701473775573,"items":[{"product_id":"p8","category":"cat8","quantity":1,"price":"32.51"},{"sku":"p9","quantity":2}]}"#,
        r#"{"type":"consent","event_id":"k1","customer_id":"c1","timestamp":1701473857863,"channels":{"email":false,"sms":true,"push":false}}"#,
        r#" { "type" : "refund" , "eventId" : "r1" , "userId" : 42 , "orderId" : "o1" , "timestamp" : -5 , "amount" : "3.10" , "currency" : "USD" } "#,
        r#"{"type":"purchase","event_id":"e","customer_id":"c","timestamp":1,"products":[],"channels":{}}"#,
        "{\"type\":\"purchase\",\n\t\"event_id\":\"é→\",\"customer_id\":\"c\",\"timestamp\":0,\"revenue\":123456789012345678}",
        // Every other alias the reader knows, so that each is checked against serde's.
        r#"{"type":"purchase","event_id":"a","user_id":"u","timestamp":1,"items":[{"item_id":"i","quantity":1},{"productId":"p"}]}"#,
        r#"{"type":"purchase","event_id":"b","customerId":"u","order_id":"o","timestamp":1,"revenue":"2"}"#,
        // Two spellings of one field each keep their own slot.
        r#"{"type":"purchase","eventId":"c","event_id":"d","customer_id":"a","userId":"b","orderId":"o","products":[{"product_id":"p","sku":"s","productId":"q"}],"items":[]}"#,
    ];

    /// The shapes the fast path is for are read by it, and as serde_json reads them.
    #[test]
    fn common_shapes_are_read_exactly_as_serde_json_reads_them() {
        for shape in SHAPES {
            let fast = scan(shape.as_bytes());
            assert!(fast.is_some(), "{shape}");
            assert_eq!(fast, serde(shape.as_bytes()), "{shape}");
        }
    }

    /// Whatever the fast path accepts, serde_json decodes to the same thing:
    /// every event above with bytes changed, inserted and removed at random
    /// (escapes, nulls, fractions, duplicates, unknown fields, broken syntax).
    #[test]
    fn whatever_the_fast_path_accepts_serde_json_reads_the_same() {
        const ALPHABET: &[u8] = b"{}[],:\"\\ -0123456789.eEtrufalsn\t\n\x01xyz_";
        let mut rng = StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d_u64);
        let mut next = move || rng.random::<u64>();
        let (mut accepted, mut tried) = (0, 0);
        for shape in SHAPES {
            for _ in 0..20_000 {
                let mut bytes = shape.as_bytes().to_vec();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % (bytes.len() + 1);
                    let byte = ALPHABET[(next() as usize) % ALPHABET.len()];
                    match next() % 3 {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, byte),
                    }
                }
                tried += 1;
                if let Some(fast) = scan(&bytes) {
                    accepted += 1;
                    assert_eq!(Some(fast), serde(&bytes), "{}", String::from_utf8_lossy(&bytes));
                }
            }
        }
        // Mutations that keep the shape valid (a changed digit or letter) are read fast too.
        assert!(accepted > tried / 20, "{accepted} of {tried}");
    }

    #[test]
    fn what_the_fast_path_leaves_to_serde_json() {
        for json in [
            r#"{"type":"purchase","customer_id":"a\"b"}"#,
            r#"{"type":"purchase","customer_id":null}"#,
            r#"{"type":"purchase","revenue":1.5}"#,
            r#"{"type":"purchase","revenue":1e3}"#,
            r#"{"type":"purchase","revenue":-0}"#,
            r#"{"type":"purchase","revenue":0123}"#,
            r#"{"type":"purchase","revenue":1234567890123456789}"#,
            r#"{"type":"purchase","type":"refund"}"#,
            r#"{"type":"purchase","source":"web"}"#,
            r#"{"type":"purchase","items":[{"sku":"a","sku":"b"}]}"#,
            r#"{"type":"consent","channels":{"email":null}}"#,
            r#"{"type":"consent","channels":{"fax":true}}"#,
            r#"{"type":"purchase"}{"#,
            r#"{"type":"purchase",}"#,
            "{\"type\":\"purch\u{1}ase\"}",
        ] {
            assert!(scan(json.as_bytes()).is_none(), "{json}");
        }
        let many = format!(r#"{{"items":[{}]}}"#, vec![r#"{"sku":"a"}"#; MAX_ITEMS_PER_EVENT + 1].join(","));
        assert!(scan(many.as_bytes()).is_none());
        assert!(scan(&[b'{', b'"', 0xff, b'"', b':', b'1', b'}']).is_none());
    }
}
