//! `patron demo`: the README's main command, shortened.

use patron_tests::{EPHEMERAL_LISTENERS, Server, patron, transcript};

#[test]
fn demo_streams_a_synthetic_shop_durably_and_prints_how_to_query_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec!["demo", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(&EPHEMERAL_LISTENERS);
    args.extend_from_slice(&["--duration", "4s", "--rate", "1000", "--customers", "3000", "--serve-after", "false"]);
    let output = patron(&args);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    for expected in [
        "events/s",
        "customers",
        "top CLV",
        "curl -s http://127.0.0.1:",
        "/v1/customers/",
        "/v1/sql",
        "psql -h 127.0.0.1 -p ",
        // Halfway through, it runs a campaign and prints its results at the end.
        "campaign demo-winback: ",
        "  treatment ",
        "  control ",
        "incremental revenue",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // What the demo streamed is durable: a server on the same directory has it.
    let server = Server::start(&data, &["--refit-interval", "3600"]);
    let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_string().unwrap();
    // The demo snapshots on exit, so recovery loads customers rather than replaying events.
    let customers: f64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("patron_shard_customers{"))
        .filter_map(|l| l.split("} ").nth(1))
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    assert!(customers >= 500.0, "{customers} customers recovered:\n{metrics}");
    let (status, campaign) = patron_tests::get_json(&format!("{}/v1/campaigns/demo-winback", server.url));
    assert_eq!(status, 200, "the demo's campaign is durable: {campaign}");
    assert!(campaign["members"].as_u64().unwrap() > 0, "{campaign}");
}
