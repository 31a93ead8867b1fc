//! The whole engine (log, shards, snapshots, erasure, recovery) on a
//! simulated disk (`patron_storage::SimDisk`) that keeps only synced bytes and
//! synced directory entries at a power cut.
//!
//! A model test submits purchases, takes snapshots, erases customers, injects
//! I/O errors, kills the process at any step and cuts the power. After every
//! restart it checks, customer by customer:
//! - recovery opens the directory (crashes and errors alone made it);
//! - every acknowledged purchase is applied, and none twice: a customer's
//!   orders lie between the acknowledged purchases and all purchases sent
//!   since their last acknowledged erasure;
//! - a customer whose erasure was acknowledged, and who bought nothing since,
//!   does not come back, and no file left on the disk names them;
//! - an acknowledged campaign is there with exactly its members (less those
//!   erased since), and an unacknowledged one is there whole or not at all.
//!
//! 500 cases by default (each opens several engines); `PATRON_SIM_CASES=N`
//! runs N/4 when that is more, as the log's model test runs N.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use patron_campaign::{Channel, Group};
use patron_model::{CurrencyTable, CustomerId, Event, EventSink, Validator};
use patron_state::campaigns::{CampaignDefinition, MemberSeed};
use patron_state::{Engine, EngineConfig};
use patron_storage::{Fault, SimDisk, Storage};
use patron_wal::WalOptions;
use proptest::prelude::*;

const CUSTOMERS: u32 = 6;

#[derive(Clone, Debug)]
enum Op {
    /// Purchases by the given customers, in one submission.
    Submit(Vec<u32>),
    Snapshot,
    Erase(u32),
    /// A campaign with these members.
    Campaign(Vec<u32>),
    Fail {
        n: u64,
        no_space: bool,
    },
    DieAfter(u64),
    PowerCut,
    ProcessCrash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop::collection::vec(0..CUSTOMERS, 1..12).prop_map(Op::Submit),
        2 => Just(Op::Snapshot),
        2 => (0..CUSTOMERS).prop_map(Op::Erase),
        2 => prop::collection::btree_set(0..CUSTOMERS, 1..5).prop_map(|m| Op::Campaign(m.into_iter().collect())),
        1 => (0u64..20, any::<bool>()).prop_map(|(n, no_space)| Op::Fail { n, no_space }),
        1 => (0u64..40).prop_map(Op::DieAfter),
        2 => Just(Op::PowerCut),
        1 => Just(Op::ProcessCrash),
    ]
}

/// What the model knows of one customer since their last acknowledged erasure.
#[derive(Clone, Debug, Default)]
struct Expected {
    acknowledged: u64,
    sent: u64,
    /// An erasure was attempted and not acknowledged: it may or may not have happened.
    uncertain: bool,
    /// Named by a campaign since the last acknowledged erasure (so the log may name them).
    in_campaign: bool,
}

/// What the model knows of one campaign.
#[derive(Clone, Debug, Default)]
struct ExpectedCampaign {
    members: BTreeSet<u32>,
    /// Members whose erasure was attempted and not acknowledged.
    uncertain: BTreeSet<u32>,
    acknowledged: bool,
}

struct Model {
    disk: SimDisk,
    engine: Option<Engine>,
    customers: BTreeMap<u32, Expected>,
    campaigns: BTreeMap<String, ExpectedCampaign>,
    next_event: u64,
    validator: Validator,
}

fn customer_id(c: u32) -> CustomerId {
    CustomerId::new(&format!("customer-{c}")).expect("a valid id")
}

impl Model {
    fn config(&self) -> EngineConfig {
        EngineConfig {
            shards: 2,
            storage: Arc::new(self.disk.clone()),
            wal: WalOptions { segment_bytes: 8192, lock_wait: Duration::from_millis(50), ..WalOptions::default() },
            ..EngineConfig::new(PathBuf::from("/data"))
        }
    }

