//! Recommendations end to end: the offline evaluation on a hand-worked
//! example and on UCI Online Retail, batch output, HTTP.

use patron_tests::{fixture, get_json, patron, post_json, shop_server, transcript};
use serde_json::Value;

fn eval(input: &str, flags: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("eval.json");
    let input = fixture(input);
    let mut args = vec!["eval-recs", "--input", input.to_str().expect("utf-8"), "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(flags);
    let output = patron(&args);
    assert!(output.status.success(), "{}", transcript(&output));
    serde_json::from_slice(&std::fs::read(&out).expect("result written")).expect("JSON")
}

fn method<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["result"]["methods"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["method"] == name))
        .unwrap_or_else(|| panic!("method {name} in {result}"))
}

fn assert_metrics(m: &Value, subset: &str, expected: [f64; 5]) {
    let names = ["hit_rate", "recall", "ndcg", "map", "coverage"];
    for (name, want) in names.iter().zip(expected) {
        let got = m[subset][name].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-4, "{} {subset} {name}: got {got}, hand-worked {want}", m["method"]);
    }
}

/// `fixtures/recs/tiny_orders.csv`, K = 2. At A's last basket {p1, p3} (day 4)
/// A owns p1, p2 (one basket each); orders so far p1 2, p2 1, p3 1; p1–p2
/// co-occur once. At B's last basket {p2} (day 5) B owns p1; orders p1 3,
/// p2 1, p3 2; p1 co-occurs once with p2 and once with p3.
///
/// - buy again: A [p1, p2] → hit at 1 of 2 relevant: HR 1, recall ½,
///   NDCG 1/(1 + 1/log2 3) = 0.6131, AP ½; B [p1] → 0. Coverage {p1, p2} = ⅔.
/// - popularity: A [p1, p2] (as buy again); B [p1, p3] → 0. Coverage 1.
/// - item-kNN: A: p1 and p2 score 1/√2 each → [p1, p2] (as above); B: p2
///   1/√3, p3 1/√6 → [p2, p3], hit at 1: HR 1, recall 1, NDCG 1, AP 1. Coverage 1.
/// - explore (new items: A {p3}, B {p2}): popularity without owned items:
///   A [p3] → 1, 1, 1, 1; B [p3, p2] → HR 1, recall 1, NDCG 1/log2 3 = 0.6309,
///   AP ½. item-kNN: A has no unowned neighbour → 0; B [p2, p3] → 1s. Buy
///   again recommends only owned products → 0.
#[test]
fn evaluation_metrics_match_the_hand_worked_example() {
    let result = eval(
        "recs/tiny_orders.csv",
        &[
            "--k",
            "2",
            "--customer-col",
            "customer",
            "--order-col",
            "order",
            "--product-col",
            "product",
            "--time-col",
            "date",
            "--quantity-col",
            "quantity",
            "--price-col",
            "price",
        ],
    );
    let r = &result["result"];
    assert_eq!((r["customers"].as_u64(), r["baskets"].as_u64(), r["products"].as_u64()), (Some(3), Some(5), Some(3)));
    assert_eq!((r["test_customers"].as_u64(), r["explore_customers"].as_u64()), (Some(2), Some(2)));
    let ndcg_a = 1.0 / (1.0 + 1.0 / 3f64.log2());
    assert_metrics(method(&result, "buy_again"), "all", [0.5, 0.25, ndcg_a / 2.0, 0.25, 2.0 / 3.0]);
    assert_metrics(method(&result, "popularity"), "all", [0.5, 0.25, ndcg_a / 2.0, 0.25, 1.0]);
    assert_metrics(method(&result, "item_knn"), "all", [1.0, 0.75, (ndcg_a + 1.0) / 2.0, 0.75, 1.0]);
    assert_metrics(
        method(&result, "popularity"),
        "explore",
        [1.0, 1.0, (1.0 + 1.0 / 3f64.log2()) / 2.0, 0.75, 2.0 / 3.0],
    );
    assert_metrics(method(&result, "item_knn"), "explore", [0.5, 0.5, 0.5, 0.5, 2.0 / 3.0]);
    assert_metrics(method(&result, "buy_again"), "explore", [0.0, 0.0, 0.0, 0.0, 2.0 / 3.0]);
    let patron = method(&result, "patron");
    assert_eq!(patron["all"]["customers"].as_u64(), Some(2));
    for subset in ["all", "explore"] {
        for metric in ["hit_rate", "recall", "ndcg", "map", "coverage"] {
            let v = patron[subset][metric].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&v), "patron {subset} {metric} = {v}");
        }
    }
    // B's only product p1 was never re-bought by anyone, so Patron offers what
    // is bought with it, p2 first (cosine 1/√3 against p3's 1/√6): a hit.
    assert!(patron["explore"]["hit_rate"].as_f64() >= Some(0.5), "{patron}");
}

