//! `POST /v1/events`: reading a producer's body, decoding it, and keeping the
//! rejected events for inspection.
//!
//! Every input path is bounded, because a producer may be hostile or broken:
//! - **Bytes in flight** are reserved as they arrive (not as declared), so a
//!   client that declares 16 MiB and sends one byte holds one byte of the
//!   budget; decoding reserves as much again for the events it builds.
//! - **Time**: a body that stalls longer than [`BODY_IDLE_TIMEOUT`], or takes
//!   longer than [`BODY_TOTAL_TIMEOUT`] in all, is answered `408`.
//! - **Rejections**: a body gets counts plus the first [`ANSWERED_REJECTIONS`]
//!   errors; at most [`DETAILED_REJECTIONS`] per body reach the rejected-event
//!   store, each error and raw text cut to [`crate::rejected::KEPT_TEXT_BYTES`] with the
//!   original size stated.
//! - **Decoding** streams a JSON array element by element instead of building
//!   a vector of every element first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use patron_model::{Event, EventError, MAX_EVENT_DEPTH, SinkError, Validator, check_depth, truncate_message};
use serde_json::{Value, json};

use patron_sources::Source;

use patron_model::CurrencyTable;

use super::{ApiError, AppState, IngestLimits, error, sources, with_retry_after};
use crate::rejected::{RejectedEvent, RejectedStore};

/// Rejections of one body described in its answer (the rest are counted).
pub(crate) const ANSWERED_REJECTIONS: usize = 100;

/// Rejections of one body kept with their text (the rest are counted).
pub(crate) const DETAILED_REJECTIONS: usize = 1_000;

/// Longest pause between two chunks of a body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read and dropped after a refused body (beyond its limit), so that a
/// client still sending reads the answer instead of a broken pipe.
const DRAINED_AT_MOST: usize = 16 << 20;

/// Longest time to receive a whole body.
const BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes reserved up front for a body whose length is declared.
/// Reserving saves growing the buffer by doubling, each step a copy into
/// fresh pages the kernel zeroes (growing vectors on the request path were
/// 2–4% of the server's closed-loop samples in page zeroing alone);
/// the cap keeps a client that declares much and sends little from holding
/// more than this. Untouched reserved pages take no memory.
const PRESIZED_AT_MOST: usize = 4 << 20;

/// A decoded body: valid events, how many were rejected, and the first rejections described.
#[derive(Default)]
pub(crate) struct Decoded {
    pub(crate) events: Vec<Event>,
    /// Each event's position in the body.
    pub(crate) positions: Vec<usize>,
    pub(crate) rejected_count: usize,
    pub(crate) rejected: Vec<RejectedEvent>,
}

impl Decoded {
    fn with_capacity(events: usize) -> Self {
        Self {
            events: Vec::with_capacity(events),
            positions: Vec::with_capacity(events),
            rejected_count: 0,
            rejected: Vec::new(),
        }
    }

    /// Appends the events of the piece that follows this one; its positions
    /// start at `offset` (the lines before it).
    fn append(&mut self, piece: Decoded, offset: usize) {
        self.events.extend(piece.events);
        self.positions.extend(piece.positions.into_iter().map(|p| p + offset));
        self.rejected_count += piece.rejected_count;
        let room = DETAILED_REJECTIONS.saturating_sub(self.rejected.len());
        self.rejected.extend(piece.rejected.into_iter().take(room).map(|mut r| {
            r.position += offset as u64;
            r
        }));
    }

    /// Keeps the event decoded from `raw` at `index`, or its rejection.
    pub(crate) fn one(&mut self, index: usize, raw: &[u8], decoded: Result<Event, EventError>) {
        match decoded {
            Ok(e) => {
                self.events.push(e);
                self.positions.push(index);
            }
            Err(e) => self.reject(index, e.to_string(), raw),
        }
    }

