//! Campaigns in the customer state: who is a member, what they did, and the
//! results every view (HTTP, SQL, the demo) reads.
//!
//! Why here and not beside the engine: a member's responses and purchases in
//! the campaign window change with the customer's own events, in log order,
//! so the membership lives with the customer, in the customer's shard
//! ([`ShardCampaigns`], owned by the shard's [`crate::CustomerBook`]). The
//! shard's snapshot image then carries its members at exactly the cut of its
//! customers, and erasure removes a customer and their memberships together.
//!
//! - A campaign is created by one log record holding its definition and its
//!   frozen membership ([`encode_creation`]); replay re-creates it at the same
//!   point of the log, so purchases before it are not attributed to it, on
//!   the live server and after a restart alike.
//! - **Attribution:** a member's purchase counts for the campaign when its
//!   event time is in the window `[starts_at, ends_at)` and it is applied
//!   after the campaign was created and before it was closed (closing
//!   freezes the results). A refund in the window lowers the member's
//!   window revenue. Purchases before creation are not counted even when the
//!   window started earlier: the audience was chosen at creation, from data
//!   that already included them.
//! - **Responses** (`campaign_response` events) are accepted only from
//!   treatment members of a known campaign (control members are never
//!   contacted, so a response from one is refused as a sender's mistake);
//!   the last one by event time is kept.
//!   `unsubscribed` withdraws consent on the campaign's channel, even after
//!   the campaign was closed (an objection is never dropped).

use std::collections::HashMap;
use std::sync::Arc;

use patron_campaign::{CampaignEconomics, Channel, Group, GroupOutcome, Interval, uplift};
use patron_model::codec::{put_opt_str, put_str};
use patron_model::{ByteReader, Consent, CustomerId, Response, Timestamp};

/// A campaign as created: what it is, whom it reached, what a contact costs.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignDefinition {
    /// Its id (unique).
    pub campaign_id: Arc<str>,
    /// What marketers call it.
    pub name: Box<str>,
    /// The channel it contacts through.
    pub channel: Channel,
    /// The query that chose the audience, as given.
    pub audience_sql: Box<str>,
    /// The share of the audience held out as control.
    pub control_share: f64,
    /// What one contact costs, base-currency minor units.
    pub cost_per_contact_minor: i64,
    /// When it was created (server time).
    pub created_at: Timestamp,
    /// Start of the attribution window.
    pub starts_at: Timestamp,
    /// End of the attribution window (exclusive), if any.
    pub ends_at: Option<Timestamp>,
    /// Members (treatment and control).
    pub members: u64,
    /// Audience rows left out for lack of consent on the channel.
    pub excluded_no_consent: u64,
    /// When it was closed (results frozen), if it was.
    pub closed_at: Option<Timestamp>,
    /// The groups' mean CLV change (treatment, control) frozen at the close:
    /// scores keep moving after it, results do not.
    pub clv_change_at_close: [Option<f64>; 2],
}

/// A member as the audience froze them.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSeed {
    /// Who.
    pub customer_id: CustomerId,
    /// Treatment or control.
    pub group: Group,
    /// Predicted CLV at creation (0 when unscored).
    pub clv_at_start: f64,
    /// P(alive) at creation (0 when unscored).
    pub p_alive_at_start: f64,
}

/// A member and what they did since the campaign was created.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Which campaign.
    pub campaign_id: Arc<str>,
    /// Treatment or control.
    pub group: Group,
    /// Predicted CLV at creation.
    pub clv_at_start: f64,
    /// P(alive) at creation.
    pub p_alive_at_start: f64,
    /// The latest response by event time.
    pub last_response: Option<Response>,
    /// Its event time (milliseconds; meaningful with `last_response`).
    pub responded_at_ms: i64,
    /// Whether any response was an open or a click.
    pub engaged: bool,
    /// Orders attributed to the campaign.
    pub orders: u32,
    /// Their revenue less refunds in the window, base minor units.
    pub revenue_minor: i64,
}

/// Where a campaign's attribution stands, as its members' shard sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    channel: Channel,
    starts_ms: i64,
    ends_ms: i64,
    closed: bool,
}

