//! Write-ahead log group commit (DESIGN.md §7): how many durable records and
//! bytes per second one writer sustains when producers submit without waiting,
//! so that many records share one fdatasync.
//!
//! - `wal/submit_10k_x1KiB`: 10,000 records of 1 KiB submitted back to back,
//!   timed until the last is durable (≈ 10 MiB, ≈ 10 fdatasyncs at the 1 MiB
//!   batch limit).
//! - `wal/append_one_1KiB`: a single blocking append: one fdatasync, the
//!   latency floor of an acknowledged write.
//!
//! Runs in a temporary directory on the same filesystem as `$TMPDIR`.
//! Run: `cargo bench -p patron-benches --bench wal` (or `benches/record.sh wal`).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use patron_wal::{Wal, WalOptions};

use patron_alloc as _;

const RECORDS: usize = 10_000;
const PAYLOAD: usize = 1024;

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = WalOptions { segment_bytes: 256 << 20, queue_depth: RECORDS, ..WalOptions::default() };
    let (wal, _) = Wal::open(dir.path(), options, |_, _, _| {}).expect("open log");
    let mut group = c.benchmark_group("wal");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((RECORDS * PAYLOAD) as u64));
    group.bench_function("submit_10k_x1KiB", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam::channel::bounded(1);
            let remaining = Arc::new(AtomicUsize::new(RECORDS));
            for _ in 0..RECORDS {
                let (remaining, tx) = (remaining.clone(), tx.clone());
                wal.submit(vec![7u8; PAYLOAD], 1, move |r| {
                    r.expect("durable");
                    if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = tx.send(());
                    }
                })
                .expect("queue has room");
            }
            rx.recv().expect("all durable");
        });
        // Keep the log from growing across iterations.
        let next = wal.append(vec![0u8; 8], 1).expect("append").first_seq;
        wal.truncate_before(next).expect("truncate");
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_one_1KiB", |b| {
        b.iter(|| wal.append(black_box(vec![7u8; PAYLOAD]), 1).expect("durable"))
    });
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
