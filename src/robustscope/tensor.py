"""The labelled model x task x perturbation tensor.

Every loader produces the same :class:`xarray.Dataset`:

* dimensions ``model``, ``task`` and ``perturbation``, plus ``example`` where
  per-example scores exist;
* integer data variables ``n_correct`` and ``n_total`` (aggregated counts),
  and for per-example data a float ``score`` and an integer ``prediction``
  code whose labels are the coordinate ``prediction_label``;
* a boolean data variable ``observed`` on (model, task, perturbation).

Missing-cell convention: a cell that was never evaluated has
``observed == False`` and ``n_correct == n_total == -1`` (``MISSING_COUNT``),
``score`` NaN and ``prediction`` -1. It is never a zero. Use
:func:`observed_cells` or mask with ``observed`` before computing anything.

Perturbation labels are either shared across tasks (``perturbation_structure
= "crossed"``, e.g. an enumerator or a temperature) or local to one task
(``"nested"``, e.g. a paraphrase written for that task). Per-perturbation
coordinates are 1-D along ``perturbation`` when crossed and 2-D on
(task, perturbation) when nested.

The tensor holds one metric: ``attrs["metric"]`` names it and
``attrs["metric_kind"]`` is ``"binary"`` (counts of correct answers, which
the binomial models need) or ``"continuous"`` (BLEU, F1 and similar).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ._io import atomic_path
from ._logging import get_logger
from .errors import ConflictError, InputError, RobustscopeError

log = get_logger("tensor")

DIMS = ("model", "task", "perturbation")
EXAMPLE_DIM = "example"
MISSING_COUNT = -1
MISSING_CODE = -1
STRUCTURES = ("nested", "crossed")
METRIC_KINDS = ("binary", "continuous")
DUPLICATE_POLICIES = ("error", "first", "last", "mean")
TENSOR_FORMAT_VERSION = 1


def natural_key(label: object) -> tuple:
    """Sort key that orders ``"2"`` before ``"10"`` and keeps text order otherwise."""
    text = str(label)
    return tuple((0, int(part), "") if part.isdecimal() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def _sorted_labels(values: Iterable[object]) -> list[str]:
    return sorted({str(v) for v in values}, key=natural_key)


def _resolve_duplicates(
    frame: pd.DataFrame,
    keys: Sequence[str],
    value_columns: Sequence[str],
    policy: str,
    *,
    source: str,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Merge identical duplicate rows and handle conflicting ones by ``policy``.

    Returns the de-duplicated frame and counts ``{"duplicates_merged", "conflicts"}``.
    """
    if policy not in DUPLICATE_POLICIES:
        raise RobustscopeError(f"unknown duplicate policy {policy!r}; valid values: {', '.join(DUPLICATE_POLICIES)}")
    counts = {"duplicates_merged": 0, "conflicts": 0}
    duplicated = frame.duplicated(list(keys), keep=False)
    if not duplicated.any():
        return frame, counts

    exact = frame.duplicated(list(keys) + list(value_columns), keep="first")
    counts["duplicates_merged"] = int(exact.sum())
    frame = frame.loc[~exact]
    conflicted = frame.duplicated(list(keys), keep=False)
    if not conflicted.any():
        return frame, counts

    conflict_rows = frame.loc[conflicted]
    counts["conflicts"] = int(conflict_rows.duplicated(list(keys), keep="first").sum())
    if policy == "error":
        first = conflict_rows.groupby(list(keys), sort=False).head(2).head(6)
        listing = "; ".join(
            ", ".join(f"{k}={row[k]!r}" for k in keys) + " -> " + ", ".join(f"{c}={row[c]!r}" for c in value_columns)
            for _, row in first.iterrows()
        )
        raise ConflictError(
            f"{counts['conflicts']} conflicting duplicate rows: the same key has different values ({listing})",
            path=source,
            hint="remove the conflicting rows, or choose a duplicate policy (first, last or mean)",
        )
    if policy == "first":
        frame = frame.drop_duplicates(list(keys), keep="first")
    elif policy == "last":
        frame = frame.drop_duplicates(list(keys), keep="last")
    else:
        numeric = [c for c in value_columns if pd.api.types.is_numeric_dtype(frame[c])]
        aggregated = frame.groupby(list(keys), sort=False, as_index=False)[numeric].mean()
        others = [c for c in frame.columns if c not in aggregated.columns]
        if others:
            extra = frame.drop_duplicates(list(keys), keep="first")[list(keys) + others]
            aggregated = aggregated.merge(extra, on=list(keys), how="left")
        frame = aggregated
    log.warning("%s: %d conflicting duplicate rows resolved with policy %r", source, counts["conflicts"], policy)
    return frame, counts


