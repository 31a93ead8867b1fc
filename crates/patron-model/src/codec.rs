//! Compact binary form of validated events, for the write-ahead log.
//!
//! Events in the log were validated on arrival, so replay needs no parsing or
//! validation, only this decoder; and encoding costs a few copies instead of
//! building JSON. Layout (little-endian), one event after another:
//!
//! ```text
//! kind u8 (1 purchase, 2 refund, 3 consent, 4 purchase with acquisition, 5 customer, 6 campaign response,
//!         7 consent with other channels, 8 refund of what remains of an order) │ event_id str │ customer_id str │ timestamp i64 │ body
//! purchase: order_id opt-str │ revenue_minor i64 │ items u32 │ items × (product str │ category opt-str │
//!           quantity mantissa i128 │ quantity scale u8 │ unit_price opt-i64)
//! refund:   order_id opt-str │ amount_minor i64
//! refund of what remains of an order: order_id opt-str (always present)
//! consent:  email u8 │ sms u8 │ push u8            (0 unset, 1 false, 2 true)
//! consent with other channels: consent │ count u8 │ count × (channel str │ given u8)
//! purchase with acquisition: purchase │ acquisition
//! customer: acquisition
//! acquisition: cost opt-i64 │ channel opt-str
//! campaign response: campaign_id str │ response u8 (0 delivered, 1 opened, 2 clicked, 3 unsubscribed, 4 bounced)
//! ```
//!
//! A purchase without an acquisition keeps kind 1 and a consent without
//! other channels kind 3, so logs written before either existed read unchanged.
//!
//! ```text
//! str = len u16 + UTF-8 bytes; opt-str = u8 flag (+ str); opt-i64 = u8 flag (+ i64)
//! ```

use crate::event::{
    Acquisition, CampaignResponse, ChannelConsent, Consent, ConsentChange, CustomerId, Event, EventId, EventKind,
    LineItem, ProductId, Purchase, Refund, Response,
};
use crate::money::Decimal;
use crate::time::Timestamp;

/// Appends a length-prefixed (u16) UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends an optional string: a flag byte, then the string if present.
pub fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// Appends `v` as LEB128: seven bits per byte, low first, high bit = more follow.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a signed `v` as a zigzag [`put_varint`] (small magnitudes, either sign, stay short).
pub fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// An optional boolean as one byte: 0 unset, 1 false, 2 true.
pub fn flag(b: Option<bool>) -> u8 {
    match b {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

/// Appends `event` in the binary layout.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    out.push(match &event.kind {
        EventKind::Purchase(p) if p.acquisition.is_some() => 4,
        EventKind::Purchase(_) => 1,
        EventKind::Refund(r) if r.amount_minor.is_some() => 2,
        EventKind::Refund(_) => 8,
        EventKind::Consent(c) if c.other.is_empty() => 3,
        EventKind::Consent(_) => 7,
        EventKind::Customer(_) => 5,
        EventKind::CampaignResponse(_) => 6,
    });
    put_str(out, event.event_id.as_str());
    put_str(out, event.customer_id.as_str());
    out.extend_from_slice(&event.timestamp.millis().to_le_bytes());
    match &event.kind {
        EventKind::Purchase(p) => {
            put_opt_str(out, p.order_id.as_deref());
            out.extend_from_slice(&p.revenue_minor.to_le_bytes());
            out.extend_from_slice(&(p.items.len() as u32).to_le_bytes());
            for item in &p.items {
                put_str(out, item.product_id.as_str());
                put_opt_str(out, item.category.as_deref());
                out.extend_from_slice(&item.quantity.mantissa.to_le_bytes());
                out.push(item.quantity.scale as u8);
                put_opt_i64(out, item.unit_price_minor);
            }
            if let Some(acquisition) = &p.acquisition {
                put_acquisition(out, acquisition);
            }
        }
        EventKind::Refund(r) => {
            put_opt_str(out, r.order_id.as_deref());
            if let Some(amount) = r.amount_minor {
                out.extend_from_slice(&amount.to_le_bytes());
            }
        }
        EventKind::Consent(change) => {
            let c = &change.channels;
            out.extend_from_slice(&[flag(c.email), flag(c.sms), flag(c.push)]);
            if !change.other.is_empty() {
                out.push(change.other.len() as u8);
                for o in &change.other {
                    put_str(out, &o.channel);
                    out.push(u8::from(o.given));
                }
            }
        }
        EventKind::Customer(a) => put_acquisition(out, a),
        EventKind::CampaignResponse(r) => {
            put_str(out, &r.campaign_id);
            out.push(r.response.code());
        }
    }
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn put_acquisition(out: &mut Vec<u8>, a: &Acquisition) {
    put_opt_i64(out, a.cost_minor);
    put_opt_str(out, a.channel.as_deref());
}

