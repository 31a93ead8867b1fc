"""The capacity report at the top of bench-results/README.md: every DESIGN.md §6
target with its newest measured value, by how much it is met or missed and
what limits it; the ratios against the tools users would pick instead; the
scaling study; the plots (drawn by benches/examples/plots.rs).

Called by benches/summarize.py --index (benches/report.sh runs both).
The "what limits it" texts are findings from profiles (bench-results/loadgen/
NOTES.md, bench-results/scaling/NOTES.md): update them with the evidence when
a change moves a number.
"""
import json
import pathlib


def newest(directory, pattern):
    """The newest result: by its recorded time ("when") where it has one, else by name (names start with the date)."""
    files = [p for p in directory.glob(pattern) if not p.name.endswith(".meta.json")] if directory.is_dir() else []

    def recorded(path):
        # Files from before "when" was recorded sort first; names carry a commit, not a time.
        try:
            when = json.loads(path.read_text()).get("when", "") if path.suffix == ".json" else ""
        except (ValueError, AttributeError):
            when = ""
        return (when, path.name) if directory.name in ("sql", "compare") else ("", path.name)

    return max(files, key=recorded) if files else None


def load(path):
    return json.loads(path.read_text()) if path else None


def criterion_mean(results_root, bench):
    """Newest criterion mean (seconds) of `bench` and its run folder."""
    def recorded_at(run):
        machine = run / "machine.txt"
        lines = machine.read_text().splitlines() if machine.exists() else []
        return next((l.split(":", 1)[1].strip() for l in lines if l.startswith("date:")), run.name)

    best = None
    for run in sorted((p for p in results_root.iterdir() if p.is_dir()), key=recorded_at):
        summary = run / "raw" / (bench.replace("/", "__") + ".estimates.json")
        if summary.exists():
            best = (json.loads(summary.read_text())["mean"]["point_estimate"] / 1e9, run.name)
    return best


def status(measured, target, higher_is_better):
    if measured is None:
        return "not measured"
    ok = measured >= target if higher_is_better else measured <= target
    if ok:
        return "**met**"
    factor = target / measured if higher_is_better else measured / target
    return f"**missed** ({factor:.2f}×)"


