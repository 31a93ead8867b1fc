//! The SQL endpoint of a real `patron serve`: the `.slt` files under
//! `tests/slt/` run over `POST /v1/sql` (Arrow IPC answers, so column types
//! are checked too), the real `psql` and a Python client read the same rows
//! over the PostgreSQL wire protocol, and a hostile corpus is refused or
//! bounded without touching a file.

use std::path::Path;
use std::process::Command;

use arrow::array::{Array, Float32Array, Float64Array};
use arrow::datatypes::DataType;
use patron_tests::{Server, load_cdnow, post_json, shop_server, workspace_root};
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SqlFailure(String);

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlFailure {}

/// A sqllogictest connection: `POST /v1/sql`, answers as Arrow IPC.
struct HttpSql {
    url: String,
}

/// Floats to at most 6 decimals without trailing zeros (`213`, `0.2426`).
fn float_text(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".to_owned();
    }
    match array.data_type() {
        DataType::Float64 => float_text(array.as_any().downcast_ref::<Float64Array>().unwrap().value(row)),
        DataType::Float32 => float_text(f64::from(array.as_any().downcast_ref::<Float32Array>().unwrap().value(row))),
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            let text = arrow::util::display::array_value_to_string(array, row).unwrap();
            float_text(text.parse().expect("a decimal reads as a number"))
        }
        DataType::Utf8 | DataType::Utf8View => match arrow::util::display::array_value_to_string(array, row).unwrap() {
            s if s.is_empty() => "(empty)".to_owned(),
            s => s.trim_end().to_owned(),
        },
        _ => arrow::util::display::array_value_to_string(array, row).unwrap(),
    }
}

fn column_type(ty: &DataType) -> DefaultColumnType {
    match ty {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || t.is_decimal() => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

impl sqllogictest::DB for HttpSql {
    type Error = SqlFailure;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlFailure> {
        let response = ureq::post(&format!("{}/v1/sql", self.url))
            .set("Accept", "application/vnd.apache.arrow.stream")
            .send_string(sql);
        let response = match response {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let body: serde_json::Value = r.into_json().unwrap_or_default();
                return Err(SqlFailure(format!(
                    "{code} {}: {}",
                    body["error"]["code"].as_str().unwrap_or("?"),
                    body["error"]["message"].as_str().unwrap_or("?")
                )));
            }
            Err(e) => panic!("{e}"),
        };
        let mut bytes = Vec::new();
        response.into_reader().read_to_end(&mut bytes).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let schema = reader.schema();
        let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            for row in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| cell(c.as_ref(), row)).collect());
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }
}

use std::io::Read;

pub(crate) fn run_slt_dir(dir: &Path, url: &str) {
    run_slt_dir_with(dir, url, sqllogictest::strict_column_validator);
}

/// Column types agree, where an integer and another number count as one
/// type: PostgreSQL answers `numeric` where DataFusion answers an integer or
/// a double of the same value (`extract(year …)` is `2026` in both).
#[allow(clippy::ptr_arg, reason = "the signature of sqllogictest::ColumnTypeValidator")]
fn same_kind_of_column(actual: &Vec<DefaultColumnType>, expected: &Vec<DefaultColumnType>) -> bool {
    let kind = |t: &DefaultColumnType| match t {
        DefaultColumnType::Integer | DefaultColumnType::FloatingPoint => DefaultColumnType::FloatingPoint,
        other => other.clone(),
    };
    actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| kind(a) == kind(e))
}

fn run_slt_dir_with(dir: &Path, url: &str, validator: sqllogictest::ColumnTypeValidator<DefaultColumnType>) {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "slt"));
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let url = url.to_owned();
        let mut runner = sqllogictest::Runner::new(move || {
            let url = url.clone();
            async move { Ok::<_, SqlFailure>(HttpSql { url }) }
        });
        runner.with_column_validator(validator);
        if let Err(e) = runner.run_file(&file) {
            panic!("{}:\n{}", file.display(), e.display(false));
        }
    }
}

#[test]
fn slt_files_over_cdnow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    run_slt_dir(&workspace_root().join("tests/slt/cdnow"), &server.url);
}

#[test]
fn slt_files_over_a_small_shop() {
    let dir = tempfile::tempdir().unwrap();
    let server = shop_server(dir.path());
    run_slt_dir(&workspace_root().join("tests/slt/shop"), &server.url);
}

