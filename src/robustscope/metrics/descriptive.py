"""Descriptive robustness metrics per (model, task) from aggregated counts.

All accuracies are on the probability scale; the logit spread uses the
half-count corrected empirical logit ``log((k + 0.5) / (n - k + 0.5))``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .. import tensor as _tensor
from ..errors import RobustscopeError

MEASURES = ("accuracy_sd", "accuracy_range", "min_max_ratio", "logit_sd")


def pair_metrics(ds: xr.Dataset) -> pd.DataFrame:
    """Return one row per observed (model, task) with competence and spread measures.

    Columns
    -------
    competence
        Mean accuracy across perturbations (probability scale).
    accuracy_sd
        Standard deviation of accuracy across perturbations (ddof=1).
    accuracy_range
        Maximum minus minimum accuracy across perturbations.
    min_max_ratio
        Minimum over maximum accuracy; 1 means no perturbation moved the
        score, NaN when every accuracy is 0.
    logit_sd
        Standard deviation of the empirical logit across perturbations.
    perturbations
        Number of observed perturbations.

    Raises
    ------
    RobustscopeError
        When the tensor has no counts (a continuous metric).
    """
    if "n_correct" not in ds:
        raise RobustscopeError("descriptive count metrics need n_correct and n_total; this tensor holds a continuous metric")
    cells = _tensor.observed_cells(ds)
    cells["logit"] = np.log((cells["n_correct"] + 0.5) / (cells["n_total"] - cells["n_correct"] + 0.5))
    grouped = cells.groupby(["model", "task"], sort=False)
    table = pd.DataFrame(
        {
            "competence": grouped["accuracy"].mean(),
            "accuracy_sd": grouped["accuracy"].std(ddof=1),
            "accuracy_min": grouped["accuracy"].min(),
            "accuracy_max": grouped["accuracy"].max(),
            "logit_sd": grouped["logit"].std(ddof=1),
            "perturbations": grouped.size(),
        }
    )
    table["accuracy_range"] = table["accuracy_max"] - table["accuracy_min"]
    table["min_max_ratio"] = (table["accuracy_min"] / table["accuracy_max"]).where(table["accuracy_max"] > 0)
    return table.reset_index()
