//! The one definition of how the `customers` columns (DESIGN.md §4) are
//! derived from the stored columns of a [`Chunk`]: which value each column
//! holds, in which unit. The column names and types live in
//! `patron_model::customers_schema`. The SQL table derives them from the
//! engine's own chunks; `patron score`'s `customers.parquet` and
//! `GET /v1/customers/{id}` put their freshly scored rows into a chunk and
//! derive them here too, so the three cannot drift apart (an end-to-end test
//! compares them on every CDNOW customer).
//!
//! Each column is computed in one pass over the chunk's arrays. The stored
//! ids and scores are not copied at all: their Arrow buffers point into the
//! chunk and keep it alive (a writer that changes a chunk a query still
//! holds copies it first, see [`crate::chunk`]). Labels become `Utf8View`
//! arrays whose 16-byte views come from one table per label (no string bytes
//! are copied; DataFusion groups views faster than offsets and bytes, see
//! the benchmark notes in the README). The columns that depend on "now"
//! (`recency_days`, `tenure_days`, `lifecycle_stage`, `updated_at`) are
//! computed from the summaries at read.

use std::ptr::NonNull;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, StringViewArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;
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
    valid.iter().any(|v| !v).then(|| NullBuffer::from(valid))
}

/// An Arrow buffer over `values`, a column inside `*chunk`, without copying.
fn shared<T: ArrowNativeType>(chunk: &Arc<Chunk>, values: &[T]) -> ScalarBuffer<T> {
    let owner: Arc<dyn arrow::alloc::Allocation> = chunk.clone();
    let start = NonNull::from(values).cast::<u8>();
    // SAFETY: `values` borrows a column of `*chunk`, and `owner` keeps that
    // chunk alive at the same address for as long as the buffer lives. A
    // chunk behind an `Arc` is only ever changed through `Arc::make_mut`,
    // which copies it while another `Arc` (this one) exists, so the bytes
    // stay as they are. `T` is a plain number, so any bytes are valid.
    #[allow(unsafe_code)]
    let buffer = unsafe { Buffer::from_custom_allocation(start, std::mem::size_of_val(values), owner) };
    ScalarBuffer::new(buffer, 0, values.len())
}

fn f64s(chunk: &Arc<Chunk>, values: &[f64], valid: &[bool]) -> ArrayRef {
    Arc::new(Float64Array::new(shared(chunk, values), nulls(valid)))
}

/// Every value of one label as a validated `Utf8View` array, indexed by code.
struct LabelTable {
    views: Vec<u128>,
    buffers: Vec<Buffer>,
}

impl LabelTable {
    fn new(texts: impl IntoIterator<Item = &'static str>) -> Self {
        let array = StringViewArray::from_iter_values(texts);
        Self { views: array.views().to_vec(), buffers: array.data_buffers().to_vec() }
    }

    /// The labels of `codes` (codes past the table, which the writer never stores, read as empty).
    fn column(&self, codes: &[u8], valid: &[bool]) -> ArrayRef {
        let empty = 0u128;
        let views: Vec<u128> =
            codes.iter().map(|&c| self.views.get(usize::from(c)).copied().unwrap_or(empty)).collect();
        // SAFETY: every view is either a view of `self.views`, which
        // `StringViewArray::from_iter_values` built and checked over exactly
        // `self.buffers`, or the all-zero view (the empty string, inline).
        #[allow(unsafe_code)]
        let array = unsafe { StringViewArray::new_unchecked(views.into(), self.buffers.clone(), nulls(valid)) };
        Arc::new(array)
    }
}

static RFM_SEGMENTS: LazyLock<LabelTable> =
    LazyLock::new(|| LabelTable::new(RfmSegment::ALL.iter().map(|s| s.as_str())));
static VALUE_TIERS: LazyLock<LabelTable> = LazyLock::new(|| LabelTable::new(ValueTier::ALL.iter().map(|s| s.as_str())));
static RELATIONSHIPS: LazyLock<LabelTable> =
    LazyLock::new(|| LabelTable::new(Relationship::ALL.iter().map(|s| s.as_str())));
static LIFECYCLE_STAGES: LazyLock<LabelTable> =
    LazyLock::new(|| LabelTable::new(LifecycleStage::ALL.iter().map(|s| s.as_str())));

fn per_summary<T>(summaries: &[Summary], f: impl Fn(&Summary) -> T) -> Vec<T> {
    summaries.iter().map(f).collect()
}