LIMITS = {
    "http_ingest": "Two cores shared by the server and the load generator (which builds its bodies before the "
    "clock starts). The server spends 4.7 µs of CPU per accepted event against a budget of 1 µs (6.7 µs before "
    "issue 15). By the final profile: 0.70 µs decoding and validating (a one-pass reader of the common event "
    "shape), 1.05 µs the recommendation statistics (now applied in batches on a thread of their own, after the "
    "answer; about 34 co-purchase counter updates per purchase, each about a cache miss), 0.83 µs applying "
    "(three random reads into the state: fingerprint table, id index, id bytes), 0.70 µs page zeroing and the "
    "allocator. SIMD JSON parsers were no faster on these small events. Each stage's reason and next step: "
    "bench-results/loadgen/NOTES.md (issue 15). One binary moves about ±10% from run to run.",
    "inproc_ingest": "Decode + validate runs at about 1M events/s on 2 cores and the submit path (group-committed log, "
    "routing, apply, O(1) rescore, product statistics) at 0.4–0.8M events/s, falling as the state outgrows the "
    "caches (peak at 100k customers); sharing 2 cores, the two give about 0.4M events/s. 3M events/s would need "
    "about 0.7 µs of CPU per event for all of it. Largest costs: JSON decoding, the recommendation statistics "
    "(co-purchase counters scanned linearly), the id index (SipHash + compare), page zeroing of new state; see "
    "bench-results/scaling/NOTES.md.",
    "freshness": "On 2026-11-23, 5 of 7 runs met it (p99 15–21 ms at 118k events/s); the others held one "
    "300–400 ms stall from a slow fdatasync of the VM's disk (`server_max_sync_ms`). The runs of 2026-11-30 "
    "(issue 14) missed at 55–72 ms at 57–91k events/s, batches queueing on 2 cores shared with the load "
    "generator. The two newest (issue 15) met it: 36 ms at 116k events/s and 32 ms at 156k, with the "
    "generator's bodies built before the clock. See bench-results/loadgen/NOTES.md.",
    "freshness_sql": "Missed, by less. Writers copy only the column groups a running query holds, and the dedup and "
    "id indexes grow 1/64 at a time. Writers hold a shard lock for at most 256 events, and the product statistics "
    "are applied after the answer. With those, p99 went from 256 ms at 116k events/s to 93 ms at 156k. The "
    "query keeps one of the 2 cores busy, and the server's CPU per event more than doubles while it runs "
    "(11.1 µs against 5.6 without SQL). See bench-results/loadgen/NOTES.md.",
    "rescore": "",
    "fit": "",
    "fit_ratio": "lifetimes took 8.5 s here, not the 14–16 s DESIGN.md assumed, so 50× means 0.17 s. Our fit is "
    "0.28 s: likelihood-and-gradient passes over the compressed (x, t_x, T) table (`loglik/bgnbd_1m`: 8.2 ms "
    "each) plus the compression of 1M histories (`loglik/compress_1m`: 43 ms).",
    "clv": "A nearly fixed cost per call: `score_all` first fills a table of the distinct (x, T) cells (each a "
    "hypergeometric series), and their number hardly grows with customers. Fitting t = F + n·c to 127 ms at 1M "
    "(here) and 601 ms at 10M (criterion `rescore/bgnbd_10m`) gives F ≈ 74 ms and c ≈ 53 ns per customer. It also "
    "computes P(alive) and expected orders in 90 days. Caching the table between calls with the same parameters "
    "would meet the target.",
    "sql_aggregate": "Met since the scan stopped copying (issue 14): ids and scores are Arrow buffers over the chunk's own "
    "memory, labels are Utf8View built from a table of 16-byte views (no string bytes copied), and a chunk "
    "becomes a batch only when the plan pulls it. DataFusion over a MemTable of the same two columns, already "
    "built, is the floor of this design; the live scan took 0.98–1.5× that floor in seven runs on this VM",
    "sql_duckdb": "Missed. The remaining gap is DataFusion's own grouping: over a MemTable of the same two columns, already "
    "built with Utf8View labels (the encoding it groups fastest of the three measured), DataFusion 55 alone took "
    "1.3–2.2× DuckDB in the same runs. DuckDB's time varies between runs on this VM (40–86 ms). Closing it needs a "
    "grouping the engine does not offer (an aggregate pushed into the scan over the one-byte codes), not a "
    "different layout",
    "point_lookup": "",
    "memory": "Chunks and id index as accounted by the engine (`customer_state_bytes`): 80-byte summary, 33 bytes "
    "of scores, 8 of labels, the id once with its offset, about 8 bytes of index. Reported apart: histories "
    "(purchase days and product profiles) and the dedup index (bytes per remembered event).",
    "lock": "A scan clones, under all shards' read locks at once, only the Arcs of the column groups its columns need, "
    "and works after releasing them",
    "snapshot": "Met (2.3–4.4 s across runs), bound by the disk: version 6 writes 769 MB for 10M customers (half the fixed-width "
    "1.48 GB) at the VM's fdatasync bandwidth (about 240 MB/s measured with dd), each shard encoding its own "
    "blocks in parallel while a second handle flushes every 64 MiB",
    "recovery": "Missed narrowly (5.3 s; 13.5 s before five changes measured one at a time in "
    "`bench-results/sql/NOTES.md`): mimalloc purges freed memory by reset instead of decommit, the restore fills "
    "whole chunks with an id index sized up front, the rescore sets scores chunk by chunk, and the file is read on "
    "four threads. perf over a 3M restart after them: 43% of the samples are the kernel zeroing fresh pages "
    "(`clear_page_erms`; a bare page-touch loop runs at 0.67 GB/s on this VM, and 10M customers need about 3 GB), "
    "then the rescore kernels 13% and decoding 9%. Left: keeping scores in the snapshot (no rescore, 320 MB more "
    "to write) and decoding ids straight into the chunks",
}


