//! What psql's `\d+` and BI tools read to describe a table: comments on
//! tables and columns (`obj_description`, `col_description`), and the
//! `pg_class.reloptions` column and `ARRAY(subquery)` expression psql's
//! `\d+` query uses.
//!
//! Comments: `customers` column comments are defined beside its schema
//! (`patron_model::CUSTOMERS_COLUMN_COMMENTS`), table comments here. The
//! `pg_catalog` emulation numbers tables with oids of its own, so a call
//! `col_description(oid, attnum)` is rewritten before planning into a lookup
//! of the table and column names in `pg_class` and `pg_attribute`, whose
//! comment two functions give ([`register`]).
//!
//! Sizes: Patron's tables live in memory and are computed when read, so
//! `pg_table_size`, `pg_relation_size`, `pg_total_relation_size` and
//! `pg_indexes_size` answer NULL (psql's `\dt+` then shows no size), and
//! `pg_size_pretty` formats a size as PostgreSQL does.
//!
//! `information_schema.columns` reads as PostgreSQL's: `data_type` holds
//! PostgreSQL's type names (`text`, `bigint`, `double precision`,
//! `timestamp without time zone`) instead of Arrow's (`Utf8View`, `Int64`,
//! `Float64`, `Timestamp(µs)`), and `ordinal_position` counts from 1, not 0.
//! A reference to the view is replaced before planning by a query over
//! DataFusion's that says so ([`postgres_information_schema`]), with one
//! more column, `arrow_data_type`, Arrow's name of the type.
//!
//! `ARRAY(SELECT e FROM unnest(a) AS x)` becomes `array_transform(a, x -> e)`
//! and any other `ARRAY(subquery)` becomes `(SELECT array_agg(v) FROM
//! (subquery) AS patron_array(v))`: DataFusion plans neither form of the
//! original.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{SchemaProvider, TableProvider, view::ViewTable};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, LogicalPlanBuilder, Volatility, col, create_udf, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SelectItem, SetExpr, TableFactor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// What each table holds, as `obj_description(oid, 'pg_class')` answers.
pub(crate) const TABLE_COMMENTS: &[(&str, &str)] = &[
    ("customers", "One row per customer: purchase summary, scores, labels and consent, scored now."),
    ("recommendations", "Each customer's top 10 products, computed when the query runs."),
    ("similar_products", "Each product's nearest products by co-purchase, from the latest refresh."),
    ("products", "Every product seen: orders, distinct buyers, units, gross revenue, latest category."),
    ("model_params", "The fitted parameters of each model, with standard errors."),
    ("model_quality", "The last refits' predictions, judged against what happened since."),
    ("rejected_events", "The newest rejected events, with the field and the reason."),
    ("campaigns", "Campaigns: audience, channel, split and state."),
    ("campaign_members", "Each campaign's audience, frozen at creation, with its group."),
    ("campaign_results", "Each campaign's treatment and control outcomes with uplift and intervals."),
    ("channel_consents", "Consent on channels beyond email, sms and push, per customer and channel."),
    ("segment_definitions", "Every label of customers with its rule in words and the thresholds in force."),
    ("engine_stats", "Counters of the engine: events, customers, log, SQL scans."),
];

fn column_comments() -> &'static HashMap<(&'static str, &'static str), &'static str> {
    static COMMENTS: LazyLock<HashMap<(&str, &str), &str>> = LazyLock::new(|| {
        patron_model::CUSTOMERS_COLUMN_COMMENTS.iter().map(|&(column, text)| (("customers", column), text)).collect()
    });
    &COMMENTS
}

fn table_comment(table: &str) -> Option<&'static str> {
    TABLE_COMMENTS.iter().find(|(name, _)| *name == table).map(|(_, text)| *text)
}

/// A string function of one or two string arguments, null where `lookup` is.
fn comment_udf(
    name: &str,
    arity: usize,
    lookup: fn(&str, &str) -> Option<&'static str>,
) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8; arity],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let tables = arrays[0].as_string::<i32>();
            let columns = arrays.get(1).map(|c| c.as_string::<i32>());
            let comments: StringArray = (0..tables.len())
                .map(|row| {
                    let table = (!tables.is_null(row)).then(|| tables.value(row))?;
                    let column = columns.map_or(Some(""), |c| (!c.is_null(row)).then(|| c.value(row)))?;
                    lookup(table, column)
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(comments) as ArrayRef))
        }),
    )
}

