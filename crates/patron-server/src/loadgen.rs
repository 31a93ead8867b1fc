//! `patron loadgen`: the capacity harness's command line (see `patron_loadgen`).
//! Shows a progress bar with the live rate and writes one JSON result per run,
//! with the machine, the commit, the full command and the configuration.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use patron_loadgen::{Live, LoadConfig, LoadReport};
use serde_json::json;

use crate::cli::LoadgenArgs;

fn config_of(args: &LoadgenArgs) -> Result<LoadConfig> {
    let (duration, warmup) = (args.duration, args.warmup);
    if warmup >= duration {
        anyhow::bail!("--warmup ({warmup:?}) must be shorter than --duration ({duration:?})");
    }
    Ok(LoadConfig {
        url: args.url.clone(),
        rate: args.rate,
        duration,
        warmup,
        customers: args.customers.max(1),
        products: args.products.max(1),
        connections: args.connections,
        batch: args.batch,
        malformed_share: args.malformed,
        duplicate_share: args.duplicates,
        responses: args.campaign.clone().zip(args.responses),
        marker_every: args.marker_every,
        token: args.token.clone(),
        server_pid: args.server_pid,
        seed: args.seed,
        planted_tastes: args.planted_tastes,
        sql_every: args.sql_every,
        sql: args.sql.clone(),
        prebuild_bytes: args.prebuild_mb.saturating_mul(1 << 20),
    })
}

/// `bench-results/loadgen/<UTC time>-<host>-<commit>.json`.
fn default_out(commit: &str) -> std::path::PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let stamp = patron_model::Timestamp::now().to_rfc3339().replace([':', '-'], "");
    let stamp = stamp.split('.').next().unwrap_or("run").to_owned();
    std::path::PathBuf::from("bench-results/loadgen").join(format!("{stamp}-{host}-{commit}.json"))
}

pub(crate) fn run(args: &LoadgenArgs) -> Result<()> {
    let config = config_of(args)?;
    if let (Some(path), Some(events)) = (&args.dump, args.events) {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let dumped = patron_loadgen::dump(&config, events, &mut std::io::BufWriter::new(file))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "wrote {} events to {} ({} malformed and {} duplicates on purpose)",
            dumped.events,
            path.display(),
            dumped.malformed,
            dumped.duplicates
        );
        return Ok(());
    }
    let live = Live::default();
    let bar = ProgressBar::new(config.duration.as_millis() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut started = Instant::now();
    let report = std::thread::scope(|scope| {
        let running = scope.spawn(|| patron_loadgen::run(&config, &live));
        let (mut last, mut last_at) = (0u64, Instant::now());
        while !running.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            let accepted = live.accepted.load(Ordering::Relaxed);
            if live.sent.load(Ordering::Relaxed) == 0 {
                bar.set_message(format!("building request bodies: {} events", live.prebuilt.load(Ordering::Relaxed)));
                bar.tick();
                (last_at, started) = (Instant::now(), Instant::now());
                continue;
            }
            if last_at.elapsed() >= Duration::from_secs(1) {
                let rate = (accepted - last) as f64 / last_at.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "{rate:>10.0} events/s accepted · {} sent · {} failed requests",
                    live.sent.load(Ordering::Relaxed),
                    live.failed.load(Ordering::Relaxed)
                ));
                (last, last_at) = (accepted, Instant::now());
            }
            bar.set_position(started.elapsed().as_millis() as u64);
        }
        running.join().map_err(|_| anyhow::anyhow!("the load generator panicked"))
    })??;
    bar.finish_and_clear();
    print_report(&report);
    let commit = crate::provenance::commit();
    let out = args.out.clone().unwrap_or_else(|| default_out(&commit));
    let result = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "commit": commit,
        "machine": crate::provenance::machine(),
        "config": {
            "url": config.url, "rate": config.rate, "duration_s": config.duration.as_secs_f64(),
            "warmup_s": config.warmup.as_secs_f64(),
            "customers": config.customers, "products": config.products, "connections": config.connections,
            "batch": config.batch, "malformed_share": config.malformed_share,
            "duplicate_share": config.duplicate_share,
            "responses": config.responses.as_ref().map(|(campaign, share)| serde_json::json!({"campaign": campaign, "share": share})), "marker_every_ms": config.marker_every.as_millis() as u64,
            "server_pid": config.server_pid, "seed": config.seed,
            "sql_every_ms": config.sql_every.map(|d| d.as_millis() as u64),
            "sql": config.sql_every.map(|_| config.sql.clone()),
            "prebuild_bytes": config.prebuild_bytes,
        },
        "events_per_s": report.events_per_s,
        "server_cpu_us_per_event": report.server_cpu_us_per_event,
        "http_latency_ms": report.http_latency_ms,
        "freshness_ms": report.freshness_ms,
        "sql_latency_ms": report.sql_latency_ms,
        "rejected": report.rejected,
        "peak_rss_bytes": report.peak_rss_bytes,
        "report": report,
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn print_report(r: &LoadReport) {
    println!(
        "{:.0} events/s accepted (durable) over {:.1}s: {} sent, {} accepted, {} duplicates, {} rejected \
         ({} malformed and {} duplicates sent on purpose), {} overload retries, {} failed requests, \
         {} refunds sent again after overtaking their order",
        r.events_per_s,
        r.seconds,
        r.sent,
        r.accepted,
        r.duplicates,
        r.rejected,
        r.malformed_sent,
        r.duplicates_sent,
        r.overload_retries,
        r.failed_requests,
        r.refunds_resent
    );
    let line = |name: &str, p: &patron_loadgen::Percentiles| {
        println!(
            "{name:<22} p50 {:>8.2} ms  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2}  ({} samples)",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        );
    };
    line("HTTP latency", &r.http_latency_ms);
    line("event → visible", &r.freshness_ms);
    if let Some(sql) = &r.sql_latency_ms {
        line("analyst SQL", sql);
        let lock = r.server_max_scan_lock_ms.map_or_else(|| "unknown".to_owned(), |ms| format!("{ms:.2} ms"));
        println!("analyst: {} failed queries; longest shard lock a scan held on the server: {lock}", r.sql_failures);
    }
    println!(
        "client: {} shops generated; at worst a batch left {:.1} ms after its scheduled time",
        r.shops, r.max_send_delay_ms
    );
    if let Some(ms) = r.server_max_sync_ms {
        println!("server: slowest log fdatasync since start {ms:.1} ms");
    }
    if r.markers_lost > 0 {
        println!("{} freshness markers never became visible within 10 s", r.markers_lost);
    }
    match (r.peak_rss_bytes, r.server_cpu_seconds) {
        (Some(rss), Some(cpu)) => println!(
            "server: peak RSS {:.1} MiB, {cpu:.1} CPU seconds, {:.2} µs of CPU per accepted event",
            rss as f64 / 1048576.0,
            r.server_cpu_us_per_event.unwrap_or(f64::NAN)
        ),
        _ => println!("server RSS and CPU: pass --server-pid to measure them"),
    }
    println!(
        "client: {} events in bodies built before the clock started, the rest built while sending",
        r.prebuilt_events
    );
}
