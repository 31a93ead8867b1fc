//! `channel_consents`: consent on channels beyond the three contract columns
//! of `customers` (`consent_email`, `consent_sms`, `consent_push`), one row
//! per customer and channel, as the engine keeps it
//! (`patron_state::History::other_consent`). Only customers who stated such
//! a channel are visited, so the table costs nothing to a shop that uses none.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::Result;

use crate::tables::{ComputedTable, Shared, state_error, timestamp_type};

/// `channel_consents (customer_id, channel, consent, stated_at)`, ordered by
/// customer and channel.
pub(crate) fn channel_consents_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("consent", DataType::Boolean, false),
        Field::new("stated_at", timestamp_type(), false),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let mut rows: Vec<(String, Arc<str>, bool, i64)> = Vec::new();
        shared
            .source
            .engine()
            .with_books(|book| {
                for (customer, consents) in book.other_consents() {
                    for c in consents {
                        rows.push((customer.as_str().to_owned(), c.channel(), c.given, c.stated_at().micros()));
                    }
                }
            })
            .map_err(state_error)?;
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(vec![
            Arc::new(rows.iter().map(|r| Some(r.0.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(&*r.1)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.2)).collect::<BooleanArray>()),
            Arc::new(rows.iter().map(|r| Some(r.3)).collect::<TimestampMicrosecondArray>()),
        ])
    });
    ComputedTable { name: "channel_consents", schema, rows }
}
