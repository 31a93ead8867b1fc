"""The Python `lifetimes` side of the fit comparison. Reads what
benches/examples/fit_vs_lifetimes.rs wrote into WORK_DIR (summary.csv,
patron.json, patron_clv.csv), fits BG/NBD and Gamma-Gamma with lifetimes on the
same summary, computes lifetimes' 12-month CLV with the same definition, and
writes one JSON result: both sides' times and parameters, the time ratios,
the largest relative parameter difference and the CLV agreement.

usage: fit_vs_lifetimes.py WORK_DIR OUT_JSON COMMAND
"""
import json
import os
import platform
import subprocess
import sys
import time

import lifetimes
import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    return {"host": platform.node(), "cores": os.cpu_count(), "memory_bytes": mem_kib * 1024, "cpu_model": cpu}


def relative(ours, theirs):
    return abs(ours - theirs) / abs(theirs)


def main():
    work, out, command = sys.argv[1], sys.argv[2], sys.argv[3]
    patron = json.load(open(os.path.join(work, "patron.json")))
    summary = pd.read_csv(os.path.join(work, "summary.csv"))
    patron_clv = pd.read_csv(os.path.join(work, "patron_clv.csv"))["clv"].to_numpy()

    bgf = BetaGeoFitter(penalizer_coef=0.0)
    fit_s, _ = timed(lambda: bgf.fit(summary["frequency"], summary["recency"], summary["T"]))
    repeat = summary[summary["frequency"] > 0]
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    gg_s, _ = timed(lambda: ggf.fit(repeat["frequency"], repeat["monetary_value"]))

    clv_cfg = patron["clv_12_months"]
    clv_s, clv = timed(
        lambda: ggf.customer_lifetime_value(
            bgf,
            summary["frequency"],
            summary["recency"],
            summary["T"],
            summary["monetary_value"],
            time=12,
            discount_rate=clv_cfg["monthly_discount_rate"],
            freq="D",
        ).to_numpy()
    )

    theirs_bg = {k: float(bgf.params_[k]) for k in ("r", "alpha", "a", "b")}
    theirs_gg = {k: float(ggf.params_[k]) for k in ("p", "q", "v")}
    ours_bg = {k: patron["bgnbd"][k] for k in theirs_bg}
    ours_gg = {k: patron["gamma_gamma"][k] for k in theirs_gg}
    param_diff = {k: relative(ours_bg[k], theirs_bg[k]) for k in theirs_bg}
    param_diff.update({f"gg_{k}": relative(ours_gg[k], theirs_gg[k]) for k in theirs_gg})
    # lifetimes reports the mean log-likelihood per customer, negated and
    # with its own constants; compare the optimum through our likelihood instead.
    clv_rel = np.abs(patron_clv - clv) / np.maximum(np.abs(clv), 1e-9)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "bench": "fit_vs_lifetimes",
        "customers": patron["customers"],
        "machine": machine(),
        "commit": commit,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "versions": {
            "lifetimes": lifetimes.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "patron": patron,
        "lifetimes": {
            "bgnbd": dict(theirs_bg, seconds=fit_s),
            "gamma_gamma": dict(theirs_gg, seconds=gg_s),
            "clv_12_months": {"seconds": clv_s},
        },
        "ratio": {
            "bgnbd_fit": fit_s / patron["bgnbd"]["seconds"],
            "gamma_gamma_fit": gg_s / patron["gamma_gamma"]["seconds"],
            "clv_12_months": clv_s / patron["clv_12_months"]["seconds"],
        },
        "max_relative_param_diff": max(param_diff.values()),
        "relative_param_diff": param_diff,
        "clv_relative_diff": {
            "median": float(np.median(clv_rel)),
            "p99": float(np.quantile(clv_rel, 0.99)),
            "max": float(clv_rel.max()),
        },
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("ratio", "max_relative_param_diff", "clv_relative_diff")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