impl Window {
    fn of(definition: &CampaignDefinition) -> Self {
        Self {
            channel: definition.channel,
            starts_ms: definition.starts_at.millis(),
            ends_ms: definition.ends_at.map_or(i64::MAX, Timestamp::millis),
            closed: definition.closed_at.is_some(),
        }
    }

    fn counts(&self, at: Timestamp) -> bool {
        !self.closed && (self.starts_ms..self.ends_ms).contains(&at.millis())
    }
}

/// Why a campaign response was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseRefusal {
    /// No campaign has this id.
    #[error("campaign_id: no campaign {0:?}")]
    UnknownCampaign(Box<str>),
    /// The customer is not in the campaign's audience.
    #[error("customer_id: {customer} is not a member of campaign {campaign:?}")]
    NotAMember {
        /// The customer.
        customer: CustomerId,
        /// The campaign.
        campaign: Box<str>,
    },
    /// The customer is held out as control: the campaign never contacted them.
    #[error(
        "customer_id: {customer} is in the control group of campaign {campaign:?}, which is never contacted; a response from them means the sender contacted the wrong list"
    )]
    ControlGroup {
        /// The customer.
        customer: CustomerId,
        /// The campaign.
        campaign: Box<str>,
    },
}

/// One shard's campaigns: every campaign's window, and the members among the
/// shard's customers.
#[derive(Clone, Debug, Default)]
pub struct ShardCampaigns {
    windows: HashMap<Arc<str>, Window>,
    members: HashMap<CustomerId, Vec<Member>>,
}

impl ShardCampaigns {
    /// Adds a campaign, with those of its members who belong to this shard.
    pub fn create(&mut self, definition: &CampaignDefinition, seeds: impl IntoIterator<Item = MemberSeed>) {
        let id = definition.campaign_id.clone();
        self.windows.insert(id.clone(), Window::of(definition));
        for seed in seeds {
            self.members.entry(seed.customer_id).or_default().push(Member {
                campaign_id: id.clone(),
                group: seed.group,
                clv_at_start: seed.clv_at_start,
                p_alive_at_start: seed.p_alive_at_start,
                last_response: None,
                responded_at_ms: 0,
                engaged: false,
                orders: 0,
                revenue_minor: 0,
            });
        }
    }

    /// Freezes a campaign's results.
    pub fn close(&mut self, campaign_id: &str) {
        if let Some(window) = self.windows.get_mut(campaign_id) {
            window.closed = true;
        }
    }

    /// Whether the shard knows no campaign (the common case, checked first on the hot path).
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Checks a response before it is applied: the channel whose consent an
    /// unsubscribe withdraws, or why it is refused.
    pub fn admit_response(&self, customer: &CustomerId, campaign_id: &str) -> Result<Channel, ResponseRefusal> {
        let window =
            self.windows.get(campaign_id).ok_or_else(|| ResponseRefusal::UnknownCampaign(campaign_id.into()))?;
        let member = self.members.get(customer).and_then(|ms| ms.iter().find(|m| &*m.campaign_id == campaign_id));
        match member {
            None => Err(ResponseRefusal::NotAMember { customer: customer.clone(), campaign: campaign_id.into() }),
            Some(m) if m.group == Group::Control => {
                Err(ResponseRefusal::ControlGroup { customer: customer.clone(), campaign: campaign_id.into() })
            }
            Some(_) => Ok(window.channel),
        }
    }

    /// Records an admitted response (no effect on a closed campaign's results).
    pub fn respond(&mut self, customer: &CustomerId, campaign_id: &str, response: Response, at: Timestamp) {
        if self.windows.get(campaign_id).is_none_or(|w| w.closed) {
            return;
        }
        let Some(member) =
            self.members.get_mut(customer).and_then(|ms| ms.iter_mut().find(|m| &*m.campaign_id == campaign_id))
        else {
            return;
        };
        member.engaged |= response.engaged();
        if member.last_response.is_none() || member.responded_at_ms <= at.millis() {
            member.last_response = Some(response);
            member.responded_at_ms = at.millis();
        }
    }

    /// Attributes a purchase (`orders` 1) or refund (`orders` 0, negative
    /// revenue) to every open campaign whose window holds its time.
    pub fn attribute(&mut self, customer: &CustomerId, at: Timestamp, orders: u32, revenue_minor: i64) {
        let Some(memberships) = self.members.get_mut(customer) else { return };
        for member in memberships {
            if self.windows.get(&member.campaign_id).is_some_and(|w| w.counts(at)) {
                member.orders = member.orders.saturating_add(orders);
                member.revenue_minor = member.revenue_minor.saturating_add(revenue_minor);
            }
        }
    }

