"""The hierarchical location-scale binomial model.

For model ``m``, task ``t`` and perturbation ``c``::

    n_correct[m,t,c] ~ Binomial(n_total[m,t,c], inv_logit(mu[m,t] + sigma[m,t] * z[m,t,c])),  z ~ Normal(0, 1)
    mu[m,t]          = alpha + a[m] + b[t] + ab[m,t]                      (competence, logit scale)
    log sigma[m,t]   = gamma0 + gamma1 * (mu[m,t] - c0) + u[m] + v[t] + e[m,t]

``sigma[m,t]`` is the spread of the task's accuracy across perturbations on
the logit scale: small sigma means robust. The competence covariate is the
latent logit ``mu[m,t]`` (centred at the fixed constant ``c0``, the mean
empirical logit of the data), not the observed accuracy: on the probability
scale the binomial spread shrinks mechanically near 0 and 1, so a regression
on accuracy would find "robustness" that is only the floor and ceiling of a
proportion. On the logit scale a constant sigma means the same perturbation
sensitivity at every competence level, so ``gamma1`` measures how much
robustness changes with competence beyond that mechanical effect. Because
``mu`` is a parameter, its uncertainty propagates into ``gamma1`` (errors in
variables).

Likelihoods:

* ``binomial-collapsed`` (default): the exact binomial likelihood with each
  perturbation's ``z`` integrated out by adaptive Gauss-Hermite quadrature
  (:mod:`robustscope.models.quadrature`). Cells of one (model, task) pair
  with the same counts have the same likelihood, so each distinct
  ``(pair, n, k)`` is computed once and weighted by its multiplicity. This
  removes the tens of thousands of per-cell latent variables that make the
  exact model slow and hard to sample.
* ``normal-logit``: the empirical logit ``log((k + 0.5) / (n - k + 0.5))`` of
  each cell is normal with variance ``sigma^2`` plus the binomial sampling
  variance. Fast, but the +0.5 correction pulls accuracies of 0 and 1
  inwards, which biases competence and spread for pairs near the floor or
  ceiling. Kept for comparison.

Model, task and model-by-task effects are zero-sum (``ZeroSumNormal``), so
``alpha`` and ``gamma0`` are the grand means and the effects are deviations
from them.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import RobustscopeError
from ..specs import ModelSpec, Prior
from .quadrature import marginal_logp

log = get_logger("models.location_scale")


@dataclass
class LocationScaleData:
    """Arrays the location-scale model is built from.

    A *pair* is an observed (model, task) combination. Cells are the
    observed (model, task, perturbation) combinations; ``unique_*`` arrays
    hold each distinct (pair, n_total, n_correct) once with its multiplicity.
    """

    models: list[str]
    tasks: list[str]
    pair_model: np.ndarray
    pair_task: np.ndarray
    cell_pair: np.ndarray
    cell_k: np.ndarray
    cell_n: np.ndarray
    unique_pair: np.ndarray
    unique_k: np.ndarray
    unique_n: np.ndarray
    unique_count: np.ndarray
    competence_center: float
    pair_empirical_logit: np.ndarray
    pair_perturbations: np.ndarray
    pair_boundary_share: np.ndarray
    pair_excess_variance: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_model)

    @property
    def pair_labels(self) -> list[str]:
        return [f"{self.models[m]} | {self.tasks[t]}" for m, t in zip(self.pair_model, self.pair_task, strict=True)]

    def pair_index(self) -> pd.DataFrame:
        """Return a table of pairs: ``pair`` label, ``model`` and ``task``."""
        return pd.DataFrame(
            {
                "pair": self.pair_labels,
                "model": [self.models[m] for m in self.pair_model],
                "task": [self.tasks[t] for t in self.pair_task],
            }
        )


def empirical_logit(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Return ``log((k + 0.5) / (n - k + 0.5))``, the logit with the usual half-count correction."""
    return np.log((k + 0.5) / (n - k + 0.5))