/// The acceptance bar of the recommendation issue, on real purchases: Patron
/// beats every published baseline on HitRate@10 and NDCG@10 over all test
/// customers, and item-kNN on the explore subset (the run recorded in
/// `bench-results/recs/` uses the same defaults).
/// The held-out half of the temporal split (`benches/recs_holdout.sh`): the
/// defaults were checked on the data cut at 2011-07-01; here only customers
/// whose last basket comes later are scored. The main list must beat buy
/// again, the best published baseline, and the discover list must beat
/// popularity among the products each customer never bought by 10%.
#[test]
fn on_the_held_out_half_of_uci_online_retail_patron_beats_the_baselines() {
    let result = eval(
        "online_retail/online_retail.csv.gz",
        &[
            "--currency",
            "GBP",
            "--customer-col",
            "CustomerID",
            "--time-col",
            "InvoiceDate",
            "--order-col",
            "InvoiceNo",
            "--product-col",
            "StockCode",
            "--quantity-col",
            "Quantity",
            "--price-col",
            "UnitPrice",
            "--test-from",
            "2011-07-01",
        ],
    );
    let r = &result["result"];
    assert!(r["test_customers"].as_u64() > Some(2500), "{r}");
    let patron = method(&result, "patron");
    let metric = |m: &Value, subset: &str, name: &str| m[subset][name].as_f64().unwrap_or(f64::NAN);
    for baseline in ["popularity", "buy_again", "item_knn"] {
        let b = method(&result, baseline);
        for name in ["hit_rate", "ndcg"] {
            assert!(metric(patron, "all", name) > metric(b, "all", name), "{baseline} {name}: {b} vs {patron}");
        }
    }
    for baseline in ["popularity", "item_knn"] {
        let b = method(&result, baseline);
        for name in ["hit_rate", "ndcg"] {
            let (ours, theirs) = (metric(patron, "explore", name), metric(b, "explore", name));
            assert!(ours > 1.1 * theirs, "discover vs {baseline} among new products, {name}: {ours} vs {theirs}");
        }
    }
}

fn products_of(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (r["product_id"].as_str().unwrap_or("?").to_owned(), r["reason"].as_str().unwrap_or("?").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, r)| ((*p).to_owned(), (*r).to_owned())).collect()
}

/// `patron score` on `input` (amounts in `currency`) into `out`, with `extra` flags.
fn score_file(input: &std::path::Path, currency: &str, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "score",
        "--input",
        input.to_str().expect("utf-8"),
        "--currency",
        currency,
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    patron(&args)
}

