"""Simulate tensors from the location-scale model with known parameters.

Used by the recovery tests, simulation-based calibration and the scaling
benchmarks. The returned truth holds the realised finite-population variance
shares, which is what the fitted shares estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit

from . import tensor as _tensor
from .errors import RobustscopeError
from .specs import ModelSpec, Prior


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


def zero_sum_normal(rng: np.random.Generator, shape: int | tuple[int, ...], sd: float) -> np.ndarray:
    """Draw normal effects with standard deviation ``sd`` and centre them to sum to zero along every axis.

    The models' group effects are zero-sum, so simulated truths are too.
    """
    values = rng.normal(0.0, sd, shape)
    for axis in range(values.ndim):
        values = values - values.mean(axis=axis, keepdims=True)
    return values


def simulate_location_scale(
    models: int = 8,
    tasks: int = 8,
    perturbations: int = 30,
    n_examples: int = 100,
    truth: LocationScaleTruth = LocationScaleTruth(),
    seed: int = 0,
    competence_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Simulate counts ``k[m,t,c] ~ Binomial(n, inv_logit(mu[m,t] + sigma[m,t] z[m,t,c]))``.

    Returns the tensor (crossed perturbation labels ``p0``, ``p1``, ...) and
    a dictionary with the parameters and the realised variance shares of
    ``log sigma`` (keys ``share_competence``, ``share_model``,
    ``share_task``, ``share_residual``). ``competence_fn``, when given,
    replaces the linear competence term ``gamma1 * (mu - c0)`` by
    ``competence_fn(mu - c0)`` (for checks of the spline form).
    """
    rng = np.random.default_rng(seed)
    a = zero_sum_normal(rng, models, truth.sd_model)
    b = zero_sum_normal(rng, tasks, truth.sd_task)
    ab = rng.normal(0.0, truth.sd_model_task, (models, tasks))
    mu = truth.alpha + a[:, None] + b[None, :] + ab
    center = float(mu.mean())
    u = zero_sum_normal(rng, models, truth.sd_u)
    v = zero_sum_normal(rng, tasks, truth.sd_v)
    e = rng.normal(0.0, truth.sd_e, (models, tasks))
    competence = truth.gamma1 * (mu - center) if competence_fn is None else competence_fn(mu - center)
    log_sigma = truth.gamma0 + competence + u[:, None] + v[None, :] + e
    z = rng.standard_normal((models, tasks, perturbations))
    p = expit(mu[..., None] + np.exp(log_sigma)[..., None] * z)
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
    result.update({"mu": mu, "log_sigma": log_sigma, "u": u, "v": v, "competence_center": center})
    return ds, result


def draw_prior(prior: Prior, rng: np.random.Generator) -> float:
    """Draw one value from a specification prior."""
    if prior.dist == "normal":
        return float(rng.normal(prior.mu, prior.sigma))
    if prior.dist == "halfnormal":
        return float(abs(rng.normal(0.0, prior.sigma)))
    if prior.dist == "exponential":
        return float(rng.exponential(1.0 / prior.lam))
    raise RobustscopeError(f"unsupported prior distribution {prior.dist!r}")


def simulate_location_scale_from_prior(
    spec: ModelSpec,
    rng: np.random.Generator,
    models: int = 8,
    tasks: int = 8,
    perturbations: int = 10,
    n_examples: int = 100,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Draw the location-scale hyperparameters from ``spec``'s priors and simulate a tensor.

    Used by simulation-based calibration: the fitted posterior of each
    parameter should rank its true value uniformly across many such draws.
    Terms the specification leaves out are set to zero.
    """
    values = {name: draw_prior(spec.prior(name), rng) for name in asdict(LocationScaleTruth())}
    if "competence" not in spec.scale_terms or spec.competence == "none":
        values["gamma1"] = 0.0
    for term, name in (("model", "sd_u"), ("task", "sd_v"), ("residual", "sd_e")):
        if term not in spec.scale_terms:
            values[name] = 0.0
    for term, name in (("model", "sd_model"), ("task", "sd_task"), ("model:task", "sd_model_task")):
        if term not in spec.location_terms:
            values[name] = 0.0
    seed = int(rng.integers(2**31))
    return simulate_location_scale(models, tasks, perturbations, n_examples, LocationScaleTruth(**values), seed=seed)
