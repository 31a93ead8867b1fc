//! Functions whose names PostgreSQL clients rely on, answered as PostgreSQL
//! does where DataFusion's answer would break them.
//!
//! `version()`: SQLAlchemy's PostgreSQL dialects (and with them
//! `pandas.read_sql`, Superset and Metabase's drivers) parse the server's
//! version out of `SELECT version()` and refuse to connect when it does not
//! start with `PostgreSQL <major>.<minor>`. DataFusion's answers
//! `Apache DataFusion 55.2.0, …`, so Patron answers in PostgreSQL's form and
//! still says what it is inside the parentheses. The pgwire startup
//! parameter `server_version` ([`SERVER_VERSION`]) says the same release.
//!
//! `to_regtype(name)`: psycopg looks types up with it (SQLAlchemy asks for
//! `hstore` at connect time). The statement is rewritten before planning so
//! that the call becomes `(SELECT max(oid) FROM pg_catalog.pg_type WHERE
//! typname = name)`, which the `pg_catalog` emulation answers (NULL for a type it does
//! not have, as PostgreSQL answers for an extension not installed).
//!
//! `to_char(time, pattern)`: DataFusion's `to_char` takes strftime patterns
//! (`%Y-%m`) and returns anything else as literal text, so a PostgreSQL user
//! writing `to_char(t, 'YYYY-MM')` got `YYYY-MM` on every row. A literal
//! pattern without `%` is read as PostgreSQL's and translated to strftime
//! ([`postgres_pattern`]); a PostgreSQL field that has no strftime
//! equivalent is refused with its name, never printed as text.
//!
//! `a IS DISTINCT FROM b AND c`: the parser binds `AND`/`OR` tighter than
//! `IS [NOT] DISTINCT FROM` and reads `a IS DISTINCT FROM (b AND c)`, a
//! silently wrong answer; PostgreSQL reads `(a IS DISTINCT FROM b) AND c`.
//! A parenthesised operand stays a `Nested` expression, so an unparenthesised
//! `AND`/`OR` on the right of `IS [NOT] DISTINCT FROM` can only come from
//! that precedence, and the rewrite moves it back out (`distinct_precedence`).

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SetExpr, Statement, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The PostgreSQL release whose behaviour the SQL endpoint follows (the
/// `pg_catalog` emulation's), as clients parse it from `server_version`.
pub const SERVER_VERSION: &str = "16.6";

/// What `version()` answers.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "PostgreSQL {SERVER_VERSION} (Patron {}, Apache DataFusion {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    )
});

/// `server_version` as the pgwire startup reports it: the release, then Patron.
pub fn server_version() -> String {
    format!("{SERVER_VERSION} (Patron {})", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(VERSION.clone()))))
    }
}

/// Registers the functions above in `ctx`, replacing DataFusion's.
pub fn register(ctx: &SessionContext) {
    let version = Version { signature: Signature::nullary(Volatility::Stable) };
    ctx.register_udf(ScalarUDF::new_from_impl(version));
}

/// The one argument of a call to `name` (any case, schema `pg_catalog` or none).
fn single_argument<'a>(expr: &'a Expr, name: &str) -> Option<&'a Expr> {
    let Expr::Function(f) = expr else { return None };
    let last = f.name.0.last()?.as_ident()?;
    let schema_ok = match f.name.0.as_slice() {
        [_] => true,
        [schema, _] => schema.as_ident().is_some_and(|s| s.value.eq_ignore_ascii_case("pg_catalog")),
        _ => false,
    };
    if !schema_ok || !last.value.eq_ignore_ascii_case(name) {
        return None;
    }
    match &f.args {
        FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)) => Some(arg),
            _ => None,
        },
        _ => None,
    }
}