    /// Removes a customer from every campaign (erasure).
    pub fn remove(&mut self, customer: &CustomerId) {
        self.members.remove(customer);
    }

    /// Every membership of this shard's customers.
    pub fn members(&self) -> impl Iterator<Item = (&CustomerId, &Member)> {
        self.members.iter().flat_map(|(c, ms)| ms.iter().map(move |m| (c, m)))
    }

    /// Members of this shard.
    pub fn member_count(&self) -> usize {
        self.members.values().map(Vec::len).sum()
    }

    /// Restores members kept by a snapshot (the windows come from the definitions).
    pub fn restore(
        &mut self,
        definitions: &[CampaignDefinition],
        members: impl IntoIterator<Item = (CustomerId, Member)>,
    ) {
        for d in definitions {
            self.windows.insert(d.campaign_id.clone(), Window::of(d));
        }
        for (customer, mut member) in members {
            // Share the id with the window rather than keep a copy per member.
            if let Some((id, _)) = self.windows.get_key_value(&member.campaign_id) {
                member.campaign_id = id.clone();
            }
            self.members.entry(customer).or_default().push(member);
        }
    }
}

/// Withdraws consent on `channel` as a consent event at `at` would.
pub fn unsubscribe(channel: Channel) -> Consent {
    let mut consent = Consent::default();
    match channel {
        Channel::Email => consent.email = Some(false),
        Channel::Sms => consent.sms = Some(false),
        Channel::Push => consent.push = Some(false),
    }
    consent
}

/// Whether `consent` allows contact on `channel` (only an explicit yes does).
pub fn consents(consent: &Consent, channel: Channel) -> bool {
    let given = match channel {
        Channel::Email => consent.email,
        Channel::Sms => consent.sms,
        Channel::Push => consent.push,
    };
    given == Some(true)
}

fn group_code(group: Group) -> u8 {
    match group {
        Group::Treatment => 0,
        Group::Control => 1,
    }
}

fn group_of(code: u8) -> Option<Group> {
    match code {
        0 => Some(Group::Treatment),
        1 => Some(Group::Control),
        _ => None,
    }
}

fn put_time(out: &mut Vec<u8>, at: Option<Timestamp>) {
    match at {
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.millis().to_le_bytes());
        }
        None => out.push(0),
    }
}

fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn read_opt_f64(r: &mut ByteReader<'_>) -> Option<Option<f64>> {
    match r.u8()? {
        0 => Some(None),
        1 => Some(Some(f64::from_bits(r.u64()?))),
        _ => None,
    }
}

fn read_time(r: &mut ByteReader<'_>) -> Option<Option<Timestamp>> {
    match r.u8()? {
        0 => Some(None),
        1 => Some(Some(Timestamp::from_millis(r.i64()?))),
        _ => None,
    }
}

/// Appends a definition:
/// `id str │ name str │ channel u8 │ audience_sql (u32 length + UTF-8) │
/// control_share f64 │ cost_per_contact_minor i64 │ created_at i64 │ starts_at i64 │
/// ends_at opt-i64 │ members u64 │ excluded_no_consent u64 │ closed_at opt-i64 │
/// clv_change_at_close 2 × opt-f64`.
pub fn encode_definition(d: &CampaignDefinition, out: &mut Vec<u8>) {
    put_str(out, &d.campaign_id);
    put_str(out, &d.name);
    out.push(d.channel.code());
    out.extend_from_slice(&(d.audience_sql.len() as u32).to_le_bytes());
    out.extend_from_slice(d.audience_sql.as_bytes());
    out.extend_from_slice(&d.control_share.to_le_bytes());
    for v in [d.cost_per_contact_minor, d.created_at.millis(), d.starts_at.millis()] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_time(out, d.ends_at);
    out.extend_from_slice(&d.members.to_le_bytes());
    out.extend_from_slice(&d.excluded_no_consent.to_le_bytes());
    put_time(out, d.closed_at);
    d.clv_change_at_close.iter().for_each(|v| put_opt_f64(out, *v));
}

