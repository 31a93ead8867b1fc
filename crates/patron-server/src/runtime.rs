//! `patron serve` at run time: opening the engine (recovery first), binding
//! the HTTP, pgwire and Flight SQL listeners, the periodic refit and snapshot
//! loops, and the shutdown on Ctrl-C or SIGTERM (a final snapshot on the way
//! out). The handlers are in [`crate::http`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use patron_model::CurrencyTable;
use patron_sql::pg::{PasswordCheck, PgHandlers};
use patron_sql::{SqlEngine, SqlLimits};
use patron_state::{Engine, EngineConfig, ScoringConfig};

use crate::cli::{ListenArgs, ServeArgs};
use crate::config::{Auth, Config};
use crate::http::sql::LiveView;
use crate::http::{AppState, IngestLimits, router};
use crate::metrics::{EngineFigures, Metrics};
use crate::rejected::{RejectedEvent, RejectedStore};

/// Installs the log subscriber (RUST_LOG, default `default`).
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The HTTP, pgwire and Flight SQL addresses, each checked by [`listen_addr`].
pub(crate) fn listen_addrs(listen: &ListenArgs, auth: &Auth) -> Result<(SocketAddr, SocketAddr, SocketAddr)> {
    Ok((
        listen_addr(listen.http, "--http", auth)?,
        listen_addr(listen.pg, "--pg", auth)?,
        listen_addr(listen.flight, "--flight", auth)?,
    ))
}

/// A listen address (`flag` names it in the refusal); without auth tokens only
/// loopback addresses are allowed.
pub(crate) fn listen_addr(addr: SocketAddr, flag: &str, auth: &Auth) -> Result<SocketAddr> {
    if !addr.ip().is_loopback() && !auth.enabled() {
        bail!(
            "refusing to listen on {flag} {addr} without auth tokens: anyone who can reach it could write and read customer data; add [[auth.tokens]] to patron.toml (--config) or bind 127.0.0.1"
        );
    }
    Ok(addr)
}

/// Opens the engine on `data_dir`: recovery first, then a fit if there is data.
pub(crate) fn open_engine(
    data_dir: &std::path::Path,
    currencies: CurrencyTable,
    scoring: ScoringConfig,
    shards: Option<usize>,
    log_queue: Option<usize>,
    clock: patron_state::Clock,
    dedup_horizon: crate::units::DedupHorizon,
) -> Result<Engine> {
    let mut config = EngineConfig::new(data_dir);
    config.clock = clock;
    config.dedup_horizon_days = dedup_horizon.0;
    if let Some(depth) = log_queue {
        config.wal.queue_depth = depth.max(1);
    }
    config.currencies = currencies;
    config.scoring = scoring;
    if let Some(shards) = shards {
        config.shards = shards;
    }
    let opened = Instant::now();
    let (engine, report) = Engine::open(config).with_context(|| format!("cannot open {}", data_dir.display()))?;
    tracing::info!(
        events = report.events,
        records = report.records,
        segments = report.segments,
        seconds = opened.elapsed().as_secs_f64(),
        replay_seconds = report.replay_micros as f64 / 1e6,
        "recovered {} events from the write-ahead log (replayed in {:.2} s, {:.0} events/s)",
        report.events,
        report.replay_micros as f64 / 1e6,
        report.events as f64 * 1e6 / report.replay_micros.max(1) as f64
    );
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            "dropped a torn tail of {} bytes at offset {} of {} ({}); it was never acknowledged",
            torn.dropped_bytes,
            torn.offset,
            torn.segment.display(),
            torn.reason
        );
    }
    for q in engine.quarantined() {
        tracing::warn!(
            seq = q.seq,
            index = q.index,
            "a logged {} was not applied and was copied to {}: {}",
            if q.index.is_some() { "event" } else { "record" },
            q.file.display(),
            q.reason
        );
    }
    // Restored models keep serving what they served (a refit would score
    // everyone anew); only a directory that never had a fit gets one now.
    if report.events > 0 && engine.models().fits.is_none() {
        match engine.refit_durably() {
            Ok(_) => tracing::info!("models fitted on the recovered customers"),
            Err(e) => tracing::warn!("no fit yet ({e}); scores are provisional"),
        }
    }
    Ok(engine)
}