/// The HTTP contract: `?k=`, `?new_only=`, the list inside the customer view,
/// errors by name, consent objections, and a SQL lookup that computes one customer.
#[test]
fn recommendations_over_http_follow_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = shop_server(dir.path());
    let url = |path: &str| format!("{}{path}", server.url);
    let (status, body) = get_json(&url("/v1/customers/ann/recommendations?k=2"));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["k"].as_u64(), body["new_only"].as_bool()), (Some(2), Some(false)));
    assert_eq!(
        products_of(&body["recommendations"]),
        pairs(&[("sku-filter", "buy_again"), ("sku-espresso", "buy_again")])
    );
    assert_eq!(body["recommendations"][1]["rank"].as_u64(), Some(2));
    // The discover list: only products ann never bought.
    let (_, body) = get_json(&url("/v1/customers/ann/recommendations?new_only=true"));
    assert_eq!(
        products_of(&body["recommendations"]),
        pairs(&[("sku-grinder", "bought_with:sku-espresso"), ("sku-mug", "popular_in:all")])
    );
    // The customer view carries the top ones, as rows of the recommendations table.
    let (_, view) = get_json(&url("/v1/customers/ann"));
    let rows = view["recommendations"].as_array().expect("recommendations in the view");
    assert_eq!(rows.len(), 4, "{view}");
    assert_eq!(rows[0]["customer_id"], "ann");
    for key in ["customer_id", "rank", "product_id", "score", "reason"] {
        assert!(rows.iter().all(|r| !r[key].is_null()), "{key} in {view}");
    }
    // Errors by name.
    for (path, status, code) in [
        ("/v1/customers/ann/recommendations?k=0", 400, "invalid_k"),
        ("/v1/customers/ann/recommendations?k=101", 400, "invalid_k"),
        ("/v1/customers/ann/recommendations?k=ten", 400, "invalid_k"),
        ("/v1/customers/ann/recommendations?new_only=maybe", 400, "invalid_new_only"),
        ("/v1/customers/zed/recommendations", 404, "customer_not_found"),
    ] {
        let (got, body) = get_json(&url(path));
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{path}: {body}");
    }
    // cem objects to every channel: no targeting view shows him any more.
    let objection = r#"{"type":"consent","event_id":"k-9","customer_id":"cem","timestamp":"2026-03-09T12:00:00Z","channels":{"email":false,"sms":false,"push":false}}"#;
    let (status, _) = post_json(&url("/v1/events"), "application/json", objection);
    assert_eq!(status, 200);
    let (_, body) = get_json(&url("/v1/customers/cem/recommendations"));
    assert_eq!(body["recommendations"].as_array().map(Vec::len), Some(0), "{body}");
    let sql = |q: &str| post_json(&url("/v1/sql"), "text/plain", q).1;
    assert_eq!(sql("SELECT count(*) AS n FROM recommendations WHERE customer_id = 'cem'")[0]["n"], 0);
    assert_eq!(sql("SELECT count(DISTINCT customer_id) AS n FROM recommendations")[0]["n"], 3);
    // A lookup computes only the customer asked for.
    let rows_read = || sql("SELECT value FROM engine_stats WHERE name = 'sql_rows_read'")[0]["value"].as_f64();
    let before = rows_read().expect("counter");
    let ann = sql("SELECT product_id FROM recommendations WHERE customer_id = 'ann' ORDER BY rank");
    assert_eq!(ann.as_array().map(Vec::len), Some(4), "{ann}");
    assert_eq!(rows_read().expect("counter") - before, 1.0);
}

/// `patron score --recommendations K [--new-only]` writes the same lists the
/// server serves for the same events. Four customers are too few to fit the
/// purchase models, so `score` exits with an error, but the recommendations
/// need no fit and are written (the error says where).
#[test]
fn batch_recommendations_match_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = fixture("shop/events.ndjson");
    let score = |out: &std::path::Path, extra: &[&str]| score_file(&input, "USD", out, extra);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let output = score(&out, extra);
        assert!(
            transcript(&output).contains("holds the recommendations (they need no fit)"),
            "{}",
            transcript(&output)
        );
        let batch = crate::batch_cdnow::read_parquet(&out.join("recommendations.parquet"));
        let column = |name: &str| {
            let array = batch.column_by_name(name).unwrap_or_else(|| panic!("{name} column"));
            arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).expect("castable")
        };
        let (customer, rank, product, reason) =
            (column("customer_id"), column("rank"), column("product_id"), column("reason"));
        let text = |a: &arrow::array::ArrayRef, i: usize| {
            a.as_any().downcast_ref::<arrow::array::StringArray>().map(|s| s.value(i).to_owned()).unwrap_or_default()
        };
        (0..batch.num_rows())
            .filter(|&i| text(&customer, i) == "ann")
            .map(|i| (text(&rank, i), text(&product, i), text(&reason, i)))
            .collect::<Vec<_>>()
    };
    let mixed = run("mixed", &["--recommendations", "3"]);
    let expected = [
        ("1", "sku-filter", "buy_again"),
        ("2", "sku-espresso", "buy_again"),
        ("3", "sku-grinder", "bought_with:sku-espresso"),
    ];
    let as_owned = |l: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        l.iter().map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned())).collect()
    };
    assert_eq!(mixed, as_owned(&expected));
    let discover = run("discover", &["--new-only"]);
    assert_eq!(
        discover,
        as_owned(&[("1", "sku-grinder", "bought_with:sku-espresso"), ("2", "sku-mug", "popular_in:all")])
    );
    let none = dir.path().join("none");
    let output = score(&none, &["--recommendations", "0"]);
    assert!(none.join("customers.parquet").exists(), "{}", transcript(&output));
    assert!(!none.join("recommendations.parquet").exists());
}

