//! The crate dependency graph follows STYLE.md: data flows one way, and only
//! the SQL layer, the binary, the benches and these tests may compile DataFusion.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use patron_tests::workspace_root;

/// Allowed dependencies among workspace crates (normal and build edges).
const ALLOWED: &[(&str, &[&str])] = &[
    ("patron-alloc", &[]),
    ("patron-model", &[]),
    ("patron-score", &[]),
    ("patron-campaign", &[]),
    ("patron-storage", &[]),
    ("patron-wal", &["patron-storage"]),
    ("patron-workload", &["patron-model", "patron-score"]),
    ("patron-recs", &["patron-model", "patron-score"]),
    (
        "patron-state",
        &["patron-model", "patron-score", "patron-campaign", "patron-recs", "patron-storage", "patron-wal"],
    ),
    ("patron-ingest", &["patron-model", "patron-sources"]),
    ("patron-sources", &[]),
    ("patron-sql", &["patron-model", "patron-score", "patron-campaign", "patron-state"]),
    ("patron-loadgen", &["patron-workload"]),
    ("patron-cluster", &["patron-model", "patron-state"]),
    (
        "patron-server",
        &[
            "patron-alloc",
            "patron-model",
            "patron-score",
            "patron-campaign",
            "patron-wal",
            "patron-workload",
            "patron-state",
            "patron-ingest",
            "patron-sources",
            "patron-sql",
            "patron-loadgen",
            "patron-cluster",
        ],
    ),
];

const MAY_USE_DATAFUSION: &[&str] = &["patron-sql", "patron-server", "patron-benches", "patron-tests"];

#[test]
fn crate_dependencies_point_one_way() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect();
    let mut violations = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if dep["kind"].as_str() == Some("dev") {
                continue;
            }
            if dep_name == "datafusion" && !MAY_USE_DATAFUSION.contains(&name) {
                violations.push(format!("{name} depends on datafusion"));
            }
            if !dep_name.starts_with("patron-") {
                continue;
            }
            match allowed.get(name) {
                Some(ok) if ok.contains(dep_name) => {}
                Some(_) => violations.push(format!("{name} -> {dep_name} is not an allowed edge")),
                None if name == "patron-benches" || name == "patron-tests" => {}
                None => violations.push(format!("{name} is not in the layering table")),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
