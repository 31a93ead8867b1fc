//! Columnar chunks of customers: the one copy of everything the `customers`
//! table is derived from, shared by the writer and SQL scans.
//!
//! A shard keeps its customers in chunks of [`CHUNK`] rows. Inside a chunk
//! the columns are in four groups, each behind its own `Arc`: ids, summaries,
//! scores, labels. A scan takes a [`ChunkView`] of the groups its columns
//! need, cloning their `Arc`s under the shard's read lock (microseconds for
//! millions of customers), and reads them after the lock is gone. A writer
//! that changes a group a scan still holds copies that group once
//! (`Arc::make_mut`), so the scan keeps a consistent view and nobody waits
//! for the other. Grouping keeps that copy small: an event rewrites a
//! summary and the scores, so a `GROUP BY rfm_segment` over `clv` makes
//! writers copy only the score group (about 135 KiB a chunk) of the chunks
//! they touch while it runs, not the summaries beside it (320 KiB). A group
//! holds only fixed-size values (or one byte buffer of ids), so a copy is a
//! `memcpy`, not thousands of allocations; what only the writer reads
//! (occasion days, purchase profiles) lives beside the chunks, in
//! [`crate::record::History`].
//!
//! Layout per row: the id (Arrow `Utf8` layout: an `i32` offset and its
//! bytes), the 80-byte [`Summary`], four score columns of `f64` with a
//! validity byte, and seven label codes of one byte with a validity byte.
//! Labels are stored as codes (`RfmSegment::code` …) and become strings only
//! when a query asks for them.

use std::sync::Arc;

use patron_score::{Scores, Segments};

use crate::record::Summary;

/// Rows per chunk of a shard's state (a power of two).
pub const CHUNK: usize = 4096;

/// Model scores, one column each, each behind its own `Arc` (a query that
/// reads `clv` holds only `clv` and `scored`, so a writer rescoring a
/// customer meanwhile copies 36 KiB of that chunk, not all of them);
/// `scored[i]` says whether row `i` has them.
#[derive(Clone, Debug, Default)]
pub struct ScoreColumns {
    /// Whether the row has scores (false: all of them are null).
    pub scored: Arc<Vec<bool>>,
    /// P(alive).
    pub p_alive: Arc<Vec<f64>>,
    /// E[orders in 90 days].
    pub expected_orders_90d: Arc<Vec<f64>>,
    /// Expected order value.
    pub expected_order_value: Arc<Vec<f64>>,
    /// Customer lifetime value.
    pub clv: Arc<Vec<f64>>,
    /// The prediction timing, packed (12 bytes a row).
    pub timing: Arc<Vec<Timing>>,
}

/// One row's prediction timing and CLV uncertainty, in single precision:
/// they feed campaign choices, not sums, and keep the state 16 bytes a
/// customer larger instead of 32.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// P(a purchase within 30 days).
    pub p_purchase_30d: f32,
    /// E[orders in 365 days].
    pub expected_orders_365d: f32,
    /// Median time of the next order in whole seconds since 1970 (0: the
    /// model cannot say, or later than 2106).
    pub next_order_second: u32,
    /// Standard deviation of ln CLV from the parameters' uncertainty (NaN: none).
    pub clv_log_spread: f32,
}

impl Timing {
    fn of(scores: &Scores) -> Self {
        let second = scores.next_order_day.map(|day| (day * 86_400.0).round());
        Self {
            p_purchase_30d: scores.p_purchase_30d as f32,
            expected_orders_365d: scores.expected_orders_365d as f32,
            next_order_second: second.filter(|s| (1.0..=f64::from(u32::MAX)).contains(s)).map_or(0, |s| s as u32),
            clv_log_spread: scores.clv_log_spread.map_or(f32::NAN, |s| s as f32),
        }
    }