    /// Counts a rejection of `raw` at `index`, kept in detail up to [`DETAILED_REJECTIONS`].
    pub(crate) fn reject(&mut self, index: usize, reason: String, raw: &[u8]) {
        self.rejected_count += 1;
        if self.rejected.len() < DETAILED_REJECTIONS {
            self.rejected.push(RejectedEvent::new("http", index as u64, reason, raw));
        }
    }
}

/// The UTF-8 byte order mark some producers put in front of a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes a body: one JSON object, a JSON array of them, or NDJSON.
pub(crate) fn decode_body(body: &[u8], ndjson: bool, validator: &Validator) -> Result<Decoded, String> {
    let trimmed = body.strip_prefix(BOM).unwrap_or(body).trim_ascii();
    let mut out = Decoded::with_capacity(estimated_events(trimmed));
    if trimmed.first() == Some(&b'[') && !ndjson {
        check_depth(trimmed, MAX_EVENT_DEPTH + 1).map_err(|e| e.to_string())?;
        let mut index = 0;
        for_each_array_element(trimmed, |raw| {
            out.one(index, raw, validator.decode(raw));
            index += 1;
        })
        .map_err(|e| format!("the body is not a JSON array of events: {}", truncate_message(e.to_string(), 512)))?;
    } else {
        // NDJSON, or one object (on one line or several: each non-empty line is then read as an event).
        let mut index = 0;
        for_each_line(trimmed, validator, |raw, decoded| {
            out.one(index, raw, decoded);
            index += 1;
        });
    }
    Ok(out)
}

/// Decodes each non-empty line of a body (trimmed), calling `each` with its
/// text and what it decoded to. A body that is valid UTF-8, as nearly all
/// are, is checked once and its lines are read as text; otherwise each line
/// is checked on its own, so one bad byte rejects only its line.
fn for_each_line(body: &[u8], validator: &Validator, mut each: impl FnMut(&[u8], Result<Event, EventError>)) {
    match std::str::from_utf8(body) {
        Ok(text) => {
            for line in text.split('\n').map(str::trim_ascii).filter(|l| !l.is_empty()) {
                each(line.as_bytes(), validator.decode_text(line));
            }
        }
        Err(_) => {
            for line in body.split(|&b| b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
                each(line, validator.decode(line));
            }
        }
    }
}

/// A guess at the number of events in a body, to size its vectors once
/// without a pass over it: one per 150 bytes (a typical event is 150–250).
/// Capacity beyond the events decoded is never touched, so it takes no memory.
fn estimated_events(body: &[u8]) -> usize {
    body.len() / 150 + 1
}

/// Bodies from this size on are decoded in pieces, one per core, each on
/// the blocking pool, so that one large request uses every core.
const SPLIT_FROM_BYTES: usize = 256 << 10;

/// Decodes a body on the blocking pool: NDJSON of at least
/// [`SPLIT_FROM_BYTES`] in line-aligned pieces at once, anything else
/// (a JSON array, a single object, a small body) whole. The result is the
/// same as [`decode_body`]'s; the outer error is a decoding task that panicked.
pub(crate) async fn decode_body_on_pool(
    body: Vec<u8>,
    ndjson: bool,
    validator: Validator,
) -> Result<Result<Decoded, String>, tokio::task::JoinError> {
    let pieces = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_PIECES);
    let cuts = piece_bounds(&body, ndjson, pieces);
    if cuts.is_empty() {
        return tokio::task::spawn_blocking(move || decode_body(&body, ndjson, &validator)).await;
    }
    let (body, validator) = (std::sync::Arc::new(body), std::sync::Arc::new(validator));
    let tasks: Vec<_> = cuts
        .into_iter()
        .map(|range| {
            let (body, validator) = (body.clone(), validator.clone());
            tokio::task::spawn_blocking(move || decode_lines(&body[range], &validator))
        })
        .collect();
    let mut merged: Option<(Decoded, usize)> = None;
    for task in tasks {
        let (piece, lines) = task.await?;
        merged = Some(match merged {
            None => (piece, lines),
            Some((mut all, offset)) => {
                all.append(piece, offset);
                (all, offset + lines)
            }
        });
    }
    Ok(Ok(merged.map(|(all, _)| all).unwrap_or_else(|| Decoded::with_capacity(0))))
}

