//! Patron ingestion: files (CSV, gzip CSV, NDJSON, Parquet) → validated events
//! → an [`EventSink`].
//!
//! Ingest never depends on state: it hands batches to `&dyn EventSink`.
//! Bad records are reported with their position (line or row number), the
//! field and the reason, and skipped; the good records around them are kept.
//!
//! ```
//! use patron_ingest::{ReadOptions, ingest_file};
//! use patron_model::{CurrencyTable, Event, EventSink, SinkError, SubmitOutcome, Validator};
//! struct Count;
//! impl EventSink for Count {
//!     fn submit(&self, events: Vec<Event>) -> Result<SubmitOutcome, SinkError> {
//!         Ok(SubmitOutcome { accepted: events.len(), ..SubmitOutcome::default() })
//!     }
//! }
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("orders.csv");
//! std::fs::write(&path, "customer_id,date,amount\nc1,2025-01-02,10.50\nc1,not a date,3\n").unwrap();
//! let validator = Validator::new(CurrencyTable::default());
//! let report = ingest_file(&path, &ReadOptions::default(), &validator, &Count, &|_, _| {}).unwrap();
//! assert_eq!((report.outcome.accepted, report.rejections.total()), (1, 1));
//! assert_eq!(report.rejections.kept()[0].position, 3); // the line number
//! ```
#![deny(missing_docs)]

mod refunds;
mod tabular;
pub mod timeparse;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use patron_model::{Event, EventError, EventSink, SinkError, SubmitOutcome, Validator};

pub use tabular::ColumnMapping;

/// Events handed to the sink at a time.
const BATCH: usize = 8192;

/// Rejections kept verbatim (the rest are counted).
const KEPT_REJECTIONS: usize = 1000;

/// Longest raw excerpt kept with a rejection.
const RAW_EXCERPT: usize = 512;

/// Input file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values with a header (optionally gzip-compressed).
    Csv,
    /// One JSON event per line.
    Ndjson,
    /// Apache Parquet, read with the column mapping.
    Parquet,
}

impl FileFormat {
    /// Guesses from the file name (`.csv`, `.csv.gz`, `.ndjson`, `.jsonl`, `.json`, `.parquet`).
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        match name.rsplit('.').next()? {
            "csv" | "txt" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// `csv`, `ndjson` or `parquet`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Self::Csv),
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "parquet" => Ok(Self::Parquet),
            other => Err(format!("unknown format {other:?} (expected csv, ndjson or parquet)")),
        }
    }
}

/// One rejected record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Line number (CSV, NDJSON) or row number (Parquet), 1-based.
    pub position: u64,
    /// What was wrong, naming the field.
    pub error: String,
    /// The field at fault (`(record)` when none is named).
    pub field: String,
    /// The record, truncated.
    pub raw: String,
}

/// Rejections: the first 1,000 verbatim, and the first
/// [`EXAMPLES_PER_FIELD`] of every field beyond them, all counted by field.
#[derive(Clone, Debug, Default)]
pub struct RejectionLog {
    kept: Vec<Rejection>,
    total: u64,
    by_field: BTreeMap<String, u64>,
}

/// Rejections kept of each field whatever came before, so that every kind
/// of error has examples to show (a file whose first thousand errors are
/// all one kind still shows the others).
pub const EXAMPLES_PER_FIELD: usize = 3;

impl RejectionLog {
    fn reject(&mut self, position: u64, error: EventError, raw: String) {
        self.total += 1;
        let field = error.field_name().unwrap_or("(record)").to_owned();
        let seen = self.by_field.entry(field.clone()).or_default();
        *seen += 1;
        if self.kept.len() < KEPT_REJECTIONS || *seen <= EXAMPLES_PER_FIELD as u64 {
            let mut raw = raw;
            if raw.len() > RAW_EXCERPT {
                let cut = (0..=RAW_EXCERPT).rev().find(|&i| raw.is_char_boundary(i)).unwrap_or(0);
                raw.truncate(cut);
                raw.push('…');
            }
            self.kept.push(Rejection { position, error: error.to_string(), field, raw });
        }
    }

    /// Rejections kept verbatim, in input order.
    pub fn kept(&self) -> &[Rejection] {
        &self.kept
    }

