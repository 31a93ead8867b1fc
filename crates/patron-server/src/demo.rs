//! `patron demo`: the zero-setup main job. Starts the engine and its HTTP API
//! on embedded defaults, streams a realistic synthetic shop (see
//! `patron_workload::EventStream`) through the same validation and durable
//! log as real producers, and shows a live one-screen summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use patron_model::{CurrencyTable, EventSink, Validator};
use patron_state::{Engine, ScoringConfig};
use patron_workload::{EventStream, ShopConfig};

use crate::cli::DemoArgs;
use crate::config::Auth;
use crate::http::IngestLimits;
use crate::runtime::{SqlListeners, app_state, init_logging, listen_addrs, open_engine, serve, shutdown_signal};
use crate::units::DEFAULT_HORIZON;
use patron_sql::SqlLimits;

pub(crate) fn run(args: &DemoArgs) -> Result<()> {
    init_logging("warn");
    let (addr, pg_addr, flight_addr) = listen_addrs(&args.listen, &Auth::default())?;
    let currencies = CurrencyTable::default();
    let scoring = ScoringConfig { model: args.model.into(), ..ScoringConfig::default() };
    let engine = open_engine(
        &args.data_dir,
        currencies.clone(),
        scoring,
        None,
        None,
        patron_state::Clock::Event,
        DEFAULT_HORIZON,
    )?;
    let state = app_state(
        engine,
        currencies,
        IngestLimits { body_limit: 16 << 20, max_inflight_bytes: 256 << 20 },
        Auth::default(),
        SqlLimits::default(),
    )?;
    let runtime = crate::runtime::runtime()?;
    runtime.block_on(async {
        let pg = SqlListeners::bind(pg_addr, flight_addr, &state, None).await?;
        let pg_at = pg.pg_addr()?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        println!("{}", pg.banner());
        println!("listening on {url}");
        let _ = std::io::stdout().flush();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(serve(
            state.clone(),
            listener,
            Some(pg),
            Duration::from_secs(10),
            Duration::from_secs(60),
            None,
            async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            },
        ));
        let engine = state.engine().clone();
        let (rate, customers, duration, seed, data_dir) =
            (args.rate.max(1), args.customers.max(1), args.duration, args.seed, args.data_dir.clone());
        let uplift = (args.campaign_uplift >= 0.0).then_some(args.campaign_uplift);
        let serve_after = args.serve_after.unwrap_or_else(|| std::io::stdout().is_terminal());
        let url_for_stream = url.clone();
        let interrupted = stop_rx.clone();
        let streaming = tokio::task::spawn_blocking(move || {
            let links = Links { url: url_for_stream, pg: pg_at, serve_after };
            let shop = Shop { rate, customers, duration, seed, uplift };
            stream(&engine, &links, &data_dir.display().to_string(), &shop, || {
                interrupted.has_changed().unwrap_or(true)
            })
        });
        tokio::select! {
            result = streaming => result.context("demo stream panicked")??,
            () = shutdown_signal() => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return anyhow::Ok(());
            }
        }
        if serve_after {
            println!("\nStill serving on {url} (status page: {url}/) — try the lines above. Ctrl-C to stop.");
            let _ = std::io::stdout().flush();
            shutdown_signal().await;
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        anyhow::Ok(())
    })
}

/// Where the demo's API listens, for the "Try:" lines.
struct Links {
    url: String,
    pg: std::net::SocketAddr,
    /// Whether the API keeps serving after the stream: the final summary
    /// offers the "Try:" lines only then, never for a server that has stopped.
    serve_after: bool,
}

/// What the demo streams.
struct Shop {
    rate: u64,
    customers: usize,
    duration: Duration,
    seed: u64,
    /// The planted campaign's uplift (`None`: no campaign).
    uplift: Option<f64>,
}

/// The demo's campaign (see `DemoArgs::campaign_uplift`).
const DEMO_CAMPAIGN: &str = "demo-winback";

