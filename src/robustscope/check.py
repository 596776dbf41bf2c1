"""Check new results against a fitted location-scale model.

:func:`check_new` tests, for every (model, task) pair of a new tensor, whether
its observed spread of accuracy across perturbations is what the fitted
model predicts for a pair of that competence. The posterior predictive
distribution of the spread integrates over what the fit does not know about
the new pair:

* a new model's identity effect ``u_new ~ Normal(0, sd_u)`` (one draw per
  posterior draw and new model, shared by that model's tasks), or the
  fitted ``u_model`` of a known model;
* a new task's effect ``v_new ~ Normal(0, sd_v)``, or the fitted ``v_task``;
* the pair's residual ``e ~ Normal(0, sd_e)``;
* new perturbation effects ``z ~ Normal(0, 1)`` and binomial counts with the
  new cells' ``n_total`` and number of perturbations.

Competence is conditioned on, not predicted: see :func:`pair_competence` for
how it is taken from the new counts.

:func:`write_check_report` writes ``check.html``, ``check.md`` and
``check.json``; :func:`check_and_refit` checks, merges the new results into
the old tensor, refits and writes the before-and-after comparison.
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
from scipy.special import expit  # noqa: E402

from . import tensor as _tensor  # noqa: E402
from ._io import write_bytes, write_json, write_text  # noqa: E402
from ._logging import get_logger  # noqa: E402
from .diagnostics import check_fit, summarize  # noqa: E402
from .errors import InputError, RobustscopeError  # noqa: E402
from .models.location_scale import competence_term, empirical_logit, spline_from_attrs  # noqa: E402

log = get_logger("check")

DEFAULT_PROB = 0.89
# Simulated cells per chunk of posterior draws; bounds the memory of the
# predictive simulation to a few hundred MB.
CELLS_PER_CHUNK = 4_000_000
# The figure shows at most this many pairs. Flagged pairs are kept first.
MAX_PLOTTED_PAIRS = 120
# Tables in the Markdown and HTML reports show this many rows at the top and bottom.
TABLE_EDGE_ROWS = 15

KIND_NEW_MODEL = "new model"
KIND_NEW_TASK = "new task"
KIND_NEW_BOTH = "new model and task"
KIND_KNOWN = "known model and task"
KIND_IN_FIT = "already in the fit"
LESS_ROBUST = "less robust than predicted"
MORE_ROBUST = "more robust than predicted"
AS_PREDICTED = "as predicted"
NOT_CHECKED = "not checked: fewer than two perturbations"
IN_FIT = "not checked: pair already in the fit"
# Names listed in messages about pairs already in the fit or names that do not overlap.
EXAMPLE_NAMES = 5


def _as_tree(fit: xr.DataTree | str | Path) -> xr.DataTree:
    if isinstance(fit, xr.DataTree):
        return fit
    from .fit import load_posterior

    return load_posterior(fit)


def _as_tensor(new: xr.Dataset | str | Path) -> xr.Dataset:
    if isinstance(new, xr.Dataset):
        return _tensor.validate(new)
    return _tensor.load(new)


def pair_competence(cells: pd.DataFrame) -> pd.DataFrame:
    """Summarise each pair's cells: accuracy, spread and competence on the logit scale.

    Competence is the mean over perturbations of the empirical logit
    ``log((k + 0.5) / (n - k + 0.5))``, the same per-pair statistic the fit
    centres its competence covariate on. Its standard error is the standard
    deviation of those logits over the square root of the number of
    perturbations. The check draws competence from ``Normal(mean, se)``. This
    conditions on the observed mean only, so the check tests the spread and
    not the mean. The +0.5 correction pulls pairs at 0 or ``n`` correct
    answers towards a logit of 0, which makes such pairs look less extreme
    than they are.

    Returns
    -------
    pandas.DataFrame
        One row per (model, task) with ``perturbations``, ``n_total_mean``,
        ``observed_accuracy`` and ``observed_spread`` (probability scale,
        standard deviation with ddof=1), ``competence_logit`` and
        ``competence_logit_se``.
    """
    frame = cells.assign(logit=empirical_logit(cells["n_correct"].to_numpy(), cells["n_total"].to_numpy()))
    grouped = frame.groupby(["model", "task"], sort=False)
    table = pd.DataFrame(
        {
            "perturbations": grouped.size(),
            "n_total_mean": grouped["n_total"].mean(),
            "observed_accuracy": grouped["accuracy"].mean(),
            "observed_spread": grouped["accuracy"].std(ddof=1),
            "competence_logit": grouped["logit"].mean(),
            "competence_logit_se": grouped["logit"].std(ddof=1) / np.sqrt(grouped.size()),
        }
    )
    return table.reset_index()


def _flat_draws(posterior: xr.Dataset, name: str, keep: np.ndarray, extra_dim: str | None = None) -> np.ndarray | None:
    if name not in posterior:
        return None
    values = posterior[name]
    dims = ("chain", "draw") + ((extra_dim,) if extra_dim else ())
    array = values.transpose(*dims).values
    array = array.reshape((-1,) + array.shape[2:])
    return array[keep]


def _draw_effects(
    labels: np.ndarray,
    known_labels: list[str],
    fitted: np.ndarray | None,
    sd: np.ndarray | None,
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return the identity effect of each pair per draw: fitted where the label is known, else a new draw.

    A new label gets one draw per posterior draw, shared by all its pairs.
    Effects absent from the fit's specification are zero.
    """
    out = np.zeros((n_draws, len(labels)))
    if sd is None and fitted is None:
        return out
    lookup = {label: index for index, label in enumerate(known_labels)}
    unknown = sorted({label for label in labels if label not in lookup})
    fresh = {}
    for label in unknown:
        scale = sd if sd is not None else np.zeros(n_draws)
        fresh[label] = rng.normal(0.0, 1.0, n_draws) * scale
    for column, label in enumerate(labels):
        if label in lookup and fitted is not None:
            out[:, column] = fitted[:, lookup[label]]
        elif label in fresh:
            out[:, column] = fresh[label]
    return out