    /// Up to `per_field` kept rejections of each field, in input order: the
    /// examples to show, so that no kind of error hides behind another.
    pub fn examples(&self, per_field: usize) -> Vec<&Rejection> {
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        self.kept
            .iter()
            .filter(|r| {
                let n = shown.entry(r.field.as_str()).or_default();
                *n += 1;
                *n <= per_field
            })
            .collect()
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Rejections per field.
    pub fn by_field(&self) -> &BTreeMap<String, u64> {
        &self.by_field
    }
}

/// How to read a file.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Format; guessed from the name when `None`.
    pub format: Option<FileFormat>,
    /// Column roles for CSV and Parquet.
    pub mapping: ColumnMapping,
    /// NDJSON records in a source's format (`patron_sources`), translated
    /// into events before validation; `None`: Patron's own events.
    pub source: Option<patron_sources::Source>,
}

/// The native events (wire JSON) of one source record; what it holds that
/// is not e-commerce is dropped. A record that cannot be read or translated
/// is an error naming the source's field.
fn translate(source: patron_sources::Source, line: &[u8]) -> Result<Vec<String>, EventError> {
    let record: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| EventError::Json(patron_model::truncate_message(e.to_string(), 512)))?;
    // A file has no arrival time: GA4 events without their own time are refused.
    let translated = source.translate(&record, None).map_err(|e| match e.field() {
        Some(field) => EventError::Field {
            field: field.to_owned(),
            reason: e.to_string().strip_prefix(&format!("{field}: ")).unwrap_or("").to_owned(),
        },
        None => EventError::Json(e.to_string()),
    })?;
    Ok(translated.events.into_iter().map(|e| e.to_string()).collect())
}

/// What reading a file did.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// Format read.
    pub format: FileFormat,
    /// Columns used (tabular formats).
    pub columns: Option<String>,
    /// Time format used (tabular formats).
    pub time_format: Option<String>,
    /// Records (rows or lines) read.
    pub records: u64,
    /// Valid events handed to the sink.
    pub events: u64,
    /// What the sink did with them.
    pub outcome: SubmitOutcome,
    /// Rejected records.
    pub rejections: RejectionLog,
    /// Refunded rows of a tabular file that no earlier order of the file
    /// explains: refunded without an order, so they lower revenue only.
    pub refund_rows_without_order: u64,
}

impl FileReport {
    /// What became of refunded rows no order explains, for the run summary.
    pub fn refund_note(&self) -> Option<String> {
        (self.refund_rows_without_order > 0).then(|| {
            format!(
                "{} refunded rows match no earlier order of their customer in the file (discounts, fees, purchases from before it): refunded without an order, they lower revenue but no order's value.",
                self.refund_rows_without_order
            )
        })
    }
}

/// Errors that stop a file from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Format not given and not guessable.
    #[error("cannot tell the format of {0} from its name; pass --format csv|ndjson|parquet")]
    UnknownFormat(PathBuf),
    /// Slashed dates that read both month-first and day-first in every row looked at.
    #[error("{0}")]
    AmbiguousDates(Box<DateAmbiguity>),
    /// `--source` names records, which only NDJSON holds.
    #[error("--source {adapter} reads NDJSON records, one a line, but {} is {format}", path.display())]
    SourceNeedsNdjson {
        /// The source's adapter.
        adapter: &'static str,
        /// The file.
        path: PathBuf,
        /// Its format.
        format: &'static str,
    },
    /// A required column role has no column.
    #[error("no {role} column found; name it with {flag} (columns: {})", available.join(", "))]
    MissingColumn {
        /// The role.
        role: &'static str,
        /// The flag that sets it.
        flag: &'static str,
        /// The header.
        available: Vec<String>,
    },
    /// A mapping flag names a column that does not exist.
    #[error("{flag} {name:?} is not a column (columns: {})", available.join(", "))]
    UnknownColumn {
        /// The flag.
        flag: &'static str,
        /// The name given.
        name: String,
        /// The header.
        available: Vec<String>,
    },
    /// Contradictory mapping flags.
    #[error("{0}")]
    Mapping(String),
    /// The CSV header could not be read.
    #[error("{path}: {detail}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The Parquet file could not be read.
    #[error("{path}: not a readable Parquet file: {detail}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The sink refused events.
    #[error("the engine refused events: {0}")]
    Sink(#[from] SinkError),
}