/// Most pieces one body is decoded in.
const MAX_PIECES: usize = 8;

/// Line-aligned ranges cutting an NDJSON body of at least
/// [`SPLIT_FROM_BYTES`] into about `pieces` equal parts; empty when the body
/// is to be decoded whole.
fn piece_bounds(body: &[u8], ndjson: bool, pieces: usize) -> Vec<std::ops::Range<usize>> {
    let trimmed = body.strip_prefix(BOM).unwrap_or(body).trim_ascii_start();
    if body.len() < SPLIT_FROM_BYTES || pieces < 2 || (trimmed.first() == Some(&b'[') && !ndjson) {
        return Vec::new();
    }
    let start = body.len() - trimmed.len();
    let mut bounds = Vec::with_capacity(pieces);
    let mut from = start;
    for k in 1..pieces {
        let target = (start + (body.len() - start) * k / pieces).max(from);
        let Some(newline) = body[target..].iter().position(|&b| b == b'\n') else { break };
        let cut = target + newline + 1;
        if cut > from && cut < body.len() {
            bounds.push(from..cut);
            from = cut;
        }
    }
    bounds.push(from..body.len());
    // One piece is the whole body: nothing to split. Several pieces hold
    // several lines, which [`decode_body`] reads line by line too.
    if bounds.len() < 2 { Vec::new() } else { bounds }
}

/// Decodes a piece of an NDJSON body line by line; returns the events (at
/// positions within the piece) and the number of non-empty lines.
fn decode_lines(piece: &[u8], validator: &Validator) -> (Decoded, usize) {
    let mut out = Decoded::with_capacity(estimated_events(piece));
    let mut lines = 0;
    for_each_line(piece, validator, |raw, decoded| {
        out.one(lines, raw, decoded);
        lines += 1;
    });
    (out, lines)
}

/// Calls `each` with the raw text of every element of a JSON array, without
/// collecting the elements first.
fn for_each_array_element(json: &[u8], each: impl FnMut(&[u8])) -> serde_json::Result<()> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    struct Elements<F>(F);
    impl<'de, F: FnMut(&[u8])> Visitor<'de> for Elements<F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                (self.0)(raw.get().as_bytes());
            }
            Ok(())
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    (&mut deserializer).deserialize_seq(Elements(each))?;
    deserializer.end()
}

/// Bytes reserved against the in-flight cap, released when dropped.
pub(crate) struct Inflight<'a> {
    counter: &'a AtomicU64,
    cap: u64,
    held: u64,
}

impl<'a> Inflight<'a> {
    pub(crate) fn new(counter: &'a AtomicU64, cap: u64) -> Self {
        Self { counter, cap, held: 0 }
    }

    /// Reserves `bytes` more; on refusal returns what was in flight already.
    pub(crate) fn reserve(&mut self, bytes: u64) -> Result<(), u64> {
        let before = self.counter.fetch_add(bytes, Ordering::AcqRel);
        self.held += bytes;
        if before + bytes > self.cap { Err(before) } else { Ok(()) }
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the body limit.
    TooLarge(usize),
    /// The in-flight cap is reached.
    Overloaded { in_flight: u64, cap: u64 },
    /// The client stalled or took too long.
    TimedOut(Duration),
    /// The connection broke mid-body (a truncated chunked body, a reset).
    Incomplete(String),
}

impl BodyError {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Self::TooLarge(limit) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds the limit of {limit} bytes; split it into several requests"),
            ),
            Self::Overloaded { in_flight, cap } => with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!("{in_flight} bytes of requests are in flight (cap {cap}); retry later"),
                ),
                1,
            ),
            Self::TimedOut(after) => error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive in time (no data for {after:?}, or longer than the total limit)"),
            ),
            Self::Incomplete(why) => error(
                StatusCode::BAD_REQUEST,
                "body_incomplete",
                format!("the body ended before it was complete: {why}"),
            ),
        }
    }
}

