//! The one definition of how the `customers` columns (DESIGN.md §4) are
//! derived from the stored columns of a [`Chunk`](crate::chunk::Chunk): which value each column
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
//! computed from the summaries at read, and so are `rfm_segment` and
//! `relationship`, which name the current stage's aliveness.

use std::ptr::NonNull;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, StringViewArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use patron_model::Timestamp;
use patron_score::{Aliveness, LifecycleStage, Relationship, RfmSegment, Scores, SegmentConfig, ValueTier};

use crate::chunk::{ChunkView, Groups, LabelColumns, ScoreView, Timing};
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
    /// What `net_clv` subtracts from `clv`: the discounted retention cost
    /// over the horizon ([`patron_score::ClvConfig::retention_cost_over_horizon`]), major units.
    pub retention_cost: f64,
}

impl RowClock {
    /// The clock of rows scored with `config` at `now`.
    pub fn new(now: Timestamp, minor_per_major: f64, config: &crate::ScoringConfig) -> Self {
        Self {
            now,
            minor_per_major,
            segments: config.segments,
            retention_cost: config.clv.retention_cost_over_horizon(),
        }
    }
}

fn nulls(valid: &[bool]) -> Option<NullBuffer> {
    valid.iter().any(|v| !v).then(|| NullBuffer::from(valid))
}

/// An Arrow buffer over `values`, a column inside `*owner` (a chunk's column
/// group), without copying.
fn shared<O, T>(owner: &Arc<O>, values: &[T]) -> ScalarBuffer<T>
where
    O: std::panic::RefUnwindSafe + Send + Sync + 'static,
    T: ArrowNativeType,
{
    let keeper: Arc<dyn arrow::alloc::Allocation> = owner.clone();
    let start = NonNull::from(values).cast::<u8>();
    // SAFETY: `values` borrows a column of `*owner`, and `keeper` keeps that
    // group alive at the same address for as long as the buffer lives. A
    // group behind an `Arc` is only ever changed through `Arc::make_mut`,
    // which copies it while another `Arc` (this one) exists, so the bytes
    // stay as they are. `T` is a plain number, so any bytes are valid.
    #[allow(unsafe_code)]
    let buffer = unsafe { Buffer::from_custom_allocation(start, std::mem::size_of_val(values), keeper) };
    ScalarBuffer::new(buffer, 0, values.len())
}

/// A score column of `view`, if it took that column and `scored`.
fn score(view: &ChunkView, column: fn(&ScoreView) -> &Option<Arc<Vec<f64>>>) -> Option<ArrayRef> {
    let (values, scored) = (column(view.scores()).as_ref()?, view.scores().scored.as_ref()?);
    Some(Arc::new(Float64Array::new(shared(values, values), nulls(scored))))
}

/// A column of the packed prediction timing, widened to `DOUBLE` (a copy:
/// the chunk keeps it in single precision).
fn timing(view: &ChunkView, value: fn(&Timing) -> f32) -> Option<ArrayRef> {
    let (rows, scored) = (view.scores().timing.as_ref()?, view.scores().scored.as_ref()?);
    let values: Vec<f64> = rows.iter().map(|t| f64::from(value(t))).collect();
    Some(Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(scored))))
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

const NONE: Groups = Groups {
    ids: false,
    summaries: false,
    scored: false,
    p_alive: false,
    expected_orders_90d: false,
    expected_order_value: false,
    clv: false,
    timing: false,
    labels: false,
};
const IDS: Groups = Groups { ids: true, ..NONE };
const SUMMARIES: Groups = Groups { summaries: true, ..NONE };
const LABELS: Groups = Groups { labels: true, ..NONE };
const LIFECYCLE: Groups = Groups { summaries: true, scored: true, p_alive: true, ..NONE };

