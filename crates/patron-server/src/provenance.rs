//! Where a recorded result came from: the commit and the machine, written
//! into every JSON result (eval-recs, loadgen) so anyone can rerun it.

use serde_json::json;

/// The commit being measured: `$PATRON_COMMIT`, else `git rev-parse` in the
/// current directory, else "unknown".
pub(crate) fn commit() -> String {
    std::env::var("PATRON_COMMIT").ok().filter(|c| !c.is_empty()).unwrap_or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    })
}

/// Cores, memory and CPU model, for the record.
pub(crate) fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok()))
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_bytes": memory_kib * 1024,
        "cpu": cpu,
    })
}
