"""A DataTree with the layout of a location-scale fit, filled with random draws (no sampling).

Report tests use it to render large or many fits quickly. The draws have
the structure of a fit (log sigma built from gamma0, gamma1, u and v) but
come from a random number generator, so only rendering and bookkeeping can
be tested with them, not statistics.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from robustscope.fit import LOGLIK_VARIABLE


def fake_fit(models: int, tasks: int, pairs_per_model: int, seed: int, chains: int = 2, draws: int = 50) -> xr.DataTree:
    """Build a DataTree with a fit's layout from random draws (no sampling)."""
    rng = np.random.default_rng(seed)
    model_labels = [f"m{i}" for i in range(models)]
    task_labels = [f"t{j}" for j in range(tasks)]
    pair_model = np.repeat(np.arange(models), pairs_per_model)
    pair_task = np.concatenate([rng.choice(tasks, pairs_per_model, replace=False) for _ in range(models)])
    n_pairs = len(pair_model)
    pair_labels = [f"{model_labels[m]} | {task_labels[t]}" for m, t in zip(pair_model, pair_task, strict=True)]
    shape = (chains, draws)

    def draws_of(*extra: int, scale: float = 1.0, loc: float = 0.0) -> np.ndarray:
        return loc + scale * rng.standard_normal(shape + extra)

    u = draws_of(models, scale=0.3)
    v = draws_of(tasks, scale=0.3)
    mu = draws_of(n_pairs, scale=0.05) + rng.normal(0.0, 1.0, n_pairs)
    gamma0 = draws_of(scale=0.05, loc=-1.0)
    gamma1 = draws_of(scale=0.05, loc=-0.4)
    log_sigma = gamma0[..., None] + gamma1[..., None] * mu + u[..., pair_model] + v[..., pair_task] + draws_of(n_pairs, scale=0.1)
    shares = rng.dirichlet([4, 2, 2, 1], size=shape)
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    posterior = xr.Dataset(
        {
            "alpha": (("chain", "draw"), draws_of(scale=0.05)),
            "gamma0": (("chain", "draw"), gamma0),
            "gamma1": (("chain", "draw"), gamma1),
            "sd_u": (("chain", "draw"), np.abs(draws_of(scale=0.05, loc=0.3))),
            "sd_v": (("chain", "draw"), np.abs(draws_of(scale=0.05, loc=0.3))),
            "sd_e": (("chain", "draw"), np.abs(draws_of(scale=0.02, loc=0.1))),
            "u_model": (("chain", "draw", "model"), u),
            "v_task": (("chain", "draw", "task"), v),
            "mu": (("chain", "draw", "pair"), mu),
            "log_sigma": (("chain", "draw", "pair"), log_sigma),
            "share_competence": (("chain", "draw"), shares[..., 0]),
            "share_model": (("chain", "draw"), shares[..., 1]),
            "share_task": (("chain", "draw"), shares[..., 2]),
            "share_residual": (("chain", "draw"), shares[..., 3]),
            "bayes_r2": (("chain", "draw"), 1.0 - shares[..., 3]),
        },
        coords={**coords, "model": model_labels, "task": task_labels, "pair": pair_labels},
    )
    sample_stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros(shape, dtype=bool)), "energy": (("chain", "draw"), draws_of(scale=3.0, loc=100.0))},
        coords=coords,
    )
    loglik = xr.DataArray(draws_of(n_pairs, scale=0.3, loc=-5.0), dims=("chain", "draw", "pair"), coords={**coords, "pair": pair_labels})
    observed = np.abs(rng.normal(0.05, 0.02, n_pairs))
    replicated = np.abs(observed + 0.02 * rng.standard_normal((1, 200, n_pairs)))
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": sample_stats,
            "log_likelihood": xr.Dataset({LOGLIK_VARIABLE: loglik}),
            "posterior_predictive": xr.Dataset({"spread": (("chain", "draw", "pair"), replicated)}, coords={"pair": pair_labels}),
            "observed_data": xr.Dataset({"spread": ("pair", observed)}, coords={"pair": pair_labels}),
            "constant_data": xr.Dataset(
                {
                    "pair_model": ("pair", pair_model),
                    "pair_task": ("pair", pair_task),
                    "pair_perturbations": ("pair", np.full(n_pairs, 10)),
                    "pair_accuracy": ("pair", rng.uniform(0, 1, n_pairs)),
                    "pair_empirical_logit": ("pair", mu.mean((0, 1))),
                },
                coords={"pair": pair_labels, "model": model_labels, "task": task_labels},
            ),
        }
    )
    tree.attrs.update(
        {
            "dataset": f"fake-{seed}",
            "metric": "accuracy",
            "tensor_hash": f"fake{seed}",
            "spec_name": "location-scale",
            "spec": json.dumps({"name": "location-scale"}),
            "sampler": "none",
            "seed": seed,
            "chains": chains,
            "draws": draws,
            "tune": 0,
            "competence_center": 0.0,
            "versions": json.dumps({"robustscope": "test"}),
            "timings": "{}",
            "manifest": "{}",
            "caveat": "",
        }
    )
    return tree
