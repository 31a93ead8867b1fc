//! Campaigns through a real `patron serve`: created over HTTP, answered by
//! response events, measured against a planted effect, and kept across a
//! kill -9; the tables read over `POST /v1/sql` (the `.slt` file) and psql.

use std::path::Path;
use std::process::Command;

use patron_tests::{Server, fixture, get_json, post_json, workspace_root};
use serde_json::{Value, json};

const SERVE: &[&str] = &["--currency", "EUR", "--refit-interval", "3600"];

fn post_events(server: &Server, lines: &[String]) {
    for chunk in lines.chunks(5_000) {
        let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &chunk.join("\n"));
        assert_eq!((status, body["accepted"].as_u64()), (200, Some(chunk.len() as u64)), "{body}");
    }
}

fn create(server: &Server, body: &Value) -> (u16, Value) {
    post_json(&format!("{}/v1/campaigns", server.url), "application/json", &body.to_string())
}

fn sql_csv(server: &Server, sql: &str) -> String {
    ureq::post(&format!("{}/v1/sql", server.url))
        .set("Accept", "text/csv")
        .send_string(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_string()
        .unwrap()
}

fn psql(server: &Server, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-h", &server.pg.ip().to_string(), "-p", &server.pg.port().to_string(), "-U", "analyst", "-d", "patron"])
        .args(["-X", "-w", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql is installed (tests/run installs postgresql-client)");
    assert!(output.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn slt_campaign() -> Value {
    json!({
        "campaign_id": "winback-slt", "name": "Win back, fixture", "channel": "email",
        "audience_sql": "SELECT customer_id FROM customers WHERE customer_id LIKE 'shopper-%'",
        "control_share": 0.3, "cost_per_contact": "0.05", "currency": "EUR",
        "starts_at": "2026-11-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"
    })
}

/// The fixture shop with campaign `winback-slt` and its responses and purchases.
fn campaign_server(dir: &Path) -> Server {
    let server = Server::start(&dir.join("data"), SERVE);
    post_events(&server, &lines(&fixture("campaign/before.ndjson")));
    let (status, body) = create(&server, &slt_campaign());
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["members"].as_u64(), body["excluded_no_consent"].as_u64()), (Some(10), Some(2)), "{body}");
    let after = lines(&fixture("campaign/after.ndjson"));
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &after.join("\n"));
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(after.len() as u64 - 2)), "{body}");
    let refused = body["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(refused.len(), 2, "{body}");
    assert!(refused[0]["error"].as_str().unwrap().contains("control group"), "{body}");
    assert!(refused[1]["error"].as_str().unwrap().contains("not a member"), "{body}");
    server
}

#[test]
fn slt_files_over_a_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let server = campaign_server(dir.path());
    crate::sql::run_slt_dir(&workspace_root().join("tests/slt/campaign"), &server.url);
    // The same rows over the PostgreSQL wire protocol.
    let sql =
        "SELECT campaign_id, \"group\", members, orders, round(revenue, 2) AS revenue FROM campaign_results ORDER BY 2";
    assert_eq!(psql(&server, sql).trim(), sql_csv(&server, sql).trim());
}