/// Registers the functions the rewritten statements call: the comment
/// lookups, `pg_size_pretty` and `pg_type_name`.
pub(crate) fn register_functions(ctx: &SessionContext) {
    ctx.register_udf(comment_udf("patron_table_comment", 1, |table, _| table_comment(table)));
    ctx.register_udf(comment_udf("patron_column_comment", 2, |table, column| {
        column_comments().get(&(table, column)).copied()
    }));
    ctx.register_udf(create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let sizes = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let text: StringArray = sizes.iter().map(|size| size.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(text) as ArrayRef))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_type_name",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names: StringArray = arrays[0].as_string::<i32>().iter().map(|t| t.map(postgres_type_name)).collect();
            Ok(ColumnarValue::Array(Arc::new(names) as ArrayRef))
        }),
    ));
}

/// Adds `reloptions` (always null: Patron's tables have no storage options)
/// to the `pg_class` of the `pg_catalog` schema of `catalog`.
pub(crate) fn register_catalog(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let catalog = ctx
        .catalog(catalog)
        .ok_or_else(|| datafusion::error::DataFusionError::Plan(format!("no catalog {catalog}")))?;
    if let Some(inner) = catalog.schema("pg_catalog") {
        catalog.register_schema("pg_catalog", Arc::new(WithRelOptions { inner }))?;
    }
    Ok(())
}

/// PostgreSQL's name (as its `information_schema.columns.data_type` says
/// it) of the Arrow type DataFusion's view prints as `arrow`.
fn postgres_type_name(arrow: &str) -> &'static str {
    let kind = arrow.split('(').next().unwrap_or(arrow);
    match kind {
        "Utf8" | "Utf8View" | "LargeUtf8" => "text",
        "Int8" | "Int16" | "UInt8" => "smallint",
        "Int32" | "UInt16" => "integer",
        "Int64" | "UInt32" => "bigint",
        "UInt64" | "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => "numeric",
        "Float16" | "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Timestamp" if arrow.contains(',') => "timestamp with time zone",
        "Timestamp" => "timestamp without time zone",
        "Date32" | "Date64" => "date",
        "Time32" | "Time64" => "time without time zone",
        "Interval" | "Duration" => "interval",
        "Binary" | "LargeBinary" | "BinaryView" | "FixedSizeBinary" => "bytea",
        "List" | "LargeList" | "ListView" | "FixedSizeList" => "ARRAY",
        _ => "USER-DEFINED",
    }
}

/// DataFusion's `information_schema.columns`, as PostgreSQL's reads.
/// One column more than PostgreSQL's: `arrow_data_type`, the Arrow type
/// DataFusion reads (what tells `Utf8View` from `Utf8`).
const COLUMNS_VIEW: &str = "SELECT table_catalog, table_schema, table_name, column_name, \
     CAST(ordinal_position AS BIGINT) + 1 AS ordinal_position, column_default, is_nullable, pg_type_name(data_type) AS data_type, \
     character_maximum_length, character_octet_length, numeric_precision, numeric_precision_radix, numeric_scale, \
     datetime_precision, interval_type, data_type AS arrow_data_type \
     FROM information_schema.columns AS patron_arrow_columns";