/// Issue 21: the answers of a real PostgreSQL for date_trunc, extract,
/// intervals, casts, ILIKE, concatenation and more (`tests/slt/postgres/`,
/// expected rows written by its generate.py from PostgreSQL 15), over
/// `POST /v1/sql`.
#[test]
fn postgres_semantics_match_a_real_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let server = shop_server(dir.path());
    run_slt_dir_with(&workspace_root().join("tests/slt/postgres"), &server.url, same_kind_of_column);
}

/// `POST /v1/sql` as CSV.
fn http_csv(url: &str, sql: &str) -> String {
    ureq::post(&format!("{url}/v1/sql")).set("Accept", "text/csv").send_string(sql).unwrap().into_string().unwrap()
}

fn psql(server: &Server, password: Option<&str>, sql: &str) -> std::process::Output {
    let mut command = Command::new("psql");
    command
        .args(["-h", &server.pg.ip().to_string(), "-p", &server.pg.port().to_string(), "-U", "analyst", "-d", "patron"])
        .args(["-X", "-w", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGPASSWORD");
    if let Some(p) = password {
        command.env("PGPASSWORD", p);
    }
    command.output().expect("psql is installed (.ci/run installs postgresql-client)")
}

#[test]
fn psql_reads_the_same_rows_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    for sql in [
        "SELECT customer_id, orders, frequency, recency_days, tenure_days, revenue, rfm_segment, lifecycle_stage \
         FROM customers WHERE customer_id IN ('1', '2', '1000') ORDER BY customer_id",
        "SELECT rfm_segment, count(*) AS customers, round(avg(clv), 4) AS avg_clv FROM customers GROUP BY 1 ORDER BY 1",
        "SELECT model, param, round(value, 6) AS value FROM model_params ORDER BY model, param",
        "SELECT count(*) AS n, sum(orders) AS orders FROM customers",
        // Regression (issue 21): the pgwire library replaced a correlated
        // subquery in the select list with NULL; queries over Patron's tables
        // are now planned from the client's text, as over HTTP.
        "SELECT c.customer_id, (SELECT count(*) FROM customers o WHERE o.orders = c.orders) AS same_orders \
         FROM customers c WHERE c.customer_id IN ('1', '2', '1000') ORDER BY 1",
    ] {
        let output = psql(&server, None, sql);
        assert!(output.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&output.stderr));
        let from_psql = String::from_utf8(output.stdout).unwrap();
        let from_http = http_csv(&server.url, sql);
        assert_eq!(from_psql.trim(), from_http.trim(), "{sql}");
        assert!(from_psql.lines().count() > 1, "{sql} returned no rows");
    }
    // psql's own catalog queries: \dt lists the tables, \d describes one.
    let output = psql(&server, None, "\\dt");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for table in ["customers", "recommendations", "similar_products", "products", "model_params", "engine_stats"] {
        assert!(text.contains(table), "\\dt lacks {table}:\n{text}");
    }
    let output = psql(&server, None, "\\d customers");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("rfm_segment") && text.contains("double precision"), "{text}");
    // Read-only: refused with SQLSTATE 25006 and a clear message, server alive.
    let output = psql(&server, None, "DROP TABLE customers");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && error.contains("read-only"), "{error}");
    assert!(psql(&server, None, "SELECT 1").status.success());
}