def target_rows(root):
    loadgen = root / "loadgen"
    closed, half = load(newest(loadgen, "*-closed-loop.json")), load(newest(loadgen, "*-half-peak.json"))
    scaling = load(newest(root / "scaling", "*.json")) or []
    points = {(p["axis"], p["point"]["shop_customers"], p["point"]["shards"]): p["point"] for p in scaling}
    at_1m = points.get(("customers", 1_000_000, 2))
    at_10m = points.get(("customers", 10_000_000, 2))
    lifetimes = load(newest(root / "compare", "*-fit-vs-lifetimes.json"))
    sql = load(newest(root / "sql", "*.json"))
    rescore = criterion_mean(root, "rescore/bgnbd_10m")
    rows = []

    def row(target, measured_text, verdict, source, limit):
        rows.append(f"| {target} | {measured_text} | {verdict} | {source} | {LIMITS.get(limit, '')} |")

    def sized(verdict, measured_size, target_size):
        """A verdict only where the run had the target's size (a quick run does not)."""
        return verdict if measured_size == target_size else f"not comparable ({measured_size:,} customers measured)"

    v = closed and closed["events_per_s"]
    row("HTTP ingest, durable acks ≥ 1,000,000 events/s", f"{v:,.0f} events/s" if v else "—",
        status(v, 1e6, True), "loadgen closed loop", "http_ingest")
    v = at_1m and at_1m["combined_per_s"]
    row("In-process ingest ≥ 3,000,000 events/s",
        f"{v:,.0f} events/s decode + submit ({at_1m['submit_per_s']:,.0f} submit only), 1M customers" if v else "—",
        status(v, 3e6, True), "scaling study", "inproc_ingest")
    half_runs = [load(p) for p in sorted(loadgen.glob("*-half-peak.json"))] if loadgen.is_dir() else []
    recent = [r for r in half_runs if "server_max_sync_ms" in r.get("report", {})] or half_runs[-1:]
    if recent:
        p99s = sorted(r["freshness_ms"]["p99"] for r in recent)
        met = sum(v <= 50 for v in p99s)
        verdict = "**met**" if met == len(p99s) else ("**met in most runs**" if met * 2 > len(p99s) else "**missed**")
        row("Event → visible p99 ≤ 50 ms at half of peak",
            f"p99 per run: {', '.join(f'{v:.0f}' for v in p99s)} ms ({met} of {len(p99s)} runs ≤ 50 ms; "
            f"about {recent[-1]['config']['rate']:,} events/s)",
            f"{verdict} ({met}/{len(p99s)})", "loadgen half peak, runs that record the server's slowest sync", "freshness")
    with_sql = load(newest(loadgen, "*-half-peak-with-sql.json")) if loadgen.is_dir() else None
    if with_sql and "sql_latency_ms" in with_sql:
        f, q = with_sql["freshness_ms"], with_sql["sql_latency_ms"]
        lock = with_sql.get("report", {}).get("server_max_scan_lock_ms")
        row("… while an analyst runs the `GROUP BY` back to back",
            f"p99 {f['p99']:.0f} ms (p50 {f['p50']:.0f}); the query p50 {q['p50']:.0f} ms, p99 {q['p99']:.0f} ms, "
            f"{q['count']:,} queries" + (f"; longest scan lock wait {lock:.0f} ms" if lock is not None else ""),
            status(f["p99"], 50, False), "loadgen half peak with `--sql-every 0s`", "freshness_sql")
    row("Full rescore of 10M customers ≤ 1 s", f"{rescore[0] * 1e3:.0f} ms" if rescore else "—",
        status(rescore and rescore[0], 1.0, False), f"criterion `rescore/bgnbd_10m` ({rescore[1]})" if rescore else "", "rescore")
    if lifetimes:
        p, r = lifetimes["patron"], lifetimes["ratio"]
        n = lifetimes["customers"]
        row("BG/NBD fit on 1M customers ≤ 0.3 s", f"{p['bgnbd']['seconds']:.3f} s",
            sized(status(p["bgnbd"]["seconds"], 0.3, False), n, 1_000_000), "fit vs lifetimes", "fit")
        row("… 50× faster than lifetimes", f"{r['bgnbd_fit']:.1f}× (lifetimes {lifetimes['lifetimes']['bgnbd']['seconds']:.2f} s)",
            sized(status(r["bgnbd_fit"], 50, True), n, 1_000_000), "fit vs lifetimes", "fit_ratio")
        row("… same parameters to 1e-3 relative", f"largest difference {lifetimes['max_relative_param_diff']:.1e}",
            status(lifetimes["max_relative_param_diff"], 1e-3, False), "fit vs lifetimes", "")
        row("12-month CLV for 1M customers ≤ 0.1 s", f"{p['clv_12_months']['seconds']:.3f} s ({r['clv_12_months']:.0f}× lifetimes)",
            sized(status(p["clv_12_months"]["seconds"], 0.1, False), n, 1_000_000), "fit vs lifetimes", "clv")
    if sql:
        agg = sql["aggregate_in_process_ms"]["p50"]
        duck = sql["pgwire"]["duckdb_aggregate_ms"]["p50"]
        look = sql["pgwire"]["point_lookup_over_pgwire_ms"]["p99"]
        profile = "dev profile" if sql.get("profile", "").startswith("dev") else "release"
        n = sql["customers"]
        row("SQL `GROUP BY rfm_segment` over 10M ≤ 200 ms", f"{agg:.0f} ms ({profile}, {n:,} customers)",
            sized(status(agg, 200, False), n, 10_000_000), "sql_capacity", "sql_aggregate")
        row("… within 1.5× of DuckDB", f"{agg / duck:.1f}× (DuckDB {duck:.0f} ms)",
            sized(status(agg / duck, 1.5, False), n, 10_000_000), "sql_capacity", "sql_duckdb")
        row("Point lookup over pgwire p99 ≤ 2 ms", f"{look:.2f} ms ({n:,} customers)",
            sized(status(look, 2, False), n, 10_000_000), "sql_capacity", "point_lookup")
        if "memory" in sql:
            lock, mem = sql["max_shard_lock_ms"], sql["memory"]
            row("No SQL scan holds a shard lock > 5 ms", f"{lock:.1f} ms ({n:,} customers)",
                sized(status(lock, 5, False), n, 10_000_000), "sql_capacity", "lock")
            b = mem["state_bytes_per_customer"]
            row("Memory ≤ 150 bytes per customer (history and dedup reported apart)",
                f"{b:.0f} bytes per customer (histories {mem['history_bytes_per_customer']:.0f}, dedup index "
                f"{mem['dedup_bytes_per_customer']:.0f}: {mem['dedup_bytes_per_remembered_event']:.1f} per remembered event)",
                sized(status(b, 150, False), n, 10_000_000), "sql_capacity", "memory")
            row("Snapshot of 10M customers ≤ 5 s", f"{sql['snapshot_seconds']:.2f} s",
                sized(status(sql["snapshot_seconds"], 5, False), n, 10_000_000), "sql_capacity", "snapshot")
            row("Restart with 10M customers ≤ 5 s", f"{sql['restart_seconds']:.2f} s",
                sized(status(sql["restart_seconds"], 5, False), n, 10_000_000), "sql_capacity", "recovery")
    if sql and "memory" in sql:
        pass
    elif not at_10m:
        row("Memory ≤ 150 bytes per customer (item history extra)", "—", "not measured (no 10M point in the newest "
            "scaling study)", "scaling study", "")
        row("Restart with 10M customers ≤ 10 s", "—", "not measured (no 10M point)", "scaling study", "")
    elif at_10m:
        b = at_10m["recovered_bytes_per_customer"]
        row("Memory ≤ 150 bytes per customer (item history extra)",
            f"{b:,.0f} bytes per customer in all at 10M (record {at_10m['record_inline_bytes']} bytes inline)",
            status(b, 150, False), "scaling study (RSS of a recovered process)", "memory")
        row("Restart with 10M customers ≤ 10 s", f"{at_10m['recovery_s']:.2f} s", status(at_10m["recovery_s"], 10, False),
            "scaling study", "recovery")
    return rows


