//! The campaign tables: `campaigns`, `campaign_members` and
//! `campaign_results`. Each reads the engine's one definition
//! (`patron_state::campaigns`), as `GET /v1/campaigns` does, so SQL and HTTP
//! cannot disagree. Money columns are in the base currency's major units;
//! the incremental and ROI columns are filled on the treatment row only.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::Result;
use patron_campaign::Interval;
use patron_model::Timestamp;

use crate::tables::{ComputedTable, Shared, state_error, timestamp_type};

fn micros(at: Option<Timestamp>) -> Option<i64> {
    at.map(Timestamp::micros)
}

/// `campaigns`: one row per campaign, in creation order.
pub(crate) fn campaigns_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
        Field::new("starts_at", timestamp_type(), false),
        Field::new("ends_at", timestamp_type(), true),
        Field::new("closed_at", timestamp_type(), true),
        Field::new("control_share", DataType::Float64, false),
        Field::new("cost_per_contact", DataType::Float64, false),
        Field::new("audience_sql", DataType::Utf8, false),
        Field::new("members", DataType::Int64, false),
        Field::new("excluded_no_consent", DataType::Int64, false),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let all = shared.source.engine().campaigns();
        let base = shared.source.base_currency();
        let time = |f: fn(&patron_state::campaigns::CampaignDefinition) -> Option<Timestamp>| -> ArrayRef {
            Arc::new(all.iter().map(|d| micros(f(d))).collect::<TimestampMicrosecondArray>())
        };
        Ok(vec![
            Arc::new(all.iter().map(|d| Some(&*d.campaign_id)).collect::<StringArray>()),
            Arc::new(all.iter().map(|d| Some(&*d.name)).collect::<StringArray>()),
            Arc::new(all.iter().map(|d| Some(d.channel.as_str())).collect::<StringArray>()),
            time(|d| Some(d.created_at)),
            time(|d| Some(d.starts_at)),
            time(|d| d.ends_at),
            time(|d| d.closed_at),
            Arc::new(all.iter().map(|d| Some(d.control_share)).collect::<Float64Array>()),
            Arc::new(all.iter().map(|d| Some(base.to_major(d.cost_per_contact_minor))).collect::<Float64Array>()),
            Arc::new(all.iter().map(|d| Some(&*d.audience_sql)).collect::<StringArray>()),
            Arc::new(all.iter().map(|d| Some(d.members as i64)).collect::<Int64Array>()),
            Arc::new(all.iter().map(|d| Some(d.excluded_no_consent as i64)).collect::<Int64Array>()),
        ])
    });
    ComputedTable { name: "campaigns", schema, rows }
}

/// `campaign_members`: one row per membership, so a later audience can
/// target by past responses.
pub(crate) fn campaign_members_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("clv_at_start", DataType::Float64, false),
        Field::new("p_alive_at_start", DataType::Float64, false),
        Field::new("last_response", DataType::Utf8, true),
        Field::new("responded_at", timestamp_type(), true),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let (mut campaign, mut customer, mut group) = (Vec::new(), Vec::new(), Vec::new());
        let (mut clv, mut p_alive, mut response, mut responded) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        shared
            .source
            .engine()
            .with_books(|book| {
                for (c, m) in book.campaigns().members() {
                    campaign.push(m.campaign_id.clone());
                    customer.push(c.as_str().to_owned());
                    group.push(m.group.as_str());
                    clv.push(m.clv_at_start);
                    p_alive.push(m.p_alive_at_start);
                    response.push(m.last_response.map(|r| r.as_str()));
                    responded.push(m.last_response.map(|_| m.responded_at_ms * 1000));
                }
            })
            .map_err(state_error)?;
        Ok(vec![
            Arc::new(campaign.iter().map(|c| Some(&**c)).collect::<StringArray>()),
            Arc::new(customer.iter().map(|c| Some(c.as_str())).collect::<StringArray>()),
            Arc::new(group.into_iter().map(Some).collect::<StringArray>()),
            Arc::new(Float64Array::from(clv)),
            Arc::new(Float64Array::from(p_alive)),
            Arc::new(response.into_iter().collect::<StringArray>()),
            Arc::new(responded.into_iter().collect::<TimestampMicrosecondArray>()),
        ])
    });
    ComputedTable { name: "campaign_members", schema, rows }
}

