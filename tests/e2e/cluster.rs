//! Cluster mode with real `nats-server` processes and real `patron serve
//! --nats` nodes on loopback: crashes of nodes and of a broker under load, and
//! the fleet-wide SQL that checks what was applied.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patron_tests::nats::{FleetNode, NatsServer};
use patron_tests::{get_json, patron};

const PARTITIONS: &str = "12";
const CUSTOMERS: usize = 700;

/// Node flags of these tests: short leases and frequent snapshots so that
/// crashes are recovered from within seconds.
fn node_flags(export: &Path) -> Vec<String> {
    [
        "--partitions",
        PARTITIONS,
        "--lease-time",
        "2s",
        "--snapshot-interval",
        "1s",
        "--refit-interval",
        "1h",
        "--export-dir",
        export.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn start_node(nats: &str, id: &str, dir: &Path, flags: &[String]) -> FleetNode {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    FleetNode::start(nats, id, dir, &flags)
}

/// One request of the producer: `count` purchases with ids from `first`.
fn body(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| {
            format!(
                r#"{{"type":"purchase","event_id":"e{i}","customer_id":"c{}","timestamp":"2025-03-{:02}T10:00:00Z","revenue":"1"}}"#,
                i % CUSTOMERS,
                1 + i % 28
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Posts `body` to the nodes in turn until one acknowledges it, as a
/// producer that retries would. Returns the events the answer counted.
fn post_until_acknowledged(urls: &Mutex<Vec<String>>, body: &str, turn: &mut usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no node acknowledged a request for two minutes");
        let targets = urls.lock().unwrap().clone();
        *turn += 1;
        let url = format!("{}/v1/events", targets[*turn % targets.len()]);
        let answer = ureq::post(&url)
            .timeout(Duration::from_secs(10))
            .set("content-type", "application/x-ndjson")
            .send_string(body);
        if let Ok(response) = answer {
            let value: serde_json::Value = response.into_json().expect("a JSON answer");
            return value["accepted"].as_u64().unwrap_or(0) + value["duplicates"].as_u64().unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `SELECT customer_id, orders FROM customers` over the fleet export.
fn fleet_orders(export: &Path) -> Option<BTreeMap<String, u64>> {
    let output = patron(&[
        "query",
        "--fleet",
        export.to_str()?,
        "--format",
        "csv",
        "SELECT customer_id, orders FROM customers ORDER BY customer_id",
    ]);
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let (id, orders) = line.split_once(',')?;
                Some((id.to_owned(), orders.parse().ok()?))
            })
            .collect(),
    )
}

fn expected_orders(events: usize) -> BTreeMap<String, u64> {
    let mut expected = BTreeMap::new();
    for i in 0..events {
        *expected.entry(format!("c{}", i % CUSTOMERS)).or_insert(0) += 1;
    }
    expected
}

/// Snapshots (and so exports) every partition on every node until the fleet
/// export holds exactly `expected`, or fails with the difference.
fn wait_for_export(nodes: &[FleetNode], export: &Path, expected: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = None;
    while Instant::now() < deadline {
        for node in nodes {
            let _ = ureq::post(&format!("{}/v1/admin/snapshot", node.url)).timeout(Duration::from_secs(60)).call();
        }
        if let Some(orders) = fleet_orders(export) {
            if &orders == expected {
                return;
            }
            let applied: u64 = orders.values().sum();
            let over: Vec<_> = orders.iter().filter(|(id, n)| expected.get(*id).is_some_and(|e| *n > e)).collect();
            assert!(over.is_empty(), "customers with more orders than were sent (applied twice): {over:?}");
            last = Some(applied);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the fleet export never reached {} orders (last: {last:?})", expected.values().sum::<u64>());
}

/// Waits until every partition has an owner, every node holds some, and
/// none is restoring: the fleet after a join has rebalanced.
fn wait_settled(nodes: &[FleetNode]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses: Vec<serde_json::Value> =
            nodes.iter().map(|n| get_json(&format!("{}/v1/cluster/status", n.url)).1).collect();
        let owned =
            statuses[0]["partitions"].as_array().map_or(0, |p| p.iter().filter(|p| p["owner"].is_string()).count());
        let each_holds = statuses.iter().all(|s| s["held"].as_array().is_some_and(|h| !h.is_empty()));
        let held: usize = statuses.iter().map(|s| s["held"].as_array().map_or(0, Vec::len)).sum();
        let ready = nodes.iter().all(|n| get_json(&format!("{}/ready", n.url)).0 == 200);
        if owned == 12 && each_holds && held == 12 && ready {
            return;
        }
        assert!(Instant::now() < deadline, "the fleet did not settle: {statuses:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_nodes_killed_five_times_under_load_apply_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = NatsServer::start(&dir.path().join("broker"));
    let export = dir.path().join("export");
    let flags = node_flags(&export);
    let mut nodes: Vec<FleetNode> =
        ["n1", "n2", "n3"].iter().map(|id| start_node(&broker.url, id, dir.path(), &flags)).collect();
    let urls = Arc::new(Mutex::new(nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>()));

    // The producer: requests of 50 events, each retried until acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (urls, stop) = (urls.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut sent, mut turn, mut acknowledged) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                acknowledged += post_until_acknowledged(&urls, &body(sent, 50), &mut turn);
                sent += 50;
            }
            (sent, acknowledged)
        })
    };

    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        let victim = round % nodes.len();
        let node = &mut nodes[victim];
        let victim_id = node.id.clone();
        node.kill_dash_nine();
        // The survivors take its partitions once its node entry and leases expire.
        let survivor = nodes[(victim + 1) % nodes.len()].url.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, status) = get_json(&format!("{survivor}/v1/cluster/status"));
            let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
            let moved = partitions.len() == 12
                && partitions.iter().all(|p| p["owner"].as_str().is_some_and(|o| o != victim_id));
            if moved {
                break;
            }
            assert!(Instant::now() < deadline, "the survivors did not take {victim_id}'s partitions: {status:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let node = &mut nodes[victim];
        node.restart();
        urls.lock().unwrap()[victim] = node.url.clone();
        // It rejoins: it holds partitions again within a few lease times.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = get_json(&format!("{}/v1/cluster/status", node.url));
            if status == 200 && body["held"].as_array().is_some_and(|held| !held.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "node {} did not rejoin after kill {round}", node.id);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let (sent, acknowledged) = producer.join().expect("the producer finishes");
    assert_eq!(acknowledged as usize, sent, "every request was acknowledged in the end");
    eprintln!("{sent} events sent and acknowledged across 5 crashes");
    assert!(sent >= 1_000, "the load ran: {sent} events");

    wait_for_export(&nodes, &export, &expected_orders(sent));

    // Every partition has an owner, and `patron cluster status` shows them.
    let output = patron(&["cluster", "status", "--nats", &broker.url, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let partitions = status["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 12);
    assert!(partitions.iter().all(|p| p["owner"].is_string()), "{status:#}");
    assert_eq!(status["nodes"].as_object().map(|n| n.len()), Some(3));
    for node in &mut nodes {
        node.stop();
    }
}

#[test]
fn a_lookup_on_any_node_answers_for_any_customer_and_metrics_show_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = NatsServer::start(&dir.path().join("broker"));
    let export = dir.path().join("export");
    let flags = node_flags(&export);
    let nodes: Vec<FleetNode> = ["a", "b"].iter().map(|id| start_node(&broker.url, id, dir.path(), &flags)).collect();
    wait_settled(&nodes);
    let mut turn = 0;
    let urls = Mutex::new(vec![nodes[0].url.clone()]);
    assert_eq!(post_until_acknowledged(&urls, &body(0, 1_400), &mut turn), 1_400);
    // A retry of the same request is recognised by the broker.
    let retry = ureq::post(&format!("{}/v1/events", nodes[1].url))
        .set("content-type", "application/x-ndjson")
        .send_string(&body(0, 1_400))
        .unwrap()
        .into_json::<serde_json::Value>()
        .unwrap();
    assert_eq!((retry["accepted"].as_u64(), retry["duplicates"].as_u64()), (Some(0), Some(1_400)), "{retry}");

    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        for customer in ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"] {
            loop {
                let (status, view) = get_json(&format!("{}/v1/customers/{customer}", node.url));
                if status == 200 && view["orders"].as_u64() == Some(2) {
                    break;
                }
                assert!(Instant::now() < deadline, "{customer} on {}: {status} {view}", node.id);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let (status, missing) = get_json(&format!("{}/v1/customers/nobody", node.url));
        assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("customer_not_found")));
        let (status, why) = get_json(&format!("{}/ready", node.url));
        assert_eq!(status, 200, "{why}");
    }
    // The fleet export answers the same in `patron query --fleet` and in DuckDB.
    wait_for_export(&nodes, &export, &expected_orders(1_400));
    let sql = "SELECT count(*) AS customers, sum(orders) AS orders FROM customers";
    let ours = patron(&["query", "--fleet", export.to_str().unwrap(), "--format", "csv", sql]);
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    assert_eq!(String::from_utf8_lossy(&ours.stdout).lines().nth(1), Some("700,1400"));
    let duckdb = std::process::Command::new(patron_tests::python())
        .args(["-c", "import duckdb, sys; print(duckdb.sql(sys.argv[1]).fetchall())"])
        .arg(format!(
            "{} FROM read_parquet('{}/p*/customers.parquet')",
            sql.split(" FROM ").next().unwrap(),
            export.display()
        ))
        .output()
        .expect("python runs");
    assert!(duckdb.status.success(), "{}", String::from_utf8_lossy(&duckdb.stderr));
    assert_eq!(String::from_utf8_lossy(&duckdb.stdout).trim(), "[(700, 1400)]");

    let metrics = ureq::get(&format!("{}/metrics", nodes[0].url)).call().unwrap().into_string().unwrap();
    let owners = metrics.lines().filter(|l| l.starts_with("patron_cluster_partition_owner{")).count();
    assert_eq!(owners, 12, "{metrics}");
    assert!(metrics.contains("patron_cluster_partition_lag_messages{"), "{metrics}");
    assert!(metrics.contains("patron_cluster_partition_lag_events{"), "{metrics}");
    assert!(metrics.contains("patron_cluster_partition_models_epoch{"), "{metrics}");
    assert!(metrics.contains("patron_cluster_partition_applied_sequence{"), "{metrics}");
}

#[test]
fn killing_one_of_three_brokers_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut brokers = NatsServer::start_cluster(&dir.path().join("brokers"));
    let all: Vec<String> = brokers.iter().map(|b| b.url.clone()).collect();
    let nats = all.join(",");
    let export = dir.path().join("export");
    let mut flags = node_flags(&export);
    flags.extend(["--nats-replicas".to_owned(), "3".to_owned()]);
    let mut nodes: Vec<FleetNode> = ["n1", "n2"].iter().map(|id| start_node(&nats, id, dir.path(), &flags)).collect();
    wait_settled(&nodes);
    let urls = Arc::new(Mutex::new(nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_after_kill = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let producer = {
        let (urls, stop, killed, after) = (urls.clone(), stop.clone(), killed.clone(), acknowledged_after_kill.clone());
        std::thread::spawn(move || {
            let (mut sent, mut turn) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let was_killed = killed.load(Ordering::Relaxed);
                assert_eq!(post_until_acknowledged(&urls, &body(sent, 50), &mut turn), 50);
                sent += 50;
                if was_killed {
                    after.fetch_add(1, Ordering::Relaxed);
                }
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    brokers[0].kill_dash_nine();
    killed.store(true, Ordering::Relaxed);
    // Ingest goes on once the surviving brokers have elected new leaders
    // (seconds; more on a loaded machine): 40 more requests acknowledged.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged_after_kill.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "ingest did not continue after the broker died");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().expect("the producer finishes");
    wait_for_export(&nodes, &export, &expected_orders(sent));
    eprintln!("{sent} events acknowledged with one of three brokers killed; all applied once");
    for node in &mut nodes {
        node.stop();
    }
}

/// `SELECT * FROM customers` as CSV rows, header first.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    reader.records().map(|r| r.expect("a CSV row").iter().map(str::to_owned).collect()).collect()
}

/// Whether two CSV cells say the same: equal text, or numbers within 1e-9 relative.
fn same_cell(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        _ if a == b => true,
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// The fleet's `customers` is a single node's, CDNOW on both: a two-node
/// fleet fits the same parameters (1e-9 relative) at the same watermark and
/// exports every customer's row as the single node serves it, scores and
/// population-relative labels included.
#[test]
fn a_two_node_fleet_on_cdnow_fits_and_exports_the_customers_a_single_node_serves() {
    let dir = tempfile::tempdir().unwrap();
    let single =
        patron_tests::Server::start(&dir.path().join("single"), &["--currency", "USD", "--refit-interval", "3600"]);
    patron_tests::load_cdnow(&single);
    let (status, single_fit) = patron_tests::post_json(&format!("{}/v1/admin/refit", single.url), "text/plain", "");
    assert_eq!(status, 200, "{single_fit}");
    let sql = "SELECT * FROM customers ORDER BY customer_id";
    let single_csv = ureq::post(&format!("{}/v1/sql", single.url))
        .set("accept", "text/csv")
        .send_string(sql)
        .expect("the single node answers")
        .into_string()
        .unwrap();

    let broker = NatsServer::start(&dir.path().join("broker"));
    let export = dir.path().join("export");
    let mut flags = node_flags(&export);
    flags.extend(["--currency".to_owned(), "USD".to_owned()]);
    let nodes: Vec<FleetNode> = ["a", "b"].iter().map(|id| start_node(&broker.url, id, dir.path(), &flags)).collect();
    wait_settled(&nodes);
    let (_, events) = patron_tests::cdnow_calibration();
    let (mut turn, urls) = (0, Mutex::new(nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>()));
    for chunk in events.chunks(1_000) {
        assert_eq!(post_until_acknowledged(&urls, &chunk.join("\n"), &mut turn), chunk.len() as u64);
    }
    let mut expected = BTreeMap::new();
    for line in &events {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        *expected.entry(event["customer_id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    wait_for_export(&nodes, &export, &expected);

    let (status, fleet_fit) = patron_tests::post_json(&format!("{}/v1/admin/refit", nodes[1].url), "text/plain", "");
    assert_eq!(status, 200, "{fleet_fit}");
    let epoch = fleet_fit["round"]["epoch"].as_u64().expect("the round");
    assert_eq!(fleet_fit["round"]["buyers"].as_u64(), Some(2_357), "{fleet_fit}");
    let numbers = |fit: &serde_json::Value| {
        let mut out = BTreeMap::new();
        for entry in fit["models"].as_array().into_iter().flatten() {
            for (name, value) in entry["params"].as_object().into_iter().flatten() {
                out.insert(format!("{}.{name}", entry["model"]), value.as_f64().unwrap_or(f64::NAN));
            }
        }
        out
    };
    let (one, fleet) = (numbers(&single_fit), numbers(&fleet_fit));
    assert!(one.len() >= 15, "every model of the single node's fits: {single_fit}");
    assert_eq!(single_fit["fitted_at"], fleet_fit["fitted_at"], "one watermark");
    assert_eq!(one.keys().collect::<Vec<_>>(), fleet.keys().collect::<Vec<_>>());
    for (name, value) in &one {
        assert!(same_cell(&value.to_string(), &fleet[name].to_string()), "{name}: {value} vs {}", fleet[name]);
    }

    let status = patron(&["cluster", "status", "--nats", &broker.url]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("models: round {epoch} Done; serving round {epoch}")), "{text}");

    // Every partition serves the round before the export is compared.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let epochs: Vec<u64> = nodes
            .iter()
            .flat_map(|n| {
                get_json(&format!("{}/v1/cluster/status", n.url)).1["held"].as_array().cloned().unwrap_or_default()
            })
            .filter_map(|held| held["models_epoch"].as_u64())
            .collect();
        if epochs.len() == 12 && epochs.iter().all(|e| *e == epoch) {
            break;
        }
        assert!(Instant::now() < deadline, "partitions serving round {epoch}: {epochs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in &nodes {
        let snapshot = ureq::post(&format!("{}/v1/admin/snapshot", node.url)).timeout(Duration::from_secs(60)).call();
        assert!(snapshot.is_ok(), "{snapshot:?}");
    }
    let fleet_out = patron(&["query", "--fleet", export.to_str().unwrap(), "--format", "csv", sql]);
    assert!(fleet_out.status.success(), "{}", String::from_utf8_lossy(&fleet_out.stderr));
    let (single_rows, fleet_rows) = (csv_rows(&single_csv), csv_rows(&String::from_utf8_lossy(&fleet_out.stdout)));
    assert_eq!(single_rows[0], fleet_rows[0], "the same columns");
    assert_eq!(single_rows.len(), 2_358, "every CDNOW customer and the header");
    assert_eq!(single_rows.len(), fleet_rows.len());
    let header = &single_rows[0];
    let mut differences = Vec::new();
    for (one, fleet) in single_rows.iter().zip(&fleet_rows).skip(1) {
        for (column, (a, b)) in header.iter().zip(one.iter().zip(fleet)) {
            if !same_cell(a, b) {
                differences.push(format!("{} {column}: {a} vs {b}", one[0]));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} cells differ, first: {:#?}",
        differences.len(),
        &differences[..differences.len().min(20)]
    );

    // Each node's own SQL endpoint answers for the partitions it holds; together, for everyone.
    let mut from_nodes: Vec<Vec<String>> = Vec::new();
    for node in &nodes {
        let response = ureq::post(&format!("{}/v1/sql", node.url))
            .set("accept", "text/csv")
            .send_string(sql)
            .expect("a node answers SQL");
        let held = response.header("x-patron-partitions").unwrap_or_default().split(',').count();
        let rows = csv_rows(&response.into_string().unwrap());
        assert_eq!(&rows[0], header);
        assert!(held > 0 && rows.len() > 1 && rows.len() < single_rows.len(), "{} holds {held} partitions", node.id);
        from_nodes.extend(rows.into_iter().skip(1));
    }
    from_nodes.sort_by(|a, b| a[0].cmp(&b[0]));
    assert_eq!(from_nodes.len(), single_rows.len() - 1);
    for (one, node) in single_rows.iter().skip(1).zip(&from_nodes) {
        assert!(one.iter().zip(node).all(|(a, b)| same_cell(a, b)), "{one:?} vs {node:?}");
    }
}
