//! Arrow schemas of the contract tables (DESIGN.md §4), defined once.
//!
//! Timestamps are `Timestamp(Microsecond, None)` holding UTC (SQL `TIMESTAMP`);
//! money is base currency as `Float64`.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// Schema of the `customers` table and `customers.parquet`.
pub fn customers_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        use DataType::{Boolean, Float64, Int32, Int64, Utf8, Utf8View};
        let f = |name: &str, ty: DataType, nullable: bool| Field::new(name, ty, nullable);
        Arc::new(Schema::new(vec![
            f("customer_id", Utf8, false),
            f("first_purchase_at", timestamp(), true),
            f("last_purchase_at", timestamp(), true),
            f("orders", Int64, false),
            f("frequency", Int64, false),
            f("recency_days", Float64, true),
            f("tenure_days", Float64, true),
            f("revenue", Float64, false),
            f("avg_order_value", Float64, true),
            f("p_alive", Float64, true),
            f("churn_risk", Float64, true),
            f("expected_orders_90d", Float64, true),
            f("expected_order_value", Float64, true),
            f("clv", Float64, true),
            f("rfm_r", Int32, true),
            f("rfm_f", Int32, true),
            f("rfm_m", Int32, true),
            f("rfm_segment", Utf8View, true),
            f("value_tier", Utf8View, true),
            f("relationship", Utf8View, true),
            f("lifecycle_stage", Utf8View, false),
            f("consent_email", Boolean, true),
            f("consent_sms", Boolean, true),
            f("consent_push", Boolean, true),
            f("updated_at", timestamp(), false),
            // Appended by issue 18 (prediction timing); the contract's columns keep their order.
            f("p_purchase_30d", Float64, true),
            f("expected_orders_365d", Float64, true),
            f("next_order_at", timestamp(), true),
            f("clv_low", Float64, true),
            f("clv_high", Float64, true),
            f("net_clv", Float64, true),
            f("acquisition_cost", Float64, true),
            f("acquisition_channel", Utf8, true),
        ]))
    });
    SCHEMA.clone()
}

/// What each `customers` column holds, in a sentence: the column comments
/// psql's `\d+ customers` and BI tools show (`col_description`).
pub const CUSTOMERS_COLUMN_COMMENTS: &[(&str, &str)] = &[
    ("customer_id", "The customer's id as the shop sent it."),
    ("first_purchase_at", "Time of the first purchase (UTC); null for a prospect."),
    ("last_purchase_at", "Time of the latest purchase (UTC); null for a prospect."),
    ("orders", "Purchase events (orders) applied."),
    ("frequency", "Repeat purchase days: purchase days after the first (BTYD x)."),
    ("recency_days", "Days from the first to the latest purchase day (BTYD t_x)."),
    ("tenure_days", "Days from the first purchase day to now (BTYD T)."),
    ("revenue", "Net revenue in the base currency: purchases less refunds."),
    ("avg_order_value", "revenue / orders."),
    ("p_alive", "Probability the customer is still buying, under the purchase model."),
    ("churn_risk", "1 - p_alive."),
    ("expected_orders_90d", "Expected purchase days in the next 90 days."),
    ("expected_order_value", "Expected value of a future order (Gamma-Gamma), base currency."),
    ("clv", "Lifetime value: discounted expected margin over the CLV horizon, base currency."),
    ("rfm_r", "Recency score 1-5 among buyers (5 = most recent)."),
    ("rfm_f", "Frequency score 1-5 among buyers (5 = most purchase days)."),
    ("rfm_m", "Monetary score 1-5 among buyers (5 = most net revenue)."),
    ("rfm_segment", "Named RFM segment, among the names of the lifecycle stage (see segment_definitions)."),
    ("value_tier", "most_valuable (top 20% by CLV), potential (rest of the top half), low_value."),
    ("relationship", "Value x loyalty: true_friend, butterfly, barnacle, stranger (see segment_definitions)."),
    ("lifecycle_stage", "prospect, first_time, repeat, loyal, at_risk or lapsed, from p_alive now."),
    ("consent_email", "Latest e-mail marketing consent by event time; null if never stated."),
    ("consent_sms", "Latest SMS marketing consent by event time; null if never stated."),
    ("consent_push", "Latest push marketing consent by event time; null if never stated."),
    ("updated_at", "The time the scores are as of."),
    ("p_purchase_30d", "Probability of at least one purchase in the next 30 days."),
    ("expected_orders_365d", "Expected purchase days in the next 365 days."),
    ("next_order_at", "When the next purchase is expected; null where the model cannot say."),
    ("clv_low", "Lower end of the 90% interval of clv from the fitted parameters' uncertainty."),
    ("clv_high", "Upper end of the 90% interval of clv."),
    ("net_clv", "clv less the retention cost over the horizon and the acquisition cost."),
    ("acquisition_cost", "What winning the customer cost, as an event stated it; null if none did."),
    ("acquisition_channel", "The channel that won the customer, as an event stated it."),
];

/// Schema of the `recommendations` table and `recommendations.parquet`.
pub fn recommendations_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("product_id", DataType::Utf8, false),
            Field::new("score", DataType::Float64, false),
            Field::new("reason", DataType::Utf8, false),
        ]))
    });
    SCHEMA.clone()
}

/// Schema of the `similar_products` table.
pub fn similar_products_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("product_id", DataType::Utf8, false),
            Field::new("similar_product_id", DataType::Utf8, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("score", DataType::Float64, false),
            Field::new("co_purchases", DataType::Int64, false),
        ]))
    });
    SCHEMA.clone()
}

/// Schema of the `products` table.
pub fn products_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("product_id", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, true),
            Field::new("orders", DataType::Int64, true),
            Field::new("customers", DataType::Int64, true),
            Field::new("units", DataType::Int64, true),
            Field::new("revenue", DataType::Float64, true),
        ]))
    });
    SCHEMA.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_columns_follow_the_contract_in_order() {
        let names: Vec<String> = customers_schema().fields().iter().map(|f| f.name().clone()).collect();
        let contract = "customer_id, first_purchase_at, last_purchase_at, orders, frequency, recency_days, tenure_days, revenue, avg_order_value, p_alive, churn_risk, expected_orders_90d, expected_order_value, clv, rfm_r, rfm_f, rfm_m, rfm_segment, value_tier, relationship, lifecycle_stage, consent_email, consent_sms, consent_push, updated_at, p_purchase_30d, expected_orders_365d, next_order_at, clv_low, clv_high, net_clv, acquisition_cost, acquisition_channel";
        assert_eq!(names.join(", "), contract);
    }

    #[test]
    fn every_customers_column_has_one_comment_in_column_order() {
        let schema = customers_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let commented: Vec<&str> = CUSTOMERS_COLUMN_COMMENTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(commented, names);
        assert!(CUSTOMERS_COLUMN_COMMENTS.iter().all(|(_, comment)| comment.ends_with('.')));
    }
}
