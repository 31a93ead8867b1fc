//! The allocator of every Patron process (the server, the benchmarks): one
//! definition, so that what the benchmarks measure is what production runs.
//!
//! mimalloc, because the decoders and the scoring kernels allocate many small
//! objects across threads, where it is measurably faster than the system
//! allocator.
//!
//! One setting differs from mimalloc's defaults. By default mimalloc purges
//! freed memory by *decommitting* it (`MADV_DONTNEED`), so the next
//! allocation that reuses it faults and the kernel zeroes every page again.
//! Patron frees and reallocates large buffers all the time (request bodies,
//! snapshot blocks, restore temporaries), and that re-zeroing was the largest
//! single cost of a restart. [`configure`] makes a purge *reset* the memory
//! instead (`MADV_FREE`): the kernel still takes the pages back when it needs
//! them, and until then reusing them costs nothing. Measured with
//! `sql_capacity` at 3M customers on the 2-core VM: restart 4.50 → 3.02 s,
//! snapshot 1.39 → 0.75 s (`bench-results/sql/NOTES.md`).
//!
//! An operator's own `MIMALLOC_PURGE_DECOMMITS` environment variable wins.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// mimalloc's `mi_option_purge_decommits` (the same index in its v2 and v3 headers).
const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Applies Patron's allocator settings. Call it first thing in `main`, before
/// any thread starts.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` writes one option slot without synchronisation;
    // `configure` runs at the top of `main`, before any other thread exists,
    // and the option is a plain integer that mimalloc reads on each purge.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DECOMMITS, 0);
    }
}

/// Whether a purge resets (not decommits) freed memory in this process.
pub fn purges_by_reset() -> bool {
    // SAFETY: reading an option is a plain load of an initialised slot.
    #[allow(unsafe_code)]
    let decommits = unsafe { libmimalloc_sys::mi_option_get(PURGE_DECOMMITS) };
    decommits == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_makes_purges_reset_memory() {
        configure();
        assert_eq!(purges_by_reset(), std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none_or(|v| v == "0"));
    }
}
