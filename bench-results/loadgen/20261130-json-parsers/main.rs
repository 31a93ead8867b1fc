use std::borrow::Cow;
use std::fmt;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
const MAX_ITEMS_PER_EVENT: usize = 1000;
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent { pub email: Option<bool>, pub sms: Option<bool>, pub push: Option<bool> }
#[derive(Debug)]
struct Scalar<'a> {
    text: Cow<'a, str>,
    is_string: bool,
    int: Option<i128>,
}

impl Scalar<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self.int {
            Some(i) => Cow::Owned(i.to_string()),
            None => Cow::Borrowed(self.text.as_ref()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(v), is_string: true, int: None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Owned(v.to_owned()), is_string: true, int: None })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Owned(v), is_string: true, int: None })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(""), is_string: false, int: Some(i128::from(v)) })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar { text: Cow::Borrowed(""), is_string: false, int: Some(i128::from(v)) })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // Rust prints the shortest text that reads back as the same f64,
                // which is the decimal the sender wrote for any sane amount.
                Ok(Scalar { text: Cow::Owned(format!("{v}")), is_string: false, int: None })
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Scalar<'a>>,
    #[serde(borrow, alias = "eventId")]
    event_id: Option<Scalar<'a>>,
    #[serde(borrow, alias = "userId", alias = "user_id", alias = "customerId")]
    customer_id: Option<Scalar<'a>>,
    #[serde(borrow, alias = "orderId")]
    order_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    currency: Option<Scalar<'a>>,
    #[serde(borrow, alias = "products")]
    items: Option<BoundedItems<'a>>,
    #[serde(borrow)]
    revenue: Option<Scalar<'a>>,
    #[serde(borrow)]
    amount: Option<Scalar<'a>>,
    channels: Option<Consent>,
}

#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow, alias = "item_id", alias = "sku", alias = "productId")]
    product_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    category: Option<Scalar<'a>>,
    #[serde(borrow)]
    quantity: Option<Scalar<'a>>,
    #[serde(borrow)]
    price: Option<Scalar<'a>>,
}

/// The items of one purchase, refused while decoding once there are more than
/// [`MAX_ITEMS_PER_EVENT`], so a hostile body cannot make the decoder allocate
/// far more than it sent.
struct BoundedItems<'a>(Vec<RawItem<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for BoundedItems<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemsVisitor<'a> {
            type Value = BoundedItems<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {MAX_ITEMS_PER_EVENT} items")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(item) = seq.next_element::<RawItem<'a>>()? {
                    if items.len() == MAX_ITEMS_PER_EVENT {
                        return Err(de::Error::custom(format_args!(
                            "items: more than {MAX_ITEMS_PER_EVENT} items in one event (the limit)"
                        )));
                    }
                    items.push(item);
                }
                Ok(BoundedItems(items))
            }
        }
        deserializer.deserialize_seq(ItemsVisitor(std::marker::PhantomData))
    }
}


fn touch(e: &RawEvent<'_>) -> usize { e.customer_id.as_ref().map_or(0, |s| s.text.len()) + e.items.as_ref().map_or(0, |i| i.0.len()) }
fn main() {
    let text = std::fs::read_to_string("/tmp/ev.ndjson").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len() as f64;
    for round in 0..3 {
        let t = std::time::Instant::now(); let mut ok = 0usize;
        for l in &lines { if let Ok(e) = serde_json::from_str::<RawEvent>(l) { ok += touch(&e); } }
        let serde_ns = t.elapsed().as_nanos() as f64 / n;
        let t = std::time::Instant::now(); let mut ok2 = 0usize;
        for l in &lines { if let Ok(e) = sonic_rs::from_str::<RawEvent>(l) { ok2 += touch(&e); } }
        let sonic_ns = t.elapsed().as_nanos() as f64 / n;
        let t = std::time::Instant::now(); let mut ok3 = 0usize;
        let mut buffers = simd_json::Buffers::default(); let mut scratch = Vec::new();
        for l in &lines { scratch.clear(); scratch.extend_from_slice(l.as_bytes()); if let Ok(e) = simd_json::serde::from_slice_with_buffers::<RawEvent>(&mut scratch, &mut buffers) { ok3 += touch(&e); } }
        let simd_ns = t.elapsed().as_nanos() as f64 / n;
        println!("round {round}: serde_json {serde_ns:.0} ns/event, sonic-rs {sonic_ns:.0}, simd-json {simd_ns:.0}  (checks {ok} {ok2} {ok3})");
    }
}