/// Reads a definition written by [`encode_definition`].
pub fn decode_definition(r: &mut ByteReader<'_>) -> Option<CampaignDefinition> {
    let campaign_id: Arc<str> = r.str()?.into();
    let name = r.str()?.into();
    let channel = Channel::from_code(r.u8()?)?;
    let sql_len = r.u32()? as usize;
    let audience_sql = std::str::from_utf8(r.take(sql_len)?).ok()?.into();
    Some(CampaignDefinition {
        campaign_id,
        name,
        channel,
        audience_sql,
        control_share: f64::from_bits(r.u64()?),
        cost_per_contact_minor: r.i64()?,
        created_at: Timestamp::from_millis(r.i64()?),
        starts_at: Timestamp::from_millis(r.i64()?),
        ends_at: read_time(r)?,
        members: r.u64()?,
        excluded_no_consent: r.u64()?,
        closed_at: read_time(r)?,
        clv_change_at_close: [read_opt_f64(r)?, read_opt_f64(r)?],
    })
}

/// The log record's body for a new campaign: its definition, then
/// `count u64 │ count × (customer str │ group u8 │ clv_at_start f64 │ p_alive_at_start f64)`.
pub fn encode_creation(definition: &CampaignDefinition, seeds: &[MemberSeed], out: &mut Vec<u8>) {
    encode_definition(definition, out);
    out.extend_from_slice(&(seeds.len() as u64).to_le_bytes());
    for s in seeds {
        put_str(out, s.customer_id.as_str());
        out.push(group_code(s.group));
        out.extend_from_slice(&s.clv_at_start.to_le_bytes());
        out.extend_from_slice(&s.p_alive_at_start.to_le_bytes());
    }
}

/// Reads a record written by [`encode_creation`]; `None` if it is malformed
/// or its member count disagrees with its definition's.
pub fn decode_creation(bytes: &[u8]) -> Option<(CampaignDefinition, Vec<MemberSeed>)> {
    let mut r = ByteReader::new(bytes, 0);
    let definition = decode_definition(&mut r)?;
    let count = r.u64()?;
    if count != definition.members {
        return None;
    }
    let mut seeds = Vec::with_capacity((count as usize).min(bytes.len() / 19));
    for _ in 0..count {
        seeds.push(MemberSeed {
            customer_id: CustomerId::new(r.str()?).ok()?,
            group: group_of(r.u8()?)?,
            clv_at_start: f64::from_bits(r.u64()?),
            p_alive_at_start: f64::from_bits(r.u64()?),
        });
    }
    (r.position() == bytes.len()).then_some((definition, seeds))
}

/// A campaign's close: when, and the CLV changes it froze.
#[derive(Clone, Debug, PartialEq)]
pub struct Close {
    /// The campaign.
    pub campaign_id: Arc<str>,
    /// When it was closed.
    pub closed_at: Timestamp,
    /// The groups' mean CLV change (treatment, control) at the close.
    pub clv_change: [Option<f64>; 2],
}

/// The log record's body for a close: `id str │ closed_at i64 │ clv_change 2 × opt-f64`.
pub fn encode_close(close: &Close, out: &mut Vec<u8>) {
    put_str(out, &close.campaign_id);
    out.extend_from_slice(&close.closed_at.millis().to_le_bytes());
    close.clv_change.iter().for_each(|v| put_opt_f64(out, *v));
}

/// Reads a record written by [`encode_close`].
pub fn decode_close(bytes: &[u8]) -> Option<Close> {
    let mut r = ByteReader::new(bytes, 0);
    let close = Close {
        campaign_id: r.str()?.into(),
        closed_at: Timestamp::from_millis(r.i64()?),
        clv_change: [read_opt_f64(&mut r)?, read_opt_f64(&mut r)?],
    };
    (r.position() == bytes.len()).then_some(close)
}

