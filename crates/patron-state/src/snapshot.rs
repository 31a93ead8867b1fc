//! Snapshot files: every customer record as of a consistent cut of the log.
//!
//! Design constraints:
//! - A snapshot named `snapshot-<next_seq:020>.bin` holds the effect of every
//!   logged event with a sequence number below `next_seq`, and nothing else.
//!   The engine gets that cut by logging a checkpoint marker and letting each
//!   shard serialise its book when the marker reaches it.
//! - Written to a temporary name, fsynced, renamed, directory fsynced: a crash
//!   at any step leaves the previous snapshots intact (a stray `.tmp` is ignored).
//! - The two newest snapshots are kept, and the log is truncated only before
//!   the older one, so a damaged newest snapshot falls back to the older one
//!   plus a longer log tail.
//!
//! ```text
//! magic "PATRSNAP" │ version u32 │ next_seq u64 │ watermark_ms i64 │ records u64 │
//! products u32 │ product ids (u16 length + UTF-8)… │ shard 0's records… │ … │ shard n−1's records… │
//! product statistics │ id key [u64; 2] │ shards u32 │ per shard: watermark_ms i64, dedup index │
//! sections u32 │ per shard: (offset u64, bytes u64, records u64) │ offset of that table u64 │ crc32c u32
//! ```
//!
//! - **Streamed.** Each shard hands over its chunks (`Arc` clones taken at the
//!   cut, so the shard goes on applying events meanwhile) and they are
//!   encoded customer by customer straight into a buffered file with a
//!   running checksum: no image of the whole state is ever built in memory.
//! - **Parallel recovery.** The table at the end says where each shard's
//!   records are; with the same shard count each is decoded into its book on
//!   its own thread.
//!
//! The product statistics (see `ItemStats::encode`) are shared by every
//! shard, so the engine serialises them while all shard writers wait at the
//! checkpoint: they hold exactly the events below `next_seq`. Each shard's
//! deduplication index (see `DedupIndex::encode`) and watermark follow, with
//! the key its fingerprints were made with. Version 3 (before the index)
//! is still read: its records carry an 8-id ring, which is skipped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use patron_model::ProductId;

use patron_model::ByteReader;

use std::io::BufWriter;
use std::ops::Range;
use std::sync::Arc;

use crate::chunk::Chunk;
use crate::dedup::{DedupIndex, IdHasher};
use crate::items::{ItemConfig, ItemStats};
use crate::record::{CustomerRecord, History, encode_customer};

const MAGIC: &[u8; 8] = b"PATRSNAP";
const VERSION: u32 = 5;
/// The version before the section table (records of all shards in one run).
const VERSION_WITHOUT_SECTIONS: u32 = 4;
/// The last version whose records hold a ring of recent event ids.
const VERSION_WITH_RINGS: u32 = 3;
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

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
    /// The key of the event fingerprints (`None`: a version 3 snapshot).
    pub id_key: Option<IdHasher>,
    /// Each shard's watermark (milliseconds, `i64::MIN`: none) and remembered
    /// event fingerprints, in shard order.
    pub dedup: Vec<(i64, DedupIndex)>,
}

/// What the shards' deduplication state adds to a snapshot.
#[derive(Debug)]
pub struct DedupImage<'a> {
    /// The fingerprints' key.
    pub hasher: IdHasher,
    /// Each shard's watermark and encoded index (`DedupIndex::encode`), in shard order.
    pub shards: &'a [(i64, Vec<u8>)],
}

/// The file name of the snapshot covering sequence numbers below `next_seq`.
pub fn snapshot_file_name(next_seq: u64) -> String {
    format!("snapshot-{next_seq:020}.bin")
}

/// Snapshots in `dir`, newest first.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let seq = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?.parse().ok()?;
                Some((seq, e.path()))
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

/// A file being written with a running CRC32C and position.
struct Checksummed {
    out: BufWriter<File>,
    crc: u32,
    written: u64,
}