/// Issue 21: psql's meta-commands answer: `\l`, `\dn`, `\dt`, `\dt+` (with
/// a description of every table), `\d` and `\d+` (with a comment on every
/// `customers` column, as `col_description` gives it).
#[test]
fn psql_meta_commands_describe_every_table_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let server = shop_server(dir.path());
    let run = |command: &str| {
        let output = psql(&server, None, command);
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(run("\\l").lines().any(|l| l.starts_with("datafusion,")), "\\l lists the database");
    assert!(run("\\dn").lines().any(|l| l.starts_with("public,")), "\\dn lists the schema");
    let tables =
        http_csv(&server.url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
    let tables: Vec<&str> = tables.lines().skip(1).collect();
    assert!(tables.len() >= 13, "{tables:?}");
    let listed = run("\\dt+");
    for table in &tables {
        let line =
            listed.lines().find(|l| l.split(',').nth(1) == Some(table)).unwrap_or_else(|| panic!("{table}:\n{listed}"));
        let description = line.rsplit(',').next().unwrap();
        assert!(description.len() > 10, "\\dt+ describes {table}: {line}");
    }
    let described = run("\\d+ customers");
    let expected = http_csv(
        &server.url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY ordinal_position",
    );
    let columns: Vec<&str> = expected.lines().skip(1).collect();
    for column in &columns {
        let line =
            described.lines().find(|l| l.starts_with(&format!("{column},"))).unwrap_or_else(|| panic!("{column}"));
        assert!(line.trim_end_matches('"').len() > column.len() + 40, "{column} has a comment: {line}");
    }
    assert!(described.contains("Lifetime value: discounted expected margin"), "{described}");
    assert!(run("\\d segment_definitions").contains("thresholds"));
    let comment = run(
        "SELECT col_description('customers'::regclass, 14) AS clv, obj_description('customers'::regclass, 'pg_class') AS t",
    );
    assert!(comment.contains("Lifetime value") && comment.contains("One row per customer"), "{comment}");
    // COPY … TO STDOUT (what psql's \\copy sends) writes what HTTP's CSV
    // holds; a cursor reads in parts; every COPY that would write is refused.
    let sql = "SELECT customer_id, orders, revenue FROM customers ORDER BY customer_id";
    let copied = run(&format!("COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)"));
    let over_http = http_csv(&server.url, sql);
    assert_eq!(copied.lines().count(), over_http.lines().count());
    for (copied, http) in copied.lines().zip(over_http.lines()) {
        // PostgreSQL writes 25 where the HTTP CSV writes 25.0: the same value.
        let same = |a: &str, b: &str| a == b || a.parse::<f64>().ok().is_some_and(|x| b.parse::<f64>().ok() == Some(x));
        assert!(copied.split(',').zip(http.split(',')).all(|(a, b)| same(a, b)), "{copied} vs {http}");
    }
    let fetched = run(&format!(
        "BEGIN; DECLARE shop CURSOR FOR {sql}; FETCH 2 FROM shop; FETCH 100 FROM shop; CLOSE shop; COMMIT"
    ));
    let expected = http_csv(&server.url, sql);
    let ids: Vec<&str> = expected.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert!(ids.len() > 2);
    for id in ids {
        assert!(fetched.contains(id), "{id} fetched:\n{fetched}");
    }
    for write in
        ["COPY customers FROM STDIN", "COPY customers TO '/tmp/patron-copy.csv'", "COPY customers TO PROGRAM 'true'"]
    {
        let output = psql(&server, None, write);
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && error.contains("not allowed"), "{write}: {error}");
    }
    assert!(!Path::new("/tmp/patron-copy.csv").exists());
}

#[test]
fn pgwire_passwords_are_query_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("patron.toml");
    std::fs::write(
        &config,
        "[[auth.tokens]]\ntoken = \"ingest-only-token-123456\"\nroles = [\"ingest\"]\n\
         [[auth.tokens]]\ntoken = \"query-token-1234567890\"\nroles = [\"query\"]\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let ok = psql(&server, Some("query-token-1234567890"), "SELECT count(*) FROM customers");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    for wrong in [None, Some("ingest-only-token-123456"), Some("nope")] {
        let output = psql(&server, wrong, "SELECT 1");
        assert!(!output.status.success(), "{wrong:?} was let in");
    }
    // Flight SQL: the same token as a bearer header.
    let args = |token: &str| {
        let mut a = vec![server.flight.ip().to_string(), server.flight.port().to_string()];
        a.push(token.to_owned());
        a
    };
    let answers =
        python_client("adbc_rows.py", &args("query-token-1234567890"), "SELECT count(*) AS n FROM customers\n");
    assert_eq!(answers[0]["rows"][0][0], 0);
    let refused = Command::new(patron_tests::python())
        .arg(workspace_root().join("tests/clients/adbc_rows.py"))
        .args(args("ingest-only-token-123456"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"SELECT 1\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && error.to_lowercase().contains("unauthenticated"), "{error}");
}

#[test]
fn the_memory_pool_bounds_a_query_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--currency", "USD", "--refit-interval", "3600", "--sql-memory", "200000"],
    );
    load_cdnow(&server);
    let sql = "SELECT a.customer_id, count(*) AS n FROM customers a JOIN customers b ON a.frequency = b.frequency \
               GROUP BY a.customer_id ORDER BY n DESC";
    let (status, body) = post_json(&format!("{}/v1/sql", server.url), "text/plain", sql);
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("query_memory")), "{body}");
    let (status, _) = post_json(&format!("{}/v1/sql", server.url), "text/plain", "SELECT count(*) FROM customers");
    assert_eq!(status, 200, "a small query still runs");
}