/// A snapshot's campaigns: `definitions u32 │ definitions… │ members u64 │
/// members × (customer str │ campaign str │ group u8 │ clv f64 │ p_alive f64 │
/// last_response opt-str │ responded_at i64 │ engaged u8 │ orders u32 │ revenue_minor i64)`.
pub fn encode_snapshot(definitions: &[CampaignDefinition], shards: &[Vec<(CustomerId, Member)>], out: &mut Vec<u8>) {
    out.extend_from_slice(&(definitions.len() as u32).to_le_bytes());
    for d in definitions {
        encode_definition(d, out);
    }
    let count: usize = shards.iter().map(Vec::len).sum();
    out.extend_from_slice(&(count as u64).to_le_bytes());
    for (customer, m) in shards.iter().flatten() {
        put_str(out, customer.as_str());
        put_str(out, &m.campaign_id);
        out.push(group_code(m.group));
        out.extend_from_slice(&m.clv_at_start.to_le_bytes());
        out.extend_from_slice(&m.p_alive_at_start.to_le_bytes());
        put_opt_str(out, m.last_response.map(Response::as_str));
        out.extend_from_slice(&m.responded_at_ms.to_le_bytes());
        out.push(u8::from(m.engaged));
        out.extend_from_slice(&m.orders.to_le_bytes());
        out.extend_from_slice(&m.revenue_minor.to_le_bytes());
    }
}

/// Campaigns restored from a snapshot: definitions and every membership.
pub type RestoredCampaigns = (Vec<CampaignDefinition>, Vec<(CustomerId, Member)>);

/// Reads what [`encode_snapshot`] wrote (empty bytes: no campaigns).
pub fn decode_snapshot(bytes: &[u8]) -> Option<RestoredCampaigns> {
    if bytes.is_empty() {
        return Some((Vec::new(), Vec::new()));
    }
    let mut r = ByteReader::new(bytes, 0);
    let definitions = (0..r.u32()?).map(|_| decode_definition(&mut r)).collect::<Option<Vec<_>>>()?;
    let count = r.u64()? as usize;
    let mut members = Vec::with_capacity(count.min(bytes.len() / 40));
    for _ in 0..count {
        let customer = CustomerId::new(r.str()?).ok()?;
        let campaign_id: Arc<str> = r.str()?.into();
        let group = group_of(r.u8()?)?;
        let clv_at_start = f64::from_bits(r.u64()?);
        let p_alive_at_start = f64::from_bits(r.u64()?);
        let last_response = match r.opt_str()? {
            Some(text) => Some(Response::parse(text)?),
            None => None,
        };
        members.push((
            customer,
            Member {
                campaign_id,
                group,
                clv_at_start,
                p_alive_at_start,
                last_response,
                responded_at_ms: r.i64()?,
                engaged: r.u8()? != 0,
                orders: r.u32()?,
                revenue_minor: r.i64()?,
            },
        ));
    }
    (r.position() == bytes.len()).then_some((definitions, members))
}

/// One group's row of `campaign_results`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupResult {
    /// The campaign.
    pub campaign_id: Arc<str>,
    /// Treatment or control.
    pub group: Group,
    /// Members, buyers, orders and revenue (major units) in the window.
    pub outcome: GroupOutcome,
    /// Members contacted (the treatment group; 0 for control).
    pub contacted: u64,
    /// Members who opened or clicked.
    pub responders: u64,
    /// Mean change of predicted CLV since creation (members scored now and then).
    pub clv_change: Option<f64>,
    /// Contact cost, major units (0 for control).
    pub cost: f64,
    /// Treatment against control; on the treatment row only, once both
    /// groups have two members or more.
    pub effect: Option<Effect>,
}

/// The campaign's effect, as reported on its treatment row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effect {
    /// Buyers the campaign added.
    pub incremental_conversions: Interval,
    /// Orders it added.
    pub incremental_orders: Interval,
    /// Revenue it added, major units.
    pub incremental_revenue: Interval,
    /// Margin it added, major units.
    pub incremental_margin: Interval,
    /// (incremental margin − cost) / cost, when anything was spent.
    pub roi: Option<Interval>,
    /// Treatment CLV change less control CLV change since creation.
    pub clv_change_difference: Option<f64>,
    /// Whether any of conversions, orders or revenue is significant (interval excludes 0).
    pub significant: bool,
}

/// Sums that one shard contributes to a group's result.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupSums {
    /// Window outcome.
    pub outcome: GroupOutcome,
    /// Openers and clickers.
    pub responders: u64,
    /// Σ (CLV now − CLV at creation) and how many members it covers.
    pub clv_change: (f64, u64),
}