/// Counts bytes read for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Batcher<'a> {
    sink: &'a dyn EventSink,
    pending: Vec<Event>,
    /// The position (line or row) in the file of each pending event.
    positions: Vec<u64>,
    events: u64,
    outcome: SubmitOutcome,
    /// Events the sink refused after validation (a refund beyond its
    /// order, an event beyond the dedup horizon): position and reason.
    refused: Vec<(u64, String)>,
}

impl<'a> Batcher<'a> {
    fn new(sink: &'a dyn EventSink) -> Self {
        Self {
            sink,
            pending: Vec::with_capacity(BATCH),
            positions: Vec::with_capacity(BATCH),
            events: 0,
            outcome: SubmitOutcome::default(),
            refused: Vec::new(),
        }
    }

    /// Queues the event read at `position`.
    fn push(&mut self, event: Event, position: u64) -> Result<(), IngestError> {
        self.pending.push(event);
        self.positions.push(position);
        self.events += 1;
        if self.pending.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let got = self.sink.submit(std::mem::take(&mut self.pending))?;
        self.outcome.accepted += got.accepted;
        self.outcome.duplicates += got.duplicates;
        for refused in got.refused {
            let position = self.positions.get(refused.index).copied().unwrap_or_default();
            self.refused.push((position, refused.reason));
        }
        self.positions.clear();
        Ok(())
    }

    /// Moves what the sink refused into `log`, as rejections of their records.
    fn log_refused(&mut self, log: &mut RejectionLog) {
        for (position, reason) in self.refused.drain(..) {
            let (field, why) = reason.split_once(": ").unwrap_or(("(record)", reason.as_str()));
            let error = EventError::Field { field: field.to_owned(), reason: why.to_owned() };
            log.reject(position, error, "(valid, refused by the state)".to_owned());
        }
    }
}