    /// The standard deviation of ln CLV, if known.
    pub fn clv_log_spread(&self) -> Option<f64> {
        (!self.clv_log_spread.is_nan()).then_some(f64::from(self.clv_log_spread))
    }

    /// The median date of the next order, days since 1970.
    pub fn next_order_day(&self) -> Option<f64> {
        (self.next_order_second > 0).then(|| f64::from(self.next_order_second) / 86_400.0)
    }
}

/// The score columns a [`ChunkView`] took.
#[derive(Clone, Debug, Default)]
pub struct ScoreView {
    /// Whether each row has scores.
    pub scored: Option<Arc<Vec<bool>>>,
    /// P(alive).
    pub p_alive: Option<Arc<Vec<f64>>>,
    /// E[orders in 90 days].
    pub expected_orders_90d: Option<Arc<Vec<f64>>>,
    /// Expected order value.
    pub expected_order_value: Option<Arc<Vec<f64>>>,
    /// Customer lifetime value.
    pub clv: Option<Arc<Vec<f64>>>,
    /// The prediction timing.
    pub timing: Option<Arc<Vec<Timing>>>,
}

/// Population-relative labels as codes; `segmented[i]` says whether row `i` has them.
#[derive(Clone, Debug, Default)]
pub struct LabelColumns {
    /// Whether the row has labels (false: all are null).
    pub segmented: Vec<bool>,
    /// RFM recency score 1–5.
    pub rfm_r: Vec<u8>,
    /// RFM frequency score 1–5.
    pub rfm_f: Vec<u8>,
    /// RFM monetary score 1–5.
    pub rfm_m: Vec<u8>,
    /// [`RfmSegment::code`](patron_score::RfmSegment::code).
    pub rfm_segment: Vec<u8>,
    /// [`ValueTier::code`](patron_score::ValueTier::code).
    pub value_tier: Vec<u8>,
    /// [`Relationship::code`](patron_score::Relationship::code).
    pub relationship: Vec<u8>,
    /// [`LifecycleStage::code`](patron_score::LifecycleStage::code) as the labelling kernel saw it.
    pub lifecycle_stage: Vec<u8>,
}

impl LabelColumns {
    /// The code columns in [`Segments::codes`] order.
    fn code_columns(&self) -> [&Vec<u8>; 7] {
        [
            &self.rfm_r,
            &self.rfm_f,
            &self.rfm_m,
            &self.rfm_segment,
            &self.value_tier,
            &self.relationship,
            &self.lifecycle_stage,
        ]
    }

    /// The code columns in [`Segments::codes`] order, to change.
    fn codes_mut(&mut self) -> [&mut Vec<u8>; 7] {
        [
            &mut self.rfm_r,
            &mut self.rfm_f,
            &mut self.rfm_m,
            &mut self.rfm_segment,
            &mut self.value_tier,
            &mut self.relationship,
            &mut self.lifecycle_stage,
        ]
    }
}

/// The id column in Arrow `Utf8` layout.
#[derive(Clone, Debug, Default)]
pub struct IdColumn {
    /// `len + 1` offsets into `bytes`.
    pub offsets: Vec<i32>,
    /// The ids' UTF-8 bytes, back to back.
    pub bytes: Vec<u8>,
}

/// Up to [`CHUNK`] customers in columns, in four copy-on-write groups.
#[derive(Clone, Debug)]
pub struct Chunk {
    ids: Arc<IdColumn>,
    summaries: Arc<Vec<Summary>>,
    scores: ScoreColumns,
    labels: Arc<LabelColumns>,
}

/// A [`Chunk`]'s columns, each made unique once, to append rows to.
pub struct ChunkMut<'a> {
    ids: &'a mut IdColumn,
    summaries: &'a mut Vec<Summary>,
    scores: ScoresMut<'a>,
    labels: &'a mut LabelColumns,
}

