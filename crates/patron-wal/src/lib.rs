//! Patron's write-ahead log: events are durable before they are applied.
//!
//! Records (length, CRC32C, first sequence number, count, payload) go to
//! fixed-size, zero-filled segment files; one writer thread group-commits them
//! with a single `fdatasync` per batch and completes callers only after it.
//! Opening a log replays it, drops a torn tail (an unacknowledged partial
//! write) with a report, and refuses to start on corruption that may have hit
//! acknowledged records. Layout: [`frame`]; recovery rules: [`recover`];
//! writer: [`Wal`].
//!
//! ```
//! use patron_wal::{Wal, WalOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let (wal, report) = Wal::open(dir.path(), WalOptions::default(), |_, _, _| {}).unwrap();
//! assert_eq!(report.next_seq, 0);
//! let at = wal.append(b"two events".to_vec(), 2).unwrap();
//! assert_eq!((at.first_seq, at.count), (0, 2));
//! drop(wal);
//! let mut replayed = Vec::new();
//! let (_wal, report) = Wal::open(dir.path(), WalOptions::default(), |seq, _, p| replayed.push((seq, p.to_vec()))).unwrap();
//! assert_eq!(replayed, vec![(0, b"two events".to_vec())]);
//! assert_eq!(report.next_seq, 2);
//! ```
#![deny(missing_docs)]

pub mod frame;
mod log;
pub mod recover;

use std::path::PathBuf;

pub use log::{Appended, RecoveryReport, TornTail, Wal, WalOptions, WalStats};

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("{dir} is in use by another Patron process (LOCK is held)")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// Damage that may affect acknowledged records: refusing to start.
    #[error(
        "write-ahead log {segment} is damaged at byte {offset}: {reason}; refusing to start rather than drop acknowledged events"
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record larger than a segment can hold.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Empty payloads and zero-event records are not records.
    #[error("a record needs a non-empty payload and at least one event")]
    Empty,
    /// The queue is full: retry later.
    #[error("the log queue is full")]
    Full,
    /// An earlier write or sync failed; the log accepts nothing more.
    #[error("the log stopped after an I/O error and accepts no more writes: {cause}")]
    FailStopped {
        /// The first error.
        cause: String,
    },
    /// The log is closed.
    #[error("the log is closed")]
    Closed,
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, WalError>;