/// Bounds-checked little-endian reader shared by Patron's binary formats
/// (log events here, customer records in snapshots). Every read returns
/// `None` past the end instead of panicking.
#[derive(Debug)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader over `bytes` starting at `pos`.
    pub fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    /// The position after the last read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// All the bytes read from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes left after the position.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A little-endian i64.
    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
    /// A number written by [`put_varint`] (`None` past the end or beyond 64 bits).
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A number written by [`put_zigzag`].
    pub fn zigzag(&mut self) -> Option<i64> {
        self.varint().map(|v| ((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A [`put_varint`] that must fit in a `u32`.
    pub fn varint_u32(&mut self) -> Option<u32> {
        self.varint().and_then(|v| u32::try_from(v).ok())
    }

    /// A [`put_zigzag`] that must fit in an `i32`.
    pub fn zigzag_i32(&mut self) -> Option<i32> {
        self.zigzag().and_then(|v| i32::try_from(v).ok())
    }

    /// A string written by [`put_str`].
    pub fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    /// A string written by [`put_opt_str`].
    pub fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }
    /// An optional i64: a flag byte, then the value if present.
    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.i64().map(Some),
            _ => None,
        }
    }

    fn acquisition(&mut self) -> Option<Acquisition> {
        Some(Acquisition { cost_minor: self.opt_i64()?, channel: self.opt_str()?.map(Into::into) })
    }

    /// An optional boolean written by [`flag`].
    pub fn flag(&mut self) -> Option<Option<bool>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(false)),
            2 => Some(Some(true)),
            _ => None,
        }
    }
}

/// Reads one event at `*pos`, advancing it; `None` if the bytes are not a valid event.
pub fn decode_event(bytes: &[u8], pos: &mut usize) -> Option<Event> {
    let mut r = ByteReader::new(bytes, *pos);
    let kind = r.u8()?;
    let event_id = EventId::new(r.str()?).ok()?;
    let customer_id = CustomerId::new(r.str()?).ok()?;
    let timestamp = Timestamp::from_millis(r.i64()?);
    let kind = match kind {
        1 | 4 => {
            let order_id = r.opt_str()?.map(Into::into);
            let revenue_minor = r.i64()?;
            let count = u32::from_le_bytes(r.array()?) as usize;
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let product_id = ProductId::new(r.str()?).ok()?;
                let category = r.opt_str()?.map(Into::into);
                let mantissa = i128::from_le_bytes(r.array()?);
                let scale = u32::from(r.u8()?);
                let unit_price_minor = r.opt_i64()?;
                items.push(LineItem { product_id, category, quantity: Decimal { mantissa, scale }, unit_price_minor });
            }
            let acquisition = if kind == 4 { Some(r.acquisition()?) } else { None };
            EventKind::Purchase(Purchase { order_id, items, revenue_minor, acquisition })
        }
        2 => EventKind::Refund(Refund { order_id: r.opt_str()?.map(Into::into), amount_minor: Some(r.i64()?) }),
        8 => EventKind::Refund(Refund { order_id: Some(r.opt_str()??.into()), amount_minor: None }),
        3 | 7 => {
            let channels = Consent { email: r.flag()?, sms: r.flag()?, push: r.flag()? };
            let mut other = Vec::new();
            if kind == 7 {
                for _ in 0..r.u8()? {
                    let channel = r.str()?.into();
                    let given = match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return None,
                    };
                    other.push(ChannelConsent { channel, given });
                }
            }
            EventKind::Consent(ConsentChange { channels, other })
        }
        5 => EventKind::Customer(r.acquisition()?),
        6 => EventKind::CampaignResponse(CampaignResponse {
            campaign_id: r.str()?.into(),
            response: Response::from_code(r.u8()?)?,
        }),
        _ => return None,
    };
    *pos = r.pos;
    Some(Event { event_id, customer_id, timestamp, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width_and_refuse_overlong_input() {
        let unsigned = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX >> 1, u64::MAX];
        let signed = [0, 1, -1, 63, -64, 64, -65, i64::from(i32::MIN), i64::MAX, i64::MIN];
        let mut out = Vec::new();
        unsigned.iter().for_each(|&v| put_varint(&mut out, v));
        signed.iter().for_each(|&v| put_zigzag(&mut out, v));
        let mut r = ByteReader::new(&out, 0);
        assert_eq!(unsigned.map(|_| r.varint().unwrap()), unsigned);
        assert_eq!(signed.map(|_| r.zigzag().unwrap()), signed);
        assert_eq!(r.remaining(), 0);
        let mut small = Vec::new();
        put_zigzag(&mut small, -3);
        put_varint(&mut small, 100);
        assert_eq!(small.len(), 2, "small magnitudes take one byte");
        // Eleven continuation bytes, a 65th bit, and a cut-short number are refused.
        assert_eq!(ByteReader::new(&[0xff; 11], 0).varint(), None);
        assert_eq!(ByteReader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], 0).varint(), None);
        assert_eq!(ByteReader::new(&[0x80], 0).varint(), None);
        assert_eq!(ByteReader::new(&[0x80, 0x80, 0x80, 0x80, 0x10], 0).varint_u32(), None);
    }
}