/// Shared state of the HTTP handlers.
pub(crate) fn app_state(
    engine: Engine,
    currencies: CurrencyTable,
    ingest: IngestLimits,
    auth: Auth,
    sql_limits: SqlLimits,
) -> Result<Arc<AppState>> {
    let engine = Arc::new(engine);
    let rejected = Arc::new(RejectedStore::default());
    // What recovery quarantined is shown beside the rejected events, so an
    // operator finds it where bad input is looked for.
    let quarantined = engine.quarantined();
    rejected.record(
        quarantined.len() as u64,
        quarantined.into_iter().map(|q| {
            let raw = std::fs::read(&q.file).unwrap_or_default();
            let error = format!(
                "quarantined at recovery (log record {}{}): {}; copy in {}",
                q.seq,
                q.index.map_or_else(String::new, |i| format!(", event {i}")),
                q.reason,
                q.file.display()
            );
            RejectedEvent::new("recovery", q.seq, error, &raw)
        }),
    );
    let view = LiveView { engine: engine.clone(), rejected: rejected.clone(), base: currencies.base };
    let sql = Arc::new(SqlEngine::new(Arc::new(view), sql_limits).context("cannot set up the SQL session")?);
    let (inflight_bytes, started) = (Arc::new(AtomicU64::new(0)), Instant::now());
    let metrics = Metrics::new(EngineFigures {
        engine: engine.clone(),
        rejected: rejected.clone(),
        sql: sql.clone(),
        inflight_bytes: inflight_bytes.clone(),
        started,
    });
    Ok(Arc::new(AppState {
        engine,
        auth,
        currencies,
        ingest,
        inflight_bytes,
        rejected,
        sql,
        metrics,
        pg_addr: std::sync::OnceLock::new(),
    }))
}

/// Serves the API on `listener` until `shutdown` resolves, refitting every
/// `refit_every` and snapshotting every `snapshot_every` when new events
/// arrived, and snapshotting once more on the way out.
pub(crate) async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    sql_listeners: Option<SqlListeners>,
    refit_every: Duration,
    snapshot_every: Duration,
    tls: Option<crate::tls::Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (sql_stop, sql_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopped = sql_stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut sql_tasks = Vec::new();
    if let Some(l) = sql_listeners {
        if let Ok(addr) = l.pg.local_addr() {
            let _ = state.pg_addr.set(addr);
        }
        let (pg_tls, flight_tls) = (tls.as_ref().map(|t| t.pg.clone()), tls.as_ref().map(|t| t.flight.clone()));
        sql_tasks.push(tokio::spawn(patron_sql::pg::serve(l.pg, l.pg_handlers, pg_tls, stopped())));
        let flight = patron_sql::flight::serve(l.flight, l.flight_service, flight_tls, stopped());
        sql_tasks.push(tokio::spawn(async move {
            if let Err(e) = flight.await {
                tracing::warn!("Flight SQL stopped: {e}");
            }
        }));
    }
    let engine = state.engine.clone();
    let snapshots = tokio::spawn(async move {
        let mut last_seen = 0;
        loop {
            tokio::time::sleep(snapshot_every).await;
            let accepted = engine.stats().accepted.load(Ordering::Relaxed);
            if accepted == last_seen {
                continue;
            }
            last_seen = accepted;
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.snapshot()).await {
                Ok(Ok(r)) => {
                    tracing::info!(customers = r.customers, removed_segments = r.removed_segments, "snapshot written")
                }
                Ok(Err(e)) => tracing::warn!("periodic snapshot failed: {e}"),
                Err(e) => tracing::warn!("periodic snapshot panicked: {e}"),
            }
        }
    });
    let engine = state.engine.clone();
    let refits = tokio::spawn(async move {
        let mut last_seen = u64::MAX;
        loop {
            tokio::time::sleep(refit_every).await;
            let accepted = engine.stats().accepted.load(Ordering::Relaxed);
            if accepted == last_seen || accepted == 0 {
                continue;
            }
            last_seen = accepted;
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.refit_durably()).await {
                Ok(Ok(_)) => tracing::info!("periodic refit done"),
                Ok(Err(e)) => tracing::warn!("periodic refit failed: {e}"),
                Err(e) => tracing::warn!("periodic refit panicked: {e}"),
            }
        }
    });
    crate::http_listen::serve_http(listener, router(state.clone()), tls.map(|t| t.http), shutdown).await;
    let _ = sql_stop.send(true);
    for task in sql_tasks {
        let _ = task.await;
    }
    refits.abort();
    snapshots.abort();
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || engine.snapshot()).await {
        Ok(Ok(r)) => tracing::info!(customers = r.customers, "final snapshot written"),
        Ok(Err(e)) => tracing::warn!("final snapshot failed (the log still has every event): {e}"),
        Err(e) => tracing::warn!("final snapshot panicked: {e}"),
    }
    Ok(())
}