/// Replaces every reference to `information_schema.columns` in `statement`
/// with [`COLUMNS_VIEW`], under the reference's alias (or `columns`).
pub(crate) fn postgres_information_schema(statement: &mut ast::Statement) {
    struct Columns(Option<Box<Query>>);
    impl ast::VisitorMut for Columns {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table { name, alias, args: None, .. } = factor
                && let [schema, table] = name.0.as_slice()
                && schema.to_string().eq_ignore_ascii_case("information_schema")
                && table.to_string().eq_ignore_ascii_case("columns")
                && alias.as_ref().is_none_or(|a| a.name.value != "patron_arrow_columns")
                && let Some(view) = self.0.clone()
            {
                let alias = alias.clone().unwrap_or(ast::TableAlias {
                    explicit: true,
                    name: ast::Ident::new("columns"),
                    columns: vec![],
                    at: None,
                });
                *factor = TableFactor::Derived { lateral: false, subquery: view, alias: Some(alias), sample: None };
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    static VIEW: LazyLock<Option<Box<Query>>> =
        LazyLock::new(|| match Parser::parse_sql(&PostgreSqlDialect {}, COLUMNS_VIEW).ok()?.pop()? {
            ast::Statement::Query(query) => Some(query),
            _ => None,
        });
    let _ = ast::VisitMut::visit(statement, &mut Columns(VIEW.clone()));
}

/// A byte count as PostgreSQL's `pg_size_pretty(bigint)` prints it: bytes
/// below 10 kB, then the largest unit that keeps the number below 20480
/// (kB, MB, GB, TB, PB), rounded half away from zero.
fn size_pretty(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // One extra bit of precision, for the rounding.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

/// The `pg_catalog` emulation with `pg_class.reloptions`.
#[derive(Debug)]
struct WithRelOptions {
    inner: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for WithRelOptions {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        match table {
            Some(pg_class) if name.eq_ignore_ascii_case("pg_class") => {
                let columns: Vec<_> = pg_class.schema().fields().iter().map(|f| col(f.name().as_str())).collect();
                let options = ScalarValue::new_null_list(DataType::Utf8, true, 1);
                let plan =
                    LogicalPlanBuilder::scan("pg_class", datafusion::datasource::provider_as_source(pg_class), None)?
                        .project(columns.into_iter().chain([lit(options).alias("reloptions")]))?
                        .build()?;
                Ok(Some(Arc::new(ViewTable::new(plan, None))))
            }
            other => Ok(other),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// The last part of a function's name, lower-cased (`pg_catalog.col_description` → `col_description`).
fn function_name(function: &ast::Function) -> String {
    function.name.0.last().map(|part| part.to_string().to_ascii_lowercase()).unwrap_or_default()
}

fn plain_arguments(function: &ast::Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn parsed(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).ok()?.parse_expr().ok()
}

/// Rewrites `col_description`, `obj_description` and `ARRAY(subquery)` as
/// the module documentation says; everything else is left alone.
pub(crate) fn rewrite(expr: &mut Expr) {
    let replacement = match &*expr {
        Expr::Function(function) => match (function_name(function).as_str(), plain_arguments(function).as_deref()) {
            ("col_description", Some([table, column])) => parsed(&format!(
                "(SELECT max(patron_column_comment(patron_c.relname, patron_a.attname)) \
                 FROM pg_catalog.pg_class patron_c JOIN pg_catalog.pg_attribute patron_a \
                 ON patron_a.attrelid = patron_c.oid WHERE patron_c.oid = ({table}) AND patron_a.attnum = ({column}))"
            )),
            ("obj_description", Some([object, Expr::Value(v)])) if v.to_string() != "'pg_class'" => parsed("NULL"),
            ("obj_description", Some([object, ..])) => parsed(&format!(
                "(SELECT max(patron_table_comment(patron_c.relname)) FROM pg_catalog.pg_class patron_c \
                 WHERE patron_c.oid = ({object}))"
            )),
            ("pg_table_size" | "pg_relation_size" | "pg_total_relation_size" | "pg_indexes_size", _) => {
                parsed("CAST(NULL AS BIGINT)")
            }
            ("array", _) => match &function.args {
                FunctionArguments::Subquery(query) => Some(array_of(query)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    if let Some(replacement) = replacement {
        *expr = replacement;
    }
}

/// `ARRAY(query)` without a subquery in the select list.
fn array_of(query: &Query) -> Expr {
    if let Some((array, element, body)) = unnest_map(query)
        && let Some(mut call) = parsed("array_transform(NULL, NULL)")
        && let Expr::Function(function) = &mut call
        && let FunctionArguments::List(list) = &mut function.args
    {
        let lambda = Expr::Lambda(ast::LambdaFunction {
            params: ast::OneOrManyWithParens::One(ast::LambdaFunctionParameter { name: element, data_type: None }),
            body: Box::new(body),
            syntax: ast::LambdaSyntax::Arrow,
        });
        list.args = vec![
            FunctionArg::Unnamed(FunctionArgExpr::Expr(array)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(lambda)),
        ];
        return call;
    }
    parsed(&format!("(SELECT array_agg(patron_array.v) FROM ({query}) AS patron_array(v))"))
        .unwrap_or(Expr::Array(ast::Array { elem: vec![], named: true }))
}

/// `(a, x, e)` of a query `SELECT e FROM unnest(a) AS x` and nothing more.
fn unnest_map(query: &Query) -> Option<(Expr, ast::Ident, Expr)> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.with.is_none()
        && select.selection.is_none()
        && select.having.is_none()
        && select.distinct.is_none()
        && select.from.len() == 1
        && select.from[0].joins.is_empty();
    let ([SelectItem::UnnamedExpr(element) | SelectItem::ExprWithAlias { expr: element, .. }], true) =
        (select.projection.as_slice(), plain)
    else {
        return None;
    };
    let (array, alias) = match &select.from[0].relation {
        TableFactor::Table { name, args: Some(args), alias: Some(alias), .. }
            if name.0.last().is_some_and(|p| p.to_string().eq_ignore_ascii_case("unnest")) =>
        {
            let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] = args.args.as_slice() else {
                return None;
            };
            (array, alias)
        }
        TableFactor::UNNEST { alias: Some(alias), array_exprs, with_offset: false, with_ordinality: false, .. } => {
            let [array] = array_exprs.as_slice() else {
                return None;
            };
            (array, alias)
        }
        _ => return None,
    };
    alias.columns.is_empty().then(|| (array.clone(), alias.name.clone(), element.clone()))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;

    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop().unwrap();
        let _ = visit_expressions_mut(&mut statement, |e| {
            rewrite(e);
            std::ops::ControlFlow::<()>::Continue(())
        });
        statement.to_string()
    }

    #[test]
    fn array_of_an_unnest_becomes_a_transform_and_other_arrays_an_aggregate() {
        assert_eq!(
            rewritten("SELECT array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x) FROM t tc"),
            "SELECT array_transform(tc.reloptions, x -> 'toast.' || x) FROM t tc"
        );
        assert_eq!(
            rewritten("SELECT array(SELECT id FROM t WHERE id > 1)"),
            "SELECT (SELECT array_agg(patron_array.v) FROM (SELECT id FROM t WHERE id > 1) AS patron_array (v))"
        );
        assert_eq!(rewritten("SELECT make_array(1, 2), array[1]"), "SELECT make_array(1, 2), ARRAY[1]");
    }

    #[test]
    fn descriptions_become_lookups_by_name() {
        let text = rewritten("SELECT pg_catalog.col_description(a.attrelid, a.attnum) FROM pg_attribute a");
        assert!(text.contains("patron_column_comment(patron_c.relname, patron_a.attname)"), "{text}");
        assert!(text.contains("patron_c.oid = (a.attrelid) AND patron_a.attnum = (a.attnum)"), "{text}");
        let table = rewritten("SELECT obj_description(c.oid, 'pg_class') FROM pg_class c");
        assert!(table.contains("patron_table_comment(patron_c.relname)"), "{table}");
        assert_eq!(rewritten("SELECT obj_description(n.oid, 'pg_namespace')"), "SELECT NULL");
    }

    /// Values from PostgreSQL 15's `pg_size_pretty`.
    #[test]
    fn sizes_print_as_postgresql_prints_them() {
        let cases = [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (1_000_000, "977 kB"),
            (20_970_000, "20 MB"),
            (1_073_741_824, "1024 MB"),
            (123_456_789_012, "115 GB"),
            (-10240, "-10 kB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(size_pretty(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn information_schema_columns_reads_through_the_postgresql_view() {
        let mut statement = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT data_type FROM information_schema.columns c WHERE c.table_name = 'x'",
        )
        .unwrap()
        .pop()
        .unwrap();
        postgres_information_schema(&mut statement);
        let text = statement.to_string();
        assert!(text.contains("pg_type_name(data_type) AS data_type"), "{text}");
        assert!(text.contains("information_schema.columns AS patron_arrow_columns) c WHERE"), "{text}");
        assert_eq!(text.matches("information_schema.columns").count(), 1, "replaced once: {text}");
        for (arrow, postgres) in [
            ("Utf8View", "text"),
            ("Int64", "bigint"),
            ("Float64", "double precision"),
            ("Timestamp(µs)", "timestamp without time zone"),
            ("Timestamp(µs, \"UTC\")", "timestamp with time zone"),
            ("List(Utf8)", "ARRAY"),
            ("Map(…)", "USER-DEFINED"),
        ] {
            assert_eq!(postgres_type_name(arrow), postgres, "{arrow}");
        }
    }

    #[test]
    fn every_registered_table_has_a_comment() {
        for (name, text) in TABLE_COMMENTS {
            assert!(text.ends_with('.'), "{name}");
        }
        assert_eq!(column_comments().get(&("customers", "clv")).map(|t| t.starts_with("Lifetime value")), Some(true));
    }
}
