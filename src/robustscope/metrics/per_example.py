"""Robustness metrics that need per-example scores (the tensor's ``example`` dimension).

Every function takes a tensor and returns values on (model, task). Only the
perturbations observed for a (model, task) count. An example answered under
some but not all of them is excluded and counted in ``n_excluded``; an
example never answered for that (model, task) belongs to another task and is
ignored. Shares and probabilities are on the probability scale, 0 to 1.

K is the number of perturbations observed for a (model, task). The trivial
baseline asks what share of examples would be robust if each answer were an
independent draw with the observed accuracy: ``p ** K`` for "correct under
every perturbation" (``p`` pooled over all configurations), or the product of
the per-perturbation accuracies.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import tensor as _tensor
from ..errors import RobustscopeError

DIMS = _tensor.DIMS
EXAMPLE = _tensor.EXAMPLE_DIM
OUTCOMES = ("all_correct", "consistent")
VARIANTS = ("pooled", "per_configuration")


def _require(ds: xr.Dataset, variable: str) -> None:
    if EXAMPLE not in ds.dims:
        raise RobustscopeError("this metric needs per-example scores, but the tensor has no 'example' dimension")
    if variable not in ds:
        raise RobustscopeError(f"this metric needs the per-example variable {variable!r}, which the tensor lacks")


def _require_binary(ds: xr.Dataset) -> None:
    if ds.attrs.get("metric_kind") != "binary":
        raise RobustscopeError(f"this metric needs 0/1 scores, but the tensor's metric is {ds.attrs.get('metric_kind')}")


def complete_examples(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Return the mask of examples answered under every observed perturbation.

    Returns
    -------
    (complete, n_excluded, n_perturbations)
        ``complete`` is boolean on (model, task, example); ``n_excluded``
        counts examples answered under some but not all observed
        perturbations; ``n_perturbations`` is K. The last two are on
        (model, task).
    """
    _require(ds, "score")
    observed = ds["observed"].transpose(*DIMS)
    answered = ds["score"].transpose(*DIMS, EXAMPLE).notnull() & observed
    n_perturbations = observed.sum("perturbation")
    n_answered = answered.sum("perturbation")
    present = n_answered > 0
    complete = present & (n_answered == n_perturbations)
    n_excluded = (present & ~complete).sum(EXAMPLE)
    return complete, n_excluded, n_perturbations