/// Reads a file, validates every record and submits the valid events to `sink`.
/// `progress(bytes_read, total_bytes)` is called as the file is read.
pub fn ingest_file(
    path: &Path,
    options: &ReadOptions,
    validator: &Validator,
    sink: &dyn EventSink,
    progress: &dyn Fn(u64, u64),
) -> Result<FileReport, IngestError> {
    let format = options
        .format
        .or_else(|| FileFormat::from_path(path))
        .ok_or_else(|| IngestError::UnknownFormat(path.into()))?;
    if let Some(source) = options.source
        && format != FileFormat::Ndjson
    {
        return Err(IngestError::SourceNeedsNdjson {
            adapter: source.as_str(),
            path: path.into(),
            format: format.name(),
        });
    }
    let io = |source| IngestError::Io { path: path.into(), source };
    let file = File::open(path).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    let read = Arc::new(AtomicU64::new(0));
    let counted = Counting { inner: file, read: read.clone() };
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let reader: Box<dyn Read> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(counted)) } else { Box::new(counted) };
    let mut batcher = Batcher::new(sink);
    let mut log = RejectionLog::default();
    let tick = || progress(read.load(Ordering::Relaxed), total);
    let report = match format {
        FileFormat::Ndjson => {
            let mut records: u64 = 0;
            for (i, line) in BufReader::new(reader).split(b'\n').enumerate() {
                let line = line.map_err(io)?;
                let position = i as u64 + 1;
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                records += 1;
                let raw = || String::from_utf8_lossy(trimmed).into_owned();
                match options.source {
                    None => match validator.decode(trimmed) {
                        Ok(event) => batcher.push(event, position)?,
                        Err(e) => log.reject(position, e, raw()),
                    },
                    Some(source) => match translate(source, trimmed) {
                        Ok(events) => {
                            for native in events {
                                match validator.decode(native.as_bytes()) {
                                    Ok(event) => batcher.push(event, position)?,
                                    Err(e) => log.reject(position, e, native),
                                }
                            }
                        }
                        Err(e) => log.reject(position, e, raw()),
                    },
                }
                if records.is_multiple_of(65_536) {
                    tick();
                }
            }
            FileReport {
                format,
                columns: None,
                time_format: None,
                records,
                events: 0,
                outcome: SubmitOutcome::default(),
                rejections: RejectionLog::default(),
                refund_rows_without_order: 0,
            }
        }
        FileFormat::Csv => {
            let mut reader = BufReader::with_capacity(1 << 16, reader);
            let (delimiter, detected) = match options.mapping.delimiter {
                Some(d) => (d, false),
                None => (sniff_delimiter(reader.fill_buf().map_err(io)?), true),
            };
            let mut csv = csv::ReaderBuilder::new().flexible(true).delimiter(delimiter).from_reader(reader);
            let headers: Vec<String> = csv
                .headers()
                .map_err(|e| IngestError::Csv { path: path.into(), detail: format!("cannot read the header: {e}") })?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut assembler =
                tabular::Assembler::new(tabular::Columns::resolve(headers, &options.mapping)?, &options.mapping);
            // Rows read ahead to choose between month-first and day-first dates, then applied first.
            let mut ahead = if options.mapping.time_format.is_none() {
                settle_dates(&mut csv, &mut assembler)?
            } else {
                Vec::new()
            }
            .into_iter();
            let mut record = csv::ByteRecord::new();
            loop {
                let read = match ahead.next() {
                    Some(buffered) => {
                        record = buffered;
                        Ok(true)
                    }
                    None => csv.read_byte_record(&mut record),
                };
                match read {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        match std::str::from_utf8(record.as_slice()) {
                            Ok(_) => {
                                let fields: Vec<&str> =
                                    record.iter().map(|f| std::str::from_utf8(f).unwrap_or_default()).collect();
                                assembler.push(line, &fields, &mut log);
                            }
                            Err(e) => log.reject(
                                line,
                                EventError::Json(format!("invalid UTF-8 in the row: {e}")),
                                String::from_utf8_lossy(record.as_slice()).into_owned(),
                            ),
                        }
                        if assembler.rows.is_multiple_of(65_536) {
                            tick();
                        }
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        log.reject(line, EventError::Json(format!("unreadable CSV row: {e}")), String::new());
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            break;
                        }
                    }
                }
            }
            let mut report = finish_tabular(assembler, validator, &mut batcher, &mut log, format)?;
            let how = if detected { "detected" } else { "--delimiter" };
            report.columns = report.columns.map(|c| format!("{c}; delimiter {} ({how})", delimiter_name(delimiter)));
            report
        }
        FileFormat::Parquet => {
            drop(reader);
            read_parquet(path, options, validator, &mut batcher, &mut log, &tick)?
        }
    };
    batcher.flush()?;
    batcher.log_refused(&mut log);
    tick();
    Ok(FileReport { events: batcher.events, outcome: batcher.outcome, rejections: log, ..report })
}

/// Why the dates of a file cannot be read without `--time-format`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{column}: {example:?} reads as {month_first} month-first and as {day_first} day-first, and none of the first {rows} rows tells them apart; pass --time-format '{month_pattern}' or '{day_pattern}'"
)]
pub struct DateAmbiguity {
    /// The time column.
    pub column: String,
    /// A value.
    pub example: String,
    /// Its month-first reading.
    pub month_first: String,
    /// Its day-first reading.
    pub day_first: String,
    /// Rows looked at.
    pub rows: usize,
    /// The month-first pattern.
    pub month_pattern: String,
    /// The day-first pattern.
    pub day_pattern: String,
}

/// Most rows read ahead to tell month-first from day-first dates.
const DATE_LOOKAHEAD_ROWS: usize = 200_000;