def comparison_rows(root):
    rows = []
    lifetimes = load(newest(root / "compare", "*-fit-vs-lifetimes.json"))
    if lifetimes:
        r, p, t = lifetimes["ratio"], lifetimes["patron"], lifetimes["lifetimes"]
        rows += [
            f"| Python lifetimes {lifetimes['versions']['lifetimes']}: BG/NBD fit, 1M customers | {p['bgnbd']['seconds']:.3f} s | {t['bgnbd']['seconds']:.2f} s | **{r['bgnbd_fit']:.1f}×** | parameters agree to {lifetimes['max_relative_param_diff']:.1e} |",
            f"| lifetimes: Gamma-Gamma fit ({p['gamma_gamma']['customers']:,} repeat buyers) | {p['gamma_gamma']['seconds']:.3f} s | {t['gamma_gamma']['seconds']:.2f} s | **{r['gamma_gamma_fit']:.1f}×** | |",
            f"| lifetimes: 12-month CLV, 1M customers | {p['clv_12_months']['seconds']:.3f} s | {t['clv_12_months']['seconds']:.2f} s | **{r['clv_12_months']:.0f}×** | per-customer CLV agrees to {lifetimes['clv_relative_diff']['max']:.1e} |",
        ]
    sql = load(newest(root / "sql", "*.json"))
    if sql:
        agg, duck = sql["aggregate_in_process_ms"]["p50"], sql["pgwire"]["duckdb_aggregate_ms"]["p50"]
        rows.append(f"| DuckDB {sql['pgwire'].get('duckdb_version', '')}: `GROUP BY rfm_segment`, 10M rows (Parquet) | {agg:.0f} ms | {duck:.0f} ms | **{duck / agg:.2f}×** (DuckDB faster) | Patron computes the columns from live state per query |")
    pg = load(newest(root / "compare", "*-ingest-vs-postgres.json"))
    if pg:
        rows.append(f"| {pg['postgres_version'].split('(Debian')[0].replace('postgres (PostgreSQL)', 'PostgreSQL').strip()}: durable ingest + per-customer aggregates, {pg['events']:,} events | {pg['patron_events_per_s']:,} events/s | {pg['postgres_events_per_s']:,} events/s | **{pg['ratio']:.1f}×** | COPY in 50k chunks + upserts in the same transaction |")
    return rows