def _share(flag: xr.DataArray, complete: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    n_examples = complete.sum(EXAMPLE)
    share = (flag & complete).sum(EXAMPLE) / n_examples.where(n_examples > 0)
    return share, n_examples


def _frame(name: str, values: xr.DataArray, n_examples: xr.DataArray, n_excluded: xr.DataArray, n_perturbations: xr.DataArray) -> xr.Dataset:
    result = xr.Dataset(
        {
            name: values,
            "n_examples": n_examples.astype(np.int64),
            "n_excluded": n_excluded.astype(np.int64),
            "n_perturbations": n_perturbations.astype(np.int64),
        }
    )
    return result.transpose("model", "task")


def output_consistency(ds: xr.Dataset) -> xr.Dataset:
    """Compute the share of examples whose prediction is identical under every observed perturbation.

    Returns
    -------
    xarray.Dataset
        On (model, task): ``consistency`` (0 to 1; NaN without complete
        examples; 1 when K = 1), ``n_examples`` (complete examples used),
        ``n_excluded`` and ``n_perturbations``.

    Raises
    ------
    RobustscopeError
        When the tensor has no ``example`` dimension or no ``prediction``.
    """
    _require(ds, "prediction")
    complete, n_excluded, n_perturbations = complete_examples(ds)
    observed = ds["observed"].transpose(*DIMS)
    codes = ds["prediction"].transpose(*DIMS, EXAMPLE).where(observed & (ds["prediction"] >= 0))
    identical = codes.max("perturbation") == codes.min("perturbation")
    share, n_examples = _share(identical, complete)
    return _frame("consistency", share, n_examples, n_excluded, n_perturbations)


def _binary_scores(ds: xr.Dataset) -> xr.DataArray:
    _require(ds, "score")
    _require_binary(ds)
    return ds["score"].transpose(*DIMS, EXAMPLE).where(ds["observed"])


def correctness_consistency(ds: xr.Dataset) -> xr.Dataset:
    """Compute the share of examples answered all correctly or all wrongly across perturbations.

    Returns
    -------
    xarray.Dataset
        On (model, task): ``consistency`` (all correct or all wrong),
        ``all_correct`` (correct under every perturbation), ``all_wrong``,
        ``n_examples``, ``n_excluded`` and ``n_perturbations``. Shares are
        0 to 1 over complete examples.
    """
    score = _binary_scores(ds)
    complete, n_excluded, n_perturbations = complete_examples(ds)
    all_correct_flag = score.min("perturbation") == 1
    all_wrong_flag = score.max("perturbation") == 0
    all_correct, n_examples = _share(all_correct_flag, complete)
    all_wrong, _ = _share(all_wrong_flag, complete)
    result = _frame("consistency", all_correct + all_wrong, n_examples, n_excluded, n_perturbations)
    result["all_correct"] = all_correct.transpose("model", "task")
    result["all_wrong"] = all_wrong.transpose("model", "task")
    return result


def score_std(ds: xr.Dataset) -> xr.Dataset:
    """Compute the per-example standard deviation of the score across perturbations, averaged over examples.

    The standard deviation is the population one (``ddof=0``) over the K
    observed perturbations, on the score's own scale (0 to 0.5 for 0/1
    scores), taken over complete examples only.

    Returns
    -------
    xarray.Dataset
        On (model, task): ``score_std``, ``n_examples``, ``n_excluded`` and
        ``n_perturbations``.
    """
    _require(ds, "score")
    complete, n_excluded, n_perturbations = complete_examples(ds)
    score = ds["score"].transpose(*DIMS, EXAMPLE).where(ds["observed"])
    per_example = score.std("perturbation", ddof=0).where(complete)
    n_examples = complete.sum(EXAMPLE)
    mean = per_example.sum(EXAMPLE) / n_examples.where(n_examples > 0)
    return _frame("score_std", mean, n_examples, n_excluded, n_perturbations)


def trivial_baseline(ds: xr.Dataset, *, variant: str = "pooled", outcome: str = "all_correct") -> xr.Dataset:
    """Compute the share of robust examples expected if every answer were an independent draw.

    Parameters
    ----------
    variant
        ``"pooled"``: ``p ** K`` with ``p`` the accuracy over all observed
        configurations. ``"per_configuration"``: the product over observed
        perturbations of each perturbation's accuracy.
    outcome
        ``"all_correct"`` (correct under every perturbation, the baseline
        above) or ``"consistent"`` (all correct or all wrong, which adds
        ``(1 - p) ** K``, or the product of ``1 - p_k``).

    Accuracies are computed over complete examples, the same examples the
    observed shares use.

    Returns
    -------
    xarray.Dataset
        On (model, task): ``baseline`` (0 to 1), ``accuracy`` (pooled p),
        ``n_examples``, ``n_excluded`` and ``n_perturbations``.
    """
    if variant not in VARIANTS:
        raise RobustscopeError(f"unknown baseline variant {variant!r}; valid values: {', '.join(VARIANTS)}")
    if outcome not in OUTCOMES:
        raise RobustscopeError(f"unknown outcome {outcome!r}; valid values: {', '.join(OUTCOMES)}")
    score = _binary_scores(ds)
    complete, n_excluded, n_perturbations = complete_examples(ds)
    used = score.where(complete)
    n_examples = complete.sum(EXAMPLE)
    pooled = used.sum(["perturbation", EXAMPLE]) / (n_examples * n_perturbations).where(n_examples > 0)
    if variant == "pooled":
        baseline = pooled**n_perturbations
        if outcome == "consistent":
            baseline = baseline + (1 - pooled) ** n_perturbations
    else:
        per_perturbation = used.sum(EXAMPLE) / n_examples.where(n_examples > 0)
        observed = ds["observed"].transpose(*DIMS)
        baseline = per_perturbation.where(observed, 1.0).prod("perturbation")
        if outcome == "consistent":
            baseline = baseline + (1 - per_perturbation).where(observed, 1.0).prod("perturbation")
        baseline = baseline.where(n_examples > 0)
    result = _frame("baseline", baseline, n_examples, n_excluded, n_perturbations)
    result["accuracy"] = pooled.transpose("model", "task")
    return result


def robustness_above_baseline(ds: xr.Dataset, *, variant: str = "pooled", outcome: str = "all_correct") -> xr.Dataset:
    """Compute the observed share of robust examples minus the trivial baseline.

    With ``outcome="all_correct"`` the observed share is the share of
    examples correct under every perturbation; with ``"consistent"`` it is
    the consistency of correctness. Positive values mean answers agree across
    perturbations more than independent draws would (difference of two
    shares, -1 to 1).

    Returns
    -------
    xarray.Dataset
        On (model, task): ``above_baseline``, ``observed``, ``baseline``,
        ``n_examples``, ``n_excluded`` and ``n_perturbations``.
    """
    base = trivial_baseline(ds, variant=variant, outcome=outcome)
    consistency = correctness_consistency(ds)
    observed_share = consistency["all_correct"] if outcome == "all_correct" else consistency["consistency"]
    result = base.copy()
    result["observed"] = observed_share
    result["above_baseline"] = observed_share - base["baseline"]
    return result


def cell_accuracy(ds: xr.Dataset) -> xr.DataArray:
    """Return the score of each observed cell on (model, task, perturbation): accuracy from counts, else the mean score."""
    if "n_correct" in ds:
        accuracy = ds["n_correct"] / ds["n_total"]
    elif "score" in ds:
        accuracy = ds["score"].mean(EXAMPLE, skipna=True) if EXAMPLE in ds["score"].dims else ds["score"]
    else:
        raise RobustscopeError("the tensor has neither counts nor scores")
    return accuracy.where(ds["observed"]).transpose(*DIMS)


def performance_drop_rate(ds: xr.Dataset, *, default: str) -> xr.Dataset:
    """Compute the performance drop rate PDR = (S_default - S_perturbed) / S_default.

    ``S`` is the cell accuracy (or mean score). PDR is a fraction of the
    default score: 0 means no drop, 0.25 a quarter lost, negative values a
    gain. It is NaN where the perturbed or the default cell is unobserved or
    the default score is 0. This metric also works on aggregated tensors.

    Parameters
    ----------
    default
        Label of the default (unperturbed) perturbation.

    Returns
    -------
    xarray.Dataset
        ``pdr`` on (model, task, perturbation) (0 at the default) and
        ``pdr_mean`` on (model, task): the mean over observed perturbations
        other than the default.

    Raises
    ------
    RobustscopeError
        When ``default`` is not a perturbation label of the tensor.
    """
    labels = [str(v) for v in ds["perturbation"].values]
    if str(default) not in labels:
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        raise RobustscopeError(f"default perturbation {default!r} not found; labels: {shown}")
    accuracy = cell_accuracy(ds)
    reference = accuracy.sel(perturbation=labels[labels.index(str(default))], drop=True)
    pdr = (reference - accuracy) / reference.where(reference > 0)
    others = pdr.where(pdr["perturbation"] != labels[labels.index(str(default))])
    return xr.Dataset({"pdr": pdr.transpose(*DIMS), "pdr_mean": others.mean("perturbation", skipna=True).transpose("model", "task")})