def _info_coords(
    info: pd.DataFrame | None,
    labels: Mapping[str, list[str]],
    index_dims: tuple[str, ...],
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Turn a metadata table indexed by one or two dimensions into coordinates."""
    if info is None or info.empty:
        return {}
    coords: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    if len(index_dims) == 1:
        (dim,) = index_dims
        table = info.copy()
        table.index = table.index.map(str)
        table = table[~table.index.duplicated(keep="first")].reindex(labels[dim])
    else:
        table = info.copy()
        table.index = pd.MultiIndex.from_arrays([table.index.get_level_values(i).map(str) for i in range(2)])
        table = table[~table.index.duplicated(keep="first")]
        full = pd.MultiIndex.from_product([labels[index_dims[0]], labels[index_dims[1]]])
        table = table.reindex(full)
    shape = tuple(len(labels[d]) for d in index_dims)
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_bool_dtype(values.dtype) or values.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all() and values.notna().any():
            array = values.fillna(False).astype(bool).to_numpy()
        elif pd.api.types.is_numeric_dtype(values.dtype):
            array = values.astype(float).to_numpy()
        else:
            array = values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
            array = array.to_numpy(dtype=object)
        coords[str(column)] = (index_dims, array.reshape(shape))
    return coords


def _finish(
    ds: xr.Dataset,
    *,
    labels: Mapping[str, list[str]],
    task_info: pd.DataFrame | None,
    perturbation_info: pd.DataFrame | None,
    structure: str,
    dataset: str,
    metric: str,
    metric_kind: str,
    dedup: Mapping[str, int],
    attrs: Mapping[str, Any] | None,
) -> xr.Dataset:
    """Attach task and perturbation metadata and the defining attributes, then validate."""
    ds = ds.assign_coords(_info_coords(task_info, labels, ("task",)))
    perturbation_dims = ("task", "perturbation") if structure == "nested" else ("perturbation",)
    ds = ds.assign_coords(_info_coords(perturbation_info, labels, perturbation_dims))
    ds.attrs.update(
        {
            "dataset": dataset,
            "metric": metric,
            "metric_kind": metric_kind,
            "perturbation_structure": structure,
            "tensor_format_version": TENSOR_FORMAT_VERSION,
            "duplicates_merged": dedup["duplicates_merged"],
            "conflicts": dedup["conflicts"],
        }
    )
    if attrs:
        ds.attrs.update(attrs)
    validate(ds)
    return ds


def from_counts(
    records: pd.DataFrame,
    *,
    dataset: str,
    metric: str = "accuracy",
    structure: str = "crossed",
    task_info: pd.DataFrame | None = None,
    perturbation_info: pd.DataFrame | None = None,
    duplicates: str = "error",
    source: str = "<records>",
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build the tensor from one row per (model, task, perturbation) with counts.

    Parameters
    ----------
    records
        Columns ``model``, ``task``, ``perturbation``, ``n_correct`` and
        ``n_total`` (integers, ``0 <= n_correct <= n_total``, ``n_total > 0``).
    dataset
        Name of the data set, stored in ``attrs["dataset"]``.
    metric
        Name of the metric the counts measure.
    structure
        ``"nested"`` when perturbation labels belong to one task, ``"crossed"``
        when they are shared across tasks.
    task_info
        Optional metadata indexed by task (for example the benchmark).
    perturbation_info
        Optional metadata indexed by perturbation (crossed) or by
        (task, perturbation) (nested).
    duplicates
        What to do with rows that share a key but differ in value: ``"error"``
        (default), ``"first"``, ``"last"`` or ``"mean"``. Identical duplicates
        are always merged and counted.

    Returns
    -------
    xarray.Dataset
        The tensor; ``attrs["duplicates_merged"]`` and ``attrs["conflicts"]``
        count what the de-duplication did.

    Raises
    ------
    InputError
        On missing columns, counts that are not integers, negative counts or
        ``n_correct > n_total``.
    """
    _check_structure(structure)
    required = ["model", "task", "perturbation", "n_correct", "n_total"]
    missing = [c for c in required if c not in records.columns]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)}",
            path=source,
            hint=f"the records need the columns {', '.join(required)}",
        )
    frame = records.copy()
    for key in ("model", "task", "perturbation"):
        frame[key] = frame[key].map(str)
    for column in ("n_correct", "n_total"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != np.round(values))
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{column} must be a whole number",
                path=source,
                row=position + 1,
                column=column,
                value=frame[column].iloc[position],
            )
        frame[column] = values.astype(np.int64)
    invalid = (frame["n_total"] <= 0) | (frame["n_correct"] < 0) | (frame["n_correct"] > frame["n_total"])
    if invalid.any():
        position = int(np.flatnonzero(invalid.to_numpy())[0])
        row = frame.iloc[position]
        raise InputError(
            "counts must satisfy 0 <= n_correct <= n_total and n_total > 0",
            path=source,
            row=position + 1,
            column="n_correct",
            value=f"n_correct={row['n_correct']}, n_total={row['n_total']}",
        )

    keys = ["model", "task", "perturbation"]
    frame, dedup = _resolve_duplicates(frame, keys, ["n_correct", "n_total"], duplicates, source=source)
    if duplicates == "mean":
        frame["n_correct"] = np.rint(frame["n_correct"]).astype(np.int64)
        frame["n_total"] = np.rint(frame["n_total"]).astype(np.int64)

    labels = {dim: _sorted_labels(frame[dim]) for dim in DIMS}
    shape = tuple(len(labels[d]) for d in DIMS)
    index = tuple(pd.Categorical(frame[d], categories=labels[d]).codes for d in DIMS)
    n_correct = np.full(shape, MISSING_COUNT, dtype=np.int64)
    n_total = np.full(shape, MISSING_COUNT, dtype=np.int64)
    n_correct[index] = frame["n_correct"].to_numpy()
    n_total[index] = frame["n_total"].to_numpy()
    observed = n_total > 0

    ds = xr.Dataset(
        {
            "n_correct": (DIMS, n_correct),
            "n_total": (DIMS, n_total),
            "observed": (DIMS, observed),
        },
        coords={d: np.array(labels[d], dtype=object) for d in DIMS},
    )
    return _finish(
        ds,
        labels=labels,
        task_info=task_info,
        perturbation_info=perturbation_info,
        structure=structure,
        dataset=dataset,
        metric=metric,
        metric_kind="binary",
        dedup=dedup,
        attrs=attrs,
    )


