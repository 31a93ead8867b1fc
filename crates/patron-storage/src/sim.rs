//! A simulated disk for tests: what a power cut keeps, and what it does not.
//!
//! The model, after Vector's disk-buffer model tests and TigerBeetle's
//! simulator:
//! - Every file has the bytes the process sees and the bytes that are
//!   durable. A file sync makes the first the second.
//! - Every directory has the entries the process sees and the entries that
//!   are durable. A directory sync makes the first the second. A file whose
//!   entry is not durable is gone after a power cut, whatever its bytes.
//! - At a power cut ([`SimDisk::power_loss`]), each write (or length change)
//!   since the file's last sync independently survives whole, is lost, or is
//!   torn at a 512-byte sector boundary, as a seeded generator decides. So
//!   later writes may survive where earlier ones did not, as on a real disk.
//! - Any call can fail: [`SimDisk::fail_nth`] fails one operation with EIO or
//!   ENOSPC; [`SimDisk::die_after`] fails every operation after a number of
//!   them, which is how a test stops the process at any step before cutting
//!   the power.
//! - Directories are created durable (the code under test creates its
//!   directories once; their syncs are not what it tests).
//!
//! Handles opened before a power cut fail with EIO afterwards: the process
//! that held them is gone. [`SimDisk::process_crash`] is the other kind of
//! crash: the process dies (SIGKILL) but the machine does not, so everything
//! written stays.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{DirLock, Storage, StorageFile};

/// Sector size at which unsynced writes tear.
pub const SECTOR: u64 = 512;

/// An injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An I/O error (EIO).
    Io,
    /// No space left on the device (ENOSPC).
    NoSpace,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Io => io::Error::from_raw_os_error(5),
            Fault::NoSpace => io::Error::from_raw_os_error(28),
        }
    }
}

/// A change to a file since its last sync.
#[derive(Clone, Debug)]
enum Unsynced {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    visible: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, SimFile>,
    next_inode: u64,
    visible: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: HashSet<PathBuf>,
    /// Power cuts so far; handles of an earlier generation are dead.
    generation: u64,
    operations: u64,
    fail_at: Option<(u64, Fault)>,
    die_at: Option<u64>,
    rng: u64,
}

