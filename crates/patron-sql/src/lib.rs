//! Patron's SQL layer (DESIGN.md §4): DataFusion tables over the live engine
//! state, one read-only and bounded session shared by every front end, the
//! PostgreSQL wire protocol, and result encoders for HTTP and the CLI.
//!
//! Data flows one way: the engine is only read. A `customers` scan shares
//! every shard's chunks under the read locks for microseconds (measured in
//! [`ScanCounters::max_lock_micros`]) and builds its batches afterwards.

mod admission;
mod campaign_tables;
mod consent_table;
mod copy_out;
mod describe;
mod exec;
pub mod flight;
pub mod format;
pub mod pg;
pub mod pg_functions;
mod pg_semantics;
mod scram;
mod segment_table;
mod session;
mod tables;
mod tls;

pub use tls::TLS_HANDSHAKE_TIMEOUT;

pub use admission::{Access, MAX_NESTING, MAX_OPERATORS, SQL_THREAD_STACK_BYTES, check_complexity};
pub use format::{ResultFormat, encode};
pub use session::{QueryResult, QueryStream, SqlEngine, SqlError, SqlLimits};
pub use tables::{LiveSource, RECOMMENDATIONS_PER_CUSTOMER, RejectedRow, ScanCounters};
