"""Collects criterion's estimates into a results folder: raw JSON plus summary.md.

Usage: python3 benches/summarize.py <criterion dir> <results dir>
       python3 benches/summarize.py --index bench-results    (only the index)
"""
import json
import pathlib
import shutil
import sys

from capacity_report import capacity_section

# DESIGN.md §6 targets, in seconds per iteration: (milestone, goal).
TARGETS = {
    "fit/bgnbd_1m": (2.0, 0.3),
    "fit/mbgnbd_1m": (2.0, 0.3),
    "rescore/mbgnbd_10m": (1.0, 1.0),
    "rescore/bgnbd_10m": (1.0, 1.0),
}


def fmt(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def main(criterion_dir, results_dir):
    criterion_dir, results_dir = pathlib.Path(criterion_dir), pathlib.Path(results_dir)
    raw = results_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = []
    for estimates in sorted(criterion_dir.glob("**/new/estimates.json")):
        bench_dir = estimates.parent
        meta = json.loads((bench_dir / "benchmark.json").read_text())
        bench_id = meta["full_id"]
        est = json.loads(estimates.read_text())
        shutil.copy(estimates, raw / (bench_id.replace("/", "__") + ".estimates.json"))
        shutil.copy(bench_dir / "benchmark.json", raw / (bench_id.replace("/", "__") + ".benchmark.json"))
        sample = bench_dir / "sample.json"
        if sample.exists():
            shutil.copy(sample, raw / (bench_id.replace("/", "__") + ".sample.json"))
        mean = est["mean"]["point_estimate"] * 1e-9
        low = est["mean"]["confidence_interval"]["lower_bound"] * 1e-9
        high = est["mean"]["confidence_interval"]["upper_bound"] * 1e-9
        median = est["median"]["point_estimate"] * 1e-9
        target = TARGETS.get(bench_id)
        if target:
            milestone, goal = target
            status = "meets goal" if mean <= goal else ("meets milestone" if mean <= milestone else "MISSES")
            target_text = f"≤ {fmt(milestone)}" + (f" (goal {fmt(goal)})" if goal != milestone else "")
        else:
            status, target_text = "", ""
        rows.append((bench_id, mean, low, high, median, target_text, status))
    lines = [
        "| bench | mean | 95% CI of mean | median | target (DESIGN.md §6) | status |",
        "|---|---|---|---|---|---|",
    ]
    for bench_id, mean, low, high, median, target_text, status in rows:
        lines.append(f"| `{bench_id}` | {fmt(mean)} | {fmt(low)} – {fmt(high)} | {fmt(median)} | {target_text} | {status} |")
    machine = (results_dir / "machine.txt").read_text() if (results_dir / "machine.txt").exists() else ""
    command = (results_dir / "command.txt").read_text() if (results_dir / "command.txt").exists() else ""
    (results_dir / "summary.md").write_text(
        "# Bench run\n\nCommand(s):\n\n```\n" + command + "```\n\nMachine:\n\n```\n" + machine + "```\n\n"
        + "\n".join(lines) + "\n\nRaw criterion estimates (nanoseconds) are in `raw/`.\n"
    )
    print("\n".join(lines))
    write_index(results_dir.parent, results_dir, lines)


def write_index(results_root, latest, table_lines):
    """bench-results/README.md: the newest figure of every bench across all
    runs, the HTTP capacity runs, and every run folder."""
    def recorded_at(run):
        # machine.txt records the run's UTC time; file times change with every checkout.
        machine = run / "machine.txt"
        if machine.exists():
            for line in machine.read_text().splitlines():
                if line.startswith("date:"):
                    return line.split(":", 1)[1].strip()
        return run.name

    runs = sorted((p for p in results_root.iterdir() if p.is_dir()), key=recorded_at)
    newest = {}
    for run in runs:
        summary = run / "summary.md"
        if not summary.exists():
            continue
        for line in summary.read_text().splitlines():
            if line.startswith("| `"):
                bench = line.split("`")[1]
                newest[bench] = line.rstrip() + f" [{run.name}]({run.name}/summary.md) |"
    http = [r for r in runs if (r / "replay.txt").exists()]
    sql_dir = results_root / "sql"
    sql_runs = sorted(sql_dir.glob("*.json")) if sql_dir.is_dir() else []

    def sql_line(path):
        r = json.loads(path.read_text())
        pg = r.get("pgwire", {})
        agg, look = r["aggregate_in_process_ms"]["p50"], pg.get("point_lookup_over_pgwire_ms", {})
        duck = pg.get("duckdb_aggregate_ms", {}).get("p50", float("nan"))
        verdict = lambda ok: "met" if ok else "**missed**"
        return (
            f"| [`{path.name}`](sql/{path.name}) | {r['customers']:,} | {agg:.0f} ms ({verdict(agg <= 200)}, ≤ 200 ms) "
            f"| {pg.get('aggregate_over_pgwire_ms', {}).get('p50', float('nan')):.0f} ms | {duck:.0f} ms "
            f"| {agg / duck:.1f}× ({verdict(agg / duck <= 1.5)}, ≤ 1.5×) "
            f"| {look.get('p50', float('nan')):.2f} / {look.get('p99', float('nan')):.2f} ms ({verdict(look.get('p99', 99) <= 2)}, p99 ≤ 2 ms) "
            f"| {r.get('max_shard_lock_ms', float('nan')):.0f} ms | {r.get('profile', '')} |"
        )

    recs_dir = results_root / "recs"
    recs_runs = sorted(recs_dir.glob("*.json")) if recs_dir.is_dir() else []

    def recs_line(path):
        r = json.loads(path.read_text())
        m = {x["method"]: x for x in r["result"]["methods"]}
        p, b, k = m["patron"], m["buy_again"], m["item_knn"]
        c = r["config"]
        return (
            f"| [`{path.name}`](recs/{path.name}) | {c['similarity']}, history {c['history']}, {c['counters_per_product']} counters, "
            f"{c['neighbours']} neighbours, trend^{c.get('trend_exponent')} | {p['all']['hit_rate']:.4f} / {p['all']['ndcg']:.4f} "
            f"| {b['all']['hit_rate']:.4f} / {b['all']['ndcg']:.4f} | {p['explore']['hit_rate']:.4f} / {p['explore']['ndcg']:.4f} "
            f"| {k['explore']['hit_rate']:.4f} / {k['explore']['ndcg']:.4f} |"
        )

    loadgen_dir = results_root / "loadgen"
    loadgen_runs = sorted(loadgen_dir.glob("*.json")) if loadgen_dir.is_dir() else []

    def loadgen_line(path):
        r = json.loads(path.read_text())
        c, h, f = r["config"], r["http_latency_ms"], r["freshness_ms"]
        rss = r.get("peak_rss_bytes")
        return (
            f"| [`{path.name}`](loadgen/{path.name}) | {c['rate'] or 'closed loop'} | {c['connections']} × {c['batch']} "
            f"| {r['events_per_s']:,.0f} | {h['p50']:.1f} / {h['p99']:.1f} / {h['max']:.1f} ms "
            f"| {f['p50']:.1f} / {f['p99']:.1f} / {f['max']:.1f} ms | {r['rejected']} "
            f"| {'' if rss is None else f'{rss / 2**20:,.0f} MiB'} |"
        )

    text = [
        "# Benchmark results",
        "",
        "Each folder is one run, with `command.txt` and `machine.txt` (CPU, cores, filesystem, commit):",
        "- `benches/record.sh` folders hold the criterion log, raw estimates (`raw/`, nanoseconds) and `summary.md`;",
        "- `benches/http_capacity.sh` folders (`-http`) hold the replay output, server metrics and peak RSS.",
        "",
        "Numbers are wall-clock on the machine in `machine.txt`; rerun the scripts on an idle machine.",
        "",
        *capacity_section(results_root),
        "## Newest figure per bench",
        "",
        "| bench | mean | 95% CI of mean | median | target (DESIGN.md §6) | status | run |",
        "|---|---|---|---|---|---|---|",
        *[newest[k] for k in sorted(newest)],
        "",
        "## HTTP capacity runs",
        "",
        *[f"- [`{r.name}`]({r.name}/replay.txt): " + " ".join((r / "replay.txt").read_text().split())[:400] for r in reversed(http)],
        "",
        "## SQL capacity runs (`benches/examples/sql_capacity.rs`)",
        "",
        "| run | customers | aggregate in process (p50) | aggregate over pgwire (p50) | DuckDB, same rows as Parquet (p50) | ratio to DuckDB | point lookup over pgwire p50 / p99 | longest shard read lock | build profile |",
        "|---|---|---|---|---|---|---|---|---|",
        *[sql_line(p) for p in reversed(sql_runs)],
        "",
        "## Load generator runs (`patron loadgen`)",
        "",
        "| run | target rate | connections × batch | accepted events/s | HTTP p50 / p99 / max | event → visible p50 / p99 / max | rejected | server peak RSS |",
        "|---|---|---|---|---|---|---|---|",
        *[loadgen_line(p) for p in reversed(loadgen_runs)],
        "",
        "## Recommendation evaluation runs (`patron eval-recs`, UCI Online Retail)",
        "",
        "Published baselines (HitRate@10 / NDCG@10, all test customers): buy again 0.717 / 0.271 (the best of popularity, "
        "buy again, item-kNN, implicit ALS and EASE); item-kNN 0.498 / 0.146. The `.txt` beside a run is its printed table.",
        "",
        "| run | config | Patron HR@10 / NDCG@10 | buy again (ours) | Patron explore HR@10 / NDCG@10 | item-kNN explore (ours) |",
        "|---|---|---|---|---|---|",
        *[recs_line(p) for p in recs_runs],
        "",
        "## All runs",
        "",
        *[f"- [`{r.name}`]({r.name}/)" for r in reversed(runs)],
        "",
    ]
    (results_root / "README.md").write_text("\n".join(text))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--index"]:
        # Only regenerate bench-results/README.md (used after HTTP capacity runs).
        write_index(pathlib.Path(sys.argv[2]), None, [])
    else:
        main(*sys.argv[1:])
