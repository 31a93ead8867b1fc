//! One broker message: the events of one request that fall into one
//! partition, in the binary event layout of the write-ahead log.
//!
//! Many events per message keep the broker's fsyncs few. The message id
//! (`Nats-Msg-Id`) is derived from the event ids it carries, so a producer
//! that retries the same request publishes the same ids and the broker drops
//! the copies within its duplicate window; the owner's deduplication index
//! drops any that arrive later.

use std::hash::Hasher;

use patron_model::Event;
use patron_model::codec::{decode_event, encode_event};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::ClusterError;

/// First byte of every message: the layout version.
const LAYOUT_V1: u8 = 1;

/// Largest payload put in one message; the broker's default limit is 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 768 << 10;

/// An encoded batch, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// The partition it goes to.
    pub partition: u32,
    /// `Nats-Msg-Id`.
    pub message_id: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Events in it.
    pub events: usize,
}

/// Encodes `events` (all of one partition) into messages of at most
/// [`MAX_MESSAGE_BYTES`] each.
pub fn encode_batches(partition: u32, events: &[Event]) -> Vec<EncodedBatch> {
    let mut out = Vec::new();
    let mut payload = vec![LAYOUT_V1];
    let mut ids = SipHasher13::new_with_keys(0, u64::from(partition));
    let mut count = 0;
    let mut one = Vec::with_capacity(256);
    for event in events {
        one.clear();
        encode_event(event, &mut one);
        if count > 0 && payload.len() + one.len() > MAX_MESSAGE_BYTES {
            out.push(finish(partition, std::mem::replace(&mut payload, vec![LAYOUT_V1]), &ids, count));
            ids = SipHasher13::new_with_keys(0, u64::from(partition));
            count = 0;
        }
        payload.extend_from_slice(&one);
        ids.write(event.event_id.as_str().as_bytes());
        ids.write_u8(0);
        count += 1;
    }
    if count > 0 {
        out.push(finish(partition, payload, &ids, count));
    }
    out
}

fn finish(partition: u32, payload: Vec<u8>, ids: &SipHasher13, events: usize) -> EncodedBatch {
    let digest = ids.finish128();
    let message_id = format!("p{partition}-{:016x}{:016x}-{events}", digest.h1, digest.h2);
    EncodedBatch { partition, message_id, payload, events }
}

/// Decodes a message published by [`encode_batches`].
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Event>, ClusterError> {
    match payload.first() {
        Some(&LAYOUT_V1) => {}
        other => return Err(ClusterError::UnknownLayout(other.copied())),
    }
    let mut pos = 1;
    let mut events = Vec::new();
    while pos < payload.len() {
        let event = decode_event(payload, &mut pos).ok_or(ClusterError::CorruptMessage { at: pos })?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use patron_model::{CurrencyTable, Validator};

    use super::*;

    fn events(n: usize) -> Vec<Event> {
        let validator = Validator::new(CurrencyTable::default());
        (0..n)
            .map(|i| {
                let json = format!(
                    r#"{{"type":"purchase","event_id":"o{i}","customer_id":"c{}","timestamp":"2025-01-01T00:00:00Z","revenue":"5.25"}}"#,
                    i % 7
                );
                validator.decode(json.as_bytes()).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_batch_decodes_to_the_events_it_was_made_of() {
        let events = events(100);
        let batches = encode_batches(3, &events);
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].partition, batches[0].events), (3, 100));
        assert_eq!(decode_batch(&batches[0].payload).unwrap(), events);
    }

    #[test]
    fn the_same_events_get_the_same_message_id_and_others_do_not() {
        let a = encode_batches(1, &events(10));
        assert_eq!(a, encode_batches(1, &events(10)));
        assert_ne!(a[0].message_id, encode_batches(1, &events(11))[0].message_id);
        assert_ne!(a[0].message_id, encode_batches(2, &events(10))[0].message_id);
    }

    #[test]
    fn large_batches_are_split_under_the_broker_limit() {
        let events = events(30_000);
        let batches = encode_batches(0, &events);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.payload.len() <= MAX_MESSAGE_BYTES));
        let back: Vec<Event> = batches.iter().flat_map(|b| decode_batch(&b.payload).unwrap()).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn a_damaged_message_is_an_error_not_a_panic() {
        let mut payload = encode_batches(0, &events(3)).remove(0).payload;
        assert!(matches!(decode_batch(&payload[..payload.len() - 2]), Err(ClusterError::CorruptMessage { .. })));
        payload[0] = 9;
        assert!(matches!(decode_batch(&payload), Err(ClusterError::UnknownLayout(Some(9)))));
        assert!(matches!(decode_batch(&[]), Err(ClusterError::UnknownLayout(None))));
    }
}
