"""Time the single-fit report and the comparison of two fits on a large synthetic fit.

    python benchmarks/bench_report_large.py [--models 1000] [--tasks 500] [--tasks-per-model 20]
        [--chains 2] [--draws 100] [--runs 3] [--skip-compare] [--json out.json]

The synthetic DataTree has the groups, variables and attributes of a
location-scale fit from ``robustscope.fit.fit``. These are the non-centred
``mu_centered`` and ``log_sigma_centered``, group effects and scales,
per-pair ``mu`` and ``log_sigma``, variance shares, sample statistics,
pointwise log likelihood, posterior predictive spread, observed spread and
constant data. Its draws
are random numbers with that structure, not a posterior, so the timings
measure the report code and not sampling.

Each run writes the report of the first fit (``write_report``) and the
comparison of two fits (``compare``) into a temporary folder, and the script
prints the median of ``--runs`` runs. To time another version of the
package, put its ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

import robustscope
from robustscope.fit import LOGLIK_VARIABLE


def synthetic_fit(models: int, tasks: int, tasks_per_model: int, chains: int, draws: int, seed: int) -> xr.DataTree:
    """Build a DataTree laid out like a location-scale fit, with ``models * tasks_per_model`` pairs."""
    rng = np.random.default_rng(seed)
    model_labels = [f"model-{i:04d}" for i in range(models)]
    task_labels = [f"task-{j:03d}" for j in range(tasks)]
    if tasks_per_model >= tasks:
        pair_task = np.tile(np.arange(tasks), models)
    else:
        pair_task = np.concatenate([np.sort(rng.choice(tasks, tasks_per_model, replace=False)) for _ in range(models)])
    pair_model = np.repeat(np.arange(models), min(tasks_per_model, tasks))
    n_pairs = len(pair_model)
    pair_labels = np.array([f"{model_labels[m]} | {task_labels[t]}" for m, t in zip(pair_model, pair_task, strict=True)])
    shape = (chains, draws)

    def normal(*extra: int, loc: float | np.ndarray = 0.0, scale: float = 1.0) -> np.ndarray:
        return loc + scale * rng.standard_normal(shape + extra)

    scalars = {
        "alpha": normal(loc=-0.5, scale=0.05),
        "gamma0": normal(loc=-1.0, scale=0.05),
        "gamma1": normal(loc=-0.4, scale=0.03),
        "sd_model": np.abs(normal(loc=1.2, scale=0.1)),
        "sd_task": np.abs(normal(loc=1.0, scale=0.1)),
        "sd_model_task": np.abs(normal(loc=0.6, scale=0.05)),
        "sd_u": np.abs(normal(loc=0.3, scale=0.03)),
        "sd_v": np.abs(normal(loc=0.3, scale=0.03)),
        "sd_e": np.abs(normal(loc=0.3, scale=0.02)),
    }
    a_model = normal(models, loc=rng.normal(0.0, 1.2, models), scale=0.1)
    b_task = normal(tasks, loc=rng.normal(0.0, 1.0, tasks), scale=0.1)
    u_model = normal(models, loc=rng.normal(0.0, 0.3, models), scale=0.1)
    v_task = normal(tasks, loc=rng.normal(0.0, 0.3, tasks), scale=0.1)
    mu_centered = normal(n_pairs, loc=rng.normal(0.0, 1.0, n_pairs), scale=0.3)
    log_sigma_centered = normal(n_pairs, loc=rng.normal(0.0, 1.0, n_pairs), scale=0.3)
    mu = scalars["alpha"][..., None] + a_model[..., pair_model] + b_task[..., pair_task] + scalars["sd_model_task"][..., None] * mu_centered
    center = float(mu.mean())
    log_sigma = (
        scalars["gamma0"][..., None]
        + scalars["gamma1"][..., None] * (mu - center)
        + u_model[..., pair_model]
        + v_task[..., pair_task]
        + scalars["sd_e"][..., None] * log_sigma_centered
    )
    shares = rng.dirichlet([4, 2, 2, 3], size=shape)
    posterior = xr.Dataset(
        {
            **{name: (("chain", "draw"), values) for name, values in scalars.items()},
            "a_model": (("chain", "draw", "model"), a_model),
            "b_task": (("chain", "draw", "task"), b_task),
            "u_model": (("chain", "draw", "model"), u_model),
            "v_task": (("chain", "draw", "task"), v_task),
            "mu_centered": (("chain", "draw", "mu_centered_dim_0"), mu_centered),
            "log_sigma_centered": (("chain", "draw", "log_sigma_centered_dim_0"), log_sigma_centered),
            "mu": (("chain", "draw", "pair"), mu),
            "log_sigma": (("chain", "draw", "pair"), log_sigma),
            "share_competence": (("chain", "draw"), shares[..., 0]),
            "share_model": (("chain", "draw"), shares[..., 1]),
            "share_task": (("chain", "draw"), shares[..., 2]),
            "share_residual": (("chain", "draw"), shares[..., 3]),
            "bayes_r2": (("chain", "draw"), 1.0 - shares[..., 3]),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(draws), "model": model_labels, "task": task_labels, "pair": pair_labels},
    )
    del mu_centered, log_sigma_centered
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    sample_stats = xr.Dataset(
        {
            "diverging": (("chain", "draw"), np.zeros(shape, dtype=bool)),
            "energy": (("chain", "draw"), normal(loc=5.0 * n_pairs, scale=30.0)),
            "step_size": (("chain", "draw"), np.full(shape, 0.2)),
            "depth": (("chain", "draw"), np.full(shape, 5, dtype=np.uint64)),
        },
        coords=coords,
    )
    accuracy = 1.0 / (1.0 + np.exp(-mu.mean(axis=(0, 1))))
    observed = np.abs(rng.normal(0.05, 0.02, n_pairs))
    loglik = normal(n_pairs, loc=rng.normal(-60.0, 10.0, n_pairs), scale=1.0)
    replicated = np.abs(observed + 0.02 * rng.standard_normal((1, chains * draws, n_pairs)))
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": sample_stats,
            "log_likelihood": xr.Dataset({LOGLIK_VARIABLE: (("chain", "draw", "pair"), loglik)}, coords={**coords, "pair": pair_labels}),
            "posterior_predictive": xr.Dataset(
                {"spread": (("chain", "draw", "pair"), replicated)}, coords={"chain": [0], "draw": np.arange(chains * draws), "pair": pair_labels}
            ),
            "observed_data": xr.Dataset({"spread": ("pair", observed)}, coords={"pair": pair_labels}),
            "constant_data": xr.Dataset(
                {
                    "pair_model": ("pair", pair_model),
                    "pair_task": ("pair", pair_task),
                    "pair_perturbations": ("pair", np.full(n_pairs, 10)),
                    "pair_accuracy": ("pair", accuracy),
                    "pair_empirical_logit": ("pair", mu.mean(axis=(0, 1))),
                },
                coords={"pair": pair_labels, "model": model_labels, "task": task_labels},
            ),
        }
    )
    tree.attrs.update(
        {
            "dataset": f"synthetic-{models}x{tasks}",
            "metric": "accuracy",
            "tensor_hash": f"synthetic-{seed}",
            "family": "location-scale",
            "spec_name": "location-scale",
            "spec": json.dumps({"name": "location-scale"}),
            "sampler": "synthetic",
            "seed": seed,
            "chains": chains,
            "draws": draws,
            "tune": 0,
            "competence_center": center,
            "versions": json.dumps({"robustscope": robustscope.__version__}),
            "timings": "{}",
            "manifest": "{}",
            "caveat": "",
            "excluded_pairs": "[]",
        }
    )
    return tree


def time_once(first: xr.DataTree, second: xr.DataTree, skip_compare: bool) -> dict[str, float]:
    """Return the seconds taken by ``write_report`` of ``first`` and by ``compare`` of both fits."""
    from robustscope.report.compare import compare
    from robustscope.report.render import write_report

    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_report(first, Path(folder) / "report")
        timings["render_seconds"] = time.perf_counter() - start
        if not skip_compare:
            start = time.perf_counter()
            compare([first, second], Path(folder) / "compare", labels=["first", "second"])
            timings["compare_seconds"] = time.perf_counter() - start
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000, help="models in each fit (default: 1000)")
    parser.add_argument("--tasks", type=int, default=500, help="tasks in each fit (default: 500)")
    parser.add_argument("--tasks-per-model", type=int, default=20, help="tasks observed per model; at least --tasks crosses every pair (default: 20)")
    parser.add_argument("--chains", type=int, default=2, help="chains (default: 2)")
    parser.add_argument("--draws", type=int, default=100, help="draws per chain (default: 100)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported (default: 3)")
    parser.add_argument("--skip-compare", action="store_true", help="time only the single-fit report")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    first = synthetic_fit(args.models, args.tasks, args.tasks_per_model, args.chains, args.draws, seed=1)
    second = synthetic_fit(args.models, args.tasks, args.tasks_per_model, args.chains, args.draws, seed=2)
    build_seconds = time.perf_counter() - start
    pairs = first["constant_data"].sizes["pair"]
    print(f"built two synthetic fits: {args.models} models, {args.tasks} tasks, {pairs} pairs, {args.chains}x{args.draws} draws in {build_seconds:.1f} s")

    runs = []
    for index in range(args.runs):
        timings = time_once(first, second, args.skip_compare)
        runs.append(timings)
        print(f"run {index + 1}: " + ", ".join(f"{key} {value:.1f}" for key, value in timings.items()))
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print("median: " + ", ".join(f"{key} {value:.1f}" for key, value in medians.items()))

    if args.json:
        payload = {
            "robustscope": str(Path(robustscope.__file__).parent),
            "models": args.models,
            "tasks": args.tasks,
            "pairs": int(pairs),
            "chains": args.chains,
            "draws": args.draws,
            "runs": runs,
            "median": medians,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
