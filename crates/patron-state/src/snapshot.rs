//! Snapshot files: every customer record as of a consistent cut of the log.
//!
//! Design constraints:
//! - A snapshot named `snapshot-<next_seq:020>.bin` holds the effect of every
//!   logged event with a sequence number below `next_seq`, and nothing else.
//!   The engine gets that cut by logging a checkpoint marker and letting each
//!   shard hand over its chunks when the marker reaches it.
//! - Written to a temporary name, fsynced, renamed, directory fsynced: a crash
//!   at any step leaves the previous snapshots intact (a stray `.tmp` is ignored).
//! - The two newest snapshots are kept, and the log is truncated only before
//!   the older one, so a damaged newest snapshot falls back to the older one
//!   plus a longer log tail.
//! - **Small, because the disk is the limit.** Writing a snapshot is bound by
//!   the disk's bandwidth (about 240 MB/s with fdatasync on the benchmark
//!   machine), so version 6 stores customers in a compact layout of
//!   variable-length integers ([`crate::record::encode_customer_compact`],
//!   about half the fixed-width size) and remembered event fingerprints in
//!   9 bytes instead of 12. Scores are not stored: they are recomputed at
//!   recovery with the fitted models, which are, and with each customer's
//!   CLV interval width (version 8), which only a whole-population scoring
//!   computes and per-event rescoring keeps.
//! - **Encoded in parallel, streamed to the file.** Each shard's thread
//!   encodes its customers (from `Arc` clones of its chunks taken at the cut,
//!   so the shard goes on applying events) into blocks of about 1 MiB, each
//!   with its own CRC32C; one writer appends blocks in whatever order they
//!   come. At most a few blocks per shard are in memory: no image of the
//!   whole state is ever built. A second file handle flushes what has been
//!   written every 64 MiB, so the disk writes while the shards encode instead
//!   of the final fsync writing everything after them.
//! - **Parallel recovery.** The block table at the end says where each
//!   shard's blocks are; each shard's blocks are checked and decoded into its
//!   book on its own thread.
//!
//! ```text
//! magic "PATRSNAP" │ version u32 = 11 │ next_seq u64 │ watermark_ms i64 │ customers u64 │
//! id key [u64; 2] │ products u32 │ product ids (u16 length + UTF-8)… │
//! blocks… (each: whole customers of one shard, or one shard's dedup index and order ledger) │
//! tail: product statistics │ models (u32 length + CBOR; 0: provisional) │
//!       campaigns (u64 length + `campaigns::encode_snapshot`; 0: none) │
//!       shards u32 │ per shard: watermark_ms i64 │
//! block table: count u32 │ per block: kind u8 (0 customers, 1 dedup), shard u32, offset u64,
//!              bytes u64, customers u64, crc32c u32 │
//! offset of the tail u64 │ offset of the table u64 │ crc32c of header, tail, table and offsets u32
//! ```
//!
//! The product statistics (see `ItemStats::encode`) are shared by every
//! shard, so the engine serialises them while all shard writers wait at the
//! checkpoint: they hold exactly the events below `next_seq`. The id key is
//! in the header because it also routes customers to shards: a recovery with
//! another shard count routes each customer as it is decoded.
//!
//! Older versions are still read: 10 (as 11, without order ledgers, so refunds
//! of orders from before the upgrade lower revenue only, and without consent
//! on channels beyond email, sms and push), 9 (as 10, without campaigns), 8 (as 9, without acquisitions), 7 (as 8, without interval widths: recovery
//! computes them afresh), 6 (as 7, without the products each
//! profile evicted; see `PurchaseProfile::settle_inherited`), 5 (fixed-width customers, one section per
//! shard, one checksum over the file), 4 (one run of all customers) and 3
//! (records with an 8-id ring, which is skipped; no dedup index).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam::channel::bounded;
use patron_model::ByteReader;
use patron_model::ProductId;
use patron_storage::{Storage, StorageFile, crash_point};

use crate::chunk::Chunk;
use crate::dedup::{DedupIndex, IdHasher};
use crate::items::{ItemConfig, ItemStats};
use crate::record::{CompactLayout, CustomerRecord, History, Kept, encode_customer_compact};
use crate::scoring::ModelFits;

const MAGIC: &[u8; 8] = b"PATRSNAP";
const VERSION: u32 = 11;
/// Version 11 without the order ledger in its dedup blocks.
const VERSION_WITHOUT_ORDERS: u32 = 10;
/// Version 10 without the campaigns in its tail.
const VERSION_WITHOUT_CAMPAIGNS: u32 = 9;
/// Compact customers with their CLV interval width, without their acquisition.
const VERSION_WITHOUT_ACQUISITION: u32 = 8;
/// Compact customers with their evicted products, without the CLV interval width.
const VERSION_WITHOUT_SPREAD: u32 = 7;
/// Blocks of compact customers whose profiles lack their evicted products.
const VERSION_WITHOUT_BOUGHT: u32 = 6;
/// Fixed-width customers in one section per shard, one checksum over the file.
const VERSION_FIXED_WIDTH: u32 = 5;
/// The version before sections (customers of all shards in one run).
const VERSION_WITHOUT_SECTIONS: u32 = 4;
/// The last version whose records hold a ring of recent event ids.
const VERSION_WITH_RINGS: u32 = 3;
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
/// A shard's encoder hands a block to the writer once it holds this many bytes.
const BLOCK_BYTES: usize = 1 << 20;
/// Bytes written between two background flushes of a snapshot being written.
const FLUSH_BYTES: u64 = 64 << 20;
/// Bytes of one entry of the block table.
const BLOCK_ENTRY_LEN: usize = 1 + 4 + 8 + 8 + 8 + 4;
const KIND_CUSTOMERS: u8 = 0;
const KIND_DEDUP: u8 = 1;