/// A [`Chunk`]'s score columns, each made unique once, to set many rows' scores.
pub struct ScoresMut<'a> {
    scored: &'a mut Vec<bool>,
    /// p_alive, expected_orders_90d, expected_order_value, clv.
    values: [&'a mut Vec<f64>; 4],
    timing: &'a mut Vec<Timing>,
}

/// A row's four double score values in the order of [`ScoresMut::values`]
/// (zeros for a row without scores, whose `scored` flag is false).
fn score_values(scores: &Scores) -> [f64; 4] {
    [scores.p_alive, scores.expected_orders_90d, scores.expected_order_value, scores.clv]
}

impl ScoresMut<'_> {
    fn push(&mut self, scores: Option<Scores>) {
        let scores_or_zeros = scores.unwrap_or_default();
        self.scored.push(scores.is_some());
        for (column, value) in self.values.iter_mut().zip(score_values(&scores_or_zeros)) {
            column.push(value);
        }
        self.timing.push(Timing::of(&scores_or_zeros));
    }

    /// Sets row `row`'s scores.
    pub fn set(&mut self, row: usize, scores: Option<Scores>) {
        let scores_or_zeros = scores.unwrap_or_default();
        self.scored[row] = scores.is_some();
        for (column, value) in self.values.iter_mut().zip(score_values(&scores_or_zeros)) {
            column[row] = value;
        }
        self.timing[row] = Timing::of(&scores_or_zeros);
    }
}

impl ChunkMut<'_> {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// Appends a row.
    pub fn push(&mut self, id: &str, summary: Summary, scores: Option<Scores>, segments: Option<Segments>) {
        self.ids.bytes.extend_from_slice(id.as_bytes());
        // Ids are at most 256 bytes and a chunk at most CHUNK rows: far below i32::MAX.
        self.ids.offsets.push(self.ids.bytes.len() as i32);
        if self.ids.offsets.len() == CHUNK + 1 {
            // A full chunk's ids will not grow: give back what doubling reserved.
            self.ids.bytes.shrink_to_fit();
        }
        self.summaries.push(summary);
        self.scores.push(scores);
        self.labels.segmented.push(segments.is_some());
        let codes = segments.map_or([0; 7], |g| g.codes());
        for (column, code) in self.labels.codes_mut().into_iter().zip(codes) {
            column.push(code);
        }
    }
}

/// Which column groups a reader needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// [`IdColumn`].
    pub ids: bool,
    /// The [`Summary`] of each row.
    pub summaries: bool,
    /// [`ScoreColumns::scored`].
    pub scored: bool,
    /// [`ScoreColumns::p_alive`].
    pub p_alive: bool,
    /// [`ScoreColumns::expected_orders_90d`].
    pub expected_orders_90d: bool,
    /// [`ScoreColumns::expected_order_value`].
    pub expected_order_value: bool,
    /// [`ScoreColumns::clv`].
    pub clv: bool,
    /// [`ScoreColumns::timing`].
    pub timing: bool,
    /// [`LabelColumns`].
    pub labels: bool,
}

impl Groups {
    /// Every group.
    pub const ALL: Groups = Groups {
        ids: true,
        summaries: true,
        scored: true,
        p_alive: true,
        expected_orders_90d: true,
        expected_order_value: true,
        clv: true,
        timing: true,
        labels: true,
    };

    /// Both sets of groups.
    pub fn union(self, other: Groups) -> Groups {
        Groups {
            ids: self.ids || other.ids,
            summaries: self.summaries || other.summaries,
            scored: self.scored || other.scored,
            p_alive: self.p_alive || other.p_alive,
            expected_orders_90d: self.expected_orders_90d || other.expected_orders_90d,
            expected_order_value: self.expected_order_value || other.expected_order_value,
            clv: self.clv || other.clv,
            timing: self.timing || other.timing,
            labels: self.labels || other.labels,
        }
    }
}

