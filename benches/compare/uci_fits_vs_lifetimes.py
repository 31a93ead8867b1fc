"""lifetimes' fits of the summary Patron fits, for messy real data (issue 18, item 5).

    uci_fits_vs_lifetimes.py CUSTOMERS_PARQUET PATRON_MODEL_PARAMS_JSON OUT_JSON COMMAND

CUSTOMERS_PARQUET is the customers.parquet of `patron score` (frequency,
recency_days, tenure_days per customer); PATRON_MODEL_PARAMS_JSON is the
model_params.json of the same run. lifetimes fits BG/NBD, MBG/NBD and
Pareto/NBD on exactly those columns, in days, without a penalizer, and the
output sets each model's parameters, log-likelihood and seconds beside
Patron's, with the parameters that sit near a bound (below 1e-4 or above
1e4) named. Both parameter sets are judged by lifetimes' own objective (its
mean negative log-likelihood in its scaled time), so lower is better. Run by benches/compare/uci_fits_vs_lifetimes.sh.
"""
import json
import sys
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

MODELS = {
    "bgnbd": (BetaGeoFitter, ["r", "alpha", "a", "b"]),
    "mbgnbd": (ModifiedBetaGeoFitter, ["r", "alpha", "a", "b"]),
    "pareto_nbd": (ParetoNBDFitter, ["r", "alpha", "s", "beta"]),
}
NEAR_BOUND = (1e-4, 1e4)


def near_bound(params):
    return [name for name, value in params.items() if not NEAR_BOUND[0] <= value <= NEAR_BOUND[1]]


def mean_negative_ll(name, fitter_class, params, data):
    """lifetimes' own objective (mean negative log-likelihood, in its scaled
    time) at `params` (in days), so both fits are judged by one function."""
    frequency, recency, tenure = data
    scale = 10.0 / tenure.max()  # lifetimes.utils._scale_time
    weights = np.ones_like(frequency)
    if name == "pareto_nbd":
        scaled = [params["r"], params["alpha"] * scale, params["s"], params["beta"] * scale]
        total = fitter_class._negative_log_likelihood(scaled, frequency, recency * scale, tenure * scale, weights, 0.0)
        return float(total) / len(frequency)
    scaled = np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])
    return float(fitter_class._negative_log_likelihood(scaled, frequency, recency * scale, tenure * scale, weights, 0.0))


def main():
    customers_path, patron_path, out_path, command = sys.argv[1:5]
    table = pq.read_table(customers_path, columns=["frequency", "recency_days", "tenure_days"]).to_pandas()
    table = table.dropna()
    frequency = table["frequency"].to_numpy(dtype=float)
    recency = table["recency_days"].to_numpy(dtype=float)
    tenure = table["tenure_days"].to_numpy(dtype=float)
    with open(patron_path) as f:
        patron = json.load(f)
    results = {
        "command": command,
        "customers": int(len(table)),
        "repeat_buyers": int((frequency > 0).sum()),
        "models": {},
    }
    for name, (fitter_class, names) in MODELS.items():
        fitter = fitter_class(penalizer_coef=0.0)
        started = time.perf_counter()
        entry = {}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fitter.fit(frequency, recency, tenure)
            params = {n: float(fitter.params_[n]) for n in names}
            entry["lifetimes"] = {
                "params": params,
                "mean_negative_ll": mean_negative_ll(name, fitter_class, params, (frequency, recency, tenure)),
                "seconds": time.perf_counter() - started,
                "near_bound": near_bound(params),
                "warnings": sorted({str(w.message).splitlines()[0] for w in caught}),
            }
        except Exception as error:  # lifetimes raises ConvergenceError and others
            entry["lifetimes"] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
        fitted = [m for m in patron.get("models", []) if m["model"] == name]
        failed = [m for m in patron.get("failed", []) if m["model"] == name]
        entry["patron"] = fitted[0] if fitted else {"error": failed[0]["error"] if failed else "not fitted"}
        if fitted:
            at_patron = mean_negative_ll(name, fitter_class, fitted[0]["params"], (frequency, recency, tenure))
            entry["patron"]["mean_negative_ll_by_lifetimes"] = at_patron
        results["models"][name] = entry
        print(name, json.dumps(entry, default=str)[:400])
    with open(out_path, "w") as f:
        json.dump(results, f, indent=2, default=str)
        f.write("\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
