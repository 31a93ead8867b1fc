//! PostgreSQL's answers where DataFusion computes the same expression
//! differently, found by running the same queries on PostgreSQL 15 and on
//! Patron side by side (`tests/slt/postgres/`, whose expected values come
//! from that PostgreSQL run).
//!
//! Only silent differences are mended here, by [`postgres_semantics`], which
//! rewrites every plan as it is made, for every endpoint alike (before
//! DataFusion's analyzer, so the plan's schema, which clients are sent as
//! the columns' types, already has the rewritten types):
//! - **Casts to an integer type round.** PostgreSQL's `3.7::int` is 4 and
//!   `-2.5::bigint` is -3; Arrow's cast truncates (3, -2). A `float8`
//!   operand rounds half to even, as PostgreSQL's `float8 → int` does
//!   (Patron's money and score columns are `double precision`); a `numeric`
//!   (decimal) operand rounds half away from zero. A literal such as `2.5`
//!   is `numeric` in PostgreSQL but `double` here, so `2.5::int` is 2 here
//!   and 3 there: the one case this rule cannot tell apart.
//! - **`extract(second …)` keeps the fraction** of a timestamp:
//!   PostgreSQL's `extract(second FROM '10:42:17.5')` is 17.5, DataFusion's
//!   17. It reads the microseconds (which include the seconds) instead.
//!
//! Functions PostgreSQL users call by other names (`sign`, `mod`,
//! `variance`) are rewritten in the statement before planning
//! ([`rename_functions`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarUDF, Volatility, create_udf, lit,
};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments};

/// `plan` with the rewrites of the module documentation.
pub(crate) fn postgres_semantics(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let mut schema = merge_schema(&node.inputs());
        if let LogicalPlan::TableScan(scan) = &node {
            schema.merge(&DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())?);
        }
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let saved = names.save(&expr);
            expr.transform_up(|e| postgres_expression(e, &schema))
                .map(|rewritten| rewritten.update_data(|e| saved.restore(e)))
        })?
        .map_data(|node| node.recompute_schema())
    })
    .map(|rewritten| rewritten.data)
}

fn postgres_expression(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    Ok(match expr {
        Expr::Cast(Cast { expr, field }) if field.data_type().is_integer() => match rounded(&expr, schema) {
            Some(operand) => Transformed::yes(Expr::Cast(Cast::new_from_field(Box::new(operand), field))),
            None => Transformed::no(Expr::Cast(Cast::new_from_field(expr, field))),
        },
        Expr::TryCast(TryCast { expr, field }) if field.data_type().is_integer() => match rounded(&expr, schema) {
            Some(operand) => Transformed::yes(Expr::TryCast(TryCast::new_from_field(Box::new(operand), field))),
            None => Transformed::no(Expr::TryCast(TryCast::new_from_field(expr, field))),
        },
        Expr::ScalarFunction(call) if is_seconds_of_a_time(&call, schema) => {
            let mut args = call.args;
            args[0] = lit("microsecond");
            let micros = Expr::ScalarFunction(ScalarFunction::new_udf(call.func, args));
            Transformed::yes(micros.cast_to(&DataType::Float64, schema)? / lit(1_000_000.0))
        }
        other => Transformed::no(other),
    })
}

/// `operand` rounded as PostgreSQL rounds it before a cast to an integer
/// type, or `None` when it needs no rounding (or its type is unknown).
fn rounded(operand: &Expr, schema: &DFSchema) -> Option<Expr> {
    match operand.get_type(schema).ok()? {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let operand = operand.clone().cast_to(&DataType::Float64, schema).ok()?;
            Some(Expr::ScalarFunction(ScalarFunction::new_udf(round_half_even(), vec![operand])))
        }
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            let operand = operand.clone().cast_to(&DataType::Float64, schema).ok()?;
            Some(datafusion::functions::math::round().call(vec![operand]))
        }
        _ => None,
    }
}

/// Whether `call` is `date_part('second', t)` (what `extract(second FROM t)`
/// plans to) of a timestamp, date or time.
fn is_seconds_of_a_time(call: &ScalarFunction, schema: &DFSchema) -> bool {
    let [Expr::Literal(ScalarValue::Utf8(Some(field)), _), operand] = call.args.as_slice() else {
        return false;
    };
    call.func.name() == "date_part"
        && matches!(field.to_ascii_lowercase().as_str(), "second" | "seconds" | "s" | "sec" | "secs")
        && matches!(
            operand.get_type(schema),
            Ok(DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Time32(_)
                | DataType::Time64(_))
        )
}

