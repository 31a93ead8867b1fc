//! The one definition of how the `customers` columns (DESIGN.md §4) are
//! derived from the stored columns of a [`Chunk`]: which value each column
//! holds, in which unit. The column names and types live in
//! `patron_model::customers_schema`. The SQL table derives them from the
//! engine's own chunks; `patron score`'s `customers.parquet` and
//! `GET /v1/customers/{id}` put their freshly scored rows into a chunk and
//! derive them here too, so the three cannot drift apart (an end-to-end test
//! compares them on every CDNOW customer).
//!
//! Each column is computed in one pass over the chunk's arrays: the stored
//! scores are copied as they are, labels are expanded from their codes, and
//! the columns that depend on "now" (`recency_days`, `tenure_days`,
//! `lifecycle_stage`, `updated_at`) are computed from the summaries at read.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use patron_model::Timestamp;
use patron_score::{LifecycleStage, Relationship, RfmSegment, Scores, SegmentConfig, ValueTier};

use crate::chunk::Chunk;
use crate::record::Summary;
use crate::{Result, StateError};

/// What every row of one answer shares.
#[derive(Clone, Copy, Debug)]
pub struct RowClock {
    /// "Now" of the scores: the `updated_at` column, and the end of `tenure_days`.
    pub now: Timestamp,
    /// Minor units per major unit of the base currency (money columns are major units).
    pub minor_per_major: f64,
    /// Thresholds of the lifecycle stage.
    pub segments: SegmentConfig,
}

fn nulls(valid: &[bool]) -> Option<NullBuffer> {
    valid.iter().any(|v| !v).then(|| NullBuffer::from(valid.to_vec()))
}

fn f64s(values: &[f64], valid: &[bool]) -> ArrayRef {
    Arc::new(Float64Array::new(ScalarBuffer::from(values.to_vec()), nulls(valid)))
}

/// Strings for codes: one buffer per column, built by copying each label's bytes.
fn labels(codes: &[u8], valid: &[bool], text: impl Fn(u8) -> &'static str) -> ArrayRef {
    let mut offsets = Vec::with_capacity(codes.len() + 1);
    let mut bytes = Vec::with_capacity(codes.len() * 12);
    offsets.push(0i32);
    for (&code, &ok) in codes.iter().zip(valid) {
        if ok {
            bytes.extend_from_slice(text(code).as_bytes());
        }
        offsets.push(bytes.len() as i32);
    }
    Arc::new(StringArray::new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(bytes), nulls(valid)))
}

fn per_summary<T>(summaries: &[Summary], f: impl Fn(&Summary) -> T) -> Vec<T> {
    summaries.iter().map(f).collect()
}

