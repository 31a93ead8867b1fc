#!/usr/bin/env python3
"""Cluster mode's capacity on this machine: 1, 2 and 3 release `patron serve
--nats` nodes on one `nats-server` (sync_interval: always), driven by
`patron loadgen` in a closed loop through the first node for DURATION.

For each fleet size it measures
- events/s acknowledged (durable in the broker) during the load;
- events/s applied: accepted events over the sending time plus the time
  after it until every partition's lag is 0;
- CPU seconds of the broker and of the nodes (from /proc), per million events,
  and the broker's share of the CPU the cluster used.

Everything shares 2 cores, so more nodes cannot add throughput here; the
per-event costs can be carried to a fleet of separate machines, which the
report does on paper. Writes bench-results/cluster/<stamp>.json and .md.

    benches/cluster_capacity.py [--duration 20s] [--customers 200000] [--partitions 12]
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def start_broker(work):
    port = free_port()
    conf = work / "nats.conf"
    conf.write_text(
        f'listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: "{work / "js"}"\n  sync_interval: always\n}}\n'
    )
    nats = ROOT / ".venv/bin/nats-server"
    proc = subprocess.Popen([str(nats), "-c", str(conf)], stderr=open(work / "nats.log", "w"))
    time.sleep(1.0)
    return proc, f"nats://127.0.0.1:{port}"


def start_node(patron, nats, node_id, work, partitions, extra=(), lease_time="10s"):
    out = open(work / f"{node_id}.out", "w")
    proc = subprocess.Popen(
        [patron, "serve", "--nats", nats, "--node-id", node_id, "--partitions", str(partitions),
         "--data-dir", str(work / node_id), "--http", "127.0.0.1:0", "--refit-interval", "1h",
         "--snapshot-interval", "1h", "--lease-time", lease_time, *extra],
        stdout=out, stderr=open(work / f"{node_id}.log", "w"))
    for _ in range(600):
        text = (work / f"{node_id}.out").read_text()
        if "listening on " in text:
            return proc, text.split("listening on ")[1].split()[0]
        time.sleep(0.1)
    raise SystemExit(f"node {node_id} did not start; see {work / (node_id + '.log')}")


def release_build():
    """Builds the release `patron`; returns its path, the commit, the host and the results' stamp."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/patron-target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "patron-server"], cwd=ROOT, check=True)
    patron = str(target / "release/patron")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    host = platform.node().split(".")[0]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{host}-{commit}"
    return patron, commit, host, stamp


def wait(what, limit, check):
    deadline = time.time() + limit
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def settled(urls, partitions):
    try:
        held = sum(len(get_json(f"{u}/v1/cluster/status")["held"]) for u in urls)
        return held == partitions and all(urllib.request.urlopen(f"{u}/ready").status == 200 for u in urls)
    except Exception:
        return False


def caught_up(urls, partitions):
    try:
        held = [h for u in urls for h in get_json(f"{u}/v1/cluster/status")["held"]]
    except Exception:  # a node answers 503 while the broker is unavailable
        return False
    return len(held) == partitions and all(h["lag_messages"] == 0 and not h["restoring"] for h in held)