impl State {
    /// Counts one operation and says whether it fails.
    fn operate(&mut self) -> io::Result<()> {
        let n = self.operations;
        self.operations += 1;
        if self.die_at.is_some_and(|d| n >= d) {
            return Err(Fault::Io.error());
        }
        if let Some((at, fault)) = self.fail_at
            && at == n
        {
            self.fail_at = None;
            return Err(fault.error());
        }
        Ok(())
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, good enough to pick fates.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        self.visible.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn dir_exists(&self, dir: &Path) -> io::Result<()> {
        if self.dirs.contains(dir) { Ok(()) } else { Err(not_found(dir)) }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

/// A simulated disk shared by every handle to it; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk; `seed` decides the fate of unsynced writes at power cuts.
    pub fn new(seed: u64) -> Self {
        let state = State { rng: seed | 1, ..State::default() };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Operations so far (every call but reads and listings).
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Fails the operation `n` operations from now (0: the next one) once.
    pub fn fail_nth(&self, n: u64, fault: Fault) {
        let mut state = self.lock();
        state.fail_at = Some((state.operations + n, fault));
    }

    /// Lets `n` more operations succeed, then fails every one after them
    /// (with EIO) until [`Self::power_loss`].
    pub fn die_after(&self, n: u64) {
        let mut state = self.lock();
        state.die_at = Some(state.operations + n);
    }

    /// Cuts the power: every directory keeps only its durable entries, every
    /// file its durable bytes plus whatever of its unsynced writes survive
    /// (whole, lost or torn at a sector boundary, independently), locks are
    /// released, open handles die, and injected failures are cleared.
    pub fn power_loss(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut inodes: Vec<u64> = state.files.keys().copied().collect();
        inodes.sort_unstable();
        for inode in inodes {
            let Some(file) = state.files.get(&inode).cloned() else { continue };
            let mut kept = file.durable.clone();
            for change in &file.unsynced {
                let fate = state.next_random() % 3;
                match change {
                    Unsynced::SetLen(len) if fate != 0 => kept.resize(*len as usize, 0),
                    Unsynced::SetLen(_) => {}
                    Unsynced::Write { offset, bytes } => {
                        let end = offset + bytes.len() as u64;
                        let cut = match fate {
                            0 => *offset,
                            1 => end,
                            _ => {
                                // A sector boundary strictly inside the write, if there is one.
                                let first = offset.div_ceil(SECTOR) * SECTOR;
                                let boundaries = if end > first { (end - 1 - first) / SECTOR + 1 } else { 0 };
                                if boundaries == 0 {
                                    *offset
                                } else {
                                    (first + (state.next_random() % boundaries) * SECTOR).min(end)
                                }
                            }
                        };
                        if cut > *offset {
                            write_into(&mut kept, *offset, &bytes[..(cut - offset) as usize]);
                        }
                    }
                }
            }
            if let Some(f) = state.files.get_mut(&inode) {
                *f = SimFile { visible: kept.clone(), durable: kept, unsynced: Vec::new() };
            }
        }
        state.visible = state.durable.clone();
        let live: HashSet<u64> = state.visible.values().copied().collect();
        state.files.retain(|inode, _| live.contains(inode));
        state.locks.clear();
        state.generation += 1;
        state.fail_at = None;
        state.die_at = None;
    }

    /// The process dies without the power going (SIGKILL): everything written
    /// stays visible, locks are released, open handles die, and injected
    /// failures are cleared.
    pub fn process_crash(&self) {
        let mut state = self.lock();
        state.locks.clear();
        state.generation += 1;
        state.fail_at = None;
        state.die_at = None;
    }

    /// The durable content of `path` (what a power cut now would keep of it,
    /// before tearing), if its entry is durable.
    pub fn durable_content(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.durable.get(path)?;
        state.files.get(inode).map(|f| f.durable.clone())
    }
}

#[derive(Debug)]
struct SimHandle {
    disk: SimDisk,
    inode: u64,
    generation: u64,
}

impl SimHandle {
    fn with_file<T>(&self, f: impl FnOnce(&mut SimFile) -> T) -> io::Result<T> {
        let mut state = self.disk.lock();
        state.operate()?;
        if state.generation != self.generation {
            return Err(Fault::Io.error());
        }
        // A removed file stays writable through its handle, as on Unix.
        let file = state.files.entry(self.inode).or_default();
        Ok(f(file))
    }
}

impl StorageFile for SimHandle {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with_file(|file| {
            write_into(&mut file.visible, offset, buf);
            file.unsynced.push(Unsynced::Write { offset, bytes: buf.to_vec() });
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_file(|file| {
            file.visible.resize(len as usize, 0);
            file.unsynced.push(Unsynced::SetLen(len));
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_file(|file| {
            file.durable = file.visible.clone();
            file.unsynced.clear();
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock();
        state.operate()?;
        state.dir_exists(path.parent().unwrap_or(Path::new("")))?;
        if state.visible.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.files.insert(inode, SimFile::default());
        state.visible.insert(path.to_path_buf(), inode);
        let generation = state.generation;
        Ok(Box::new(SimHandle { disk: self.clone(), inode, generation }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock();
        state.operate()?;
        let inode = state.inode(path)?;
        let generation = state.generation;
        Ok(Box::new(SimHandle { disk: self.clone(), inode, generation }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let inode = state.inode(path)?;
        Ok(state.files.get(&inode).map(|f| f.visible.clone()).unwrap_or_default())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.lock();
        state.dir_exists(dir)?;
        Ok(state.visible.keys().filter(|p| p.parent() == Some(dir)).cloned().collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        let inode = state.inode(from)?;
        state.dir_exists(to.parent().unwrap_or(Path::new("")))?;
        state.visible.remove(from);
        state.visible.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        state.inode(path)?;
        state.visible.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        state.dir_exists(dir)?;
        let state = &mut *state;
        state.durable.retain(|p, _| p.parent() != Some(dir));
        for (path, inode) in state.visible.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            state.durable.insert(path.clone(), *inode);
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<DirLock>> {
        let mut state = self.lock();
        state.dir_exists(path.parent().unwrap_or(Path::new("")))?;
        if !state.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        let generation = state.generation;
        Ok(Some(DirLock { _held: Box::new(SimLock { disk: self.clone(), path: path.to_path_buf(), generation }) }))
    }
}

/// Releases a simulated lock when dropped (unless a power cut already did).
#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.disk.lock();
        if state.generation == self.generation {
            state.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_dir() -> (SimDisk, PathBuf) {
        let disk = SimDisk::new(7);
        let dir = PathBuf::from("/data");
        disk.create_dir_all(&dir).unwrap();
        (disk, dir)
    }

    #[test]
    fn synced_bytes_and_entries_survive_a_power_loss_and_unsynced_ones_need_not() {
        let (disk, dir) = disk_with_dir();
        let kept = disk.create_new(&dir.join("kept")).unwrap();
        kept.write_all_at(b"durable", 0).unwrap();
        kept.sync_data().unwrap();
        disk.sync_dir(&dir).unwrap();
        // An entry never synced: gone, whatever its bytes.
        let lost = disk.create_new(&dir.join("lost")).unwrap();
        lost.write_all_at(b"synced bytes, unsynced entry", 0).unwrap();
        lost.sync_data().unwrap();
        disk.power_loss();
        assert_eq!(disk.read(&dir.join("kept")).unwrap(), b"durable");
        assert!(disk.read(&dir.join("lost")).is_err());
        assert!(kept.write_all_at(b"x", 0).is_err(), "handles die with the power");
    }

    #[test]
    fn unsynced_writes_survive_whole_torn_at_a_sector_or_not_at_all() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            let dir = PathBuf::from("/d");
            disk.create_dir_all(&dir).unwrap();
            let file = disk.create_new(&dir.join("f")).unwrap();
            disk.sync_dir(&dir).unwrap();
            file.write_all_at(&[7u8; 1500], 100).unwrap();
            disk.power_loss();
            let data = disk.read(&dir.join("f")).unwrap();
            let written = data.iter().filter(|&&b| b == 7).count();
            // Whole (1500), none (0), or up to a sector boundary: 412, 924 or 1436 bytes from offset 100.
            assert!([0, 412, 924, 1436, 1500].contains(&written), "seed {seed}: {written}");
            outcomes.insert(written);
        }
        assert!(outcomes.len() >= 4, "every fate occurs: {outcomes:?}");
    }

    #[test]
    fn renames_and_removals_are_durable_only_after_a_directory_sync() {
        let (disk, dir) = disk_with_dir();
        let file = disk.create_new(&dir.join("tmp")).unwrap();
        file.write_all_at(b"v1", 0).unwrap();
        file.sync_all().unwrap();
        disk.sync_dir(&dir).unwrap();
        disk.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        disk.power_loss();
        assert_eq!(disk.list(&dir).unwrap(), [dir.join("tmp")], "the rename was not synced");
        disk.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        disk.sync_dir(&dir).unwrap();
        disk.remove_file(&dir.join("final")).unwrap();
        disk.power_loss();
        assert_eq!(disk.list(&dir).unwrap(), [dir.join("final")], "the removal was not synced");
    }

    #[test]
    fn injected_faults_fail_the_chosen_call_and_dying_fails_every_later_one() {
        let (disk, dir) = disk_with_dir();
        let file = disk.create_new(&dir.join("f")).unwrap();
        disk.fail_nth(1, Fault::NoSpace);
        file.write_all_at(b"a", 0).unwrap();
        let error = file.write_all_at(b"b", 1).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        file.sync_data().unwrap();
        disk.die_after(1);
        file.write_all_at(b"c", 2).unwrap();
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        assert!(disk.sync_dir(&dir).is_err());
        disk.power_loss();
        assert!(disk.create_new(&dir.join("g")).is_ok(), "a power cut clears the fault");
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped_or_the_power_goes() {
        let (disk, dir) = disk_with_dir();
        let lock = disk.try_lock(&dir.join("LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(disk.try_lock(&dir.join("LOCK")).unwrap().is_none());
        drop(lock);
        let again = disk.try_lock(&dir.join("LOCK")).unwrap();
        assert!(again.is_some());
        disk.power_loss();
        let after = disk.try_lock(&dir.join("LOCK")).unwrap();
        assert!(after.is_some(), "the power cut released it");
        drop(again); // from before the power cut: releases nothing
        assert!(disk.try_lock(&dir.join("LOCK")).unwrap().is_none());
        drop(after);
    }
}