/// The next chunk of a body, within the idle timeout and the overall deadline.
async fn next_chunk(
    stream: &mut axum::body::BodyDataStream,
    deadline: tokio::time::Instant,
) -> Result<Option<axum::body::Bytes>, BodyError> {
    let wait = (tokio::time::Instant::now() + BODY_IDLE_TIMEOUT).min(deadline);
    match tokio::time::timeout_at(wait, stream.next()).await {
        Err(_) => Err(BodyError::TimedOut(BODY_IDLE_TIMEOUT)),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(BodyError::Incomplete(e.to_string())),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

/// Reads and drops the rest of a refused body, at most [`DRAINED_AT_MOST`]
/// bytes and within the deadline, so that a client still sending reads the
/// refusal instead of a broken pipe.
async fn drain(stream: &mut axum::body::BodyDataStream, deadline: tokio::time::Instant) {
    let mut seen = 0;
    while seen <= DRAINED_AT_MOST {
        match next_chunk(stream, deadline).await {
            Ok(Some(chunk)) => seen += chunk.len(),
            _ => break,
        }
    }
}

/// Reads and drops a body refused before reading (see [`drain`]).
pub(crate) async fn discard(body: Body) {
    drain(&mut body.into_data_stream(), tokio::time::Instant::now() + BODY_TOTAL_TIMEOUT).await;
}

/// Reads a body of at most `limit` bytes chunk by chunk, within
/// [`BODY_IDLE_TIMEOUT`] and [`BODY_TOTAL_TIMEOUT`]. With `inflight`, each
/// chunk is reserved against the in-flight cap as it arrives. A refused body
/// is drained before the error is returned. `declared` (the
/// `Content-Length`) sizes the buffer, up to [`PRESIZED_AT_MOST`].
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    declared: Option<u64>,
    mut inflight: Option<&mut Inflight<'_>>,
) -> Result<Vec<u8>, BodyError> {
    let deadline = tokio::time::Instant::now() + BODY_TOTAL_TIMEOUT;
    let mut stream = body.into_data_stream();
    let presized = declared.map_or(0, |d| usize::try_from(d).unwrap_or(usize::MAX).min(limit).min(PRESIZED_AT_MOST));
    let mut bytes = Vec::with_capacity(presized);
    while let Some(chunk) = next_chunk(&mut stream, deadline).await? {
        let refusal = if bytes.len() + chunk.len() > limit {
            Some(BodyError::TooLarge(limit))
        } else {
            inflight.as_deref_mut().and_then(|budget| {
                let cap = budget.cap;
                budget.reserve(chunk.len() as u64).err().map(|in_flight| BodyError::Overloaded { in_flight, cap })
            })
        };
        if let Some(refusal) = refusal {
            drop(bytes);
            drain(&mut stream, deadline).await;
            return Err(refusal);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Whether a `Content-Encoding` header asks for anything but the identity.
fn unsupported_encoding(headers: &HeaderMap) -> Option<String> {
    let encoding = headers.get(header::CONTENT_ENCODING)?;
    let text = encoding.to_str().unwrap_or("(not text)").trim();
    (!text.eq_ignore_ascii_case("identity")).then(|| text.to_owned())
}

/// The query string of `POST /v1/events`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestQuery {
    /// The body is in a source's format (`segment`, `ga4`, `shopify`, `snowplow`).
    source: Option<String>,
}

/// Header naming the body's source, for senders that cannot add a query string.
const SOURCE_HEADER: &str = "x-patron-source";

/// The source a request names by `?source=` or the [`SOURCE_HEADER`] header.
fn requested_source(query: &IngestQuery, headers: &HeaderMap) -> Result<Option<Source>, ApiError> {
    let named =
        query.source.clone().or_else(|| headers.get(SOURCE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned));
    match named {
        None => Ok(None),
        Some(name) => Source::parse(&name).map(Some).ok_or_else(|| {
            let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "unknown_source",
                format!("source {:?} is not one of {}", truncate_message(name, 64), known.join(", ")),
            )
        }),
    }
}

/// What the event endpoint of either mode needs to read a request.
pub(crate) struct Intake<'a> {
    pub(crate) limits: IngestLimits,
    pub(crate) inflight_bytes: &'a AtomicU64,
    pub(crate) currencies: &'a CurrencyTable,
    pub(crate) rejected: &'a RejectedStore,
}

/// A request read and decoded: the valid events, the first rejections to
/// answer with (already recorded), how many were rejected, and the fields a
/// source's format ignored.
pub(crate) struct Intaken {
    pub(crate) decoded: Decoded,
    pub(crate) rejected: Vec<(u64, String)>,
    pub(crate) invalid_count: usize,
    pub(crate) ignored: Option<Value>,
}

impl Intake<'_> {
    /// Reads and decodes a `POST /v1/events` request within the limits, or
    /// the response that refuses it. Rejected events are recorded.
    pub(crate) async fn read(
        &self,
        query: Result<axum::extract::Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Intaken, Response> {
        let source =
            super::query(query).and_then(|q| requested_source(&q, headers)).map_err(IntoResponse::into_response)?;
        if let Some(encoding) = unsupported_encoding(headers) {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {encoding:?} is not supported; send the body uncompressed"),
            ));
        }
        let limits = self.limits;
        let mut inflight = Inflight::new(self.inflight_bytes, limits.max_inflight_bytes);
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > limits.body_limit as u64) {
            discard(body).await;
            return Err(BodyError::TooLarge(limits.body_limit).into_response());
        }
        let bytes =
            read_body(body, limits.body_limit, declared, Some(&mut inflight)).await.map_err(|e| e.into_response())?;
        // Decoded events take about as much memory as their text: reserve that too.
        if let Err(in_flight) = inflight.reserve(bytes.len() as u64) {
            return Err(BodyError::Overloaded { in_flight, cap: limits.max_inflight_bytes }.into_response());
        }
        let ndjson = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl"));
        let validator = Validator::new(self.currencies.clone());
        let (decoded, ignored) = match source {
            Some(source) => {
                let received_ms = patron_model::Timestamp::now().millis();
                match tokio::task::spawn_blocking(move || {
                    sources::decode(&bytes, ndjson, source, &validator, received_ms)
                })
                .await
                {
                    Ok(d) => (Ok(Ok(d.0)), Some(d.1)),
                    Err(e) => (Err(e), None),
                }
            }
            None => (decode_body_on_pool(bytes, ndjson, validator).await, None),
        };
        let decoded = match decoded {
            Ok(Ok(d)) => d,
            Ok(Err(message)) => return Err(error(StatusCode::BAD_REQUEST, "invalid_body", message)),
            Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
        };
        let mut decoded = decoded;
        let invalid_count = decoded.rejected_count;
        let rejected: Vec<(u64, String)> =
            decoded.rejected.iter().take(ANSWERED_REJECTIONS).map(|r| (r.position, r.error.clone())).collect();
        if invalid_count > 0 {
            self.rejected.record(invalid_count as u64, std::mem::take(&mut decoded.rejected));
        }
        Ok(Intaken { decoded, rejected, invalid_count, ignored: ignored.map(Into::into) })
    }
}