/// `float8 → integer` rounding: half to even, as PostgreSQL's `rint`.
fn round_half_even() -> Arc<ScalarUDF> {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
        Arc::new(create_udf(
            "round_half_even",
            vec![DataType::Float64],
            DataType::Float64,
            Volatility::Immutable,
            Arc::new(|args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let values = arrays[0].as_primitive::<Float64Type>();
                let rounded: ArrayRef = Arc::new(values.unary::<_, Float64Type>(f64::round_ties_even));
                Ok(ColumnarValue::Array(rounded))
            }),
        ))
    });
    UDF.clone()
}

/// Renames, in a parsed statement, the functions PostgreSQL users call by
/// other names: `sign(x)` → `signum(x)`, `variance(x)` → `var_samp(x)`,
/// `mod(a, b)` → `a % b` (which truncates, as PostgreSQL's `mod` does).
pub(crate) fn rename_functions(expr: &mut ast::Expr) {
    let ast::Expr::Function(function) = expr else {
        return;
    };
    let name = function.name.to_string().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let renamed = match name {
        "sign" => "signum",
        "variance" => "var_samp",
        "mod" => {
            if let FunctionArguments::List(list) = &function.args
                && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(a)), FunctionArg::Unnamed(FunctionArgExpr::Expr(b))] =
                    list.args.as_slice()
            {
                *expr = ast::Expr::Nested(Box::new(ast::Expr::BinaryOp {
                    left: Box::new(a.clone()),
                    op: BinaryOperator::Modulo,
                    right: Box::new(b.clone()),
                }));
            }
            return;
        }
        _ => return,
    };
    function.name = ast::ObjectName::from(vec![ast::Ident::new(renamed)]);
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The first column of `sql`'s answer, planned with the rewrites; the
    /// plan's schema must say the type the batches have.
    async fn one(ctx: &SessionContext, sql: &str) -> ArrayRef {
        let frame = planned(ctx, sql).await;
        let declared = frame.schema().field(0).data_type().clone();
        let batches = frame.collect().await.unwrap();
        assert_eq!(batches[0].column(0).data_type(), &declared, "{sql}: the schema says the answer's type");
        batches[0].column(0).clone()
    }

    async fn planned(ctx: &SessionContext, sql: &str) -> datafusion::dataframe::DataFrame {
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        datafusion::dataframe::DataFrame::new(ctx.state(), postgres_semantics(plan).unwrap())
    }

    fn context() -> SessionContext {
        SessionContext::new()
    }

    #[tokio::test]
    async fn integer_casts_round_as_postgresql_and_keep_their_column_name() {
        let ctx = context();
        let frame =
            planned(&ctx, "SELECT CAST(x AS BIGINT) AS n FROM (VALUES (3.7), (-3.7), (2.5), (3.5), (-2.5)) t(x)").await;
        let batches = frame.collect().await.unwrap();
        let n = batches[0].column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(n.values().to_vec(), vec![4, -4, 2, 4, -2], "half to even for float8");
        let named = planned(&ctx, "SELECT CAST(x AS INT) FROM (VALUES (1.5)) t(x)").await;
        assert_eq!(named.schema().field(0).name(), "t.x", "the column is named as without the rule");
        let decimal = one(&ctx, "SELECT CAST(CAST(2.5 AS DECIMAL(5, 2)) AS INT)").await;
        assert_eq!(
            decimal.as_primitive::<datafusion::arrow::datatypes::Int32Type>().value(0),
            3,
            "half away for numeric"
        );
        let integers = one(&ctx, "SELECT CAST(x AS INT) FROM (VALUES (CAST(7 AS BIGINT))) t(x)").await;
        assert_eq!(integers.as_primitive::<datafusion::arrow::datatypes::Int32Type>().value(0), 7);
        let without_rule = SessionContext::new();
        let truncated =
            without_rule.sql("SELECT CAST(3.7 AS BIGINT)").await.unwrap().collect().await.unwrap()[0].column(0).clone();
        assert_eq!(truncated.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 3, "what Arrow alone answers");
    }

    #[tokio::test]
    async fn seconds_of_a_timestamp_keep_their_fraction() {
        let ctx = context();
        let seconds = one(&ctx, "SELECT extract(second FROM TIMESTAMP '2026-03-09 10:42:17.5')").await;
        assert_eq!(seconds.as_any().downcast_ref::<Float64Array>().unwrap().value(0), 17.5);
        let part = one(&ctx, "SELECT date_part('second', TIMESTAMP '2026-03-09 10:42:17.25')").await;
        assert_eq!(part.as_any().downcast_ref::<Float64Array>().unwrap().value(0), 17.25);
        let minutes = one(&ctx, "SELECT extract(minute FROM TIMESTAMP '2026-03-09 10:42:17.5')").await;
        let minutes = datafusion::arrow::compute::cast(&minutes, &DataType::Float64).unwrap();
        assert_eq!(minutes.as_primitive::<Float64Type>().value(0), 42.0, "other fields are untouched");
    }
}