/// The column groups of a chunk that column `name` of `customers` is derived
/// from (`None`: the table has no such column). A scan takes only these, so
/// writers copy only what a running query holds.
pub fn column_groups(name: &str) -> Option<Groups> {
    Some(match name {
        "customer_id" => IDS,
        "first_purchase_at" | "last_purchase_at" | "orders" | "frequency" | "recency_days" | "tenure_days"
        | "revenue" | "avg_order_value" | "consent_email" | "consent_sms" | "consent_push" => SUMMARIES,
        "p_alive" | "churn_risk" => Groups { scored: true, p_alive: true, ..NONE },
        "expected_orders_90d" => Groups { scored: true, expected_orders_90d: true, ..NONE },
        "expected_order_value" => Groups { scored: true, expected_order_value: true, ..NONE },
        "clv" => Groups { scored: true, clv: true, ..NONE },
        "p_purchase_30d" | "expected_orders_365d" | "next_order_at" => Groups { scored: true, timing: true, ..NONE },
        "clv_low" | "clv_high" => Groups { scored: true, clv: true, timing: true, ..NONE },
        "net_clv" => Groups { summaries: true, scored: true, clv: true, ..NONE },
        "acquisition_cost" | "acquisition_channel" => SUMMARIES,
        "rfm_r" | "rfm_f" | "rfm_m" | "value_tier" => LABELS,
        "lifecycle_stage" => LIFECYCLE,
        // Chosen among the names of the current lifecycle stage (see patron_score::segments).
        "rfm_segment" | "relationship" => LIFECYCLE.union(LABELS),
        "updated_at" => NONE,
        _ => return None,
    })
}

/// The groups the columns of `schema` are derived from.
pub fn schema_groups(schema: &Schema) -> Groups {
    schema.fields().iter().filter_map(|f| column_groups(f.name())).fold(Groups::default(), Groups::union)
}