/// `(SELECT max(oid) FROM pg_catalog.pg_type WHERE typname = <name>)`.
fn type_oid_lookup(name: Expr) -> Option<Expr> {
    // max(): one row, NULL when no type has the name. A bare `SELECT oid`
    // keeps the column's non-null type, and DataFusion then folds
    // `to_regtype('missing') IS NULL` to false.
    let sql = "SELECT max(oid) FROM pg_catalog.pg_type WHERE typname = NULL";
    let Statement::Query(mut query) = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?.pop()? else { return None };
    let SetExpr::Select(select) = query.body.as_mut() else { return None };
    let Some(Expr::BinaryOp { right, .. }) = select.selection.as_mut() else { return None };
    **right = name;
    Some(Expr::Subquery(query))
}

/// A `to_char` pattern field Patron cannot format as PostgreSQL does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("to_char: the PostgreSQL pattern field {field:?} is not supported ({hint})")]
pub struct PatternError {
    /// The field as written.
    pub field: String,
    /// What to write instead.
    pub hint: &'static str,
}

/// PostgreSQL's numeric fields (any case) and their strftime forms; with the
/// `FM` prefix the `-` flag drops the zero padding, as PostgreSQL does.
const NUMERIC_FIELDS: &[(&str, &str)] = &[
    ("HH24", "H"),
    ("HH12", "I"),
    ("IYYY", "G"),
    ("YYYY", "Y"),
    ("DDD", "j"),
    ("HH", "I"),
    ("MI", "M"),
    ("SS", "S"),
    ("YY", "y"),
    ("MM", "m"),
    ("DD", "d"),
    ("IW", "V"),
];

/// Text fields, matched with their case as PostgreSQL does.
const TEXT_FIELDS: &[(&str, &str)] = &[
    ("FMMonth", "%B"),
    ("FMDay", "%A"),
    ("Mon", "%b"),
    ("Dy", "%a"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("am", "%P"),
    ("pm", "%P"),
];

/// Fields refused with what to write instead.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    ("Month", "PostgreSQL pads it to 9 characters; write FMMonth for the name alone"),
    ("MONTH", "upper case names are not supported; write upper(to_char(t, 'FMMonth'))"),
    ("month", "lower case names are not supported; write lower(to_char(t, 'FMMonth'))"),
    ("Day", "PostgreSQL pads it to 9 characters; write FMDay for the name alone"),
    ("DAY", "upper case names are not supported; write upper(to_char(t, 'FMDay'))"),
    ("day", "lower case names are not supported; write lower(to_char(t, 'FMDay'))"),
    ("MON", "upper case names are not supported; write upper(to_char(t, 'Mon'))"),
    ("mon", "lower case names are not supported; write lower(to_char(t, 'Mon'))"),
    ("DY", "upper case names are not supported; write upper(to_char(t, 'Dy'))"),
    ("dy", "lower case names are not supported; write lower(to_char(t, 'Dy'))"),
    ("MS", "use date_part('milliseconds', t)"),
    ("US", "use date_part('microseconds', t)"),
    ("TZ", "timestamps here are UTC without a zone"),
];

