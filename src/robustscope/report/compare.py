"""Compare several fits side by side: ``compare.html``, ``compare.md``, ``compare.json`` and figures.

For every fit the comparison lists the data and its provenance, the
competence effect ``gamma1``, the variance shares of log spread, the model
identity effects of the models the fits share, and the convergence
diagnostics. Differences between fits are stated with a posterior
probability computed from the draws. The fits are independent posteriors, so
draws of two fits are paired at random (after flattening chains and draws,
with a fixed seed) and the probability is the share of pairs in which one
value exceeds the other. PSIS-LOO (``arviz.loo`` on the per-pair log
likelihood, ``arviz.compare`` for the ranking) is reported only for fits of
the same data, identified by equal tensor hashes, because expected log
predictive densities of different observations cannot be compared.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from scipy.special import ndtri  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from ..models.location_scale import competence_curve  # noqa: E402
from .. import __version__, decompose  # noqa: E402
from .._io import write_bytes, write_json, write_text  # noqa: E402
from .._logging import get_logger  # noqa: E402
from ..diagnostics import DEFAULT_THRESHOLDS, Thresholds, check_fit, summarize  # noqa: E402
from ..errors import InputError, RobustscopeError  # noqa: E402
from .. import loo as _loo  # noqa: E402
from . import plots  # noqa: E402

log = get_logger("report.compare")

PROB = 0.89
# A difference is called clear when one direction has at least this posterior probability.
CLEAR_PROB = 0.95
# Points drawn per fit in scatter plots; larger fits are thinned at random.
MAX_SCATTER = 1500
# Pairs per fit drawn in the posterior predictive check; larger fits are thinned evenly.
MAX_PPC_PAIRS = 1500
# Shared models drawn in the forest plot and listed in tables: this many at each end.
EDGE_ROWS = 20
QUANTITIES = {
    "gamma1": "the competence effect gamma1 (change in log sigma per logit of competence)",
    "share_competence": "the share of the variance of log spread explained by competence",
    "share_model": "the share of the variance of log spread explained by model identity",
    "share_task": "the share of the variance of log spread explained by task identity",
    "share_residual": "the residual share of the variance of log spread",
}
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _load(fit: xr.DataTree | str | Path) -> xr.DataTree:
    if isinstance(fit, xr.DataTree):
        return fit
    from ..fit import load_posterior

    return load_posterior(fit)


def _default_labels(fits: list[Any], trees: list[xr.DataTree]) -> list[str]:
    """Return one unique label per fit, in four steps applied only to labels that repeat.

    1. ``dataset (specification)`` from the fit's attributes;
    2. for fits given as paths, the name of the folder that contains the file;
    3. the file name without its suffix;
    4. a numeric suffix ``#1``, ``#2``, ... in the order the fits were given.

    A step adds its text to a group of equal labels only when the texts differ
    within that group, so two ``posterior.nc`` files in folders ``run-a`` and
    ``run-b`` become ``data (spec) [run-a]`` and ``data (spec) [run-b]``.
    """
    labels = [f"{tree.attrs.get('dataset') or 'fit'} ({tree.attrs.get('spec_name') or 'unknown specification'})" for tree in trees]
    paths = [Path(fit) if isinstance(fit, (str, Path)) else None for fit in fits]
    folders = [None if path is None else (path.parent.name or path.resolve().parent.name) for path in paths]
    stems = [None if path is None else path.stem for path in paths]
    for hints in (folders, stems):
        labels = _add_hints(labels, hints)

    counts = {label: labels.count(label) for label in labels}
    seen: dict[str, int] = {}
    numbered = []
    for label in labels:
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} #{seen[label]}"
        numbered.append(label)
    return numbered


def _add_hints(labels: list[str], hints: list[str | None]) -> list[str]:
    """Append ``[hint]`` to each repeated label whose group has more than one distinct hint."""
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    out = list(labels)
    for members in groups.values():
        if len(members) < 2 or len({hints[i] for i in members}) < 2:
            continue
        for index in members:
            if hints[index]:
                out[index] = f"{labels[index]} [{hints[index]}]"
    return out


def _flat(posterior: xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(posterior[name].transpose("chain", "draw", ...).values).reshape(-1)


def probability_greater(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> float:
    """Return P(first > second) for two independent posteriors, pairing their draws at random.

    Both arrays are flat draws. Each is shuffled, the longer one is cut to the
    length of the shorter, and ties count one half.
    """
    size = min(len(first), len(second))
    a = rng.permutation(first)[:size]
    b = rng.permutation(second)[:size]
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


def _format_probability(p: float) -> str:
    """Return ``= 0.123``, or ``> 0.999`` and ``< 0.001`` at the ends, to follow ``P(...)``."""
    if p > 0.999:
        return "> 0.999"
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}"


def _interval_text(entry: dict[str, float] | None, digits: int = 3) -> str:
    if not entry:
        return "n/a"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


def _checks(tree: xr.DataTree, thresholds: Thresholds) -> pd.DataFrame:
    """Run :func:`check_fit`; when PSIS-LOO itself fails (for example on constant draws), run it without PSIS-LOO and mark that check failed."""
    try:
        return check_fit(tree, thresholds)
    except ValueError as error:
        log.warning("PSIS-LOO failed for fit %s, so the other checks run without it: %s", tree.attrs.get("dataset"), error)
    groups = {name: tree[name].to_dataset() for name in tree.children if name != "log_likelihood"}
    reduced = xr.DataTree.from_dict(groups)
    reduced.attrs.update(tree.attrs)
    checks = check_fit(reduced, thresholds)
    failed_loo = checks["check"] == "pareto_k_max"
    checks.loc[failed_loo, "status"] = "failed"
    checks.loc[failed_loo, "detail"] = "PSIS-LOO could not be computed from the log likelihood (constant or degenerate draws)"
    return checks


def _fit_record(tree: xr.DataTree, label: str, thresholds: Thresholds) -> tuple[dict[str, Any], pd.DataFrame]:
    """Return the per-fit summary (provenance, counts, estimates, diagnostics) and the check table."""
    posterior = tree["posterior"].to_dataset()
    constant = tree["constant_data"].to_dataset()
    manifest = json.loads(tree.attrs.get("manifest", "{}") or "{}")
    checks = _checks(tree, thresholds)
    diagnostics = summarize(checks)
    rows = manifest.get("rows", {}) if isinstance(manifest, dict) else {}
    record = {
        "label": label,
        "dataset": tree.attrs.get("dataset"),
        "metric": tree.attrs.get("metric"),
        "tensor_hash": tree.attrs.get("tensor_hash"),
        "spec_name": tree.attrs.get("spec_name"),
        "spec": json.loads(tree.attrs["spec"]) if tree.attrs.get("spec") else None,
        "sampler": {key: tree.attrs.get(key) for key in ("sampler", "chains", "draws", "tune", "seed")},
        "versions": json.loads(tree.attrs.get("versions", "{}") or "{}"),
        "counts": {
            "models": int(constant.sizes["model"]),
            "tasks": int(constant.sizes["task"]),
            "pairs": int(constant.sizes["pair"]),
            "cells": int(constant["pair_perturbations"].sum()) if "pair_perturbations" in constant else None,
            "rows_read": rows.get("read"),
            "rows_kept": rows.get("kept"),
            "rows_dropped": rows.get("dropped"),
        },
        "competence_center": tree.attrs.get("competence_center"),
        "gamma1": decompose.interval_summary(posterior["gamma1"], PROB) if "gamma1" in posterior else None,
        "shares": {name: decompose.interval_summary(posterior[f"share_{name}"], PROB) for name in decompose.COMPONENTS},
        "bayes_r2": decompose.interval_summary(posterior["bayes_r2"], PROB) if "bayes_r2" in posterior else None,
        "diagnostics": diagnostics,
        "caveat": tree.attrs.get("caveat") or None,
    }
    return record, checks


def _differences(trees: list[xr.DataTree], labels: list[str], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Return one entry per pair of fits and quantity with P(first > second) and a sentence."""
    posteriors = [tree["posterior"].to_dataset() for tree in trees]
    out = []
    for i in range(len(trees)):
        for j in range(i + 1, len(trees)):
            for name, description in QUANTITIES.items():
                if name not in posteriors[i] or name not in posteriors[j]:
                    continue
                p = probability_greater(_flat(posteriors[i], name), _flat(posteriors[j], name), rng)
                first, second = labels[i], labels[j]
                if p >= CLEAR_PROB:
                    sentence = f"{description[0].upper()}{description[1:]} is larger in {first} than in {second}: P({name} in {first} > {name} in {second}) {_format_probability(p)}."
                elif p <= 1.0 - CLEAR_PROB:
                    sentence = f"{description[0].upper()}{description[1:]} is smaller in {first} than in {second}: P({name} in {first} < {name} in {second}) {_format_probability(1.0 - p)}."
                else:
                    sentence = f"No clear difference in {description} between {first} and {second}: P({name} in {first} > {name} in {second}) {_format_probability(p)}."
                out.append(
                    {
                        "quantity": name,
                        "first": first,
                        "second": second,
                        "p_first_greater": p,
                        "clear": bool(p >= CLEAR_PROB or p <= 1.0 - CLEAR_PROB),
                        "statement": sentence,
                    }
                )
    return out


