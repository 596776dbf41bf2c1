"""The consistency model: per-example output consistency with latent competence.

For each observed (model, task) pair with ``N`` complete examples (answered
under all ``K`` observed perturbations)::

    n_consistent[m,t]  ~ Binomial(N, rho[m,t])
    logit rho[m,t]     = offset[m,t] + eta[m,t]
    eta[m,t]           = gamma0 + gamma1 * (mu[m,t] - c0) + u[m] + v[t] + e[m,t]
    n_correct[m,t,k]   ~ Binomial(N, inv_logit(mu[m,t] + delta[m,t,k])),  delta ~ Normal(0, sd_cell)
    mu[m,t]            = alpha + a[m] + b[t] + ab[m,t]                     (competence, logit scale)

``n_consistent`` counts the examples whose prediction (the categorical
prediction code) is identical under every observed perturbation, the same
count :func:`robustscope.metrics.per_example.output_consistency` reports as
a share. ``rho`` is the probability that an example of the pair is answered
identically under all K perturbations.

Competence is latent (errors in variables). The correct-answer counts of the
same examples under each perturbation inform ``mu``, and ``mu`` enters the
consistency predictor, so its uncertainty propagates into ``gamma1``. A point
estimate of accuracy is never plugged in.

Likelihood of the correct-answer counts (the ``likelihood`` key):

* ``binomial-collapsed`` (default): each perturbation shifts the pair's
  logit accuracy by ``delta[m,t,k] ~ Normal(0, sd_cell)``, integrated out by
  adaptive Gauss-Hermite quadrature
  (:func:`robustscope.models.quadrature.marginal_logp`). Accuracy does vary
  across perturbations beyond binomial noise, and without ``delta`` the K
  counts would act as ``K * N`` exchangeable trials and make ``mu`` look
  more precise than it is. ``mu`` is the logit accuracy at the median
  perturbation.
* ``binomial``: no perturbation effect; ``n_correct[m,t,k] ~ Binomial(N,
  inv_logit(mu[m,t]))``. Kept for comparison.

NOTE: the K counts of a pair come from the same N examples, and the
consistency count from those examples too. The model treats them as
conditionally independent given ``mu``, ``delta`` and ``rho``, so the
posterior of ``mu`` is somewhat narrower than the example-level dependence
justifies.

Offset (the ``offset`` key): ``none`` sets ``offset = 0``.
``trivial-baseline`` sets ``offset = logit(p ** K)`` with ``p =
inv_logit(mu)``. If every answer were an independent draw that is correct
with probability ``p``, an example would be correct under all K
perturbations with probability ``p ** K``. When each example has one correct
output, such an example gives the same output every time, so ``p ** K`` is
the trivial baseline of *output* consistency. The
baseline ``p ** K + (1 - p) ** K`` belongs to the consistency of
*correctness* and does not apply here, because two wrong answers need not be
the same output. With the offset, ``eta`` (and ``gamma1`` and the variance
shares) describe output consistency beyond what accuracy alone implies.

The variance shares decompose ``eta`` (logit rho without the offset) into the
competence term ``gamma1 * (mu - c0)``, the model effect ``u``, the task
effect ``v`` and the residual ``e``: per posterior draw, each component's
finite-population variance over the observed pairs divided by the sum of the
four (:func:`robustscope.decompose.variance_shares`). They lie in [0, 1] and
sum to 1 draw by draw. Without the offset, ``eta`` is logit rho itself.

Model, task and model-by-task effects are zero-sum (``ZeroSumNormal``), so
``alpha`` and ``gamma0`` are the grand means. ``c0`` is the mean empirical
logit of the pairs' pooled accuracy.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from scipy.special import gammaln

from .. import decompose
from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import RobustscopeError
from ..fit import LOGLIK_VARIABLE, PPC_DRAWS, sample_model
from ..metrics import per_example
from ..specs import ModelSpec
from .location_scale import _group_effect, _mixed_normal, _prior, empirical_logit, latent_competence
from ..simulate import draw_prior, zero_sum_normal
from .quadrature import marginal_logp

log = get_logger("models.consistency")

# Scalar parameters the reports and diagnostics lead with.
KEY_PARAMETERS = ("gamma0", "gamma1", "sd_u", "sd_v", "sd_e", "alpha", "sd_model", "sd_task", "sd_model_task", "sd_cell")
# Name of the consistency count in observed_data and posterior_predictive.
OBSERVED_VARIABLE = "n_consistent"
LIKELIHOODS = ("binomial-collapsed", "binomial")
# Pointwise log likelihood is computed in chunks of this many draws.
LOGLIK_CHUNK = 100


@dataclass
class ConsistencyData:
    """Arrays the consistency model is built from.

    A *pair* is an observed (model, task) combination kept for the model.
    Cells are its observed (model, task, perturbation) combinations, with the
    correct answers counted over the pair's complete examples. ``unique_*``
    arrays hold each distinct (pair, n, k) once with its multiplicity.
    """

    models: list[str]
    tasks: list[str]
    pair_model: np.ndarray
    pair_task: np.ndarray
    pair_examples: np.ndarray
    pair_perturbations: np.ndarray
    pair_consistent: np.ndarray
    pair_accuracy: np.ndarray
    cell_pair: np.ndarray
    cell_correct: np.ndarray
    cell_n: np.ndarray
    unique_pair: np.ndarray
    unique_correct: np.ndarray
    unique_n: np.ndarray
    unique_count: np.ndarray
    competence_center: float
    excluded_pairs: dict[str, str] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_model)

    @property
    def pair_labels(self) -> list[str]:
        return [f"{self.models[m]} | {self.tasks[t]}" for m, t in zip(self.pair_model, self.pair_task, strict=True)]

    @property
    def pair_trivial_baseline(self) -> np.ndarray:
        """Descriptive trivial baseline ``accuracy ** K`` per pair (pooled accuracy, probability scale)."""
        return self.pair_accuracy**self.pair_perturbations


def _require_per_example(ds: xr.Dataset) -> None:
    """Raise unless ``ds`` has per-example 0/1 scores and prediction codes."""
    name = ds.attrs.get("dataset")
    if _tensor.EXAMPLE_DIM not in ds.dims:
        raise RobustscopeError(
            f"the consistency model needs per-example predictions, but tensor {name!r} has no 'example' dimension "
            "(it contains aggregated counts only); ingest per-example logs (for example lm-eval samples files, "
            "Inspect logs or DOVE) or fit the location-scale family instead"
        )
    if "prediction" not in ds:
        raise RobustscopeError(
            f"the consistency model needs the per-example 'prediction' codes, but tensor {name!r} has scores only; "
            "ingest logs that record each answer, or fit the location-scale family instead"
        )
    if ds.attrs.get("metric_kind") != "binary" or "n_correct" not in ds:
        raise RobustscopeError(
            f"the consistency model needs 0/1 correctness scores for its competence term, but tensor {name!r} "
            f"contains the {ds.attrs.get('metric_kind')} metric {ds.attrs.get('metric')!r}"
        )


def prepare_data(ds: xr.Dataset, *, min_perturbations: int = 2) -> ConsistencyData:
    """Count consistent examples and correct answers per (model, task) pair.

    Only complete examples count: those answered under every perturbation
    observed for the pair (see
    :func:`robustscope.metrics.per_example.complete_examples`). Pairs with
    fewer than ``min_perturbations`` perturbations (consistency is trivially
    1 under one) or without complete examples are left out, logged and
    listed in ``excluded_pairs`` with the reason.

    Raises
    ------
    RobustscopeError
        When the tensor has no ``example`` dimension, no ``prediction``
        variable or no 0/1 scores, or fewer than two models or two tasks
        remain.
    """
    _require_per_example(ds)
    consistency = per_example.output_consistency(ds).transpose("model", "task")
    complete, _, _ = per_example.complete_examples(ds)
    score = ds["score"].transpose(*_tensor.DIMS, _tensor.EXAMPLE_DIM)
    correct = score.where(complete).sum(_tensor.EXAMPLE_DIM).transpose(*_tensor.DIMS).values
    observed = ds["observed"].transpose(*_tensor.DIMS).values.astype(bool)

    n_examples = consistency["n_examples"].values
    n_perturbations = consistency["n_perturbations"].values
    share = np.nan_to_num(consistency["consistency"].values, nan=0.0)
    model_labels = [str(m) for m in ds["model"].values]
    task_labels = [str(t) for t in ds["task"].values]

    excluded: dict[str, str] = {}
    keep = np.zeros_like(observed[..., 0])
    for m, t in zip(*np.nonzero(n_perturbations > 0), strict=True):
        label = f"{model_labels[m]} | {task_labels[t]}"
        if n_perturbations[m, t] < min_perturbations:
            excluded[label] = f"observed under {n_perturbations[m, t]} perturbation(s), fewer than {min_perturbations}"
        elif n_examples[m, t] == 0:
            excluded[label] = "no example answered under every observed perturbation"
        else:
            keep[m, t] = True
    if excluded:
        log.warning("%d (model, task) pairs are left out of the consistency model: %s", len(excluded), "; ".join(f"{k}: {v}" for k, v in excluded.items()))

    model_kept = keep.any(axis=1)
    task_kept = keep.any(axis=0)
    if model_kept.sum() < 2 or task_kept.sum() < 2:
        raise RobustscopeError(
            f"the consistency model needs at least two models and two tasks with pairs observed under {min_perturbations} "
            f"or more perturbations and at least one complete example; tensor {ds.attrs.get('dataset')!r} has "
            f"{int(model_kept.sum())} such model(s) and {int(task_kept.sum())} such task(s) "
            f"({int(keep.sum())} usable pair(s), {len(excluded)} excluded)"
        )
    model_index = np.flatnonzero(model_kept)
    task_index = np.flatnonzero(task_kept)
    pair_m, pair_t = np.nonzero(keep[np.ix_(model_index, task_index)])
    full_m = model_index[pair_m]
    full_t = task_index[pair_t]

    pair_examples = n_examples[full_m, full_t].astype(np.int64)
    pair_perturbations = n_perturbations[full_m, full_t].astype(np.int64)
    pair_consistent = np.rint(share[full_m, full_t] * pair_examples).astype(np.int64)

    # Cells: the observed perturbations of each kept pair.
    cell_pair_list, cell_correct_list = [], []
    for pair, (m, t) in enumerate(zip(full_m, full_t, strict=True)):
        counts = correct[m, t][observed[m, t]]
        cell_pair_list.append(np.full(len(counts), pair))
        cell_correct_list.append(counts)
    cell_pair = np.concatenate(cell_pair_list).astype(np.int64)
    cell_correct = np.rint(np.concatenate(cell_correct_list)).astype(np.int64)
    cell_n = pair_examples[cell_pair]

    pair_accuracy = np.bincount(cell_pair, weights=cell_correct) / (pair_examples * pair_perturbations)
    pooled_logit = empirical_logit(pair_accuracy * pair_examples * pair_perturbations, pair_examples * pair_perturbations)
    return ConsistencyData(
        models=[model_labels[i] for i in model_index],
        tasks=[task_labels[i] for i in task_index],
        pair_model=pair_m.astype(np.int64),
        pair_task=pair_t.astype(np.int64),
        pair_examples=pair_examples,
        pair_perturbations=pair_perturbations,
        pair_consistent=pair_consistent,
        pair_accuracy=pair_accuracy,
        cell_pair=cell_pair,
        cell_correct=cell_correct,
        cell_n=cell_n,
        **_unique_cells(cell_pair, cell_n, cell_correct),
        competence_center=float(np.mean(pooled_logit)),
        excluded_pairs=excluded,
    )


def _unique_cells(cell_pair: np.ndarray, cell_n: np.ndarray, cell_correct: np.ndarray) -> dict[str, np.ndarray]:
    """Return the ``unique_*`` fields of :class:`ConsistencyData`: each distinct (pair, n, k) once, with its multiplicity."""
    rows, count = np.unique(np.stack([cell_pair, cell_n, cell_correct], axis=1), axis=0, return_counts=True)
    return {"unique_pair": rows[:, 0], "unique_correct": rows[:, 2], "unique_n": rows[:, 1], "unique_count": count.astype(np.int64)}


def _check_spec(spec: ModelSpec) -> None:
    if spec.family != "consistency":
        raise RobustscopeError(f"specification {spec.name!r} is of the {spec.family!r} family, not 'consistency'")
    if spec.likelihood not in LIKELIHOODS:
        raise RobustscopeError(f"specification {spec.name!r}: the consistency family supports the likelihoods {', '.join(LIKELIHOODS)}, not {spec.likelihood!r}")
    if spec.competence == "spline":
        raise RobustscopeError(f"specification {spec.name!r}: the spline competence term is not available in the consistency family; use 'linear' or 'none'")


def _log_sigmoid(value: Any, xp: Any) -> Any:
    if xp is np:
        return -np.logaddexp(0.0, -value)
    return -pt.softplus(-value)


def _log1mexp(value: Any, xp: Any) -> Any:
    """Return ``log(1 - exp(value))`` for ``value < 0``, accurate near 0 and far below it."""
    if xp is np:
        return np.where(value > -np.log(2.0), np.log(-np.expm1(value)), np.log1p(-np.exp(value)))
    return pt.log1mexp(value)


def trivial_baseline_logit(mu: Any, perturbations: np.ndarray, xp: Any = np) -> Any:
    """Return ``logit(p ** K)`` with ``p = inv_logit(mu)``, computed on the log scale.

    ``mu`` has the pair axis last; ``perturbations`` is K per pair.
    """
    log_all_correct = perturbations * _log_sigmoid(mu, xp)
    return log_all_correct - _log1mexp(log_all_correct, xp)


def competence_loglik(mu: Any, log_sd_cell: Any, data: ConsistencyData, spec: ModelSpec, xp: Any = np) -> Any:
    """Return the log likelihood of the correct-answer counts per distinct cell (times its multiplicity).

    ``mu`` has the pair axis last; ``log_sd_cell`` is a scalar, or an array
    with the leading draw axes of ``mu``. Ignored for ``likelihood:
    binomial``.
    """
    location = mu[..., data.unique_pair]
    if spec.likelihood == "binomial-collapsed":
        floored = _floored_log_scale(log_sd_cell, xp)
        log_scale = floored[..., None] + np.zeros_like(location) if xp is np else floored + pt.zeros_like(location)
        per_unique = marginal_logp(location, log_scale, data.unique_correct, data.unique_n, spec.quadrature_nodes, xp)
    else:
        per_unique = (
            _log_binomial_coefficient(data.unique_n, data.unique_correct)
            + data.unique_correct * _log_sigmoid(location, xp)
            + (data.unique_n - data.unique_correct) * _log_sigmoid(-location, xp)
        )
    return per_unique * data.unique_count


# The quadrature loses accuracy below about 1e-12 logits and returns a
# log likelihood above the exact binomial limit, a false mode that can trap a
# chain. The perturbation spread enters as sqrt(sd_cell**2 + floor**2), which
# changes a cell's log likelihood by about 2e-4 (80 examples, accuracy 0.4 to
# 0.95, sd_cell near 0).
SD_CELL_FLOOR = 1e-3


def _floored_log_scale(log_sd: Any, xp: Any) -> Any:
    """Return ``log(sqrt(sd**2 + SD_CELL_FLOOR**2))`` from ``log(sd)``, smooth in ``sd``."""
    floor = 2.0 * np.log(SD_CELL_FLOOR)
    if xp is np:
        return 0.5 * np.logaddexp(2.0 * log_sd, floor)
    return 0.5 * pt.logaddexp(2.0 * log_sd, floor)


def consistency_loglik(logit_rho: Any, data: ConsistencyData, xp: Any = np) -> Any:
    """Return ``log Binomial(n_consistent | N, inv_logit(logit_rho))`` per pair (pair axis last)."""
    consistent = data.pair_consistent
    inconsistent = data.pair_examples - consistent
    return (
        _log_binomial_coefficient(data.pair_examples, consistent)
        + consistent * _log_sigmoid(logit_rho, xp)
        + inconsistent * _log_sigmoid(-logit_rho, xp)
    )


def _log_binomial_coefficient(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def pair_loglik(mu: np.ndarray, log_sd_cell: np.ndarray, logit_rho: np.ndarray, data: ConsistencyData, spec: ModelSpec) -> np.ndarray:
    """Return the log likelihood of each pair's observations per draw (NumPy, pair axis last).

    The pair's observations are its consistency count and its correct-answer
    count under each perturbation; their log likelihoods are summed, giving
    one value per (model, task) pair for PSIS-LOO.
    """
    out = consistency_loglik(logit_rho, data, np)
    per_unique = competence_loglik(mu, log_sd_cell, data, spec, np)
    np.add.at(out, (..., data.unique_pair), per_unique)
    return out


def build_model(data: ConsistencyData, spec: ModelSpec) -> pm.Model:
    """Return the PyMC model for ``data`` as ``spec`` declares it.

    Parameters are on the logit scale of accuracy (``mu``, ``alpha``,
    ``a_model``, ``b_task``, ``sd_cell``) and on the logit scale of the
    consistency probability (``eta``, ``gamma0``, ``gamma1`` per logit of
    competence, ``u_model``, ``v_task``, ``sd_e``).
    """
    _check_spec(spec)
    coords = {"model": data.models, "task": data.tasks, "pair": data.pair_labels}
    # "auto": the competence effects are informed by N * K trials per pair
    # and sample best centred, the consistency effects by N trials per pair
    # and a few groups, so they are non-centred. A pair whose counts sit at
    # 0 or N identifies its latent value only through the prior, which a
    # centred form turns into a funnel, so such pairs are non-centred too.
    location_noncentered = spec.parameterization == "noncentered"
    scale_noncentered = spec.parameterization in ("noncentered", "auto")
    if spec.parameterization == "auto":
        weak_location = (data.pair_accuracy == 0) | (data.pair_accuracy == 1)
        weak_scale = weak_location | (data.pair_consistent == 0) | (data.pair_consistent == data.pair_examples)
    else:
        weak_location = np.full(data.n_pairs, spec.parameterization == "noncentered")
        weak_scale = weak_location
    pair_model = data.pair_model
    pair_task = data.pair_task
    with pm.Model(coords=coords) as model:
        pm.Data("pair_model", pair_model, dims="pair")
        pm.Data("pair_task", pair_task, dims="pair")

        # Competence on the logit scale, informed by the correct-answer counts.
        mu = latent_competence(spec, pair_model, pair_task, weak_location, location_noncentered)
        log_sd_cell = pt.log(_prior("sd_cell", spec)) if spec.likelihood == "binomial-collapsed" else pt.constant(0.0)
        pm.Potential("competence_likelihood", pt.sum(competence_loglik(mu, log_sd_cell, data, spec, xp=pt)))

        # Consistency on the logit scale.
        gamma0 = _prior("gamma0", spec)
        predictor = gamma0 + pt.zeros(data.n_pairs)
        if "competence" in spec.scale_terms and spec.competence == "linear":
            gamma1 = _prior("gamma1", spec)
            predictor = predictor + gamma1 * (mu - data.competence_center)
        if "model" in spec.scale_terms:
            predictor = predictor + _group_effect("u_model", "sd_u", "model", spec, scale_noncentered)[pair_model]
        if "task" in spec.scale_terms:
            predictor = predictor + _group_effect("v_task", "sd_v", "task", spec, scale_noncentered)[pair_task]
        if "residual" in spec.scale_terms:
            sd_e = _prior("sd_e", spec)
            eta = _mixed_normal("eta", predictor, sd_e, weak_scale, data.n_pairs)
        else:
            eta = pm.Deterministic("eta", predictor, dims="pair")

        logit_rho = eta
        if spec.offset == "trivial-baseline":
            offset = trivial_baseline_logit(mu, data.pair_perturbations, xp=pt)
            pm.Deterministic("trivial_baseline", pt.sigmoid(offset), dims="pair")
            logit_rho = eta + offset
        pm.Deterministic("rho", pt.sigmoid(logit_rho), dims="pair")
        pm.Potential("consistency_likelihood", pt.sum(consistency_loglik(logit_rho, data, xp=pt)))
    return model


def components(posterior: xr.Dataset, data: ConsistencyData) -> xr.Dataset:
    """Return the four additive components of ``eta`` (logit rho without the offset) per draw and pair.

    Components whose term is absent from the model are zero.
    """
    eta = posterior["eta"]
    zeros = xr.zeros_like(eta)
    competence = posterior["gamma1"] * (posterior["mu"] - data.competence_center) if "gamma1" in posterior else zeros
    model = posterior["u_model"].isel(model=xr.DataArray(data.pair_model, dims="pair")).drop_vars("model", errors="ignore") if "u_model" in posterior else zeros
    task = posterior["v_task"].isel(task=xr.DataArray(data.pair_task, dims="pair")).drop_vars("task", errors="ignore") if "v_task" in posterior else zeros
    residual = eta - posterior["gamma0"] - competence - model - task
    return xr.Dataset({"competence": competence, "model": model, "task": task, "residual": residual}).transpose("chain", "draw", "pair")


def pointwise_loglik(posterior: xr.Dataset, data: ConsistencyData, spec: ModelSpec) -> xr.DataArray:
    """Return the log likelihood of each (model, task) pair per draw, on (chain, draw, pair)."""
    mu = posterior["mu"].transpose("chain", "draw", "pair").values
    eta = posterior["eta"].transpose("chain", "draw", "pair").values
    chains, draws, pairs = mu.shape
    flat_mu = mu.reshape(chains * draws, pairs)
    flat_eta = eta.reshape(chains * draws, pairs)
    if "sd_cell" in posterior:
        flat_log_sd = np.log(posterior["sd_cell"].values.reshape(chains * draws))
    else:
        flat_log_sd = np.zeros(chains * draws)
    out = np.empty((chains * draws, pairs))
    for start in range(0, chains * draws, LOGLIK_CHUNK):
        stop = start + LOGLIK_CHUNK
        # The predictor is rebuilt from eta instead of inverting rho, which
        # rounds to 0 or 1 in the tails.
        logit_rho = flat_eta[start:stop]
        if spec.offset == "trivial-baseline":
            logit_rho = logit_rho + trivial_baseline_logit(flat_mu[start:stop], data.pair_perturbations, np)
        out[start:stop] = pair_loglik(flat_mu[start:stop], flat_log_sd[start:stop], logit_rho, data, spec)
    return xr.DataArray(
        out.reshape(chains, draws, pairs),
        dims=("chain", "draw", "pair"),
        coords={"chain": posterior["chain"], "draw": posterior["draw"], "pair": posterior["pair"]},
        name=LOGLIK_VARIABLE,
    )


def posterior_predictive(posterior: xr.Dataset, data: ConsistencyData, seed: int) -> xr.DataArray:
    """Draw replicated consistency counts ``n_consistent ~ Binomial(N, rho)`` from at most ``PPC_DRAWS`` evenly thinned draws."""
    rng = np.random.default_rng(seed)
    rho = posterior["rho"].stack(sample=("chain", "draw")).transpose("sample", "pair").values
    keep = np.unique(np.linspace(0, rho.shape[0] - 1, min(PPC_DRAWS, rho.shape[0])).astype(int))
    replicated = rng.binomial(data.pair_examples, rho[keep])
    return xr.DataArray(
        replicated[None],
        dims=("chain", "draw", "pair"),
        coords={"chain": [0], "draw": np.arange(len(keep)), "pair": posterior["pair"].values},
        name=OBSERVED_VARIABLE,
    )


def fit_family(ds: xr.Dataset, spec: ModelSpec, *, progress: bool = True) -> tuple[xr.DataTree, dict[str, float], dict[str, Any]]:
    """Fit the consistency model to a per-example tensor.

    Returns
    -------
    (trace, timings, extra_attrs)
        ``trace`` has the groups ``posterior`` (parameters, ``mu``, ``eta``,
        ``rho`` on ``pair``, with the offset also ``trivial_baseline``, the variance shares of
        ``eta`` and ``bayes_r2``), ``sample_stats``, ``log_likelihood`` (one
        value per pair and draw: the consistency count and the correct-answer
        counts together), ``observed_data`` and ``posterior_predictive``
        (``n_consistent``) and ``constant_data`` (pair indices and observed
        summaries). ``timings`` are in seconds. ``extra_attrs`` holds the
        competence centre, the offset and the excluded pairs with reasons.

    Raises
    ------
    RobustscopeError
        When the tensor lacks per-example predictions or 0/1 scores, too few
        pairs remain, or the specification does not fit this family.
    """
    _check_spec(spec)
    data = prepare_data(ds)
    log.info(
        "fitting %s to %s: %d pairs, %d cells, %d to %d complete examples per pair, offset %s",
        spec.name,
        ds.attrs.get("dataset"),
        data.n_pairs,
        len(data.cell_pair),
        int(data.pair_examples.min()),
        int(data.pair_examples.max()),
        spec.offset,
    )
    model = build_model(data, spec)
    trace, timings = sample_model(model, spec, progress=progress)

    posterior = trace["posterior"].to_dataset()
    shares = decompose.variance_shares(components(posterior, data))
    posterior = posterior.assign(shares.data_vars)
    trace["posterior"] = xr.DataTree(posterior)

    start = time.perf_counter()
    loglik = pointwise_loglik(posterior, data, spec)
    timings["loglik_seconds"] = time.perf_counter() - start
    trace["log_likelihood"] = xr.DataTree(xr.Dataset({LOGLIK_VARIABLE: loglik}))
    trace["posterior_predictive"] = xr.DataTree(xr.Dataset({OBSERVED_VARIABLE: posterior_predictive(posterior, data, spec.sampler.seed)}))
    pair_coord = {"pair": posterior["pair"].values}
    trace["observed_data"] = xr.DataTree(xr.Dataset({OBSERVED_VARIABLE: ("pair", data.pair_consistent)}, coords=pair_coord))
    trace["constant_data"] = xr.DataTree(
        xr.Dataset(
            {
                "pair_model": ("pair", data.pair_model),
                "pair_task": ("pair", data.pair_task),
                "pair_examples": ("pair", data.pair_examples),
                "pair_perturbations": ("pair", data.pair_perturbations),
                "pair_accuracy": ("pair", data.pair_accuracy),
                "pair_consistency": ("pair", data.pair_consistent / data.pair_examples),
                "pair_trivial_baseline": ("pair", data.pair_trivial_baseline),
            },
            coords={**pair_coord, "model": data.models, "task": data.tasks},
        )
    )
    extra = {
        "competence_center": float(data.competence_center),
        "offset": spec.offset,
        "excluded_pairs": json.dumps(data.excluded_pairs),
    }
    return trace, timings, extra


# ---------------------------------------------------------------------------
# Simulation


@dataclass(frozen=True)
class ConsistencyTruth:
    """Generating parameters of a simulated consistency tensor.

    ``alpha``, ``sd_model``, ``sd_task``, ``sd_model_task`` and ``sd_cell``
    are on the logit scale of accuracy; ``gamma0``, ``gamma1``, ``sd_u``,
    ``sd_v`` and ``sd_e`` on the logit scale of the consistency probability.
    """

    alpha: float = 0.5
    sd_model: float = 0.8
    sd_task: float = 0.8
    sd_model_task: float = 0.4
    sd_cell: float = 0.3
    gamma0: float = 0.3
    gamma1: float = 0.6
    sd_u: float = 0.4
    sd_v: float = 0.4
    sd_e: float = 0.3


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-value))


def simulate(
    truth: ConsistencyTruth = ConsistencyTruth(),
    *,
    n_models: int = 6,
    n_tasks: int = 6,
    n_perturbations: int = 5,
    n_examples: int = 80,
    offset: str = "none",
    rng: np.random.Generator | int | None = 0,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Simulate a per-example tensor from the consistency model with known parameters.

    Each example of a (model, task) pair is consistent with probability
    ``rho``. A consistent example gives one output under every perturbation:
    the correct one with probability ``q`` (the mean of the pair's
    per-perturbation accuracies ``p_k = inv_logit(mu + delta_k)``), else one
    wrong output. An inconsistent example is correct under perturbation k
    with probability ``(p_k - rho * q) / (1 - rho)``, clipped to [0, 1], so
    an example is correct under perturbation k with probability ``p_k``
    exactly, unless the clip applies. Where the drawn outputs of an
    inconsistent example would all be equal, one of them is replaced by
    another output of the same correctness (each example has two accepted
    correct forms and three wrong answers), so correctness is unchanged and
    the example stays inconsistent. The number of consistent examples is
    therefore ``Binomial(N, rho)`` and each correct-answer count
    ``Binomial(N, p_k)``, the two margins the model states.

    Parameters
    ----------
    truth
        The generating parameters.
    n_models, n_tasks, n_perturbations, n_examples
        Tensor shape: every (model, task) pair is observed under every
        perturbation on the same ``n_examples`` examples.
    offset
        ``"none"`` or ``"trivial-baseline"`` (adds ``logit(inv_logit(mu) ** K)``
        to logit rho).
    rng
        A generator or a seed.

    Returns
    -------
    (tensor, realised)
        The per-example tensor (binary scores, prediction codes, crossed
        perturbation labels ``p0``, ``p1``, ...) and a dictionary with the
        parameters, the realised variance shares of ``eta`` over the pairs
        (``share_competence``, ``share_model``, ``share_task``,
        ``share_residual``), ``competence_center`` and the arrays ``mu``,
        ``eta``, ``rho``, ``u`` and ``v`` (on model x task where per pair).
    """
    if offset not in ("none", "trivial-baseline"):
        raise RobustscopeError(f"unknown offset {offset!r}; valid values: none, trivial-baseline")
    rng = np.random.default_rng(rng)
    a = zero_sum_normal(rng, n_models, truth.sd_model)
    b = zero_sum_normal(rng, n_tasks, truth.sd_task)
    ab = rng.normal(0.0, truth.sd_model_task, (n_models, n_tasks))
    mu = truth.alpha + a[:, None] + b[None, :] + ab
    center = float(mu.mean())
    u = zero_sum_normal(rng, n_models, truth.sd_u)
    v = zero_sum_normal(rng, n_tasks, truth.sd_v)
    e = rng.normal(0.0, truth.sd_e, (n_models, n_tasks))
    competence = truth.gamma1 * (mu - center)
    eta = truth.gamma0 + competence + u[:, None] + v[None, :] + e
    logit_rho = eta.copy()
    if offset == "trivial-baseline":
        logit_rho = logit_rho + trivial_baseline_logit(mu, np.full(mu.shape, n_perturbations), np)
    rho = _sigmoid(logit_rho)

    accuracy = _sigmoid(mu[..., None] + truth.sd_cell * rng.standard_normal((n_models, n_tasks, n_perturbations)))
    correct, codes = _draw_answers(rng, rho, accuracy, n_examples)
    records = _answer_records(correct, codes)
    ds = _tensor.from_examples(records, dataset="simulated-consistency", structure="crossed")

    parts = {"competence": competence, "model": np.broadcast_to(u[:, None], mu.shape), "task": np.broadcast_to(v[None, :], mu.shape), "residual": e}
    variances = {name: float(np.var(values)) for name, values in parts.items()}
    total = sum(variances.values())
    realised: dict[str, Any] = asdict(truth)
    realised.update({f"share_{name}": variances[name] / total for name in variances})
    realised.update({"competence_center": center, "mu": mu, "eta": eta, "rho": rho, "u": u, "v": v, "offset": offset})
    return ds, realised


