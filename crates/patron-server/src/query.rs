//! `patron query "SQL"`: one read-only query against a running server's
//! `POST /v1/sql`, or offline against a data directory through the same
//! `patron_sql` session the server uses; prints a table, CSV or JSON.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use patron_sql::{ResultFormat, SqlEngine, SqlLimits};

use crate::cli::{QueryArgs, QueryFormatArg};
use crate::config::Config;
use crate::http::sql::LiveView;
use crate::runtime::open_engine;
use crate::units::DEFAULT_HORIZON;

impl From<QueryFormatArg> for ResultFormat {
    fn from(f: QueryFormatArg) -> Self {
        match f {
            QueryFormatArg::Table => ResultFormat::Table,
            QueryFormatArg::Csv => ResultFormat::Csv,
            QueryFormatArg::Json => ResultFormat::Json,
        }
    }
}

pub(crate) fn run(args: &QueryArgs) -> Result<()> {
    let format = ResultFormat::from(args.format);
    let bytes = match &args.data_dir {
        Some(dir) => offline(args, dir, format)?,
        None => online(args, format)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn online(args: &QueryArgs, format: ResultFormat) -> Result<Vec<u8>> {
    let url = format!("{}/v1/sql", args.url);
    let mut request = ureq::post(&url).set("accept", format.content_type()).set("content-type", "text/plain");
    if let Some(token) = &args.token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    match request.send_string(&args.sql) {
        Ok(response) => {
            let mut body = Vec::new();
            response.into_reader().read_to_end(&mut body).context("reading the answer")?;
            Ok(body)
        }
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("the server answered {status}: {message}")
        }
        Err(e) => bail!("cannot reach {url}: {e} (is `patron serve` running? use --url or --data-dir)"),
    }
}

/// Refuses a directory that holds no Patron data: opening it would create an
/// empty store (a 64 MiB log segment) and answer every query with nothing.
fn check_data_dir(dir: &std::path::Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("--data-dir {}: no such directory (the server's --data-dir, default ./patron-data)", dir.display());
    }
    if !dir.join("wal").is_dir() && !dir.join("snapshots").is_dir() {
        bail!("--data-dir {}: not a Patron data directory (it has neither wal/ nor snapshots/)", dir.display());
    }
    Ok(())
}

fn offline(args: &QueryArgs, dir: &std::path::Path, format: ResultFormat) -> Result<Vec<u8>> {
    check_data_dir(dir)?;
    let settings = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let currencies = settings.currencies(args.currency.as_deref())?;
    let base = currencies.base;
    let scoring = patron_state::ScoringConfig { clv: settings.clv, ..patron_state::ScoringConfig::default() };
    let engine = open_engine(dir, currencies, scoring, None, None, patron_state::Clock::Event, DEFAULT_HORIZON)?;
    let view = LiveView::new(Arc::new(engine), base);
    let sql = SqlEngine::new(Arc::new(view), SqlLimits::default())?;
    let runtime = crate::runtime::runtime()?;
    let result = runtime.block_on(sql.run(&args.sql, patron_sql::Access::Admin))?;
    Ok(patron_sql::encode(&result, format)?)
}
