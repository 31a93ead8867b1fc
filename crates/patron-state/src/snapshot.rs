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
//! products u32 │ product ids (u16 length + UTF-8)… │ records… │ product statistics │
//! id key [u64; 2] │ shards u32 │ per shard: watermark_ms i64, dedup index │ crc32c u32
//! ```
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

use crate::dedup::{DedupIndex, IdHasher};
use crate::items::{ItemConfig, ItemStats};
use crate::record::CustomerRecord;

const MAGIC: &[u8; 8] = b"PATRSNAP";
const VERSION: u32 = 4;
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

/// The cut a snapshot covers: sequence numbers below `next_seq`, the
/// watermark then, and how many encoded records follow.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    /// The first log sequence number not covered.
    pub next_seq: u64,
    /// The event-time watermark (`i64::MIN`: no events).
    pub watermark_ms: i64,
    /// Records in the encoded image.
    pub records: u64,
}

/// Writes a snapshot from already-encoded records; returns its path.
pub fn write_snapshot(
    dir: &Path,
    cut: Cut,
    encoded: &[u8],
    products: &[ProductId],
    items: &[u8],
    dedup: &DedupImage<'_>,
) -> std::io::Result<PathBuf> {
    let Cut { next_seq, watermark_ms, records } = cut;
    std::fs::create_dir_all(dir)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + encoded.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&next_seq.to_le_bytes());
    bytes.extend_from_slice(&watermark_ms.to_le_bytes());
    bytes.extend_from_slice(&records.to_le_bytes());
    bytes.extend_from_slice(&(products.len() as u32).to_le_bytes());
    for p in products {
        patron_model::codec::put_str(&mut bytes, p.as_str());
    }
    bytes.extend_from_slice(encoded);
    bytes.extend_from_slice(items);
    for k in dedup.hasher.key() {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    bytes.extend_from_slice(&(dedup.shards.len() as u32).to_le_bytes());
    for (watermark_ms, index) in dedup.shards {
        bytes.extend_from_slice(&watermark_ms.to_le_bytes());
        bytes.extend_from_slice(index);
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let path = dir.join(snapshot_file_name(next_seq));
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
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
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return Err("not a Patron snapshot".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum mismatch".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or([0; 4]));
    if version != VERSION && version != VERSION_WITH_RINGS {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let with_rings = version == VERSION_WITH_RINGS;
    let (next_seq, watermark_ms, count) = (u64_at(12), u64_at(20) as i64, u64_at(28));
    let mut reader = patron_model::ByteReader::new(body, HEADER_LEN);
    let product_count = reader.u32().ok_or("catalogue cut short")?;
    let mut products = Vec::with_capacity((product_count as usize).min(body.len()));
    for i in 0..product_count {
        let name = reader.str().ok_or_else(|| format!("product {i} is invalid"))?;
        products.push(ProductId::new(name).map_err(|e| format!("product {i}: {e}"))?);
    }
    let mut pos = reader.position();
    for i in 0..count {
        let record =
            CustomerRecord::decode(body, &mut pos, with_rings).ok_or_else(|| format!("record {i} is invalid"))?;
        if record.history.purchases.entries().iter().any(|p| p.product as usize >= products.len()) {
            return Err(format!("record {i} refers to a product outside the catalogue"));
        }
        each(record);
    }
    let mut reader = patron_model::ByteReader::new(body, pos);
    let items = ItemStats::decode(&mut reader, item_config).ok_or("product statistics are invalid")?;
    let (id_key, dedup) = if with_rings {
        (None, Vec::new())
    } else {
        read_dedup(&mut reader, dedup_horizon_days).ok_or("the deduplication indexes are invalid")?
    };
    if reader.position() != body.len() {
        return Err(format!("{} unexpected bytes after the last section", body.len() - reader.position()));
    }
    if items.len() > products.len() {
        return Err("product statistics refer to products outside the catalogue".into());
    }
    Ok(Snapshot { next_seq, watermark_ms, records: Vec::new(), products, items, id_key, dedup })
}

type DedupSections = (Option<IdHasher>, Vec<(i64, DedupIndex)>);

fn read_dedup(reader: &mut ByteReader<'_>, horizon_days: Option<u32>) -> Option<DedupSections> {
    let key = [reader.u64()?, reader.u64()?];
    let shards = reader.u32()?;
    let mut dedup = Vec::with_capacity((shards as usize).min(reader.remaining() / 16));
    for _ in 0..shards {
        let watermark_ms = reader.i64()?;
        dedup.push((watermark_ms, DedupIndex::decode(reader, horizon_days)?));
    }
    Some((Some(IdHasher::from_key(key)), dedup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_model::CustomerId;

    fn cut(next_seq: u64, watermark_ms: i64, records: usize) -> Cut {
        Cut { next_seq, watermark_ms, records: records as u64 }
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<CustomerRecord> =
            (0..50).map(|i| CustomerRecord::new(CustomerId::new(&format!("c{i}")).unwrap())).collect();
        let mut encoded = Vec::new();
        records.iter().for_each(|r| r.encode(&mut encoded));
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
        let path =
            write_snapshot(dir.path(), cut(42, 1_000, records.len()), &encoded, &products, &items, &dedup).unwrap();
        let back = read_snapshot(&path, ItemConfig::default(), Some(35)).unwrap();
        assert_eq!((back.next_seq, back.watermark_ms, back.records, back.products), (42, 1_000, records, products));
        assert_eq!(back.id_key, Some(hasher));
        assert_eq!(back.dedup, vec![(1_000, index), (i64::MIN, DedupIndex::new(Some(35)))]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_snapshot(&path, ItemConfig::default(), Some(35)).unwrap_err(), "checksum mismatch");
        write_snapshot(dir.path(), cut(7, 0, 0), &[], &[], &items, &DedupImage { hasher, shards: &[] }).unwrap();
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