/// Some groups of one chunk, shared with it: what a scan holds.
#[derive(Clone, Debug)]
pub struct ChunkView {
    rows: usize,
    ids: Option<Arc<IdColumn>>,
    summaries: Option<Arc<Vec<Summary>>>,
    scores: ScoreView,
    labels: Option<Arc<LabelColumns>>,
}

impl ChunkView {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The ids, if taken.
    pub fn ids(&self) -> Option<&Arc<IdColumn>> {
        self.ids.as_ref()
    }

    /// The summaries, if taken.
    pub fn summaries(&self) -> Option<&Arc<Vec<Summary>>> {
        self.summaries.as_ref()
    }

    /// The score columns taken.
    pub fn scores(&self) -> &ScoreView {
        &self.scores
    }

    /// The labels, if taken.
    pub fn labels(&self) -> Option<&Arc<LabelColumns>> {
        self.labels.as_ref()
    }
}

impl Default for Chunk {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Chunk {
    /// An empty chunk with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        let f64s = || Arc::new(Vec::with_capacity(rows));
        let bytes = || Vec::with_capacity(rows);
        Self {
            ids: Arc::new(IdColumn { offsets, bytes: Vec::with_capacity(rows * 8) }),
            summaries: Arc::new(Vec::with_capacity(rows)),
            scores: ScoreColumns {
                scored: Arc::new(Vec::with_capacity(rows)),
                p_alive: f64s(),
                expected_orders_90d: f64s(),
                expected_order_value: f64s(),
                clv: f64s(),
                timing: Arc::new(Vec::with_capacity(rows)),
            },
            labels: Arc::new(LabelColumns {
                segmented: Vec::with_capacity(rows),
                rfm_r: bytes(),
                rfm_f: bytes(),
                rfm_m: bytes(),
                rfm_segment: bytes(),
                value_tier: bytes(),
                relationship: bytes(),
                lifecycle_stage: bytes(),
            }),
        }
    }

    /// The groups `groups` of this chunk, shared.
    pub fn view(&self, groups: Groups) -> ChunkView {
        ChunkView {
            rows: self.len(),
            ids: groups.ids.then(|| self.ids.clone()),
            summaries: groups.summaries.then(|| self.summaries.clone()),
            scores: ScoreView {
                scored: groups.scored.then(|| self.scores.scored.clone()),
                p_alive: groups.p_alive.then(|| self.scores.p_alive.clone()),
                expected_orders_90d: groups.expected_orders_90d.then(|| self.scores.expected_orders_90d.clone()),
                expected_order_value: groups.expected_order_value.then(|| self.scores.expected_order_value.clone()),
                clv: groups.clv.then(|| self.scores.clv.clone()),
                timing: groups.timing.then(|| self.scores.timing.clone()),
            },
            labels: groups.labels.then(|| self.labels.clone()),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// Appends a row.
    pub fn push(&mut self, id: &str, summary: Summary, scores: Option<Scores>, segments: Option<Segments>) {
        self.rows_mut().push(id, summary, scores, segments);
    }

    /// Every column, to append rows: each group is made unique once (copied
    /// if a scan still holds it), not once per row and column.
    pub fn rows_mut(&mut self) -> ChunkMut<'_> {
        ChunkMut {
            ids: Arc::make_mut(&mut self.ids),
            summaries: Arc::make_mut(&mut self.summaries),
            scores: Self::score_columns_mut(&mut self.scores),
            labels: Arc::make_mut(&mut self.labels),
        }
    }

    /// The score columns, to set many rows' scores: each is made unique once.
    pub fn scores_mut(&mut self) -> ScoresMut<'_> {
        Self::score_columns_mut(&mut self.scores)
    }

