//! Admission: what a statement must satisfy before it is parsed, planned or
//! run, so that no text a client sends can crash or balloon the process.
//!
//! - **Complexity.** Parsers, planners and evaluators walk expressions
//!   recursively; a 1,200-term `1+1+…` once overflowed a worker's stack and
//!   aborted the server. The text is tokenized first (iteratively) and refused
//!   with [`SqlError::TooComplex`] above [`MAX_OPERATORS`] operators or
//!   [`MAX_NESTING`] levels of brackets. The runtimes that run SQL also get
//!   large stacks ([`SQL_THREAD_STACK_BYTES`]), so everything under the limits
//!   has ample headroom.
//! - **Value size.** A few functions build values far larger than their input
//!   (`repeat('x', 2147483647)` is 2 GiB from 25 bytes, and being one
//!   synchronous call it also escaped the query timeout). They are replaced by
//!   bounded versions that compute the size of their output first and refuse
//!   it above the result-size limit.
//! - **Roles.** `rejected_events` holds raw producer text with personal data,
//!   so only [`Access::Admin`] may read it, as over HTTP.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::kernels::{cast, length};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::session::SqlError;

/// Most operators (`+`, `||`, `=`, `AND`, `OR`, `::`…) in one statement.
/// Long `OR` chains of equalities are better written as `IN (…)`, which is flat.
pub const MAX_OPERATORS: usize = 1_000;

/// Deepest nesting of parentheses and brackets in one statement.
pub const MAX_NESTING: usize = 64;

/// Stack of every thread that parses, plans or runs SQL (tokio workers and
/// blocking threads): only touched pages are committed, so this is address
/// space, not memory.
pub const SQL_THREAD_STACK_BYTES: usize = 32 << 20;

/// Who is asking: what a caller's token allows it to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The `query` role: every table but `rejected_events`.
    Query,
    /// The `admin` role (or no tokens configured): every table.
    Admin,
}

/// Tables only [`Access::Admin`] may read.
const ADMIN_TABLES: &[&str] = &["rejected_events"];

/// Refuses a table that `access` may not read.
pub(crate) fn check_table(table: &str, access: Access) -> Result<(), SqlError> {
    if access != Access::Admin && ADMIN_TABLES.contains(&table) {
        return Err(SqlError::Forbidden(format!(
            "{table} holds the raw text producers sent (personal data included); it needs a token with the admin role"
        )));
    }
    Ok(())
}

/// Refuses statements whose expressions are too long or too deeply nested to
/// parse, plan and evaluate safely. Runs before the parser.
pub fn check_complexity(sql: &str) -> Result<(), SqlError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().map_err(|e| SqlError::Syntax(e.to_string()))?;
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Word(word) => {
                if matches!(
                    word.keyword,
                    Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::IS | Keyword::LIKE | Keyword::ILIKE
                ) {
                    operators += 1;
                }
            }
            Token::EOF
            | Token::Whitespace(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::Colon
            | Token::Placeholder(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => {}
            _ => operators += 1,
        }
    }
    if operators > MAX_OPERATORS {
        return Err(SqlError::TooComplex(format!(
            "{operators} operators in one statement, the limit is {MAX_OPERATORS}; write long OR chains of equalities as IN (…)"
        )));
    }
    if deepest > MAX_NESTING {
        return Err(SqlError::TooComplex(format!("brackets nested {deepest} deep, the limit is {MAX_NESTING}")));
    }
    Ok(())
}

/// How a bounded function's output grows with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text's bytes times `n`, per row.
    Repeat,
    /// `lpad/rpad(text, n[, fill])`: at most `n` characters of 4 bytes, per row.
    Pad,
    /// `array_repeat(element, n)`: `n` elements of at most 16 bytes, per row.
    ArrayRepeat,
    /// `range/generate_series(start, stop[, step])`: (stop − start) / step elements of 8 bytes, per row.
    Series,
}

/// A built-in function wrapped so that it refuses to build more than `limit`
/// bytes in one call.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    limit: usize,
}

/// Replaces the built-in functions that can build huge values with bounded
/// versions (the same names, types and results, within `limit` bytes per call).
pub(crate) fn bounded_functions(ctx: &datafusion::prelude::SessionContext, limit: usize) {
    use datafusion::execution::FunctionRegistry;
    let wrapped = [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
        ("array_repeat", Growth::ArrayRepeat),
        ("range", Growth::Series),
        ("generate_series", Growth::Series),
    ];
    for (name, growth) in wrapped {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner, growth, limit }));
        }
    }
}

/// The argument as an array of `rows` values.
fn as_array(value: &ColumnarValue, rows: usize) -> DfResult<ArrayRef> {
    value.to_array(rows.max(1))
}