pub(crate) async fn post_events(
    State(state): State<std::sync::Arc<AppState>>,
    query: Result<axum::extract::Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(failure) = state.engine().failure() {
        return with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "shard_failed", failure.to_string()), 5);
    }
    let intake = Intake {
        limits: state.ingest_limits(),
        inflight_bytes: state.inflight_bytes(),
        currencies: state.currencies(),
        rejected: state.rejected(),
    };
    let Intaken { decoded, mut rejected, invalid_count, ignored } = match intake.read(query, &headers, body).await {
        Ok(intaken) => intaken,
        Err(refusal) => return refusal,
    };
    let positions = decoded.positions;
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.engine().submit_with(decoded.events, move |r| {
        let _ = tx.send(r);
    });
    match rx.await {
        Ok(Ok(outcome)) => {
            // Events the engine refused after validation (beyond the deduplication horizon, or a
            // campaign response from a non-member).
            let refused: Vec<RejectedEvent> = outcome
                .refused
                .iter()
                .take(DETAILED_REJECTIONS)
                .map(|r| {
                    let position = positions.get(r.index).copied().unwrap_or(r.index) as u64;
                    RejectedEvent::new("http", position, r.reason.clone(), b"")
                })
                .collect();
            rejected.extend(refused.iter().map(|r| (r.position, r.error.clone())));
            rejected.sort_by_key(|r| r.0);
            rejected.truncate(ANSWERED_REJECTIONS);
            if !outcome.refused.is_empty() {
                state.rejected().record(outcome.refused.len() as u64, refused);
            }
            let answered: Vec<Value> = rejected.iter().map(|(i, e)| json!({"index": i, "error": e})).collect();
            let mut answer = json!({
                "accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": answered,
                "rejected_count": invalid_count + outcome.refused.len(),
            });
            if let (Some(ignored), Some(fields)) = (ignored, answer.as_object_mut()) {
                fields.insert("ignored".into(), ignored);
            }
            axum::Json(answer).into_response()
        }
        Ok(Err(SinkError::Overloaded { retry_after_ms })) => with_retry_after(
            error(StatusCode::TOO_MANY_REQUESTS, "overloaded", "the write-ahead log queue is full; retry later"),
            retry_after_ms.div_ceil(1000).max(1),
        ),
        Ok(Err(SinkError::Unavailable(m))) => {
            // A failed shard has a code of its own, as at the door above and on `/ready`.
            let code = if state.engine().failure().is_some() { "shard_failed" } else { "unavailable" };
            with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, code, m), 5)
        }
        Err(_) => with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "engine stopped"), 5),
    }
}