#[test]
fn campaign_http_errors_name_the_field_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = campaign_server(dir.path());
    let (status, body) = create(&server, &slt_campaign());
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("campaign_exists")), "{body}");
    for (field, value, expected) in [
        ("channel", json!("carrier-pigeon"), "channel"),
        ("control_share", json!(1.0), "control_share"),
        ("cost_per_contact", json!("-1"), "cost_per_contact"),
        ("ends_at", json!("2026-10-01T00:00:00Z"), "ends_at"),
        ("currency", json!("XYZ"), "currency"),
    ] {
        let mut campaign = slt_campaign();
        campaign["campaign_id"] = json!(format!("bad-{field}"));
        campaign[field] = value;
        let (status, body) = create(&server, &campaign);
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(expected), "{field}: {body}");
    }
    let mut no_id_column = slt_campaign();
    no_id_column["campaign_id"] = json!("no-id-column");
    no_id_column["audience_sql"] = json!("SELECT orders FROM customers");
    let (status, body) = create(&server, &no_id_column);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("audience_without_customer_id")), "{body}");
    let mut writes = slt_campaign();
    writes["campaign_id"] = json!("writes");
    writes["audience_sql"] = json!("DROP TABLE customers");
    let (status, body) = create(&server, &writes);
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&format!("{}/v1/campaigns/nope", server.url));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("campaign_not_found")), "{body}");
    // Closing freezes: a purchase in the window after the close is not attributed.
    let (status, closed) = post_json(&format!("{}/v1/campaigns/winback-slt/close", server.url), "application/json", "");
    assert_eq!(status, 200, "{closed}");
    assert!(closed["closed_at"].is_string(), "{closed}");
    post_events(&server, &[r#"{"type":"purchase","event_id":"late","customer_id":"shopper-03","timestamp":"2026-11-20T10:00:00Z","revenue":"10"}"#.to_owned()]);
    let (_, shown) = get_json(&format!("{}/v1/campaigns/winback-slt", server.url));
    assert_eq!(shown["results"], closed["results"], "the close froze the results");
}

/// A small deterministic generator (SplitMix64), so the planted outcome is
/// the same on every run.
struct Draws(u64);

impl Draws {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn interval(group: &Value, name: &str) -> (f64, f64, f64) {
    let i = &group[name];
    (i["estimate"].as_f64().unwrap(), i["low"].as_f64().unwrap(), i["high"].as_f64().unwrap())
}

/// Issue 19's acceptance test: 100,000 consenting customers (and 10,000 who
/// refused e-mail) in two campaigns with separate windows. In the first,
/// treatment members buy with probability 0.22 and control members with
/// 0.20 (a +10% conversion uplift); in the second, everyone buys with 0.20.
#[test]
fn a_planted_uplift_is_found_and_a_planted_zero_is_not() {
    const AUDIENCE: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), SERVE);
    let consent: Vec<String> = (0..AUDIENCE + 10_000)
        .map(|i| {
            format!(
                r#"{{"type":"consent","event_id":"k-{i}","customer_id":"u-{i:06}","timestamp":"2026-09-01T00:00:00Z","channels":{{"email":{}}}}}"#,
                i < AUDIENCE
            )
        })
        .collect();
    post_events(&server, &consent);
    let campaign = |id: &str, starts: &str, ends: &str| {
        json!({
            "campaign_id": id, "name": id, "channel": "email",
            "audience_sql": "SELECT customer_id FROM customers WHERE customer_id LIKE 'u-%'",
            "control_share": 0.1, "cost_per_contact": "0.02",
            "starts_at": starts, "ends_at": ends
        })
    };
    let (status, planted) = create(&server, &campaign("planted", "2026-10-01T00:00:00Z", "2026-10-15T00:00:00Z"));
    assert_eq!(status, 201, "{planted}");
    assert_eq!(
        (planted["members"].as_u64(), planted["excluded_no_consent"].as_u64()),
        (Some(AUDIENCE as u64), Some(10_000))
    );
    let (status, null) = create(&server, &campaign("null", "2026-10-15T00:00:00Z", "2026-11-01T00:00:00Z"));
    assert_eq!(status, 201, "{null}");
    // The treatment group of "planted", as the server split it.
    let members = sql_csv(&server, "SELECT customer_id, \"group\" FROM campaign_members WHERE campaign_id = 'planted'");
    let treated: std::collections::HashSet<String> = members
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(',').filter(|(_, g)| *g == "treatment").map(|(c, _)| c.to_owned()))
        .collect();
    let mut draws = Draws(19);
    let mut purchases = Vec::new();
    for i in 0..AUDIENCE {
        let customer = format!("u-{i:06}");
        let p = if treated.contains(&customer) { 0.22 } else { 0.20 };
        if draws.unit() < p {
            purchases.push(format!(
                r#"{{"type":"purchase","event_id":"a-{i}","customer_id":"{customer}","timestamp":"2026-10-05T12:00:00Z","revenue":"30"}}"#
            ));
        }
        if draws.unit() < 0.20 {
            purchases.push(format!(
                r#"{{"type":"purchase","event_id":"b-{i}","customer_id":"{customer}","timestamp":"2026-10-20T12:00:00Z","revenue":"30"}}"#
            ));
        }
    }
    post_events(&server, &purchases);
    let (_, planted) = get_json(&format!("{}/v1/campaigns/planted", server.url));
    let treatment = &planted["results"][0];
    assert_eq!(treatment["group"], "treatment");
    let planted_value = treated.len() as f64 * 0.02;
    let (estimate, low, high) = interval(treatment, "incremental_conversions");
    assert!(low <= planted_value && planted_value <= high, "{planted_value} in [{low}, {high}] (estimate {estimate})");
    assert!(low > 0.0, "the planted uplift is significant: [{low}, {high}]");
    assert_eq!(treatment["significant"], true, "{planted}");
    let (_, null) = get_json(&format!("{}/v1/campaigns/null", server.url));
    let (estimate, low, high) = interval(&null["results"][0], "incremental_conversions");
    assert!(low <= 0.0 && 0.0 <= high, "a zero effect: 0 in [{low}, {high}] (estimate {estimate})");
    assert!(null["verdict"].as_str().unwrap().starts_with("not yet significant"), "{null}");
    // No member lacks consent on the channel.
    let outsiders = sql_csv(
        &server,
        "SELECT count(*) AS n FROM campaign_members m JOIN customers c ON c.customer_id = m.customer_id \
         WHERE (c.consent_email IS DISTINCT FROM true) AND m.campaign_id = 'planted'",
    );
    assert_eq!(outsiders.trim(), "n\n0");
}