/// A snapshot read back.
#[derive(Debug)]
pub struct Snapshot {
    /// The first log sequence number not covered.
    pub next_seq: u64,
    /// The event-time watermark at the cut (`i64::MIN`: no events).
    pub watermark_ms: i64,
    /// Every customer.
    pub records: Vec<CustomerRecord>,
    /// The product catalogue the records' histories refer to, in index order.
    pub products: Vec<ProductId>,
    /// The product statistics at the cut.
    pub items: ItemStats,
    /// The fitted models at the cut (`None`: provisional, or before version 6).
    pub models: Option<ModelFits>,
    /// The key of the event fingerprints (`None`: a version 3 snapshot).
    pub id_key: Option<IdHasher>,
    /// Each shard's watermark (milliseconds, `i64::MIN`: none) and remembered
    /// event fingerprints, in shard order.
    pub dedup: Vec<(i64, DedupIndex)>,
    /// Whether the records carry the CLV interval width they were served
    /// with (version 8), so recovery keeps it instead of computing it afresh.
    pub keeps_spreads: bool,
    /// The campaigns and their members ([`crate::campaigns::decode_snapshot`];
    /// empty before version 10 or without campaigns).
    pub campaigns: Vec<u8>,
}

/// One shard's part of a snapshot.
#[derive(Clone, Copy, Debug)]
pub struct ShardState<'a> {
    /// Its customers.
    pub section: &'a Section,
    /// Its watermark (milliseconds, `i64::MIN`: none).
    pub watermark_ms: i64,
    /// Its remembered event fingerprints.
    pub dedup: &'a DedupIndex,
}

/// What all shards share in a snapshot.
#[derive(Clone, Copy, Debug)]
pub struct SharedState<'a> {
    /// The product catalogue, in index order.
    pub products: &'a [ProductId],
    /// The product statistics (`ItemStats::encode`).
    pub items: &'a [u8],
    /// The fitted models (`None`: provisional).
    pub models: Option<&'a ModelFits>,
    /// The key of the event fingerprints.
    pub hasher: IdHasher,
    /// The campaigns and their members ([`crate::campaigns::encode_snapshot`]; empty: none).
    pub campaigns: &'a [u8],
}

/// A part of a snapshot file that can be malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The fixed header (id key).
    Header,
    /// The product catalogue.
    Catalogue,
    /// The table of blocks (versions 6 and 7).
    BlockTable,
    /// The table of sections (version 5).
    SectionTable,
    /// The product statistics.
    ProductStatistics,
    /// The fitted models.
    FittedModels,
    /// The deduplication indexes.
    DedupIndexes,
    /// The models, watermarks and dedup blocks after the statistics (versions 6 and 7).
    ModelsAndDedup,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Header => "the header",
            Part::Catalogue => "the product catalogue",
            Part::BlockTable => "the block table",
            Part::SectionTable => "the section table",
            Part::ProductStatistics => "the product statistics",
            Part::FittedModels => "the fitted models",
            Part::DedupIndexes => "the deduplication indexes",
            Part::ModelsAndDedup => "the models or deduplication indexes",
        })
    }
}

/// Why a snapshot cannot be read; recovery then falls back to an older one.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The file does not start with the snapshot magic.
    #[error("not a Patron snapshot")]
    NotASnapshot,
    /// A version this build does not read.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The file's checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// A part is cut short or inconsistent.
    #[error("{0} is invalid")]
    Invalid(Part),
    /// A product id in the catalogue is not a valid id.
    #[error("product {index}: {reason}")]
    Product {
        /// Its position in the catalogue.
        index: u32,
        /// Why the id is refused.
        reason: String,
    },
    /// A customer record cannot be decoded.
    #[error("customer {index} at byte {at} is invalid")]
    Customer {
        /// Its position in its run.
        index: u64,
        /// Where it starts.
        at: usize,
    },
    /// A customer's history names a product the catalogue lacks.
    #[error("customer {index} at byte {at} refers to a product outside the catalogue")]
    CustomerProduct {
        /// Its position in its run.
        index: u64,
        /// Where it starts.
        at: usize,
    },
    /// A block's own checksum does not match.
    #[error("the block at byte {at} fails its checksum")]
    BlockChecksum {
        /// Where the block starts.
        at: usize,
    },
    /// A block's customers end elsewhere than the block table says.
    #[error("a block ends at byte {end}, not where the table says")]
    BlockEnd {
        /// Where the customers ended.
        end: usize,
    },
    /// A dedup block does not decode to a whole index.
    #[error("the deduplication index at byte {at} is invalid")]
    DedupIndex {
        /// Where the block starts.
        at: usize,
    },
    /// A shard the file does not have was asked for.
    #[error("the snapshot has no shard {0}")]
    NoShard(usize),
    /// The customers of a version 3 or 4 file must be decoded before its tail.
    #[error("the customers must be decoded before the rest")]
    CustomersFirst,
    /// The statistics name more products than the catalogue holds.
    #[error("product statistics refer to products outside the catalogue")]
    StatisticsOutsideCatalogue,
    /// Bytes after the last section.
    #[error("{0} unexpected bytes after the last section")]
    TrailingBytes(usize),
    /// A thread decoding the file panicked.
    #[error("a restoring thread panicked: {0}")]
    ThreadPanicked(String),
}

/// The file name of the snapshot covering sequence numbers below `next_seq`.
pub fn snapshot_file_name(next_seq: u64) -> String {
    format!("snapshot-{next_seq:020}.bin")
}

/// Snapshots in `dir`, newest first.
pub fn list_snapshots(storage: &dyn Storage, dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = match storage.list(dir) {
        Ok(paths) => paths
            .into_iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_string_lossy().into_owned();
                let seq = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?.parse().ok()?;
                Some((seq, path))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    found.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(found)
}

/// The cut a snapshot covers: sequence numbers below `next_seq` and the
/// watermark then.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    /// The first log sequence number not covered.
    pub next_seq: u64,
    /// The event-time watermark (`i64::MIN`: no events).
    pub watermark_ms: i64,
}