/// A full scan of `recommendations` reads every shard in chunks of 1,024
/// customers under separate locks: 3,000 customers over 2 shards cross chunk
/// boundaries, and every customer appears once with a full list.
#[test]
fn a_full_scan_of_recommendations_covers_every_customer_across_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        patron_tests::Server::start(&dir.path().join("data"), &["--currency", "EUR", "--refit-interval", "3600"]);
    let url = |path: &str| format!("{}{path}", server.url);
    let events: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"type\":\"purchase\",\"event_id\":\"o{i}\",\"customer_id\":\"c{i}\",\"timestamp\":\"2025-06-01T10:00:00Z\",\"items\":[{{\"sku\":\"p{}\",\"price\":\"5\"}},{{\"sku\":\"p{}\",\"price\":\"7\"}}]}}\n",
                i % 5,
                (i + 1) % 5
            )
        })
        .collect();
    let (status, body) = post_json(&url("/v1/events"), "application/x-ndjson", &events);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(3000)), "{body}");
    let (status, _) = post_json(&url("/v1/admin/recommendations/refresh"), "application/json", "");
    assert_eq!(status, 200);
    let sql = |q: &str| post_json(&url("/v1/sql"), "text/plain", q).1;
    let counts = sql("SELECT count(*) AS n, count(DISTINCT customer_id) AS customers FROM recommendations");
    assert_eq!((counts[0]["n"].as_u64(), counts[0]["customers"].as_u64()), (Some(15_000), Some(3000)), "{counts}");
    let limited = sql("SELECT customer_id FROM recommendations LIMIT 25");
    assert_eq!(limited.as_array().map(Vec::len), Some(25), "{limited}");
}

