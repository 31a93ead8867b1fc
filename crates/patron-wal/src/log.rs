//! The write-ahead log: one writer thread doing group commit.
//!
//! Design constraints:
//! - **Acknowledged means durable.** A caller's completion runs only after the
//!   bytes of its record are written *and* `fdatasync`ed. Callers apply events
//!   to memory after that, so every state a query sees is backed by the log.
//! - **Group commit.** The writer takes every request waiting in the queue (up
//!   to `max_batch_bytes`), writes them, syncs once, then completes them all:
//!   one ~3–5 ms fsync serves hundreds of requests.
//! - **Fail-stop.** After any write or sync error the log accepts nothing more
//!   (fsync is never retried on the same file: the kernel may have dropped the
//!   dirty pages and a retry would falsely succeed).
//! - **Bounded queue.** [`Wal::submit`] never blocks: a full queue is
//!   [`WalError::Full`], which the HTTP layer turns into 429/503.
//! - **One process per directory**, enforced by a lock on `LOCK`.
//! - **Every durable byte goes through [`Storage`]**, so tests run this code
//!   on a simulated disk that loses unsynced bytes and directory entries at a
//!   power cut (`tests/power_loss.rs`).
//!
//! ```text
//! submit ─► bounded queue ─► writer: drain ─► encode ─► write_all_at ─► fdatasync ─► complete(seq range)
//!                                            └─ segment full: sync, create next (zero-filled), header, sync dir
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};
use patron_storage::{DirLock, RealDisk, Storage, StorageFile, pause_point};

use crate::frame::{
    SEGMENT_HEADER_LEN, encode_record, encode_segment_header, parse_segment_file_name, record_len, segment_file_name,
};
use crate::recover::{Tail, scan_segment};
use crate::{Result, WalError};

/// Tuning of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of every segment file.
    pub segment_bytes: u64,
    /// Most bytes written between two syncs.
    pub max_batch_bytes: usize,
    /// Requests that may wait for the writer.
    pub queue_depth: usize,
    /// How long to wait for the directory lock. A lock can outlive its holder
    /// by a moment: a process forked just before the holder closed its file
    /// keeps the lock until it execs.
    pub lock_wait: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self { segment_bytes: 64 << 20, max_batch_bytes: 1 << 20, queue_depth: 4096, lock_wait: Duration::from_secs(2) }
    }
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the record's first event.
    pub first_seq: u64,
    /// Events in the record.
    pub count: u32,
}

/// A torn tail found and removed at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset of the torn record.
    pub offset: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Why the record was invalid.
    pub reason: &'static str,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Segments not read because every record in them precedes the sequence
    /// number replay was asked to start from (a snapshot covers them).
    pub skipped_segments: usize,
    /// Records replayed.
    pub records: u64,
    /// Events in them.
    pub events: u64,
    /// The sequence number the next event will get.
    pub next_seq: u64,
    /// The torn tail that was dropped, if any.
    pub torn_tail: Option<TornTail>,
    /// Time spent reading the segments and replaying their records, µs.
    pub replay_micros: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WalStats {
    /// fdatasync calls.
    pub syncs: AtomicU64,
    /// Records written.
    pub records: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Total time spent in fdatasync, nanoseconds.
    pub sync_nanos: AtomicU64,
    /// The latest fdatasync, nanoseconds.
    pub last_sync_nanos: AtomicU64,
    /// The slowest fdatasync since start, nanoseconds.
    pub max_sync_nanos: AtomicU64,
}

type Completion = Box<dyn FnOnce(Result<Appended>) + Send>;

enum Request {
    Append { payload: Vec<u8>, count: u32, done: Completion },
    TruncateBefore { seq: u64, done: Box<dyn FnOnce(Result<usize>) + Send> },
    Roll { done: Box<dyn FnOnce(Result<u64>) + Send> },
}

/// The write-ahead log of one data directory.
pub struct Wal {
    queue: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
    max_payload: usize,
    _lock: DirLock,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("max_payload", &self.max_payload).finish_non_exhaustive()
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io { path: path.to_path_buf(), op, source }
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage.sync_dir(dir).map_err(io(dir, "fsync directory"))
}

fn create_segment(storage: &dyn Storage, dir: &Path, first_seq: u64, size: u64) -> Result<Box<dyn StorageFile>> {
    let path = dir.join(segment_file_name(first_seq));
    let file = storage.create_new(&path).map_err(io(&path, "create segment"))?;
    file.set_len(size).map_err(io(&path, "size segment"))?;
    file.write_all_at(&encode_segment_header(first_seq), 0).map_err(io(&path, "write segment header"))?;
    file.sync_all().map_err(io(&path, "fsync segment"))?;
    sync_dir(storage, dir)?;
    Ok(file)
}