/// Translates a PostgreSQL `to_char` pattern (`YYYY-MM-DD HH24:MI`, `FMMonth
/// YYYY`, `"Week "IW`) to the strftime pattern DataFusion's `to_char` takes.
pub fn postgres_pattern(pattern: &str) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            // Quoted text is copied as it is.
            let end = rest[1..].find('"').map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[1..end.saturating_sub(1).max(1)].replace('%', "%%"));
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push('%');
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(&(field, hint)) = REFUSED_FIELDS.iter().find(|(f, _)| rest.starts_with(f)) {
            // "MON" must not hide "MONTH": the longer text field wins above.
            if !TEXT_FIELDS.iter().any(|(t, _)| rest.starts_with(t) && t.len() > field.len()) {
                return Err(PatternError { field: field.to_owned(), hint });
            }
        }
        if let Some(&(field, strftime)) = TEXT_FIELDS.iter().find(|(f, _)| rest.starts_with(f)) {
            out.push_str(strftime);
            rest = &rest[field.len()..];
            continue;
        }
        let (fill_mode, after) = match rest.get(..2) {
            Some(fm) if fm.eq_ignore_ascii_case("FM") => (true, &rest[2..]),
            _ => (false, rest),
        };
        let numeric =
            NUMERIC_FIELDS.iter().find(|(f, _)| after.get(..f.len()).is_some_and(|p| p.eq_ignore_ascii_case(f)));
        match numeric {
            Some(&(field, conversion)) => {
                out.push('%');
                if fill_mode {
                    out.push('-');
                }
                out.push_str(conversion);
                rest = &after[field.len()..];
            }
            None => {
                let field: String = rest.chars().take_while(char::is_ascii_alphabetic).take(4).collect();
                return Err(PatternError {
                    field,
                    hint: "supported: YYYY YY IYYY MM DD DDD IW HH24 HH12 HH MI SS AM PM Mon Dy FMMonth FMDay, FM before a number, \"quoted text\"",
                });
            }
        }
    }
    Ok(out)
}

/// The second argument of `to_char(x, '<literal>')`, to translate.
fn to_char_pattern(expr: &mut Expr) -> Option<&mut String> {
    let Expr::Function(f) = expr else { return None };
    let [name] = f.name.0.as_slice() else { return None };
    if !name.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("to_char")) {
        return None;
    }
    let FunctionArguments::List(list) = &mut f.args else { return None };
    let [_, FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))] = list.args.as_mut_slice() else {
        return None;
    };
    match &mut value.value {
        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(pattern) => Some(pattern),
        _ => None,
    }
}

/// Gives `IS [NOT] DISTINCT FROM` PostgreSQL's precedence over `AND`/`OR`
/// (see the module documentation).
fn distinct_precedence(expr: &mut Expr) {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    let (Expr::IsDistinctFrom(_, right) | Expr::IsNotDistinctFrom(_, right)) = expr else { return };
    if !matches!(right.as_ref(), Expr::BinaryOp { op: BinaryOperator::And | BinaryOperator::Or, .. }) {
        return;
    }
    let placeholder = Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into());
    let Expr::BinaryOp { left: inner, op, right: rest } = std::mem::replace(right.as_mut(), placeholder) else {
        return;
    };
    // a IS DISTINCT FROM (b op c)  →  (a IS DISTINCT FROM b) op c
    **right = *inner;
    let mut comparison = std::mem::replace(expr, Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()));
    distinct_precedence(&mut comparison);
    *expr = Expr::BinaryOp { left: Box::new(comparison), op, right: rest };
}