    fn score_columns_mut(s: &mut ScoreColumns) -> ScoresMut<'_> {
        ScoresMut {
            scored: Arc::make_mut(&mut s.scored),
            values: [
                Arc::make_mut(&mut s.p_alive),
                Arc::make_mut(&mut s.expected_orders_90d),
                Arc::make_mut(&mut s.expected_order_value),
                Arc::make_mut(&mut s.clv),
            ],
            timing: Arc::make_mut(&mut s.timing),
        }
    }

    /// Removes the last row.
    pub fn pop(&mut self) {
        if Arc::make_mut(&mut self.summaries).pop().is_none() {
            return;
        }
        let ids = Arc::make_mut(&mut self.ids);
        ids.offsets.pop();
        ids.bytes.truncate(ids.offsets.last().map_or(0, |&o| o as usize));
        let mut scores = self.scores_mut();
        scores.scored.pop();
        scores.values.iter_mut().for_each(|column| {
            column.pop();
        });
        scores.timing.pop();
        let label_columns = Arc::make_mut(&mut self.labels);
        label_columns.segmented.pop();
        label_columns.codes_mut().into_iter().for_each(|column| {
            column.pop();
        });
    }

    /// Overwrites row `row` with row `from` of `source` (erasure moves the last
    /// customer into the freed row). The old id's bytes leave the buffer.
    pub fn overwrite(&mut self, row: usize, source: &Chunk, from: usize) {
        self.set_id(row, source.id(from));
        Arc::make_mut(&mut self.summaries)[row] = source.summaries[from];
        self.set_scores(row, source.scores(from));
        self.set_segments(row, source.segments(from));
    }

    fn set_id(&mut self, row: usize, id: &str) {
        let ids = Arc::make_mut(&mut self.ids);
        let (start, end) = (ids.offsets[row] as usize, ids.offsets[row + 1] as usize);
        ids.bytes.splice(start..end, id.bytes());
        let delta = id.len() as i32 - (end - start) as i32;
        ids.offsets[row + 1..].iter_mut().for_each(|o| *o += delta);
    }

    /// The id of row `row`.
    pub fn id(&self, row: usize) -> &str {
        // Only whole `&str`s are ever copied in, at offsets recorded with them.
        std::str::from_utf8(self.id_bytes(row)).unwrap_or_default()
    }

    /// The bytes of row `row`'s id (the index compares these: no UTF-8 check).
    pub fn id_bytes(&self, row: usize) -> &[u8] {
        &self.ids.bytes[self.ids.offsets[row] as usize..self.ids.offsets[row + 1] as usize]
    }

    /// The id column in Arrow `Utf8` layout: `len + 1` offsets and the bytes.
    pub fn id_column(&self) -> (&[i32], &[u8]) {
        (&self.ids.offsets, &self.ids.bytes)
    }

    /// Every row's summary.
    pub fn summaries(&self) -> &[Summary] {
        &self.summaries
    }

    /// Row `row`'s summary, to change.
    pub fn summary_mut(&mut self, row: usize) -> &mut Summary {
        &mut Arc::make_mut(&mut self.summaries)[row]
    }

    /// The score columns.
    pub fn score_columns(&self) -> &ScoreColumns {
        &self.scores
    }

    /// The label columns.
    pub fn label_columns(&self) -> &LabelColumns {
        &self.labels
    }

    /// Row `row`'s scores.
    pub fn scores(&self, row: usize) -> Option<Scores> {
        let s = &self.scores;
        s.scored[row].then(|| Scores {
            p_alive: s.p_alive[row],
            expected_orders_90d: s.expected_orders_90d[row],
            expected_order_value: s.expected_order_value[row],
            clv: s.clv[row],
            p_purchase_30d: f64::from(s.timing[row].p_purchase_30d),
            expected_orders_365d: f64::from(s.timing[row].expected_orders_365d),
            next_order_day: s.timing[row].next_order_day(),
            clv_log_spread: s.timing[row].clv_log_spread(),
        })
    }

    /// Sets row `row`'s scores.
    pub fn set_scores(&mut self, row: usize, scores: Option<Scores>) {
        self.scores_mut().set(row, scores);
    }

    /// Row `row`'s labels.
    pub fn segments(&self, row: usize) -> Option<Segments> {
        let l = &self.labels;
        if !l.segmented[row] {
            return None;
        }
        Segments::from_codes(l.code_columns().map(|column| column[row]))
    }

    /// Sets row `row`'s labels.
    pub fn set_segments(&mut self, row: usize, segments: Option<Segments>) {
        let l = Arc::make_mut(&mut self.labels);
        l.segmented[row] = segments.is_some();
        if let Some(g) = segments {
            for (column, code) in l.codes_mut().into_iter().zip(g.codes()) {
                column[row] = code;
            }
        }
    }

    /// Bytes of the columns' allocations (capacity, not length).
    pub fn memory_bytes(&self) -> usize {
        let s = &self.scores;
        let l = &self.labels;
        self.ids.offsets.capacity() * 4
            + self.ids.bytes.capacity()
            + self.summaries.capacity() * std::mem::size_of::<Summary>()
            + s.scored.capacity()
            + (s.p_alive.capacity()
                + s.expected_orders_90d.capacity()
                + s.expected_order_value.capacity()
                + s.clv.capacity())
                * 8
            + s.timing.capacity() * std::mem::size_of::<Timing>()
            + l.segmented.capacity()
            + l.rfm_r.capacity()
            + l.rfm_f.capacity()
            + l.rfm_m.capacity()
            + l.rfm_segment.capacity()
            + l.value_tier.capacity()
            + l.relationship.capacity()
            + l.lifecycle_stage.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_score::{LifecycleStage, Relationship, RfmSegment, ValueTier};

    fn segments(code: u8) -> Segments {
        Segments {
            rfm_r: 5,
            rfm_f: 4,
            rfm_m: 3,
            rfm_segment: RfmSegment::from_code(code).unwrap(),
            value_tier: ValueTier::Potential,
            relationship: Relationship::Butterfly,
            lifecycle_stage: LifecycleStage::Loyal,
        }
    }

    #[test]
    fn rows_keep_ids_scores_and_labels_and_erasure_removes_the_id_bytes() {
        let mut chunk = Chunk::with_capacity(4);
        let scores = Scores {
            p_alive: 0.5,
            expected_orders_90d: 1.5,
            expected_order_value: 20.0,
            clv: 99.0,
            p_purchase_30d: 0.25,
            expected_orders_365d: 4.5,
            next_order_day: Some(10_000.25),
            clv_log_spread: Some(0.125),
        };
        chunk.push("c-1", Summary::default(), Some(scores), None);
        chunk.push("a-much-longer-customer-id", Summary::default(), None, Some(segments(3)));
        chunk.push("c-3", Summary::default(), None, None);
        assert_eq!((chunk.id(0), chunk.id(1), chunk.id(2)), ("c-1", "a-much-longer-customer-id", "c-3"));
        assert_eq!((chunk.scores(0), chunk.scores(1)), (Some(scores), None));
        assert_eq!((chunk.segments(0), chunk.segments(1)), (None, Some(segments(3))));
        // Erase row 1: the last row moves in, then the last row goes.
        let last = chunk.clone();
        chunk.overwrite(1, &last, 2);
        chunk.pop();
        assert_eq!((chunk.len(), chunk.id(0), chunk.id(1)), (2, "c-1", "c-3"));
        assert_eq!(chunk.segments(1), None);
        let (offsets, bytes) = chunk.id_column();
        assert_eq!((offsets, bytes), (&[0, 3, 6][..], &b"c-1c-3"[..]));
        assert!(chunk.memory_bytes() > 0);
    }

    #[test]
    fn every_label_code_round_trips() {
        for code in 0..RfmSegment::ALL.len() as u8 {
            let mut chunk = Chunk::with_capacity(1);
            chunk.push("c", Summary::default(), None, Some(segments(code)));
            assert_eq!(chunk.segments(0), Some(segments(code)));
        }
    }
}