def run_fleet(patron, nodes, args, stamp):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker, nats = start_broker(work)
        procs = []
        try:
            for i in range(nodes):
                procs.append(start_node(patron, nats, f"n{i + 1}", work, args.partitions))
            urls = [u for _, u in procs]
            wait("the fleet to settle", 60, lambda: settled(urls, args.partitions))
            pids = [broker.pid] + [p.pid for p, _ in procs]
            before = {pid: cpu_seconds(pid) for pid in pids}
            out = work / "loadgen.json"
            started = time.time()
            subprocess.run(
                [patron, "loadgen", "--url", urls[0], "--rate", "0", "--duration", args.duration,
                 "--connections", "4", "--batch", "1000", "--customers", str(args.customers),
                 "--duplicates", "0", "--malformed", "0", "--server-pid", str(procs[0][0].pid), "--out", str(out)],
                check=True, stdout=subprocess.DEVNULL)
            load_seconds = time.time() - started
            wait("every partition to catch up", 600, lambda: caught_up(urls, args.partitions))
            applied_seconds = time.time() - started
            after = {pid: cpu_seconds(pid) for pid in pids}
            report = json.loads(out.read_text())["report"]
            accepted = report["accepted"]
            # loadgen builds its bodies before its clock starts: the sending
            # time is its own `seconds`, and the drain is what came after it.
            drain_seconds = applied_seconds - load_seconds
            broker_cpu = after[broker.pid] - before[broker.pid]
            node_cpu = sum(after[p.pid] - before[p.pid] for p, _ in procs)
            return {
                "nodes": nodes,
                "partitions": args.partitions,
                "accepted_events": accepted,
                "acknowledged_per_s": report["events_per_s"],
                "applied_per_s": accepted / (report["seconds"] + drain_seconds),
                "sending_seconds": report["seconds"],
                "drain_seconds": drain_seconds,
                "http_p99_ms": report["http_latency_ms"]["p99"],
                "freshness_p99_ms": report["freshness_ms"]["p99"],
                "broker_cpu_seconds": broker_cpu,
                "nodes_cpu_seconds": node_cpu,
                "broker_cpu_us_per_event": broker_cpu * 1e6 / accepted,
                "node_cpu_us_per_event": node_cpu * 1e6 / accepted,
                "broker_share_of_cluster_cpu": broker_cpu / (broker_cpu + node_cpu),
            }
        finally:
            for proc, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                proc.wait(timeout=60)
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    patron, commit, host, stamp = release_build()
    runs = [run_fleet(patron, n, args, stamp) for n in (1, 2, 3)]
    for run in runs:
        print(json.dumps(run))
    # On paper: separate 2-core machines for the nodes, and a broker of its own.
    node = min(r["node_cpu_us_per_event"] for r in runs)
    broker = min(r["broker_cpu_us_per_event"] for r in runs)
    cores = os.cpu_count()
    projection = []
    for machines in (1, 2, 3, 4, 8, 16):
        nodes_limit = machines * 2 * 1e6 / node
        broker_limit = 2 * 1e6 / broker
        projection.append({"node_machines": machines, "nodes_limit_per_s": nodes_limit,
                           "broker_limit_per_s_one_2core_server": broker_limit,
                           "fleet_per_s": min(nodes_limit, broker_limit)})
    result = {
        "command": " ".join([sys.argv[0]] + sys.argv[1:]),
        "commit": commit,
        "machine": {"host": host, "cores": cores, "cpu": platform.processor() or platform.machine()},
        "config": vars(args),
        "runs": runs,
        "projection": projection,
    }
    out = ROOT / "bench-results/cluster"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Cluster capacity, {stamp}",
        "",
        f"Command: `{result['command']}` at commit {commit}, on {host} ({cores} cores). One `nats-server` "
        "(sync_interval: always, streams R1), nodes in release, `patron loadgen` closed loop through node n1 "
        f"for {args.duration}, {args.customers} customers, {args.partitions} partitions. Everything shares the machine.",
        "",
        "| nodes | acknowledged ev/s | applied ev/s | HTTP p99 ms | broker µs CPU/event | nodes µs CPU/event | broker share of CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['nodes']} | {r['acknowledged_per_s']:,.0f} | {r['applied_per_s']:,.0f} | {r['http_p99_ms']:.1f} | "
            f"{r['broker_cpu_us_per_event']:.2f} | {r['node_cpu_us_per_event']:.2f} | {r['broker_share_of_cluster_cpu']:.0%} |")
    lines += [
        "",
        "## On paper: a fleet of separate 2-core machines",
        "",
        f"Per event, the nodes spend {node:.2f} µs of CPU (validation and publishing on the receiving node, "
        f"applying on the owner) and the broker {broker:.2f} µs (best of the runs above). With nodes on their own "
        "2-core machines and the broker on another, the fleet reaches the lower of the two limits:",
        "",
        "| node machines | nodes' limit ev/s | one 2-core broker's limit ev/s | fleet ev/s |",
        "|---:|---:|---:|---:|",
    ]
    for p in projection:
        lines.append(f"| {p['node_machines']} | {p['nodes_limit_per_s']:,.0f} | "
                     f"{p['broker_limit_per_s_one_2core_server']:,.0f} | {p['fleet_per_s']:,.0f} |")
    lines += [
        "",
        "Replicated streams (R3) make each of three brokers store every message, so their CPU per event "
        "is at least this R1 figure; more brokers or more streams split across brokers raise the broker's limit. "
        "The projection assumes CPU-bound work and a network that keeps up; it is arithmetic on measured costs, "
        "not a measurement of a fleet.",
    ]
    (out / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