def _shared_models(trees: list[xr.DataTree], labels: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """Summarise ``u_model`` of the models every fit contains, with pairwise probabilities of a difference."""
    posteriors = [tree["posterior"].to_dataset() for tree in trees]
    if not all("u_model" in p for p in posteriors):
        return {"models": [], "rows": [], "pairwise": [], "note": "not every fit has model identity effects (u_model)"}
    sets = [[str(m) for m in p["u_model"]["model"].values] for p in posteriors]
    shared = [m for m in sets[0] if all(m in s for s in sets[1:])]
    if not shared:
        return {"models": [], "rows": [], "pairwise": [], "note": "the fits share no model, so their model identity effects are not compared"}

    rows = []
    flats = []
    for posterior in posteriors:
        values = posterior["u_model"].assign_coords(model=[str(m) for m in posterior["u_model"]["model"].values]).sel(model=shared)
        flats.append(values.transpose("chain", "draw", "model").values.reshape(-1, len(shared)))
    tail = (1.0 - PROB) / 2.0
    for index, model in enumerate(shared):
        row: dict[str, Any] = {"model": model}
        for label, flat in zip(labels, flats, strict=True):
            column = flat[:, index]
            row[label] = {"mean": float(column.mean()), "lower": float(np.quantile(column, tail)), "upper": float(np.quantile(column, 1.0 - tail))}
        rows.append(row)

    pairwise = []
    for i in range(len(trees)):
        for j in range(i + 1, len(trees)):
            probabilities = [probability_greater(flats[i][:, k], flats[j][:, k], rng) for k in range(len(shared))]
            clear = [(shared[k], p) for k, p in enumerate(probabilities) if p >= CLEAR_PROB or p <= 1.0 - CLEAR_PROB]
            clear.sort(key=lambda item: -abs(item[1] - 0.5))
            pairwise.append(
                {
                    "first": labels[i],
                    "second": labels[j],
                    "p_first_greater": dict(zip(shared, probabilities, strict=True)),
                    "clear_models": [model for model, _ in clear],
                }
            )
    return {"models": shared, "rows": rows, "pairwise": pairwise, "note": None}


def _loo_groups(trees: list[xr.DataTree], labels: list[str]) -> list[dict[str, Any]]:
    """Run PSIS-LOO for each group of two or more fits with the same tensor hash.

    A fit whose PSIS-LOO fails gets a row with the error; the others are
    still ranked.
    """
    groups: dict[str, list[int]] = {}
    for index, tree in enumerate(trees):
        key = tree.attrs.get("tensor_hash")
        if key and "log_likelihood" in tree.children:
            # Integrated and conditional log likelihoods are not comparable.
            groups.setdefault(f"{key}|{_loo.loo_likelihood(tree)}", []).append(index)
    results = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        rows = []
        computed = {}
        for index in members:
            label = labels[index]
            try:
                computed[label] = _loo._loo(trees[index])
            except (ValueError, FloatingPointError, RobustscopeError) as error:
                log.warning("PSIS-LOO failed for fit %s: %s", label, error)
                rows.append({"fit": label, "error": f"PSIS-LOO failed: {error}"})
                continue
            loo = computed[label]
            pareto_k = np.asarray(loo.pareto_k)
            rows.append(
                {
                    "fit": label,
                    "elpd_loo": float(loo.elpd),
                    "se": float(loo.se),
                    "p_loo": float(loo.p),
                    "pareto_k_max": float(pareto_k.max()),
                    "good_k": float(loo.good_k),
                    "pairs_above_good_k": int(np.sum(pareto_k > loo.good_k)),
                    "pairs": int(pareto_k.size),
                }
            )
        ranking = []
        if len(computed) >= 2:
            table = _loo.compare_results(computed)
            ranking = [
                {"fit": str(label), "rank": int(row["rank"]), "elpd_diff": float(row["elpd_diff"]), "dse": float(row["dse"]), "weight": float(row["weight"])}
                for label, row in table.iterrows()
            ]
        tensor_hash, likelihood = key.split("|")
        results.append({"tensor_hash": tensor_hash, "likelihood": likelihood, "fits": [labels[i] for i in members], "loo": rows, "compare": ranking})
    return results


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def plot_competence_curves(trees: list[xr.DataTree], labels: list[str], rng: np.random.Generator) -> tuple[plt.Figure, str]:
    """Plot spread against competence for every fit: pair posterior means and the posterior curve with its band."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    thinned = False
    tail = (1.0 - PROB) / 2.0
    for index, (tree, label) in enumerate(zip(trees, labels, strict=True)):
        color = COLORS[index % len(COLORS)]
        posterior = tree["posterior"].to_dataset()
        mu = posterior["mu"].mean(("chain", "draw")).values
        sigma = np.exp(posterior["log_sigma"].mean(("chain", "draw")).values)
        shown = np.arange(len(mu))
        if len(mu) > MAX_SCATTER:
            shown = rng.choice(len(mu), MAX_SCATTER, replace=False)
            thinned = True
        ax.scatter(mu[shown], sigma[shown], s=5, alpha=0.3, color=color)

        grid = np.linspace(np.quantile(mu, 0.01) - 0.2, np.quantile(mu, 0.99) + 0.2, 100)
        curves = np.exp(competence_curve(posterior, grid, tree.attrs))
        ax.plot(grid, np.median(curves, axis=0), color=color, lw=2, label=f"{label}: posterior median curve")
        ax.fill_between(grid, np.quantile(curves, tail, axis=0), np.quantile(curves, 1.0 - tail, axis=0), color=color, alpha=0.18)

    ax.set_yscale("log")
    ax.set_xlabel("competence mu[m,t] (logit of accuracy)")
    ax.set_ylabel("perturbation spread sigma[m,t] (logit units, log axis)")
    ax.set_title("Robustness against competence: posterior curve of each fit")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    caption = (
        "Points are the posterior means of competence (logit scale) and of the spread sigma across perturbations (logit units, "
        f"log axis) of each (model, task) pair; lines are each fit's posterior median of exp(gamma0 + gamma1 (mu - c0)) with its "
        f"{PROB:.0%} band, for an average model and task, where c0 is that fit's competence centre."
    )
    if thinned:
        caption += f" Fits with more than {MAX_SCATTER} pairs show a random sample of {MAX_SCATTER} points."
    return fig, caption


def plot_shared_effects(shared: dict[str, Any], labels: list[str]) -> tuple[plt.Figure, str]:
    """Forest plot of the shared models' identity effects on log spread, one marker per fit."""
    rows = sorted(shared["rows"], key=lambda row: row[labels[0]]["mean"])
    hidden = 0
    if len(rows) > 2 * EDGE_ROWS:
        hidden = len(rows) - 2 * EDGE_ROWS
        rows = rows[:EDGE_ROWS] + rows[-EDGE_ROWS:]

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * len(rows) * max(1.0, len(labels) / 2)))
    offsets = np.linspace(-0.25, 0.25, len(labels)) if len(labels) > 1 else np.zeros(1)
    y = np.arange(len(rows))
    for index, label in enumerate(labels):
        mean = np.array([row[label]["mean"] for row in rows])
        lower = np.array([row[label]["lower"] for row in rows])
        upper = np.array([row[label]["upper"] for row in rows])
        ax.errorbar(mean, y + offsets[index], xerr=[mean - lower, upper - mean], fmt="o", ms=3, capsize=2, color=COLORS[index % len(COLORS)], label=label)

    ax.axvline(0.0, color="grey", lw=1, ls=":")
    ax.set_yticks(y, [row["model"] for row in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"model identity effect u[m] on log sigma (log of logit spread; negative = more robust), {PROB:.0%} interval")
    ax.set_ylabel("model (sorted by the first fit's mean)")
    ax.set_title("Model identity effects of the models every fit contains" + (f" ({hidden} middle models hidden)" if hidden else ""))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    caption = (
        f"Posterior mean and {PROB:.0%} interval of u[m] for the {len(shared['models'])} models every fit contains, one colour per fit. "
        "Each fit's effects sum to zero over its own models, so a shift between fits with different model sets is partly a change "
        "of reference."
    )
    if hidden:
        caption += f" Only the {EDGE_ROWS} lowest and {EDGE_ROWS} highest models by the first fit's mean are drawn; {hidden} are hidden."
    return fig, caption


def plot_ppc(trees: list[xr.DataTree], labels: list[str], outside: list[float | None]) -> tuple[plt.Figure, str]:
    """Posterior predictive check of each pair's accuracy spread, one panel per fit."""
    fig, axes = plt.subplots(len(trees), 1, figsize=(9, 2.8 * len(trees)), squeeze=False)
    tail = (1.0 - PROB) / 2.0
    thinned = False
    for index, (tree, label) in enumerate(zip(trees, labels, strict=True)):
        ax = axes[index, 0]
        observed = np.asarray(tree["observed_data"]["spread"].values)
        order = np.argsort(observed)
        if len(order) > MAX_PPC_PAIRS:
            order = order[np.unique(np.linspace(0, len(order) - 1, MAX_PPC_PAIRS).astype(int))]
            thinned = True
        replicated = tree["posterior_predictive"]["spread"].transpose("pair", "chain", "draw").values
        replicated = replicated[order].reshape(len(order), -1)
        lower = np.quantile(replicated, tail, axis=1)
        upper = np.quantile(replicated, 1.0 - tail, axis=1)
        x = np.arange(len(order))
        outside_mask = (observed[order] < lower) | (observed[order] > upper)
        ax.fill_between(x, lower, upper, color="#9467bd", alpha=0.3, step="mid", label=f"{PROB:.0%} predictive interval")
        ax.scatter(x[~outside_mask], observed[order][~outside_mask], s=4, color="black", label="observed")
        ax.scatter(x[outside_mask], observed[order][outside_mask], s=7, color="#d62728", label="observed, outside")
        share = outside[index]
        share_text = f"{share:.0%} of pairs outside" if share is not None else ""
        ax.set_title(f"{label}: posterior predictive check of the spread ({share_text})", fontsize=10)
        ax.set_ylabel("SD of accuracy (probability)")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("(model, task) pairs, sorted by observed spread")
    fig.tight_layout()
    caption = (
        "For each fit, the observed standard deviation of accuracy across perturbations (probability scale) of every (model, task) "
        f"pair against its {PROB:.0%} posterior predictive interval; red points fall outside, and about {1 - PROB:.0%} are expected."
    )
    if thinned:
        caption += f" Fits with more than {MAX_PPC_PAIRS} pairs show {MAX_PPC_PAIRS} pairs evenly spaced in the sorted order."
    return fig, caption


def split_rank_rhat(draws: np.ndarray, chunk: int = 20_000) -> np.ndarray:
    """Return the rank-normalised split R-hat of every element of ``draws`` (chain, draw, element...).

    The maximum of the bulk and the folded R-hat of Vehtari et al. (2021),
    the statistic ``arviz.rhat`` computes, vectorised over elements (in
    chunks of ``chunk`` elements) so that the worst of hundreds of thousands
    of pair parameters is found in seconds.
    """
    chains, length = draws.shape[:2]
    half = length // 2
    values = draws.reshape(chains, length, -1)

    def rhat(sample: np.ndarray) -> np.ndarray:
        flat = sample.reshape(-1, sample.shape[-1])
        ranks = rankdata(flat, axis=0)
        z = ndtri((ranks - 0.375) / (flat.shape[0] + 0.25)).reshape(sample.shape)
        within = z.var(axis=1, ddof=1).mean(axis=0)
        between = half * z.mean(axis=1).var(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(((half - 1) / half * within + between / half) / within)

    out = np.empty(values.shape[2])
    for start in range(0, values.shape[2], chunk):
        block = values[:, :, start : start + chunk]
        split = np.concatenate([block[:, :half], block[:, length - half :]], axis=0)
        folded = np.abs(split - np.median(split.reshape(-1, split.shape[-1]), axis=0))
        out[start : start + chunk] = np.fmax(rhat(split), rhat(folded))
    return out.reshape(draws.shape[2:])


def _worst_element(posterior: xr.Dataset, name: str) -> tuple[np.ndarray, str]:
    """Return the draws (chain, draw) and label of the element of ``name`` with the largest R-hat."""
    values = posterior[name].transpose("chain", "draw", ...)
    if values.ndim == 2:
        return values.values, name
    rhat = split_rank_rhat(values.values)
    position = np.unravel_index(int(np.argmax(np.nan_to_num(rhat, nan=-np.inf))), rhat.shape)
    dims = values.dims[2:]
    selection = {dim: int(i) for dim, i in zip(dims, position, strict=True)}
    label = ", ".join(str(values[dim].values[i]) if dim in values.coords else str(i) for dim, i in selection.items())
    return values.isel(selection).values, f"{name}[{label}]"


def plot_traces(tree: xr.DataTree, label: str, checks: pd.DataFrame) -> tuple[plt.Figure, str]:
    """Trace and rank plots of the parameter element with the worst R-hat and of gamma1 for one fit."""
    posterior = tree["posterior"].to_dataset()
    by_check = checks.set_index("check")
    worst_name = str(by_check.loc["r_hat_max", "detail"]) if "r_hat_max" in by_check.index else ""
    series = []
    if worst_name in posterior:
        series.append(_worst_element(posterior, worst_name))
    for name in ("gamma1", "sd_u"):
        if name in posterior and name != worst_name:
            series.append((posterior[name].transpose("chain", "draw").values, name))
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 2.1 * len(series)), squeeze=False)
    for row, (values, name) in enumerate(series):
        for chain in range(values.shape[0]):
            axes[row, 0].plot(values[chain], lw=0.5, alpha=0.8)
        ranks = np.argsort(np.argsort(values.ravel())).reshape(values.shape)
        bins = np.linspace(0, ranks.size, 21)
        for chain in range(values.shape[0]):
            axes[row, 1].hist(ranks[chain], bins=bins, histtype="step")
        axes[row, 0].set_ylabel(f"{name}\n(draw value)", fontsize=8)
        axes[row, 0].set_xlabel("draw within chain")
        axes[row, 1].set_ylabel("draws per bin")
        axes[row, 1].set_xlabel("rank among all draws (uniform when chains agree)")
    axes[0, 0].set_title(f"{label}: trace per chain")
    axes[0, 1].set_title(f"{label}: rank histogram per chain")
    fig.tight_layout()
    caption = (
        f"{label}: traces and rank histograms of the parameter element with the largest R-hat ({series[0][1] if series else 'none'}) "
        "and of the key scale parameters, on each parameter's own scale (logit for location terms, log of the logit spread for "
        "scale terms). Overlapping chains and flat rank histograms indicate convergence."
    )
    return fig, caption