impl Checksummed {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

/// Writes a snapshot, streaming each shard's section from its chunks;
/// returns its path and size.
pub fn write_snapshot(
    dir: &Path,
    cut: Cut,
    sections: &[Section],
    products: &[ProductId],
    items: &[u8],
    dedup: &DedupImage<'_>,
) -> std::io::Result<(PathBuf, u64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(snapshot_file_name(cut.next_seq));
    let tmp = path.with_extension("tmp");
    let mut out = Checksummed { out: BufWriter::with_capacity(1 << 20, File::create(&tmp)?), crc: 0, written: 0 };
    let mut header = Vec::with_capacity(HEADER_LEN + 4);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&cut.next_seq.to_le_bytes());
    header.extend_from_slice(&cut.watermark_ms.to_le_bytes());
    header.extend_from_slice(&(sections.iter().map(Section::len).sum::<usize>() as u64).to_le_bytes());
    header.extend_from_slice(&(products.len() as u32).to_le_bytes());
    for p in products {
        patron_model::codec::put_str(&mut header, p.as_str());
    }
    out.put(&header)?;
    let mut table = Vec::with_capacity(sections.len());
    let mut record = Vec::with_capacity(1024);
    for section in sections {
        let start = out.written;
        for (chunk, histories) in section.chunks.iter().zip(&section.histories) {
            for (row, history) in histories.iter().enumerate().take(chunk.len()) {
                record.clear();
                encode_customer(chunk.id(row), &chunk.summaries()[row], history, &mut record);
                out.put(&record)?;
            }
        }
        table.push((start, out.written - start, section.len() as u64));
    }
    out.put(items)?;
    let mut tail = Vec::new();
    for k in dedup.hasher.key() {
        tail.extend_from_slice(&k.to_le_bytes());
    }
    tail.extend_from_slice(&(dedup.shards.len() as u32).to_le_bytes());
    out.put(&tail)?;
    for (watermark_ms, index) in dedup.shards {
        out.put(&watermark_ms.to_le_bytes())?;
        out.put(index)?;
    }
    let table_offset = out.written;
    let mut footer = (table.len() as u32).to_le_bytes().to_vec();
    for (offset, bytes, records) in &table {
        for v in [offset, bytes, records] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
    }
    footer.extend_from_slice(&table_offset.to_le_bytes());
    out.put(&footer)?;
    let crc = out.crc;
    out.out.write_all(&crc.to_le_bytes())?;
    let size = out.written + 4;
    let file = out.out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok((path, size))
}

/// Reads and verifies a snapshot, restoring product statistics with
/// `item_config` and deduplication indexes with `dedup_horizon_days`; the
/// error says what is wrong.
pub fn read_snapshot(
    path: &Path,
    item_config: ItemConfig,
    dedup_horizon_days: Option<u32>,
) -> Result<Snapshot, String> {
    let mut records = Vec::new();
    let mut snapshot = read_snapshot_with(path, item_config, dedup_horizon_days, |record| records.push(record))?;
    snapshot.records = records;
    Ok(snapshot)
}

/// [`read_snapshot`], handing each record to `each` as soon as it is decoded
/// (the returned `records` is empty), so the caller can place records while
/// the rest is decoded. The checksum is verified first; on a later error some
/// records may already have been handed over, and the caller must discard them.
pub fn read_snapshot_with(
    path: &Path,
    item_config: ItemConfig,
    dedup_horizon_days: Option<u32>,
    mut each: impl FnMut(CustomerRecord),
) -> Result<Snapshot, String> {
    let file = SnapshotFile::open(path)?;
    let items_start = if file.sections.is_empty() {
        file.decode(file.records_start, file.count, None, &mut each)?
    } else {
        let mut end = file.records_start;
        for section in &file.sections {
            end = file.decode(section.bytes.start, section.records, Some(section.bytes.end), &mut each)?;
        }
        end
    };
    file.finish(items_start, item_config, dedup_horizon_days)
}

/// Where one shard's records are in a snapshot file.
#[derive(Clone, Debug)]
pub struct SectionSpan {
    /// Byte range in the file.
    pub bytes: Range<usize>,
    /// Customers in it.
    pub records: u64,
}

/// A snapshot file read into memory, its checksum verified and its header,
/// catalogue and section table parsed; the records are decoded on demand
/// (by section, in parallel if the caller wants).
#[derive(Debug)]
pub struct SnapshotFile {
    body: Vec<u8>,
    with_rings: bool,
    next_seq: u64,
    watermark_ms: i64,
    count: u64,
    products: Vec<ProductId>,
    records_start: usize,
    /// Each shard's records (empty before version 5: one run of all).
    pub sections: Vec<SectionSpan>,
    table_offset: Option<usize>,
}