/// One column of `customers` for every row of `view`, or `None` for a name
/// the table does not have or whose groups ([`column_groups`]) the view lacks.
pub fn customer_column(name: &str, view: &ChunkView, clock: &RowClock) -> Option<ArrayRef> {
    let minor = clock.minor_per_major;
    let now_day = clock.now.day();
    let summaries = || view.summaries().map(|s| s.as_slice());
    let days = |f: fn(&Summary, i32) -> Option<u32>| -> Option<ArrayRef> {
        let summaries = summaries()?;
        let bought: Vec<bool> = per_summary(summaries, Summary::has_purchased);
        let values = per_summary(summaries, |r| f(r, now_day).map_or(0.0, f64::from));
        Some(Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&bought))))
    };
    let timestamp = |f: fn(&Summary) -> Option<Timestamp>| -> Option<ArrayRef> {
        let column = summaries()?.iter().map(|r| f(r).map(Timestamp::micros));
        Some(Arc::new(column.collect::<TimestampMicrosecondArray>()))
    };
    let consent = |f: fn(&Summary) -> Option<bool>| -> Option<ArrayRef> {
        Some(Arc::new(summaries()?.iter().map(f).collect::<BooleanArray>()))
    };
    let rfm = |codes: fn(&LabelColumns) -> &[u8]| -> Option<ArrayRef> {
        let l = view.labels()?;
        let values: Vec<i32> = codes(l).iter().map(|&c| i32::from(c)).collect();
        Some(Arc::new(Int32Array::new(ScalarBuffer::from(values), nulls(&l.segmented))))
    };
    let label = |table: &LabelTable, codes: fn(&LabelColumns) -> &[u8]| -> Option<ArrayRef> {
        let l = view.labels()?;
        Some(table.column(codes(l), &l.segmented))
    };
    let stages = || -> Option<Vec<LifecycleStage>> {
        let s = view.scores();
        let (summaries, scored, p_alive) = (summaries()?, s.scored.as_ref()?, s.p_alive.as_ref()?);
        let stage = |(row, summary): (usize, &Summary)| {
            let scores = scored[row].then(|| Scores { p_alive: p_alive[row], ..Scores::default() });
            summary.lifecycle_with(scores.as_ref(), &clock.segments)
        };
        Some(summaries.iter().enumerate().map(stage).collect())
    };
    // A label read from the stored labels and the current stage's aliveness.
    let by_aliveness = |table: &LabelTable, code: fn(&LabelColumns, usize, Aliveness) -> u8| -> Option<ArrayRef> {
        let (l, stages) = (view.labels()?, stages()?);
        let codes: Vec<u8> = (0..stages.len())
            .map(|row| match (l.segmented[row], stages[row].aliveness()) {
                (true, Some(aliveness)) => code(l, row, aliveness),
                _ => 0,
            })
            .collect();
        Some(table.column(&codes, &l.segmented))
    };
    match name {
        "customer_id" => {
            let ids = view.ids()?;
            let offsets = OffsetBuffer::new(shared(ids, &ids.offsets));
            Some(Arc::new(StringArray::new(offsets, shared(ids, &ids.bytes).into_inner(), None)))
        }
        "first_purchase_at" => timestamp(Summary::first_purchase_at),
        "last_purchase_at" => timestamp(Summary::last_purchase_at),
        "orders" => Some(Arc::new(Int64Array::from(per_summary(summaries()?, |r| r.orders as i64)))),
        "frequency" => {
            Some(Arc::new(Int64Array::from(per_summary(summaries()?, |r| i64::from(r.occasions().saturating_sub(1))))))
        }
        "recency_days" => days(|r, now| r.score_input(now, 1.0).map(|i| i.recency_days)),
        "tenure_days" => days(|r, now| r.score_input(now, 1.0).map(|i| i.tenure_days)),
        "revenue" => Some(Arc::new(Float64Array::from(per_summary(summaries()?, |r| r.revenue_minor as f64 / minor)))),
        "avg_order_value" => Some(Arc::new(
            summaries()?
                .iter()
                .map(|r| (r.orders > 0).then(|| r.revenue_minor as f64 / minor / r.orders as f64))
                .collect::<Float64Array>(),
        )),
        "p_alive" => score(view, |s| &s.p_alive),
        "churn_risk" => {
            let s = view.scores();
            let (p_alive, scored) = (s.p_alive.as_ref()?, s.scored.as_ref()?);
            let values: Vec<f64> = p_alive.iter().map(|p| 1.0 - p).collect();
            Some(Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(scored))))
        }
        "expected_orders_90d" => score(view, |s| &s.expected_orders_90d),
        "expected_order_value" => score(view, |s| &s.expected_order_value),
        "clv" => score(view, |s| &s.clv),
        "rfm_r" => rfm(|l| &l.rfm_r),
        "rfm_f" => rfm(|l| &l.rfm_f),
        "rfm_m" => rfm(|l| &l.rfm_m),
        "rfm_segment" => by_aliveness(&RFM_SEGMENTS, |l, row, aliveness| {
            patron_score::rfm_segment(l.rfm_r[row], l.rfm_f[row], l.rfm_m[row], aliveness).code()
        }),
        "value_tier" => label(&VALUE_TIERS, |l| &l.value_tier),
        "relationship" => by_aliveness(&RELATIONSHIPS, |l, row, aliveness| {
            let tier = ValueTier::from_code(l.value_tier[row]).unwrap_or(ValueTier::LowValue);
            patron_score::relationship(tier, aliveness).code()
        }),
        "lifecycle_stage" => {
            let codes: Vec<u8> = stages()?.iter().map(|stage| stage.code()).collect();
            Some(LIFECYCLE_STAGES.column(&codes, &[]))
        }
        "consent_email" => consent(|r| r.consent.email),
        "consent_sms" => consent(|r| r.consent.sms),
        "consent_push" => consent(|r| r.consent.push),
        "updated_at" => Some(Arc::new(TimestampMicrosecondArray::from(vec![clock.now.micros(); view.len()]))),
        "p_purchase_30d" => timing(view, |t| t.p_purchase_30d),
        "expected_orders_365d" => timing(view, |t| t.expected_orders_365d),
        "net_clv" => {
            let s = view.scores();
            let (clv, scored, summaries) = (s.clv.as_ref()?, s.scored.as_ref()?, summaries()?);
            let values: Vec<f64> = clv
                .iter()
                .zip(summaries)
                .map(|(c, r)| {
                    let acquisition = r.acquisition_cost_minor().map_or(0.0, |cost| cost as f64 / minor);
                    c - clock.retention_cost - acquisition
                })
                .collect();
            Some(Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(scored))))
        }
        "acquisition_cost" => Some(Arc::new(
            summaries()?.iter().map(|r| r.acquisition_cost_minor().map(|c| c as f64 / minor)).collect::<Float64Array>(),
        )),
        "acquisition_channel" => {
            let codes = per_summary(summaries()?, Summary::acquisition_channel_code);
            let names = crate::channel::with_names(|names| {
                codes.iter().map(|&code| crate::channel::lookup(names, code).cloned()).collect::<Vec<_>>()
            });
            Some(Arc::new(names.iter().map(|n| n.as_deref()).collect::<StringArray>()))
        }
        "clv_low" => clv_bound(view, |clv, spread| patron_score::clv_interval(clv, spread).0),
        "clv_high" => clv_bound(view, |clv, spread| patron_score::clv_interval(clv, spread).1),
        "next_order_at" => {
            let (rows, scored) = (view.scores().timing.as_ref()?, view.scores().scored.as_ref()?);
            let at: TimestampMicrosecondArray = rows
                .iter()
                .zip(scored.iter())
                .map(|(t, &scored)| {
                    (scored && t.next_order_second > 0).then(|| i64::from(t.next_order_second) * 1_000_000)
                })
                .collect();
            Some(Arc::new(at))
        }
        _ => None,
    }
}

