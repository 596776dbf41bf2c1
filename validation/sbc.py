"""Simulation-based calibration of robustscope's model specifications.

For each specification: draw the parameters from its priors, simulate a
tensor with them, fit it with the specification's own code path
(:func:`robustscope.fit.fit`), and record the rank of each true parameter
value among thinned posterior draws. When the model, its simulator and its
sampler agree, those ranks are uniform (Talts et al., 2018). The script
writes, per specification, the ranks (CSV), a chi-square uniformity test
per parameter, and a plot of rank histograms with the 99% band of a uniform
histogram.

Run from the repository root (not part of the test suite: it fits 100 or
more models per specification):

    .venv/bin/python validation/sbc.py --spec location-scale --datasets 100 --jobs 2

Results go to ``validation/results/<spec>/`` and a summary table to
``validation/results/<spec>/summary.md``; docs/VALIDATION.md collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
# Posterior draws kept per fit for ranking (thinned evenly): ranks lie in 0..RANK_DRAWS.
RANK_DRAWS = 99
BINS = 10


def _one(spec_name: str, index: int, seed: int, shape: dict[str, int], chains: int, tune: int, draws: int, sampler: str | None) -> dict:
    """Simulate one dataset from the prior, fit it and return the ranks of the true values."""
    warnings.simplefilter("ignore")
    from robustscope.fit import fit
    from robustscope.models import family_module
    from robustscope.specs import load_spec

    spec = load_spec(spec_name)
    module = family_module(spec.family)
    rng = np.random.default_rng([seed, index])
    if hasattr(module, "simulate_counts_from_prior"):
        # Families whose per-example simulator cannot follow the likelihood
        # exactly are calibrated on counts drawn from the likelihood itself.
        data, truth = module.simulate_counts_from_prior(spec, rng, **shape)
        started = time.perf_counter()
        settings = spec.with_sampler(chains=chains, tune=tune, draws=draws, seed=seed + index, name=sampler)
        trace = module.sample_counts(data, settings, progress=False)
    else:
        ds, truth = module.simulate_from_prior(spec, rng, **shape)
        started = time.perf_counter()
        trace = fit(ds, spec, chains=chains, tune=tune, draws=draws, seed=seed + index, sampler=sampler, progress=False)
    seconds = time.perf_counter() - started
    posterior = trace["posterior"].to_dataset()
    divergences = int(trace["sample_stats"].to_dataset()["diverging"].sum()) if "sample_stats" in trace.children else -1
    row: dict = {"dataset": index, "seconds": seconds, "divergences": divergences}
    def rank(values: np.ndarray, true: float) -> int:
        keep = np.linspace(0, len(values) - 1, RANK_DRAWS).round().astype(int)
        thinned = values[keep]
        # Ties (a parameter fixed at 0 by the specification) are broken at random.
        below = np.sum(thinned < true)
        ties = np.sum(thinned == true)
        return int(below + rng.integers(0, ties + 1))

    for name in module.KEY_PARAMETERS:
        if name in posterior and name in truth and posterior[name].ndim == 2:
            row[name] = rank(np.asarray(posterior[name]).reshape(-1), float(truth[name]))
    # Parameters with one value per factor (perturbation-factor family): one rank per element.
    for name in getattr(module, "FACTOR_PARAMETERS", ()):
        if name in posterior and name in truth and posterior[name].ndim == 3:
            draws_by_element = np.asarray(posterior[name]).reshape(-1, posterior[name].shape[-1])
            for element, true in enumerate(truth[name]):
                row[f"{name}[{element}]"] = rank(draws_by_element[:, element], float(true))
    return row


def uniformity(ranks: pd.Series) -> dict:
    """Chi-square test of uniform ranks over ``BINS`` equal bins; returns the statistic and p-value."""
    counts, _ = np.histogram(ranks, bins=BINS, range=(0, RANK_DRAWS + 1))
    statistic, p_value = stats.chisquare(counts)
    return {"chi2": float(statistic), "p_value": float(p_value), "n": int(len(ranks)), "counts": counts.tolist()}


def plot(table: pd.DataFrame, parameters: list[str], spec: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table)
    columns = min(4, len(parameters))
    rows = int(np.ceil(len(parameters) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    expected = n / BINS
    low, high = stats.binom.ppf([0.005, 0.995], n, 1 / BINS)
    for ax, name in zip(axes.ravel(), parameters, strict=False):
        ax.hist(table[name], bins=BINS, range=(0, RANK_DRAWS + 1), color="#4C72B0", edgecolor="white")
        ax.axhspan(low, high, color="grey", alpha=0.25, lw=0)
        ax.axhline(expected, color="black", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"rank of the true value among {RANK_DRAWS} draws")
        ax.set_ylabel("datasets")
    for ax in axes.ravel()[len(parameters) :]:
        ax.axis("off")
    fig.suptitle(f"SBC rank histograms: {spec} ({n} datasets; grey: 99% band of a uniform histogram)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="specification name in models/ or YAML path")
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="fits run in parallel (one chain set each)")
    parser.add_argument("--seed", type=int, default=20260204)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--tune", type=int, default=400)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--sampler", choices=["nutpie", "pymc"], help="override the specification's sampler (pymc reuses its compiled model across datasets)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the results (default: validation/results)")
    parser.add_argument("--shape", default='{"n_models": 6, "n_tasks": 6, "n_perturbations": 8}', help="JSON keyword arguments of the family's simulate_from_prior")
    args = parser.parse_args(argv)

    from robustscope.specs import load_spec

    spec = load_spec(args.spec)
    shape = json.loads(args.shape)
    out = args.output / spec.name
    out.mkdir(parents=True, exist_ok=True)
    ranks_path = out / "ranks.csv"
    done = pd.read_csv(ranks_path) if ranks_path.exists() else pd.DataFrame()
    finished = set(done["dataset"].tolist()) if len(done) else set()
    todo = [i for i in range(args.datasets) if i not in finished]
    print(f"{spec.name}: {len(finished)} datasets already done, {len(todo)} to go", flush=True)

    rows = done.to_dict("records") if len(done) else []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_one, args.spec, i, args.seed, shape, args.chains, args.tune, args.draws, args.sampler) for i in todo]
        for number, future in enumerate(as_completed(futures), start=1):
            rows.append(future.result())
            frame = pd.DataFrame(rows).sort_values("dataset")
            tmp = ranks_path.with_suffix(".tmp")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, ranks_path)
            print(f"  {number}/{len(todo)} fits done ({rows[-1]['seconds']:.0f} s, {rows[-1]['divergences']} divergences)", flush=True)

    table = pd.DataFrame(rows).sort_values("dataset")
    parameters = [c for c in table.columns if c not in ("dataset", "seconds", "divergences")]
    tests = {name: uniformity(table[name]) for name in parameters}
    summary = {
        "spec": spec.name,
        "datasets": len(table),
        "shape": shape,
        "chains": args.chains,
        "tune": args.tune,
        "draws": args.draws,
        "sampler": args.sampler or spec.sampler.name,
        "rank_draws": RANK_DRAWS,
        "median_fit_seconds": float(table["seconds"].median()),
        "fits_with_divergences": int((table["divergences"] > 0).sum()),
        "tests": tests,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"| parameter | chi-square ({BINS - 1} df) | p-value | counts per rank decile |",
        "|---|---|---|---|",
    ]
    for name, test in tests.items():
        lines.append(f"| {name} | {test['chi2']:.1f} | {test['p_value']:.3f} | {' '.join(map(str, test['counts']))} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot(table, parameters, spec.name, out / "ranks.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
