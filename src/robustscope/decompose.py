"""Variance partition of robustness and the competence effect.

The scale submodel writes ``log sigma[m,t]`` as a sum of components: the
competence term ``gamma1 * (mu[m,t] - c0)`` (plus the spline bends when the
competence form is a spline), model identity ``u[m]``, task
identity ``v[t]`` and the residual ``e[m,t]``. For each posterior draw the
finite-population variance of each component is taken over the observed
(model, task) pairs, and each share is that variance divided by the sum of
the four. Shares therefore lie in [0, 1] and sum to 1 draw by draw. The
covariance between components is not attributed to any of them, which is the
usual convention for finite-population variance decompositions (Gelman and
Hill, 2007, section 21.6).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

COMPONENTS = ("competence", "model", "task", "residual")
DEFAULT_PROB = 0.89


def scale_components(posterior: xr.Dataset, pair_model: np.ndarray, pair_task: np.ndarray, competence_center: float) -> xr.Dataset:
    """Return the four additive components of ``log_sigma`` per draw and pair.

    Components whose term is absent from the model are zero.
    """
    log_sigma = posterior["log_sigma"]
    zeros = xr.zeros_like(log_sigma)
    if "competence_term" in posterior:
        competence = posterior["competence_term"]
    elif "gamma1" in posterior:
        competence = posterior["gamma1"] * (posterior["mu"] - competence_center)
    else:
        competence = zeros
    model = posterior["u_model"].isel(model=xr.DataArray(pair_model, dims="pair")).drop_vars("model", errors="ignore") if "u_model" in posterior else zeros
    task = posterior["v_task"].isel(task=xr.DataArray(pair_task, dims="pair")).drop_vars("task", errors="ignore") if "v_task" in posterior else zeros
    residual = log_sigma - posterior["gamma0"] - competence - model - task
    return xr.Dataset({"competence": competence, "model": model, "task": task, "residual": residual}).transpose("chain", "draw", "pair")


def variance_shares(components: xr.Dataset) -> xr.Dataset:
    """Return the share of the finite-population variance of ``log_sigma`` per component and draw.

    Output variables ``share_competence``, ``share_model``, ``share_task``,
    ``share_residual`` on (chain, draw), and ``bayes_r2`` (one minus the
    residual share: the Bayesian R^2 of the scale submodel).
    """
    variances = {name: components[name].var("pair", ddof=0) for name in COMPONENTS}
    total = sum(variances.values())
    total = total.where(total > 0)
    shares = {f"share_{name}": (variances[name] / total).fillna(0.0) for name in COMPONENTS}
    shares["bayes_r2"] = 1.0 - shares["share_residual"]
    return xr.Dataset(shares)


def interval_summary(values: xr.DataArray, prob: float = DEFAULT_PROB) -> dict[str, float]:
    """Return ``{mean, lower, upper}`` of the draws with an equal-tailed interval of mass ``prob``."""
    flat = np.asarray(values).ravel()
    flat = flat[np.isfinite(flat)]
    tail = (1.0 - prob) / 2.0
    return {
        "mean": float(flat.mean()),
        "lower": float(np.quantile(flat, tail)),
        "upper": float(np.quantile(flat, 1.0 - tail)),
    }


def share_table(posterior: xr.Dataset, prob: float = DEFAULT_PROB) -> pd.DataFrame:
    """Return a table of variance shares: one row per component with mean, lower, upper."""
    rows = []
    for name in COMPONENTS:
        summary = interval_summary(posterior[f"share_{name}"], prob)
        rows.append({"component": name, **summary})
    return pd.DataFrame(rows).set_index("component")


def effect_table(posterior: xr.Dataset, name: str, dim: str, prob: float = DEFAULT_PROB) -> pd.DataFrame:
    """Return mean and equal-tailed interval of a group effect (e.g. ``u_model`` over ``model``)."""
    values = posterior[name]
    rows = []
    for label in values[dim].values:
        rows.append({dim: str(label), **interval_summary(values.sel({dim: label}), prob)})
    return pd.DataFrame(rows).set_index(dim)
