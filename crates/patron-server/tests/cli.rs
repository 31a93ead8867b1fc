//! The `patron` binary: `--help` for every command and one grammar for its flags.
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

/// Runs `patron` with `args`; returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_patron")).args(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn durations_and_sizes_take_one_form_on_every_command() {
    // A malformed value is refused before anything starts, naming the flag.
    for (args, flag) in [
        (&["demo", "--duration", "10 parsecs"][..], "--duration"),
        (&["loadgen", "--duration", "soon"][..], "--duration"),
        (&["serve", "--refit-interval", "often"][..], "--refit-interval"),
        (&["serve", "--sql-timeout=-1s"][..], "--sql-timeout"),
        (&["serve", "--body-limit", "huge"][..], "--body-limit"),
        (&["serve", "--max-inflight-bytes", "0"][..], "--max-inflight-bytes"),
        (&["serve", "--http", "8080"][..], "--http"),
        (&["query", "--url", "ftp://host:21", "SELECT 1"][..], "--url"),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?} was not refused:\n{stderr}");
        assert!(stderr.contains(flag), "{args:?}: the refusal does not name {flag}:\n{stderr}");
    }
}

#[test]
fn demo_accepts_a_duration_with_a_unit_regression_issue_13() {
    // `demo --duration 10s` was refused while `loadgen --duration 10s` was
    // accepted. A one-second demo on ephemeral ports now runs to the end.
    let dir = std::env::temp_dir().join(format!("patron-cli-demo-{}", std::process::id()));
    let data = dir.join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["demo", "--duration", "1s", "--rate", "200", "--customers", "100", "--serve-after", "false"])
        .args(["--http", "127.0.0.1:0", "--pg", "localhost:0", "--flight", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // The last frame is printed after the server stopped: no curl lines for it.
    let last_frame = stdout.rsplit("Patron demo").next().unwrap_or_default();
    assert!(!last_frame.contains("curl -s"), "the last frame offers curl lines for a stopped server:\n{last_frame}");
    assert!(last_frame.contains("patron serve --data-dir"), "{last_frame}");
}

#[test]
fn query_refuses_a_data_dir_that_does_not_exist_regression_issue_13() {
    let missing = std::env::temp_dir().join(format!("patron-no-such-dir-{}", std::process::id()));
    let (code, stderr) = run(&["query", "--data-dir", missing.to_str().unwrap(), "SELECT count(*) FROM customers"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");
    assert!(!missing.exists(), "the refused query created {}", missing.display());

    // An existing directory without Patron data is refused too, and left as it was.
    let empty = tempfile_dir("patron-empty-dir");
    let (code, stderr) = run(&["query", "--data-dir", empty.to_str().unwrap(), "SELECT 1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a Patron data directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "the refused query wrote into {}", empty.display());
    let _ = std::fs::remove_dir_all(&empty);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
