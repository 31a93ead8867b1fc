//! Campaigns (role `campaign` or `admin`): `POST /v1/campaigns` creates one
//! and freezes its audience, `GET /v1/campaigns` lists them with their
//! results, `GET /v1/campaigns/{id}` shows one, `POST /v1/campaigns/{id}/close`
//! freezes its results.
//!
//! Creating a campaign:
//! 1. checks every field and names the one at fault;
//! 2. runs `audience_sql` in the read-only SQL session with its limits (the
//!    same as `POST /v1/sql`), and takes its `customer_id` column;
//! 3. leaves out customers without an explicit yes on the channel (counted
//!    in `excluded_no_consent`) and ids that are not customers (counted in
//!    `unknown_customers`);
//! 4. splits the rest by the deterministic hash of `patron_campaign::assign`;
//! 5. logs the campaign and its members in one record and answers `201` once
//!    it is durable and every shard holds its members.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patron_campaign::{Channel, Group, Interval, assign, check_control_share};
use patron_model::{Currency, CustomerId, Decimal, MAX_ID_BYTES, Timestamp};
use patron_state::campaigns::{CampaignDefinition, GroupResult, MemberSeed, consents};
use patron_state::{Engine, StateError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, error};

/// The body of `POST /v1/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCampaign {
    campaign_id: String,
    name: Option<String>,
    channel: String,
    audience_sql: String,
    /// Share held out as control; 0.1 when not given.
    control_share: Option<f64>,
    /// Decimal text or number, in `currency`; 0 when not given.
    cost_per_contact: Option<Value>,
    currency: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
}

/// Control share when a campaign does not say.
const DEFAULT_CONTROL_SHARE: f64 = 0.1;

/// Longest campaign name kept.
const MAX_NAME_BYTES: usize = 256;

/// Longest audience query kept.
const MAX_AUDIENCE_SQL_BYTES: usize = 64 << 10;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_campaign", message)
}

/// The checked fields of a new campaign, before its audience is known.
fn checked(new: &NewCampaign, state: &AppState, now: Timestamp) -> Result<CampaignDefinition, ApiError> {
    let id = new.campaign_id.trim();
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(invalid(format!("campaign_id: must be 1 to {MAX_ID_BYTES} bytes without control characters")));
    }
    let name = new.name.as_deref().map_or(id, str::trim);
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("name: is {} bytes long, the limit is {MAX_NAME_BYTES}", name.len())));
    }
    let channel = Channel::parse(&new.channel)
        .ok_or_else(|| invalid(format!("channel: {:?} is not one of email, sms, push", new.channel)))?;
    if new.audience_sql.trim().is_empty() {
        return Err(invalid("audience_sql: is empty"));
    }
    if new.audience_sql.len() > MAX_AUDIENCE_SQL_BYTES {
        return Err(invalid(format!("audience_sql: longer than {} KiB", MAX_AUDIENCE_SQL_BYTES >> 10)));
    }
    let control_share =
        check_control_share(new.control_share.unwrap_or(DEFAULT_CONTROL_SHARE)).map_err(|e| invalid(e.to_string()))?;
    let currencies = state.currencies();
    let currency = match &new.currency {
        None => currencies.base,
        Some(code) => Currency::from_code(code)
            .ok_or_else(|| invalid(format!("currency: {code:?} is not an ISO 4217 code Patron knows")))?,
    };
    let cost_text = match &new.cost_per_contact {
        None => "0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(invalid(format!("cost_per_contact: expected a decimal, got {other}"))),
    };
    let cost = Decimal::parse(&cost_text).map_err(|e| invalid(format!("cost_per_contact: {e}")))?;
    if cost.is_negative() {
        return Err(invalid("cost_per_contact: must not be negative"));
    }
    let cost_per_contact_minor =
        currencies.to_base_minor(&cost, currency).map_err(|e| invalid(format!("cost_per_contact: {e}")))?;
    let time = |field: &str, text: &Option<String>| -> Result<Option<Timestamp>, ApiError> {
        text.as_deref()
            .map(|t| {
                Timestamp::parse_rfc3339(t)
                    .ok_or_else(|| invalid(format!("{field}: {t:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)")))
            })
            .transpose()
    };
    let starts_at = time("starts_at", &new.starts_at)?.unwrap_or(now);
    let ends_at = time("ends_at", &new.ends_at)?;
    if ends_at.is_some_and(|end| end <= starts_at) {
        return Err(invalid("ends_at: must be after starts_at"));
    }
    Ok(CampaignDefinition {
        campaign_id: id.into(),
        name: name.into(),
        channel,
        audience_sql: new.audience_sql.as_str().into(),
        control_share,
        cost_per_contact_minor,
        created_at: now,
        starts_at,
        ends_at,
        members: 0,
        excluded_no_consent: 0,
        closed_at: None,
        clv_change_at_close: [None, None],
    })
}