/// Opens the engine (recovery first), then listens until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    init_logging("info");
    let config = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let auth = Auth::new(&config.auth);
    let (addr, pg_addr, flight_addr) = listen_addrs(&args.listen, &auth)?;
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::Tls::load(&t.cert, &t.key).context("[tls] in the configuration")?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let currencies = config.currencies(args.currency.as_deref())?;
    let scoring = ScoringConfig { model: args.model.into(), clv: config.clv, ..ScoringConfig::default() };
    let engine = open_engine(
        &args.data_dir,
        currencies.clone(),
        scoring,
        args.shards,
        args.log_queue,
        args.clock.into(),
        args.dedup_horizon,
    )?;
    let rates = currencies.rates.iter().map(|(c, r)| format!("{c} = {r}")).collect::<Vec<_>>().join(", ");
    tracing::info!(
        "money in {}{}; CLV at margin {}, over {} days, discounted {}% a year",
        currencies.base,
        if rates.is_empty() { String::new() } else { format!(" (rates: {rates})") },
        config.clv.margin,
        config.clv.horizon_days,
        config.clv.annual_discount_rate * 100.0
    );
    if auth.enabled() {
        tracing::info!("auth: {} bearer tokens configured", config.auth.tokens.len());
    } else {
        tracing::warn!("no auth tokens configured: accepting every request, on loopback {addr} only");
    }
    let password_check = pg_password_check(&auth);
    let limits = SqlLimits {
        memory_bytes: args.sql_memory,
        timeout: args.sql_timeout,
        max_rows: args.sql_max_rows,
        max_result_bytes: args.sql_max_result_bytes,
        max_concurrent: args.sql_concurrency.max(1),
        ..SqlLimits::default()
    };
    let ingest = IngestLimits { body_limit: args.body_limit, max_inflight_bytes: args.max_inflight_bytes };
    let state = app_state(engine, currencies, ingest, auth, limits)?;
    let runtime = runtime()?;
    let (refit_every, snapshot_every) = (args.refit_interval, args.snapshot_interval);
    runtime.block_on(async move {
        let pg = SqlListeners::bind(pg_addr, flight_addr, &state, password_check).await?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        println!("{}", pg.banner());
        println!("listening on {scheme}://{}", listener.local_addr()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve(state, listener, Some(pg), refit_every, snapshot_every, tls, shutdown_signal()).await?;
        tracing::info!("shut down: queued events were written and applied before exit");
        anyhow::Ok(())
    })
}

/// The pgwire password rule: a token with the `query` role (any user name),
/// whose roles decide whether `rejected_events` is readable;
/// `None` (no password asked) when no tokens are configured.
pub(crate) fn pg_password_check(auth: &Auth) -> Option<PasswordCheck> {
    auth.enabled().then(|| {
        let auth = auth.clone();
        Arc::new(move |password: &str| auth.sql_access_of_token(password)) as PasswordCheck
    })
}

/// The SQL listeners of a server: PostgreSQL wire protocol and Flight SQL.
pub(crate) struct SqlListeners {
    pg: tokio::net::TcpListener,
    pg_handlers: Arc<PgHandlers>,
    flight: tokio::net::TcpListener,
    flight_service: patron_sql::flight::PatronFlightSql,
}

impl SqlListeners {
    /// Binds both addresses and prepares the front ends over the state's SQL session.
    pub(crate) async fn bind(
        pg_addr: SocketAddr,
        flight_addr: SocketAddr,
        state: &AppState,
        check: Option<PasswordCheck>,
    ) -> Result<Self> {
        let pg_handlers = Arc::new(
            PgHandlers::new(state.sql().clone(), state.auth.sql_tokens().as_deref()).context("cannot set up pgwire")?,
        );
        let flight_service = patron_sql::flight::PatronFlightSql::new(state.sql().clone(), check);
        let pg = tokio::net::TcpListener::bind(pg_addr)
            .await
            .with_context(|| format!("cannot listen for pgwire on {pg_addr}"))?;
        let flight = tokio::net::TcpListener::bind(flight_addr)
            .await
            .with_context(|| format!("cannot listen for Flight SQL on {flight_addr}"))?;
        Ok(Self { pg, pg_handlers, flight, flight_service })
    }

    /// The bound pgwire address.
    pub(crate) fn pg_addr(&self) -> Result<SocketAddr> {
        Ok(self.pg.local_addr()?)
    }

    /// The lines printed at startup: where SQL clients connect.
    pub(crate) fn banner(&self) -> String {
        let pg = match self.pg.local_addr() {
            Ok(a) => format!("pgwire on {a} (psql -h {} -p {} -U patron)", a.ip(), a.port()),
            Err(e) => format!("pgwire address unknown: {e}"),
        };
        let flight = match self.flight.local_addr() {
            Ok(a) => format!("flight-sql on {a} (grpc://{a})"),
            Err(e) => format!("flight-sql address unknown: {e}"),
        };
        format!("{pg}\n{flight}")
    }
}

/// The tokio runtime of every command that runs SQL: its threads get
/// [`patron_sql::SQL_THREAD_STACK_BYTES`] of stack, because parsing, planning
/// and evaluating expressions recurse (issue 12: a 1,200-term sum overflowed
/// the default 2 MiB and aborted the process).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(patron_sql::SQL_THREAD_STACK_BYTES)
        .build()
        .context("cannot start tokio")
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_tokens() {
        let (public, loopback) = ("0.0.0.0:8080".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
        let refusal = listen_addr(public, "--pg", &Auth::default()).unwrap_err().to_string();
        assert!(refusal.contains("without auth tokens") && refusal.contains("--pg 0.0.0.0:8080"), "{refusal}");
        assert!(listen_addr(loopback, "--http", &Auth::default()).is_ok());
        let config = Config::parse("[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = [\"admin\"]\n").unwrap();
        assert!(listen_addr(public, "--http", &Auth::new(&config.auth)).is_ok());
    }
}
