//! `COPY (query) TO STDOUT` and `COPY table [(columns)] TO STDOUT`: how
//! psql's `\copy … TO` and many tools export. Nothing is written on the
//! server, so these are reads like any query; `COPY … FROM`, `COPY … TO
//! 'file'` and `TO PROGRAM` stay refused.
//!
//! The rows are encoded as PostgreSQL's text or CSV format writes them
//! (its `COPY` documentation, "File Formats"): text separates fields with a
//! tab, writes NULL as `\N` and escapes backslash, newline, carriage return,
//! tab and the delimiter with a backslash; CSV separates with a comma,
//! writes NULL as nothing and quotes a field that holds the delimiter, the
//! quote, a line break, or is empty (so that it is not read as NULL).
//! Values print as PostgreSQL prints them: booleans `t`/`f`, timestamps
//! `2026-03-09 10:42:17.25` (the fraction without trailing zeros), doubles
//! in the shortest form that reads back exactly, with an exponent below
//! 1e-4 and from 1e15 (`1e+20`, `1.234e-05`). The answer is streamed, one
//! `CopyData` message per batch.

use std::fmt::Write;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::session::SqlError;

/// How the rows are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyFormat {
    /// CSV (else text).
    csv: bool,
    delimiter: char,
    null: String,
    header: bool,
    quote: char,
    escape: char,
}

impl CopyFormat {
    /// Whether the first line names the columns.
    pub(crate) fn header(&self) -> bool {
        self.header
    }

    fn text() -> Self {
        Self { csv: false, delimiter: '\t', null: "\\N".to_owned(), header: false, quote: '"', escape: '"' }
    }

    fn csv(mut self) -> Self {
        self.csv = true;
        if self.delimiter == '\t' {
            self.delimiter = ',';
        }
        if self.null == "\\N" {
            self.null = String::new();
        }
        self
    }
}

/// A `COPY … TO STDOUT`: the query whose rows it writes, and how.
#[derive(Debug)]
pub(crate) struct CopyOut {
    /// The rows: the statement's query, or `SELECT … FROM table`.
    pub(crate) query: Statement,
    pub(crate) format: CopyFormat,
}

fn refused(what: impl Into<String>) -> SqlError {
    SqlError::Refused(what.into())
}

/// The `COPY … TO STDOUT` of `statement`, or why it is refused.
pub(crate) fn copy_out(statement: &Statement) -> Result<CopyOut, SqlError> {
    let Statement::Copy { source, to, target, options, legacy_options, values: _ } = statement else {
        return Err(refused("this statement"));
    };
    if !to {
        return Err(refused("COPY … FROM"));
    }
    if !matches!(target, CopyTarget::Stdout) {
        return Err(refused("COPY … TO a file or program (COPY … TO STDOUT is allowed)"));
    }
    let sql = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table { table_name, columns } => {
            let names: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", names.join(", "))
        }
    };
    let query = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
        .map_err(|e| SqlError::Syntax(e.to_string()))?
        .pop()
        .ok_or(SqlError::Empty)?;
    let mut format = CopyFormat::text();
    let mut csv = false;
    for option in options {
        match option {
            CopyOption::Format(name) if name.value.eq_ignore_ascii_case("csv") => csv = true,
            CopyOption::Format(name) if name.value.eq_ignore_ascii_case("text") => csv = false,
            CopyOption::Delimiter(c) => format.delimiter = *c,
            CopyOption::Null(text) => format.null = text.clone(),
            CopyOption::Header(on) => format.header = *on,
            CopyOption::Quote(c) => format.quote = *c,
            CopyOption::Escape(c) => format.escape = *c,
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8") => {}
            other => {
                return Err(refused(format!(
                    "COPY option {other} (FORMAT text or csv, DELIMITER, NULL, HEADER, QUOTE, ESCAPE and ENCODING 'UTF8' are read)"
                )));
            }
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(csv_options) => {
                csv = true;
                for csv_option in csv_options {
                    match csv_option {
                        CopyLegacyCsvOption::Header => format.header = true,
                        CopyLegacyCsvOption::Quote(c) => format.quote = *c,
                        CopyLegacyCsvOption::Escape(c) => format.escape = *c,
                        other => return Err(refused(format!("COPY option {other}"))),
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => format.delimiter = *c,
            CopyLegacyOption::Null(text) => format.null = text.clone(),
            other => return Err(refused(format!("COPY option {other} (text and CSV are written, not binary)"))),
        }
    }
    if csv {
        format = format.csv();
    }
    Ok(CopyOut { query, format })
}

/// The header line: the column names, as a row.
pub(crate) fn header(schema: &SchemaRef, format: &CopyFormat) -> Vec<u8> {
    let mut out = String::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(format.delimiter);
        }
        write_field(&mut out, field.name(), format);
    }
    out.push('\n');
    out.into_bytes()
}