def _simulate_spread(
    mu: np.ndarray,
    log_sigma: np.ndarray,
    cell_pair: np.ndarray,
    cell_n: np.ndarray,
    n_pairs: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate binomial counts for every cell and return each pair's accuracy spread per draw."""
    from .fit import pair_spread

    n_draws = mu.shape[0]
    chunk = max(1, CELLS_PER_CHUNK // max(1, len(cell_pair)))
    out = np.empty((n_draws, n_pairs))
    for start in range(0, n_draws, chunk):
        stop = min(n_draws, start + chunk)
        sigma = np.exp(log_sigma[start:stop])
        z = rng.standard_normal((stop - start, len(cell_pair)))
        eta = mu[start:stop][:, cell_pair] + sigma[:, cell_pair] * z
        k = rng.binomial(cell_n, expit(eta))
        out[start:stop] = pair_spread(k.astype(float), cell_n, cell_pair, n_pairs)
    return out


def _fitted_pairs(constant: xr.Dataset) -> set[tuple[str, str]]:
    """Return the (model, task) pairs the fit was made from, as strings."""
    models = np.asarray(constant["model"].values).astype(str)
    tasks = np.asarray(constant["task"].values).astype(str)
    return set(zip(models[constant["pair_model"].values], tasks[constant["pair_task"].values], strict=True))


def _examples(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:EXAMPLE_NAMES])
    return shown + (f" and {len(names) - EXAMPLE_NAMES} more" if len(names) > EXAMPLE_NAMES else "")


def _require_overlap(models: list[str], tasks: list[str], known_models: list[str], known_tasks: list[str], new_dataset: object) -> None:
    """Raise InputError when the new results share neither a model nor a task with the fit.

    New models are predicted on tasks in the fit, and new tasks for models
    in the fit. With no shared name at all nothing ties the new results to the
    fit, which is most often a spelling or naming mismatch.
    """
    shared_models = sorted(set(models) & set(known_models))
    shared_tasks = sorted(set(tasks) & set(known_tasks))
    if shared_models or shared_tasks:
        return
    new_models = sorted(set(models))
    new_tasks = sorted(set(tasks))
    raise InputError(
        f"the new results ({new_dataset}) share no model and no task with the fit: new models {_examples(new_models)} are all "
        f"missing from the fit, and so are new tasks {_examples(new_tasks)}. A new-model check needs at least one task of the "
        f"fit (fit tasks: {_examples(known_tasks)}), and a new-task check needs at least one model of the fit (fit models: "
        f"{_examples(known_models)})",
        hint="check that model and task names are spelled as in the fitted data, or ingest the new results with the same loader options",
    )


def _kind(model_known: bool, task_known: bool) -> str:
    if model_known and task_known:
        return KIND_KNOWN
    if task_known:
        return KIND_NEW_MODEL
    if model_known:
        return KIND_NEW_TASK
    return KIND_NEW_BOTH


def check_new(
    fit: xr.DataTree | str | Path,
    new: xr.Dataset | str | Path,
    *,
    prob: float = DEFAULT_PROB,
    draws: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare each new (model, task) pair's spread with its posterior predictive distribution.

    Parameters
    ----------
    fit
        A fitted DataTree from :func:`robustscope.fit.fit` or the path of one.
    new
        A tensor with counts (``xarray.Dataset`` or path) holding the new
        results. Pairs may have a new model, a new task, both, or neither
        (then the fitted effects of both are used and only the residual and
        the perturbations are new). Pairs the fit was made from are not new:
        they get the kind ``already in the fit``, the direction
        ``not checked: pair already in the fit``, no prediction, and a
        logged warning.
    prob
        Mass of the central predictive interval; a pair whose observed spread
        falls outside it is flagged.
    draws
        Use at most this many posterior draws, thinned evenly (all by default).
    seed
        Seed of the simulation.

    Returns
    -------
    pandas.DataFrame
        One row per (model, task) with the columns ``model``, ``task``,
        ``kind``, ``perturbations``, ``n_total_mean``, ``observed_accuracy``,
        ``competence_logit`` and ``observed_spread`` (SD of accuracy across
        perturbations, probability scale). The prediction follows in
        ``predicted_median``, ``predicted_lower`` and ``predicted_upper``
        (the central ``prob`` interval), ``percentile`` (share of predictive
        draws below the observation, ties counted half), ``outside`` and
        ``direction``.
        ``DataFrame.attrs`` records ``prob``, ``draws``, ``seed`` and the
        fit's dataset, tensor hash and specification.

    Raises
    ------
    InputError
        When ``prob`` is not in (0, 1), ``draws`` is below 1, the new
        tensor has no counts or no observed cells, or the new results share
        no model and no task with the fit (the message names both sides).
    """
    if not 0.0 < prob < 1.0:
        raise InputError("the interval probability must lie strictly between 0 and 1", value=prob)
    if draws is not None and draws < 1:
        raise InputError("the number of posterior draws must be at least 1", value=draws)
    trace = _as_tree(fit)
    ds = _as_tensor(new)
    if "n_correct" not in ds or ds.attrs.get("metric_kind") != "binary":
        raise InputError(
            f"the new results hold the continuous metric {ds.attrs.get('metric')!r}; the check needs counts of correct answers",
            hint="ingest the new results as counts (for example with n_examples=)",
        )
    cells = _tensor.observed_cells(ds)
    if cells.empty:
        raise InputError("the new results have no observed cells", hint="check the file and the loader options")

    family = trace.attrs.get("family", "location-scale")
    if family != "location-scale":
        raise RobustscopeError(f"check_new predicts the spread of accuracy and needs a location-scale fit; this fit is of the {family!r} family")
    posterior = trace["posterior"].to_dataset()
    constant = trace["constant_data"].to_dataset()
    known_models = [str(m) for m in constant["model"].values]
    known_tasks = [str(t) for t in constant["task"].values]
    center = float(trace.attrs.get("competence_center", 0.0))

    total = posterior.sizes["chain"] * posterior.sizes["draw"]
    count = total if draws is None else min(draws, total)
    keep = np.unique(np.linspace(0, total - 1, count).astype(int))
    rng = np.random.default_rng(seed)

    cells = cells.assign(model=cells["model"].astype(str), task=cells["task"].astype(str))
    table = pair_competence(cells)
    models = table["model"].to_numpy()
    tasks = table["task"].to_numpy()
    _require_overlap(list(models), list(tasks), known_models, known_tasks, ds.attrs.get("dataset"))

    fitted_pairs = _fitted_pairs(constant)
    in_fit = np.array([(m, t) in fitted_pairs for m, t in zip(models, tasks, strict=True)], dtype=bool)
    if in_fit.any():
        listed = [f"{m} | {t}" for m, t in zip(models[in_fit], tasks[in_fit], strict=True)]
        log.warning(
            "%d of %d pairs of the new results are already in the fit (%s); they are reported separately and not checked",
            int(in_fit.sum()),
            len(in_fit),
            _examples(listed),
        )
    enough = table["perturbations"].to_numpy() >= 2
    if not enough.all():
        log.warning("%d new pairs have fewer than two perturbations, so their spread is undefined and not checked", int((~enough).sum()))
    checkable = enough & ~in_fit

    gamma0 = _flat_draws(posterior, "gamma0", keep)
    gamma1 = _flat_draws(posterior, "gamma1", keep)
    if gamma0 is None:
        raise RobustscopeError("the fit has no gamma0 parameter. check_new needs a fit of the location-scale model")
    if gamma1 is None:
        gamma1 = np.zeros_like(gamma0)
    sd_e = _flat_draws(posterior, "sd_e", keep)
    n_draws = len(gamma0)

    u = _draw_effects(models, known_models, _flat_draws(posterior, "u_model", keep, "model"), _flat_draws(posterior, "sd_u", keep), n_draws, rng)
    v = _draw_effects(tasks, known_tasks, _flat_draws(posterior, "v_task", keep, "task"), _flat_draws(posterior, "sd_v", keep), n_draws, rng)

    n_pairs = len(table)
    se = np.nan_to_num(table["competence_logit_se"].to_numpy(), nan=0.0)
    mu = table["competence_logit"].to_numpy()[None, :] + se[None, :] * rng.standard_normal((n_draws, n_pairs))
    residual = rng.standard_normal((n_draws, n_pairs)) * (sd_e[:, None] if sd_e is not None else 0.0)
    spline = _flat_draws(posterior, "spline_coef", keep, "knot")
    knots, width, detrend = spline_from_attrs(trace.attrs)
    term = competence_term(mu, gamma1[:, None], spline[:, None, :] if spline is not None and len(knots) else None, knots, width, center, detrend=detrend)
    log_sigma = gamma0[:, None] + term + u + v + residual

    pair_index = pd.MultiIndex.from_frame(table[["model", "task"]])
    cell_pair = pair_index.get_indexer(pd.MultiIndex.from_frame(cells[["model", "task"]]))
    cell_n = cells["n_total"].to_numpy(np.int64)
    predicted = _simulate_spread(mu, log_sigma, cell_pair, cell_n, n_pairs, rng)

    tail = (1.0 - prob) / 2.0
    observed = table["observed_spread"].to_numpy()
    lower = np.quantile(predicted, tail, axis=0)
    upper = np.quantile(predicted, 1.0 - tail, axis=0)
    below = (predicted < observed[None, :]).mean(axis=0)
    ties = (predicted == observed[None, :]).mean(axis=0)
    percentile = below + 0.5 * ties
    above_interval = checkable & (observed > upper)
    below_interval = checkable & (observed < lower)

    known_model_set, known_task_set = set(known_models), set(known_tasks)
    kinds = [_kind(m in known_model_set, t in known_task_set) for m, t in zip(models, tasks, strict=True)]
    table.insert(2, "kind", np.where(in_fit, KIND_IN_FIT, kinds))
    # A pair already in the fit was part of the data the posterior saw, so a
    # prediction for it as a new pair would be misleading.
    table["predicted_median"] = np.where(in_fit, np.nan, np.median(predicted, axis=0))
    table["predicted_lower"] = np.where(in_fit, np.nan, lower)
    table["predicted_upper"] = np.where(in_fit, np.nan, upper)
    table["percentile"] = np.where(checkable, percentile, np.nan)
    table["outside"] = above_interval | below_interval
    table["direction"] = np.select([in_fit, ~enough, above_interval, below_interval], [IN_FIT, NOT_CHECKED, LESS_ROBUST, MORE_ROBUST], AS_PREDICTED)
    table = table.drop(columns=["competence_logit_se"])
    table.attrs.update(
        {
            "prob": prob,
            "draws": int(n_draws),
            "seed": int(seed),
            "fit_dataset": str(trace.attrs.get("dataset")),
            "fit_tensor_hash": str(trace.attrs.get("tensor_hash")),
            "fit_spec": str(trace.attrs.get("spec_name")),
            "new_dataset": str(ds.attrs.get("dataset")),
            "new_tensor_hash": _tensor.tensor_hash(ds),
        }
    )
    log.info(
        "checked %d new pairs against %s: %d outside the %.0f%% predictive interval",
        int(checkable.sum()),
        trace.attrs.get("dataset"),
        int(table["outside"].sum()),
        100 * prob,
    )
    return table


def _checked_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Return the rows that were checked: not already in the fit and with two or more perturbations."""
    return table.loc[~table["direction"].isin([NOT_CHECKED, IN_FIT])]


def summarize_check(table: pd.DataFrame) -> dict[str, Any]:
    """Return counts of flagged pairs overall, by kind, by direction, and per model and task.

    ``already_in_fit`` counts the pairs of the new results that the fit was
    made from (listed in ``already_in_fit_pairs``); they are not in
    ``checked`` and not in ``not_checked``.
    """
    prob = float(table.attrs.get("prob", DEFAULT_PROB))
    checked = _checked_rows(table)
    flagged = checked.loc[checked["outside"]]
    in_fit = table.loc[table["direction"] == IN_FIT]

    def per(column: str) -> list[dict[str, Any]]:
        grouped = checked.groupby(column, sort=False)["outside"].agg(["sum", "size"])
        grouped = grouped.assign(share=grouped["sum"] / grouped["size"]).sort_values(["share", "sum"], ascending=False)
        return [
            {column: str(label), "flagged": int(row["sum"]), "pairs": int(row["size"]), "share": float(row["share"])}
            for label, row in grouped.iterrows()
        ]

    return {
        "prob": prob,
        "expected_share_outside": 1.0 - prob,
        "pairs": len(table),
        "checked": len(checked),
        "not_checked": int((table["direction"] == NOT_CHECKED).sum()),
        "already_in_fit": len(in_fit),
        "already_in_fit_pairs": [f"{m} | {t}" for m, t in zip(in_fit["model"], in_fit["task"], strict=True)],
        "flagged": len(flagged),
        "flagged_share": float(len(flagged) / len(checked)) if len(checked) else None,
        "by_kind": {str(k): int(v) for k, v in checked.groupby("kind")["outside"].sum().items()},
        "pairs_by_kind": {str(k): int(v) for k, v in checked["kind"].value_counts().items()},
        "by_direction": {str(k): int(v) for k, v in flagged["direction"].value_counts().items()},
        "per_model": per("model"),
        "per_task": per("task"),
        "attrs": {k: v for k, v in table.attrs.items() if k != "prob"},
    }


def _check_sentences(summary: dict[str, Any]) -> list[str]:
    prob = summary["prob"]
    lines = []
    if summary["checked"]:
        lines.append(
            f"{summary['flagged']} of {summary['checked']} new (model, task) pairs ({summary['flagged_share']:.0%}) have an observed "
            f"spread outside the central {prob:.0%} posterior predictive interval; about {1 - prob:.0%} are expected when the new "
            "results follow the fitted model."
        )
    else:
        lines.append("No new (model, task) pair was checked.")
    if summary["already_in_fit"]:
        lines.append(
            f"{summary['already_in_fit']} pairs of the new results are already in the fit (for example "
            f"{', '.join(summary['already_in_fit_pairs'][:EXAMPLE_NAMES])}). They are not new results, so they are listed "
            "separately and not checked; the fit's own posterior predictive check covers them."
        )
    for direction, number in summary["by_direction"].items():
        lines.append(f"{number} pairs are {direction}.")
    for row in summary["per_model"][:5]:
        if row["pairs"] >= 2 and row["share"] >= 0.5:
            lines.append(
                f"Model {row['model']} is flagged on {row['flagged']} of {row['pairs']} tasks: its robustness differs from what its "
                "competence predicts across tasks, which points to a model identity effect rather than chance."
            )
    if summary["not_checked"]:
        lines.append(f"{summary['not_checked']} pairs have fewer than two perturbations and were not checked.")
    return lines


def _edge_rows(table: pd.DataFrame, edge: int = TABLE_EDGE_ROWS) -> tuple[pd.DataFrame, int]:
    if len(table) <= 2 * edge:
        return table, 0
    return pd.concat([table.head(edge), table.tail(edge)]), len(table) - 2 * edge


def _plot_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Choose the pairs to plot: every flagged pair (most extreme first), then an even sample of the others."""
    ordered = table.assign(extremity=(table["percentile"] - 0.5).abs()).sort_values("extremity", ascending=False)
    flagged = ordered.loc[ordered["outside"]].head(MAX_PLOTTED_PAIRS)
    rest = ordered.loc[~ordered["outside"]]
    room = MAX_PLOTTED_PAIRS - len(flagged)
    if len(rest) > room:
        rest = rest.iloc[np.unique(np.linspace(0, len(rest) - 1, max(room, 0)).astype(int))] if room > 0 else rest.iloc[:0]
    chosen = pd.concat([flagged, rest]).sort_values(["kind", "model", "task"])
    return chosen, len(table) - len(chosen)


def plot_check(table: pd.DataFrame) -> tuple[plt.Figure, str]:
    """Plot each pair's observed spread against its predictive interval; return the figure and its caption."""
    prob = float(table.attrs.get("prob", DEFAULT_PROB))
    rows, hidden = _plot_rows(_checked_rows(table))
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(7.0, min(16.0, 0.18 * len(rows) + 4)), 4.6))
    ax.vlines(x, rows["predicted_lower"], rows["predicted_upper"], color="#9467bd", lw=3, alpha=0.45, label=f"{prob:.0%} predictive interval")
    ax.scatter(x, rows["predicted_median"], marker="_", s=60, color="#9467bd", label="predictive median")
    inside = ~rows["outside"].to_numpy()
    ax.scatter(x[inside], rows["observed_spread"].to_numpy()[inside], s=14, color="black", zorder=3, label="observed, inside")
    ax.scatter(x[~inside], rows["observed_spread"].to_numpy()[~inside], s=22, color="#d62728", zorder=3, label="observed, outside")
    if len(rows) <= 40:
        ax.set_xticks(x, [f"{m} | {t}" for m, t in zip(rows["model"], rows["task"], strict=True)], rotation=75, fontsize=7, ha="right")
    else:
        ax.set_xticks([])
    ax.set_xlabel("new (model, task) pairs" + (f" ({len(rows)} shown, {hidden} hidden)" if hidden else ""))
    ax.set_ylabel("SD of accuracy across perturbations (probability)")
    ax.set_title("New results: observed spread against the fitted model's prediction")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    caption = (
        f"Each column is a new (model, task) pair: the purple bar is the central {prob:.0%} posterior predictive interval of the "
        "standard deviation of accuracy across perturbations (probability scale) for a pair of that competence, integrating over "
        "the unknown identity effect; the dot is the observed value, red when it falls outside."
    )
    if hidden:
        caption += f" {hidden} pairs inside their interval are hidden; every flagged pair is shown up to {MAX_PLOTTED_PAIRS}."
    return fig, caption


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