#[test]
fn a_campaign_survives_kill_9_right_after_its_answer_and_splits_the_same_elsewhere() {
    let members_sql = "SELECT customer_id, \"group\" FROM campaign_members ORDER BY customer_id";
    let mut splits = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&data, SERVE);
        post_events(&server, &lines(&fixture("campaign/before.ndjson")));
        let (status, body) = create(&server, &slt_campaign());
        assert_eq!(status, 201, "{body}");
        server.kill_dash_nine();
        let server = Server::start(&data, SERVE);
        let (status, body) = get_json(&format!("{}/v1/campaigns/winback-slt", server.url));
        assert_eq!((status, body["members"].as_u64()), (200, Some(10)), "{body}");
        let split = sql_csv(&server, members_sql);
        assert_eq!(split.lines().count(), 11, "{split}");
        splits.push(split);
    }
    assert_eq!(splits[0], splits[1], "the same id and audience give the same split on another server");
}

#[test]
fn erasure_removes_a_member_from_every_campaign_table_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = campaign_server(dir.path());
    let request = ureq::delete(&format!("{}/v1/customers/shopper-06", server.url)).call().unwrap();
    assert_eq!(request.status(), 200);
    let left = sql_csv(&server, "SELECT count(*) AS n FROM campaign_members WHERE customer_id = 'shopper-06'");
    assert_eq!(left.trim(), "n\n0");
    let (_, body) = get_json(&format!("{}/v1/campaigns/winback-slt", server.url));
    let members: u64 = body["results"].as_array().unwrap().iter().map(|g| g["members"].as_u64().unwrap()).sum();
    assert_eq!(members, 9, "{body}");
    drop(server);
    let mut stack = vec![dir.path().join("data")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(10).any(|w| w == b"shopper-06"), "{} still holds shopper-06", path.display());
        }
    }
}

