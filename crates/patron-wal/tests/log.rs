//! The log on real files: concurrency and group commit, segment rolling and
//! truncation, the directory lock, torn tails and corruption, a model-based
//! property test, and kill -9 crash cycles against a real child process.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_wal::{RecoveryReport, Wal, WalError, WalOptions};

type Replayed = Vec<(u64, u32, Vec<u8>)>;

fn replay_all(dir: &Path, options: WalOptions) -> (Wal, Replayed, RecoveryReport) {
    let mut records = Vec::new();
    let (wal, report) =
        Wal::open(dir, options, |seq, count, payload| records.push((seq, count, payload.to_vec()))).unwrap();
    (wal, records, report)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn concurrent_appends_get_contiguous_sequences_and_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = replay_all(dir.path(), WalOptions::default());
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..100).map(|i| wal.append(format!("t{t}-{i}").into_bytes(), 3).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    acked.sort_by_key(|a| a.first_seq);
    for (i, a) in acked.iter().enumerate() {
        assert_eq!(a.first_seq, 3 * i as u64, "sequences are contiguous");
    }
    let syncs = wal.stats().syncs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(syncs < 800, "group commit: {syncs} syncs for 800 appends");
    drop(wal);
    let (_, records, report) = replay_all(dir.path(), WalOptions::default());
    assert_eq!((records.len(), report.events, report.next_seq), (800, 2400, 2400));
    assert!(report.replay_micros > 0, "reading 800 records is timed: {report:?}");
    let payloads: HashSet<_> = records.iter().map(|r| r.2.clone()).collect();
    assert_eq!(payloads.len(), 800);
}

#[test]
fn segments_roll_and_covered_ones_are_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let (wal, _, _) = replay_all(dir.path(), options);
    for i in 0..200u32 {
        wal.append(vec![i as u8; 100], 1).unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert!(before > 5, "{before} segments");
    let removed = wal.truncate_before(100).unwrap();
    assert!(removed > 0 && removed < before);
    assert_eq!(segment_files(dir.path()).len(), before - removed);
    assert!(matches!(wal.append(vec![0; 5000], 1), Err(WalError::TooLarge { .. })));
    assert!(matches!(wal.append(Vec::new(), 1), Err(WalError::Empty)));
    drop(wal);
    let (_, records, report) = replay_all(dir.path(), options);
    assert!(records.first().unwrap().0 <= 100, "everything from 100 on is kept");
    assert_eq!(records.last().unwrap().0, 199);
    assert_eq!(report.next_seq, 200);
    assert!(records.windows(2).all(|w| w[1].0 == w[0].0 + 1));
}

#[test]
fn recovery_from_a_snapshot_does_not_read_the_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let (wal, _, _) = replay_all(dir.path(), options);
    for i in 0..200u32 {
        wal.append(vec![i as u8; 100], 1).unwrap();
    }
    drop(wal);
    // Damage the oldest segment: a full replay must notice, one from 100 must not read it.
    let oldest = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&oldest).unwrap();
    bytes[100..300].fill(0xAB);
    std::fs::write(&oldest, bytes).unwrap();
    let mut records = Vec::new();
    let (wal, report) =
        Wal::open_from(dir.path(), options, 100, |seq, _, payload| records.push((seq, payload.to_vec()))).unwrap();
    assert!(report.skipped_segments > 0, "{report:?}");
    let first = records.iter().position(|r| r.0 == 100).expect("record 100 is replayed");
    assert!(records[0].0 > 0 && records[0].0 <= 100);
    assert!(records[first..].iter().zip(100u64..).all(|(r, seq)| r.0 == seq && r.1 == vec![seq as u8; 100]));
    assert_eq!((records.last().unwrap().0, report.next_seq), (199, 200));
    drop(wal);
    assert!(matches!(Wal::open(dir.path(), options, |_, _, _| {}), Err(WalError::Corrupt { .. })));
}