/// The rows of `batch`, one line each.
pub(crate) fn encode(batch: &RecordBatch, format: &CopyFormat) -> Result<Vec<u8>, ArrowError> {
    let options = FormatOptions::default()
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%#z"));
    let columns: Vec<Column<'_>> = batch
        .columns()
        .iter()
        .map(|array| match array.data_type() {
            DataType::Boolean => Ok(Column::Boolean(array.as_boolean())),
            DataType::Float64 => Ok(Column::Float(array.as_primitive::<Float64Type>())),
            DataType::Timestamp(..) => ArrayFormatter::try_new(array.as_ref(), &options).map(Column::Timestamp),
            _ => ArrayFormatter::try_new(array.as_ref(), &options).map(Column::Formatted),
        })
        .collect::<Result<_, _>>()?;
    let mut out = String::with_capacity(batch.num_rows() * 16 * columns.len().max(1));
    let mut value = String::new();
    for row in 0..batch.num_rows() {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(format.delimiter);
            }
            if batch.column(i).is_null(row) {
                out.push_str(&format.null);
                continue;
            }
            value.clear();
            match column {
                Column::Boolean(values) => value.push(if values.value(row) { 't' } else { 'f' }),
                Column::Float(values) => float_text(values.value(row), &mut value),
                Column::Formatted(formatter) => {
                    write!(value, "{}", formatter.value(row)).map_err(|e| ArrowError::ExternalError(Box::new(e)))?
                }
                Column::Timestamp(formatter) => {
                    write!(value, "{}", formatter.value(row)).map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                    trim_fraction(&mut value);
                }
            }
            write_field(&mut out, &value, format);
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}

enum Column<'a> {
    Boolean(&'a datafusion::arrow::array::BooleanArray),
    Float(&'a datafusion::arrow::array::Float64Array),
    Timestamp(ArrayFormatter<'a>),
    Formatted(ArrayFormatter<'a>),
}

/// A double as PostgreSQL's `float8out` writes it.
fn float_text(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let scientific = format!("{v:e}");
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        if v != 0.0 && !(-4..15).contains(&exponent) {
            let sign = if exponent < 0 { '-' } else { '+' };
            let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.abs());
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

/// `10:42:17.250` → `10:42:17.25`, `10:42:17.000` → `10:42:17`.
fn trim_fraction(value: &mut String) {
    if let Some(dot) = value.rfind('.')
        && value[dot + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        let kept = value.trim_end_matches('0').len();
        value.truncate(if kept == dot + 1 { dot } else { kept });
    }
}

fn write_field(out: &mut String, value: &str, format: &CopyFormat) {
    if format.csv {
        let needs_quotes = value.is_empty() && format.null.is_empty()
            || value == format.null
            || value.contains([format.delimiter, format.quote, '\n', '\r'])
            || value == "\\.";
        if !needs_quotes {
            out.push_str(value);
            return;
        }
        out.push(format.quote);
        for c in value.chars() {
            if c == format.quote || c == format.escape {
                out.push(format.escape);
            }
            out.push(c);
        }
        out.push(format.quote);
    } else {
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c == format.delimiter => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn parsed(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop().unwrap()
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a\tb\\c"), Some(""), None, Some("say \"hi\", ok")])),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-3), Some(4)])),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(2.0), None, Some(1e-3)])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_773_052_937_000_000),
                None,
                None,
                Some(1_773_052_937_250_000),
            ])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// Expected lines as PostgreSQL 15 writes the same rows (checked with
    /// psql against a real server: `COPY (VALUES …) TO STDOUT`).
    #[test]
    fn text_and_csv_are_written_as_postgresql_writes_them() {
        let text = copy_out(&parsed("COPY (SELECT 1) TO STDOUT")).unwrap().format;
        assert_eq!(
            String::from_utf8(encode(&batch(), &text).unwrap()).unwrap(),
            "a\\tb\\\\c\t1\t0.5\tt\t2026-03-09 10:42:17\n\
             \t\\N\t2\tf\t\\N\n\
             \\N\t-3\t\\N\t\\N\t\\N\n\
             say \"hi\", ok\t4\t0.001\tt\t2026-03-09 10:42:17.25\n"
        );
        let csv = copy_out(&parsed("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv, HEADER true)")).unwrap().format;
        assert_eq!(String::from_utf8(header(&batch().schema(), &csv)).unwrap(), "id,n,x,ok,at\n");
        assert_eq!(
            String::from_utf8(encode(&batch(), &csv).unwrap()).unwrap(),
            "a\tb\\c,1,0.5,t,2026-03-09 10:42:17\n\
             \"\",,2,f,\n\
             ,-3,,,\n\
             \"say \"\"hi\"\", ok\",4,0.001,t,2026-03-09 10:42:17.25\n"
        );
    }

    /// PostgreSQL 15: `COPY (VALUES (1e20::float8), …) TO STDOUT`.
    #[test]
    fn doubles_are_written_as_float8out_writes_them() {
        let cases = [
            (1e20, "1e+20"),
            (1e-7, "1e-07"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0, "2"),
            (0.0, "0"),
        ];
        for (v, text) in cases {
            let mut out = String::new();
            float_text(v, &mut out);
            assert_eq!(out, text, "{v}");
        }
    }

    #[test]
    fn psql_copy_forms_are_read_and_writes_are_refused() {
        let legacy = copy_out(&parsed("COPY ( SELECT 1 ) TO STDOUT CSV HEADER")).unwrap();
        assert!(legacy.format.csv && legacy.format.header && legacy.format.delimiter == ',');
        let table = copy_out(&parsed("COPY customers (customer_id, clv) TO STDOUT")).unwrap();
        assert_eq!(table.query.to_string(), "SELECT customer_id, clv FROM customers");
        for refused in [
            "COPY customers FROM STDIN",
            "COPY customers TO '/tmp/x.csv'",
            "COPY customers TO PROGRAM 'cat'",
            "COPY customers TO STDOUT WITH (FORMAT binary)",
            "COPY customers TO STDOUT BINARY",
        ] {
            let error = copy_out(&parsed(refused)).unwrap_err();
            assert!(matches!(error, SqlError::Refused(_)), "{refused}: {error}");
        }
    }
}
