#!/usr/bin/env python3
"""Ingest across a broker failure: two release `patron serve --nats` nodes
on a three-server JetStream cluster (streams and buckets R3,
sync_interval: always), `patron loadgen` in a closed loop through node n1,
and the event stream's leader killed with SIGKILL at --kill-at.

From loadgen's per-second timeline it reports the rate before the kill, how
long no request was acknowledged, when the rate was back to half and to 90%
of it, and the mean rate over the ten seconds after the kill. After the load
it waits until every partition has caught up, and counts the leases the
nodes lost (a lease outlived by the brokers' election moves its partition,
which then replays from its snapshot). Exactly once across a broker kill is
checked per customer by the end-to-end test, not here. Writes
bench-results/cluster/<stamp>-failover.json and .md.

    benches/cluster_failover.py [--duration 40s] [--kill-at 15] [--lease-time 10s] [--customers 200000] [--partitions 12]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_capacity import ROOT, caught_up, free_port, get_json, release_build, settled, start_node, wait  # noqa: E402


def start_brokers(work):
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{route}" for _, _, route in ports)
    brokers = []
    for i, (port, monitor, route) in enumerate(ports):
        name = f"s{i + 1}"
        conf = work / f"{name}.conf"
        conf.write_text(
            f"server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
            f'jetstream {{\n  store_dir: "{work / name}"\n  sync_interval: always\n}}\n'
            f"cluster {{\n  name: patron\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n")
        proc = subprocess.Popen([str(ROOT / ".venv/bin/nats-server"), "-c", str(conf)],
                                stderr=open(work / f"{name}.log", "w"))
        brokers.append({"name": name, "proc": proc, "url": f"nats://127.0.0.1:{port}", "monitor": monitor})
    for b in brokers:
        wait(f"broker {b['name']}", 60, lambda b=b: healthy(b))
    return brokers


def healthy(broker):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{broker['monitor']}/healthz", timeout=2).status == 200
    except Exception:
        return False


def stream_leader(brokers):
    """The server leading the event stream, from a monitoring endpoint."""
    for b in brokers:
        try:
            jsz = get_json(f"http://127.0.0.1:{b['monitor']}/jsz?streams=true")
        except Exception:
            continue
        for account in jsz.get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream.get("name") == "PATRON_EVENTS" and stream.get("cluster", {}).get("leader"):
                    return stream["cluster"]["leader"]
    return None


def applied_events(urls):
    """Events the nodes applied to the partitions they hold (None while a node cannot say)."""
    try:
        return sum(h["applied_events"] for u in urls for h in get_json(f"{u}/v1/cluster/status")["held"])
    except Exception:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="40s")
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds after the load starts")
    parser.add_argument("--lease-time", default="10s")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    patron, commit, host, stamp = release_build()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        brokers = start_brokers(work)
        nats = ",".join(b["url"] for b in brokers)
        procs = []
        try:
            for i in range(2):
                procs.append(start_node(patron, nats, f"n{i + 1}", work, args.partitions, ["--nats-replicas", "3"],
                                        args.lease_time))
            urls = [u for _, u in procs]
            wait("the fleet to settle", 120, lambda: settled(urls, args.partitions))
            out = work / "loadgen.json"
            loadgen = subprocess.Popen(
                [patron, "loadgen", "--url", urls[0], "--rate", "0", "--duration", args.duration,
                 "--connections", "4", "--batch", "1000", "--customers", str(args.customers),
                 "--duplicates", "0", "--malformed", "0", "--out", str(out)],
                stdout=subprocess.DEVNULL)
            # loadgen builds its bodies first; its clock starts when it sends.
            wait("loadgen to start sending", 300, lambda: (applied_events(urls) or 0) > 0)
            sending_from = time.time()
            time.sleep(args.kill_at)
            leader = stream_leader(brokers)
            victim = next((b for b in brokers if b["name"] == leader), brokers[0])
            victim["proc"].send_signal(signal.SIGKILL)
            victim["proc"].wait()
            killed_at = time.time() - sending_from
            loadgen.wait()
            load_ended = time.time()
            wait("every partition to catch up", 600, lambda: caught_up(urls, args.partitions))
            drain_seconds = time.time() - load_ended
            lost_leases = 0
            for name in ("n1.log", "n2.log"):
                lines = (work / name).read_text().splitlines()
                warnings = [l for l in lines if ("WARN" in l or "ERROR" in l) and "refused on apply" not in l]
                lost_leases += sum("lost the lease" in l for l in lines)
                print(f"{name}: {len(warnings)} warnings besides refusals", *warnings[:15], sep="\n  ", file=sys.stderr)
                if os.environ.get("PATRON_KEEP_LOGS"):
                    import shutil
                    shutil.copy(work / name, os.environ["PATRON_KEEP_LOGS"])
            result_file = json.loads(out.read_text())
        finally:
            for proc, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                proc.wait(timeout=120)
            for b in brokers:
                if b["proc"].poll() is None:
                    b["proc"].send_signal(signal.SIGTERM)
                    b["proc"].wait(timeout=30)
    report = result_file["report"]
    ticks = report["timeline"]
    # loadgen's clock and ours differ by when its first request was answered;
    # align on the kill as seen in the timeline: the first second after the
    # stated kill time whose rate fell below half of the rate before it.
    before = [t["accepted_per_s"] for t in ticks if 3 <= t["second"] <= killed_at - 1]
    rate_before = sum(before) / max(len(before), 1)
    after = [t for t in ticks if t["second"] >= killed_at - 1]
    dip = next((t for t in after if t["accepted_per_s"] < rate_before / 2), None)
    start = dip["second"] if dip else killed_at
    zero = [t for t in ticks if t["second"] >= start and t["accepted_per_s"] == 0]
    back_half = next((t["second"] for t in ticks if t["second"] > start and t["accepted_per_s"] >= rate_before / 2), None)
    back_90 = next((t["second"] for t in ticks if t["second"] > start and t["accepted_per_s"] >= rate_before * 0.9), None)
    window = [t["accepted_per_s"] for t in ticks if start <= t["second"] < start + 10]
    result = {
        "command": " ".join([sys.argv[0]] + sys.argv[1:]),
        "commit": commit,
        "machine": {"host": host, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
        "config": vars(args),
        "killed": {"server": leader, "role": "leader of PATRON_EVENTS", "seconds_into_load": killed_at},
        "rate_before_per_s": rate_before,
        "seconds_without_acknowledgement": len(zero),
        "seconds_to_half_rate": None if back_half is None else back_half - start,
        "seconds_to_90pct_rate": None if back_90 is None else back_90 - start,
        "mean_rate_10s_after_per_s": sum(window) / max(len(window), 1),
        "accepted_events": report["accepted"],
        "events_per_s_whole_run": report["events_per_s"],
        "duplicates": report["duplicates"],
        "overload_retries": report["overload_retries"],
        "failed_requests": report["failed_requests"],
        "leases_lost": lost_leases,
        "seconds_from_load_end_to_caught_up": drain_seconds,
        "timeline": [{"second": t["second"], "accepted_per_s": t["accepted_per_s"],
                      "max_http_latency_ms": t["max_http_latency_ms"]} for t in ticks],
    }
    out_dir = ROOT / "bench-results/cluster"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stamp}-failover.json").write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda v: "never" if v is None else f"{v:.1f} s"  # noqa: E731
    lines = [
        f"# Ingest across a broker failure, {stamp}",
        "",
        f"Command: `{result['command']}` at commit {commit}, on {host} ({os.cpu_count()} cores). Three `nats-server` "
        "(sync_interval: always, R3), two release nodes, `patron loadgen` closed loop through n1, "
        f"{args.customers} customers, {args.partitions} partitions; {leader} (the event stream's leader) killed "
        f"with SIGKILL {killed_at:.1f} s into the load. Everything shares the machine.",
        "",
        "| lease | before the kill ev/s | seconds with no acknowledgement | back to half | back to 90% | mean of the 10 s after ev/s | acknowledged | leases lost | caught up after the load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.lease_time} | {rate_before:,.0f} | {len(zero)} | {fmt(result['seconds_to_half_rate'])} | {fmt(result['seconds_to_90pct_rate'])} | "
        f"{result['mean_rate_10s_after_per_s']:,.0f} | {report['accepted']:,} | {lost_leases} of {args.partitions} | {drain_seconds:.1f} s |",
        "",
        "Per second (loadgen's timeline): " + ", ".join(f"{t['accepted_per_s']:,.0f}" for t in ticks),
    ]
    (out_dir / f"{stamp}-failover.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
