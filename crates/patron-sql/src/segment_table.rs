//! `segment_definitions`: every label of `customers` with its rule in words
//! and the thresholds the server runs with, so an analyst can ask SQL why a
//! customer is `butterfly` instead of reading the README. The rows come from
//! `patron_score::segment_definitions`, the module that applies the rules.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::Result;

use crate::tables::{ComputedTable, Shared};

/// `segment_definitions (family, label, rule, thresholds)`, in the order of
/// the families' columns in `customers`.
pub(crate) fn segment_definitions_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("family", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("thresholds", DataType::Utf8, false),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let rows = patron_score::segment_definitions(&shared.source.engine().scoring_config().segments);
        let column = |text: fn(&patron_score::SegmentDefinition) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(text(r))).collect::<StringArray>())
        };
        Ok(vec![column(|r| r.family), column(|r| r.label), column(|r| &r.rule), column(|r| &r.thresholds)])
    });
    ComputedTable { name: "segment_definitions", schema, rows }
}
