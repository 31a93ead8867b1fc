//! The status page at `/` in a real browser: Debian's headless Chromium driven
//! by Playwright from the project's `.venv` (both installed by `tests/run`).
//! The page must fill itself from the live endpoints while the demo streams,
//! and honour auth like every other read endpoint.

use std::path::PathBuf;
use std::process::Command;

use patron_tests::{Server, patron_binary, python, workspace_root};
use serde_json::Value;

/// Runs `tests/clients/status_page.py` on `url`; returns what it read off the
/// page. The screenshot goes next to the `patron` binary, for a person to look at.
fn look_at(url: &str, screenshot_name: &str, token: Option<&str>, wait_fitted: bool) -> (Value, PathBuf) {
    let screenshot = patron_binary().with_file_name(screenshot_name);
    let _ = std::fs::remove_file(&screenshot);
    let script = workspace_root().join("tests/clients/status_page.py");
    let mut command = Command::new(python());
    command.arg(&script).arg(url).arg(&screenshot);
    if wait_fitted {
        command.env("PATRON_PAGE_WAIT_FITTED", "1");
    }
    if let Some(token) = token {
        command.arg(token);
    }
    let output = command.output().expect("python runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "status_page.py failed:\n{stdout}\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (seen, screenshot)
}

fn assert_filled_in(seen: &Value, pg_port: u16) {
    assert_eq!(seen["status"], 200, "{seen}");
    for live in ["events_per_second", "events_accepted", "customers", "products"] {
        assert!(seen[live].as_f64().is_some_and(|v| v > 0.0), "{live} is not a positive number: {seen}");
    }
    assert_eq!(seen["health"], "ready", "{seen}");
    assert!(seen["segments"].as_u64().is_some_and(|n| n >= 1), "no segment bars: {seen}");
    assert!(seen["tiers"].as_u64().is_some_and(|n| n >= 1), "no value-tier bars: {seen}");
    assert_eq!(seen["histogram_bins"], 25, "24 bins up to the 99th percentile and one above: {seen}");
    assert!(seen["fitted_models"].as_u64().is_some_and(|n| n >= 1), "no model parameters: {seen}");
    assert!(seen["freshest_rows"].as_u64().is_some_and(|n| n >= 1), "no freshest customers: {seen}");
    let try_lines = seen["try_lines"].as_str().unwrap_or_default();
    assert!(try_lines.contains(&format!("psql -h 127.0.0.1 -p {pg_port} ")), "{try_lines}");
    assert!(try_lines.contains("/v1/customers/") && !try_lines.contains("<customer id>"), "{try_lines}");
    assert_eq!(seen["error_box_visible"], false, "{seen}");
    assert_eq!(seen["script_errors"], serde_json::json!([]), "{seen}");
}

fn assert_is_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "{} is not a real screenshot",
        path.display()
    );
}

#[test]
fn status_page_shows_live_numbers_while_the_demo_streams() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Server::start_demo(
        &dir.path().join("data"),
        &["--duration", "3m", "--rate", "2000", "--customers", "5000", "--serve-after", "false"],
    );
    // The demo refits every 10 s: the page then shows fitted models and segments.
    let (seen, screenshot) = look_at(&format!("{}/", demo.url), "status-page-demo.png", None, true);
    assert_filled_in(&seen, demo.pg.port());
    assert_eq!(seen["models"], "fitted", "{seen}");
    assert!(seen["fitted_models"].as_u64().is_some_and(|n| n >= 4), "bgnbd, mbgnbd, pareto_nbd, gamma_gamma: {seen}");
    assert_is_png(&screenshot);
    println!("screenshot: {}", screenshot.display());
}

const QUERY: &str = "status-page-query-token";
const INGEST: &str = "status-page-ingest-token";

#[test]
fn status_page_needs_a_query_token_when_tokens_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("patron.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\ntoken = \"{QUERY}\"\nroles = [\"query\"]\n[[auth.tokens]]\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n"
        ),
    )
    .unwrap();
    let server =
        Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap(), "--refit-interval", "1s"]);
    let page = format!("{}/", server.url);

    let refused = ureq::get(&page).call();
    let Err(ureq::Error::Status(401, response)) = refused else { panic!("no 401 without a token: {refused:?}") };
    let challenge = response.header("www-authenticate").unwrap_or_default().to_owned();
    assert!(challenge.starts_with("Basic "), "a browser prompts only on a Basic challenge: {challenge:?}");
    let forbidden = ureq::get(&page).set("authorization", &format!("Bearer {INGEST}")).call();
    assert!(matches!(forbidden, Err(ureq::Error::Status(403, _))), "an ingest token may not read: {forbidden:?}");
    let html = ureq::get(&page).set("authorization", &format!("Bearer {QUERY}")).call().unwrap();
    assert_eq!(html.content_type(), "text/html");
    let html = html.into_string().unwrap();
    assert!(html.contains(&format!("content=\"{}\"", server.pg)), "the psql line's address is filled in");

    // Some purchases, then the page in the browser, signed in as a browser does (Basic).
    let events: String = (0..400)
        .map(|i| {
            format!(
                "{{\"type\":\"purchase\",\"event_id\":\"e{i}\",\"customer_id\":\"c{}\",\"timestamp\":\"2026-0{}-1{}T10:00:00Z\",\"currency\":\"EUR\",\"items\":[{{\"product_id\":\"p{}\",\"quantity\":1,\"price\":\"{}.50\"}}]}}\n",
                i % 60,
                1 + i % 9,
                i % 10,
                i % 13,
                10 + i % 7
            )
        })
        .collect();
    let posted = ureq::post(&format!("{}/v1/events", server.url))
        .set("authorization", &format!("Bearer {INGEST}"))
        .set("content-type", "application/x-ndjson")
        .send_string(&events)
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert_eq!(posted["accepted"], 400, "{posted}");
    // Without credentials the browser gets the challenge and no page.
    let (without, _) = look_at(&page, "status-page-refused.png", None, false);
    let refused = without["navigation_error"].as_str().unwrap_or_default();
    assert!(without["status"] == 401 || refused.contains("ERR_INVALID_AUTH_CREDENTIALS"), "{without}");
    let (seen, screenshot) = look_at(&page, "status-page-auth.png", Some(QUERY), false);
    assert_eq!(seen["status"], 200, "{seen}");
    assert!(seen["customers"].as_f64() == Some(60.0), "{seen}");
    assert!(seen["freshest_rows"].as_u64().is_some_and(|n| n >= 1), "{seen}");
    assert_eq!(seen["error_box_visible"], false, "{seen}");
    assert_is_png(&screenshot);
}
