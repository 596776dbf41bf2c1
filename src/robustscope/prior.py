"""Prior predictive checks: what a specification's priors say before seeing data.

Draws parameters from the priors, simulates tensors of the same size as the
data, and summarises two quantities a reader can judge: the accuracy of a
cell and the spread (standard deviation) of a (model, task) pair's accuracy
across perturbations. Priors are plausible when they put most mass on
accuracies strictly between 0 and 1 and on spreads from a few points to a
few tens of points, with the observed values well inside the simulated
range; priors that pile accuracies at exactly 0 and 1 would make the model
say more about the floor and ceiling than the data do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import tensor as _tensor
from ._logging import get_logger
from .models import family_module
from .specs import ModelSpec, load_spec

log = get_logger("prior")

# Accuracies at or beyond these bounds count as "at the floor or ceiling".
EXTREME = 0.02


def _cell_table(ds: xr.Dataset) -> pd.DataFrame:
    cells = _tensor.observed_cells(ds)
    if "n_correct" not in cells:
        raise ValueError("the prior predictive check needs a tensor of counts")
    cells = cells.assign(accuracy=cells["n_correct"] / cells["n_total"])
    return cells


def _summaries(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    spread = cells.groupby(["model", "task"], sort=False)["accuracy"].std(ddof=1).dropna().to_numpy()
    return cells["accuracy"].to_numpy(), spread


def prior_predictive(
    spec: str | Path | ModelSpec,
    tensor: xr.Dataset | str | Path,
    *,
    datasets: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate ``datasets`` tensors from the priors of ``spec`` at the size of ``tensor``.

    Parameters
    ----------
    spec
        Specification whose priors are checked.
    tensor
        The data: its numbers of models, tasks, perturbations per task and
        examples per cell set the size of each simulated tensor.
    datasets
        Number of prior draws (each a whole simulated tensor).
    seed
        Seed of the draws.

    Returns
    -------
    dict
        ``accuracy`` and ``spread``: arrays of simulated cell accuracies and
        pair spreads (pooled over datasets); ``observed_accuracy`` and
        ``observed_spread``; ``table``: a DataFrame with, for simulated and
        observed values, the 5%, 50% and 95% quantiles, the share of cell
        accuracies within ``EXTREME`` of 0 or 1, and the share of observed
        pair spreads inside the central 90% of the simulated ones.
    """
    model_spec = load_spec(spec)
    ds = tensor if isinstance(tensor, xr.Dataset) else _tensor.load(tensor)
    cells = _cell_table(ds)
    observed_accuracy, observed_spread = _summaries(cells)
    shape = {
        "n_models": int(cells["model"].nunique()),
        "n_tasks": int(cells["task"].nunique()),
        "n_perturbations": int(round(cells.groupby(["model", "task"]).size().median())),
        "n_examples": int(round(cells["n_total"].median())),
    }
    module = family_module(model_spec.family)
    rng = np.random.default_rng(seed)
    accuracies, spreads = [], []
    for _ in range(datasets):
        simulated, _ = module.simulate_from_prior(model_spec, rng, **shape)
        accuracy, spread = _summaries(_cell_table(simulated))
        accuracies.append(accuracy)
        spreads.append(spread)
    accuracy = np.concatenate(accuracies)
    spread = np.concatenate(spreads)

    def row(values: np.ndarray, extreme: bool) -> dict[str, float]:
        out = dict(zip(("q05", "q50", "q95"), np.quantile(values, [0.05, 0.5, 0.95]).tolist(), strict=True))
        if extreme:
            out["share_at_0_or_1"] = float(np.mean((values <= EXTREME) | (values >= 1 - EXTREME)))
        return out

    low, high = np.quantile(spread, [0.05, 0.95])
    table = pd.DataFrame(
        {
            "prior accuracy": row(accuracy, True),
            "observed accuracy": row(observed_accuracy, True),
            "prior spread": row(spread, False),
            "observed spread": row(observed_spread, False),
        }
    ).T
    return {
        "accuracy": accuracy,
        "spread": spread,
        "observed_accuracy": observed_accuracy,
        "observed_spread": observed_spread,
        "observed_spread_inside_prior_90": float(np.mean((observed_spread >= low) & (observed_spread <= high))),
        "table": table,
        "shape": shape,
        "datasets": datasets,
    }


def plot_prior_predictive(result: dict[str, Any], spec_name: str = "") -> Any:
    """Return a figure: prior predictive and observed accuracy (left) and spread (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(0, 1, 41)
    axes[0].hist(result["accuracy"], bins=bins, density=True, color="#BBBBBB", label="prior predictive")
    axes[0].hist(result["observed_accuracy"], bins=bins, density=True, histtype="step", color="#C44E52", lw=1.5, label="observed")
    axes[0].set_xlabel("accuracy of a cell (probability scale)")
    axes[0].set_ylabel("density")
    axes[0].legend(frameon=False)
    top = float(max(np.quantile(result["spread"], 0.99), np.max(result["observed_spread"], initial=0.0)))
    spread_bins = np.linspace(0, max(top, 1e-3), 41)
    axes[1].hist(np.clip(result["spread"], 0, top), bins=spread_bins, density=True, color="#BBBBBB", label="prior predictive")
    axes[1].hist(result["observed_spread"], bins=spread_bins, density=True, histtype="step", color="#C44E52", lw=1.5, label="observed")
    axes[1].set_xlabel("SD of a pair's accuracy across perturbations (probability scale)")
    axes[1].set_ylabel("density")
    title = "Prior predictive check"
    fig.suptitle(f"{title}: {spec_name}" if spec_name else title)
    fig.tight_layout()
    return fig


__all__ = ["prior_predictive", "plot_prior_predictive"]
