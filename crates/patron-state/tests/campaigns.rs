//! Campaigns through the engine: creation and close through the log,
//! responses refused or applied, attribution, and survival across replay,
//! snapshots and erasure.

use patron_campaign::{Channel, Group, assign};
use patron_model::{Currency, CurrencyTable, CustomerId, Event, EventSink, Response, Timestamp, Validator};
use patron_state::campaigns::{CampaignDefinition, MemberSeed};
use patron_state::{Engine, EngineConfig, StateError};

const CAMPAIGN: &str = "winback-test";

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        shards: 3,
        currencies: CurrencyTable::only(Currency::from_code("EUR").unwrap()),
        ..EngineConfig::new(dir)
    }
}

fn decode(json: &str) -> Event {
    let validator = Validator {
        max_ahead_ms: i64::MAX / 4,
        ..Validator::new(CurrencyTable::only(Currency::from_code("EUR").unwrap()))
    };
    validator.decode(json.as_bytes()).unwrap()
}

fn consent(customer: usize, email: bool) -> Event {
    decode(&format!(
        r#"{{"type":"consent","event_id":"k-{customer}","customer_id":"{}","timestamp":"2026-11-01T00:00:00Z","channels":{{"email":{email}}}}}"#,
        cid(customer)
    ))
}

fn purchase(id: &str, customer: usize, at: &str, revenue: &str) -> Event {
    decode(&format!(
        r#"{{"type":"purchase","event_id":"{id}","customer_id":"{}","timestamp":"{at}","revenue":"{revenue}"}}"#,
        cid(customer)
    ))
}

fn response(id: &str, customer: usize, campaign: &str, response: &str) -> Event {
    decode(&format!(
        r#"{{"type":"campaign_response","event_id":"{id}","customer_id":"{}","timestamp":"2026-12-02T00:00:00Z","campaign_id":"{campaign}","response":"{response}"}}"#,
        cid(customer)
    ))
}

/// Customer ids long enough that a byte search cannot find one by chance.
fn cid(customer: usize) -> String {
    format!("campaign-customer-{customer:04}")
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

/// Forty customers, the even ones consenting by email; the campaign takes the consenting ones.
fn create(engine: &Engine) -> CampaignDefinition {
    let mut setup: Vec<Event> = (0..40).map(|c| consent(c, c % 2 == 0)).collect();
    setup.extend((0..40).map(|c| purchase(&format!("before-{c}"), c, "2026-11-02T00:00:00Z", "10")));
    assert_eq!(engine.submit(setup).unwrap().accepted, 80);
    let seeds: Vec<MemberSeed> = (0..40)
        .step_by(2)
        .map(|c| {
            let id = cid(c);
            MemberSeed {
                group: assign(CAMPAIGN, &id, 0.5),
                customer_id: CustomerId::new(&id).unwrap(),
                clv_at_start: 1.0,
                p_alive_at_start: 0.5,
            }
        })
        .collect();
    let definition = CampaignDefinition {
        campaign_id: CAMPAIGN.into(),
        name: "Win back".into(),
        channel: Channel::Email,
        audience_sql: "SELECT customer_id FROM customers".into(),
        control_share: 0.5,
        cost_per_contact_minor: 5,
        created_at: at("2026-12-01T00:00:00Z"),
        starts_at: at("2026-12-01T00:00:00Z"),
        ends_at: Some(at("2027-01-01T00:00:00Z")),
        members: 0,
        excluded_no_consent: 20,
        closed_at: None,
        clv_change_at_close: [None, None],
    };
    engine.create_campaign(definition, seeds).unwrap()
}

/// The `n`-th treatment member (members are the even customers).
fn treated(n: usize) -> usize {
    (0..40).step_by(2).filter(|c| assign(CAMPAIGN, &cid(*c), 0.5) == Group::Treatment).nth(n).unwrap()
}

/// The first control member.
fn held_out() -> usize {
    (0..40).step_by(2).find(|c| assign(CAMPAIGN, &cid(*c), 0.5) == Group::Control).unwrap()
}

fn results(engine: &Engine) -> (u64, u64, u64) {
    let all = engine.campaign_results().unwrap();
    let (_, [treatment, control]) = all.iter().find(|(d, _)| &*d.campaign_id == CAMPAIGN).unwrap();
    (
        treatment.outcome.orders + control.outcome.orders,
        treatment.responders + control.responders,
        treatment.outcome.members + control.outcome.members,
    )
}

#[test]
fn a_campaign_survives_replay_and_snapshots_and_attributes_only_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    let created = create(&engine);
    assert_eq!(created.members, 20);
    let again = engine.create_campaign(created.clone(), Vec::new()).unwrap_err();
    assert!(matches!(again, StateError::CampaignExists(_)), "{again}");
    let (first, second) = (treated(0), treated(1));
    let events = vec![
        purchase("in-window", first, "2026-12-05T00:00:00Z", "30"),
        purchase("before-window", second, "2026-11-20T00:00:00Z", "30"),
        purchase("not-a-member", 1, "2026-12-05T00:00:00Z", "30"),
        response("r-1", first, CAMPAIGN, "clicked"),
    ];
    let outcome = engine.submit(events).unwrap();
    assert_eq!((outcome.accepted, outcome.refused.len()), (4, 0));
    assert_eq!(results(&engine), (1, 1, 20));
    engine.shutdown();
    // No snapshot yet: the restart replays the campaign record from the log.
    assert!(std::fs::read_dir(dir.path().join("snapshots")).map_or(true, |mut d| d.next().is_none()));
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.campaign(CAMPAIGN).unwrap(), created);
    assert_eq!(results(&engine), (1, 1, 20), "the log replays the campaign before the purchase");
    engine.snapshot().unwrap();
    engine.close_campaign(CAMPAIGN, at("2026-12-10T00:00:00Z")).unwrap();
    let late = engine.submit(vec![purchase("after-close", first, "2026-12-06T00:00:00Z", "30")]).unwrap();
    assert_eq!(late.accepted, 1);
    assert_eq!(results(&engine), (1, 1, 20), "closing froze the results");
    engine.shutdown();
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    let restored = engine.campaign(CAMPAIGN).unwrap();
    assert_eq!(restored.closed_at, Some(at("2026-12-10T00:00:00Z")));
    assert_eq!(results(&engine), (1, 1, 20), "the snapshot kept members, results and the close");
}

