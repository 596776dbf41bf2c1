"""The published style of analysis: regress robustness on performance across (model, task) points.

Ordinary least squares of a robustness measure on competence, with R^2 and
slope, and Spearman's rank correlation. These treat each point as exact and
independent, which the hierarchical models do not; the report sets the two
side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import RobustscopeError


def ols_and_spearman(table: pd.DataFrame, robustness: str = "min_max_ratio", performance: str = "competence") -> dict[str, Any]:
    """Return OLS and Spearman statistics of ``robustness`` on ``performance``.

    Rows with a missing value in either column are left out and counted in
    ``n_excluded``.

    Returns
    -------
    dict
        ``ols_r2``, ``ols_slope`` (robustness units per unit of performance),
        ``ols_intercept``, ``ols_slope_se``, ``spearman_rho``,
        ``spearman_p``, ``n_points``, ``n_excluded``, ``robustness``,
        ``performance``.
    """
    for column in (robustness, performance):
        if column not in table.columns:
            raise RobustscopeError(f"column {column!r} not found; available: {', '.join(table.columns)}")
    clean = table[[performance, robustness]].dropna()
    if len(clean) < 3:
        raise RobustscopeError(f"need at least 3 (model, task) points with {robustness} and {performance}; found {len(clean)}")
    x = clean[performance].to_numpy(float)
    y = clean[robustness].to_numpy(float)
    fit = stats.linregress(x, y)
    rho = stats.spearmanr(x, y)
    return {
        "robustness": robustness,
        "performance": performance,
        "ols_r2": float(fit.rvalue**2),
        "ols_slope": float(fit.slope),
        "ols_intercept": float(fit.intercept),
        "ols_slope_se": float(fit.stderr),
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "n_points": int(len(clean)),
        "n_excluded": int(len(table) - len(clean)),
    }


def all_measures(table: pd.DataFrame, measures: tuple[str, ...] = ("min_max_ratio", "accuracy_sd", "accuracy_range", "logit_sd")) -> pd.DataFrame:
    """Return :func:`ols_and_spearman` for several robustness measures, one row each."""
    return pd.DataFrame([ols_and_spearman(table, m) for m in measures]).set_index("robustness")


def published_reference() -> dict[str, float]:
    """Return the headline of Ashury-Tahan et al. (arXiv 2602.03344): R^2 and slope of consistency on accuracy."""
    return {"ols_r2": 0.924, "ols_slope": 1.05, "n_points": 54}


__all__ = ["all_measures", "ols_and_spearman", "published_reference"]