/// One shard's customers as of the cut: its chunks and the histories beside them.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// The chunks (shared with the live shard, copy-on-write).
    pub chunks: Vec<Arc<Chunk>>,
    /// The histories, chunk by chunk.
    pub histories: Vec<Arc<Vec<History>>>,
}

impl Section {
    /// Customers in the section.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One block, encoded by a shard's thread.
struct Block {
    kind: u8,
    shard: u32,
    bytes: Vec<u8>,
    customers: u64,
}

/// Encodes one shard's customers into blocks, then its dedup index, handing
/// each to `send` (which blocks while the writer is behind).
fn encode_shard(shard: u32, state: &ShardState<'_>, block_bytes: usize, send: &mut dyn FnMut(Block) -> bool) {
    let mut bytes = Vec::with_capacity(block_bytes + 4096);
    let mut customers = 0;
    for (chunk, histories) in state.section.chunks.iter().zip(&state.section.histories) {
        for (row, history) in histories.iter().enumerate().take(chunk.len()) {
            let spread = chunk.scores(row).and_then(|s| s.clv_log_spread);
            let kept = Kept { segments: chunk.segments(row), clv_log_spread: spread };
            encode_customer_compact(chunk.id(row), &chunk.summaries()[row], history, kept, &mut bytes);
            customers += 1;
            if bytes.len() >= block_bytes {
                let full = std::mem::replace(&mut bytes, Vec::with_capacity(block_bytes + 4096));
                if !send(Block { kind: KIND_CUSTOMERS, shard, bytes: full, customers }) {
                    return;
                }
                customers = 0;
            }
        }
    }
    if customers > 0 && !send(Block { kind: KIND_CUSTOMERS, shard, bytes, customers }) {
        return;
    }
    let mut index = Vec::with_capacity(state.dedup.len() * 9 + 32);
    state.dedup.encode_compact(&mut index);
    send(Block { kind: KIND_DEDUP, shard, bytes: index, customers: 0 });
}

/// Writes a snapshot of `shards` at `cut`, encoding the shards in parallel
/// and streaming their blocks to the file; returns its path and size.
pub fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    cut: Cut,
    shards: &[ShardState<'_>],
    shared: &SharedState<'_>,
) -> std::io::Result<(PathBuf, u64)> {
    write_in_blocks(storage, dir, cut, shards, shared, BLOCK_BYTES)
}

/// Appends at the end of a file opened through the storage seam.
struct Appender<'a> {
    file: &'a dyn StorageFile,
    at: u64,
}

impl Appender<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.at)?;
        self.at += bytes.len() as u64;
        Ok(())
    }
}

fn write_in_blocks(
    storage: &dyn Storage,
    dir: &Path,
    cut: Cut,
    shards: &[ShardState<'_>],
    shared: &SharedState<'_>,
    block_bytes: usize,
) -> std::io::Result<(PathBuf, u64)> {
    storage.create_dir_all(dir)?;
    let path = dir.join(snapshot_file_name(cut.next_seq));
    let tmp = path.with_extension("tmp");
    // A temporary file left by an earlier attempt is replaced.
    match storage.remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let handle = storage.create_new(&tmp)?;
    let mut file = Appender { file: &*handle, at: 0 };
    let mut header = Vec::with_capacity(HEADER_LEN + 4);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&cut.next_seq.to_le_bytes());
    header.extend_from_slice(&cut.watermark_ms.to_le_bytes());
    header.extend_from_slice(&(shards.iter().map(|s| s.section.len()).sum::<usize>() as u64).to_le_bytes());
    for k in shared.hasher.key() {
        header.extend_from_slice(&k.to_le_bytes());
    }
    header.extend_from_slice(&(shared.products.len() as u32).to_le_bytes());
    for p in shared.products {
        patron_model::codec::put_str(&mut header, p.as_str());
    }
    file.write_all(&header)?;
    let mut crc = crc32c::crc32c(&header);
    let mut written = header.len() as u64;
    let mut table = Vec::new();
    std::thread::scope(|scope| -> std::io::Result<()> {
        let (tx, rx) = bounded::<(Block, u32)>(2 * shards.len().max(1));
        for (shard, state) in shards.iter().enumerate() {
            let tx = tx.clone();
            scope.spawn(move || {
                encode_shard(shard as u32, state, block_bytes, &mut |block| {
                    let block_crc = crc32c::crc32c(&block.bytes);
                    tx.send((block, block_crc)).is_ok()
                })
            });
        }
        drop(tx);
        // The page cache would hold the whole file until the final fsync (the
        // kernel starts writing back only at gigabytes of dirty pages), so
        // disk and encoders would take turns. A second handle flushes what is
        // written so far every FLUSH_BYTES, while the encoders go on.
        let flusher = &*handle;
        let (flush, flushes) = bounded::<()>(1);
        let background = scope.spawn(move || flushes.iter().try_for_each(|()| flusher.sync_data()));
        let mut flushed = 0;
        // On an error the receiver is dropped, which stops every encoder.
        let written_all = (|| {
            for (block, block_crc) in rx {
                file.write_all(&block.bytes)?;
                table.push((block.kind, block.shard, written, block.bytes.len() as u64, block.customers, block_crc));
                written += block.bytes.len() as u64;
                if written - flushed >= FLUSH_BYTES {
                    // Busy flushing: the next flush takes these pages too.
                    let _ = flush.try_send(());
                    flushed = written;
                }
            }
            Ok::<_, std::io::Error>(())
        })();
        drop(flush);
        // An error of a background flush fails the snapshot: it is never retried or lost.
        let flushed_all =
            background.join().unwrap_or_else(|_| Err(std::io::Error::other("the flushing thread panicked")));
        written_all.and(flushed_all)
    })?;
    let tail_offset = written;
    let mut tail = shared.items.to_vec();
    let models = shared.models.and_then(ModelFits::to_bytes).unwrap_or_default();
    tail.extend_from_slice(&(models.len() as u32).to_le_bytes());
    tail.extend_from_slice(&models);
    tail.extend_from_slice(&(shared.campaigns.len() as u64).to_le_bytes());
    tail.extend_from_slice(shared.campaigns);
    tail.extend_from_slice(&(shards.len() as u32).to_le_bytes());
    for state in shards {
        tail.extend_from_slice(&state.watermark_ms.to_le_bytes());
    }
    let table_offset = tail_offset + tail.len() as u64;
    tail.extend_from_slice(&(table.len() as u32).to_le_bytes());
    for &(kind, shard, offset, bytes, customers, block_crc) in &table {
        tail.push(kind);
        tail.extend_from_slice(&shard.to_le_bytes());
        for v in [offset, bytes, customers] {
            tail.extend_from_slice(&v.to_le_bytes());
        }
        tail.extend_from_slice(&block_crc.to_le_bytes());
    }
    tail.extend_from_slice(&tail_offset.to_le_bytes());
    tail.extend_from_slice(&table_offset.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &tail);
    tail.extend_from_slice(&crc.to_le_bytes());
    file.write_all(&tail)?;
    let size = written + tail.len() as u64;
    handle.sync_all()?;
    drop(handle);
    crash_point("snapshot-written");
    storage.rename(&tmp, &path)?;
    crash_point("snapshot-renamed");
    storage.sync_dir(dir)?;
    Ok((path, size))
}