/// Rewrites the calls PostgreSQL clients make that DataFusion lacks (see the
/// module documentation) into what it can plan.
pub fn rewrite(statement: &mut Statement) -> Result<(), PatternError> {
    crate::describe::postgres_information_schema(statement);
    let flow = visit_expressions_mut(statement, |expr| {
        distinct_precedence(expr);
        crate::pg_semantics::rename_functions(expr);
        crate::describe::rewrite(expr);
        if let Some(arg) = single_argument(expr, "to_regtype")
            && let Some(lookup) = type_oid_lookup(arg.clone())
        {
            *expr = lookup;
        }
        if let Some(pattern) = to_char_pattern(expr)
            && !pattern.contains('%')
        {
            match postgres_pattern(pattern) {
                Ok(strftime) => *pattern = strftime,
                Err(e) => return std::ops::ControlFlow::Break(e),
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    match flow {
        std::ops::ControlFlow::Break(e) => Err(e),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop().unwrap();
        rewrite(&mut statement).unwrap();
        statement.to_string()
    }

    #[test]
    fn to_regtype_becomes_a_lookup_in_pg_type_and_nothing_else_changes() {
        assert_eq!(
            rewritten("SELECT oid FROM pg_type t WHERE t.oid = pg_catalog.to_regtype($1)"),
            "SELECT oid FROM pg_type t WHERE t.oid = (SELECT max(oid) FROM pg_catalog.pg_type WHERE typname = $1)"
        );
        let untouched = "SELECT to_char(first_purchase_at, '%Y'), other.to_regtype(x) FROM customers";
        assert_eq!(rewritten(untouched), untouched);
    }

    #[test]
    fn version_reads_as_postgresql_and_names_patron() {
        assert!(VERSION.starts_with("PostgreSQL 16.6 (Patron "), "{}", *VERSION);
        assert!(server_version().starts_with("16.6 (Patron "));
    }

    /// Found under issue 19: `a IS DISTINCT FROM true AND b = 'x'` was read as
    /// `a IS DISTINCT FROM (true AND b = 'x')`.
    /// The tree of the first selected expression, with every grouping explicit.
    fn shape(sql: &str) -> String {
        fn render(e: &Expr) -> String {
            match e {
                Expr::BinaryOp { left, op, right } => format!("({} {op} {})", render(left), render(right)),
                Expr::IsDistinctFrom(a, b) => format!("distinct({}, {})", render(a), render(b)),
                Expr::IsNotDistinctFrom(a, b) => format!("not_distinct({}, {})", render(a), render(b)),
                Expr::Nested(inner) => render(inner),
                other => other.to_string(),
            }
        }
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop().unwrap();
        rewrite(&mut statement).unwrap();
        let Statement::Query(query) = statement else { panic!("a query") };
        let SetExpr::Select(select) = *query.body else { panic!("a select") };
        match &select.projection[0] {
            datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e) => render(e),
            other => panic!("{other}"),
        }
    }

    /// Found under issue 19: `a IS DISTINCT FROM true AND b = 'x'` was read as
    /// `a IS DISTINCT FROM (true AND b = 'x')`.
    #[test]
    fn regression_is_distinct_from_binds_tighter_than_and_and_or() {
        assert_eq!(
            shape("SELECT a IS DISTINCT FROM true AND b = 'x' OR c IS NOT DISTINCT FROM d AND e"),
            "((distinct(a, true) AND (b = 'x')) OR (not_distinct(c, d) AND e))"
        );
        assert_eq!(shape("SELECT a IS DISTINCT FROM b AND c AND d"), "((distinct(a, b) AND c) AND d)");
        assert_eq!(shape("SELECT a IS DISTINCT FROM (true AND b)"), "distinct(a, (true AND b))", "parentheses hold");
    }

    /// Issue 21: `to_char(first_purchase_at, 'YYYY-MM')` printed `YYYY-MM`.
    #[test]
    fn regression_postgresql_to_char_patterns_are_translated_or_refused_by_name() {
        let cases = [
            ("YYYY-MM", "%Y-%m"),
            ("yyyy-mm-dd HH24:MI:SS", "%Y-%m-%d %H:%M:%S"),
            ("FMDD FMMonth YYYY", "%-d %B %Y"),
            ("Dy, DD Mon YYYY HH12:MI AM", "%a, %d %b %Y %I:%M %p"),
            ("IYYY-\"W\"IW", "%G-W%V"),
            ("\"100% sure\" DDD", "100%% sure %j"),
        ];
        for (pg, strftime) in cases {
            assert_eq!(postgres_pattern(pg).as_deref(), Ok(strftime), "{pg}");
        }
        assert_eq!(postgres_pattern("Month").unwrap_err().field, "Month");
        assert_eq!(postgres_pattern("YYYY-Q").unwrap_err().field, "Q");
        assert_eq!(postgres_pattern("MON").unwrap_err().field, "MON");
        assert_eq!(rewritten("SELECT to_char(t, 'YYYY-MM')"), "SELECT to_char(t, '%Y-%m')");
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT to_char(t, 'Q')").unwrap().pop().unwrap();
        assert!(
            rewrite(&mut statement).unwrap_err().to_string().starts_with("to_char: the PostgreSQL pattern field \"Q\"")
        );
    }
}
