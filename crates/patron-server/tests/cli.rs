//! The `patron` binary answers `--help` for every command.
//!
//! Also the reason this package has an integration test at all: it makes
//! `cargo test --workspace` build the `patron` binary with the same features as
//! every test, so the end-to-end tests (package `patron-tests`) find it next to
//! their own executables instead of building it again with another feature set.

use std::process::Command;

#[test]
fn every_command_has_help() {
    let patron = env!("CARGO_BIN_EXE_patron");
    let top = Command::new(patron).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    for command in ["score", "serve", "demo", "replay", "query", "eval-recs", "loadgen"] {
        assert!(text.contains(command), "`patron --help` lacks {command}:\n{text}");
        let help = Command::new(patron).args([command, "--help"]).output().unwrap();
        assert!(help.status.success() && !help.stdout.is_empty(), "`patron {command} --help` failed");
    }
}