#[cfg(test)]
mod tests {
    use patron_model::{Currency, CurrencyTable};

    use super::*;
    use crate::rejected::KEPT_TEXT_BYTES;

    fn validator() -> Validator {
        Validator::new(CurrencyTable::only(Currency::from_code("EUR").unwrap()))
    }

    const GOOD: &str =
        r#"{"type":"purchase","event_id":"o1","customer_id":"c1","timestamp":"2025-01-01T00:00:00Z","revenue":"5"}"#;

    #[test]
    fn bodies_may_be_an_object_an_array_or_ndjson() {
        let one = decode_body(GOOD.as_bytes(), false, &validator()).unwrap();
        assert_eq!(one.events.len(), 1);
        let array = decode_body(format!("[{GOOD}, {{\"type\":\"visit\"}}]").as_bytes(), false, &validator()).unwrap();
        assert_eq!((array.events.len(), array.rejected[0].position), (1, 1));
        let lines = decode_body(format!("{GOOD}\n\n{{not json\n{GOOD}\n").as_bytes(), true, &validator()).unwrap();
        assert_eq!((lines.events.len(), lines.rejected.len(), lines.rejected[0].position), (2, 1, 1));
        assert!(decode_body(b"[1, 2", false, &validator()).is_err());
    }

    #[test]
    fn regression_a_byte_order_mark_does_not_break_the_first_event() {
        for ndjson in [false, true] {
            let body = [BOM, GOOD.as_bytes(), b"\n", GOOD.replace("o1", "o2").as_bytes()].concat();
            let decoded = decode_body(&body, ndjson, &validator()).unwrap();
            assert_eq!((decoded.events.len(), decoded.rejected_count), (2, 0));
        }
        let decoded = decode_body(&[BOM, format!("[{GOOD}]").as_bytes()].concat(), false, &validator()).unwrap();
        assert_eq!(decoded.events.len(), 1);
    }

