"""Merging new results into an existing tensor.

:func:`add` takes the union of the model, task, perturbation (and example)
labels of two tensors. A cell observed in only one of them is copied; a cell
observed in both is either an identical duplicate (merged and counted) or a
conflict, which raises :class:`~robustscope.errors.ConflictError` unless a
policy (``"first"``, ``"last"`` or ``"mean"``) resolves it.

Every merged tensor records where each cell came from: the data variable
``source_id`` (int16 on model x task x perturbation, -1 where unobserved)
indexes the coordinate ``source_label`` (dimension ``source``). A cell that
holds values from both inputs (an identical duplicate, a mean, or examples
from both) points to a label joining both names with ``" + "``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import tensor as _tensor
from .._io import sha256_file
from .._logging import get_logger
from ..errors import ConflictError, InputError, RobustscopeError
from .manifest import manifest_path, write_manifest

log = get_logger("ingest.merge")

POLICIES = ("error", "first", "last", "mean")
SOURCE_DIM = "source"
MISSING_SOURCE = -1
MAX_LISTED_CONFLICTS = 5


def _source_labels(ds: xr.Dataset, fallback: str) -> tuple[np.ndarray, list[str]]:
    """Return the per-cell source ids and labels of ``ds`` (one source for a tensor that has none)."""
    if "source_id" in ds and "source_label" in ds.coords:
        return ds["source_id"].transpose(*_tensor.DIMS).values.astype(np.int16), [str(v) for v in ds["source_label"].values]
    ids = np.where(ds["observed"].transpose(*_tensor.DIMS).values, 0, MISSING_SOURCE).astype(np.int16)
    return ids, [fallback]


def _check_compatible(old: xr.Dataset, new: xr.Dataset) -> None:
    for name in ("metric", "metric_kind", "perturbation_structure"):
        if old.attrs.get(name) != new.attrs.get(name):
            raise RobustscopeError(
                f"cannot merge tensors with different {name.replace('_', ' ')}: "
                f"{old.attrs.get(name)!r} in the existing tensor and {new.attrs.get(name)!r} in the new one"
            )
    old_examples = _tensor.EXAMPLE_DIM in old.dims
    new_examples = _tensor.EXAMPLE_DIM in new.dims
    if old_examples != new_examples:
        raise RobustscopeError(
            "cannot merge a per-example tensor with an aggregated one; drop the example dimension of the "
            "per-example tensor first (tensor.drop_dims('example')) or ingest both per example"
        )
    for name in ("prediction",):
        if old_examples and ((name in old) != (name in new)):
            raise RobustscopeError(f"cannot merge: only one of the tensors has the per-example variable {name!r}")


def _union(first: Sequence[object], second: Sequence[object]) -> list[str]:
    return sorted({str(v) for v in first} | {str(v) for v in second}, key=_tensor.natural_key)


def _positions(labels: Sequence[object], union: list[str]) -> np.ndarray:
    lookup = {label: i for i, label in enumerate(union)}
    return np.array([lookup[str(v)] for v in labels], dtype=np.int64)


def _place(values: np.ndarray, positions: Sequence[np.ndarray], shape: tuple[int, ...], fill: Any) -> np.ndarray:
    """Scatter ``values`` into a new array of ``shape`` at the given positions per axis."""
    out = np.full(shape, fill, dtype=values.dtype)
    out[np.ix_(*positions)] = values
    return out


def _prediction_text(ds: xr.Dataset, dims: tuple[str, ...]) -> np.ndarray:
    codes = ds["prediction"].transpose(*dims).values
    labels = np.array([str(v) for v in ds["prediction_label"].values] + [None], dtype=object)
    return labels[np.where(codes < 0, len(labels) - 1, codes)]


def _merge_coords(old: xr.Dataset, new: xr.Dataset, labels: Mapping[str, list[str]]) -> dict[str, Any]:
    """Union the non-dimension coordinates on model, task, perturbation and example (old values win)."""
    coords: dict[str, Any] = {}
    merged_dims = set(labels)
    names = [n for n in dict.fromkeys(list(old.coords) + list(new.coords)) if n not in old.dims and n not in new.dims]
    for name in names:
        if name in ("prediction_label",):
            continue
        source = old if name in old.coords else new
        dims = source[name].dims
        if not dims or not set(dims) <= merged_dims:
            continue
        tables = []
        for ds in (old, new):
            if name not in ds.coords:
                continue
            # Built from the raw values: to_dataframe() on a coordinate also adds the
            # coordinate itself as a column, which duplicates the column name.
            values = ds[name].transpose(*dims).values.ravel()
            if len(dims) > 1:
                index = pd.MultiIndex.from_product([[str(v) for v in ds[d].values] for d in dims])
            else:
                index = pd.Index([str(v) for v in ds[dims[0]].values])
            tables.append(pd.DataFrame({name: values}, index=index))
        table = pd.concat(tables)
        table = table[~table.index.duplicated(keep="first")]
        full = labels[dims[0]] if len(dims) == 1 else pd.MultiIndex.from_product([labels[d] for d in dims])
        values = table[name].reindex(full)
        dtype = source[name].dtype
        if dtype == bool:
            array = values.fillna(False).astype(bool).to_numpy()
        elif dtype.kind in "iuf":
            array = values.astype(float).to_numpy()
        else:
            array = values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).to_numpy(dtype=object)
        coords[name] = (dims, array.reshape([len(labels[d]) for d in dims]))
    return coords


def _conflict_listing(keys: list[tuple], values: list[str]) -> str:
    return "; ".join(f"{key} -> {value}" for key, value in zip(keys[:MAX_LISTED_CONFLICTS], values[:MAX_LISTED_CONFLICTS], strict=False))


def add(tensor: xr.Dataset, new: xr.Dataset, *, policy: str = "error") -> xr.Dataset:
    """Merge ``new`` into ``tensor`` and return the combined tensor.

    Parameters
    ----------
    tensor
        The existing tensor (its values win under ``policy="first"``).
    new
        The tensor with new models, tasks, perturbations or examples.
    policy
        What to do with a cell (per-example tensors: an example of a cell)
        observed in both with different values: ``"error"`` (default) raises,
        ``"first"`` keeps the existing value, ``"last"`` the new one, and
        ``"mean"`` averages them (counts are rounded to whole numbers; the
        existing prediction is kept).

    Returns
    -------
    xarray.Dataset
        The merged tensor with ``source_id`` and ``source_label`` and the
        attributes ``merge_duplicates`` (identical cells merged) and
        ``merge_conflicts`` (conflicting cells resolved by the policy).

    Raises
    ------
    RobustscopeError
        When the tensors measure different metrics or have different
        perturbation structures, or one is per-example and the other not.
    ConflictError
        On conflicting cells with ``policy="error"``; the message lists the
        first conflicting keys.
    """
    if policy not in POLICIES:
        raise RobustscopeError(f"unknown merge policy {policy!r}; valid values: {', '.join(POLICIES)}")
    _tensor.validate(tensor)
    _tensor.validate(new)
    _check_compatible(tensor, new)
    per_example = _tensor.EXAMPLE_DIM in tensor.dims
    dims = _tensor.DIMS + ((_tensor.EXAMPLE_DIM,) if per_example else ())
    labels = {d: _union(tensor[d].values, new[d].values) for d in dims}
    shape = tuple(len(labels[d]) for d in dims)
    cell_shape = shape[:3]
    old_pos = [_positions(tensor[d].values, labels[d]) for d in dims]
    new_pos = [_positions(new[d].values, labels[d]) for d in dims]

    old_ids, source_labels = _source_labels(tensor, str(tensor.attrs.get("dataset", "existing")))
    new_ids_local, new_labels = _source_labels(new, str(new.attrs.get("dataset", "new")))
    offset = {}
    for i, label in enumerate(new_labels):
        if label not in source_labels:
            source_labels.append(label)
        offset[i] = source_labels.index(label)
    new_ids = np.where(new_ids_local >= 0, np.vectorize(lambda i: offset.get(int(i), MISSING_SOURCE))(new_ids_local), MISSING_SOURCE).astype(np.int16)

    old_observed = _place(tensor["observed"].transpose(*_tensor.DIMS).values, old_pos[:3], cell_shape, False)
    new_observed = _place(new["observed"].transpose(*_tensor.DIMS).values, new_pos[:3], cell_shape, False)
    both = old_observed & new_observed
    source_a = _place(old_ids, old_pos[:3], cell_shape, MISSING_SOURCE)
    source_b = _place(new_ids, new_pos[:3], cell_shape, MISSING_SOURCE)

    if per_example:
        merged, counts, choice = _merge_examples(tensor, new, dims, labels, shape, old_pos, new_pos, policy)
    else:
        merged, counts, choice = _merge_counts(tensor, new, labels, cell_shape, old_pos, new_pos, both, policy)

    observed = old_observed | new_observed
    source_id = np.where(old_observed, source_a, source_b).astype(np.int16)
    for mask, pick in ((choice == 1, source_b), (choice == 2, None)):
        if pick is not None:
            source_id = np.where(mask, pick, source_id)
            continue
        for position in zip(*np.nonzero(mask), strict=True):
            joined = f"{source_labels[source_a[position]]} + {source_labels[source_b[position]]}"
            if joined not in source_labels:
                source_labels.append(joined)
            source_id[position] = source_labels.index(joined)
    source_id[~observed] = MISSING_SOURCE
    if len(source_labels) > np.iinfo(np.int16).max:
        raise RobustscopeError(f"too many sources ({len(source_labels)}) for the int16 source_id")

    prediction_labels = merged.pop("_prediction_labels", None)
    data_vars: dict[str, Any] = {name: (dims if value.ndim == len(dims) else _tensor.DIMS, value) for name, value in merged.items()}
    data_vars["observed"] = (_tensor.DIMS, observed)
    data_vars["source_id"] = (_tensor.DIMS, source_id)
    coords: dict[str, Any] = {d: np.array(labels[d], dtype=object) for d in dims}
    coords["source_label"] = (SOURCE_DIM, np.array(source_labels, dtype=object))
    if prediction_labels is not None:
        coords["prediction_code"] = np.arange(len(prediction_labels), dtype=np.int32)
        coords["prediction_label"] = ("prediction_code", np.array(prediction_labels, dtype=object))
    coords.update(_merge_coords(tensor, new, labels))

    result = xr.Dataset(data_vars, coords=coords)
    attrs = {k: v for k, v in tensor.attrs.items() if k != "manifest"}
    attrs["merge_duplicates"] = int(tensor.attrs.get("merge_duplicates", 0)) + counts["duplicates"]
    attrs["merge_conflicts"] = int(tensor.attrs.get("merge_conflicts", 0)) + counts["conflicts"]
    result.attrs.update(attrs)
    _tensor.validate(result)
    log.info(
        "merged %s into %s: %d identical cells merged, %d conflicts resolved with policy %r",
        new.attrs.get("dataset"),
        tensor.attrs.get("dataset"),
        counts["duplicates"],
        counts["conflicts"],
        policy,
    )
    return result


def _merge_counts(
    old: xr.Dataset,
    new: xr.Dataset,
    labels: Mapping[str, list[str]],
    shape: tuple[int, ...],
    old_pos: list[np.ndarray],
    new_pos: list[np.ndarray],
    both: np.ndarray,
    policy: str,
) -> tuple[dict[str, np.ndarray], dict[str, int], np.ndarray]:
    """Merge aggregated tensors cell by cell. ``choice`` is 0 (existing), 1 (new) or 2 (both)."""
    arrays = {}
    for name in ("n_correct", "n_total"):
        a = _place(old[name].transpose(*_tensor.DIMS).values, old_pos[:3], shape, _tensor.MISSING_COUNT)
        b = _place(new[name].transpose(*_tensor.DIMS).values, new_pos[:3], shape, _tensor.MISSING_COUNT)
        arrays[name] = (a, b)
    same = (arrays["n_correct"][0] == arrays["n_correct"][1]) & (arrays["n_total"][0] == arrays["n_total"][1])
    duplicates = both & same
    conflicts = both & ~same
    if conflicts.any() and policy == "error":
        cells = list(zip(*np.nonzero(conflicts), strict=True))
        keys = [tuple(labels[d][i] for d, i in zip(_tensor.DIMS, cell, strict=True)) for cell in cells]
        values = [
            f"{arrays['n_correct'][0][c]}/{arrays['n_total'][0][c]} vs {arrays['n_correct'][1][c]}/{arrays['n_total'][1][c]}" for c in cells
        ]
        raise ConflictError(
            f"{len(cells)} cells have different counts in the two tensors (model, task, perturbation): {_conflict_listing(keys, values)}",
            hint="choose a policy: first (keep the existing values), last (take the new ones) or mean",
        )

    choice = np.where(arrays["n_total"][0] >= 0, 0, 1)
    merged = {}
    for name, (a, b) in arrays.items():
        value = np.where(a >= 0, a, b)
        if policy == "last":
            value = np.where(conflicts, b, value)
        elif policy == "mean":
            value = np.where(conflicts, np.rint((a + b) / 2).astype(np.int64), value)
        merged[name] = value
    if policy == "last":
        choice = np.where(conflicts, 1, choice)
    elif policy == "mean":
        choice = np.where(conflicts, 2, choice)
    choice = np.where(duplicates, 2, choice)
    return merged, {"duplicates": int(duplicates.sum()), "conflicts": int(conflicts.sum())}, choice


def _merge_examples(
    old: xr.Dataset,
    new: xr.Dataset,
    dims: tuple[str, ...],
    labels: Mapping[str, list[str]],
    shape: tuple[int, ...],
    old_pos: list[np.ndarray],
    new_pos: list[np.ndarray],
    policy: str,
) -> tuple[dict[str, Any], dict[str, int], np.ndarray]:
    """Merge per-example tensors example by example, then recount the cells."""
    a = _place(old["score"].transpose(*dims).values, old_pos, shape, np.nan)
    b = _place(new["score"].transpose(*dims).values, new_pos, shape, np.nan)
    has_prediction = "prediction" in old
    if has_prediction:
        pa_text = _place(_prediction_text(old, dims), old_pos, shape, None)
        pb_text = _place(_prediction_text(new, dims), new_pos, shape, None)
    in_a = ~np.isnan(a)
    in_b = ~np.isnan(b)
    both = in_a & in_b
    same = np.isclose(a, b, rtol=0, atol=1e-12)
    if has_prediction:
        same &= pa_text == pb_text
    duplicates = both & same
    conflicts = both & ~same
    if conflicts.any() and policy == "error":
        cells = list(zip(*np.nonzero(conflicts), strict=True))
        keys = [tuple(labels[d][i] for d, i in zip(dims, cell, strict=True)) for cell in cells]
        values = [
            f"score {a[c]:g} vs {b[c]:g}" + (f", prediction {pa_text[c]!r} vs {pb_text[c]!r}" if has_prediction else "") for c in cells
        ]
        raise ConflictError(
            f"{len(cells)} examples have different values in the two tensors (model, task, perturbation, example): "
            f"{_conflict_listing(keys, values)}",
            hint="choose a policy: first (keep the existing values), last (take the new ones) or mean",
        )

    score = np.where(in_a, a, b)
    if policy == "last":
        score = np.where(conflicts, b, score)
    elif policy == "mean":
        score = np.where(conflicts, (a + b) / 2, score)
    merged: dict[str, Any] = {"score": score}
    if has_prediction:
        text = np.where(in_a, pa_text, pb_text)
        if policy == "last":
            text = np.where(conflicts, pb_text, text)
        categories = sorted({str(v) for v in text.ravel() if v is not None}, key=_tensor.natural_key)
        lookup = {label: i for i, label in enumerate(categories)}
        codes = np.vectorize(lambda v: lookup.get(v, _tensor.MISSING_CODE) if v is not None else _tensor.MISSING_CODE, otypes=[np.int32])(text)
        merged["prediction"] = codes.astype(np.int32)
        merged["_prediction_labels"] = categories

    answered = ~np.isnan(score)
    observed = answered.any(axis=-1)
    if old.attrs["metric_kind"] == "binary":
        # A binary tensor keeps 0/1 scores, so the mean of a conflicting pair
        # (0.5) is rounded half to even, to 0.
        score = np.where(answered, np.rint(score), np.nan)
        merged["score"] = score
        n_total = answered.sum(axis=-1).astype(np.int64)
        n_correct = np.nansum(score, axis=-1).astype(np.int64)
        n_total[~observed] = _tensor.MISSING_COUNT
        n_correct[~observed] = _tensor.MISSING_COUNT
        merged["n_correct"] = n_correct
        merged["n_total"] = n_total

    from_a = in_a.any(axis=-1)
    from_b = (in_b & ~in_a).any(axis=-1) | (conflicts & (policy in ("last", "mean"))).any(axis=-1)
    shared = (duplicates.any(axis=-1)) | (from_a & from_b)
    choice = np.where(from_a, 0, 1)
    choice = np.where(shared, 2, choice)
    cell_duplicates = int(duplicates.sum())
    return merged, {"duplicates": cell_duplicates, "conflicts": int(conflicts.sum())}, choice


def add_files(
    tensor_path: str | Path,
    new_logs: str | Path | Sequence[str | Path],
    *,
    format: str,
    output: str | Path | None = None,
    policy: str = "error",
    **loader_options: Any,
) -> xr.Dataset:
    """Ingest ``new_logs`` with the loader ``format``, merge them into the tensor at ``tensor_path`` and write the result.

    The merged tensor is written atomically to ``output``, or over
    ``tensor_path`` when ``output`` is None, with a manifest beside it that
    records both inputs (the existing tensor's hash and manifest, and the new
    ingestion's report) and the merge counts.

    Raises
    ------
    InputError
        When the tensor file is missing or invalid, or the loader rejects the logs.
    ConflictError
        On conflicting cells with ``policy="error"``; nothing is written then.
    """
    from . import get_loader

    tensor_path = Path(tensor_path)
    existing = _tensor.load(tensor_path)
    loader = get_loader(format)
    fresh, report = loader(new_logs, **loader_options)
    new_manifest = report.finish(fresh)
    fresh.attrs.pop("manifest", None)
    existing_manifest = existing.attrs.get("manifest")
    if existing_manifest is None and manifest_path(tensor_path).is_file():
        import json

        try:
            existing_manifest = json.loads(manifest_path(tensor_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read the manifest: {error}", path=manifest_path(tensor_path)) from error

    merged = add(existing, fresh, policy=policy)
    target = Path(output) if output is not None else tensor_path
    observed = int(merged["observed"].sum())
    manifest = {
        "operation": "add",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "policy": policy,
        "inputs": [
            {"kind": "tensor", "path": str(tensor_path), "sha256": sha256_file(tensor_path), "manifest": existing_manifest},
            {"kind": "logs", "format": format, "manifest": new_manifest},
        ],
        "merge_duplicates": int(merged.attrs["merge_duplicates"]),
        "merge_conflicts": int(merged.attrs["merge_conflicts"]),
        "sources": [str(v) for v in merged["source_label"].values],
        "cells": {"total": int(merged["observed"].size), "observed": observed, "missing": int(merged["observed"].size) - observed},
        "sizes": {str(k): int(v) for k, v in merged.sizes.items()},
    }
    merged.attrs["manifest"] = manifest
    _tensor.save(merged, target)
    write_manifest(manifest, manifest_path(target))
    return merged
