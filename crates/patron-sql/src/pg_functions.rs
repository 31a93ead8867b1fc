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

/// Rewrites the calls PostgreSQL clients make that DataFusion lacks (see the
/// module documentation) into what it can plan.
pub fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Some(arg) = single_argument(expr, "to_regtype")
            && let Some(lookup) = type_oid_lookup(arg.clone())
        {
            *expr = lookup;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop().unwrap();
        rewrite(&mut statement);
        statement.to_string()
    }

    #[test]
    fn to_regtype_becomes_a_lookup_in_pg_type_and_nothing_else_changes() {
        assert_eq!(
            rewritten("SELECT oid FROM pg_type t WHERE t.oid = pg_catalog.to_regtype($1)"),
            "SELECT oid FROM pg_type t WHERE t.oid = (SELECT max(oid) FROM pg_catalog.pg_type WHERE typname = $1)"
        );
        let untouched = "SELECT to_char(first_purchase_at, 'YYYY'), other.to_regtype(x) FROM customers";
        assert_eq!(rewritten(untouched), untouched);
    }

    #[test]
    fn version_reads_as_postgresql_and_names_patron() {
        assert!(VERSION.starts_with("PostgreSQL 16.6 (Patron "), "{}", *VERSION);
        assert!(server_version().starts_with("16.6 (Patron "));
    }
}