impl GroupSums {
    /// Adds another shard's sums.
    pub fn merge(&mut self, other: &Self) {
        let (a, b) = (&mut self.outcome, &other.outcome);
        a.members += b.members;
        a.buyers += b.buyers;
        a.orders += b.orders;
        a.orders_squares += b.orders_squares;
        a.revenue += b.revenue;
        a.revenue_squares += b.revenue_squares;
        self.responders += other.responders;
        self.clv_change.0 += other.clv_change.0;
        self.clv_change.1 += other.clv_change.1;
    }
}

/// Per campaign, the (treatment, control) sums of one shard's members;
/// `clv_now` gives a member's current CLV (`None`: unscored).
pub fn shard_sums(
    campaigns: &ShardCampaigns,
    minor_per_major: f64,
    clv_now: impl Fn(&CustomerId) -> Option<f64>,
) -> HashMap<Arc<str>, [GroupSums; 2]> {
    let mut sums: HashMap<Arc<str>, [GroupSums; 2]> = HashMap::new();
    for (customer, m) in campaigns.members() {
        let entry = sums.entry(m.campaign_id.clone()).or_default();
        let g = &mut entry[usize::from(group_code(m.group))];
        g.outcome.add_member(u64::from(m.orders), m.revenue_minor as f64 / minor_per_major);
        g.responders += u64::from(m.engaged);
        if let Some(now) = clv_now(customer) {
            g.clv_change.0 += now - m.clv_at_start;
            g.clv_change.1 += 1;
        }
    }
    sums
}

