//! Bodies in a source's format (`POST /v1/events?source=…`): each record is
//! translated by `patron_sources` and its events validated like native ones.
//! A rejection's index is the record's position in the body, so a sender
//! finds the record at fault in what it sent.

use patron_model::{Validator, truncate_message};
use patron_sources::Source;
use serde_json::Value;

use super::events::Decoded;

/// The records of a body: a JSON array, NDJSON, or one object (a webhook,
/// often pretty-printed over many lines). A line that is not JSON is a
/// record that failed to read.
fn records(body: &[u8], ndjson: bool) -> Vec<(Result<Value, String>, &[u8])> {
    let trimmed = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body).trim_ascii();
    if !ndjson && let Ok(whole) = serde_json::from_slice::<Value>(trimmed) {
        return match whole {
            Value::Array(items) => items.into_iter().map(|v| (Ok(v), &trimmed[..0])).collect(),
            other => vec![(Ok(other), trimmed)],
        };
    }
    trimmed
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let read = serde_json::from_slice::<Value>(line)
                .map_err(|e| format!("invalid JSON: {}", truncate_message(e.to_string(), 512)));
            (read, line)
        })
        .collect()
}

/// Translates and validates a body from `source`; also returns how many
/// things the records held that are not e-commerce (ignored, not rejected).
pub(crate) fn decode(
    body: &[u8],
    ndjson: bool,
    source: Source,
    validator: &Validator,
    received_ms: i64,
) -> (Decoded, usize) {
    let mut out = Decoded::default();
    let mut ignored = 0;
    for (index, (record, raw)) in records(body, ndjson).into_iter().enumerate() {
        let translated = record
            .and_then(|r| source.translate(&r, Some(received_ms)).map_err(|e| format!("{} {e}", source.as_str())));
        match translated {
            Ok(translation) => {
                ignored += translation.ignored.len();
                for event in translation.events {
                    let text = event.to_string();
                    out.one(index, text.as_bytes(), validator.decode(text.as_bytes()));
                }
            }
            Err(reason) => out.reject(index, reason, raw),
        }
    }
    (out, ignored)
}