/// The distinct customer ids of the audience query's `customer_id` column.
fn audience_ids(result: &patron_sql::QueryResult) -> Result<Vec<String>, ApiError> {
    let Ok(column) = result.schema.index_of("customer_id") else {
        return Err(ApiError::bad_request(
            "audience_without_customer_id",
            "audience_sql must return a customer_id column (for example SELECT customer_id FROM customers WHERE …)",
        ));
    };
    let (mut seen, mut ids) = (HashSet::new(), Vec::new());
    for batch in &result.batches {
        let array = batch.column(column);
        let mut take = |value: &str| {
            if seen.insert(value.to_owned()) {
                ids.push(value.to_owned());
            }
        };
        match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().iter().flatten().for_each(&mut take),
            DataType::LargeUtf8 => array.as_string::<i64>().iter().flatten().for_each(&mut take),
            DataType::Utf8View => array.as_string_view().iter().flatten().for_each(&mut take),
            other => {
                return Err(ApiError::bad_request(
                    "audience_without_customer_id",
                    format!("audience_sql's customer_id column is {other}, not text"),
                ));
            }
        }
    }
    Ok(ids)
}

/// Who of `ids` may be contacted on `channel`, split and seeded with their
/// scores now; plus how many lacked consent and how many are not customers.
fn members(engine: &Engine, campaign: &CampaignDefinition, ids: &[String]) -> (Vec<MemberSeed>, u64, u64) {
    let mut per_shard: Vec<Vec<CustomerId>> = vec![Vec::new(); engine.shard_count()];
    let mut unknown = 0;
    for id in ids {
        match CustomerId::new(id) {
            Ok(customer) => per_shard[engine.shard_of(&customer)].push(customer),
            Err(_) => unknown += 1,
        }
    }
    let (mut seeds, mut no_consent) = (Vec::new(), 0);
    for (shard, customers) in per_shard.into_iter().enumerate() {
        let _ = engine.with_shard(shard, |book| {
            for customer in customers {
                let Some(row) = book.row(&customer) else {
                    unknown += 1;
                    continue;
                };
                if !consents(&row.summary().consent, campaign.channel) {
                    no_consent += 1;
                    continue;
                }
                let scores = row.scores();
                seeds.push(MemberSeed {
                    group: assign(&campaign.campaign_id, customer.as_str(), campaign.control_share),
                    clv_at_start: scores.map_or(0.0, |s| s.clv),
                    p_alive_at_start: scores.map_or(0.0, |s| s.p_alive),
                    customer_id: customer,
                });
            }
        });
    }
    (seeds, no_consent, unknown)
}

fn time_json(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |t| t.to_rfc3339().into())
}

fn interval_json(interval: &Interval) -> Value {
    json!({"estimate": interval.estimate, "low": interval.low, "high": interval.high})
}

/// A campaign's definition (and its results, when given) as JSON.
pub(crate) fn campaign_json(d: &CampaignDefinition, results: Option<&[GroupResult; 2]>, base: Currency) -> Value {
    let mut v = json!({
        "campaign_id": &*d.campaign_id,
        "name": &*d.name,
        "channel": d.channel.as_str(),
        "audience_sql": &*d.audience_sql,
        "control_share": d.control_share,
        "cost_per_contact": base.to_major(d.cost_per_contact_minor),
        "currency": base.code(),
        "created_at": d.created_at.to_rfc3339(),
        "starts_at": d.starts_at.to_rfc3339(),
        "ends_at": time_json(d.ends_at),
        "closed_at": time_json(d.closed_at),
        "members": d.members,
        "excluded_no_consent": d.excluded_no_consent,
    });
    if let (Some(groups), Some(object)) = (results, v.as_object_mut()) {
        let rows: Vec<Value> = groups.iter().map(group_json).collect();
        object.insert("results".into(), rows.into());
        object.insert("verdict".into(), verdict(&groups[0]).into());
    }
    v
}

fn group_json(g: &GroupResult) -> Value {
    let mut v = json!({
        "group": g.group.as_str(),
        "members": g.outcome.members,
        "contacted": g.contacted,
        "responders": g.responders,
        "buyers": g.outcome.buyers,
        "orders": g.outcome.orders,
        "revenue": g.outcome.revenue,
        "conversion_rate": g.outcome.conversion_rate(),
        "cost": g.cost,
        "clv_change": g.clv_change,
    });
    if let (Some(e), Some(object)) = (&g.effect, v.as_object_mut()) {
        object.insert("incremental_conversions".into(), interval_json(&e.incremental_conversions));
        object.insert("incremental_orders".into(), interval_json(&e.incremental_orders));
        object.insert("incremental_revenue".into(), interval_json(&e.incremental_revenue));
        object.insert("incremental_margin".into(), interval_json(&e.incremental_margin));
        object.insert("roi".into(), e.roi.as_ref().map_or(Value::Null, interval_json));
        object.insert("clv_change_vs_control".into(), e.clv_change_difference.into());
        object.insert("significant".into(), e.significant.into());
    }
    v
}

