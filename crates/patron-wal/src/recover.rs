//! Recovery decisions as pure functions over segment bytes already read.
//!
//! For each segment, in sequence order:
//! - records are read until the zero header that ends written data; sequence
//!   numbers must continue exactly from the previous record and segment;
//! - an invalid record (bad checksum, cut short) in the **last** segment with
//!   no valid record anywhere after it is a **torn tail**: the write of a batch
//!   that was never acknowledged (acks follow the fsync). It is dropped and
//!   reported;
//! - an invalid record anywhere else, or followed by a valid record, may be
//!   acknowledged data gone bad: recovery **refuses** with the segment, offset
//!   and reason rather than silently dropping it.

use crate::frame::{Decoded, RECORD_HEADER_LEN, RecordRef, SEGMENT_HEADER_LEN, decode_record, decode_segment_header};

/// How a segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Valid records, then zeros.
    Clean,
    /// An unacknowledged partial write at `offset`, `dropped_bytes` long.
    Torn {
        /// Where the torn record starts.
        offset: usize,
        /// Non-zero bytes from `offset` to the last non-zero byte.
        dropped_bytes: usize,
        /// Why the record is invalid.
        reason: &'static str,
    },
    /// The segment was created but its header never written (all zeros).
    Blank,
}

/// The result of scanning one segment.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentScan<'a> {
    /// Valid records in order.
    pub records: Vec<RecordRef<'a>>,
    /// Offset just past the last valid record.
    pub valid_end: usize,
    /// Sequence number the next record must carry.
    pub next_seq: u64,
    /// How the segment ends.
    pub tail: Tail,
}

/// Why a segment cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset in the segment.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// Scans a segment named for `name_seq`. `expected_seq` is where the previous
/// segment ended (None for the first). `is_last` allows a torn tail.
pub fn scan_segment(
    bytes: &[u8],
    name_seq: u64,
    expected_seq: Option<u64>,
    is_last: bool,
) -> Result<SegmentScan<'_>, Corruption> {
    let corrupt = |offset: usize, reason: String| Err(Corruption { offset, reason });
    let Some(header_seq) = decode_segment_header(bytes) else {
        if is_last && bytes.iter().all(|&b| b == 0) {
            return Ok(SegmentScan { records: Vec::new(), valid_end: 0, next_seq: name_seq, tail: Tail::Blank });
        }
        return corrupt(0, "invalid segment header".into());
    };
    if header_seq != name_seq {
        return corrupt(0, format!("header says first sequence {header_seq}, file name says {name_seq}"));
    }
    if let Some(expected) = expected_seq
        && expected != name_seq
    {
        return corrupt(0, format!("previous segment ends at sequence {expected}, this one starts at {name_seq}"));
    }
    let (mut records, mut offset, mut next_seq) = (Vec::new(), SEGMENT_HEADER_LEN, name_seq);
    loop {
        match decode_record(bytes, offset) {
            Decoded::Record(record, end) => {
                if record.first_seq != next_seq {
                    return corrupt(
                        offset,
                        format!("record starts at sequence {}, expected {next_seq}", record.first_seq),
                    );
                }
                next_seq += u64::from(record.count);
                records.push(record);
                offset = end;
            }
            Decoded::End => {
                return match bytes[offset..].iter().rposition(|&b| b != 0) {
                    None => Ok(SegmentScan { records, valid_end: offset, next_seq, tail: Tail::Clean }),
                    Some(_) => invalid(bytes, offset, "data after the end marker", is_last, records, next_seq),
                };
            }
            Decoded::Invalid(reason) => return invalid(bytes, offset, reason, is_last, records, next_seq),
        }
    }
}

fn invalid<'a>(
    bytes: &'a [u8],
    offset: usize,
    reason: &'static str,
    is_last: bool,
    records: Vec<RecordRef<'a>>,
    next_seq: u64,
) -> Result<SegmentScan<'a>, Corruption> {
    if !is_last {
        return Err(Corruption { offset, reason: format!("{reason} in a segment that is not the last one") });
    }
    if let Some(later) = valid_record_after(bytes, offset + 1) {
        return Err(Corruption {
            offset,
            reason: format!("{reason}, but a valid record follows at offset {later}: acknowledged data may be damaged"),
        });
    }
    let last_nonzero = bytes.iter().rposition(|&b| b != 0).map_or(offset, |i| i + 1);
    Ok(SegmentScan {
        records,
        valid_end: offset,
        next_seq,
        tail: Tail::Torn { offset, dropped_bytes: last_nonzero.saturating_sub(offset), reason },
    })
}

