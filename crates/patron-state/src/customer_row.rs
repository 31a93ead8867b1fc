//! The one definition of how a `customers` row is derived from a customer's
//! record (DESIGN.md §4): which value each column holds, in which unit. The
//! column names and types live in `patron_model::customers_schema`; the SQL
//! table and `patron score`'s `customers.parquet` both build their columns
//! here, so they cannot drift apart. (`GET /v1/customers/{id}` renders the same
//! values as JSON; an end-to-end test compares all three on every customer.)

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use patron_model::Timestamp;
use patron_score::{LifecycleStage, ScoreInput, Scores, Segments};

use crate::record::CustomerRecord;
use crate::{Result, StateError};

/// What one row is made of: the record, plus the model input, scores, labels
/// and lifecycle stage the caller computed for it (the engine's latest for
/// SQL, a fresh batch scoring for `patron score`).
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    /// The customer's durable summary.
    pub record: &'a CustomerRecord,
    /// Model input at "now" (None before any purchase).
    pub input: Option<ScoreInput>,
    /// Model scores (None until scored).
    pub scores: Option<Scores>,
    /// Population-relative labels (None until the first fit).
    pub segments: Option<Segments>,
    /// Lifecycle stage.
    pub lifecycle: LifecycleStage,
}

/// What every row of one answer shares.
#[derive(Clone, Copy, Debug)]
pub struct RowClock {
    /// "Now" of the scores: the `updated_at` column.
    pub now: Timestamp,
    /// Minor units per major unit of the base currency (money columns are major units).
    pub minor_per_major: f64,
}

/// One column of `customers` for `rows`, or `None` for a name the table does
/// not have.
pub fn customer_column(name: &str, rows: &[RowView<'_>], clock: &RowClock) -> Option<ArrayRef> {
    let score = |f: fn(&Scores) -> f64| -> ArrayRef {
        Arc::new(rows.iter().map(|r| r.scores.as_ref().map(f)).collect::<Float64Array>())
    };
    let label = |f: fn(&Segments) -> &'static str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| r.segments.as_ref().map(f)).collect::<StringArray>())
    };
    let rfm = |f: fn(&Segments) -> u8| -> ArrayRef {
        Arc::new(rows.iter().map(|r| r.segments.as_ref().map(|s| i32::from(f(s)))).collect::<Int32Array>())
    };
    let input_days = |f: fn(&ScoreInput) -> u32| -> ArrayRef {
        Arc::new(rows.iter().map(|r| r.input.as_ref().map(|i| f64::from(f(i)))).collect::<Float64Array>())
    };
    let timestamp = |f: fn(&CustomerRecord) -> Option<Timestamp>| -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r.record).map(Timestamp::micros)).collect::<TimestampMicrosecondArray>())
    };
    let consent = |f: fn(&patron_model::Consent) -> Option<bool>| -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(&r.record.consent)).collect::<BooleanArray>())
    };
    let minor = clock.minor_per_major;
    Some(match name {
        "customer_id" => Arc::new(rows.iter().map(|r| Some(r.record.customer_id.as_str())).collect::<StringArray>()),
        "first_purchase_at" => timestamp(|r| r.first_purchase_at),
        "last_purchase_at" => timestamp(|r| r.last_purchase_at),
        "orders" => Arc::new(rows.iter().map(|r| Some(r.record.orders as i64)).collect::<Int64Array>()),
        "frequency" => Arc::new(
            rows.iter().map(|r| Some(i64::from(r.record.occasions().saturating_sub(1)))).collect::<Int64Array>(),
        ),
        "recency_days" => input_days(|i| i.recency_days),
        "tenure_days" => input_days(|i| i.tenure_days),
        "revenue" => {
            Arc::new(rows.iter().map(|r| Some(r.record.revenue_minor as f64 / minor)).collect::<Float64Array>())
        }
        "avg_order_value" => Arc::new(
            rows.iter()
                .map(|r| (r.record.orders > 0).then(|| r.record.revenue_minor as f64 / minor / r.record.orders as f64))
                .collect::<Float64Array>(),
        ),
        "p_alive" => score(|s| s.p_alive),
        "churn_risk" => score(|s| 1.0 - s.p_alive),
        "expected_orders_90d" => score(|s| s.expected_orders_90d),
        "expected_order_value" => score(|s| s.expected_order_value),
        "clv" => score(|s| s.clv),
        "rfm_r" => rfm(|s| s.rfm_r),
        "rfm_f" => rfm(|s| s.rfm_f),
        "rfm_m" => rfm(|s| s.rfm_m),
        "rfm_segment" => label(|s| s.rfm_segment.as_str()),
        "value_tier" => label(|s| s.value_tier.as_str()),
        "relationship" => label(|s| s.relationship.as_str()),
        "lifecycle_stage" => Arc::new(rows.iter().map(|r| Some(r.lifecycle.as_str())).collect::<StringArray>()),
        "consent_email" => consent(|c| c.email),
        "consent_sms" => consent(|c| c.sms),
        "consent_push" => consent(|c| c.push),
        "updated_at" => Arc::new(TimestampMicrosecondArray::from(vec![clock.now.micros(); rows.len()])),
        _ => return None,
    })
}

/// `rows` as one batch of `schema` (the whole table or a projection of it).
pub fn customer_batch(schema: SchemaRef, rows: &[RowView<'_>], clock: &RowClock) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            customer_column(f.name(), rows, clock)
                .ok_or_else(|| StateError::Arrow(format!("customers has no column {}", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| StateError::Arrow(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_the_contract_schema_is_defined_here() {
        let schema = patron_model::customers_schema();
        let record = CustomerRecord::new(patron_model::CustomerId::new("c-1").unwrap());
        let rows = [RowView {
            record: &record,
            input: None,
            scores: None,
            segments: None,
            lifecycle: LifecycleStage::Prospect,
        }];
        let clock = RowClock { now: Timestamp::from_millis(0), minor_per_major: 100.0 };
        for field in schema.fields() {
            let column = customer_column(field.name(), &rows, &clock)
                .unwrap_or_else(|| panic!("no derivation for {}", field.name()));
            assert_eq!(column.data_type(), field.data_type(), "{}", field.name());
        }
        assert!(customer_column("no_such_column", &rows, &clock).is_none());
        let batch = customer_batch(schema.clone(), &rows, &clock).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (1, schema.fields().len()));
    }
}