/// Largest value of an integer argument (0 when all are null or negative).
fn max_count(value: &ColumnarValue, rows: usize) -> DfResult<u128> {
    let array = cast::cast(&as_array(value, rows)?, &DataType::Int64)?;
    let ints = array
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("an integer argument did not cast to Int64".into()))?;
    Ok(ints.iter().flatten().map(|n| n.max(0) as u128).max().unwrap_or(0))
}

/// Total bytes of a text argument over the batch.
fn text_bytes(value: &ColumnarValue, rows: usize) -> DfResult<u128> {
    let lengths = cast::cast(&length::length(&as_array(value, rows)?)?, &DataType::Int64)?;
    let ints = lengths
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("a text length did not cast to Int64".into()))?;
    Ok(ints.iter().flatten().map(|n| n.max(0) as u128).sum())
}

/// Elements an integer series builds over the batch.
fn series_elements(args: &[ColumnarValue], rows: usize) -> DfResult<u128> {
    let ints = |i: usize| -> DfResult<Option<Int64Array>> {
        let Some(value) = args.get(i) else { return Ok(None) };
        let array = as_array(value, rows)?;
        if !array.data_type().is_integer() {
            return Ok(None);
        }
        let cast = cast::cast(&array, &DataType::Int64)?;
        Ok(cast.as_any().downcast_ref::<Int64Array>().cloned())
    };
    // One argument is `range(stop)` from 0.
    let (start, stop) = match (ints(0)?, ints(1)?) {
        (Some(stop), None) if args.len() == 1 => (None, stop),
        (Some(start), Some(stop)) => (Some(start), stop),
        _ => return Ok(0), // dates and timestamps: left to the memory pool
    };
    let step = ints(2)?;
    let mut total = 0u128;
    for row in 0..stop.len() {
        let from = start.as_ref().map_or(0, |s| s.value(row));
        let step = step.as_ref().map_or(1, |s| s.value(row)).unsigned_abs().max(1);
        let span = i128::from(stop.value(row)).abs_diff(i128::from(from));
        total = total.saturating_add(span / u128::from(step) + 1);
    }
    Ok(total)
}

impl Bounded {
    /// An upper bound of the bytes this call would build.
    fn output_bytes(&self, args: &ScalarFunctionArgs) -> DfResult<u128> {
        let rows = args.number_rows;
        let arg = |i: usize| {
            args.args.get(i).ok_or_else(|| DataFusionError::Plan(format!("{} needs more arguments", self.inner.name())))
        };
        Ok(match self.growth {
            Growth::Repeat => text_bytes(arg(0)?, rows)?.saturating_mul(max_count(arg(1)?, rows)?),
            Growth::Pad => max_count(arg(1)?, rows)?.saturating_mul(4).saturating_mul(rows.max(1) as u128),
            Growth::ArrayRepeat => max_count(arg(1)?, rows)?.saturating_mul(16).saturating_mul(rows.max(1) as u128),
            Growth::Series => series_elements(&args.args, rows)?.saturating_mul(8),
        })
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bytes = self.output_bytes(&args)?;
        if bytes > self.limit as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build about {bytes} bytes, over the result-size limit of {} bytes",
                self.inner.name(),
                self.limit
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join(op))
    }

    #[test]
    fn regression_long_operator_chains_are_refused_before_parsing() {
        assert!(check_complexity(&chain("+", MAX_OPERATORS + 1)).is_ok());
        assert!(matches!(check_complexity(&chain("+", MAX_OPERATORS + 2)), Err(SqlError::TooComplex(_))));
        let ors = format!("SELECT * FROM customers WHERE {}", vec!["customer_id = 'x'"; 1000].join(" OR "));
        assert!(matches!(check_complexity(&ors), Err(SqlError::TooComplex(m)) if m.contains("IN (")));
        assert!(matches!(check_complexity(&chain(" || ", 3000)), Err(SqlError::TooComplex(_))));
        let nested = format!("SELECT {}1{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        assert!(matches!(check_complexity(&nested), Err(SqlError::TooComplex(m)) if m.contains("nested")));
        let wide = format!("SELECT * FROM customers WHERE customer_id IN ({})", vec!["'x'"; 50_000].join(","));
        assert!(check_complexity(&wide).is_ok(), "a long IN list is flat, not deep");
        assert!(check_complexity("SELECT 'a + b + c' || \"x+y\"").is_ok(), "operators inside literals do not count");
    }

    #[test]
    fn only_admin_reads_rejected_events() {
        assert!(matches!(check_table("rejected_events", Access::Query), Err(SqlError::Forbidden(_))));
        assert!(check_table("rejected_events", Access::Admin).is_ok());
        assert!(check_table("customers", Access::Query).is_ok());
    }
}