/// The README's marketer walk-through with the CLI, under tokens: the
/// `campaign` role creates, lists, shows and closes; `query` may not.
#[test]
fn the_campaign_cli_walks_a_campaign_through_with_the_campaign_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("patron.toml");
    std::fs::write(
        &config,
        "[[auth.tokens]]\ntoken = \"producer-secret-0123456789\"\nroles = [\"ingest\"]\n\
         [[auth.tokens]]\ntoken = \"analyst-secret-0123456789\"\nroles = [\"query\"]\n\
         [[auth.tokens]]\ntoken = \"marketer-secret-0123456789\"\nroles = [\"campaign\"]\n",
    )
    .unwrap();
    let mut flags = SERVE.to_vec();
    flags.extend(["--config", config.to_str().unwrap()]);
    let server = Server::start(&dir.path().join("data"), &flags);
    for chunk in lines(&fixture("campaign/before.ndjson")).chunks(100) {
        let response = ureq::post(&format!("{}/v1/events", server.url))
            .set("Authorization", "Bearer producer-secret-0123456789")
            .set("Content-Type", "application/x-ndjson")
            .send_string(&chunk.join("\n"))
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = ureq::post(&format!("{}/v1/campaigns", server.url))
        .set("Authorization", "Bearer analyst-secret-0123456789")
        .send_string(&slt_campaign().to_string());
    assert!(matches!(refused, Err(ureq::Error::Status(403, _))), "a query token may not create campaigns");
    let cli = |args: &[&str]| {
        let output = Command::new(patron_tests::patron_binary())
            .arg("campaign")
            .args(args)
            .args(["--url", &server.url])
            .env("PATRON_TOKEN", "marketer-secret-0123456789")
            .output()
            .unwrap();
        let text = patron_tests::transcript(&output);
        assert!(output.status.success(), "patron campaign {args:?}:\n{text}");
        text
    };
    let created = cli(&[
        "create",
        "--id",
        "winback-cli",
        "--name",
        "Win back by e-mail",
        "--channel",
        "email",
        "--audience",
        "SELECT customer_id FROM customers WHERE customer_id LIKE 'shopper-%'",
        "--control-share",
        "0.3",
        "--cost-per-contact",
        "0.05",
        "--starts-at",
        "2026-11-01T00:00:00Z",
    ]);
    assert!(created.contains("created campaign winback-cli (email): 10 members"), "{created}");
    assert!(created.contains("2 left out without email consent"), "{created}");
    let listed = cli(&["list"]);
    assert!(listed.contains("winback-cli \"Win back by e-mail\" via email"), "{listed}");
    let shown = cli(&["show", "winback-cli"]);
    assert!(shown.contains("  treatment ") && shown.contains("  control "), "{shown}");
    assert!(shown.contains("not yet significant"), "{shown}");
    let closed = cli(&["close", "winback-cli"]);
    assert!(closed.contains(", closed 20"), "{closed}");
    // Errors come back in words, with a failing exit status.
    let missing = Command::new(patron_tests::patron_binary())
        .args(["campaign", "show", "nope", "--url", &server.url])
        .env("PATRON_TOKEN", "marketer-secret-0123456789")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        patron_tests::transcript(&missing).contains("404: no campaign \"nope\""),
        "{}",
        patron_tests::transcript(&missing)
    );
}

/// `patron loadgen --campaign ID --responses SHARE` mixes responses for the
/// campaign's treatment members into its stream; the server accepts every one.
#[test]
fn loadgen_mixes_campaign_responses_that_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let server = campaign_server(dir.path());
    let out = dir.path().join("run.json");
    let output = patron_tests::patron(&[
        "loadgen",
        "--url",
        &server.url,
        "--rate",
        "4000",
        "--duration",
        "2s",
        "--warmup",
        "250ms",
        "--batch",
        "200",
        "--customers",
        "2000",
        "--malformed",
        "0",
        "--duplicates",
        "0",
        "--campaign",
        "winback-slt",
        "--responses",
        "0.05",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", patron_tests::transcript(&output));
    let run: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(run["config"]["responses"]["campaign"], "winback-slt", "{run}");
    assert_eq!(run["rejected"].as_u64(), Some(0), "every response is from a treatment member: {run}");
    let stats = sql_csv(&server, "SELECT value FROM engine_stats WHERE name = 'events_refused_responses'");
    assert_eq!(stats.trim(), "value\n2.0", "only the fixture's two refusals");
    let delivered = sql_csv(
        &server,
        "SELECT count(*) AS n FROM campaign_members WHERE responded_at > TIMESTAMP '2026-12-01 00:00:00'",
    );
    let n: u64 = delivered.lines().nth(1).unwrap().parse().unwrap();
    assert!(n >= 5, "the load's responses reached the members: {delivered}");
}