def _figures(trees: list[xr.DataTree], labels: list[str], records: list[dict[str, Any]], checks: list[pd.DataFrame], shared: dict[str, Any], rng: np.random.Generator) -> list[tuple[str, str, bytes]]:
    figures = []
    fig, caption = plot_competence_curves(trees, labels, rng)
    figures.append(("competence_curves.png", caption, _png(fig)))
    share_frames = {label: decompose.share_table(tree["posterior"].to_dataset(), PROB) for tree, label in zip(trees, labels, strict=True)}
    figures.append(
        (
            "variance_shares.png",
            (
                f"Posterior mean and {PROB:.0%} interval of each share of the finite-population variance of log sigma, one colour "
                "per fit. The four shares of a fit sum to one in every draw."
            ),
            _png(plots.variance_shares(share_frames)),
        )
    )
    if shared["rows"]:
        fig, caption = plot_shared_effects(shared, labels)
        figures.append(("shared_model_effects.png", caption, _png(fig)))
    if all("posterior_predictive" in t.children and "observed_data" in t.children for t in trees):
        outside = [record["diagnostics"].get("ppc_spread_outside") for record in records]
        fig, caption = plot_ppc(trees, labels, outside)
        figures.append(("spread_ppc.png", caption, _png(fig)))
    for index, (tree, label, table) in enumerate(zip(trees, labels, checks, strict=True)):
        fig, caption = plot_traces(tree, label, table)
        figures.append((f"traces_{index + 1}.png", caption, _png(fig)))
    return figures