    /// A body is checked for UTF-8 once; one that is not all UTF-8 is read
    /// line by line, and a bad byte rejects only its own line.
    #[test]
    fn a_bad_byte_rejects_only_its_line() {
        let second = GOOD.replace("o1", "o2");
        let body = [GOOD.as_bytes(), b"\n{\"type\":\"purch\xffase\"}\n", second.as_bytes()].concat();
        let decoded = decode_body(&body, true, &validator()).unwrap();
        assert_eq!((decoded.events.len(), decoded.rejected_count, decoded.rejected[0].position), (2, 1, 1));
        assert!(decoded.rejected[0].error.contains("invalid JSON"), "{}", decoded.rejected[0].error);
    }

    /// A large NDJSON body is decoded in pieces; positions, rejections and
    /// the events come out exactly as from one pass over the whole body.
    #[test]
    fn a_body_decoded_in_pieces_equals_one_decoded_whole() {
        let mut body = BOM.to_vec();
        for i in 0..4_000 {
            let line = match i % 97 {
                0 => "{not json".to_owned(),
                1 => String::new(),
                _ => GOOD.replace("o1", &format!("o{i}")),
            };
            body.extend_from_slice(line.as_bytes());
            body.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
        }
        assert!(body.len() >= SPLIT_FROM_BYTES, "{}", body.len());
        let bounds = piece_bounds(&body, true, 3);
        assert_eq!(bounds.len(), 3);
        assert_eq!((bounds[0].start, bounds[2].end), (BOM.len(), body.len()));
        assert!(bounds.windows(2).all(|w| w[0].end == w[1].start && body[w[0].end - 1] == b'\n'), "{bounds:?}");
        let whole = decode_body(&body, true, &validator()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let pieces = runtime.block_on(decode_body_on_pool(body, true, validator())).unwrap().unwrap();
        assert_eq!((pieces.events, pieces.positions), (whole.events, whole.positions));
        assert_eq!(pieces.rejected_count, whole.rejected_count);
        let at = |d: &[RejectedEvent]| d.iter().map(|r| (r.position, r.error.clone())).collect::<Vec<_>>();
        assert_eq!(at(&pieces.rejected), at(&whole.rejected));
        assert!(whole.rejected_count > 30);
        // Arrays and small bodies are decoded whole.
        assert!(piece_bounds(format!("[{}]", vec![GOOD; 3000].join(",")).as_bytes(), false, 2).is_empty());
        assert!(piece_bounds(format!("{GOOD}\n{GOOD}").as_bytes(), true, 2).is_empty());
    }

    /// Issue 12: a 2 MB array of a million `1`s peaked at 2.1 GB and answered 111 MB.
    #[test]
    fn regression_a_million_rejections_are_counted_not_all_described() {
        let body = format!("[{}]", vec!["1"; 1_000_000].join(","));
        let decoded = decode_body(body.as_bytes(), false, &validator()).unwrap();
        assert_eq!(decoded.rejected_count, 1_000_000);
        assert_eq!(decoded.rejected.len(), DETAILED_REJECTIONS);
        assert_eq!(decoded.rejected.last().map(|r| r.position), Some(DETAILED_REJECTIONS as u64 - 1));
    }

    /// Issue 12: thirty events with a 15 MiB revenue string held 560 MB.
    #[test]
    fn regression_kept_rejections_are_cut_with_their_size_stated() {
        let huge = "7".repeat(15 << 20);
        let raw = GOOD.replace(r#""revenue":"5""#, &format!(r#""revenue":"x{huge}""#));
        let decoded = decode_body(raw.as_bytes(), false, &validator()).unwrap();
        let kept = &decoded.rejected[0];
        assert!(kept.error.len() <= KEPT_TEXT_BYTES + 64 && kept.error.contains("revenue"), "{}", kept.error);
        assert!(kept.raw.len() <= KEPT_TEXT_BYTES + 64, "{}", kept.raw.len());
        assert!(kept.raw.ends_with(&format!("({} bytes in all)", raw.len())), "{}", &kept.raw[kept.raw.len() - 60..]);
        assert_eq!(kept.customer_ids, ["c1"]);
    }
}
