//! On-disk layout of segments and records, defined once.
//!
//! ```text
//! segment file  <first_seq:020>.wal, fixed size, zero-filled when created
//! ┌──────────────────── segment header (32 bytes) ────────────────────┐
//! │ magic "PATRNWAL" │ version u32 │ first_seq u64 │ crc32c u32 │ 0 pad │
//! └────────────────────────────────────────────────────────────────────┘
//! ┌──────────── record header (20 bytes) ────────────┬──── payload ────┐
//! │ len u32 │ crc32c u32 │ first_seq u64 │ count u32 │ len bytes        │  … repeated
//! └──────────────────────────────────────────────────┴─────────────────┘
//! zeros to the end of the segment
//! ```
//!
//! All integers little-endian. A record's CRC covers `first_seq`, `count` and
//! the payload; `len` is checked by the CRC indirectly (a wrong length reads the
//! wrong bytes). A record holds `count` events numbered `first_seq ..
//! first_seq + count`; sequence numbers are contiguous across records and
//! segments. An all-zero record header marks the end of the written data.

/// Segment file magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"PATRNWAL";
/// Layout version.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 20;
/// Segment file extension.
pub const SEGMENT_EXTENSION: &str = "wal";

/// The file name of the segment whose first record starts at `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXTENSION}")
}

/// The first sequence number encoded in a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok()).flatten()
}

/// Encodes the header of a segment starting at `first_seq`.
pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header; `None` if it is not a valid Patron segment header.
pub fn decode_segment_header(bytes: &[u8]) -> Option<u64> {
    let h = bytes.get(..SEGMENT_HEADER_LEN)?;
    let crc = u32::from_le_bytes(h[20..24].try_into().ok()?);
    if &h[..8] != SEGMENT_MAGIC
        || u32::from_le_bytes(h[8..12].try_into().ok()?) != SEGMENT_VERSION
        || crc != crc32c::crc32c(&h[..20])
    {
        return None;
    }
    Some(u64::from_le_bytes(h[12..20].try_into().ok()?))
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, first_seq: u64, count: u32, payload: &[u8]) {
    let mut covered = [0u8; 12];
    covered[..8].copy_from_slice(&first_seq.to_le_bytes());
    covered[8..].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&covered), payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&covered);
    out.extend_from_slice(payload);
}

/// Framed size of a record with `payload_len` bytes.
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// A record read back from a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Sequence number of the record's first event.
    pub first_seq: u64,
    /// Events in the record.
    pub count: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// What is at a given offset of a segment body.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and the offset just past it.
    Record(RecordRef<'a>, usize),
    /// An all-zero header: the end of written data.
    End,
    /// Not a valid record (torn or corrupt), with why.
    Invalid(&'static str),
}

/// Decodes the record at `offset` of `segment`.
pub fn decode_record(segment: &[u8], offset: usize) -> Decoded<'_> {
    let Some(header) = segment.get(offset..offset + RECORD_HEADER_LEN) else {
        return if segment[offset.min(segment.len())..].iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("record header cut short")
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let field = |range: std::ops::Range<usize>| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..range.len()].copy_from_slice(&header[range]);
        b
    };
    let len = u64::from_le_bytes(field(0..4)) as usize;
    let crc = u64::from_le_bytes(field(4..8)) as u32;
    let first_seq = u64::from_le_bytes(field(8..16));
    let count = u64::from_le_bytes(field(16..20)) as u32;
    if len == 0 || count == 0 {
        return Decoded::Invalid("empty record");
    }
    let body_start = offset + RECORD_HEADER_LEN;
    let Some(payload) = segment.get(body_start..body_start + len) else {
        return Decoded::Invalid("record runs past the end of the segment");
    };
    if crc32c::crc32c_append(crc32c::crc32c(&header[8..20]), payload) != crc {
        return Decoded::Invalid("checksum mismatch");
    }
    Decoded::Record(RecordRef { first_seq, count, payload }, body_start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_caught() {
        let mut seg = vec![0u8; 256];
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, 3, b"three events");
        seg[..buf.len()].copy_from_slice(&buf);
        match decode_record(&seg, 0) {
            Decoded::Record(r, end) => {
                assert_eq!((r.first_seq, r.count, r.payload, end), (42, 3, &b"three events"[..], buf.len()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode_record(&seg, buf.len()), Decoded::End);
        for bit in 0..buf.len() * 8 {
            let mut flipped = seg.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(decode_record(&flipped, 0), Decoded::Record(..)), "bit {bit} flip went unnoticed");
        }
    }

    #[test]
    fn segment_headers_and_names_round_trip() {
        assert_eq!(decode_segment_header(&encode_segment_header(7)), Some(7));
        let mut bad = encode_segment_header(7);
        bad[13] ^= 1;
        assert_eq!(decode_segment_header(&bad), None);
        assert_eq!(parse_segment_file_name(&segment_file_name(123)), Some(123));
        assert_eq!(parse_segment_file_name("123.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000123.tmp"), None);
    }
}