/// The two rows of `campaign_results` of one campaign from its members' sums.
pub fn results(
    definition: &CampaignDefinition,
    sums: &[GroupSums; 2],
    margin: f64,
    minor_per_major: f64,
) -> [GroupResult; 2] {
    let [treatment, control] = sums;
    let cost_per_contact = definition.cost_per_contact_minor as f64 / minor_per_major;
    let contacted = treatment.outcome.members;
    let live_change = |s: &GroupSums| (s.clv_change.1 > 0).then(|| s.clv_change.0 / s.clv_change.1 as f64);
    let changes = match definition.closed_at {
        Some(_) => definition.clv_change_at_close,
        None => [live_change(treatment), live_change(control)],
    };
    let economics = CampaignEconomics { margin, cost_per_contact, contacted };
    let effect = uplift(&treatment.outcome, &control.outcome, &economics).map(|u| Effect {
        incremental_conversions: u.incremental_conversions,
        incremental_orders: u.incremental_orders,
        incremental_revenue: u.incremental_revenue,
        incremental_margin: u.incremental_margin,
        roi: u.roi,
        clv_change_difference: changes[0].zip(changes[1]).map(|(t, c)| t - c),
        significant: u.incremental_conversions.excludes_zero()
            || u.incremental_orders.excludes_zero()
            || u.incremental_revenue.excludes_zero(),
    });
    let row = |group: Group, s: &GroupSums, contacted: u64, effect: Option<Effect>| GroupResult {
        campaign_id: definition.campaign_id.clone(),
        group,
        outcome: s.outcome,
        contacted,
        responders: s.responders,
        clv_change: changes[usize::from(group_code(group))],
        cost: cost_per_contact * contacted as f64,
        effect,
    };
    [row(Group::Treatment, treatment, contacted, effect), row(Group::Control, control, 0, None)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> CampaignDefinition {
        CampaignDefinition {
            campaign_id: "winback".into(),
            name: "Win back".into(),
            channel: Channel::Email,
            audience_sql: "SELECT customer_id FROM customers".into(),
            control_share: 0.25,
            cost_per_contact_minor: 5,
            created_at: Timestamp::from_millis(1_000),
            starts_at: Timestamp::from_millis(2_000),
            ends_at: Some(Timestamp::from_millis(10_000)),
            members: 2,
            excluded_no_consent: 1,
            closed_at: None,
            clv_change_at_close: [None, Some(-2.5)],
        }
    }

    fn seeds() -> Vec<MemberSeed> {
        ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, c)| MemberSeed {
                customer_id: CustomerId::new(c).unwrap(),
                group: if i == 0 { Group::Treatment } else { Group::Control },
                clv_at_start: 10.5 * i as f64,
                p_alive_at_start: 0.5,
            })
            .collect()
    }

    #[test]
    fn a_creation_record_round_trips_and_a_wrong_count_is_refused() {
        let (d, s) = (definition(), seeds());
        let mut bytes = Vec::new();
        encode_creation(&d, &s, &mut bytes);
        assert_eq!(decode_creation(&bytes), Some((d.clone(), s.clone())));
        assert_eq!(decode_creation(&bytes[..bytes.len() - 1]), None);
        let mut wrong = Vec::new();
        encode_creation(&CampaignDefinition { members: 3, ..d }, &s, &mut wrong);
        assert_eq!(decode_creation(&wrong), None);
    }

    #[test]
    fn purchases_count_only_inside_the_window_and_before_the_close() {
        let d = definition();
        let mut shard = ShardCampaigns::default();
        shard.create(&d, seeds());
        let a = CustomerId::new("a").unwrap();
        shard.attribute(&a, Timestamp::from_millis(1_999), 1, 100);
        shard.attribute(&a, Timestamp::from_millis(2_000), 1, 250);
        shard.attribute(&a, Timestamp::from_millis(9_000), 0, -50);
        shard.attribute(&a, Timestamp::from_millis(10_000), 1, 999);
        shard.close("winback");
        shard.attribute(&a, Timestamp::from_millis(5_000), 1, 999);
        let (_, m) = shard.members().find(|(c, _)| **c == a).unwrap();
        assert_eq!((m.orders, m.revenue_minor), (1, 200));
    }

    #[test]
    fn responses_from_non_members_and_unknown_campaigns_are_refused_with_a_reason() {
        let mut shard = ShardCampaigns::default();
        shard.create(&definition(), seeds());
        let stranger = CustomerId::new("z").unwrap();
        let refusal = shard.admit_response(&stranger, "winback").unwrap_err();
        assert!(refusal.to_string().contains("not a member"), "{refusal}");
        let refusal = shard.admit_response(&stranger, "nope").unwrap_err();
        assert!(refusal.to_string().contains("no campaign"), "{refusal}");
        let b = CustomerId::new("b").unwrap();
        let refusal = shard.admit_response(&b, "winback").unwrap_err();
        assert!(refusal.to_string().contains("control group"), "{refusal}");
        let a = CustomerId::new("a").unwrap();
        assert_eq!(shard.admit_response(&a, "winback"), Ok(Channel::Email));
        shard.respond(&a, "winback", Response::Clicked, Timestamp::from_millis(3_000));
        shard.respond(&a, "winback", Response::Delivered, Timestamp::from_millis(2_500));
        let (_, m) = shard.members().find(|(c, _)| **c == a).unwrap();
        assert_eq!((m.last_response, m.engaged), (Some(Response::Clicked), true));
    }

    #[test]
    fn erasure_removes_every_membership_and_a_snapshot_round_trips() {
        let d = definition();
        let mut shard = ShardCampaigns::default();
        shard.create(&d, seeds());
        let a = CustomerId::new("a").unwrap();
        shard.attribute(&a, Timestamp::from_millis(3_000), 1, 700);
        let members: Vec<_> = shard.members().map(|(c, m)| (c.clone(), m.clone())).collect();
        let mut bytes = Vec::new();
        encode_snapshot(std::slice::from_ref(&d), std::slice::from_ref(&members), &mut bytes);
        let (defs, back) = decode_snapshot(&bytes).unwrap();
        assert_eq!(defs, vec![d.clone()]);
        assert_eq!(back.len(), 2);
        let mut restored = ShardCampaigns::default();
        restored.restore(&defs, back);
        assert_eq!(restored.member_count(), 2);
        restored.remove(&a);
        assert!(restored.members().all(|(c, _)| *c != a));
        assert_eq!(restored.member_count(), 1);
    }

    #[test]
    fn consent_needs_an_explicit_yes_and_an_unsubscribe_withdraws_one_channel() {
        let mut consent = Consent { email: Some(true), sms: None, push: Some(false) };
        assert!(consents(&consent, Channel::Email));
        assert!(!consents(&consent, Channel::Sms) && !consents(&consent, Channel::Push));
        let off = unsubscribe(Channel::Email);
        consent.email = off.email.or(consent.email);
        assert!(!consents(&consent, Channel::Email));
        assert_eq!((off.sms, off.push), (None, None));
    }
}
