//! `patron campaign create|list|show|close`: the campaign endpoints of a
//! running server, with their answers printed for people (results as a
//! table, with the verdict on significance).

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cli::{CampaignAction, CampaignArgs};

pub(crate) fn run(args: &CampaignArgs) -> Result<()> {
    let base = format!("{}/v1/campaigns", args.url);
    let answer = match &args.action {
        CampaignAction::Create(c) => {
            let body = json!({
                "campaign_id": c.campaign_id, "name": c.name, "channel": c.channel,
                "audience_sql": c.audience_sql, "control_share": c.control_share,
                "cost_per_contact": c.cost_per_contact, "currency": c.currency,
                "starts_at": c.starts_at, "ends_at": c.ends_at,
            });
            let created = call(args, ureq::post(&base), Some(&body))?;
            print!("{}", created_text(&created));
            return Ok(());
        }
        CampaignAction::List => call(args, ureq::get(&base), None)?,
        CampaignAction::Show { campaign_id } => call(args, ureq::get(&format!("{base}/{campaign_id}")), None)?,
        CampaignAction::Close { campaign_id } => {
            call(args, ureq::post(&format!("{base}/{campaign_id}/close")), Some(&json!({})))?
        }
    };
    let campaigns = match answer["campaigns"].as_array() {
        Some(list) => list.clone(),
        None => vec![answer],
    };
    if campaigns.is_empty() {
        println!("no campaigns yet (create one with `patron campaign create`)");
    }
    for campaign in &campaigns {
        print!("{}", campaign_text(campaign));
    }
    Ok(())
}

fn call(args: &CampaignArgs, mut request: ureq::Request, body: Option<&Value>) -> Result<Value> {
    if let Some(token) = &args.token {
        request = request.set("authorization", &format!("Bearer {token}"));
    }
    let url = request.url().to_owned();
    let response = match body {
        Some(body) => request.set("content-type", "application/json").send_string(&body.to_string()),
        None => request.call(),
    };
    match response {
        Ok(response) => response.into_json().with_context(|| format!("reading the answer of {url}")),
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("the server answered {status}: {message}")
        }
        Err(e) => Err(e).with_context(|| format!("cannot reach {url}")),
    }
}

fn created_text(c: &Value) -> String {
    format!(
        "created campaign {id} ({channel}): {members} members ({treatment} treatment, {control} control) \
         of an audience of {audience}; {no_consent} left out without {channel} consent, {unknown} not customers\n",
        id = c["campaign_id"].as_str().unwrap_or("?"),
        channel = c["channel"].as_str().unwrap_or("?"),
        members = c["members"],
        treatment = c["treatment"],
        control = c["control"],
        audience = c["audience"],
        no_consent = c["excluded_no_consent"],
        unknown = c["unknown_customers"],
    )
}

fn number(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

fn interval(v: &Value) -> String {
    if v.is_null() {
        return "-".to_owned();
    }
    format!("{} [{}, {}]", number(&v["estimate"]), number(&v["low"]), number(&v["high"]))
}

pub(crate) fn campaign_text(c: &Value) -> String {
    let mut out = String::new();
    let window_end = c["ends_at"].as_str().unwrap_or("open");
    let state = c["closed_at"].as_str().map_or_else(|| "open".to_owned(), |at| format!("closed {at}"));
    let _ = writeln!(
        out,
        "{} \"{}\" via {}, window {} to {}, {}; {} members, {} left out without consent, {} {} per contact",
        c["campaign_id"].as_str().unwrap_or("?"),
        c["name"].as_str().unwrap_or(""),
        c["channel"].as_str().unwrap_or("?"),
        c["starts_at"].as_str().unwrap_or("?"),
        window_end,
        state,
        c["members"],
        c["excluded_no_consent"],
        number(&c["cost_per_contact"]),
        c["currency"].as_str().unwrap_or(""),
    );
    let _ = writeln!(
        out,
        "  {:<9} {:>8} {:>9} {:>10} {:>7} {:>7} {:>12} {:>10}",
        "group", "members", "contacted", "responders", "buyers", "orders", "revenue", "conversion"
    );
    for g in c["results"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<9} {:>8} {:>9} {:>10} {:>7} {:>7} {:>12} {:>9.2}%",
            g["group"].as_str().unwrap_or("?"),
            g["members"].to_string(),
            g["contacted"].to_string(),
            g["responders"].to_string(),
            g["buyers"].to_string(),
            g["orders"].to_string(),
            number(&g["revenue"]),
            g["conversion_rate"].as_f64().unwrap_or(0.0) * 100.0,
        );
    }
    if let Some(t) = c["results"].as_array().and_then(|r| r.first()).filter(|t| !t["incremental_revenue"].is_null()) {
        let _ = writeln!(out, "  incremental conversions {}", interval(&t["incremental_conversions"]));
        let _ = writeln!(out, "  incremental revenue     {}", interval(&t["incremental_revenue"]));
        let _ = writeln!(out, "  incremental margin      {}", interval(&t["incremental_margin"]));
        let _ = writeln!(out, "  ROI                     {}", interval(&t["roi"]));
        let _ = writeln!(out, "  CLV change vs control   {}", number(&t["clv_change_vs_control"]));
    }
    if let Some(verdict) = c["verdict"].as_str() {
        let _ = writeln!(out, "  {verdict}");
    }
    out
}