def _overview_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for record in records:
        counts = record["counts"]
        sampler = record["sampler"]
        versions = record["versions"]
        rows.append(
            {
                "fit": record["label"],
                "diagnostics": "passed" if record["diagnostics"]["passed"] else "FAILED",
                "dataset": record["dataset"],
                "models": counts["models"],
                "tasks": counts["tasks"],
                "pairs": counts["pairs"],
                "cells": counts["cells"],
                "rows read/kept/dropped": "/".join("n/a" if counts[key] is None else str(counts[key]) for key in ("rows_read", "rows_kept", "rows_dropped")),
                "spec": record["spec_name"],
                "sampler": f"{sampler['sampler']} {sampler['chains']}x({sampler['tune']}+{sampler['draws']})",
                "seed": sampler["seed"],
                "tensor hash": str(record["tensor_hash"])[:12],
                "versions": ", ".join(f"{k} {versions.get(k)}" for k in ("robustscope", "pymc", "nutpie", "arviz") if k in versions),
            }
        )
    return pd.DataFrame(rows)


def _estimates_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for record in records:
        row = {"fit": record["label"], "gamma1": _interval_text(record["gamma1"])}
        for name in decompose.COMPONENTS:
            row[f"share_{name}"] = _interval_text(record["shares"][name])
        row["bayes_r2"] = _interval_text(record["bayes_r2"])
        rows.append(row)
    return pd.DataFrame(rows)