/// Rows of an HTTP JSON answer as arrays in `columns` order.
fn http_rows(url: &str, sql: &str, columns: &[String]) -> Vec<Vec<serde_json::Value>> {
    let (status, body) = post_json(&format!("{url}/v1/sql"), "text/plain", sql);
    assert_eq!(status, 200, "{sql}: {body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c).cloned().unwrap_or(serde_json::Value::Null)).collect())
        .collect()
}

fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[test]
fn psycopg_reads_the_same_rows_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let statements = [
        (
            "SELECT customer_id, frequency, recency_days, clv, p_alive, rfm_segment FROM customers WHERE customer_id = %s",
            Some("1"),
        ),
        ("SELECT rfm_segment, count(*) AS customers, avg(clv) AS avg_clv FROM customers GROUP BY 1 ORDER BY 1", None),
        ("SELECT model, param, value, customers FROM model_params ORDER BY model, param", None),
        ("SELECT customer_id, revenue, orders FROM customers WHERE revenue > 1000 ORDER BY customer_id", None),
        // Regression (issue 21): a correlated subquery in the select list read NULL over pgwire.
        (
            "SELECT c.customer_id, (SELECT count(*) FROM customers o WHERE o.orders = c.orders) AS same_orders \
             FROM customers c WHERE c.customer_id = %s",
            Some("1000"),
        ),
    ];
    let input: String = statements
        .iter()
        .map(|(sql, param)| match param {
            Some(p) => format!("{sql}\t{p}\n"),
            None => format!("{sql}\n"),
        })
        .collect();
    let args = [server.pg.ip().to_string(), server.pg.port().to_string()];
    let answers = python_client("psycopg_rows.py", &args, &input);
    assert_eq!(answers.len(), statements.len());
    for ((sql, param), answer) in statements.iter().zip(&answers) {
        let columns: Vec<String> =
            answer["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        let http_sql = match param {
            Some(p) => sql.replace("%s", &format!("'{p}'")),
            None => (*sql).to_owned(),
        };
        let expected = http_rows(&server.url, &http_sql, &columns);
        let got: Vec<Vec<serde_json::Value>> =
            answer["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect();
        assert!(!expected.is_empty(), "{sql} returned no rows");
        assert_eq!(got.len(), expected.len(), "{sql}");
        for (g, e) in got.iter().zip(&expected) {
            assert!(g.iter().zip(e).all(|(a, b)| same_value(a, b)), "{sql}: psycopg {g:?} vs HTTP {e:?}");
        }
    }
}

#[test]
fn hostile_sql_is_refused_or_bounded_and_touches_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--currency", "USD", "--refit-interval", "3600", "--sql-timeout", "2", "--sql-max-rows", "100000"],
    );
    load_cdnow(&server);
    let leak = dir.path().join("leak.csv");
    let leak_path = leak.to_str().unwrap();
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let corpus: Vec<(String, u16, &str)> = vec![
        ("CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'".into(), 403, "read_only"),
        (format!("COPY (SELECT * FROM customers) TO '{leak_path}'"), 403, "read_only"),
        (format!("COPY customers TO '{leak_path}' STORED AS CSV"), 403, "read_only"),
        ("INSERT INTO customers (customer_id) VALUES ('x')".into(), 403, "read_only"),
        ("DELETE FROM customers".into(), 403, "read_only"),
        ("UPDATE customers SET clv = 0".into(), 403, "read_only"),
        ("DROP TABLE customers".into(), 403, "read_only"),
        ("CREATE TABLE t AS SELECT 1".into(), 403, "read_only"),
        ("CREATE VIEW v AS SELECT * FROM customers".into(), 403, "read_only"),
        ("SELECT * INTO stolen FROM customers".into(), 403, "read_only"),
        ("SET datafusion.execution.target_partitions = 1".into(), 403, "read_only"),
        ("SELECT * FROM read_csv('/etc/passwd')".into(), 400, "sql_invalid"),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r".into(),
            400,
            "sql_invalid",
        ),
        (deep, 400, "sql_too_complex"),
        ("SELEC 1".into(), 400, "sql_syntax"),
        ("SELECT nope FROM customers".into(), 400, "sql_invalid"),
        ("SELECT * FROM nowhere".into(), 400, "sql_invalid"),
        ("SELECT 1; DROP TABLE customers".into(), 400, "sql_syntax"),
        ("".into(), 400, "sql_syntax"),
        ("SELECT count(*) FROM customers a, customers b, customers c".into(), 422, "query_timeout"),
        ("SELECT a.customer_id, b.customer_id FROM customers a, customers b".into(), 422, "too_many_rows"),
        (format!("SELECT '{}' AS s", "x".repeat(2 << 20)), 413, "sql_too_long"),
    ];
    for (sql, status, code) in &corpus {
        let started = std::time::Instant::now();
        let (got, body) = post_json(&format!("{}/v1/sql", server.url), "text/plain", sql);
        let shown: String = sql.chars().take(80).collect();
        assert_eq!((got, body["error"]["code"].as_str()), (*status, Some(*code)), "{shown}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap_or("").is_empty(), "{shown}: no message");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{shown} was not bounded");
        assert!(!body.to_string().contains("root:x:0:0"), "{shown} leaked /etc/passwd");
    }
    // The same refusals over pgwire. (Its PostgreSQL parser already rejects
    // DataFusion's `STORED AS CSV` syntax, with a syntax error.)
    let output = psql(&server, None, "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'");
    assert!(!output.status.success(), "CREATE EXTERNAL TABLE ran over pgwire");
    for sql in [
        format!("COPY (SELECT 1) TO '{leak_path}'"),
        "DROP TABLE customers".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ] {
        let output = psql(&server, None, &sql);
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && error.contains("read-only"), "{sql}: {error}");
    }
    assert!(!leak.exists(), "a COPY wrote {}", leak.display());
    // Still alive and unchanged.
    let (status, body) =
        post_json(&format!("{}/v1/sql", server.url), "text/plain", "SELECT count(*) AS n FROM customers");
    assert_eq!((status, body[0]["n"].as_u64()), (200, Some(2357)), "{body}");
}

