//! Output files of `patron score` (DESIGN.md §5): written to a temporary name,
//! synced, then renamed, so a reader never sees half a file.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use patron_state::ModelFits;
use serde_json::{Value, json};

fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    write(&mut file).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Writes one batch as a zstd-compressed Parquet file.
pub(crate) fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    write_atomically(path, |file| {
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let mut writer = ArrowWriter::try_new(file.try_clone()?, batch.schema(), Some(props))?;
        writer.write(batch)?;
        writer.close()?;
        Ok(())
    })
}

/// Writes a JSON document (pretty), atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomically(path, |f| Ok(f.write_all(text.as_bytes())?))
}

/// `model_params.json`: `{"models":[{"model","params","std_errors","log_likelihood","customers","time_unit"}, …]}`
/// with every model that could be fitted; failures are listed under `failed`.
/// A fit with a parameter on its bound also has `warnings`: one sentence per
/// such parameter, saying what it means for the scores.
/// `std_errors` has each parameter's standard error, null where the fit's
/// observed information could not give one.
pub(crate) fn model_params_json(fits: &ModelFits) -> Value {
    let unit = fits.time_unit.name();
    let model = |name: &str, named: &[(&'static str, f64)], fit_ll: f64, customers: u64, std_errors: &[f64]| {
        let params: serde_json::Map<String, Value> = named.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        let errors: serde_json::Map<String, Value> =
            named.iter().enumerate().map(|(i, (k, _))| ((*k).to_owned(), json!(std_errors.get(i)))).collect();
        json!({"model": name, "params": params, "std_errors": errors, "log_likelihood": fit_ll,
               "customers": customers, "time_unit": unit})
    };
    let with_warnings = |mut entry: Value, boundary: &[patron_score::AtBound]| {
        if !boundary.is_empty() {
            entry["warnings"] = boundary.iter().map(|b| json!(b.to_string())).collect::<Vec<_>>().into();
        }
        entry
    };
    let mut models = Vec::new();
    let mut failed = Vec::new();
    for (purchase_model, fit) in &fits.purchase {
        match fit {
            Ok(f) => models.push(with_warnings(
                model(purchase_model.name(), &f.params.named(), f.log_likelihood, f.customers, &f.std_errors),
                &f.boundary,
            )),
            Err(e) => failed.push(json!({"model": purchase_model.name(), "error": e})),
        }
    }
    match &fits.gamma_gamma {
        Ok(f) => models.push(model("gamma_gamma", &f.params.named(), f.log_likelihood, f.customers, &f.std_errors)),
        Err(e) => failed.push(json!({"model": "gamma_gamma", "error": e})),
    }
    let mut out = json!({"models": models, "fitted_at": fits.fitted_at.to_rfc3339()});
    if !failed.is_empty() {
        out["failed"] = failed.into();
    }
    out
}

/// Writes `model_params.json`.
pub(crate) fn write_model_params(path: &Path, fits: &ModelFits) -> Result<()> {
    let text = serde_json::to_string_pretty(&model_params_json(fits))?;
    write_atomically(path, |f| Ok(f.write_all(text.as_bytes())?))
}