impl Wal {
    /// Opens (or creates) the log in `dir`: takes the directory lock, replays
    /// every valid record through `replay(first_seq, count, payload)` in
    /// sequence order, drops a torn tail, then starts the writer.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        replay: impl FnMut(u64, u32, &[u8]),
    ) -> Result<(Self, RecoveryReport)> {
        Self::open_from(dir, options, 0, replay)
    }

    /// [`Self::open`], without reading the sealed segments whose records all
    /// precede `from_seq` (the next segment starts at or before it): after a
    /// snapshot that covers them, recovery reads only the log's tail, not
    /// every event ever logged. Records of the first segment read may still
    /// precede `from_seq`; `replay` sees them and skips them.
    pub fn open_from(
        dir: &Path,
        options: WalOptions,
        from_seq: u64,
        replay: impl FnMut(u64, u32, &[u8]),
    ) -> Result<(Self, RecoveryReport)> {
        Self::open_on(Arc::new(RealDisk), dir, options, from_seq, replay)
    }

    /// [`Self::open_from`] on the given storage (a simulated disk in tests).
    pub fn open_on(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: WalOptions,
        from_seq: u64,
        mut replay: impl FnMut(u64, u32, &[u8]),
    ) -> Result<(Self, RecoveryReport)> {
        storage.create_dir_all(dir).map_err(io(dir, "create directory"))?;
        let lock_path = dir.join("LOCK");
        let deadline = Instant::now() + options.lock_wait;
        let lock = loop {
            if let Some(lock) = storage.try_lock(&lock_path).map_err(io(&lock_path, "open lock"))? {
                break lock;
            }
            if Instant::now() >= deadline {
                return Err(WalError::Locked { dir: dir.to_path_buf() });
            }
            std::thread::sleep(Duration::from_millis(10));
        };

        let mut segments: Vec<(u64, PathBuf)> = storage
            .list(dir)
            .map_err(io(dir, "list directory"))?
            .into_iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_string_lossy().into_owned();
                parse_segment_file_name(&name).map(|s| (s, path))
            })
            .collect();
        segments.sort();

        let covered = segments.windows(2).take_while(|pair| pair[1].0 <= from_seq).count();
        let mut report = RecoveryReport {
            segments: segments.len() - covered,
            skipped_segments: covered,
            ..RecoveryReport::default()
        };
        let mut expected: Option<u64> = None;
        let mut tail_state: Option<(u64, PathBuf, u64)> = None; // (first_seq, path, valid_end)
        let replay_started = Instant::now();
        for (i, (first_seq, path)) in segments.iter().enumerate().skip(covered) {
            let bytes = storage.read(path).map_err(io(path, "read segment"))?;
            let is_last = i + 1 == segments.len();
            let scan = scan_segment(&bytes, *first_seq, expected, is_last).map_err(|c| WalError::Corrupt {
                segment: path.clone(),
                offset: c.offset as u64,
                reason: c.reason,
            })?;
            for r in &scan.records {
                replay(r.first_seq, r.count, r.payload);
                report.records += 1;
                report.events += u64::from(r.count);
            }
            expected = Some(scan.next_seq);
            if let Tail::Torn { offset, dropped_bytes, reason } = scan.tail {
                let file = storage.open_write(path).map_err(io(path, "open segment"))?;
                file.write_all_at(&vec![0; dropped_bytes], offset as u64).map_err(io(path, "zero torn tail"))?;
                file.sync_all().map_err(io(path, "fsync segment"))?;
                report.torn_tail = Some(TornTail {
                    segment: path.clone(),
                    offset: offset as u64,
                    dropped_bytes: dropped_bytes as u64,
                    reason,
                });
            }
            if is_last {
                let valid_end = if scan.tail == Tail::Blank {
                    let file = storage.open_write(path).map_err(io(path, "open segment"))?;
                    file.write_all_at(&encode_segment_header(*first_seq), 0)
                        .map_err(io(path, "write segment header"))?;
                    file.sync_all().map_err(io(path, "fsync segment"))?;
                    SEGMENT_HEADER_LEN as u64
                } else {
                    scan.valid_end as u64
                };
                tail_state = Some((*first_seq, path.clone(), valid_end));
            }
        }
        let next_seq = expected.unwrap_or(0);
        report.next_seq = next_seq;
        report.replay_micros = replay_started.elapsed().as_micros() as u64;

        let (segment_first, file, offset) = match tail_state {
            Some((first, path, end)) => {
                // What recovery found may be only in the page cache (a process
                // crash after the segment was created but before its directory
                // entry or header was synced): make it durable before anything
                // appended to it is acknowledged.
                let file = storage.open_write(&path).map_err(io(&path, "open segment"))?;
                file.sync_all().map_err(io(&path, "fsync segment"))?;
                sync_dir(&*storage, dir)?;
                (first, file, end)
            }
            None => {
                (next_seq, create_segment(&*storage, dir, next_seq, options.segment_bytes)?, SEGMENT_HEADER_LEN as u64)
            }
        };
        let stats = Arc::new(WalStats::default());
        let (tx, rx) = bounded(options.queue_depth);
        let mut writer = Writer {
            storage,
            dir: dir.to_path_buf(),
            options,
            file,
            segments: segments.iter().map(|(s, _)| *s).chain((segments.is_empty()).then_some(segment_first)).collect(),
            offset,
            next_seq,
            failed: None,
            stats: stats.clone(),
            buf: Vec::with_capacity(options.max_batch_bytes + 4096),
        };
        let handle = std::thread::Builder::new()
            .name("patron-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io(dir, "spawn writer"))?;
        let max_payload = options.segment_bytes as usize - SEGMENT_HEADER_LEN - record_len(0);
        Ok((Self { queue: Some(tx), writer: Some(handle), stats, max_payload, _lock: lock }, report))
    }

    /// Queues a record of `count` events without blocking; `done` runs on the
    /// writer thread once the record is durable (or failed). A full queue is
    /// [`WalError::Full`] and `done` is not called.
    pub fn submit(
        &self,
        payload: Vec<u8>,
        count: u32,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) -> Result<()> {
        if payload.is_empty() || count == 0 {
            return Err(WalError::Empty);
        }
        if payload.len() > self.max_payload {
            return Err(WalError::TooLarge { len: payload.len(), limit: self.max_payload });
        }
        let queue = self.queue.as_ref().ok_or(WalError::Closed)?;
        queue.try_send(Request::Append { payload, count, done: Box::new(done) }).map_err(|e| match e {
            TrySendError::Full(_) => WalError::Full,
            TrySendError::Disconnected(_) => WalError::Closed,
        })
    }

    /// Appends a record and waits until it is durable.
    pub fn append(&self, payload: Vec<u8>, count: u32) -> Result<Appended> {
        let (tx, rx) = bounded(1);
        if payload.is_empty() || count == 0 {
            return Err(WalError::Empty);
        }
        if payload.len() > self.max_payload {
            return Err(WalError::TooLarge { len: payload.len(), limit: self.max_payload });
        }
        let queue = self.queue.as_ref().ok_or(WalError::Closed)?;
        let done: Completion = Box::new(move |r| {
            let _ = tx.send(r);
        });
        queue.send(Request::Append { payload, count, done }).map_err(|_| WalError::Closed)?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Deletes whole segments whose events all precede `seq` (after a snapshot
    /// covers them). Returns how many were removed. The current segment stays.
    pub fn truncate_before(&self, seq: u64) -> Result<usize> {
        let (tx, rx) = bounded(1);
        let queue = self.queue.as_ref().ok_or(WalError::Closed)?;
        let done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        queue.send(Request::TruncateBefore { seq, done }).map_err(|_| WalError::Closed)?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Starts a new segment now: records appended after this call never share
    /// a segment file with records appended before it. Returns the new
    /// segment's first sequence number. (Erasure uses it so that truncation can
    /// remove every file that held an erased customer.)
    pub fn roll(&self) -> Result<u64> {
        let (tx, rx) = bounded(1);
        let queue = self.queue.as_ref().ok_or(WalError::Closed)?;
        let done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        queue.send(Request::Roll { done }).map_err(|_| WalError::Closed)?;
        rx.recv().map_err(|_| WalError::Closed)?
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// Largest payload one record can hold.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

impl Drop for Wal {
    /// Closes the queue; the writer finishes what is queued, then exits.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Writer {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: WalOptions,
    file: Box<dyn StorageFile>,
    /// First sequence number of every live segment, ascending; the last is current.
    segments: Vec<u64>,
    offset: u64,
    next_seq: u64,
    failed: Option<String>,
    stats: Arc<WalStats>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch_bytes(&batch[0]);
            while bytes < self.options.max_batch_bytes {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += batch_bytes(&r);
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let mut done: Vec<(Completion, Appended)> = Vec::with_capacity(batch.len());
        for request in batch {
            match request {
                // A failed roll or truncation stops the log like a failed write: a
                // half-created segment left behind and made durable by a later
                // directory sync would make every restart refuse the directory.
                Request::TruncateBefore { seq, done: reply } => {
                    let truncated = self.truncate_before(seq);
                    if let Err(e) = &truncated {
                        self.fail(e);
                    }
                    reply(truncated);
                }
                Request::Roll { done: reply } => {
                    let rolled = self.roll();
                    if let Err(e) = &rolled {
                        self.fail(e);
                    }
                    reply(rolled);
                }
                Request::Append { payload, count, done: reply } => {
                    if let Some(cause) = &self.failed {
                        reply(Err(WalError::FailStopped { cause: cause.clone() }));
                        continue;
                    }
                    if let Err(e) = self.encode(&payload, count) {
                        self.fail(&e);
                        reply(Err(e));
                        continue;
                    }
                    done.push((reply, Appended { first_seq: self.next_seq - u64::from(count), count }));
                }
            }
        }
        let result = self.flush_and_sync();
        if let Err(e) = &result {
            self.fail(e);
        }
        for (reply, appended) in done {
            reply(match &self.failed {
                None => Ok(appended),
                Some(cause) => Err(WalError::FailStopped { cause: cause.clone() }),
            });
        }
    }

    fn fail(&mut self, e: &WalError) {
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
        }
    }

    /// Encodes one record into the buffer, rolling to a new segment first if it does not fit.
    fn encode(&mut self, payload: &[u8], count: u32) -> Result<()> {
        let len = record_len(payload.len()) as u64;
        if self.offset + self.buf.len() as u64 + len > self.options.segment_bytes {
            self.flush_and_sync()?;
            self.file = create_segment(&*self.storage, &self.dir, self.next_seq, self.options.segment_bytes)?;
            self.segments.push(self.next_seq);
            self.offset = SEGMENT_HEADER_LEN as u64;
        }
        encode_record(&mut self.buf, self.next_seq, count, payload);
        self.next_seq += u64::from(count);
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush_and_sync(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(cause) = &self.failed {
            return Err(WalError::FailStopped { cause: cause.clone() });
        }
        let path = self.dir.join(segment_file_name(*self.segments.last().unwrap_or(&0)));
        pause_point("log-write");
        self.file.write_all_at(&self.buf, self.offset).map_err(io(&path, "write"))?;
        let started = Instant::now();
        self.file.sync_data().map_err(io(&path, "fdatasync"))?;
        let nanos = started.elapsed().as_nanos() as u64;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats.last_sync_nanos.store(nanos, Ordering::Relaxed);
        self.stats.max_sync_nanos.fetch_max(nanos, Ordering::Relaxed);
        self.stats.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn roll(&mut self) -> Result<u64> {
        if let Some(cause) = &self.failed {
            return Err(WalError::FailStopped { cause: cause.clone() });
        }
        self.flush_and_sync()?;
        if self.offset > SEGMENT_HEADER_LEN as u64 {
            self.file = create_segment(&*self.storage, &self.dir, self.next_seq, self.options.segment_bytes)?;
            self.segments.push(self.next_seq);
            self.offset = SEGMENT_HEADER_LEN as u64;
        }
        Ok(self.next_seq)
    }

    fn truncate_before(&mut self, seq: u64) -> Result<usize> {
        if let Some(cause) = &self.failed {
            return Err(WalError::FailStopped { cause: cause.clone() });
        }
        // Segment i holds [segments[i], segments[i + 1]); the last one is current.
        let removable = self.segments.windows(2).take_while(|w| w[1] <= seq).count();
        for first in self.segments.drain(..removable) {
            let path = self.dir.join(segment_file_name(first));
            self.storage.remove_file(&path).map_err(io(&path, "remove segment"))?;
        }
        if removable > 0 {
            sync_dir(&*self.storage, &self.dir)?;
        }
        Ok(removable)
    }
}

fn batch_bytes(r: &Request) -> usize {
    match r {
        Request::Append { payload, .. } => record_len(payload.len()),
        Request::TruncateBefore { .. } | Request::Roll { .. } => 0,
    }
}
