//! Nodes in one process against a real `nats-server`: ownership moves as
//! nodes join and leave, and every published event is applied exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_cluster::fleet_model;
use patron_cluster::node::lease_map;
use patron_cluster::{Broker, BrokerOptions, Node, NodeOptions, encode_batches, partition_of};
use patron_model::{CurrencyTable, CustomerId, Event, EventSink, Validator};
use patron_state::EngineConfig;
use patron_tests::nats::NatsServer;
use tokio::sync::watch;

const PARTITIONS: u32 = 8;
const LEASE: Duration = Duration::from_secs(3);

fn options(url: &str, name: &str) -> BrokerOptions {
    BrokerOptions { url: url.into(), replicas: 1, lease_time: LEASE, connection_name: name.into() }
}

fn node_options(id: &str, dir: &Path) -> NodeOptions {
    NodeOptions {
        node_id: id.into(),
        partitions: PARTITIONS,
        data_dir: dir.join(id),
        http_address: format!("http://{id}.invalid"),
        lease_time: LEASE,
        snapshot_every: Duration::from_millis(500),
        engine: Arc::new(|dir: &Path| {
            let mut config = EngineConfig::new(dir);
            config.shards = 1;
            config
        }),
        on_snapshot: None,
    }
}

struct Running {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(url: &str, id: &str, dir: &Path) -> Running {
    let broker = Broker::connect(&options(url, id)).await.expect("node connects");
    let node = Node::new(broker, node_options(id, dir));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(node.clone().run(stop_rx));
    Running { node, stop, task }
}

fn events(count: usize, customers: usize) -> Vec<Event> {
    let validator = Validator::new(CurrencyTable::default());
    (0..count)
        .map(|i| {
            let json = format!(
                r#"{{"type":"purchase","event_id":"o{i}","customer_id":"c{}","timestamp":"2025-01-{:02}T00:00:00Z","revenue":"5"}}"#,
                i % customers,
                1 + i % 28
            );
            validator.decode(json.as_bytes()).expect("a valid event")
        })
        .collect()
}

async fn publish(broker: &Broker, events: &[Event]) -> patron_cluster::PublishSummary {
    let mut per_partition: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    for e in events {
        per_partition.entry(partition_of(e.customer_id.as_str(), PARTITIONS)).or_default().push(e.clone());
    }
    let batches = per_partition.iter().flat_map(|(p, events)| encode_batches(*p, events)).collect();
    broker.publish(batches).await.expect("the broker acknowledges")
}

/// Orders summed over every customer the nodes hold, and how many partitions they hold restored.
fn fleet_orders(nodes: &[&Running], customers: usize) -> (u64, usize) {
    let mut total = 0;
    let mut held = 0;
    for running in nodes {
        for (_, engine) in running.node.engines() {
            held += 1;
            for c in 0..customers {
                if let Some(record) = engine.customer(&CustomerId::new(&format!("c{c}")).unwrap()) {
                    total += record.summary.orders;
                }
            }
        }
    }
    (total, held)
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_nodes_and_every_event_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("broker"));
    let n1 = start(&server.url, "n1", dir.path()).await;
    let n2 = start(&server.url, "n2", dir.path()).await;
    let producer = Broker::connect(&options(&server.url, "producer")).await.unwrap();

    let first = events(2_000, 300);
    let summary = publish(&producer, &first).await;
    assert_eq!((summary.events, summary.duplicate_events), (2_000, 0));
    // n1 came first and took every partition; n2's share moves to it.
    wait_for("both nodes to hold partitions and apply 2000 orders", Duration::from_secs(30), || {
        fleet_orders(&[&n1, &n2], 300) == (2_000, 8) && !n1.node.engines().is_empty() && !n2.node.engines().is_empty()
    })
    .await;

    // A producer's retry is dropped by the broker.
    let again = publish(&producer, &first).await;
    assert_eq!((again.events, again.duplicate_events), (0, 2_000));

    // n2 leaves: it hands its partitions over after a last snapshot.
    n2.stop.send(true).unwrap();
    n2.task.await.unwrap();
    wait_for("n1 to hold every partition", Duration::from_secs(30), || fleet_orders(&[&n1], 300) == (2_000, 8)).await;

    // More events, then a third node joins and takes its share.
    let second: Vec<Event> = events(3_000, 300).split_off(2_000);
    assert_eq!(publish(&producer, &second).await.events, 1_000);
    let n3 = start(&server.url, "n3", dir.path()).await;
    wait_for("n1 and n3 to share 3000 orders", Duration::from_secs(30), || {
        fleet_orders(&[&n1, &n3], 300) == (3_000, 8) && !n3.node.engines().is_empty()
    })
    .await;
    let map = lease_map(n1.node.broker(), PARTITIONS).await.unwrap();
    assert_eq!(map.len(), 8);
    assert!(map.values().all(|owner| owner == "n1" || owner == "n3"), "{map:?}");
    for running in [n1, n3] {
        running.stop.send(true).unwrap();
        running.task.await.unwrap();
    }
}