/// Issue 17: the discover list held products the customer had bought long
/// before, because it was filtered by the bounded purchase profile (64
/// products), which forgets old ones. `long` buys 300 products, one a day,
/// the first 20 of them the shop's most popular; 60 other customers buy
/// those 20 and 40 more. No discover list, over HTTP or in batch, may hold
/// any of the 300.
#[test]
fn regression_the_discover_list_never_holds_a_product_bought_long_ago() {
    let dir = tempfile::tempdir().expect("temp dir");
    let day = |d: u32| {
        let (month, day) = (1 + d / 28, 1 + d % 28);
        format!("2025-{month:02}-{day:02}T10:00:00Z")
    };
    let line = |p: u32| format!(r#"{{"sku":"p{p}","category":"c{}","price":"3"}}"#, p % 3);
    let mut events = Vec::new();
    for j in 0..60u32 {
        let basket: Vec<String> = (0..20).chain(300 + j % 40..300 + j % 40 + 3).map(line).collect();
        events.push(format!(
            r#"{{"type":"purchase","event_id":"o{j}","customer_id":"other{j}","timestamp":"{}","items":[{}]}}"#,
            day(j % 300),
            basket.join(",")
        ));
    }
    for p in 0..300u32 {
        events.push(format!(
            r#"{{"type":"purchase","event_id":"long{p}","customer_id":"long","timestamp":"{}","items":[{}]}}"#,
            day(p),
            line(p)
        ));
    }
    let bought: std::collections::HashSet<String> = (0..300).map(|p| format!("p{p}")).collect();
    let input = dir.path().join("long-history.ndjson");
    std::fs::write(&input, events.join("\n")).expect("write events");

    let server =
        patron_tests::Server::start(&dir.path().join("data"), &["--currency", "EUR", "--refit-interval", "3600"]);
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &events.join("\n"));
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(events.len() as u64)), "{body}");
    let discover = |server: &patron_tests::Server| {
        let (status, _) = post_json(&format!("{}/v1/admin/recommendations/refresh", server.url), "text/plain", "");
        assert_eq!(status, 200);
        let (_, body) = get_json(&format!("{}/v1/customers/long/recommendations?new_only=true&k=100", server.url));
        let served: Vec<String> = products_of(&body["recommendations"]).into_iter().map(|(p, _)| p).collect();
        assert!(!served.is_empty(), "the products long never bought are there to discover: {body}");
        let leaked: Vec<&String> = served.iter().filter(|p| bought.contains(*p)).collect();
        assert!(leaked.is_empty(), "HTTP discover list holds bought products {leaked:?}");
    };
    discover(&server);
    // The set is part of the snapshot: restored from it, it still knows all 300.
    let (status, _) = post_json(&format!("{}/v1/admin/snapshot", server.url), "text/plain", "");
    assert_eq!(status, 200);
    server.kill_dash_nine();
    let server =
        patron_tests::Server::start(&dir.path().join("data"), &["--currency", "EUR", "--refit-interval", "3600"]);
    discover(&server);

    let out = dir.path().join("batch");
    let output = score_file(&input, "EUR", &out, &["--recommendations", "100", "--new-only"]);
    let batch = crate::batch_cdnow::read_parquet(&out.join("recommendations.parquet"));
    let text = |name: &str| {
        let array = batch.column_by_name(name).unwrap_or_else(|| panic!("{name} column: {}", transcript(&output)));
        let array = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).expect("castable");
        let strings = array.as_any().downcast_ref::<arrow::array::StringArray>().expect("strings").clone();
        strings.iter().map(|s| s.unwrap_or_default().to_owned()).collect::<Vec<_>>()
    };
    let listed: Vec<String> =
        text("customer_id").into_iter().zip(text("product_id")).filter(|(c, _)| c == "long").map(|(_, p)| p).collect();
    assert!(!listed.is_empty(), "{}", transcript(&output));
    let leaked: Vec<&String> = listed.iter().filter(|p| bought.contains(*p)).collect();
    assert!(leaked.is_empty(), "batch discover list holds bought products {leaked:?}");
}

/// A shop no default was tuned on: the synthetic shop with planted tastes
/// (`patron loadgen --planted-tastes`: a home category per customer, a
/// complement per product). The main list must beat buy again and
/// popularity, and the discover list popularity among new products by 10%.
/// (Item-kNN, which finds the planted complements too, is within a point
/// of Patron at this size; `benches/recs_planted.sh` has the larger run.)
#[test]
fn on_a_shop_with_planted_tastes_patron_beats_buy_again_and_popularity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("shop.ndjson");
    let events = events.to_str().expect("utf-8");
    let dump = patron(&[
        "loadgen",
        "--dump",
        events,
        "--events",
        "60000",
        "--customers",
        "5000",
        "--products",
        "500",
        "--planted-tastes",
        "--seed",
        "42",
    ]);
    assert!(dump.status.success(), "{}", transcript(&dump));
    let out = dir.path().join("eval.json");
    let output = patron(&["eval-recs", "--input", events, "--currency", "EUR", "--out", out.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", transcript(&output));
    let result: Value = serde_json::from_slice(&std::fs::read(&out).expect("result written")).expect("JSON");
    assert!(result["result"]["test_customers"].as_u64() > Some(5000), "{}", result["result"]);
    let patron_list = method(&result, "patron");
    let metric = |m: &Value, subset: &str, name: &str| m[subset][name].as_f64().unwrap_or(f64::NAN);
    for baseline in ["popularity", "buy_again"] {
        let b = method(&result, baseline);
        for name in ["hit_rate", "ndcg"] {
            assert!(metric(patron_list, "all", name) > metric(b, "all", name), "{baseline} {name}: {b}");
        }
    }
    let popular = method(&result, "popularity");
    for name in ["hit_rate", "ndcg"] {
        let (ours, theirs) = (metric(patron_list, "explore", name), metric(popular, "explore", name));
        assert!(ours > 1.1 * theirs, "discover vs popularity among new products, {name}: {ours} vs {theirs}");
    }
}