def from_examples(
    records: pd.DataFrame,
    *,
    dataset: str,
    metric: str = "accuracy",
    metric_kind: str | None = None,
    structure: str = "crossed",
    task_info: pd.DataFrame | None = None,
    perturbation_info: pd.DataFrame | None = None,
    duplicates: str = "error",
    source: str = "<records>",
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build the tensor from one row per (model, task, perturbation, example).

    ``records`` needs the columns ``model``, ``task``, ``perturbation``,
    ``example`` and ``score`` (a float; 0/1 for correctness), and may have
    ``prediction`` (any text; stored as integer codes whose labels are the
    ``prediction_label`` coordinate). When every score is 0 or 1 the metric is
    binary and ``n_correct``/``n_total`` are filled by summing over examples;
    otherwise it is continuous and only ``score`` is meaningful.

    Raises
    ------
    InputError
        On missing columns or scores that are not numbers.
    """
    _check_structure(structure)
    required = ["model", "task", "perturbation", "example", "score"]
    missing = [c for c in required if c not in records.columns]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)}",
            path=source,
            hint=f"per-example records need the columns {', '.join(required)}",
        )
    frame = records.copy()
    for key in ("model", "task", "perturbation", "example"):
        frame[key] = frame[key].map(str)
    scores = pd.to_numeric(frame["score"], errors="coerce")
    bad = scores.isna() | ~np.isfinite(scores.astype(float))
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            "score must be a finite number",
            path=source,
            row=position + 1,
            column="score",
            value=frame["score"].iloc[position],
        )
    frame["score"] = scores.astype(float)
    has_prediction = "prediction" in frame.columns
    value_columns = ["score"] + (["prediction"] if has_prediction else [])
    if has_prediction:
        frame["prediction"] = frame["prediction"].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))

    keys = ["model", "task", "perturbation", "example"]
    frame, dedup = _resolve_duplicates(frame, keys, value_columns, duplicates, source=source)

    binary = bool(np.isin(frame["score"].to_numpy(), (0.0, 1.0)).all())
    kind = metric_kind or ("binary" if binary else "continuous")
    if kind not in METRIC_KINDS:
        raise RobustscopeError(f"unknown metric kind {kind!r}; valid values: {', '.join(METRIC_KINDS)}")
    if kind == "binary" and not binary:
        raise InputError(
            "metric_kind='binary' needs every score to be 0 or 1",
            path=source,
            column="score",
            value=sorted(set(frame["score"].unique()) - {0.0, 1.0})[:5],
        )

    all_dims = DIMS + (EXAMPLE_DIM,)
    labels = {dim: _sorted_labels(frame[dim]) for dim in all_dims}
    shape = tuple(len(labels[d]) for d in all_dims)
    index = tuple(pd.Categorical(frame[d], categories=labels[d]).codes for d in all_dims)
    score = np.full(shape, np.nan)
    score[index] = frame["score"].to_numpy()
    data_vars: dict[str, tuple[tuple[str, ...], np.ndarray]] = {"score": (all_dims, score)}
    coords: dict[str, Any] = {d: np.array(labels[d], dtype=object) for d in all_dims}

    if has_prediction:
        categories = _sorted_labels(v for v in frame["prediction"] if v is not None)
        codes = pd.Categorical(frame["prediction"], categories=categories).codes.astype(np.int32)
        prediction = np.full(shape, MISSING_CODE, dtype=np.int32)
        prediction[index] = codes
        data_vars["prediction"] = (all_dims, prediction)
        coords["prediction_label"] = ("prediction_code", np.array(categories, dtype=object))
        coords["prediction_code"] = np.arange(len(categories), dtype=np.int32)

    answered = ~np.isnan(score)
    observed = answered.any(axis=-1)
    data_vars["observed"] = (DIMS, observed)
    n_total = answered.sum(axis=-1).astype(np.int64)
    n_total[~observed] = MISSING_COUNT
    if kind == "binary":
        n_correct = np.nansum(score, axis=-1).astype(np.int64)
        n_correct[~observed] = MISSING_COUNT
        data_vars["n_correct"] = (DIMS, n_correct)
        data_vars["n_total"] = (DIMS, n_total)

    ds = xr.Dataset(data_vars, coords=coords)
    return _finish(
        ds,
        labels=labels,
        task_info=task_info,
        perturbation_info=perturbation_info,
        structure=structure,
        dataset=dataset,
        metric=metric,
        metric_kind=kind,
        dedup=dedup,
        attrs=attrs,
    )


def from_scores(
    records: pd.DataFrame,
    *,
    dataset: str,
    metric: str,
    structure: str = "crossed",
    task_info: pd.DataFrame | None = None,
    perturbation_info: pd.DataFrame | None = None,
    duplicates: str = "error",
    source: str = "<records>",
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build a continuous-metric tensor from one aggregate score per cell.

    ``records`` has the columns ``model``, ``task``, ``perturbation`` and
    ``score`` (a finite float on the metric's own scale). The tensor has a
    float ``score`` on (model, task, perturbation), NaN where a cell is
    missing, the ``observed`` mask and ``attrs["metric_kind"] =
    "continuous"``; it has no ``n_correct``/``n_total``.

    Raises
    ------
    InputError
        On missing columns or scores that are not finite numbers.
    """
    _check_structure(structure)
    required = ["model", "task", "perturbation", "score"]
    missing = [c for c in required if c not in records.columns]
    if missing:
        raise InputError(f"missing required column(s) {', '.join(missing)}", path=source)
    frame = records.copy()
    for key in DIMS:
        frame[key] = frame[key].map(str)
    scores = pd.to_numeric(frame["score"], errors="coerce")
    bad = scores.isna() | ~np.isfinite(scores.astype(float))
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError("score must be a finite number", path=source, row=position + 1, column="score", value=frame["score"].iloc[position])
    frame["score"] = scores.astype(float)
    frame, dedup = _resolve_duplicates(frame, list(DIMS), ["score"], duplicates, source=source)

    labels = {dim: _sorted_labels(frame[dim]) for dim in DIMS}
    shape = tuple(len(labels[d]) for d in DIMS)
    index = tuple(pd.Categorical(frame[d], categories=labels[d]).codes for d in DIMS)
    score = np.full(shape, np.nan)
    score[index] = frame["score"].to_numpy()

    ds = xr.Dataset(
        {"score": (DIMS, score), "observed": (DIMS, ~np.isnan(score))},
        coords={d: np.array(labels[d], dtype=object) for d in DIMS},
    )
    return _finish(
        ds,
        labels=labels,
        task_info=task_info,
        perturbation_info=perturbation_info,
        structure=structure,
        dataset=dataset,
        metric=metric,
        metric_kind="continuous",
        dedup=dedup,
        attrs=attrs,
    )


def _check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise RobustscopeError(f"unknown perturbation structure {structure!r}; valid values: {', '.join(STRUCTURES)}")


def validate(ds: xr.Dataset) -> xr.Dataset:
    """Check that ``ds`` follows the tensor conventions and return it unchanged.

    Raises
    ------
    RobustscopeError
        When a dimension, variable or attribute is missing, or counts are
        inconsistent with the ``observed`` mask.
    """
    for dim in DIMS:
        if dim not in ds.dims:
            raise RobustscopeError(f"tensor has no {dim!r} dimension; dimensions are {tuple(ds.dims)}")
    for name in ("dataset", "metric", "metric_kind", "perturbation_structure"):
        if name not in ds.attrs:
            raise RobustscopeError(f"tensor is missing the attribute {name!r}")
    if ds.attrs["perturbation_structure"] not in STRUCTURES:
        raise RobustscopeError(f"tensor attribute perturbation_structure={ds.attrs['perturbation_structure']!r} is not one of {STRUCTURES}")
    if ds.attrs["metric_kind"] not in METRIC_KINDS:
        raise RobustscopeError(f"tensor attribute metric_kind={ds.attrs['metric_kind']!r} is not one of {METRIC_KINDS}")
    if "observed" not in ds:
        raise RobustscopeError("tensor has no 'observed' mask")
    observed = ds["observed"].values.astype(bool)
    if "n_correct" in ds:
        k = ds["n_correct"].values
        n = ds["n_total"].values
        if np.any(n[observed] <= 0) or np.any(k[observed] < 0) or np.any(k[observed] > n[observed]):
            raise RobustscopeError("tensor has observed cells with invalid counts (need 0 <= n_correct <= n_total, n_total > 0)")
        if np.any(n[~observed] != MISSING_COUNT) or np.any(k[~observed] != MISSING_COUNT):
            raise RobustscopeError(f"tensor has unobserved cells whose counts are not {MISSING_COUNT}")
    elif ds.attrs["metric_kind"] == "binary":
        raise RobustscopeError("a binary-metric tensor needs n_correct and n_total")
    return ds


def observed_cells(ds: xr.Dataset) -> pd.DataFrame:
    """Return the observed cells as a long table (one row per model, task, perturbation).

    Columns: ``model``, ``task``, ``perturbation``, ``n_correct``, ``n_total``
    and ``accuracy`` (probability scale) for binary tensors, and ``score``
    (mean over examples) where per-example or continuous scores exist.
    """
    mask = ds["observed"].values.astype(bool)
    idx = np.nonzero(mask)
    table = pd.DataFrame({dim: ds[dim].values[i] for dim, i in zip(DIMS, idx, strict=True)})
    if "n_correct" in ds:
        table["n_correct"] = ds["n_correct"].values[idx]
        table["n_total"] = ds["n_total"].values[idx]
        table["accuracy"] = table["n_correct"] / table["n_total"]
    if "score" in ds:
        score = ds["score"]
        if EXAMPLE_DIM in score.dims:
            score = score.mean(EXAMPLE_DIM, skipna=True)
        table["score"] = score.transpose(*DIMS).values[idx]
    return table


def tensor_hash(ds: xr.Dataset) -> str:
    """Return a SHA-256 hash of the tensor's labels, data and defining attributes.

    The hash ignores provenance attributes (timestamps, manifest) so that the
    same data ingested twice hashes the same.
    """
    digest = hashlib.sha256()
    for name in sorted(ds.variables):
        values = ds[name].values
        digest.update(name.encode())
        digest.update(str(ds[name].dims).encode())
        if values.dtype == object or values.dtype.kind in "US":
            digest.update(json.dumps([str(v) for v in values.ravel()], ensure_ascii=False).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())
    for key in ("dataset", "metric", "metric_kind", "perturbation_structure"):
        digest.update(f"{key}={ds.attrs.get(key)}".encode())
    return digest.hexdigest()


def _encode_attrs(ds: xr.Dataset) -> xr.Dataset:
    encoded = ds.copy()
    for key, value in list(encoded.attrs.items()):
        if isinstance(value, (dict, list, tuple)) or value is None or isinstance(value, bool):
            encoded.attrs[key] = "json:" + json.dumps(value, ensure_ascii=False, default=str)
    for name in encoded.variables:
        variable = encoded[name]
        if variable.dtype == bool:
            encoded[name] = variable.astype(np.int8)
            encoded[name].attrs["robustscope_dtype"] = "bool"
    return encoded


def _decode_attrs(ds: xr.Dataset) -> xr.Dataset:
    for key, value in list(ds.attrs.items()):
        if isinstance(value, str) and value.startswith("json:"):
            ds.attrs[key] = json.loads(value[5:])
    for name in list(ds.variables):
        if ds[name].attrs.get("robustscope_dtype") == "bool":
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "robustscope_dtype"}
            converted = ds[name].astype(bool)
            converted.attrs = attrs
            if name in ds.coords:
                ds = ds.assign_coords({name: converted})
            else:
                ds[name] = converted
    return ds