#[test]
fn responses_from_outsiders_are_refused_and_an_unsubscribe_withdraws_consent() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    create(&engine);
    let unsubscriber = treated(0);
    let outcome = engine
        .submit(vec![
            response("r-outsider", 1, CAMPAIGN, "opened"),
            response("r-unknown", unsubscriber, "no-such-campaign", "opened"),
            response("r-control", held_out(), CAMPAIGN, "opened"),
            response("r-unsub", unsubscriber, CAMPAIGN, "unsubscribed"),
        ])
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    let reasons: Vec<(usize, &str)> = outcome.refused.iter().map(|r| (r.index, r.reason.as_str())).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].0 == 0 && reasons[0].1.contains("not a member"), "{reasons:?}");
    assert!(reasons[1].0 == 1 && reasons[1].1.contains("no campaign"), "{reasons:?}");
    assert!(reasons[2].0 == 2 && reasons[2].1.contains("control group"), "{reasons:?}");
    let customer = engine.customer(&CustomerId::new(&cid(unsubscriber)).unwrap()).unwrap();
    assert_eq!(customer.consent.email, Some(false), "unsubscribed withdraws email consent");
    let last = engine.with_books(|b| {
        b.campaigns().members().find(|(c, _)| c.as_str() == cid(unsubscriber)).map(|(_, m)| m.last_response)
    });
    assert_eq!(last.unwrap().into_iter().flatten().next(), Some(Some(Response::Unsubscribed)));
}

#[test]
fn erasure_removes_a_member_from_every_campaign_and_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    create(&engine);
    let member = treated(0);
    let id = CustomerId::new(&cid(member)).unwrap();
    assert!(engine.erase(&id).unwrap());
    let still = engine.with_books(|b| b.campaigns().members().any(|(c, _)| *c == id)).unwrap();
    assert!(still.iter().all(|found| !found));
    assert_eq!(results(&engine).2, 19);
    engine.shutdown();
    let needle = cid(member);
    // Every file of the data directory, byte for byte.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{} still holds {needle}", path.display());
        }
    }
    let (engine, _) = Engine::open(config(dir.path())).unwrap();
    assert_eq!(results(&engine).2, 19, "the erased member stays gone after a restart");
}
