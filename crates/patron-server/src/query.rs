//! `patron query "SQL"`: one read-only query against a running server's
//! `POST /v1/sql`, or offline against a data directory through the same
//! `patron_sql` session the server uses; prints a table, CSV or JSON.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use patron_sql::{ResultFormat, SqlEngine, SqlLimits};

use crate::cli::{QueryArgs, QueryFormatArg};
use crate::cluster::export::{Manifest, read_manifest};
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
    let bytes = match (&args.data_dir, &args.fleet) {
        (Some(dir), _) => offline(args, dir, format)?,
        (None, Some(export)) => fleet(args, export, format)?,
        (None, None) => online(args, format)?,
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

/// `--fleet DIR`: the newest complete export of every partition (the files
/// each `manifest.json` names), as the tables `customers` and `products`.
fn fleet(args: &QueryArgs, export: &std::path::Path, format: ResultFormat) -> Result<Vec<u8>> {
    let (tables, manifests) = read_fleet_export(export)?;
    let sequences: u64 = manifests.iter().map(|m| m.sequence).sum();
    let watermark = manifests.iter().filter_map(|m| m.watermark.clone()).max().unwrap_or_else(|| "none".into());
    eprintln!(
        "fleet export {}: {} partitions, watermark {watermark}, stream sequences summing to {sequences}",
        export.display(),
        manifests.len()
    );
    let sql = SqlEngine::over_tables(tables, SqlLimits::default())?;
    let runtime = crate::runtime::runtime()?;
    let result = runtime.block_on(sql.run(&args.sql, patron_sql::Access::Query))?;
    Ok(patron_sql::encode(&result, format)?)
}

type Tables = Vec<(String, arrow::datatypes::SchemaRef, Vec<arrow::record_batch::RecordBatch>)>;

/// Reads every partition's exported tables under `export`.
pub(crate) fn read_fleet_export(export: &std::path::Path) -> Result<(Tables, Vec<Manifest>)> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let entries = std::fs::read_dir(export).with_context(|| format!("--fleet {}: cannot list it", export.display()))?;
    let mut dirs: Vec<std::path::PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    let mut manifests = Vec::new();
    let mut tables: Tables = crate::cluster::sql::empty_tables();
    for dir in dirs {
        let Some(manifest) = read_manifest(&dir) else { continue };
        for (name, schema, batches) in &mut tables {
            let Some(file) = manifest.files.get(name.as_str()) else { continue };
            let path = dir.join(file);
            let opened = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(opened)
                .and_then(|b| b.build())
                .with_context(|| format!("cannot read {}", path.display()))?;
            for batch in reader {
                let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
                // The file's own schema may differ in metadata only; the columns must match.
                batches.push(
                    arrow::record_batch::RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).with_context(
                        || format!("{} does not have the {name} columns of this version", path.display()),
                    )?,
                );
            }
        }
        manifests.push(manifest);
    }
    if manifests.is_empty() {
        bail!(
            "--fleet {}: no partition export here (expected p<NNN>/manifest.json, written by `serve --export-dir`)",
            export.display()
        );
    }
    Ok((tables, manifests))
}