#[test]
fn roll_starts_a_new_segment_so_truncation_can_remove_everything_before() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = replay_all(dir.path(), WalOptions::default());
    wal.append(b"secret-customer-7".to_vec(), 1).unwrap();
    let next = wal.roll().unwrap();
    assert_eq!(next, 1);
    assert_eq!(wal.roll().unwrap(), 1, "rolling an empty segment is a no-op");
    wal.append(b"later".to_vec(), 1).unwrap();
    assert_eq!(wal.truncate_before(next).unwrap(), 1);
    for file in segment_files(dir.path()) {
        let bytes = std::fs::read(file).unwrap();
        assert!(!bytes.windows(17).any(|w| w == b"secret-customer-7"));
    }
    drop(wal);
    let (_, records, _) = replay_all(dir.path(), WalOptions::default());
    assert_eq!(records.iter().map(|r| r.2.clone()).collect::<Vec<_>>(), vec![b"later".to_vec()]);
}

#[test]
fn a_second_opener_cannot_take_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _, _) = replay_all(dir.path(), WalOptions::default());
    let impatient = WalOptions { lock_wait: Duration::from_millis(50), ..WalOptions::default() };
    assert!(matches!(Wal::open(dir.path(), impatient, |_, _, _| {}), Err(WalError::Locked { .. })));
}

#[test]
fn a_torn_tail_on_disk_is_dropped_reported_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 1 << 16, ..WalOptions::default() };
    let (wal, _, _) = replay_all(dir.path(), options);
    wal.append(b"acked one".to_vec(), 1).unwrap();
    wal.append(b"acked two".to_vec(), 1).unwrap();
    drop(wal);
    // A crash in the middle of writing a third record: a header and half a payload.
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let mut torn = Vec::new();
    patron_wal::frame::encode_record(&mut torn, 2, 1, b"never acknowledged");
    bytes[end..end + 25].copy_from_slice(&torn[..25]);
    std::fs::write(&path, &bytes).unwrap();

    let (wal, records, report) = replay_all(dir.path(), options);
    assert_eq!(records.iter().map(|r| r.2.as_slice()).collect::<Vec<_>>(), [&b"acked one"[..], b"acked two"]);
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!((torn.offset, torn.dropped_bytes), (end as u64, 25));
    wal.append(b"three".to_vec(), 1).unwrap();
    drop(wal);
    let (_, records, report) = replay_all(dir.path(), options);
    assert_eq!(records.len(), 3);
    assert!(report.torn_tail.is_none(), "the torn bytes were zeroed");
}

#[test]
fn corruption_of_an_acknowledged_record_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = replay_all(dir.path(), WalOptions::default());
    for i in 0..5u8 {
        wal.append(vec![i; 64], 1).unwrap();
    }
    drop(wal);
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[32 + 20 + 10] ^= 0x01; // inside the first record's payload
    std::fs::write(&path, &bytes).unwrap();
    let err = Wal::open(dir.path(), WalOptions::default(), |_, _, _| {}).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WalError::Corrupt { offset: 32, .. }), "{text}");
    assert!(text.contains("refusing to start"), "{text}");
}