def _diagnostics_table(records: list[dict[str, Any]], checks: list[pd.DataFrame]) -> pd.DataFrame:
    columns = {}
    for record, table in zip(records, checks, strict=True):
        columns[record["label"]] = [
            f"{'n/a' if value is None or (isinstance(value, float) and np.isnan(value)) else f'{value:.3g}'} ({status})"
            for value, status in zip(table["value"], table["status"], strict=True)
        ]
    frame = pd.DataFrame(columns, index=checks[0]["check"].tolist())
    frame.insert(0, "threshold", checks[0]["threshold"].tolist())
    frame.index.name = "check"
    return frame.reset_index()


def _shared_table(shared: dict[str, Any], labels: list[str]) -> tuple[pd.DataFrame, int]:
    rows = sorted(shared["rows"], key=lambda row: row[labels[0]]["mean"])
    hidden = 0
    if len(rows) > 2 * EDGE_ROWS:
        hidden = len(rows) - 2 * EDGE_ROWS
        rows = rows[:EDGE_ROWS] + rows[-EDGE_ROWS:]
    first_pair = shared["pairwise"][0] if shared["pairwise"] else None
    table = []
    for row in rows:
        entry = {"model": row["model"]}
        for label in labels:
            entry[label] = _interval_text(row[label])
        if first_pair:
            entry[f"P(u in {first_pair['first']} > u in {first_pair['second']})"] = round(first_pair["p_first_greater"][row["model"]], 3)
        table.append(entry)
    return pd.DataFrame(table), hidden