# Output labels of the simulation: two accepted correct forms, three wrong answers.
_CORRECT_OUTPUTS = ("right", "right (alternative form)")
_WRONG_OUTPUTS = ("wrong-a", "wrong-b", "wrong-c")


def _draw_answers(rng: np.random.Generator, rho: np.ndarray, accuracy: np.ndarray, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw correctness (0/1) and output codes on (model, task, example, perturbation).

    Codes 0 and 1 are the correct forms, 2 to 4 the wrong answers.
    """
    shape = rho.shape + (n_examples,)
    n_perturbations = accuracy.shape[-1]
    consistent = rng.random(shape) < rho[..., None]
    mean_accuracy = accuracy.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inconsistent_accuracy = (accuracy - (rho * mean_accuracy)[..., None]) / (1.0 - rho)[..., None]
    inconsistent_accuracy = np.clip(np.nan_to_num(inconsistent_accuracy, nan=0.5), 0.0, 1.0)

    # Consistent examples: one outcome and one output for all perturbations.
    all_correct = rng.random(shape) < mean_accuracy[..., None]
    common_code = np.where(all_correct, 0, 2 + rng.integers(0, 3, shape))
    # Inconsistent examples: correctness drawn per perturbation.
    correct_each = rng.random(shape + (n_perturbations,)) < inconsistent_accuracy[..., None, :]
    code_each = np.where(correct_each, rng.integers(0, 2, correct_each.shape), 2 + rng.integers(0, 3, correct_each.shape))
    identical = (code_each == code_each[..., :1]).all(axis=-1) & ~consistent
    if identical.any():
        # Move the first output to another form of the same correctness.
        first = code_each[..., 0]
        moved = np.where(first < 2, 1 - first, 2 + (first - 2 + 1 + rng.integers(0, 2, first.shape)) % 3)
        code_each[..., 0] = np.where(identical, moved, first)

    correct = np.where(consistent[..., None], all_correct[..., None], correct_each)
    codes = np.where(consistent[..., None], common_code[..., None], code_each)
    return correct.astype(float), codes


def _answer_records(correct: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
    """Return one row per (model, task, perturbation, example) for :func:`robustscope.tensor.from_examples`."""
    n_models, n_tasks, n_examples, n_perturbations = correct.shape
    m, t, i, k = np.meshgrid(np.arange(n_models), np.arange(n_tasks), np.arange(n_examples), np.arange(n_perturbations), indexing="ij")
    outputs = np.array(_CORRECT_OUTPUTS + _WRONG_OUTPUTS, dtype=object)
    return pd.DataFrame(
        {
            "model": np.char.add("model", m.ravel().astype(str)),
            "task": np.char.add("task", t.ravel().astype(str)),
            "perturbation": np.char.add("p", k.ravel().astype(str)),
            "example": np.char.add("e", i.ravel().astype(str)),
            "score": correct.ravel(),
            "prediction": outputs[codes.ravel()],
        }
    )


def simulate_from_prior(
    spec: ModelSpec,
    rng: np.random.Generator,
    n_models: int = 6,
    n_tasks: int = 6,
    n_perturbations: int = 5,
    n_examples: int = 80,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Draw the parameters from the specification's priors and simulate a per-example tensor.

    Parameters whose term the specification leaves out are set to zero (for
    example ``gamma1`` without the competence term, ``sd_cell`` under
    ``likelihood: binomial``). The offset follows ``spec.offset``. Returns
    the tensor and the realised truth, as :func:`simulate` does.
    """
    _check_spec(spec)
    truth = _truth_from_prior(spec, rng)
    return simulate(truth, n_models=n_models, n_tasks=n_tasks, n_perturbations=n_perturbations, n_examples=n_examples, offset=spec.offset, rng=rng)


def _truth_from_prior(spec: ModelSpec, rng: np.random.Generator) -> ConsistencyTruth:
    """Draw a ``ConsistencyTruth`` from the priors, with zero for the terms ``spec`` leaves out."""
    values = {name: draw_prior(spec.prior(name), rng) for name in ConsistencyTruth.__dataclass_fields__}
    absent = {
        "sd_model": "model" not in spec.location_terms,
        "sd_task": "task" not in spec.location_terms,
        "sd_model_task": "model:task" not in spec.location_terms,
        "sd_cell": spec.likelihood != "binomial-collapsed",
        "gamma1": "competence" not in spec.scale_terms or spec.competence == "none",
        "sd_u": "model" not in spec.scale_terms,
        "sd_v": "task" not in spec.scale_terms,
        "sd_e": "residual" not in spec.scale_terms,
    }
    return replace(ConsistencyTruth(), **{name: 0.0 if absent.get(name) else value for name, value in values.items()})


def simulate_counts_from_prior(
    spec: ModelSpec,
    rng: np.random.Generator,
    n_models: int = 6,
    n_tasks: int = 6,
    n_perturbations: int = 5,
    n_examples: int = 80,
) -> tuple[ConsistencyData, dict[str, Any]]:
    """Simulate the model's own counts, drawn from its likelihood, for calibration.

    :func:`simulate_from_prior` writes per-example answers, and per-example
    data obey a constraint the likelihood does not encode: at most
    ``N - (max_k n_correct_k - min_k n_correct_k)`` examples can give the
    same output under every perturbation, because an example whose
    correctness changes cannot be consistent. Where the priors put a large
    perturbation spread (``sd_cell``) and a high consistency together, the
    per-example simulator must shrink one of them. This function instead draws
    ``n_correct[m,t,k]`` and ``n_consistent[m,t]`` as independent binomials
    given the parameters, exactly as the likelihood treats them, so that
    simulation-based calibration tests the inference and nothing else. The
    competence centre ``c0`` is computed from the simulated correct counts,
    as :func:`prepare_data` computes it from real data.

    Returns the data for :func:`build_model` and the truth (the parameters
    plus ``mu``, ``eta`` and ``rho`` per pair).
    """
    _check_spec(spec)
    truth = _truth_from_prior(spec, rng)
    a = zero_sum_normal(rng, n_models, truth.sd_model)
    b = zero_sum_normal(rng, n_tasks, truth.sd_task)
    pair_m, pair_t = (index.ravel() for index in np.meshgrid(np.arange(n_models), np.arange(n_tasks), indexing="ij"))
    n_pairs = len(pair_m)
    mu = truth.alpha + a[pair_m] + b[pair_t] + rng.normal(0.0, truth.sd_model_task, n_pairs)

    accuracy = _sigmoid(mu[:, None] + truth.sd_cell * rng.standard_normal((n_pairs, n_perturbations)))
    correct = rng.binomial(n_examples, accuracy)
    pair_examples = np.full(n_pairs, n_examples, dtype=np.int64)
    pair_perturbations = np.full(n_pairs, n_perturbations, dtype=np.int64)
    pooled = correct.sum(axis=1)
    center = float(np.mean(empirical_logit(pooled, pair_examples * pair_perturbations)))

    u = zero_sum_normal(rng, n_models, truth.sd_u)
    v = zero_sum_normal(rng, n_tasks, truth.sd_v)
    eta = truth.gamma0 + truth.gamma1 * (mu - center) + u[pair_m] + v[pair_t] + rng.normal(0.0, truth.sd_e, n_pairs)
    logit_rho = eta + (trivial_baseline_logit(mu, pair_perturbations, np) if spec.offset == "trivial-baseline" else 0.0)
    rho = _sigmoid(logit_rho)
    consistent = rng.binomial(n_examples, rho).astype(np.int64)

    cell_pair = np.repeat(np.arange(n_pairs), n_perturbations)
    cell_correct = correct.ravel().astype(np.int64)
    cell_n = pair_examples[cell_pair]
    data = ConsistencyData(
        models=[f"model{m}" for m in range(n_models)],
        tasks=[f"task{t}" for t in range(n_tasks)],
        pair_model=pair_m.astype(np.int64),
        pair_task=pair_t.astype(np.int64),
        pair_examples=pair_examples,
        pair_perturbations=pair_perturbations,
        pair_consistent=consistent,
        pair_accuracy=pooled / (pair_examples * pair_perturbations),
        cell_pair=cell_pair,
        cell_correct=cell_correct,
        cell_n=cell_n,
        **_unique_cells(cell_pair, cell_n, cell_correct),
        competence_center=center,
    )
    realised: dict[str, Any] = asdict(truth)
    realised.update({"competence_center": center, "mu": mu, "eta": eta, "rho": rho})
    return data, realised


def sample_counts(data: ConsistencyData, spec: ModelSpec, *, progress: bool = False) -> xr.DataTree:
    """Build the model for ``data`` and return the sampler's trace (posterior and sample statistics only)."""
    trace, _ = sample_model(build_model(data, spec), spec, progress=progress)
    return trace


# Report hooks (see robustscope.report.render).
QUANTITY = "logit consistency"
COMPETENCE_EFFECT_UNITS = "change in logit output consistency per one logit of competence"


def report_findings(trace: xr.DataTree) -> list[str]:
    """Return the report's findings for a consistency fit, in words with 89% intervals."""
    from ..decompose import interval_summary

    posterior = trace["posterior"].to_dataset()

    def text(name: str) -> str:
        summary = interval_summary(posterior[name])
        return f"{summary['mean']:.3f} [{summary['lower']:.3f}, {summary['upper']:.3f}]"

    lines = []
    if "gamma1" in posterior:
        summary = interval_summary(posterior["gamma1"])
        direction = "raises" if summary["lower"] > 0 else "lowers" if summary["upper"] < 0 else "has no clear effect on"
        beyond = " beyond the trivial-robustness baseline p^K" if "trivial_baseline" in posterior else ""
        lines.append(f"Competence {direction} output consistency{beyond}: gamma1 = {text('gamma1')} (change in logit consistency per logit of competence; 89% interval).")
    if "share_competence" in posterior:
        lines.append(
            f"Shares of the variance of logit consistency: competence {text('share_competence')}, model identity {text('share_model')}, "
            f"task identity {text('share_task')}, residual {text('share_residual')}."
        )
    return lines


def report_figures(trace: xr.DataTree) -> list[tuple[str, str, Any]]:
    """Return the consistency-against-competence figure of a consistency fit."""
    import matplotlib.pyplot as plt

    posterior = trace["posterior"].to_dataset()
    constant = trace["constant_data"].to_dataset()
    mu = posterior["mu"].mean(("chain", "draw")).values
    rho = posterior["rho"].mean(("chain", "draw")).values
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(mu, constant["pair_consistency"].values, s=14, color="#999999", label="observed share of consistent examples")
    ax.scatter(mu, rho, s=14, color="#1f77b4", label="posterior mean rho")
    if "pair_trivial_baseline" in constant:
        ax.scatter(mu, constant["pair_trivial_baseline"].values, s=10, marker="x", color="#d62728", label="trivial baseline p^K (observed accuracy)")
    ax.set_xlabel("competence mu[m,t] (posterior mean, logit of accuracy)")
    ax.set_ylabel("output consistency (probability)")
    ax.set_title("Output consistency against competence, per (model, task)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    caption = (
        "Each point is a (model, task) pair: the observed share of examples with the same output under every perturbation (grey), "
        "the posterior mean consistency rho (blue) and the trivial-robustness baseline p^K from the observed accuracy (red crosses), "
        "against posterior mean competence on the logit scale."
    )
    return [("consistency_competence.png", caption, fig)]
