"""Figures of a fitted location-scale model, drawn with matplotlib.

Each function returns a :class:`matplotlib.figure.Figure` with labelled
axes (scale and units in the label), a title that states what is shown, and
no global state changed.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from ..models.location_scale import competence_curve  # noqa: E402

PROB = 0.89
# Above this many points a scatter plot switches to small, transparent markers.
MANY_POINTS = 2000
# Above this many points a scatter plot becomes a hexagonal-bin density plot,
# because overlapping markers hide where most points lie.
DENSITY_POINTS = 20_000
# Pairs drawn in the posterior predictive check; larger fits are thinned evenly in the sorted order.
MAX_PPC_PAIRS = 1500


def _interval(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tail = (1 - PROB) / 2
    return np.quantile(values, 0.5, axis=axis), np.quantile(values, tail, axis=axis), np.quantile(values, 1 - tail, axis=axis)


def competence_robustness(trace: xr.DataTree, pairs: pd.DataFrame, descriptive: dict | None = None) -> plt.Figure:
    """Plot spread against competence: latent logit scale with the posterior curve, and the observed scale."""
    posterior = trace["posterior"].to_dataset()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    size, alpha = (6, 0.35) if len(pairs) > MANY_POINTS else (18, 0.7)
    dense = len(pairs) > DENSITY_POINTS

    if dense:
        left.hexbin(pairs["mu_mean"], np.exp(pairs["log_sigma_mean"]), yscale="log", gridsize=60, bins="log", mincnt=1, cmap="Blues", label="(model, task) pairs per bin (log colour)")
    else:
        left.scatter(pairs["mu_mean"], np.exp(pairs["log_sigma_mean"]), s=size, alpha=alpha, color="#1f77b4", label="(model, task) posterior mean")
    grid = np.linspace(pairs["mu_mean"].min() - 0.3, pairs["mu_mean"].max() + 0.3, 120)
    curves = np.exp(competence_curve(posterior, grid, trace.attrs))
    median, lower, upper = _interval(curves)
    left.plot(grid, median, color="#d62728", lw=2, label="posterior median curve (average model and task)")
    left.fill_between(grid, lower, upper, color="#d62728", alpha=0.2, label=f"{PROB:.0%} credible band")
    left.set_yscale("log")
    left.set_xlabel("competence mu[m,t] (logit of accuracy)")
    left.set_ylabel("perturbation spread sigma[m,t] (logit units, log axis)")
    left.set_title("Model: spread across perturbations vs competence")
    left.legend(fontsize=7, loc="best")

    if dense:
        right.hexbin(pairs["accuracy"], pairs["observed_spread"], gridsize=60, bins="log", mincnt=1, cmap="Greens", extent=(0.0, 1.0, 0.0, float(pairs["observed_spread"].max())), label="(model, task) pairs per bin (log colour)")
    else:
        right.scatter(pairs["accuracy"], pairs["observed_spread"], s=size, alpha=alpha, color="#2ca02c", label="(model, task) observed")
    if descriptive:
        xs = np.linspace(0, 1, 50)
        right.plot(xs, descriptive["ols_intercept"] + descriptive["ols_slope"] * xs, color="black", lw=1, ls="--", label="OLS of spread on accuracy")
    right.set_xlabel("competence: mean accuracy across perturbations (probability)")
    right.set_ylabel("spread: SD of accuracy across perturbations (probability)")
    right.set_title("Data: the published style of view")
    right.set_xlim(-0.02, 1.02)
    right.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def variance_shares(share_frames: dict[str, pd.DataFrame]) -> plt.Figure:
    """Plot each variance share's posterior mean and 89% interval, one row per component and fit."""
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * 4 * max(1, len(share_frames))))
    labels, position = [], 0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, table) in enumerate(share_frames.items()):
        for component, row in table.iterrows():
            ax.errorbar(row["mean"], position, xerr=[[row["mean"] - row["lower"]], [row["upper"] - row["mean"]]], fmt="o", color=colors[index % len(colors)], capsize=3)
            labels.append(f"{component} ({name})" if len(share_frames) > 1 else str(component))
            position += 1
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of log sigma (posterior mean, {PROB:.0%} interval)")
    ax.set_title("What explains robustness: variance partition of log spread")
    fig.tight_layout()
    return fig


