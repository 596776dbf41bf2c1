"""PSIS-LOO model comparison of fits to the same tensor.

Every fit stores its pointwise log likelihood, one value per (model, task)
pair and draw, in the ``log_likelihood`` group. Leaving out one pair at a
time measures how well a model predicts a whole (model, task) combination it
has not seen, which is the question the variance partition is about.
Location-scale fits also store it with each pair's latent competence and
spread integrated out (``log_likelihood_integrated``), and PSIS-LOO uses
that form: given its own latent values a left-out pair is predicted too
well, and the importance weights fail (see :func:`loo_likelihood`).

:func:`add_pointwise_elpd` keeps each pair's expected log predictive
density and Pareto k in the fit (group ``loo``), so the totals can be
recomputed and the pairs that drive a difference can be found later.
:func:`loo_compare` ranks fits by ``elpd``: the best model has the highest
``elpd``, ``elpd_diff`` is each fit's ``elpd`` minus the best fit's (0 for
the best, negative below it) with its standard error ``dse``, and the stacking weights say how a predictive mix
of the fits would weigh them. Pareto k is judged against the
sample-size-dependent threshold ``min(1 - 1/log10(S), 0.7)`` for ``S``
posterior draws; pairs above it make that fit's ``elpd`` unreliable.

:func:`nested_specs` builds the four nested alternatives of a
location-scale specification: robustness explained by competence and model
identity, by either alone, or by neither (task identity and the residual
stay in every one).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import minimize

from ._logging import get_logger
from .errors import RobustscopeError
from .specs import ModelSpec, load_spec

log = get_logger("loo")

LOO_GROUP = "loo"
# Group of a location-scale fit with each pair's latent values integrated out.
INTEGRATED_GROUP = "log_likelihood_integrated"

# Scale terms of the nested alternatives, keyed by the suffix of their name.
NESTED_TERMS = {
    "both": ("competence", "model", "task", "residual"),
    "competence-only": ("competence", "task", "residual"),
    "model-only": ("model", "task", "residual"),
    "neither": ("task", "residual"),
}


def good_k_threshold(n_draws: int) -> float:
    """Return the Pareto k threshold for ``n_draws`` posterior draws: ``min(1 - 1/log10(S), 0.7)``."""
    return float(min(1.0 - 1.0 / np.log10(n_draws), 0.7))


def loglik_variable(trace: xr.DataTree) -> str:
    """Return the name of the single pointwise log-likelihood variable of a fit."""
    if "log_likelihood" not in trace.children:
        raise RobustscopeError(f"fit {trace.attrs.get('spec_name', '?')!r} has no log_likelihood group; refit it with this version")
    names = list(trace["log_likelihood"].to_dataset().data_vars)
    if len(names) != 1:
        raise RobustscopeError(f"fit {trace.attrs.get('spec_name', '?')!r} has log-likelihood variables {names}; expected exactly one")
    return names[0]


def loo_likelihood(trace: xr.DataTree) -> str:
    """Return which log likelihood PSIS-LOO uses for a fit: ``"integrated"`` or ``"conditional"``.

    A location-scale fit stores each pair's log likelihood twice: given the
    pair's latent competence and spread (``log_likelihood``), and with the two
    integrated out (``log_likelihood_integrated``). Leaving a pair out moves
    its own latent values far, so the conditional form gives Pareto k above
    the threshold for most pairs. The integrated form measures how well the
    rest of the data predict a new pair of the same model and task.
    """
    return "integrated" if INTEGRATED_GROUP in trace.children else "conditional"


def _loo(trace: xr.DataTree) -> azs.ELPDData:
    if loo_likelihood(trace) == "integrated":
        source = xr.DataTree.from_dict(
            {"posterior": trace["posterior"].to_dataset(), "log_likelihood": trace[INTEGRATED_GROUP].to_dataset()}
        )
        source.attrs.update(trace.attrs)
    else:
        source = trace
    with warnings.catch_warnings():
        # Pareto k is reported against good_k in the tables, not as a warning per call.
        warnings.simplefilter("ignore", UserWarning)
        return azs.loo(source, var_name=loglik_variable(trace), pointwise=True)


def add_pointwise_elpd(trace: xr.DataTree) -> xr.DataTree:
    """Compute PSIS-LOO for a fit and store it in the fit; return the fit.

    Adds the group ``loo`` with ``elpd_loo`` and ``pareto_k`` per unit of the
    log likelihood (the (model, task) pair), and the attributes
    ``loo_elpd``, ``loo_se``, ``loo_p``, ``loo_good_k`` and
    ``loo_units_above_good_k``. When PSIS-LOO cannot be computed (for
    example constant draws), the reason is logged and stored in
    ``loo_error`` instead.
    """
    try:
        result = _loo(trace)
    except (ValueError, FloatingPointError) as error:
        log.warning("PSIS-LOO could not be computed: %s", error)
        trace.attrs["loo_error"] = str(error)
        return trace
    elpd_i = result.elpd_i
    pareto_k = xr.DataArray(np.asarray(result.pareto_k), dims=elpd_i.dims, coords=elpd_i.coords)
    trace[LOO_GROUP] = xr.DataTree(xr.Dataset({"elpd_loo": elpd_i, "pareto_k": pareto_k}))
    good_k = float(result.good_k)
    trace.attrs.update(
        {
            "loo_elpd": float(result.elpd),
            "loo_se": float(result.se),
            "loo_p": float(result.p),
            "loo_good_k": good_k,
            "loo_units_above_good_k": int(np.sum(np.asarray(result.pareto_k) > good_k)),
            "loo_likelihood": loo_likelihood(trace),
        }
    )
    return trace


def _check_same_data(traces: Mapping[str, xr.DataTree]) -> None:
    kinds = {label: loo_likelihood(trace) for label, trace in traces.items()}
    if len(set(kinds.values())) != 1:
        listing = ", ".join(f"{label}: {kind}" for label, kind in kinds.items())
        raise RobustscopeError(
            f"PSIS-LOO compares fits on the same log likelihood, but some of these fits integrate the pair latents out and others do not ({listing}); "
            "refit the older fits with this version"
        )
    hashes = {label: trace.attrs.get("tensor_hash") for label, trace in traces.items()}
    if len(set(hashes.values())) != 1:
        listing = ", ".join(f"{label}: {str(h)[:12]}" for label, h in hashes.items())
        raise RobustscopeError(f"PSIS-LOO compares fits of the same tensor, but these fits have different tensor hashes ({listing})")
    units = {}
    for label, trace in traces.items():
        loglik = trace["log_likelihood"].to_dataset()[loglik_variable(trace)]
        extra = [d for d in loglik.dims if d not in ("chain", "draw")]
        units[label] = tuple(np.asarray(loglik[extra[0]].values).tolist()) if extra else ()
    first = next(iter(units.values()))
    for label, value in units.items():
        if value != first:
            raise RobustscopeError(
                f"fit {label!r} leaves out other (model, task) units than the first fit; PSIS-LOO needs the same units in every fit"
            )


def loo_compare(traces: Mapping[str, xr.DataTree], *, method: str = "stacking") -> pd.DataFrame:
    """Rank fits of the same tensor by PSIS-LOO.

    Parameters
    ----------
    traces
        Label -> fitted DataTree; at least two, all fitted to the same tensor.
    method
        Weighting of :func:`arviz_stats.compare`: ``"stacking"`` (default),
        ``"BB-pseudo-BMA"`` or ``"pseudo-BMA"``.

    Returns
    -------
    pandas.DataFrame
        One row per fit, best first, indexed by label: ``rank`` (0 is
        best), ``elpd``, ``se``, ``p`` (effective number of parameters),
        ``elpd_diff`` and ``dse`` (``elpd`` minus the best fit's, so 0 or
        negative), ``weight``,
        ``good_k``, ``pareto_k_max``, ``units_above_good_k`` and ``units``.

    Raises
    ------
    RobustscopeError
        With fewer than two fits, fits of different tensors, or fits that
        leave out different (model, task) units.
    """
    if len(traces) < 2:
        raise RobustscopeError("PSIS-LOO comparison needs at least two fits")
    _check_same_data(traces)
    return compare_results({label: _loo(trace) for label, trace in traces.items()}, method=method)


def stacking_weights(results: Mapping[str, azs.ELPDData]) -> dict[str, float]:
    """Return the stacking weights of fits from their pointwise elpd.

    Maximises ``sum_i log sum_k w_k exp(elpd_ik)`` over the simplex. Each
    unit's elpd is shifted by its maximum over the fits first, which leaves
    the weights unchanged and keeps ``exp`` from underflowing.
    """
    labels = list(results)
    elpd = np.stack([np.asarray(results[label].elpd_i, dtype=float).ravel() for label in labels], axis=1)
    density = np.exp(elpd - elpd.max(axis=1, keepdims=True))  # (units, fits), each row's largest is 1

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = np.exp(theta - theta.max())
        weights /= weights.sum()
        mixture = density @ weights
        gradient_w = -(density / mixture[:, None]).sum(axis=0)
        # Chain rule through the softmax.
        gradient = weights * (gradient_w - np.dot(weights, gradient_w))
        return float(-np.sum(np.log(mixture))), gradient

    solution = minimize(objective, np.zeros(len(labels)), jac=True, method="BFGS")
    weights = np.exp(solution.x - solution.x.max())
    weights /= weights.sum()
    return dict(zip(labels, weights.tolist(), strict=True))


def compare_results(results: Mapping[str, azs.ELPDData], *, method: str = "stacking") -> pd.DataFrame:
    """Rank PSIS-LOO results already computed on the same units; the table of :func:`loo_compare`."""
    with warnings.catch_warnings():
        # Stacking divides by zero for fits with identical predictions; the weights stay defined.
        warnings.simplefilter("ignore", RuntimeWarning)
        table = azs.compare(results, method=method, round_to="none")
    if method == "stacking":
        # NOTE: arviz-stats 1.3.3 exponentiates the pointwise elpd unshifted, so
        # where a unit's elpd is below about -745 (a pair of many cells) its
        # stacking weights all stay at 1/K. These weights are computed here.
        weights = stacking_weights(results)
        table["weight"] = [weights[str(label)] for label in table.index]
    rows = []
    for label, row in table.iterrows():
        result = results[str(label)]
        pareto_k = np.asarray(result.pareto_k)
        rows.append(
            {
                "fit": str(label),
                "rank": int(row["rank"]),
                "elpd": float(row["elpd"]),
                "se": float(row["se"]),
                "p": float(row["p"]),
                "elpd_diff": float(row["elpd_diff"]),
                "dse": float(row["dse"]),
                "weight": float(row["weight"]),
                "good_k": float(result.good_k),
                "pareto_k_max": float(pareto_k.max()),
                "units_above_good_k": int(np.sum(pareto_k > result.good_k)),
                "units": int(pareto_k.size),
            }
        )
    out = pd.DataFrame(rows).set_index("fit").sort_values("elpd", ascending=False)
    out["rank"] = np.arange(len(out))
    return out


def nested_specs(base: str | ModelSpec = "location-scale") -> dict[str, ModelSpec]:
    """Return the four nested alternatives of a location-scale specification.

    The alternative with both competence and model identity keeps the base
    specification and its name (so a fit of the base can be reused); the
    others are named ``<base>-competence-only``, ``<base>-model-only`` and
    ``<base>-neither``. Each keeps the base's likelihood, priors, location
    terms and sampler settings and changes only the scale terms.
    """
    spec = load_spec(base)
    if spec.family != "location-scale":
        raise RobustscopeError(f"nested alternatives are defined for the location-scale family, not {spec.family!r}")
    out = {}
    for suffix, terms in NESTED_TERMS.items():
        if suffix == "both":
            out[spec.name] = dataclasses.replace(spec, scale_terms=terms)
        else:
            out[f"{spec.name}-{suffix}"] = dataclasses.replace(spec, name=f"{spec.name}-{suffix}", scale_terms=terms)
    return out


__all__ = ["INTEGRATED_GROUP", "NESTED_TERMS", "add_pointwise_elpd", "compare_results", "good_k_threshold", "loo_compare", "loo_likelihood", "nested_specs", "stacking_weights"]
