//! Cluster mode: Patron nodes that share one event log on NATS JetStream.
//!
//! A node that receives events validates them and publishes them, a message
//! per partition, to the broker; it answers once the broker has them on disk.
//! Each partition is owned by one node, which holds a lease on it, consumes
//! its subject and applies the events to a state of its own. That state's
//! snapshots go to the broker's object store with the stream sequence they
//! cover, so any node can take a partition over: it restores the newest
//! snapshot and reads the stream from the next sequence.
//!
//! The state of a partition is a function of its stream prefix, so which node
//! applied it, or how often it was restored, does not change the answer.

pub mod broker;
pub mod fleet_model;
pub mod message;
pub mod node;
pub mod partition;

pub use broker::{Broker, BrokerOptions, PublishSummary};
pub use message::{EncodedBatch, decode_batch, encode_batches};
pub use node::{Node, NodeOptions, PartitionStatus, SnapshotRecord};
pub use partition::{desired_owner, partition_of, subject};

/// Errors of cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The broker could not be reached.
    #[error("cannot connect to the NATS server at {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broker request failed.
    #[error("cannot {action}: {source}")]
    Broker {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message's first byte names no layout this version reads.
    #[error("a broker message has an unknown layout byte {0:?}")]
    UnknownLayout(Option<u8>),
    /// A message holds bytes that are not an event.
    #[error("a broker message is damaged at byte {at}")]
    CorruptMessage {
        /// Where decoding stopped.
        at: usize,
    },
    /// The state of a partition failed.
    #[error("partition {partition}: {source}")]
    State {
        /// Which partition.
        partition: u32,
        /// The engine's error.
        source: patron_state::StateError,
    },
    /// Applying events to a partition failed.
    #[error("partition {partition}: cannot apply events: {source}")]
    Apply {
        /// Which partition.
        partition: u32,
        /// The engine's refusal.
        source: patron_model::SinkError,
    },
    /// A blocking task of a partition (opening or snapshotting its engine) panicked.
    #[error("partition {partition}: the task to {action} it failed: {source}")]
    Task {
        /// Which partition.
        partition: u32,
        /// What the task was doing.
        action: &'static str,
        /// The runtime's error.
        source: tokio::task::JoinError,
    },
    /// The lease ran out while events were being fetched.
    #[error("partition {partition}: the lease was not renewed in time; restarting from the snapshot")]
    LeaseExpired {
        /// Which partition.
        partition: u32,
    },
    /// A local file of a partition could not be read or written.
    #[error("partition {partition}: {action} {path}: {source}")]
    Io {
        /// Which partition.
        partition: u32,
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Wraps a client error with what was being done.
pub(crate) fn broker_error(
    action: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ClusterError {
    ClusterError::Broker { action, source: Box::new(source) }
}