def _loo_tables(groups: list[dict[str, Any]]) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    out = []
    for group in groups:
        likelihood_text = "pair latents integrated out" if group.get("likelihood") == "integrated" else "given each pair's latent values"
        title = f"Fits of the data with tensor hash {group['tensor_hash'][:12]} ({likelihood_text}): {', '.join(group['fits'])}"
        loo = pd.DataFrame(group["loo"]).round(3)
        ranking = pd.DataFrame(group["compare"]).round(3)
        out.append((title, loo, ranking))
    return out


def _failed_banner(records: list[dict[str, Any]]) -> str | None:
    failed = [record for record in records if not record["diagnostics"]["passed"]]
    if not failed:
        return None
    listing = "; ".join(f"{record['label']} ({', '.join(record['diagnostics']['failed_checks'])})" for record in failed)
    return (
        f"FITS THAT FAILED DIAGNOSTICS: {listing}. Their estimates and every comparison involving them are not reliable; refit "
        "them with more tuning or draws before drawing conclusions."
    )


def _method_lines(loo_groups: list[dict[str, Any]], trees: list[xr.DataTree]) -> list[str]:
    lines = [
        (
            "Probabilities of differences are computed from the posterior draws, not from interval overlap. The fits are "
            "independent posteriors, so each fit's draws are flattened over chains, shuffled with a fixed seed and paired at "
            "random. The probability is the share of pairs in which the first value exceeds the second (ties count one half). A "
            f"difference is called clear when one direction has probability at least {CLEAR_PROB}."
        ),
    ]
    if loo_groups:
        lines.append(
            "PSIS-LOO uses each fit's log likelihood of every (model, task) pair (leaving one pair out at a time). For "
            "location-scale fits the pair's latent competence and spread are integrated out, so the question is how well the "
            "other pairs predict a new pair of the same model and task. Pareto k above "
            "good_k (which depends on the number of draws) means the estimate for that pair is unreliable. elpd_diff is the "
            "difference from the best fit and dse its standard error."
        )
    else:
        hashes = {tree.attrs.get("tensor_hash") for tree in trees}
        lines.append(
            f"No PSIS-LOO comparison: the fits use {len(hashes)} different data sets (tensor hashes differ), and expected log "
            "predictive densities of different observations are not comparable."
        )
    return lines


