//! Nodes in one process against a real `nats-server`: ownership moves as
//! nodes join and leave, and every published event is applied exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_cluster::node::lease_map;
use patron_cluster::{Broker, BrokerOptions, Node, NodeOptions, encode_batches, partition_of};
use patron_model::{CurrencyTable, CustomerId, Event, Validator};
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