_COLUMNS = [
    "model",
    "task",
    "kind",
    "perturbations",
    "observed_accuracy",
    "observed_spread",
    "predicted_lower",
    "predicted_median",
    "predicted_upper",
    "percentile",
    "direction",
]

_IN_FIT_COLUMNS = ["model", "task", "perturbations", "observed_accuracy", "observed_spread"]
_IN_FIT_TITLE = "Pairs already in the fit, not checked"
_IN_FIT_TEXT = (
    "These (model, task) pairs of the new results are pairs the fit was made from. The posterior has already seen them, so "
    "predicting them as new pairs would not test anything; they are not counted among the checked pairs."
)

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "th{background:#f3f3f3}.failed{background:#fdecea;border:2px solid #c62828;padding:0.8em;font-weight:bold}"
    ".passed{background:#e6f4ea;border:1px solid #2e7d32;padding:0.6em}figure{margin:1.5em 0}"
    "figcaption{font-size:0.85em;color:#555}img{max-width:100%}"
    "@media print{body{max-width:none;margin:0}figure,table{page-break-inside:avoid}}"
)


def write_check_report(
    table: pd.DataFrame,
    output_dir: str | Path,
    *,
    fit: xr.DataTree | str | Path | None = None,
) -> dict[str, Any]:
    """Write ``check.html``, ``check.md``, ``check.json`` and ``figures/check.png`` for a :func:`check_new` table.

    When ``fit`` is given, its diagnostics are run and a fit that failed
    them is marked at the top, because a check against an unconverged
    posterior is not reliable. Returns the dictionary written to
    ``check.json``.
    """
    output_dir = Path(output_dir)
    summary = summarize_check(table)
    status = None
    if fit is not None:
        trace = _as_tree(fit)
        diagnostics = summarize(check_fit(trace))
        summary["fit_diagnostics"] = diagnostics
        if not diagnostics["passed"]:
            status = f"THE FIT FAILED DIAGNOSTICS ({', '.join(diagnostics['failed_checks'])}); the predictions below are not reliable."
    sentences = _check_sentences(summary)
    fig, caption = plot_check(table)
    image = _png(fig)
    write_bytes(output_dir / "figures" / "check.png", image)

    new_rows = table.loc[table["direction"] != IN_FIT]
    ordered = new_rows.assign(extremity=(new_rows["percentile"] - 0.5).abs()).sort_values("extremity", ascending=False)
    shown, hidden = _edge_rows(ordered[_COLUMNS])
    hidden_note = f"{hidden} middle rows hidden; check.json lists every row." if hidden else ""
    in_fit_shown, in_fit_hidden = _edge_rows(table.loc[table["direction"] == IN_FIT, _IN_FIT_COLUMNS])
    in_fit_note = f"{in_fit_hidden} middle rows hidden; check.json lists every row." if in_fit_hidden else ""
    attrs = summary["attrs"]
    provenance = (
        f"Fit: {attrs.get('fit_dataset')} ({attrs.get('fit_spec')}, tensor hash {attrs.get('fit_tensor_hash')}). New results: "
        f"{attrs.get('new_dataset')} (tensor hash {attrs.get('new_tensor_hash')}). {attrs.get('draws')} posterior draws, seed {attrs.get('seed')}."
    )
    method = (
        "Competence of each new pair is the mean empirical logit of its cells, drawn with its standard error. Per posterior draw "
        "the model identity effect of a new model is drawn from Normal(0, sd_u) and the effect of a new task from Normal(0, sd_v); "
        "known models and tasks use their fitted effects. The residual, the perturbation effects and binomial counts with the new "
        "cells' sizes are then simulated, and the spread computed as in the fit. The percentile is the share of predictive draws "
        "below the observation."
    )

    markdown = ["# New results checked against the fitted model", ""]
    if status:
        markdown += [f"**{status}**", ""]
    markdown += [f"- {line}" for line in sentences] + ["", f"{provenance}", "", method, ""]
    markdown += ["![" + caption + "](figures/check.png)", "", f"*{caption}*", ""]
    markdown += ["## Pairs, most extreme first", "", shown.round(4).to_markdown(index=False), ""]
    if hidden_note:
        markdown += [hidden_note, ""]
    if len(in_fit_shown):
        markdown += [f"## {_IN_FIT_TITLE}", "", _IN_FIT_TEXT, "", in_fit_shown.round(4).to_markdown(index=False), ""]
        if in_fit_note:
            markdown += [in_fit_note, ""]
    write_text(output_dir / "check.md", "\n".join(markdown) + "\n")

    encoded = base64.b64encode(image).decode("ascii")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>New results check</title>",
        f"<style>{_CSS}</style></head><body><h1>New results checked against the fitted model</h1>",
    ]
    if status:
        parts.append(f"<p class='failed'>{html.escape(status)}</p>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in sentences) + "</ul>")
    parts.append(f"<p>{html.escape(provenance)}</p><p>{html.escape(method)}</p>")
    parts.append(
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}</figcaption></figure>"
    )
    parts.append("<h2>Pairs, most extreme first</h2>" + shown.round(4).to_html(index=False))
    if hidden_note:
        parts.append(f"<p>{html.escape(hidden_note)}</p>")
    if len(in_fit_shown):
        parts.append(f"<h2>{html.escape(_IN_FIT_TITLE)}</h2><p>{html.escape(_IN_FIT_TEXT)}</p>" + in_fit_shown.round(4).to_html(index=False))
        if in_fit_note:
            parts.append(f"<p>{html.escape(in_fit_note)}</p>")
    parts.append("</body></html>")
    write_text(output_dir / "check.html", "\n".join(parts))

    payload = {**summary, "rows": json.loads(table.to_json(orient="records"))}
    write_json(output_dir / "check.json", payload)
    log.info("wrote the new-results check to %s", output_dir)
    return payload


