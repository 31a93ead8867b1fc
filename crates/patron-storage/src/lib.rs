//! The storage seam: every byte Patron makes durable goes through [`Storage`].
//!
//! Why a seam: a test that kills the process with SIGKILL leaves the page
//! cache intact, so it cannot tell a byte that was written from one that was
//! synced. A missing `fdatasync`, or a missing directory sync after a file is
//! created or renamed, passes such a test and loses acknowledged data at the
//! first power cut. With the log and snapshot code written against this
//! trait, [`SimDisk`] can run the real code on a disk that keeps written
//! bytes apart from synced ones (per file and per directory entry), tears
//! unsynced writes at sector boundaries when the power goes, and fails any
//! call on request. [`RealDisk`] is the operating system's file system.
//!
//! The trait is small on purpose: it offers only what the log and the
//! snapshots use, so that the simulation has little to get wrong.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub mod hooks;
pub mod sim;

pub use hooks::{CRASH_AT_VARIABLE, FAIL_AT_VARIABLE, PAUSE_AT_VARIABLE, crash_point, fail_point, pause_point};
pub use sim::{Fault, SimDisk};

/// A file opened for writing.
pub trait StorageFile: Send + Sync + Debug {
    /// Writes all of `buf` at `offset` (the file grows as needed).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the file's length (zero-filled when it grows).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
}

/// A directory lock, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _held: Box<dyn Debug + Send + Sync>,
}

/// The file system operations durable state needs.
///
/// A file's new directory entry (from [`Storage::create_new`] or
/// [`Storage::rename`]) and a removal survive a power loss only once its
/// directory is synced ([`Storage::sync_dir`]); a file's bytes only once the
/// file is synced.
pub trait Storage: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new, empty file; an existing one is an error.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for writing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The paths of the files directly in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` durable (creations, renames, removals).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of `path` (created if missing) for this
    /// process; `None` while another holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<DirLock>>;
}

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile(File);

impl StorageFile for RealFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Storage for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        read_in_parallel(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?.map(|entry| entry.map(|e| e.path())).collect()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<DirLock>> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock { _held: Box::new(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Files at least this big are read in [`READ_PIECES`] pieces at once.
const PARALLEL_READ_BYTES: usize = 16 << 20;

/// Pieces a big file is read in, each on its own thread.
const READ_PIECES: usize = 4;

/// Reads a whole file; a big one (a snapshot) in pieces on parallel threads.
/// Most of the cost of reading a big file is the kernel handing the buffer
/// fresh pages on first touch, not the copy; one thread per piece shares that
/// out. A buffer this big comes from fresh pages, which the allocator knows
/// are zero and leaves unwritten, so the reads are the first touch.
fn read_in_parallel(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
    if len < PARALLEL_READ_BYTES {
        return std::fs::read(path);
    }
    let mut body = vec![0u8; len];
    let piece = len.div_ceil(READ_PIECES).max(1);
    std::thread::scope(|scope| {
        let readers: Vec<_> = body
            .chunks_mut(piece)
            .enumerate()
            .map(|(i, bytes)| {
                let file = &file;
                scope.spawn(move || file.read_exact_at(bytes, (i * piece) as u64))
            })
            .collect();
        readers
            .into_iter()
            .try_for_each(|reader| reader.join().unwrap_or_else(|_| Err(io::Error::other("a reading thread panicked"))))
    })?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_disk_creates_lists_renames_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        let sub = dir.path().join("a/b");
        disk.create_dir_all(&sub).unwrap();
        let file = disk.create_new(&sub.join("x")).unwrap();
        file.set_len(8).unwrap();
        file.write_all_at(b"hi", 2).unwrap();
        file.sync_data().unwrap();
        assert!(disk.create_new(&sub.join("x")).is_err(), "create_new refuses an existing file");
        disk.rename(&sub.join("x"), &sub.join("y")).unwrap();
        disk.sync_dir(&sub).unwrap();
        assert_eq!(disk.read(&sub.join("y")).unwrap(), b"\0\0hi\0\0\0\0");
        assert_eq!(disk.list(&sub).unwrap(), [sub.join("y")]);
        let lock = disk.try_lock(&sub.join("LOCK")).unwrap();
        assert!(lock.is_some());
        disk.remove_file(&sub.join("y")).unwrap();
        assert!(disk.read(&sub.join("y")).is_err());
    }

    #[test]
    fn a_big_file_read_in_parallel_pieces_is_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes: Vec<u8> = (0..PARALLEL_READ_BYTES + 12_345).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert!(RealDisk.read(&path).unwrap() == bytes);
    }
}