/// One end of the CLV interval: null where the row is unscored or its
/// scores have no spread (no covariance, or scored between refits).
fn clv_bound(view: &ChunkView, bound: impl Fn(f64, f64) -> f64) -> Option<ArrayRef> {
    let s = view.scores();
    let (scored, clv, timing) = (s.scored.as_ref()?, s.clv.as_ref()?, s.timing.as_ref()?);
    let values: Float64Array = (0..view.len())
        .map(|row| {
            let spread = timing[row].clv_log_spread().filter(|_| scored[row])?;
            Some(bound(clv[row], spread))
        })
        .collect();
    Some(Arc::new(values))
}

/// `view` as one batch of `schema` (the whole table or a projection of it).
pub fn customer_batch(schema: SchemaRef, view: &ChunkView, clock: &RowClock) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            customer_column(f.name(), view, clock).ok_or_else(|| {
                StateError::Arrow(format!("customers has no column {} (or the scan did not take its groups)", f.name()))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(view.len()));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| StateError::Arrow(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    #[test]
    fn every_column_of_the_contract_schema_is_defined_here() {
        let schema = patron_model::customers_schema();
        let mut chunk = Chunk::with_capacity(1);
        chunk.push("c-1", Summary::default(), None, None);
        let clock = clock();
        for field in schema.fields() {
            // Derived from exactly the groups it declares, and not without any of them.
            let groups = column_groups(field.name()).unwrap_or_else(|| panic!("no groups for {}", field.name()));
            let column = customer_column(field.name(), &chunk.view(groups), &clock)
                .unwrap_or_else(|| panic!("no derivation for {}", field.name()));
            assert_eq!(column.data_type(), field.data_type(), "{}", field.name());
            assert_eq!(column.len(), 1);
            for without in [
                Groups { ids: false, ..groups },
                Groups { summaries: false, ..groups },
                Groups { scored: false, ..groups },
                Groups { p_alive: false, ..groups },
                Groups { expected_orders_90d: false, ..groups },
                Groups { expected_order_value: false, ..groups },
                Groups { clv: false, ..groups },
                Groups { timing: false, ..groups },
                Groups { labels: false, ..groups },
            ] {
                if without != groups {
                    assert!(customer_column(field.name(), &chunk.view(without), &clock).is_none(), "{}", field.name());
                }
            }
        }
        let all = chunk.view(Groups::ALL);
        assert!(customer_column("no_such_column", &all, &clock).is_none());
        assert_eq!(schema_groups(&schema), Groups::ALL);
        let batch = customer_batch(schema.clone(), &all, &clock).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (1, schema.fields().len()));
        let two = Arc::new(schema.project(&[0, 13]).unwrap());
        assert_eq!(schema_groups(&two), Groups { ids: true, scored: true, clv: true, ..Groups::default() });
    }

    fn clock() -> RowClock {
        RowClock {
            now: Timestamp::from_millis(0),
            minor_per_major: 100.0,
            segments: SegmentConfig::default(),
            retention_cost: 0.0,
        }
    }

    #[test]
    fn stored_columns_share_the_chunk_and_a_writer_copies_it_instead_of_changing_a_query_view() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Float64Type;
        let scores = |clv| Scores {
            p_alive: 0.5,
            expected_orders_90d: 1.0,
            expected_order_value: 10.0,
            clv,
            ..Scores::default()
        };
        let mut chunk = Chunk::with_capacity(2);
        chunk.push("c-1", Summary::default(), Some(scores(5.0)), None);
        chunk.push("c-2", Summary::default(), None, None);
        let view = chunk.view(Groups { ids: true, scored: true, clv: true, ..Groups::default() });
        let clv = customer_column("clv", &view, &clock()).unwrap();
        let ids = customer_column("customer_id", &view, &clock()).unwrap();
        drop(view);
        let clv = clv.as_primitive::<Float64Type>();
        assert_eq!(clv.values().as_ptr(), chunk.score_columns().clv.as_ptr(), "no copy");
        assert_eq!((clv.value(0), clv.is_null(1)), (5.0, true));
        let summaries_before = chunk.summaries().as_ptr();
        let p_alive_before = chunk.score_columns().p_alive.as_ptr();
        chunk.set_scores(0, Some(scores(7.0)));
        chunk.summary_mut(1).orders = 3;
        assert_eq!(clv.value(0), 5.0, "the query keeps its view");
        assert_eq!(chunk.scores(0).map(|s| s.clv), Some(7.0));
        assert_ne!(clv.values().as_ptr(), chunk.score_columns().clv.as_ptr(), "the writer copied clv");
        assert_eq!(chunk.score_columns().p_alive.as_ptr(), p_alive_before, "not p_alive, which the query did not hold");
        assert_eq!(chunk.summaries().as_ptr(), summaries_before, "nor the summaries");
        drop(chunk);
        assert_eq!((clv.value(0), ids.as_string::<i32>().value(1)), (5.0, "c-2"), "the view outlives the chunk");
    }

    /// The named RFM segment and the relationship are read from the stored
    /// scores and tier with the stage's aliveness now, whatever the labelling
    /// kernel stored (a purchase since the refit may have revived a lapsed
    /// customer); rows without labels read as null.
    #[test]
    fn labels_read_as_their_text_named_for_the_current_stage_and_unlabelled_rows_as_null() {
        use arrow::array::{Array, AsArray};
        let cases: Vec<(u8, u8, u8, f64, ValueTier)> = vec![
            (5, 5, 5, 0.9, ValueTier::MostValuable),
            (5, 5, 5, 0.1, ValueTier::MostValuable),
            (1, 5, 5, 0.3, ValueTier::Potential),
            (2, 2, 3, 0.3, ValueTier::LowValue),
            (1, 1, 1, 0.05, ValueTier::LowValue),
            (5, 1, 1, 0.8, ValueTier::LowValue),
        ];
        let mut chunk = Chunk::with_capacity(cases.len() + 1);
        for &(rfm_r, rfm_f, rfm_m, p_alive, value_tier) in &cases {
            let stored = patron_score::Segments {
                rfm_r,
                rfm_f,
                rfm_m,
                rfm_segment: RfmSegment::Champions,
                value_tier,
                relationship: Relationship::TrueFriend,
                lifecycle_stage: LifecycleStage::Loyal,
            };
            let scores = Scores { p_alive, ..Scores::default() };
            chunk.push("c", Summary::buyer_of_occasions(2), Some(scores), Some(stored));
        }
        chunk.push("unlabelled", Summary::default(), None, None);
        let view = chunk.view(Groups::ALL);
        let read = |name: &str| {
            let column = customer_column(name, &view, &clock()).unwrap();
            let texts = column.as_string_view();
            (0..texts.len()).map(|row| texts.is_valid(row).then(|| texts.value(row).to_owned())).collect::<Vec<_>>()
        };
        let expected = |names: &[&str]| names.iter().map(|n| Some((*n).to_owned())).chain([None]).collect::<Vec<_>>();
        assert_eq!(
            read("rfm_segment"),
            expected(&["Champions", "Hibernating", "Can't Lose Them", "About to Sleep", "Lost", "New"])
        );
        assert_eq!(
            read("relationship"),
            expected(&["true_friend", "butterfly", "butterfly", "stranger", "stranger", "barnacle"])
        );
        let stages = read("lifecycle_stage");
        assert_eq!(stages[..2], [Some("repeat".to_owned()), Some("lapsed".to_owned())]);
        assert_eq!(stages[6], Some("prospect".to_owned()));
    }
}