/// Two nodes with CDNOW split over their partitions fit one model for the
/// fleet: the parameters of a single engine holding every customer, bit for
/// bit, and every customer's scores and labels as that engine gives them.
/// A partition that moves afterwards keeps the fleet's models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_fits_one_model_on_every_partition_as_one_engine_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("broker"));
    let n1 = start(&server.url, "n1", dir.path()).await;
    let n2 = start(&server.url, "n2", dir.path()).await;
    let rounds: Vec<_> = [&n1, &n2]
        .iter()
        .map(|r| {
            let (stop, stop_rx) = watch::channel(false);
            (stop, tokio::spawn(fleet_model::run(r.node.clone(), Duration::from_secs(3600), stop_rx)))
        })
        .collect();
    let validator = Validator::new(CurrencyTable::only(patron_model::Currency::from_code("USD").unwrap()));
    let cdnow: Vec<Event> = patron_tests::cdnow_calibration()
        .1
        .iter()
        .map(|line| validator.decode(line.as_bytes()).expect("a CDNOW event"))
        .collect();
    let producer = Broker::connect(&options(&server.url, "producer")).await.unwrap();
    for chunk in cdnow.chunks(5_000) {
        publish(&producer, chunk).await;
    }
    let customers: std::collections::BTreeSet<CustomerId> = cdnow.iter().map(|e| e.customer_id.clone()).collect();
    let nodes = [n1.node.clone(), n2.node.clone()];
    let held = |id: &CustomerId| {
        let partition = partition_of(id.as_str(), PARTITIONS);
        nodes.iter().find_map(|node| node.engine(partition))
    };
    let applied = || customers.iter().filter_map(|id| Some(held(id)?.customer(id)?.summary.orders)).sum::<u64>();
    wait_for("both nodes to apply every CDNOW purchase", Duration::from_secs(60), || {
        applied() == cdnow.len() as u64 && !n1.node.engines().is_empty() && !n2.node.engines().is_empty()
    })
    .await;

    let reference_dir = tempfile::tempdir().unwrap();
    let (reference, _) = patron_state::Engine::open(node_options("reference", reference_dir.path()).engine.as_ref()(
        reference_dir.path(),
    ))
    .unwrap();
    reference.submit(cdnow.clone()).unwrap();
    let expected = reference.refit().unwrap();

    let epoch = fleet_model::start_round(&n1.node).await.unwrap();
    let round = fleet_model::wait_for_round(&n1.node, epoch, Duration::from_secs(60)).await.unwrap().expect("a round");
    assert_eq!(round.phase, fleet_model::Phase::Done, "{round:?}");
    assert_eq!(round.buyers, Some(customers.len() as u64));
    let fitted_at = expected.fits.as_ref().unwrap().fitted_at;
    assert_eq!(round.now_ms, Some(fitted_at.millis()), "the fleet's now is its latest event");
    let installed = || {
        nodes.iter().flat_map(|node| node.engines()).all(|(_, e)| {
            e.models().fits.as_ref().is_some_and(|f| f.fitted_at == fitted_at) && e.now() == Some(fitted_at)
        })
    };
    wait_for("every partition to serve the fleet's models", Duration::from_secs(30), installed).await;

    let compare = |what: &str| {
        let (_, engine) = n1.node.engines().into_iter().next().unwrap();
        let fleet = engine.models();
        let (fleet, one) = (fleet.fits.as_ref().unwrap(), expected.fits.as_ref().unwrap());
        for ((model, fleet), (_, one)) in fleet.purchase.iter().zip(&one.purchase) {
            assert_eq!(fleet.as_ref().unwrap().params, one.as_ref().unwrap().params, "{model} {what}");
        }
        assert_eq!(fleet.gamma_gamma.as_ref().unwrap().params, one.gamma_gamma.as_ref().unwrap().params, "{what}");
        for id in &customers {
            let (mine, one) = (held(id).unwrap().customer(id).unwrap(), reference.customer(id).unwrap());
            assert_eq!((mine.scores, mine.segments), (one.scores, one.segments), "customer {id:?} {what}");
        }
    };
    compare("after the round");

    // n2 leaves; n1 takes its partitions from their snapshots and installs
    // the fleet's models into them.
    n2.stop.send(true).unwrap();
    n2.task.await.unwrap();
    wait_for("n1 to hold every partition", Duration::from_secs(30), || n1.node.engines().len() == PARTITIONS as usize)
        .await;
    wait_for("the moved partitions to serve the fleet's models", Duration::from_secs(30), installed).await;
    compare("after a move");
    for (stop, task) in rounds {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    n1.stop.send(true).unwrap();
    n1.task.await.unwrap();
}