/// Creates the demo's campaign over the demo's own API, as a marketer would,
/// and plants its effect on the treatment members the server chose. Returns
/// the line to print.
fn start_campaign(engine: &Engine, links: &Links, events: &mut EventStream, uplift: f64) -> Result<String> {
    let starts_at = engine.watermark().context("no events yet")?;
    let body = serde_json::json!({
        "campaign_id": DEMO_CAMPAIGN,
        "name": "Win back buyers by e-mail (demo)",
        "channel": "email",
        "audience_sql": "SELECT customer_id FROM customers WHERE orders >= 1",
        "control_share": 0.3,
        "cost_per_contact": "0.05",
        "starts_at": starts_at.to_rfc3339(),
    });
    let created: serde_json::Value = ureq::post(&format!("{}/v1/campaigns", links.url))
        .send_json(body)
        .map_err(|e| anyhow::anyhow!("creating the demo campaign: {e}"))?
        .into_json()?;
    let treated: Vec<String> = engine
        .with_books(|book| {
            book.campaigns()
                .members()
                .filter(|(_, m)| &*m.campaign_id == DEMO_CAMPAIGN && m.group == patron_campaign::Group::Treatment)
                .map(|(c, _)| c.as_str().to_owned())
                .collect::<Vec<_>>()
        })?
        .concat();
    let reached = events.plant_campaign(DEMO_CAMPAIGN, treated, uplift, starts_at.millis());
    Ok(format!(
        "campaign {DEMO_CAMPAIGN}: {} members ({reached} treatment) of {} buyers, {} left out without e-mail consent; planted uplift {:.0}%",
        created["members"],
        created["audience"],
        created["excluded_no_consent"],
        uplift * 100.0
    ))
}