/// Reads and verifies a snapshot, restoring product statistics with
/// `item_config` and deduplication indexes with `dedup_horizon_days`; the
/// error says what is wrong.
pub fn read_snapshot(
    storage: &dyn Storage,
    path: &Path,
    item_config: ItemConfig,
    dedup_horizon_days: Option<u32>,
) -> Result<Snapshot, SnapshotError> {
    let file = SnapshotFile::open(storage, path)?;
    let mut records = Vec::new();
    file.decode_all(&mut |record| records.push(record))?;
    let mut snapshot = file.finish(item_config, dedup_horizon_days)?;
    snapshot.records = records;
    Ok(snapshot)
}

/// Where one block of a snapshot is.
#[derive(Clone, Debug)]
struct BlockSpan {
    bytes: Range<usize>,
    customers: u64,
    /// `None` before version 6 (the whole file's checksum covers it).
    crc: Option<u32>,
}

/// How customers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Compact(CompactLayout),
    FixedWidth { with_rings: bool },
}

/// A snapshot file read into memory, its header, catalogue and block table
/// checked and parsed; the customers are decoded on demand (shard by shard,
/// in parallel if the caller wants).
#[derive(Debug)]
pub struct SnapshotFile {
    body: Vec<u8>,
    version: u32,
    id_key: Option<IdHasher>,
    next_seq: u64,
    watermark_ms: i64,
    count: u64,
    products: Vec<ProductId>,
    /// Where the customers start (versions 3 and 4: one run of all of them).
    records_start: usize,
    /// Each shard's customer blocks (empty before version 5).
    sections: Vec<Vec<BlockSpan>>,
    /// Each shard's dedup block (versions 6 and 7).
    dedup_blocks: Vec<BlockSpan>,
    /// Where the product statistics start and the tail ends, when the file
    /// says (versions 5 and 6).
    tail: Option<Range<usize>>,
    /// Where the one run of customers ended (versions 3 and 4, once decoded).
    run_end: std::sync::OnceLock<usize>,
}

