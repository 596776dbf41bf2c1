"""The machine-readable summary of one fit (``summary.json``)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import xarray as xr

from .. import decompose
from ..diagnostics import check_fit, summarize
from ..metrics.descriptive import pair_metrics
from ..metrics.regression import ols_and_spearman, published_reference
from ..models import family_module


def build_summary(
    trace: xr.DataTree,
    tensor: xr.Dataset | None = None,
    robustness: str = "accuracy_sd",
    *,
    checks: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Return the summary dictionary of a fit: counts, diagnostics, variance shares, effects, descriptive statistics.

    ``robustness`` names the descriptive spread measure regressed on
    competence for the published-style figures. ``checks`` is the table of
    :func:`robustscope.diagnostics.check_fit` for ``trace``; it is computed
    when not given.
    """
    posterior = trace["posterior"].to_dataset()
    if checks is None:
        checks = check_fit(trace)
    manifest = json.loads(trace.attrs.get("manifest", "{}") or "{}")
    constant = trace["constant_data"].to_dataset()
    family = str(trace.attrs.get("family", "location-scale"))
    module = family_module(family)
    has_shares = "share_competence" in posterior
    shares = decompose.share_table(posterior) if has_shares else None
    counts = {
        "models": int(constant.sizes["model"]),
        "tasks": int(constant.sizes["task"]),
        "pairs": int(constant.sizes["pair"]),
        "cells": int(constant["pair_perturbations"].sum()) if "pair_perturbations" in constant else None,
        "perturbations": int(tensor.sizes["perturbation"]) if tensor is not None else None,
        "rows_read": manifest.get("rows", {}).get("read"),
        "rows_kept": manifest.get("rows", {}).get("kept"),
        "rows_dropped": manifest.get("rows", {}).get("dropped"),
        "dropped": manifest.get("dropped_rows_by_reason", {}),
        "dropped_cells": manifest.get("dropped_cells_by_reason", {}),
        "excluded_pairs": json.loads(trace.attrs.get("excluded_pairs", "[]")),
    }
    summary: dict[str, Any] = {
        "dataset": trace.attrs.get("dataset"),
        "metric": trace.attrs.get("metric"),
        "model_spec": trace.attrs.get("spec_name"),
        "family": family,
        "quantity": getattr(module, "QUANTITY", "log spread"),
        "counts": counts,
        "diagnostics": summarize(checks),
        "variance_shares": {name: row.to_dict() for name, row in shares.iterrows()} if has_shares else None,
        "bayes_r2": decompose.interval_summary(posterior["bayes_r2"]) if "bayes_r2" in posterior else None,
        "competence_effect": decompose.interval_summary(posterior["gamma1"]) if "gamma1" in posterior else None,
        "competence_effect_units": getattr(module, "COMPETENCE_EFFECT_UNITS", "change in log sigma (log of the logit spread) per one logit of competence"),
        "sampler": {
            "name": trace.attrs.get("sampler"),
            "seed": trace.attrs.get("seed"),
            "chains": trace.attrs.get("chains"),
            "draws": trace.attrs.get("draws"),
            "tune": trace.attrs.get("tune"),
        },
        "timings": json.loads(trace.attrs.get("timings", "{}")),
        "versions": json.loads(trace.attrs.get("versions", "{}")),
        "tensor_hash": trace.attrs.get("tensor_hash"),
        "caveat": trace.attrs.get("caveat") or None,
        "published_reference": published_reference(),
    }
    if family != "location-scale":
        summary["findings"] = list(getattr(module, "report_findings", lambda _: [])(trace))
    elif tensor is not None and "n_correct" in tensor:
        table = pair_metrics(tensor)
        summary["descriptive"] = ols_and_spearman(table, robustness=robustness)
    return summary
