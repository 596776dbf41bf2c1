"""Simulate tensors from the location-scale model with known parameters.

Used by the recovery tests, simulation-based calibration and the scaling
benchmarks. The returned truth holds the realised finite-population variance
shares, which is what the fitted shares estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import tensor as _tensor


@dataclass(frozen=True)
class LocationScaleTruth:
    """Generating parameters of a simulated location-scale tensor (logit and log-spread scales)."""

    alpha: float = 0.0
    sd_model: float = 0.8
    sd_task: float = 0.8
    sd_model_task: float = 0.5
    gamma0: float = -1.0
    gamma1: float = -0.4
    sd_u: float = 0.35
    sd_v: float = 0.35
    sd_e: float = 0.2


def _zero_sum(rng: np.random.Generator, size: int, sd: float) -> np.ndarray:
    values = rng.normal(0.0, sd, size)
    return values - values.mean()


def simulate_location_scale(
    models: int = 8,
    tasks: int = 8,
    perturbations: int = 30,
    n_examples: int = 100,
    truth: LocationScaleTruth = LocationScaleTruth(),
    seed: int = 0,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Simulate counts ``k[m,t,c] ~ Binomial(n, inv_logit(mu[m,t] + sigma[m,t] z[m,t,c]))``.

    Returns the tensor (crossed perturbation labels ``p0``, ``p1``, ...) and
    a dictionary with the parameters and the realised variance shares of
    ``log sigma`` (keys ``share_competence``, ``share_model``,
    ``share_task``, ``share_residual``).
    """
    rng = np.random.default_rng(seed)
    a = _zero_sum(rng, models, truth.sd_model)
    b = _zero_sum(rng, tasks, truth.sd_task)
    ab = rng.normal(0.0, truth.sd_model_task, (models, tasks))
    mu = truth.alpha + a[:, None] + b[None, :] + ab
    center = float(mu.mean())
    u = _zero_sum(rng, models, truth.sd_u)
    v = _zero_sum(rng, tasks, truth.sd_v)
    e = rng.normal(0.0, truth.sd_e, (models, tasks))
    competence = truth.gamma1 * (mu - center)
    log_sigma = truth.gamma0 + competence + u[:, None] + v[None, :] + e
    z = rng.standard_normal((models, tasks, perturbations))
    p = 1.0 / (1.0 + np.exp(-(mu[..., None] + np.exp(log_sigma)[..., None] * z)))
    k = rng.binomial(n_examples, p)

    index = pd.MultiIndex.from_product([[f"model{i}" for i in range(models)], [f"task{j}" for j in range(tasks)], [f"p{c}" for c in range(perturbations)]], names=["model", "task", "perturbation"])
    records = pd.DataFrame({"n_correct": k.ravel(), "n_total": n_examples}, index=index).reset_index()
    ds = _tensor.from_counts(records, dataset="simulated", structure="crossed")

    components = {
        "competence": competence.ravel(),
        "model": np.repeat(u, tasks),
        "task": np.tile(v, models),
        "residual": e.ravel(),
    }
    variances = {name: float(np.var(values)) for name, values in components.items()}
    total = sum(variances.values())
    result: dict[str, Any] = asdict(truth)
    result.update({f"share_{name}": variances[name] / total for name in variances})
    result.update({"mu": mu, "log_sigma": log_sigma, "u": u, "v": v})
    return ds, result