mod model {
    //! Model-based: random appends, reopen cycles and torn writes against the
    //! list of acknowledged payloads. After every reopen the log replays
    //! exactly the acknowledged payloads, in order.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        Reopen,
        TornWrite(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 1..300).prop_map(Op::Append),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(1u8..=255, 1..60).prop_map(Op::TornWrite),
        ]
    }

    fn payloads(records: &Replayed) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.2.clone()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn replay_equals_the_acknowledged_history(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let options = WalOptions { segment_bytes: 2048, ..WalOptions::default() };
            let mut acked: Vec<Vec<u8>> = Vec::new();
            let (mut wal, _, _) = replay_all(dir.path(), options);
            for op in ops {
                match op {
                    Op::Append(p) => {
                        wal.append(p.clone(), 1).unwrap();
                        acked.push(p);
                    }
                    Op::Reopen => {
                        drop(wal);
                        let (w, records, _) = replay_all(dir.path(), options);
                        prop_assert_eq!(payloads(&records), acked.clone());
                        wal = w;
                    }
                    Op::TornWrite(garbage) => {
                        // The process dies while writing: bytes land after the last
                        // record of the newest segment and are never acknowledged.
                        drop(wal);
                        let newest = segment_files(dir.path()).pop().unwrap();
                        let mut bytes = std::fs::read(&newest).unwrap();
                        // Where the records really end (a payload may end in zero bytes).
                        let name_seq = patron_wal::frame::parse_segment_file_name(
                            &newest.file_name().unwrap().to_string_lossy(),
                        )
                        .unwrap();
                        let end = patron_wal::recover::scan_segment(&bytes, name_seq, None, true).unwrap().valid_end;
                        let room = bytes.len().saturating_sub(end).min(garbage.len());
                        bytes[end..end + room].copy_from_slice(&garbage[..room]);
                        std::fs::write(&newest, &bytes).unwrap();
                        let (w, records, _) = replay_all(dir.path(), options);
                        prop_assert_eq!(payloads(&records), acked.clone());
                        wal = w;
                    }
                }
            }
        }
    }
}

const CRASH_OPTIONS: WalOptions = WalOptions {
    segment_bytes: 1 << 20,
    max_batch_bytes: 1 << 20,
    queue_depth: 4096,
    lock_wait: Duration::from_secs(5),
};

/// Child half of the crash test: appends from four threads and prints every
/// acknowledged payload id, until killed. Does nothing unless the parent runs it.
#[test]
#[ignore = "child process of kill_dash_nine_never_loses_an_acknowledged_record"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var("PATRON_WAL_CRASH_DIR") else { return };
    let cycle = std::env::var("PATRON_WAL_CRASH_CYCLE").unwrap_or_default();
    let (wal, _, _) = replay_all(Path::new(&dir), CRASH_OPTIONS);
    let wal = Arc::new(wal);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (wal, out, cycle) = (wal.clone(), out.clone(), cycle.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = format!("c{cycle}-t{t}-{i}");
                    let payload = format!("{id}|{}", "x".repeat(i % 200)).into_bytes();
                    if wal.append(payload, 1).is_ok() {
                        use std::io::Write;
                        let mut out = out.lock().unwrap();
                        let _ = writeln!(out, "ack {id}");
                        let _ = out.flush();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Real crashes: a child process appends under load and is SIGKILLed at a
/// varying moment, 20 times (50 with PATRON_FULL_CRASH_TEST=1). After each
/// kill, recovery must replay every acknowledged record exactly once, intact.
#[test]
fn kill_dash_nine_never_loses_an_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let cycles = if std::env::var("PATRON_FULL_CRASH_TEST").is_ok() { 50 } else { 20 };
    let mut all_acked: HashSet<String> = HashSet::new();
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_appends_until_killed", "--ignored", "--nocapture", "--test-threads", "1"])
            .env("PATRON_WAL_CRASH_DIR", dir.path())
            .env("PATRON_WAL_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ack ").map(str::to_owned))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(40 + (cycle as u64 * 37) % 200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        all_acked.extend(reader.join().unwrap());

        let started = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        let (_wal, report) = Wal::open(dir.path(), CRASH_OPTIONS, |_, _, p| {
            let text = String::from_utf8(p.to_vec()).expect("intact payload");
            seen.push(text.split('|').next().unwrap_or_default().to_owned());
        })
        .unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed: {e}"));
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "cycle {cycle}: a record was replayed twice");
        let missing: Vec<_> = all_acked.iter().filter(|id| !unique.contains(id)).take(5).collect();
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged but lost: {missing:?} ({report:?})");
        assert!(started.elapsed() < Duration::from_secs(60), "recovery finished");
    }
    assert!(all_acked.len() > 1000, "the child made progress: {} acks", all_acked.len());
}