/// One column of `customers` for every row of `chunk`, or `None` for a name
/// the table does not have.
pub fn customer_column(name: &str, chunk: &Arc<Chunk>, clock: &RowClock) -> Option<ArrayRef> {
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
            let offsets = OffsetBuffer::new(shared(chunk, offsets));
            Arc::new(StringArray::new(offsets, shared(chunk, bytes).into_inner(), None))
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
        "p_alive" => f64s(chunk, &s.p_alive, &s.scored),
        "churn_risk" => {
            let values: Vec<f64> = s.p_alive.iter().map(|p| 1.0 - p).collect();
            Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&s.scored)))
        }
        "expected_orders_90d" => f64s(chunk, &s.expected_orders_90d, &s.scored),
        "expected_order_value" => f64s(chunk, &s.expected_order_value, &s.scored),
        "clv" => f64s(chunk, &s.clv, &s.scored),
        "rfm_r" => rfm(&l.rfm_r),
        "rfm_f" => rfm(&l.rfm_f),
        "rfm_m" => rfm(&l.rfm_m),
        "rfm_segment" => RFM_SEGMENTS.column(&l.rfm_segment, &l.segmented),
        "value_tier" => VALUE_TIERS.column(&l.value_tier, &l.segmented),
        "relationship" => RELATIONSHIPS.column(&l.relationship, &l.segmented),
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
            LIFECYCLE_STAGES.column(&codes, &[])
        }
        "consent_email" => consent(|r| r.consent.email),
        "consent_sms" => consent(|r| r.consent.sms),
        "consent_push" => consent(|r| r.consent.push),
        "updated_at" => Arc::new(TimestampMicrosecondArray::from(vec![clock.now.micros(); chunk.len()])),
        _ => return None,
    })
}

/// `chunk` as one batch of `schema` (the whole table or a projection of it).
pub fn customer_batch(schema: SchemaRef, chunk: &Arc<Chunk>, clock: &RowClock) -> Result<RecordBatch> {
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
        let chunk = Arc::new(chunk);
        let clock = clock();
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

    fn clock() -> RowClock {
        RowClock { now: Timestamp::from_millis(0), minor_per_major: 100.0, segments: SegmentConfig::default() }
    }

    #[test]
    fn stored_columns_share_the_chunk_and_a_writer_copies_it_instead_of_changing_a_query_view() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Float64Type;
        let scores = |clv| Scores { p_alive: 0.5, expected_orders_90d: 1.0, expected_order_value: 10.0, clv };
        let mut chunk = Chunk::with_capacity(2);
        chunk.push("c-1", Summary::default(), Some(scores(5.0)), None);
        chunk.push("c-2", Summary::default(), None, None);
        let mut chunk = Arc::new(chunk);
        let clv = customer_column("clv", &chunk, &clock()).unwrap();
        let ids = customer_column("customer_id", &chunk, &clock()).unwrap();
        let clv = clv.as_primitive::<Float64Type>();
        assert_eq!(clv.values().as_ptr(), chunk.score_columns().clv.as_ptr(), "no copy");
        assert_eq!((clv.value(0), clv.is_null(1)), (5.0, true));
        Arc::make_mut(&mut chunk).set_scores(0, Some(scores(7.0)));
        assert_eq!(clv.value(0), 5.0, "the query keeps its view");
        assert_eq!(chunk.scores(0).map(|s| s.clv), Some(7.0));
        assert_ne!(clv.values().as_ptr(), chunk.score_columns().clv.as_ptr(), "the writer copied");
        drop(chunk);
        assert_eq!((clv.value(0), ids.as_string::<i32>().value(1)), (5.0, "c-2"), "the view outlives the chunk");
    }

    #[test]
    fn labels_read_as_their_text_and_unlabelled_rows_as_null() {
        use arrow::array::{Array, AsArray};
        let mut chunk = Chunk::with_capacity(RfmSegment::ALL.len() + 1);
        for segment in RfmSegment::ALL {
            let labels = patron_score::Segments {
                rfm_r: 1,
                rfm_f: 2,
                rfm_m: 3,
                rfm_segment: *segment,
                value_tier: ValueTier::ALL[0],
                relationship: Relationship::ALL[0],
                lifecycle_stage: LifecycleStage::ALL[0],
            };
            chunk.push("c", Summary::default(), None, Some(labels));
        }
        chunk.push("unlabelled", Summary::default(), None, None);
        let column = customer_column("rfm_segment", &Arc::new(chunk), &clock()).unwrap();
        let texts = column.as_string_view();
        for (row, segment) in RfmSegment::ALL.iter().enumerate() {
            assert_eq!(texts.value(row), segment.as_str());
        }
        assert!(texts.is_null(RfmSegment::ALL.len()));
    }
}