/// Reads rows ahead until their dates settle how slashed dates are read:
/// a value only one reading accepts (`13/01/2010` is day-first) decides. When
/// every row looked at reads both ways, the file is refused with an example
/// of each reading rather than read half wrong. Returns the rows read.
fn settle_dates<R: Read>(
    csv: &mut csv::Reader<R>,
    assembler: &mut tabular::Assembler,
) -> Result<Vec<csv::ByteRecord>, IngestError> {
    let (time, column) = assembler.time_column();
    let column = column.to_owned();
    let mut rows = Vec::new();
    let mut candidates: Option<(timeparse::TimeFormat, timeparse::TimeFormat, String)> = None;
    let mut record = csv::ByteRecord::new();
    while rows.len() < DATE_LOOKAHEAD_ROWS && matches!(csv.read_byte_record(&mut record), Ok(true)) {
        rows.push(record.clone());
        let Some(value) = record.get(time).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim) else { continue };
        if value.is_empty() {
            continue;
        }
        let (first, second, _) = match &candidates {
            Some(c) => c,
            None => {
                let Some(detected) = timeparse::TimeFormat::detect(value) else { continue };
                let Some(twin) = detected.twin() else {
                    assembler.settle_time_format(detected);
                    return Ok(rows);
                };
                candidates.insert((detected, twin, value.to_owned()))
            }
        };
        match (first.parse(value).is_some(), second.parse(value).is_some()) {
            (true, false) => {
                assembler.settle_time_format(first.clone());
                return Ok(rows);
            }
            (false, true) => {
                assembler.settle_time_format(second.clone());
                return Ok(rows);
            }
            _ => {}
        }
    }
    match candidates {
        None => Ok(rows),
        Some((first, second, example)) => {
            let (month, day) = if first.month_first() { (first, second) } else { (second, first) };
            let reading = |f: &timeparse::TimeFormat| f.parse(&example).map_or_else(String::new, |t| t.to_rfc3339());
            let pattern = |f: &timeparse::TimeFormat| match f {
                timeparse::TimeFormat::Pattern(p) => p.clone(),
                other => other.describe(),
            };
            Err(IngestError::AmbiguousDates(Box::new(DateAmbiguity {
                column,
                month_first: reading(&month),
                day_first: reading(&day),
                example,
                rows: rows.len(),
                month_pattern: pattern(&month),
                day_pattern: pattern(&day),
            })))
        }
    }
}

/// Delimiters a CSV file may use, in order of preference on a tie.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The delimiter of a CSV file from its first line: the candidate that occurs
/// most often outside quotes (a comma when none does).
fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in line {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|&d| d == b) {
            counts[i] += 1;
        }
    }
    let best = (0..DELIMITERS.len()).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0);
    if counts[best] == 0 { b',' } else { DELIMITERS[best] }
}

/// A delimiter as people name it.
fn delimiter_name(d: u8) -> String {
    match d {
        b'\t' => "tab".to_owned(),
        other => format!("{:?}", char::from(other)),
    }
}

fn finish_tabular(
    assembler: tabular::Assembler,
    validator: &Validator,
    batcher: &mut Batcher<'_>,
    log: &mut RejectionLog,
    format: FileFormat,
) -> Result<FileReport, IngestError> {
    let columns = Some(assembler.columns().describe());
    let time_format = assembler.time_format();
    let records = assembler.rows;
    let (events, refund_rows_without_order) = assembler.finish(validator);
    for (position, raw, result) in events {
        match result {
            Ok(event) => batcher.push(event, position)?,
            Err(e) => log.reject(position, e, raw),
        }
    }
    Ok(FileReport {
        format,
        columns,
        time_format,
        records,
        events: 0,
        outcome: SubmitOutcome::default(),
        rejections: RejectionLog::default(),
        refund_rows_without_order,
    })
}

fn read_parquet(
    path: &Path,
    options: &ReadOptions,
    validator: &Validator,
    batcher: &mut Batcher<'_>,
    log: &mut RejectionLog,
    tick: &dyn Fn(),
) -> Result<FileReport, IngestError> {
    let parquet_error = |e: &dyn std::fmt::Display| IngestError::Parquet { path: path.into(), detail: e.to_string() };
    let file = File::open(path).map_err(|source| IngestError::Io { path: path.into(), source })?;
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_error(&e))?;
    let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut assembler = tabular::Assembler::new(tabular::Columns::resolve(names, &options.mapping)?, &options.mapping);
    let reader = builder.with_batch_size(BATCH).build().map_err(|e| parquet_error(&e))?;
    let mut row_number = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_error(&e))?;
        let columns: Vec<StringArray> = batch
            .columns()
            .iter()
            .map(|c| {
                let text = arrow::compute::cast(c, &DataType::Utf8).map_err(|e| parquet_error(&e))?;
                text.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| parquet_error(&"column is not text after cast"))
            })
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            row_number += 1;
            let fields: Vec<&str> = columns.iter().map(|c| if c.is_null(row) { "" } else { c.value(row) }).collect();
            assembler.push(row_number, &fields, log);
        }
        tick();
    }
    finish_tabular(assembler, validator, batcher, log, FileFormat::Parquet)
}