/// The first offset at or after `start` holding a valid record, if any.
fn valid_record_after(bytes: &[u8], start: usize) -> Option<usize> {
    (start..bytes.len().saturating_sub(RECORD_HEADER_LEN))
        .find(|&o| matches!(decode_record(bytes, o), Decoded::Record(..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_record, encode_segment_header};

    fn segment(first_seq: u64, payloads: &[&[u8]], size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_segment_header(first_seq).to_vec();
        let mut starts = Vec::new();
        let mut seq = first_seq;
        for p in payloads {
            starts.push(bytes.len());
            encode_record(&mut bytes, seq, 2, p);
            seq += 2;
        }
        bytes.resize(size, 0);
        (bytes, starts)
    }

    #[test]
    fn clean_segment_yields_every_record() {
        let (bytes, _) = segment(10, &[b"a", b"bb", b"ccc"], 512);
        let scan = scan_segment(&bytes, 10, Some(10), true).unwrap();
        assert_eq!(scan.records.len(), 3);
        assert_eq!((scan.next_seq, scan.tail), (16, Tail::Clean));
    }

    /// Cut the last record at every byte offset (a torn write of any length):
    /// every earlier record survives and the tail is reported, never a panic.
    #[test]
    fn torn_tail_sweep_over_every_byte_of_the_last_record() {
        let (full, starts) = segment(0, &[b"first record", b"second record", b"the last, torn record"], 512);
        let last = *starts.last().unwrap();
        let end = last + RECORD_HEADER_LEN + b"the last, torn record".len();
        for cut in last..end {
            let mut torn = full.clone();
            torn[cut..].fill(0);
            // Also garbage instead of zeros after the cut, as a crash can leave.
            for bytes in [torn.clone(), {
                let mut g = torn.clone();
                g[cut..end].iter_mut().for_each(|b| *b = 0xA5);
                g
            }] {
                let scan = scan_segment(&bytes, 0, None, true).unwrap_or_else(|e| panic!("cut {cut}: {e:?}"));
                assert_eq!(scan.records.len(), 2, "cut at {cut}");
                assert_eq!(scan.valid_end, last);
                assert_eq!(scan.next_seq, 4);
                if bytes[last..].iter().any(|&b| b != 0) {
                    assert!(
                        matches!(scan.tail, Tail::Torn { offset, .. } if offset == last),
                        "cut {cut}: {:?}",
                        scan.tail
                    );
                }
            }
        }
    }

    #[test]
    fn damage_before_a_valid_record_is_refused() {
        let (mut bytes, starts) = segment(0, &[b"first", b"second"], 512);
        bytes[starts[0] + RECORD_HEADER_LEN] ^= 0xFF;
        let err = scan_segment(&bytes, 0, None, true).unwrap_err();
        assert_eq!(err.offset, starts[0]);
        assert!(err.reason.contains("a valid record follows"), "{}", err.reason);
        // In a segment that is not the last one, any damage is refused.
        let (mut bytes, starts) = segment(0, &[b"first", b"second"], 512);
        bytes[starts[1] + RECORD_HEADER_LEN] ^= 0xFF;
        assert!(scan_segment(&bytes, 0, None, false).is_err());
    }

    #[test]
    fn sequence_gaps_and_mismatched_names_are_refused() {
        let (bytes, _) = segment(10, &[b"a"], 256);
        assert!(scan_segment(&bytes, 11, None, true).unwrap_err().reason.contains("file name"));
        assert!(scan_segment(&bytes, 10, Some(8), true).unwrap_err().reason.contains("previous segment"));
        assert_eq!(scan_segment(&vec![0; 256], 10, Some(10), true).unwrap().tail, Tail::Blank);
        assert!(scan_segment(&vec![0; 256], 10, Some(10), false).is_err());
    }
}