def prepare_data(ds: xr.Dataset, *, min_perturbations: int = 2) -> LocationScaleData:
    """Collect the observed cells of a binary-metric tensor into model arrays.

    Pairs observed under fewer than ``min_perturbations`` perturbations carry
    no information about spread and are excluded (they are logged and listed
    in ``extras["excluded_pairs"]``).

    Raises
    ------
    RobustscopeError
        When the tensor contains a continuous metric (the binomial likelihood
        needs counts) or fewer than two models or tasks remain.
    """
    if ds.attrs.get("metric_kind") != "binary" or "n_correct" not in ds:
        raise RobustscopeError(
            f"the location-scale model needs counts of correct answers, but tensor {ds.attrs.get('dataset')!r} "
            f"holds the continuous metric {ds.attrs.get('metric')!r}; ingest counts (for example with n_examples=) instead"
        )
    cells = _tensor.observed_cells(ds)
    per_pair = cells.groupby(["model", "task"], sort=False).size()
    too_few = per_pair[per_pair < min_perturbations]
    if len(too_few):
        log.warning(
            "%d (model, task) pairs have fewer than %d perturbations and are left out of the model",
            len(too_few),
            min_perturbations,
        )
        keep = cells.set_index(["model", "task"]).index.isin(per_pair[per_pair >= min_perturbations].index)
        cells = cells.loc[keep]
    # Build each set once: inside the comprehension it would be rebuilt per label.
    observed_models = set(cells["model"].unique())
    observed_tasks = set(cells["task"].unique())
    models = [m for m in ds["model"].values.tolist() if m in observed_models]
    tasks = [t for t in ds["task"].values.tolist() if t in observed_tasks]
    if len(models) < 2 or len(tasks) < 2:
        raise RobustscopeError(
            f"the location-scale model needs at least two models and two tasks with observed cells; found {len(models)} models and {len(tasks)} tasks"
        )

    model_code = pd.Categorical(cells["model"], categories=models).codes
    task_code = pd.Categorical(cells["task"], categories=tasks).codes
    pair_key = model_code.astype(np.int64) * len(tasks) + task_code
    pair_values, cell_pair = np.unique(pair_key, return_inverse=True)
    pair_model = (pair_values // len(tasks)).astype(np.int64)
    pair_task = (pair_values % len(tasks)).astype(np.int64)
    cell_k = cells["n_correct"].to_numpy(np.int64)
    cell_n = cells["n_total"].to_numpy(np.int64)

    stacked = np.stack([cell_pair, cell_n, cell_k], axis=1)
    unique_rows, unique_count = np.unique(stacked, axis=0, return_counts=True)
    logits = empirical_logit(cell_k, cell_n)
    counts = np.bincount(cell_pair)
    pair_logit = np.bincount(cell_pair, weights=logits) / counts
    boundary = (cell_k == 0) | (cell_k == cell_n)
    accuracy = cell_k / cell_n
    pair_accuracy = np.bincount(cell_pair, weights=accuracy) / counts
    observed_variance = np.bincount(cell_pair, weights=(accuracy - pair_accuracy[cell_pair]) ** 2) / np.maximum(counts - 1, 1)
    binomial_variance = np.bincount(cell_pair, weights=accuracy * (1 - accuracy) / cell_n) / counts
    return LocationScaleData(
        models=models,
        tasks=tasks,
        pair_model=pair_model,
        pair_task=pair_task,
        cell_pair=cell_pair.astype(np.int64),
        cell_k=cell_k,
        cell_n=cell_n,
        unique_pair=unique_rows[:, 0],
        unique_k=unique_rows[:, 2],
        unique_n=unique_rows[:, 1],
        unique_count=unique_count.astype(np.int64),
        competence_center=float(np.mean(pair_logit)),
        pair_empirical_logit=pair_logit,
        pair_perturbations=counts,
        pair_boundary_share=np.bincount(cell_pair, weights=boundary) / counts,
        pair_excess_variance=observed_variance / np.maximum(binomial_variance, 1e-12),
        extras={"excluded_pairs": [f"{m} | {t}" for m, t in too_few.index]},
    )


# A pair's spread is weakly identified when its accuracies vary across
# perturbations by less than twice the binomial sampling variance, when half
# or more of its cells are at 0 or n correct answers, or when it has too few
# cells for its spread to be estimated at all (see scale_information).
WEAK_EXCESS_VARIANCE = 2.0
WEAK_BOUNDARY_SHARE = 0.5
MIN_SCALE_INFORMATION = 8.0


def scale_information(data: LocationScaleData) -> np.ndarray:
    """Return an approximate Fisher information of each pair's cells about its ``log_sigma``.

    With the cells' logits treated as normal with variance ``sigma^2 + v``
    (``v`` the binomial sampling variance), one cell carries ``2 f^2`` units
    of information about ``log sigma``, where ``f = sigma^2 / (sigma^2 + v)``
    is the share of the cell variance that the perturbations add. ``f`` is
    estimated from the pair's excess variance ratio ``R`` as ``1 - 1 / R``
    (0 when ``R <= 1``), and one cell's worth goes to the pair's location, so
    a pair with ``K`` cells has ``2 (K - 1) f^2``. Three cells give at most 4,
    a posterior SD of at least 0.5 on ``log sigma`` from the data alone.
    """
    share = np.clip(1.0 - 1.0 / np.maximum(data.pair_excess_variance, 1e-12), 0.0, 1.0)
    return 2.0 * np.maximum(data.pair_perturbations - 1, 0) * share**2


def weakly_identified(data: LocationScaleData) -> tuple[np.ndarray, np.ndarray]:
    """Return boolean masks of pairs whose ``mu`` and whose ``log_sigma`` the data identify weakly.

    Weakly identified parameters are sampled non-centred (their posterior is
    close to the hierarchical prior, which a centred parameterization turns
    into a funnel) and the others centred (their likelihood is sharp, which a
    non-centred parameterization turns into a narrow ridge). A pair's
    ``log_sigma`` is weak when its excess variance ratio is below
    ``WEAK_EXCESS_VARIANCE`` or its :func:`scale_information` is below
    ``MIN_SCALE_INFORMATION`` (posterior SD above about 0.35 from the data
    alone), which is true of every pair with three or fewer cells.
    """
    weak_location = data.pair_boundary_share >= WEAK_BOUNDARY_SHARE
    weak_scale = (
        weak_location
        | (data.pair_excess_variance < WEAK_EXCESS_VARIANCE)
        | (scale_information(data) < MIN_SCALE_INFORMATION)
    )
    return weak_location, weak_scale


# Under "auto", a spread effect block (u per model, v per task) is centred when
# the median model or task has at least this many pairs behind its effect.
AUTO_MIN_PAIRS = 50


def noncentered_spread_effects(data: LocationScaleData, spec: ModelSpec) -> dict[str, bool]:
    """Return whether the spread effects ``u_model`` and ``v_task`` are sampled non-centred.

    Under ``parameterization: auto`` each block is non-centred unless the
    median number of pairs behind one of its effects reaches
    ``AUTO_MIN_PAIRS``. A spread effect depends on the data only through the
    spreads of its pairs, each estimated with error. With few pairs per
    effect its posterior stays close to the hierarchical prior, the funnel
    case. With many (HELM classic: about 58 pairs per task, three cells per
    pair) the centred form mixes better: non-centred, its standard deviation
    mixed slowly there (R-hat 1.06 at 4 x 1,000 draws).
    """
    if spec.parameterization != "auto":
        noncentered = spec.parameterization == "noncentered"
        return {"u_model": noncentered, "v_task": noncentered}
    per_model = np.median(np.bincount(data.pair_model, minlength=len(data.models)))
    per_task = np.median(np.bincount(data.pair_task, minlength=len(data.tasks)))
    return {"u_model": bool(per_model < AUTO_MIN_PAIRS), "v_task": bool(per_task < AUTO_MIN_PAIRS)}


def noncentered_pairs(data: LocationScaleData, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Return boolean masks of the pairs whose ``mu`` and ``log_sigma`` the model samples non-centred."""
    if spec.parameterization == "auto":
        return weakly_identified(data)
    weak = np.full(data.n_pairs, spec.parameterization == "noncentered")
    return weak, weak


def pair_log_spread(data: LocationScaleData, floor: float = 0.05) -> np.ndarray:
    """Return a moment estimate of each pair's log spread on the logit scale.

    The variance of the cells' empirical logits, less the binomial sampling
    variance of an empirical logit, ``1 / (k + 0.5) + 1 / (n - k + 0.5)``, is
    the variance the perturbations add. The spread is floored at ``floor``
    logits, because the difference is often zero or negative for pairs that
    barely vary.
    """
    logits = empirical_logit(data.cell_k, data.cell_n)
    counts = data.pair_perturbations
    deviation = logits - data.pair_empirical_logit[data.cell_pair]
    variance = np.bincount(data.cell_pair, weights=deviation**2, minlength=data.n_pairs) / np.maximum(counts - 1, 1)
    noise = 1.0 / (data.cell_k + 0.5) + 1.0 / (data.cell_n - data.cell_k + 0.5)
    sampling = np.bincount(data.cell_pair, weights=noise, minlength=data.n_pairs) / counts
    return 0.5 * np.log(np.maximum(variance - sampling, floor**2))


def initial_point(data: LocationScaleData, spec: ModelSpec, model: pm.Model) -> dict[str, np.ndarray]:
    """Return starting values for the sampler taken from the data.

    Each centred pair starts at its empirical logit and at its moment
    estimate of log spread (:func:`pair_log_spread`), and ``alpha`` and
    ``gamma0`` start at the means of those. Every other parameter starts at its
    prior's support point. The sampler adds its usual jitter to all of them,
    so chains still start apart. From the support point every pair starts at
    competence 0, far from pairs with accuracy near 0 or 1. On the
    multi-prompt data, one chain of each of two fits started that way
    stalled, still running after 30 and 9 minutes. From these values both
    fits finish with 15 leapfrog steps per draw in every chain.
    """
    weak_location, weak_scale = noncentered_pairs(data, spec)
    logit = np.clip(data.pair_empirical_logit, -6.0, 6.0)
    log_spread = np.clip(pair_log_spread(data), -3.0, 1.5)
    values = {
        "alpha": np.asarray(float(np.mean(logit))),
        "gamma0": np.asarray(float(np.mean(log_spread))),
        "mu_centered": logit[~weak_location],
        "log_sigma_centered": log_spread[~weak_scale],
    }
    free = {rv.name for rv in model.free_RVs}
    return {name: value for name, value in values.items() if name in free and np.size(value)}


def _mixed_normal(name: str, loc: pt.TensorVariable, sd: pt.TensorVariable, weak: np.ndarray, n: int) -> pt.TensorVariable:
    """Normal(loc, sd) per pair: centred where ``weak`` is False, non-centred where True."""
    strong_index = np.flatnonzero(~weak)
    weak_index = np.flatnonzero(weak)
    value = pt.zeros(n)
    if len(strong_index):
        centred = pm.Normal(f"{name}_centered", mu=loc[strong_index], sigma=sd, shape=len(strong_index))
        value = pt.set_subtensor(value[strong_index], centred)
    if len(weak_index):
        raw = pm.Normal(f"{name}_raw", 0.0, 1.0, shape=len(weak_index))
        value = pt.set_subtensor(value[weak_index], loc[weak_index] + sd * raw)
    return pm.Deterministic(name, value, dims="pair")


def _prior(name: str, spec: ModelSpec, **kwargs: Any) -> pt.TensorVariable:
    prior: Prior = spec.prior(name)
    if prior.dist == "normal":
        return pm.Normal(name, mu=prior.mu, sigma=prior.sigma, **kwargs)
    if prior.dist == "halfnormal":
        return pm.HalfNormal(name, sigma=prior.sigma, **kwargs)
    if prior.dist == "exponential":
        return pm.Exponential(name, lam=prior.lam, **kwargs)
    raise RobustscopeError(f"unsupported prior distribution {prior.dist!r} for {name!r}")


def _group_effect(name: str, sd_name: str, dim: str, spec: ModelSpec, noncentered: bool) -> pt.TensorVariable:
    sd = _prior(sd_name, spec)
    if noncentered:
        raw = pm.ZeroSumNormal(f"{name}_raw", sigma=1.0, dims=dim)
        return pm.Deterministic(name, sd * raw, dims=dim)
    return pm.ZeroSumNormal(name, sigma=sd, dims=dim)


def latent_competence(spec: ModelSpec, pair_model: np.ndarray, pair_task: np.ndarray, weak: np.ndarray, noncentered: bool) -> pt.TensorVariable:
    """Add the competence submodel to the PyMC model in context and return ``mu`` (logit scale, one per pair).

    ``mu[m,t] = alpha + a[model] + b[task] + ab[m,t]`` with the terms the
    specification lists. ``weak`` marks pairs whose ``ab`` is sampled
    non-centred; ``noncentered`` applies to the model and task effects.
    """
    n_pairs = len(pair_model)
    alpha = _prior("alpha", spec)
    location = alpha + pt.zeros(n_pairs)
    if "model" in spec.location_terms:
        location = location + _group_effect("a_model", "sd_model", "model", spec, noncentered)[pair_model]
    if "task" in spec.location_terms:
        location = location + _group_effect("b_task", "sd_task", "task", spec, noncentered)[pair_task]
    if "model:task" in spec.location_terms:
        sd_pair = _prior("sd_model_task", spec)
        return _mixed_normal("mu", location, sd_pair, weak, n_pairs)
    return pm.Deterministic("mu", location, dims="pair")


def build_model(data: LocationScaleData, spec: ModelSpec) -> pm.Model:
    """Return the PyMC model for ``data`` as ``spec`` declares it.

    Parameters are on the logit scale (``mu``, ``alpha``, ``a_model``,
    ``b_task``) and on the log scale of the logit spread (``log_sigma``,
    ``gamma0``, ``gamma1`` per logit of competence, ``u_model``, ``v_task``).
    """
    knots, width = spline_basis(data, spec)
    coords = {"model": data.models, "task": data.tasks, "pair": data.pair_labels}
    if len(knots):
        coords["knot"] = [f"{k:.3f}" for k in knots]
    # "auto": every cell of a model or task informs the competence effects a
    # and b, so they sample best centred. The spread effects u and v see the
    # data only through each pair's spread, so they are non-centred unless
    # many pairs stand behind each effect (noncentered_spread_effects).
    location_noncentered = spec.parameterization == "noncentered"
    spread_noncentered = noncentered_spread_effects(data, spec)
    weak_location, weak_scale = noncentered_pairs(data, spec)
    pair_model = data.pair_model
    pair_task = data.pair_task
    with pm.Model(coords=coords) as model:
        pm.Data("pair_model", pair_model, dims="pair")
        pm.Data("pair_task", pair_task, dims="pair")

        # Location: competence on the logit scale.
        mu = latent_competence(spec, pair_model, pair_task, weak_location, location_noncentered)

        # Scale: log of the logit spread across perturbations.
        gamma0 = _prior("gamma0", spec)
        scale = gamma0 + pt.zeros(data.n_pairs)
        if "competence" in spec.scale_terms and spec.competence in ("linear", "spline"):
            gamma1 = _prior("gamma1", spec)
            coefficients = None
            if spec.competence == "spline":
                # Penalised smooth-hinge spline: each knot may bend the line, and
                # sd_spline shrinks the bends towards a straight line.
                sd_spline = _prior("sd_spline", spec)
                raw = pm.Normal("spline_raw", 0.0, 1.0, dims="knot")
                coefficients = pm.Deterministic("spline_coef", sd_spline * raw, dims="knot")
            detrend = spline_detrend(data, knots, width)
            term = competence_term(mu, gamma1, coefficients, knots, width, data.competence_center, xp=pt, detrend=detrend)
            pm.Deterministic("competence_term", term, dims="pair")
            scale = scale + term
        if "model" in spec.scale_terms:
            scale = scale + _group_effect("u_model", "sd_u", "model", spec, spread_noncentered["u_model"])[pair_model]
        if "task" in spec.scale_terms:
            scale = scale + _group_effect("v_task", "sd_v", "task", spec, spread_noncentered["v_task"])[pair_task]
        if "residual" in spec.scale_terms:
            sd_e = _prior("sd_e", spec)
            log_sigma = _mixed_normal("log_sigma", scale, sd_e, weak_scale, data.n_pairs)
        else:
            log_sigma = pm.Deterministic("log_sigma", scale, dims="pair")

        pm.Potential("likelihood", pt.sum(pair_loglik(mu, log_sigma, data, spec, xp=pt)))
    return model


def spline_basis(data: LocationScaleData, spec: ModelSpec) -> tuple[np.ndarray, float]:
    """Return the interior knots (logit scale) and the hinge width of the competence spline.

    Knots sit at evenly spaced quantiles of the pairs' empirical logits, so
    each span between knots holds about the same number of pairs. The width
    (a quarter of the mean knot spacing) smooths each hinge so the posterior
    stays differentiable. Returns no knots for a linear competence term.
    """
    if spec.competence != "spline" or "competence" not in spec.scale_terms:
        return np.zeros(0), 1.0
    probabilities = np.arange(1, spec.spline_knots + 1) / (spec.spline_knots + 1)
    knots = np.unique(np.quantile(data.pair_empirical_logit, probabilities))
    if len(knots) < 2:
        raise RobustscopeError("the competence spline needs pairs at two or more distinct competence levels; use competence: linear")
    width = float(max(0.25 * np.mean(np.diff(knots)), 0.05))
    return knots, width


def competence_term(
    x: Any,
    gamma1: Any,
    coefficients: Any,
    knots: np.ndarray,
    width: float,
    center: float,
    xp: Any = np,
    detrend: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Return the competence term of ``log sigma`` at competence ``x`` (logit scale).

    ``gamma1 * (x - c0)`` plus, for a spline, ``sum_j beta_j * g_j(x)``. Each
    basis function is the smooth hinge ``h(z) = width * softplus(z / width)``
    at knot ``k_j`` with its straight-line trend over the pairs taken out:
    ``g_j(x) = h(x - k_j) - offset_j - slope_j (x - c0)`` (``detrend`` holds
    the offsets and slopes, see :func:`spline_detrend`). So ``gamma1`` stays
    the overall linear slope, as in the linear form, and the ``beta_j`` only
    bend the curve around it. Without ``detrend`` (fits saved before it
    existed) the plain hinges are used: the slope is ``gamma1`` below the
    first knot and changes by ``beta_j`` at each knot. With NumPy arrays,
    ``gamma1`` and ``coefficients`` may carry leading draw axes that
    broadcast against ``x``.
    """
    term = gamma1 * (x - center)
    if coefficients is None or len(knots) == 0:
        return term
    offsets, slopes = detrend if detrend is not None else (np.zeros(len(knots)), np.zeros(len(knots)))
    if xp is np:
        shifted = np.asarray(x)[..., None]
        basis = width * np.logaddexp(0.0, (shifted - knots) / width) - offsets - slopes * (shifted - center)
        return term + np.sum(np.asarray(coefficients) * basis, axis=-1)
    shifted = x[:, None]
    basis = width * pt.softplus((shifted - knots[None, :]) / width) - offsets[None, :] - slopes[None, :] * (shifted - center)
    return term + pt.sum(coefficients[None, :] * basis, axis=1)


def spline_detrend(data: LocationScaleData, knots: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the intercepts and slopes of each hinge's least-squares line over the pairs.

    The line is fitted to ``h(e_p - k_j)`` against ``e_p - c0`` at the pairs'
    empirical logits ``e_p``. Subtracting it makes each basis function
    uncorrelated with the linear term over the observed pairs. So the
    posterior does not trade ``gamma1`` against the spline coefficients. With
    plain hinges ``gamma1`` is the slope below the first knot, strongly
    correlated with every coefficient.
    """
    if len(knots) == 0:
        return np.zeros(0), np.zeros(0)
    e = np.asarray(data.pair_empirical_logit, dtype=float)
    design = np.column_stack([np.ones_like(e), e - data.competence_center])
    hinges = width * np.logaddexp(0.0, (e[:, None] - knots[None, :]) / width)
    solution, *_ = np.linalg.lstsq(design, hinges, rcond=None)
    return solution[0], solution[1]


def spline_from_attrs(attrs: Any) -> tuple[np.ndarray, float, tuple[np.ndarray, np.ndarray] | None]:
    """Return a fit's spline knots, hinge width and detrending from its attributes."""
    knots = np.asarray(json.loads(attrs.get("spline_knots", "[]")), dtype=float)
    width = float(attrs.get("spline_width", 1.0))
    detrend = None
    if "spline_offsets" in attrs and "spline_slopes" in attrs:
        detrend = (np.asarray(json.loads(attrs["spline_offsets"]), dtype=float), np.asarray(json.loads(attrs["spline_slopes"]), dtype=float))
    return knots, width, detrend


def competence_curve(posterior: Any, grid: np.ndarray, attrs: Any) -> np.ndarray:
    """Return ``gamma0 + competence term`` on ``grid`` for each draw: shape (draws, grid points).

    Works for the linear and the spline form; ``attrs`` are the fit's
    attributes (``competence_center`` and the spline's knots, width and
    detrending).
    """
    gamma0 = np.asarray(posterior["gamma0"]).reshape(-1)
    gamma1 = np.asarray(posterior["gamma1"]).reshape(-1) if "gamma1" in posterior else np.zeros_like(gamma0)
    center = float(attrs.get("competence_center", 0.0))
    knots, width, detrend = spline_from_attrs(attrs)
    coefficients = None
    if len(knots) and "spline_coef" in posterior:
        coefficients = np.asarray(posterior["spline_coef"]).reshape(len(gamma0), 1, len(knots))
    term = competence_term(np.asarray(grid)[None, :], gamma1[:, None], coefficients, knots, width, center, detrend=detrend)
    return gamma0[:, None] + term


def pair_loglik(mu: Any, log_sigma: Any, data: LocationScaleData, spec: ModelSpec, xp: Any = np) -> Any:
    """Return the log likelihood of each pair's cells, summed within the pair.

    ``mu`` and ``log_sigma`` have the pair axis last (NumPy arrays may carry
    leading draw axes). With ``xp=numpy`` this is the pointwise log
    likelihood used for PSIS-LOO, with one observation per (model, task)
    pair.
    """
    if spec.likelihood == "binomial-collapsed":
        per_unique = marginal_logp(
            mu[..., data.unique_pair], log_sigma[..., data.unique_pair], data.unique_k, data.unique_n, spec.quadrature_nodes, xp
        )
        per_unique = per_unique * data.unique_count
        index = data.unique_pair
    else:
        y = empirical_logit(data.cell_k, data.cell_n)
        variance = 1.0 / ((data.cell_k + 0.5) * (data.cell_n - data.cell_k + 0.5) / (data.cell_n + 1.0))
        total_var = xp.exp(2.0 * log_sigma[..., data.cell_pair]) + variance
        per_unique = -0.5 * (np.log(2 * np.pi) + xp.log(total_var) + (y - mu[..., data.cell_pair]) ** 2 / total_var)
        index = data.cell_pair
    if xp is np:
        out = np.zeros(per_unique.shape[:-1] + (data.n_pairs,))
        np.add.at(out, (..., index), per_unique)
        return out
    return pt.zeros(data.n_pairs)[index].inc(per_unique)


# Gauss-Hermite points for a pair's latent competence and for its log spread.
# The spread needs more: a weakly informed pair's posterior of log sigma is
# wider than the band N(scale(mu), sd_e) that one draw puts it in.
INTEGRATION_NODES = (9, 35)


def integrated_pair_loglik(
    posterior: xr.Dataset,
    data: LocationScaleData,
    spec: ModelSpec,
    *,
    nodes: tuple[int, int] = INTEGRATION_NODES,
    chunk_elements: int = 4_000_000,
) -> np.ndarray:
    """Return each pair's log likelihood with its own latent competence and spread integrated out.

    The conditional pointwise log likelihood ``log p(y_p | mu_p, log_sigma_p)``
    is dominated by the pair's own latent values, so leaving the pair out moves
    them far and PSIS-LOO's importance weights break down (Pareto k above the
    threshold). The integrated form

        log p(y_p | theta) = log ∫∫ p(y_p | mu, s) N(mu | loc_p, sd_model_task) N(s | scale_p(mu), sd_e) dmu ds

    depends on the pair only through the hyperparameters and the model and
    task effects, which one pair barely moves. The integral uses a
    tensor-product Gauss-Hermite rule, centred on each pair's posterior mean of ``(mu, log_sigma)`` and scaled
    by the Cholesky factor of its posterior covariance. The pair's likelihood
    is evaluated once on that fixed grid; only the two normal densities
    change from draw to draw. A latent value that the specification makes
    deterministic (no ``model:task`` location term, or no ``residual`` scale
    term) is not integrated.

    Parameters
    ----------
    posterior
        The fit's posterior with ``mu``, ``log_sigma`` and the parameters of
        both submodels.
    data, spec
        What the fit was built from.
    nodes
        Gauss-Hermite points for ``mu`` and for ``log_sigma``.
    chunk_elements
        Draws are processed in chunks of at most this many (draw, node,
        pair) values, to bound memory (each array of a chunk is 8 bytes per
        value).

    Returns
    -------
    numpy.ndarray
        Shape (chain, draw, pair).
    """
    mu_post = posterior["mu"].transpose("chain", "draw", "pair").values
    ls_post = posterior["log_sigma"].transpose("chain", "draw", "pair").values
    chains, draws, n_pairs = mu_post.shape
    integrate_mu = "model:task" in spec.location_terms
    integrate_ls = "residual" in spec.scale_terms
    flat = {name: posterior[name].values.reshape(chains * draws, *posterior[name].shape[2:]) for name in posterior.data_vars}
    n_draws = chains * draws
    knots, width = spline_basis(data, spec)
    detrend = spline_detrend(data, knots, width)

    def location(start: int, stop: int) -> np.ndarray:
        loc = np.repeat(flat["alpha"][start:stop, None], n_pairs, axis=1)
        if "model" in spec.location_terms:
            loc = loc + flat["a_model"][start:stop][:, data.pair_model]
        if "task" in spec.location_terms:
            loc = loc + flat["b_task"][start:stop][:, data.pair_task]
        return loc

    def scale(start: int, stop: int, mu: np.ndarray, fixed_basis: np.ndarray | None = None) -> np.ndarray:
        # mu: (draws, grid, pair). fixed_basis: the spline basis at mu when mu
        # is the same grid for every draw, so the hinges are computed once.
        out = np.broadcast_to(flat["gamma0"][start:stop, None, None], mu.shape).copy()
        if "competence" in spec.scale_terms and spec.competence in ("linear", "spline"):
            gamma1 = flat["gamma1"][start:stop, None, None]
            coefficients = flat.get("spline_coef")
            coefficients = coefficients[start:stop] if coefficients is not None and len(knots) else None
            if coefficients is not None and fixed_basis is not None:
                out = out + gamma1 * (mu - data.competence_center) + np.einsum("sk,gpk->sgp", coefficients, fixed_basis)
            else:
                spline = coefficients[:, None, None, :] if coefficients is not None else None
                out = out + competence_term(mu, gamma1, spline, knots, width, data.competence_center, detrend=detrend)
        if "model" in spec.scale_terms:
            out = out + flat["u_model"][start:stop][:, None, data.pair_model]
        if "task" in spec.scale_terms:
            out = out + flat["v_task"][start:stop][:, None, data.pair_task]
        return out

    # Values that one evaluation of the likelihood at one point per pair
    # creates: one per count pattern (or cell) and quadrature node.
    patterns = len(data.unique_k) if spec.likelihood == "binomial-collapsed" else len(data.cell_k)
    per_point = max(n_pairs, patterns * spec.quadrature_nodes)

    dims = int(integrate_mu) + int(integrate_ls)
    if dims == 0:
        chunk = max(1, chunk_elements // per_point)
        out = np.empty((n_draws, n_pairs))
        for start in range(0, n_draws, chunk):
            stop = min(start + chunk, n_draws)
            out[start:stop] = pair_loglik(mu_post.reshape(n_draws, n_pairs)[start:stop], ls_post.reshape(n_draws, n_pairs)[start:stop], data, spec)
        return out.reshape(chains, draws, n_pairs)

    # The rule: t on a tensor grid, x = m_p + R_p t with R_p = sqrt(2) chol(C_p);
    # ∫ f(x) dx ≈ |det R_p| Σ_n w_n exp(|t_n|²) f(x_n).
    rules = [np.polynomial.hermite.hermgauss(count) for count, used in zip(nodes, (integrate_mu, integrate_ls), strict=True) if used]
    t = np.stack([g.ravel() for g in np.meshgrid(*[rule[0] for rule in rules], indexing="ij")], axis=-1)  # (grid, dims)
    log_w = sum(np.log(g.ravel()) for g in np.meshgrid(*[rule[1] for rule in rules], indexing="ij")) + np.sum(t**2, axis=1)

    latent = []
    if integrate_mu:
        latent.append(mu_post.reshape(n_draws, n_pairs))
    if integrate_ls:
        latent.append(ls_post.reshape(n_draws, n_pairs))
    stacked = np.stack(latent, axis=-1)  # (draws, pair, dims)
    mean = stacked.mean(axis=0)
    centred = stacked - mean
    covariance = np.einsum("spi,spj->pij", centred, centred) / max(n_draws - 1, 1)
    covariance = covariance + 1e-10 * np.eye(dims)
    root = np.sqrt(2.0) * np.linalg.cholesky(covariance)  # (pair, dims, dims)
    x = mean[None, :, :] + np.einsum("pij,nj->npi", root, t)  # (grid, pair, dims)
    log_det = np.log(np.abs(np.linalg.det(root)))  # (pair,)

    mu_grid = x[..., 0] if integrate_mu else None
    ls_grid = x[..., -1] if integrate_ls else None
    grid_basis = None
    if integrate_mu and len(knots):
        # Each spline basis function at the grid's mu, detrended as in competence_term.
        offsets, slopes = detrend
        shifted = mu_grid[..., None]
        grid_basis = width * np.logaddexp(0.0, (shifted - knots) / width) - offsets - slopes * (shifted - data.competence_center)
    if integrate_mu and integrate_ls:
        # All grid points at once make arrays of (grid x patterns) values,
        # 1.1 GB each at 800,000 cells, so the grid goes a few rows at a time.
        rows = max(1, chunk_elements // per_point)
        likelihood = np.concatenate(
            [pair_loglik(mu_grid[i : i + rows], ls_grid[i : i + rows], data, spec) for i in range(0, len(t), rows)], axis=0
        )  # (grid, pair)

    # With both values integrated the likelihood is already on the grid, and
    # each draw adds (grid x pair) values. Otherwise each draw evaluates it anew.
    chunk = max(1, chunk_elements // (len(t) * (n_pairs if integrate_mu and integrate_ls else per_point)))
    out = np.empty((n_draws, n_pairs))
    for start in range(0, n_draws, chunk):
        stop = min(start + chunk, n_draws)
        log_f = np.zeros((stop - start, len(t), n_pairs))
        if integrate_mu:
            loc = location(start, stop)[:, None, :]
            sd_pair = flat["sd_model_task"][start:stop, None, None]
            log_f += -0.5 * np.log(2 * np.pi) - np.log(sd_pair) - 0.5 * ((mu_grid[None] - loc) / sd_pair) ** 2
            mu_at = np.broadcast_to(mu_grid[None], log_f.shape)
        else:
            mu_at = np.broadcast_to(mu_post.reshape(n_draws, n_pairs)[start:stop, None, :], log_f.shape)
        if integrate_ls:
            sd_e = flat["sd_e"][start:stop, None, None]
            log_f += -0.5 * np.log(2 * np.pi) - np.log(sd_e) - 0.5 * ((ls_grid[None] - scale(start, stop, mu_at, grid_basis)) / sd_e) ** 2
            if integrate_mu:
                log_f += likelihood[None]
            else:
                log_f += pair_loglik(mu_at, np.broadcast_to(ls_grid[None], log_f.shape), data, spec)
        else:
            log_f += pair_loglik(mu_at, scale(start, stop, mu_at, grid_basis), data, spec)
        terms = log_f + log_w[None, :, None]
        peak = terms.max(axis=1)
        out[start:stop] = peak + np.log(np.exp(terms - peak[:, None, :]).sum(axis=1)) + log_det[None, :]
    return out.reshape(chains, draws, n_pairs)


# The integrated log likelihood's fixed grid resolves a pair's prior only when
# the prior is not much narrower than the pair's posterior (see
# integration_unresolved). The log-sigma rule's 35 nodes lie about half a
# posterior SD apart near the centre, so a prior a twentieth of that SD wide
# falls between them.
MIN_PRIOR_TO_POSTERIOR_SD = 0.05
MAX_UNRESOLVED_SHARE = 0.01


def integration_unresolved(posterior: xr.Dataset, spec: ModelSpec) -> np.ndarray:
    """Return, per pair, the share of draws whose prior the integration grid cannot resolve.

    :func:`integrated_pair_loglik` places its Gauss-Hermite grid on each pair's
    posterior of ``(mu, log_sigma)``. In a draw whose hierarchical standard
    deviation (``sd_model_task`` for ``mu``, ``sd_e`` for ``log_sigma``) is
    below ``MIN_PRIOR_TO_POSTERIOR_SD`` times the pair's posterior SD, the
    prior density is a spike between the grid's nodes and the integral is
    wrong by orders of magnitude. That happens when the data leave little
    residual variation for the level to explain (``sd_e`` near 0). On HELM
    classic (three runs per pair) 32% of the draws of the worst pair fall
    there, and the integrated log likelihood reached -4.8e7; on the
    multi-prompt data none do.
    """
    draws = ("chain", "draw")
    worst = xr.zeros_like(posterior["mu"].isel(chain=0, draw=0), dtype=float)
    checks = []
    if "model:task" in spec.location_terms:
        checks.append(("sd_model_task", "mu"))
    if "residual" in spec.scale_terms:
        checks.append(("sd_e", "log_sigma"))
    for level, latent in checks:
        spread = posterior[latent].std(draws)
        narrow = (posterior[level] < MIN_PRIOR_TO_POSTERIOR_SD * spread).mean(draws)
        worst = np.maximum(worst, narrow)
    return np.asarray(worst.values, dtype=float)


KEY_PARAMETERS = ("gamma0", "gamma1", "sd_u", "sd_v", "sd_e", "share_competence", "share_model", "share_task", "share_residual")


def simulate_from_prior(
    spec: ModelSpec,
    rng: np.random.Generator,
    n_models: int = 8,
    n_tasks: int = 8,
    n_perturbations: int = 10,
    n_examples: int = 100,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Draw parameters from ``spec``'s priors and simulate a tensor (see :mod:`robustscope.simulate`)."""
    from ..simulate import simulate_location_scale_from_prior

    return simulate_location_scale_from_prior(spec, rng, n_models, n_tasks, n_perturbations, n_examples)
