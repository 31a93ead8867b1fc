//! Query results as bytes: JSON (an array of row objects), CSV with a header,
//! an Arrow IPC stream, or a text table for terminals.

use arrow::record_batch::RecordBatch;

use crate::session::{QueryResult, SqlError};

/// An output format of query results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultFormat {
    /// `application/json`: `[{"column": value, …}, …]`.
    Json,
    /// `text/csv` with a header row.
    Csv,
    /// `application/vnd.apache.arrow.stream`.
    ArrowStream,
    /// A boxed text table.
    Table,
}

impl ResultFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::ArrowStream => "application/vnd.apache.arrow.stream",
            Self::Table => "text/plain; charset=utf-8",
        }
    }

    /// The format an HTTP `Accept` header asks for (JSON when absent or `*/*`),
    /// or `None` when it names only formats we do not produce.
    pub fn from_accept(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept else { return Some(Self::Json) };
        for part in accept.split(',') {
            let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            match media.as_str() {
                "application/json" | "*/*" | "application/*" | "" => return Some(Self::Json),
                "text/csv" | "text/*" => return Some(Self::Csv),
                "application/vnd.apache.arrow.stream" => return Some(Self::ArrowStream),
                "text/plain" => return Some(Self::Table),
                _ => {}
            }
        }
        None
    }
}

fn encoding_error(e: impl std::fmt::Display) -> SqlError {
    SqlError::Execution(format!("cannot encode the result: {e}"))
}

/// Encodes a result.
pub fn encode(result: &QueryResult, format: ResultFormat) -> Result<Vec<u8>, SqlError> {
    let batches: Vec<&RecordBatch> = result.batches.iter().collect();
    match format {
        ResultFormat::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(Vec::new());
            writer.write_batches(&batches).map_err(encoding_error)?;
            writer.finish().map_err(encoding_error)?;
            let bytes = writer.into_inner();
            // An empty result is written as nothing at all; make it an empty array.
            Ok(if bytes.is_empty() { b"[]".to_vec() } else { bytes })
        }
        ResultFormat::Csv => {
            let mut out = Vec::new();
            if result.batches.is_empty() {
                let names: Vec<&str> = result.schema.fields().iter().map(|f| f.name().as_str()).collect();
                out.extend_from_slice(names.join(",").as_bytes());
                out.push(b'\n');
                return Ok(out);
            }
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for batch in batches {
                writer.write(batch).map_err(encoding_error)?;
            }
            drop(writer);
            Ok(out)
        }
        ResultFormat::ArrowStream => {
            let mut out = Vec::new();
            let mut writer =
                arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema).map_err(encoding_error)?;
            for batch in batches {
                writer.write(batch).map_err(encoding_error)?;
            }
            writer.finish().map_err(encoding_error)?;
            drop(writer);
            Ok(out)
        }
        ResultFormat::Table => {
            let mut text = if result.batches.is_empty() {
                let names: Vec<&str> = result.schema.fields().iter().map(|f| f.name().as_str()).collect();
                format!("{}\n", names.join(" | "))
            } else {
                arrow::util::pretty::pretty_format_batches(&result.batches).map_err(encoding_error)?.to_string()
            };
            let rows = result.rows();
            text.push_str(&format!("\n({rows} row{})\n", if rows == 1 { "" } else { "s" }));
            Ok(text.into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        assert_eq!(ResultFormat::from_accept(None), Some(ResultFormat::Json));
        assert_eq!(ResultFormat::from_accept(Some("*/*")), Some(ResultFormat::Json));
        assert_eq!(ResultFormat::from_accept(Some("text/csv")), Some(ResultFormat::Csv));
        assert_eq!(
            ResultFormat::from_accept(Some("application/vnd.apache.arrow.stream")),
            Some(ResultFormat::ArrowStream)
        );
        assert_eq!(ResultFormat::from_accept(Some("image/png, text/csv;q=0.5")), Some(ResultFormat::Csv));
        assert_eq!(ResultFormat::from_accept(Some("image/png")), None);
    }
}