def _markdown(
    banner: str | None,
    statements: list[str],
    method: list[str],
    tables: dict[str, Any],
    figures: list[tuple[str, str, bytes]],
) -> str:
    out = ["# Comparison of fits", ""]
    if banner:
        out += [f"**{banner}**", ""]
    out += ["## Differences", ""] + [f"- {line}" for line in statements] + [""]
    out += [line + "\n" for line in method]
    out += ["## Data and provenance", "", tables["overview"].to_markdown(index=False), ""]
    out += ["## Competence effect and variance shares (posterior mean [89% interval])", "", tables["estimates"].to_markdown(index=False), ""]
    shared, hidden = tables["shared"]
    if len(shared):
        out += ["## Model identity effects u[m] of shared models (mean [89% interval])", "", shared.to_markdown(index=False), ""]
        if hidden:
            out += [f"{hidden} middle models hidden; compare.json lists every model.", ""]
    for title, loo, ranking in tables["loo"]:
        out += [f"## PSIS-LOO: {title}", "", loo.to_markdown(index=False), "", ranking.to_markdown(index=False), ""]
    out += ["## Diagnostics", "", tables["diagnostics"].to_markdown(index=False), ""]
    out += ["## Figures", ""]
    for name, caption, _ in figures:
        out += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    out.append(f"robustscope {__version__}")
    return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.8em}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f3f3f3}.failed{background:#fdecea;border:2px solid #c62828;padding:0.8em;font-weight:bold}"
    "figure{margin:1.5em 0}figcaption{font-size:0.85em;color:#555}img{max-width:100%}"
    "@media print{body{max-width:none;margin:0}figure,table{page-break-inside:avoid}h2{page-break-after:avoid}}"
)


