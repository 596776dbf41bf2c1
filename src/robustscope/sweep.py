"""Fit several specifications to several tensors, resumably, and compare them.

A sweep is the unit of work behind a model comparison: every (tensor,
specification) combination is fitted once, saved as soon as it finishes,
and skipped when the sweep runs again after an interruption. With
``nested=True`` each location-scale specification expands into its four
nested alternatives (see :func:`robustscope.loo.nested_specs`), so the
PSIS-LOO table answers whether competence, model identity, both or neither
best explain robustness.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from . import decompose
from . import tensor as _tensor
from ._io import write_text
from ._logging import get_logger
from .cache import FitJob, fit_many
from .diagnostics import check_fit, summarize
from .errors import RobustscopeError
from .loo import loo_compare, nested_specs
from .specs import ModelSpec, load_spec

log = get_logger("sweep")


def _tensor_name(ds: xr.Dataset, path: str | Path | None, index: int) -> str:
    name = str(ds.attrs.get("dataset") or (Path(path).stem if path else f"tensor{index}"))
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip(".") or f"tensor{index}"


def _specs(specs: Sequence[str | Path | ModelSpec], nested: bool) -> list[ModelSpec]:
    out: list[ModelSpec] = []
    for spec in specs:
        loaded = load_spec(spec)
        out.extend(nested_specs(loaded).values() if nested else [loaded])
    names = [s.name for s in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RobustscopeError(f"specifications with the same name would overwrite each other's fits: {', '.join(repeated)}; give each a distinct 'name'")
    return out


def _fit_row(name: str, tensor_name: str, trace: xr.DataTree, reused: bool) -> dict[str, Any]:
    diagnostics = summarize(check_fit(trace))
    posterior = trace["posterior"].to_dataset()
    row: dict[str, Any] = {
        "fit": name,
        "tensor": tensor_name,
        "spec": trace.attrs.get("spec_name"),
        "family": trace.attrs.get("family", "location-scale"),
        "reused": reused,
        "diagnostics_passed": bool(diagnostics["passed"]),
        "failed_checks": ", ".join(diagnostics["failed_checks"]),
    }
    if "gamma1" in posterior:
        summary = decompose.interval_summary(posterior["gamma1"])
        row.update({"gamma1": summary["mean"], "gamma1_lower": summary["lower"], "gamma1_upper": summary["upper"]})
    for component in decompose.COMPONENTS:
        key = f"share_{component}"
        if key in posterior:
            row[key] = float(posterior[key].mean())
    return row


def sweep(
    tensors: Sequence[str | Path | xr.Dataset],
    specs: Sequence[str | Path | ModelSpec] = ("location-scale",),
    output: str | Path = "sweep",
    *,
    nested: bool = False,
    compare_report: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Fit every specification to every tensor, then rank and compare the fits.

    Parameters
    ----------
    tensors
        Tensors or paths of tensors written by ``ingest``.
    specs
        Specification names, YAML paths or :class:`ModelSpec` objects.
    output
        Folder for ``fits/<tensor>__<spec>.nc`` (each written as soon as it
        finishes; existing ones are reused, so a rerun resumes),
        ``fits.csv``, ``loo_<tensor>.csv``/``.md`` and ``compare/`` (the
        comparison report).
    nested
        Expand each location-scale specification into its four nested
        alternatives.
    compare_report
        Write the side-by-side comparison report of all fits.
    **fit_kwargs
        Sampler overrides of :func:`robustscope.fit.fit` (``chains``,
        ``draws``, ``tune``, ``seed``, ``progress``).

    Returns
    -------
    dict
        ``fits`` (a DataFrame: one row per fit with its diagnostics,
        competence effect and variance shares), ``loo`` (tensor name ->
        DataFrame of :func:`robustscope.loo.loo_compare`) and ``paths``.

    Raises
    ------
    RobustscopeError
        On an unknown specification, repeated names, or as
        :func:`robustscope.fit.fit`.
    """
    output = Path(output)
    spec_list = _specs(specs, nested)
    loaded: list[tuple[str, xr.Dataset]] = []
    for index, item in enumerate(tensors):
        ds = _tensor.validate(item) if isinstance(item, xr.Dataset) else _tensor.load(item)
        loaded.append((_tensor_name(ds, None if isinstance(item, xr.Dataset) else item, index), ds))
    names = [n for n, _ in loaded]
    if len(set(names)) != len(names):
        loaded = [(f"{n}-{i}", ds) for i, (n, ds) in enumerate(loaded)]

    jobs = [FitJob(name=f"{tname}__{spec.name}", tensor=ds, spec=spec) for tname, ds in loaded for spec in spec_list]
    log.info("sweep: %d fits (%d tensors x %d specifications) into %s", len(jobs), len(loaded), len(spec_list), output / "fits")
    results = fit_many(jobs, output_dir=output / "fits", **fit_kwargs)

    rows = []
    for tname, _ in loaded:
        for spec in spec_list:
            name = f"{tname}__{spec.name}"
            trace, reused = results[name]
            rows.append(_fit_row(name, tname, trace, reused))
    table = pd.DataFrame(rows).set_index("fit")
    paths: dict[str, str] = {"fits_table": str(write_text(output / "fits.csv", table.to_csv()))}

    loo_tables: dict[str, pd.DataFrame] = {}
    for tname, _ in loaded:
        group = {spec.name: results[f"{tname}__{spec.name}"][0] for spec in spec_list}
        if len(group) < 2:
            continue
        try:
            ranking = loo_compare(group)
        except RobustscopeError as error:
            log.warning("no PSIS-LOO comparison for %s: %s", tname, error)
            continue
        loo_tables[tname] = ranking
        paths[f"loo_{tname}"] = str(write_text(output / f"loo_{tname}.csv", ranking.to_csv()))
        write_text(output / f"loo_{tname}.md", ranking.round(3).to_markdown() + "\n")
        best = ranking.index[0]
        log.info("PSIS-LOO on %s: best %s; %s", tname, best, json.dumps({k: round(v, 1) for k, v in ranking["elpd_diff"].items()}))

    if compare_report and len(jobs) >= 2:
        from .report.compare import compare

        compare([output / "fits" / f"{job.name}.nc" for job in jobs], output / "compare", labels=[job.name for job in jobs])
        paths["compare"] = str(output / "compare" / "compare.html")
    return {"fits": table, "loo": loo_tables, "paths": paths}


__all__ = ["sweep"]