def scaling_rows(root):
    path = newest(root / "scaling", "*.json")
    rows = []
    for entry in (load(path) or []):
        p = entry["point"]
        rows.append(
            f"| {p['customers']:,} | {p['shards']} | {p['submit_per_s']:,} | {p['decode_per_s']:,} | {p['combined_per_s']:,} "
            f"| {p['batch_latency_ms']['p50']:.1f} / {p['batch_latency_ms']['p99']:.1f} ms | {p['refit_s']:.2f} s | {p['snapshot_s']:.2f} s "
            f"| {p['recovery_s']:.2f} s | {p['recovered_bytes_per_customer']:,.0f} |"
        )
    return path, rows


def capacity_section(root):
    root = pathlib.Path(root)
    scaling_path, scaling = scaling_rows(root)
    plots = [p for p in ("throughput_over_time", "latency_cdf", "scaling_customers", "scaling_memory", "scaling_shards")
             if (root / "plots" / f"{p}.svg").exists()]
    return [
        "## Capacity report (DESIGN.md §6)",
        "",
        "Regenerate with `benches/report.sh`; rerun everything with `benches/capacity.sh` (see the main README). "
        "Each row names the newest result it comes from; the result files hold the machine, commit and command.",
        "",
        "| target | measured | status | source | what limits it |",
        "|---|---|---|---|---|",
        *target_rows(root),
        "",
        "### Against the tools users would pick instead",
        "",
        "| comparison | Patron | other | ratio | note |",
        "|---|---|---|---|---|",
        *comparison_rows(root),
        "",
        f"### Scaling study ([`{scaling_path.name if scaling_path else '—'}`](scaling/{scaling_path.name if scaling_path else ''}), `benches/scaling.sh`)",
        "",
        "In process, durable log on ext4, batches of 2,000 with 8 in flight; about 3 events per customer of the shop. "
        "Bytes per customer are the RSS of a process that recovered the state (product statistics included).",
        "",
        "| customers | shards | submit events/s | decode events/s | both on 2 cores | batch latency p50 / p99 | refit (4 models + rescore) | snapshot | recovery | bytes per customer |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *scaling,
        "",
        "### Plots",
        "",
        *[f"![{p}](plots/{p}.svg)" for p in plots],
        "",
    ]