def _html(
    banner: str | None,
    statements: list[str],
    method: list[str],
    tables: dict[str, Any],
    figures: list[tuple[str, str, bytes]],
) -> str:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Comparison of fits</title>", f"<style>{_CSS}</style></head><body>"]
    parts.append("<h1>Comparison of fits</h1>")
    if banner:
        parts.append(f"<p class='failed'>{html.escape(banner)}</p>")
    parts.append("<h2>Differences</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in statements) + "</ul>")
    parts += [f"<p>{html.escape(line)}</p>" for line in method]
    parts.append("<h2>Data and provenance</h2>" + tables["overview"].to_html(index=False))
    parts.append("<h2>Competence effect and variance shares (posterior mean [89% interval])</h2>" + tables["estimates"].to_html(index=False))
    shared, hidden = tables["shared"]
    if len(shared):
        parts.append("<h2>Model identity effects u[m] of shared models (mean [89% interval])</h2>" + shared.to_html(index=False))
        if hidden:
            parts.append(f"<p>{hidden} middle models hidden; compare.json lists every model.</p>")
    for title, loo, ranking in tables["loo"]:
        parts.append(f"<h2>PSIS-LOO: {html.escape(title)}</h2>" + loo.to_html(index=False) + ranking.to_html(index=False))
    parts.append("<h2>Diagnostics</h2>" + tables["diagnostics"].to_html(index=False))
    parts.append("<h2>Figures</h2>")
    for _, caption, data in figures:
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append(f"<p><small>robustscope {__version__}</small></p></body></html>")
    return "\n".join(parts)


def compare(
    fits: list[xr.DataTree | str | Path],
    output_dir: str | Path,
    *,
    labels: list[str] | None = None,
    seed: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Compare fits side by side and write ``compare.html``, ``compare.md``, ``compare.json`` and ``figures/``.

    Parameters
    ----------
    fits
        Two or more fitted DataTrees or paths of saved posteriors.
    output_dir
        Folder to write into (created if missing); every file is written atomically.
    labels
        One unique name per fit. By default each fit is named ``dataset
        (specification)``; repeated names get the folder of the posterior
        file, then its file name, then a numeric suffix (see
        :func:`_default_labels`).
    seed
        Seed of the random pairing of draws and of the thinning of scatter plots.
    thresholds
        Convergence thresholds of :func:`robustscope.diagnostics.check_fit`;
        a fit that fails them is marked at the top of every output.

    Returns
    -------
    dict
        The contents of ``compare.json``: ``fits`` (provenance, counts,
        ``gamma1``, shares and diagnostics per fit), ``failed_fits``,
        ``differences`` (P(first > second) with a sentence per pair of fits
        and quantity), ``shared_models``, ``loo`` (one entry per group of fits
        with the same tensor hash) and ``figures``.

    Raises
    ------
    InputError
        When fewer than two fits are given or the labels do not match the fits.
    """
    if len(fits) < 2:
        raise InputError(f"a comparison needs at least two fits; {len(fits)} given")
    trees = [_load(fit) for fit in fits]
    if labels is None:
        labels = _default_labels(list(fits), trees)
    labels = [str(label) for label in labels]
    if len(labels) != len(trees) or len(set(labels)) != len(labels):
        raise InputError("labels must name every fit once, with no repeats", value=labels, hint=f"give {len(trees)} distinct labels")
    output_dir = Path(output_dir)
    rng = np.random.default_rng(seed)

    records, checks = [], []
    for tree, label in zip(trees, labels, strict=True):
        record, table = _fit_record(tree, label, thresholds)
        records.append(record)
        checks.append(table)
    banner = _failed_banner(records)

    differences = _differences(trees, labels, rng)
    shared = _shared_models(trees, labels, rng)
    loo_groups = _loo_groups(trees, labels)
    statements = [item["statement"] for item in differences if item["clear"]] + [item["statement"] for item in differences if not item["clear"]]
    for pair in shared["pairwise"]:
        count = len(pair["clear_models"])
        if shared["models"]:
            examples = ", ".join(pair["clear_models"][:5])
            statements.append(
                f"Of the {len(shared['models'])} models in both {pair['first']} and {pair['second']}, {count} have a clearly different "
                f"identity effect u[m] (P >= {CLEAR_PROB} in one direction)" + (f", for example {examples}." if count else ".")
            )
    if not shared["models"]:
        statements.append("The fits share no model, so model identity effects are not compared.")
    method = _method_lines(loo_groups, trees)

    figures = _figures(trees, labels, records, checks, shared, rng)
    tables = {
        "overview": _overview_table(records),
        "estimates": _estimates_table(records),
        "shared": _shared_table(shared, labels) if shared["rows"] else (pd.DataFrame(), 0),
        "loo": _loo_tables(loo_groups),
        "diagnostics": _diagnostics_table(records, checks),
    }
    for name, _, data in figures:
        write_bytes(output_dir / "figures" / name, data)
    write_text(output_dir / "compare.md", _markdown(banner, statements, method, tables, figures))
    write_text(output_dir / "compare.html", _html(banner, statements, method, tables, figures))

    payload = {
        "robustscope_version": __version__,
        "prob": PROB,
        "clear_prob": CLEAR_PROB,
        "seed": seed,
        "pairing": "independent fits: flattened draws shuffled with the seed and paired at random",
        "fits": records,
        "failed_fits": [record["label"] for record in records if not record["diagnostics"]["passed"]],
        "statements": statements,
        "differences": differences,
        "shared_models": shared,
        "loo": loo_groups,
        "figures": [{"file": f"figures/{name}", "caption": caption} for name, caption, _ in figures],
    }
    write_json(output_dir / "compare.json", payload)
    if banner:
        log.error(banner)
    log.info("wrote the comparison of %d fits to %s", len(trees), output_dir)
    return payload


__all__ = ["compare", "probability_greater"]