def check_and_refit(
    fit: xr.DataTree | str | Path,
    tensor_old: xr.Dataset | str | Path,
    new_tensor: xr.Dataset | str | Path,
    output_dir: str | Path,
    *,
    spec: Any = None,
    policy: str = "error",
    prob: float = DEFAULT_PROB,
    seed: int = 0,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Check new results, merge them into the old tensor, refit and compare before with after.

    Writes ``output_dir/check/`` (:func:`write_check_report`),
    ``output_dir/posterior.nc`` (the refit) and ``output_dir/compare/``
    (:func:`robustscope.report.compare.compare` of the old fit, labelled
    ``before``, and the refit, labelled ``after``).

    Parameters
    ----------
    fit
        The fit of ``tensor_old`` (DataTree or path).
    tensor_old
        The tensor the fit was made from (Dataset or path).
    new_tensor
        The new results (Dataset or path).
    spec
        Specification of the refit; the old fit's specification name by default.
    policy
        Merge policy for cells present in both tensors (see
        :func:`robustscope.ingest.merge.add`).
    prob, seed
        Passed to :func:`check_new`.
    fit_kwargs
        Passed to :func:`robustscope.fit.fit` (chains, draws, tune, seed, sampler, progress).

    Returns
    -------
    dict
        ``table`` (the check table), ``check`` (check.json contents),
        ``refit`` (the new DataTree), ``merged`` (the merged tensor) and
        ``comparison`` (compare.json contents).

    Raises
    ------
    InputError
        When ``tensor_old`` is not the tensor the fit was made from (the
        tensor hashes differ).
    """
    from .fit import fit as run_fit
    from .ingest.merge import add
    from .report.compare import compare

    output_dir = Path(output_dir)
    trace = _as_tree(fit)
    old = _as_tensor(tensor_old)
    new = _as_tensor(new_tensor)
    expected = trace.attrs.get("tensor_hash")
    if expected and _tensor.tensor_hash(old) != expected:
        raise InputError(
            "the old tensor is not the one the fit was made from (tensor hashes differ)",
            value=_tensor.tensor_hash(old),
            hint=f"pass the tensor with hash {expected}",
        )

    table = check_new(trace, new, prob=prob, seed=seed)
    check_summary = write_check_report(table, output_dir / "check", fit=trace)
    merged = add(old, new, policy=policy)
    refit = run_fit(merged, spec if spec is not None else trace.attrs.get("spec_name", "location-scale"), output=output_dir / "posterior.nc", **fit_kwargs)
    comparison = compare([trace, refit], output_dir / "compare", labels=["before", "after"])
    return {"table": table, "check": check_summary, "refit": refit, "merged": merged, "comparison": comparison}


__all__ = ["check_and_refit", "check_new", "pair_competence", "plot_check", "summarize_check", "write_check_report"]