#[test]
fn a_point_query_reads_one_record_not_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let rows_read = || -> f64 {
        let (_, body) = post_json(
            &format!("{}/v1/sql", server.url),
            "text/plain",
            "SELECT value FROM engine_stats WHERE name = 'sql_rows_read'",
        );
        body[0]["value"].as_f64().unwrap()
    };
    let before = rows_read();
    let (status, body) = post_json(
        &format!("{}/v1/sql", server.url),
        "text/plain",
        "SELECT customer_id, clv FROM customers WHERE customer_id = '1000'",
    );
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(1)), "{body}");
    assert_eq!(rows_read() - before, 1.0, "a point query must read exactly one record");
    let before = rows_read();
    post_json(&format!("{}/v1/sql", server.url), "text/plain", "SELECT count(*) FROM customers WHERE clv > 0");
    assert_eq!(rows_read() - before, 2357.0, "a filter on another column scans every record");
    // EXPLAIN shows the lookup in the plan.
    let (_, plan) = post_json(
        &format!("{}/v1/sql", server.url),
        "text/plain",
        "EXPLAIN SELECT * FROM customers WHERE customer_id IN ('1', '2')",
    );
    assert!(plan.to_string().contains("lookup customer_id (2 keys)"), "{plan}");
}

/// Runs a Python client script with `statements` on stdin; its JSON lines.
fn python_client(script: &str, args: &[String], statements: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new(patron_tests::python())
        .arg(workspace_root().join("tests/clients").join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(statements.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{script} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Issue 21: the PostgreSQL JDBC driver (pgjdbc, as DBeaver, Metabase and
/// Tableau use it) reads Patron unmodified: its version parse, the
/// `DatabaseMetaData` calls those tools make at connect time, a prepared
/// statement with parameters (past pgjdbc's switch to a named server-side
/// statement) and a result read with a fetch size, all equal to HTTP's.
#[test]
fn jdbc_metadata_prepared_statements_and_fetch_size_read_what_http_reads() {
    let jar = std::env::var("PATRON_PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_owned());
    assert!(Path::new(&jar).exists(), "pgjdbc at {jar} (tests/run installs Debian's libpostgresql-jdbc-java)");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let output = Command::new("java")
        .args(["-cp", &jar])
        .arg(workspace_root().join("tests/clients/JdbcRead.java"))
        .args([server.pg.ip().to_string(), server.pg.port().to_string(), "1000".to_owned()])
        .output()
        .expect("java runs (tests/run installs default-jdk-headless)");
    assert!(output.status.success(), "JdbcRead failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let answers: std::collections::HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('\t')).collect();
    let http = |sql: &str| http_csv(&server.url, sql).lines().skip(1).collect::<Vec<_>>().join(",");

    assert_eq!(answers["product"], "PostgreSQL 16.6 (Patron 0.1.0)");
    assert_eq!(answers["major"], "16");
    let tables =
        http("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    assert!(tables.contains("customers") && tables.contains("segment_definitions"), "{tables}");
    assert_eq!(answers["tables"], tables);
    let columns: Vec<&str> = answers["columns"].split(',').collect();
    let names = http(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY ordinal_position",
    );
    assert_eq!(columns.iter().map(|c| c.split(':').next().unwrap()).collect::<Vec<_>>().join(","), names);
    for typed in
        ["customer_id:text", "orders:int8", "clv:float8", "rfm_r:int4", "consent_email:bool", "updated_at:timestamp"]
    {
        assert!(columns.contains(&typed), "{typed} in {columns:?}");
    }
    assert_eq!(answers["prepared"], http("SELECT customer_id, orders, clv FROM customers WHERE customer_id = '1000'"));
    assert_eq!(answers["fetched"], http("SELECT count(*), sum(orders) FROM customers"));
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Issue 21: `COPY … TO STDOUT` and a named (server-side) psycopg cursor
/// stream a million rows (over 100 MB of text) while the server's resident
/// memory, sampled every 10 ms, grows by less than 64 MiB: the answer is
/// never held whole. The same answer over HTTP is refused by its result
/// limit, which is what the bulk paths are for.
#[test]
fn copy_to_stdout_and_a_named_cursor_stream_a_million_rows_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let sql = "SELECT c.customer_id, g.value AS n, repeat('x', 100) AS pad \
               FROM customers c CROSS JOIN generate_series(1, 430) AS g(value)";
    let expected: u64 =
        http_csv(&server.url, &format!("SELECT count(*) FROM ({sql})")).lines().nth(1).unwrap().parse().unwrap();
    assert!(expected > 1_000_000, "{expected}");
    let (status, body) = post_json(&format!("{}/v1/sql", server.url), "text/plain", sql);
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("too_many_rows")), "HTTP refuses it whole: {body}");
    for mode in ["copy", "cursor"] {
        let before = resident_bytes(server.pid());
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, done, pid) = (peak.clone(), done.clone(), server.pid());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(resident_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
        };
        let output = Command::new(patron_tests::python())
            .arg(workspace_root().join("tests/clients/bulk_read.py"))
            .args([&server.pg.ip().to_string(), &server.pg.port().to_string(), mode, sql])
            .output()
            .unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap();
        assert!(output.status.success(), "{mode}: {}", String::from_utf8_lossy(&output.stderr));
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer["rows"].as_u64(), Some(expected), "{mode}");
        assert!(answer["bytes"].as_u64().unwrap() > 100_000_000, "{mode}: {answer}");
        assert_eq!(answer["first"][2].as_str().map(str::len), Some(100), "{mode}");
        let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
        assert!(growth < 64 << 20, "{mode}: the server grew by {} MiB while streaming", growth >> 20);
    }
}

/// Issue 21: SQLAlchemy's psycopg dialect connects unmodified (it parses
/// `version()` and looks types up with `to_regtype` inside savepoints), and
/// `pandas.read_sql` through it reads what HTTP reads. psql sees the same
/// release in `SHOW server_version`.
#[test]
fn sqlalchemy_and_pandas_connect_unmodified_and_read_what_http_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = shop_server(dir.path());
    let sql = "SELECT customer_id, orders, revenue, clv FROM customers ORDER BY customer_id";
    let args = [server.pg.ip().to_string(), server.pg.port().to_string(), sql.to_owned()];
    let answer = python_client("sqlalchemy_read.py", &args, "").pop().expect("one answer");
    assert_eq!(answer["server_version_info"], serde_json::json!([16, 6]), "{answer}");
    assert!(answer["version"].as_str().unwrap().starts_with("PostgreSQL 16.6 (Patron "), "{answer}");
    let columns: Vec<String> =
        answer["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(columns, ["customer_id", "orders", "revenue", "clv"]);
    let expected = http_rows(&server.url, sql, &columns);
    let got = answer["rows"].as_array().unwrap();
    assert_eq!(got.len(), expected.len(), "{answer}");
    for (g, e) in got.iter().zip(&expected) {
        let g = g.as_array().unwrap();
        assert!(g.iter().zip(e).all(|(a, b)| same_value(a, b)), "pandas {g:?} vs HTTP {e:?}");
    }
    let psql = Command::new("psql")
        .args(["-h", &server.pg.ip().to_string(), "-p", &server.pg.port().to_string(), "-U", "analyst"])
        .args(["-d", "patron", "-X", "-A", "-t", "-c", "SHOW server_version"])
        .args(["-c", "BEGIN", "-c", "SAVEPOINT a", "-c", "SELECT to_regtype('int4')", "-c", "RELEASE SAVEPOINT a"])
        .args(["-c", "SELECT to_regtype('no_such_type') IS NULL", "-c", "SAVEPOINT b", "-c", "ROLLBACK TO SAVEPOINT b"])
        .args(["-c", "SELECT 1", "-c", "COMMIT"])
        .output()
        .expect("psql is installed");
    let text = String::from_utf8_lossy(&psql.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["16.6 (Patron 0.1.0)", "BEGIN", "SAVEPOINT", "23", "RELEASE", "t", "SAVEPOINT", "ROLLBACK", "1", "COMMIT"],
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
}

#[test]
fn adbc_flight_sql_reads_the_same_rows_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let statements = [
        "SELECT customer_id, frequency, recency_days, clv, rfm_segment FROM customers WHERE customer_id IN ('1', '7') ORDER BY 1",
        "SELECT rfm_segment, count(*) AS customers, avg(clv) AS avg_clv FROM customers GROUP BY 1 ORDER BY 1",
        "SELECT model, param, value FROM model_params ORDER BY model, param",
    ];
    let args = [server.flight.ip().to_string(), server.flight.port().to_string()];
    let answers = python_client("adbc_rows.py", &args, &statements.join("\n"));
    assert_eq!(answers.len(), statements.len());
    for (sql, answer) in statements.iter().zip(&answers) {
        let columns: Vec<String> =
            answer["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        let expected = http_rows(&server.url, sql, &columns);
        let got: Vec<Vec<serde_json::Value>> =
            answer["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect();
        assert!(!expected.is_empty(), "{sql} returned no rows");
        assert_eq!(got.len(), expected.len(), "{sql}");
        for (g, e) in got.iter().zip(&expected) {
            assert!(g.iter().zip(e).all(|(a, b)| same_value(a, b)), "{sql}: ADBC {g:?} vs HTTP {e:?}");
        }
    }
    // Refusals reach the client as errors.
    let refused = Command::new(patron_tests::python())
        .arg(workspace_root().join("tests/clients/adbc_rows.py"))
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"DROP TABLE customers\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && error.contains("read-only"), "{error}");
}

#[test]
fn patron_query_prints_tables_csv_and_json_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--currency", "USD", "--refit-interval", "3600"]);
    load_cdnow(&server);
    let sql = "SELECT customer_id, frequency, recency_days FROM customers WHERE customer_id IN ('1', '2') ORDER BY 1";
    let table = patron_tests::patron(&["query", "--url", &server.url, sql]);
    let text = patron_tests::transcript(&table);
    assert!(table.status.success(), "{text}");
    assert!(text.contains("| customer_id | frequency | recency_days |") && text.contains("(2 rows)"), "{text}");
    let csv = patron_tests::patron(&["query", "--url", &server.url, "--format", "csv", sql]);
    assert_eq!(String::from_utf8_lossy(&csv.stdout), "customer_id,frequency,recency_days\n1,2,213.0\n2,1,12.0\n");
    let json = patron_tests::patron(&["query", "--url", &server.url, "--format", "json", sql]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["recency_days"], 213.0, "{rows}");
    // A refused statement: a clear message and a failing exit status.
    let refused = patron_tests::patron(&["query", "--url", &server.url, "DELETE FROM customers"]);
    let text = patron_tests::transcript(&refused);
    assert!(!refused.status.success() && text.contains("403") && text.contains("read-only"), "{text}");
    // Offline on the same data directory once the server is gone.
    server.kill_dash_nine();
    let offline =
        patron_tests::query_offline(&data, &["--currency", "USD"], "csv", "SELECT count(*) AS n FROM customers");
    assert_eq!(String::from_utf8_lossy(&offline.stdout), "n\n2357\n", "{}", patron_tests::transcript(&offline));
}
