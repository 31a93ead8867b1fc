//! Test hooks compiled into the real binary: named points where an
//! end-to-end test can crash the process, hold a thread, or make it panic.
//!
//! Each is switched on by an environment variable and costs one comparison
//! otherwise. They exist because the failures they stand for (a power cut
//! between two steps, a slow disk, a bug that panics a shard writer) cannot be
//! produced on demand from outside the process, and a test that waits for
//! them by timing would depend on the machine's speed.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable that names a [`crash_point`] to die at.
pub const CRASH_AT_VARIABLE: &str = "PATRON_CRASH_AT";

/// A named step of a multi-step durable change (a snapshot, an erasure).
/// When the environment variable [`CRASH_AT_VARIABLE`] names this step, the
/// process aborts here: no destructor runs and nothing more is written, as
/// with `kill -9` at that instant. Tests on the real file system use it to
/// crash between every pair of steps; otherwise it does nothing.
pub fn crash_point(name: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_VARIABLE).ok()).as_deref() == Some(name) {
        eprintln!("patron: crashing at {name} ({CRASH_AT_VARIABLE})");
        std::process::abort();
    }
}

/// The environment variable that names a [`pause_point`] and a file:
/// `<point>:<path>`.
pub const PAUSE_AT_VARIABLE: &str = "PATRON_PAUSE_AT";

/// A named step where a test can hold the process: when the environment
/// variable [`PAUSE_AT_VARIABLE`] is `<name>:<path>`, the thread waits here
/// while the file at `<path>` exists, and `<path>.paused` exists while it
/// waits. Tests use it to hold the log writer, so that queues fill up
/// deterministically instead of by the machine's speed, or a shard writer
/// inside its lock; otherwise it does nothing.
pub fn pause_point(name: &str) {
    static PAUSE_AT: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    let pause = PAUSE_AT.get_or_init(|| gated_point(PAUSE_AT_VARIABLE));
    if let Some((point, path)) = pause
        && point == name
        && path.exists()
    {
        // `<path>.paused` tells the test that a thread is held here.
        let marker = PathBuf::from(format!("{}.paused", path.display()));
        let _ = std::fs::write(&marker, name);
        while path.exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&marker);
    }
}

/// The environment variable that names a [`fail_point`] and a file:
/// `<point>:<path>`.
pub const FAIL_AT_VARIABLE: &str = "PATRON_FAIL_AT";

/// A named step where a test can make the thread panic, as a bug would: when
/// the environment variable [`FAIL_AT_VARIABLE`] is `<name>:<path>`, the
/// thread panics here while the file at `<path>` exists. Tests use it to
/// check that a panicking shard writer stops ingest instead of answering for
/// part of a request; otherwise it does nothing.
pub fn fail_point(name: &str) {
    static FAIL_AT: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    if let Some((point, path)) = FAIL_AT.get_or_init(|| gated_point(FAIL_AT_VARIABLE))
        && point == name
        && path.exists()
    {
        panic!("a failure injected at {name} ({FAIL_AT_VARIABLE})");
    }
}

/// `<point>:<path>` from the environment variable `variable`.
fn gated_point(variable: &str) -> Option<(String, PathBuf)> {
    let value = std::env::var(variable).ok()?;
    let (point, path) = value.split_once(':')?;
    Some((point.to_owned(), PathBuf::from(path)))
}