/// One sentence on whether the campaign has shown an effect.
fn verdict(treatment: &GroupResult) -> String {
    match &treatment.effect {
        None => "not measurable yet: each group needs at least two members".to_owned(),
        Some(e) if e.significant => {
            let r = &e.incremental_revenue;
            format!(
                "significant at 5%: the campaign changed buying (incremental revenue {:.2}, 95% interval {:.2} to {:.2})",
                r.estimate, r.low, r.high
            )
        }
        Some(e) => {
            let c = &e.incremental_conversions;
            format!(
                "not yet significant: the 95% intervals of incremental conversions ({:.1} to {:.1}), orders and revenue all contain 0",
                c.low, c.high
            )
        }
    }
}

fn state_error(e: StateError) -> Response {
    match e {
        StateError::CampaignExists(_) => error(StatusCode::CONFLICT, "campaign_exists", e.to_string()),
        StateError::UnknownCampaign(_) => error(StatusCode::NOT_FOUND, "campaign_not_found", e.to_string()),
        StateError::CampaignTooLarge { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "audience_too_large", e.to_string())
        }
        other => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", other.to_string()),
    }
}

/// `POST /v1/campaigns`.
pub(crate) async fn post_campaign(
    State(state): State<Arc<AppState>>,
    body: Result<axum::Json<NewCampaign>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let new = match body {
        Ok(axum::Json(new)) => new,
        Err(rejection) => return invalid(rejection.body_text()).into_response(),
    };
    let definition = match checked(&new, &state, Timestamp::now()) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if state.engine().campaign(&definition.campaign_id).is_some() {
        return state_error(StateError::CampaignExists(definition.campaign_id.to_string()));
    }
    let result = match state.sql().run(&definition.audience_sql, patron_sql::Access::Query).await {
        Ok(result) => result,
        Err(e) => {
            let mut response = super::sql::sql_error(&e);
            *response.status_mut() = if e.is_client_error() { StatusCode::BAD_REQUEST } else { response.status() };
            return response;
        }
    };
    let ids = match audience_ids(&result) {
        Ok(ids) => ids,
        Err(e) => return e.into_response(),
    };
    drop(result);
    let engine = state.engine().clone();
    let base = state.currencies().base;
    blocking(move || {
        let (seeds, no_consent, unknown) = members(&engine, &definition, &ids);
        let treatment = seeds.iter().filter(|s| s.group == Group::Treatment).count();
        let control = seeds.len() - treatment;
        let definition = CampaignDefinition { excluded_no_consent: no_consent, ..definition };
        match engine.create_campaign(definition, seeds) {
            Ok(created) => {
                let mut body = campaign_json(&created, None, base);
                if let Some(object) = body.as_object_mut() {
                    object.insert("audience".into(), ids.len().into());
                    object.insert("unknown_customers".into(), unknown.into());
                    object.insert("treatment".into(), treatment.into());
                    object.insert("control".into(), control.into());
                }
                (StatusCode::CREATED, axum::Json(body)).into_response()
            }
            Err(e) => state_error(e),
        }
    })
    .await
}

/// `GET /v1/campaigns`: every campaign with its results, in creation order.
pub(crate) async fn list_campaigns(State(state): State<Arc<AppState>>) -> Response {
    let engine = state.engine().clone();
    let base = state.currencies().base;
    blocking(move || match engine.campaign_results() {
        Ok(all) => {
            let list: Vec<Value> = all.iter().map(|(d, r)| campaign_json(d, Some(r), base)).collect();
            axum::Json(json!({ "campaigns": list })).into_response()
        }
        Err(e) => state_error(e),
    })
    .await
}

/// `GET /v1/campaigns/{id}`: one campaign with its results.
pub(crate) async fn get_campaign(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let engine = state.engine().clone();
    let base = state.currencies().base;
    blocking(move || match engine.campaign_results() {
        Ok(all) => match all.iter().find(|(d, _)| *d.campaign_id == *id) {
            Some((d, r)) => axum::Json(campaign_json(d, Some(r), base)).into_response(),
            None => state_error(StateError::UnknownCampaign(id)),
        },
        Err(e) => state_error(e),
    })
    .await
}

/// `POST /v1/campaigns/{id}/close`: freezes the results (closing twice changes nothing).
pub(crate) async fn close_campaign(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let engine = state.engine().clone();
    let base = state.currencies().base;
    blocking(move || {
        if let Err(e) = engine.close_campaign(&id, Timestamp::now()) {
            return state_error(e);
        }
        match engine.campaign_results() {
            Ok(all) => match all.iter().find(|(d, _)| *d.campaign_id == *id) {
                Some((d, r)) => axum::Json(campaign_json(d, Some(r), base)).into_response(),
                None => state_error(StateError::UnknownCampaign(id)),
            },
            Err(e) => state_error(e),
        }
    })
    .await
}