impl SnapshotFile {
    /// Reads and checks `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut body = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        if body.len() < HEADER_LEN + 4 || &body[..8] != MAGIC {
            return Err("not a Patron snapshot".into());
        }
        let crc_at = body.len() - 4;
        let crc = u32::from_le_bytes(body[crc_at..].try_into().unwrap_or([0; 4]));
        body.truncate(crc_at);
        if crc32c::crc32c(&body) != crc {
            return Err("checksum mismatch".into());
        }
        let u64_at = |at: usize| body.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or([0; 4]));
        if ![VERSION, VERSION_WITHOUT_SECTIONS, VERSION_WITH_RINGS].contains(&version) {
            return Err(format!("unsupported snapshot version {version}"));
        }
        let (next_seq, watermark_ms, count) =
            (u64_at(12).unwrap_or(0), u64_at(20).unwrap_or(0) as i64, u64_at(28).unwrap_or(0));
        let mut reader = ByteReader::new(&body, HEADER_LEN);
        let product_count = reader.u32().ok_or("catalogue cut short")?;
        let mut products = Vec::with_capacity((product_count as usize).min(body.len()));
        for i in 0..product_count {
            let name = reader.str().ok_or_else(|| format!("product {i} is invalid"))?;
            products.push(ProductId::new(name).map_err(|e| format!("product {i}: {e}"))?);
        }
        let records_start = reader.position();
        let (mut sections, mut table_offset) = (Vec::new(), None);
        if version == VERSION {
            let bad = || "the section table is invalid".to_owned();
            let offset = body.len().checked_sub(8).and_then(u64_at).ok_or_else(bad)? as usize;
            let mut table = ByteReader::new(&body, offset);
            let n = table.u32().ok_or_else(bad)?;
            let mut expected = records_start;
            let mut total = 0;
            for _ in 0..n {
                let (start, len, records) =
                    (table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?, table.u64().ok_or_else(bad)?);
                let (start, end) = (start as usize, start.saturating_add(len) as usize);
                if start != expected || end > offset {
                    return Err(bad());
                }
                sections.push(SectionSpan { bytes: start..end, records });
                (expected, total) = (end, total + records);
            }
            if table.position() + 8 != body.len() || total != count {
                return Err(bad());
            }
            table_offset = Some(offset);
        }
        Ok(Self {
            body,
            with_rings: version == VERSION_WITH_RINGS,
            next_seq,
            watermark_ms,
            count,
            products,
            records_start,
            sections,
            table_offset,
        })
    }

    /// Where the records start (the first section's start).
    pub fn records_start(&self) -> usize {
        self.records_start
    }

    /// Customers in the snapshot.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// Decodes `count` records from `start`, handing each to `each`; returns
    /// where they end (which must be `end` when given).
    pub fn decode(
        &self,
        start: usize,
        count: u64,
        end: Option<usize>,
        each: &mut impl FnMut(CustomerRecord),
    ) -> Result<usize, String> {
        let mut pos = start;
        for i in 0..count {
            let record = CustomerRecord::decode(&self.body, &mut pos, self.with_rings)
                .ok_or_else(|| format!("record {i} at byte {pos} is invalid"))?;
            if record.history.purchases.entries().iter().any(|p| p.product as usize >= self.products.len()) {
                return Err(format!("record {i} at byte {pos} refers to a product outside the catalogue"));
            }
            each(record);
        }
        if end.is_some_and(|end| end != pos) {
            return Err(format!("a section ends at byte {pos}, not where the table says"));
        }
        Ok(pos)
    }

    /// The rest of the snapshot from `items_start` (where the records end):
    /// product statistics, deduplication indexes and the header's values.
    pub fn finish(
        self,
        items_start: usize,
        item_config: ItemConfig,
        dedup_horizon_days: Option<u32>,
    ) -> Result<Snapshot, String> {
        let body = &self.body;
        let end = self.table_offset.unwrap_or(body.len());
        let mut reader = ByteReader::new(&body[..end], items_start);
        let items = ItemStats::decode(&mut reader, item_config).ok_or("product statistics are invalid")?;
        let (id_key, dedup) = if self.with_rings {
            (None, Vec::new())
        } else {
            read_dedup(&mut reader, dedup_horizon_days).ok_or("the deduplication indexes are invalid")?
        };
        if reader.position() != end {
            return Err(format!("{} unexpected bytes after the last section", end - reader.position()));
        }
        if items.len() > self.products.len() {
            return Err("product statistics refer to products outside the catalogue".into());
        }
        let (next_seq, watermark_ms, products) = (self.next_seq, self.watermark_ms, self.products);
        Ok(Snapshot { next_seq, watermark_ms, records: Vec::new(), products, items, id_key, dedup })
    }
}