/// `campaign_results`: per campaign, a treatment and a control row.
pub(crate) fn campaign_results_table(shared: Shared) -> ComputedTable {
    let interval_fields = |name: &str| {
        [
            Field::new(name, DataType::Float64, true),
            Field::new(format!("{name}_low"), DataType::Float64, true),
            Field::new(format!("{name}_high"), DataType::Float64, true),
        ]
    };
    let mut fields = vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("members", DataType::Int64, false),
        Field::new("contacted", DataType::Int64, false),
        Field::new("responders", DataType::Int64, false),
        Field::new("buyers", DataType::Int64, false),
        Field::new("orders", DataType::Int64, false),
        Field::new("revenue", DataType::Float64, false),
        Field::new("conversion_rate", DataType::Float64, false),
    ];
    fields.extend(interval_fields("incremental_revenue"));
    fields.push(Field::new("incremental_margin", DataType::Float64, true));
    fields.push(Field::new("cost", DataType::Float64, false));
    fields.extend(interval_fields("roi"));
    fields.push(Field::new("clv_change", DataType::Float64, true));
    // Beyond the contract's columns: the rest of the effect, and its verdict.
    fields.extend(interval_fields("incremental_conversions"));
    fields.extend(interval_fields("incremental_orders"));
    fields.push(Field::new("clv_change_vs_control", DataType::Float64, true));
    fields.push(Field::new("significant", DataType::Boolean, true));
    let schema = Arc::new(Schema::new(fields));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let all = shared.source.engine().campaign_results().map_err(state_error)?;
        let rows: Vec<_> = all.iter().flat_map(|(_, groups)| groups.iter()).collect();
        let count = |f: fn(&patron_state::campaigns::GroupResult) -> u64| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r) as i64)).collect::<Int64Array>())
        };
        let number = |f: fn(&patron_state::campaigns::GroupResult) -> Option<f64>| -> ArrayRef {
            Arc::new(rows.iter().map(|r| f(r)).collect::<Float64Array>())
        };
        let interval = |f: fn(&patron_state::campaigns::Effect) -> Option<Interval>| -> [ArrayRef; 3] {
            let pick = |part: fn(&Interval) -> f64| -> ArrayRef {
                Arc::new(rows.iter().map(|r| r.effect.as_ref().and_then(f).map(|i| part(&i))).collect::<Float64Array>())
            };
            [pick(|i| i.estimate), pick(|i| i.low), pick(|i| i.high)]
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(&*r.campaign_id)).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.group.as_str())).collect::<StringArray>()),
            count(|r| r.outcome.members),
            count(|r| r.contacted),
            count(|r| r.responders),
            count(|r| r.outcome.buyers),
            count(|r| r.outcome.orders),
            number(|r| Some(r.outcome.revenue)),
            number(|r| Some(r.outcome.conversion_rate())),
        ];
        columns.extend(interval(|e| Some(e.incremental_revenue)));
        columns.push(number(|r| r.effect.map(|e| e.incremental_margin.estimate)));
        columns.push(number(|r| Some(r.cost)));
        columns.extend(interval(|e| e.roi));
        columns.push(number(|r| r.clv_change));
        columns.extend(interval(|e| Some(e.incremental_conversions)));
        columns.extend(interval(|e| Some(e.incremental_orders)));
        columns.push(number(|r| r.effect.and_then(|e| e.clv_change_difference)));
        columns.push(Arc::new(rows.iter().map(|r| r.effect.map(|e| e.significant)).collect::<BooleanArray>()));
        Ok(columns)
    });
    ComputedTable { name: "campaign_results", schema, rows }
}