def model_effects(table: pd.DataFrame, title: str = "Model identity effects on log spread") -> plt.Figure:
    """Forest plot of group effects (posterior mean and 89% interval), sorted by mean."""
    table = table.sort_values("mean")
    many = len(table) > 60
    if many:
        # Show the 30 lowest and the 30 highest; a note says how many are hidden.
        hidden = len(table) - 60
        table = pd.concat([table.head(30), table.tail(30)])
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.24 * len(table)))
    y = np.arange(len(table))
    ax.errorbar(table["mean"], y, xerr=[table["mean"] - table["lower"], table["upper"] - table["mean"]], fmt="o", color="#1f77b4", capsize=2, ms=4)
    ax.axvline(0, color="grey", lw=1, ls=":")
    ax.set_yticks(y, table.index)
    ax.set_xlabel(f"effect on log sigma (log of logit spread; negative = more robust), {PROB:.0%} interval")
    ax.set_title(title + (f" ({hidden} middle rows hidden)" if many else ""))
    fig.tight_layout()
    return fig


def spread_ppc(trace: xr.DataTree) -> plt.Figure:
    """Posterior predictive check of each pair's accuracy spread, pairs sorted by observed spread."""
    observed = trace["observed_data"]["spread"].values
    order = np.argsort(observed)
    if len(order) > MAX_PPC_PAIRS:
        order = order[np.unique(np.linspace(0, len(order) - 1, MAX_PPC_PAIRS).astype(int))]
    replicated = trace["posterior_predictive"]["spread"].transpose("pair", "chain", "draw").values
    replicated = replicated[order].reshape(len(order), -1)
    median, lower, upper = _interval(replicated, axis=1)
    x = np.arange(len(order))
    outside = (observed[order] < lower) | (observed[order] > upper)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.fill_between(x, lower, upper, color="#9467bd", alpha=0.3, step="mid", label=f"{PROB:.0%} posterior predictive interval")
    ax.plot(x, median, color="#9467bd", lw=1, label="predictive median")
    ax.scatter(x[~outside], observed[order][~outside], s=6, color="black", label="observed")
    ax.scatter(x[outside], observed[order][outside], s=10, color="#d62728", label=f"observed, outside interval ({outside.mean():.0%})")
    shown = f" ({len(order):,} of {len(observed):,} shown, evenly spaced)" if len(order) < len(observed) else ""
    ax.set_xlabel("(model, task) pairs, sorted by observed spread" + shown)
    ax.set_ylabel("SD of accuracy across perturbations (probability)")
    ax.set_title("Posterior predictive check of the spread the model exists for")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def worst_traces(trace: xr.DataTree, names: list[str]) -> plt.Figure:
    """Trace and rank-histogram plots of the named scalar parameters, chains overlaid."""
    posterior = trace["posterior"].to_dataset()
    names = [n for n in names if n in posterior and posterior[n].ndim == 2][:4]
    fig, axes = plt.subplots(len(names) or 1, 2, figsize=(10, 2.2 * max(1, len(names))), squeeze=False)
    for row, name in enumerate(names):
        values = posterior[name].values
        for chain in range(values.shape[0]):
            axes[row, 0].plot(values[chain], lw=0.5, alpha=0.8)
        ranks = np.argsort(np.argsort(values.ravel())).reshape(values.shape)
        bins = np.linspace(0, ranks.size, 21)
        for chain in range(values.shape[0]):
            axes[row, 1].hist(ranks[chain], bins=bins, histtype="step")
        axes[row, 0].set_ylabel(name)
        axes[row, 0].set_xlabel("draw")
        axes[row, 1].set_xlabel("rank among all draws (uniform when chains agree)")
    axes[0, 0].set_title("Trace per chain")
    axes[0, 1].set_title("Rank histogram per chain")
    fig.tight_layout()
    return fig
