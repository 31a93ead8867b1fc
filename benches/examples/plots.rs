//! SVG plots for `bench-results/README.md` (the capacity report), drawn from
//! the newest result files:
//! - `throughput_over_time.svg`: accepted events/s second by second of the
//!   newest closed-loop and half-peak `patron loadgen` runs;
//! - `latency_cdf.svg`: HTTP latency and event → visible freshness of those
//!   runs by percentile, on a "nines" axis (90 %, 99 %, 99.9 %, …);
//! - `scaling_customers.svg`, `scaling_memory.svg`, `scaling_shards.svg`:
//!   the newest scaling study (`benches/examples/scaling.rs`).
//!
//! Run: `cargo run --release -p patron-benches --example plots -- [bench-results]`
//! (`benches/report.sh` does it before regenerating the README).

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

type Res<T> = Result<T, Box<dyn Error>>;

const SIZE: (u32, u32) = (760, 420);
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// The newest file in `dir` whose name ends with `suffix` (names start with a UTC time stamp).
fn newest(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix) && !n.ends_with(".meta.json"))
        })
        .collect();
    files.sort();
    files.pop()
}

fn read_json(path: &Path) -> Res<Value> {
    Ok(serde_json::from_slice(&std::fs::read(path)?).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// 1.2M, 250k, 37, 0.5: axis labels a reader takes in at a glance.
fn human(v: f64) -> String {
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    match v.abs() {
        a if a >= 1e6 => format!("{}M", trim(format!("{:.1}", v / 1e6))),
        a if a >= 1e3 => format!("{}k", trim(format!("{:.1}", v / 1e3))),
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => trim(format!("{v:.2}")),
    }
}

/// One named line.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Draws `lines` on linear axes (or a log x axis) into `path`.
fn chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, log_x: bool, lines: &[Line]) -> Res<()> {
    let points = lines.iter().flat_map(|l| l.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        (x0, x1, y1) = (x0.min(x), x1.max(x), y1.max(y));
    }
    if !x0.is_finite() {
        return Err(format!("{title}: nothing to plot").into());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|x| human(*x))
                .y_label_formatter(&|y| human(*y))
                .draw()?;
            for (i, line) in lines.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(line.points.iter().copied(), colour.stroke_width(2)))?
                    .label(line.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }};
    }
    if log_x {
        draw!(builder.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, 0.0..y1)?);
    }
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

fn loadgen_plots(results: &Path, out: &Path) -> Res<()> {
    let dir = results.join("loadgen");
    let runs: Vec<(&str, PathBuf)> = [("closed loop", "-closed-loop.json"), ("half peak", "-half-peak.json")]
        .into_iter()
        .filter_map(|(name, suffix)| newest(&dir, suffix).map(|p| (name, p)))
        .collect();
    if runs.is_empty() {
        println!("no loadgen runs in {}", dir.display());
        return Ok(());
    }
    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    for (name, path) in &runs {
        let run = read_json(path)?;
        let ticks = run["report"]["timeline"].as_array().cloned().unwrap_or_default();
        throughput.push(Line {
            name: format!("{name} ({})", path.file_name().and_then(|n| n.to_str()).unwrap_or("")),
            points: ticks.iter().map(|t| (f(&t["second"]), f(&t["accepted_per_s"]))).collect(),
        });
        for (histogram, label) in [("http_latency_ms", "HTTP"), ("freshness_ms", "event → visible")] {
            let cdf = run[histogram]["cdf"].as_array().cloned().unwrap_or_default();
            // Percentile q on a "nines" axis: 1 + −log10(1 − q), so 90 % is 2, 99 % is 3; the maximum at 6.
            let points: Vec<(f64, f64)> = cdf
                .iter()
                .map(|p| (f(&p[0]), f(&p[1])))
                .map(|(q, ms)| (1.0 + if q >= 1.0 { 5.0 } else { -(1.0 - q).log10() }, ms))
                .collect();
            if !points.is_empty() {
                latency.push(Line { name: format!("{label}, {name}"), points });
            }
        }
    }
    chart(
        &out.join("throughput_over_time.svg"),
        "Accepted events/s, second by second (patron loadgen)",
        "seconds since start",
        "events/s",
        false,
        &throughput,
    )?;
    if !latency.is_empty() {
        chart(
            &out.join("latency_cdf.svg"),
            "Latency by percentile (x: 1 = p0, 2 = p90, 3 = p99, 4 = p99.9, 5 = p99.99, 6 = max)",
            "nines",
            "ms",
            false,
            &latency,
        )?;
    }
    Ok(())
}

fn scaling_plots(results: &Path, out: &Path) -> Res<()> {
    let Some(path) = newest(&results.join("scaling"), ".json") else {
        println!("no scaling study in {}", results.join("scaling").display());
        return Ok(());
    };
    let study = read_json(&path)?;
    let points: Vec<&Value> = study.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let axis = |name: &str| -> Vec<&Value> {
        let mut p: Vec<&Value> = points.iter().filter(|p| p["axis"] == name).map(|p| &p["point"]).collect();
        p.sort_by(|a, b| f(&a["customers"]).total_cmp(&f(&b["customers"])));
        p
    };
    let customers = axis("customers");
    let line = |pts: &[&Value], x: &str, y: &str, name: &str, scale: f64| Line {
        name: name.into(),
        points: pts.iter().map(|p| (f(&p[x]), f(&p[y]) * scale)).collect(),
    };
    if !customers.is_empty() {
        chart(
            &out.join("scaling_customers.svg"),
            "In-process ingest by customers in state (2 shards, durable)",
            "customers",
            "events/s",
            true,
            &[
                line(&customers, "customers", "submit_per_s", "log + apply + rescore (submit)", 1.0),
                line(&customers, "customers", "decode_per_s", "JSON decode + validate", 1.0),
                line(&customers, "customers", "combined_per_s", "both on the same cores", 1.0),
            ],
        )?;
        chart(
            &out.join("scaling_memory.svg"),
            "Recovered state: bytes per customer, recovery seconds × 100",
            "customers",
            "bytes per customer  /  s × 100",
            true,
            &[
                line(&customers, "customers", "recovered_bytes_per_customer", "bytes per customer (RSS)", 1.0),
                line(&customers, "customers", "recovery_s", "recovery seconds × 100", 100.0),
            ],
        )?;
    }
    let mut shards = axis("shards");
    // The customers axis's point at the same shop size is the default shard count.
    let shop = shards.first().map(|s| f(&s["shop_customers"]));
    shards.extend(customers.iter().filter(|p| Some(f(&p["shop_customers"])) == shop));
    shards.sort_by(|a, b| f(&a["shards"]).total_cmp(&f(&b["shards"])));
    if shards.len() > 1 {
        chart(
            &out.join("scaling_shards.svg"),
            "In-process ingest by shard count (1M-customer shop)",
            "shards",
            "events/s",
            false,
            &[
                line(&shards, "shards", "submit_per_s", "log + apply + rescore (submit)", 1.0),
                line(&shards, "shards", "combined_per_s", "with decode on the same cores", 1.0),
            ],
        )?;
    }
    Ok(())
}

fn main() -> Res<()> {
    patron_alloc::configure();
    let results = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "bench-results".into()));
    let out = results.join("plots");
    std::fs::create_dir_all(&out)?;
    loadgen_plots(&results, &out)?;
    scaling_plots(&results, &out)?;
    Ok(())
}