fn stream(
    engine: &Arc<Engine>,
    links: &Links,
    data_dir: &str,
    shop: &Shop,
    interrupted: impl Fn() -> bool,
) -> Result<()> {
    let Shop { rate, customers, duration, seed, uplift } = *shop;
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let config = ShopConfig { customers, id_prefix: format!("d{run_id}"), ..ShopConfig::default() };
    let mut events = EventStream::new(config, seed);
    let mut campaign: Option<String> = None;
    let validator = Validator { max_ahead_ms: i64::MAX / 4, ..Validator::new(CurrencyTable::default()) };
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1) as usize;
    let (mut sent, mut last_print, mut last_accepted, mut last_print_at) = (0u64, Instant::now(), 0u64, Instant::now());
    while started.elapsed() < duration && !interrupted() {
        let tick_started = Instant::now();
        if let Some(uplift) = uplift.filter(|_| campaign.is_none() && started.elapsed() >= duration / 2) {
            let line = start_campaign(engine, links, &mut events, uplift)
                .unwrap_or_else(|e| format!("campaign {DEMO_CAMPAIGN} not started: {e}"));
            campaign = Some(line);
        }
        let batch: Vec<_> =
            events.by_ref().take(per_tick).filter_map(|line| validator.decode(line.as_bytes()).ok()).collect();
        if batch.is_empty() {
            break;
        }
        sent += batch.len() as u64;
        engine.submit(batch).map_err(|e| anyhow::anyhow!("the engine refused events: {e}"))?;
        if last_print.elapsed() >= Duration::from_secs(1) {
            let accepted = engine.stats().accepted.load(Ordering::Relaxed);
            let per_second = (accepted - last_accepted) as f64 / last_print_at.elapsed().as_secs_f64();
            print_summary(engine, links, data_dir, per_second, sent, started.elapsed(), Frame::Live { clear: tty })?;
            if let Some(line) = &campaign {
                println!("\n  {line}");
            }
            (last_print, last_accepted, last_print_at) = (Instant::now(), accepted, Instant::now());
        }
        if let Some(rest) = tick.checked_sub(tick_started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let _ = engine.refit();
    let average = engine.stats().accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    print_summary(engine, links, data_dir, average, sent, started.elapsed(), Frame::Last)?;
    if let Some(line) = &campaign {
        let shown = ureq::get(&format!("{}/v1/campaigns/{DEMO_CAMPAIGN}", links.url))
            .call()
            .ok()
            .and_then(|r| r.into_json::<serde_json::Value>().ok());
        println!("\n  {line}");
        if let Some(shown) = shown {
            print!("{}", crate::campaign_cli::campaign_text(&shown));
        }
        println!("  (patron campaign show {DEMO_CAMPAIGN}, or SELECT * FROM campaign_results, for more)");
    }
    Ok(())
}

/// Which summary is printed.
#[derive(Clone, Copy)]
enum Frame {
    /// Once a second while streaming; `clear` redraws a terminal in place.
    Live { clear: bool },
    /// After the stream, with the averaged rate.
    Last,
}

fn print_summary(
    engine: &Engine,
    links: &Links,
    data_dir: &str,
    per_second: f64,
    sent: u64,
    elapsed: Duration,
    frame: Frame,
) -> Result<()> {
    let stats = engine.stats();
    let mut segments: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut top: Vec<(f64, f64, String)> = Vec::new();
    let customers: usize = engine
        .with_books(|book| {
            for r in book.records().iter() {
                if let Some(s) = r.segments() {
                    *segments.entry(s.rfm_segment.as_str()).or_default() += 1;
                }
                if let Some(s) = r.scores() {
                    top.push((s.clv, s.p_alive, r.customer_id().to_owned()));
                }
            }
            book.len()
        })?
        .iter()
        .sum();
    top.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut segments: Vec<_> = segments.into_iter().collect();
    segments.sort_by_key(|s| std::cmp::Reverse(s.1));
    let models = engine.models();
    let model_line = match &models.fits {
        Some(fits) => fits
            .purchase
            .iter()
            .find_map(|(m, f)| f.as_ref().ok().filter(|_| Some(*m) == Some(models.scorer.purchase().model())))
            .map_or("fitted".to_owned(), |f| {
                let p: Vec<String> = f.params.named().iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
                format!("{} {} (days), LL {:.0}", f.params.model(), p.join(" "), f.log_likelihood)
            }),
        None => "provisional defaults (first fit after ~10 s)".to_owned(),
    };
    let syncs = engine.wal_stats().map_or(0, |w| w.syncs.load(Ordering::Relaxed));
    let sync_ms =
        engine.wal_stats().map_or(0.0, |w| w.sync_nanos.load(Ordering::Relaxed) as f64 / 1e6 / syncs.max(1) as f64);
    let mut out = String::new();
    if let Frame::Live { clear: true } = frame {
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "Patron demo — a synthetic shop streaming into {data_dir}   ({:.0} s)\n\n",
        elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "  events/s {:>8.0}   sent {:>9}   accepted {:>9}   duplicates {}\n",
        per_second,
        sent,
        stats.accepted.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "  customers {:>7}   event time {}   log syncs {} (avg {:.2} ms)\n",
        customers,
        engine.watermark().map_or("-".into(), |w| w.to_rfc3339()[..10].to_owned()),
        syncs,
        sync_ms
    ));
    out.push_str(&format!("  model     {model_line}\n\n  top segments  "));
    let seg: Vec<String> = segments.iter().take(5).map(|(s, n)| format!("{s} {n}")).collect();
    out.push_str(&if seg.is_empty() { "(after the first fit)".to_owned() } else { seg.join(" · ") });
    out.push_str("\n  top CLV       ");
    let best: Vec<String> =
        top.iter().take(3).map(|(clv, p, id)| format!("{id} (clv {clv:.2}, p_alive {p:.2})")).collect();
    out.push_str(&best.join("  "));
    let example = top.first().map_or("d0-c0".to_owned(), |t| t.2.clone());
    let (url, host, port) = (&links.url, links.pg.ip(), links.pg.port());
    if let Frame::Last = frame
        && !links.serve_after
    {
        out.push_str(&format!(
            "\n\n  The demo has stopped; its data stays in {data_dir}. To look again:\n    \
             patron serve --data-dir {data_dir}        (the API, SQL and the status page again)\n    \
             patron query --data-dir {data_dir} 'SELECT rfm_segment, count(*) FROM customers GROUP BY 1'\n"
        ));
        print!("{out}");
        let _ = std::io::stdout().flush();
        return Ok(());
    }
    out.push_str(&format!(
        "\n\n  Try:\n    open {url}/ in a browser (the status page)\n    curl -s {url}/v1/customers/{example}\n    \
         curl -s {url}/v1/sql -d 'SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1 ORDER BY 2 DESC'\n    \
         psql -h {host} -p {port} -U patron -c 'SELECT * FROM customers ORDER BY clv DESC LIMIT 5'\n    \
         curl -s -X POST {url}/v1/admin/refit\n    curl -s {url}/metrics | grep patron_\n"
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
    Ok(())
}