impl SnapshotFile {
    /// Reads and checks `path`.
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<Self, SnapshotError> {
        let mut body = storage.read(path).map_err(SnapshotError::Read)?;
        if body.len() < HEADER_LEN + 4 || &body[..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let crc_at = body.len() - 4;
        let crc = u32::from_le_bytes(body[crc_at..].try_into().unwrap_or([0; 4]));
        body.truncate(crc_at);
        let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or([0; 4]));
        if ![
            VERSION,
            VERSION_WITHOUT_ORDERS,
            VERSION_WITHOUT_CAMPAIGNS,
            VERSION_WITHOUT_ACQUISITION,
            VERSION_WITHOUT_SPREAD,
            VERSION_WITHOUT_BOUGHT,
            VERSION_FIXED_WIDTH,
            VERSION_WITHOUT_SECTIONS,
            VERSION_WITH_RINGS,
        ]
        .contains(&version)
        {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let u64_at = |at: usize| body.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        let blocks = version >= VERSION_WITHOUT_BOUGHT;
        let (tail_offset, table_offset) = if blocks {
            let bad = || SnapshotError::Invalid(Part::BlockTable);
            let offsets = body.len().checked_sub(16).ok_or_else(bad)?;
            let (tail, table) = (u64_at(offsets).ok_or_else(bad)?, u64_at(offsets + 8).ok_or_else(bad)?);
            let (tail, table) = (usize::try_from(tail).map_err(|_| bad())?, usize::try_from(table).map_err(|_| bad())?);
            if !(HEADER_LEN <= tail && tail <= table && table <= offsets) {
                return Err(bad());
            }
            (tail, table)
        } else {
            (0, 0)
        };
        let mut reader = ByteReader::new(&body, HEADER_LEN);
        let id_key = if blocks {
            Some(IdHasher::from_key([
                reader.u64().ok_or(SnapshotError::Invalid(Part::Header))?,
                reader.u64().ok_or(SnapshotError::Invalid(Part::Header))?,
            ]))
        } else {
            None
        };
        let product_count = reader.u32().ok_or(SnapshotError::Invalid(Part::Catalogue))?;
        let mut products = Vec::with_capacity((product_count as usize).min(body.len()));
        for i in 0..product_count {
            let name = reader.str().ok_or(SnapshotError::Invalid(Part::Catalogue))?;
            products.push(ProductId::new(name).map_err(|reason| SnapshotError::Product { index: i, reason })?);
        }
        let records_start = reader.position();
        let checksum_ok = if blocks {
            // Blocks carry their own checksums, checked as they are decoded.
            let outer = crc32c::crc32c_append(crc32c::crc32c(&body[..records_start]), &body[tail_offset..]);
            outer == crc && records_start <= tail_offset
        } else {
            crc32c::crc32c(&body) == crc
        };
        if !checksum_ok {
            return Err(SnapshotError::Checksum);
        }
        let (next_seq, watermark_ms, count) =
            (u64_at(12).unwrap_or(0), u64_at(20).unwrap_or(0) as i64, u64_at(28).unwrap_or(0));
        let mut file = Self {
            body,
            version,
            id_key,
            next_seq,
            watermark_ms,
            count,
            products,
            records_start,
            sections: Vec::new(),
            dedup_blocks: Vec::new(),
            tail: None,
            run_end: std::sync::OnceLock::new(),
        };
        match version {
            VERSION
            | VERSION_WITHOUT_ORDERS
            | VERSION_WITHOUT_CAMPAIGNS
            | VERSION_WITHOUT_ACQUISITION
            | VERSION_WITHOUT_SPREAD
            | VERSION_WITHOUT_BOUGHT => file.read_block_table(records_start..tail_offset, table_offset)?,
            VERSION_FIXED_WIDTH => file.read_section_table()?,
            _ => {}
        }
        Ok(file)
    }

    /// Version 6: the blocks of each shard, which must lie between the
    /// catalogue and the tail and add up to the header's customer count.
    fn read_block_table(&mut self, blocks: Range<usize>, table_offset: usize) -> Result<(), SnapshotError> {
        let bad = || SnapshotError::Invalid(Part::BlockTable);
        let table_end = self.body.len() - 16;
        let mut table = ByteReader::new(&self.body[..table_end], table_offset);
        let n = table.u32().ok_or_else(bad)? as usize;
        if n.checked_mul(BLOCK_ENTRY_LEN) != Some(table.remaining()) {
            return Err(bad());
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let (kind, shard) = (table.u8().ok_or_else(bad)?, table.u32().ok_or_else(bad)?);
            let (offset, len, customers) =
                (table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?);
            let crc = table.u32().ok_or_else(bad)?;
            let start = usize::try_from(offset).map_err(|_| bad())?;
            let end = start.checked_add(usize::try_from(len).map_err(|_| bad())?).ok_or_else(bad)?;
            if start < blocks.start || end > blocks.end {
                return Err(bad());
            }
            entries.push((kind, shard, BlockSpan { bytes: start..end, customers, crc: Some(crc) }));
        }
        let shards = entries.iter().filter(|(kind, ..)| *kind == KIND_DEDUP).count();
        self.sections = vec![Vec::new(); shards];
        let mut dedup: Vec<Option<BlockSpan>> = vec![None; shards];
        for (kind, shard, span) in entries {
            match (kind, self.sections.get_mut(shard as usize)) {
                (KIND_CUSTOMERS, Some(section)) => section.push(span),
                (KIND_DEDUP, Some(_)) if dedup[shard as usize].is_none() => dedup[shard as usize] = Some(span),
                _ => return Err(bad()),
            }
        }
        let total: u64 = self.sections.iter().flatten().map(|b| b.customers).sum();
        if total != self.count {
            return Err(bad());
        }
        self.dedup_blocks = dedup.into_iter().collect::<Option<Vec<_>>>().ok_or_else(bad)?;
        self.tail = Some(blocks.end..table_offset);
        Ok(())
    }

    /// Version 5: one section per shard, back to back, then the tail.
    fn read_section_table(&mut self) -> Result<(), SnapshotError> {
        let bad = || SnapshotError::Invalid(Part::SectionTable);
        let body = &self.body;
        let offset = body
            .len()
            .checked_sub(8)
            .and_then(|at| body.get(at..at + 8))
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(bad)? as usize;
        let mut table = ByteReader::new(body, offset);
        let n = table.u32().ok_or_else(bad)?;
        let mut expected = self.records_start;
        let mut total = 0;
        let mut sections = Vec::new();
        for _ in 0..n {
            let (start, len, records) =
                (table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?);
            let (start, end) = (start as usize, start.saturating_add(len) as usize);
            if start != expected || end > offset {
                return Err(bad());
            }
            sections.push(vec![BlockSpan { bytes: start..end, customers: records, crc: None }]);
            (expected, total) = (end, total + records);
        }
        if table.position() + 8 != body.len() || total != self.count {
            return Err(bad());
        }
        self.sections = sections;
        self.tail = Some(expected..offset);
        Ok(())
    }

    fn layout(&self) -> Layout {
        if self.version >= VERSION_WITHOUT_BOUGHT {
            Layout::Compact(CompactLayout {
                with_forgotten: self.version >= VERSION_WITHOUT_SPREAD,
                with_spread: self.version >= VERSION_WITHOUT_ACQUISITION,
                with_acquisition: self.version >= VERSION_WITHOUT_CAMPAIGNS,
                with_other_consent: self.version >= VERSION,
            })
        } else {
            Layout::FixedWidth { with_rings: self.version == VERSION_WITH_RINGS }
        }
    }

    /// Customers in the snapshot.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// Shards the snapshot was written with (0: before version 5, one run of all).
    pub fn shard_count(&self) -> usize {
        self.sections.len()
    }

    /// The key that hashed the customers (and placed them in shards), when
    /// the header has it (version 6; older files keep it in the tail, and
    /// placed customers by another hash).
    pub fn id_key(&self) -> Option<IdHasher> {
        self.id_key
    }

    /// Decodes `count` customers from `start`; returns where they end.
    fn decode_run(
        &self,
        start: usize,
        end: usize,
        count: u64,
        each: &mut dyn FnMut(CustomerRecord),
    ) -> Result<usize, SnapshotError> {
        let mut reader = ByteReader::new(&self.body[..end], start);
        for i in 0..count {
            let at = reader.position();
            let record = match self.layout() {
                Layout::Compact(layout) => CustomerRecord::decode_compact(&mut reader, layout),
                Layout::FixedWidth { with_rings } => {
                    let mut pos = at;
                    let record = CustomerRecord::decode(&self.body[..end], &mut pos, with_rings);
                    reader = ByteReader::new(&self.body[..end], pos);
                    record
                }
            }
            .ok_or(SnapshotError::Customer { index: i, at })?;
            if record.history.purchases.max_product().is_some_and(|p| p as usize >= self.products.len()) {
                return Err(SnapshotError::CustomerProduct { index: i, at });
            }
            each(record);
        }
        Ok(reader.position())
    }

    fn decode_block(&self, block: &BlockSpan, each: &mut dyn FnMut(CustomerRecord)) -> Result<(), SnapshotError> {
        let bytes = &self.body[block.bytes.clone()];
        if block.crc.is_some_and(|crc| crc != crc32c::crc32c(bytes)) {
            return Err(SnapshotError::BlockChecksum { at: block.bytes.start });
        }
        let end = self.decode_run(block.bytes.start, block.bytes.end, block.customers, each)?;
        if end != block.bytes.end {
            return Err(SnapshotError::BlockEnd { end });
        }
        Ok(())
    }

    /// How many customers shard `shard`'s section holds, as its block table
    /// says (bounded by its bytes, so that a damaged table cannot ask for
    /// absurd room: a customer takes more than 8 bytes).
    pub fn shard_customers(&self, shard: usize) -> usize {
        self.sections.get(shard).map_or(0, |blocks| {
            blocks
                .iter()
                .map(|b| usize::try_from(b.customers).unwrap_or(usize::MAX).min(b.bytes.len() / 8))
                .fold(0, usize::saturating_add)
        })
    }

    /// Decodes shard `shard`'s customers, in order, handing each to `each`.
    pub fn decode_shard(&self, shard: usize, each: &mut dyn FnMut(CustomerRecord)) -> Result<(), SnapshotError> {
        let blocks = self.sections.get(shard).ok_or(SnapshotError::NoShard(shard))?;
        blocks.iter().try_for_each(|block| self.decode_block(block, each))
    }

    /// Decodes every customer (shard after shard), handing each to `each`.
    pub fn decode_all(&self, each: &mut dyn FnMut(CustomerRecord)) -> Result<(), SnapshotError> {
        if self.sections.is_empty() {
            let end = self.decode_run(self.records_start, self.body.len(), self.count, each)?;
            let _ = self.run_end.set(end);
            return Ok(());
        }
        (0..self.sections.len()).try_for_each(|shard| self.decode_shard(shard, each))
    }

    /// The rest of the snapshot (product statistics, models, deduplication
    /// indexes) and the header's values. For a version 3 or 4 file the
    /// customers must have been decoded first (the tail starts where they end).
    pub fn finish(self, item_config: ItemConfig, dedup_horizon_days: Option<u32>) -> Result<Snapshot, SnapshotError> {
        let tail = match (&self.tail, self.run_end.get()) {
            (Some(tail), _) => tail.clone(),
            (None, Some(&end)) => end..self.body.len(),
            (None, None) => return Err(SnapshotError::CustomersFirst),
        };
        let body = &self.body[..tail.end];
        let mut reader = ByteReader::new(body, tail.start);
        let items =
            ItemStats::decode(&mut reader, item_config).ok_or(SnapshotError::Invalid(Part::ProductStatistics))?;
        if items.len() > self.products.len() {
            return Err(SnapshotError::StatisticsOutsideCatalogue);
        }
        let mut campaigns = Vec::new();
        let (models, id_key, dedup) = match self.layout() {
            Layout::FixedWidth { with_rings: true } => (None, None, Vec::new()),
            Layout::FixedWidth { with_rings: false } => {
                let (key, dedup) = read_fixed_width_dedup(&mut reader, dedup_horizon_days)
                    .ok_or(SnapshotError::Invalid(Part::DedupIndexes))?;
                (None, Some(key), dedup)
            }
            Layout::Compact { .. } => {
                let invalid = || SnapshotError::Invalid(Part::ModelsAndDedup);
                let models_len = reader.u32().ok_or_else(invalid)? as usize;
                let models = match reader.take(models_len).ok_or_else(invalid)? {
                    [] => None,
                    bytes => Some(ModelFits::from_bytes(bytes).ok_or(SnapshotError::Invalid(Part::FittedModels))?),
                };
                if self.version >= VERSION_WITHOUT_ORDERS {
                    let len = usize::try_from(reader.u64().ok_or_else(invalid)?).map_err(|_| invalid())?;
                    campaigns = reader.take(len).ok_or_else(invalid)?.to_vec();
                }
                let shards = reader.u32().ok_or_else(invalid)? as usize;
                if shards != self.dedup_blocks.len() {
                    return Err(invalid());
                }
                let watermarks = (0..shards).map(|_| reader.i64()).collect::<Option<Vec<_>>>().ok_or_else(invalid)?;
                let indexes = self.decode_dedup_blocks(dedup_horizon_days)?;
                (models, self.id_key, watermarks.into_iter().zip(indexes).collect())
            }
        };
        if reader.position() != tail.end {
            return Err(SnapshotError::TrailingBytes(tail.end - reader.position()));
        }
        let mut dedup = dedup;
        if self.version < VERSION && self.watermark_ms != i64::MIN {
            // No ledger: any order up to the cut may exist unrecorded.
            let after_cut = patron_model::Timestamp::from_millis(self.watermark_ms).day().saturating_add(1);
            for (_, index) in &mut dedup {
                index.orders_mut().forget_before(after_cut);
            }
        }
        let (next_seq, watermark_ms, products) = (self.next_seq, self.watermark_ms, self.products);
        let keeps_spreads = self.version >= VERSION_WITHOUT_ACQUISITION;
        Ok(Snapshot {
            next_seq,
            watermark_ms,
            records: Vec::new(),
            products,
            items,
            models,
            id_key,
            dedup,
            keeps_spreads,
            campaigns,
        })
    }

    /// Every shard's dedup index (version 6), each checked and built on its
    /// own thread (tens of millions of fingerprints at 10M customers).
    fn decode_dedup_blocks(&self, horizon_days: Option<u32>) -> Result<Vec<DedupIndex>, SnapshotError> {
        let with_orders = self.version >= VERSION;
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .dedup_blocks
                .iter()
                .map(|block| {
                    scope.spawn(move || {
                        let bytes = &self.body[block.bytes.clone()];
                        if block.crc.is_some_and(|crc| crc != crc32c::crc32c(bytes)) {
                            return Err(SnapshotError::BlockChecksum { at: block.bytes.start });
                        }
                        let mut reader = ByteReader::new(bytes, 0);
                        match DedupIndex::decode_compact(&mut reader, horizon_days, with_orders) {
                            Some(index) if reader.remaining() == 0 => Ok(index),
                            _ => Err(SnapshotError::DedupIndex { at: block.bytes.start }),
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().map_err(|_| SnapshotError::ThreadPanicked("a deduplication index".to_owned()))?)
                .collect()
        })
    }
}

type FixedWidthDedup = (IdHasher, Vec<(i64, DedupIndex)>);

/// Version 5's key and indexes, back to back in the tail. Each index's extent
/// is found from its count, then the indexes are built in parallel.
fn read_fixed_width_dedup(reader: &mut ByteReader<'_>, horizon_days: Option<u32>) -> Option<FixedWidthDedup> {
    let key = [reader.u64()?, reader.u64()?];
    let shards = reader.u32()?;
    let mut extents = Vec::with_capacity((shards as usize).min(reader.remaining() / 16));
    for _ in 0..shards {
        let watermark_ms = reader.i64()?;
        let start = reader.position();
        reader.take(8)?;
        let count = usize::try_from(reader.u64()?).ok()?;
        let bytes = reader.take(count.checked_mul(12)?)?;
        extents.push((watermark_ms, start, start + 16 + bytes.len()));
    }
    let all = reader.bytes();
    let decoded: Vec<Option<(i64, DedupIndex)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = extents
            .iter()
            .map(|&(watermark_ms, start, end)| {
                scope.spawn(move || {
                    let mut r = ByteReader::new(&all[..end], start);
                    DedupIndex::decode(&mut r, horizon_days).map(|index| (watermark_ms, index))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().ok().flatten()).collect()
    });
    Some((IdHasher::from_key(key), decoded.into_iter().collect::<Option<Vec<_>>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_model::CustomerId;
    use patron_storage::RealDisk;

    fn cut(next_seq: u64, watermark_ms: i64) -> Cut {
        Cut { next_seq, watermark_ms }
    }

    /// `records` as one shard's section, in chunks of `per_chunk`.
    fn section(records: &[CustomerRecord], per_chunk: usize) -> Section {
        let mut out = Section::default();
        for part in records.chunks(per_chunk) {
            let mut chunk = Chunk::with_capacity(part.len());
            for r in part {
                chunk.push(r.customer_id.as_str(), r.summary, r.scores, r.segments);
            }
            out.chunks.push(Arc::new(chunk));
            out.histories.push(Arc::new(part.iter().map(|r| r.history.clone()).collect()));
        }
        out
    }

    fn customers(n: usize) -> Vec<CustomerRecord> {
        let validator = patron_model::Validator::new(patron_model::CurrencyTable::default());
        (0..n)
            .map(|i| {
                let mut record = CustomerRecord::new(CustomerId::new(&format!("c{i}")).unwrap());
                for day in 0..i % 4 {
                    let json = format!(
                        r#"{{"type":"purchase","event_id":"e{day}","customer_id":"c{i}","timestamp":"2025-03-{:02}T1{day}:00:00Z","revenue":"{}.25"}}"#,
                        1 + day * 3,
                        i + day
                    );
                    record.apply(&validator.decode(json.as_bytes()).unwrap());
                }
                record
            })
            .collect()
    }

    fn fits() -> ModelFits {
        use patron_score::{FitReport, GammaGammaParams, PurchaseModel, PurchaseParams};
        fn report<P>(params: P) -> FitReport<P> {
            FitReport {
                params,
                log_likelihood: -1234.5678901234567,
                customers: 10,
                distinct_histories: 7,
                iterations: 33,
                evaluations: 40,
                seconds: 0.012,
                std_errors: vec![0.0125, 0.378],
                log_covariance: vec![0.0026, -0.0011, -0.0011, 0.0073],
                boundary: vec![patron_score::AtBound {
                    parameter: "a".into(),
                    value: 1.5e-6,
                    meaning: "almost no customer drops out".into(),
                }],
            }
        }
        let bg = patron_score::BetaGeoParams { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
        ModelFits {
            time_unit: crate::TimeUnit::Weeks,
            purchase: vec![
                (PurchaseModel::BgNbd, Ok(report(PurchaseParams::BgNbd(bg)))),
                (PurchaseModel::ParetoNbd, Err("did not converge".into())),
            ],
            gamma_gamma: Ok(report(GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 })),
            mean_occasion_value: 35.17,
            fitted_at: patron_model::Timestamp::from_millis(1_700_000_000_123),
        }
    }

    /// A snapshot of two shards (30 and 20 customers) in blocks of `block_bytes`.
    fn write_two_shards(dir: &Path, block_bytes: usize) -> (PathBuf, Vec<CustomerRecord>, DedupIndex) {
        let records = customers(50);
        let sections = [section(&records[..30], 7), section(&records[30..], 16)];
        let products = vec![ProductId::new("sku-1").unwrap(), ProductId::new("sku-2").unwrap()];
        let mut items = Vec::new();
        ItemStats::default().encode(&mut items);
        let mut index = DedupIndex::new(Some(35));
        index.admit(12345, 100);
        let empty = DedupIndex::new(Some(35));
        let shards = [
            ShardState { section: &sections[0], watermark_ms: 1_000, dedup: &index },
            ShardState { section: &sections[1], watermark_ms: i64::MIN, dedup: &empty },
        ];
        let models = fits();
        let shared = SharedState {
            products: &products,
            items: &items,
            models: Some(&models),
            hasher: IdHasher::from_key([3, 4]),
            campaigns: b"campaign bytes",
        };
        let (path, size) = write_in_blocks(&RealDisk, dir, cut(42, 1_000), &shards, &shared, block_bytes).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        (path, records, index)
    }

    #[test]
    fn snapshots_round_trip_in_blocks_per_shard_with_the_models() {
        let dir = tempfile::tempdir().unwrap();
        for block_bytes in [BLOCK_BYTES, 64] {
            let (path, records, index) = write_two_shards(dir.path(), block_bytes);
            let file = SnapshotFile::open(&RealDisk, &path).unwrap();
            assert_eq!((file.shard_count(), file.records()), (2, 50));
            assert_eq!(file.sections[0].len() > 1, block_bytes == 64, "small blocks: several per shard");
            let mut second = Vec::new();
            file.decode_shard(1, &mut |r| second.push(r)).unwrap();
            assert_eq!(second, records[30..].to_vec(), "a shard decodes on its own");
            let back = read_snapshot(&RealDisk, &path, ItemConfig::default(), Some(35)).unwrap();
            assert_eq!((back.next_seq, back.watermark_ms, back.records.len()), (42, 1_000, 50));
            assert_eq!(back.records, records);
            assert_eq!(back.id_key, Some(IdHasher::from_key([3, 4])));
            assert_eq!(back.dedup, vec![(1_000, index), (i64::MIN, DedupIndex::new(Some(35)))]);
            let models = back.models.expect("the fitted models are kept");
            assert_eq!(format!("{models:?}"), format!("{:?}", fits()), "every number exactly");
            assert_eq!(back.campaigns, b"campaign bytes", "the campaigns are kept as given");
        }
    }

    #[test]
    fn damage_anywhere_in_a_snapshot_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ..) = write_two_shards(dir.path(), 64);
        let original = std::fs::read(&path).unwrap();
        let read = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_snapshot(&RealDisk, &path, ItemConfig::default(), Some(35)).map(|_| ())
        };
        assert!(read(&original).is_ok());
        // One flipped bit at every 7th byte: header, blocks, tail, table and checksum.
        for at in (0..original.len()).step_by(7) {
            let mut bytes = original.clone();
            bytes[at] ^= 0x10;
            assert!(read(&bytes).is_err(), "a flipped bit at byte {at} of {} went unnoticed", bytes.len());
        }
        for cut in [0, 10, 60, original.len() / 2, original.len() - 1] {
            assert!(read(&original[..cut]).is_err(), "cut at {cut}");
        }
        // The error says what is wrong, in a type a caller can match.
        assert!(matches!(read(&original[..10]), Err(SnapshotError::NotASnapshot)));
        let mut bad_version = original.clone();
        bad_version[8] = 99;
        assert!(matches!(read(&bad_version), Err(SnapshotError::UnsupportedVersion(_))));
    }

    #[test]
    fn temporary_files_are_ignored_and_snapshots_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        write_two_shards(dir.path(), BLOCK_BYTES);
        let mut items = Vec::new();
        ItemStats::default().encode(&mut items);
        let shared = SharedState {
            products: &[],
            items: &items,
            models: None,
            hasher: IdHasher::from_key([1, 2]),
            campaigns: &[],
        };
        let (path, _) = write_snapshot(&RealDisk, dir.path(), cut(7, 0), &[], &shared).unwrap();
        let empty = read_snapshot(&RealDisk, &path, ItemConfig::default(), None).unwrap();
        assert_eq!((empty.records.len(), empty.dedup.len(), empty.models.is_none()), (0, 0, true));
        std::fs::write(dir.path().join("snapshot-00000000000000000099.tmp"), b"half written").unwrap();
        let listed: Vec<u64> = list_snapshots(&RealDisk, dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(listed, vec![42, 7], "newest first; temporary files ignored");
    }

    #[test]
    fn a_version_3_snapshot_with_rings_in_its_records_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let record = CustomerRecord::new(CustomerId::new("c-3").unwrap());
        let (mut encoded, mut profile) = (Vec::new(), Vec::new());
        record.encode(&mut encoded);
        record.purchases().encode_fixed_width(&mut profile);
        // Version 3 kept 8 event fingerprints and two cursor bytes before the profile.
        encoded.splice(encoded.len() - profile.len().., std::iter::repeat_n(0xAB, 66).chain(profile.iter().copied()));
        let mut items = Vec::new();
        ItemStats::default().encode(&mut items);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION_WITH_RINGS.to_le_bytes());
        for v in [9u64, 5_000, 1] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&encoded);
        bytes.extend_from_slice(&items);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = dir.path().join(snapshot_file_name(9));
        std::fs::write(&path, bytes).unwrap();
        let back = read_snapshot(&RealDisk, &path, ItemConfig::default(), Some(35)).unwrap();
        assert_eq!((back.next_seq, back.watermark_ms, back.records), (9, 5_000, vec![record]));
        assert_eq!((back.id_key, back.dedup.len()), (None, 0), "no index: the engine refuses events before the cut");
    }
}