    fn open(&mut self) -> Result<(), TestCaseError> {
        let engine = match Engine::open(self.config()) {
            Ok((engine, _)) => engine,
            Err(e) => return Err(TestCaseError::fail(format!("recovery refused a directory a crash made: {e}"))),
        };
        for (&c, expected) in &self.customers {
            if expected.uncertain {
                continue;
            }
            let orders = engine.customer(&customer_id(c)).map_or(0, |r| r.orders);
            prop_assert!(
                expected.acknowledged <= orders && orders <= expected.sent,
                "customer {}: {} orders, expected {} acknowledged of {} sent",
                c,
                orders,
                expected.acknowledged,
                expected.sent
            );
        }
        for (id, expected) in &self.campaigns {
            let found = engine.campaign(id);
            prop_assert!(found.is_some() || !expected.acknowledged, "acknowledged campaign {} is lost", id);
            if found.is_none() {
                continue;
            }
            let members: BTreeSet<u32> = engine
                .with_books(|b| {
                    b.campaigns()
                        .members()
                        .filter(|(_, m)| &*m.campaign_id == id.as_str())
                        .filter_map(|(c, _)| c.as_str().strip_prefix("customer-")?.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .concat()
                .into_iter()
                .filter(|c| !expected.uncertain.contains(c))
                .collect();
            let want: BTreeSet<u32> = expected.members.difference(&expected.uncertain).copied().collect();
            prop_assert_eq!(members, want, "campaign {} is whole, less its erased members", id);
        }
        self.engine = Some(engine);
        Ok(())
    }

    fn restart(&mut self, power_cut: bool) -> Result<(), TestCaseError> {
        self.engine = None;
        if power_cut {
            self.disk.power_loss();
        } else {
            self.disk.process_crash();
        }
        self.open()
    }

    fn purchase(&mut self, c: u32) -> Event {
        self.next_event += 1;
        let json = format!(
            r#"{{"type":"purchase","event_id":"e{}","customer_id":"customer-{c}","timestamp":"2025-03-01T10:00:00Z","revenue":"1.00"}}"#,
            self.next_event
        );
        self.validator.decode(json.as_bytes()).expect("a valid purchase")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if self.engine.is_none() {
            return Ok(());
        }
        match op {
            Op::Submit(buyers) => {
                let events: Vec<Event> = buyers.iter().map(|&c| self.purchase(c)).collect();
                for &c in buyers {
                    self.customers.entry(c).or_default().sent += 1;
                }
                let Some(engine) = &self.engine else { return Ok(()) };
                if let Ok(outcome) = engine.submit(events) {
                    prop_assert_eq!(outcome.accepted, buyers.len(), "fresh event ids are all accepted");
                    for &c in buyers {
                        self.customers.entry(c).or_default().acknowledged += 1;
                    }
                }
            }
            Op::Snapshot => {
                if let Some(engine) = &self.engine {
                    let _ = engine.snapshot();
                }
            }
            Op::Erase(c) => {
                let Some(engine) = &self.engine else { return Ok(()) };
                let erased = engine.erase(&customer_id(*c));
                let expected = self.customers.entry(*c).or_default();
                match erased {
                    Ok(_) => *expected = Expected::default(),
                    Err(_) => expected.uncertain = true,
                }
                for campaign in self.campaigns.values_mut() {
                    if erased.is_ok() {
                        campaign.members.remove(c);
                        campaign.uncertain.remove(c);
                    } else if campaign.members.contains(c) {
                        campaign.uncertain.insert(*c);
                    }
                }
            }
            Op::Campaign(members) => {
                let Some(engine) = &self.engine else { return Ok(()) };
                self.next_event += 1;
                let id = format!("campaign-{}", self.next_event);
                let definition = campaign(&id, members.len());
                let seeds = members
                    .iter()
                    .map(|&c| MemberSeed {
                        customer_id: customer_id(c),
                        group: Group::Treatment,
                        clv_at_start: 0.0,
                        p_alive_at_start: 0.0,
                    })
                    .collect();
                for &c in members {
                    self.customers.entry(c).or_default().in_campaign = true;
                }
                let acknowledged = engine.create_campaign(definition, seeds).is_ok();
                let members = members.iter().copied().collect();
                self.campaigns.insert(id, ExpectedCampaign { members, uncertain: BTreeSet::new(), acknowledged });
            }
            Op::Fail { n, no_space } => self.disk.fail_nth(*n, if *no_space { Fault::NoSpace } else { Fault::Io }),
            Op::DieAfter(n) => self.disk.die_after(*n),
            Op::PowerCut => self.restart(true)?,
            Op::ProcessCrash => self.restart(false)?,
        }
        Ok(())
    }
}

fn campaign(id: &str, members: usize) -> CampaignDefinition {
    let at = patron_model::Timestamp::from_millis(1_740_000_000_000);
    CampaignDefinition {
        campaign_id: id.into(),
        name: id.into(),
        channel: Channel::Email,
        audience_sql: "SELECT customer_id FROM customers".into(),
        control_share: 0.1,
        cost_per_contact_minor: 5,
        created_at: at,
        starts_at: at,
        ends_at: None,
        members: members as u64,
        excluded_no_consent: 0,
        closed_at: None,
        clv_change_at_close: [None, None],
    }
}

fn run(seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let validator = Validator { max_ahead_ms: i64::MAX / 4, ..Validator::new(CurrencyTable::default()) };
    let mut model = Model {
        disk: SimDisk::new(seed),
        engine: None,
        customers: BTreeMap::new(),
        campaigns: BTreeMap::new(),
        next_event: 0,
        validator,
    };
    model.open()?;
    for op in ops {
        model.apply(op)?;
    }
    model.restart(true)?;
    // Erased customers with nothing sent since are gone, and stay gone.
    let gone: BTreeSet<u32> = model
        .customers
        .iter()
        .filter(|(_, e)| !e.uncertain && e.sent == 0 && !e.in_campaign)
        .map(|(&c, _)| c)
        .collect();
    if let Some(engine) = &model.engine {
        for &c in &gone {
            prop_assert!(engine.customer(&customer_id(c)).is_none(), "erased customer {} came back", c);
        }
    }
    // Nor is any of their data left on the disk: no log segment, snapshot or
    // quarantined copy names them.
    for dir in ["wal", "snapshots", "quarantine"] {
        let dir = PathBuf::from("/data").join(dir);
        for path in model.disk.list(&dir).unwrap_or_default() {
            let bytes = model.disk.read(&path).unwrap_or_default();
            for &c in &gone {
                let needle = format!("customer-{c}");
                prop_assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "erased customer {} is still in {}",
                    c,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PATRON_SIM_CASES").ok().and_then(|v| v.parse().ok()).map_or(500, |n: u32| (n / 4).max(500))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_events_and_erasures_survive_crashes_and_power_cuts(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(seed, &ops)?;
    }
}

#[test]
fn a_campaign_survives_power_cuts_whole_and_loses_its_erased_member() {
    let ops = vec![
        Op::Submit(vec![0, 1, 2]),
        Op::Campaign(vec![0, 1, 2]),
        Op::PowerCut,
        Op::Snapshot,
        Op::Erase(1),
        Op::PowerCut,
        Op::Campaign(vec![2, 3]),
        Op::ProcessCrash,
    ];
    for seed in 0..20 {
        run(seed, &ops).unwrap();
    }
}

#[test]
fn purchases_snapshots_and_an_erasure_survive_a_power_cut() {
    let ops = vec![
        Op::Submit(vec![0, 1, 2, 0]),
        Op::Snapshot,
        Op::Submit(vec![1, 2, 3]),
        Op::Erase(2),
        Op::Submit(vec![0, 3]),
        Op::PowerCut,
        Op::Submit(vec![4]),
    ];
    for seed in 0..5 {
        run(seed, &ops).unwrap();
    }
}

/// Found by this test's disk model: erasure removed the snapshots that held
/// the customer without syncing their directory, so after a power cut the
/// old snapshot, and the customer's data in it, was back on the disk.
#[test]
fn regression_an_erased_customer_stays_off_the_disk_after_a_power_cut() {
    let ops = vec![Op::Submit(vec![0, 1]), Op::Snapshot, Op::Erase(0), Op::PowerCut];
    run(1, &ops).unwrap();
}

/// Found by the model test: a snapshot that failed half-way (ENOSPC) left its
/// temporary file, which a later erasure did not remove, so the erased
/// customer's data stayed on the disk.
#[test]
fn regression_an_erasure_removes_the_temporary_file_of_a_failed_snapshot() {
    // The first snapshot fails after its temporary file got the header and a
    // block of customers; the second one syncs the directory, which makes
    // that file durable unless it was removed.
    for n in 6..12 {
        let ops = vec![
            Op::Submit(vec![0, 1, 2, 3]),
            Op::Fail { n, no_space: true },
            Op::Snapshot,
            Op::Snapshot,
            Op::Erase(0),
            Op::Erase(1),
            Op::Erase(2),
            Op::Erase(3),
            Op::PowerCut,
        ];
        run(1, &ops).unwrap();
    }
}
