//! The rejected-event store: the newest events that failed validation, kept
//! (bounded) with their reasons, so that an operator can see what a producer
//! sends wrong (`GET /v1/admin/rejected`, the `rejected_events` table).
//!
//! It holds personal data, so erasure reaches it: a kept event goes when any
//! customer id it names, decoded as JSON would decode it, is the erased one.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use patron_model::{Timestamp, claimed_customer_ids, truncate_message};

/// Rejected events kept for inspection (`GET /v1/admin/rejected`, `rejected_events`).
pub(crate) const REJECTED_KEPT: usize = 10_000;

/// Longest error message or raw text kept per rejected event.
pub(crate) const KEPT_TEXT_BYTES: usize = 2048;

/// One rejected event, as kept in the store.
#[derive(Clone, Debug)]
pub(crate) struct RejectedEvent {
    pub(crate) received_at: Timestamp,
    pub(crate) source: &'static str,
    pub(crate) position: u64,
    pub(crate) error: String,
    /// The raw text, cut to [`KEPT_TEXT_BYTES`].
    pub(crate) raw: String,
    /// Every customer id the raw event names, decoded (for erasure).
    pub(crate) customer_ids: Vec<String>,
}

impl RejectedEvent {
    /// A rejection of `raw` at `position`, with its text bounded.
    pub(crate) fn new(source: &'static str, position: u64, error: String, raw: &[u8]) -> Self {
        Self {
            received_at: Timestamp::now(),
            source,
            position,
            error: truncate_message(error, KEPT_TEXT_BYTES),
            raw: kept_raw(raw),
            customer_ids: claimed_customer_ids(raw),
        }
    }

    /// Whether this rejected event names `customer`, however it was spelled:
    /// by the customer ids it was decoded to hold. Text that holds no
    /// decodable id (not JSON, or cut before the id) names the customer when
    /// the id stands in it as a whole word, so erasing customer `1` does not
    /// drop every kept event with a `1` in it.
    pub(crate) fn names(&self, customer: &str) -> bool {
        if !self.customer_ids.is_empty() {
            return self.customer_ids.iter().any(|id| id == customer);
        }
        let is_id_char = |c: char| c.is_alphanumeric() || "-_.:@".contains(c);
        self.raw.match_indices(customer).any(|(at, _)| {
            let before = self.raw[..at].chars().next_back();
            let after = self.raw[at + customer.len()..].chars().next();
            !before.is_some_and(is_id_char) && !after.is_some_and(is_id_char)
        })
    }
}

/// The raw text of a rejected event, cut to [`KEPT_TEXT_BYTES`] with its size stated.
fn kept_raw(raw: &[u8]) -> String {
    if raw.len() <= KEPT_TEXT_BYTES {
        return String::from_utf8_lossy(raw).into_owned();
    }
    format!("{}… ({} bytes in all)", String::from_utf8_lossy(&raw[..KEPT_TEXT_BYTES]), raw.len())
}

/// The newest rejected events (bounded) and how many there were in all.
#[derive(Default)]
pub(crate) struct RejectedStore {
    kept: Mutex<VecDeque<RejectedEvent>>,
    total: AtomicU64,
}

impl RejectedStore {
    /// Counts `total` rejections and keeps the described ones, dropping the oldest beyond [`REJECTED_KEPT`].
    pub(crate) fn record(&self, total: u64, described: impl IntoIterator<Item = RejectedEvent>) {
        self.total.fetch_add(total, Ordering::Relaxed);
        if let Ok(mut kept) = self.kept.lock() {
            for rejected in described {
                if kept.len() == REJECTED_KEPT {
                    kept.pop_front();
                }
                kept.push_back(rejected);
            }
        }
    }

    /// Rejections so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The kept rejections, newest first, at most `limit`.
    pub(crate) fn newest(&self, limit: usize) -> Vec<RejectedEvent> {
        self.kept.lock().map(|kept| kept.iter().rev().take(limit).cloned().collect()).unwrap_or_default()
    }

    /// Drops every kept rejection that names `customer` (erasure).
    pub(crate) fn erase(&self, customer: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.retain(|r| !r.names(customer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: `plain\u0076ictim42` survived the erasure of `plainvictim42`.
    #[test]
    fn regression_erasing_customer_1_keeps_the_rejected_events_of_other_customers() {
        let store = RejectedStore::default();
        let kept = [
            r#"{"type":"purchase","customer_id":"c-2","event_id":"e1","revenue":"1x"}"#,
            r#"{"type":"purchase","customer_id":"1","event_id":"e2","revenue":"1x"}"#,
            "garbage line 10 11 21",
            "garbage line naming 1 alone",
        ];
        store.record(
            4,
            kept.iter().enumerate().map(|(i, raw)| RejectedEvent::new("http", i as u64, "x".into(), raw.as_bytes())),
        );
        store.erase("1");
        let left: Vec<String> = store.newest(10).into_iter().map(|r| r.raw).collect();
        assert_eq!(left, [kept[2], kept[0]], "only the events naming customer 1 are dropped");
    }

    #[test]
    fn regression_erasure_matches_escaped_spellings_of_the_id() {
        let store = RejectedStore::default();
        let spelled = [
            r#"{"type":"visit","customer_id":"plain\u0076ictim42"}"#,
            r#"{"type":"visit","userId":"plainvictim42","customer_id":"decoy"}"#,
            r#"{"type":"visit","customer_id":"plainvictim42","revenue":}"#,
            r#"{"type":"visit","customer_id":"other"}"#,
        ];
        store.record(
            4,
            spelled.iter().enumerate().map(|(i, raw)| RejectedEvent::new("http", i as u64, "x".into(), raw.as_bytes())),
        );
        store.erase("plainvictim42");
        let left: Vec<String> = store.newest(10).into_iter().map(|r| r.raw).collect();
        assert_eq!(left, [spelled[3]]);
        let quoted = r#"{"customer_id":"say \"hi\""}"#;
        store.record(1, [RejectedEvent::new("http", 0, "x".into(), quoted.as_bytes())]);
        store.erase(r#"say "hi""#);
        assert_eq!(store.newest(10).len(), 1);
    }
}