def save(ds: xr.Dataset, path: str | Path) -> Path:
    """Write the tensor to ``path`` as NetCDF (HDF5) atomically and return the path."""
    validate(ds)
    path = Path(path)
    for name in ds.coords:
        if ds[name].dtype == object:
            for label in ds[name].values.ravel():
                if isinstance(label, str) and "\x00" in label:
                    raise InputError("label contains a NUL character, which NetCDF cannot store", path=path, column=str(name), value=label)
    encoded = _encode_attrs(ds)
    with atomic_path(path) as tmp:
        encoded.to_netcdf(tmp, engine="h5netcdf")
    log.info("wrote tensor %s (%s)", path, describe(ds))
    return path


def load(path: str | Path) -> xr.Dataset:
    """Read a tensor written by :func:`save` and check it.

    Raises
    ------
    InputError
        When the file is missing or is not a robustscope tensor.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("tensor file not found", path=path, hint="run `robustscope ingest` first or check the path")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as stored:
            ds = stored.load()
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the file as NetCDF: {error}", path=path) from error
    ds = _decode_attrs(ds)
    for name in list(ds.coords):
        if ds[name].dtype.kind in "US":
            ds = ds.assign_coords({name: (ds[name].dims, ds[name].values.astype(object), ds[name].attrs)})
    try:
        validate(ds)
    except RobustscopeError as error:
        raise InputError(f"not a valid robustscope tensor: {error}", path=path) from error
    return ds


def describe(ds: xr.Dataset) -> str:
    """Return a one-line description: sizes and observed cells."""
    observed = int(ds["observed"].sum())
    total = int(ds["observed"].size)
    sizes = " x ".join(f"{ds.sizes[d]} {d}s" for d in DIMS)
    extra = f" x {ds.sizes[EXAMPLE_DIM]} examples" if EXAMPLE_DIM in ds.dims else ""
    return f"{sizes}{extra}, {observed} of {total} cells observed"