type DedupSections = (Option<IdHasher>, Vec<(i64, DedupIndex)>);

/// The key and every shard's index. Each index's extent is found from its
/// count, then the indexes are built in parallel (tens of millions of
/// fingerprints at 10M customers).
fn read_dedup(reader: &mut ByteReader<'_>, horizon_days: Option<u32>) -> Option<DedupSections> {
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
    Some((Some(IdHasher::from_key(key)), decoded.into_iter().collect::<Option<Vec<_>>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_model::CustomerId;

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

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<CustomerRecord> =
            (0..50).map(|i| CustomerRecord::new(CustomerId::new(&format!("c{i}")).unwrap())).collect();
        let sections = [section(&records[..30], 7), section(&records[30..], 16)];
        let products = vec![ProductId::new("sku-1").unwrap(), ProductId::new("sku-2").unwrap()];
        let mut items = Vec::new();
        ItemStats::default().encode(&mut items);
        let mut index = DedupIndex::new(Some(35));
        index.admit(12345, 100);
        let mut encoded_index = Vec::new();
        index.encode(&mut encoded_index);
        let hasher = IdHasher::from_key([3, 4]);
        let dedup = DedupImage { hasher, shards: &[(1_000, encoded_index), (i64::MIN, Vec::new())] };
        let mut empty = Vec::new();
        DedupIndex::new(Some(35)).encode(&mut empty);
        let dedup = DedupImage { shards: &[dedup.shards[0].clone(), (i64::MIN, empty)], ..dedup };
        let (path, size) = write_snapshot(dir.path(), cut(42, 1_000), &sections, &products, &items, &dedup).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let file = SnapshotFile::open(&path).unwrap();
        let spans: Vec<u64> = file.sections.iter().map(|s| s.records).collect();
        assert_eq!(spans, vec![30, 20], "one section per shard, found without decoding the records");
        let mut second = Vec::new();
        let span = file.sections[1].clone();
        file.decode(span.bytes.start, span.records, Some(span.bytes.end), &mut |r| second.push(r)).unwrap();
        assert_eq!(second, records[30..].to_vec(), "a section decodes on its own");
        let back = read_snapshot(&path, ItemConfig::default(), Some(35)).unwrap();
        assert_eq!((back.next_seq, back.watermark_ms, back.records, back.products), (42, 1_000, records, products));
        assert_eq!(back.id_key, Some(hasher));
        assert_eq!(back.dedup, vec![(1_000, index), (i64::MIN, DedupIndex::new(Some(35)))]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_snapshot(&path, ItemConfig::default(), Some(35)).unwrap_err(), "checksum mismatch");
        write_snapshot(dir.path(), cut(7, 0), &[], &[], &items, &DedupImage { hasher, shards: &[] }).unwrap();
        std::fs::write(dir.path().join("snapshot-00000000000000000099.tmp"), b"half written").unwrap();
        let listed: Vec<u64> = list_snapshots(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(listed, vec![42, 7], "newest first; temporary files ignored");
    }

    #[test]
    fn a_version_3_snapshot_with_rings_in_its_records_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let record = CustomerRecord::new(CustomerId::new("c-3").unwrap());
        let (mut encoded, mut profile) = (Vec::new(), Vec::new());
        record.encode(&mut encoded);
        record.purchases().encode(&mut profile);
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
        let back = read_snapshot(&path, ItemConfig::default(), Some(35)).unwrap();
        assert_eq!((back.next_seq, back.watermark_ms, back.records), (9, 5_000, vec![record]));
        assert_eq!((back.id_key, back.dedup.len()), (None, 0), "no index: the engine refuses events before the cut");
    }
}
