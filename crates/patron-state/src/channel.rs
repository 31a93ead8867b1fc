//! Acquisition channel names, interned for the whole process.
//!
//! Why: a customer's [`Summary`](crate::Summary) is a fixed-size `Copy` row
//! that SQL scans share, so it cannot hold a string. Channels are a short
//! vocabulary (`paid_search`, `referral`, `affiliate`…) named by many
//! customers, so each summary keeps a `u32` code, and a scan turns codes back
//! into names with one lookup per row. Codes are never written anywhere:
//! snapshots store the name, and a recovery interns it again, so codes may
//! differ between runs without harm. Names are not personal data, so erasing
//! a customer leaves the vocabulary as it is.

use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use hashbrown::HashMap;

/// "No channel" in a summary.
pub const NO_CHANNEL: u32 = 0;

#[derive(Default)]
struct Names {
    /// Name of code `i + 1`.
    by_code: Vec<Arc<str>>,
    codes: HashMap<Arc<str>, u32>,
}

static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(RwLock::default);

/// The code of `name` (1 or more), interning it on first use.
pub fn intern(name: &str) -> u32 {
    if let Some(&code) = NAMES.read().unwrap_or_else(PoisonError::into_inner).codes.get(name) {
        return code;
    }
    let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(&code) = names.codes.get(name) {
        return code;
    }
    let shared: Arc<str> = name.into();
    names.by_code.push(shared.clone());
    let code = u32::try_from(names.by_code.len()).unwrap_or(u32::MAX);
    names.codes.insert(shared, code);
    code
}

/// The name of `code`, `None` for [`NO_CHANNEL`].
pub fn name(code: u32) -> Option<Arc<str>> {
    with_names(|names| lookup(names, code).cloned())
}

/// Runs `f` with every name, indexed by code − 1 (one lock for a whole column).
pub fn with_names<T>(f: impl FnOnce(&[Arc<str>]) -> T) -> T {
    f(&NAMES.read().unwrap_or_else(PoisonError::into_inner).by_code)
}

/// The name of `code` among `names` (as [`with_names`] passes them).
pub fn lookup(names: &[Arc<str>], code: u32) -> Option<&Arc<str>> {
    code.checked_sub(1).and_then(|i| names.get(i as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_code_and_reads_back() {
        let code = intern("channel-test-referral");
        assert_ne!(code, NO_CHANNEL);
        assert_eq!(intern("channel-test-referral"), code);
        assert_ne!(intern("channel-test-paid_search"), code);
        assert_eq!(name(code).as_deref(), Some("channel-test-referral"));
        assert_eq!(name(NO_CHANNEL), None);
    }
}