/// One column of `customers` for every row of `chunk`, or `None` for a name
/// the table does not have.
pub fn customer_column(name: &str, chunk: &Chunk, clock: &RowClock) -> Option<ArrayRef> {
    let summaries = chunk.summaries();
    let s = chunk.score_columns();
    let l = chunk.label_columns();
    let minor = clock.minor_per_major;
    let now_day = clock.now.day();
    let days = |f: fn(&Summary, i32) -> Option<u32>| -> ArrayRef {
        let bought: Vec<bool> = per_summary(summaries, Summary::has_purchased);
        let values = per_summary(summaries, |r| f(r, now_day).map_or(0.0, f64::from));
        Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&bought)))
    };
    let timestamp = |f: fn(&Summary) -> Option<Timestamp>| -> ArrayRef {
        Arc::new(summaries.iter().map(|r| f(r).map(Timestamp::micros)).collect::<TimestampMicrosecondArray>())
    };
    let consent =
        |f: fn(&Summary) -> Option<bool>| -> ArrayRef { Arc::new(summaries.iter().map(f).collect::<BooleanArray>()) };
    let rfm = |codes: &[u8]| -> ArrayRef {
        let values: Vec<i32> = codes.iter().map(|&c| i32::from(c)).collect();
        Arc::new(Int32Array::new(ScalarBuffer::from(values), nulls(&l.segmented)))
    };
    Some(match name {
        "customer_id" => {
            let (offsets, bytes) = chunk.id_column();
            let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets.to_vec()));
            Arc::new(StringArray::new(offsets, Buffer::from_vec(bytes.to_vec()), None))
        }
        "first_purchase_at" => timestamp(Summary::first_purchase_at),
        "last_purchase_at" => timestamp(Summary::last_purchase_at),
        "orders" => Arc::new(Int64Array::from(per_summary(summaries, |r| r.orders as i64))),
        "frequency" => {
            Arc::new(Int64Array::from(per_summary(summaries, |r| i64::from(r.occasions().saturating_sub(1)))))
        }
        "recency_days" => days(|r, now| r.score_input(now, 1.0).map(|i| i.recency_days)),
        "tenure_days" => days(|r, now| r.score_input(now, 1.0).map(|i| i.tenure_days)),
        "revenue" => Arc::new(Float64Array::from(per_summary(summaries, |r| r.revenue_minor as f64 / minor))),
        "avg_order_value" => Arc::new(
            summaries
                .iter()
                .map(|r| (r.orders > 0).then(|| r.revenue_minor as f64 / minor / r.orders as f64))
                .collect::<Float64Array>(),
        ),
        "p_alive" => f64s(&s.p_alive, &s.scored),
        "churn_risk" => {
            let values: Vec<f64> = s.p_alive.iter().map(|p| 1.0 - p).collect();
            Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&s.scored)))
        }
        "expected_orders_90d" => f64s(&s.expected_orders_90d, &s.scored),
        "expected_order_value" => f64s(&s.expected_order_value, &s.scored),
        "clv" => f64s(&s.clv, &s.scored),
        "rfm_r" => rfm(&l.rfm_r),
        "rfm_f" => rfm(&l.rfm_f),
        "rfm_m" => rfm(&l.rfm_m),
        "rfm_segment" => {
            labels(&l.rfm_segment, &l.segmented, |c| RfmSegment::from_code(c).map_or("", RfmSegment::as_str))
        }
        "value_tier" => labels(&l.value_tier, &l.segmented, |c| ValueTier::from_code(c).map_or("", ValueTier::as_str)),
        "relationship" => {
            labels(&l.relationship, &l.segmented, |c| Relationship::from_code(c).map_or("", Relationship::as_str))
        }
        "lifecycle_stage" => {
            let codes: Vec<u8> = (0..chunk.len())
                .map(|row| {
                    let scores = s.scored[row].then(|| Scores {
                        p_alive: s.p_alive[row],
                        expected_orders_90d: 0.0,
                        expected_order_value: 0.0,
                        clv: 0.0,
                    });
                    summaries[row].lifecycle_with(scores.as_ref(), &clock.segments).code()
                })
                .collect();
            let all = vec![true; codes.len()];
            labels(&codes, &all, |c| LifecycleStage::from_code(c).map_or("", LifecycleStage::as_str))
        }
        "consent_email" => consent(|r| r.consent.email),
        "consent_sms" => consent(|r| r.consent.sms),
        "consent_push" => consent(|r| r.consent.push),
        "updated_at" => Arc::new(TimestampMicrosecondArray::from(vec![clock.now.micros(); chunk.len()])),
        _ => return None,
    })
}

/// `chunk` as one batch of `schema` (the whole table or a projection of it).
pub fn customer_batch(schema: SchemaRef, chunk: &Chunk, clock: &RowClock) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            customer_column(f.name(), chunk, clock)
                .ok_or_else(|| StateError::Arrow(format!("customers has no column {}", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(chunk.len()));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| StateError::Arrow(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_the_contract_schema_is_defined_here() {
        let schema = patron_model::customers_schema();
        let mut chunk = Chunk::with_capacity(1);
        chunk.push("c-1", Summary::default(), None, None);
        let clock =
            RowClock { now: Timestamp::from_millis(0), minor_per_major: 100.0, segments: SegmentConfig::default() };
        for field in schema.fields() {
            let column = customer_column(field.name(), &chunk, &clock)
                .unwrap_or_else(|| panic!("no derivation for {}", field.name()));
            assert_eq!(column.data_type(), field.data_type(), "{}", field.name());
            assert_eq!(column.len(), 1);
        }
        assert!(customer_column("no_such_column", &chunk, &clock).is_none());
        let batch = customer_batch(schema.clone(), &chunk, &clock).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (1, schema.fields().len()));
    }
}
